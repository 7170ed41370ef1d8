"""dfd_kit.training on a tiny model and a tiny synthetic dataset (64 px, 16 samples).

Jittor compiles a kernel the first time it meets a shape, so every test uses the same
tiny config and batch size; the first run of this file is slower than the next ones.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import dfd_kit  # before jittor
from dfd_kit.config import COMPONENTS, Box, Layout, ModelConfig, NetworkConfig
from dfd_kit.data import load_samples

ROOT = Path(__file__).resolve().parents[1]

TINY = ModelConfig(
    # every part keeps some visible pixels after pasting (the eyes overlap the nose's top rows)
    layout=Layout(size=64, boxes={"left_eye": Box(0, 0, 32), "right_eye": Box(32, 0, 32),
                                  "nose": Box(16, 24, 32), "mouth": Box(16, 32, 32)}, nose_rows=16),
    # 4 resolution steps, not 5: a 32 px crop then ends at 2 x 2 (residual blocks reflect-pad by 1)
    nets=NetworkConfig(latent_dim=32, encoder_channels=(8, 8, 8, 8), decoder_channels=(8, 8, 8, 8, 8),
                       feature_decoder_channels=(8, 8, 8, 8, 8), feature_channels=4, ngf=8, n_downsample=2,
                       n_blocks=1),
    k=3,
)
N_SAMPLES = 16
BATCH = 4


def tr():
    """dfd_kit.training's checkpoint files and stages (imported lazily: the module import
    pulls in Jittor)."""
    from dfd_kit.training import banks, checkpoints, stage1, stage2

    return checkpoints, stage1, banks, stage2


def stage1_cfg(**kw):
    from dfd_kit.training import Stage1Config

    base = dict(steps=6, batch_size=BATCH, lr=2e-3, seed=0, checkpoint_every=0, checkpoint_minutes=None,
                figures=False, progress=False, augment_prob=0.25)
    base.update(kw)
    return Stage1Config(**base)


def stage2_cfg(**kw):
    from dfd_kit.training import Stage2Config

    base = dict(steps=6, batch_size=BATCH, lr=2e-3, seed=0, checkpoint_every=0, checkpoint_minutes=None,
                figures=False, progress=False, ndf=8, d_layers=2, project_prob=0.5)
    base.update(kw)
    return Stage2Config(**base)


def write_tiny_dataset(root: Path, n: int = N_SAMPLES, seed: int = 0) -> Path:
    """Cartoon faces: a sketch (lines) and a 'photo' (the same shapes filled in colour)."""
    from dfd_kit.data import write_samples_csv

    rng = np.random.default_rng(seed)
    (root / "sketch").mkdir(parents=True)
    (root / "photo").mkdir()
    rows = []
    for i in range(n):
        sex = "male" if i % 2 == 0 else "female"
        sk = Image.new("L", (64, 64), 255)
        ph = Image.new("RGB", (64, 64), (235, 235, 235))
        ds, dp = ImageDraw.Draw(sk), ImageDraw.Draw(ph)
        w = int(rng.integers(18, 26))
        face = (32 - w, 6, 32 + w, 60)
        hair = (40, 30, 20) if sex == "male" else (200, 150, 60)
        dp.ellipse(face, fill=(230, 190, 160))
        dp.pieslice((32 - w, 2, 32 + w, 40), 180, 360, fill=hair)
        ds.ellipse(face, outline=0)
        ey = int(rng.integers(26, 40))   # ears: every remainder crop differs
        for x0 in (32 - w - 4, 32 + w):
            ds.ellipse((x0, ey, x0 + 4, ey + 8), outline=0)
            dp.ellipse((x0, ey, x0 + 4, ey + 8), fill=(220, 170, 140))
        for cx in (16 + int(rng.integers(-2, 3)), 48 + int(rng.integers(-2, 3))):
            r = int(rng.integers(2, 5))
            ds.ellipse((cx - r, 24 - r, cx + r, 24 + r), outline=0)
            dp.ellipse((cx - r, 24 - r, cx + r, 24 + r), fill=(60, 90, 160))
        ny = int(rng.integers(30, 38))
        ds.line((32, 28, 32, ny), fill=0)
        dp.line((32, 28, 32, ny), fill=(180, 120, 100), width=2)
        mw = int(rng.integers(5, 11))
        ds.arc((32 - mw, 40, 32 + mw, 50), 0, 180, fill=0)
        dp.arc((32 - mw, 40, 32 + mw, 50), 0, 180, fill=(190, 40, 60), width=2)
        sid = f"{i:05d}"
        sk.save(root / "sketch" / f"{sid}.png")
        ph.save(root / "photo" / f"{sid}.png")
        rows.append((sid, sex))
    write_samples_csv(root, rows)
    return root


def weights(modules) -> dict:
    return {name: {k: v.numpy().copy() for k, v in m.state_dict().items()} for name, m in modules.items()}


def assert_same_weights(a: dict, b: dict):
    """Bit for bit."""
    assert a.keys() == b.keys()
    for name in a:
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name}.{k}")


def stage1_modules(res):
    return {**{f"e.{c}": m for c, m in res.nets["encoders"].items()},
            **{f"d.{c}": m for c, m in res.nets["sketch_decoders"].items()}}


def stage2_modules(res):
    return {**{f"f.{c}": m for c, m in res.nets["feature_decoders"].items()}, "g": res.nets["generator"],
            "d": res.nets["discriminator"]}


def kill_after(step):
    from dfd_kit.training import SimulatedKill

    def hook(s):
        if s == step:
            raise SimulatedKill(s)
    return hook


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one OpenMP thread is faster, and far faster on a busy machine."""
    from dfd_kit.training.parallel import omp_threads

    with omp_threads(1):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="module")
def data(data_dir):
    from dfd_kit.training import TrainingData

    return TrainingData(data_dir, TINY.layout, photos=True, progress=False)


@pytest.fixture(scope="module")
def trained_stage1(data_dir, data, tmp_path_factory):
    """An output folder after 6 stage-1 steps and the bank build."""
    _, stage1, banks, _ = tr()
    out = tmp_path_factory.mktemp("run")
    stage1.train_stage1(data_dir, out, TINY, stage1_cfg(), data=data)
    banks.build_banks(out, data=data, progress=False)
    return out


def stage1_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- stage 1

def test_stage1_training_lowers_the_reconstruction_loss(data_dir, data, tmp_path):
    stage1 = tr()[1]
    res = stage1.train_stage1(data_dir, tmp_path, TINY, stage1_cfg(steps=16, augment_prob=0.0), data=data)
    totals = [h["total"] for h in res.history]
    assert len(totals) == 16
    assert np.mean(totals[-4:]) < 0.8 * np.mean(totals[:4])
    assert all(not m.is_training() for m in res.nets["encoders"].values())   # eval mode at the end


def test_ink_weighted_loss_makes_a_blank_reconstruction_lose_to_a_faint_one():
    # Thin lines: a blank (all paper) output is the L1 optimum against a faint copy of the
    # lines; weighting the ink pixels is what makes the auto-encoders draw lines at all.
    import jittor as jt
    stage1 = tr()[1]
    target = np.ones((1, 1, 32, 32), np.float32)
    target[..., 10, 4:28] = -1.0                        # one line: 24 of 1024 pixels
    blank = np.ones_like(target)
    faint = np.where(target < 0, 0.0, 0.9).astype(np.float32)   # the line in grey, paper slightly off
    loss = lambda out, kind, w: stage1.reconstruction_loss(jt.array(out), jt.array(target), kind, w).item()  # noqa: E731
    assert loss(blank, "l1", 0.0) < loss(faint, "l1", 0.0)
    assert loss(blank, "mse", 4.0) > loss(faint, "mse", 4.0)
    w = 1 + 4.0 * (target < 0)
    assert loss(faint, "mse", 4.0) == pytest.approx(float(((faint - target) ** 2 * w).sum() / w.sum()), rel=1e-5)


def test_stage1_resumed_after_a_kill_matches_an_uninterrupted_run(data_dir, data, tmp_path):
    checkpoints, stage1 = tr()[:2]
    a = stage1.train_stage1(data_dir, tmp_path / "a", TINY, stage1_cfg(steps=6), data=data)
    cfg = stage1_cfg(steps=6, checkpoint_every=3)
    with pytest.raises(dfd_kit.training.SimulatedKill):   # dies after step 4: step 4 is lost, step 3 saved
        stage1.train_stage1(data_dir, tmp_path / "b", TINY, cfg, data=data, on_step=kill_after(4))
    b = stage1.train_stage1(data_dir, tmp_path / "b", TINY, cfg, data=data)
    assert b.step == 6 and b.history[-1]["step"] == 6
    assert_same_weights(weights(stage1_modules(a)), weights(stage1_modules(b)))
    ck_a = checkpoints.load_checkpoint(a.checkpoint)
    ck_b = checkpoints.load_checkpoint(b.checkpoint)
    for ma, mb in zip(ck_a["optimizers"]["adam"]["m"][0], ck_b["optimizers"]["adam"]["m"][0]):
        np.testing.assert_array_equal(ma, mb)


def test_a_run_resumes_when_only_the_default_blend_weight_changed(tmp_path):
    """blend_weight is a default for generation that training never reads: a run begun before a
    recipe changed it goes on and records the new one; any other change is refused."""
    from dfd_kit.training.checkpoints import read_model_config, write_model_config

    older = json.loads(TINY.to_json())
    del older["blend_weight"]                 # a run folder written before the field existed
    assert ModelConfig.from_dict(older) == TINY and TINY.blend_weight == 1.0
    (tmp_path / "config.json").write_text(json.dumps(older))
    half = dataclasses.replace(TINY, blend_weight=0.5)
    assert write_model_config(tmp_path, half) == half and read_model_config(tmp_path) == half
    assert ModelConfig.from_dict(json.loads(half.to_json())) == half
    with pytest.raises(dfd_kit.errors.ConfigError, match="another model config"):
        write_model_config(tmp_path, dataclasses.replace(half, k=TINY.k + 1))


def test_ctrl_c_finishes_the_step_saves_and_a_rerun_resumes_bit_for_bit(data_dir, data, tmp_path):
    checkpoints, stage1 = tr()[:2]
    a = stage1.train_stage1(data_dir, tmp_path / "a", TINY, stage1_cfg(steps=6), data=data)
    handler_before = signal.getsignal(signal.SIGINT)

    def ctrl_c_after_step_2(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(dfd_kit.TrainingInterrupted, match="stopped at step 3.*resume"):
        stage1.train_stage1(data_dir, tmp_path / "b", TINY, stage1_cfg(steps=6), data=data,
                            on_step=ctrl_c_after_step_2)
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert checkpoints.load_checkpoint(tmp_path / "b" / "stage1" / "checkpoint.npz")["step"] == 3
    b = stage1.train_stage1(data_dir, tmp_path / "b", TINY, stage1_cfg(steps=6), data=data)
    assert b.step == 6
    assert_same_weights(weights(stage1_modules(a)), weights(stage1_modules(b)))


def test_a_finished_stage_is_not_trained_again(data_dir, data, tmp_path):
    stage1 = tr()[1]
    stage1.train_stage1(data_dir, tmp_path, TINY, stage1_cfg(steps=2), data=data)
    again = stage1.train_stage1(data_dir, tmp_path, TINY, stage1_cfg(steps=2), data=data)
    assert again.step == 2 and again.stopped_by == ""


def test_the_time_budget_stops_a_stage_and_saves_it(data_dir, data, tmp_path):
    checkpoints, stage1 = tr()[:2]
    res = stage1.train_stage1(data_dir, tmp_path, TINY, stage1_cfg(steps=10_000, minutes=1e-9), data=data)
    assert res.stopped_by == "time" and res.step == 1
    assert checkpoints.load_checkpoint(res.checkpoint)["step"] == 1


# --------------------------------------------------------------------------- checkpoint files

class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def as_legacy_checkpoint(stage_dir: Path) -> Path:
    """Rewrite a stage's checkpoint as dfd_kit wrote it before format 2: the same state
    dict pickled (protocol 4) to checkpoint.pkl, with format 1."""
    import pickle

    checkpoints = tr()[0]
    state = checkpoints.load_checkpoint(stage_dir / "checkpoint.npz")
    (stage_dir / "checkpoint.npz").unlink()
    with open(stage_dir / "checkpoint.pkl", "wb") as f:
        pickle.dump({**state, "format": 1}, f, protocol=4)
    return stage_dir / "checkpoint.pkl"


def test_a_checkpoint_keeps_arrays_numbers_and_generator_state_exactly(tmp_path):
    checkpoints = tr()[0]
    rng = np.random.default_rng(3)
    rng.random(5)
    state = {"format": checkpoints.CHECKPOINT_FORMAT, "step": 7, "elapsed_s": 0.1 + 0.2,
             "history": [{"step": 1, "loss": float("nan"), "sec": 1e-310}], "cfg": {"minutes": None, "on": True},
             "rng": rng.bit_generator.state, "w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
             "m": [[np.ones(3, np.float16)], [np.zeros((0, 2), np.int64)]]}
    path = checkpoints.save_checkpoint(tmp_path / "checkpoint.npz", state)
    back = checkpoints.load_checkpoint(path)
    assert back["elapsed_s"] == 0.1 + 0.2 and back["history"][0]["sec"] == 1e-310
    assert np.isnan(back["history"][0]["loss"]) and back["cfg"] == {"minutes": None, "on": True}
    assert back["rng"] == rng.bit_generator.state   # 128-bit integers and all
    np.testing.assert_array_equal(back["w"], state["w"])
    assert back["m"][0][0].dtype == np.float16 and back["m"][1][0].shape == (0, 2)
    with np.load(path, allow_pickle=False) as z:   # a plain .npz: arrays and a JSON document
        assert json.loads(z["state"].tobytes())["step"] == 7


def test_a_pickled_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    import pickle

    checkpoints = tr()[0]
    marker = tmp_path / "pwned"
    path = tmp_path / "stage1" / "checkpoint.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"format": 1, "step": _RunsCode(marker)}, protocol=4))
    with pytest.raises(dfd_kit.errors.ConfigError, match="refusing to load posix.system|refusing to load os.system"):
        checkpoints.load_checkpoint(path)
    assert not marker.exists()


def test_an_npz_checkpoint_with_a_pickled_array_is_refused_without_running_it(tmp_path):
    checkpoints = tr()[0]
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.npz"
    np.savez(path, state=np.frombuffer(b'{"format": 2}', np.uint8),
             a0=np.array([_RunsCode(marker)], dtype=object))
    with pytest.raises(dfd_kit.errors.ConfigError, match="not numbers"):
        checkpoints.load_checkpoint(path)
    assert not marker.exists()


def test_an_npz_checkpoint_claiming_a_huge_array_is_refused_before_reading(tmp_path):
    import io
    import zipfile

    checkpoints = tr()[0]
    fake = io.BytesIO()   # a 16 GB float32 array by its header, 16 bytes of data
    np.lib.format.write_array_header_1_0(fake, {"descr": "<f4", "fortran_order": False, "shape": (4_000_000_000,)})
    path = tmp_path / "checkpoint.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("state.npy", _npy(np.frombuffer(b'{"format": 2}', np.uint8)))
        z.writestr("a0.npy", fake.getvalue() + bytes(16))
    with pytest.raises(dfd_kit.errors.ConfigError, match="does not fit its size"):
        checkpoints.load_checkpoint(path)


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_a_run_with_a_checkpoint_of_the_previous_format_resumes_bit_for_bit(data_dir, data, tmp_path):
    """A run started by an older dfd_kit (checkpoint.pkl, a pickle) resumes through the
    arrays-only unpickler; the next save replaces it by checkpoint.npz."""
    checkpoints, stage1 = tr()[:2]
    a = stage1.train_stage1(data_dir, tmp_path / "a", TINY, stage1_cfg(steps=6), data=data)
    cfg = stage1_cfg(steps=6, checkpoint_every=3)
    with pytest.raises(dfd_kit.training.SimulatedKill):
        stage1.train_stage1(data_dir, tmp_path / "b", TINY, cfg, data=data, on_step=kill_after(4))
    legacy = as_legacy_checkpoint(tmp_path / "b" / "stage1")
    assert checkpoints.load_checkpoint(tmp_path / "b" / "stage1" / "checkpoint.npz")["step"] == 3   # found by name
    b = stage1.train_stage1(data_dir, tmp_path / "b", TINY, cfg, data=data)
    assert b.step == 6 and not legacy.exists() and b.checkpoint.name == "checkpoint.npz"
    assert_same_weights(weights(stage1_modules(a)), weights(stage1_modules(b)))


# --------------------------------------------------------------------------- banks

def test_banks_hold_one_latent_per_training_sketch_grouped_by_sex(trained_stage1, data):
    _, stage1, banks, _ = tr()
    bs = banks.load_banks(trained_stage1)
    for sex in ("male", "female"):
        n = int((data.sexes == sex).sum())
        for c in COMPONENTS:
            arr = bs.banks[sex][c]
            assert arr.shape == (n, TINY.nets.latent_dim) and arr.dtype == np.float32
    # row 0 of the female bank is the first female sample's latent, from the frozen encoder
    enc, _ = stage1.load_stage1(trained_stage1)
    first_female = int(np.flatnonzero(data.sexes == "female")[0])
    z = banks.encode_all(enc, data.sketches[[first_female]], TINY.layout, batch_size=1)
    for c in COMPONENTS:
        np.testing.assert_allclose(bs.banks["female"][c][0], z[c][0], atol=1e-4)


# --------------------------------------------------------------------------- query encoders

def query_cfg(**kw):
    from dfd_kit.training import QueryConfig

    base = dict(steps=6, batch_size=BATCH, lr=2e-3, seed=0, checkpoint_every=0, checkpoint_minutes=None,
                figures=False, progress=False)
    base.update(kw)
    return QueryConfig(**base)


def test_query_encoders_start_as_the_encoders_and_learn_where_rough_drawings_belong(trained_stage1, data_dir,
                                                                                      data, tmp_path):
    """A copy with the encoders' normalisation frozen maps clean sketches exactly as they do
    (so the bank stays the space it searches), even in training mode; trained, it puts rough
    drawings of the training faces nearer their clean latents than the encoders do."""
    import jittor as jt

    from dfd_kit.data.sketch import roughen_sketch
    from dfd_kit.training.banks import encode_all
    from dfd_kit.training.query import build_query_encoders, train_query_encoders

    enc, _ = tr()[1].load_stage1(trained_stage1, TINY)
    clean = encode_all(enc, data.sketches, TINY.layout)
    start = build_query_encoders(enc, TINY)
    assert all(q.is_training() for q in start.values())
    crops = tr()[1].stack_crops(data.sketches, TINY.layout)
    with jt.no_grad():
        for c in COMPONENTS:
            np.testing.assert_allclose(start[c](jt.array(crops[c])).numpy(), clean[c], rtol=0, atol=1e-5)

    rng = np.random.default_rng(123)
    rough = np.stack([roughen_sketch(s, rng, TINY.layout) for s in data.sketches])
    before = encode_all(enc, rough, TINY.layout)
    res = train_query_encoders(enc, data_dir, tmp_path, TINY, query_cfg(steps=40), data=data)
    after = encode_all(res.nets["query_encoders"], rough, TINY.layout)
    gap = {c: (np.linalg.norm(after[c] - clean[c], axis=1).mean(), np.linalg.norm(before[c] - clean[c], axis=1).mean())
           for c in COMPONENTS}
    assert sum(a for a, _ in gap.values()) < 0.8 * sum(b for _, b in gap.values()), gap
    for c in COMPONENTS:   # the encoders themselves are left as they were
        np.testing.assert_array_equal(encode_all(enc, data.sketches, TINY.layout)[c], clean[c])


def test_query_training_resumed_after_a_kill_matches_an_uninterrupted_run(trained_stage1, data_dir, data, tmp_path):
    from dfd_kit.training.query import train_query_encoders

    enc, _ = tr()[1].load_stage1(trained_stage1, TINY)
    a = train_query_encoders(enc, data_dir, tmp_path / "a", TINY, query_cfg(steps=6), data=data)
    cfg = query_cfg(steps=6, checkpoint_every=3)
    with pytest.raises(dfd_kit.training.SimulatedKill):
        train_query_encoders(enc, data_dir, tmp_path / "b", TINY, cfg, data=data, on_step=kill_after(4))
    b = train_query_encoders(enc, data_dir, tmp_path / "b", TINY, cfg, data=data)
    assert b.step == 6 and b.history[-1]["step"] == 6
    assert_same_weights(weights(a.nets["query_encoders"]), weights(b.nets["query_encoders"]))


def test_query_config_refuses_odds_that_add_up_to_more_than_one():
    with pytest.raises(dfd_kit.errors.ConfigError, match="add up to at most 1"):
        query_cfg(rough_prob=0.8, augment_prob=0.3).check()


# --------------------------------------------------------------------------- stage 2

def test_paste_gives_the_face_map_of_slice_assignment_in_paste_order():
    import jittor as jt

    stage2 = tr()[3]
    lay = TINY.layout
    rng = np.random.default_rng(0)
    maps = {c: rng.standard_normal((2, 3, lay.crop_size(c), lay.crop_size(c))).astype(np.float32) for c in COMPONENTS}
    ref = maps["remainder"].copy()     # the official way: parts written over the remainder in order
    for c in lay.paste_order:
        b = lay.box(c)
        h = lay.nose_rows if c == "nose" else b.size
        ref[:, :, b.y:b.y + h, b.x:b.x + b.size] = maps[c][:, :, :h]
    ours = stage2.paste_feature_maps({c: jt.array(m) for c, m in maps.items()}, lay).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_the_paste_sends_each_pixels_gradient_only_to_the_component_shown_there():
    import jittor as jt

    stage2 = tr()[3]
    maps = {c: jt.array(np.zeros((1, 1, TINY.layout.crop_size(c), TINY.layout.crop_size(c)), np.float32))
            for c in COMPONENTS}
    face = stage2.paste_feature_maps(maps, TINY.layout)
    grads = jt.grad(face.sum(), [maps[c] for c in COMPONENTS])
    total = np.zeros((64, 64))
    for c, g in zip(COMPONENTS, grads):
        g = g.numpy()[0, 0]
        b = TINY.layout.box(c)
        total[b.y:b.y + b.size, b.x:b.x + b.size] += g
        assert set(np.unique(g)) <= {0.0, 1.0}
    np.testing.assert_array_equal(total, 1.0)   # every face pixel credits exactly one component


def test_stage2_training_lowers_the_l1_loss(trained_stage1, data_dir, data, tmp_path):
    stage2 = tr()[3]
    out = stage1_copy(trained_stage1, tmp_path / "run")
    res = stage2.train_stage2(data_dir, out, TINY, stage2_cfg(steps=16), data=data)
    l1 = [h["g_l1"] for h in res.history]
    assert len(l1) == 16
    assert np.mean(l1[-4:]) < 0.8 * np.mean(l1[:4])


def test_gan_loss_alone_updates_the_feature_decoders_and_the_generator(trained_stage1, data_dir, data, tmp_path):
    stage2 = tr()[3]
    cfg = stage2_cfg(steps=0, lambda_l1=0.0, lambda_fm=0.0, project_prob=0.0)
    init = stage2.train_stage2(data_dir, stage1_copy(trained_stage1, tmp_path / "init"), TINY, cfg, data=data)
    before = weights({**init.nets["feature_decoders"], "g": init.nets["generator"]})   # the same seed
    cfg.steps = 1
    res = stage2.train_stage2(data_dir, stage1_copy(trained_stage1, tmp_path / "run"), TINY, cfg, data=data)
    after = weights({**res.nets["feature_decoders"], "g": res.nets["generator"]})
    for name in before:
        changed = [k for k in before[name] if not np.array_equal(before[name][k], after[name][k])]
        assert changed, f"{name} did not change after a GAN-only generator step"
    for c in COMPONENTS:   # the first layer of every feature decoder got a gradient
        assert not np.array_equal(before[c]["from_latent.weight"], after[c]["from_latent.weight"])


def test_stage2_resumed_after_a_kill_matches_an_uninterrupted_run(trained_stage1, data_dir, data, tmp_path):
    stage2 = tr()[3]
    a_dir = stage1_copy(trained_stage1, tmp_path / "a")
    b_dir = stage1_copy(trained_stage1, tmp_path / "b")
    a = stage2.train_stage2(data_dir, a_dir, TINY, stage2_cfg(steps=6), data=data)
    cfg = stage2_cfg(steps=6, checkpoint_every=3)
    with pytest.raises(dfd_kit.training.SimulatedKill):
        stage2.train_stage2(data_dir, b_dir, TINY, cfg, data=data, on_step=kill_after(5))
    b = stage2.train_stage2(data_dir, b_dir, TINY, cfg, data=data)
    assert b.step == 6
    assert_same_weights(weights(stage2_modules(a)), weights(stage2_modules(b)))


def test_stage2_learning_rate_decay_and_extending_a_finished_run(trained_stage1, data_dir, data, tmp_path):
    """pix2pixHD's schedule: constant, then linearly to 0. A finished constant-rate run,
    resumed with more steps and the decay starting where it stopped, ends exactly where the
    same schedule run in one go ends (the photo recipe was extended this way)."""
    from dfd_kit.errors import ConfigError

    stage2 = tr()[3]
    cfg = stage2_cfg(steps=10, lr=1.0, lr_decay_start=6)
    assert [cfg.lr_at(s) for s in (0, 5, 6, 8, 9)] == [1.0, 1.0, 1.0, 0.5, 0.25]
    assert stage2_cfg(steps=10, lr=1.0).lr_at(9) == 1.0   # no decay by default
    with pytest.raises(ConfigError, match="lr_decay_start"):
        stage2_cfg(steps=4, lr_decay_start=5).check()

    a = stage2.train_stage2(data_dir, stage1_copy(trained_stage1, tmp_path / "a"), TINY,
                            stage2_cfg(steps=6, lr_decay_start=3), data=data)
    b_dir = stage1_copy(trained_stage1, tmp_path / "b")
    stage2.train_stage2(data_dir, b_dir, TINY, stage2_cfg(steps=3), data=data)
    b = stage2.train_stage2(data_dir, b_dir, TINY, stage2_cfg(steps=6, lr_decay_start=3), data=data)
    assert b.step == 6
    assert_same_weights(weights(stage2_modules(a)), weights(stage2_modules(b)))
    c = stage2.train_stage2(data_dir, stage1_copy(trained_stage1, tmp_path / "c"), TINY, stage2_cfg(steps=6),
                            data=data)
    g_a, g_c = weights(stage2_modules(a)), weights(stage2_modules(c))
    assert any(not np.array_equal(g_a[n][k], g_c[n][k]) for n in g_a for k in g_a[n]), \
        "the decayed run ended where the constant-rate one did: the schedule was not applied"


def test_perceptual_loss_is_off_and_cannot_be_switched_on():
    from dfd_kit.errors import ConfigError

    assert stage2_cfg().lambda_perceptual == 0.0
    with pytest.raises(ConfigError, match="VGG"):
        stage2_cfg(lambda_perceptual=1.0).check()


# --------------------------------------------------------------------------- export

def test_exported_model_loads_and_generates(trained_stage1, data_dir, data, tmp_path):
    from dfd_kit.pipeline import load_model

    stage2 = tr()[3]
    out = stage1_copy(trained_stage1, tmp_path / "run")
    stage2.train_stage2(data_dir, out, TINY, stage2_cfg(steps=2), data=data)
    params = stage2.export_model(out, tmp_path / "Params")
    model = load_model(params)
    assert model.config == TINY
    res = model.generate(data.sketches[1], sex="female", shadows=True)
    assert res.image.shape == (64, 64, 3) and res.image.dtype == np.uint8
    assert len(model.banks["female"]["nose"]) == int((data.sexes == "female").sum())
    # banks too are stored as float16 (config.json says so) and read back as float32
    assert json.loads((params / "config.json").read_text())["bank_dtype"] == "float16"
    banks = tr()[2].load_banks(out).banks
    np.testing.assert_array_equal(model.banks["female"]["nose"],
                                  banks["female"]["nose"].astype(np.float16).astype(np.float32))
    # float16 storage, widened back on load
    fdec = stage2.load_stage2(out)[0]
    w = fdec["mouth"].from_latent.weight.numpy()
    np.testing.assert_array_equal(model.feature_decoders["mouth"].from_latent.weight.numpy(),
                                  w.astype(np.float16).astype(np.float32))


def test_the_query_subcommand_adds_query_encoders_to_a_model_that_then_searches_from_them(
        trained_stage1, data_dir, data, tmp_path, capsys):
    from dfd_kit.manifold import project_to_manifold
    from dfd_kit.pipeline import load_model
    from dfd_kit.training.__main__ import main

    stage2 = tr()[3]
    out = stage1_copy(trained_stage1, tmp_path / "run")
    stage2.train_stage2(data_dir, out, TINY, stage2_cfg(steps=1), data=data)
    params = stage2.export_model(out, tmp_path / "Params")
    plain = load_model(params, shadows=False)
    assert main(["query", "--params", str(params), "--data", str(data_dir), "--out", str(out), "--steps", "3",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    assert (out / "query" / "losses.csv").is_file()
    model = load_model(params, shadows=False)
    assert json.loads((params / "config.json").read_text())["query_encoders"] is True
    assert model.config == dataclasses.replace(TINY, query_encoders=True)
    res = model.generate(data.sketches[2], sex="male", shadows=False)
    base = plain.generate(data.sketches[2], sex="male", shadows=False)
    for c in COMPONENTS:   # the encoders are untouched; the search starts from the new queries
        np.testing.assert_array_equal(res.latents[c], base.latents[c])
        own = project_to_manifold(res.latents[c], model.banks["male"][c], model.config.k, 1.0, query=res.queries[c])
        np.testing.assert_array_equal(res.projections[c].neighbours, own.neighbours)
    # run again: the finished fine-tune resumes at its end and writes the same weights
    before = (params / "AE_whole" / "latest_net_query_encoder_mouth.pkl").read_bytes()
    assert main(["query", "--params", str(params), "--data", str(data_dir), "--out", str(out), "--steps", "3",
                 "--no-progress"]) == 0
    assert (params / "AE_whole" / "latest_net_query_encoder_mouth.pkl").read_bytes() == before


def test_densify_banks_reencodes_more_sketches_into_int8_banks(trained_stage1, data_dir, data, tmp_path, capsys):
    from dfd_kit.errors import DFDError
    from dfd_kit.pipeline import load_model

    _, _, banks, stage2 = tr()
    out = stage1_copy(trained_stage1, tmp_path / "run")
    stage2.train_stage2(data_dir, out, TINY, stage2_cfg(steps=1), data=data)
    params = stage2.export_model(out, tmp_path / "Params")
    more = write_tiny_dataset(tmp_path / "more", n=3 * N_SAMPLES, seed=7)
    faces = {c: (3 * N_SAMPLES if c == "remainder" else 2 * N_SAMPLES) for c in COMPONENTS}
    rows = banks.densify_banks(params, more, faces, k=4, progress=False)

    model = load_model(params)
    cfg = json.loads((params / "config.json").read_text())
    assert cfg["bank_dtype"] == "int8" and cfg["k"] == 4 and model.config.k == 4
    sketches = np.stack([model.normalise(s.sketch_path) for s in load_samples(more)])
    sexes = np.array([s.sex for s in load_samples(more)])
    z = banks.encode_all(model.encoders, sketches, TINY.layout)
    for c in COMPONENTS:
        n = faces[c]
        for sex in ("male", "female"):
            expected = z[c][:n][sexes[:n] == sex]
            assert rows[sex][c] == len(expected) == len(model.banks[sex][c])
            # int8: each value within half a quantisation step of the encoder's latent
            half_step = (expected.max(0) - expected.min(0)) / 255 / 2
            assert np.all(np.abs(model.banks[sex][c] - expected) <= half_step * 1.001 + 1e-6)
    res = model.generate(data.sketches[1], sex="female", shadows=True)
    assert res.image.shape == (64, 64, 3) and len(res.projections["remainder"].neighbours) == 4

    # mirror: the same faces flipped left to right, after the unflipped ones
    rows = banks.densify_banks(params, more, faces, mirror=True, progress=False)
    model = load_model(params)
    flipped = banks.encode_all(model.encoders, np.ascontiguousarray(sketches[:, :, ::-1]), TINY.layout)
    for c in COMPONENTS:
        n = faces[c]
        for sex in ("male", "female"):
            expected = np.concatenate([z[c][:n][sexes[:n] == sex], flipped[c][:n][sexes[:n] == sex]])
            assert rows[sex][c] == len(expected) == len(model.banks[sex][c]) == 2 * (sexes[:n] == sex).sum()
            half_step = (expected.max(0) - expected.min(0)) / 255 / 2
            assert np.all(np.abs(model.banks[sex][c] - expected) <= half_step * 1.001 + 1e-6)
    # a flipped eye is the other eye only when the boxes mirror each other
    symmetric = (params / "config.json").read_text()
    cfg = json.loads(symmetric)
    cfg["layout"]["boxes"]["left_eye"]["x"] = 1
    (params / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DFDError, match="without mirror"):
        banks.densify_banks(params, more, faces, mirror=True, progress=False)
    (params / "config.json").write_text(symmetric)

    with pytest.raises(DFDError, match="remainder"):
        banks.densify_banks(params, more, {c: 8 for c in COMPONENTS if c != "remainder"}, progress=False)
    with pytest.raises(DFDError, match="build a larger set"):
        banks.densify_banks(params, more, {c: 10 * N_SAMPLES for c in COMPONENTS}, progress=False)
    # the same from the command line: a one-line error, not a traceback
    from dfd_kit.training.__main__ import main

    assert main(["banks", "--params", str(params), "--sketches", str(more), "--faces", str(10 * N_SAMPLES),
                 "--no-progress"]) == 2
    assert "build a larger set" in capsys.readouterr().err
    assert main(["banks", "--params", str(params), "--sketches", str(more), "--mirror", "--no-progress"]) == 2
    assert "--mirror works with --data" in capsys.readouterr().err


def test_banks_from_several_data_sets_encodes_all_their_sketches_in_order(trained_stage1, data_dir, data, tmp_path):
    """``banks --data A B`` (e.g. the photo model's training faces and more made by
    ``photo-data --first``): every sample of A then of B, int8, the model's K kept."""
    from dfd_kit.pipeline import load_model
    from dfd_kit.training.__main__ import main

    _, _, banks, stage2 = tr()
    out = stage1_copy(trained_stage1, tmp_path / "run")
    stage2.train_stage2(data_dir, out, TINY, stage2_cfg(steps=1), data=data)
    params = stage2.export_model(out, tmp_path / "Params")
    more = write_tiny_dataset(tmp_path / "more", n=N_SAMPLES, seed=7)
    assert main(["banks", "--params", str(params), "--data", str(data_dir), str(more), "--no-progress"]) == 0

    model = load_model(params)
    cfg = json.loads((params / "config.json").read_text())
    assert cfg["bank_dtype"] == "int8" and model.config.k == TINY.k
    samples = load_samples(data_dir) + load_samples(more)
    sketches = np.stack([model.normalise(s.sketch_path) for s in samples])
    sexes = np.array([s.sex for s in samples])
    z = banks.encode_all(model.encoders, sketches, TINY.layout)
    for c in COMPONENTS:
        for sex in ("male", "female"):
            expected = z[c][sexes == sex]
            assert len(model.banks[sex][c]) == len(expected)
            half_step = (expected.max(0) - expected.min(0)) / 255 / 2
            assert np.all(np.abs(model.banks[sex][c] - expected) <= half_step * 1.001 + 1e-6)
    # --mirror: every sketch flipped too, twice the rows
    assert main(["banks", "--params", str(params), "--data", str(data_dir), str(more), "--mirror",
                 "--no-progress"]) == 0
    model = load_model(params)
    assert all(len(model.banks[sex][c]) == 2 * (sexes == sex).sum() for sex in ("male", "female") for c in COMPONENTS)


def test_training_writes_loss_curves_and_sample_grids(trained_stage1, data_dir, data, tmp_path):
    stage2 = tr()[3]
    out = stage1_copy(trained_stage1, tmp_path / "run")
    stage2.train_stage2(data_dir, out, TINY, stage2_cfg(steps=2, figures=True, figure_every=0, n_vis=BATCH), data=data)
    figs = out / "figures"
    assert (figs / "stage2_losses.png").stat().st_size > 0
    assert (figs / "stage2_samples_000002.png").stat().st_size > 0
    assert (out / "stage2" / "losses.csv").read_text().startswith("step,")


# --------------------------------------------------------------------------- MPI

MPI_WORKER = r'''
import json, sys
import numpy as np
import dfd_kit
from dfd_kit.config import ModelConfig
from dfd_kit.training import Stage1Config, Stage2Config, TrainingData, banks, stage1, stage2
from dfd_kit.training.parallel import exit_on_error_in_mpi
import jittor as jt

exit_on_error_in_mpi()
cfg_path, data_dir, out_dir, res_dir = sys.argv[1:]
config = ModelConfig.from_dict(json.load(open(cfg_path)))
kw = dict(steps=3, batch_size=4, lr=2e-3, checkpoint_every=0, checkpoint_minutes=None, figures=False,
          progress=False, threads=1)
r1 = stage1.train_stage1(data_dir, out_dir, config, Stage1Config(**kw))
banks.build_banks(out_dir, data_dir, progress=False)
r2 = stage2.train_stage2(data_dir, out_dir, config, Stage2Config(**kw, ndf=8, d_layers=2))
shard = TrainingData(data_dir, config.layout, photos=False, progress=False).indices.tolist()

def digest(nets):
    mods = [m for v in nets.values() for m in (v.values() if isinstance(v, dict) else [v])]
    return [float(np.abs(t.numpy()).astype(np.float64).sum()) for m in mods for t in m.state_dict().values()]

json.dump({"in_mpi": bool(jt.in_mpi), "rank": int(jt.rank), "world": int(jt.world_size), "shard": shard,
           "stage1": digest(r1.nets), "stage2": digest(r2.nets), "steps": [r1.step, r2.step]},
          open(f"{res_dir}/rank{jt.rank}.json", "w"))
'''


@pytest.mark.skipif(not __import__("shutil").which("mpirun"), reason="no mpirun (Debian package openmpi-bin)")
def test_two_mpi_processes_train_disjoint_shards_in_lockstep(data_dir, tmp_path):
    import json
    import os

    (tmp_path / "config.json").write_text(TINY.to_json())
    (tmp_path / "worker.py").write_text(MPI_WORKER)
    res = tmp_path / "res"
    res.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, str(tmp_path / "worker.py"),
           str(tmp_path / "config.json"), str(data_dir), str(tmp_path / "out"), str(res)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0, r1 = (json.loads((res / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["in_mpi"] and r1["in_mpi"] and (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)
    assert r0["shard"] == list(range(0, N_SAMPLES, 2)) and r1["shard"] == list(range(1, N_SAMPLES, 2))
    assert r0["steps"] == r1["steps"] == [3, 3]
    # averaged gradients (and averaged BatchNorm statistics) keep the replicas identical
    np.testing.assert_allclose(r0["stage1"], r1["stage1"], rtol=1e-6)
    np.testing.assert_allclose(r0["stage2"], r1["stage2"], rtol=1e-6)
    ck = tr()[0].load_checkpoint(tmp_path / "out" / "stage2" / "checkpoint.npz")
    assert ck["world_size"] == 2 and ck["step"] == 3
    assert not list((tmp_path / "out").rglob("*.tmp*"))


def test_stage1_sample_grid_shows_each_crop_and_its_reconstruction(trained_stage1, data, tmp_path):
    stage1 = tr()[1]
    enc, dec = stage1.load_stage1(trained_stage1)
    crops, rec = stage1.reconstruct(enc, dec, data.sketches[:2], TINY.layout)
    for c in COMPONENTS:
        s = TINY.layout.crop_size(c)
        assert crops[c].shape == rec[c].shape == (2, s, s) and rec[c].dtype == np.uint8
    path = stage1.write_stage1_samples(enc, dec, data.sketches[:2], TINY.layout, tmp_path / "grid.png")
    assert Image.open(path).size[0] > Image.open(path).size[1]   # 2 rows of 10 panels


# --------------------------------------------------------------------------- quality measurements

class _OracleModel:
    """Answers each sketch with its true photo when every part weight is 1, and a
    brightened photo otherwise: the measurements must then come out exactly known. A clean
    sketch's neighbours are bank rows 0-3 in every component, any other sketch's 0, 1, 8, 9:
    half of them shared. Face i's clean sketch has latents i and projects to i, any other
    sketch of it has latents i + 0.5 and projects to i + 0.25; rendering vectors gives the
    true photo only for the clean sketch's projection (exactly i), else the brightened one."""

    def __init__(self, data_dir, layout):
        from dfd_kit.data import load_pair, load_samples

        self.layout = layout
        self.config = dataclasses.replace(TINY, layout=layout)   # blend_weight 1: w = 1 is what it answers
        self.pairs = [load_pair(s, layout) for s in load_samples(data_dir)]

    def photo(self, i: int, true: bool) -> np.ndarray:
        photo = self.pairs[i][1]
        return photo if true else np.minimum(photo.astype(int) + 10, 255).astype(np.uint8)

    def generate(self, sketch, part_weights=None, sex="male", **kw):
        from dfd_kit.manifold import Projection
        from dfd_kit.pipeline import GenerationResult, check_part_weights

        # a degraded sketch still lies closest to its own clean sketch
        i = int(np.argmin([np.abs(sk.astype(int) - sketch).sum() for sk, _ in self.pairs]))
        w = check_part_weights(part_weights, self.config.blend_weight)
        clean = np.array_equal(self.pairs[i][0], sketch)
        rows = np.array([0, 1, 2, 3] if clean else [0, 1, 8, 9])
        latent, projected = np.full(2, i + (0.0 if clean else 0.5)), np.full(2, i + (0.0 if clean else 0.25))
        proj = {c: Projection(rows, np.zeros(4), np.full(4, 0.25), projected, projected * w[c] + latent * (1 - w[c]))
                for c in COMPONENTS}
        res = GenerationResult(sketch, {}, {c: latent for c in COMPONENTS}, proj, w, sex, 4)
        res.image = self.photo(i, min(w.values()) == 1.0)
        return res

    def render(self, res, keep_features=True):
        v = res.projections["remainder"].vector
        res.image = self.photo(int(np.floor(v[0])), bool(np.all(v == np.round(v))))
        return res


def test_quality_measures_a_named_heldout_set_as_it_is_and_updates_only_its_own_card(data_dir, tmp_path,
                                                                                       monkeypatch):
    """Validation faces built with other settings are measured, not rebuilt to the recipe's
    (which would refuse them); measurements written elsewhere leave the model's card alone."""
    from dfd_kit.training import quality, recipes

    params = tmp_path / "params"
    params.mkdir()
    (params / "config.json").write_text(TINY.to_json())           # not the photo layout: facesjs data
    card = params / "MODEL_CARD.md"
    card.write_text("<!-- quality:start -->\nold\n<!-- quality:end -->\n")
    built, measured = [], []
    monkeypatch.setattr(recipes, "ensure_facesjs_data", lambda d, *a: built.append(str(d)))
    model = _OracleModel(data_dir, TINY.layout)
    real = quality.evaluate_quality

    def measure(params_dir, heldout_dir, train_dir, figures_dir=None, **kw):
        measured.append(str(heldout_dir))    # (the faces of data_dir stand in for any held-out set)
        return real(params_dir, data_dir, train_dir, figures_dir, n_faces=2, n_figure=1, progress=False,
                    model=model)

    monkeypatch.setattr(quality, "evaluate_quality", measure)
    recipes.measure_quality(params, data=data_dir, heldout=data_dir, figures=tmp_path / "val", progress=False)
    assert built == [str(data_dir)] and measured == [str(data_dir)]   # the training set only: held-out as it is
    assert (tmp_path / "val" / "quality.json").is_file() and "old" in card.read_text()
    recipes.measure_quality(params, data=data_dir, heldout=tmp_path / "missing", progress=False)
    assert built[1:] == [str(data_dir), str(tmp_path / "missing")]    # a missing one is built
    assert measured[1:] == [str(tmp_path / "missing")]
    assert "old" not in card.read_text() and "| ratio |" in card.read_text()


def test_quality_of_a_model_that_answers_the_true_photo(data_dir, tmp_path):
    from dfd_kit.data import load_pair, load_samples
    from dfd_kit.errors import DataError
    from dfd_kit.training.quality import (PARTIAL_WEIGHT, evaluate_quality, mean_face, read_report,
                                          update_model_card, write_report)

    model = _OracleModel(data_dir, TINY.layout)
    r = evaluate_quality(None, data_dir, data_dir, tmp_path, n_faces=6, n_figure=2, progress=False, model=model)
    assert r.n_faces == 6 and r.mae_generated == 0.0 and r.ratio == 0.0
    assert r.projection_win_rate == 1.0 and r.mae_degraded_projected == 0.0
    # the baseline: the data set's mean photo against each photo, averaged
    base = mean_face(data_dir, TINY.layout, progress=False)
    photos = [load_pair(s, TINY.layout)[1].astype(float) for s in load_samples(data_dir)[:6]]
    assert r.mae_mean_face == pytest.approx(np.mean([np.abs(p - base).mean() for p in photos]), rel=1e-9)
    assert 0 < r.mae_degraded_unprojected <= 10.0 and r.passed
    # parts projected, remainder as drawn: a weight below 1, so the oracle brightens, like w = 0
    assert r.mae_rough_parts_projected == pytest.approx(r.mae_rough_unprojected) and r.rough_parts_win_rate == 0.0
    assert "parts projected and remainder as drawn: wins / error removed | 0.0% / 0.0%" in r.markdown()
    # a perfect projection: the clean sketch at w = 0 is brightened like the rough one, nothing removed
    assert r.mae_clean_unprojected == pytest.approx(r.mae_rough_unprojected) and 0 < r.mae_clean_unprojected <= 10
    assert r.perfect_projection_reduction == pytest.approx(0.0, abs=1e-12)
    assert r.shared_neighbours_parts == 0.5 and r.shared_neighbours_remainder == 0.5
    assert "the rough sketch finds too: parts / remainder | 50% / 50% |" in r.markdown()
    # the sweep over w: the ends are the w = 0 / w = 1 measures; between them the oracle brightens
    # the photo as at w = 0, so no weight below 1 wins and none removes any error
    assert list(r.by_weight) == ["0", "0.25", "0.5", "0.75", "1"]
    assert r.by_weight["1"] == {"degraded_mae": 0.0, "degraded_wins": 1.0, "rough_mae": 0.0, "rough_wins": 1.0,
                                "rough_search_mae": 0.0}
    for w in ("0", "0.25", "0.5", "0.75"):
        assert r.by_weight[w]["degraded_mae"] == pytest.approx(r.mae_degraded_unprojected)
        assert r.by_weight[w]["degraded_wins"] == 0.0 and r.by_weight[w]["rough_wins"] == 0.0
        # a perfect search below w = 1 still keeps part of the rough latent: not the clean face
        assert r.by_weight[w]["rough_search_mae"] == pytest.approx(r.mae_rough_unprojected)
    # at w = 1 a perfect search gives the clean sketch's projection, the true photo here
    assert r.has_perfect_search and r.best_search() == (1.0, 1.0)
    assert r.search_error_reduction_at(0.5) == pytest.approx(0.0, abs=1e-12)
    assert "| rough sketches, a perfect search: error removed | 0.0% | 0.0% | 0.0% | 0.0% | 100.0% |" in r.markdown()
    assert "at its best weight (w=1): error removed | 100.0% |" in r.markdown()
    assert r.error_reduction_at(0.25) == pytest.approx(0.0, abs=1e-12) and r.error_reduction_at(1.0) == 1.0
    assert (f"| degraded sketches where partial projection (w={PARTIAL_WEIGHT:g}, the photo model's default) beats "
            "none | 0.0% | >= 70% | **no** |") in r.markdown()
    assert r.blend_weight == 1.0 and "(0-255; clean sketches, the model's default w=1) | 0.00 |" in r.markdown()
    assert "| rough sketches: projection beats none | 0.0% | 0.0% | 0.0% | 0.0% | 100.0% |" in r.markdown()
    for name in ("heldout", "projection", "projection_weights"):
        assert Image.open(r.figures[name]).size[0] > 200
    # the figure draws the sweep: MAE against w on the left, wins (w > 0) on the right
    from dfd_kit.plotting import plot_projection_by_weight

    fig = plot_projection_by_weight(r)
    degraded_mae, rough_mae, search_mae = (line.get_ydata() for line in fig.axes[0].lines[:3])
    assert list(degraded_mae) == [r.by_weight[w]["degraded_mae"] for w in r.by_weight]
    assert list(rough_mae) == [r.by_weight[w]["rough_mae"] for w in r.by_weight]
    assert list(search_mae) == [r.by_weight[w]["rough_search_mae"] for w in r.by_weight]
    assert list(fig.axes[1].lines[0].get_xdata()) == [0.25, 0.5, 0.75, 1.0]
    assert list(fig.axes[1].lines[0].get_ydata()) == [0.0, 0.0, 0.0, 100.0]
    # a model whose default weight is partial generates below w = 1 (the oracle's brightened photo),
    # but a perfect search at w = 1 is still the clean sketch's projected face, the true photo
    model.config = dataclasses.replace(model.config, blend_weight=0.5)
    p = evaluate_quality(None, data_dir, data_dir, None, n_faces=6, progress=False, model=model)
    assert p.blend_weight == 0.5 and p.mae_generated == pytest.approx(p.mae_clean_unprojected)
    assert p.mae_generated > 0
    assert p.by_weight["1"] == r.by_weight["1"] and p.best_search() == (1.0, 1.0)
    # the summary says what the default weight does, the figure marks it
    half = dataclasses.replace(r, blend_weight=0.5)
    assert half.weight_summary().endswith("; at the model's default w = 0.5: 0.0% of the rough sketches' error "
                                          "removed, projection beats none for 0% of the degraded ones")
    marked = plot_projection_by_weight(half)
    for ax, plain in zip(marked.axes, fig.axes):
        assert len(ax.lines) == len(plain.lines) + 1
        assert [list(line.get_xdata()) for line in ax.lines].count([0.5, 0.5]) == 1
    # a report written before the perfect search was measured still reads and draws, without it
    older = dataclasses.replace(r, by_weight={w: {k: v for k, v in m.items() if k != "rough_search_mae"}
                                              for w, m in r.by_weight.items()})
    assert not older.has_perfect_search and "perfect search" not in older.markdown()
    assert len(plot_projection_by_weight(older).axes[0].lines) == len(fig.axes[0].lines) - 1
    assert len(json.loads(write_report(r, tmp_path / "q.json").read_text())["per_face"]["generated"]) == 6
    assert read_report(tmp_path / "q.json") == r      # the card's figures can be drawn again from its json
    before = json.loads((tmp_path / "q.json").read_text())
    del before["blend_weight"]                          # written before models had a default weight
    (tmp_path / "before.json").write_text(json.dumps(before))
    assert read_report(tmp_path / "before.json") == r   # measured at w = 1, as every model then generated
    # the oracle answers the true photo at w = 1 only (also for rough sketches), 10 levels off below it
    assert r.weight_summary() == ("rough sketches: error 10.00 at w = 0, 0.00 at w = 1, lowest 0.00 at w = 1 "
                                  "(100.0% removed); with a perfect search 0.00 at w = 1 (100.0% removed); "
                                  "degraded sketches: projection beats none for 100% of the faces at w = 1, most "
                                  "often at w = 1 (100%)")
    assert "perfect search" not in older.weight_summary()
    with pytest.raises(DataError, match="measure the model first"):
        read_report(tmp_path / "none.json")
    (tmp_path / "other.json").write_text('{"n_faces": 6}')
    with pytest.raises(DataError, match="is not a quality report"):
        read_report(tmp_path / "other.json")
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# card\n<!-- quality:start -->\nold\n<!-- quality:end -->\nafter\n")
    assert update_model_card(card, r)
    text = card.read_text()
    assert "old" not in text and "| ratio | 0.000 | <= 0.5 | yes |" in text and text.endswith("after\n")


def test_shared_neighbours_counts_the_bank_rows_two_projections_have_in_common():
    from dfd_kit.manifold import project_to_manifold
    from dfd_kit.training.quality import shared_neighbours

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(200, 8)).astype(np.float32)
    z = bank[7] + 0.01
    same = {"mouth": project_to_manifold(z, bank, 10, 1.0)}
    assert shared_neighbours(same, {"mouth": project_to_manifold(z + 1e-4, bank, 10, 1.0)}) == {"mouth": 1.0}
    far = {"mouth": project_to_manifold(-z, bank, 10, 1.0)}
    expected = len(set(same["mouth"].neighbours) & set(far["mouth"].neighbours)) / 10
    assert shared_neighbours(same, far) == {"mouth": expected} and expected < 0.5


def test_train_command_on_a_missing_data_set_says_so_in_one_line(tmp_path, capsys):
    from dfd_kit.training.__main__ import main

    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
               "--steps-stage1", "2", "--steps-stage2", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "samples.csv not found: build a dataset first" in err and "Traceback" not in err


def test_train_command_runs_both_stages_and_exports_a_loadable_model(data_dir, tmp_path, capsys):
    # The command a CelebAMask-HQ user runs (under mpirun for several processes).
    from dfd_kit.pipeline import load_model
    from dfd_kit.training.__main__ import main

    cfg = tmp_path / "tiny.json"
    cfg.write_text(TINY.to_json())
    rc = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--config", str(cfg),
               "--steps-stage1", "2", "--steps-stage2", "2", "--no-progress", "--threads", "1"])
    assert rc == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stage1"]["steps"] == 2 and summary["stage2"]["steps"] == 2
    model = load_model(tmp_path / "run" / "params")
    assert model.config == TINY
    assert model.generate(np.full((64, 64), 255, np.uint8), shadows=False).image.shape == (64, 64, 3)


# --------------------------------------------------------------------------- latent geometry (before stage 2)

def test_bank_spacing_is_the_median_distance_between_two_halves_of_the_bank():
    from dfd_kit.errors import DataError
    from dfd_kit.training.quality import bank_spacing

    line = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert bank_spacing(line) == 2.0   # |0-2|, |0-3|, |1-2|, |1-3| = 2, 3, 1, 2
    with pytest.raises(DataError, match="at least two"):
        bank_spacing(line[:1])


def test_projection_geometry_finds_nothing_to_repair_in_an_undamaged_sketch(trained_stage1, data_dir, data):
    from dfd_kit.training.quality import GEOMETRY_MEASURES, projection_geometry
    from dfd_kit.training.stage1 import load_stage1

    enc, _ = load_stage1(trained_stage1)
    kw = dict(k=3, n_faces=6, progress=False)
    # The held-out faces are the bank's own sketches here, so each clean latent is a bank row
    # and projects onto itself; at strength 0 the "degraded" sketches are the clean ones.
    same = projection_geometry(enc, data.sketches, data.sexes, data_dir, TINY.layout, degrade_strength=0.0, **kw)
    rough = projection_geometry(enc, data.sketches, data.sexes, data_dir, TINY.layout, label="run", **kw)
    assert same.n_faces == 6 and same.k == 3 and same.bank_rows == N_SAMPLES and rough.label == "run"
    for c in COMPONENTS:
        g = same.components[c]
        assert set(g) == set(GEOMETRY_MEASURES)
        assert g["clean_projected"] == pytest.approx(0.0, abs=1e-4)
        assert g["degraded"] == g["rough"] == 0.0 and g["shared_rough"] == 1.0
        assert g["degraded_closer"] == g["rough_closer"] == 0.0   # no nearer than exactly there
        r = rough.components[c]
        assert r["clean_projected"] == pytest.approx(0.0, abs=1e-4)
        assert np.isfinite(list(r.values())).all() and 0 <= r["shared_rough"] <= 1
    # roughening moves the parts' latents: a missing, doubled, stretched or scribbled part
    assert np.mean([rough.components[c]["rough"] for c in COMPONENTS]) > 0.05


def test_geometry_command_compares_runs_in_one_figure(trained_stage1, data_dir, tmp_path, capsys):
    from dfd_kit.training.__main__ import main

    fig = tmp_path / "geometry.png"
    rc = main(["geometry", "--out", str(trained_stage1), str(trained_stage1), "--data", str(data_dir),
               "--heldout", str(data_dir), "--k", "3", "--n-faces", "4", "--figure", str(fig), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and f"figure: {fig}" in out
    reports = json.loads(out[out.index("["):])
    assert [r["label"] for r in reports] == [trained_stage1.name] * 2 and reports[0] == reports[1]
    assert set(reports[0]["components"]) == set(COMPONENTS) and reports[0]["n_faces"] == 4
    w, h = Image.open(fig).size
    assert w > 600 and h > 400   # two panels, one per run


def test_train_command_stage1_augment_makes_a_denoising_auto_encoder(data_dir, tmp_path, capsys):
    from dfd_kit.training.__main__ import main
    from dfd_kit.training.checkpoints import CHECKPOINT_NAME, load_checkpoint

    cfg = tmp_path / "tiny.json"
    cfg.write_text(TINY.to_json())
    runs = {}
    for p in ("0", "1"):
        rc = main(["train", "--data", str(data_dir), "--out", str(tmp_path / p), "--config", str(cfg),
                   "--steps-stage1", "2", "--steps-stage2", "0", "--stage1-augment", p, "--no-progress",
                   "--threads", "1"])
        assert rc == 0
        summary = json.loads((tmp_path / p / "summary.json").read_text())
        assert summary["stage1"]["augment_prob"] == float(p) and summary["stage2"]["steps"] == 0
        runs[p] = load_checkpoint(tmp_path / p / "stage1" / CHECKPOINT_NAME)["modules"]["encoder.nose"]
    # the same seed and batches; only the inputs differ (hand-drawn copies), so the weights do
    assert any(not np.array_equal(runs["0"][k], runs["1"][k]) for k in runs["0"])
