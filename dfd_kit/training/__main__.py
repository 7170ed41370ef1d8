"""Command line: ``python -m dfd_kit.training demo|export ...``.

``demo`` is the kit's recipe for its bundled demo model: facesjs cartoon faces (built
on first use), the DEMO config, stage 1, feature banks, stage 2, export -- each stage
time-budgeted so the whole run fits in about 60-90 minutes on two CPU cores::

    python -m dfd_kit.training demo --data data/facesjs --out runs/demo \\
        --minutes-stage1 20 --minutes-stage2 50

Run the same command again after an interruption: finished stages are skipped and the
interrupted one resumes from its last checkpoint. Under ``mpirun -np N`` the stages
train data-parallel (build the data set first, without mpirun).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

#: The recipe's defaults (see train_demo).
DEMO_FACES = 2000
DEMO_HELDOUT_FACES = 32
DEMO_MINUTES_STAGE1 = 20.0
DEMO_MINUTES_STAGE2 = 50.0


def ensure_facesjs_data(data_dir, n: int, seed: int, layout, progress: bool = True) -> Path:
    """Build the facesjs data set into ``data_dir`` unless its samples.csv exists."""
    data_dir = Path(data_dir)
    if not (data_dir / "samples.csv").exists():
        from ..data.facesjs import build_facesjs_dataset

        build_facesjs_dataset(data_dir, n, seed=seed, layout=layout, progress=progress)
    return data_dir


def heldout_figure(params_dir, heldout_dir, path, n: int = 8) -> Path:
    """Generate faces for held-out sketches with an exported model: a grid of sketch |
    shadow guidance | generated (full manifold projection) | true photo."""
    from ..data import load_pair, load_samples
    from ..pipeline import load_model
    from .common import save_image_grid

    model = load_model(params_dir)
    rows = []
    for s in load_samples(heldout_dir)[:n]:
        sketch, photo = load_pair(s, model.layout)
        res = model.generate(sketch, sex=s.sex, shadows=True)
        rows.append([res.sketch, res.shadow, res.image, photo])
    return save_image_grid(rows, path, ["held-out sketch", "shadow", "generated", "photo"],
                           title="exported model on held-out faces", cell=2.0)


def train_demo(data_dir="data/facesjs", out_dir="runs/demo", minutes_stage1: float = DEMO_MINUTES_STAGE1,
               minutes_stage2: float = DEMO_MINUTES_STAGE2, n_faces: int = DEMO_FACES, seed: int = 0,
               batch_size: int = 4, params_dir=None, heldout_dir=None, n_heldout: int = DEMO_HELDOUT_FACES,
               threads: Optional[int] = None, progress: bool = True, steps_stage1: int = 1_000_000,
               steps_stage2: int = 1_000_000) -> dict:
    """The demo recipe. Returns a summary dict (also written to ``out_dir/summary.json``).

    1. data: ``n_faces`` facesjs faces (seed ``seed``) in ``data_dir`` and ``n_heldout``
       held-out faces (seed ``seed + 1``, never trained on) in ``heldout_dir``
       (default ``<data_dir>_heldout``), each built only if missing;
    2. stage 1 for ``minutes_stage1`` minutes (or ``steps_stage1`` steps);
    3. feature banks from every training sketch;
    4. stage 2 for ``minutes_stage2`` minutes (or ``steps_stage2`` steps);
    5. export to ``params_dir`` (default ``<out_dir>/params``; float16) and a figure of the
       exported model on the held-out faces (``<out_dir>/figures/heldout.png``).
    """
    from ..config import DEMO
    from . import common
    from .banks import build_banks
    from .stage1 import train_stage1
    from .stage2 import export_model, train_stage2

    common.exit_on_error_in_mpi()
    t_start = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    heldout_dir = Path(heldout_dir) if heldout_dir else data_dir.with_name(data_dir.name + "_heldout")
    params_dir = Path(params_dir) if params_dir else out_dir / "params"
    in_mpi = common.mpi_world() > 1
    if in_mpi:
        missing = [d for d in (data_dir, heldout_dir) if not (d / "samples.csv").exists()]
        if missing:
            raise SystemExit(f"build the data first, without mpirun: {', '.join(map(str, missing))} "
                             "(python -m dfd_kit.data.facesjs --out DIR --n N --seed S)")
    else:
        ensure_facesjs_data(data_dir, n_faces, seed, DEMO.layout, progress)
        ensure_facesjs_data(heldout_dir, n_heldout, seed + 1, DEMO.layout, progress)

    data = common.TrainingData(data_dir, DEMO.layout, photos=True, progress=progress)
    run = dict(batch_size=batch_size, seed=seed, threads=threads, progress=progress, checkpoint_every=500,
               checkpoint_minutes=5.0, figure_every=250)
    cfg1 = common.Stage1Config(steps=steps_stage1, minutes=minutes_stage1, lr=5e-4, augment_prob=0.25, **run)
    cfg2 = common.Stage2Config(steps=steps_stage2, minutes=minutes_stage2, **run)

    r1 = train_stage1(data_dir, out_dir, DEMO, cfg1, data=data)
    if not (out_dir / "banks.npz").exists() or r1.stopped_by:
        build_banks(out_dir, data=None if in_mpi else data, data_dir=data_dir, progress=progress,
                    encoders=r1.nets["encoders"])
    r2 = train_stage2(data_dir, out_dir, DEMO, cfg2, data=data)
    summary = {"data": str(data_dir), "heldout": str(heldout_dir), "out": str(out_dir), "params": str(params_dir),
               "processes": common.mpi_world(), "batch_size_per_process": batch_size,
               "stage1": {"steps": r1.step, "minutes": round(r1.elapsed_s / 60, 2),
                          "sec_per_step": round(r1.seconds_per_step, 3)},
               "stage2": {"steps": r2.step, "minutes": round(r2.elapsed_s / 60, 2),
                          "sec_per_step": round(r2.seconds_per_step, 3)}}
    if common.is_main():
        export_model(out_dir, params_dir)
        try:
            summary["heldout_figure"] = str(heldout_figure(params_dir, heldout_dir,
                                                           out_dir / "figures" / "heldout.png"))
        except Exception as e:   # a figure must not fail a finished training
            summary["heldout_figure_error"] = repr(e)
        summary["wall_minutes"] = round((time.time() - t_start) / 60, 2)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    common.barrier()
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfd_kit.training",
                                 description="Train DeepFaceDrawing (stage 1 auto-encoders, feature banks, "
                                             "stage 2 conditional GAN) and export a Params folder.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="the demo recipe: facesjs data, DEMO config, time-budgeted stages, export")
    d.add_argument("--data", default="data/facesjs", help="training set folder (built here if missing)")
    d.add_argument("--out", default="runs/demo", help="run folder (checkpoints, figures, banks); resumed if present")
    d.add_argument("--minutes-stage1", type=float, default=DEMO_MINUTES_STAGE1)
    d.add_argument("--minutes-stage2", type=float, default=DEMO_MINUTES_STAGE2)
    d.add_argument("--steps-stage1", type=int, default=1_000_000, help="step limit (the time limit usually ends it)")
    d.add_argument("--steps-stage2", type=int, default=1_000_000)
    d.add_argument("--n-faces", type=int, default=DEMO_FACES, help="faces to build when --data is missing")
    d.add_argument("--heldout", default=None, help="held-out set folder (default: <data>_heldout, seed+1)")
    d.add_argument("--n-heldout", type=int, default=DEMO_HELDOUT_FACES)
    d.add_argument("--batch-size", type=int, default=4, help="per process")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--params", default=None, help="export folder (default: <out>/params); e.g. Params/demo")
    d.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: all cores; 1 is faster on a machine busy with other work)")
    d.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("export", help="write a run folder's trained model as a Params folder")
    e.add_argument("--out", required=True, help="run folder")
    e.add_argument("--params", required=True, help="Params folder to write")
    e.add_argument("--float32", action="store_true", help="store float32 (default float16)")
    a = ap.parse_args(argv)
    if a.cmd == "demo":
        s = train_demo(a.data, a.out, a.minutes_stage1, a.minutes_stage2, a.n_faces, a.seed, a.batch_size, a.params,
                       a.heldout, a.n_heldout, a.threads, not a.no_progress, a.steps_stage1, a.steps_stage2)
        from .common import is_main

        if is_main():
            print(json.dumps(s, indent=2))
    else:
        import numpy as np

        from .stage2 import export_model

        print(export_model(a.out, a.params, dtype=np.float32 if a.float32 else np.float16))
    return 0


if __name__ == "__main__":
    sys.exit(main())
