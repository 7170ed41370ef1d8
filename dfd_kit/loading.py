"""Reading a Params/ folder: the official DeepFaceDrawing checkpoints, or the kit's own.

Layout (official release, and the kit's demo model, which adds ``config.json``)::

    Params/AE_whole/latest_net_encoder_{part}.pkl          component encoders
    Params/AE_whole/latest_net_decoder_{part}_image.pkl    component sketch decoders (they draw
                                                           only the shadows; the demo stores
                                                           them as int8, see quantize_checkpoint)
    Params/AE_whole/{man,female}_{part}_feature.bin        feature banks (rows x latent, float32;
                                                           a kit model may store float16 or int8)
    Params/Combine/latest_net_DE_{part}.pkl                feature decoders
    Params/Combine/latest_net_G.pkl                        generator

with part in eye1, eye2, nose, mouth and '' (the remainder). Checkpoints are read the
nanoGPT way: each official key is mapped onto this kit's module names by a table, every
shape is checked, and anything missing or left over is reported.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np

from .config import COMPONENTS, OFFICIAL, OFFICIAL_NAMES, ModelConfig
from .errors import ParamsError

SEXES = ("male", "female")
_BANK_PREFIX = {"male": "man", "female": "female"}
_JT13_TRAILER = b"HCAJSLHD"

HOW_TO_GET_WEIGHTS = (
    "Get the official weights with `python -m dfd_kit download-official` (about 2.4 GB), or download "
    "Combine.zip and AE_whole.zip from the DeepFaceDrawing-Jittor release page and unzip them into "
    "Params/AE_whole and Params/Combine. `dfd_kit.load()` with no argument uses the bundled demo model.")


# ---------------------------------------------------------------- file names

def checkpoint_file(kind: str, component: str) -> str:
    """Relative path of one network's checkpoint. kind: encoder | sketch_decoder | feature_decoder."""
    p = OFFICIAL_NAMES[component]
    return {"encoder": f"AE_whole/latest_net_encoder_{p}.pkl",
            "sketch_decoder": f"AE_whole/latest_net_decoder_{p}_image.pkl",
            "feature_decoder": f"Combine/latest_net_DE_{p}.pkl"}[kind]


GENERATOR_FILE = "Combine/latest_net_G.pkl"


def bank_file(component: str, sex: str) -> str:
    return f"AE_whole/{_BANK_PREFIX[sex]}_{OFFICIAL_NAMES[component]}_feature.bin"


def official_param_files(shadows: bool = True) -> List[str]:
    """Every file a Params/ folder must hold, relative to it."""
    files = []
    for c in COMPONENTS:
        files.append(checkpoint_file("encoder", c))
        if shadows:
            files.append(checkpoint_file("sketch_decoder", c))
        files += [bank_file(c, s) for s in SEXES]
        files.append(checkpoint_file("feature_decoder", c))
    files.append(GENERATOR_FILE)
    return files


def check_params_dir(path, shadows: bool = True) -> Path:
    """Raise :class:`ParamsError` naming every missing file; return the folder as a Path."""
    root = Path(path)
    if not root.is_dir():
        raise ParamsError(f"Params folder {root} does not exist. {HOW_TO_GET_WEIGHTS}")
    missing = [f for f in official_param_files(shadows) if not (root / f).is_file()]
    if missing:
        n = len(official_param_files(shadows))
        raise ParamsError(f"Params folder {root} is incomplete: {len(missing)} of {n} files are missing:\n  "
                          + "\n  ".join(missing) + f"\n{HOW_TO_GET_WEIGHTS}")
    return root


def read_config(root: Path) -> ModelConfig:
    """The model configuration: ``config.json`` if present (kit-trained models), else official."""
    cfg = Path(root) / "config.json"
    if cfg.is_file():
        try:
            return ModelConfig.from_dict(json.loads(cfg.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise ParamsError(f"{cfg} is not a valid dfd_kit model configuration ({e})") from None
    return OFFICIAL


# ---------------------------------------------------------------- safe reading

def _as_array(data, *args):
    # jittor >= 1.3 pickles each Var as (jittor.Var, (ndarray,)); keep the array.
    return np.asarray(data)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else: no arbitrary code runs."""
    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        # jittor 1.3 pickles Var as module "jittor", qualified name "jittor_core.Var"
        if module.split(".")[0] in ("jittor", "jittor_core") and name.split(".")[-1] == "Var":
            return _as_array
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a checkpoint holds arrays only")


#: A kit checkpoint may hold a weight as int8 codes with one float32 scale for each slice
#: of its first axis under ``key + INT8_SCALE``; it reads back as code * scale.
INT8_SCALE = ":int8_scale"


def _per_slice(scale: np.ndarray, ndim: int) -> np.ndarray:
    """(n,) scales shaped to broadcast along the first axis of an ndim-axis weight."""
    return scale.reshape((-1,) + (1,) * (ndim - 1))


def read_checkpoint(path) -> Dict[str, np.ndarray]:
    """A .pkl checkpoint -> {key: float32 array}. Accepts jittor 1.1's plain pickle and
    jittor 1.3's (pickle + sha1 + b'HCAJSLHD'); float16 and int8 storage
    (:func:`quantize_checkpoint`) are widened to float32."""
    path = Path(path)
    # Unpickled straight from the file: holding its bytes too would double the peak memory.
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 28, 0))
        tail = f.read()
        if tail.endswith(_JT13_TRAILER) and size > 28:
            f.seek(0)
            sha, left = hashlib.sha1(), size - 28
            while left:
                chunk = f.read(min(left, 16 << 20))
                sha.update(chunk)
                left -= len(chunk)
            if sha.digest() != tail[:20]:
                raise ParamsError(f"{path} is corrupt (its checksum does not match); download it again")
        f.seek(0)
        try:
            obj = _ArrayUnpickler(f).load()   # stops at the pickle's end, before any trailer
        except Exception as e:
            raise ParamsError(f"could not read checkpoint {path}: {e}. The file is damaged or not a "
                              "DeepFaceDrawing checkpoint; download it again.") from None
    if not isinstance(obj, dict):
        raise ParamsError(f"{path} does not hold a dict of arrays")
    out = {}
    for k, v in obj.items():
        k, a = str(k), np.asarray(v)
        if k.endswith(INT8_SCALE):
            continue
        if a.dtype == np.int8:
            if k + INT8_SCALE not in obj:
                raise ParamsError(f"{path}: {k} is stored as int8 without its scales ({k}{INT8_SCALE}); "
                                  "the file is damaged: download or export the model again")
            scale = np.asarray(obj[k + INT8_SCALE], np.float32)
            a = a.astype(np.float32) * _per_slice(scale, a.ndim)
        out[k] = a.astype(np.float32) if a.dtype != np.float32 else a
    return out


def quantize_checkpoint(path, dtype=np.float16) -> None:
    """Rewrite a checkpoint with each weight of two or more axes as int8 codes, symmetric,
    one scale for each slice of the first axis (its largest magnitude / 127), so every value
    reads back within half its slice's step. The other arrays (biases, norms) are stored as
    ``dtype``. A quarter of float32's size; the demo stores its sketch decoders this way,
    because they only draw the shadows and its feature banks need the room."""
    out = {}
    for k, a in read_checkpoint(path).items():
        if a.ndim < 2:
            out[k] = a.astype(dtype)
            continue
        top = np.abs(a).reshape(len(a), -1).max(axis=1)
        scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
        out[k] = np.clip(np.round(a / _per_slice(scale, a.ndim)), -127, 127).astype(np.int8)
        out[k + INT8_SCALE] = scale
    write_checkpoint(path, out)


# ---------------------------------------------------------------- compact cache

_COMPACT_VERSION = 1


def compact_cache_dir(root) -> Path:
    """Where a Params/ folder's compact copy lives: ``<folder>/.compact`` when the folder is
    writable, else $DFD_KIT_CACHE (default ~/.cache/dfd_kit) / compact / <name>-<path hash>."""
    root = Path(root).resolve()
    if os.access(root, os.W_OK):
        return root / ".compact"
    base = Path(os.environ.get("DFD_KIT_CACHE") or Path.home() / ".cache" / "dfd_kit")
    return base / "compact" / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"


def compact_checkpoint(root, rel: str) -> Dict[str, np.ndarray]:
    """A checkpoint as {key: float32 array memory-mapped from its own .npy file}.

    The pickle is converted once into :func:`compact_cache_dir`; the copy is redone when the
    pickle's size or modification time changes. Mapped arrays cost no memory until read,
    and a big linear layer can stay mapped (:class:`dfd_kit.layers.MappedLinear`). Where
    the cache cannot be written, the pickle is read into memory instead, with a warning.
    """
    src = Path(root) / rel
    st = src.stat()
    stamp = {"version": _COMPACT_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    folder = compact_cache_dir(root) / rel
    index_file = folder / "index.json"
    try:
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    except ValueError:
        index = {}
    if index.get("source") != stamp:
        state = read_checkpoint(src)
        try:
            index = _write_compact(state, folder, stamp)
        except OSError as e:
            warnings.warn(f"could not write the compact copy of {rel} to {folder} ({e}); keeping the "
                          "weights in memory instead", stacklevel=2)
            return state
        del state   # the copy on disk replaces it
    return {k: np.load(folder / f, mmap_mode="r") for k, f in index["files"].items()}


def _write_compact(state: Dict[str, np.ndarray], folder: Path, stamp: dict) -> dict:
    """One .npy per tensor, then index.json last: a folder without a current index is redone."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = {}
    for i, (key, a) in enumerate(state.items()):
        files[key] = f"{i}.npy"
        np.save(folder / files[key], np.ascontiguousarray(a, np.float32))
    index = {"source": stamp, "files": files}
    tmp = folder / "index.json.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, folder / "index.json")
    return index


#: How a feature bank file stores its rows: config.json's ``"bank_dtype"`` -> numpy type.
#: float32 is the official format; a kit model may store float16, or int8 (one byte per
#: number, see :func:`write_bank`) to keep a dense bank small.
BANK_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "u1"}


def bank_dtype(root) -> str:
    """The feature banks' storage type (a key of :data:`BANK_DTYPES`): float32 (official),
    or what a kit model's ``config.json`` says under ``"bank_dtype"``."""
    cfg = Path(root) / "config.json"
    if cfg.is_file():
        try:
            name = json.loads(cfg.read_text()).get("bank_dtype", "float32")
        except ValueError:
            return "float32"   # read_config reports a broken config.json
        if name not in BANK_DTYPES:
            raise ParamsError(f"{cfg}: bank_dtype must be one of {sorted(BANK_DTYPES)}, not {name!r}")
        return name
    return "float32"


def _int8_header_bytes(latent_dim: int) -> int:
    return 2 * 4 * latent_dim


def write_bank(path, bank: np.ndarray, dtype: str = "float32") -> None:
    """Write a feature bank (N, D) as raw rows in ``dtype`` (a key of :data:`BANK_DTYPES`).

    int8: each dimension is quantised on its own to 256 levels between its smallest and
    largest value; the file holds D float32 offsets, D float32 steps, then N x D codes,
    and a value reads back as offset + step * code (error at most half a step: for the
    demo model's banks under 0.07 for the parts and 0.3 for the remainder, whose
    nearest neighbours lie about 10 to 60 apart)."""
    bank = np.asarray(bank, np.float64)
    with open(path, "wb") as f:
        if dtype != "int8":
            f.write(np.ascontiguousarray(bank, BANK_DTYPES[dtype]).tobytes())
            return
        lo = bank.min(axis=0).astype(np.float32)
        step = ((bank.max(axis=0) - lo) / 255.0).astype(np.float32)
        codes = np.round((bank - lo) / np.where(step > 0, step, 1.0))
        f.write(lo.tobytes() + step.tobytes() + np.clip(codes, 0, 255).astype(np.uint8).tobytes())


def read_bank(path, latent_dim: int, dtype: str = "float32") -> np.ndarray:
    """A raw feature bank (:func:`write_bank`), rows inferred from the file size: float32
    memory-mapped, float16 and int8 widened to float32 in memory."""
    path = Path(path)
    size = path.stat().st_size
    header = _int8_header_bytes(latent_dim) if dtype == "int8" else 0
    row = np.dtype(BANK_DTYPES[dtype]).itemsize * latent_dim
    if size <= header or (size - header) % row:
        raise ParamsError(f"feature bank {path} has {size} bytes, not a whole number of "
                          f"{latent_dim}-d {dtype} rows; the file is truncated -- download it again")
    shape = ((size - header) // row, latent_dim)
    if dtype == "float32":
        return np.memmap(path, dtype="<f4", mode="r", shape=shape)
    if dtype == "float16":
        return np.asarray(np.memmap(path, dtype="<f2", mode="r", shape=shape), np.float32)
    scale = np.fromfile(path, "<f4", count=2 * latent_dim).reshape(2, latent_dim)
    codes = np.memmap(path, dtype="u1", mode="r", offset=header, shape=shape)
    return (scale[0] + scale[1] * codes.astype(np.float32)).astype(np.float32)


# ---------------------------------------------------------------- key tables

_RES = {"conv_block.1": "conv1", "conv_block.2": "norm1", "conv_block.5": "conv2", "conv_block.6": "norm2"}


def _res(official: str, kit: str) -> List[Tuple[str, str]]:
    return [(f"{official}.{o}", f"{kit}.{k}") for o, k in _RES.items()]


def encoder_key_table(n_stages: int) -> List[Tuple[str, str]]:
    """(official prefix, kit prefix) for an encoder: conv.{2i} is stage i's stride-2 conv
    block, conv.{2i+1} its residual block, fc_mu.0 the linear layer."""
    t = []
    for i in range(n_stages):
        t += [(f"conv.{2 * i}.conv", f"stages.{i}.resample.conv"), (f"conv.{2 * i}.bn", f"stages.{i}.resample.norm")]
        t += _res(f"conv.{2 * i + 1}", f"stages.{i}.res")
    return t + [("fc_mu.0", "to_latent")]


def decoder_key_table(n_stages: int) -> List[Tuple[str, str]]:
    """For sketch and feature decoders: fc.0 linear, conv.0 residual block, then per stage
    conv.{2j+1} (transposed conv .0 + norm .1) and conv.{2j+2} (residual); the output conv
    follows a padding layer at conv.{2n+2}."""
    t = [("fc.0", "from_latent")] + _res("conv.0", "res_in")
    for j in range(n_stages):
        t += [(f"conv.{2 * j + 1}.conv.0", f"stages.{j}.resample.conv"),
              (f"conv.{2 * j + 1}.conv.1", f"stages.{j}.resample.norm")]
        t += _res(f"conv.{2 * j + 2}", f"stages.{j}.res")
    return t + [(f"conv.{2 * n_stages + 2}", "to_output")]


def generator_key_table(n_downsample: int, n_blocks: int) -> List[Tuple[str, str]]:
    """pix2pixHD's flat ``model`` Sequential: [pad, conv, norm, relu], n x [conv, norm, relu],
    residual blocks, n x [convT, norm, relu], [pad, conv, tanh]."""
    t = [("model.1", "stem.conv"), ("model.2", "stem.norm")]
    for i in range(n_downsample):
        t += [(f"model.{4 + 3 * i}", f"down.{i}.conv"), (f"model.{5 + 3 * i}", f"down.{i}.norm")]
    r0 = 4 + 3 * n_downsample
    for i in range(n_blocks):
        t += _res(f"model.{r0 + i}", f"res.{i}")
    u0 = r0 + n_blocks
    for i in range(n_downsample):
        t += [(f"model.{u0 + 3 * i}", f"up.{i}.conv"), (f"model.{u0 + 3 * i + 1}", f"up.{i}.norm")]
    return t + [(f"model.{u0 + 3 * n_downsample + 1}", "to_rgb")]


def translate_keys(state: Dict[str, np.ndarray], table: Iterable[Tuple[str, str]]):
    """Official keys -> kit keys. Returns (translated dict, keys no table entry matched)."""
    prefixes = dict(table)
    out, unmatched = {}, []
    for key, arr in state.items():
        prefix, _, param = key.rpartition(".")
        if prefix in prefixes:
            out[f"{prefixes[prefix]}.{param}"] = arr
        else:
            unmatched.append(key)
    return out, unmatched


def load_into(module, state: Dict[str, np.ndarray], table, source: str) -> None:
    """Copy an official-layout state dict into a kit module, checking every key and shape.

    Missing InstanceNorm affine parameters (a checkpoint converted from PyTorch, where they
    do not exist) default to weight 1 and bias 0 with a warning; any other missing key,
    any unexpected key and any shape mismatch raises :class:`ParamsError` listing them all.
    """
    import jittor as jt

    kit, unexpected = translate_keys(state, table)
    own = module.state_dict()
    problems, defaulted = [], []
    unexpected += [k for k in kit if k not in own]
    for key, var in own.items():
        if key not in kit:
            norm_affine = re.search(r"norm\d?\.(weight|bias)$", key)
            if norm_affine and getattr(_owner(module, key), "running_mean", 0) is None:
                defaulted.append(key)  # InstanceNorm affine: Norm2d already holds 1 / 0
            else:
                problems.append(f"missing key {key}")
            continue
        if tuple(kit[key].shape) != tuple(var.shape):
            problems.append(f"{key}: checkpoint shape {tuple(kit[key].shape)} != model shape {tuple(var.shape)}")
    problems += [f"unexpected key {k}" for k in unexpected]
    if problems:
        raise ParamsError(f"{source} does not fit the model ({len(problems)} problems):\n  "
                          + "\n  ".join(problems[:40]) + ("\n  ..." if len(problems) > 40 else "")
                          + "\nIs config.json right for these weights, and is the file complete?")
    if defaulted:
        warnings.warn(f"{source}: {len(defaulted)} InstanceNorm affine parameters are absent; using "
                      "weight 1, bias 0 (as in a PyTorch pix2pixHD generator)", stacklevel=3)
    from .layers import MappedLinear

    for prefix in _mapped_linears(module, kit):
        setattr(_owner(module, prefix), prefix.rpartition(".")[2],
                MappedLinear(kit[f"{prefix}.weight"], _read(kit[f"{prefix}.bias"])))
        del own[f"{prefix}.weight"], own[f"{prefix}.bias"]
    for key, var in own.items():
        if key in kit:
            var.assign(jt.array(_read(kit[key])))


#: Linear layers at least this big stay in their memory-mapped file (the official encoders'
#: and decoders' fully-connected layers, 16 to 268 MB each; every convolution stays resident).
MAPPED_LINEAR_MIN_BYTES = 8 << 20


def _mapped_linears(module, kit) -> List[str]:
    """Prefixes of the nn.Linear layers whose weight arrived memory-mapped and is big."""
    from jittor import nn

    out = []
    for key, a in kit.items():
        prefix, _, param = key.rpartition(".")
        if (param == "weight" and isinstance(a, np.memmap) and a.nbytes >= MAPPED_LINEAR_MIN_BYTES
                and isinstance(_owner(module, key), nn.Linear)):
            out.append(prefix)
    return out


def _read(a: np.ndarray) -> np.ndarray:
    """A float32 copy in memory. A memory-mapped array is read from its file rather than
    through the mapping: pages touched through a mapping would count in this process's memory."""
    if isinstance(a, np.memmap):
        return np.load(a.filename)
    return np.ascontiguousarray(a, np.float32)


def _owner(module, key):
    m = module
    for part in key.split(".")[:-1]:
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


# ---------------------------------------------------------------- writing (kit-trained models)

def official_state(module, table, dtype=np.float32) -> Dict[str, np.ndarray]:
    """A kit module's parameters under official key names (the inverse of load_into)."""
    from .layers import MappedLinear

    inverse = {k: o for o, k in table}
    arrays = {k: v.numpy() for k, v in module.state_dict().items()}
    for name, m in module.named_modules():
        if isinstance(m, MappedLinear):
            arrays[f"{name}.weight"], arrays[f"{name}.bias"] = m.weight_array, m.bias_array
    out = {}
    for key, a in arrays.items():
        prefix, _, param = key.rpartition(".")
        if prefix in inverse:
            out[f"{inverse[prefix]}.{param}"] = np.asarray(a).astype(dtype)
    return out


def write_checkpoint(path, state: Dict[str, np.ndarray]) -> None:
    """Write {key: array} as a plain pickle (the jittor 1.1 layout), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(dict(state), f, protocol=4)
    os.replace(tmp, path)
