"""A stage's state on disk, so a resumed run continues bit for bit.

:func:`save_checkpoint` writes atomically (arrays in an ``.npz``, the rest as JSON:
loading one runs no code); :func:`module_state`, :func:`adam_state` and their loaders
turn networks and optimizers into that state and back; :func:`write_model_config`
records the model config a run folder belongs to.

Importing this module imports Jittor.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import dfd_kit  # noqa: F401  -- configures Jittor's environment before its import
import jittor as jt
import numpy as np

from ..config import ModelConfig, replace
from ..errors import ConfigError
from .parallel import is_main

#: Format 2: the arrays in an uncompressed ``.npz`` (read with ``allow_pickle=False``) and
#: everything else -- step, configs, sampler and generator state, loss history -- as JSON in
#: its ``state`` member. Format 1 was a pickle (``checkpoint.pkl``); it is still read, through
#: the arrays-only unpickler of :mod:`dfd_kit.loading`, and replaced by format 2 at the next save.
CHECKPOINT_FORMAT = 2
CHECKPOINT_NAME = "checkpoint.npz"
LEGACY_CHECKPOINT_NAME = "checkpoint.pkl"
_LEGACY_FORMAT = 1


def trainable(modules) -> List[jt.Var]:
    """The parameters an optimizer should get: not stop_grad (running stats are left out).
    Call after ``module.train()`` (Jittor's ``eval()`` stop_grads every parameter)."""
    out, seen = [], set()
    for m in modules:
        for p in m.parameters():
            if not p.is_stop_grad() and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def module_state(module) -> Dict[str, np.ndarray]:
    """Every Var of a module (parameters and running statistics) as numpy copies."""
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


def load_module_state(module, state: Dict[str, np.ndarray], name: str = "module"):
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise ConfigError(f"checkpoint of {name} does not fit the network (missing {missing[:5]}, "
                          f"unexpected {extra[:5]}, shape mismatch {bad[:5]}): was it written with "
                          "another model config?")
    for k, v in own.items():
        v.assign(jt.array(np.ascontiguousarray(state[k])))   # keeps v's stop_grad flag
    jt.sync_all()


def adam_state(opt) -> dict:
    """Jittor Adam's state: step count and the first/second moments of every parameter.
    (Jittor's own ``Optimizer.state_dict()`` returns live Vars, parameters included.)"""
    return {"n_step": int(opt.n_step), "lr": float(opt.lr),
            "m": [[m.numpy().copy() for m in pg["m"]] for pg in opt.param_groups],
            "v": [[v.numpy().copy() for v in pg["values"]] for pg in opt.param_groups]}


def load_adam_state(opt, st: dict, name: str = "optimizer"):
    groups = opt.param_groups
    if len(st["m"]) != len(groups) or any(len(a) != len(pg["m"]) for a, pg in zip(st["m"], groups)):
        raise ConfigError(f"{name} state does not fit: different parameter lists")
    for pg, ms, vs in zip(groups, st["m"], st["v"]):
        for var, a in zip(pg["m"], ms):
            var.assign(jt.array(a).stop_grad())
        for var, a in zip(pg["values"], vs):
            var.assign(jt.array(a).stop_grad())
    opt.n_step = int(st["n_step"])
    jt.sync_all()


def _split(obj, arrays: Dict[str, np.ndarray], where: str = "state"):
    """``obj`` as JSON, each numpy array replaced by {"__array__": name} and put in ``arrays``."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise ConfigError(f"a checkpoint stores arrays of numbers only; {where} is {obj.dtype}")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj) or "__array__" in obj:
            raise ConfigError(f"a checkpoint stores dicts with string keys only (not '__array__'); see {where}")
        return {k: _split(v, arrays, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"a checkpoint cannot store {where}, a {type(obj).__name__}")


def _join(obj, arrays):
    """The inverse of :func:`_split`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (dicts, lists, numbers, strings and numpy arrays) atomically as an
    ``.npz``: the arrays as members, the rest as JSON (floats exactly, by their repr).
    The file is written beside ``path``, flushed to disk and renamed over it: a run
    killed mid-save leaves the previous checkpoint intact."""
    from ..loading import atomic_write

    arrays: Dict[str, np.ndarray] = {}
    doc = json.dumps(_split(state, arrays)).encode()
    atomic_write(path, lambda f: np.savez(f, state=np.frombuffer(doc, np.uint8), **arrays))
    return Path(path)


def find_checkpoint(stage_dir) -> Optional[Path]:
    """A stage folder's checkpoint: ``checkpoint.npz``, else an older ``checkpoint.pkl``, else None."""
    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        if (Path(stage_dir) / name).is_file():
            return Path(stage_dir) / name
    return None


def load_checkpoint(path) -> dict:
    """Read a checkpoint of either format, running no code from it. ``path`` may name
    ``checkpoint.npz`` where only an older ``checkpoint.pkl`` exists."""
    path = Path(path)
    if not path.is_file() and path.name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        path = find_checkpoint(path.parent) or path
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        if magic == b"PK\x03\x04":
            state, fmt = _read_npz_checkpoint(path), CHECKPOINT_FORMAT
        elif magic[:1] == b"\x80":
            state, fmt = _read_pickle_checkpoint(path), _LEGACY_FORMAT
        else:
            raise ValueError("neither an .npz nor a pickle")
    except (ValueError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path} is not a readable dfd_kit training checkpoint ({e}); delete it to "
                          "start the stage again, or restore it from a copy") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{path} is not a dfd_kit training checkpoint (format {got})")
    return state


def _read_npz_checkpoint(path: Path) -> dict:
    """Format 2. Every member is checked before numpy reads it: stored (not compressed),
    and an array of numbers whose header's shape fills the member exactly, so the file
    cannot make numpy allocate more than it holds."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise ValueError(f"member {info.filename} is compressed; a checkpoint stores its arrays as they are")
            with zf.open(info) as m:
                version = np.lib.format.read_magic(m)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"member {info.filename}: unknown .npy version {version}")
                shape, _, dtype = read_header(m)
                if dtype.kind not in "biuf" or dtype.hasobject or dtype.fields is not None:
                    raise ValueError(f"member {info.filename} holds {dtype}, not numbers")
                if math.prod(shape) * dtype.itemsize != info.file_size - m.tell():
                    raise ValueError(f"member {info.filename}: its shape {shape} does not fit its size")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    state = json.loads(arrays.pop("state").tobytes().decode())
    return _join(state, arrays)


def _read_pickle_checkpoint(path: Path) -> dict:
    """Format 1 (``checkpoint.pkl``), through the arrays-only unpickler that reads Params/."""
    from ..loading import safe_unpickle

    with open(path, "rb") as f:
        return safe_unpickle(f, os.fstat(f.fileno()).st_size)


def write_model_config(out_dir, config: ModelConfig) -> ModelConfig:
    """Record the model config in ``out_dir/config.json``; an existing one must match, except
    for ``blend_weight`` and ``query_encoders``: a default for generation and whether the
    query encoders are trained yet, which the networks' shapes do not depend on, so a run begun
    before a recipe changed them resumes and records the new values."""
    path = Path(out_dir) / "config.json"
    if path.exists():
        old = ModelConfig.from_dict(json.loads(path.read_text()))
        if replace(old, blend_weight=config.blend_weight, query_encoders=config.query_encoders) != config:
            raise ConfigError(f"{path} describes another model config than this run's: resume with the "
                              "same config, or use a new output folder")
        if old == config:
            return old
    if is_main():
        from ..loading import atomic_write

        atomic_write(path, lambda f: f.write(config.to_json()), "w")
    return config


def read_model_config(out_dir) -> ModelConfig:
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: is {out_dir} a training output folder?")
    return ModelConfig.from_dict(json.loads(path.read_text()))
