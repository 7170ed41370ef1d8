"""Component Embedding: one auto-encoder per component maps a sketch crop to a latent.

Encoder: S x S x 1 crop -> 5 x (conv stride 2 + residual block) -> flatten -> linear ->
``latent_dim``. The image decoder mirrors it and is used for the shadow guidance (and
the reconstructions the notebooks show); the Combine feature decoders that drive image
synthesis live in :mod:`dfd_kit.mapping`.
"""
from __future__ import annotations

from typing import Sequence

import jittor as jt
import numpy as np
from jittor import nn

from .layers import Down, ResnetBlock, Stage, Up


class ComponentEncoder(nn.Module):
    """(N, 1, S, S) in [-1, 1] -> (N, latent_dim)."""

    def __init__(self, size: int, channels: Sequence[int], latent_dim: int):
        assert size % 32 == 0, f"component size {size} must be a multiple of 32"
        ch = [1, *channels]
        self.stages = nn.Sequential(*[Stage(Down(ch[i], ch[i + 1]), ResnetBlock(ch[i + 1]), True)
                                      for i in range(len(channels))])
        self.final_size = size >> len(channels)
        self.to_latent = nn.Linear(channels[-1] * self.final_size ** 2, latent_dim)

    def execute(self, x):
        h = self.stages(x)
        return self.to_latent(h.reshape(h.shape[0], -1))


class LatentDecoder(nn.Module):
    """(N, latent_dim) -> (N, out_channels, S, S).

    Linear to a (channels[0], S/32, S/32) map, a residual block, then 5 x (upsample +
    residual block) through ``channels[1:]``, then reflect-pad 2 and a 5x5 conv. No output
    activation (as in the official networks). ``stats`` selects the norm statistics
    (see :class:`dfd_kit.layers.Norm2d`).
    """

    def __init__(self, size: int, channels: Sequence[int], latent_dim: int, out_channels: int,
                 stats: str = "running"):
        self.start = size >> (len(channels) - 1)
        self.channels0 = channels[0]
        self.from_latent = nn.Linear(latent_dim, channels[0] * self.start ** 2)
        self.res_in = ResnetBlock(channels[0], stats)
        self.stages = nn.Sequential(*[Stage(Up(channels[i], channels[i + 1], stats),
                                            ResnetBlock(channels[i + 1], stats), True)
                                      for i in range(len(channels) - 1)])
        self.pad = nn.ReflectionPad2d(2)
        self.to_output = nn.Conv2d(channels[-1], out_channels, 5)

    def execute(self, z):
        h = self.from_latent(z).reshape(z.shape[0], self.channels0, self.start, self.start)
        return self.to_output(self.pad(self.stages(self.res_in(h))))

    def weighted_sum(self, z: jt.Var, weights: np.ndarray) -> jt.Var:
        """sum_i weights[i] * self(z[i]) -> (1, out_channels, S, S): a shadow is such a sum of
        the neighbours' decoded sketches (:func:`dfd_kit.manifold.shadow_from_sum`). Row by
        row, so the activations of one row are alive at a time (33 MB a row for the official
        remainder)."""
        size = self.start << len(self.stages)
        total = jt.zeros((1, self.to_output.out_channels, size, size))
        for i, w in enumerate(np.asarray(weights, np.float32)):
            total = total + float(w) * self(z[i:i + 1])
        return total


def sketch_decoder(size: int, channels: Sequence[int], latent_dim: int) -> LatentDecoder:
    """The auto-encoder's image decoder: latent -> 1-channel sketch in about [-1, 1]."""
    return LatentDecoder(size, channels, latent_dim, 1, stats="running")


def sketch_to_input(sketch: np.ndarray) -> np.ndarray:
    """uint8 (S, S) crop or sketch, or a batch (B, S, S) -> float32 (B, 1, S, S) in [-1, 1],
    computed in float64 as the official code does before casting. The encoders' input, in
    training and at inference alike (and the discriminator's sketch condition)."""
    a = np.asarray(sketch)
    a = a[None] if a.ndim == 2 else a
    return ((a.astype(np.float64) - 127.5) / 127.5).astype(np.float32)[:, None]


def encode(encoder: ComponentEncoder, crop: np.ndarray) -> np.ndarray:
    """uint8 (S, S) crop -> float32 (latent_dim,) latent."""
    with jt.no_grad():
        return encoder(jt.array(sketch_to_input(crop))).numpy()[0]
