"""The reference blocks of :mod:`dfd_kit.layers`, :mod:`dfd_kit.embedding` and
:mod:`dfd_kit.synthesis` as subclasses that run the kernels of :mod:`dfd_kit.fast.kernels`
at inference on the CPU. Same parameters, same results up to float rounding; with
gradients on, or on CUDA, each computes exactly what its reference class computes (the
kernel functions compose Jittor's own ops there), so an accelerated network also trains.

:func:`dfd_kit.fast.accelerate` turns a reference network into one of these in place.
"""
from __future__ import annotations

import jittor as jt
from jittor import nn

from ..layers import Down, Norm2d, ResnetBlock, Stage, Up
from ..synthesis import ConvNormReLU
from . import kernels


class FastNorm2d(Norm2d):
    """:class:`~dfd_kit.layers.Norm2d` with its statistics from one-pass kernels and the
    normalisation fused with what follows it (residual, ReLU, reflection padding)."""

    def execute(self, x: jt.Var) -> jt.Var:
        return self.normalize(x)

    spatial_mean = staticmethod(kernels.spatial_mean)   # oneDNN's sgemm: every core, not one

    def statistics(self, x: jt.Var):
        if self.stats == "sample":
            return kernels.moments(x)
        return super().statistics(x)

    def normalize(self, x: jt.Var, relu: bool = False, residual=None, pad: int = 0, missing_bias=None) -> jt.Var:
        """The norm, then optionally a residual added, a ReLU and reflection padding: at
        inference on the CPU one pass over memory (:func:`dfd_kit.fast.kernels.normalize`).

        ``missing_bias`` (C,): a per-channel constant that belongs to ``x`` but was not
        added (a convolution's bias, see :func:`conv_norm`). Per-sample statistics remove
        any such constant, so it is ignored; running statistics absorb it into the mean.
        """
        mean, var = self.statistics(x)
        if missing_bias is not None and self.stats == "running":
            mean = mean - missing_bias.reshape(1, -1, 1, 1)
        scale = self.weight.reshape(1, -1, 1, 1) / jt.sqrt(var + self.eps)
        return kernels.normalize(x, mean, scale, self.bias, relu, residual, pad)

    def normalize_nhwc(self, y: jt.Var, relu: bool = False, residual=None, pad: int = 0,
                       nchw_out: bool = False, missing_bias=None, accumulate=None) -> jt.Var:
        """:meth:`normalize` of a channels-last map (N, H, W, C), at inference on the CPU
        (:func:`dfd_kit.fast.kernels.normalize_nhwc` has the layouts and the options)."""
        mean, scale = self._inference_transform(kernels.moments_nhwc, y, missing_bias)
        return kernels.normalize_nhwc(y, mean, scale, self.bias, relu, residual, pad, nchw_out, accumulate)

    def normalize_blocked(self, y: jt.Var, pad: int = 0, missing_bias=None) -> jt.Var:
        """The norm of a blocked map (N, C/16, H, W, 16), as oneDNN's transposed convolution
        writes it, to a reflection-padded channels-last map (:func:`dfd_kit.fast.kernels.normalize_blocked`)."""
        mean, scale = self._inference_transform(kernels.moments_blocked, y, missing_bias)
        return kernels.normalize_blocked(y, mean, scale, self.bias, pad)

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
        return self.stats == "running" and self.is_training() and not self.frozen


def conv_norm(conv: nn.Module, norm: FastNorm2d, x: jt.Var, relu: bool = False, residual=None, pad: int = 0) -> jt.Var:
    """norm(conv(x)), then the options of :meth:`FastNorm2d.normalize`.

    At inference on the CPU the convolution's bias is left out and handed to the norm,
    which cancels or absorbs it: Jittor adds a bias in a separate single-threaded pass
    over the whole output (128 MB of memory traffic for 64 x 512 x 512), and the result
    is the same up to float rounding. A 64-channel residual block at 512 x 512: 320 ms
    instead of 345-365 (bench/README.md). The bias is detached from the conv for the call,
    so one model must not run on two threads at once (the kit never does).
    """
    if not kernels.inference_on_cpu() or conv.bias is None:
        return norm.normalize(conv(x), relu, residual, pad)
    bias, conv.bias = conv.bias, None
    try:
        y = conv(x)
    finally:
        conv.bias = bias
    return norm.normalize(y, relu, residual, pad, missing_bias=bias)


def conv_norm_nhwc(conv: nn.Module, norm: FastNorm2d, x: jt.Var, relu: bool = False, residual=None,
                   pad: int = 0, nchw_out: bool = False, accumulate=None) -> jt.Var:
    """:func:`conv_norm` of a padded channels-last map x (N, H, W, C) with a stride-1,
    unpadded ``conv``, at inference on the CPU (:func:`dfd_kit.fast.kernels.channels_last`); the
    result as :meth:`FastNorm2d.normalize_nhwc` lays it out. The bias goes to the norm, as there."""
    return norm.normalize_nhwc(kernels.conv_nhwc(x, conv.weight), relu, residual, pad, nchw_out,
                               missing_bias=conv.bias, accumulate=accumulate)


class NarrowConv(nn.Conv2d):
    """A stride-1, unpadded convolution to few channels (an image's RGB, a sketch's one):
    at inference on the CPU a direct kernel (:func:`dfd_kit.fast.kernels.narrow_conv`); else
    Jittor's convolution. On the 2-core AMD machine of bench/README.md the kernel takes 90 ms
    for the generator's 56 -> 3 7x7 conv at 512 x 512 (oneDNN 170) and 14 ms for a sketch
    decoder's 32 -> 1 5x5 (oneDNN 49)."""

    @staticmethod
    def fits(conv: nn.Module) -> bool:
        return (type(conv) is nn.Conv2d and conv.out_channels <= kernels.NARROW_CONV_MAX_OUT
                and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0)
                and tuple(conv.dilation) == (1, 1) and conv.groups == 1)

    def execute(self, x: jt.Var) -> jt.Var:
        y = kernels.narrow_conv(x, self.weight, self.bias)
        return super().execute(x) if y is None else y


class FastReflectPad(nn.ReflectionPad2d):
    """Reflection padding on every core at inference (the normalisation kernel with the
    identity transform)."""

    @staticmethod
    def fits(pad: nn.Module) -> bool:
        return type(pad) is nn.ReflectionPad2d and pad.pl == pad.pr == pad.pt == pad.pb

    def execute(self, x: jt.Var) -> jt.Var:
        return kernels.reflect_pad(x, self.pl)


class FastResnetBlock(ResnetBlock):
    """The residual block with the conv bias handed to the norm, the norm fused with the
    ReLU, the padding and the residual, and at inference on the CPU channels last inside."""

    def execute(self, x: jt.Var) -> jt.Var:
        if self.channels_last():
            return self.execute_nhwc(kernels.to_nhwc(x, 1))
        h = conv_norm(self.conv1, self.norm1, self.pad(x), relu=True, pad=1)   # padded for conv2
        return conv_norm(self.conv2, self.norm2, h, residual=x)

    def channels_last(self) -> bool:
        return kernels.channels_last() and not (self.norm1.batch_statistics() or self.norm2.batch_statistics())

    def execute_nhwc(self, x: jt.Var) -> jt.Var:
        """The block at inference on the CPU, channels last inside (see
        :mod:`dfd_kit.fast.kernels`): x is the input reflection-padded by 1, channels last
        (N, H + 2, W + 2, C); the result is NCHW (N, C, H, W)."""
        h = conv_norm_nhwc(self.conv1, self.norm1, x, relu=True, pad=1)
        return conv_norm_nhwc(self.conv2, self.norm2, h, residual=x, nchw_out=True)


class FastDown(Down):
    def execute(self, x):
        return conv_norm(self.conv, self.norm, x)


class FastUp(Up):
    def execute(self, x):
        return conv_norm(self.conv, self.norm, x)

    def execute_nhwc(self, x: jt.Var, pad: int) -> jt.Var:
        """At inference on the CPU: NCHW x -> the result channels last, reflection-padded by
        ``pad``: what a residual block (:meth:`FastResnetBlock.execute_nhwc`) takes."""
        y = kernels.upsample_nhwc(x, self.conv.weight)
        if y.ndim == 4:
            return self.norm.normalize_nhwc(y, pad=pad, missing_bias=self.conv.bias)
        return self.norm.normalize_blocked(y, pad=pad, missing_bias=self.conv.bias)


class FastStage(Stage):
    """An upsampling stage hands its residual block a channels-last map, padded already."""

    def execute(self, x):
        if (self.resample_first and isinstance(self.resample, FastUp) and isinstance(self.res, FastResnetBlock)
                and self.res.channels_last() and not self.resample.norm.batch_statistics()):
            return self.res.execute_nhwc(self.resample.execute_nhwc(x, pad=1))
        return super().execute(x)


class FastConvNormReLU(ConvNormReLU):
    def execute(self, x):
        return conv_norm(self.conv, self.norm, x, relu=True)
