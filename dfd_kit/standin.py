"""Deterministic stand-in weights in the official checkpoint layout.

The official weights cannot be shipped or fetched everywhere, so tests and benchmarks use
pseudo-random weights whose every key and shape match the official checkpoints. The
parity fixture (tests/fixtures/official_parity) records what the official code computed
with exactly these weights. The rule, per array (``manifest.json`` holds ``init``):

    seed = crc32("<file relative to Params/>:<key>")   (feature banks use key "bank")
    rng  = numpy PCG64(seed); normal -> standard_normal(n) * std + mean,
                              uniform -> low + (high - low) * random(n); float64 -> float32
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from .loading import atomic_write, write_checkpoint

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "official_parity"


def standin_array(file: str, key: str, shape, init: dict) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{file}:{key}".encode()))
    n = int(np.prod(shape))
    if init["dist"] == "normal":
        x = rng.standard_normal(n) * float(init["std"]) + float(init.get("mean", 0.0))
    else:
        lo, hi = float(init["low"]), float(init["high"])
        x = lo + (hi - lo) * rng.random(n)
    return x.astype(np.float32).reshape(shape)


#: Where the tests and benchmarks keep the stand-in Params (under .cache/, ignored by git).
STANDIN_DIR = FIXTURE.parents[2] / ".cache" / "standin_params"


def full_size_params(params=None, progress: bool = True) -> Path:
    """``params`` if given, else the stand-in Params in STANDIN_DIR (written when missing):
    the full-size model the benchmarks measure."""
    return Path(params) if params else write_standin_params(STANDIN_DIR, progress=progress)


def write_standin_params(out_dir, manifest=FIXTURE / "manifest.json", progress: bool = True) -> Path:
    """Write a complete official-layout Params/ (about 2.3 GB, ~20 s). Returns out_dir.
    A ``.complete`` marker is written last, so an interrupted run is redone."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    marker = out / ".complete"
    if marker.exists():
        return out
    man = json.loads(Path(manifest).read_text())
    items = man["checkpoints"] + man["feature_banks"]
    for item in tqdm(items, desc="stand-in Params", disable=not progress):
        path = out / item["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if "entries" in item:
            write_checkpoint(path, {e["key"]: standin_array(item["file"], e["key"], e["shape"], e["init"])
                                    for e in item["entries"]})
        else:
            a = standin_array(item["file"], item["seed_key"], [item["rows_generated"], item["cols"]], item["init"])
            atomic_write(path, lambda f: f.write(a.astype("<f4").tobytes()))
    marker.write_text("ok\n")
    return out
