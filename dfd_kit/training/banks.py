"""Feature banks: the latents of every training sketch, per sex and component.

After stage 1 the frozen encoders (eval mode) encode each training sketch's five crops.
The rows, grouped by the sample's sex, are the banks ``banks[sex][component]`` float32
(N_sex, latent_dim) that manifold projection searches at inference (and that stage 2
samples projected latents from). ``out_dir/banks.npz`` keeps the latents in dataset
order with each sample's sex and id, so stage 2 can find a sample's own bank row.

A bank needs sketches only, no photos, so a trained model's banks can sample the
manifold more densely than its training set: :func:`densify_banks` re-encodes a larger
sketch set into a Params folder (the demo model's banks come from 8 times more facesjs
faces than it was trained on; see its model card for what that does to projection).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .checkpoints import read_model_config
from .data import TrainingData
from .parallel import all_reduce_sum, barrier, is_main, mpi_rank, mpi_world
from ..config import COMPONENTS, ModelConfig
from ..errors import DataNotFoundError
from ..loading import SEXES, atomic_write

import jittor as jt

BANKS_FILE = "banks.npz"


def encode_all(encoders, sketches: np.ndarray, layout, batch_size: int = 16, progress: bool = False) -> Dict[str, np.ndarray]:
    """uint8 (N, size, size) sketches -> {component: float32 (N, latent_dim)}.

    Encoders are switched to eval mode (running BatchNorm statistics, so each row depends
    on its own sketch only). The last batch is padded to ``batch_size`` so one compiled
    shape serves every batch.
    """
    from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

    from .stage1 import stack_crops

    for m in encoders.values():
        m.eval()
    n = len(sketches)
    out = {c: [] for c in COMPONENTS}
    with jt.no_grad():
        for start in tqdm(range(0, n, batch_size), desc="encoding banks", unit="batch", leave=False,
                          disable=not progress):
            chunk = sketches[start:start + batch_size]
            k = len(chunk)
            if k < batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - k, axis=0)])
            x = stack_crops(chunk, layout)
            for c in COMPONENTS:
                out[c].append(encoders[c](jt.array(x[c])).numpy()[:k])
    d = next(iter(encoders.values())).to_latent.weight.shape[0]
    return {c: (np.concatenate(v) if v else np.zeros((0, d))).astype(np.float32) for c, v in out.items()}


def banks_by_sex(latents: Dict[str, np.ndarray], sexes: np.ndarray) -> Dict[str, Dict[str, np.ndarray]]:
    """{component: (N, D)} + sexes (N,) -> {sex: {component: (N_sex, D)}} (dataset order kept)."""
    sexes = np.asarray(sexes)
    return {s: {c: np.ascontiguousarray(latents[c][sexes == s], np.float32) for c in COMPONENTS} for s in SEXES}


@dataclass
class BankSet:
    """banks.npz read back."""
    latents: Dict[str, np.ndarray]   # component -> (N, D), dataset order
    sexes: np.ndarray                # (N,) "male" / "female"
    ids: np.ndarray                  # (N,) sample ids
    banks: Dict[str, Dict[str, np.ndarray]]   # sex -> component -> (N_sex, D)
    row_in_bank: np.ndarray          # (N,) each sample's row in its sex's bank

    def __len__(self):
        return len(self.sexes)


def build_banks(out_dir, data_dir=None, data: Optional[TrainingData] = None, config: Optional[ModelConfig] = None,
                batch_size: int = 16, progress: bool = True, encoders=None) -> Path:
    """Encode every training sketch with the stage-1 encoders -> ``out_dir/banks.npz``.

    Uses the whole dataset (``data`` must then be unsharded, or is loaded from
    ``data_dir``). Under MPI every rank encodes its share and the rows are summed
    across ranks; rank 0 writes the file. Returns its path.
    """
    from .stage1 import load_stage1

    config = config or read_model_config(out_dir)
    if data is None:
        data = TrainingData(data_dir, config.layout, photos=False, shard=False, progress=progress)
    if encoders is None:
        encoders, _ = load_stage1(out_dir, config)
    n, d = len(data), config.nets.latent_dim
    mine = np.arange(n)[mpi_rank()::mpi_world()]
    part = encode_all(encoders, data.sketches[mine], config.layout, batch_size, progress and is_main())
    latents = {}
    for c in COMPONENTS:
        full = np.zeros((n, d), np.float32)
        full[mine] = part[c]
        latents[c] = all_reduce_sum(full).astype(np.float32)
    path = Path(out_dir) / BANKS_FILE
    if is_main():
        atomic_write(path, lambda f: np.savez(f, sex=np.asarray(data.sexes, "U6"), id=np.asarray(data.ids),
                                              **{f"latent_{c}": latents[c] for c in COMPONENTS}))
    barrier()
    return path


def densify_banks(params_dir, sketch_dir, faces: Dict[str, int], k: Optional[int] = None,
                  bank_dtype: str = "int8", chunk: int = 1000, mirror: bool = False,
                  progress: bool = True) -> Dict[str, Dict[str, int]]:
    """Replace a Params folder's feature banks by the latents of more sketches.

    ``sketch_dir``: a data set folder (samples.csv and sketch/; photos are not read), or
    several, whose samples are taken in the order given (e.g. the photo model's training
    faces, then more faces of the same kind from ``photo-data --first``).
    ``faces``: {component: N}, each component's bank from the first N samples (the
    remainder varies most -- head, hair, ears, clothes -- so it gains most from a larger
    N). ``k``: the model's new default K, written into config.json with ``bank_dtype``
    (int8: a quarter of float32's size, :func:`~dfd_kit.loading.write_bank`). The
    folder's encoders do the encoding, so any model's folder works. ``mirror``: each
    sketch also flipped left to right, its latents after all the unflipped ones (twice
    the rows from the same sketches: a face's mirror image is another plausible face of the same
    sex; needs a :attr:`~dfd_kit.config.Layout.mirror_symmetric` layout). Returns the rows
    written, {sex: {component: rows}}.
    """
    import json

    from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

    from ..data import load_samples
    from ..errors import DFDError
    from ..loading import BANK_DTYPES, bank_file, params_lock, write_bank
    from ..pipeline import load_model

    unknown = sorted(set(faces) - set(COMPONENTS)) + sorted(set(COMPONENTS) - set(faces))
    if unknown:
        raise DFDError(f"faces must give a number of sketches for each of {COMPONENTS}; wrong or missing: {unknown}")
    if bank_dtype not in BANK_DTYPES:
        raise DFDError(f"bank_dtype must be one of {sorted(BANK_DTYPES)}, not {bank_dtype!r}")
    params_dir = Path(params_dir)
    model = load_model(params_dir, shadows=False)
    dirs = [sketch_dir] if isinstance(sketch_dir, (str, os.PathLike)) else list(sketch_dir)
    samples = [s for d in dirs for s in load_samples(d)]
    n = max(faces.values())
    if len(samples) < n:
        raise DFDError(f"{', '.join(map(str, dirs))} hold {len(samples)} sketches, fewer than the {n} asked for: "
                       "build a larger set (python -m dfd_kit.data.facesjs --n N, or "
                       "python -m dfd_kit.training photo-data)")
    if k is not None and not 2 <= k <= min(faces.values()) // 2:
        raise DFDError(f"k={k} does not fit banks of {min(faces.values())} faces (both sexes)")
    if mirror and not model.layout.mirror_symmetric:
        raise DFDError(f"mirror=True needs a layout whose eye boxes mirror each other and whose nose and mouth boxes "
                       f"are centred; {params_dir}'s are not ({model.layout.boxes}): build the banks without mirror")
    flips = (False, True) if mirror else (False,)
    latents = {(c, f): [] for c in COMPONENTS for f in flips}
    for start in tqdm(range(0, n, chunk), desc="encoding bank sketches", unit=f"x{chunk}", disable=not progress):
        sketches = np.stack([model.normalise(s.sketch_path) for s in samples[start:start + chunk]])
        for f in flips:
            z = encode_all(model.encoders, np.ascontiguousarray(sketches[:, :, ::-1]) if f else sketches,
                           model.layout)
            for c in COMPONENTS:
                latents[c, f].append(z[c])
    sexes = np.array([s.sex for s in samples[:n]])
    rows = {s: {} for s in SEXES}
    # Each bank file is replaced atomically and says its own type in its header, so an
    # interruption leaves old and new banks that both read right; a load waits meanwhile.
    with params_lock(params_dir, exclusive=True):
        for c in COMPONENTS:
            z = np.concatenate([np.concatenate(latents[c, f])[:faces[c]] for f in flips])
            sex = np.concatenate([sexes[:faces[c]]] * len(flips))
            for s in SEXES:
                bank = z[sex == s]
                write_bank(params_dir / bank_file(c, s), bank, bank_dtype)
                rows[s][c] = len(bank)
        cfg_path = params_dir / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else json.loads(model.config.to_json())
        cfg["bank_dtype"] = bank_dtype
        if k is not None:
            cfg["k"] = int(k)
        atomic_write(cfg_path, lambda f: f.write(json.dumps(cfg, indent=2)), "w")
    return rows


def load_banks(out_dir) -> BankSet:
    path = Path(out_dir) / BANKS_FILE
    if not path.exists():
        raise DataNotFoundError(f"{path} not found: run build_banks after stage 1")
    with np.load(path) as z:
        latents = {c: z[f"latent_{c}"].astype(np.float32) for c in COMPONENTS}
        sexes, ids = z["sex"].astype(str), z["id"].astype(str)
    row = np.zeros(len(sexes), np.int64)
    for s in SEXES:
        m = sexes == s
        row[m] = np.arange(m.sum())
    return BankSet(latents, sexes, ids, banks_by_sex(latents, sexes), row)


__all__ = ["build_banks", "densify_banks", "load_banks", "encode_all", "banks_by_sex", "BankSet", "BANKS_FILE"]
