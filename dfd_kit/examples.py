"""Example sketches for the notebooks and tests.

:func:`example_sketch` returns a sketch ready for the model: uint8 (size, size), dark
strokes on white. It reads ``examples/sketches/*.png`` when the repository has them and
otherwise draws a simple face procedurally (:func:`procedural_sketch`): a head outline,
brows, eyes, nose and mouth, each placed in its component box of the layout, so the
crops of :mod:`dfd_kit.components` find the features they are named after.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from .components import normalise_sketch
from .config import DEMO_LAYOUT, Layout

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples" / "sketches"
HARD_DIR = EXAMPLES_DIR.parent / "hard"
HAND_DRAWN_DIR = EXAMPLES_DIR.parent / "hand_drawn"

_SUPERSAMPLE = 4  # draw 4x larger, then downsample: smooth, pencil-like grey edges


def example_names(folder: Union[str, Path, None] = None) -> List[str]:
    """Names (file stems, sorted) of the example sketches on disk; [] when there are none."""
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.png"))


def example_sketch(which: Union[int, str] = 0, layout: Layout = DEMO_LAYOUT, procedural: bool = False,
                   folder: Union[str, Path, None] = None) -> np.ndarray:
    """An example sketch, uint8 (layout.size, layout.size), dark strokes on white.

    which: an index into the sorted files of ``examples/sketches/`` (wrapping around), or a
    file stem there or, without ``folder``, in ``examples/hand_drawn/`` (sketches drawn
    stroke by stroke in a realistic style: "hand1_male", "hand2_female", "hand3_rough_male")
    or ``examples/hard/`` (held-out sketches of the photo model: "clean1_male", ... as
    extracted, "rough1_male", ... roughened).
    With no files (or ``procedural=True``) an int picks a procedural face: 0 is a plain,
    symmetric one, others vary its proportions.
    """
    hand = folder is None and not procedural
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    names = [] if procedural else example_names(folder)
    if isinstance(which, str):
        for extra in ((HAND_DRAWN_DIR, HARD_DIR) if hand else ()):
            if which in example_names(extra):
                return normalise_sketch(extra / f"{which}.png", layout)
        if which not in names:
            names = names + (example_names(HAND_DRAWN_DIR) + example_names(HARD_DIR) if hand else [])
            available = ", ".join(names) if names else "none (the folder is empty or missing)"
            raise KeyError(f"no example sketch {which!r} in {folder}; available: {available}")
        return normalise_sketch(folder / f"{which}.png", layout)
    if names:
        return normalise_sketch(folder / f"{names[int(which) % len(names)]}.png", layout)
    return procedural_sketch(layout, variant=int(which))


@dataclass(frozen=True)
class HardExample:
    """A sketch drawn the way people draw, for showing what manifold projection does.

    ``photo``: the face the sketch was made from (uint8 (S, S, 3)), or None for a sketch
    drawn by hand, which has no true face; ``clean``: the sketch before it was roughened
    (uint8 (S, S)), where there is one: its latents are where a perfect projection would land."""
    name: str
    sketch: np.ndarray
    sex: str
    photo: Optional[np.ndarray] = None
    clean: Optional[np.ndarray] = None


def hard_examples(layout: Layout) -> List[HardExample]:
    """The notebooks' hard sketches, at ``layout.size``: six held-out faces of the photo
    model roughened as people draw (parts missing, doubled, stretched, scribbled over;
    ``examples/hard/make.py``), each with its true photo and its sketch before roughening,
    then the hand-drawn sketch drawn in a hurry (an eye left out, a scribbled mouth;
    ``examples/hand_drawn``)."""
    out = []
    for path in sorted(HARD_DIR.glob("rough*_*male.png")):
        photo = Image.open(path.with_name(path.stem + "_photo.jpg")).convert("RGB")
        photo = photo.resize((layout.size, layout.size), Image.LANCZOS)
        clean = path.with_name(path.name.replace("rough", "clean", 1))
        out.append(HardExample(path.stem, normalise_sketch(path, layout), path.stem.split("_")[-1],
                               np.asarray(photo), normalise_sketch(clean, layout) if clean.exists() else None))
    for path in sorted(HAND_DRAWN_DIR.glob("*rough*.png")):
        out.append(HardExample(path.stem, normalise_sketch(path, layout), path.stem.split("_")[-1]))
    if not out:
        raise FileNotFoundError(f"no hard example sketches in {HARD_DIR} or {HAND_DRAWN_DIR}: "
                                "they ship with the repository; check out its examples/ folder")
    return out


def _centre(layout: Layout, name: str):
    b = layout.box(name)
    return b.x + b.size / 2, b.y + b.size / 2


def procedural_sketch(layout: Layout = DEMO_LAYOUT, variant: int = 0) -> np.ndarray:
    """A simple line drawing of a face in ``layout``: uint8 (size, size), dark on white.

    Every feature is placed relative to the layout's boxes (eyes and brows in the eye
    boxes, the nose in the nose box's first ``nose_rows`` rows, the mouth in the mouth
    box), so it works for any layout. ``variant`` 0 is symmetric and neutral; other
    values draw a seeded variation (face width, eye size, mouth width and smile, hair).
    """
    s = _SUPERSAMPLE
    size = layout.size
    rng = np.random.default_rng(variant)
    jitter = (lambda lo, hi: rng.uniform(lo, hi)) if variant else (lambda lo, hi: (lo + hi) / 2)

    (lx, ly), (rx, ry) = _centre(layout, "left_eye"), _centre(layout, "right_eye")
    nx, _ = _centre(layout, "nose")
    mx, my = _centre(layout, "mouth")
    nose_box = layout.box("nose")
    d = rx - lx                                # distance between the eyes: the unit of the face
    cx, eye_y = (lx + rx) / 2, (ly + ry) / 2
    nose_tip = nose_box.y + 0.8 * layout.nose_rows  # inside the rows the nose actually pastes

    img = Image.new("L", (size * s, size * s), 255)
    draw = ImageDraw.Draw(img)
    lw = max(1, round(size / 160 * s))          # stroke width, in supersampled pixels

    def P(x, y):
        return x * s, y * s

    def curve(points, width=lw):
        draw.line([P(x, y) for x, y in points], fill=0, width=width, joint="curve")

    def arc(cx_, cy_, rx_, ry_, t0, t1, n=40, width=lw):
        t = np.linspace(np.radians(t0), np.radians(t1), n)
        curve(list(zip(cx_ + rx_ * np.cos(t), cy_ + ry_ * np.sin(t))), width)

    # head: an egg shape, wider at the cheekbones than at the chin
    half_w = d * jitter(1.1, 1.4)
    top, chin = eye_y - d * jitter(1.25, 1.45), my + d * jitter(0.55, 0.7)
    t = np.linspace(0, 2 * np.pi, 200)
    y_mid = eye_y + 0.1 * d
    ys = np.where(np.sin(t) < 0, y_mid + (y_mid - top) * np.sin(t), y_mid + (chin - y_mid) * np.sin(t))
    xs = cx + half_w * np.cos(t) * np.where(np.sin(t) > 0, 1 - 0.25 * np.sin(t) ** 2, 1.0)
    curve(list(zip(xs, ys)) + [(xs[0], ys[0])])

    # hair: a fringe across the forehead, longer strands on the sides for some variants
    fringe_y = top + (eye_y - top) * jitter(0.3, 0.45)
    arc(cx, fringe_y + 0.35 * d, half_w * 0.98, 0.5 * d, 195, 345)
    if variant % 3 == 2:
        for side in (-1, 1):
            curve([(cx + side * half_w * 1.02, y_mid), (cx + side * half_w * 1.1, chin - 0.2 * d)])

    # ears
    for side in (-1, 1):
        arc(cx + side * half_w, eye_y + 0.25 * d, 0.12 * d, 0.3 * d, -90 if side > 0 else 90,
            90 if side > 0 else 270)

    # eyes and brows
    eye_w, eye_h = d * jitter(0.2, 0.3), d * jitter(0.07, 0.14)
    brow_dy, brow_tilt = d * jitter(0.26, 0.36), d * jitter(-0.06, 0.08)
    for ex, ey, side in ((lx, ly, -1), (rx, ry, 1)):
        arc(ex, ey, eye_w, eye_h * 1.3, 180, 360)            # upper lid
        arc(ex, ey, eye_w, eye_h * 0.9, 0, 180)              # lower lid
        iris = eye_h * 0.9
        draw.ellipse([P(ex - iris, ey - iris), P(ex + iris, ey + iris)], outline=0, width=lw, fill=80)
        by = ey - brow_dy
        curve([(ex - side * eye_w * 1.1, by + brow_tilt), (ex, by - 0.05 * d), (ex + side * eye_w * 1.15, by + 0.03 * d)],
              width=round(lw * 1.5))

    # nose: the bridge's two sides, then the nostrils around the tip
    nose_w = d * jitter(0.11, 0.2)
    for side in (-1, 1):
        curve([(nx + side * 0.08 * d, eye_y + 0.15 * d), (nx + side * 0.1 * d, nose_tip - 0.3 * d),
               (nx + side * nose_w, nose_tip - 0.05 * d)])
        arc(nx + side * nose_w * 0.75, nose_tip, nose_w * 0.35, 0.08 * d, 0 if side > 0 else 90,
            180 if side > 0 else 270)
    arc(nx, nose_tip + 0.02 * d, nose_w * 0.4, 0.05 * d, 20, 160)

    # mouth: the line between the lips, an upper lip with a dip, a lower lip
    mouth_w, smile = d * jitter(0.24, 0.42), d * jitter(-0.03, 0.1)
    xs = np.linspace(mx - mouth_w, mx + mouth_w, 30)
    u = (xs - mx) / mouth_w
    lift = smile * u ** 2                                   # corners up for a smile
    curve(list(zip(xs, my - lift)))
    curve(list(zip(xs, my - 0.09 * d * (1 - u ** 2) + 0.03 * d * np.exp(-(u / 0.2) ** 2) - lift)))
    curve(list(zip(xs, my + 0.12 * d * (1 - u ** 2) - lift)))

    # neck
    for side in (-1, 1):
        curve([(cx + side * 0.45 * d, chin - 0.15 * d), (cx + side * 0.5 * d, size)])

    small = img.resize((size, size), Image.LANCZOS)
    return np.ascontiguousarray(np.asarray(small, np.uint8))


def shift_sketch(sketch: np.ndarray, dx: int = 0, dy: int = 0) -> np.ndarray:
    """The sketch moved right by ``dx`` and down by ``dy`` pixels (negative: left / up);
    the uncovered border is white paper. Same shape and dtype."""
    out = np.full_like(sketch, 255)
    h, w = sketch.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = sketch[ys, xs]
    return out


__all__ = ["EXAMPLES_DIR", "HARD_DIR", "HardExample", "example_names", "example_sketch", "hard_examples",
           "procedural_sketch", "shift_sketch"]
