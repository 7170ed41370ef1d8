"""The compact cache: each checkpoint of a Params folder converted once into one ``.npy``
file per tensor, memory-mapped on later loads. A pickle must be read whole and decoded
(seconds for the official 2.4 GB); mapped arrays load in milliseconds, cost no memory until
read, and let the big linear layers stay in the file (:mod:`dfd_kit.fast.mapped`). The
reference path (``dfd_kit.load(..., fast=False)``) reads the pickles themselves.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import numpy as np

from ..errors import ParamsError
from ..loading import _flock, _read, _stamp, atomic_write, compact_cache_dir, file_sha256, read_checkpoint

_COMPACT_VERSION = 2


def compact_checkpoint(root, rel: str, max_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A checkpoint as {key: float32 array memory-mapped from its own .npy file}.

    The pickle is converted once into :func:`compact_cache_dir` ``/<rel>/<sha256>/``, a
    folder named by the pickle's content and never changed afterwards, so a model mapped
    from it keeps its weights whatever happens to the pickle later. The hash is computed
    again only when the pickle's size, modification time or inode change. The conversion
    runs under a lock (two kernels loading at once wait for each other), into a temporary
    folder renamed into place. Mapped arrays cost no memory until read, and a big linear
    layer can stay mapped (:class:`dfd_kit.fast.mapped.MappedLinear`). Where the cache cannot
    be written, the pickle is read into memory instead, with a warning.
    """
    src = Path(root) / rel
    folder = compact_cache_dir(root) / rel
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _flock(folder / "lock"):
            return _compact_locked(src, folder, max_bytes)
    except ParamsError:   # a FileNotFoundError too, but the file's fault, not the cache's
        raise
    except OSError as e:
        warnings.warn(f"could not write the compact copy of {rel} to {folder} ({e}); keeping the "
                      "weights in memory instead", stacklevel=2)
        return read_checkpoint(src, max_bytes)


def _compact_locked(src: Path, folder: Path, max_bytes: Optional[int]) -> Dict[str, np.ndarray]:
    index_file = folder / "index.json"
    try:
        index = json.loads(index_file.read_text())
        assert isinstance(index, dict) and index.get("version") == _COMPACT_VERSION
        assert isinstance(index.get("files"), dict)
    except (OSError, ValueError, AssertionError):
        index = {}
    stamp = _stamp(src)
    digest = index["sha256"] if index.get("stamp") == stamp else file_sha256(src)
    version = folder / digest
    if index.get("sha256") != digest or not version.is_dir():
        state = read_checkpoint(src, max_bytes)
        if _stamp(src) != stamp:
            raise ParamsError(f"{src} changed while it was being read (is a model being exported into that "
                              "folder?); load it again when that is done")
        index = {"version": _COMPACT_VERSION, "sha256": digest, "stamp": stamp,
                 "files": _write_compact(state, folder, version)}
        del state   # the copy on disk replaces it
        atomic_write(index_file, lambda f: f.write(json.dumps(index)), "w")
        # Older copies go; a model mapped from one keeps its pages (open mappings survive unlink).
        for old in folder.iterdir():
            if old.is_dir() and old.name != digest:
                shutil.rmtree(old, ignore_errors=True)
            elif old.suffix == ".npy":   # the flat layout of cache version 1
                old.unlink()
    elif index["stamp"] != stamp:     # touched, or copied: same content, new stamp
        index["stamp"] = stamp
        atomic_write(index_file, lambda f: f.write(json.dumps(index)), "w")
    return {k: np.load(version / f, mmap_mode="r") for k, f in index["files"].items()}


def _write_compact(state: Dict[str, np.ndarray], folder: Path, version: Path) -> Dict[str, str]:
    """One .npy per tensor in a temporary folder, renamed to ``version`` once complete."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        files = {}
        for i, (key, a) in enumerate(state.items()):
            files[key] = f"{i}.npy"
            np.save(tmp / files[key], np.ascontiguousarray(a, np.float32))
        shutil.rmtree(version, ignore_errors=True)   # an incomplete copy left by hand
        os.replace(tmp, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def converted_checkpoint(root, rel: str, tag: str, keys: Iterable[str], convert: Callable[[np.ndarray], np.ndarray],
                         max_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """``{key: convert(weight)}`` for ``keys`` of a checkpoint (e.g. weights rounded to
    bfloat16, :mod:`dfd_kit.fast.precision`), converted once and memory-mapped from then on.

    The converted arrays live inside the compact copy they came from,
    ``<compact>/<rel>/<sha256>/<tag>-<hash of keys>/``: written into a temporary folder and
    renamed into place once complete, never changed afterwards, and removed with that compact
    copy when the pickle changes. Where the cache cannot be written they are converted in
    memory instead, with a warning."""
    keys = sorted(keys)
    state = compact_checkpoint(root, rel, max_bytes)
    missing = [k for k in keys if k not in state]
    if missing:
        raise ParamsError(f"{rel} has no {', '.join(missing[:5])}")
    first = state[keys[0]] if keys else None
    if not isinstance(first, np.memmap):   # no compact copy to put them beside
        return {k: convert(np.asarray(state[k])) for k in keys}
    # the compact copy these arrays were mapped from, even if a newer one replaced it since
    version = Path(first.filename).parent
    name = f"{tag}-{hashlib.sha1(chr(0).join(keys).encode()).hexdigest()[:12]}"
    out = version / name
    try:
        with _flock(version.parent / "lock"):
            index = _converted_index(out)
            if index is None:
                _write_converted(state, keys, convert, version, out)
                index = _converted_index(out)
                for old in version.glob(f"{tag}-*"):   # other keys' copies: an older choice of layers
                    if old != out:
                        shutil.rmtree(old, ignore_errors=True)
        return {k: np.load(out / f, mmap_mode="r") for k, f in index.items()}
    except (OSError, ValueError) as e:
        warnings.warn(f"could not keep the {tag} copy of {rel} in {out} ({e}); converting it in memory "
                      "instead", stacklevel=2)
        return {k: convert(_read(state[k])) for k in keys}


def _converted_index(out: Path) -> Optional[Dict[str, str]]:
    try:
        index = json.loads((out / "index.json").read_text())
    except (OSError, ValueError):
        return None
    return index.get("files") if isinstance(index, dict) and isinstance(index.get("files"), dict) else None


def _write_converted(state, keys, convert, version: Path, out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=version))
    try:
        files = {}
        for i, key in enumerate(keys):   # one array in memory at a time
            files[key] = f"{i}.npy"
            np.save(tmp / files[key], convert(_read(state[key])))
        (tmp / "index.json").write_text(json.dumps({"files": files}))
        shutil.rmtree(out, ignore_errors=True)   # an incomplete copy left by hand
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
