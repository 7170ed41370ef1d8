"""The Google Colab setup cell (dfd_kit.colab.CELL) at the top of every notebook in notebooks/.

    python scripts/colab_cell.py            # (re)write it

Each notebook is read, the cell with id ``colab-setup`` is removed if it is there, and the
cell is put back right after the notebook's opening markdown (what the notebook shows), so it
is the first code cell and comes before the "Set up" prose that introduces the notebook's own
first cell. Nothing else in the notebook changes; the cell has no outputs.
The solution notebooks (notebooks/solutions/) are left out: they are short companions of
the tutorials, opened after them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dfd_kit.colab import CELL, CELL_ID  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def with_colab_cell(nb):
    """*nb* with exactly one Colab cell, right after its opening markdown cell."""
    cells = [c for c in nb.cells if c.get("id") != CELL_ID]
    at = 1 if cells and cells[0].cell_type == "markdown" else 0
    cell = nbformat.v4.new_code_cell(CELL)
    cell.id = CELL_ID
    nb.cells = cells[:at] + [cell] + cells[at:]
    return nb


def main():
    for path in NOTEBOOKS:
        nb = with_colab_cell(nbformat.read(path, as_version=4))
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"{path.relative_to(ROOT)}: Colab cell written")


if __name__ == "__main__":
    main()
