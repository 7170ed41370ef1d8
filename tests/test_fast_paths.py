"""The two speed-ups of the inference path compute what the plain path computes.

* shadows: a sketch decoder's weighted sum over neighbours runs each neighbour only up to
  its last ReLU and the affine tail once (LatentDecoder.weighted_sum);
* memory: glibc keeps freed large buffers for reuse (dfd_kit.backend), so a convolution's
  working copies are not zero-filled by the kernel on every call;
* fused kernels (dfd_kit.fast.kernels): at inference on the CPU, norm statistics, normalisation,
  residual, ReLU and reflection padding run as multi-threaded one-pass kernels; with
  gradients on they are Jittor's own ops, and both give the same numbers;
* the two paths (dfd_kit.fast against the reference model): each block, each network and a
  whole generation give the same numbers, to float32 rounding.
"""
from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

import dfd_kit
from dfd_kit.config import DEMO, OFFICIAL
from dfd_kit.manifold import blend_shadow, shadow_from_sum


def _decoder(size, channels, latent_dim, seed=0):
    import jittor as jt

    from dfd_kit.embedding import sketch_decoder

    from dfd_kit.fast import accelerate

    jt.set_global_seed(seed)
    dec = accelerate(sketch_decoder(size, channels, latent_dim).eval())
    # running statistics away from (0, 1), so the affine tail is not the identity
    rng = np.random.default_rng(seed)
    for name, p in dec.state_dict().items():
        if name.endswith("running_mean"):
            p.update(jt.array(rng.normal(0, 0.3, p.shape).astype(np.float32)))
        elif name.endswith("running_var"):
            p.update(jt.array(rng.uniform(0.5, 2.0, p.shape).astype(np.float32)))
    return dec


@pytest.mark.parametrize("size", [64, 256])
def test_weighted_sum_equals_the_sum_of_full_decodings(size):
    import jittor as jt

    n = DEMO.nets
    dec = _decoder(size, n.decoder_channels, n.latent_dim)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, n.latent_dim)).astype(np.float32)
    w = np.array([0.5, 0.2, 0.05, 0.5, 0.01])   # capped shadow weights do not sum to 1
    with jt.no_grad():
        full = dec(jt.array(z)).numpy()[:, 0].astype(np.float64)
        fast = dec.weighted_sum(jt.array(z), w).numpy()[0, 0]
    expected = np.tensordot(w, full, axes=1)
    assert fast.shape == (size, size)
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    # and the shadow made from it is the official blend of the full decodings
    a = shadow_from_sum(fast, float(w.sum())).astype(int)
    b = blend_shadow(full, w).astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


@pytest.mark.parametrize("row_bytes", [None, 64 << 10])
def test_weighted_sum_in_chunks_and_rows_equals_the_sum_of_full_decodings(row_bytes, monkeypatch):
    """More rows than a chunk (two balanced chunks), and with ``row_bytes`` small the
    later stages row by row: the same sum either way."""
    import jittor as jt

    from dfd_kit.fast.shadows import FastLatentDecoder as LatentDecoder

    if row_bytes is not None:
        monkeypatch.setattr(LatentDecoder, "ROW_BYTES", row_bytes)
    n = DEMO.nets
    dec = _decoder(128, n.decoder_channels, n.latent_dim, seed=2)
    stages = dec._batched_stages()
    assert (stages == len(dec.stages)) == (row_bytes is None)   # both paths are exercised
    rng = np.random.default_rng(2)
    rows = LatentDecoder.CHUNK + 3
    z = rng.standard_normal((rows, n.latent_dim)).astype(np.float32)
    w = rng.uniform(0.01, 0.5, rows)
    with jt.no_grad():
        full = dec(jt.array(z)).numpy()[:, 0].astype(np.float64)
        fast = dec.weighted_sum(jt.array(z), w).numpy()[0, 0]
    expected = np.tensordot(w, full, axes=1)
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_weighted_sum_of_no_neighbours_is_blank():
    import jittor as jt

    n = DEMO.nets
    dec = _decoder(64, n.decoder_channels, n.latent_dim)
    with jt.no_grad():
        out = dec.weighted_sum(jt.zeros((0, n.latent_dim)), np.zeros(0)).numpy()
    assert out.shape == (1, 1, 64, 64) and not out.any()
    assert (shadow_from_sum(out[0, 0], 0.0) == 255).all()


def test_weighted_sum_refuses_per_sample_norms():
    """The feature decoders normalise with each sample's statistics: not affine, no shortcut."""
    import jittor as jt

    from dfd_kit.fast import accelerate
    from dfd_kit.mapping import feature_decoder

    n = OFFICIAL.nets
    fdec = accelerate(feature_decoder(128, n.feature_decoder_channels, n.latent_dim, n.feature_channels))
    fdec.eval()
    with pytest.raises(AssertionError, match="running"):
        fdec.weighted_sum(jt.zeros((2, n.latent_dim)), np.ones(2))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_large_buffers_are_reused_without_page_faults():
    """A 48 MB buffer freed and allocated again comes back without the kernel zero-filling
    it page by page (what made each 512 x 512 convolution pay for its memory again)."""
    assert dfd_kit.backend.info.get("heap_reuse") is True

    def faults_to_fill():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.empty(48 << 20, np.uint8)
        a.fill(1)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        del a
        return after - before

    first = faults_to_fill()
    again = [faults_to_fill() for _ in range(3)]
    # 48 MB is 12288 pages of 4 KB (or 24 huge pages); reused memory faults on none of them
    assert min(again) <= max(2, first // 10), (first, again)


# --------------------------------------------------------------------------- fused kernels

def _grad_mode_and_inference(fn):
    """fn() computed with gradients on (Jittor's ops) and under no_grad (the fused kernels)."""
    import jittor as jt

    from dfd_kit.fast import kernels

    assert not kernels.inference_on_cpu()
    plain = fn().numpy()
    with jt.no_grad():
        assert kernels.inference_on_cpu()
        fast = fn().numpy()
    return plain, fast


@pytest.mark.parametrize("p", [1, 2, 3])
def test_fused_reflect_pad_is_reflection_padding(p):
    import jittor as jt

    from dfd_kit.fast import kernels

    x = jt.array(np.random.default_rng(p).standard_normal((2, 3, 7, 9)).astype(np.float32))
    plain, fast = _grad_mode_and_inference(lambda: kernels.reflect_pad(x, p))
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    np.testing.assert_array_equal(plain, ref)
    np.testing.assert_array_equal(fast, ref)


def test_fused_moments_match_the_two_pass_statistics():
    import jittor as jt

    from dfd_kit.fast import kernels

    a = np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 33, 17)).astype(np.float32)
    x = jt.array(a)
    with jt.no_grad():
        mean, var = (v.numpy() for v in kernels.moments(x))
    assert mean.shape == var.shape == (2, 5, 1, 1)
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(mean[..., 0, 0], a64.mean((2, 3)), rtol=1e-6)
    np.testing.assert_allclose(var[..., 0, 0], a64.var((2, 3)), rtol=1e-5)


@pytest.mark.parametrize("relu,residual,pad", [(False, False, 0), (True, False, 1), (False, True, 0),
                                               (True, True, 2)])
def test_fused_normalize_matches_the_composed_ops(relu, residual, pad):
    import jittor as jt

    from dfd_kit.fast import kernels

    rng = np.random.default_rng(3)
    x = jt.array(rng.standard_normal((2, 4, 6, 8)).astype(np.float32))
    mean = jt.array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32))
    scale = jt.array(rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32))   # running stats: one row
    bias = jt.array(rng.standard_normal(4).astype(np.float32))
    res = jt.array(rng.standard_normal((2, 4, 6, 8)).astype(np.float32)) if residual else None
    plain, fast = _grad_mode_and_inference(lambda: kernels.normalize(x, mean, scale, bias, relu, res, pad))
    y = (x.numpy() - mean.numpy()) * scale.numpy() + bias.numpy()[None, :, None, None]
    y = y + res.numpy() if residual else y
    y = np.maximum(y, 0) if relu else y
    y = np.pad(y, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    np.testing.assert_allclose(plain, y, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast, y, rtol=0, atol=1e-5)


def test_fused_accumulate_is_a_weighted_running_sum():
    import jittor as jt

    from dfd_kit.fast import kernels

    rng = np.random.default_rng(4)
    x = jt.array(rng.standard_normal((3, 2, 5, 7)).astype(np.float32))
    acc = jt.array(rng.standard_normal((1, 2, 5, 7)).astype(np.float32))
    a = np.float32([0.3, 0.0, -1.5])
    expected = np.tensordot(a, x.numpy(), axes=1)[None]
    plain, fast = _grad_mode_and_inference(lambda: kernels.accumulate(acc, x, jt.array(a)))
    for y in (plain, fast):
        np.testing.assert_allclose(y, acc.numpy() + expected, rtol=0, atol=1e-5)
    plain, fast = _grad_mode_and_inference(lambda: kernels.accumulate(None, x, jt.array(a)))
    for y in (plain, fast):
        assert y.shape == (1, 2, 5, 7)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("stats", ["running", "sample"])
def test_conv_bias_handed_to_the_norm_gives_the_same_block(stats):
    """At inference conv_norm leaves the conv bias out and lets the norm cancel (sample
    statistics) or absorb it (running statistics): the block's output must not change."""
    import jittor as jt

    from dfd_kit.fast import accelerate
    from dfd_kit.layers import ResnetBlock

    rng = np.random.default_rng(5)
    block = accelerate(ResnetBlock(4, stats).eval())
    for norm in (block.norm1, block.norm2):
        norm.weight.assign(jt.array(rng.uniform(0.5, 2, 4).astype(np.float32)))
        norm.bias.assign(jt.array(rng.standard_normal(4).astype(np.float32)))
        if stats == "running":
            norm.running_mean.assign(jt.array(rng.standard_normal(4).astype(np.float32)))
            norm.running_var.assign(jt.array(rng.uniform(0.5, 2, 4).astype(np.float32)))
    for conv in (block.conv1, block.conv2):
        conv.bias.assign(jt.array(rng.uniform(1, 3, 4).astype(np.float32)))   # far from 0: it matters
    x = jt.array(rng.standard_normal((2, 4, 9, 9)).astype(np.float32))
    plain, fast = _grad_mode_and_inference(lambda: block(x))
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5)
    assert block.conv1.bias is not None and block.conv2.bias is not None   # put back


@pytest.mark.parametrize("cin,cout,k,h,w", [(5, 3, 7, 20, 37), (4, 1, 5, 9, 16), (3, 2, 3, 8, 70),
                                             (2, 4, 1, 3, 3)])
def test_output_conv_kernel_matches_jittor_conv(cin, cout, k, h, w):
    """The direct few-channel kernel against Jittor's convolution, on widths that end
    inside a pixel tile and on tiles that fit entirely."""
    import jittor as jt

    from jittor import nn

    from dfd_kit.fast import accelerate
    from dfd_kit.fast.layers import NarrowConv

    jt.set_global_seed(cin * 10 + cout)
    conv = accelerate(nn.Conv2d(cin, cout, k))
    assert isinstance(conv, NarrowConv)
    x = jt.array(np.random.default_rng(cout).standard_normal((2, cin, h, w)).astype(np.float32))
    plain, fast = _grad_mode_and_inference(lambda: conv(x))
    assert fast.shape == plain.shape == (2, cout, h - k + 1, w - k + 1)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5)


def test_fused_kernels_keep_training_differentiable():
    """Outside no_grad the kernels are not used, so gradients flow (training needs them)."""
    import jittor as jt

    from dfd_kit.fast import accelerate
    from dfd_kit.layers import Norm2d

    norm = accelerate(Norm2d(3, "sample", track_running=False))
    x = jt.array(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
    y = norm.normalize(x, relu=True, pad=1)
    g = jt.grad((y * y).sum(), [x, norm.weight])
    assert all(np.abs(v.numpy()).sum() > 0 for v in g)


def test_generator_and_decoders_agree_between_training_ops_and_fused_kernels():
    """Whole networks of the demo size: the same output with gradients on (Jittor's ops)
    and at inference (fused kernels), to float32 rounding."""
    import jittor as jt

    from dfd_kit.embedding import ComponentEncoder
    from dfd_kit.mapping import feature_decoder
    from dfd_kit.synthesis import Generator

    from dfd_kit.fast import accelerate

    jt.set_global_seed(0)
    n = DEMO.nets
    rng = np.random.default_rng(0)
    gen = accelerate(Generator(n.feature_channels, n.ngf, n.n_downsample, n.n_blocks).eval())
    fmap = jt.array(rng.standard_normal((1, n.feature_channels, 64, 64)).astype(np.float32))
    plain, fast = _grad_mode_and_inference(lambda: gen(fmap))
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-4)
    dec = accelerate(feature_decoder(64, n.feature_decoder_channels, n.latent_dim, n.feature_channels).eval())
    sk = _decoder(64, n.decoder_channels, n.latent_dim)
    z = jt.array(rng.standard_normal((1, n.latent_dim)).astype(np.float32))
    for net in (dec, sk):
        plain, fast = _grad_mode_and_inference(lambda: net(z))
        np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-4 * max(1.0, np.abs(plain).max()))
    enc = accelerate(ComponentEncoder(64, n.encoder_channels, n.latent_dim).eval())
    crop = jt.array(rng.uniform(-1, 1, (1, 1, 64, 64)).astype(np.float32))
    plain, fast = _grad_mode_and_inference(lambda: enc(crop))
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-4 * max(1.0, np.abs(plain).max()))


def _needs_channels_last():
    import jittor as jt

    from dfd_kit.fast import kernels

    with jt.no_grad():
        if not kernels.channels_last():
            pytest.skip("no oneDNN: the channels-last path is not used")


@pytest.mark.parametrize("c", [5, 16, 20])   # 5 and 20: channels past the blocks of 8
def test_channels_last_moments_match_float64_statistics(c):
    import jittor as jt

    from dfd_kit.fast import kernels

    _needs_channels_last()
    a = np.random.default_rng(c).normal(3.0, 2.0, (2, 13, 21, c)).astype(np.float32)
    with jt.no_grad():
        mean, var = (v.numpy()[..., 0, 0] for v in kernels.moments_nhwc(jt.array(a)))
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(mean, a64.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(var, a64.var((1, 2)), rtol=1e-5)


def _randomise(module, seed):
    import jittor as jt

    rng = np.random.default_rng(seed)
    for name, p in module.state_dict().items():
        if name.endswith("running_var"):
            v = rng.uniform(0.5, 2.0, p.shape)
        else:   # weights, biases, running means: all away from 0 so that each one matters
            v = rng.normal(0.3, 0.5, p.shape)
        p.assign(jt.array(v.astype(np.float32)))


@pytest.mark.parametrize("stats,c,out,n,size", [("running", 16, 9, 3, 11), ("sample", 24, 13, 2, 16),
                                                ("running", 5, 3, 1, 9), ("sample", 12, 7, 1, 7),
                                                ("running", 24, 32, 2, 6), ("sample", 8, 16, 1, 10)])
def test_channels_last_blocks_equal_the_nchw_path(stats, c, out, n, size, monkeypatch):
    """A residual block and an upsampling stage at inference: channels last inside (oneDNN
    without layout conversions) and the NCHW fused path give the same numbers. ``out``, the
    upsampling's channels: a multiple of 16 takes oneDNN's blocked layout straight to the norm."""
    import jittor as jt

    from dfd_kit.fast import kernels
    from dfd_kit.fast import accelerate
    from dfd_kit.layers import ResnetBlock, Stage, Up

    _needs_channels_last()
    block = accelerate(ResnetBlock(c, stats, track_running=stats == "running").eval())
    stage = accelerate(Stage(Up(c, out, stats), ResnetBlock(out, stats), True).eval())
    _randomise(block, 1)
    _randomise(stage, 2)
    x = jt.array(np.random.default_rng(3).standard_normal((n, c, size, size)).astype(np.float32))
    calls = []
    conv_nhwc = kernels.conv_nhwc
    monkeypatch.setattr(kernels, "conv_nhwc", lambda *a: calls.append(1) or conv_nhwc(*a))
    with jt.no_grad():
        fast = [block(x).numpy(), stage(x).numpy()]
        assert len(calls) == 4   # both blocks took the channels-last path
        monkeypatch.setattr(kernels, "channels_last", lambda: False)
        plain = [block(x).numpy(), stage(x).numpy()]
    for f, p in zip(fast, plain):
        assert f.shape == p.shape
        np.testing.assert_allclose(f, p, rtol=0, atol=1e-5 * max(1.0, np.abs(p).max()))


def test_channels_last_shadow_sum_equals_the_nchw_path(monkeypatch):
    """The shadows' weighted sum with the norm kernel adding each row to the running sum
    (channels last) and with separate passes (NCHW): the same sum."""
    import jittor as jt

    from dfd_kit.fast import kernels
    from dfd_kit.fast.shadows import FastLatentDecoder

    _needs_channels_last()
    monkeypatch.setattr(FastLatentDecoder, "ROW_BYTES", 64 << 10)   # the last stages row by row too
    n = DEMO.nets
    dec = _decoder(128, n.decoder_channels, n.latent_dim, seed=4)
    rng = np.random.default_rng(4)
    z = jt.array(rng.standard_normal((7, n.latent_dim)).astype(np.float32))
    w = rng.uniform(0.01, 0.5, 7)
    with jt.no_grad():
        fast = dec.weighted_sum(z, w).numpy()
        monkeypatch.setattr(kernels, "channels_last", lambda: False)
        plain = dec.weighted_sum(z, w).numpy()
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5 * np.abs(plain).max())


@pytest.mark.parametrize("config", [OFFICIAL, DEMO], ids=["official", "demo"])
def test_fused_paste_equals_the_masked_sum(config):
    """The face map at inference (one kernel) and in training (padded maps times masks):
    the same pixels, the nose's trimmed rows included."""
    import jittor as jt

    from dfd_kit import fast as fast_path
    from dfd_kit.config import COMPONENTS
    from dfd_kit.mapping import paste_feature_maps

    lay = config.layout
    rng = np.random.default_rng(0)
    maps = {c: jt.array(rng.standard_normal((1, 3, lay.crop_size(c), lay.crop_size(c))).astype(np.float32))
            for c in COMPONENTS}
    with jt.no_grad():
        plain = paste_feature_maps(maps, lay).numpy()   # the reference: padded maps times masks
        fast = fast_path.paste_feature_maps(maps, lay).numpy()
    np.testing.assert_array_equal(fast, plain)
    # and it is not the remainder alone: every part shows somewhere
    for c in lay.paste_order:
        b = lay.box(c)
        assert np.any(fast[0, 0, b.y:b.y + 8, b.x:b.x + b.size] == maps[c].numpy()[0, 0, :8])
