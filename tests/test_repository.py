"""A fresh clone is self-contained: everything `make test` reads is in the repository, and
the repository says how it may be used (LICENSE) and how to cite it (CITATION.cff)."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import CASE_IDS, FIXTURE, NPZ_TAG, ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

EXPECTED = [FIXTURE / "expected" / f"case_{i}.npz" for i in CASE_IDS]
MAX_FIXTURE_BYTES = 4 * 2**20
# Written so that this file does not match itself: a folder beside the checkout, or the
# variable that once named it.
OUTSIDE = re.compile(r"\.\./shared|DFD_PARITY_DI[R]")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _git_ignored(path) -> bool:
    """True when git would ignore ``path`` (and so leave it out of a commit and a clone)."""
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(path.relative_to(ROOT))],
                          cwd=ROOT, capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode == 0


# --------------------------------------------------------------------------- parity fixture

@pytest.mark.parametrize("path", EXPECTED, ids=lambda p: p.name)
def test_recorded_official_outputs_are_in_the_repository_and_small(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    assert path.stat().st_size < MAX_FIXTURE_BYTES


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("path", EXPECTED, ids=lambda p: p.name)
def test_recorded_official_outputs_are_not_git_ignored(path):
    assert not _git_ignored(path), f"{path.relative_to(ROOT)} is git-ignored, so a clone would not have it"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_recorded_official_outputs_hold_every_array_the_tests_compare(case_id):
    per_component = ["crop", "latent", "knn_idx_official", "knn_idx_sorted", "knn_top20_idx", "knn_top20_dist",
                     "bank_rows", "lle_xx", "vec", "shadow_raw"]
    wanted = {f"{k}_{t}" for k in per_component for t in NPZ_TAG.values()}
    wanted |= {f"feat_{t}_chan_{s}" for t in NPZ_TAG.values() for s in ("mean", "std")}
    wanted |= {"combined_chan_mean", "combined_chan_std", "combined_pool4", "combined_crop_r320_c160",
               "netG_out_crop_r320_c160", "generated", "sketch_mutated_pixels"}
    with np.load(FIXTURE / "expected" / f"case_{case_id}.npz") as npz:
        assert wanted <= set(npz.files), f"missing {sorted(wanted - set(npz.files))}"


def test_nothing_the_tests_run_reads_from_outside_the_repository():
    files = [ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "conftest.py"]
    for folder in ("scripts", "tests", ".ci"):
        files += [p for p in (ROOT / folder).rglob("*")
                  if p.is_file() and p.suffix not in (".npz", ".png", ".pyc")]
    hits = [f"{p.relative_to(ROOT)}: {line.strip()}"
            for p in files if p.exists()
            for line in p.read_text(errors="ignore").splitlines() if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


# --------------------------------------------------------------------------- licence and citation

def test_license_file_states_the_licence_pyproject_declares():
    assert _pyproject()["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.splitlines()[0] == "MIT License"
    assert "Permission is hereby granted, free of charge" in text


def test_citation_file_cites_the_kit_and_the_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "dfd_kit"
    assert cff["version"] == _pyproject()["version"]
    assert cff["license"] == _pyproject()["license"]
    paper = cff["preferred-citation"]
    assert paper["doi"] == "10.1145/3386569.3392386"
    assert paper["title"] == "DeepFaceDrawing: Deep Generation of Face Images from Sketches"
