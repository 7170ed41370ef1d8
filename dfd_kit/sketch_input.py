"""Reading a sketch from whatever a user has: a file path, an image file's bytes, a PIL
image or a numpy array, in any mode (gray, RGB, RGBA over white, 16-bit, float). Every
problem (a missing or corrupt file, an odd mode, NaN, an image too large to decode safely)
is a :class:`~dfd_kit.errors.SketchError` that says what to do. Stage 1
(:func:`dfd_kit.components.normalise_sketch`) then fits the result to the layout.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import SketchError

SketchLike = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]


#: The largest sketch accepted, in pixels (checked before decoding): 40 megapixels, e.g.
#: 8000 x 5000. Decoding one as RGBA takes 160 MB; a 2 GB notebook server survives that.
MAX_PIXELS = 40_000_000


def _check_size(width: int, height: int, what) -> None:
    if width < 1 or height < 1:
        raise SketchError(f"{what} is empty ({width} x {height} pixels)")
    if width * height > MAX_PIXELS:
        raise SketchError(f"{what} is {width} x {height} pixels, more than the {MAX_PIXELS // 10**6} megapixels "
                          "a sketch may have; scale it down (the model uses 512 x 512 at most)")


def _open_image(source, what) -> Image.Image:
    """Open a file path or bytes lazily (PIL reads the header only) and check its size
    before anything is decoded."""
    try:
        with warnings.catch_warnings():   # the size is checked here, more strictly than PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as e:
        raise SketchError(f"{what} is too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        # PIL's own message names its internal BytesIO object, which means nothing to the user
        raise SketchError(f"could not read {what}: not a valid image (not a PNG, JPEG or another format "
                          "PIL knows). Save it again as PNG or JPEG.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SketchError(f"could not read {what}: not a valid image ({e}). Save it again as PNG or JPEG.") from None
    return img


def _image_to_gray(img: Image.Image, what) -> np.ndarray:
    """A PIL image -> uint8 (H, W), or float64 (H, W) in [0, 255] for 16-bit and float
    images. The first frame of an animation; any error is a :class:`SketchError`."""
    _check_size(*img.size, what)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        return _decoded_to_gray(img, what)
    except SketchError:
        raise
    except Image.DecompressionBombError as e:
        raise SketchError(f"{what} is too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise SketchError(f"could not read {what}: not a valid image, or an image mode ({img.mode}) that "
                          f"cannot be read as grayscale ({e}). Save it again as an 8-bit PNG or JPEG.") from None
    except MemoryError:
        raise SketchError(f"{what} ({img.size[0]} x {img.size[1]}, {img.mode}) does not fit in memory; "
                          "scale it down") from None


def _decoded_to_gray(img: Image.Image, what) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    if img.mode.startswith("I;16"):   # any byte order: as 32-bit integers, which numpy reads right
        img = img.convert("I")
    if img.mode in ("I", "F"):
        a = np.asarray(img, np.float64)
        if not np.isfinite(a).all():
            raise SketchError(f"{what} contains NaN or infinite values")
        return np.clip(a / (a.max() or 1) * 255, 0, 255)
    if img.mode == "LAB":
        return np.asarray(img.getchannel("L"))   # lightness, 0..255
    # PIL's integer luma: equal R, G, B give back exactly that value, as the official
    # code (which reads channel 0) would.
    return np.asarray(img.convert("L"))


def _array_to_gray(a: np.ndarray) -> np.ndarray:
    """Any numeric array (H,W), (H,W,1), (H,W,3) or (H,W,4) -> uint8 (H, W) for a uint8
    gray array, else float64 (H, W) in [0, 255]. Computed channel by channel, so the
    float copies are the size of one channel."""
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * np.uint8(255)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise SketchError(f"sketch array has dtype {a.dtype}; expected real numbers")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise SketchError(f"sketch array has shape {a.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.size == 0:
        raise SketchError("sketch array is empty")
    _check_size(a.shape[1], a.shape[0], f"the sketch array {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise SketchError("sketch array contains NaN or infinite values")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype == np.uint8 and a.ndim == 2 and a.max() > 1:
        return a   # already what the float path would give back, without a float copy
    top = float(a.max())
    scale = 255.0 if top <= 1.0 else 1.0   # float images in [0, 1] (and 0/1 masks) are scaled to [0, 255]

    def channel(i=None) -> np.ndarray:
        return (a if i is None else a[..., i]).astype(np.float64) * scale if scale != 1.0 else \
            (a if i is None else a[..., i]).astype(np.float64)

    if a.ndim == 2:
        return np.clip(channel(), 0, 255)
    rgb = [channel(i) for i in range(3)]
    if a.shape[2] == 4:  # composite over white: a transparent canvas background is paper
        alpha = channel(3) / 255.0
        rgb = [c * alpha + 255.0 * (1 - alpha) for c in rgb]
    return np.clip(rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114, 0, 255)


def read_gray(sketch: SketchLike, name: Optional[str] = None) -> np.ndarray:
    """Any sketch -> uint8 (H, W) gray, or float64 (H, W) in [0, 255] for 16-bit and float
    inputs, at its own size. ``name`` (e.g. an uploaded file's name) is what error messages
    call it."""
    if isinstance(sketch, (str, os.PathLike)):
        p = Path(sketch)
        if not p.exists():
            raise SketchError(f"sketch file not found: {p}")
        what = f"sketch {name or p}"
        gray = _image_to_gray(_open_image(p, what), what)
    elif isinstance(sketch, bytes):
        what = name or "the sketch bytes"
        gray = _image_to_gray(_open_image(sketch, what), what)
    elif isinstance(sketch, Image.Image):
        gray = _image_to_gray(sketch, "the sketch image")
    elif isinstance(sketch, np.ndarray):
        gray = _array_to_gray(sketch)
    else:
        raise SketchError(f"cannot use a {type(sketch).__name__} as a sketch; pass a file path, "
                          "a PIL image or a numpy array")
    return gray


__all__ = ["SketchLike", "MAX_PIXELS", "read_gray"]
