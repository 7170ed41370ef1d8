"""Sketches from photos, a dataset builder for real photos, and freehand-style augmentation.

DeepFaceDrawing made its training sketches from CelebA-HQ photos with Photoshop's
"photocopy" filter followed by sketch simplification, and its users draw freehand.
This module gives the kit the same three steps with numpy, Pillow and scipy.ndimage:

* :func:`photo_to_sketch`: photocopy-like line extraction (a difference of
  Gaussians marks the dark side of every edge), speck removal, thinning;
* :func:`build_photo_dataset`: a folder of aligned face photos -> the on-disk
  format of :mod:`dfd_kit.data` (photo/, sketch/, samples.csv);
* :func:`augment_sketch`: makes a clean line sketch look hand-drawn (wobbly,
  broken, doubled strokes of varying width, a missing detail), so a model trained
  on clean sketches copes with real drawings.

All images are numpy uint8 arrays: photos (H, W, 3) RGB, sketches (H, W) with
dark lines (near 0) on white (255).
"""
from __future__ import annotations

import csv
import math
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from ..config import DEMO_LAYOUT, Layout
from ..errors import DataError, DataNotFoundError
from . import SEXES, write_samples_csv

PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# ---------------------------------------------------------------------------
# Small image operations (the rest are scipy.ndimage calls)
# ---------------------------------------------------------------------------

def _to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) uint8/float -> float64 (H, W) luminance in 0..255."""
    a = np.asarray(img)
    if a.ndim == 3:
        if a.shape[2] == 4:  # composite over white
            alpha = a[..., 3:4].astype(np.float64) / 255.0
            a = a[..., :3] * alpha + 255.0 * (1.0 - alpha)
        # Pillow's "L" weights (ITU-R 601), not skimage.color.rgb2gray's Rec. 709 ones
        a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif a.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    return a.astype(np.float64)


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """bool ``mask`` without its 8-connected components of fewer than ``min_size`` pixels.

    (Not skimage.morphology.remove_small_objects: its size argument changed meaning in
    scikit-image 0.26, which needs Python 3.11, and it would bring scikit-image for this alone.)
    """
    labels, _ = ndimage.label(mask, np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0   # the background
    return sizes[labels] >= min_size


def thin(mask: np.ndarray, max_iter: int = 50) -> np.ndarray:
    """Zhang-Suen thinning: reduce strokes to 1-pixel-wide centre lines, keeping them connected.

    Written out because no library has the textbook algorithm: skimage.morphology.skeletonize
    uses a modified Zhang-Suen table (25 of the 256 neighbourhoods decide otherwise; it also
    strips staircase corners) and skimage.morphology.thin is Guo-Hall. On this extractor's
    strokes they move about one line pixel in six and one in two, and the photo model was
    trained on sketches thinned by this one.
    """
    m = np.pad(np.asarray(mask, bool), 1).astype(np.uint8)
    for _ in range(max_iter):
        changed = False
        for step in (0, 1):
            p2, p3, p4 = m[:-2, 1:-1], m[:-2, 2:], m[1:-1, 2:]
            p5, p6, p7 = m[2:, 2:], m[2:, 1:-1], m[2:, :-2]
            p8, p9 = m[1:-1, :-2], m[:-2, :-2]
            nb = [p2, p3, p4, p5, p6, p7, p8, p9]
            b = sum(x.astype(np.int16) for x in nb)
            a = sum(((nb[i] == 0) & (nb[(i + 1) % 8] == 1)).astype(np.int16) for i in range(8))
            if step == 0:
                c = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                c = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            centre = m[1:-1, 1:-1]
            delete = (centre == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if delete.any():
                centre[delete] = 0
                changed = True
        if not changed:
            break
    return m[1:-1, 1:-1].astype(bool)


# ---------------------------------------------------------------------------
# Photo -> sketch
# ---------------------------------------------------------------------------

def photo_to_sketch(photo: np.ndarray, sigma: Optional[float] = None, threshold: float = 0.05,
                    min_contrast: float = 3.0, min_component: Optional[int] = None,
                    thin_lines: bool = True, line_width: Optional[int] = None,
                    presmooth: int = 0) -> np.ndarray:
    """A photocopy-style line sketch of a photo.

    photo: uint8 (H, W, 3) RGB or (H, W) grayscale. Returns uint8 (H, W): black (0)
    lines on white (255).

    Like a photocopy filter, a pixel becomes ink when it is darker than its
    surroundings: the difference between a wide blur (``sigma`` pixels; default
    1.5 per 256 pixels of image size) and a light blur of the image exceeds both
    ``threshold`` times the local brightness (so dark and bright regions give the
    same lines) and ``min_contrast`` grey levels (so flat regions and noise give
    none). That marks the dark side of every edge and every dark thin feature
    (lashes, lips, hair strands), and leaves smooth shading white. The paper then
    simplified its sketches; here components smaller than ``min_component`` pixels
    (skin texture, specks) are removed and the strokes are thinned to centre lines
    drawn ``line_width`` pixels wide (default 1 per 256 pixels).

    ``presmooth`` (odd, pixels per 256; 0 = off) first runs a median filter of that
    size over the photo: it keeps outlines and erases fine texture (hair strands,
    stubble, foliage), so busy photos give fewer, longer lines, closer to a drawing.
    """
    if presmooth:
        from PIL import ImageFilter

        a = np.asarray(photo)
        size = max(3, int(round(presmooth * min(a.shape[:2]) / 256.0)) | 1)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        photo = np.asarray(img.filter(ImageFilter.MedianFilter(size)))
    gray = _to_gray(photo)
    h, w = gray.shape
    scale = min(h, w) / 256.0
    sigma = 1.5 * scale if sigma is None else float(sigma)
    min_component = int(round(12 * scale)) if min_component is None else int(min_component)
    line_width = max(1, int(round(scale))) if line_width is None else int(line_width)
    # kernels cut at the whole pixel past 3 sigma, mirrored at the borders (numpy's "reflect")
    wide, light = (ndimage.gaussian_filter(gray, s, mode="mirror", radius=max(1, math.ceil(3.0 * s)))
                   for s in (sigma, 0.5 * scale))
    ink = remove_small_components(wide - light > np.maximum(min_contrast, threshold * wide), min_component)
    if thin_lines:
        ink = thin(ink)
        if line_width > 1:
            ink = ndimage.binary_dilation(ink, np.ones((line_width, line_width), bool))
    return np.where(ink, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Dataset from a folder of photos
# ---------------------------------------------------------------------------

_KEY_COLUMNS = ("filename", "file", "file_name", "image", "image_id", "image_name", "img", "name", "id", "path")
_MALE_WORDS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female",
               "woman": "female"}


def _sex_from_male_flag(v: str) -> Optional[str]:
    v = v.strip().lower()
    if v in ("1", "true", "yes", "y"):
        return "male"
    if v in ("-1", "0", "false", "no", "n"):
        return "female"
    return None


def read_sex_table(path) -> Dict[str, str]:
    """Read who is male or female from a CSV, TSV or CelebA attribute file.

    Accepted layouts:

    * a header row with a file column (``filename``, ``image_id``, ``id``, ...) and
      either ``sex``/``gender`` (``male``/``female``, ``m``/``f``) or a CelebA-style
      ``Male`` column (``1`` male, ``-1`` or ``0`` female);
    * CelebA's ``list_attr_celeba.txt`` / CelebAMask-HQ's ``CelebAMask-HQ-attribute-anno.txt``:
      a count line, a line of attribute names, then ``name v1 v2 ...`` rows.

    Returns {key: "male"|"female"}, where key is the file name as written; lookups
    also try the stem (see :func:`_lookup`).
    """
    lines = Path(path).read_text().splitlines()
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DataError(f"{path} is empty")
    table: Dict[str, str] = {}
    if re.fullmatch(r"\s*\d+\s*", lines[0]):  # CelebA attribute annotation
        names = lines[1].split()
        if "Male" not in names:
            raise DataError(f"{path}: CelebA attribute file without a 'Male' attribute")
        col = names.index("Male")
        for ln in lines[2:]:
            parts = ln.split()
            # rows are "file v1 ... vN", one value per attribute name
            sex = _sex_from_male_flag(parts[1 + col]) if len(parts) > 1 + col else None
            if sex is None:
                raise DataError(f"{path}: bad Male value in row {ln[:60]!r}")
            table[parts[0]] = sex
        return table
    first = lines[0]
    delim = "," if "," in first else ("\t" if "\t" in first else None)
    rows = [next(csv.reader([ln], delimiter=delim)) if delim else ln.split() for ln in lines]
    header = [c.strip() for c in rows[0]]
    low = [c.lower() for c in header]
    key_col = next((low.index(k) for k in _KEY_COLUMNS if k in low), None)
    if key_col is None:
        raise DataError(f"{path}: no file column; expected one of {', '.join(_KEY_COLUMNS)} in {header}")
    if "sex" in low or "gender" in low:
        sex_col, flag = (low.index("sex") if "sex" in low else low.index("gender")), False
    elif "male" in low:
        sex_col, flag = low.index("male"), True
    else:
        raise DataError(f"{path}: no sex column; expected 'sex', 'gender' or CelebA's 'Male' in {header}")
    for i, row in enumerate(rows[1:], start=2):
        v = row[sex_col].strip() if sex_col < len(row) else ""
        sex = _sex_from_male_flag(v) if flag else _MALE_WORDS.get(v.lower())
        if sex is None:
            raise DataError(f"{path} line {i}: cannot read sex from {v!r}")
        table[row[key_col].strip()] = sex
    return table


def _lookup(table: Dict[str, str], path: Path) -> Optional[str]:
    """Sex of a photo by file name, then stem, then the stem's number (``00012`` ~ ``12``)."""
    for key in (path.name, path.stem):
        if key in table:
            return table[key]
    if path.stem.isdigit():
        n = str(int(path.stem))
        for key, sex in table.items():
            k = Path(key).stem
            if k.isdigit() and str(int(k)) == n:
                return sex
    return None


def _natural_key(p: Path):
    return (0, int(p.stem), p.name) if p.stem.isdigit() else (1, 0, p.name)


def _photos_in(folder: Path) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS),
                  key=_natural_key)


def _square_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square (aligned face sets are square already), resize to size."""
    w, h = img.size
    if w != h:
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return img


def _photo_job(args):
    src, sid, out_dir, size, sketch_fn = args
    photo = _square_resize(Image.open(src).convert("RGB"), size)
    arr = np.asarray(photo, np.uint8)
    sketch = sketch_fn(arr)
    photo.save(Path(out_dir) / "photo" / f"{sid}.png", compress_level=1)
    Image.fromarray(np.asarray(sketch, np.uint8), "L").save(Path(out_dir) / "sketch" / f"{sid}.png",
                                                           compress_level=1)
    return sid


def build_photo_dataset(photo_dir, out_dir, layout: Layout = DEMO_LAYOUT, sex_csv=None, progress: bool = True,
                        sketch_fn: Callable[[np.ndarray], np.ndarray] = photo_to_sketch,
                        workers: Optional[int] = None) -> Path:
    """Turn a folder of aligned face photos into a (sketch, photo, sex) dataset.

    photo_dir: photos already aligned like the layout (CelebAMask-HQ-like: square,
    eyes level, the face filling the frame). Sex comes from

    * ``sex_csv`` (see :func:`read_sex_table`: a ``sex``/``gender`` column or CelebA's
      ``Male`` 1/-1 column), photos directly in ``photo_dir``; photos the table does
      not list are skipped with a warning; or
    * when ``sex_csv`` is None, the subfolders ``photo_dir/male/`` and
      ``photo_dir/female/``.

    Writes ``out_dir/photo/NNNNN.png`` (RGB, layout.size square: centre-cropped and
    resized), ``out_dir/sketch/NNNNN.png`` (``sketch_fn(photo)``, grayscale),
    ``samples.csv`` (id,sex) and ``sources.csv`` (id,source: the original file,
    relative to photo_dir). Ids follow the sorted photo names. Returns ``Path(out_dir)``.
    """
    from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

    src_root = Path(photo_dir)
    if not src_root.is_dir():
        raise DataNotFoundError(f"photo folder {src_root} not found: check the path")
    items: List[Tuple[Path, str]] = []
    if sex_csv is not None:
        table = read_sex_table(sex_csv)
        skipped = []
        for p in _photos_in(src_root):
            sex = _lookup(table, p)
            (skipped.append(p.name) if sex is None else items.append((p, sex)))
        if skipped:
            warnings.warn(f"{len(skipped)} photo(s) are not in {sex_csv} and were skipped "
                          f"(first: {', '.join(skipped[:3])})", stacklevel=2)
    else:
        subs = {d.name.lower(): d for d in src_root.iterdir() if d.is_dir()}
        if not any(s in subs for s in SEXES):
            raise DataError(f"{src_root} has no male/ or female/ subfolder; put the photos there "
                             "or pass sex_csv=")
        for sex in SEXES:
            if sex in subs:
                items += [(p, sex) for p in _photos_in(subs[sex])]
    if not items:
        raise DataError(f"no photos with a known sex found in {src_root}")

    out = Path(out_dir)
    (out / "photo").mkdir(parents=True, exist_ok=True)
    (out / "sketch").mkdir(parents=True, exist_ok=True)
    ids = [f"{i:05d}" for i in range(len(items))]
    jobs = [(p, sid, str(out), layout.size, sketch_fn) for (p, _), sid in zip(items, ids)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=len(jobs), desc="photos -> sketches", unit="photo", disable=not progress)
    try:
        if workers <= 1 or len(jobs) < 64:
            for job in jobs:
                _photo_job(job)
                bar.update()
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap(_photo_job, jobs, chunksize=8):
                    bar.update()
    finally:
        bar.close()
    write_samples_csv(out, [(sid, sex) for sid, (_, sex) in zip(ids, items)])
    with open(out / "sources.csv", "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["id", "source"])
        for sid, (p, _) in zip(ids, items):
            wr.writerow([sid, p.relative_to(src_root).as_posix()])
    return out


# ---------------------------------------------------------------------------
# Freehand-style augmentation
# ---------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field, about N(0, 1) per pixel, varying over ~size/cells pixels."""
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(g, "F").resize((w, h), Image.BICUBIC), np.float64)


def augment_sketch(sketch: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Make a clean line sketch look drawn by hand.

    sketch: uint8 (H, W), dark lines on white (an (H, W, 3) image is converted to
    gray). rng: the only source of randomness, so the same generator state gives
    the same output. strength: 0 returns the sketch unchanged, 1 is the intended
    amount, larger exaggerates. Returns uint8 (H, W), dark lines on white.

    Effects, in order (sizes are per 256 pixels of image size):

    1. varied line widths: a smooth random field thickens strokes in some places
       (3x3 grey dilation) and lightens them elsewhere (pressure);
    2. doubled strokes: a faint copy shifted 1-3 px, only in some regions, as when
       a stroke is traced twice;
    3. wobble: a smooth random displacement field (a few px) bends all strokes;
    4. broken strokes: short gaps erased along the lines;
    5. a missing detail: sometimes one small region is erased.
    """
    gray = _to_gray(sketch)
    if strength <= 0:
        return np.clip(gray + 0.5, 0, 255).astype(np.uint8)
    h, w = gray.shape
    scale = min(h, w) / 256.0
    ink = 1.0 - gray / 255.0

    # 1. line width and pressure
    field = _smooth_noise(rng, h, w, cells=4)
    thick = ndimage.maximum_filter(ink, 3)
    ink = ink + np.clip(0.9 * strength * field - 0.3, 0.0, 1.0) * (thick - ink)
    ink = ink * (1.0 - np.clip(0.5 * strength * (-field) - 0.25, 0.0, 0.55))

    # 2. doubled strokes
    shift_px = max(1, int(round(rng.uniform(1.0, 2.5) * scale * min(strength, 1.5))))
    angle = rng.uniform(0, 2 * np.pi)
    # whole pixels (order 0), blank where nothing moved in
    copy = ndimage.shift(ink, (round(shift_px * np.sin(angle)), round(shift_px * np.cos(angle))), order=0)
    where = np.clip(_smooth_noise(rng, h, w, cells=3) - 0.6, 0.0, 1.0)
    ink = np.maximum(ink, rng.uniform(0.25, 0.5) * min(strength, 1.0) * where * copy)

    # 3. wobble: coarse bends plus a finer tremor, bounded so strokes stay near home
    amp = 2.0 * scale * strength
    dy = amp * np.tanh(_smooth_noise(rng, h, w, cells=4) + 0.4 * _smooth_noise(rng, h, w, cells=12))
    dx = amp * np.tanh(_smooth_noise(rng, h, w, cells=4) + 0.4 * _smooth_noise(rng, h, w, cells=12))
    # bilinear, out[y, x] = ink[y + dy, x + dx]; zero outside: no smear in from the edge
    yy, xx = np.mgrid[0:h, 0:w]
    ink = ndimage.map_coordinates(ink, (yy + dy, xx + dx), order=1, mode="grid-constant", cval=0.0)

    # 4. broken strokes: gaps a few pixels long centred on random stroke pixels;
    # solid shapes (pupils, filled brows) are left whole, a pen does not skip there.
    line = ink > 0.5
    solid = ndimage.maximum_filter(ndimage.minimum_filter(line, 5), 7)
    ys, xs = np.nonzero(line & ~solid)
    if ys.size:
        n_gaps = rng.poisson(strength * ys.size / (120.0 * scale))
        pick = rng.integers(0, ys.size, size=n_gaps)
        radii = rng.uniform(2.0, 3.5, size=n_gaps) * scale
        gaps = np.zeros((h, w), bool)
        for y, x, r in zip(ys[pick], xs[pick], radii):
            ri = int(np.ceil(r))
            y0, y1, x0, x1 = max(0, y - ri), min(h, y + ri + 1), max(0, x - ri), min(w, x + ri + 1)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            gaps[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        ink[gaps & ~solid] *= 0.05
    ys, xs = np.nonzero(line)

    # 5. a missing detail
    if ys.size and rng.random() < min(1.0, 0.5 * strength):
        k = rng.integers(0, ys.size)
        ry, rx = rng.uniform(h / 48, h / 20), rng.uniform(w / 48, w / 20)
        yy, xx = np.ogrid[0:h, 0:w]
        ink[((yy - ys[k]) / ry) ** 2 + ((xx - xs[k]) / rx) ** 2 <= 1.0] = 0.0

    return np.clip(255.0 * (1.0 - np.clip(ink, 0.0, 1.0)) + 0.5, 0, 255).astype(np.uint8)


def roughen_sketch(sketch: np.ndarray, rng: np.random.Generator, layout: Layout = DEMO_LAYOUT,
                   strength: float = 1.0) -> np.ndarray:
    """A sketch as rough as people draw: :func:`augment_sketch`'s hand-drawn strokes,
    then, for each of the four parts (eyes, nose, mouth), with ``strength`` scaling the
    odds, one of

    * missing: the part's strokes erased (an eye not drawn yet);
    * doubled: a second, shifted attempt drawn over the first;
    * wrong proportions: the part stretched or squeezed by up to a third, each axis apart;
    * scribbled: a loose zig-zag over the part (shading, a crossed-out try).

    A person's first drawing of a face is like this, and manifold projection is meant to
    repair exactly this: the result lies off the manifold of clean sketches, in each part
    separately. ``layout`` gives the parts' boxes (the sketch is taken at any size).
    Returns uint8 (H, W), dark lines on white.
    """
    from PIL import ImageDraw

    from ..config import PARTS

    out = augment_sketch(sketch, rng, strength)
    h, w = out.shape
    sy, sx = h / layout.size, w / layout.size
    odds = np.clip(np.array([0.12, 0.2, 0.2, 0.15]) * strength, 0, None)
    for c in PARTS:
        b = layout.box(c)
        x0, y0, size = int(b.x * sx), int(b.y * sy), int(round(b.size * min(sx, sy)))
        box = (slice(y0, y0 + size), slice(x0, x0 + size))
        part = out[box].copy()
        r, edges = rng.random(), np.cumsum(odds)
        if r < edges[0]:                       # missing
            yy, xx = np.ogrid[0:size, 0:size]
            inside = ((yy - size / 2) / (0.33 * size)) ** 2 + ((xx - size / 2) / (0.4 * size)) ** 2 <= 1
            part[inside] = 255
        elif r < edges[1]:                     # doubled
            d = rng.uniform(3, 7) * min(sx, sy) * rng.choice([-1, 1], size=2)
            moved = ndimage.shift(255.0 - part, np.round(d), order=0)
            part = np.minimum(part, 255 - rng.uniform(0.6, 0.9) * moved).astype(np.uint8)
        elif r < edges[2]:                     # wrong proportions
            fy, fx = rng.uniform(0.72, 1.33, size=2)
            img = Image.fromarray(part).resize((max(1, int(size * fx)), max(1, int(size * fy))), Image.BILINEAR)
            canvas = Image.new("L", (size, size), 255)
            canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
            part = np.asarray(canvas)
        elif r < edges[3]:                     # scribbled
            img = Image.fromarray(part)
            n = int(rng.integers(8, 20))
            cx, cy = rng.uniform(0.3, 0.7, size=2) * size
            pts = [(float(cx + rng.normal(0, 0.15 * size)), float(cy + rng.normal(0, 0.08 * size))) for _ in range(n)]
            ImageDraw.Draw(img).line(pts, fill=int(rng.uniform(0, 90)), width=max(1, int(round(min(sx, sy)))))
            part = np.asarray(img)
        out[box] = part
    return out


__all__ = ["photo_to_sketch", "build_photo_dataset", "augment_sketch", "roughen_sketch", "read_sex_table",
           "remove_small_components", "thin", "PHOTO_EXTENSIONS"]
