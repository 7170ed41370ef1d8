"""The shadows' weighted sum of decoded neighbours, computed faster than the reference's
row-by-row sum (:meth:`dfd_kit.embedding.LatentDecoder.weighted_sum`)."""
from __future__ import annotations

import jittor as jt
import numpy as np

from ..embedding import LatentDecoder
from . import kernels
from .layers import conv_norm, conv_norm_nhwc


class FastLatentDecoder(LatentDecoder):
    """A sketch decoder whose :meth:`weighted_sum` runs each row only up to its last ReLU
    and shares the affine rest; the other blocks are the accelerated ones of
    :mod:`dfd_kit.fast.layers`."""

    #: Most rows a shadow decodes together: K = 15 (the official default) in one chunk, so
    #: each convolution's weights are laid out for oneDNN once. Chunks are balanced and at
    #: least two rows (a lone row is padded with a copy that weighs nothing): a batch of one
    #: would change Jittor's broadcasting and compile new kernels; other batch sizes share
    #: the kernels already compiled.
    CHUNK = 16
    #: A stage runs on the whole chunk while one row's output is at most this large; larger
    #: maps (the official remainder's 256 and 512 px stages) go row by row, which keeps the
    #: shadows' extra memory near one row's activations.
    ROW_BYTES = 4 << 20

    def weighted_sum(self, z: jt.Var, weights: np.ndarray) -> jt.Var:
        """sum_i weights[i] * self(z[i]) -> (1, out_channels, S, S), for inference with
        running-statistics norms (the sketch decoders: a shadow is such a sum).

        Everything after the last ReLU -- the last residual block's second conv and norm, its
        skip connection (the last upsampling of the stage before), the padding and the output
        conv -- is affine, and an affine map commutes with a weighted mean:
        sum_i w_i T(u_i) = W * T(sum_i w_i u_i / W) with W = sum_i w_i. So each row runs only
        up to that ReLU, and the tail runs once on the weighted means: at full size that
        skips a quarter of every row's work, the 512 x 512 conv and the few-channel output
        conv among it. The big linear layer reads its weight once for all rows.

        The rows go through the small early stages up to :attr:`CHUNK` at a time: there the
        convolutions have few pixels and wide weights, and oneDNN re-lays out a
        convolution's weights on every call, so one call per chunk instead of one per row
        made the official-size shadows 1.37x faster here (bench/README.md). Running
        statistics make every row independent of the others in its batch (a lone row's
        padding copy included, which gets weight 0).
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
        channels_last = kernels.channels_last()
        seeds = self.from_latent(z).reshape(z.shape[0], self.channels0, self.start, self.start)
        seeds.sync()
        batched = self._batched_stages()
        r, mean_before, mean_h = last.res, None, None
        chunks = -(-len(w) // self.CHUNK)
        size = max(2, -(-len(w) // chunks))   # balanced
        for first in range(0, len(w), size):
            rows = list(range(first, min(len(w), first + size)))
            share = np.zeros(size, np.float32)   # padding rows weigh nothing
            share[:len(rows)] = w[rows] / total
            rows += [rows[-1]] * (size - len(rows))
            x = self.res_in(seeds[rows])
            for stage in self.stages[:min(batched, len(self.stages) - 1)]:
                x = stage(x)
            # the rest up to the last ReLU: the whole chunk at once where the maps are small,
            # else row by row; the skip path is affine in the previous stage's output (4x
            # fewer pixels to sum)
            for i in [None] if batched == len(self.stages) else range(len(rows)):
                before, a = (x, share) if i is None else (x[i:i + 1], share[i:i + 1])
                if i is not None and not a[0]:
                    continue
                for stage in self.stages[batched:-1]:
                    before = stage(before)
                a = jt.array(a)   # a Var, not a constant baked into kernels
                if channels_last:   # the norm kernel adds its output to the running sum
                    mean_h = conv_norm_nhwc(r.conv1, r.norm1, last.resample.execute_nhwc(before, pad=1),
                                            relu=True, accumulate=(mean_h, a))
                else:
                    h = conv_norm(r.conv1, r.norm1, r.pad(last.resample(before)), relu=True)
                    mean_h = kernels.accumulate(mean_h, h, a)
                mean_before = kernels.accumulate(mean_before, before, a)
                jt.sync([mean_before, mean_h])   # free these activations before the next
        skip = last.resample(mean_before)
        if channels_last:
            tail = conv_norm_nhwc(r.conv2, r.norm2, kernels.reflect_pad_nhwc(mean_h, 1), residual=skip,
                                  nchw_out=True)
        else:
            tail = conv_norm(r.conv2, r.norm2, r.pad(mean_h), residual=skip)
        return self.to_output(self.pad(tail)) * total

    def _batched_stages(self) -> int:
        """How many of the upsampling stages, from the first, run on a whole chunk of rows:
        those whose output row is at most :attr:`ROW_BYTES`."""
        size, n = self.start, 0
        for stage in self.stages:
            size *= 2
            if stage.res.conv1.out_channels * size * size * 4 > self.ROW_BYTES:
                break
            n += 1
        return n
