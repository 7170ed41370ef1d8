"""Fused inference kernels for the CPU: normalisation, activation, residual and padding in
one pass over memory, on every core.

Why: on the CPU Jittor runs its elementwise kernels on one thread, and a residual block
becomes several of them (the statistics, the normalisation, the ReLU, the reflection pad),
each a full pass over a map that at 512 x 512 x 64 is 64 MB. Between the convolutions,
which oneDNN runs on all cores, one core sat idle for a fifth of a full-size generation
(bench/README.md). The kernels here do the same arithmetic in one or two passes, in
parallel over the (sample, channel) planes (OpenMP; Jittor compiles custom kernels with
-fopenmp).

They serve inference only: they have no gradient. :func:`enabled` is true inside
``jt.no_grad()`` on the CPU; during training, and on CUDA, every function here composes
Jittor's own differentiable ops instead, so callers have one code path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import jittor as jt
from jittor import nn


def enabled() -> bool:
    """True where the fused kernels apply: no gradients wanted, running on the CPU."""
    return bool(jt.flags.no_grad) and not jt.flags.use_cuda


def _applies(x: jt.Var) -> bool:
    return enabled() and x.dtype == "float32"   # the kernels are written for float32


def spatial_mean(x: jt.Var) -> jt.Var:
    """(N, C, H, W) -> (N, C, 1, 1): the mean over H x W, as a matrix-vector product.

    Jittor's own reductions run on one thread on the CPU; oneDNN's sgemm uses them all
    and sums in blocks: a 64 x 512 x 512 map takes 3 ms instead of 16 (bench/README.md).
    """
    n, c, h, w = x.shape
    ones = jt.full((h * w, 1), 1.0 / (h * w), x.dtype)
    return nn.matmul(x.reshape(n * c, h * w), ones).reshape(n, c, 1, 1)


# Reflection of an index into [0, n): -1 -> 1, n -> n - 2 (the edge is not repeated).
_REFLECT = "static inline int reflect(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i); }"

_PAD_SRC = """
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const int OH = out0_shape2, OW = out0_shape3, p = (OH - H) / 2;
    #pragma omp parallel for schedule(static)
    for (int nc = 0; nc < N * C; nc++) {
        const float* src = in0_p + (size_t)nc * H * W;
        float* dst = out0_p + (size_t)nc * OH * OW;
        for (int y = 0; y < OH; y++) {
            const float* s = src + (size_t)reflect(y - p, H) * W;
            float* d = dst + (size_t)y * OW;
            for (int x = 0; x < p; x++) d[x] = s[p - x];
            for (int x = 0; x < W; x++) d[p + x] = s[x];
            for (int x = 0; x < p; x++) d[p + W + x] = s[W - 2 - x];
        }
    }
"""


def reflect_pad(x: jt.Var, p: int) -> jt.Var:
    """Reflection padding by ``p`` pixels on each side of an (N, C, H, W) map."""
    if p == 0:
        return x
    if not _applies(x):
        return nn.ReflectionPad2d(p)(x)
    n, c, h, w = x.shape
    assert h > p and w > p, f"reflection padding {p} needs maps larger than that, got {h} x {w}"
    return jt.code((n, c, h + 2 * p, w + 2 * p), x.dtype, [x], cpu_header=_REFLECT, cpu_src=_PAD_SRC)


_MOMENTS_SRC = """
    const int NC = in0_shape0 * in0_shape1;
    const size_t HW = (size_t)in0_shape2 * in0_shape3;
    #pragma omp parallel for schedule(static)
    for (int nc = 0; nc < NC; nc++) {
        const float* s = in0_p + (size_t)nc * HW;
        double sum = 0;
        for (size_t i = 0; i < HW; i++) sum += s[i];
        const double mean = sum / HW;
        double sq = 0;   // two passes, as the reference computes mean((x - mean)^2)
        for (size_t i = 0; i < HW; i++) { const double d = s[i] - mean; sq += d * d; }
        out0_p[nc] = (float)mean;
        out1_p[nc] = (float)(sq / HW);
    }
"""


def moments(x: jt.Var) -> Tuple[jt.Var, jt.Var]:
    """Per-sample, per-channel mean and (biased) variance over H x W, each (N, C, 1, 1)."""
    n, c = x.shape[:2]
    if not _applies(x):
        mean = spatial_mean(x)
        return mean, spatial_mean((x - mean) ** 2)
    mean, var = jt.code([(n, c), (n, c)], [x.dtype, x.dtype], [x], cpu_src=_MOMENTS_SRC)
    return mean.reshape(n, c, 1, 1), var.reshape(n, c, 1, 1)


def _norm_src(relu: bool, residual: bool) -> str:
    # in0: x (N, C, H, W); in1: mean, in2: scale (N, C); in3: bias (C); in4: residual.
    value = "(s[x] - m) * k + b" + (" + r[x]" if residual else "")
    store = "v > 0.f ? v : 0.f" if relu else "v"
    return f"""
    const int C = in0_shape1, H = in0_shape2, W = in0_shape3, NC = in0_shape0 * in0_shape1;
    const int OH = out0_shape2, OW = out0_shape3, p = (OH - H) / 2;
    #pragma omp parallel for schedule(static)
    for (int nc = 0; nc < NC; nc++) {{
        const float m = in1_p[nc], k = in2_p[nc], b = in3_p[nc % C];
        float* dst = out0_p + (size_t)nc * OH * OW;
        // rows of the map itself, then the padding copied from them
        for (int y = 0; y < H; y++) {{
            const float* s = in0_p + ((size_t)nc * H + y) * W;
            {"const float* r = in4_p + ((size_t)nc * H + y) * W;" if residual else ""}
            float* d = dst + (size_t)(y + p) * OW + p;
            for (int x = 0; x < W; x++) {{ const float v = {value}; d[x] = {store}; }}
            for (int x = 1; x <= p; x++) {{ d[-x] = d[x]; d[W - 1 + x] = d[W - 1 - x]; }}
        }}
        for (int y = 1; y <= p; y++) {{
            std::copy_n(dst + (size_t)(p + y) * OW, OW, dst + (size_t)(p - y) * OW);
            std::copy_n(dst + (size_t)(p + H - 1 - y) * OW, OW, dst + (size_t)(p + H - 1 + y) * OW);
        }}
    }}
"""


_NORM_SRC = {(relu, res): _norm_src(relu, res) for relu in (False, True) for res in (False, True)}


def normalize(x: jt.Var, mean: jt.Var, scale: jt.Var, bias: jt.Var, relu: bool = False,
              residual: Optional[jt.Var] = None, pad: int = 0) -> jt.Var:
    """reflect_pad(act((x - mean) * scale + bias + residual), pad) in one pass.

    x: (N, C, H, W); mean and scale: (N or 1, C, 1, 1); bias: (C,). ``relu`` applies after
    the residual is added (no block here does otherwise).
    """
    if not _applies(x):
        y = (x - mean) * scale + bias.reshape(1, -1, 1, 1)
        if residual is not None:
            y = y + residual
        return reflect_pad(nn.relu(y) if relu else y, pad)
    n, c, h, w = x.shape
    assert h > pad and w > pad, f"reflection padding {pad} needs maps larger than that, got {h} x {w}"
    mean = mean.broadcast((n, c, 1, 1)).reshape(n, c)
    scale = scale.broadcast((n, c, 1, 1)).reshape(n, c)
    inputs = [x, mean, scale, bias] + ([residual] if residual is not None else [])
    return jt.code((n, c, h + 2 * pad, w + 2 * pad), x.dtype, inputs,
                   cpu_header=_REFLECT + "\n#include <algorithm>",
                   cpu_src=_NORM_SRC[(relu, residual is not None)])


__all__ = ["enabled", "spatial_mean", "reflect_pad", "moments", "normalize"]
