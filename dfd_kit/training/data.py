"""The training data and the run's randomness.

* :class:`TrainingData`: the on-disk dataset (``samples.csv``, ``sketch/``, ``photo/``)
  loaded into memory, sharded across MPI ranks;
* :class:`BatchSampler`: the data order, drawn from a seeded numpy Generator whose
  state goes into every checkpoint, and :func:`sample_rng` for per-sample randomness
  (augmentation, manifold projection) that needs no saved state at all;
* :func:`seed_all`: Jittor's weights drawn alike on every rank.

Importing this module imports Jittor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import dfd_kit  # noqa: F401  -- configures Jittor's environment before its import
import jittor as jt
import numpy as np

from ..errors import ConfigError
from .parallel import is_main, mpi_rank, mpi_world


class TrainingData:
    """The dataset in memory: ``sketches`` uint8 (N, S, S), ``photos`` uint8 (N, S, S, 3)
    (or None), ``sexes`` (N,) str, ``ids`` (N,) str, ``indices`` (N,) int -- each row's
    position in ``samples.csv``.

    shard=True under MPI keeps the rows rank::world_size, cut to the same length on
    every rank (so all ranks take the same number of steps per epoch).
    """

    def __init__(self, data_dir, layout, photos: bool = True, shard: bool = True, progress: bool = True,
                 limit: Optional[int] = None):
        from ..data import load_pair, load_samples

        samples = load_samples(data_dir)
        if limit is not None:
            samples = samples[:limit]
        if not samples:
            raise ConfigError(f"{data_dir} holds no samples")
        index = np.arange(len(samples))
        if shard and mpi_world() > 1:
            per_rank = len(samples) // mpi_world()
            if per_rank == 0:
                raise ConfigError(f"{len(samples)} samples cannot be shared by {mpi_world()} ranks")
            index = index[mpi_rank()::mpi_world()][:per_rank]
        self.data_dir, self.layout = Path(data_dir), layout
        self.indices = index
        self.ids = np.array([samples[i].sketch_path.stem for i in index])
        self.sexes = np.array([samples[i].sex for i in index])
        size = layout.size
        self.sketches = np.empty((len(index), size, size), np.uint8)
        self.photos = np.empty((len(index), size, size, 3), np.uint8) if photos else None
        from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

        for row, i in enumerate(tqdm(index, desc="loading data", unit="pair", leave=False,
                                     disable=not (progress and is_main()))):
            sk, ph = load_pair(samples[i], layout)
            self.sketches[row] = sk
            if photos:
                self.photos[row] = ph

    def __len__(self):
        return len(self.indices)


def photo_to_input(photos: np.ndarray) -> np.ndarray:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S) in [-1, 1]."""
    return (photos.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()


class BatchSampler:
    """Shuffled batches of row numbers, epoch after epoch (the last partial batch of an
    epoch is dropped, so every batch has the same shape and Jittor compiles once).

    The whole state -- numpy Generator, current permutation, position -- is in
    :meth:`state_dict`, so a restored sampler continues exactly where it stopped. Seeded
    identically on every MPI rank: each rank permutes its own (equally long) shard the
    same way.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ConfigError(f"batch size {batch_size} is larger than the {n} training samples"
                              + (" of this rank" if mpi_world() > 1 else ""))
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng([int(seed), 7])
        self.perm = self.rng.permutation(n)
        self.pos, self.epoch = 0, 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.perm = self.rng.permutation(self.n)
            self.pos, self.epoch = 0, self.epoch + 1
        batch = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "perm": self.perm.copy(), "pos": self.pos,
                "epoch": self.epoch, "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, st: dict):
        if st["n"] != self.n or st["batch_size"] != self.batch_size:
            raise ConfigError(f"the checkpoint was written for {st['n']} samples in batches of "
                              f"{st['batch_size']}; this run has {self.n} in batches of {self.batch_size}. "
                              "Use the same data and batch size, or a new output folder.")
        self.rng.bit_generator.state = st["rng"]
        self.perm, self.pos, self.epoch = np.asarray(st["perm"]).copy(), int(st["pos"]), int(st["epoch"])


def seed_all(seed: int):
    """Seed Jittor's (and Python's and numpy's global) generators with the same seed on
    every MPI rank, so all ranks start from the same weights."""
    jt.set_global_seed(int(seed), different_seed_for_mpi=False)


def sample_rng(seed: int, stage: int, step: int, index: int) -> np.random.Generator:
    """Randomness for one sample at one step: a pure function of its arguments, so it
    needs no saved state and does not depend on batch composition or MPI rank."""
    return np.random.default_rng([int(seed), int(stage), int(step), int(index)])
