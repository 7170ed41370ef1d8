"""Reading a Params/ folder: the official DeepFaceDrawing checkpoints, or the kit's own.

Layout (official release, and the kit's demo model, which adds ``config.json``)::

    Params/AE_whole/latest_net_encoder_{part}.pkl          component encoders
    Params/AE_whole/latest_net_query_encoder_{part}.pkl    query encoders (a kit model whose
                                                           config.json sets query_encoders)
    Params/AE_whole/latest_net_decoder_{part}_image.pkl    component sketch decoders (they draw
                                                           only the shadows; the demo stores
                                                           them as int8, see quantize_checkpoint)
    Params/AE_whole/{man,female}_{part}_feature.bin        feature banks (rows x latent, float32;
                                                           a kit model may store float16 or int8,
                                                           behind a header, see write_bank)
    Params/Combine/latest_net_DE_{part}.pkl                feature decoders
    Params/Combine/latest_net_G.pkl                        generator

with part in eye1, eye2, nose, mouth and '' (the remainder). Checkpoints are read the
nanoGPT way: each official key is mapped onto this kit's module names by a table, every
shape is checked, and anything missing or left over is reported.

Nothing in a Params folder is trusted: pickles go through an allow-list that builds arrays
of plain numbers and nothing else (:func:`safe_unpickle`), a file larger than its networks
could need is refused unread, ``config.json`` is range-checked (:func:`check_model_config`),
and what is written here is written atomically (:func:`atomic_write`).
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .config import COMPONENTS, OFFICIAL, OFFICIAL_NAMES, PARTS, SEXES, Box, ModelConfig
from .errors import ParamsError

_BANK_PREFIX = {"male": "man", "female": "female"}
_JT13_TRAILER = b"HCAJSLHD"

HOW_TO_GET_WEIGHTS = (
    "Get the official weights with `python -m dfd_kit download-official` (about 2.4 GB), or download "
    "Combine.zip and AE_whole.zip from the DeepFaceDrawing-Jittor release page and unzip them into "
    "Params/AE_whole and Params/Combine. `dfd_kit.load()` with no argument uses the bundled demo model.")


# ---------------------------------------------------------------- file names

def checkpoint_file(kind: str, component: str) -> str:
    """Relative path of one network's checkpoint. kind: encoder | query_encoder |
    sketch_decoder | feature_decoder."""
    p = OFFICIAL_NAMES[component]
    return {"encoder": f"AE_whole/latest_net_encoder_{p}.pkl",
            "query_encoder": f"AE_whole/latest_net_query_encoder_{p}.pkl",
            "sketch_decoder": f"AE_whole/latest_net_decoder_{p}_image.pkl",
            "feature_decoder": f"Combine/latest_net_DE_{p}.pkl"}[kind]


GENERATOR_FILE = "Combine/latest_net_G.pkl"


def bank_file(component: str, sex: str) -> str:
    return f"AE_whole/{_BANK_PREFIX[sex]}_{OFFICIAL_NAMES[component]}_feature.bin"


def official_param_files(shadows: bool = True, query_encoders: bool = False) -> List[str]:
    """Every file a Params/ folder must hold, relative to it (``query_encoders``: for a kit
    model whose config.json sets them)."""
    files = []
    for c in COMPONENTS:
        files.append(checkpoint_file("encoder", c))
        if query_encoders:
            files.append(checkpoint_file("query_encoder", c))
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
    if read_config(root).query_encoders:
        missing = [checkpoint_file("query_encoder", c) for c in COMPONENTS
                   if not (root / checkpoint_file("query_encoder", c)).is_file()]
        if missing:
            raise ParamsError(f"Params folder {root} is incomplete: its config.json says it has query encoders, "
                              f"but {len(missing)} of {len(COMPONENTS)} are missing:\n  " + "\n  ".join(missing)
                              + "\nCopy the whole folder again, or export the model again.")
    return root


def read_config(root: Path) -> ModelConfig:
    """The model configuration: ``config.json`` if present (kit-trained models), else
    official. Every value is range-checked (:func:`check_model_config`)."""
    cfg = Path(root) / "config.json"
    if cfg.is_file():
        if cfg.stat().st_size > 1 << 20:
            raise ParamsError(f"{cfg} is over 1 MB: not a dfd_kit model configuration")
        try:
            config = ModelConfig.from_dict(json.loads(cfg.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ParamsError(f"{cfg} is not a valid dfd_kit model configuration ({e})") from None
        return check_model_config(config, cfg)
    return OFFICIAL


#: Upper bounds for config.json values: far above any model this kit runs, far below what
#: would exhaust a machine when the networks are built.
_MAX_SIZE, _MAX_WIDTH, _MAX_LATENT, _MAX_DOWNSAMPLE, _MAX_BLOCKS = 2048, 4096, 8192, 8, 64


def check_model_config(config: ModelConfig, source="config.json") -> ModelConfig:
    """Raise :class:`ParamsError` listing every out-of-range value of ``config`` (what a
    crafted or mistyped ``config.json`` could hold); return it unchanged otherwise."""
    problems = []

    def whole(name, v, lo, hi):
        if type(v) is not int or not lo <= v <= hi:
            problems.append(f"{name} must be a whole number from {lo} to {hi}, not {v!r}")
            return False
        return True

    lay, n = config.layout, config.nets
    size_ok = whole("layout.size", lay.size, 32, _MAX_SIZE)
    if size_ok and lay.size % 32:
        problems.append(f"layout.size must be a multiple of 32 (the encoders halve it 5 times), not {lay.size}")
    if not isinstance(lay.boxes, dict) or set(lay.boxes) != set(PARTS):
        problems.append(f"layout.boxes must give exactly {', '.join(PARTS)}, not {sorted(lay.boxes)}")
    else:
        for c, b in lay.boxes.items():
            ok = all([whole(f"layout.boxes.{c}.x", b.x, 0, _MAX_SIZE), whole(f"layout.boxes.{c}.y", b.y, 0, _MAX_SIZE),
                      whole(f"layout.boxes.{c}.size", b.size, 32, _MAX_SIZE)])
            if ok and b.size % 32:
                problems.append(f"layout.boxes.{c}.size must be a multiple of 32, not {b.size}")
            if ok and size_ok and (b.x + b.size > lay.size or b.y + b.size > lay.size):
                problems.append(f"layout.boxes.{c} ({b.x}, {b.y}, size {b.size}) must lie inside the "
                                f"{lay.size} x {lay.size} image")
        if isinstance(lay.boxes.get("nose"), Box) and type(lay.boxes["nose"].size) is int:
            whole("layout.nose_rows", lay.nose_rows, 1, lay.boxes["nose"].size)
    if sorted(map(str, lay.paste_order)) != sorted(PARTS):
        problems.append(f"layout.paste_order must list {', '.join(PARTS)} once each, not {list(lay.paste_order)}")
    whole("nets.latent_dim", n.latent_dim, 1, _MAX_LATENT)
    lists = {"encoder_channels": n.encoder_channels, "decoder_channels": n.decoder_channels,
             "feature_decoder_channels": n.feature_decoder_channels}
    for name, chans in lists.items():
        if not isinstance(chans, tuple) or not 1 <= len(chans) <= 8:
            problems.append(f"nets.{name} must be a list of 1 to 8 widths, not {chans!r}")
            continue
        for i, w in enumerate(chans):
            whole(f"nets.{name}[{i}]", w, 1, _MAX_WIDTH)
    n_enc = len(n.encoder_channels) if isinstance(n.encoder_channels, tuple) else 0
    for name in ("decoder_channels", "feature_decoder_channels"):
        if n_enc and isinstance(lists[name], tuple) and len(lists[name]) != n_enc + 1:
            problems.append(f"nets.{name} must have one width more than nets.encoder_channels "
                            f"({n_enc + 1}), not {len(lists[name])}")
    whole("nets.feature_channels", n.feature_channels, 1, _MAX_WIDTH)
    ngf_ok = whole("nets.ngf", n.ngf, 1, _MAX_WIDTH)
    if whole("nets.n_downsample", n.n_downsample, 0, _MAX_DOWNSAMPLE):
        if size_ok and lay.size % 2 ** n.n_downsample:
            problems.append(f"layout.size {lay.size} must be divisible by 2 ** nets.n_downsample "
                            f"({2 ** n.n_downsample})")
        if ngf_ok and n.ngf * 2 ** n.n_downsample > _MAX_WIDTH:
            problems.append(f"nets.ngf * 2 ** nets.n_downsample (the generator's widest layer) must be at "
                            f"most {_MAX_WIDTH}")
    whole("nets.n_blocks", n.n_blocks, 0, _MAX_BLOCKS)
    if n_enc and size_ok:
        crops = [lay.size] + [b.size for b in lay.boxes.values() if isinstance(b, Box) and type(b.size) is int]
        if any(s >> n_enc < 1 for s in crops):
            problems.append(f"every crop must keep at least one pixel after nets.encoder_channels' {n_enc} halvings")
    whole("k", config.k, 2, 10_000)
    w = config.blend_weight
    if type(w) not in (int, float) or not 0.0 <= w <= 1.0:   # also rejects NaN, true and "1"
        problems.append(f"blend_weight must be a number in [0, 1], not {w!r}")
    if type(config.query_encoders) is not bool:
        problems.append(f"query_encoders must be true or false, not {config.query_encoders!r}")
    if problems:
        count = f"{len(problems)} problem{'s' * (len(problems) > 1)}"
        raise ParamsError(f"{source} holds values out of range ({count}):\n  "
                          + "\n  ".join(problems) + "\nFix them, or export the model again.")
    return config


# ---------------------------------------------------------------- safe reading

class _Refused(pickle.UnpicklingError):
    """Something in a pickle that a file of arrays has no reason to hold."""


class _BoundedFile:
    """The unpickler's view of a file: no read past ``end``, so a crafted length field
    (8 GB claimed in a 50-byte file) is refused before anything is allocated for it."""

    def __init__(self, f, end: int):
        self.f, self.end = f, end

    def left(self, n: int) -> int:
        left = self.end - self.f.tell()
        if n > left:
            raise _Refused(f"a record claims {n} bytes but only {left} are left in the file")
        return n

    def read(self, n: int = -1) -> bytes:
        return self.f.read(self.left(n) if n is not None and n >= 0 else max(self.end - self.f.tell(), 0))

    def readline(self) -> bytes:
        return self.f.readline(max(self.end - self.f.tell(), 0))


#: The number types an array in a checkpoint may have (numpy's pickled type names).
_NUMBER_TYPES = re.compile(r"b1|[iu][1248]|f[248]")
_NDARRAY = object()   # stands for numpy.ndarray: only _reconstruct may receive it; nothing calls it


class _DtypeStub:
    """``numpy.dtype(spec)`` as a pickle builds it, for plain numbers only (an object dtype
    would let the pickle put arbitrary objects in an array)."""

    def __init__(self, spec, align=False, copy=True):
        if not (isinstance(spec, str) and _NUMBER_TYPES.fullmatch(spec)):
            raise _Refused(f"refusing array type {spec!r}: a checkpoint holds plain numbers only")
        self.dtype = np.dtype(spec)

    def setstate(self, state):
        # (version, byte order, subarray, names, fields, ...): only the byte order may be set
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and all(x is None for x in state[2:5])):
            raise _Refused("refusing a structured or malformed array type")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayStub:
    """What ``numpy.core.multiarray._reconstruct`` gives here: nothing is allocated until
    the pickle's BUILD hands over the array's bytes, which must fill its shape exactly."""

    def __init__(self):
        self.array = None

    def setstate(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused("malformed array record")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise _Refused(f"malformed array shape {shape!r}")
        if not isinstance(dtype, _DtypeStub) or not isinstance(data, (bytes, bytearray)):
            raise _Refused("an array's data must be the bytes of a plain number type")
        n = math.prod(shape) * dtype.dtype.itemsize      # Python ints: no overflow
        if n != len(data):
            raise _Refused(f"an array of shape {shape} needs {n} bytes; its record holds {len(data)}")
        if isinstance(data, bytes):
            data = bytearray(data)   # a record inside a pickle frame: 64 KB at most
        self.array = np.frombuffer(data, dtype.dtype).reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise _Refused("_reconstruct may only build a numpy array")
    return _ArrayStub()


def _scalar(dtype, data):
    if not (isinstance(dtype, _DtypeStub) and isinstance(data, (bytes, bytearray))
            and len(data) == dtype.dtype.itemsize):
        raise _Refused("malformed numpy scalar")
    return np.frombuffer(bytes(data), dtype.dtype)[0]


def _var(data, *args):
    # jittor >= 1.3 pickles each Var as (jittor.Var, (ndarray,)); keep the array.
    if not isinstance(data, (_ArrayStub, np.ndarray)):
        raise _Refused(f"a jittor Var must hold an array, not a {type(data).__name__}")
    return data


class _SafeUnpickler(pickle._Unpickler):
    """Unpickles dicts, lists, strings and numbers holding numpy arrays of plain numbers,
    and nothing else: no other class is imported or called, so no code runs, and no array
    is allocated beyond the bytes the file holds.

    It is Python's pure-Python unpickler, because the C one allocates a record's claimed
    length before reading it; reads go through :class:`_BoundedFile`, and a large byte
    record is read straight into the bytearray its array then uses (one copy in memory).
    """

    _GLOBALS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _DtypeStub,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy._core.multiarray", "scalar"): _scalar,
    }
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: _BoundedFile):
        super().__init__(file)
        self._bounded = file

    def find_class(self, module, name):
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[module, name]
        # jittor 1.3 pickles Var as module "jittor", qualified name "jittor_core.Var"
        if module.split(".")[0] in ("jittor", "jittor_core") and name.split(".")[-1] == "Var":
            return _var
        raise _Refused(f"refusing to load {module}.{name}: a checkpoint holds arrays only")

    def _bytes_record(self, length_size: int):
        n = int.from_bytes(self.read(length_size), "little")
        frame = self._unframer.current_frame
        if frame is not None and frame.tell() < len(frame.getbuffer()):
            self.append(self.read(n))    # inside a frame: bounded by the frame
            return
        self._unframer.current_frame = None
        buf = bytearray(self._bounded.left(n))
        if self._bounded.f.readinto(buf) != n:
            raise _Refused("the file ends inside an array")
        self.append(buf)

    def load_binbytes(self):
        self._bytes_record(4)

    def load_binbytes8(self):
        self._bytes_record(8)

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, (_ArrayStub, _DtypeStub)):
            raise _Refused(f"refusing to set the state of a {type(target).__name__}")
        target.setstate(state)

    dispatch[pickle.BINBYTES[0]] = load_binbytes
    dispatch[pickle.BINBYTES8[0]] = load_binbytes8
    dispatch[pickle.BYTEARRAY8[0]] = load_binbytes8
    dispatch[pickle.BUILD[0]] = load_build


def _resolve(obj, seen: set):
    """The loaded structure with every array stub replaced by its array."""
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise _Refused("an array record without its data")
        return obj.array
    if isinstance(obj, _DtypeStub):
        return obj.dtype
    if isinstance(obj, (dict, list, tuple)) and id(obj) not in seen:
        seen.add(id(obj))
        if isinstance(obj, dict):
            for k in list(obj):
                obj[k] = _resolve(obj[k], seen)
        elif isinstance(obj, list):
            obj[:] = [_resolve(x, seen) for x in obj]
        else:
            return tuple(_resolve(x, seen) for x in obj)
    return obj


def safe_unpickle(f, end: int):
    """Unpickle from the open binary file ``f`` (up to offset ``end``), allowing only
    dicts, lists, tuples, strings, numbers and numpy arrays of plain numbers. Anything
    else raises (``pickle.UnpicklingError`` and friends); callers say what to do."""
    return _resolve(_SafeUnpickler(_BoundedFile(f, end)).load(), set())


#: A kit checkpoint may hold a weight as int8 codes with one float32 scale for each slice
#: of its first axis under ``key + INT8_SCALE``; it reads back as code * scale.
INT8_SCALE = ":int8_scale"


def _per_slice(scale: np.ndarray, ndim: int) -> np.ndarray:
    """(n,) scales shaped to broadcast along the first axis of an ndim-axis weight."""
    return scale.reshape((-1,) + (1,) * (ndim - 1))


def read_checkpoint(path, max_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A .pkl checkpoint -> {key: float32 array}. Accepts jittor 1.1's plain pickle and
    jittor 1.3's (pickle + sha1 + b'HCAJSLHD'); float16 and int8 storage
    (:func:`quantize_checkpoint`) are widened to float32. ``max_bytes``: refuse a larger
    file before reading it (what the expected networks could need at most). Anything
    wrong is a :class:`ParamsError`."""
    path = Path(path)
    # Unpickled straight from the file: holding its bytes too would double the peak memory.
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if max_bytes is not None and size > max_bytes:
            raise ParamsError(f"{path} is {size / 2**20:.1f} MB, more than the {max_bytes / 2**20:.1f} MB that "
                              "the networks of this model can hold: it is not a checkpoint of this model "
                              "(check config.json, or download the file again)")
        f.seek(max(size - 28, 0))
        tail = f.read()
        end = size
        if tail.endswith(_JT13_TRAILER) and size > 28:
            f.seek(0)
            sha, left = hashlib.sha1(), size - 28
            while left:
                chunk = f.read(min(left, 16 << 20))
                sha.update(chunk)
                left -= len(chunk)
            if sha.digest() != tail[:20]:
                raise ParamsError(f"{path} is corrupt (its checksum does not match); download it again")
            end = size - 28
        f.seek(0)
        try:
            obj = safe_unpickle(f, end)   # stops at the pickle's end, before any trailer
        except Exception as e:
            raise ParamsError(f"could not read checkpoint {path}: {e}. The file is damaged or not a "
                              "DeepFaceDrawing checkpoint; download it again.") from None
    if not isinstance(obj, dict):
        raise ParamsError(f"{path} does not hold a dict of arrays")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, (np.ndarray, np.generic))]
    if bad:
        raise ParamsError(f"{path}: {', '.join(bad[:5])} {'is' if len(bad) == 1 else 'are'} not arrays; "
                          "the file is not a DeepFaceDrawing checkpoint")
    out = {}
    for k, v in obj.items():
        k, a = str(k), np.asarray(v)
        if k.endswith(INT8_SCALE):
            continue
        if a.dtype == np.int8:
            scale = obj.get(k + INT8_SCALE)
            if scale is None or a.ndim < 1 or np.shape(scale) != (a.shape[0],):
                raise ParamsError(f"{path}: {k} is stored as int8 without its scales ({k}{INT8_SCALE}, one "
                                  "per slice of its first axis); the file is damaged: download or export "
                                  "the model again")
            a = a.astype(np.float32) * _per_slice(np.asarray(scale, np.float32), a.ndim)
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


# ---------------------------------------------------------------- atomic writes and locks

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable, mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, flush it to
    disk and rename it over ``path``: a reader (or a Ctrl-C) sees the old file or the new
    one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp's 0600 would hide exported models from other users
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def _flock(path: Path, exclusive: bool = True):
    """Hold an advisory lock (``fcntl.flock``) on ``path`` for the ``with`` block. Where
    the lock file cannot be created (a read-only place) or flock does not exist, nothing
    is locked."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")
    except (ImportError, OSError):
        yield False
        return
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def params_lock(root, exclusive: bool = False):
    """The lock of a whole Params folder: shared while a model loads, exclusive while one
    is written (:func:`dfd_kit.pipeline.save_model`, ``densify_banks``), so a load never
    mixes files of two exports. The lock file lives in :func:`compact_cache_dir`."""
    return _flock(compact_cache_dir(root) / "params.lock", exclusive)


# ---------------------------------------------------------------- where the compact cache lives

def compact_cache_dir(root) -> Path:
    """Where a Params/ folder's compact copy lives: ``<folder>/.compact`` when the folder is
    writable, else $DFD_KIT_CACHE (default ~/.cache/dfd_kit) / compact / <name>-<path hash>."""
    root = Path(root).resolve()
    if os.access(root, os.W_OK):
        return root / ".compact"
    base = Path(os.environ.get("DFD_KIT_CACHE") or Path.home() / ".cache" / "dfd_kit")
    return base / "compact" / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"


def file_sha256(path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(16 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "device": st.st_dev}


def face_param_files(root) -> List[str]:
    """The files of a Params/ folder that decide the face a model draws: every checkpoint
    but the sketch decoders (they draw only the shadows, and a model loaded with
    ``shadows=False`` does without them), the feature banks, and ``config.json`` if there
    is one. Relative to the folder, sorted."""
    files = official_param_files(shadows=False, query_encoders=read_config(Path(root)).query_encoders)
    if (Path(root) / "config.json").is_file():
        files.append("config.json")
    return sorted(files)


def _file_digest(root: Path, rel: str) -> str:
    """sha256 of one file; for a checkpoint whose compact copy is up to date, the digest its
    index recorded (the same sha256, without reading gigabytes again)."""
    src = root / rel
    try:
        index = json.loads((compact_cache_dir(root) / rel / "index.json").read_text())
        if index.get("stamp") == _stamp(src) and isinstance(index.get("sha256"), str):
            return index["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    return file_sha256(src)


def params_sha256(root) -> str:
    """A stable fingerprint of a Params/ folder: sha256 over the relative path and sha256 of
    each of :func:`face_param_files`. Two folders with the same files give the same value on
    any machine, wherever they lie; a saved drawing records it (dfd_kit.drawing)."""
    root = Path(root)
    sha = hashlib.sha256()
    for rel in face_param_files(root):
        sha.update(f"{rel}\0{_file_digest(root, rel)}\n".encode())
    return sha.hexdigest()


# ---------------------------------------------------------------- feature banks

#: How a feature bank file stores its rows: config.json's ``"bank_dtype"`` -> numpy type.
#: float32 is the official format; a kit model may store float16, or int8 (one byte per
#: number, see :func:`write_bank`) to keep a dense bank small.
BANK_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "u1"}

#: A bank file written by this kit starts with this magic, a 4-byte little-endian length
#: and a JSON header (dtype, rows, dim, sha256 of the rows), padded to a 64-byte boundary;
#: then the rows as in a headerless (official) file.
BANK_MAGIC = b"DFDBANK\x01"


def bank_dtype(root) -> str:
    """The feature banks' storage type (a key of :data:`BANK_DTYPES`) for headerless bank
    files: float32 (official), or what a kit model's ``config.json`` says under
    ``"bank_dtype"``. A bank file with a header says its own type."""
    cfg = Path(root) / "config.json"
    if cfg.is_file():
        try:
            name = json.loads(cfg.read_text()).get("bank_dtype", "float32")
        except (ValueError, AttributeError):
            return "float32"   # read_config reports a broken config.json
        if name not in BANK_DTYPES:
            raise ParamsError(f"{cfg}: bank_dtype must be one of {sorted(BANK_DTYPES)}, not {name!r}")
        return name
    return "float32"


def _int8_header_bytes(latent_dim: int) -> int:
    return 2 * 4 * latent_dim


def _bank_payload_bytes(rows: int, dim: int, dtype: str) -> int:
    extra = _int8_header_bytes(dim) if dtype == "int8" else 0
    return extra + rows * dim * np.dtype(BANK_DTYPES[dtype]).itemsize


def write_bank(path, bank: np.ndarray, dtype: str = "float32") -> None:
    """Write a feature bank (N, D) in ``dtype`` (a key of :data:`BANK_DTYPES`), atomically,
    behind a header (:data:`BANK_MAGIC`) that records the type, shape and a checksum.

    int8: each dimension is quantised on its own to 256 levels between its smallest and
    largest value; the rows are D float32 offsets, D float32 steps, then N x D codes,
    and a value reads back as offset + step * code (error at most half a step: for the
    demo model's banks under 0.07 for the parts and 0.3 for the remainder, whose
    nearest neighbours lie about 10 to 60 apart)."""
    bank = np.asarray(bank, np.float64)
    if dtype != "int8":
        payload = np.ascontiguousarray(bank, BANK_DTYPES[dtype]).tobytes()
    else:
        lo = bank.min(axis=0).astype(np.float32)
        step = ((bank.max(axis=0) - lo) / 255.0).astype(np.float32)
        codes = np.round((bank - lo) / np.where(step > 0, step, 1.0))
        payload = lo.tobytes() + step.tobytes() + np.clip(codes, 0, 255).astype(np.uint8).tobytes()
    header = json.dumps({"dtype": dtype, "rows": int(bank.shape[0]), "dim": int(bank.shape[1]),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    header += b" " * (-(len(BANK_MAGIC) + 4 + len(header)) % 64)
    atomic_write(path, lambda f: f.write(BANK_MAGIC + len(header).to_bytes(4, "little") + header + payload))


def bank_header(path) -> Optional[dict]:
    """A bank file's header (dtype, rows, dim, sha256, and ``offset``: where the rows
    start), or None for a headerless file. Raises :class:`ParamsError` for a damaged one."""
    with open(path, "rb") as f:
        if f.read(len(BANK_MAGIC)) != BANK_MAGIC:
            return None
        try:
            n = int.from_bytes(f.read(4), "little")
            if n > 4096:
                raise ValueError("header too long")
            h = json.loads(f.read(n))
            if not (h["dtype"] in BANK_DTYPES and type(h["rows"]) is int and h["rows"] >= 1
                    and type(h["dim"]) is int and isinstance(h["sha256"], str)):
                raise ValueError(f"bad header {h}")
        except (ValueError, KeyError, TypeError) as e:
            raise ParamsError(f"feature bank {path} has a damaged header ({e}); export the model again") from None
    return {**h, "offset": len(BANK_MAGIC) + 4 + n}


def _checked_bank_header(path: Path, latent_dim: int, size: int) -> Optional[dict]:
    """:func:`bank_header`, checked against the file's size and checksum and the model's latent size."""
    h = bank_header(path)
    if h is None:
        return None
    if h["dim"] != latent_dim:
        raise ParamsError(f"feature bank {path} holds {h['dim']}-d rows, but config.json says latent_dim {latent_dim}")
    if size - h["offset"] != _bank_payload_bytes(h["rows"], h["dim"], h["dtype"]):
        raise ParamsError(f"feature bank {path} has {size} bytes, not the {h['rows']} {h['dtype']} rows its "
                          "header says; the file is truncated -- export or download it again")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(h["offset"])
        for chunk in iter(lambda: f.read(16 << 20), b""):
            sha.update(chunk)
    if sha.hexdigest() != h["sha256"]:
        raise ParamsError(f"feature bank {path} is damaged (its checksum does not match); export or "
                          "download it again")
    return h


def read_bank(path, latent_dim: int, dtype: str = "float32") -> np.ndarray:
    """A feature bank (:func:`write_bank`): float32 memory-mapped, float16 and int8 widened
    to float32 in memory. A file with a header says its own type and rows (and its checksum
    is checked); a headerless file (the official format, and the kit's older files) is
    read as ``dtype``, its rows inferred from its size."""
    path = Path(path)
    size = path.stat().st_size
    h = _checked_bank_header(path, latent_dim, size)
    if h is not None:
        dtype, rows, offset = h["dtype"], h["rows"], h["offset"]
    else:
        header = _int8_header_bytes(latent_dim) if dtype == "int8" else 0
        row = np.dtype(BANK_DTYPES[dtype]).itemsize * latent_dim
        if size <= header or (size - header) % row:
            raise ParamsError(f"feature bank {path} has {size} bytes, not a whole number of "
                              f"{latent_dim}-d {dtype} rows; the file is truncated -- download it again")
        rows, offset = (size - header) // row, 0
    shape = (rows, latent_dim)
    if dtype == "float32":
        return np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=shape)
    if dtype == "float16":
        return np.asarray(np.memmap(path, dtype="<f2", mode="r", offset=offset, shape=shape), np.float32)
    scale = np.fromfile(path, "<f4", count=2 * latent_dim, offset=offset).reshape(2, latent_dim)
    codes = np.memmap(path, dtype="u1", mode="r", offset=offset + _int8_header_bytes(latent_dim), shape=shape)
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
    from .fast.mapped import map_big_linears

    # weights that arrived memory-mapped (the fast path's compact cache) may stay in their file
    for prefix in map_big_linears(module, kit):
        del own[f"{prefix}.weight"], own[f"{prefix}.bias"]
    for key, var in own.items():
        if key in kit:
            var.assign(jt.array(_read(kit[key])))


def _read(a: np.ndarray) -> np.ndarray:
    """A float32 copy in memory. A memory-mapped array is read from its file rather than
    through the mapping: pages touched through a mapping would count in this process's memory."""
    if isinstance(a, np.memmap):
        try:
            return np.load(a.filename)
        except FileNotFoundError:   # a newer export's conversion removed it: the mapping still holds it
            return np.array(a, np.float32)
    return np.ascontiguousarray(a, np.float32)


def _owner(module, key):
    m = module
    for part in key.split(".")[:-1]:
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


# ---------------------------------------------------------------- writing (kit-trained models)

def official_state(module, table, dtype=np.float32) -> Dict[str, np.ndarray]:
    """A kit module's parameters under official key names (the inverse of load_into)."""
    from .fast.mapped import MappedLinear

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
    atomic_write(path, lambda f: pickle.dump(dict(state), f, protocol=4))
