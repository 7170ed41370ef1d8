"""bfloat16 convolutions (dfd_kit.fast.precision, dfd_kit.fast.kernels "reduced precision").

What is checked: the bf16 images stay within 35 dB PSNR of the float32 ones while latents
and projections are the float32 ones; ``precision=`` picks what it says and refuses unknown
values; "auto" keeps float32 where the CPU has no native bf16 (simulated by
ONEDNN_MAX_CPU_ISA in a fresh process, and by a monkeypatched CPU probe) and for the small
models; the converted weights are cached once beside the compact copy; and where oneDNN
cannot run the kernels, one warning and float32 results.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import dfd_kit
from dfd_kit.fast import precision
from dfd_kit.config import COMPONENTS, DEMO, OFFICIAL
from dfd_kit.errors import ConfigError

from conftest import ROOT, make_demo_model

#: The fidelity target for bf16 against float32 images (issue 22).
MIN_PSNR_DB = 35.0


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def bf16_works() -> bool:
    from dfd_kit.fast import kernels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kernels.reduced_kernels_work()


needs_bf16 = pytest.mark.skipif("not bf16_works()", reason="oneDNN has no bf16 convolutions on this CPU")


@pytest.fixture
def fresh_probe(monkeypatch):
    """The bf16 kernel probe and its warning as if nothing had run yet in this process."""
    from dfd_kit.fast import kernels

    monkeypatch.setattr(kernels, "_REDUCED_KERNELS", [])
    monkeypatch.setattr(kernels, "_REDUCED_WARNED", [])
    return kernels


# --------------------------------------------------------------------------- the argument

@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, 16])
def test_an_unknown_precision_is_a_config_error(bad, demo_params):
    with pytest.raises(ConfigError, match="precision must be one of 'auto', 'fp32', 'bf16'"):
        dfd_kit.load(demo_params, precision=bad)
    from dfd_kit.pipeline import load_model

    with pytest.raises(ConfigError, match="precision"):
        load_model(demo_params, precision=bad)


def test_fp32_converts_nothing(demo_params):
    from dfd_kit.fast import kernels

    model = dfd_kit.load(demo_params, precision="fp32")
    assert model.precision == "fp32"
    for net in [model.generator, *model.feature_decoders.values()]:
        assert not any(kernels.reduced(c.weight) for _, c in kernels.reducible_convs(net))


@needs_bf16
def test_bf16_converts_the_image_path_and_the_shadows_only(demo_params):
    from dfd_kit.fast import kernels

    model = dfd_kit.load(demo_params, precision="bf16")
    assert model.precision == "bf16"
    gen = kernels.reducible_convs(model.generator)
    assert gen and all(kernels.reduced(c.weight) and isinstance(c, kernels.ReducedConv) for _, c in gen)
    assert not kernels.reduced(model.generator.to_rgb.weight), "the 3-channel output keeps its float32 kernel"
    for c in COMPONENTS:
        converted = {n for n, conv in kernels.reducible_convs(model.feature_decoders[c]) if kernels.reduced(conv.weight)}
        assert converted == {n for n, _ in precision.layers_to_convert(model.feature_decoders[c], "feature_decoder")}
        assert "to_output" in converted and not any(n.startswith("res_in") for n in converted)
        assert not any(kernels.reduced(conv.weight) for _, conv in kernels.reducible_convs(model.encoders[c]))
        sketch = kernels.reducible_convs(model.sketch_decoders[c])
        assert sketch and all(kernels.reduced(conv.weight) for _, conv in sketch), "the shadows' decoders convert whole"


def test_a_reduced_precision_model_is_not_saved(demo_params, tmp_path):
    from dfd_kit.errors import ConfigError
    from dfd_kit.pipeline import save_model

    model = dfd_kit.load(demo_params, precision="fp32")
    model.precision = "bf16"   # what load(..., precision="bf16") marks; the check needs no bf16 CPU
    with pytest.raises(ConfigError, match="precision='fp32'"):
        save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing may be written"
    model.precision = "fp32"
    assert (save_model(model, tmp_path / "out") / "config.json").exists()


def test_auto_keeps_the_small_models_in_fp32(demo_params):
    assert not precision.pays_off(DEMO) and precision.pays_off(OFFICIAL)
    assert dfd_kit.load(demo_params).precision == "fp32"


# --------------------------------------------------------------------------- fidelity

@needs_bf16
def test_bf16_images_are_close_to_fp32_on_a_small_model(demo_sketch):
    """The demo-size networks (random weights), converted in memory: image PSNR against
    float32 at least 35 dB; latents, neighbours and weights bit for bit the same; shadows
    within one grey level."""
    model = make_demo_model(seed=3)
    want = [model.generate(demo_sketch, sex=sex, shadows=True) for sex in ("male", "female")]
    nets = [("generator", model.generator), *(("feature_decoder", n) for n in model.feature_decoders.values()),
            *(("sketch_decoder", n) for n in model.sketch_decoders.values())]
    for kind, net in nets:
        assert precision.convert_network(net, kind) > 0
    for sex, w in zip(("male", "female"), want):
        got = model.generate(demo_sketch, sex=sex, shadows=True)
        assert psnr(got.image, w.image) >= MIN_PSNR_DB, f"{sex}: {psnr(got.image, w.image):.1f} dB"
        assert not np.array_equal(got.image, w.image), "the bf16 path did run"
        for c in COMPONENTS:
            assert np.array_equal(got.latents[c], w.latents[c])
            assert np.array_equal(got.projections[c].neighbours, w.projections[c].neighbours)
            assert np.array_equal(got.projections[c].weights, w.projections[c].weights)
            diff = np.abs(got.shadows[c].astype(int) - w.shadows[c])
            assert diff.max() <= 1, f"{c}: a bf16 shadow is {diff.max()} grey levels off"


@pytest.mark.slow
@needs_bf16
def test_bf16_images_are_close_to_fp32_at_full_size(standin_model, standin_params_dir):
    """The full-size stand-in, one parity sketch and one freehand sketch."""
    from conftest import CASES, SEX, case_weights, sketch_path

    reduced = dfd_kit.load(standin_params_dir, shadows=False, precision="bf16")
    assert reduced.precision == "bf16"
    case = CASES[0]
    jobs = [(str(sketch_path(case)), dict(part_weights=case_weights(case), sex=SEX[case["sex"]], k=case["K"],
                                          anchor="official")),
            (str(ROOT / "examples" / "hand_drawn" / "hand2_female.png"), dict(sex="female"))]
    for sketch, kw in jobs:
        want = standin_model.generate(sketch, shadows=False, **kw)
        got = reduced.generate(sketch, shadows=False, **kw)
        assert psnr(got.image, want.image) >= MIN_PSNR_DB, f"{sketch}: {psnr(got.image, want.image):.1f} dB"
        assert all(np.array_equal(got.latents[c], want.latents[c]) for c in COMPONENTS)


@pytest.mark.slow
@needs_bf16
def test_bf16_shadows_are_within_one_grey_level_at_full_size(standin_model, standin_params_dir):
    """The shadows' sketch decoders convert every convolution: the five shadows of a parity
    sketch move by at most one grey level."""
    from conftest import CASES, SEX, case_weights, sketch_path

    case = CASES[0]
    kw = dict(part_weights=case_weights(case), sex=SEX[case["sex"]], k=case["K"], anchor="official")
    want = standin_model.generate(str(sketch_path(case)), shadows=True, keep_features=False, **kw)
    reduced = dfd_kit.load(standin_params_dir, precision="bf16")
    got = reduced.generate(str(sketch_path(case)), shadows=True, keep_features=False, **kw)
    for c in COMPONENTS:
        from dfd_kit.fast import kernels

        assert all(kernels.reduced(conv.weight) for _, conv in kernels.reducible_convs(reduced.sketch_decoders[c]))
        diff = np.abs(got.shadows[c].astype(int) - want.shadows[c])
        assert diff.max() <= 1, f"{c}: {diff.max()} grey levels"


# --------------------------------------------------------------------------- the converted weights

def test_bf16_bits_round_to_nearest_even():
    from dfd_kit.fast.kernels import bf16_bits

    x = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5, 0.0, 3.0e38], np.float32)
    assert bf16_bits(x).tolist() == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x0000, 0x7F62]


@needs_bf16
def test_converted_weights_are_cached_once_beside_the_compact_copy(params_copy):
    from dfd_kit.fast.kernels import bf16_bits
    from dfd_kit.fast.compact import compact_checkpoint
    from dfd_kit.loading import GENERATOR_FILE, compact_cache_dir

    dfd_kit.load(params_copy, precision="bf16")
    folders = list((compact_cache_dir(params_copy) / GENERATOR_FILE).glob("*/bf16-*"))
    assert len(folders) == 1 and (folders[0] / "index.json").is_file()
    index_mtime = (folders[0] / "index.json").stat().st_mtime_ns
    dfd_kit.load(params_copy, precision="bf16")     # again: read, not written
    assert (folders[0] / "index.json").stat().st_mtime_ns == index_mtime
    import json

    files = json.loads((folders[0] / "index.json").read_text())["files"]
    state = compact_checkpoint(params_copy, GENERATOR_FILE)
    for key, name in files.items():
        assert np.array_equal(np.load(folders[0] / name), bf16_bits(state[key]))
    assert not list(folders[0].parent.glob(".tmp-*")), "no temporary folder left behind"


# --------------------------------------------------------------------------- the automatic choice

def test_auto_is_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert not precision.native_bf16()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no warning: nothing went wrong
        assert precision.resolve("auto", OFFICIAL) == "fp32"


@needs_bf16
def test_auto_is_bf16_for_the_full_size_model_with_native_bf16(monkeypatch):
    from dfd_kit import onednn

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(onednn, "effective_cpu_isa", lambda: 0x3E7)   # AMX
    assert precision.resolve("auto", OFFICIAL) == "bf16"
    assert precision.resolve("auto", DEMO) == "fp32"
    monkeypatch.setattr(onednn, "effective_cpu_isa", lambda: 0x27)    # oneDNN capped at plain AVX-512
    assert precision.resolve("auto", OFFICIAL) == "fp32"


_SIMULATED = textwrap.dedent("""
    import json, sys, warnings
    warnings.simplefilter("always")
    import dfd_kit
    from dfd_kit.fast import precision
    from dfd_kit.config import OFFICIAL
    with warnings.catch_warnings(record=True) as auto:
        choice = precision.resolve("auto", OFFICIAL)
    with warnings.catch_warnings(record=True) as told:
        model = dfd_kit.load(sys.argv[1], shadows=False, precision="bf16")
        again = dfd_kit.load(sys.argv[1], shadows=False, precision="bf16")
    image = model.generate(sys.argv[2], sex="male", shadows=False).image
    fp32 = dfd_kit.load(sys.argv[1], shadows=False, precision="fp32").generate(sys.argv[2], sex="male", shadows=False)
    print(json.dumps({"native": precision.native_bf16(), "auto": choice, "auto_warnings": len(auto),
                      "explicit": [model.precision, again.precision],
                      "warnings": [str(w.message) for w in told], "same_as_fp32": bool((image == fp32.image).all())}))
""")


def _run_simulated(params, sketch, isa):
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", _SIMULATED, str(params), str(sketch)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cpu_without_bf16_gets_fp32_and_one_warning(demo_params, tmp_path):
    """A fresh process with oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA, as on an older CPU):
    "auto" is float32 without a word; "bf16" asked for cannot be had (oneDNN has no such
    primitive there), so one warning and float32 images, the same as an fp32 load's there."""
    from PIL import Image

    sketch = tmp_path / "sketch.png"
    Image.open(ROOT / "examples" / "hand_drawn" / "hand1_male.png").convert("L").resize((256, 256)).save(sketch)
    got = _run_simulated(demo_params, sketch, "AVX2")
    assert got["native"] is False and got["auto"] == "fp32" and got["auto_warnings"] == 0
    assert got["explicit"] == ["fp32", "fp32"]
    assert len(got["warnings"]) == 1 and "bfloat16" in got["warnings"][0] and "float32" in got["warnings"][0]
    assert got["same_as_fp32"]


# --------------------------------------------------------------------------- the fallback

def test_a_failed_bf16_compile_falls_back_to_fp32_with_one_warning(fresh_probe, demo_params, demo_sketch, monkeypatch):
    """Simulated: the bf16 kernels fail to compile (Jittor raises RuntimeError, as for a
    oneDNN without them). Loading with bf16 warns once, however often, and computes float32."""
    kernels = fresh_probe

    def broken():
        raise RuntimeError("[f 1206 executor.cc:686] Execute fused operator failed. [Reason]: could not create "
                           "a primitive descriptor iterator")

    monkeypatch.setattr(kernels, "_check_reduced_kernels", broken)
    with pytest.warns(UserWarning) as caught:
        first = dfd_kit.load(demo_params, precision="bf16")
        second = dfd_kit.load(demo_params, precision="bf16")
    ours = [w for w in caught if "bfloat16" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "could not create a primitive descriptor iterator" in str(ours[0].message)
    assert first.precision == second.precision == "fp32"
    assert not any(kernels.reduced(c.weight) for _, c in kernels.reducible_convs(first.generator))
    want = dfd_kit.load(demo_params, precision="fp32").generate(demo_sketch, shadows=False)
    assert np.array_equal(first.generate(demo_sketch, shadows=False).image, want.image)


def test_a_converted_layer_outside_inference_computes_float32(demo_sketch):
    """With gradients on (training) a converted convolution widens its weight and runs
    Jittor's own convolution: the same numbers as float32 with the rounded weights."""
    import jittor as jt

    from dfd_kit.fast import kernels

    conv = jt.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    x = jt.array(np.random.default_rng(0).standard_normal((1, 8, 12, 12)).astype(np.float32))
    kernels.reduce_conv(conv)
    rounded = jt.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    rounded.weight, rounded.bias = conv.weight.float32(), conv.bias
    assert np.allclose(conv(x).numpy(), rounded(x).numpy(), atol=1e-5)
    if bf16_works():
        with jt.no_grad():
            assert np.allclose(conv(x).numpy(), rounded(x).numpy(), rtol=0.02, atol=0.02)
