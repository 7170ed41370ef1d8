"""dfd_kit -- DeepFaceDrawing (Chen et al., SIGGRAPH 2020) to read, run and retrain.

    import dfd_kit
    model = dfd_kit.load()                 # the bundled demo model
    result = model.generate("sketch.png")  # result.image is (H, W, 3) uint8

The modules follow the paper's stages: components -> embedding -> manifold -> mapping ->
synthesis; pipeline runs them all, loading reads Params/ folders.
"""
from . import backend as _backend

_backend.configure()  # must precede the first `import jittor`

from pathlib import Path  # noqa: E402

from .config import COMPONENTS, DEMO, OFFICIAL, ModelConfig  # noqa: E402
from .errors import ConfigError, DFDError, ParamsError, SketchError, TrainingInterrupted  # noqa: E402

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_ROOT = REPO_ROOT / "Params"
DEMO_PARAMS = PARAMS_ROOT / "demo"


def load(params_dir=None, shadows: bool = True) -> "DeepFaceDrawing":
    """Load a model.

    params_dir: None or "demo" -> the bundled demo model (Params/demo); "official" -> the
    official weights in Params/ (AE_whole/, Combine/); any other value -> that folder.
    shadows=False skips the sketch decoders (less memory; no shadow guidance).
    """
    if params_dir is None or params_dir == "demo":
        params_dir = DEMO_PARAMS
        if not (DEMO_PARAMS / "config.json").is_file():
            raise ParamsError(f"the demo model is not in {DEMO_PARAMS} yet: train it with "
                              "`python -m dfd_kit.training demo` (see Params/README.md), or load the "
                              "official weights with dfd_kit.load('official') after "
                              "`python -m dfd_kit download-official`.")
    elif params_dir == "official":
        params_dir = PARAMS_ROOT
    from .pipeline import load_model  # Jittor loads (and may compile) only when a model is needed

    return load_model(params_dir, shadows=shadows)


def __getattr__(name):
    # Keep `import dfd_kit` free of Jittor: the pipeline is imported on first use.
    if name in ("DeepFaceDrawing", "GenerationResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'dfd_kit' has no attribute {name!r}")


__all__ = ["load", "DeepFaceDrawing", "GenerationResult", "ModelConfig", "OFFICIAL", "DEMO", "COMPONENTS",
           "DFDError", "ParamsError", "SketchError", "ConfigError", "TrainingInterrupted"]
