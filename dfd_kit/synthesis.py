"""Image Synthesis: a pix2pixHD global generator turns the face feature map into a photo."""
from __future__ import annotations

import jittor as jt
import numpy as np
from jittor import nn

from .layers import Norm2d, ResnetBlock


class ConvNormReLU(nn.Module):
    """conv, InstanceNorm (affine), ReLU."""

    def __init__(self, conv: nn.Module, channels: int):
        self.conv, self.norm = conv, Norm2d(channels, "sample", track_running=False)

    def execute(self, x):
        return nn.relu(self.norm(self.conv(x)))


class Generator(nn.Module):
    """(N, in_channels, H, W) feature map -> (N, 3, H, W) image in [-1, 1].

    reflect-pad 3 + conv 7x7 to ``ngf``; ``n_downsample`` stride-2 convs (zero padding),
    doubling the width; ``n_blocks`` residual blocks; as many transposed convs back;
    reflect-pad 3 + conv 7x7 to RGB; tanh. Every norm is InstanceNorm with an affine
    transform.
    """

    def __init__(self, in_channels: int, ngf: int, n_downsample: int, n_blocks: int):
        self.pad3 = nn.ReflectionPad2d(3)
        self.stem = ConvNormReLU(nn.Conv2d(in_channels, ngf, 7), ngf)
        w = [ngf * 2 ** i for i in range(n_downsample + 1)]
        self.down = nn.Sequential(*[ConvNormReLU(nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1), w[i + 1])
                                    for i in range(n_downsample)])
        self.res = nn.Sequential(*[ResnetBlock(w[-1], "sample", track_running=False) for _ in range(n_blocks)])
        self.up = nn.Sequential(*[ConvNormReLU(nn.ConvTranspose(w[i + 1], w[i], 3, stride=2, padding=1,
                                                                output_padding=1), w[i])
                                  for i in reversed(range(n_downsample))])
        self.to_rgb = nn.Conv2d(ngf, 3, 7)

    def execute(self, x):
        h = self.up(self.res(self.down(self.stem(self.pad3(x)))))
        return jt.tanh(self.to_rgb(self.pad3(h)))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Values in about [-1, 1], any shape -> uint8: (x + 1) / 2 * 255 in x's own float type,
    clipped and truncated, as the official code casts its images. Every network output the
    kit shows or saves goes through here (images, decoded sketches, training samples)."""
    return np.clip((np.asarray(x) + 1) / 2 * 255, 0, 255).astype(np.uint8)


def to_uint8_image(y: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 (:func:`to_uint8`)."""
    return to_uint8(y.transpose(1, 2, 0))
