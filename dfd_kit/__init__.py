"""dfd_kit -- DeepFaceDrawing (Chen et al., SIGGRAPH 2020) to read, run and retrain.

    import dfd_kit
    model = dfd_kit.load()                 # the bundled photo model ("cartoon": the facesjs one)
    result = model.generate("sketch.png")  # result.image is (H, W, 3) uint8

The modules follow the paper's stages: components -> embedding -> manifold -> mapping ->
synthesis; pipeline runs them all, loading reads Params/ folders.
"""
from . import backend as _backend

_backend.configure()  # must precede the first `import jittor`
from .backend import warm_up  # noqa: E402,F401  (compiles Jittor's kernels ahead, with progress)

import os  # noqa: E402
from pathlib import Path  # noqa: E402

from .config import COMPONENTS, DEMO, OFFICIAL, PHOTO, ModelConfig  # noqa: E402
from .errors import (ConfigError, DFDError, DrawingFileError, DrawingModelWarning, ParamsError,  # noqa: E402
                     SketchError, TrainingInterrupted)

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_ROOT = REPO_ROOT / "Params"
#: The two models that ship with the kit, by name: photo-realistic faces (trained on faces
#: of people who do not exist) and cartoon faces (facesjs; also called "demo").
PHOTO_PARAMS = PARAMS_ROOT / "photo"
DEMO_PARAMS = PARAMS_ROOT / "demo"
BUNDLED = ("photo", "cartoon", "demo")
#: What ``load()`` gives: the photo model. On the same held-out photos it is far closer to the
#: truth and more photo-like than the cartoon model, which follows the strokes a little more
#: tightly (Params/photo/MODEL_CARD.md has both).
DEFAULT_MODEL = "photo"
#: The environment variable ``load()`` reads when it is given no model.
PARAMS_ENV = "DFD_PARAMS"
_RECIPES = {"photo": "photo --params Params/photo", "cartoon": "demo --params Params/demo",
            "demo": "demo --params Params/demo"}


def load(params_dir=None, shadows: bool = True, precision: str = "auto", fast: bool = True) -> "DeepFaceDrawing":
    """Load a model.

    params_dir: None -> the model named by the environment variable ``DFD_PARAMS`` if set
    (a name below or a folder: how a class, CI or Binder points every notebook and pad at
    one model), else :data:`DEFAULT_MODEL` (the photo model);
    "photo" -> photo-realistic faces (Params/photo); "cartoon" or "demo" -> cartoon faces
    (Params/demo); "official" -> the official weights in Params/ (AE_whole/, Combine/);
    any other value -> that folder. shadows=False skips the sketch decoders (less memory;
    no shadow guidance). precision: "auto" (bfloat16 convolutions for a large model where the
    CPU computes bfloat16 natively, else float32), "fp32" or "bf16" (see dfd_kit.fast.precision).
    fast: True (the default) runs the fast path (dfd_kit.fast) where its kernels work here;
    False runs the reference model, plain Jittor, in float32 (the same faces, slower).
    """
    from .fast.precision import check_precision

    check_precision(precision)   # a wrong value fails before anything is read
    if params_dir is None:
        params_dir = os.environ.get(PARAMS_ENV) or DEFAULT_MODEL
    if isinstance(params_dir, str) and params_dir in BUNDLED:
        name, params_dir = params_dir, (PHOTO_PARAMS if params_dir == "photo" else DEMO_PARAMS)
        if not (params_dir / "config.json").is_file():
            raise ParamsError(f"the {name} model is not in {params_dir}: train it with "
                              f"`python -m dfd_kit.training {_RECIPES[name]}` (see Params/README.md), or "
                              "load the official weights with dfd_kit.load('official') after "
                              "`python -m dfd_kit download-official`.")
    elif params_dir == "official":
        params_dir = PARAMS_ROOT
    from .pipeline import load_model  # Jittor loads (and may compile) only when a model is needed

    # load_model's defaults are these too; passed only when chosen, so stand-ins of load_model(params, shadows) still fit
    extra = {} if precision == "auto" else {"precision": precision}
    if not fast:
        extra["fast"] = False
    return load_model(params_dir, shadows=shadows, **extra)


def __getattr__(name):
    # Keep `import dfd_kit` free of Jittor: the pipeline is imported on first use.
    if name in ("DeepFaceDrawing", "GenerationResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'dfd_kit' has no attribute {name!r}")


__all__ = ["load", "warm_up",
           "DeepFaceDrawing", "GenerationResult", "ModelConfig", "OFFICIAL", "DEMO", "PHOTO", "COMPONENTS",
           "DFDError", "ParamsError", "SketchError", "ConfigError", "DrawingFileError", "DrawingModelWarning",
           "TrainingInterrupted"]
