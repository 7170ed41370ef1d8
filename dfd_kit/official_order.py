"""The order in which the official KNN kernel returns its K neighbours, reproduced exactly.

The official code finds the K nearest bank rows with C++'s ``std::nth_element`` on
(distance, index) pairs and returns the first K in the order that call leaves them: not
sorted, and its first entry, the anchor the locally-linear weights favour, is usually not
the nearest. ``nearest_neighbours(..., anchor="official")`` (:mod:`dfd_kit.manifold`) uses
this module to reproduce official outputs; the paper's idea needs none of it.
"""
from __future__ import annotations

import numpy as np


def sort_keys(dist: np.ndarray) -> list:
    """(distance, index) pairs as integers that compare the same way: for non-negative
    floats the IEEE bit pattern is ordered like the value."""
    bits = dist.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits << np.uint64(32)) | np.arange(len(dist), dtype=np.uint64)).tolist()


def _sift_down(a, base, hole, length, value):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if a[base + child] < a[base + child - 1]:
            child -= 1
        a[base + hole] = a[base + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[base + hole] = a[base + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and a[base + parent] < value:
        a[base + hole] = a[base + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[base + hole] = value


def _heap_select(a, first, middle, last):
    n = middle - first
    if n >= 2:
        for parent in range((n - 2) // 2, -1, -1):
            _sift_down(a, first, parent, n, a[first + parent])
    for i in range(middle, last):
        if a[i] < a[first]:
            value, a[i] = a[i], a[first]
            _sift_down(a, first, 0, n, value)


def _median_to_front(a, res, x, y, z):
    if a[x] < a[y]:
        m = y if a[y] < a[z] else (z if a[x] < a[z] else x)
    else:
        m = x if a[x] < a[z] else (z if a[y] < a[z] else y)
    a[res], a[m] = a[m], a[res]


def _partition(a, lo, hi, pivot):
    while True:
        while a[lo] < a[pivot]:
            lo += 1
        hi -= 1
        while a[pivot] < a[hi]:
            hi -= 1
        if not lo < hi:
            return lo
        a[lo], a[hi] = a[hi], a[lo]
        lo += 1


def _insertion_sort(a, first, last):
    for i in range(first + 1, last):
        v = a[i]
        if v < a[first]:
            a[first + 1:i + 1] = a[first:i]
            a[first] = v
        else:
            j = i
            while v < a[j - 1]:
                a[j] = a[j - 1]
                j -= 1
            a[j] = v


def nth_element(a: list, nth: int) -> list:
    """In place, the element order GNU libstdc++'s ``std::nth_element(a, a + nth, a + n)``
    leaves: introselect with a median-of-three pivot, a 2*log2(n) depth limit falling back
    to heap selection, and a final insertion sort of the last small range."""
    first, last = 0, len(a)
    if first == last or nth == last:
        return a
    depth = 2 * (len(a).bit_length() - 1)
    while last - first > 3:
        if depth == 0:
            _heap_select(a, first, nth + 1, last)
            a[first], a[nth] = a[nth], a[first]
            return a
        depth -= 1
        mid = first + (last - first) // 2
        _median_to_front(a, first, first + 1, mid, last - 1)
        cut = _partition(a, first + 1, last, first)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(a, first, last)
    return a
