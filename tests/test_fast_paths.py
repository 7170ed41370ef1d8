"""The two speed-ups of the inference path compute what the plain path computes.

* shadows: a sketch decoder's weighted sum over neighbours runs each neighbour only up to
  its last ReLU and the affine tail once (LatentDecoder.weighted_sum);
* memory: glibc keeps freed large buffers for reuse (dfd_kit.backend), so a convolution's
  working copies are not zero-filled by the kernel on every call.
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

    jt.set_global_seed(seed)
    dec = sketch_decoder(size, channels, latent_dim).eval()
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

    from dfd_kit.mapping import feature_decoder

    n = OFFICIAL.nets
    fdec = feature_decoder(128, n.feature_decoder_channels, n.latent_dim, n.feature_channels)
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
