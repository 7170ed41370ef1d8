"""The reference model and the fast path compute the same thing.

The reference model (dfd_kit.layers, embedding, mapping, synthesis) is plain Jittor; the
fast path (dfd_kit.fast) swaps in subclasses that run one-pass and oneDNN kernels at
inference on the CPU. Compared here block by block, network by network, and over whole
generations (``dfd_kit.load(..., fast=False)`` against the default), and the reference
path against the official code's recorded outputs (the parity fixture).
"""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest

import dfd_kit
from dfd_kit.config import COMPONENTS, DEMO
from dfd_kit.errors import ConfigError

REFERENCE_MODULES = ["components", "embedding", "manifold", "mapping", "synthesis", "layers"]


def _randomise(module, seed):
    """Every parameter and running statistic away from its initial value, so each matters."""
    import jittor as jt

    rng = np.random.default_rng(seed)
    for name, p in module.state_dict().items():
        v = rng.uniform(0.5, 2.0, p.shape) if name.endswith("running_var") else rng.normal(0.2, 0.5, p.shape)
        p.assign(jt.array(v.astype(np.float32)))
    return module


def _both_paths(module, *inputs):
    """(reference output, fast output) of ``module`` at inference: the module is run, then
    accelerated in place (same parameters) and run again."""
    import jittor as jt

    from dfd_kit.fast import accelerate

    with jt.no_grad():
        ref = module(*inputs).numpy()
        fast = accelerate(module)(*inputs).numpy()
    assert any(type(m).__module__ == "dfd_kit.fast.layers" for m in module.modules()), "nothing was swapped"
    return ref, fast


def _blocks():
    from jittor import nn

    from dfd_kit.layers import Down, Norm2d, ResnetBlock, Stage, Up
    from dfd_kit.synthesis import ConvNormReLU

    return {
        "norm running": (lambda: Norm2d(6, "running"), (2, 6, 9, 11)),
        "norm sample": (lambda: Norm2d(6, "sample", track_running=False), (2, 6, 9, 11)),
        "residual block, running": (lambda: ResnetBlock(8, "running"), (2, 8, 12, 12)),
        "residual block, sample": (lambda: ResnetBlock(16, "sample", track_running=False), (1, 16, 10, 10)),
        "down": (lambda: Down(4, 8), (2, 4, 16, 16)),
        "up": (lambda: Up(8, 16), (2, 8, 6, 6)),
        "upsampling stage": (lambda: Stage(Up(8, 16), ResnetBlock(16), True), (2, 8, 6, 6)),
        "upsampling stage, sample": (lambda: Stage(Up(8, 16, "sample"), ResnetBlock(16, "sample"), True),
                                     (1, 8, 6, 6)),
        "conv-norm-relu, strided": (lambda: ConvNormReLU(nn.Conv2d(4, 8, 3, stride=2, padding=1), 8), (1, 4, 12, 12)),
        "conv-norm-relu, transposed": (lambda: ConvNormReLU(nn.ConvTranspose(8, 4, 3, stride=2, padding=1,
                                                                             output_padding=1), 4), (1, 8, 6, 6)),
        "output conv": (lambda: nn.Conv2d(16, 3, 7), (1, 16, 20, 20)),
        "reflection pad": (lambda: nn.ReflectionPad2d(3), (1, 5, 8, 9)),
    }


@pytest.mark.parametrize("name", list(_blocks()))
def test_each_block_gives_the_same_numbers_on_both_paths(name):
    import jittor as jt

    build, shape = _blocks()[name]
    jt.set_global_seed(0)
    block = _randomise(build().eval(), 1)
    x = jt.array(np.random.default_rng(2).standard_normal(shape).astype(np.float32))
    ref, fast = _both_paths(block, x)
    assert fast.shape == ref.shape
    np.testing.assert_allclose(fast, ref, rtol=0, atol=2e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("kind", ["encoder", "sketch_decoder", "feature_decoder", "generator"])
def test_each_network_gives_the_same_numbers_on_both_paths(kind):
    import jittor as jt

    from dfd_kit.pipeline import build_network

    jt.set_global_seed(3)
    net = _randomise(build_network(kind, DEMO, "nose" if kind != "generator" else "", fast=False), 4)
    rng = np.random.default_rng(5)
    n = DEMO.nets
    size = DEMO.layout.crop_size("nose")
    x = {"encoder": rng.uniform(-1, 1, (1, 1, size, size)),
         "generator": rng.standard_normal((1, n.feature_channels, 64, 64))}.get(kind, rng.standard_normal((1, n.latent_dim)))
    ref, fast = _both_paths(net, jt.array(x.astype(np.float32)))
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_the_shadow_sum_is_the_same_on_both_paths():
    """The reference decodes each neighbour and sums; the fast path shares the affine tail."""
    import jittor as jt

    from dfd_kit.fast import accelerate
    from dfd_kit.pipeline import build_network

    jt.set_global_seed(6)
    dec = _randomise(build_network("sketch_decoder", DEMO, "remainder", fast=False), 7)
    rng = np.random.default_rng(8)
    z = jt.array(rng.standard_normal((5, DEMO.nets.latent_dim)).astype(np.float32))
    w = np.array([0.4, 0.3, 0.02, 0.2, 0.08])
    with jt.no_grad():
        ref = dec.weighted_sum(z, w).numpy()
        fast = accelerate(dec).weighted_sum(z, w).numpy()
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


@pytest.fixture(scope="module")
def both_models(demo_params):
    return dfd_kit.load(demo_params, fast=False), dfd_kit.load(demo_params)


def test_a_generation_is_the_same_on_both_paths(both_models, demo_sketch):
    plain, fast = both_models
    assert not plain.fast and fast.fast
    weights = {"left_eye": 0.5, "mouth": 0.0}
    a = plain.generate(demo_sketch, part_weights=weights, sex="female")
    b = fast.generate(demo_sketch, part_weights=weights, sex="female")
    for c in COMPONENTS:
        np.testing.assert_allclose(a.latents[c], b.latents[c], rtol=0, atol=1e-4 * np.abs(a.latents[c]).max())
        np.testing.assert_array_equal(a.neighbours[c], b.neighbours[c])
        assert np.abs(a.shadows[c].astype(int) - b.shadows[c]).max() <= 1
    np.testing.assert_allclose(a.feature_map, b.feature_map, rtol=0, atol=1e-4 * np.abs(a.feature_map).max())
    d = np.abs(a.image.astype(int) - b.image)
    assert d.max() <= 2 and (d > 0).mean() < 0.01, (d.max(), (d > 0).mean())


def test_the_reference_path_runs_in_float32_only(demo_params):
    with pytest.raises(ConfigError, match="fast=True"):
        dfd_kit.load(demo_params, precision="bf16", fast=False)
    assert dfd_kit.load(demo_params, fast=False, shadows=False).precision == "fp32"


def test_where_the_fast_kernels_fail_the_reference_path_runs_after_one_warning(demo_params, demo_sketch,
                                                                               monkeypatch, both_models):
    from dfd_kit import fast
    from dfd_kit.fast import kernels

    def broken(*a, **k):
        raise RuntimeError("Run cmd failed: \"g++\" \"/tmp/x/moments.cc\"")

    monkeypatch.setattr(fast, "_AVAILABLE", [])
    monkeypatch.setattr(kernels, "moments", broken)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = dfd_kit.load(demo_params)
        second = dfd_kit.load(demo_params)
    told = [w for w in seen if issubclass(w.category, fast.FastPathWarning)]
    assert len(told) == 1 and "reference path" in str(told[0].message) and "moments.cc" in str(told[0].message)
    assert not first.fast and not second.fast
    assert type(first.generator.res[0]).__module__ == "dfd_kit.layers"
    image = first.generate(demo_sketch).image
    np.testing.assert_array_equal(image, both_models[0].generate(demo_sketch).image)


def test_the_reference_modules_do_not_use_the_fast_path():
    """The model the paper describes reads on its own: no stage module imports dfd_kit.fast,
    and each is short enough to read in one sitting."""
    root = Path(dfd_kit.__file__).parent
    for name in REFERENCE_MODULES:
        text = (root / f"{name}.py").read_text()
        assert len(text.splitlines()) <= 200, f"{name}.py has grown past 200 lines: move what is not the model out"
        tree = ast.parse(text)
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if "fast" in m.split(".")], f"{name}.py imports {imported}"


# --------------------------------------------------------------------------- parity, reference path

@pytest.fixture(scope="module")
def reference_standin(standin_params_dir):
    return dfd_kit.load(standin_params_dir, fast=False)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", [0, 2])
def test_the_reference_path_matches_the_official_outputs(reference_standin, case_id):
    """The full-size stand-in model on the reference path against what the official code
    computed (the parity fixture), with the tolerances of tests/test_parity.py."""
    from conftest import NPZ_TAG, SEX, case_by_id, case_weights, load_expected, sketch_path
    from test_parity import WINDOW, assert_close, assert_pixels, check_face_map

    case, e = case_by_id(case_id), load_expected(case_id)
    r = reference_standin.generate(str(sketch_path(case)), part_weights=case_weights(case), sex=SEX[case["sex"]],
                                   k=case["K"], anchor="official")
    for c in COMPONENTS:
        t = NPZ_TAG[c]
        assert_close(r.latents[c], e[f"latent_{t}"][0], 5e-4, what=f"latent {c}")
        np.testing.assert_array_equal(r.neighbours[c], e[f"knn_idx_official_{t}"])
        assert_pixels(r.shadows[c], e[f"shadow_raw_{t}"][..., 0], 2, 0.01, what=f"shadow {c}")
    check_face_map(r.feature_map, e)
    assert_close(r.generator_output[WINDOW], e["netG_out_crop_r320_c160"], 2e-3, what="generator output")
    assert_pixels(r.image, e["generated"], 2, 0.05, what="generated image")
