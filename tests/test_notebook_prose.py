"""Numbers in the notebooks' prose come from code.

A measured figure typed into markdown goes stale the moment the model, the data or the
sketch changes (issue 24: "48,000 rows" beside a cell printing 24,000). So the markdown
may not state measurements at all: no decimals, no percentages, no thousands. Sizes
that are facts of the architecture (512, 32 channels, K = 10) are plain integers and
stay allowed; anything inside code (`...`, fenced blocks), maths ($...$) or a link
target is code's business, not prose.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").rglob("*.ipynb"))

_CODE = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\]\([^)]*\)|<[^>]+>", re.S)
MEASUREMENT = re.compile(r"(?<![\w.])("
                         r"\d+\.\d+"                 # a decimal: 17.35, 0.6
                         r"|\d+(?:\.\d+)?\s?%"       # a percentage: 71%, 11 to 19% is caught at 19%
                         r"|\d{1,3}(?:,\d{3})+"      # thousands: 48,000
                         r")(?![\w])")


#: Published facts no cell here can print: the paper's 17,000 training photos and
#: CelebAMask-HQ's 30,000.
FACTS = {"17,000", "30,000"}


def measurements(markdown: str):
    """The measured-looking numbers in a markdown cell's prose."""
    return [m for m in MEASUREMENT.findall(_CODE.sub(" ", markdown)) if m not in FACTS]


def test_the_rule_finds_measurements_and_spares_code_and_maths():
    assert measurements("the banks hold 48,000 rows; MAE 17.35; 71% of faces") == ["48,000", "17.35", "71%"]
    assert measurements("latents of 512 numbers, K = 10, `x = 0.5`, $w = 0.5$, see [x](a/1.5.png)") == []
    assert measurements("```python\nmodel.generate(k=0.25)\n```\nSIGGRAPH 2020, notebook 03") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_prose_states_no_measured_numbers(path):
    nb = nbformat.read(path, as_version=4)
    found = {i: measurements(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"}
    found = {i: m for i, m in found.items() if m}
    assert not found, (f"{path.name}: markdown cells state numbers a cell should print instead "
                       f"(cell: numbers): {found}")
