"""The notebooks' Google Colab cell (dfd_kit.colab.CELL), by simulation: there is no Colab here.

On Colab the cell must pip-install the kit from the repository and then turn on Colab's custom
widget manager (ipycanvas, the drawing pad, shows nothing without it); anywhere else it must do
nothing at all. Colab is stood in for by a fake ``google.colab`` module in ``sys.modules``
(the cell's test for Colab), and pip by a recorder in place of ``subprocess.check_call``.
The README, notebook 00 and dfd_kit.colab must name the same repository.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from packaging.utils import canonicalize_name

from dfd_kit import colab

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
QUICK_START = ROOT / "notebooks" / "00_quick_start.ipynb"


def colab_cell(path: Path):
    """The notebook's Colab cell (it must have exactly one)."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.get("id") == colab.CELL_ID]
    assert len(cells) == 1, f"{path.name} has {len(cells)} cells with id {colab.CELL_ID!r}"
    return cells[0]


def run_cell(source: str, monkeypatch, on_colab: bool, pip_fails: bool = False, calls=None) -> list:
    """Run a cell's source as a notebook would, with pip replaced by a recorder and, if
    *on_colab*, a stand-in ``google.colab``. Returns what was called, in order (also
    appended to *calls*, which is how a caller sees them when the cell raises)."""
    calls = [] if calls is None else calls

    def check_call(cmd, *args, **kwargs):
        calls.append(("pip", list(cmd)))
        if pip_fails:
            raise subprocess.CalledProcessError(1, cmd)
        return 0

    def any_other_process(*args, **kwargs):   # a cell changed to subprocess.run must not run pip here
        raise AssertionError(f"the cell started a process other than through subprocess.check_call: {args}")

    monkeypatch.setattr(subprocess, "check_call", check_call)
    monkeypatch.setattr(subprocess, "Popen", any_other_process)
    monkeypatch.setattr(sys, "path", list(sys.path))   # the cell adds the clone; undone afterwards
    if on_colab:
        fake = types.ModuleType("google.colab")
        fake.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(("widget manager",)))
        monkeypatch.setitem(sys.modules, "google.colab", fake)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "colab-cell", "exec"), {"__name__": "__main__"})
    return calls


# ----------------------------------------------------------------------------- the notebooks carry it

def test_every_tutorial_notebook_is_covered():
    assert [p.name[:2] for p in NOTEBOOKS][:8] == ["00", "01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_opens_with_its_prose_then_the_same_colab_cell_without_outputs(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and "What you will" in cells[0].source
    cell = colab_cell(path)
    assert cells[1].get("id") == colab.CELL_ID, f"{path.name}: the Colab cell is not right after the opening markdown"
    assert cell.cell_type == "code" and cell.source == colab.CELL, (
        f"{path.name}: its Colab cell differs from dfd_kit.colab.CELL; run `python scripts/colab_cell.py`")
    assert cell.outputs == [] and cell.execution_count is None


def test_the_cell_is_short_and_says_why():
    lines = colab.CELL.splitlines()
    assert len(lines) <= 15
    assert lines[0].startswith("# Google Colab only")


# ----------------------------------------------------------------------------- what it does

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outside_colab_the_cell_does_nothing(path, monkeypatch, capsys):
    before = list(sys.path)
    assert run_cell(colab_cell(path).source, monkeypatch, on_colab=False) == []
    assert sys.path == before
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_on_colab_the_cell_installs_the_kit_from_the_repository_then_turns_on_the_widget_manager(path, monkeypatch):
    calls = run_cell(colab_cell(path).source, monkeypatch, on_colab=True)
    assert [c[0] for c in calls] == ["pip", "widget manager"]
    cmd = calls[0][1]
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]   # this kernel's Python, not another pip's
    assert cmd[cmd.index("-e") + 1] == f"git+{colab.REPOSITORY}#egg=dfd_kit"
    # the kernel, started before the install, can import the kit from the clone at once
    assert sys.path[0] == colab.CLONE == f"{cmd[cmd.index('--src') + 1]}/dfd-kit"


def test_the_clone_is_where_pip_puts_it_and_the_name_is_the_projects():
    """pip clones an editable VCS requirement into --src / the normalised name of its #egg=."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert colab.INSTALL.endswith(f"#egg={project}")
    assert colab.CLONE == f"{colab.SRC}/{canonicalize_name(project)}"


def test_on_colab_a_failed_install_stops_the_cell_before_the_widget_manager(monkeypatch):
    calls = []
    with pytest.raises(subprocess.CalledProcessError):
        run_cell(colab.CELL, monkeypatch, on_colab=True, pip_fails=True, calls=calls)
    assert [c[0] for c in calls] == ["pip"]   # tried, failed loudly, and went no further


# ----------------------------------------------------------------------------- one repository everywhere

REFERENCE = re.compile(r"(?:github\.com|mybinder\.org/v2/gh|colab\.research\.google\.com/github)/([\w.-]+/dfd_kit)\b")


def test_readme_notebook_00_and_the_module_name_the_same_repository():
    readme = (ROOT / "README.md").read_text()
    intro = nbformat.read(QUICK_START, as_version=4).cells[0].source
    for name, text in (("README.md", readme), ("notebook 00's opening", intro)):
        assert colab.COLAB_URL in text and colab.BINDER_URL in text, f"{name} lacks the Colab or Binder link"
        assert set(REFERENCE.findall(text)) == {colab.GITHUB}, f"{name} names another repository"
    assert f"git+{colab.REPOSITORY}#egg=dfd_kit" in readme   # the install the README describes
    assert set(REFERENCE.findall(colab.CELL)) == {colab.GITHUB}
    assert colab.COLAB_URL.endswith("/notebooks/" + QUICK_START.name)


# ----------------------------------------------------------------------------- the script that writes it

def test_the_script_puts_one_cell_after_the_opening_markdown_and_replaces_an_old_one():
    spec = importlib.util.spec_from_file_location("colab_cell_script", ROOT / "scripts" / "colab_cell.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 · What you will see"), nbformat.v4.new_code_cell("import dfd_kit")]
    once = script.with_colab_cell(nb)
    assert [c.get("id") for c in once.cells][1] == colab.CELL_ID and once.cells[1].source == colab.CELL
    once.cells[1].source = "# an older Colab cell"
    once.cells[1].outputs = [nbformat.v4.new_output("stream", text="old output")]
    twice = script.with_colab_cell(once)
    assert [c.source for c in twice.cells] == ["# 99 · What you will see", colab.CELL, "import dfd_kit"]
    assert twice.cells[1].outputs == []
    nbformat.validate(twice)
