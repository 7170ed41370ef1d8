"""Memory economy of a loaded model: compact cache, mapped linear layers, lazy sketch
decoders, and shadows turned off when the machine cannot hold them."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import dfd_kit
from dfd_kit import loading, pipeline
from dfd_kit.config import COMPONENTS
from dfd_kit.fast import mapped
from dfd_kit.fast.compact import compact_checkpoint
from dfd_kit.loading import checkpoint_file, compact_cache_dir, read_checkpoint

ENCODER = checkpoint_file("encoder", "remainder")


def test_compact_cache_holds_bit_identical_weights(params_copy):
    compact = compact_checkpoint(params_copy, ENCODER)
    original = read_checkpoint(params_copy / ENCODER)
    assert set(compact) == set(original)
    for key, a in original.items():
        assert isinstance(compact[key], np.memmap)
        np.testing.assert_array_equal(compact[key], a)
    assert (compact_cache_dir(params_copy) / ENCODER / "index.json").is_file()


def test_compact_cache_is_rebuilt_when_the_checkpoint_changes(params_copy):
    compact_checkpoint(params_copy, ENCODER)
    state = read_checkpoint(params_copy / ENCODER)
    key = next(iter(state))
    state[key] = state[key] + 1
    loading.write_checkpoint(params_copy / ENCODER, state)
    st = (params_copy / ENCODER).stat()
    os.utime(params_copy / ENCODER, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size: mtime tells
    np.testing.assert_array_equal(compact_checkpoint(params_copy, ENCODER)[key], state[key])


def test_sketch_decoders_load_only_when_shadows_are_asked_for(params_copy, demo_sketch):
    model = dfd_kit.load(params_copy)
    assert model.sketch_decoders.loaded == [] and len(model.sketch_decoders) == len(COMPONENTS)
    model.generate(demo_sketch, shadows=False)
    assert model.sketch_decoders.loaded == []
    r = model.generate(demo_sketch, shadows=True)
    assert model.sketch_decoders.loaded == list(COMPONENTS) and r.shadow is not None


def test_big_linear_layers_stay_mapped_and_compute_the_same(params_copy, demo_model, demo_sketch, monkeypatch):
    monkeypatch.setattr(mapped, "MAPPED_LINEAR_MIN_BYTES", 0)   # the demo's layers are small
    from dfd_kit.fast.mapped import MappedLinear

    model = dfd_kit.load(params_copy)
    assert isinstance(model.encoders["remainder"].to_latent, MappedLinear)
    assert isinstance(model.feature_decoders["nose"].from_latent, MappedLinear)
    a = demo_model.generate(demo_sketch)
    b = model.generate(demo_sketch)
    for c in COMPONENTS:
        np.testing.assert_allclose(b.latents[c], a.latents[c], rtol=1e-5, atol=1e-5)
    assert np.abs(b.generator_output - a.generator_output).max() < 1e-4


def test_a_mapped_model_saves_every_key(params_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(mapped, "MAPPED_LINEAR_MIN_BYTES", 0)
    model = dfd_kit.load(params_copy)
    again = pipeline.save_model(model, tmp_path / "again", dtype=np.float32)
    for key, a in read_checkpoint(params_copy / ENCODER).items():
        np.testing.assert_array_equal(read_checkpoint(again / ENCODER)[key], a)


def test_shadows_are_turned_off_with_a_message_when_memory_is_short(params_copy, demo_sketch, monkeypatch):
    monkeypatch.setattr(pipeline, "available_memory", lambda: 100 << 20)
    model = dfd_kit.load(params_copy)
    with pytest.warns(UserWarning, match=r"shadows are turned off.*GB available"):
        r = model.generate(demo_sketch, shadows=True)
    assert r.shadow is None and r.shadows == {} and r.image is not None
    assert model.sketch_decoders.loaded == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # said once, not at every generation
        model.generate(demo_sketch, shadows=True)


def test_available_memory_is_a_positive_number_of_bytes():
    assert pipeline.available_memory() > 0


def test_mapped_linear_matches_numpy_and_reports_a_truncated_file(tmp_path, monkeypatch):
    """The slice-by-slice mapped product equals x W^T + b (several slices, a last short one,
    slices not on page boundaries), and a weight file cut short is an OSError that says so."""
    import jittor as jt

    from dfd_kit.fast.mapped import MappedLinear

    rng = np.random.default_rng(0)
    w = rng.standard_normal((37, 1000)).astype(np.float32)
    b = rng.standard_normal(37).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    lin = MappedLinear(np.load(tmp_path / "w.npy", mmap_mode="r"), b)
    monkeypatch.setattr(MappedLinear, "SLICE_BYTES", 5 * 4 * 1000)   # 5 rows a slice: 8 slices
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    got = lin(jt.array(x)).numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64) + b, rtol=1e-4, atol=1e-3)
    with open(tmp_path / "w.npy", "r+b") as f:
        f.truncate(lin.offset + 4 * 1000 * 30)
    with pytest.raises(OSError, match="shorter than its header says"):
        lin(jt.array(x))
