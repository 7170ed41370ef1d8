"""Stage 1 -- cut a sketch into its components.

A sketch is first normalised to the layout: a ``size`` x ``size`` uint8 grayscale image,
dark strokes on white. Then each part (left eye, right eye, nose, mouth) is cropped from
its box, and the remainder is the whole sketch with those four boxes painted white, so
the remainder's encoder sees only what the parts do not cover.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import COMPONENTS, PARTS, Layout
from .errors import SketchError

SketchLike = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]


def _open_image(path) -> Image.Image:
    p = Path(path)
    if not p.exists():
        raise SketchError(f"sketch file not found: {p}")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SketchError(f"could not read sketch {p}: not a valid image ({e}). "
                          "Save it again as PNG or JPEG.") from None
    return img


def _array_to_gray(a: np.ndarray) -> np.ndarray:
    """Any numeric array (H,W), (H,W,1), (H,W,3) or (H,W,4) -> float64 (H,W) in [0, 255]."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.float64) * 255
    if not np.issubdtype(a.dtype, np.number):
        raise SketchError(f"sketch array has dtype {a.dtype}; expected numbers")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise SketchError("sketch array contains NaN or infinite values")
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        pass
    elif a.ndim != 2:
        raise SketchError(f"sketch array has shape {a.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.size == 0:
        raise SketchError("sketch array is empty")
    # Float images in [0, 1] are scaled to [0, 255].
    if a.max() <= 1.0 and np.asarray(a).dtype.kind == "f":
        a = a * 255.0
    if a.ndim == 3:
        if a.shape[2] == 4:  # composite over white: a transparent canvas background is paper
            alpha = a[..., 3:4] / 255.0
            a = a[..., :3] * alpha + 255.0 * (1 - alpha)
        if a.shape[2] == 1:
            a = a[..., 0]
        else:
            a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return np.clip(a, 0, 255)


def _image_to_gray(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    if img.mode in ("I", "I;16", "F"):
        a = np.asarray(img, np.float64)
        return np.clip(a / (a.max() or 1) * 255, 0, 255)
    # PIL's integer luma: equal R, G, B give back exactly that value, as the official
    # code (which reads channel 0) would.
    return np.asarray(img.convert("L"), np.float64)


def normalise_sketch(sketch: SketchLike, layout: Layout) -> np.ndarray:
    """Any sketch -> uint8 (layout.size, layout.size) grayscale, dark strokes on white.

    Accepts a path, bytes of an image file, a PIL image, or a numpy array (uint8 or float
    in [0, 1] or [0, 255]; grayscale, RGB or RGBA with a transparent background). A
    non-square sketch is padded with white to a square about its centre, then resized to
    the layout size (bicubic). A sketch drawn light-on-dark (median darker than mid-grey)
    is inverted. The input is never modified.
    """
    if isinstance(sketch, (str, os.PathLike)):
        gray = _image_to_gray(_open_image(sketch))
    elif isinstance(sketch, bytes):
        try:
            img = Image.open(io.BytesIO(sketch)); img.load()
        except (UnidentifiedImageError, OSError) as e:
            raise SketchError(f"could not decode sketch bytes as an image ({e})") from None
        gray = _image_to_gray(img)
    elif isinstance(sketch, Image.Image):
        gray = _image_to_gray(sketch)
    elif isinstance(sketch, np.ndarray):
        gray = _array_to_gray(sketch)
    else:
        raise SketchError(f"cannot use a {type(sketch).__name__} as a sketch; pass a file path, "
                          "a PIL image or a numpy array")
    if np.median(gray) < 128:
        gray = 255 - gray
    h, w = gray.shape
    if h != w:
        s = max(h, w)
        sq = np.full((s, s), 255.0)
        y0, x0 = (s - h) // 2, (s - w) // 2
        sq[y0:y0 + h, x0:x0 + w] = gray
        gray = sq
    out = np.round(gray).astype(np.uint8)
    if out.shape[0] != layout.size:
        out = np.asarray(Image.fromarray(out).resize((layout.size, layout.size), Image.BICUBIC))
    return np.ascontiguousarray(out)


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
