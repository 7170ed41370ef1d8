"""Stage 1 -- Component Embedding: train the five component auto-encoders.

Each component (left eye, right eye, nose, mouth, remainder) has an encoder (crop ->
latent) and a sketch decoder (latent -> crop). They are trained together, one Adam for
all ten networks, to reconstruct the *clean* crop of each training sketch:

    loss = sum over components of mean w * (decoder(encoder(x_c)) - y_c)^2    (or |.|)

where y_c is the crop of the clean sketch in [-1, 1] (the remainder is the whole
sketch with the four part boxes painted white, as at inference), w is 1 on paper and
1 + ``ink_weight`` on the target's lines, and x_c the same crop,
or -- with probability ``augment_prob`` -- the crop of a copy made to look hand-drawn.
BatchNorm uses batch statistics while training; the networks are switched to eval
mode (running statistics) at the end, which is how the encoders are used afterwards.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .checkpoints import CHECKPOINT_NAME, load_checkpoint, load_module_state, read_model_config, trainable
from .configs import Stage1Config
from .data import BatchSampler, TrainingData, sample_rng
from .figures import save_image_grid
from .loop import Run, StageResult, begin_stage, step_on_sum
from ..components import crop_components
from ..config import COMPONENTS, DEMO, ModelConfig
from ..embedding import ComponentEncoder, LatentDecoder, sketch_to_input
from ..synthesis import to_uint8

import jittor as jt

STAGE = "stage1"


def build_autoencoders(config: ModelConfig) -> Tuple[Dict[str, ComponentEncoder], Dict[str, LatentDecoder]]:
    """Fresh encoders and sketch decoders for every component
    (:func:`dfd_kit.pipeline.build_network`, the networks inference loads), in training mode."""
    from ..pipeline import build_network

    enc = {c: build_network("encoder", config, c) for c in COMPONENTS}
    dec = {c: build_network("sketch_decoder", config, c) for c in COMPONENTS}
    for m in list(enc.values()) + list(dec.values()):
        m.train()
    return enc, dec


def _modules(enc, dec) -> Dict[str, object]:
    return {**{f"encoder.{c}": enc[c] for c in COMPONENTS}, **{f"sketch_decoder.{c}": dec[c] for c in COMPONENTS}}


def stack_crops(sketches, layout) -> Dict[str, np.ndarray]:
    """uint8 (B, size, size) sketches -> {component: float32 (B, 1, S, S) in [-1, 1]}."""
    crops = [crop_components(s, layout) for s in sketches]
    return {c: sketch_to_input(np.stack([x[c] for x in crops])) for c in COMPONENTS}


def make_inputs(data: TrainingData, rows: np.ndarray, step: int, cfg, stage_id: int = 1) -> np.ndarray:
    """The input sketches of a batch: each clean sketch, or with probability
    ``cfg.augment_prob`` an augmented copy (randomness from :func:`sample_rng`)."""
    out = data.sketches[rows].copy()
    if cfg.augment_prob > 0:
        from ..data.sketch import augment_sketch

        for j, r in enumerate(rows):
            rng = sample_rng(cfg.seed, stage_id, step, data.indices[r])
            if rng.random() < cfg.augment_prob:
                out[j] = augment_sketch(out[j], rng, cfg.augment_strength)
    return out


def reconstruction_loss(out: jt.Var, target: jt.Var, kind: str, ink_weight: float = 0.0) -> jt.Var:
    """Mean L1 or squared error, each pixel weighted by 1 + ink_weight where the target
    has ink (darker than mid-grey): lines cover a few percent of a crop, and without the
    weight a blank crop is a deep local minimum (for L1 it is even the optimum: the
    per-pixel median of sparse lines is paper)."""
    d = out - target
    e = jt.abs(d) if kind == "l1" else d * d
    if not ink_weight:
        return e.mean()
    w = 1.0 + ink_weight * (target < 0.0).float32()
    return (e * w).sum() / w.sum()


def stage1_step(enc, dec, opt, inputs: np.ndarray, targets: np.ndarray, layout, loss: str = "mse",
                ink_weight: float = 0.0) -> Dict[str, float]:
    """One optimisation step of the five auto-encoders on a batch: uint8 (B, size, size)
    input sketches and the clean target sketches -> {component: loss, "total": their sum}.
    One Adam step on the sum, so all ten networks move together (notebook 06's exercise
    checks a learner's version against this one)."""
    x = stack_crops(inputs, layout)
    y = stack_crops(targets, layout)
    losses = {c: reconstruction_loss(dec[c](enc[c](jt.array(x[c]))), jt.array(y[c]), loss, ink_weight)
              for c in COMPONENTS}
    return step_on_sum(opt, losses)


def train_stage1(data_dir, out_dir, config: ModelConfig = DEMO, cfg: Optional[Stage1Config] = None,
                 data: Optional[TrainingData] = None,
                 on_step: Optional[Callable[[int], None]] = None) -> StageResult:
    """Train (or resume training) the component auto-encoders into ``out_dir/stage1``.

    data_dir: a dataset folder (samples.csv, sketch/, photo/); ``data`` may pass it
    preloaded. Resumes from ``out_dir/stage1/checkpoint.npz`` when it exists; returns at
    once when that checkpoint already reached the step or time budget. Writes
    ``stage1/losses.csv`` and, on rank 0, ``figures/stage1_losses.png`` and
    ``figures/stage1_samples_<step>.png``. Returns the networks in eval mode.
    """
    cfg = cfg or Stage1Config()
    config, data = begin_stage(cfg, out_dir, config, data, data_dir, photos=False)
    layout = config.layout
    enc, dec = build_autoencoders(config)
    opt = jt.optim.Adam(trainable(list(enc.values()) + list(dec.values())), cfg.lr, betas=(cfg.beta1, cfg.beta2))
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed)
    run = Run(STAGE, out_dir, cfg, _modules(enc, dec), {"adam": opt}, sampler)
    run.resume()

    def step_fn(step: int) -> Dict[str, float]:
        rows = sampler.next()
        return stage1_step(enc, dec, opt, make_inputs(data, rows, step, cfg), data.sketches[rows], layout,
                           cfg.loss, cfg.ink_weight)

    vis_rows = np.arange(min(cfg.n_vis, len(data)))

    def figure_fn(step: int):
        write_stage1_samples(enc, dec, data.sketches[vis_rows], layout,
                             Path(out_dir) / "figures" / f"stage1_samples_{step:06d}.png", step)

    stopped = run.loop(step_fn, figure_fn, on_step)
    for m in list(enc.values()) + list(dec.values()):
        m.eval()
    return StageResult(STAGE, run.step, run.elapsed, run.checkpoint_path, run.history,
                       {"encoders": enc, "sketch_decoders": dec}, stopped)


def reconstruct(enc, dec, sketches: np.ndarray, layout) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Eval-mode reconstructions: uint8 sketches (B, size, size) -> ({c: input crops uint8},
    {c: reconstructions uint8}). Leaves the networks in the mode it found them."""
    raw = [crop_components(s, layout) for s in sketches]
    crops = {c: np.stack([r[c] for r in raw]) for c in COMPONENTS}
    modes = {id(m): m.is_training() for m in list(enc.values()) + list(dec.values())}
    for m in list(enc.values()) + list(dec.values()):
        m.eval()
    try:
        with jt.no_grad():
            rec = {c: dec[c](enc[c](jt.array(sketch_to_input(crops[c])))).numpy()[:, 0] for c in COMPONENTS}
    finally:
        for m in list(enc.values()) + list(dec.values()):
            if modes[id(m)]:
                m.train()
    return crops, {c: to_uint8(rec[c]) for c in COMPONENTS}


def write_stage1_samples(enc, dec, sketches, layout, path, step: int = 0) -> Path:
    """Sample grid: per sample, each component's input crop next to its reconstruction."""
    crops, rec = reconstruct(enc, dec, sketches, layout)
    rows = [[img for c in COMPONENTS for img in (crops[c][i], rec[c][i])] for i in range(len(sketches))]
    titles = [f"{c}{' in' if k == 0 else ' out'}" for c in COMPONENTS for k in (0, 1)]
    return save_image_grid(rows, path, titles, title=f"stage 1 reconstructions, step {step}")


def load_stage1(out_dir, config: Optional[ModelConfig] = None):
    """The trained encoders and sketch decoders from ``out_dir/stage1/checkpoint.npz``,
    in eval mode: ``(encoders, sketch_decoders)``."""
    config = config or read_model_config(out_dir)
    st = load_checkpoint(Path(out_dir) / STAGE / CHECKPOINT_NAME)
    enc, dec = build_autoencoders(config)
    for name, m in _modules(enc, dec).items():
        load_module_state(m, st["modules"][name], name)
        m.eval()
    return enc, dec


__all__ = ["train_stage1", "stage1_step", "load_stage1", "build_autoencoders", "reconstruct", "write_stage1_samples",
           "stack_crops", "make_inputs", "reconstruction_loss"]
