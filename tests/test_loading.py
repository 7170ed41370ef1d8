"""Reading Params/ folders: what is missing or damaged is named, nothing unsafe is
unpickled, both jittor checkpoint formats load, and a saved model loads back the same."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import dfd_kit
from dfd_kit import ParamsError
from dfd_kit.config import COMPONENTS, DEMO
from dfd_kit.loading import (GENERATOR_FILE, bank_file, bank_header, checkpoint_file, generator_key_table,
                             INT8_SCALE, official_param_files, read_bank, read_checkpoint,
                             write_bank, write_checkpoint)
from dfd_kit.pipeline import load_model, save_model

ENCODER = checkpoint_file("encoder", "nose")          # AE_whole/latest_net_encoder_nose.pkl


def message(excinfo) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------- missing files

def test_missing_folder_says_how_to_get_weights(tmp_path):
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(tmp_path / "no_such_params")
    assert "does not exist" in message(e) and "download-official" in message(e)


def test_empty_folder_lists_every_missing_file(tmp_path):
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(tmp_path)
    files = official_param_files()
    assert f"{len(files)} of {len(files)} files are missing" in message(e)
    for f in files:
        assert f in message(e)
    assert "download-official" in message(e)


def test_half_copied_folder_lists_exactly_the_missing_files(params_copy):
    files = official_param_files()
    gone = files[::2]
    for f in gone:
        (params_copy / f).unlink()
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    listed = {line.strip() for line in message(e).splitlines()}
    assert set(gone) <= listed
    assert not (set(files) - set(gone)) & listed
    assert f"{len(gone)} of {len(files)}" in message(e) and "download-official" in message(e)


def test_without_shadows_the_sketch_decoders_are_not_needed(params_copy):
    for c in COMPONENTS:
        (params_copy / checkpoint_file("sketch_decoder", c)).unlink()
    with pytest.raises(ParamsError, match="sketch_decoder|decoder_eye1_image"):
        dfd_kit.load(params_copy)
    model = dfd_kit.load(params_copy, shadows=False)
    assert model.sketch_decoders == {}


# --------------------------------------------------------------------------- damaged checkpoints

def edit_checkpoint(root, rel, change):
    state = read_checkpoint(root / rel)
    change(state)
    write_checkpoint(root / rel, state)


def test_checkpoint_with_a_missing_key(params_copy):
    edit_checkpoint(params_copy, ENCODER, lambda s: s.pop("conv.4.conv.weight"))
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    assert ENCODER in message(e) and "missing key stages.2.resample.conv.weight" in message(e)


def test_checkpoint_with_an_extra_key(params_copy):
    edit_checkpoint(params_copy, ENCODER, lambda s: s.update({"conv.99.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    assert ENCODER in message(e) and "unexpected key conv.99.weight" in message(e)


def test_checkpoint_with_a_wrong_shape(params_copy):
    def widen(s):
        s["fc_mu.0.weight"] = np.zeros((7, 3), np.float32)
    edit_checkpoint(params_copy, ENCODER, widen)
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    assert ENCODER in message(e) and "to_latent.weight" in message(e) and "(7, 3)" in message(e)


def test_truncated_checkpoint(params_copy):
    path = params_copy / GENERATOR_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    assert GENERATOR_FILE in message(e) and "download it again" in message(e)


def test_truncated_feature_bank(params_copy):
    rel = bank_file("mouth", "female")
    path = params_copy / rel
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    assert rel in message(e) and "truncated" in message(e)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_code_is_refused_without_running_it(params_copy, tmp_path):
    marker = tmp_path / "pwned"
    path = params_copy / ENCODER
    path.write_bytes(pickle.dumps({"conv.0.conv.weight": _RunsCode(marker)}, protocol=4))
    with pytest.raises(ParamsError) as e:
        dfd_kit.load(params_copy)
    assert "refusing to load" in message(e) and "system" in message(e) and ENCODER in message(e)
    assert not marker.exists()


# --------------------------------------------------------------------------- checkpoint formats

def jt13_bytes(state) -> bytes:
    """jittor >= 1.3 layout: pickle + sha1(pickle) + b'HCAJSLHD'."""
    body = pickle.dumps(dict(state), protocol=4)
    return body + hashlib.sha1(body).digest() + b"HCAJSLHD"


def test_jittor13_format_loads(params_copy, demo_params):
    for rel in (ENCODER, GENERATOR_FILE):
        path = params_copy / rel
        path.write_bytes(jt13_bytes(read_checkpoint(path)))
        for k, v in read_checkpoint(demo_params / rel).items():
            np.testing.assert_array_equal(read_checkpoint(path)[k], v)
    a, b = load_model(demo_params), load_model(params_copy)
    sketch = np.full((DEMO.layout.size,) * 2, 255, np.uint8)
    sketch[100:140, 60:200] = 0
    np.testing.assert_array_equal(a.generate(sketch, shadows=False).image, b.generate(sketch, shadows=False).image)


def test_jittor13_save_of_vars_loads(demo_params, tmp_path):
    """What jittor 1.3's own jt.save writes: pickled jittor.Var objects with the trailer."""
    import jittor as jt

    state = read_checkpoint(demo_params / ENCODER)
    path = tmp_path / "jt13.pkl"
    jt.save({k: jt.array(v) for k, v in state.items()}, str(path))
    assert path.read_bytes().endswith(b"HCAJSLHD")
    loaded = read_checkpoint(path)
    assert loaded.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(loaded[k], state[k])


def test_jittor13_checksum_mismatch_is_reported(params_copy):
    path = params_copy / ENCODER
    data = bytearray(jt13_bytes(read_checkpoint(path)))
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ParamsError, match="checksum"):
        dfd_kit.load(params_copy)


def test_generator_without_instancenorm_affine_keys_defaults_to_identity(params_copy):
    # A generator converted from PyTorch pix2pixHD has no InstanceNorm weight/bias.
    norm_prefixes = [o for o, kit in generator_key_table(DEMO.nets.n_downsample, DEMO.nets.n_blocks) if "norm" in kit]

    def strip(s):
        for o in norm_prefixes:
            del s[f"{o}.weight"], s[f"{o}.bias"]
    before = read_checkpoint(params_copy / GENERATOR_FILE)
    edit_checkpoint(params_copy, GENERATOR_FILE, strip)
    after = read_checkpoint(params_copy / GENERATOR_FILE)
    assert len(before) - len(after) == 2 * len(norm_prefixes) > 0
    with pytest.warns(UserWarning, match="InstanceNorm"):
        model = dfd_kit.load(params_copy)
    norms = {k: v.numpy() for k, v in model.generator.state_dict().items() if ".norm" in k and
             k.endswith((".weight", ".bias"))}
    assert len(norms) == len(before) - len(after)
    for k, v in norms.items():
        np.testing.assert_array_equal(v, 1.0 if k.endswith("weight") else 0.0)


def test_complete_checkpoints_load_without_warnings(demo_params):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dfd_kit.load(demo_params)


# --------------------------------------------------------------------------- save / load

def test_save_then_load_gives_the_same_outputs(demo_model, demo_params, demo_sketch):
    loaded = load_model(demo_params)
    assert loaded.config == demo_model.config
    for s in ("male", "female"):
        for c in COMPONENTS:
            np.testing.assert_array_equal(loaded.banks[s][c], demo_model.banks[s][c])
    a = demo_model.generate(demo_sketch, sex="female")
    b = loaded.generate(demo_sketch, sex="female")
    for c in COMPONENTS:
        np.testing.assert_array_equal(a.latents[c], b.latents[c])
        np.testing.assert_array_equal(a.projections[c].vector, b.projections[c].vector)
        np.testing.assert_array_equal(a.shadows[c], b.shadows[c])
    np.testing.assert_array_equal(a.generator_output, b.generator_output)
    np.testing.assert_array_equal(a.image, b.image)


def test_float16_storage_loads_as_float32_and_stays_close(demo_model, demo_sketch, tmp_path):
    root = save_model(demo_model, tmp_path / "half")   # the default: float16 storage
    assert all(v.dtype == np.float32 for v in read_checkpoint(root / ENCODER).values())
    half = load_model(root)
    a = demo_model.generate(demo_sketch, shadows=False)
    b = half.generate(demo_sketch, shadows=False)
    assert np.abs(a.generator_output - b.generator_output).max() < 0.05
    assert (root / "config.json").is_file()


def test_int8_banks_read_back_within_half_a_step_and_load(demo_model, demo_sketch, tmp_path):
    rng = np.random.default_rng(0)
    bank = (rng.normal(size=(300, 16)) * np.linspace(0.1, 40, 16)).astype(np.float32)
    bank[:, 3] = 2.5   # a constant dimension (step 0) reads back exactly
    write_bank(tmp_path / "b.bin", bank, "int8")
    rows_bytes = (tmp_path / "b.bin").stat().st_size - bank_header(tmp_path / "b.bin")["offset"]
    assert rows_bytes == 2 * 4 * 16 + 300 * 16   # offsets, steps, one byte a value
    back = read_bank(tmp_path / "b.bin", 16, "int8")
    half_step = (bank.max(0) - bank.min(0)) / 255 / 2
    assert back.dtype == np.float32 and back.shape == bank.shape
    assert np.all(np.abs(back - bank) <= half_step * 1.001 + 1e-6) and np.all(back[:, 3] == 2.5)
    # a whole model with int8 banks: config.json says so, the banks stay close, and it generates
    root = save_model(demo_model, tmp_path / "int8", bank_dtype="int8")
    assert json.loads((root / "config.json").read_text())["bank_dtype"] == "int8"
    small = load_model(root)
    for s in ("male", "female"):
        for c in COMPONENTS:
            b = np.asarray(demo_model.banks[s][c])
            assert np.abs(small.banks[s][c] - b).max() <= (b.max(0) - b.min(0)).max() / 255 / 2 * 1.001 + 1e-6
    res = small.generate(demo_sketch, shadows=False)
    assert res.image.shape == (DEMO.layout.size, DEMO.layout.size, 3) and res.image.dtype == np.uint8


def test_int8_sketch_decoders_read_back_within_half_a_step_and_change_only_the_shadows(
        demo_model, demo_sketch, tmp_path):
    from dfd_kit.training.recipes import quantize_sketch_decoders

    root = save_model(demo_model, tmp_path / "q")   # float16, as the demo stores its weights
    rel = checkpoint_file("sketch_decoder", "remainder")
    before, size = read_checkpoint(root / rel), (root / rel).stat().st_size
    quantize_sketch_decoders(root)
    raw = pickle.loads((root / rel).read_bytes())
    after = read_checkpoint(root / rel)
    assert (root / rel).stat().st_size < 0.55 * size and sorted(after) == sorted(before)
    for k, a in before.items():
        if a.ndim < 2:   # biases and norms keep their float16
            np.testing.assert_array_equal(after[k], a)
            continue
        assert raw[k].dtype == np.int8 and raw[k + INT8_SCALE].shape == (len(a),)
        half_step = raw[k + INT8_SCALE].reshape((-1,) + (1,) * (a.ndim - 1)) / 2
        assert np.all(np.abs(after[k] - a) <= half_step * 1.001 + 1e-7), k
    # the sketch decoders draw the shadows only: the face is the same to the bit
    half, small = load_model(save_model(demo_model, tmp_path / "half")), load_model(root)
    a, b = half.generate(demo_sketch, sex="male"), small.generate(demo_sketch, sex="male")
    np.testing.assert_array_equal(a.image, b.image)
    for c in COMPONENTS:
        assert np.abs(a.shadows[c].astype(int) - b.shadows[c].astype(int)).max() <= 3, c
    # a code without its scales is a damaged file
    del raw[next(k for k in raw if k.endswith(INT8_SCALE))]
    write_checkpoint(root / rel, raw)
    with pytest.raises(ParamsError, match="without its scales"):
        read_checkpoint(root / rel)


def test_truncated_int8_bank_and_unknown_bank_type_are_reported(params_copy):
    root = save_model(load_model(params_copy), params_copy.parent / "int8", bank_dtype="int8")
    path = root / bank_file("nose", "female")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ParamsError, match="truncated"):
        load_model(root)
    cfg = json.loads((root / "config.json").read_text())
    cfg["bank_dtype"] = "int4"
    (root / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ParamsError, match="bank_dtype must be one of"):
        load_model(root)


def test_bad_config_json_is_reported(params_copy):
    (params_copy / "config.json").write_text("{not json")
    with pytest.raises(ParamsError, match="config.json"):
        dfd_kit.load(params_copy)


def test_the_bundled_demo_model_fits_its_30_mb_and_loads_by_name():
    # The budget for the committed model: weights and banks together at most 30 MB.
    from dfd_kit import PARAMS_ROOT
    from dfd_kit.training.recipes import DEMO_BANK_FACES, DEMO_BANK_PART_FACES

    root = PARAMS_ROOT / "demo"
    files = list(root.glob("*/*.pkl")) + list(root.glob("*/*.bin"))
    assert len(files) == 26 and sum(f.stat().st_size for f in files) <= 30_000_000
    model = dfd_kit.load("demo")
    assert Path(model.source).resolve() == root.resolve()
    for s in ("male", "female"):   # the recipe's bank sizes are the shipped ones (half the faces per sex)
        assert len(model.banks[s]["remainder"]) == DEMO_BANK_FACES // 2
        assert len(model.banks[s]["nose"]) == DEMO_BANK_PART_FACES // 2
