"""The fast path: everything in dfd_kit that exists only for speed, beside the reference model.

The model the paper describes lives in :mod:`dfd_kit.layers`, :mod:`dfd_kit.embedding`,
:mod:`dfd_kit.mapping` and :mod:`dfd_kit.synthesis`, plain Jittor. This package computes the
same at inference on the CPU, about twice as fast at full size (bench/README.md):

* :mod:`~dfd_kit.fast.kernels`: one-pass multi-threaded kernels (norm statistics, the norm
  fused with the residual, ReLU and reflection padding, the shadows' running sums, convolutions
  to few channels, the paste of the face map); oneDNN convolutions on channels-last and
  blocked maps; bfloat16 convolutions;
* :mod:`~dfd_kit.fast.layers`: subclasses of the reference blocks that run them;
* :mod:`~dfd_kit.fast.shadows`: the shadows' shared affine tail;
* :mod:`~dfd_kit.fast.compact`: each checkpoint converted once into memory-mapped ``.npy``
  files (loads in milliseconds);
* :mod:`~dfd_kit.fast.mapped`: the official model's huge linear layers left in those files;
* :mod:`~dfd_kit.fast.precision`: bfloat16 convolutions on CPUs that compute them natively.

``dfd_kit.load(..., fast=True)``, the default, runs it; ``fast=False`` runs the reference
model. :func:`accelerate` turns a reference network into the fast one in place (same
parameters, same checkpoint); :func:`available` says whether the kernels compile here, and
where they do not the kit runs the reference path after one warning.
"""
from __future__ import annotations

import warnings


class FastPathWarning(UserWarning):
    """dfd_kit's fast kernels do not compile here; the reference path runs instead."""


_AVAILABLE: list = []   # [bool] once known


def available() -> bool:
    """True where the fast kernels compile and agree with the reference ops: a small
    normalisation, checked once per process. Where not (no compiler for Jittor's custom
    kernels, no OpenMP): warn once and return False."""
    if not _AVAILABLE:
        import jittor as jt
        import numpy as np

        ok, why = True, ""
        try:
            from . import kernels

            x = jt.array(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
            with jt.no_grad():
                mean, var = kernels.moments(x)
                got = kernels.normalize(x, mean, 1 / jt.sqrt(var + 1e-5), jt.zeros(3), relu=True, pad=1).numpy()
            a = x.numpy().astype(np.float64)
            m, v = a.mean((2, 3), keepdims=True), a.var((2, 3), keepdims=True)
            want = np.pad(np.maximum((a - m) / np.sqrt(v + 1e-5), 0), ((0, 0), (0, 0), (1, 1), (1, 1)), "reflect")
            if not np.allclose(got, want, atol=1e-4):
                ok, why = False, "a test normalisation gave wrong numbers"
        except Exception as e:   # Jittor reports a failed compile as RuntimeError
            from ..backend import error_summary

            ok, why = False, error_summary(e)
        if not ok:
            warnings.warn(f"dfd_kit: its fast CPU kernels do not work here ({why}); running the reference "
                          "path instead (the same images, slower).", FastPathWarning, stacklevel=3)
        _AVAILABLE.append(ok)
    return _AVAILABLE[0]


def accelerate(net):
    """Turn ``net``'s reference blocks into their fast subclasses, in place, and return it.
    Parameters, their names and the results stay the same; with gradients on the fast blocks
    compute what the reference ones do, so an accelerated network still trains."""
    from .layers import (FastConvNormReLU, FastDown, FastNorm2d, FastReflectPad, FastResnetBlock, FastStage,
                         FastUp, NarrowConv)
    from .shadows import FastLatentDecoder
    from ..embedding import LatentDecoder
    from ..layers import Down, Norm2d, ResnetBlock, Stage, Up
    from ..synthesis import ConvNormReLU

    swap = {Norm2d: FastNorm2d, ResnetBlock: FastResnetBlock, Down: FastDown, Up: FastUp, Stage: FastStage,
            ConvNormReLU: FastConvNormReLU, LatentDecoder: FastLatentDecoder}
    for m in net.modules():
        if type(m) in swap:
            m.__class__ = swap[type(m)]
        elif NarrowConv.fits(m):
            m.__class__ = NarrowConv
        elif FastReflectPad.fits(m):
            m.__class__ = FastReflectPad
    return net


def paste_feature_maps(maps, layout):
    """:func:`dfd_kit.mapping.paste_feature_maps`, at inference on the CPU in one pass
    instead of four padded copies and masked sums."""
    import jittor as jt

    from ..mapping import paste_feature_maps as reference, paste_owner
    from . import kernels

    if kernels.inference_on_cpu() and maps["remainder"].dtype == "float32" and len(layout.paste_order) == 4:
        owner, corners = paste_owner(layout)
        return kernels.paste(maps["remainder"], [maps[c] for c in layout.paste_order],
                             jt.array(owner), jt.array(corners))
    return reference(maps, layout)


__all__ = ["FastPathWarning", "available", "accelerate", "paste_feature_maps"]
