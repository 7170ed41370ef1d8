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
computes in blocks of 8 channels. And a channels-last path for the residual blocks and the
upsampling before them (:func:`channels_last` and below): oneDNN convolutions called
directly on NHWC maps, with the layout changes folded into the norm passes.

They serve inference only: they have no gradient. :func:`inference_on_cpu` is true inside
``jt.no_grad()`` on the CPU; during training, and on CUDA, every function here composes
Jittor's own differentiable ops instead (:func:`narrow_conv` returns None and its caller
runs Jittor's convolution), so callers have one code path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import jittor as jt
import numpy as np
from jittor import nn


def inference_on_cpu() -> bool:
    """True where the fused kernels apply: no gradients wanted, running on the CPU."""
    return bool(jt.flags.no_grad) and not jt.flags.use_cuda


def _applies(x: jt.Var) -> bool:
    return inference_on_cpu() and x.dtype == "float32"   # the kernels are written for float32


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
    if not (_applies(x) and weight.dtype == "float32" and o <= NARROW_CONV_MAX_OUT and x.ndim == 4
            and x.shape[1] == c):
        return None
    n, _, h, w = x.shape
    b = bias if bias is not None else jt.zeros((o,), x.dtype)
    return jt.code((n, o, h - kh + 1, w - kw + 1), x.dtype, [x, weight, b],
                   cpu_header=_NARROW_CONV_HEADER, cpu_src=_NARROW_CONV_SRC % o)


_PASTE_SRC = """
    // in0: the remainder's map (N, C, H, W); in1..in4: the parts' maps (N, C, S_k, S_k) in
    // paste order; in5: owner (H, W) int32, -1 where the remainder shows, else the index of
    // the part; in6: (4, 2) int32, x and y of each part's box.
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const float* parts[4] = {in1_p, in2_p, in3_p, in4_p};
    const int sizes[4] = {(int)in1_shape2, (int)in2_shape2, (int)in3_shape2, (int)in4_shape2};
    #pragma omp parallel for schedule(static)
    for (int nc = 0; nc < N * C; nc++) {
        float* d = out0_p + (size_t)nc * H * W;
        std::copy_n(in0_p + (size_t)nc * H * W, (size_t)H * W, d);
        for (int k = 0; k < 4; k++) {   // only inside each box does a pixel change hands
            const int S = sizes[k], bx = in6_p[2 * k], by = in6_p[2 * k + 1];
            const float* src = parts[k] + (size_t)nc * S * S;
            for (int y = 0; y < S && by + y < H; y++)
                for (int x = 0; x < S && bx + x < W; x++)
                    if (in5_p[(by + y) * W + bx + x] == k) d[(size_t)(by + y) * W + bx + x] = src[y * S + x];
        }
    }
"""


def paste(remainder: jt.Var, parts, owner: jt.Var, corners: jt.Var) -> jt.Var:
    """The face map at inference, one pass on every core: where ``owner`` (H, W) int32 is
    -1 the remainder's map, where it is k the k-th of the four ``parts`` maps, whose box
    starts at ``corners[k]`` = (x, y). See :func:`dfd_kit.mapping.paste_feature_maps`."""
    assert len(parts) == 4, "four parts are pasted into the remainder"
    return jt.code(remainder.shape, remainder.dtype, [remainder, *parts, owner, corners],
                   cpu_header="#include <algorithm>", cpu_src=_PASTE_SRC)


# --------------------------------------------------------------------------- channels last
# oneDNN's fastest CPU convolutions (brgconv) want channels-last (NHWC) maps. Handed
# NCHW maps, Jittor's convolution has oneDNN transpose the input to NHWC and the output
# back on every call, and copies the output once more: for a 32 x 512 x 512 map 6-7 ms of
# a 21 ms convolution (bench/README.md). Inside a residual block the maps therefore stay
# channels last: the padding that precedes the first conv writes NHWC, the norms read and
# write NHWC, and the block's last norm, which adds the residual, writes NCHW again. The
# transposes ride on passes over memory that happen anyway.

def channels_last() -> bool:
    """True where the channels-last convolutions apply: the fused kernels do, and Jittor has
    oneDNN (:mod:`dfd_kit.backend` links a oneDNN 2) which these kernels compile against."""
    return inference_on_cpu() and _onednn_kernels_compile()


_ONEDNN_KERNELS: list = []   # [bool] once known


def _onednn_kernels_compile() -> bool:
    """Jittor's oneDNN operators loaded, and a small :func:`conv_nhwc` (the kernel a
    generation compiles first anyway) compiled and ran. Where it did not, warn once and
    keep to the plain path (Jittor's convolutions), as where oneDNN is off."""
    if not _ONEDNN_KERNELS:
        from jittor import compile_extern

        ok = getattr(compile_extern, "mkl_ops", None) is not None
        if ok:
            try:
                conv_nhwc(jt.ones((1, 3, 3, 8)), jt.ones((8, 8, 3, 3))).sync()
            except Exception as e:   # Jittor reports a failed compile as RuntimeError
                from ..backend import error_summary, warn_once

                ok = False
                warn_once(f"dfd_kit: its channels-last oneDNN kernels did not compile ({error_summary(e)}); "
                          "the residual blocks run Jittor's oneDNN convolutions instead (a little slower).")
        _ONEDNN_KERNELS.append(ok)
    return _ONEDNN_KERNELS[0]


def _onednn_headers():
    """Compile options that put the oneDNN Jittor uses before any other on the include path
    (a system oneDNN 3 in /usr/include would not compile here)."""
    from ..backend import info

    include = info.get("onednn_include")
    return jt.flag_scope(compile_options={f'FLAGS: -I"{include}" ': 1} if include else {})


_TO_NHWC_SRC = """
    // in0: x (N, C, H, W); out0: (N, H + 2p, W + 2p, C), reflection-padded
    const int N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const int OH = out0_shape1, OW = out0_shape2, p = (OH - H) / 2;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int oy = 0; oy < OH; oy++) {
        const int y = oy < p ? p - oy : (oy - p >= H ? 2 * (H - 1) - (oy - p) : oy - p);
        float* d = out0_p + ((size_t)n * OH + oy) * OW * C;
        const float* src = in0_p + ((size_t)n * C * H + y) * W;
        // 32 pixels at a time: their C-float output block stays in L1 while every
        // channel's row contributes 32 contiguous floats to it
        for (int x0 = 0; x0 < W; x0 += 32) {
            const int nx = std::min(32, W - x0);
            float* blk = d + (size_t)(p + x0) * C;
            for (int c = 0; c < C; c++) {
                const float* s = src + (size_t)c * H * W + x0;
                for (int i = 0; i < nx; i++) blk[(size_t)i * C + c] = s[i];
            }
        }
        for (int x = 1; x <= p; x++) {
            std::copy_n(d + (size_t)(p + x) * C, C, d + (size_t)(p - x) * C);
            std::copy_n(d + (size_t)(p + W - 1 - x) * C, C, d + (size_t)(p + W - 1 + x) * C);
        }
    }
"""


def to_nhwc(x: jt.Var, pad: int = 0) -> jt.Var:
    """(N, C, H, W) -> reflection-padded channels-last (N, H + 2 pad, W + 2 pad, C), one pass."""
    n, c, h, w = x.shape
    assert h > pad and w > pad, f"reflection padding {pad} needs maps larger than that, got {h} x {w}"
    return jt.code((n, h + 2 * pad, w + 2 * pad, c), x.dtype, [x],
                   cpu_header="#include <algorithm>", cpu_src=_TO_NHWC_SRC)


def reflect_pad_nhwc(x: jt.Var, p: int) -> jt.Var:
    """Reflection padding of a channels-last map (N, H, W, C) by ``p`` pixels."""
    n, h, w, c = x.shape
    zero, one = jt.zeros((n, c, 1, 1), x.dtype), jt.ones((n, c, 1, 1), x.dtype)
    return normalize_nhwc(x, zero, one, jt.zeros((c,), x.dtype), pad=p)


_CONV_NHWC_HEADER = """
#include <dnnl.hpp>
// Run a oneDNN (de)convolution on the caller's buffers: the weights reordered to the layout
// the primitive chose, the source and destination too where it chose another than theirs.
template <class Primitive>
static void dfd_execute(const typename Primitive::primitive_desc& pd, const dnnl::engine& eng,
                        const dnnl::memory::desc& src, void* x, const dnnl::memory::desc& wts, void* w,
                        const dnnl::memory::desc& dst, void* y) {
    using namespace dnnl;
    stream strm(eng);
    memory x_mem(src, eng, x), w_mem(wts, eng, w), y_mem(dst, eng, y);
    memory x_use = x_mem, w_use = w_mem, y_use = y_mem;
    if (pd.weights_desc() != wts) {
        w_use = memory(pd.weights_desc(), eng);
        reorder(w_mem, w_use).execute(strm, w_mem, w_use);
    }
    if (pd.src_desc() != src) {
        x_use = memory(pd.src_desc(), eng);
        reorder(x_mem, x_use).execute(strm, x_mem, x_use);
    }
    if (pd.dst_desc() != dst) y_use = memory(pd.dst_desc(), eng);
    Primitive(pd).execute(strm, {{DNNL_ARG_SRC, x_use}, {DNNL_ARG_WEIGHTS, w_use}, {DNNL_ARG_DST, y_use}});
    if (pd.dst_desc() != dst) reorder(y_use, y_mem).execute(strm, y_use, y_mem);
    strm.wait();
}
"""

_CONV_NHWC_SRC = """
    // in0: x (N, H, W, C) channels last, already padded; in1: w (O, C, KH, KW);
    // out0: (N, OH, OW, O) channels last. Stride 1, no bias (the norm after it takes it).
    using namespace dnnl;
    using tag = memory::format_tag;
    static engine eng(engine::kind::cpu, 0);
    const memory::dim N = in0_shape0, H = in0_shape1, W = in0_shape2, C = in0_shape3;
    const memory::dim O = in1_shape0, KH = in1_shape2, KW = in1_shape3;
    const memory::dim OH = out0_shape1, OW = out0_shape2;
    const auto f32 = memory::data_type::f32;
    memory::desc src({N, C, H, W}, f32, tag::nhwc), dst({N, O, OH, OW}, f32, tag::nhwc);
    memory::desc wts({O, C, KH, KW}, f32, tag::oihw), wts_any({O, C, KH, KW}, f32, tag::any);
    // oneDNN caches the primitive, so building it per call costs microseconds
    auto pd = convolution_forward::primitive_desc(
        convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct,
                                  src, wts_any, dst, {1, 1}, {0, 0}, {0, 0}), eng);
    dfd_execute<convolution_forward>(pd, eng, src, in0_p, wts, in1_p, dst, out0_p);
"""


def conv_nhwc(x: jt.Var, weight: jt.Var) -> jt.Var:
    """Stride-1 unpadded convolution without bias of a channels-last map:
    x (N, H, W, C), weight (O, C, KH, KW) -> (N, H - KH + 1, W - KW + 1, O), channels last."""
    n, h, w, c = x.shape
    o, wc, kh, kw = weight.shape
    assert wc == c, f"a {wc}-channel convolution got a {c}-channel map"
    if reduced(weight):   # converted to bfloat16 (see "reduced precision" below)
        return reduced_conv(x, weight, nhwc_in=True, nhwc_out=True)
    with _onednn_headers():
        return jt.code((n, h - kh + 1, w - kw + 1, o), x.dtype, [x, weight],
                       cpu_header=_CONV_NHWC_HEADER, cpu_src=_CONV_NHWC_SRC)


_UP_NHWC_SRC = """
    // in0: x (N, C, H, W); in1: w (C, O, KH, KW), Jittor's ConvTranspose layout;
    // out0: (N, OH, OW, O) channels last, or where O is a multiple of 16 (N, O/16, OH, OW, 16),
    // the blocked layout oneDNN's fast transposed convolution writes (no reorder at all).
    // Stride 2, padding 1, no bias.
    using namespace dnnl;
    using tag = memory::format_tag;
    static engine eng(engine::kind::cpu, 0);
    const memory::dim N = in0_shape0, C = in0_shape1, H = in0_shape2, W = in0_shape3;
    const memory::dim O = in1_shape1, KH = in1_shape2, KW = in1_shape3;
    const memory::dim OH = DST_H, OW = DST_W;
    const auto f32 = memory::data_type::f32;
    memory::desc src({N, C, H, W}, f32, tag::nchw), dst({N, O, OH, OW}, f32, DST_TAG);
    memory::desc wts({O, C, KH, KW}, f32, tag::iohw);
    memory::desc src_any({N, C, H, W}, f32, tag::any), dst_any({N, O, OH, OW}, f32, tag::any),
                 wts_any({O, C, KH, KW}, f32, tag::any);
    auto pd = deconvolution_forward::primitive_desc(
        deconvolution_forward::desc(prop_kind::forward_inference, algorithm::deconvolution_direct,
                                    src_any, wts_any, dst_any, {2, 2}, {1, 1}, {1, 1}), eng);
    dfd_execute<deconvolution_forward>(pd, eng, src, in0_p, wts, in1_p, dst, out0_p);
"""


def upsample_nhwc(x: jt.Var, weight: jt.Var) -> jt.Var:
    """The auto-encoders' transposed convolution (4x4, stride 2, padding 1, no bias) of an
    NCHW map x (N, C, H, W), weight (C, O, 4, 4) as Jittor stores it -> channels last
    (N, 2H, 2W, O), or where O is a multiple of 16 blocked (N, O/16, 2H, 2W, 16): the layout
    oneDNN computes in, which :func:`normalize_blocked` turns into channels last in the pass
    it makes anyway (a reorder of its own cost 3.5 ms a row at 32 x 512 x 512)."""
    n, c, h, w = x.shape
    wc, o, kh, kw = weight.shape
    assert wc == c and (kh, kw) == (4, 4), f"expected a ({c}, O, 4, 4) weight, got {weight.shape}"
    if reduced(weight):   # bfloat16: oneDNN's kernel writes channels last itself (no blocked layout)
        return reduced_conv(x, weight, transposed=True, stride=(2, 2), padding=(1, 1), nhwc_out=True)
    blocked = o % 16 == 0
    shape = (n, o // 16, 2 * h, 2 * w, 16) if blocked else (n, 2 * h, 2 * w, o)
    src = _UP_NHWC_SRC.replace("DST_TAG", "tag::nChw16c" if blocked else "tag::nhwc")
    src = src.replace("DST_H", "out0_shape2" if blocked else "out0_shape1")
    src = src.replace("DST_W", "out0_shape3" if blocked else "out0_shape2")
    with _onednn_headers():
        return jt.code(shape, x.dtype, [x, weight], cpu_header=_CONV_NHWC_HEADER, cpu_src=src)


_NORM_BLOCKED_SRC = """
    // in0: y (N, C/16, H, W, 16); in1: mean, in2: scale (N, C); in3: bias (C);
    // out0: (N, H + 2p, W + 2p, C) channels last, reflection-padded
    const int N = in0_shape0, CB = in0_shape1, H = in0_shape2, W = in0_shape3, C = CB * 16;
    const int OH = out0_shape1, OW = out0_shape2, p = (OH - H) / 2;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int y = 0; y < H; y++) {
        float* d = out0_p + (((size_t)n * OH + y + p) * OW + p) * C;
        for (int cb = 0; cb < CB; cb++) {   // 16 channels' rows, 64 contiguous bytes a pixel
            const float* s = in0_p + (((size_t)n * CB + cb) * H + y) * W * 16;
            const float* m = in1_p + (size_t)n * C + cb * 16, * k = in2_p + (size_t)n * C + cb * 16;
            const float* b = in3_p + cb * 16;
            for (int x = 0; x < W; x++)
                for (int j = 0; j < 16; j++) d[(size_t)x * C + cb * 16 + j] = (s[x * 16 + j] - m[j]) * k[j] + b[j];
        }
        for (int x = 1; x <= p; x++) {
            std::copy_n(d + (size_t)x * C, C, d - (size_t)x * C);
            std::copy_n(d + (size_t)(W - 1 - x) * C, C, d + (size_t)(W - 1 + x) * C);
        }
    }
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int y = 1; y <= p; y++) {
        float* img = out0_p + (size_t)n * OH * OW * C;
        std::copy_n(img + (size_t)(p + y) * OW * C, (size_t)OW * C, img + (size_t)(p - y) * OW * C);
        std::copy_n(img + (size_t)(p + H - 1 - y) * OW * C, (size_t)OW * C, img + (size_t)(p + H - 1 + y) * OW * C);
    }
"""


def normalize_blocked(y: jt.Var, mean: jt.Var, scale: jt.Var, bias: jt.Var, pad: int = 0) -> jt.Var:
    """(y - mean) * scale + bias of a blocked map y (N, C/16, H, W, 16) -> channels last
    (N, H + 2 pad, W + 2 pad, C), reflection-padded; mean, scale (N or 1, C, 1, 1)."""
    n, cb, h, w, _ = y.shape
    c = cb * 16
    assert h > pad and w > pad, f"reflection padding {pad} needs maps larger than that, got {h} x {w}"
    mean = mean.broadcast((n, c, 1, 1)).reshape(n, c)
    scale = scale.broadcast((n, c, 1, 1)).reshape(n, c)
    return jt.code((n, h + 2 * pad, w + 2 * pad, c), y.dtype, [y, mean, scale, bias],
                   cpu_header="#include <algorithm>", cpu_src=_NORM_BLOCKED_SRC)


def moments_blocked(y: jt.Var) -> Tuple[jt.Var, jt.Var]:
    """:func:`moments` of a blocked map (N, C/16, H, W, 16): each (N, C, 1, 1)."""
    n, cb, h, w, _ = y.shape
    mean, var = moments_nhwc(y.reshape(n * cb, h, w, 16))   # each 16-channel block is an NHWC map
    return mean.reshape(n, cb * 16, 1, 1), var.reshape(n, cb * 16, 1, 1)


_MOMENTS_NHWC_SRC = """
    // in0: x (N, H, W, C); out0 mean, out1 biased variance (N, C). One pass of sums and
    // sums of squares in double: the cancellation in E[x^2] - E[x]^2 loses about
    // 1e-16 x mean^2 / var, far below float precision for any activation here.
    const int N = in0_shape0, C = in0_shape3;
    const size_t HW = (size_t)in0_shape1 * in0_shape2;
    const int T = omp_get_max_threads();
    std::vector<double> part((size_t)T * 2 * C);
    constexpr int B = 8, TILE = 256;   // 8 channels' sums in registers, over a tile of pixels in L2
    for (int n = 0; n < N; n++) {
        const float* x = in0_p + (size_t)n * HW * C;
        std::fill(part.begin(), part.end(), 0.0);
        #pragma omp parallel
        {
            double* sum = part.data() + (size_t)omp_get_thread_num() * 2 * C;
            double* sq = sum + C;
            #pragma omp for schedule(static)
            for (size_t t0 = 0; t0 < HW; t0 += TILE) {
                const size_t t1 = std::min(HW, t0 + TILE);
                int c0 = 0;
                for (; c0 + B <= C; c0 += B) {
                    double s[B] = {0}, q[B] = {0};
                    for (size_t i = t0; i < t1; i++) {
                        const float* v = x + i * C + c0;
                        #pragma GCC unroll 8
                        for (int j = 0; j < B; j++) { const double d = v[j]; s[j] += d; q[j] += d * d; }
                    }
                    for (int j = 0; j < B; j++) { sum[c0 + j] += s[j]; sq[c0 + j] += q[j]; }
                }
                for (int c = c0; c < C; c++)
                    for (size_t i = t0; i < t1; i++) { const double d = x[i * C + c]; sum[c] += d; sq[c] += d * d; }
            }
        }
        for (int c = 0; c < C; c++) {
            double sum = 0, sq = 0;
            for (int t = 0; t < T; t++) { sum += part[(size_t)t * 2 * C + c]; sq += part[(size_t)t * 2 * C + C + c]; }
            const double mean = sum / HW;
            out0_p[(size_t)n * C + c] = (float)mean;
            out1_p[(size_t)n * C + c] = (float)std::max(sq / HW - mean * mean, 0.0);
        }
    }
"""


def moments_nhwc(x: jt.Var) -> Tuple[jt.Var, jt.Var]:
    """:func:`moments` of a channels-last map (N, H, W, C): each (N, C, 1, 1)."""
    n, c = x.shape[0], x.shape[3]
    mean, var = jt.code([(n, c), (n, c)], [x.dtype, x.dtype], [x],
                        cpu_header="#include <omp.h>\n#include <vector>\n#include <algorithm>",
                        cpu_src=_MOMENTS_NHWC_SRC)
    return mean.reshape(n, c, 1, 1), var.reshape(n, c, 1, 1)


def _norm_nhwc_src(relu: bool, residual: Optional[str], nchw_out: bool, accumulate: bool) -> str:
    # in0: y (N, H, W, C); in1: mean, in2: scale (N, C); in3: bias (C); then the residual
    # ("nchw": (N, C, H, W); "nhwc": (N, H + 2 rp, W + 2 rp, C), padded by rp), or the
    # running sum (1, H, W, C) and its weights (N,).
    act = "v = v > 0.f ? v : 0.f;" if relu else ""
    if nchw_out:   # (N, C, H, W), no padding: the end of a residual block
        res = {None: "", "nchw": "v += r[x];", "nhwc": "v += r[(size_t)x * C];"}[residual]
        r = {None: "",
             "nchw": "const float* r = in4_p + o;",
             "nhwc": "const float* r = in4_p + (((size_t)n * RH + y + rp) * RW + rp) * C + c;"}[residual]
        return f"""
    const int N = in0_shape0, H = in0_shape1, W = in0_shape2, C = in0_shape3;
    {"const int RH = in4_shape1, RW = in4_shape2, rp = (RH - H) / 2;" if residual == "nhwc" else ""}
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int y = 0; y < H; y++) {{
        const float* row = in0_p + ((size_t)n * H + y) * W * C;
        // channel by channel, whole rows of the output at a time (measured faster than
        // small blocks of pixels, which write to C planes at once)
        for (int c = 0; c < C; c++) {{
            const float m = in1_p[n * C + c], k = in2_p[n * C + c], b = in3_p[c];
            const float* s = row + c;
            const size_t o = (((size_t)n * C + c) * H + y) * W;
            float* d = out0_p + o;
            {r}
            for (int x = 0; x < W; x++) {{ float v = (s[(size_t)x * C] - m) * k + b; {res} {act} d[x] = v; }}
        }}
    }}
"""
    if accumulate:   # (1, H, W, C) = acc + sum_b a[b] * result[b]
        return f"""
    const int B = in0_shape0, H = in0_shape1, W = in0_shape2, C = in0_shape3;
    const size_t row = (size_t)W * C;
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {{
        float* d = out0_p + (size_t)y * row;
        std::copy_n(in4_p + (size_t)y * row, row, d);
        for (int bi = 0; bi < B; bi++) {{
            const float a = in5_p[bi];
            const float* m = in1_p + (size_t)bi * C, * k = in2_p + (size_t)bi * C, * b = in3_p;
            const float* s = in0_p + ((size_t)bi * H + y) * row;
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {{ float v = (s[x * C + c] - m[c]) * k[c] + b[c]; {act} d[x * C + c] += a * v; }}
        }}
    }}
"""
    return f"""
    const int N = in0_shape0, H = in0_shape1, W = in0_shape2, C = in0_shape3;
    const int OH = out0_shape1, OW = out0_shape2, p = (OH - H) / 2;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int y = 0; y < H; y++) {{
        const float* m = in1_p + (size_t)n * C, * k = in2_p + (size_t)n * C, * b = in3_p;
        const float* s = in0_p + ((size_t)n * H + y) * W * C;
        const size_t o = (((size_t)n * OH + y + p) * OW + p) * C;
        float* d = out0_p + o;
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) {{ float v = (s[x * C + c] - m[c]) * k[c] + b[c]; {act} d[x * C + c] = v; }}
        for (int x = 1; x <= p; x++) {{
            std::copy_n(d + (size_t)x * C, C, d - (size_t)x * C);
            std::copy_n(d + (size_t)(W - 1 - x) * C, C, d + (size_t)(W - 1 + x) * C);
        }}
    }}
    // the padding rows, copied from the rows above once those are written
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
    for (int y = 1; y <= p; y++) {{
        float* img = out0_p + (size_t)n * OH * OW * C;
        std::copy_n(img + (size_t)(p + y) * OW * C, (size_t)OW * C, img + (size_t)(p - y) * OW * C);
        std::copy_n(img + (size_t)(p + H - 1 - y) * OW * C, (size_t)OW * C, img + (size_t)(p + H - 1 + y) * OW * C);
    }}
"""


def normalize_nhwc(y: jt.Var, mean: jt.Var, scale: jt.Var, bias: jt.Var, relu: bool = False,
                   residual: Optional[jt.Var] = None, pad: int = 0, nchw_out: bool = False,
                   accumulate: Optional[Tuple[Optional[jt.Var], jt.Var]] = None) -> jt.Var:
    """:func:`normalize` of a channels-last map y (N, H, W, C). The result is channels last
    and reflection-padded by ``pad``, or with ``nchw_out`` (N, C, H, W), where a
    ``residual`` may be added: (N, C, H, W), or channels last (N, H + 2 q, W + 2 q, C), the
    padded input of the block. ``accumulate=(acc, a)``: return acc + sum_n a[n] * result[n]
    instead (acc (1, H, W, C) or None for zeros, ``a`` an (N,) Var; no padding): the
    shadows' running weighted sum without a pass of its own."""
    n, h, w, c = y.shape
    assert not (residual is not None and not nchw_out), "a residual is added at a block's NCHW end"
    assert not (nchw_out and pad), "NCHW output is not padded"
    assert not (accumulate and (pad or nchw_out)), "a running sum is channels last and unpadded"
    assert h > pad and w > pad, f"reflection padding {pad} needs maps larger than that, got {h} x {w}"
    mean = mean.broadcast((n, c, 1, 1)).reshape(n, c)
    scale = scale.broadcast((n, c, 1, 1)).reshape(n, c)
    inputs, layout = [y, mean, scale, bias], None
    if residual is not None:
        inputs.append(residual)
        layout = "nchw" if tuple(residual.shape) == (n, c, h, w) else "nhwc"
        if layout == "nhwc":
            rn, rh, rw, rc = residual.shape
            assert (rn, rc) == (n, c) and rh - h == rw - w >= 0 and (rh - h) % 2 == 0, \
                f"residual {residual.shape} does not fit a {y.shape} map"
    if accumulate is not None:
        acc, a = accumulate
        if acc is None:
            acc = jt.zeros((1, h, w, c), y.dtype)
        inputs += [acc, a]
    shape = (n, c, h, w) if nchw_out else (1 if accumulate else n, h + 2 * pad, w + 2 * pad, c)
    return jt.code(shape, y.dtype, inputs, cpu_header="#include <algorithm>",
                   cpu_src=_norm_nhwc_src(relu, layout, nchw_out, accumulate is not None))


# --------------------------------------------------------------------------- reduced precision
# On CPUs with native bfloat16 arithmetic (AVX512-BF16, AMX) oneDNN computes a convolution
# with bf16 source and weights and a float32 destination several times faster than in
# float32 (bench/README.md). Only the convolutions change: their weights are converted once
# (dfd_kit.fast.precision), a map is rounded to bf16 as oneDNN reads it, and everything between
# the convolutions -- the norms' statistics, the residual sums, the activations -- stays in
# float32, where the rounding would otherwise accumulate over the generator's blocks.
# A network opts in through its weights: a convolution whose weight is a bfloat16 Var runs
# here, every other one as before.

#: The Jittor dtype of converted convolution weights.
REDUCED_DTYPE = "bfloat16"


def reduced(weight: jt.Var) -> bool:
    """True for a convolution weight converted to bfloat16 (computed by :func:`reduced_conv`)."""
    return weight.dtype == REDUCED_DTYPE


def bf16_bits(a) -> np.ndarray:
    """float32 array -> uint16 array of the bfloat16 values nearest to it (ties to even),
    as raw bits: numpy has no bfloat16 type, oneDNN and Jittor read these bits as one."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    # adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; weights are finite
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)


def from_bf16_bits(bits) -> jt.Var:
    """uint16 array of bfloat16 bits (:func:`bf16_bits`) -> a bfloat16 Var holding them."""
    bits = np.ascontiguousarray(bits, np.uint16)
    return jt.code(bits.shape, REDUCED_DTYPE, [jt.array(bits)], cpu_header="#include <cstring>",
                   cpu_src="std::memcpy(out0_p, in0_p, in0->size);")


# One oneDNN primitive per call, built from the problem's dimensions (an int32 Var, so that
# sizes compile no new kernel): N, C, H, W, O, KH, KW, OH, OW. oneDNN re-lays out the weights
# on every call. A copy kept in its layout ran the generator's 896-channel blocks 1.26x faster
# (6.0 against 7.6 ms a call; from a 4 KB boundary: Jittor's buffers are only 32-byte aligned,
# and misaligned it was slower than the re-layout), about 30 ms a generation; but it doubled
# the converted weights' memory, and the 2 GB budget has no room for that (bench/README.md).
_REDUCED_SRC = """
    // in0: x float32; in1: bf16 weights, Jittor's layout; in2: dims; out0: float32. The map
    // is rounded to bf16 by the reorder dfd_execute makes (its dtype differs from the primitive's).
    using namespace dnnl;
    using tag = memory::format_tag;
    static engine eng(engine::kind::cpu, 0);
    const int* D = in2_p;
    const memory::dim N = D[0], C = D[1], H = D[2], W = D[3], O = D[4], KH = D[5], KW = D[6], OH = D[7], OW = D[8];
    const auto f32 = memory::data_type::f32, bf16 = memory::data_type::bf16;
    auto pd = @PRIM@::primitive_desc(@PRIM@::desc(prop_kind::forward_inference, @ALG@,
        memory::desc({N, C, H, W}, bf16, @SRC_PD@), memory::desc({O, C, KH, KW}, bf16, tag::any),
        memory::desc({N, O, OH, OW}, f32, @DST_PD@), {@SH@, @SW@}, {@PT@, @PL@}, {@PB@, @PR@}), eng);
    memory::desc src({N, C, H, W}, f32, @SRC_TAG@), dst({N, O, OH, OW}, f32, @DST_TAG@),
                 wts({O, C, KH, KW}, bf16, @WTAG@);
    dfd_execute<@PRIM@>(pd, eng, src, in0_p, wts, in1_p, dst, out0_p);
"""


def _reduced_src(transposed: bool, stride, pad_l, pad_r, nhwc_in: bool, nhwc_out: bool) -> str:
    subs = {
        "PRIM": "deconvolution_forward" if transposed else "convolution_forward",
        "ALG": "algorithm::deconvolution_direct" if transposed else "algorithm::convolution_direct",
        # a channels-last map only changes type on the way in; an NCHW one goes to the
        # layout the primitive prefers (channels last, for the fast bf16 kernels)
        "SRC_PD": "tag::nhwc" if nhwc_in else "tag::any",
        "DST_PD": "tag::nhwc" if nhwc_out else "tag::any",
        "SRC_TAG": "tag::nhwc" if nhwc_in else "tag::nchw",
        "DST_TAG": "tag::nhwc" if nhwc_out else "tag::nchw",
        "WTAG": "tag::iohw" if transposed else "tag::oihw",
        "SH": str(stride[0]), "SW": str(stride[1]), "PT": str(pad_l[0]), "PL": str(pad_l[1]),
        "PB": str(pad_r[0]), "PR": str(pad_r[1]),
    }
    src = _REDUCED_SRC
    for k, v in subs.items():
        src = src.replace(f"@{k}@", v)
    assert "@" not in src, "a placeholder was left"
    return src


def reduced_conv(x: jt.Var, weight: jt.Var, transposed: bool = False, stride=(1, 1), padding=(0, 0),
                 output_padding=(0, 0), nhwc_in: bool = False, nhwc_out: bool = False) -> jt.Var:
    """A convolution (``transposed``: Jittor's ConvTranspose) with a bfloat16 weight of a
    float32 map, no bias, float32 result: oneDNN rounds the map to bf16 and accumulates in
    float32. x (N, C, H, W), or (N, H, W, C) with ``nhwc_in``; the weight (O, C, KH, KW), or
    (C, O, KH, KW) transposed; the result (N, O, OH, OW), or channels last with ``nhwc_out``.
    Symmetric zero padding; ``output_padding`` (transposed only) extends the bottom and right."""
    if nhwc_in:
        n, h, w, c = x.shape
    else:
        n, c, h, w = x.shape
    if transposed:
        wc, o, kh, kw = weight.shape
        oh = (h - 1) * stride[0] - 2 * padding[0] + kh + output_padding[0]
        ow = (w - 1) * stride[1] - 2 * padding[1] + kw + output_padding[1]
        pad_r = (padding[0] - output_padding[0], padding[1] - output_padding[1])
    else:
        o, wc, kh, kw = weight.shape
        oh = (h + 2 * padding[0] - kh) // stride[0] + 1
        ow = (w + 2 * padding[1] - kw) // stride[1] + 1
        # oneDNN wants the padding that makes the output exactly this size
        pad_r = ((oh - 1) * stride[0] + kh - h - padding[0], (ow - 1) * stride[1] + kw - w - padding[1])
    assert wc == c, f"a {wc}-channel convolution got a {c}-channel map"
    dims = jt.array(np.array((n, c, h, w, o, kh, kw, oh, ow), np.int32))
    src = _reduced_src(transposed, tuple(stride), tuple(padding), pad_r, nhwc_in, nhwc_out)
    with _onednn_headers():
        return jt.code((n, oh, ow, o) if nhwc_out else (n, o, oh, ow), "float32", [x, weight, dims],
                       cpu_header=_CONV_NHWC_HEADER, cpu_src=src)


class ReducedConv:
    """Mixed into a network's ``nn.Conv2d`` / ``nn.ConvTranspose`` (:func:`reduce_conv`) whose
    weight is bfloat16: at inference on the CPU :func:`reduced_conv`; elsewhere (training,
    CUDA, a layout oneDNN does not take here) the layer's own float32 convolution of the
    widened weight, so every caller keeps one code path."""

    def execute(self, x):
        transposed = isinstance(self, nn.ConvTranspose)
        fits = (_applies(x) and x.ndim == 4 and self.groups == 1 and tuple(self.dilation) == (1, 1)
                and (not transposed or all(p >= q for p, q in zip(self.padding, self.output_padding))))
        if not fits:
            weight = self.weight
            self.weight = weight.float32()
            try:
                return super().execute(x)
            finally:
                self.weight = weight
        y = reduced_conv(x, self.weight, transposed, self.stride, self.padding,
                         self.output_padding if transposed else (0, 0))
        return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)


_REDUCED_CLASSES: dict = {}


def reduce_conv(conv: nn.Module, bits=None) -> None:
    """Convert one convolution layer in place: its weight becomes bfloat16 (``bits``: the
    uint16 bits of it, from the converted-weights cache; else rounded from its weight now) and
    its class a subclass of its own with :class:`ReducedConv` mixed in (isinstance tests, the
    bias, stride and padding stay as they were)."""
    if bits is None:
        bits = bf16_bits(conv.weight.numpy())
    assert tuple(bits.shape) == tuple(conv.weight.shape), f"{bits.shape} bits for a {conv.weight.shape} weight"
    cls = type(conv)
    if not issubclass(cls, ReducedConv):
        if cls not in _REDUCED_CLASSES:
            _REDUCED_CLASSES[cls] = type(f"Reduced{cls.__name__}", (ReducedConv, cls), {})
        conv.__class__ = _REDUCED_CLASSES[cls]
    conv.weight = from_bf16_bits(bits)


def reducible_convs(net: nn.Module):
    """[(name, layer)] of the convolutions of ``net`` worth computing in bf16: every
    ``Conv2d`` and ``ConvTranspose`` with more output channels than :func:`narrow_conv`
    takes (those few-channel outputs have a float32 kernel of their own)."""
    return [(name, m) for name, m in net.named_modules()
            if isinstance(m, (nn.Conv, nn.ConvTranspose)) and m.out_channels > NARROW_CONV_MAX_OUT]


_REDUCED_KERNELS: list = []   # [bool] once known
_REDUCED_WARNED: list = []


def reduced_kernels_work() -> bool:
    """True where oneDNN runs every kind of bf16 convolution the networks use here: a small
    one of each (channels last, strided, transposed) compiled, ran and agreed with numpy. Where
    not -- a oneDNN without bf16 kernels for this CPU, a compile error -- warn once and return
    False: the caller stays in float32."""
    if not _REDUCED_KERNELS:
        ok, why = not jt.flags.use_cuda and _onednn_kernels_compile(), "dfd_kit's oneDNN kernels are not available"
        if ok:
            try:
                ok, why = _check_reduced_kernels()
            except Exception as e:   # Jittor reports a failed compile or a oneDNN error as RuntimeError
                ok, why = False, _reduced_error(e)
        if not ok and not _REDUCED_WARNED:
            import warnings

            from ..backend import OneDNNWarning

            _REDUCED_WARNED.append(why)
            warnings.warn(f"dfd_kit: bfloat16 convolutions are not available here ({why}); the model runs "
                          "in float32 (same images, no speed-up).", OneDNNWarning, stacklevel=3)
        _REDUCED_KERNELS.append(ok)
    return _REDUCED_KERNELS[0]


def _reduced_error(e: Exception) -> str:
    """One line for why a bf16 kernel failed: oneDNN's reason where Jittor's report has one
    (a oneDNN without bf16 kernels for this CPU: "could not create a primitive descriptor
    iterator"), else the first line of a compile error."""
    import re

    from ..backend import error_summary

    reason = re.search(r"\[Reason\]: ([^\n\x1b]+)", str(e))
    return f"oneDNN: {reason.group(1).strip()}" if reason else error_summary(e)


def _check_reduced_kernels():
    """(ok, why not): each kind of bf16 convolution on a small random problem, against numpy
    (no Jittor convolution: that would compile kernels nothing else needs)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    cases = [  # (weight shape, transposed, stride, padding, output padding)
        ((16, 8, 3, 3), False, (1, 1), (0, 0), (0, 0)),   # residual blocks, output convs
        ((16, 8, 3, 3), False, (2, 2), (1, 1), (0, 0)),   # the generator's downsampling
        ((8, 16, 4, 4), True, (2, 2), (1, 1), (0, 0)),    # the decoders' upsampling
        ((8, 16, 3, 3), True, (2, 2), (1, 1), (1, 1)),    # the generator's upsampling
    ]
    with jt.no_grad():
        for shape, transposed, stride, padding, out_pad in cases:
            bits = bf16_bits(rng.standard_normal(shape).astype(np.float32) / 8)
            w = (bits.astype(np.uint32) << 16).view(np.float32)   # the rounded weights, exactly
            got = reduced_conv(jt.array(x), from_bf16_bits(bits), transposed, stride, padding, out_pad).numpy()
            want = _reference_conv(x[0], w, transposed, stride[0], padding[0], out_pad[0])[None]
            if got.shape != want.shape or not np.allclose(got, want, rtol=0.05, atol=0.05):
                return False, f"a bf16 {'transposed ' if transposed else ''}convolution gave wrong results"
        bits = bf16_bits(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) / 8)
        got = conv_nhwc(jt.array(x.transpose(0, 2, 3, 1).copy()), from_bf16_bits(bits)).numpy()
        want = _reference_conv(x[0], (bits.astype(np.uint32) << 16).view(np.float32), False, 1, 0, 0)
        if got.shape != (1, 7, 7, 16) or not np.allclose(got[0].transpose(2, 0, 1), want, rtol=0.05, atol=0.05):
            return False, "a bf16 channels-last convolution gave wrong results"
    return True, ""


def _reference_conv(x, w, transposed: bool, s: int, p: int, out_pad: int):
    """A plain numpy convolution of x (C, H, W): w (O, C, K, K), or transposed (C, O, K, K)."""
    c, h, wd = x.shape
    k = w.shape[2]
    if transposed:
        full = np.zeros((w.shape[1], (h - 1) * s + k, (wd - 1) * s + k))
        for i in range(k):
            for j in range(k):
                full[:, i:i + (h - 1) * s + 1:s, j:j + (wd - 1) * s + 1:s] += np.einsum("co,cyx->oyx", w[:, :, i, j], x)
        oh, ow = (h - 1) * s - 2 * p + k + out_pad, (wd - 1) * s - 2 * p + k + out_pad
        return full[:, p:p + oh, p:p + ow]
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    oh, ow = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    out = np.zeros((w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,cyx->oyx", w[:, :, i, j], xp[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s])
    return out


__all__ = ["inference_on_cpu", "spatial_mean", "reflect_pad", "moments", "normalize", "accumulate", "narrow_conv",
           "channels_last", "to_nhwc", "conv_nhwc", "moments_nhwc", "normalize_nhwc",
           "reflect_pad_nhwc", "upsample_nhwc", "normalize_blocked",
           "moments_blocked", "paste", "REDUCED_DTYPE", "reduced", "bf16_bits", "from_bf16_bits",
           "reduced_conv", "ReducedConv", "reduce_conv", "reducible_convs", "reduced_kernels_work"]
