"""Fused inference kernels for the CPU: normalisation, activation, residual and padding in
one pass over memory, on every core.

Why: on the CPU Jittor runs its elementwise kernels on one thread, and a residual block
becomes several of them (the statistics, the normalisation, the ReLU, the reflection pad),
each a full pass over a map that at 512 x 512 x 64 is 64 MB. Between the convolutions,
which oneDNN runs on all cores, one core sat idle for a fifth of a full-size generation
(bench/README.md). The kernels here do the same arithmetic in one or two passes, in
parallel over the (sample, channel) planes (OpenMP; Jittor compiles custom kernels with
-fopenmp). Two more: the shadows' running weighted sums (:func:`accumulate`), and
convolutions to one or three output channels (:func:`narrow_conv`), which oneDNN
computes in blocks of 8 channels.

They serve inference only: they have no gradient. :func:`enabled` is true inside
``jt.no_grad()`` on the CPU; during training, and on CUDA, every function here composes
Jittor's own differentiable ops instead (:func:`narrow_conv` returns None and its caller
runs Jittor's convolution), so callers have one code path.
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
                   cpu_header="#include <algorithm>",
                   cpu_src=_NORM_SRC[(relu, residual is not None)])


def reflect_pad(x: jt.Var, p: int) -> jt.Var:
    """Reflection padding by ``p`` pixels on each side of an (N, C, H, W) map: the
    normalisation kernel with the identity transform, so the reflection is written once."""
    if p == 0:
        return x
    if not _applies(x):
        return nn.ReflectionPad2d(p)(x)
    n, c = x.shape[:2]
    zero, one = jt.zeros((n, c, 1, 1), x.dtype), jt.ones((n, c, 1, 1), x.dtype)
    return normalize(x, zero, one, jt.zeros((c,), x.dtype), pad=p)


_WEIGHTED_SUM_SRC = """
    // in0: a (B,), in1: x (B, ...), in2: acc (1, ...) optional; out0 = acc + sum_b a[b] * x[b]
    const int B = in1_shape0;
    const size_t n = (size_t)in1->num / B;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = %s;
        for (int b = 0; b < B; b++) v += in0_p[b] * in1_p[(size_t)b * n + i];
        out0_p[i] = v;
    }
"""


def accumulate(acc: Optional[jt.Var], x: jt.Var, a: jt.Var) -> jt.Var:
    """acc + sum_b a[b] * x[b] -> (1, ...): x (B, ...) weighted by ``a`` (B,) and summed over
    the batch (``acc`` None: no running sum yet). The shadows' running weighted sums, in one
    pass on every core; ``a`` is a Var, so new weights compile no new kernel."""
    if not _applies(x):
        y = (x * a.reshape((-1,) + (1,) * (x.ndim - 1))).sum(0, keepdims=True)
        return y if acc is None else acc + y
    inputs = [a, x] + ([acc] if acc is not None else [])
    return jt.code((1,) + tuple(x.shape[1:]), x.dtype, inputs,
                   cpu_src=_WEIGHTED_SUM_SRC % ("in2_p[i]" if acc is not None else "0.f"))


#: Output channels up to which :func:`narrow_conv` is used: oneDNN computes output channels
#: in blocks of 8 or 16, so a 1- or 3-channel output conv wastes most of its work.
NARROW_CONV_MAX_OUT = 4

_NARROW_CONV_HEADER = """
#include <algorithm>
#include <cstring>
#ifdef __AVX512F__
typedef float vec __attribute__((vector_size(64)));
#else
typedef float vec __attribute__((vector_size(32)));
#endif
static inline vec load_vec(const float* p) { vec v; std::memcpy(&v, p, sizeof(vec)); return v; }
"""

_NARROW_CONV_SRC = """
    // in0: x (N, C, H, W), already padded; in1: w (O, C, KH, KW); in2: b (O); stride 1.
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const int KH = in1_shape2, KW = in1_shape3, OH = out0_shape2, OW = out0_shape3;
    constexpr int O = %d, L = sizeof(vec) / sizeof(float), V = 32 / L, T = V * L;   // 32 pixels
    const size_t wo = (size_t)C * KH * KW;
    // Each task: one output row of one sample; T pixels x O channels of accumulators stay
    // in vector registers while every input channel and kernel tap streams past.
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int y = 0; y < OH; y++) {
        for (int x0 = 0; x0 < OW; x0 += T) {
            float* dst[O];
            for (int o = 0; o < O; o++) dst[o] = out0_p + (((size_t)n * O + o) * OH + y) * OW + x0;
            if (x0 + T + KW - 1 > W) {   // the last pixels of a row: plain loops, no reads past it
                for (int o = 0; o < O; o++)
                    for (int i = 0; x0 + i < OW; i++) {
                        float v = in2_p[o];
                        for (int c = 0; c < C; c++)
                            for (int ky = 0; ky < KH; ky++)
                                for (int kx = 0; kx < KW; kx++)
                                    v += in1_p[o * wo + ((size_t)c * KH + ky) * KW + kx]
                                         * in0_p[(((size_t)n * C + c) * H + y + ky) * W + x0 + i + kx];
                        dst[o][i] = v;
                    }
                continue;
            }
            vec acc[O][V];
            #pragma GCC unroll 8
            for (int o = 0; o < O; o++)
                #pragma GCC unroll 4
                for (int v = 0; v < V; v++) acc[o][v] = vec{} + in2_p[o];
            for (int c = 0; c < C; c++)
            for (int ky = 0; ky < KH; ky++) {
                const float* row = in0_p + (((size_t)n * C + c) * H + y + ky) * W + x0;
                const float* wk = in1_p + ((size_t)c * KH + ky) * KW;
                for (int kx = 0; kx < KW; kx++) {
                    vec s[V];
                    #pragma GCC unroll 4
                    for (int v = 0; v < V; v++) s[v] = load_vec(row + kx + v * L);
                    #pragma GCC unroll 8
                    for (int o = 0; o < O; o++) {
                        const float wv = wk[o * wo + kx];
                        #pragma GCC unroll 4
                        for (int v = 0; v < V; v++) acc[o][v] += wv * s[v];
                    }
                }
            }
            for (int o = 0; o < O; o++)
                for (int v = 0; v < V; v++) std::memcpy(dst[o] + v * L, &acc[o][v], sizeof(vec));
        }
    }
"""


def narrow_conv(x: jt.Var, weight: jt.Var, bias: Optional[jt.Var]) -> Optional[jt.Var]:
    """Stride-1 unpadded convolution with at most :data:`NARROW_CONV_MAX_OUT` output
    channels, direct on every core; None where it does not apply (the caller then uses
    Jittor's convolution)."""
    o, c, kh, kw = weight.shape
    if not (_applies(x) and o <= NARROW_CONV_MAX_OUT and x.ndim == 4 and x.shape[1] == c):
        return None
    n, _, h, w = x.shape
    b = bias if bias is not None else jt.zeros((o,), x.dtype)
    return jt.code((n, o, h - kh + 1, w - kw + 1), x.dtype, [x, weight, b],
                   cpu_header=_NARROW_CONV_HEADER, cpu_src=_NARROW_CONV_SRC % o)


__all__ = ["enabled", "spatial_mean", "reflect_pad", "moments", "normalize", "accumulate", "narrow_conv"]
