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

from . import fused
from .layers import Down, OutputConv, ReflectPad, ResnetBlock, Stage, Up, conv_norm


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
        self.pad = ReflectPad(2)
        self.to_output = OutputConv(channels[-1], out_channels, 5)

    def execute(self, z):
        h = self.from_latent(z).reshape(z.shape[0], self.channels0, self.start, self.start)
        return self.to_output(self.pad(self.stages(self.res_in(h))))

    def weighted_sum(self, z: jt.Var, weights: np.ndarray) -> jt.Var:
        """sum_i weights[i] * self(z[i]) -> (1, out_channels, S, S), for inference with
        running-statistics norms (the sketch decoders: a shadow is such a sum).

        Everything after the last ReLU -- the last residual block's second conv and norm, its
        skip connection (the last upsampling of the stage before), the padding and the output
        conv -- is affine, and an affine map commutes with a weighted mean:
        sum_i w_i T(u_i) = W * T(sum_i w_i u_i / W) with W = sum_i w_i. So each row runs only
        up to that ReLU, and the tail runs once on the weighted means: at full size that
        skips a quarter of every row's work, the 512 x 512 conv and the few-channel output
        conv among it. The big linear layer reads its weight once for all rows. Rows go one
        at a time (one batch shape, so Jittor compiles nothing new for another K; small
        activations).
        """
        last = self.stages[-1]
        assert not self.is_training() and last.resample_first, "inference with running statistics only"
        assert all(n.stats == "running" for n in (last.res.norm1, last.res.norm2)), \
            "the tail is affine only with running-statistics norms"
        w = np.asarray(weights, np.float64)
        total = float(w.sum())
        if len(w) == 0 or total == 0.0:
            size = self.start << len(self.stages)
            return jt.zeros((1, self.to_output.out_channels, size, size))
        seeds = self.from_latent(z).reshape(z.shape[0], self.channels0, self.start, self.start)
        seeds.sync()
        r, mean_before, mean_h = last.res, None, None
        for i in range(len(w)):
            before = self.res_in(seeds[i:i + 1])
            for stage in self.stages[:-1]:
                before = stage(before)
            h = conv_norm(r.conv1, r.norm1, r.pad(last.resample(before)), relu=True)
            share = jt.array(np.float32([w[i] / total]))   # a Var, not a constant baked into kernels
            # the skip path is affine in the previous stage's output (4x fewer pixels to sum)
            mean_before = fused.accumulate(mean_before, before, share)
            mean_h = fused.accumulate(mean_h, h, share)
            jt.sync([mean_before, mean_h])   # free this row's activations before the next
        tail = conv_norm(r.conv2, r.norm2, r.pad(mean_h), residual=last.resample(mean_before))
        return self.to_output(self.pad(tail)) * total


def sketch_decoder(size: int, channels: Sequence[int], latent_dim: int) -> LatentDecoder:
    """The auto-encoder's image decoder: latent -> 1-channel sketch in about [-1, 1]."""
    return LatentDecoder(size, channels, latent_dim, 1, stats="running")


def crop_to_input(crop: np.ndarray) -> np.ndarray:
    """uint8 (S, S) crop -> float32 (1, 1, S, S) in [-1, 1], computed in float64 as the
    official code does before casting."""
    return ((crop.astype(np.float64) - 127.5) / 127.5).astype(np.float32)[None, None]


def encode(encoder: ComponentEncoder, crop: np.ndarray) -> np.ndarray:
    """uint8 (S, S) crop -> float32 (latent_dim,) latent."""
    with jt.no_grad():
        return encoder(jt.array(crop_to_input(crop))).numpy()[0]


def decode_sketch(decoder: LatentDecoder, latents: np.ndarray) -> np.ndarray:
    """float32 (N, latent_dim) -> float32 (N, S, S) decoded sketches in about [-1, 1]."""
    with jt.no_grad():
        return decoder(jt.array(np.asarray(latents, np.float32))).numpy()[:, 0]
