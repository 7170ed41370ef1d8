"""The settings of a training run: :class:`RunConfig` (what every stage has) and
:class:`Stage1Config` / :class:`Stage2Config` / :class:`QueryConfig` (each stage's own
knobs), checked before a stage starts. Plain dataclasses: a checkpoint stores them as a dict, and a resumed run reads
them back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from ..errors import ConfigError


@dataclass
class RunConfig:
    """Settings every stage has.

    A stage stops after ``steps`` steps or ``minutes`` minutes of training (not counting
    data loading), whichever comes first; ``minutes=None`` means no time limit. Both
    count across restarts: a run resumed from a checkpoint continues the same budget.
    """
    steps: int = 1000
    minutes: Optional[float] = None
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    checkpoint_every: int = 200          # steps; 0 = only at the end
    checkpoint_minutes: Optional[float] = 10.0   # also save when this long since the last save
    figure_every: int = 200              # steps; 0 = only at the end
    figures: bool = True                 # False: no figures at all (tests)
    n_vis: int = 4                       # samples in the sample grids
    log_every: int = 1                   # steps between loss records
    progress: bool = True                # tqdm bar
    threads: Optional[int] = None        # OpenMP threads while training (None: leave as is)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Stage1Config(RunConfig):
    """Stage 1: the five component auto-encoders (encoder + sketch decoder).

    loss: "mse" (as in the paper) or "l1" between the decoder output and the clean crop
    in [-1, 1]. ink_weight: extra weight of the target's line pixels (see
    :func:`dfd_kit.training.stage1.reconstruction_loss`; 0 = the plain mean).
    augment_prob: chance that a sample's *input* sketch is made to look hand-drawn
    (:func:`dfd_kit.data.augment_sketch` at ``augment_strength``) while the target stays
    the clean sketch (a denoising AE). Off by default, as in the paper: the auto-encoders
    learn clean drawings only, so a rough drawing's latent lands *off* the manifold of
    real sketches, and manifold projection is what brings it back. A denoising encoder
    does that repair itself, and then projection only blends in other faces. (On the
    facesjs demo data it makes little difference: projection won on 27.5% of degraded
    held-out sketches with 0.25 and 30% with 0; see Params/demo/MODEL_CARD.md. On the
    photo data, 0.5 brought rough latents nearer their clean ones but projection then
    landed farther than the raw latent on more faces, before any stage 2: the ``geometry``
    subcommand, Params/photo/MODEL_CARD.md.)
    """
    loss: str = "mse"
    ink_weight: float = 4.0
    augment_prob: float = 0.0
    augment_strength: float = 1.0

    def check(self):
        _check_common(self)
        if self.loss not in ("l1", "mse"):
            raise ConfigError(f"stage 1 loss must be 'l1' or 'mse', not {self.loss!r}")
        if not self.ink_weight >= 0:
            raise ConfigError(f"stage 1 ink_weight must be >= 0, not {self.ink_weight!r}")


@dataclass
class Stage2Config(RunConfig):
    """Stage 2: feature decoders + generator trained as a conditional GAN (encoders frozen).

    Losses (generator side): ``lambda_gan`` * LSGAN + ``lambda_fm`` * discriminator
    feature matching (L1) + ``lambda_l1`` * L1 to the photo. ``lambda_perceptual`` is the
    paper's VGG perceptual loss; it needs ImageNet VGG weights, which this kit does not
    ship, so it must stay 0 (a non-zero value raises).

    Discriminator: ``d_scales`` PatchGANs (full resolution, then each scale 2x smaller),
    each ``d_layers`` stride-2 4x4 convs from ``ndf`` channels, LeakyReLU(0.2), instance
    norm. ``d_condition``: "sketch" (D sees the clean sketch next to the image) or "none".

    Latents: the raw latents of the training sketches; with ``augment_prob`` the sketch is
    augmented before encoding, and with ``project_prob`` each component's latent is
    replaced by its manifold projection (K = ``project_k`` or the model's k, the sample's
    own bank row left out) blended with weight w ~ U(0, 1) -- what the decoders will see
    at inference, where every part weight defaults to the model's ``blend_weight`` (so
    half of the samples).

    Learning rate: ``lr`` throughout, or, with ``lr_decay_start``, falling linearly to 0
    from that step to ``steps`` (:meth:`lr_at`).
    """
    lambda_gan: float = 1.0
    lambda_fm: float = 10.0
    lambda_l1: float = 20.0
    lambda_perceptual: float = 0.0
    ndf: int = 32
    d_layers: int = 3
    d_scales: int = 2
    d_condition: str = "sketch"
    augment_prob: float = 0.0
    augment_strength: float = 1.0
    project_prob: float = 0.5
    project_k: Optional[int] = None
    lr_decay_start: Optional[int] = None

    def lr_at(self, step: int) -> float:
        """The learning rate for ``step`` (0-based): ``lr`` until ``lr_decay_start``, then
        falling linearly to 0 at ``steps``, pix2pixHD's schedule (None: constant). The late,
        small steps settle the generator where the constant rate keeps it hopping between
        textures; the schedule leaves the steps before it untouched, so a finished run can
        be extended by raising ``steps`` and resuming."""
        if self.lr_decay_start is None or step < self.lr_decay_start:
            return self.lr
        span = max(1, self.steps - self.lr_decay_start)
        return self.lr * max(0.0, 1.0 - (step - self.lr_decay_start) / span)

    def check(self):
        _check_common(self)
        if self.lr_decay_start is not None and not 0 <= self.lr_decay_start <= self.steps:
            raise ConfigError(f"lr_decay_start must be between 0 and steps ({self.steps}), "
                              f"not {self.lr_decay_start}")
        if self.lambda_perceptual:
            raise ConfigError("lambda_perceptual must be 0: the perceptual (VGG) loss needs ImageNet VGG "
                              "weights, which dfd_kit does not ship or download")
        if self.d_condition not in ("sketch", "none"):
            raise ConfigError(f"d_condition must be 'sketch' or 'none', not {self.d_condition!r}")
        if self.d_scales < 1 or self.d_layers < 1:
            raise ConfigError("d_scales and d_layers must be at least 1")


@dataclass
class QueryConfig(RunConfig):
    """The query encoders (:mod:`dfd_kit.training.query`): stage-1 encoders fine-tuned so
    that a rough drawing's query lands on its clean drawing's latent. Each training sketch
    is made rough with odds ``rough_prob``, hand-drawn with ``augment_prob``, else left
    clean (which holds a clean drawing's query on its latent), at ``strength``. Adam with
    the usual betas: a fine-tune of a regression, not a GAN. For the photo model's networks
    a step takes about 0.6 s on two cores; 4000 steps removed a little more of the rough
    validation sketches' error than 2000 (9.7% against 9.3% at w = 0.75)."""
    steps: int = 4000
    batch_size: int = 12
    lr: float = 1e-4
    beta1: float = 0.9
    rough_prob: float = 0.6
    augment_prob: float = 0.25
    strength: float = 1.0

    def check(self):
        _check_common(self)
        if not 0.0 <= self.rough_prob <= 1.0 or self.rough_prob + self.augment_prob > 1.0:
            raise ConfigError(f"rough_prob ({self.rough_prob}) and augment_prob ({self.augment_prob}) must be "
                              "odds in [0, 1] that add up to at most 1")
        if not self.strength >= 0:
            raise ConfigError(f"strength must be >= 0, not {self.strength!r}")


def _check_common(cfg: RunConfig):
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {cfg.batch_size}")
    if cfg.steps < 0:
        raise ConfigError(f"steps must be >= 0, not {cfg.steps}")
    if cfg.minutes is not None and cfg.minutes < 0:
        raise ConfigError(f"minutes must be >= 0 or None, not {cfg.minutes}")
    for name in ("augment_prob", "project_prob"):
        p = getattr(cfg, name, 0.0)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], not {p}")
