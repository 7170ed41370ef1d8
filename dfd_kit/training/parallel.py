"""Running on several processes and threads.

* MPI: :func:`mpi_rank`, :func:`is_main`, :func:`barrier`, :func:`broadcast_floats`, ...
  -- under ``mpirun -np N`` every stage trains data-parallel (each rank one shard,
  gradients averaged, rank 0 writes); outside mpirun they are all no-ops;
* OpenMP: :class:`omp_threads`, how many threads Jittor's CPU kernels use while training.

Importing this module imports Jittor.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import dfd_kit  # noqa: F401  -- configures Jittor's environment before its import
import jittor as jt
import numpy as np


# ----------------------------------------------------------------------------- MPI

def mpi_rank() -> int:
    return int(jt.rank) if jt.in_mpi else 0


def mpi_world() -> int:
    return int(jt.world_size) if jt.in_mpi else 1


def is_main() -> bool:
    """True on rank 0 (and outside MPI): the process that writes files."""
    return mpi_rank() == 0


def barrier():
    """Wait for every rank (an all-reduce of a scalar). No-op outside MPI."""
    if jt.in_mpi:
        jt.array([0.0]).mpi_all_reduce("add").sync()


def exit_on_error_in_mpi():
    """Under MPI, make an uncaught exception end this rank at once (``os._exit(1)``), so
    mpirun stops the others instead of leaving them waiting in a collective forever."""
    if not jt.in_mpi:
        return
    import sys
    import traceback

    def hook(tp, value, tb):
        traceback.print_exception(tp, value, tb)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)

    sys.excepthook = hook


def broadcast_floats(values: Sequence[float]) -> List[float]:
    """Rank 0's values on every rank (so all ranks take the same decisions)."""
    if not jt.in_mpi:
        return list(values)
    return [float(v) for v in jt.array(np.asarray(values, np.float32)).mpi_broadcast(0).numpy()]


def all_reduce_sum(a: np.ndarray) -> np.ndarray:
    if not jt.in_mpi:
        return a
    return jt.array(a).mpi_all_reduce("add").numpy()


def average_running_stats(modules: Dict[str, "jt.nn.Module"]):
    """Average BatchNorm running statistics over the ranks (each rank saw other data)."""
    if not jt.in_mpi:
        return
    for m in modules.values():
        for k, v in m.state_dict().items():
            if k.endswith(("running_mean", "running_var")):
                v.assign(v.mpi_all_reduce("mean").stop_grad())
    jt.sync_all()


# ----------------------------------------------------------------------------- threads

def _libgomp():
    import ctypes

    try:
        return ctypes.CDLL("libgomp.so.1")   # the copy Jittor's kernels and oneDNN already use
    except OSError:
        return None


class omp_threads:
    """Context manager: run Jittor's CPU kernels on ``n`` OpenMP threads (None: unchanged).

    On a busy machine (other processes on the same cores) OpenMP's spin-waiting threads
    can make small kernels 10x slower; one thread avoids that.
    """

    def __init__(self, n: Optional[int]):
        self.n, self.old, self.lib = n, None, None

    def __enter__(self):
        if self.n:
            self.lib = _libgomp()
            if self.lib is not None:
                self.old = self.lib.omp_get_max_threads()
                self.lib.omp_set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        if self.lib is not None and self.old is not None:
            self.lib.omp_set_num_threads(int(self.old))
        return False
