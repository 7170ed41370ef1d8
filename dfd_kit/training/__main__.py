"""Command line: ``python -m dfd_kit.training demo|train|export|banks|quality ...``.

``demo`` is the kit's recipe for its bundled demo model: facesjs cartoon faces (built
on first use), the DEMO config, stage 1, feature banks, stage 2, export, denser banks,
quality measurements -- a fixed number of steps per stage (so the result does not depend
on the machine's speed), about 80 minutes on two CPU cores::

    python -m dfd_kit.training demo --out runs/demo --params Params/demo

``train`` runs both stages on your own data set, e.g. CelebAMask-HQ photos prepared by
``build_photo_dataset`` for the official 512 layout, data-parallel under mpirun::

    mpirun -np 4 python -m dfd_kit.training train --data data/celeba --out runs/celeba \\
        --config official --steps-stage1 20000 --steps-stage2 100000 --batch-size 4

``quality`` measures a trained model on held-out faces (:mod:`.quality`); ``export``
writes a run folder as a Params folder; ``banks`` re-encodes a model's feature banks from
more facesjs sketches (:func:`~dfd_kit.training.banks.densify_banks`).

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

from ..errors import DFDError, TrainingInterrupted

#: The recipe's defaults: those of the shipped demo model (Params/demo/MODEL_CARD.md).
DEMO_DATA = "data/facesjs_train"
DEMO_FACES = 3000
DEMO_STEPS_STAGE1 = 1400
DEMO_STEPS_STAGE2 = 900
#: After training, the demo's banks are re-encoded from more facesjs faces (seed 0, so
#: the first DEMO_FACES are the training faces): the remainder from DEMO_BANK_FACES, the
#: four parts from DEMO_BANK_PART_FACES, stored as int8; with banks that dense, projection
#: uses DEMO_K neighbours (the model card has the numbers). To fit the 30 MB budget, the
#: sketch decoders, which only draw the shadows, are stored as int8 too.
DEMO_BANK_DATA = "data/facesjs_bank"
DEMO_BANK_FACES = 48000
DEMO_BANK_PART_FACES = 5000
DEMO_K = 20


def bank_faces(remainder: int, parts: int) -> dict:
    """{component: N} for :func:`~dfd_kit.training.banks.densify_banks`."""
    from ..config import COMPONENTS

    return {c: remainder if c == "remainder" else parts for c in COMPONENTS}


def ensure_facesjs_data(data_dir, n: int, seed: int, layout, progress: bool = True) -> Path:
    """Build the facesjs data set into ``data_dir`` unless its samples.csv exists."""
    data_dir = Path(data_dir)
    if not (data_dir / "samples.csv").exists():
        from ..data.facesjs import build_facesjs_dataset

        build_facesjs_dataset(data_dir, n, seed=seed, layout=layout, progress=progress)
    return data_dir


def train(data_dir, out_dir, config, minutes_stage1: Optional[float] = None,
          minutes_stage2: Optional[float] = None, steps_stage1: int = 1_000_000, steps_stage2: int = 1_000_000,
          batch_size: int = 4, seed: int = 0, params_dir=None, threads: Optional[int] = None,
          progress: bool = True) -> dict:
    """Both stages on any prepared data set (``build_photo_dataset`` or
    ``build_facesjs_dataset``), then export. Returns a summary dict, also written to
    ``out_dir/summary.json``.

    1. stage 1 until ``steps_stage1`` steps or ``minutes_stage1`` minutes;
    2. the feature banks from every training sketch;
    3. stage 2 until ``steps_stage2`` steps or ``minutes_stage2`` minutes;
    4. export to ``params_dir`` (default ``<out_dir>/params``; float16).

    Run it again after an interruption: finished stages are skipped and the interrupted
    one resumes from its checkpoint. Under ``mpirun -np N`` every stage trains
    data-parallel: each process takes its share of every batch, gradients (and batch
    norm statistics) are averaged, and process 0 alone writes checkpoints, figures and
    the export; ``batch_size`` is per process.
    """
    from . import common
    from .banks import build_banks
    from .stage1 import train_stage1
    from .stage2 import export_model, train_stage2

    common.exit_on_error_in_mpi()
    t_start = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    params_dir = Path(params_dir) if params_dir else out_dir / "params"
    in_mpi = common.mpi_world() > 1
    data = common.TrainingData(data_dir, config.layout, photos=True, progress=progress)
    run = dict(batch_size=batch_size, seed=seed, threads=threads, progress=progress, checkpoint_every=500,
               checkpoint_minutes=5.0, figure_every=250)
    cfg1 = common.Stage1Config(steps=steps_stage1, minutes=minutes_stage1, lr=5e-4, **run)
    cfg2 = common.Stage2Config(steps=steps_stage2, minutes=minutes_stage2, **run)

    r1 = train_stage1(data_dir, out_dir, config, cfg1, data=data)
    if not (out_dir / "banks.npz").exists() or r1.stopped_by:
        build_banks(out_dir, data=None if in_mpi else data, data_dir=data_dir, progress=progress,
                    encoders=r1.nets["encoders"])
    r2 = train_stage2(data_dir, out_dir, config, cfg2, data=data)
    summary = {"data": str(data_dir), "n_faces": len(data), "seed": seed, "out": str(out_dir),
               "params": str(params_dir), "processes": common.mpi_world(), "batch_size_per_process": batch_size,
               "stage1": {"steps": r1.step, "minutes": round(r1.elapsed_s / 60, 2),
                          "sec_per_step": round(r1.seconds_per_step, 3)},
               "stage2": {"steps": r2.step, "minutes": round(r2.elapsed_s / 60, 2),
                          "sec_per_step": round(r2.seconds_per_step, 3)}}
    if common.is_main():
        export_model(out_dir, params_dir)
        summary["wall_minutes"] = round((time.time() - t_start) / 60, 2)
        summary["machine"] = machine_description()
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    common.barrier()
    return summary


def train_demo(data_dir=DEMO_DATA, out_dir="runs/demo", minutes_stage1: Optional[float] = None,
               minutes_stage2: Optional[float] = None, n_faces: int = DEMO_FACES, seed: int = 0,
               batch_size: int = 4, params_dir=None, heldout_dir="data/facesjs_heldout",
               threads: Optional[int] = None, progress: bool = True, steps_stage1: int = DEMO_STEPS_STAGE1,
               steps_stage2: int = DEMO_STEPS_STAGE2, measure: bool = True, bank_dir=DEMO_BANK_DATA,
               bank_faces_remainder: int = DEMO_BANK_FACES, bank_faces_parts: int = DEMO_BANK_PART_FACES,
               k: int = DEMO_K) -> dict:
    """The demo recipe: :func:`train` on facesjs faces with the DEMO config, then a model
    card and the held-out measurements. Returns the summary dict.

    1. data: ``n_faces`` facesjs faces (seed ``seed``) in ``data_dir`` and the held-out
       faces (:data:`~dfd_kit.training.quality.HELDOUT_FACES` from their own seed, never
       trained on) in ``heldout_dir``, each built only if missing;
    2. :func:`train` for ``steps_stage1`` and ``steps_stage2`` steps (``minutes_*``: optional
       time budgets on top);
    3. denser feature banks: ``bank_faces_*`` facesjs faces of seed 0 (in ``bank_dir``,
       built if missing) re-encoded with the trained encoders, int8, default K ``k``
       (:func:`~dfd_kit.training.banks.densify_banks`);
    4. the sketch decoders stored as int8 (:func:`quantize_sketch_decoders`);
    5. a model card in ``params_dir`` and, with ``measure``, the quality measurements on
       the held-out faces, whose figures, quality.json and metrics table go there too
       (see :mod:`.quality`).
    """
    from ..config import DEMO
    from . import common
    from .quality import HELDOUT_FACES, HELDOUT_SEED

    data_dir, heldout_dir = Path(data_dir), Path(heldout_dir)
    if common.mpi_world() > 1:
        missing = [d for d in (data_dir, heldout_dir) if not (d / "samples.csv").exists()]
        if missing:
            raise SystemExit(f"build the data first, without mpirun: {', '.join(map(str, missing))} "
                             "(python -m dfd_kit.data.facesjs --out DIR --n N --seed S)")
    else:
        ensure_facesjs_data(data_dir, n_faces, seed, DEMO.layout, progress)
        ensure_facesjs_data(heldout_dir, HELDOUT_FACES, HELDOUT_SEED, DEMO.layout, progress)
    summary = train(data_dir, out_dir, DEMO, minutes_stage1, minutes_stage2, steps_stage1, steps_stage2,
                    batch_size, seed, params_dir, threads, progress)
    summary["heldout"] = str(heldout_dir)
    if common.is_main():
        params_dir = Path(summary["params"])
        summary["banks"] = densify_demo_banks(params_dir, bank_dir, bank_faces_remainder, bank_faces_parts, k,
                                              seed, progress)
        quantize_sketch_decoders(params_dir)
        write_model_card(params_dir, summary)
        if measure:
            run_quality(argparse.Namespace(params=str(params_dir), data=str(data_dir), heldout=str(heldout_dir),
                                           n_faces=None, figures=None, no_progress=not progress))
    common.barrier()
    return summary


def densify_demo_banks(params_dir, bank_dir, remainder: int, parts: int, k: int, seed: int = 0,
                       progress: bool = True) -> dict:
    """Step 3 of the demo recipe (also the ``banks`` subcommand): build the facesjs
    sketches if missing, re-encode the banks; returns what the model card reports."""
    from ..config import DEMO
    from .banks import densify_banks

    t = time.time()
    n = max(remainder, parts)
    ensure_facesjs_data(bank_dir, n, seed, DEMO.layout, progress)
    rows = densify_banks(params_dir, bank_dir, bank_faces(remainder, parts), k=k, progress=progress)
    return {"data": str(bank_dir), "seed": seed, "remainder_faces": remainder, "part_faces": parts, "k": k,
            "rows": rows, "minutes": round((time.time() - t) / 60, 2), "machine": machine_description()}


def quantize_sketch_decoders(params_dir) -> None:
    """Step 4 of the demo recipe: store the sketch decoders as int8
    (:func:`~dfd_kit.loading.quantize_checkpoint`). They draw only the shadows, so the
    generated faces do not change, and the denser banks get the room."""
    from ..config import COMPONENTS
    from ..loading import checkpoint_file, quantize_checkpoint

    for c in COMPONENTS:
        quantize_checkpoint(Path(params_dir) / checkpoint_file("sketch_decoder", c))


def machine_description() -> str:
    """One line: CPU model, cores, memory, OS -- for the model card."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def write_model_card(params_dir, summary: dict) -> Path:
    """Params/<model>/MODEL_CARD.md from a recipe summary; :func:`run_quality` fills the
    metrics between the quality markers."""
    from .quality import CARD_END, CARD_START, HELDOUT_FACES, HELDOUT_SEED

    s1, s2 = summary["stage1"], summary["stage2"]
    text = f"""# Demo model card

The kit's bundled DeepFaceDrawing model: the paper's architecture at 256 x 256 with
narrow networks (`config.json`: latent 128, feature maps 16 channels, generator ngf 16),
trained from scratch on a 2-core CPU. It exists so that every notebook, the drawing
widget, the tests and Binder work with nothing downloaded. It draws **cartoon faces**,
not photos: for photographs use the official weights (`python -m dfd_kit download-official`).

## Data

- Training: {summary['n_faces']} synthetic faces from the `facesjs` npm package (version pinned
  in `package.json`), seed {summary['seed']}, rendered with cairosvg and aligned to the demo
  layout; the sketch is the line drawing of the same face (`dfd_kit.data.facesjs`).
  Stage 1 learns clean sketches only (as in the paper: rough drawings are left to manifold
  projection); stage 2 sees projected latents for half of its samples.
- Held-out: {HELDOUT_FACES} faces from seed {HELDOUT_SEED}, never trained on.
- Sex: facesjs's own male/female generator; one feature bank per sex.
{_banks_text(summary)}
## Training

| | steps (batch {summary['batch_size_per_process']} x {summary['processes']} process) | minutes | s / step |
|---|---|---|---|
| stage 1: five component auto-encoders | {s1['steps']} | {s1['minutes']} | {s1['sec_per_step']} |
| stage 2: feature decoders + generator (conditional GAN) | {s2['steps']} | {s2['minutes']} | {s2['sec_per_step']} |

Wall time {summary['wall_minutes']} minutes (including data loading and bank building) on
{summary['machine']}. Weights stored as float16, except the sketch decoders (they only draw
the shadows) as int8; feature banks as int8.

## Reproduce

```bash
make setup     # the README's set-up: Python packages, Jittor, oneDNN, Node, facesjs
.venv/bin/python -m dfd_kit.training demo --out runs/demo --params Params/demo
```

This builds the data sets when missing, trains stage 1 for {s1['steps']} steps and stage 2
for {s2['steps']} (the recipe's defaults; run it again after an interruption: it resumes from
the checkpoints), exports here, re-encodes the banks from more faces, stores the sketch
decoders as int8 and measures. The
bank step alone, on any exported model: `python -m dfd_kit.training banks --params DIR`.
To measure again:

```bash
.venv/bin/python -m dfd_kit.training quality --params Params/demo
```

## Metrics

{CARD_START}
(not measured yet)
{CARD_END}

![held-out faces](heldout.png)

![manifold projection on degraded sketches](projection.png)

## Limits

- Cartoon faces only, 256 x 256; colours (skin, hair, background) are not in the sketch,
  so the model guesses them from the shapes.
- A short CPU training: textures are blurry next to the official model.
"""
    path = Path(params_dir) / "MODEL_CARD.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _banks_text(summary: dict) -> str:
    """The model card's bullet on the feature banks."""
    b = summary.get("banks")
    if not b:
        return "- Feature banks: every training sketch.\n"
    return (f"- Feature banks: the first {b['remainder_faces']} faces of facesjs seed {b['seed']} for the remainder, "
            f"the first {b['part_faces']} for each part\n"
            f"  (the training faces come first; a bank needs sketches only), encoded by the trained encoders\n"
            f"  and stored as int8; default K = {b['k']}. Re-encoding took {b['minutes']} minutes on {b['machine']}.\n")


def _config(name: str):
    """'official', 'demo' or a config.json path -> ModelConfig."""
    from ..config import DEMO, OFFICIAL, ModelConfig

    if name in ("official", "demo"):
        return OFFICIAL if name == "official" else DEMO
    return ModelConfig.from_dict(json.loads(Path(name).read_text()))


def run_quality(a) -> int:
    """The ``quality`` subcommand: see :mod:`dfd_kit.training.quality`."""
    from ..config import DEMO
    from .quality import (HELDOUT_FACES, HELDOUT_SEED, evaluate_quality, update_model_card, write_report)

    params = Path(a.params)
    out = Path(a.figures) if a.figures else params
    ensure_facesjs_data(a.data, DEMO_FACES, 0, DEMO.layout, not a.no_progress)
    ensure_facesjs_data(a.heldout, HELDOUT_FACES, HELDOUT_SEED, DEMO.layout, not a.no_progress)
    report = evaluate_quality(params, a.heldout, a.data, out, n_faces=a.n_faces, progress=not a.no_progress)
    write_report(report, out / "quality.json")
    card = update_model_card(params / "MODEL_CARD.md", report)
    print(report.markdown())
    print(f"figures: {', '.join(report.figures.values())}; quality.json in {out}"
          + ("; model card updated" if card else ""))
    return 0


def main(argv=None) -> int:
    try:
        return _run(argv)
    except TrainingInterrupted as e:   # Ctrl-C: the stage under way saved; say how to go on
        print(e, file=sys.stderr)
        return 130
    except DFDError as e:   # bad input or data: dfd_kit's message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfd_kit.training",
                                 description="Train DeepFaceDrawing (stage 1 auto-encoders, feature banks, "
                                             "stage 2 conditional GAN) and export a Params folder.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="the demo recipe: facesjs data, DEMO config, time-budgeted stages, export")
    d.add_argument("--data", default=DEMO_DATA, help="training set folder (built here if missing)")
    d.add_argument("--out", default="runs/demo", help="run folder (checkpoints, figures, banks); resumed if present")
    d.add_argument("--steps-stage1", type=int, default=DEMO_STEPS_STAGE1)
    d.add_argument("--steps-stage2", type=int, default=DEMO_STEPS_STAGE2)
    d.add_argument("--minutes-stage1", type=float, default=None, help="optional time budget (default: none)")
    d.add_argument("--minutes-stage2", type=float, default=None)
    d.add_argument("--n-faces", type=int, default=DEMO_FACES, help="faces to build when --data is missing")
    d.add_argument("--heldout", default="data/facesjs_heldout", help="held-out set folder (built here if missing)")
    d.add_argument("--no-quality", action="store_true", help="skip the held-out measurements after export")
    d.add_argument("--batch-size", type=int, default=4, help="per process")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--params", default=None, help="export folder (default: <out>/params); e.g. Params/demo")
    d.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: all cores; 1 is faster on a machine busy with other work)")
    d.add_argument("--no-progress", action="store_true")
    t = sub.add_parser("train", help="both stages on your own data set (e.g. from build_photo_dataset), then "
                                     "export; under mpirun -np N data-parallel")
    t.add_argument("--data", required=True, help="data set folder (samples.csv, sketch/, photo/)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, figures, banks); resumed if present")
    t.add_argument("--config", default="official",
                   help="'official' (512 x 512, the paper's sizes), 'demo' (256 x 256, narrow) or a config.json")
    t.add_argument("--steps-stage1", type=int, required=True)
    t.add_argument("--steps-stage2", type=int, required=True)
    t.add_argument("--minutes-stage1", type=float, default=None, help="optional time budget")
    t.add_argument("--minutes-stage2", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=4, help="per process")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--params", default=None, help="export folder (default: <out>/params)")
    t.add_argument("--threads", type=int, default=None, help="OpenMP threads per process")
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("export", help="write a run folder's trained model as a Params folder")
    e.add_argument("--out", required=True, help="run folder")
    e.add_argument("--params", required=True, help="Params folder to write")
    e.add_argument("--float32", action="store_true", help="store float32 (default float16)")
    b = sub.add_parser("banks", help="re-encode a model's feature banks from more facesjs sketches (a denser "
                                     "sample of the manifold), int8, and set its default K")
    b.add_argument("--params", default="Params/demo", help="model folder to update")
    b.add_argument("--sketches", default=DEMO_BANK_DATA, help="facesjs set (built here from --seed if missing)")
    b.add_argument("--faces", type=int, default=DEMO_BANK_FACES, help="faces for the remainder's bank")
    b.add_argument("--part-faces", type=int, default=DEMO_BANK_PART_FACES, help="faces for each part's bank")
    b.add_argument("--k", type=int, default=DEMO_K, help="the model's new default number of neighbours")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("quality", help="measure a trained model on held-out faces; figures, quality.json and the "
                                       "model card's metrics")
    q.add_argument("--params", default="Params/demo", help="model to measure")
    q.add_argument("--data", default="data/facesjs_train", help="training set (the mean-face baseline)")
    q.add_argument("--heldout", default="data/facesjs_heldout", help="held-out set (built if missing)")
    q.add_argument("--n-faces", type=int, default=None, help="use only the first N held-out faces")
    q.add_argument("--figures", default=None, help="where figures and quality.json go (default: --params)")
    q.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "quality":
        return run_quality(a)
    if a.cmd == "banks":
        print(json.dumps(densify_demo_banks(a.params, a.sketches, a.faces, a.part_faces, a.k, a.seed,
                                            not a.no_progress), indent=2))
        return 0
    if a.cmd == "train":
        s = train(a.data, a.out, _config(a.config), a.minutes_stage1, a.minutes_stage2, a.steps_stage1,
                  a.steps_stage2, a.batch_size, a.seed, a.params, a.threads, not a.no_progress)
        from .common import is_main

        if is_main():
            print(json.dumps(s, indent=2))
        return 0
    if a.cmd == "demo":
        s = train_demo(a.data, a.out, a.minutes_stage1, a.minutes_stage2, a.n_faces, a.seed, a.batch_size, a.params,
                       a.heldout, a.threads, not a.no_progress, a.steps_stage1, a.steps_stage2, not a.no_quality)
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
