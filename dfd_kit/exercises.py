"""Checkers for the notebooks' exercises.

Each ``check_<name>(fn)`` runs a learner's function on seeded random and edge-case inputs
next to the kit's own implementation and answers in one friendly paragraph: passed, not
implemented yet, or the first input where the two differ, what was expected (shapes and a
few summary values, never the answer itself) and a hint naming the likely mistake. The
paragraph is printed and also returned as a :class:`CheckResult` (true when passed);
``strict=True`` raises an AssertionError instead of returning a failure, which is how the
solution notebooks make a wrong solution fail CI.

Exercises and the notebooks they belong to:

* :func:`check_crop_components` (01): the five crops of a sketch;
* :func:`check_nearest_rows`, :func:`check_locally_linear_weights` (03): manifold projection;
* :func:`check_paste_parts` (04): the part feature maps pasted into one face map;
* :func:`check_stage1_step` (06): one training step of the component auto-encoders.

The learner's function always gets copies of the inputs, so a function that writes into
its arguments is caught (and named) instead of corrupting the reference.
"""
from __future__ import annotations

import copy
import itertools
import textwrap
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import manifold as _manifold
from .components import crop_components as _kit_crop_components
from .config import COMPONENTS, DEMO_LAYOUT, OFFICIAL_LAYOUT, PARTS, PHOTO_LAYOUT, Box, Layout

#: The value of the extra row the kit appends to the locally-linear fit (see
#: :func:`dfd_kit.manifold.locally_linear_weights`); its square is the penalty's strength.
ANCHOR_PENALTY = _manifold._ANCHOR_PENALTY_ROW

WIDTH = 100   # characters per printed line: the paragraph wraps instead of scrolling sideways


# ----------------------------------------------------------------------------- the answer

@dataclass
class CheckResult:
    """What a checker found. ``bool(result)`` is ``result.passed``."""
    exercise: str
    status: str       # "passed", "not implemented", "failed" or "error"
    message: str      # the paragraph that was printed

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:   # short: the paragraph itself has been printed already
        return f"CheckResult({self.exercise!r}, {self.status!r})"


@dataclass
class _Case:
    label: str     # how the paragraph names the input
    args: tuple


class _Mismatch(Exception):
    """Raised by a judge: what differs, what was expected, and a hint."""

    def __init__(self, what: str, expected: str = "", hint: str = ""):
        super().__init__(what)
        self.what, self.expected, self.hint = what, expected, hint


def _finish(exercise: str, status: str, text: str, strict: bool, quiet: bool) -> CheckResult:
    text = " ".join(text.split())
    if not quiet:
        print(textwrap.fill(text, WIDTH, break_on_hyphens=False, break_long_words=False))
    result = CheckResult(exercise, status, text)
    if strict and not result.passed:
        raise AssertionError(text) from None   # the paragraph is the whole story, not the checker's internals
    return result


def _learner_line(exc: BaseException, fn) -> str:
    """' in `code line`' for the innermost frame of the learner's own code (the cell that
    defined ``fn``), if any."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == code.co_filename]
    line = (frames[-1].line or "").strip() if frames else ""
    return f" in the line `{line}`" if line else ""


def _run(exercise: str, fn, cases: Sequence[_Case], judge: Callable, error_hint: Callable[[BaseException], str],
         strict: bool, quiet: bool, passed_text: str, call: Optional[Callable] = None) -> CheckResult:
    """Try ``fn`` on each case in turn (``call(case, args)`` instead of ``fn(*args)`` where the
    checker must set things up around the call) and stop at the first problem."""
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        return _finish(exercise, "failed",
                       f"Not quite: the checker needs the function itself, but it got a {type(fn).__name__}. "
                       f"Pass the name without calling it, e.g. check_{exercise}({exercise}), not "
                       f"check_{exercise}({exercise}(...)).", strict, quiet)
    n = len(cases)
    for i, case in enumerate(cases):
        args = copy.deepcopy(case.args)
        where = f"input {i + 1} of {n} ({case.label})"
        try:
            got = call(case, args) if call else fn(*args)
        except NotImplementedError:
            return _not_implemented(exercise, name, cases, strict, quiet)
        except Exception as e:   # the learner's bug: report it, never crash the notebook
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return _finish(exercise, "error",
                           f"Almost there to find out: `{name}` raised {type(e).__name__}"
                           f"{': ' + msg if msg else ''}{_learner_line(e, fn)}, on {where}. "
                           f"Hint: {error_hint(e)}", strict, quiet)
        if got is None:
            if i == 0:
                return _not_implemented(exercise, name, cases, strict, quiet)
            return _finish(exercise, "failed",
                           f"Not yet: `{name}` returned None on {where}, after giving an answer for the earlier "
                           "inputs. Hint: check that every path through your function ends in a `return`.",
                           strict, quiet)
        try:
            judge(case, args, got)
        except _Mismatch as m:
            text = f"Not yet: on {where}, {m.what}."
            if m.expected:
                text += f" Expected {m.expected}."
            if m.hint:
                text += f" Hint: {m.hint}"
            return _finish(exercise, "failed", text, strict, quiet)
    return _finish(exercise, "passed", f"Passed! `{name}` agrees with the kit on all {n} inputs ({passed_text}). "
                   "Well done.", strict, quiet)


def _not_implemented(exercise, name, cases, strict, quiet) -> CheckResult:
    return _finish(exercise, "not implemented",
                   f"Not implemented yet: `{name}` gave back nothing (None), which is what the stub does. "
                   "Replace the `...` with your code and run the cell again; the checker will then try it on "
                   f"{len(cases)} inputs, starting with {cases[0].label}.", strict, quiet)


def _shape(a) -> str:
    return "(" + ", ".join(str(s) for s in np.shape(a)) + ")"


def _array(got, what: str) -> np.ndarray:
    """The learner's answer as a numpy array (Jittor Vars and lists included)."""
    if hasattr(got, "numpy") and not isinstance(got, np.ndarray):
        got = got.numpy()
    try:
        a = np.asarray(got)
    except Exception:
        a = None
    if a is None or a.dtype == object:
        raise _Mismatch(f"your function returned a {type(got).__name__}, which is not an array of numbers",
                        what, "return a numpy array.")
    return a


def _common_error_hint(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, (ValueError, IndexError)) and ("shape" in text or "broadcast" in text or "index" in text):
        return ("a shape does not fit. Print the shapes of the arrays on that line (`x.shape`) and compare them "
                "with the shapes the exercise describes.")
    if isinstance(e, NameError):
        return "a name is not defined: did you run the cell that imports or defines it?"
    if isinstance(e, AttributeError):
        return "an object lacks the attribute you used; `dir(obj)` lists what it has."
    if isinstance(e, TypeError):
        return "a function got arguments of a kind it does not take; check the order and types of the arguments."
    return "read the message above, fix that line and run the check again."


# ----------------------------------------------------------------------------- 01: crops

#: A small layout whose boxes touch the image's edges: crops that start or end one pixel off
#: show up there as wrong shapes or values.
EDGE_LAYOUT = Layout(size=128, boxes={"left_eye": Box(0, 0, 32), "right_eye": Box(96, 0, 32),
                                      "nose": Box(40, 30, 48), "mouth": Box(64, 64, 64)}, nose_rows=40)


def _crop_variant(sketch: np.ndarray, layout: Layout, dy: int = 0, dx: int = 0, ds: int = 0, swap: bool = False,
                  paint: Optional[int] = 255, paint_dy: int = 0, paint_ds: int = 0,
                  crop_after_paint: bool = False) -> Dict[str, np.ndarray]:
    """The crops with one deliberate mistake (numpy slicing semantics, as a learner's code
    would have): start offsets, a size error, (y, x) swapped, another paint value or region,
    or the parts cropped from the painted remainder."""
    s = sketch.copy()
    rem = s.copy()
    for name in PARTS:
        b = layout.box(name)
        y, x = (b.x, b.y) if swap else (b.y, b.x)
        if paint is not None:
            rem[max(0, y + paint_dy):y + paint_dy + b.size + paint_ds, max(0, x):x + b.size + paint_ds] = paint
    src = rem if crop_after_paint else s
    out = {}
    for name in PARTS:
        b = layout.box(name)
        y, x = (b.x, b.y) if swap else (b.y, b.x)
        y, x = y + dy, x + dx
        out[name] = src[max(0, y):y + b.size + ds, max(0, x):x + b.size + ds].copy()
    out["remainder"] = rem
    return out


_CROP_PART_MISTAKES = [
    (dict(ds=1), "off-by-one crop: one row and one column too many. A slice `a[y:y + size]` already stops "
                 "before `y + size`; no `+ 1` is needed."),
    (dict(ds=-1), "off-by-one crop: one row and one column too few. The end of a slice is not included, so "
                  "`y:y + size - 1` loses the last row; use `y:y + size`."),
    (dict(dy=1), "off-by-one crop: the crop starts one row too low. The box's `y` is its first row (rows "
                 "count from 0)."),
    (dict(dy=-1), "off-by-one crop: the crop starts one row too high. The box's `y` is its first row."),
    (dict(dx=1), "off-by-one crop: the crop starts one column too far right. The box's `x` is its first column."),
    (dict(dx=-1), "off-by-one crop: the crop starts one column too far left. The box's `x` is its first column."),
    (dict(swap=True), "(y, x) swapped: numpy indexes an image as `image[row, column]`, that is `[y, x]`; "
                      "you cropped at `[x, y]`."),
    (dict(crop_after_paint=True), "the parts were cropped after the boxes had been painted white, so they come "
                                  "out blank. Crop the parts from the original sketch and paint a copy."),
]

_CROP_REMAINDER_MISTAKES = [
    (dict(paint=None), "the remainder still shows the four parts. Paint each part's box white (255) in a copy "
                       "of the sketch."),
    (dict(paint=0), "the boxes were painted black (0). Paper is white, 255."),
    (dict(paint_ds=1), "off-by-one crop: the painted boxes are one row and one column too big. A slice "
                       "`y:y + size` already covers exactly `size` rows."),
    (dict(paint_ds=-1), "off-by-one crop: the painted boxes are one row and one column too small. The end of a "
                        "slice is not included; paint `y:y + size`."),
    (dict(paint_dy=1), "off-by-one crop: the painted boxes start one row too low."),
    (dict(swap=True), "(y, x) swapped: the boxes were painted at `[x, y]`; numpy indexes images as "
                      "`[row, column]`, that is `[y, x]`."),
]


def _crop_cases() -> List[_Case]:
    rng = np.random.default_rng(1)

    def noise(size):   # no pure white: the painted boxes (255) stand out from every pixel
        return rng.integers(0, 255, (size, size), dtype=np.uint8)

    return [
        _Case("a random 256 x 256 sketch on the demo layout", (noise(256), DEMO_LAYOUT)),
        _Case("a random 256 x 256 sketch on the photo layout", (noise(256), PHOTO_LAYOUT)),
        _Case("a random 512 x 512 sketch on the official layout", (noise(512), OFFICIAL_LAYOUT)),
        _Case("an all-black 256 x 256 sketch on the demo layout", (np.zeros((256, 256), np.uint8), DEMO_LAYOUT)),
        _Case("an all-white 256 x 256 sketch on the demo layout", (np.full((256, 256), 255, np.uint8), DEMO_LAYOUT)),
        _Case("a random 128 x 128 sketch on a layout whose boxes touch the image's edges",
              (noise(128), EDGE_LAYOUT)),
    ]


def _judge_crops(case: _Case, args, got):
    sketch, layout = case.args
    if not np.array_equal(args[0], sketch):
        raise _Mismatch("your function changed the sketch it was given (pixels inside the part boxes are now "
                        "different)", "the caller's sketch to stay as it was",
                        "paint the boxes in a copy of the sketch (`.copy()`), not in `sketch` itself; "
                        "a slice of an array is a view into the same pixels.")
    expected = _kit_crop_components(sketch, layout)
    if not isinstance(got, dict):
        raise _Mismatch(f"your function returned a {type(got).__name__}",
                        f"a dict with the keys {', '.join(COMPONENTS)}", "return `{name: crop}` for every component.")
    missing = [c for c in COMPONENTS if c not in got]
    extra = [str(k) for k in got if k not in COMPONENTS]
    if missing or extra:
        what = "the dict " + "; ".join(p for p in (f"lacks {', '.join(missing)}" if missing else "",
                                                   f"has unexpected keys {', '.join(extra)}" if extra else "") if p)
        raise _Mismatch(what, f"exactly the keys {', '.join(COMPONENTS)}",
                        "the names are in `dfd_kit.COMPONENTS`; the remainder is the fifth.")
    for c in COMPONENTS:
        mine = _array(got[c], f"a uint8 {_shape(expected[c])} array for {c}")
        want = expected[c]
        variants = _CROP_PART_MISTAKES if c != "remainder" else _CROP_REMAINDER_MISTAKES
        if mine.shape != want.shape:
            hint = next((h for kw, h in variants if _crop_variant(sketch, layout, **kw)[c].shape == mine.shape
                         and np.array_equal(_crop_variant(sketch, layout, **kw)[c], mine)), None)
            if hint is None and c != "remainder" and mine.shape[:2] in ((want.shape[0] + 1,) * 2,
                                                                         (want.shape[0] - 1,) * 2):
                hint = _CROP_PART_MISTAKES[0][1] if mine.shape[0] > want.shape[0] else _CROP_PART_MISTAKES[1][1]
            raise _Mismatch(f"the {c} crop has shape {_shape(mine)}", f"{_shape(want)}, the box's size",
                            hint or f"the {c} box is `layout.box('{c}')`: crop rows `y` to `y + size` and columns "
                                    "`x` to `x + size`.")
        if np.array_equal(mine, want):
            continue
        hint = next((h for kw, h in variants if np.array_equal(_crop_variant(sketch, layout, **kw)[c], mine)), None)
        diff = np.argwhere(mine != want)
        r, col = diff[0]
        what = (f"the {c} crop differs from the kit's at {len(diff)} of {want.size} pixels, first at row {r}, "
                f"column {col} (the kit has {int(want[r, col])} there, yours {mine[r, col]!r})")
        if hint is None:
            if c == "remainder":
                hint = ("the remainder is the whole sketch with the four part boxes (left eye, right eye, nose and "
                        "mouth) painted white, and nothing else changed.")
            else:
                hint = f"compare your slice with `layout.box('{c}')`: rows come first, `[y:y + size, x:x + size]`."
        raise _Mismatch(what, f"a {_shape(want)} crop with mean grey level {want.mean():.1f}", hint)


def check_crop_components(fn, strict: bool = False, quiet: bool = False) -> CheckResult:
    """``fn(sketch, layout) -> {component: crop}``: sketch uint8 (size, size), the crops as
    :func:`dfd_kit.components.crop_components` makes them (the four part boxes cropped, the
    remainder the whole sketch with those boxes painted white)."""
    def error_hint(e):
        if isinstance(e, AttributeError) and "Layout" in str(e):
            return ("a Layout has no attribute per component: `layout.box(name)` gives that component's Box, with "
                    "`.x`, `.y` and `.size`.")
        if isinstance(e, (KeyError, ValueError)) and "remainder" in str(e):
            return "the remainder has no entry in `layout.boxes`: loop over the four parts, `dfd_kit.config.PARTS`."
        return _common_error_hint(e)

    return _run("crop_components", fn, _crop_cases(), _judge_crops, error_hint, strict, quiet,
                "random sketches on three layouts, all-black and all-white ones, boxes at the image's edges")


# ----------------------------------------------------------------------------- 03: nearest rows

def _nearest_cases() -> List[_Case]:
    rng = np.random.default_rng(3)
    f32 = np.float32
    bank = rng.standard_normal((200, 16)).astype(f32)
    exact = rng.standard_normal((60, 8)).astype(f32)
    ties = rng.standard_normal((40, 8)).astype(f32)
    ties[[7, 21, 33]] = ties[2]   # four equal rows: any order among them is right
    far = (rng.standard_normal((80, 12)) + 3.0).astype(f32)   # a cloud away from the origin
    return [
        _Case("a random bank of 200 rows of 16 numbers, K = 10",
              (rng.standard_normal(16).astype(f32), bank, 10)),
        _Case("a latent equal to row 37 of a bank of 60, K = 5", (exact[37].copy(), exact, 5)),
        _Case("K = 2, the smallest the kit allows", (rng.standard_normal(16).astype(f32), bank[:50], 2)),
        _Case("K equal to the bank's size (12 rows)", (rng.standard_normal(16).astype(f32), bank[:12], 12)),
        _Case("a bank with four identical rows nearest to the latent, K = 6",
              ((ties[2] + 0.01).astype(f32), ties, 6)),
        _Case("a bank whose cloud lies away from the origin, latent at the origin, K = 8",
              (np.zeros(12, f32), far, 8)),
    ]


def _squared_distances(latent, bank) -> np.ndarray:
    d = np.asarray(bank, np.float64) - np.asarray(latent, np.float64).reshape(1, -1)
    return (d * d).sum(axis=1)


def _judge_nearest(case: _Case, args, got):
    latent, bank, k = case.args
    if not (np.array_equal(args[0], latent) and np.array_equal(args[1], bank)):
        raise _Mismatch("your function changed its input arrays", "them to stay as they were",
                        "compute the distances into a new array instead of writing into `bank` or `latent`.")
    want, _ = _manifold.nearest_neighbours(latent, bank, k, "nearest")
    want = want.astype(np.int64)
    mine = _array(got, f"{k} row indices")
    if mine.ndim == 2 and mine.shape[-1] == bank.shape[1]:
        raise _Mismatch(f"you returned an array of shape {_shape(mine)}, the rows themselves",
                        f"{k} row indices, shape ({k},)", "return the indices of the rows (what `np.argsort` "
                                                          "gives), not `bank[indices]`.")
    if mine.dtype.kind == "f" and not np.all(np.isfinite(mine) & (mine == np.round(mine))):
        raise _Mismatch(f"you returned {mine.dtype} numbers that are not whole, perhaps the distances",
                        f"{k} integer row indices", "sort the distances with `np.argsort`, which gives the "
                                                    "positions (indices) of the rows in order.")
    mine = mine.reshape(-1) if mine.ndim > 1 and mine.size == max(mine.shape) else mine
    if mine.ndim != 1:
        raise _Mismatch(f"you returned an array of shape {_shape(mine)}", f"shape ({k},)", "return a flat array "
                                                                                         "of indices.")
    if len(mine) != k:
        if len(mine) == len(bank) and len(bank) != k:
            hint = "you sorted all the rows; keep only the first K."
        elif abs(len(mine) - k) == 1:
            hint = "off by one: `order[:k]` gives exactly k entries."
        else:
            hint = "return exactly K indices."
        raise _Mismatch(f"you returned {len(mine)} indices", f"K = {k}", hint)
    mine = mine.astype(np.int64)
    if mine.min() < 0 or mine.max() >= len(bank):
        raise _Mismatch(f"index {int(mine.max() if mine.max() >= len(bank) else mine.min())} is not a row of "
                        f"the bank", f"indices from 0 to {len(bank) - 1}", "index the rows, axis 0 of `bank`.")
    if len(set(mine.tolist())) != k:
        raise _Mismatch("the same row appears twice", f"{k} different rows",
                        "take the first K entries of one sorted order of all rows.")
    d = _squared_distances(latent, bank)
    tol = 1e-6 * max(1.0, float(d[want].max()))
    if np.allclose(d[mine], d[want], rtol=1e-6, atol=tol):
        return   # equal rows in any order among themselves count as right
    nearest = f"{k} rows at squared distances from {d[want[0]]:.4g} to {d[want[-1]]:.4g}, nearest first"
    if set(mine.tolist()) == set(want.tolist()):
        raise _Mismatch("you found the right rows but in another order", nearest,
                        "sort them, nearest first: `np.argpartition` picks the K smallest but does not sort them.")
    order = np.argsort(d, kind="stable")
    if np.allclose(d[mine], d[order[::-1][:k]], rtol=1e-6, atol=tol):
        raise _Mismatch("you returned the K farthest rows", nearest,
                        "`np.argsort` sorts from small to large: the nearest rows come first, `order[:k]`.")
    b64, l64 = np.asarray(bank, np.float64), np.asarray(latent, np.float64)
    others = {"largest dot product": np.argsort(-(b64 @ l64), kind="stable")[:k],
              "smallest sum of absolute differences": np.argsort(np.abs(b64 - l64).sum(1), kind="stable")[:k],
              "distance summed over the wrong axis": None}
    for label, rows in others.items():
        if rows is not None and np.array_equal(mine, rows):
            raise _Mismatch(f"your rows are those with the {label}", nearest,
                            "nearest means the smallest squared Euclidean distance, sum over the latent's "
                            "numbers of (row - latent) squared.")
    i = int(np.argmax(~np.isclose(d[mine], d[want], rtol=1e-6, atol=tol)))
    raise _Mismatch(f"entry {i} of your answer is row {mine[i]}, at squared distance {d[mine[i]]:.4g}, but entry "
                    f"{i} of the nearest rows is at {d[want[i]]:.4g}", nearest,
                    "give every row its squared distance to the latent (the squared differences summed along the "
                    "row, axis 1 of the bank), sort the rows by it and keep the first K.")


def check_nearest_rows(fn, strict: bool = False, quiet: bool = False) -> CheckResult:
    """``fn(latent, bank, k) -> indices``: latent (D,), bank (N, D); the indices (K,) of the K
    bank rows nearest to the latent in squared Euclidean distance, nearest first (as
    :func:`dfd_kit.manifold.nearest_neighbours` with ``anchor="nearest"``; rows at equal
    distance may come in any order)."""
    def error_hint(e):
        if isinstance(e, ValueError) and "broadcast" in str(e):
            return "`bank - latent` broadcasts a (D,) latent over the (N, D) rows; check you did not transpose one."
        if isinstance(e, np.AxisError):
            return "the bank is (N, D): the distance of each row sums over axis 1."
        return _common_error_hint(e)

    return _run("nearest_rows", fn, _nearest_cases(), _judge_nearest, error_hint, strict, quiet,
                "random banks, a latent equal to a row, K from 2 to the bank's size, tied rows")


# ----------------------------------------------------------------------------- 03: the weights

def _weights_variant(latent, neighbours, penalty: Optional[float] = ANCHOR_PENALTY, anchor: int = 0,
                     constrained: bool = True) -> np.ndarray:
    """Locally-linear weights with one deliberate change: another penalty (None: none), another
    anchor row, or an unconstrained fit (weights need not sum to 1)."""
    v = np.asarray(neighbours, np.float64)
    g = np.asarray(latent, np.float64).reshape(-1)
    if not constrained:
        return np.linalg.lstsq(v.T, g, rcond=None)[0]
    order = [anchor] + [i for i in range(len(v)) if i != anchor]
    v = v[order]
    m = (v[1:] - v[0]).T
    r = g - v[0]
    if penalty is not None:
        m = np.vstack([m, np.full((1, m.shape[1]), penalty)])
        r = np.concatenate([r, [0.0]])
    x = np.linalg.lstsq(m, r, rcond=None)[0]
    w = np.concatenate([[1.0 - x.sum()], x])
    out = np.empty_like(w)
    out[order] = w
    return out


def _weights_cases() -> List[_Case]:
    rng = np.random.default_rng(4)
    f32 = np.float32

    def near(v, noise):   # a latent near the neighbours' span, like a drawing's
        a = rng.dirichlet(np.ones(len(v)))
        return (a @ v + noise * rng.standard_normal(v.shape[1])).astype(f32)

    v1 = rng.standard_normal((6, 16)).astype(f32)
    v2 = rng.standard_normal((10, 128)).astype(f32)
    v3 = rng.standard_normal((2, 32)).astype(f32)
    v4 = rng.standard_normal((5, 16)).astype(f32)
    v5 = rng.standard_normal((6, 16)).astype(f32)
    v5[4] = v5[2]
    v6 = (rng.standard_normal((8, 64)) * 5.0).astype(f32)
    return [
        _Case("6 random neighbours of 16 numbers and a latent near them", (near(v1, 0.3), v1)),
        _Case("10 neighbours of 128 numbers, the demo model's sizes", (near(v2, 0.5), v2)),
        _Case("K = 2, the anchor and one more", (near(v3, 0.2), v3)),
        _Case("a latent equal to the anchor row", (v4[0].copy(), v4)),
        _Case("a latent far from all the neighbours", ((rng.standard_normal(64) * 20).astype(f32), v6)),
        _Case("two identical neighbours (rows 2 and 4), as in a bank with a repeated sketch", (near(v5, 0.3), v5)),
    ]


def _judge_weights(case: _Case, args, got):
    latent, neighbours = case.args
    if not (np.array_equal(args[0], latent) and np.array_equal(args[1], neighbours)):
        raise _Mismatch("your function changed its input arrays", "them to stay as they were",
                        "build the differences in new arrays.")
    want = _manifold.locally_linear_weights(latent, neighbours)
    k = len(neighbours)
    mine = _array(got, f"{k} weights")
    if mine.size == k:
        mine = mine.reshape(-1)
    if mine.shape != (k,):
        hint = ("the anchor's own weight is missing: the fit gives the K - 1 others, and the anchor gets one minus "
                "their sum." if mine.size == k - 1 else "return one weight per neighbour, the anchor's first.")
        raise _Mismatch(f"you returned shape {_shape(mine)}", f"({k},), one weight per neighbour", hint)
    mine = mine.astype(np.float64)
    if not np.all(np.isfinite(mine)):
        raise _Mismatch("some weights are NaN or infinite", f"{k} finite weights summing to 1",
                        "two identical neighbours make the normal equations singular: `np.linalg.lstsq` on the "
                        "stacked system copes where `np.linalg.solve` does not.")
    scale = max(1.0, float(np.abs(want).max()))
    if np.allclose(mine, want, rtol=1e-5, atol=1e-6 * scale):
        return
    expected = (f"{k} weights summing to 1, the anchor's {want[0]:.3f}, the largest of the others "
                f"{np.abs(want[1:]).max():.3f} in size")
    total = mine.sum()
    if abs(total - 1.0) > 1e-6 * scale:
        unconstrained = _weights_variant(latent, neighbours, constrained=False)
        named = np.allclose(mine, unconstrained, rtol=1e-4, atol=1e-6 * scale)
        raise _Mismatch(f"your weights sum to {total:.4f}, not 1", expected,
                        "unnormalised weights. " + ("You fitted the latent by the neighbours directly, with no "
                                                    "constraint. " if named else "")
                        + "Write every weight vector as the anchor's weight, one minus the others' sum, followed by "
                          "the others, and fit the others to the latent minus the anchor using the differences of "
                          "the neighbours to the anchor: then they sum to 1 however the fit turns out.")
    if np.allclose(mine, want[::-1], rtol=1e-4, atol=1e-6 * scale) or \
            np.allclose(mine, np.roll(want, -1), rtol=1e-4, atol=1e-6 * scale):
        raise _Mismatch("your weights are the right numbers in another order", expected,
                        "return the anchor's weight first, then the others in the neighbours' order.")
    if np.allclose(mine, _weights_variant(latent, neighbours, penalty=None), rtol=1e-4, atol=1e-5 * scale):
        raise _Mismatch(f"your anchor's weight is {mine[0]:.3f}", expected,
                        "missing anchor penalty: your fit is the plain least-squares one. The kit adds one more "
                        "equation, the sum of the non-anchor weights times ANCHOR_PENALTY equals 0, which pulls the "
                        "anchor's weight towards 1.")
    s = float(np.sum(_weights_variant(latent, neighbours, constrained=False)))
    if abs(s) > 1e-9 and np.allclose(mine, _weights_variant(latent, neighbours, constrained=False) / s,
                                     rtol=1e-4, atol=1e-5 * scale):
        raise _Mismatch("your weights sum to 1 but come from an unconstrained fit divided by its sum", expected,
                        "unnormalised weights rescaled afterwards are a different fit: put the sum-to-1 "
                        "constraint into the fit (the anchor's weight is one minus the others' sum).")
    for p in (1.0, np.sqrt(ANCHOR_PENALTY), ANCHOR_PENALTY ** 2):
        if np.allclose(mine, _weights_variant(latent, neighbours, penalty=p), rtol=1e-4, atol=1e-5 * scale):
            raise _Mismatch(f"your anchor's weight is {mine[0]:.3f}", expected,
                            "the anchor penalty has another strength than the kit's: the extra equation's "
                            "coefficients are ANCHOR_PENALTY itself (so the squared error gains ANCHOR_PENALTY "
                            "squared times the squared sum of the non-anchor weights).")
    for a in range(1, k):
        if np.allclose(mine, _weights_variant(latent, neighbours, anchor=a), rtol=1e-4, atol=1e-5 * scale):
            raise _Mismatch(f"your weights favour neighbour {a}", expected,
                            "the anchor is the first neighbour, row 0 of `neighbours` (the nearest one).")
    i = int(np.argmax(np.abs(mine - want)))
    raise _Mismatch(f"your weights sum to 1 but differ from the kit's, most at neighbour {i} "
                    f"({mine[i]:.4f} against {want[i]:.4f})", expected,
                    "check the differences are to row 0 (the anchor), that the penalty row has one entry per "
                    "non-anchor weight and a 0 on the right-hand side, and that the anchor's weight is one minus the "
                    "others' sum.")


def check_locally_linear_weights(fn, strict: bool = False, quiet: bool = False) -> CheckResult:
    """``fn(latent, neighbours) -> weights``: latent (D,), neighbours (K, D) with the anchor
    first; the K weights of :func:`dfd_kit.manifold.locally_linear_weights` (sum 1, the
    anchor pulled towards 1 by the penalty row of :data:`ANCHOR_PENALTY`)."""
    def error_hint(e):
        if isinstance(e, np.linalg.LinAlgError):
            return ("the system is singular, which happens when two neighbours are identical: solve the stacked "
                    "least-squares system with `np.linalg.lstsq` instead of `np.linalg.solve`.")
        if isinstance(e, ValueError) and ("shape" in str(e) or "dimension" in str(e)):
            return ("the differences to the anchor form a (D, K - 1) matrix (one column per non-anchor "
                    "neighbour); the penalty row below it has K - 1 entries.")
        return _common_error_hint(e)

    return _run("locally_linear_weights", fn, _weights_cases(), _judge_weights, error_hint, strict, quiet,
                "random neighbours, K = 2, a latent on the anchor, a far latent, identical neighbours")


# ----------------------------------------------------------------------------- 04: pasting

def _paste_variant(maps: Dict[str, np.ndarray], layout: Layout, order: Optional[Sequence[str]] = None,
                   swap: bool = False, trim: str = "top", base: str = "remainder") -> np.ndarray:
    """The face map with one deliberate change: another order, (y, x) swapped, the nose
    untrimmed or trimmed from the bottom, or zeros instead of the remainder underneath."""
    face = maps["remainder"].copy() if base == "remainder" else np.zeros_like(maps["remainder"])
    for name in order or layout.paste_order:
        b = layout.box(name)
        part = maps[name]
        y, x = (b.x, b.y) if swap else (b.y, b.x)
        if name == "nose" and trim == "top":
            part = part[:, :layout.nose_rows]
        elif name == "nose" and trim == "bottom":
            part, y = part[:, b.size - layout.nose_rows:], y + b.size - layout.nose_rows
        face[:, y:y + part.shape[1], x:x + part.shape[2]] = part[:, :face.shape[1] - y, :face.shape[2] - x]
    return face


def _kit_paste(maps: Dict[str, np.ndarray], layout: Layout) -> np.ndarray:
    import jittor as jt

    from .mapping import paste_feature_maps

    with jt.no_grad():   # the inference path the notebooks run
        return paste_feature_maps({c: jt.array(np.asarray(m, np.float32)[None]) for c, m in maps.items()},
                                  layout).numpy()[0]


def _paste_cases() -> List[_Case]:
    rng = np.random.default_rng(5)

    def rand(layout, c):
        return {n: rng.standard_normal((c, layout.crop_size(n), layout.crop_size(n))).astype(np.float32)
                for n in COMPONENTS}

    const = {n: np.full((2, DEMO_LAYOUT.crop_size(n), DEMO_LAYOUT.crop_size(n)), i + 1.0, np.float32)
             for i, n in enumerate(COMPONENTS)}
    return [
        _Case("random 3-channel maps on the demo layout", (rand(DEMO_LAYOUT, 3), DEMO_LAYOUT)),
        _Case("random 2-channel maps on the photo layout", (rand(PHOTO_LAYOUT, 2), PHOTO_LAYOUT)),
        _Case("random 1-channel maps on the official layout", (rand(OFFICIAL_LAYOUT, 1), OFFICIAL_LAYOUT)),
        _Case("maps of one constant value per component on the demo layout", (const, DEMO_LAYOUT)),
    ]


def _judge_paste(case: _Case, args, got):
    maps, layout = case.args
    changed = [c for c in COMPONENTS if not np.array_equal(args[0][c], maps[c])]
    if changed:
        raise _Mismatch(f"your function changed the {' and '.join(changed)} map it was given",
                        "the caller's maps to stay as they were",
                        "start from a copy of the remainder's map (`.copy()`): pasting into the remainder's own "
                        "array overwrites the caller's map.")
    want = _kit_paste(maps, layout)
    mine = _array(got, f"a float32 {_shape(want)} face map")
    if mine.shape != want.shape:
        c, size = want.shape[0], want.shape[1]
        if mine.shape == (size, size, c):
            hint = "channels last: the kit keeps channels first, (C, size, size), like the part maps."
        elif mine.shape == (1,) + want.shape:
            hint = "drop the batch axis: the maps here are (C, S, S), without one."
        else:
            hint = "the face map has the channels of the part maps and the size of the layout."
        raise _Mismatch(f"your face map has shape {_shape(mine)}", _shape(want), hint)
    if np.allclose(mine, want, rtol=0, atol=1e-6):
        return
    expected = f"a {_shape(want)} map, mean {want.mean():.3f}"
    mistakes = [
        (dict(swap=True), "pasting at (y, x) swapped: a (C, size, size) map is indexed "
                          "`[channel, row, column]`, and a box's rows start at its `y`, its columns at its `x`."),
        (dict(trim="none"), "the nose was pasted whole: only its first `layout.nose_rows` rows belong to it, the "
                            "rows below stay the mouth's."),
        (dict(trim="bottom"), "the nose trim kept the wrong rows: keep the nose's first (top) `layout.nose_rows` "
                              "rows."),
        (dict(base="zeros"), "the parts were pasted onto zeros: the face map starts as the remainder's map."),
    ]
    for kw, hint in mistakes:
        if np.allclose(mine, _paste_variant(maps, layout, **kw), rtol=0, atol=1e-6):
            raise _Mismatch("your face map differs from the kit's", expected, hint)
    for order in itertools.permutations(layout.paste_order):
        if tuple(order) != tuple(layout.paste_order) and \
                np.allclose(mine, _paste_variant(maps, layout, order=order), rtol=0, atol=1e-6):
            raise _Mismatch(f"you pasted in the order {', '.join(order)}", expected,
                            "the order matters where boxes overlap, because a later part covers an earlier one: "
                            "follow `layout.paste_order`.")
    from .mapping import paste_owner

    owner, _ = paste_owner(layout)
    bad = np.argwhere(~np.isclose(mine, want, rtol=0, atol=1e-6).all(axis=0))
    r, col = bad[0]
    shown = "remainder" if owner[r, col] < 0 else layout.paste_order[owner[r, col]]
    raise _Mismatch(f"your face map differs at {len(bad)} of {want.shape[1] * want.shape[2]} pixels, first at "
                    f"row {r}, column {col}, where the kit shows the {shown}'s map", expected,
                    f"work out which box covers row {r}, column {col} and which part the kit's paste order puts "
                    "on top there.")


def check_paste_parts(fn, strict: bool = False, quiet: bool = False) -> CheckResult:
    """``fn(maps, layout) -> face``: maps {component: float32 (C, S, S)}; the (C, size, size)
    face map of :func:`dfd_kit.mapping.paste_feature_maps` (the remainder underneath, the
    parts pasted in ``layout.paste_order``, the nose trimmed to ``layout.nose_rows`` rows)."""
    def error_hint(e):
        if isinstance(e, ValueError) and "broadcast" in str(e):
            return ("a part does not fit the region it is pasted into: the region must be (C, S, S) like the "
                    "part's map, and for the trimmed nose both keep only the first `layout.nose_rows` rows.")
        return _common_error_hint(e)

    return _run("paste_parts", fn, _paste_cases(), _judge_paste, error_hint, strict, quiet,
                "random maps on three layouts and one constant map per component")


# ----------------------------------------------------------------------------- 06: a stage-1 step

#: A tiny model for the stage-1 step (that of tests/test_training.py: 64 px, 32 px parts, four
#: resolution steps), so a check takes seconds; the step itself is the same at every size.
STAGE1_LAYOUT = Layout(size=64, boxes={"left_eye": Box(0, 0, 32), "right_eye": Box(32, 0, 32),
                                       "nose": Box(16, 24, 32), "mouth": Box(16, 32, 32)}, nose_rows=16)


def _stage1_config():
    from .config import ModelConfig, NetworkConfig

    return ModelConfig(layout=STAGE1_LAYOUT,
                       nets=NetworkConfig(latent_dim=32, encoder_channels=(8, 8, 8, 8),
                                          decoder_channels=(8, 8, 8, 8, 8)), k=3)


def _toy_sketches(rng, n: int, size: int = 64) -> np.ndarray:
    """White paper with a few dark strokes (a line drawing, so ink is a few percent)."""
    out = np.full((n, size, size), 255, np.uint8)
    for s in out:
        for _ in range(8):
            y, x = rng.integers(0, size, 2)
            if rng.random() < 0.5:
                s[y, x:x + rng.integers(6, 20)] = rng.integers(0, 60)
            else:
                s[y:y + rng.integers(6, 20), x] = rng.integers(0, 60)
    return out


def _stage1_cases() -> List[_Case]:
    from .training.configs import Stage1Config

    rng = np.random.default_rng(6)
    ink = Stage1Config().ink_weight
    clean = _toy_sketches(rng, 2)
    rough = clean.copy()
    rough[:, :, 3:] = np.minimum(rough[:, :, 3:], clean[:, :, :-3])   # a doubled, shifted line, as if redrawn
    targets3 = _toy_sketches(rng, 3)
    targets3[2] = 255   # a blank page: no ink at all in its crops
    return [
        _Case(f"a batch of 2 clean sketches as input and target, ink weight {ink:g}", (clean, clean, ink)),
        _Case(f"a batch of 2 rough inputs with their clean targets, ink weight {ink:g}", (rough, clean, ink)),
        _Case("a batch of 3 (one of them blank) with ink weight 0", (targets3, targets3, 0.0)),
    ]


def _seeded_state(modules: Dict[str, object]) -> Dict[str, Dict[str, np.ndarray]]:
    """Initial weights from a seeded numpy generator (uniform within 1/sqrt(fan-in), as
    Jittor's layers draw them), so every check starts from the same networks without
    reseeding Jittor's own generator under the learner's notebook. Constant entries (norm
    scales and shifts, running statistics) keep their values."""
    rng = np.random.default_rng(7)
    out = {}
    for name, m in modules.items():
        state = {key: v.numpy().copy() for key, v in m.state_dict().items()}
        for key, a in state.items():
            weight = state.get(key[:-len("bias")] + "weight") if key.endswith(".bias") else a
            if weight is not None and weight.ndim >= 2:   # a convolution's or linear layer's weight or bias
                bound = 1.0 / np.sqrt(np.prod(weight.shape[1:]))
                state[key] = rng.uniform(-bound, bound, a.shape).astype(a.dtype)
        out[name] = state
    return out


def _state(modules) -> List[np.ndarray]:
    """The learnt weights of each module, in order (not the norms' running statistics, which
    every forward pass in training mode updates)."""
    return [v.numpy().copy() for m in modules for k, v in m.state_dict().items() if "running_" not in k]


def _as_float(got) -> Optional[float]:
    if isinstance(got, dict):
        return None
    try:
        return float(got.item() if hasattr(got, "item") else got)
    except (TypeError, ValueError):
        return None


def check_stage1_step(fn, strict: bool = False, quiet: bool = False) -> CheckResult:
    """``fn(encoders, decoders, optimizer, inputs, targets, layout, ink_weight) -> total loss``:
    one training step of the five component auto-encoders, as
    :func:`dfd_kit.training.stage1.stage1_step` does it (ink-weighted MSE of each component's
    reconstruction against its clean target crop, summed over the five, one optimizer step on
    the sum). Runs on a tiny model: each input is tried on two identical copies of it, one
    stepped by the kit and one by ``fn``, and the losses and the updated weights compared."""
    import jittor as jt

    from .training.parallel import omp_threads
    from .training.stage1 import build_autoencoders, stack_crops, stage1_step

    config = _stage1_config()
    layout = config.layout
    lr, betas = 2e-4, (0.5, 0.999)
    init_enc, init_dec = build_autoencoders(config)
    init = {f"{kind}.{c}": m for kind, nets in (("encoder", init_enc), ("decoder", init_dec)) for c, m in nets.items()}
    init_state = _seeded_state(init)

    def fresh():
        enc, dec = build_autoencoders(config)
        for c in COMPONENTS:
            enc[c].load_state_dict(init_state[f"encoder.{c}"])
            dec[c].load_state_dict(init_state[f"decoder.{c}"])
        mods = [enc[c] for c in COMPONENTS] + [dec[c] for c in COMPONENTS]
        params = [p for m in mods for p in m.parameters()]
        return enc, dec, jt.optim.Adam(params, lr, betas=betas), mods

    def variant_losses(inputs, targets, ink):
        """Totals a plausible mistake would give, from the untouched networks' outputs."""
        enc, dec, _, _ = fresh()
        x, y = stack_crops(inputs, layout), stack_crops(targets, layout)
        out = {c: dec[c](enc[c](jt.array(x[c]))).numpy() for c in COMPONENTS}   # as in a training step

        def loss(o, t, kind, w):
            e = np.abs(o - t) if kind == "l1" else (o - t) ** 2
            wt = 1.0 + w * (t < 0)
            return float((e * wt).sum() / wt.sum())

        per = {c: loss(out[c], y[c], "mse", ink) for c in COMPONENTS}
        total = sum(per.values())
        found = [
            (sum(loss(out[c], y[c], "mse", 0.0) for c in COMPONENTS),
             "no ink weight: pass the ink weight to the loss, so the few line pixels count 1 + ink_weight times "
             "as much as the paper (without it, blank crops are almost as good as drawn ones)."),
            (sum(loss(out[c], y[c], "l1", ink) for c in COMPONENTS),
             "absolute instead of squared differences: stage 1 uses the squared error (\"mse\")."),
            (sum(loss(out[c], x[c], "mse", ink) for c in COMPONENTS),
             "the loss compares the reconstruction with the input crops; compare it with the clean targets "
             "(the inputs may be rough copies)."),
            (total / len(COMPONENTS), "you averaged the five components' losses; the kit adds them up."),
            (sum(float((((out[c] - y[c]) ** 2) * (1.0 + ink * (y[c] < 0))).sum()) for c in COMPONENTS),
             "a sum over the pixels where the kit takes the (weighted) mean; large crops would then dominate."),
        ]
        found += [(per[c], f"only the {c} was counted: add the losses of all five components.") for c in COMPONENTS]
        return total, [(v, h) for v, h in found if abs(v - total) > 1e-6 * max(1.0, abs(total))]

    last = {}

    def call(case: _Case, args):
        """Step one copy of the networks with the kit and an identical copy with ``fn``."""
        inputs, targets, ink = args
        enc, dec, opt, mods = fresh()
        want = stage1_step(enc, dec, opt, inputs.copy(), targets.copy(), layout, "mse", ink)["total"]
        last.clear()
        last.update(want=want, want_state=_state(mods))
        enc2, dec2, opt2, mods2 = fresh()
        last["before"] = _state(mods2)
        got = fn(enc2, dec2, opt2, inputs, targets, layout, ink)
        last.update(after=_state(mods2), mods=mods2)
        return got

    def judge(case: _Case, args, got):
        want, want_state, before, after, mods = (last[k] for k in ("want", "want_state", "before", "after", "mods"))
        inputs, targets, ink = case.args
        value = _as_float(got)
        if value is None:
            raise _Mismatch(f"your function returned a {type(got).__name__}", "the total loss as a number",
                            "return the summed loss, e.g. `total.item()`.")
        if not np.isfinite(value):
            raise _Mismatch(f"your loss is {value}", f"a finite total loss near {want:.4f}",
                            "check the crops are scaled to [-1, 1] (`stack_crops` does it).")
        moved = [not np.array_equal(a, b) for a, b in zip(before, after)]
        close = abs(value - want) <= 1e-4 * max(1.0, abs(want))
        if not close:
            total, variants = variant_losses(inputs, targets, ink)
            hint = next((h for v, h in variants if abs(value - v) <= 1e-4 * max(1.0, abs(v))), None)
            if hint is None and value > 20 * want:
                hint = ("the loss is far too large: are the crops in [-1, 1] (`stack_crops` scales them), and is "
                        "it a mean, not a sum?")
            raise _Mismatch(f"your total loss is {value:.4f}", f"{want:.4f} (the sum of the five components' "
                            "ink-weighted mean squared errors)",
                            hint or "encode and decode each component's input crop with its own encoder and "
                                    "decoder, in training mode, and compare with that component's target crop.")
        if not any(moved):
            raise _Mismatch("the loss is right but the networks did not change", "every network to take one step",
                            "call `optimizer.step(total)` once with the summed loss: it computes the gradients "
                            "and updates all ten networks.")
        names = [f"{kind} {c}" for kind in ("encoder", "decoder") for c in COMPONENTS]
        sizes = [sum("running_" not in k for k in m.state_dict()) for m in mods]
        off, bad = 0, []
        for name, n in zip(names, sizes):
            for a, b in zip(after[off:off + n], want_state[off:off + n]):
                # Adam's first step moves each weight by about lr: count weights that land elsewhere
                if a.shape != b.shape or np.mean(np.abs(a - b) > 1e-2 * lr) > 1e-3:
                    bad.append(name)
                    break
            off += n
        if bad:
            still = [name for name, n, o in zip(names, sizes, np.cumsum([0] + sizes[:-1]))
                     if not any(moved[o:o + n])]
            hint = (f"the {', '.join(still)} did not change: one optimizer step on the sum of all five losses "
                    "updates every network." if still else
                    "the loss is right but the update is not: take exactly one `optimizer.step` on the summed "
                    "loss (a step per component moves every network several times).")
            raise _Mismatch(f"after your step the weights of the {', '.join(bad[:3])}"
                            f"{' and others' if len(bad) > 3 else ''} differ from the kit's",
                            "the weights after one Adam step on the summed loss", hint)

    def error_hint(e):
        if isinstance(e, KeyError):
            return ("the encoders and decoders are dicts by component name; `stack_crops(sketches, layout)` gives "
                    "the crops as a dict with the same names.")
        if "shape" in str(e) or "Shape" in str(e):
            return ("the networks take (B, 1, S, S) float32 crops in [-1, 1], the arrays `stack_crops` returns, "
                    "wrapped in `jt.array(...)`.")
        return _common_error_hint(e)

    cases = _stage1_cases()
    with omp_threads(1):   # tiny tensors: one thread is faster, far faster on a busy machine
        return _run("stage1_step", fn, cases, judge, error_hint, strict, quiet,
                    "clean and rough batches, a blank page, with and without the ink weight", call)


__all__ = ["CheckResult", "ANCHOR_PENALTY", "check_crop_components", "check_nearest_rows",
           "check_locally_linear_weights", "check_paste_parts", "check_stage1_step"]
