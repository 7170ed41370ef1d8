"""The figures a run writes, atomically as PNGs: :func:`save_image_grid` (the stages'
sample grids, the quality measurements' figures) and :func:`save_figure` (any Figure,
e.g. the loss curves of :func:`dfd_kit.plotting.plot_losses`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Sequence

import numpy as np

# Jittor's kernels switch the CPU to flush-denormals-to-zero; numpy then warns whenever
# it (or matplotlib) first asks for float limits. Harmless here.
_SUBNORMAL = "The value of the smallest subnormal"
warnings.filterwarnings("ignore", message=_SUBNORMAL, category=UserWarning)


def save_figure(fig, path) -> Path:
    """Write atomically: a figure being watched (or a run killed mid-write) never shows a
    half-written PNG."""
    from ..loading import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png"))


def save_image_grid(rows: List[List[np.ndarray]], path, col_titles: Sequence[str] = (),
                    row_titles: Sequence[str] = (), title: str = "", cell: float = 1.6) -> Path:
    """A grid of images (uint8 (H, W) gray or (H, W, 3) RGB; sizes may differ) -> PNG."""
    warnings.filterwarnings("ignore", message=_SUBNORMAL, category=UserWarning)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + (0.4 if title else 0.0)), dpi=100)
    FigureCanvasAgg(fig)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
