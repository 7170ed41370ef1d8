"""The command line.

``python -m dfd_kit generate`` runs as a real subprocess once per recorded parity case, on
the full-size stand-in Params, and its images must match the official outputs. Each such
process pays Jittor's start-up, the model load and a cold first generation (about a
minute), so there are only three. Everything else (argument checks, exit
codes, folders, error lines) runs in-process on the small demo model.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfd_kit import cli
from dfd_kit.config import COMPONENTS, DEMO

from conftest import CASE_IDS, ROOT, SEX, case_by_id, case_weights, load_expected, sketch_path

CORRUPT = b"\x89PNG\r\n\x1a\n" + b"definitely not the rest of a PNG" * 8   # a PNG signature, then junk


def flag(component: str) -> str:
    return "--" + component.replace("_", "-")


def generate_command(case: dict, inputs, out: Path, params: Path, shadows: bool):
    cmd = [sys.executable, "-m", "dfd_kit", "generate", *map(str, inputs), "--params", str(params),
           "--out", str(out), "--sex", SEX[case["sex"]], "--k", str(case["K"]), "--anchor", "official",
           "--precision", "fp32"]   # the official code's arithmetic; bf16 is measured in test_precision
    for c, w in case_weights(case).items():
        if w != 1.0:                      # 1 is the default: leave it out, so defaults are tested too
            cmd += [flag(c), repr(w)]
    return cmd + (["--shadows"] if shadows else [])


@pytest.fixture(scope="module")
def cli_runs(standin_params_dir, tmp_path_factory):
    """{case id: (CompletedProcess, out dir)}. Case 0 gets a folder holding its sketch and a
    corrupt image, and --shadows; cases 1 and 2 get their sketch file."""
    base = tmp_path_factory.mktemp("cli")
    folder = base / "case0_inputs"
    folder.mkdir()
    (folder / "sketch_0.png").write_bytes(sketch_path(case_by_id(0)).read_bytes())
    (folder / "broken.png").write_bytes(CORRUPT)
    (folder / "notes.txt").write_text("not an image; skipped by the folder expansion")

    def run(case_id):
        case, out = case_by_id(case_id), base / f"out{case_id}"
        inputs = [folder] if case_id == 0 else [sketch_path(case)]
        cmd = generate_command(case, inputs, out, standin_params_dir, shadows=case_id == 0)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        return case_id, (proc, out)

    # One at a time by default: each process peaks at about 6 GB of RAM, and this pytest
    # process may hold the stand-in model too. DFD_TEST_CLI_JOBS=2 runs two at once.
    with ThreadPoolExecutor(max_workers=int(os.environ.get("DFD_TEST_CLI_JOBS", "1"))) as pool:
        return dict(pool.map(run, CASE_IDS))


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CASE_IDS, ids=[f"case{i}" for i in CASE_IDS])
def test_generate_writes_the_official_faces(cli_runs, case_id):
    proc, out = cli_runs[case_id]
    assert "Traceback" not in proc.stderr, proc.stderr
    image = np.asarray(Image.open(out / f"sketch_{case_id}.png"))
    expected = load_expected(case_id)["generated"]
    assert image.shape == expected.shape and image.dtype == np.uint8
    d = np.abs(image.astype(int) - expected.astype(int))
    assert d.max() <= 2 and (d > 0).mean() <= 0.05, f"max {d.max()}, {(d > 0).mean():.2%} of pixels differ"


@pytest.mark.slow
@pytest.mark.parametrize("case_id", [1, 2])
def test_generate_exits_0_when_every_file_worked(cli_runs, case_id):
    proc, out = cli_runs[case_id]
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"sketch_{case_id}.png"]


@pytest.mark.slow
def test_a_corrupt_file_is_one_error_line_and_the_others_are_written(cli_runs):
    proc, out = cli_runs[0]
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: ") and "broken.png" in errors[0] and "not a valid image" in errors[0]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sketch_0.png", "sketch_0_shadow.png"]


@pytest.mark.slow
def test_shadows_flag_writes_the_guidance_image(cli_runs):
    _, out = cli_runs[0]
    shadow = np.asarray(Image.open(out / "sketch_0_shadow.png"))
    assert shadow.shape == (512, 512) and shadow.dtype == np.uint8
    assert 0 < shadow.mean() < 255


# --------------------------------------------------------------------------- in-process, demo model

def test_params_errors_exit_2_with_the_message_and_no_traceback(tmp_path, capsys):
    rc = cli.main(["generate", str(sketch_path(case_by_id(0))), "--params", str(tmp_path), "--out",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "incomplete" in err and "latest_net_G.pkl" in err
    assert "download-official" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_bundled_model_is_a_params_error(monkeypatch, tmp_path, capsys):
    import dfd_kit

    monkeypatch.setattr(dfd_kit, "PHOTO_PARAMS", tmp_path / "photo")   # --params left out: the photo model
    rc = cli.main(["generate", str(sketch_path(case_by_id(0))), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "photo model is not in" in err and "training photo" in err and "Traceback" not in err
    monkeypatch.setattr(dfd_kit, "DEMO_PARAMS", tmp_path / "demo")
    rc = cli.main(["generate", str(sketch_path(case_by_id(0))), "--params", "cartoon", "--out", str(tmp_path / "o")])
    assert rc == 2 and "cartoon model is not in" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--nose", "1.5"], ["--mouth", "-0.1"], ["--left-eye", "nan"],
                                  ["--remainder", "x"], ["--k", "1"], ["--sex", "other"],
                                  ["--anchor", "closest"]])
def test_bad_arguments_exit_2_before_loading(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "x.png", "--out", str(tmp_path), *args])
    assert e.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert all(c in err for c in ("generate", "download-official", "standin-params"))


def test_folders_expand_to_their_images(tmp_path):
    for name in ("b.png", "a.JPG", "c.jpeg", "d.bmp", "e.webp", "notes.txt", "f.gif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    files = cli.expand_inputs([str(tmp_path), "missing.png"])
    assert [f.name for f in files] == ["a.JPG", "b.png", "c.jpeg", "d.bmp", "e.webp", "missing.png"]


def test_generate_on_the_demo_model(demo_params, demo_sketch, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    Image.fromarray(demo_sketch).save(a / "face.png")
    Image.fromarray(255 - demo_sketch).convert("RGB").save(b / "face.jpg")   # same stem, light on dark
    (a / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    weights = [x for c in COMPONENTS for x in (flag(c), "0.5")]
    rc = cli.main(["generate", str(a), str(b), str(tmp_path / "gone.png"), "--params", str(demo_params),
                   "--out", str(out), "--sex", "female", "--k", "5", "--shadows", *weights])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2 and "empty.png" in lines[0] and "gone.png" in lines[1] and "not found" in lines[1]
    assert sorted(p.name for p in out.iterdir()) == ["face.png", "face_2.png", "face_2_shadow.png",
                                                     "face_shadow.png"]
    size = DEMO.layout.size
    assert np.asarray(Image.open(out / "face.png")).shape == (size, size, 3)
    assert np.asarray(Image.open(out / "face_shadow.png")).shape == (size, size)


def test_k_larger_than_the_bank_fails_each_file(demo_params, demo_sketch, tmp_path, capsys):
    Image.fromarray(demo_sketch).save(tmp_path / "s.png")
    rc = cli.main(["generate", str(tmp_path / "s.png"), "--params", str(demo_params), "--out",
                   str(tmp_path / "out"), "--k", "1000"])
    assert rc == 1
    assert "K must be between 2 and the bank size" in capsys.readouterr().err


def test_download_official_is_a_subcommand():
    from dfd_kit.download import run_download_args

    args = cli.build_parser().parse_args(["download-official", "--params", "P", "--no-progress"])
    assert args.func is run_download_args and args.params == "P"


def test_standin_params_subcommand(monkeypatch, tmp_path, capsys):
    import dfd_kit.standin

    calls = []
    monkeypatch.setattr(dfd_kit.standin, "write_standin_params", lambda out: calls.append(out) or Path(out))
    assert cli.main(["standin-params", str(tmp_path / "P")]) == 0
    assert calls == [str(tmp_path / "P")] and "P" in capsys.readouterr().out
