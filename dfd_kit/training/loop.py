"""A stage's training loop, :class:`Run`: step and wall-clock budgets, tqdm, periodic
checkpoints and figures, resume. Ctrl-C (or a notebook's interrupt) ends the step under
way, saves and stops (:class:`stop_at_step_end`); a stage returns a :class:`StageResult`.

Importing this module imports Jittor.
"""
from __future__ import annotations

import csv
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import dfd_kit  # noqa: F401  -- configures Jittor's environment before its import
import jittor as jt
import numpy as np

from ..errors import ConfigError, TrainingInterrupted
from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, adam_state, find_checkpoint,
                          load_adam_state, load_checkpoint, load_module_state, module_state, save_checkpoint,
                          write_model_config)
from .configs import RunConfig
from .data import BatchSampler, TrainingData, seed_all
from .figures import save_figure
from .parallel import average_running_stats, barrier, broadcast_floats, is_main, mpi_world, omp_threads


def step_on_sum(opt, losses: Dict[str, jt.Var]) -> Dict[str, float]:
    """One optimiser step on the sum of ``losses`` (all networks move together) ->
    {name: loss, "total": their sum} as floats, for the loss log."""
    total = sum(losses.values())
    opt.step(total)
    jt.sync_all()
    out = {c: v.item() for c, v in losses.items()}
    out["total"] = total.item()
    return out


def begin_stage(cfg: RunConfig, out_dir, config, data: Optional[TrainingData], data_dir, photos: bool):
    """What every stage does first: check its settings, write the run's config.json (or check
    it against a resumed run's), seed every generator, and load the data set unless ``data``
    is given. Returns ``(config, data)``."""
    cfg.check()
    config = write_model_config(out_dir, config)
    seed_all(cfg.seed)
    if data is None:
        data = TrainingData(data_dir, config.layout, photos=photos, progress=cfg.progress)
    return config, data


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
            save_figure(fig, self.fig_dir / f"{self.stage}_losses.png")
        figure_fn(self.step)
