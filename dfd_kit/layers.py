"""Building blocks shared by the auto-encoders, the feature decoders and the generator."""
from __future__ import annotations

import mmap
import os

import jittor as jt
import numpy as np
from jittor import nn

from . import fused
from .fused import spatial_mean


class Norm2d(nn.Module):
    """Per-channel normalisation with an affine transform.

    ``stats`` picks where the mean and variance come from:

    * ``"running"`` -- BatchNorm: batch statistics while training, the stored running
      statistics at inference (the component auto-encoders);
    * ``"sample"`` -- each sample's own statistics over H x W, in training and at
      inference. The generator uses it as InstanceNorm; the feature decoders use it
      because the official code never switched them to eval mode, so their BatchNorm
      normalises every (batch-of-one) input by its own statistics. Their stored running
      statistics are loaded, kept and reported but never used.
    """

    def __init__(self, channels: int, stats: str = "running", track_running: bool = True,
                 eps: float = 1e-5, momentum: float = 0.1):
        assert stats in ("running", "sample")
        self.stats, self.eps, self.momentum = stats, eps, momentum
        self.weight = jt.ones(channels)
        self.bias = jt.zeros(channels)
        if track_running:
            self.running_mean = jt.zeros(channels).stop_grad()
            self.running_var = jt.ones(channels).stop_grad()
        else:
            self.running_mean = self.running_var = None

    def execute(self, x: jt.Var) -> jt.Var:
        return self.normalize(x)

    def normalize(self, x: jt.Var, relu: bool = False, residual=None, pad: int = 0, missing_bias=None) -> jt.Var:
        """The norm, then optionally a residual added, a ReLU and reflection padding: at
        inference on the CPU one pass over memory (:func:`dfd_kit.fused.normalize`).

        ``missing_bias`` (C,): a per-channel constant that belongs to ``x`` but was not
        added (a convolution's bias, see :func:`conv_norm`). Per-sample statistics remove
        any such constant, so it is ignored; running statistics absorb it into the mean.
        """
        mean, var = self.statistics(x)
        if missing_bias is not None and self.stats == "running":
            mean = mean - missing_bias.reshape(1, -1, 1, 1)
        scale = self.weight.reshape(1, -1, 1, 1) / jt.sqrt(var + self.eps)
        return fused.normalize(x, mean, scale, self.bias, relu, residual, pad)

    def normalize_nhwc(self, y: jt.Var, relu: bool = False, residual=None, pad: int = 0,
                       nchw_out: bool = False, missing_bias=None, accumulate=None) -> jt.Var:
        """:meth:`normalize` of a channels-last map (N, H, W, C), at inference on the CPU
        (:func:`dfd_kit.fused.normalize_nhwc` has the layouts and the options)."""
        mean, scale = self._inference_transform(fused.moments_nhwc, y, missing_bias)
        return fused.normalize_nhwc(y, mean, scale, self.bias, relu, residual, pad, nchw_out, accumulate)

    def normalize_blocked(self, y: jt.Var, pad: int = 0, missing_bias=None) -> jt.Var:
        """The norm of a blocked map (N, C/16, H, W, 16), as oneDNN's transposed convolution
        writes it, to a reflection-padded channels-last map (:func:`dfd_kit.fused.normalize_blocked`)."""
        mean, scale = self._inference_transform(fused.moments_blocked, y, missing_bias)
        return fused.normalize_blocked(y, mean, scale, self.bias, pad)

    def _inference_transform(self, moments, y: jt.Var, missing_bias):
        """(mean, scale) of the channels-last and blocked paths: ``moments(y)`` for per-sample
        statistics, else the running ones with a left-out conv bias absorbed."""
        if self.stats == "sample":
            mean, var = moments(y)
        else:
            mean, var = self.statistics(None)
            if missing_bias is not None:
                mean = mean - missing_bias.reshape(1, -1, 1, 1)
        return mean, self.weight.reshape(1, -1, 1, 1) / jt.sqrt(var + self.eps)

    def batch_statistics(self) -> bool:
        """True while this norm divides by statistics over the batch (running statistics,
        training): those the channels-last path does not compute."""
        return self.stats == "running" and self.is_training()

    def statistics(self, x: jt.Var):
        """(mean, var), each (N or 1, C, 1, 1), that this norm divides by."""
        if self.stats == "sample":
            return fused.moments(x)
        if self.is_training():
            mean = spatial_mean(x).mean(dim=0, keepdims=True)
            var = spatial_mean((x - mean) ** 2).mean(dim=0, keepdims=True)
            n = x.shape[0] * x.shape[2] * x.shape[3]
            m = self.momentum
            self.running_mean.update((1 - m) * self.running_mean + m * mean.reshape(-1).detach())
            self.running_var.update((1 - m) * self.running_var
                                    + m * var.reshape(-1).detach() * n / max(n - 1, 1))
            return mean, var
        return self.running_mean.reshape(1, -1, 1, 1), self.running_var.reshape(1, -1, 1, 1)


def conv_norm(conv: nn.Module, norm: Norm2d, x: jt.Var, relu: bool = False, residual=None, pad: int = 0) -> jt.Var:
    """norm(conv(x)), then the options of :meth:`Norm2d.normalize`.

    At inference on the CPU the convolution's bias is left out and handed to the norm,
    which cancels or absorbs it: Jittor adds a bias in a separate single-threaded pass
    over the whole output (128 MB of memory traffic for 64 x 512 x 512), and the result
    is the same up to float rounding. A 64-channel residual block at 512 x 512: 320 ms
    instead of 345-365 (bench/README.md). The bias is detached from the conv for the call,
    so one model must not run on two threads at once (the kit never does).
    """
    if not fused.enabled() or conv.bias is None:
        return norm.normalize(conv(x), relu, residual, pad)
    bias, conv.bias = conv.bias, None
    try:
        y = conv(x)
    finally:
        conv.bias = bias
    return norm.normalize(y, relu, residual, pad, missing_bias=bias)


def conv_norm_nhwc(conv: nn.Module, norm: Norm2d, x: jt.Var, relu: bool = False, residual=None,
                   pad: int = 0, nchw_out: bool = False, accumulate=None) -> jt.Var:
    """:func:`conv_norm` of a padded channels-last map x (N, H, W, C) with a stride-1,
    unpadded ``conv``, at inference on the CPU (:func:`dfd_kit.fused.channels_last`); the
    result as :meth:`Norm2d.normalize_nhwc` lays it out. The bias goes to the norm, as there."""
    return norm.normalize_nhwc(fused.conv_nhwc(x, conv.weight), relu, residual, pad, nchw_out,
                               missing_bias=conv.bias, accumulate=accumulate)


class OutputConv(nn.Conv2d):
    """A stride-1, unpadded convolution to few channels (an image's RGB, a sketch's one):
    at inference on the CPU a direct kernel (:func:`dfd_kit.fused.narrow_conv`); else
    Jittor's convolution. Same parameters as ``nn.Conv2d``. On the 2-core AMD machine of
    bench/README.md the kernel takes 90 ms for the generator's 56 -> 3 7x7 conv at 512 x 512
    (oneDNN 170) and 14 ms for a sketch decoder's 32 -> 1 5x5 (oneDNN 49)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size)

    def execute(self, x: jt.Var) -> jt.Var:
        y = fused.narrow_conv(x, self.weight, self.bias)
        return super().execute(x) if y is None else y


class ReflectPad(nn.Module):
    """Reflection padding (no parameters), on every core at inference."""

    def __init__(self, p: int):
        self.p = p

    def execute(self, x: jt.Var) -> jt.Var:
        return fused.reflect_pad(x, self.p)


class ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3x3, norm, ReLU, reflect-pad, conv3x3, norm](x)."""

    def __init__(self, channels: int, stats: str = "running", track_running: bool = True):
        self.pad = ReflectPad(1)
        self.conv1 = nn.Conv2d(channels, channels, 3)
        self.norm1 = Norm2d(channels, stats, track_running)
        self.conv2 = nn.Conv2d(channels, channels, 3)
        self.norm2 = Norm2d(channels, stats, track_running)

    def execute(self, x: jt.Var) -> jt.Var:
        if self.channels_last():
            return self.execute_nhwc(fused.to_nhwc(x, 1))
        h = conv_norm(self.conv1, self.norm1, self.pad(x), relu=True, pad=1)   # padded for conv2
        return conv_norm(self.conv2, self.norm2, h, residual=x)

    def channels_last(self) -> bool:
        return fused.channels_last() and not (self.norm1.batch_statistics() or self.norm2.batch_statistics())

    def execute_nhwc(self, x: jt.Var) -> jt.Var:
        """The block at inference on the CPU, channels last inside (see :mod:`dfd_kit.fused`):
        x is the input reflection-padded by 1, channels last (N, H + 2, W + 2, C); the result
        is NCHW (N, C, H, W)."""
        h = conv_norm_nhwc(self.conv1, self.norm1, x, relu=True, pad=1)
        return conv_norm_nhwc(self.conv2, self.norm2, h, residual=x, nchw_out=True)


class Down(nn.Module):
    """Halve the resolution: conv 4x4 stride 2, then norm. The official block follows it
    with LeakyReLU(1), which is the identity, so there is no activation here."""

    def __init__(self, cin: int, cout: int, stats: str = "running"):
        self.conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1)
        self.norm = Norm2d(cout, stats)

    def execute(self, x):
        return conv_norm(self.conv, self.norm, x)


class Up(nn.Module):
    """Double the resolution: transposed conv 4x4 stride 2, then norm (again no activation:
    the official LeakyReLU(1) is the identity)."""

    def __init__(self, cin: int, cout: int, stats: str = "running"):
        self.conv = nn.ConvTranspose(cin, cout, 4, stride=2, padding=1)
        self.norm = Norm2d(cout, stats)

    def execute(self, x):
        return conv_norm(self.conv, self.norm, x)

    def execute_nhwc(self, x: jt.Var, pad: int) -> jt.Var:
        """At inference on the CPU: NCHW x -> the result channels last, reflection-padded by
        ``pad``: what a residual block (:meth:`ResnetBlock.execute_nhwc`) takes."""
        y = fused.upsample_nhwc(x, self.conv.weight)
        if y.ndim == 4:
            return self.norm.normalize_nhwc(y, pad=pad, missing_bias=self.conv.bias)
        return self.norm.normalize_blocked(y, pad=pad, missing_bias=self.conv.bias)


class Stage(nn.Module):
    """One resolution step of an auto-encoder: a resampling block and a residual block,
    in the order given by ``resample_first``."""

    def __init__(self, resample: nn.Module, res: ResnetBlock, resample_first: bool):
        self.resample, self.res, self.resample_first = resample, res, resample_first

    def execute(self, x):
        if not self.resample_first:
            return self.resample(self.res(x))
        if isinstance(self.resample, Up) and self.res.channels_last() and not self.resample.norm.batch_statistics():
            return self.res.execute_nhwc(self.resample.execute_nhwc(x, pad=1))
        return self.res(self.resample(x))


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
