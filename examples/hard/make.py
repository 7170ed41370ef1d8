"""The hard sketches the notebooks use to show manifold projection: held-out faces of the
photo model (faces of people who do not exist, never trained on), their extracted sketches
roughened as people draw (`roughen_sketch`: parts missing, doubled, stretched or scribbled
over), saved beside the sketch as extracted (clean*.png) and the true photo so the notebooks can say which face is closer to it.

Not picked by eye: the first N held-out faces, each roughened with its own seed.
Needs the held-out set: `python -m dfd_kit.training photo-data` builds it.
Run from the repository root: `python examples/hard/make.py`.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from dfd_kit.config import PHOTO_LAYOUT
from dfd_kit.data import load_pair, load_samples
from dfd_kit.data.sketch import roughen_sketch

N = 6
HERE = Path(__file__).resolve().parent
samples = load_samples(HERE.parents[1] / "data" / "photo_faces_heldout")[:N]
for i, s in enumerate(samples, start=1):
    sketch, photo = load_pair(s, PHOTO_LAYOUT)
    rough = roughen_sketch(sketch, np.random.default_rng(1000 + i), PHOTO_LAYOUT)
    Image.fromarray(sketch).save(HERE / f"clean{i}_{s.sex}.png", optimize=True)   # as extracted
    Image.fromarray(rough).save(HERE / f"rough{i}_{s.sex}.png", optimize=True)
    Image.fromarray(photo).save(HERE / f"rough{i}_{s.sex}_photo.jpg", quality=90)
    print(f"rough{i}_{s.sex}: held-out face {s.sketch_path.stem}")
