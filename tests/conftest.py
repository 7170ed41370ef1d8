"""Shared fixtures.

Two models serve the tests:

* a small, randomly initialised demo-size model (``demo_model``, saved once as
  ``demo_params``): fast, for inputs, errors and loading;
* the full-size stand-in of the official Params (``standin_model``), whose official outputs
  are recorded in tests/fixtures/official_parity: for parity. It is written once into
  <repo>/.cache/standin_params (2.2 GB, ~20 s), loaded once per session, and each
  recorded case is generated once (``parity_run``).

Jittor is imported only inside fixtures, so the jittor-free tests stay jittor-free.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

import dfd_kit
from dfd_kit.config import COMPONENTS, DEMO, OFFICIAL_NAMES

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "official_parity"
STANDIN_DIR = ROOT / ".cache" / "standin_params"
CASES = json.loads((FIXTURE / "cases.json").read_text())["cases"]
CASE_IDS = [c["id"] for c in CASES]

#: The fixture's tag of each component in expected/*.npz (the remainder is "face" there).
NPZ_TAG = {"left_eye": "eye1", "right_eye": "eye2", "nose": "nose", "mouth": "mouth", "remainder": "face"}
SEX = {0: "male", 1: "female"}


def case_by_id(case_id: int) -> dict:
    return next(c for c in CASES if c["id"] == case_id)


def case_weights(case: dict) -> Dict[str, float]:
    """cases.json weights (official part names) -> {component: w}."""
    return {c: float(case["w"][OFFICIAL_NAMES[c]]) for c in COMPONENTS}


def load_expected(case_id: int):
    return np.load(FIXTURE / "expected" / f"case_{case_id}.npz")


def sketch_path(case: dict) -> Path:
    return FIXTURE / "inputs" / case["sketch"]


# --------------------------------------------------------------------------- full-size stand-in

@pytest.fixture(scope="session")
def standin_params_dir() -> Path:
    """The full-size stand-in Params (official layout, deterministic weights)."""
    from dfd_kit.standin import write_standin_params

    return write_standin_params(STANDIN_DIR, progress=False)   # no-op when .complete exists


@pytest.fixture(scope="session")
def standin_model(standin_params_dir):
    # float32 explicitly: "auto" computes bf16 convolutions on CPUs that have them (tests/test_precision.py)
    return dfd_kit.load(standin_params_dir, precision="fp32")


@dataclass
class ParityRun:
    case: dict
    expected: "np.lib.npyio.NpzFile"
    result: "dfd_kit.GenerationResult"
    sketch_before: np.ndarray     # what was passed to generate (a copy taken before)
    sketch_after: np.ndarray      # the same object after generate


def _sketch_argument(case: dict):
    """Vary the input kind across cases: a path, a gray array, and an RGB array with
    R = G = B (the form in which the fixture's harness handed it to the official code)."""
    path = sketch_path(case)
    if case["id"] == 0:
        return str(path)
    gray = np.asarray(Image.open(path).convert("L"))
    return gray.copy() if case["id"] == 1 else np.repeat(gray[:, :, None], 3, axis=2)


@pytest.fixture(scope="session")
def parity_run(standin_model):
    """parity_run(case_id) -> ParityRun, generated once per session with anchor="official"."""
    cache: Dict[int, ParityRun] = {}

    def run(case_id: int) -> ParityRun:
        if case_id not in cache:
            case = case_by_id(case_id)
            sketch = _sketch_argument(case)
            before = np.array(sketch, copy=True)
            result = standin_model.generate(sketch, part_weights=case_weights(case), sex=SEX[case["sex"]],
                                            k=case["K"], anchor="official", shadows=True, keep_features=True)
            cache[case_id] = ParityRun(case, load_expected(case_id), result, before, np.asarray(sketch))
        return cache[case_id]

    return run


@pytest.fixture(scope="session")
def staged_synthesis(standin_model):
    """staged_synthesis(case_id) -> (part maps {c: (C,S,S)}, face map (C,H,W), netG output (3,H,W)),
    computed from the fixture's EXPECTED vectors (stage 4 on its own), once per case."""
    cache = {}

    def run(case_id: int):
        if case_id not in cache:
            e = load_expected(case_id)
            vectors = {c: e[f"vec_{NPZ_TAG[c]}"][0] for c in COMPONENTS}
            face, parts = standin_model.feature_map(vectors, keep_parts=True)
            out = standin_model.synthesize(face)
            cache[case_id] = (parts, face.numpy()[0], out)
        return cache[case_id]

    return run


# --------------------------------------------------------------------------- small demo-size model

DEMO_BANK_ROWS = {"male": 24, "female": 32}


def make_demo_model(seed: int = 0):
    """A randomly initialised DEMO-config model with random feature banks."""
    import jittor as jt
    from dfd_kit.pipeline import DeepFaceDrawing, build

    jt.set_global_seed(seed)
    enc, dec, fdec, gen = build(DEMO)
    rng = np.random.default_rng(seed)
    banks = {s: {c: rng.standard_normal((n, DEMO.nets.latent_dim)).astype(np.float32) for c in COMPONENTS}
             for s, n in DEMO_BANK_ROWS.items()}
    return DeepFaceDrawing(DEMO, enc, dec, fdec, gen, banks, source="random demo (tests)")


@pytest.fixture(scope="session")
def demo_model():
    return make_demo_model()


@pytest.fixture(scope="session")
def demo_params(demo_model, tmp_path_factory) -> Path:
    """The demo model saved (float32, so a reload is exact) in the official Params layout.
    Read-only for tests: copy it (``params_copy``) before damaging anything."""
    from dfd_kit.pipeline import save_model

    return save_model(demo_model, tmp_path_factory.mktemp("demo_params"), dtype=np.float32)


@pytest.fixture
def params_copy(demo_params, tmp_path) -> Path:
    dst = tmp_path / "Params"
    shutil.copytree(demo_params, dst)
    return dst


@pytest.fixture(scope="session")
def demo_sketch() -> np.ndarray:
    """A real drawing at the demo size: fixture sketch 0 resized to 256 x 256, uint8 gray."""
    img = Image.open(FIXTURE / "inputs" / "sketch_0.png").convert("L")
    return np.asarray(img.resize((DEMO.layout.size,) * 2, Image.BICUBIC))
