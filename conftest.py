"""Settings for the whole test run, notebooks included (they run under nbmake in kernels
that inherit this process's environment).

* DFD_CI=1 puts the notebooks in their small, CI-sized mode.
* DFD_PARAMS: the model the notebooks and the widget use. Until the trained demo model is
  committed in Params/demo, an UNTRAINED model of the demo's size is written to
  .cache/untrained_demo and used instead, so every notebook still runs top to bottom (its
  pictures are then noise, not faces).
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _untrained_demo_params() -> Path:
    out = ROOT / ".cache" / "untrained_demo"
    if (out / "config.json").is_file():
        return out
    import numpy as np

    import dfd_kit  # noqa: F401  (configures Jittor first)
    from dfd_kit.config import COMPONENTS, DEMO
    from dfd_kit.pipeline import DeepFaceDrawing, build, save_model

    enc, dec, fdec, gen = build(DEMO)
    rng = np.random.default_rng(0)
    banks = {s: {c: rng.standard_normal((200, DEMO.nets.latent_dim)).astype(np.float32) for c in COMPONENTS}
             for s in ("male", "female")}
    tmp = out.with_name("untrained_demo.tmp")
    save_model(DeepFaceDrawing(DEMO, enc, dec, fdec, gen, banks), tmp, dtype=np.float32)
    os.replace(tmp, out)
    return out


def pytest_configure(config):
    os.environ.setdefault("DFD_CI", "1")
    if "DFD_PARAMS" not in os.environ and not (ROOT / "Params" / "demo" / "config.json").is_file():
        os.environ["DFD_PARAMS"] = str(_untrained_demo_params())
