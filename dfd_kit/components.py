"""Stage 1 -- cut a sketch into its components.

A sketch is first normalised to the layout: a ``size`` x ``size`` uint8 grayscale image,
dark strokes on white. Then each part (left eye, right eye, nose, mouth) is cropped from
its box, and the remainder is the whole sketch with those four boxes painted white, so
the remainder's encoder sees only what the parts do not cover.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from PIL import Image

from .config import COMPONENTS, PARTS, Layout
from .errors import SketchError
from .sketch_input import SketchLike, read_gray

#: Up to this long side a non-square sketch is padded to a square and then resized, as
#: always (a uint8 square of at most 16 MB); a longer one is resized first and then padded,
#: so a 1 x 20000 strip costs kilobytes, not gigabytes.
PAD_FIRST_MAX_SIDE = 4096


def _fit_square(gray: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) -> uint8 (size, size): padded with white to a square about its
    centre, then resized (bicubic); past :data:`PAD_FIRST_MAX_SIDE`, resized first."""
    h, w = gray.shape
    side = max(h, w)
    if h != w and side > PAD_FIRST_MAX_SIDE:
        nw, nh = max(1, round(w * size / side)), max(1, round(h * size / side))
        gray = np.asarray(Image.fromarray(gray).resize((nw, nh), Image.BICUBIC))
        h, w, side = nh, nw, size
    if h != w:
        sq = np.full((side, side), 255, np.uint8)
        y0, x0 = (side - h) // 2, (side - w) // 2
        sq[y0:y0 + h, x0:x0 + w] = gray
        gray = sq
    if side != size:
        gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.BICUBIC))
    return gray


def normalise_sketch(sketch: SketchLike, layout: Layout, name: Optional[str] = None) -> np.ndarray:
    """Any sketch -> uint8 (layout.size, layout.size) grayscale, dark strokes on white.

    Accepts a path, bytes of an image file, a PIL image, or a numpy array (uint8 or float
    in [0, 1] or [0, 255]; grayscale, RGB or RGBA with a transparent background). A
    non-square sketch is padded with white to a square about its centre, then resized to
    the layout size (bicubic); one longer than :data:`PAD_FIRST_MAX_SIDE` is resized
    first. A sketch drawn light-on-dark (median darker than mid-grey) is inverted. Images
    over :data:`~dfd_kit.sketch_input.MAX_PIXELS`, unreadable files, odd image modes and NaN or infinite values
    are a :class:`SketchError`. The input is never modified. ``name`` (e.g. an uploaded
    file's name) is what error messages call the sketch.
    """
    gray = read_gray(sketch, name)
    if np.median(gray) < 128:
        gray = 255 - gray
    if gray.dtype != np.uint8:
        gray = np.round(gray).astype(np.uint8)
    return np.ascontiguousarray(_fit_square(gray, layout.size))


def crop_components(sketch: np.ndarray, layout: Layout) -> Dict[str, np.ndarray]:
    """uint8 (size, size) sketch -> {component: uint8 (S, S) crop}, in COMPONENTS order.

    Crops are copies; the caller's sketch is left untouched (the official code painted
    the white boxes into the caller's array).
    """
    if sketch.shape != (layout.size, layout.size):
        raise SketchError(f"sketch is {sketch.shape}, expected ({layout.size}, {layout.size}); "
                          "use normalise_sketch first")
    crops = {}
    for name in PARTS:
        b = layout.box(name)
        crops[name] = sketch[b.y:b.y + b.size, b.x:b.x + b.size].copy()
    remainder = sketch.copy()
    for name in PARTS:
        b = layout.box(name)
        remainder[b.y:b.y + b.size, b.x:b.x + b.size] = 255
    crops["remainder"] = remainder
    return {name: crops[name] for name in COMPONENTS}


def components_touched(before: np.ndarray, after: np.ndarray, layout: Layout) -> set:
    """Which components' crops differ between two normalised sketches (for incremental
    re-encoding in the drawing widget)."""
    changed = before != after
    touched = set()
    outside = changed.copy()
    for name in PARTS:
        b = layout.box(name)
        if changed[b.y:b.y + b.size, b.x:b.x + b.size].any():
            touched.add(name)
        outside[b.y:b.y + b.size, b.x:b.x + b.size] = False
    if outside.any():
        touched.add("remainder")
    return touched
