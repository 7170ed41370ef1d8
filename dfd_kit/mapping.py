"""Feature Mapping: each component latent becomes a multi-channel feature map, and the
maps are pasted into one face-sized map that conditions the generator."""
from __future__ import annotations

from typing import Dict, Sequence

import jittor as jt
import numpy as np
from jittor import nn

from .config import Layout
from .embedding import LatentDecoder


def feature_decoder(size: int, channels: Sequence[int], latent_dim: int, feature_channels: int) -> LatentDecoder:
    """latent -> (feature_channels, S, S). Normalises with per-sample statistics (see
    :class:`dfd_kit.layers.Norm2d`): the official decoders ran BatchNorm in training mode."""
    return LatentDecoder(size, channels, latent_dim, feature_channels, stats="sample")


_MASKS: Dict[tuple, Dict[str, np.ndarray]] = {}
_OWNERS: Dict[tuple, tuple] = {}


def paste_masks(layout: Layout) -> Dict[str, np.ndarray]:
    """{component: float32 (1, 1, size, size)}: 1 where that component's map shows in the
    face map, 0 elsewhere (from :func:`paste_owner`)."""
    key = _layout_key(layout)
    if key not in _MASKS:
        owner, _ = paste_owner(layout)
        masks = {"remainder": owner == -1}
        masks.update({name: owner == i for i, name in enumerate(layout.paste_order)})
        _MASKS[key] = {c: m.astype(np.float32)[None, None] for c, m in masks.items()}
    return _MASKS[key]


def paste_owner(layout: Layout):
    """(int32 (size, size): -1 where the remainder's map shows, else the index in
    ``layout.paste_order`` of the part that shows; int32 (parts, 2): each part's box corner
    x, y). Parts are pasted in ``layout.paste_order`` (mouth, nose, left eye, right eye),
    later ones covering earlier ones; only the first ``layout.nose_rows`` rows of the nose
    box belong to the nose, so the rows it shares with the mouth box keep the mouth's
    features (the official 36-row trim)."""
    key = _layout_key(layout)
    if key not in _OWNERS:
        owner = np.full((layout.size, layout.size), -1, np.int32)
        for i, name in enumerate(layout.paste_order):
            b = layout.box(name)
            rows = layout.nose_rows if name == "nose" else b.size
            owner[b.y:b.y + rows, b.x:b.x + b.size] = i
        corners = np.array([(layout.box(c).x, layout.box(c).y) for c in layout.paste_order], np.int32)
        _OWNERS[key] = (owner, corners)
    return _OWNERS[key]


def _layout_key(layout: Layout):
    return layout.size, tuple(sorted(layout.boxes.items())), layout.nose_rows, layout.paste_order


def paste_feature_maps(maps: Dict[str, jt.Var], layout: Layout) -> jt.Var:
    """{component: (N, C, S, S)} -> the face map (N, C, size, size).

    Each pixel shows exactly one component's map (see :func:`paste_masks`). Written as a
    masked sum rather than slice assignment so that, in training, each pixel's gradient
    reaches only the component it shows (Jittor's in-place setitem would also send the
    gradient of overwritten pixels to the remainder). The values are the same either way.
    """
    masks = paste_masks(layout)
    size = layout.size
    face = maps["remainder"] * jt.array(masks["remainder"])
    for name in layout.paste_order:
        b = layout.box(name)
        placed = nn.pad(maps[name], (b.x, size - b.x - b.size, b.y, size - b.y - b.size))
        face = face + placed * jt.array(masks[name])
    return face
