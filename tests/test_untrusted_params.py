"""A Params folder as an attacker (or a disk, or a Ctrl-C) might leave it: crafted
checkpoints allocate nothing they do not hold, config.json values are range-checked,
the compact cache and the bank files stay consistent under concurrent loads, exports
and interruptions."""
from __future__ import annotations

import json
import os
import pickle
import threading
import tracemalloc

import numpy as np
import pytest

import dfd_kit
from dfd_kit import ParamsError, loading
from dfd_kit.config import COMPONENTS
from dfd_kit.fast import mapped
from dfd_kit.fast.compact import compact_checkpoint
from dfd_kit.loading import (BANK_MAGIC, bank_file, checkpoint_file, compact_cache_dir, read_bank, read_checkpoint,
                             write_bank)
from dfd_kit.pipeline import load_model, save_model

ENCODER = checkpoint_file("encoder", "nose")


class _Calls:
    """Pickles as ``func(*args)``: what a crafted pickle can make the unpickler call."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# --------------------------------------------------------------------------- crafted checkpoints

def test_a_pickle_cannot_call_the_array_constructor(tmp_path):
    path = tmp_path / "tiny.pkl"
    path.write_bytes(pickle.dumps({"w": _Calls(np.ndarray, (2_000_000,), "f4")}, protocol=4))
    assert path.stat().st_size < 100
    with pytest.raises(ParamsError, match="could not read checkpoint"):
        read_checkpoint(path)


def _peak_bytes_refusing(path, message: str) -> int:
    """Peak Python memory while read_checkpoint refuses ``path`` with a ParamsError."""
    tracemalloc.start()
    try:
        with pytest.raises(ParamsError, match=message):
            read_checkpoint(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reconstruct_with_a_huge_shape_allocates_nothing(tmp_path):
    from numpy.core.multiarray import _reconstruct

    path = tmp_path / "tiny.pkl"
    path.write_bytes(pickle.dumps({"w": _Calls(_reconstruct, np.ndarray, (1 << 28,), b"b")}, protocol=4))
    assert _peak_bytes_refusing(path, "without its data|could not read") < 10 << 20


def test_a_record_claiming_more_bytes_than_the_file_holds_is_refused_before_allocating(tmp_path):
    # PROTO 4, BINBYTES8 with a length of 1 GB, then the file ends
    path = tmp_path / "liar.pkl"
    path.write_bytes(b"\x80\x04\x8e" + (1 << 30).to_bytes(8, "little") + b"x" * 16)
    assert _peak_bytes_refusing(path, "only 16 are left") < 10 << 20


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"w": np.array([1, "a", None], dtype=object)}, protocol=4))
    with pytest.raises(ParamsError, match="refusing array type 'O8'"):
        read_checkpoint(path)


def test_structured_arrays_are_refused(tmp_path):
    path = tmp_path / "fields.pkl"
    path.write_bytes(pickle.dumps({"w": np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])}, protocol=4))
    with pytest.raises(ParamsError, match="refusing array type"):
        read_checkpoint(path)


def test_array_data_that_does_not_fill_its_shape_is_refused(tmp_path):
    good = pickle.dumps({"w": np.arange(4, dtype=np.float32)}, protocol=4)
    bad = good.replace(b"K\x04\x85", b"K\x05\x85")   # shape (4,) -> (5,), data still 16 bytes
    assert bad != good
    (tmp_path / "short.pkl").write_bytes(bad)
    with pytest.raises(ParamsError, match="needs 20 bytes"):
        read_checkpoint(tmp_path / "short.pkl")


def test_arrays_of_every_stored_type_read_back_exactly(tmp_path):
    state = {"f32": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
             "f16": np.arange(5, dtype=np.float16), "big": np.arange(70_000, dtype=np.float32),
             "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
             "swapped": np.arange(3, dtype=">f4"), "scalar": np.float32(2.5)}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(state, protocol=4))
    back = read_checkpoint(tmp_path / "ok.pkl")
    for k, a in state.items():
        np.testing.assert_array_equal(back[k], np.asarray(a, np.float32))
        assert back[k].dtype == np.float32 and back[k].flags.writeable


def test_a_checkpoint_larger_than_its_networks_is_refused_before_it_is_read(params_copy):
    state = read_checkpoint(params_copy / ENCODER)
    state["padding"] = np.zeros(20 << 20, np.uint8)   # 20 MB more than a demo encoder can hold
    loading.write_checkpoint(params_copy / ENCODER, state)
    with pytest.raises(ParamsError, match=r"more than the .* MB that the networks of this model can hold") as e:
        dfd_kit.load(params_copy)
    assert ENCODER in str(e.value)


# --------------------------------------------------------------------------- config.json

def edit_config(root, change):
    path = root / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("change, says", [
    (lambda c: c["layout"].update(size=-256), "layout.size must be a whole number from 32"),
    (lambda c: c["layout"].update(size=1 << 30), "layout.size must be a whole number from 32 to 2048"),
    (lambda c: c["layout"]["boxes"]["mouth"].update(x=200), r"layout.boxes.mouth \(200, 150, size 96\) must lie inside"),
    (lambda c: c["layout"]["boxes"]["nose"].update(size=100), "layout.boxes.nose.size must be a multiple of 32"),
    (lambda c: c["layout"].update(nose_rows=0), "layout.nose_rows must be a whole number from 1 to 96"),
    (lambda c: c["layout"].update(paste_order=["mouth", "mouth"]), "layout.paste_order must list"),
    (lambda c: c.update(k=0), "k must be a whole number from 2"),
    (lambda c: c.update(k="15"), "k must be a whole number"),
    (lambda c: c["nets"].update(latent_dim=10 ** 9), "nets.latent_dim must be a whole number from 1 to 8192"),
    (lambda c: c["nets"].update(decoder_channels=[96, 64]), "nets.decoder_channels must have one width more"),
    (lambda c: c["nets"].update(encoder_channels=[16, 0, 48, 64, 96]), r"nets.encoder_channels\[1\]"),
    (lambda c: c["nets"].update(n_downsample=40), "nets.n_downsample must be a whole number from 0 to 8"),
    (lambda c: c.update(blend_weight=1.5), r"blend_weight must be a number in \[0, 1\], not 1.5"),
    (lambda c: c.update(blend_weight="0.5"), r"blend_weight must be a number in \[0, 1\], not '0.5'"),
    (lambda c: c.update(blend_weight=True), r"blend_weight must be a number in \[0, 1\], not True"),
    (lambda c: c.update(blend_weight=float("nan")), r"blend_weight must be a number in \[0, 1\], not nan"),
], ids=["negative size", "huge size", "box outside", "box size", "nose rows", "paste order", "k zero",
        "k string", "latent", "decoder list", "zero width", "downsample", "weight above 1", "weight string",
        "weight bool", "weight nan"])
def test_out_of_range_config_values_are_named(params_copy, change, says):
    edit_config(params_copy, change)
    with pytest.raises(ParamsError, match=says) as e:
        dfd_kit.load(params_copy)
    assert "config.json" in str(e.value) and "Fix them" in str(e.value)


def test_every_problem_of_a_config_is_listed_at_once(params_copy):
    edit_config(params_copy, lambda c: (c.update(k=1), c["nets"].update(ngf=0)))
    with pytest.raises(ParamsError, match="2 problems") as e:
        dfd_kit.load(params_copy)
    assert "nets.ngf" in str(e.value) and "k must be" in str(e.value)


# --------------------------------------------------------------------------- compact cache

def test_two_loads_at_once_build_the_compact_copy_once_and_both_succeed(params_copy, monkeypatch):
    """Two kernels (here: threads, which flock tells apart too) loading the same new
    checkpoint: the second waits for the first's copy instead of deleting it mid-write."""
    import shutil

    shutil.rmtree(compact_cache_dir(params_copy), ignore_errors=True)   # copied along with the folder
    real_save, saves, converting = np.save, [], threading.Event()

    def slow_save(*a, **k):
        saves.append(1)
        converting.set()
        threading.Event().wait(0.02)
        return real_save(*a, **k)

    monkeypatch.setattr(np, "save", slow_save)
    results, errors = [], []

    def load():
        try:
            results.append(compact_checkpoint(params_copy, ENCODER))
        except Exception as e:   # noqa: BLE001 -- reported below
            errors.append(e)

    first, second = threading.Thread(target=load), threading.Thread(target=load)
    first.start()
    assert converting.wait(30)    # the second load starts while the first is converting
    second.start()
    first.join()
    second.join()
    assert not errors, errors
    state = read_checkpoint(params_copy / ENCODER)
    assert len(saves) == len(state)   # converted once
    for r in results:
        for k, a in state.items():
            assert isinstance(r[k], np.memmap)   # from the cache, not "kept in memory instead"
            np.testing.assert_array_equal(r[k], a)


def test_the_compact_copy_follows_the_content_not_the_size_and_time(params_copy):
    first = compact_checkpoint(params_copy, ENCODER)
    key = next(iter(first))
    path = params_copy / ENCODER
    st = path.stat()
    state = read_checkpoint(path)
    state[key] = state[key] + 1           # same size ...
    loading.write_checkpoint(path, state)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))   # ... and the same modification time
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    np.testing.assert_array_equal(compact_checkpoint(params_copy, ENCODER)[key], state[key])
    # a touched file with the same content reuses its copy
    folder = compact_cache_dir(params_copy) / ENCODER
    before = {p.name: p.stat().st_ino for p in folder.rglob("*.npy")}
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    compact_checkpoint(params_copy, ENCODER)
    assert {p.name: p.stat().st_ino for p in folder.rglob("*.npy")} == before


def changed(model):
    """``model`` with every weight of every network changed."""
    for net in [*model.encoders.values(), *model.sketch_decoders.values(), *model.feature_decoders.values(),
                model.generator]:
        for v in net.state_dict().values():
            v.assign(v * 1.5 + 0.01)
    return model


def test_a_reexport_leaves_a_loaded_model_as_it_was(params_copy, demo_sketch, monkeypatch):
    """Weights mapped from the cache, lazily loaded sketch decoders and memory-mapped
    banks all keep the export that was loaded, while a new export replaces the folder."""
    from conftest import make_demo_model

    monkeypatch.setattr(mapped, "MAPPED_LINEAR_MIN_BYTES", 0)   # map even the demo's small layers
    model = load_model(params_copy)
    bank_before = np.array(model.banks["male"]["nose"])
    before = {p: loading.file_sha256(p) for p in params_copy.glob("*/*.pkl")}
    save_model(changed(make_demo_model(seed=1)), params_copy, dtype=np.float32)
    assert all(loading.file_sha256(p) != sha for p, sha in before.items())   # every file is new
    other = load_model(params_copy)          # rebuilds the compact copies of the new export
    first = model.generate(demo_sketch, shadows=True)   # sketch decoders load only now
    reference = load_model(params_copy)
    assert not np.array_equal(other.banks["male"]["nose"], bank_before)
    np.testing.assert_array_equal(model.banks["male"]["nose"], bank_before)
    # the same face and shadows as a fresh load of the first export would give
    save_model(model, params_copy.parent / "first", dtype=np.float32)
    again = load_model(params_copy.parent / "first").generate(demo_sketch, shadows=True)
    np.testing.assert_array_equal(first.image, again.image)
    for c in COMPONENTS:
        np.testing.assert_array_equal(first.shadows[c], again.shadows[c])
    assert not np.array_equal(reference.generate(demo_sketch, shadows=True).image, first.image)


# --------------------------------------------------------------------------- bank files

def test_bank_files_carry_their_type_and_a_checksum(tmp_path):
    bank = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    path = tmp_path / "b.bin"
    write_bank(path, bank, "float16")
    assert path.read_bytes().startswith(BANK_MAGIC)
    # the header, not the caller's (or config.json's) type, says how to read it
    np.testing.assert_array_equal(read_bank(path, 8, "float32"), bank.astype(np.float16).astype(np.float32))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ParamsError, match="checksum"):
        read_bank(path, 8)


def test_headerless_bank_files_still_read_by_their_size(tmp_path):
    bank = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    (tmp_path / "old.bin").write_bytes(bank.tobytes())          # the official format
    np.testing.assert_array_equal(read_bank(tmp_path / "old.bin", 4), bank)
    (tmp_path / "old16.bin").write_bytes(bank.astype("<f2").tobytes())
    np.testing.assert_array_equal(read_bank(tmp_path / "old16.bin", 4, "float16"),
                                  bank.astype(np.float16).astype(np.float32))


def test_banks_left_half_densified_still_load_right(demo_model, tmp_path):
    """Ctrl-C in densify_banks after some banks were rewritten as int8 but before
    config.json said so: each bank still reads as what it holds."""
    root = save_model(demo_model, tmp_path / "p")                 # float16 banks, config says float16
    new = np.random.default_rng(2).standard_normal((40, demo_model.config.nets.latent_dim)).astype(np.float32)
    write_bank(root / bank_file("nose", "male"), new, "int8")     # what densify_banks writes first
    assert json.loads((root / "config.json").read_text())["bank_dtype"] == "float16"
    model = load_model(root)
    step = (new.max(0) - new.min(0)) / 255
    assert model.banks["male"]["nose"].shape == new.shape
    assert np.all(np.abs(model.banks["male"]["nose"] - new) <= step / 2 * 1.001 + 1e-6)
    np.testing.assert_array_equal(model.banks["male"]["mouth"],
                                  np.asarray(demo_model.banks["male"]["mouth"]).astype(np.float16).astype(np.float32))


def test_a_rewritten_bank_does_not_change_under_a_reader(tmp_path):
    path = tmp_path / "b.bin"
    write_bank(path, np.zeros((10, 4), np.float32))
    mapped = read_bank(path, 4)
    write_bank(path, np.ones((10, 4), np.float32))
    assert isinstance(mapped, np.memmap) and np.all(mapped == 0)
    np.testing.assert_array_equal(read_bank(path, 4), 1.0)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")

    def half_then_interrupt(f):
        f.write("ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loading.atomic_write(path, half_then_interrupt, "w")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]
