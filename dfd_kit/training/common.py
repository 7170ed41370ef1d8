"""What both training stages share.

* :class:`Stage1Config` / :class:`Stage2Config`: every knob of a training run;
* :class:`TrainingData`: the on-disk dataset (``samples.csv``, ``sketch/``, ``photo/``)
  loaded into memory, sharded across MPI ranks;
* :class:`BatchSampler`: the data order, drawn from a seeded numpy Generator whose
  state goes into every checkpoint, and :func:`sample_rng` for per-sample randomness
  (augmentation, manifold projection) that needs no saved state at all;
* checkpoints: :func:`save_checkpoint` (atomic; arrays in an ``.npz``, the rest as JSON:
  loading one runs no code), :func:`module_state`, :func:`adam_state` and their loaders,
  so a resumed run continues bit for bit;
* :class:`Run`: the step loop -- step and wall-clock budgets, tqdm, periodic
  checkpoints and figures, resume; Ctrl-C (or a notebook's interrupt) ends the step under
  way, saves and stops (:class:`stop_at_step_end`);
* figures, written atomically as PNGs: the losses (:func:`dfd_kit.plotting.plot_losses`,
  one panel per loss) and :func:`save_image_grid`;
* MPI: :func:`mpi_rank`, :func:`is_main`, :func:`barrier`, ... (all no-ops outside mpirun).

Importing this module imports Jittor: ``import dfd_kit`` first (``dfd_kit.training``
does that for you).
"""
from __future__ import annotations

import csv
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import dfd_kit  # noqa: F401  -- configures Jittor's environment before its import
import jittor as jt
import numpy as np

from ..config import ModelConfig
from ..errors import ConfigError, TrainingInterrupted

# Jittor's kernels switch the CPU to flush-denormals-to-zero; numpy then warns whenever
# it (or matplotlib) first asks for float limits. Harmless here.
_SUBNORMAL = "The value of the smallest subnormal"
warnings.filterwarnings("ignore", message=_SUBNORMAL, category=UserWarning)

#: Format 2: the arrays in an uncompressed ``.npz`` (read with ``allow_pickle=False``) and
#: everything else -- step, configs, sampler and generator state, loss history -- as JSON in
#: its ``state`` member. Format 1 was a pickle (``checkpoint.pkl``); it is still read, through
#: the arrays-only unpickler of :mod:`dfd_kit.loading`, and replaced by format 2 at the next save.
CHECKPOINT_FORMAT = 2
CHECKPOINT_NAME = "checkpoint.npz"
LEGACY_CHECKPOINT_NAME = "checkpoint.pkl"
_LEGACY_FORMAT = 1


# ----------------------------------------------------------------------------- configs

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
    held-out sketches with 0.25 and 30% with 0; see Params/demo/MODEL_CARD.md.)
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
    at inference, where every part weight defaults to 1 (so half of the samples).

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


# ----------------------------------------------------------------------------- MPI

def mpi_rank() -> int:
    return int(jt.rank) if jt.in_mpi else 0


def mpi_world() -> int:
    return int(jt.world_size) if jt.in_mpi else 1


def is_main() -> bool:
    """True on rank 0 (and outside MPI): the process that writes files."""
    return mpi_rank() == 0


def barrier():
    """Wait for every rank (an all-reduce of a scalar). No-op outside MPI."""
    if jt.in_mpi:
        jt.array([0.0]).mpi_all_reduce("add").sync()


def exit_on_error_in_mpi():
    """Under MPI, make an uncaught exception end this rank at once (``os._exit(1)``), so
    mpirun stops the others instead of leaving them waiting in a collective forever."""
    if not jt.in_mpi:
        return
    import sys
    import traceback

    def hook(tp, value, tb):
        traceback.print_exception(tp, value, tb)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)

    sys.excepthook = hook


def broadcast_floats(values: Sequence[float]) -> List[float]:
    """Rank 0's values on every rank (so all ranks take the same decisions)."""
    if not jt.in_mpi:
        return list(values)
    return [float(v) for v in jt.array(np.asarray(values, np.float32)).mpi_broadcast(0).numpy()]


def all_reduce_sum(a: np.ndarray) -> np.ndarray:
    if not jt.in_mpi:
        return a
    return jt.array(a).mpi_all_reduce("add").numpy()


def average_running_stats(modules: Dict[str, "jt.nn.Module"]):
    """Average BatchNorm running statistics over the ranks (each rank saw other data)."""
    if not jt.in_mpi:
        return
    for m in modules.values():
        for k, v in m.state_dict().items():
            if k.endswith(("running_mean", "running_var")):
                v.assign(v.mpi_all_reduce("mean").stop_grad())
    jt.sync_all()


# ----------------------------------------------------------------------------- threads

def _libgomp():
    import ctypes

    try:
        return ctypes.CDLL("libgomp.so.1")   # the copy Jittor's kernels and oneDNN already use
    except OSError:
        return None


class omp_threads:
    """Context manager: run Jittor's CPU kernels on ``n`` OpenMP threads (None: unchanged).

    On a busy machine (other processes on the same cores) OpenMP's spin-waiting threads
    can make small kernels 10x slower; one thread avoids that.
    """

    def __init__(self, n: Optional[int]):
        self.n, self.old, self.lib = n, None, None

    def __enter__(self):
        if self.n:
            self.lib = _libgomp()
            if self.lib is not None:
                self.old = self.lib.omp_get_max_threads()
                self.lib.omp_set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        if self.lib is not None and self.old is not None:
            self.lib.omp_set_num_threads(int(self.old))
        return False


# ----------------------------------------------------------------------------- seeding

def seed_all(seed: int):
    """Seed Jittor's (and Python's and numpy's global) generators with the same seed on
    every MPI rank, so all ranks start from the same weights."""
    jt.set_global_seed(int(seed), different_seed_for_mpi=False)


def sample_rng(seed: int, stage: int, step: int, index: int) -> np.random.Generator:
    """Randomness for one sample at one step: a pure function of its arguments, so it
    needs no saved state and does not depend on batch composition or MPI rank."""
    return np.random.default_rng([int(seed), int(stage), int(step), int(index)])


# ----------------------------------------------------------------------------- data

class TrainingData:
    """The dataset in memory: ``sketches`` uint8 (N, S, S), ``photos`` uint8 (N, S, S, 3)
    (or None), ``sexes`` (N,) str, ``ids`` (N,) str, ``indices`` (N,) int -- each row's
    position in ``samples.csv``.

    shard=True under MPI keeps the rows rank::world_size, cut to the same length on
    every rank (so all ranks take the same number of steps per epoch).
    """

    def __init__(self, data_dir, layout, photos: bool = True, shard: bool = True, progress: bool = True,
                 limit: Optional[int] = None):
        from ..data import load_pair, load_samples

        samples = load_samples(data_dir)
        if limit is not None:
            samples = samples[:limit]
        if not samples:
            raise ConfigError(f"{data_dir} holds no samples")
        index = np.arange(len(samples))
        if shard and mpi_world() > 1:
            per_rank = len(samples) // mpi_world()
            if per_rank == 0:
                raise ConfigError(f"{len(samples)} samples cannot be shared by {mpi_world()} ranks")
            index = index[mpi_rank()::mpi_world()][:per_rank]
        self.data_dir, self.layout = Path(data_dir), layout
        self.indices = index
        self.ids = np.array([samples[i].sketch_path.stem for i in index])
        self.sexes = np.array([samples[i].sex for i in index])
        size = layout.size
        self.sketches = np.empty((len(index), size, size), np.uint8)
        self.photos = np.empty((len(index), size, size, 3), np.uint8) if photos else None
        from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

        for row, i in enumerate(tqdm(index, desc="loading data", unit="pair", leave=False,
                                     disable=not (progress and is_main()))):
            sk, ph = load_pair(samples[i], layout)
            self.sketches[row] = sk
            if photos:
                self.photos[row] = ph

    def __len__(self):
        return len(self.indices)


def photo_to_input(photos: np.ndarray) -> np.ndarray:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S) in [-1, 1]."""
    return (photos.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()


class BatchSampler:
    """Shuffled batches of row numbers, epoch after epoch (the last partial batch of an
    epoch is dropped, so every batch has the same shape and Jittor compiles once).

    The whole state -- numpy Generator, current permutation, position -- is in
    :meth:`state_dict`, so a restored sampler continues exactly where it stopped. Seeded
    identically on every MPI rank: each rank permutes its own (equally long) shard the
    same way.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ConfigError(f"batch size {batch_size} is larger than the {n} training samples"
                              + (" of this rank" if mpi_world() > 1 else ""))
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng([int(seed), 7])
        self.perm = self.rng.permutation(n)
        self.pos, self.epoch = 0, 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.perm = self.rng.permutation(self.n)
            self.pos, self.epoch = 0, self.epoch + 1
        batch = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "perm": self.perm.copy(), "pos": self.pos,
                "epoch": self.epoch, "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, st: dict):
        if st["n"] != self.n or st["batch_size"] != self.batch_size:
            raise ConfigError(f"the checkpoint was written for {st['n']} samples in batches of "
                              f"{st['batch_size']}; this run has {self.n} in batches of {self.batch_size}. "
                              "Use the same data and batch size, or a new output folder.")
        self.rng.bit_generator.state = st["rng"]
        self.perm, self.pos, self.epoch = np.asarray(st["perm"]).copy(), int(st["pos"]), int(st["epoch"])


# ----------------------------------------------------------------------------- state

def trainable(modules) -> List[jt.Var]:
    """The parameters an optimizer should get: not stop_grad (running stats are left out).
    Call after ``module.train()`` (Jittor's ``eval()`` stop_grads every parameter)."""
    out, seen = [], set()
    for m in modules:
        for p in m.parameters():
            if not p.is_stop_grad() and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def module_state(module) -> Dict[str, np.ndarray]:
    """Every Var of a module (parameters and running statistics) as numpy copies."""
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


def load_module_state(module, state: Dict[str, np.ndarray], name: str = "module"):
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise ConfigError(f"checkpoint of {name} does not fit the network (missing {missing[:5]}, "
                          f"unexpected {extra[:5]}, shape mismatch {bad[:5]}): was it written with "
                          "another model config?")
    for k, v in own.items():
        v.assign(jt.array(np.ascontiguousarray(state[k])))   # keeps v's stop_grad flag
    jt.sync_all()


def adam_state(opt) -> dict:
    """Jittor Adam's state: step count and the first/second moments of every parameter.
    (Jittor's own ``Optimizer.state_dict()`` returns live Vars, parameters included.)"""
    return {"n_step": int(opt.n_step), "lr": float(opt.lr),
            "m": [[m.numpy().copy() for m in pg["m"]] for pg in opt.param_groups],
            "v": [[v.numpy().copy() for v in pg["values"]] for pg in opt.param_groups]}


def load_adam_state(opt, st: dict, name: str = "optimizer"):
    groups = opt.param_groups
    if len(st["m"]) != len(groups) or any(len(a) != len(pg["m"]) for a, pg in zip(st["m"], groups)):
        raise ConfigError(f"{name} state does not fit: different parameter lists")
    for pg, ms, vs in zip(groups, st["m"], st["v"]):
        for var, a in zip(pg["m"], ms):
            var.assign(jt.array(a).stop_grad())
        for var, a in zip(pg["values"], vs):
            var.assign(jt.array(a).stop_grad())
    opt.n_step = int(st["n_step"])
    jt.sync_all()


def _split(obj, arrays: Dict[str, np.ndarray], where: str = "state"):
    """``obj`` as JSON, each numpy array replaced by {"__array__": name} and put in ``arrays``."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise ConfigError(f"a checkpoint stores arrays of numbers only; {where} is {obj.dtype}")
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj) or "__array__" in obj:
            raise ConfigError(f"a checkpoint stores dicts with string keys only (not '__array__'); see {where}")
        return {k: _split(v, arrays, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"a checkpoint cannot store {where}, a {type(obj).__name__}")


def _join(obj, arrays):
    """The inverse of :func:`_split`."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (dicts, lists, numbers, strings and numpy arrays) atomically as an
    ``.npz``: the arrays as members, the rest as JSON (floats exactly, by their repr).
    The file is written beside ``path``, flushed to disk and renamed over it: a run
    killed mid-save leaves the previous checkpoint intact."""
    from ..loading import atomic_write

    arrays: Dict[str, np.ndarray] = {}
    doc = json.dumps(_split(state, arrays)).encode()
    atomic_write(path, lambda f: np.savez(f, state=np.frombuffer(doc, np.uint8), **arrays))
    return Path(path)


def find_checkpoint(stage_dir) -> Optional[Path]:
    """A stage folder's checkpoint: ``checkpoint.npz``, else an older ``checkpoint.pkl``, else None."""
    for name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        if (Path(stage_dir) / name).is_file():
            return Path(stage_dir) / name
    return None


def load_checkpoint(path) -> dict:
    """Read a checkpoint of either format, running no code from it. ``path`` may name
    ``checkpoint.npz`` where only an older ``checkpoint.pkl`` exists."""
    path = Path(path)
    if not path.is_file() and path.name in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME):
        path = find_checkpoint(path.parent) or path
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        if magic == b"PK\x03\x04":
            state, fmt = _read_npz_checkpoint(path), CHECKPOINT_FORMAT
        elif magic[:1] == b"\x80":
            state, fmt = _read_pickle_checkpoint(path), _LEGACY_FORMAT
        else:
            raise ValueError("neither an .npz nor a pickle")
    except (ValueError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path} is not a readable dfd_kit training checkpoint ({e}); delete it to "
                          "start the stage again, or restore it from a copy") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{path} is not a dfd_kit training checkpoint (format {got})")
    return state


def _read_npz_checkpoint(path: Path) -> dict:
    """Format 2. Every member is checked before numpy reads it: stored (not compressed),
    and an array of numbers whose header's shape fills the member exactly, so the file
    cannot make numpy allocate more than it holds."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise ValueError(f"member {info.filename} is compressed; a checkpoint stores its arrays as they are")
            with zf.open(info) as m:
                version = np.lib.format.read_magic(m)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"member {info.filename}: unknown .npy version {version}")
                shape, _, dtype = read_header(m)
                if dtype.kind not in "biuf" or dtype.hasobject or dtype.fields is not None:
                    raise ValueError(f"member {info.filename} holds {dtype}, not numbers")
                if math.prod(shape) * dtype.itemsize != info.file_size - m.tell():
                    raise ValueError(f"member {info.filename}: its shape {shape} does not fit its size")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    state = json.loads(arrays.pop("state").tobytes().decode())
    return _join(state, arrays)


def _read_pickle_checkpoint(path: Path) -> dict:
    """Format 1 (``checkpoint.pkl``), through the arrays-only unpickler that reads Params/."""
    from ..loading import safe_unpickle

    with open(path, "rb") as f:
        return safe_unpickle(f, os.fstat(f.fileno()).st_size)


def write_model_config(out_dir, config: ModelConfig) -> ModelConfig:
    """Record the model config in ``out_dir/config.json``; an existing one must match."""
    path = Path(out_dir) / "config.json"
    if path.exists():
        old = ModelConfig.from_dict(json.loads(path.read_text()))
        if old != config:
            raise ConfigError(f"{path} describes another model config than this run's: resume with the "
                              "same config, or use a new output folder")
        return old
    if is_main():
        from ..loading import atomic_write

        atomic_write(path, lambda f: f.write(config.to_json()), "w")
    return config


def read_model_config(out_dir) -> ModelConfig:
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: is {out_dir} a training output folder?")
    return ModelConfig.from_dict(json.loads(path.read_text()))


# ----------------------------------------------------------------------------- figures

def _save_figure(fig, path) -> Path:
    """Write atomically: a figure being watched (or a run killed mid-write) never shows a
    half-written PNG."""
    from ..loading import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png"))


def save_image_grid(rows: List[List[np.ndarray]], path, col_titles: Sequence[str] = (),
                    row_titles: Sequence[str] = (), title: str = "", cell: float = 1.6) -> Path:
    """A grid of images (uint8 (H, W) gray or (H, W, 3) RGB; sizes may differ) -> PNG."""
    warnings.filterwarnings("ignore", message=_SUBNORMAL, category=UserWarning)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + (0.4 if title else 0.0)), dpi=100)
    FigureCanvasAgg(fig)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            ax = fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------- the loop

def rss_mb() -> float:
    """This process's resident memory in MB (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return float("nan")


class stop_at_step_end:
    """Context manager for a training loop: the first Ctrl-C (SIGINT; also Jupyter's
    "interrupt kernel") only sets :attr:`requested`, so the loop can finish the step under way,
    save a checkpoint and stop; a second one interrupts at once, as usual.

    Why: a step interrupted half-way leaves the networks half-updated (the discriminator
    stepped, the generator not), and without a save every step since the last checkpoint is
    lost. Only the main thread can take signals; elsewhere this does nothing.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupted: finishing this step and saving a checkpoint "
              "(interrupt again to stop at once, losing the steps since the last save).",
              file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class SimulatedKill(Exception):
    """Raised by tests from ``on_step`` to stop a run as if the process had been killed."""


@dataclass
class StageResult:
    """What a stage returns: where it stopped and its networks (in eval mode for stage 1)."""
    stage: str
    step: int
    elapsed_s: float
    checkpoint: Path
    history: List[dict]
    nets: Dict[str, object] = field(default_factory=dict)
    stopped_by: str = ""     # "steps", "time", or "" when it was already finished

    @property
    def seconds_per_step(self) -> float:
        h = [x for x in self.history if "sec" in x]
        return float(np.median([x["sec"] for x in h])) if h else float("nan")


class Run:
    """A stage's training loop with checkpoints, budgets, progress and figures.

    modules: {name: Module} -- everything whose Vars are saved (running stats included);
    optimizers: {name: jt.optim.Adam}. ``step_fn(step) -> {loss name: float}`` does one
    optimisation step; ``figure_fn(step)`` writes sample grids (rank 0 only).
    """

    def __init__(self, stage: str, out_dir, cfg: RunConfig, modules: Dict[str, object],
                 optimizers: Dict[str, object], sampler: BatchSampler, extra: Optional[dict] = None):
        self.stage, self.cfg = stage, cfg
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / stage
        self.fig_dir = self.out_dir / "figures"
        self.modules, self.optimizers, self.sampler = modules, optimizers, sampler
        self.extra = extra or {}
        self.step, self.elapsed, self.history = 0, 0.0, []
        self.resumed_from: Optional[int] = None

    @property
    def checkpoint_path(self) -> Path:
        """The stage's checkpoint: the one on disk (an older run's ``checkpoint.pkl`` until
        the first save replaces it), or where the first save will write."""
        return find_checkpoint(self.dir) or self.dir / CHECKPOINT_NAME

    def resume(self) -> bool:
        """Load the latest checkpoint if there is one. Returns True if it did."""
        path = find_checkpoint(self.dir)
        if path is None:
            return False
        st = load_checkpoint(path)
        if st["stage"] != self.stage:
            raise ConfigError(f"{path} belongs to {st['stage']}, not {self.stage}")
        for name, m in self.modules.items():
            load_module_state(m, st["modules"][name], name)
        for name, opt in self.optimizers.items():
            load_adam_state(opt, st["optimizers"][name], name)
        self.sampler.load_state_dict(st["sampler"])
        self.step, self.elapsed, self.history = int(st["step"]), float(st["elapsed_s"]), list(st["history"])
        self.resumed_from = self.step
        return True

    def save(self):
        """Checkpoint (collective under MPI: every rank must call it at the same step)."""
        average_running_stats(self.modules)
        if is_main():
            self._write()
        barrier()   # the other ranks may read the checkpoint next (e.g. build_banks)
        jt.gc()

    def _write(self):
        st = {"format": CHECKPOINT_FORMAT, "stage": self.stage, "step": self.step,
              "elapsed_s": self.elapsed, "train_config": self.cfg.to_dict(),
              "modules": {n: module_state(m) for n, m in self.modules.items()},
              "optimizers": {n: adam_state(o) for n, o in self.optimizers.items()},
              "sampler": self.sampler.state_dict(), "history": self.history,
              "world_size": mpi_world(), **self.extra}
        save_checkpoint(self.dir / CHECKPOINT_NAME, st)
        legacy = self.dir / LEGACY_CHECKPOINT_NAME
        if legacy.exists():   # an older run's checkpoint, now superseded
            legacy.unlink()
        self.write_loss_log()

    def write_loss_log(self):
        if not self.history:
            return
        from ..loading import atomic_write

        def write(f):
            w = csv.DictWriter(f, list(self.history[0]), extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(self.history)

        atomic_write(self.dir / "losses.csv", write, "w")

    def finished(self) -> bool:
        c = self.cfg
        return self.step >= c.steps or (c.minutes is not None and self.elapsed >= c.minutes * 60)

    def loop(self, step_fn: Callable[[int], Dict[str, float]], figure_fn: Optional[Callable[[int], None]] = None,
             on_step: Optional[Callable[[int], None]] = None) -> str:
        """Run until the step or time budget is spent; returns "steps", "time" or ""."""
        from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

        c = self.cfg
        if self.finished():
            return ""
        budget = float("inf") if c.minutes is None else c.minutes * 60.0
        main = is_main()
        # with a time budget the step limit is usually far away: count steps, show minutes left
        bar = tqdm(total=c.steps if c.minutes is None else None, initial=self.step, desc=self.stage, unit="step",
                   dynamic_ncols=True, disable=not (c.progress and main))
        last_save = time.time()
        stopped_by = "steps"
        threads = omp_threads(c.threads).__enter__()
        interrupt = stop_at_step_end().__enter__()
        try:
            while self.step < c.steps:
                t0 = time.time()
                losses = step_fn(self.step)
                dt = time.time() - t0
                self.elapsed += dt
                self.step += 1
                if self.step % max(1, c.log_every) == 0 or self.step == 1:
                    self.history.append({"step": self.step, **{k: float(v) for k, v in losses.items()},
                                         "sec": dt, "rss_mb": rss_mb()})
                bar.update(1)
                post = {k: f"{v:.3g}" for k, v in list(losses.items())[:4]}
                if c.minutes is not None:
                    post["min_left"] = f"{max(0.0, budget - self.elapsed) / 60:.1f}"
                bar.set_postfix(post, refresh=False)
                # decisions taken on rank 0 and shared, so every rank stops and saves together
                out_of_time = self.elapsed >= budget
                save_due = c.checkpoint_minutes is not None and time.time() - last_save >= c.checkpoint_minutes * 60
                out_of_time, save_due, stop = (v > 0.5 for v in broadcast_floats(
                    [out_of_time, save_due, interrupt.requested]))
                if stop:
                    self.save()
                    raise TrainingInterrupted(
                        f"{self.stage} stopped at step {self.step}, saved to {self.checkpoint_path}; "
                        "run the same training again to resume from there")
                done = out_of_time or self.step >= c.steps
                if done:
                    stopped_by = "time" if out_of_time and self.step < c.steps else "steps"
                    break
                if (c.checkpoint_every and self.step % c.checkpoint_every == 0) or save_due:
                    self.save()
                    last_save = time.time()
                if main and c.figures and c.figure_every and self.step % c.figure_every == 0 and figure_fn:
                    self.figures(figure_fn)
                if on_step is not None:
                    on_step(self.step)
            self.save()
            if main and c.figures and figure_fn:
                self.figures(figure_fn)
        finally:
            interrupt.__exit__()
            bar.close()
            threads.__exit__()
        return stopped_by

    def figures(self, figure_fn):
        from ..plotting import plot_losses

        if self.history:
            fig = plot_losses(self.history, title=f"{self.stage}: losses (step {self.step})", log=False,
                              smooth=max(1, len(self.history) // 50), panels=True)
            _save_figure(fig, self.fig_dir / f"{self.stage}_losses.png")
        figure_fn(self.step)
