"""Feature Mapping: each component latent becomes a multi-channel feature map, and the
maps are pasted into one face-sized map that conditions the generator."""
from __future__ import annotations

from typing import Dict, Sequence

import jittor as jt
import numpy as np

from .config import Layout
from .embedding import LatentDecoder


def feature_decoder(size: int, channels: Sequence[int], latent_dim: int, feature_channels: int) -> LatentDecoder:
    """latent -> (feature_channels, S, S). Normalises with per-sample statistics (see
    :class:`dfd_kit.layers.Norm2d`): the official decoders ran BatchNorm in training mode."""
    return LatentDecoder(size, channels, latent_dim, feature_channels, stats="sample")


def decode_features(decoder: LatentDecoder, latent: np.ndarray) -> jt.Var:
    """(latent_dim,) or (N, latent_dim) -> jt.Var (N, C, S, S)."""
    z = np.asarray(latent, np.float32).reshape(-1, latent.shape[-1])
    return decoder(jt.array(z))


def paste_feature_maps(maps: Dict[str, jt.Var], layout: Layout) -> jt.Var:
    """Paste the part maps into the remainder's map -> (N, C, size, size).

    Parts go in ``layout.paste_order`` (mouth, nose, left eye, right eye), later ones
    overwriting earlier ones where boxes overlap. Only the first ``layout.nose_rows`` rows
    of the nose are pasted, so the rows the nose box shares with the mouth box keep the
    mouth's features (the official 36-row trim).
    """
    face = maps["remainder"]
    for name in layout.paste_order:
        b = layout.box(name)
        part = maps[name]
        h = layout.nose_rows if name == "nose" else b.size
        face[:, :, b.y:b.y + h, b.x:b.x + b.size] = part[:, :, :h, :]
    return face
