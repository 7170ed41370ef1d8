"""Stage 2 -- Feature Mapping + Image Synthesis, trained as a conditional GAN.

The stage-1 encoders are frozen (eval mode, no gradients). For each training sample the
five component latents go through the feature decoders, the maps are pasted into one
face map and the generator turns it into an image, which is compared with the real photo:

    latents --(feature decoders)--> maps --(paste)--> face map --(generator)--> image

Generator side (feature decoders AND generator, one Adam):
    lambda_gan * LSGAN(D(sketch, fake), 1)
  + lambda_fm  * L1 between D's intermediate features of fake and real
  + lambda_l1  * L1(fake, photo)
Discriminator (own Adam, on the detached fake):
    0.5 * [LSGAN(D(sketch, photo), 1) + LSGAN(D(sketch, fake), 0)]

Both updates of a step are computed from the weights of before the step; D's pass on
the real batch serves both its own loss and the feature matching.

D is a multi-scale PatchGAN (:class:`MultiscaleDiscriminator`). Gradients of every
generator-side loss reach the feature decoders through the paste
(:func:`dfd_kit.mapping.paste_feature_maps`, a masked sum: each face-map pixel's
gradient goes to the one component shown there; the tests check it).

The latents are the raw latents of the training sketches (what a drawing gives when
the part weights are 0), with probability ``project_prob`` replaced per component by
their manifold projection onto the other training samples of the same sex, blended
with a random weight (what the sliders give at inference).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

import jittor as jt
from jittor import nn

from .banks import BankSet, load_banks
from .checkpoints import (CHECKPOINT_NAME, find_checkpoint, load_checkpoint, load_module_state, read_model_config,
                          trainable)
from .configs import Stage2Config
from .data import BatchSampler, TrainingData, photo_to_input, sample_rng
from .figures import save_image_grid
from .loop import Run, StageResult, begin_stage
from .stage1 import load_stage1, make_inputs, stack_crops
from ..config import COMPONENTS, DEMO, Layout, ModelConfig
from ..embedding import sketch_to_input
from ..errors import ConfigError
from ..layers import Norm2d
from ..manifold import project_to_manifold
from ..mapping import paste_feature_maps, paste_masks
from ..synthesis import to_uint8_image

STAGE = "stage2"


# ----------------------------------------------------------------------------- paste

# Training and inference share one paste, dfd_kit.mapping.paste_feature_maps: a masked sum
# whose gradient reaches only the component each pixel shows.


# ----------------------------------------------------------------------------- discriminator

class PatchDiscriminator(nn.Module):
    """(N, C, H, W) -> list of feature maps, the last one the real/fake score map.

    ``n_layers`` blocks of conv 4x4 stride 2 (the first without norm), then one conv 4x4
    stride 1 block, each with instance norm and LeakyReLU(0.2); then a conv 4x4 to one
    channel. Width doubles per block from ``ndf`` up to 8 * ndf.
    """

    def __init__(self, in_channels: int, ndf: int = 32, n_layers: int = 3):
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2))]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = min(ch * 2, ndf * 8)
            stride = 2 if i < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(ch, out, 4, stride=stride, padding=1),
                                        Norm2d(out, "sample", track_running=False), nn.LeakyReLU(0.2)))
            ch = out
        blocks.append(nn.Sequential(nn.Conv2d(ch, 1, 4, stride=1, padding=1)))
        self.blocks = nn.Sequential(*blocks)

    def execute(self, x) -> List[jt.Var]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``n_scales`` PatchGANs: the first on the input, each next one on a 2x average-pooled
    copy. Returns one feature list per scale."""

    def __init__(self, in_channels: int, ndf: int = 32, n_layers: int = 3, n_scales: int = 2):
        self.scales = nn.Sequential(*[PatchDiscriminator(in_channels, ndf, n_layers) for _ in range(n_scales)])
        self.down = nn.AvgPool2d(2, stride=2)

    def execute(self, x) -> List[List[jt.Var]]:
        outs = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.down(x)
            outs.append(d(x))
        return outs


def lsgan_loss(outs: List[List[jt.Var]], real: bool) -> jt.Var:
    """Least-squares GAN loss averaged over scales: mean((score - target)^2)."""
    t = 1.0 if real else 0.0
    return sum(((f[-1] - t) ** 2).mean() for f in outs) / len(outs)


def feature_matching_loss(fake: List[List[jt.Var]], real: List[List[jt.Var]]) -> jt.Var:
    """Mean L1 between D's intermediate features (all but the score map) of fake and real
    images, averaged over layers and scales; the real features are constants."""
    terms = [jt.abs(f - r.detach()).mean() for fs, rs in zip(fake, real) for f, r in zip(fs[:-1], rs[:-1])]
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- networks

def build_synthesis(config: ModelConfig):
    """Fresh feature decoders and generator (:func:`dfd_kit.pipeline.build_network`)."""
    from ..pipeline import build_network

    return {c: build_network("feature_decoder", config, c) for c in COMPONENTS}, build_network("generator", config)


def build_discriminator(cfg: Stage2Config) -> MultiscaleDiscriminator:
    """A fresh discriminator, its norms the fast path's where that works here (their
    statistics by sgemm, on every core), as :func:`build_synthesis` builds the generator."""
    from .. import fast

    d = MultiscaleDiscriminator(3 + (1 if cfg.d_condition == "sketch" else 0), cfg.ndf, cfg.d_layers, cfg.d_scales)
    return fast.accelerate(d) if fast.available() else d


def synthesize(fdec, gen, latents: Dict[str, jt.Var], layout: Layout) -> jt.Var:
    """latents {component: (B, D)} -> images (B, 3, size, size) in [-1, 1], differentiable
    with respect to the feature decoders and the generator."""
    return gen(paste_feature_maps({c: fdec[c](latents[c]) for c in COMPONENTS}, layout))


def _modules(fdec, gen, disc) -> Dict[str, object]:
    return {**{f"feature_decoder.{c}": fdec[c] for c in COMPONENTS}, "generator": gen, "discriminator": disc}


# ----------------------------------------------------------------------------- latents

class LatentSource:
    """The latents stage 2 feeds the feature decoders for a batch of training rows."""

    def __init__(self, data: TrainingData, bankset: BankSet, cfg: Stage2Config, config: ModelConfig, encoders=None):
        ids = bankset.ids[data.indices] if data.indices.max(initial=-1) < len(bankset) else None
        if ids is None or not np.array_equal(ids, data.ids):
            raise ConfigError("banks.npz was built from another dataset than this run's: run build_banks "
                              "again for this data")
        self.data, self.bankset, self.cfg, self.config = data, bankset, cfg, config
        self.encoders = encoders
        self.k = cfg.project_k or config.k

    def raw(self, rows: np.ndarray, step: int) -> Dict[str, np.ndarray]:
        """Raw latents: from banks.npz, or -- when sketches are augmented -- the frozen
        encoders on this step's (possibly augmented) sketches."""
        if self.cfg.augment_prob > 0:
            x = stack_crops(make_inputs(self.data, rows, step, self.cfg, stage_id=2), self.config.layout)
            with jt.no_grad():
                return {c: self.encoders[c](jt.array(x[c])).numpy() for c in COMPONENTS}
        idx = self.data.indices[rows]
        return {c: self.bankset.latents[c][idx].copy() for c in COMPONENTS}

    def project(self, z: np.ndarray, c: str, dataset_index: int, weight: float) -> np.ndarray:
        """Manifold projection of one latent onto its sex's bank without its own row."""
        sex = self.bankset.sexes[dataset_index]
        bank = np.delete(self.bankset.banks[sex][c], self.bankset.row_in_bank[dataset_index], axis=0)
        k = min(self.k, len(bank))
        if k < 2:
            return z
        try:
            return project_to_manifold(z, bank, k, weight).vector
        except np.linalg.LinAlgError:   # duplicate neighbours (identical training crops): keep the raw latent
            return z

    def batch(self, rows: np.ndarray, step: int) -> Dict[str, np.ndarray]:
        z = self.raw(rows, step)
        if self.cfg.project_prob > 0:
            for j, r in enumerate(rows):
                i = int(self.data.indices[r])
                rng = sample_rng(self.cfg.seed, 3, step, i)
                if rng.random() < self.cfg.project_prob:
                    for c in COMPONENTS:
                        z[c][j] = self.project(z[c][j], c, i, float(rng.uniform()))
        return z


# ----------------------------------------------------------------------------- training

def train_stage2(data_dir, out_dir, config: ModelConfig = DEMO, cfg: Optional[Stage2Config] = None,
                 data: Optional[TrainingData] = None,
                 on_step: Optional[Callable[[int], None]] = None) -> StageResult:
    """Train (or resume) the feature decoders and generator into ``out_dir/stage2``.

    Needs ``out_dir/stage1/checkpoint.npz`` (when ``cfg.augment_prob`` > 0, for the
    encoders) and ``out_dir/banks.npz`` (stage-1 latents of the training sketches).
    Resumes from ``out_dir/stage2/checkpoint.npz`` when it exists. Writes losses and,
    on rank 0, ``figures/stage2_losses.png`` and ``figures/stage2_samples_<step>.png``.
    """
    cfg = cfg or Stage2Config()
    config, data = begin_stage(cfg, out_dir, config, data, data_dir, photos=True)
    layout = config.layout
    if data.photos is None:
        raise ConfigError("stage 2 needs the photos: load TrainingData with photos=True")
    bankset = load_banks(out_dir)
    encoders = load_stage1(out_dir, config)[0] if cfg.augment_prob > 0 else None
    source = LatentSource(data, bankset, cfg, config, encoders)

    fdec, gen = build_synthesis(config)
    disc = build_discriminator(cfg)
    for m in [*fdec.values(), gen, disc]:
        m.train()
    betas = (cfg.beta1, cfg.beta2)
    opt_g = jt.optim.Adam(trainable([*fdec.values(), gen]), cfg.lr, betas=betas)
    opt_d = jt.optim.Adam(trainable([disc]), cfg.lr, betas=betas)
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed)
    run = Run(STAGE, out_dir, cfg, _modules(fdec, gen, disc), {"adam_g": opt_g, "adam_d": opt_d}, sampler)
    run.resume()

    def d_input(cond, img):
        return img if cond is None else jt.concat([cond, img], dim=1)

    def step_fn(step: int) -> Dict[str, float]:
        opt_g.lr = opt_d.lr = cfg.lr_at(step)
        rows = sampler.next()
        z = source.batch(rows, step)
        latents = {c: jt.array(z[c]).stop_grad() for c in COMPONENTS}
        real = jt.array(photo_to_input(data.photos[rows]))
        cond = jt.array(sketch_to_input(data.sketches[rows])) if cfg.d_condition == "sketch" else None
        fake = synthesize(fdec, gen, latents, layout)
        out_real = disc(d_input(cond, real))          # constant for the generator side
        out_fake = disc(d_input(cond, fake))
        g_gan = lsgan_loss(out_fake, True)
        g_fm = feature_matching_loss(out_fake, out_real) if cfg.lambda_fm else jt.zeros(1)
        g_l1 = jt.abs(fake - real).mean()
        total = cfg.lambda_gan * g_gan + cfg.lambda_fm * g_fm + cfg.lambda_l1 * g_l1
        d_real = lsgan_loss(out_real, True)
        d_fake = lsgan_loss(disc(d_input(cond, fake.detach())), False)
        # Both updates are computed from this step's graph, i.e. from the weights of before
        # the step: Jittor's update rebinds a parameter and leaves the built graph intact.
        opt_g.step(total)                    # feature decoders + generator
        opt_d.step(0.5 * (d_real + d_fake))  # discriminator
        jt.sync_all()
        return {"g_total": total.item(), "g_gan": g_gan.item(), "g_fm": g_fm.item(), "g_l1": g_l1.item(),
                "d_real": d_real.item(), "d_fake": d_fake.item()}

    vis_rows = np.arange(min(cfg.n_vis, len(data)))

    def figure_fn(step: int):
        write_stage2_samples(fdec, gen, source, vis_rows, Path(out_dir) / "figures" / f"stage2_samples_{step:06d}.png",
                             step)

    stopped = run.loop(step_fn, figure_fn, on_step)
    return StageResult(STAGE, run.step, run.elapsed, run.checkpoint_path, run.history,
                       {"feature_decoders": fdec, "generator": gen, "discriminator": disc}, stopped)


def write_stage2_samples(fdec, gen, source: LatentSource, rows: np.ndarray, path, step: int = 0) -> Path:
    """Sample grid: sketch | generated from the raw latents | generated from the fully
    projected latents (w = 1, own row left out) | the real photo."""
    layout = source.config.layout
    data = source.data
    idx = data.indices[rows]
    raw = {c: source.bankset.latents[c][idx] for c in COMPONENTS}
    proj = {c: np.stack([source.project(raw[c][j], c, int(i), 1.0) for j, i in enumerate(idx)]) for c in COMPONENTS}
    with jt.no_grad():
        imgs = [synthesize(fdec, gen, {c: jt.array(z[c]) for c in COMPONENTS}, layout).numpy() for z in (raw, proj)]
    grid = [[data.sketches[r], to_uint8_image(imgs[0][j]), to_uint8_image(imgs[1][j]), data.photos[r]]
            for j, r in enumerate(rows)]
    return save_image_grid(grid, path, ["sketch", "generated (raw)", "generated (projected)", "photo"],
                           title=f"stage 2 samples, step {step}", cell=2.0)


def load_stage2(out_dir, config: Optional[ModelConfig] = None):
    """The trained ``(feature_decoders, generator)`` from ``out_dir/stage2/checkpoint.npz``."""
    config = config or read_model_config(out_dir)
    st = load_checkpoint(Path(out_dir) / STAGE / CHECKPOINT_NAME)
    fdec, gen = build_synthesis(config)
    for c in COMPONENTS:
        load_module_state(fdec[c], st["modules"][f"feature_decoder.{c}"], f"feature_decoder.{c}")
    load_module_state(gen, st["modules"]["generator"], "generator")
    return fdec, gen


# ----------------------------------------------------------------------------- export

def export_model(out_dir, params_dir, dtype=np.float16, model_card: Optional[str] = None) -> Path:
    """Write the trained model of ``out_dir`` as a Params folder loadable by
    :func:`dfd_kit.load` / :func:`dfd_kit.pipeline.load_model`: encoders and sketch
    decoders (stage 1), feature decoders and generator (stage 2), feature banks, and
    ``config.json``; weights stored as ``dtype`` (float16: half the size)."""
    from ..pipeline import DeepFaceDrawing, save_model

    out_dir = Path(out_dir)
    config = read_model_config(out_dir)
    enc, dec = load_stage1(out_dir, config)
    fdec, gen = load_stage2(out_dir, config)
    bankset = load_banks(out_dir)
    for s, comps in bankset.banks.items():
        if len(comps["remainder"]) < config.k:
            import warnings

            warnings.warn(f"the {s} feature bank has {len(comps['remainder'])} rows, fewer than k={config.k}: "
                          f"generation with sex={s!r} will fail unless a smaller k is passed")
    model = DeepFaceDrawing(config, enc, dec, fdec, gen, bankset.banks, source=str(params_dir))
    if model_card is None:
        model_card = default_model_card(out_dir, bankset)
    return save_model(model, params_dir, dtype=dtype, model_card=model_card)


def default_model_card(out_dir, bankset: BankSet) -> str:
    lines = ["# dfd_kit model trained with dfd_kit.training", ""]
    for stage in ("stage1", "stage2"):
        p = find_checkpoint(Path(out_dir) / stage)
        if p is not None:
            st = load_checkpoint(p)
            cfg = st["train_config"]
            lines.append(f"* {stage}: {st['step']} steps, {st['elapsed_s'] / 60:.1f} min, batch {cfg['batch_size']}, "
                         f"lr {cfg['lr']}, {st.get('world_size', 1)} process(es)")
    n_m, n_f = (int((bankset.sexes == s).sum()) for s in ("male", "female"))
    lines.append(f"* feature banks: {n_m} male, {n_f} female training sketches")
    return "\n".join(lines) + "\n"


__all__ = ["train_stage2", "load_stage2", "export_model", "paste_masks", "PatchDiscriminator",
           "MultiscaleDiscriminator", "lsgan_loss", "feature_matching_loss", "build_synthesis",
           "build_discriminator", "synthesize", "LatentSource", "write_stage2_samples"]
