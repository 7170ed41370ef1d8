"""Training data for DeepFaceDrawing: aligned (sketch, photo) pairs with the person's sex.

The paper trains on face photos aligned so that the eyes, nose and mouth fall in
fixed component boxes (``left_eye``, ``right_eye``, ``nose``, ``mouth``; the
``remainder`` is the rest of the face), paired with line sketches made from the
photos. This package writes and reads such sets in one on-disk format::

    DIR/
      samples.csv         columns id,sex   (sex is "male" or "female")
      photo/<id>.png      RGB,  layout.size x layout.size
      sketch/<id>.png     L (grayscale), same size, dark lines on a white background

Two builders write it:

* :func:`build_facesjs_dataset` (module :mod:`.facesjs`): synthetic cartoon faces
  from the npm package facesjs, photo and sketch rendered from the same drawing;
* :func:`build_photo_dataset` (module :mod:`.sketch`): a folder of aligned real face
  photos (CelebAMask-HQ-like), sketches extracted by :func:`photo_to_sketch`.

:func:`load_samples` and :func:`load_pair` read it back; :func:`augment_sketch`
makes clean sketches look hand-drawn for training.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List, NamedTuple, Tuple

import numpy as np
from PIL import Image

from ..config import DEMO_LAYOUT, SEXES, Layout
from ..errors import DataError, DataNotFoundError

#: The two values of the ``sex`` column (the paper's gender control).


class Sample(NamedTuple):
    """One training pair on disk: ``(sketch_path, photo_path, sex)``."""
    sketch_path: Path
    photo_path: Path
    sex: str


def write_samples_csv(out_dir, rows) -> Path:
    """Write ``out_dir/samples.csv`` from ``(id, sex)`` rows; returns its path."""
    path = Path(out_dir) / "samples.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "sex"])
        for sid, sex in rows:
            if sex not in SEXES:
                raise DataError(f"sample {sid}: sex must be 'male' or 'female', not {sex!r}")
            w.writerow([sid, sex])
    return path


def load_samples(data_dir) -> List[Sample]:
    """Read a dataset folder's ``samples.csv``: a list of :class:`Sample`, in file order.

    Raises :class:`~dfd_kit.errors.DataNotFoundError` (a FileNotFoundError) when the
    folder, the CSV or any listed image is missing, and
    :class:`~dfd_kit.errors.DataError` (a ValueError) for a malformed CSV.
    """
    root = Path(data_dir)
    path = root / "samples.csv"
    if not path.exists():
        raise DataNotFoundError(f"{path} not found: build a dataset first with "
                                "dfd_kit.data.build_facesjs_dataset or build_photo_dataset")
    out, missing = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "sex"} <= set(reader.fieldnames):
            raise DataError(f"{path} must have the columns id,sex; it has {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            sid, sex = row["id"].strip(), row["sex"].strip().lower()
            if sex not in SEXES:
                raise DataError(f"{path} line {i}: sex must be 'male' or 'female', not {row['sex']!r}")
            s = Sample(root / "sketch" / f"{sid}.png", root / "photo" / f"{sid}.png", sex)
            for p in s[:2]:
                if not p.exists():
                    missing.append(p)
            out.append(s)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataNotFoundError(f"{len(missing)} image(s) listed in {path} are missing: "
                                f"{', '.join(map(str, missing[:3]))}{more}; build the set again, "
                                "or drop their rows from samples.csv")
    return out


def load_pair(sample: Sample, layout: Layout = DEMO_LAYOUT) -> Tuple[np.ndarray, np.ndarray]:
    """Load one pair as arrays at ``layout.size``.

    Returns ``(sketch, photo)``: sketch uint8 (S, S), dark lines on white (255);
    photo uint8 (S, S, 3) RGB. Images of another size are resized (a dataset built
    at 512 can feed the 256 demo layout).
    """
    size = layout.size
    sk = Image.open(sample.sketch_path)
    if sk.mode in ("RGBA", "LA", "P"):  # transparent background = paper
        sk = sk.convert("RGBA")
        bg = Image.new("RGBA", sk.size, (255, 255, 255, 255))
        sk = Image.alpha_composite(bg, sk)
    sk = sk.convert("L")
    ph = Image.open(sample.photo_path).convert("RGB")
    if sk.size != (size, size):
        sk = sk.resize((size, size), Image.LANCZOS)
    if ph.size != (size, size):
        ph = ph.resize((size, size), Image.LANCZOS)
    return np.asarray(sk, np.uint8).copy(), np.asarray(ph, np.uint8).copy()


# The builders load lazily (PEP 562): reading a dataset needs neither cairosvg nor
# Node, and `python -m dfd_kit.data.facesjs` must not find its module pre-imported.
_LAZY = {"build_facesjs_dataset": "facesjs", "generate_faces": "facesjs", "FacesjsError": "facesjs",
         "build_photo_dataset": "sketch", "photo_to_sketch": "sketch", "augment_sketch": "sketch",
         "roughen_sketch": "sketch"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SEXES", "Sample", "load_samples", "load_pair", "write_samples_csv", *_LAZY]
