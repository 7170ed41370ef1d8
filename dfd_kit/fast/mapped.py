"""Linear layers whose weight stays in its memory-mapped file."""
from __future__ import annotations

import mmap
import os

import jittor as jt
import numpy as np
from jittor import nn


class MappedLinear(nn.Module):
    """x W^T + b for inference, with W (out, in) left in a float32 ``.npy`` file.

    Each official encoder and decoder holds one huge fully-connected layer (268 MB for the
    remainder). Memory-mapped slice by slice, such a weight lives in the OS file cache, which
    any process may share and the kernel may drop, and never more than one slice of it in
    this process's memory. Each slice is mapped with its pages populated at once and unmapped
    after its product: the matrix product reads the file cache in place, 12 ms for the
    remainder's 268 MB here against 41 for copying each slice into a buffer first
    (bench/README.md). (N, in) jt.Var -> (N, out) jt.Var; no gradients.
    """

    SLICE_BYTES = 32 << 20   # big enough for BLAS speed, small next to the weight

    def __init__(self, weight: np.memmap, bias: np.ndarray):
        assert weight.dtype == np.float32 and weight.ndim == 2 and weight.flags.c_contiguous
        self.path, self.offset = str(weight.filename), int(weight.offset)
        # held open: the file stays readable even if a newer compact copy replaces its folder
        self._file = open(self.path, "rb")
        self.out_features, self.in_features = weight.shape
        self.bias_array = np.array(bias, np.float32)   # a numpy array, so not a Jittor parameter

    def __del__(self):
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()

    @property
    def weight_array(self) -> np.memmap:
        """The weight, memory-mapped (for saving and inspection)."""
        return np.memmap(self._file, np.float32, "r", self.offset, (self.out_features, self.in_features))

    def execute(self, x: jt.Var) -> jt.Var:
        xs = x.numpy().astype(np.float32, copy=False)
        y = np.empty((xs.shape[0], self.out_features), np.float32)
        rows = max(1, self.SLICE_BYTES // (4 * self.in_features))
        if hasattr(mmap, "MAP_SHARED"):   # POSIX; MAP_POPULATE (Linux) maps the pages in one go
            how = dict(flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)
        else:
            how = dict(access=mmap.ACCESS_READ)
        f = self._file
        if os.fstat(f.fileno()).st_size < self.offset + 4 * self.out_features * self.in_features:
            raise OSError(f"{self.path} is shorter than its header says")
        for start in range(0, self.out_features, rows):
            n = min(rows, self.out_features - start)
            at = self.offset + 4 * start * self.in_features
            base = at - at % mmap.ALLOCATIONGRANULARITY   # mappings start on that boundary
            with mmap.mmap(f.fileno(), at - base + 4 * n * self.in_features, offset=base, **how) as m:
                w = np.frombuffer(m, np.float32, n * self.in_features, at - base)
                np.matmul(xs, w.reshape(n, self.in_features).T, out=y[:, start:start + n])
                del w   # the mapping closes only once no array uses it
        return jt.array(y + self.bias_array)


#: Linear layers at least this big stay in their memory-mapped file (the official encoders'
#: and decoders' fully-connected layers, 16 to 268 MB each; every convolution stays resident).
MAPPED_LINEAR_MIN_BYTES = 8 << 20


def map_big_linears(module: nn.Module, state) -> list:
    """Replace each ``nn.Linear`` of ``module`` whose weight in ``state`` (a checkpoint's
    {kit key: array}) is memory-mapped and at least :data:`MAPPED_LINEAR_MIN_BYTES` by a
    :class:`MappedLinear` on that file. Returns the prefixes replaced; their parameters need
    no loading."""
    from ..loading import _owner, _read

    done = []
    for key, a in state.items():
        prefix, _, param = key.rpartition(".")
        if not (param == "weight" and isinstance(a, np.memmap) and a.nbytes >= MAPPED_LINEAR_MIN_BYTES
                and isinstance(_owner(module, key), nn.Linear)):
            continue
        try:
            layer = MappedLinear(a, _read(state[f"{prefix}.bias"]))
        except FileNotFoundError:   # a newer export replaced its compact copy: read it from the mapping
            continue
        setattr(_owner(module, prefix), prefix.rpartition(".")[2], layer)
        done.append(prefix)
    return done
