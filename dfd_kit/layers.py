"""Building blocks shared by the auto-encoders, the feature decoders and the generator.

This is the reference model: plain Jittor, what the paper and pix2pixHD describe. The same
blocks run faster at inference on the CPU through :mod:`dfd_kit.fast`, which swaps in
subclasses with the same parameters and the same results.
"""
from __future__ import annotations

import jittor as jt
from jittor import nn


class Norm2d(nn.Module):
    """Per-channel normalisation with an affine transform.

    ``stats`` picks where the mean and variance come from:

    * ``"running"`` -- BatchNorm: batch statistics while training, the stored running
      statistics at inference (the component auto-encoders);
    * ``"sample"`` -- each sample's own statistics over H x W, in training and at
      inference. The generator uses it as InstanceNorm; the feature decoders use it
      because the official code never switched them to eval mode, so their BatchNorm
      normalises every (batch-of-one) input by its own statistics. Their stored running
      statistics are loaded, kept and reported but never used.
    """

    def __init__(self, channels: int, stats: str = "running", track_running: bool = True,
                 eps: float = 1e-5, momentum: float = 0.1):
        assert stats in ("running", "sample")
        self.stats, self.eps, self.momentum = stats, eps, momentum
        # True: the stored running statistics even while training (fine-tuning a trained
        # network whose normalisation must stay what it was; dfd_kit.training.query)
        self.frozen = False
        self.weight = jt.ones(channels)
        self.bias = jt.zeros(channels)
        if track_running:
            self.running_mean = jt.zeros(channels).stop_grad()
            self.running_var = jt.ones(channels).stop_grad()
        else:
            self.running_mean = self.running_var = None

    def execute(self, x: jt.Var) -> jt.Var:
        mean, var = self.statistics(x)
        scale = self.weight.reshape(1, -1, 1, 1) / jt.sqrt(var + self.eps)
        return (x - mean) * scale + self.bias.reshape(1, -1, 1, 1)

    def statistics(self, x: jt.Var):
        """(mean, var), each (N or 1, C, 1, 1), that this norm divides by."""
        if self.stats == "sample":
            mean = self.spatial_mean(x)
            return mean, self.spatial_mean((x - mean) ** 2)
        if self.is_training() and not self.frozen:
            mean = self.spatial_mean(x).mean(dim=0, keepdims=True)
            var = self.spatial_mean((x - mean) ** 2).mean(dim=0, keepdims=True)
            n = x.shape[0] * x.shape[2] * x.shape[3]
            m = self.momentum
            # the running variance is the unbiased one, as PyTorch and the official code keep it
            self.running_mean.update((1 - m) * self.running_mean + m * mean.reshape(-1).detach())
            self.running_var.update((1 - m) * self.running_var
                                    + m * var.reshape(-1).detach() * n / max(n - 1, 1))
            return mean, var
        return self.running_mean.reshape(1, -1, 1, 1), self.running_var.reshape(1, -1, 1, 1)

    @staticmethod
    def spatial_mean(x: jt.Var) -> jt.Var:
        """(N, C, H, W) -> (N, C, 1, 1): the mean over H x W."""
        return x.mean(dims=(2, 3), keepdims=True)


class ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3x3, norm, ReLU, reflect-pad, conv3x3, norm](x)."""

    def __init__(self, channels: int, stats: str = "running", track_running: bool = True):
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3)
        self.norm1 = Norm2d(channels, stats, track_running)
        self.conv2 = nn.Conv2d(channels, channels, 3)
        self.norm2 = Norm2d(channels, stats, track_running)

    def execute(self, x: jt.Var) -> jt.Var:
        h = nn.relu(self.norm1(self.conv1(self.pad(x))))
        return x + self.norm2(self.conv2(self.pad(h)))


class Down(nn.Module):
    """Halve the resolution: conv 4x4 stride 2, then norm. The official block follows it
    with LeakyReLU(1), which is the identity, so there is no activation here."""

    def __init__(self, cin: int, cout: int, stats: str = "running"):
        self.conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1)
        self.norm = Norm2d(cout, stats)

    def execute(self, x):
        return self.norm(self.conv(x))


class Up(nn.Module):
    """Double the resolution: transposed conv 4x4 stride 2, then norm (again no activation:
    the official LeakyReLU(1) is the identity)."""

    def __init__(self, cin: int, cout: int, stats: str = "running"):
        self.conv = nn.ConvTranspose(cin, cout, 4, stride=2, padding=1)
        self.norm = Norm2d(cout, stats)

    def execute(self, x):
        return self.norm(self.conv(x))


class Stage(nn.Module):
    """One resolution step of an auto-encoder: a resampling block and a residual block,
    in the order given by ``resample_first``."""

    def __init__(self, resample: nn.Module, res: ResnetBlock, resample_first: bool):
        self.resample, self.res, self.resample_first = resample, res, resample_first

    def execute(self, x):
        if self.resample_first:
            return self.res(self.resample(x))
        return self.resample(self.res(x))
