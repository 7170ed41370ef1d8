"""The kit's training recipes: the functions behind ``python -m dfd_kit.training``.

:func:`train_demo` (``demo``) is the recipe for the bundled demo model: facesjs cartoon
faces (built on first use), the DEMO config, stage 1, feature banks, stage 2, export,
denser banks, int8 sketch decoders, the model card, quality measurements -- a fixed number
of steps per stage (so the result does not depend on the machine's speed), about 80
minutes on two CPU cores. :func:`train_photo` (``photo``) does the same for the photo
model on MobileStyleGAN faces. Both go through :func:`train` (``train``), both stages and
the export on any prepared data set, e.g. CelebAMask-HQ photos prepared by
``build_photo_dataset`` for the official 512 layout. :func:`measure_quality` (``quality``)
measures a trained model on held-out faces (:mod:`.quality`); :func:`densify_demo_banks`
(``banks``) re-encodes a model's feature banks from more facesjs sketches
(:func:`~dfd_kit.training.banks.densify_banks`).

Run the same recipe again after an interruption: finished stages are skipped and the
interrupted one resumes from its last checkpoint. Under ``mpirun -np N`` the stages
train data-parallel (build the data set first, without mpirun).

Jittor is imported only when a recipe runs, so the command line's ``--help`` is quick.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional


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
#: Stage 2 sees projected latents (blended with a random weight) for half of its samples,
#: Stage2Config's default. The paper's choice, clean latents only (PHOTO_PROJECT_PROB), was
#: measured on these networks: clean-sketch error 15.53 against 15.94, but projection won on
#: fewer rough sketches (71.0% against 75.0%) and removed less of their error (1.6% against
#: 2.2%); the cartoon model keeps the recipe that shows projection more (its model card).
DEMO_PROJECT_PROB = 0.5


#: The photo recipe (Params/photo): MobileStyleGAN faces (dfd_kit.data.stylegan) on the
#: PHOTO config; the training faces are faces 0 .. PHOTO_FACES - 1, the held-out ones start
#: at stylegan.HELDOUT_FIRST. The feature banks are the training sketches (int8, K PHOTO_K).
PHOTO_DATA = "data/photo_faces"
PHOTO_HELDOUT = "data/photo_faces_heldout"
PHOTO_FACES = 2000
#: Stage 1's losses level off by about 1000 steps; stage 2 gets the time. Its learning rate
#: stays constant for PHOTO_LR_DECAY_START steps, then falls linearly to 0 (pix2pixHD's schedule).
PHOTO_STEPS_STAGE1 = 1000
PHOTO_STEPS_STAGE2 = 3000
PHOTO_LR_DECAY_START = 2000
PHOTO_K = 10
#: Stage 2 sees the latents of clean sketches only, as in the paper: a rough sketch's raw
#: latent then lies off what the generator knows, and projection is what brings it back.
#: (The first photo model used half-projected latents, Stage2Config's default, and
#: projection changed its error on rough sketches by 0.6%.)
PHOTO_PROJECT_PROB = 0.0
#: The feature banks hold more sketches than the model trained on (a bank needs sketches
#: only): the training faces, then PHOTO_BANK_EXTRA more faces made the same way (faces
#: PHOTO_FACES onwards, in PHOTO_BANK_DATA), each also mirrored left to right, since a
#: face's mirror image is another plausible face: 12000 rows, which keeps Params/photo
#: under its 30 MB. Against banks of the 2000 training sketches alone, on the same
#: held-out faces, projection went from losing on most degraded sketches to winning
#: on about half (the model card's "Feature banks, measured").
PHOTO_BANK_DATA = "data/photo_faces_extra"
PHOTO_BANK_EXTRA = 4000
PHOTO_BANK_MIRROR = True
#: The photo model's target: generated faces at most 0.6x the mean face's error.
PHOTO_RATIO_TARGET = 0.6
#: The cartoon model, measured beside the photo model on the same faces.
DEMO_PARAMS_DIR = Path(__file__).resolve().parents[2] / "Params" / "demo"


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


def ensure_stylegan_data(data_dir, n: int, first: int, progress: bool = True) -> Path:
    """Build, finish or resize the StyleGAN data set in ``data_dir`` (faces already made
    are kept; a complete set costs only a look at its log)."""
    from ..data.stylegan import build_stylegan_dataset

    return build_stylegan_dataset(data_dir, n, first=first, progress=progress)


def data_first(dirs, how: str, build) -> None:
    """Build the recipe's data sets (``build()``), except under mpirun: there every process
    would build them at once, so they must exist already (``how`` says how to make them)."""
    from .parallel import mpi_world

    if mpi_world() > 1:
        missing = [str(d) for d in dirs if not (Path(d) / "samples.csv").exists()]
        if missing:
            raise SystemExit(f"build the data first, without mpirun: {', '.join(missing)} ({how})")
    else:
        build()


def train(data_dir, out_dir, config, minutes_stage1: Optional[float] = None,
          minutes_stage2: Optional[float] = None, steps_stage1: int = 1_000_000, steps_stage2: int = 1_000_000,
          batch_size: int = 4, seed: int = 0, params_dir=None, threads: Optional[int] = None,
          progress: bool = True, project_prob: float = 0.5, lr_decay_start: Optional[int] = None,
          augment_prob_stage1: float = 0.0) -> dict:
    """Both stages on any prepared data set (``build_photo_dataset`` or
    ``build_facesjs_dataset``), then export. Returns a summary dict, also written to
    ``out_dir/summary.json``.

    1. stage 1 until ``steps_stage1`` steps or ``minutes_stage1`` minutes (a denoising
       auto-encoder with ``augment_prob_stage1`` > 0: see Stage1Config.augment_prob);
    2. the feature banks from every training sketch;
    3. stage 2 until ``steps_stage2`` steps or ``minutes_stage2`` minutes (learning rate
       falling linearly to 0 from step ``lr_decay_start``, if given);
    4. export to ``params_dir`` (default ``<out_dir>/params``; float16), unless stage 2 has
       no steps: then the run is stage 1 alone, and the summary's ``params`` is None.

    Run it again after an interruption: finished stages are skipped and the interrupted
    one resumes from its checkpoint. Under ``mpirun -np N`` every stage trains
    data-parallel: each process takes its share of every batch, gradients (and batch
    norm statistics) are averaged, and process 0 alone writes checkpoints, figures and
    the export; ``batch_size`` is per process.
    """
    from .banks import build_banks
    from .configs import Stage1Config, Stage2Config
    from .data import TrainingData
    from .parallel import barrier, exit_on_error_in_mpi, is_main, mpi_world
    from .stage1 import train_stage1
    from .stage2 import export_model, train_stage2

    exit_on_error_in_mpi()
    t_start = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    params_dir = Path(params_dir) if params_dir else out_dir / "params"
    in_mpi = mpi_world() > 1
    data = TrainingData(data_dir, config.layout, photos=True, progress=progress)
    run = dict(batch_size=batch_size, seed=seed, threads=threads, progress=progress, checkpoint_every=500,
               checkpoint_minutes=5.0, figure_every=250)
    cfg1 = Stage1Config(steps=steps_stage1, minutes=minutes_stage1, lr=5e-4, augment_prob=augment_prob_stage1, **run)
    cfg2 = Stage2Config(steps=steps_stage2, minutes=minutes_stage2, project_prob=project_prob,
                        lr_decay_start=lr_decay_start, **run)

    r1 = train_stage1(data_dir, out_dir, config, cfg1, data=data)
    if not (out_dir / "banks.npz").exists() or r1.stopped_by:
        build_banks(out_dir, data=None if in_mpi else data, data_dir=data_dir, progress=progress,
                    encoders=r1.nets["encoders"])
    r2 = train_stage2(data_dir, out_dir, config, cfg2, data=data)
    summary = {"data": str(data_dir), "n_faces": len(data), "seed": seed, "out": str(out_dir),
               "params": str(params_dir), "processes": mpi_world(), "batch_size_per_process": batch_size,
               "stage1": {"steps": r1.step, "minutes": round(r1.elapsed_s / 60, 2), "augment_prob": augment_prob_stage1,
                          "sec_per_step": round(r1.seconds_per_step, 3)},
               "stage2": {"steps": r2.step, "minutes": round(r2.elapsed_s / 60, 2), "project_prob": project_prob,
                          "sec_per_step": round(r2.seconds_per_step, 3)}}
    if is_main():
        if r2.step:
            export_model(out_dir, params_dir)
        else:   # stage 1 only (to measure its encoders with `geometry` first): nothing to export yet
            summary["params"] = None
        summary["wall_minutes"] = round((time.time() - t_start) / 60, 2)
        summary["machine"] = machine_description()
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    barrier()
    return summary


def train_demo(data_dir=DEMO_DATA, out_dir="runs/demo", minutes_stage1: Optional[float] = None,
               minutes_stage2: Optional[float] = None, n_faces: int = DEMO_FACES, seed: int = 0,
               batch_size: int = 4, params_dir=None, heldout_dir="data/facesjs_heldout",
               threads: Optional[int] = None, progress: bool = True, steps_stage1: int = DEMO_STEPS_STAGE1,
               steps_stage2: int = DEMO_STEPS_STAGE2, measure: bool = True, bank_dir=DEMO_BANK_DATA,
               bank_faces_remainder: int = DEMO_BANK_FACES, bank_faces_parts: int = DEMO_BANK_PART_FACES,
               k: int = DEMO_K, project_prob: float = DEMO_PROJECT_PROB) -> dict:
    """The demo recipe: :func:`train` on facesjs faces with the DEMO config, then a model
    card and the held-out measurements. Returns the summary dict.

    1. data: ``n_faces`` facesjs faces (seed ``seed``) in ``data_dir`` and the held-out
       faces (:data:`~dfd_kit.training.quality.HELDOUT_FACES` from their own seed, never
       trained on) in ``heldout_dir``, each built only if missing;
    2. :func:`train` for ``steps_stage1`` and ``steps_stage2`` steps (``minutes_*``: optional
       time budgets on top), stage 2 projecting a sample's latents with ``project_prob``;
    3. denser feature banks: ``bank_faces_*`` facesjs faces of seed 0 (in ``bank_dir``,
       built if missing) re-encoded with the trained encoders, int8, default K ``k``
       (:func:`~dfd_kit.training.banks.densify_banks`);
    4. the sketch decoders stored as int8 (:func:`quantize_sketch_decoders`);
    5. a model card in ``params_dir`` and, with ``measure``, the quality measurements on
       the held-out faces, whose figures, quality.json and metrics table go there too
       (see :mod:`.quality`).
    """
    from ..config import DEMO
    from .parallel import barrier, is_main
    from .quality import HELDOUT_FACES, HELDOUT_SEED

    data_dir, heldout_dir = Path(data_dir), Path(heldout_dir)
    data_first((data_dir, heldout_dir), "python -m dfd_kit.data.facesjs --out DIR --n N --seed S", lambda: (
        ensure_facesjs_data(data_dir, n_faces, seed, DEMO.layout, progress),
        ensure_facesjs_data(heldout_dir, HELDOUT_FACES, HELDOUT_SEED, DEMO.layout, progress)))
    summary = train(data_dir, out_dir, DEMO, minutes_stage1, minutes_stage2, steps_stage1, steps_stage2,
                    batch_size, seed, params_dir, threads, progress, project_prob=project_prob)
    summary["heldout"] = str(heldout_dir)
    if is_main() and summary["params"]:
        params_dir = Path(summary["params"])
        summary["banks"] = densify_demo_banks(params_dir, bank_dir, bank_faces_remainder, bank_faces_parts, k,
                                              seed, progress)
        finish_recipe(params_dir, summary, write_model_card, data_dir, heldout_dir, measure, progress)
    barrier()
    return summary


def train_photo(data_dir=PHOTO_DATA, out_dir="runs/photo", params_dir="Params/photo", heldout_dir=PHOTO_HELDOUT,
                n_faces: int = PHOTO_FACES, steps_stage1: int = PHOTO_STEPS_STAGE1,
                steps_stage2: int = PHOTO_STEPS_STAGE2, k: int = PHOTO_K, batch_size: int = 4, seed: int = 0,
                threads: Optional[int] = None, progress: bool = True, measure: bool = True,
                bank_dir=PHOTO_BANK_DATA, bank_extra: int = PHOTO_BANK_EXTRA,
                steps_query: Optional[int] = None) -> dict:
    """The photo recipe: MobileStyleGAN faces, the PHOTO config, :func:`train`, int8 banks
    with default K ``k`` (the training sketches and ``bank_extra`` more in ``bank_dir``,
    each also mirrored left to right), query encoders (:func:`train_query`, ``steps_query``
    steps, default :class:`~dfd_kit.training.configs.QueryConfig`'s), int8 encoders
    (:func:`quantize_encoders`) and sketch decoders, a model card and,
    with ``measure``, the held-out measurements. Every step resumes: run the same command
    again after an interruption (or in several sittings) and it goes on where it stopped.
    Returns the summary dict."""
    from ..config import PHOTO
    from ..data.stylegan import HELDOUT_FIRST
    from .configs import Stage2Config
    from .parallel import barrier, is_main
    from .quality import HELDOUT_FACES

    data_dir, heldout_dir, bank_dir = Path(data_dir), Path(heldout_dir), Path(bank_dir)
    bank_dirs = [bank_dir] if bank_extra else []

    def build():
        ensure_stylegan_data(heldout_dir, HELDOUT_FACES, HELDOUT_FIRST, progress)
        ensure_stylegan_data(data_dir, n_faces, 0, progress)
        for d in bank_dirs:   # the banks' extra faces follow the training faces
            ensure_stylegan_data(d, bank_extra, n_faces, progress)

    data_first([data_dir, heldout_dir] + bank_dirs, "python -m dfd_kit.training photo-data", build)
    summary = train(data_dir, out_dir, PHOTO, None, None, steps_stage1, steps_stage2, batch_size, seed,
                    params_dir, threads, progress, project_prob=PHOTO_PROJECT_PROB,
                    lr_decay_start=min(PHOTO_LR_DECAY_START, steps_stage2))
    summary["stage2"]["lr_decay_start"] = min(PHOTO_LR_DECAY_START, steps_stage2)
    summary["stage2"]["lr"] = Stage2Config().lr
    summary["heldout"] = str(heldout_dir)
    if is_main() and summary["params"]:
        params_dir = Path(summary["params"])
        summary["banks"] = densify_banks_from_data(params_dir, [data_dir] + bank_dirs, k=k, mirror=PHOTO_BANK_MIRROR,
                                                   progress=progress)
        summary["query"] = train_query(params_dir, data_dir, out_dir, steps_query, seed, progress, threads)
        quantize_encoders(params_dir)
        finish_recipe(params_dir, summary, write_photo_model_card, data_dir, heldout_dir, measure, progress)
    barrier()
    return summary


def finish_recipe(params_dir, summary: dict, write_card, data_dir, heldout_dir, measure: bool, progress: bool):
    """The recipes' last steps: int8 sketch decoders, the model card (``write_card``) and,
    with ``measure``, the held-out measurements."""
    quantize_sketch_decoders(params_dir)
    write_card(params_dir, summary)
    if measure:
        measure_quality(params_dir, data_dir, heldout_dir, progress=progress)


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


def densify_banks_from_data(params_dir, data_dirs, remainder: Optional[int] = None, parts: Optional[int] = None,
                            k: Optional[int] = None, mirror: bool = False, progress: bool = True) -> dict:
    """The ``banks --data`` subcommand: re-encode a model's banks (int8) from data sets that
    exist already -- any kind, e.g. the photo model's training faces plus more StyleGAN faces
    made by ``photo-data --first`` -- their samples in the order given. ``remainder`` /
    ``parts``: faces for the remainder's and each part's bank (default: all of them); ``k``:
    the model's new default K (default: kept); ``mirror``: each sketch also flipped left to
    right. Nothing is built. Returns what ``densify_demo_banks`` returns, and ``mirror``."""
    from ..data import load_samples
    from .banks import densify_banks

    t = time.time()
    dirs = [Path(d) for d in ([data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else data_dirs)]
    total = sum(len(load_samples(d)) for d in dirs)
    remainder, parts = remainder or total, parts or total
    rows = densify_banks(params_dir, dirs, bank_faces(remainder, parts), k=k, mirror=mirror, progress=progress)
    return {"data": [str(d) for d in dirs], "remainder_faces": remainder, "part_faces": parts, "k": k,
            "mirror": mirror, "rows": rows, "minutes": round((time.time() - t) / 60, 2),
            "machine": machine_description()}


def train_query(params_dir, data_dir, out_dir, steps: Optional[int] = None, seed: int = 0,
                progress: bool = True, threads: Optional[int] = None) -> dict:
    """The ``query`` subcommand: train query encoders for the model in ``params_dir`` (its
    encoders stay as they are) on the sketches of ``data_dir``, checkpointing into
    ``out_dir/query`` (run it again to resume), and write them into ``params_dir``
    (:mod:`dfd_kit.training.query`). Returns steps, minutes and the machine."""
    from ..pipeline import load_model
    from .configs import QueryConfig
    from .query import export_query_encoders, train_query_encoders

    model = load_model(params_dir, shadows=False, fast=False)
    cfg = QueryConfig(seed=seed, progress=progress, threads=threads)
    cfg.steps = cfg.steps if steps is None else steps
    res = train_query_encoders(model.encoders, data_dir, out_dir, model.config, cfg)
    export_query_encoders(params_dir, res.nets["query_encoders"])
    return {"steps": res.step, "minutes": round(res.elapsed_s / 60, 2), "sec_per_step": round(res.seconds_per_step, 3),
            "batch_size": cfg.batch_size, "data": str(data_dir), "machine": machine_description()}


def quantize_encoders(params_dir) -> None:
    """A step of the photo recipe, after the banks and the query encoders: the encoders and
    query encoders stored as int8 (:func:`~dfd_kit.loading.quantize_checkpoint`), half of
    float16's size, which makes room for the query encoders in the 30 MB. The banks and
    the query encoders' targets stay those of the float16 encoders: on 40 validation
    sketches int8 moved a latent by at most 1.6% of the distance to its nearest bank row.
    Running it again changes nothing (int8 values read back onto the same codes)."""
    from ..loading import read_config

    _quantize(params_dir, ("encoder", "query_encoder") if read_config(Path(params_dir)).query_encoders
              else ("encoder",))


def quantize_sketch_decoders(params_dir) -> None:
    """Step 4 of the demo recipe: store the sketch decoders as int8
    (:func:`~dfd_kit.loading.quantize_checkpoint`). They draw only the shadows, so the
    generated faces do not change, and the denser banks get the room."""
    _quantize(params_dir, ("sketch_decoder",))


def _quantize(params_dir, kinds) -> None:
    """Every component's checkpoint of each of ``kinds`` stored as int8."""
    from ..config import COMPONENTS
    from ..loading import checkpoint_file, quantize_checkpoint

    for kind in kinds:
        for c in COMPONENTS:
            quantize_checkpoint(Path(params_dir) / checkpoint_file(kind, c))


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
    """Params/<model>/MODEL_CARD.md from a recipe summary; :func:`measure_quality` fills the
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
  projection); {_stage2_latents(s2.get('project_prob', 0.5))}
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


def _stage2_latents(project_prob: float) -> str:
    """The demo card's words for what stage 2 trained on."""
    if project_prob == 0:
        return "stage 2 sees the latents of clean sketches only (`project_prob` 0)."
    return f"stage 2 sees projected latents for {project_prob:.0%} of its samples (`project_prob` {project_prob:g})."


def photo_checks(heldout_dir, progress: bool = True) -> dict:
    """The photo data's two checks for the model card: the layout (FaceMesh landmarks of
    the held-out photos inside their boxes, :func:`~dfd_kit.data.stylegan.check_layout`)
    and the sex direction against faces labelled by eye."""
    from ..data import load_pair, load_samples
    from ..data.stylegan import StyleGANError, check_layout, check_sex_labels
    from ..config import PHOTO_LAYOUT

    out = {}
    try:
        photos = [load_pair(s, PHOTO_LAYOUT)[1] for s in load_samples(heldout_dir)]
        out["layout"] = check_layout(photos, PHOTO_LAYOUT)
    except StyleGANError as e:
        out["layout"] = {"error": str(e)}
    out["sex"] = check_sex_labels()
    return out


HAND_DRAWN = Path(__file__).resolve().parents[2] / "examples" / "hand_drawn"


def photo_card_figures(params_dir, data_dir=PHOTO_DATA) -> dict:
    """The photo card's two own figures: ``sketches.png`` (training photos, their extracted
    sketches, and the hand-drawn examples: the style people draw in) and ``hand_drawn.png``
    (each hand-drawn example and the model's face without and with manifold projection)."""
    from ..config import COMPONENTS
    from ..data import load_pair, load_samples
    from ..pipeline import load_model
    from .figures import save_image_grid
    from .quality import _compact_png, stroke_distance

    params_dir = Path(params_dir)
    model = load_model(params_dir, shadows=False)
    samples = load_samples(data_dir)[:4]
    hand = sorted(HAND_DRAWN.glob("*.png"))
    rows = []
    for s, h in zip(samples, hand + hand[:1]):
        sk, ph = load_pair(s, model.layout)
        rows.append([ph, sk, model.normalise(str(h))])
    fig1 = _compact_png(save_image_grid(rows, params_dir / "sketches.png",
                                        ["generated photo", "its training sketch", "drawn by hand (examples/)"],
                                        title="training sketches are extracted from photos; people draw like the right column",
                                        cell=2.0))
    rows, dist = [], {}
    for h in hand:
        sex = "female" if "female" in h.stem else "male"
        sk = model.normalise(str(h))
        off = model.generate(sk, {c: 0.0 for c in COMPONENTS}, sex=sex, shadows=False).image
        on = model.generate(sk, {c: 1.0 for c in COMPONENTS}, sex=sex, shadows=False).image
        dist[h.stem] = (round(stroke_distance(sk, off), 2), round(stroke_distance(sk, on), 2))
        rows.append([sk, off, on])
    fig2 = _compact_png(save_image_grid(rows, params_dir / "hand_drawn.png",
                                        ["drawn by hand", "face, w = 0 (no projection)", "face, w = 1 (projected)"],
                                        title="hand-drawn sketches (examples/hand_drawn) through the photo model",
                                        cell=2.2))
    return {"sketches": fig1, "hand_drawn": fig2, "stroke_distance_w0_w1": dist}


def _lr_schedule(stage2: dict) -> str:
    """The card's sentence on stage 2's learning rate (none for runs without a decay)."""
    start = stage2.get("lr_decay_start")
    if start is None:
        return ""
    return (f" Its learning rate stays at {stage2.get('lr', 2e-4):g} for {start} steps, then falls "
            f"linearly to 0 at step {stage2['steps']} (pix2pixHD's schedule).")


def write_photo_model_card(params_dir, summary: dict, heldout_dir=PHOTO_HELDOUT) -> Path:
    """Params/photo/MODEL_CARD.md from the photo recipe's summary; :func:`measure_quality`
    fills the metrics between the quality markers."""
    from ..config import PHOTO
    from ..data.stylegan import FFHQ_CROP, PHOTO_SKETCH, RANDOM_FACE, TRUNCATION
    from .quality import CARD_END, CARD_START, HELDOUT_FACES

    s1, s2, q = summary["stage1"], summary["stage2"], summary["query"]
    checks = photo_checks(heldout_dir)
    figs = photo_card_figures(params_dir, summary.get("data", PHOTO_DATA))
    hand_text = "; ".join(f"`{k}` {v[0]:.2f} / {v[1]:.2f}" for k, v in figs["stroke_distance_w0_w1"].items())
    lay, sex = checks["layout"], checks["sex"]
    if "error" in lay:
        lay_text = f"not checked here: {lay['error']}"
    else:
        lay_text = (f"on the {lay['n']} held-out photos, FaceMesh puts every landmark of the part inside its box for "
                    f"{100 * lay['left_eye']:.1f}% (left eye), {100 * lay['right_eye']:.1f}% (right eye), "
                    f"{100 * lay['nose']:.1f}% (nose) and {100 * lay['mouth']:.1f}% (mouth) of the faces; all four "
                    f"at once for {100 * lay['all']:.1f}% (no face found: {lay['no_face']})")
    text = f"""# Photo model card

The kit's photo-realistic DeepFaceDrawing model: the paper's architecture at 256 x 256 with
the demo model's narrow networks (`config.json`: latent 128, feature maps 16 channels,
generator ngf 16), trained from scratch on a 2-core CPU on **faces of people who do not
exist**. It is what `dfd_kit.load("photo")` loads.

## Data

- Source: MobileStyleGAN (Belousov 2021, arXiv 2104.04767), run from the OpenVINO IR files in
  the PyPI wheel `{RANDOM_FACE}` (Apache-2.0 code) with the current `openvino`
  (`dfd_kit.data.stylegan`). Face *i* is generated from z drawn by `np.random.default_rng(i)`,
  its style truncated toward the mean style by {TRUNCATION}.
- Training: faces 0 to {summary['n_faces'] - 1}; held-out: {HELDOUT_FACES} faces from index 1,000,000, never trained on.
- Alignment: the 1024 x 1024 FFHQ-aligned face cut to the square {FFHQ_CROP} (x, y, size) and
  resized to 256, which puts the eyes where the official layout (halved) has them.
  Component boxes (`config.py`, `PHOTO_LAYOUT`) centred on where MediaPipe FaceMesh finds each part
  on faces 0-199. Check: {lay_text}.
- Background: everything behind the person painted white, by MediaPipe's selfie segmentation
  (its model ships inside the `mediapipe` wheel), blended softly at the hair. A sketch says
  nothing about the wall behind a face, so on StyleGAN's busy backgrounds a generator can
  only paint their average; on white it draws the outline the sketch shows.
- Sketches: `photo_to_sketch(photo, {", ".join(f"{k}={v}" for k, v in PHOTO_SKETCH.items())})`: a median filter
  before the line extraction keeps outlines and drops hair and background texture; then the
  person's outline (the edge of the segmentation mask, `stylegan.outline`) is drawn in, as a
  person drawing a face draws it first. Beside sketches drawn by hand (`examples/hand_drawn`,
  drawn stroke by stroke):

  ![training sketches and hand-drawn ones](sketches.png)
- Sex: the generator's style space has a direction along which faces look more male or female;
  it is the difference of the mean styles of faces 0-99 labelled by eye
  (`stylegan.SEX_LABELS`; children and hidden faces left out), and faces are split at the midpoint.
  Checked against faces 100-199 labelled by eye the same way: {100 * sex['agree']:.1f}% of
  {sex['n']} agree. One feature bank per sex.
{_photo_banks_text(summary)}
## Licence of these weights, plainly

MobileStyleGAN was distilled from StyleGAN2 trained on FFHQ. FFHQ's images are published under
CC BY-NC-SA 4.0 (by NVIDIA, from Flickr photos). Whether a model trained on a model of those
images inherits their licence is not settled; to be safe, treat these weights as the FFHQ images
are: **non-commercial use, with attribution, and share-alike** (teaching and research are fine;
do not sell them or use them in a product). The kit's code stays MIT. No photo of a real
person was used here: every face is generated.

## Training

| | steps (batch {summary['batch_size_per_process']} x {summary['processes']} process) | minutes | s / step |
|---|---|---|---|
| stage 1: five component auto-encoders | {s1['steps']} | {s1['minutes']} | {s1['sec_per_step']} |
| stage 2: feature decoders + generator (conditional GAN) | {s2['steps']} | {s2['minutes']} | {s2['sec_per_step']} |
| query encoders (batch {q['batch_size']}; not in the paper, see "Query encoders") | {q['steps']} | {q['minutes']} | {q['sec_per_step']} |

Stage 2 sees the latents of clean training sketches only (`project_prob`
{s2.get('project_prob', 0.5)}), as in the paper: a rough sketch's raw latent then lies off what the
generator has seen, and manifold projection is what brings it back.{_lr_schedule(s2)}

Training time {s1['minutes'] + s2['minutes'] + q['minutes']:.1f} minutes (the two stages and the query encoders;
the recipe may run in several sittings) on {summary['machine']}. Making the faces is extra: about
0.8 s a face on one core (2 processes on 2 cores: about 1.2 faces a second). Weights stored as
float16, except the encoders and query encoders and the sketch decoders (they only draw the
shadows), stored as int8, as are the feature banks. The banks were encoded, and the query
encoders trained, with the float16 encoders; int8, half of float16's size, made room for the query
encoders in the 30 MB and moved a validation sketch's latent by at most 1.6% of its distance to
the nearest bank row.

## Reproduce

```bash
make setup
.venv/bin/python -m dfd_kit.training photo --out runs/photo --params Params/photo
```

It builds the data sets where missing (resuming a half-built one; the banks' extra faces too),
trains both stages, exports here, re-encodes the banks, trains the query encoders and measures; run it again after an
interruption and it goes on where it stopped. To measure again:
`.venv/bin/python -m dfd_kit.training quality --params Params/photo`.

The data sets are rebuilt where missing, and MobileStyleGAN under OpenVINO gives slightly
different pixels on different processors, so the faces, their sketches and the degradation
drawn for them differ a little from machine to machine, and a measurement of 200 faces moves
by a few points.

## Metrics

{CARD_START}
(not measured yet)
{CARD_END}

![held-out faces](heldout.png)

![manifold projection on rough sketches](projection.png)

### Projection by weight

The paper gives each component a weight w that blends the drawing's latent (w = 0) with its
projection (w = 1). The sweep under the Metrics table measures the weights between, every
component at once, on the same faces and sketches:

![error and wins against the projection weight](projection_weights.png)

On this model the error against the true photo is lowest between the ends, not at w = 1. At
w = 1 every part is replaced by a blend of bank rows, other people's parts; a partial weight
keeps most of what the drawing says and pulls it only part of the way towards those real
samples, and an average of two guesses that err in different directions can lie nearer the truth
than either. So this model's default weight is w = {PHOTO.blend_weight:g} (`blend_weight` in its `config.json`):
generation, the command line and the pad's sliders start there when no weight is given, and the
Metrics table's partial-projection rows measure it (a vertical line marks it in the figure). It
was chosen on 200 validation faces never used for this card (`photo-data --first 2000000 --n 200
--out data/photo_faces_val`, measured by `quality --params Params/photo --heldout
data/photo_faces_val --figures <another folder>`), with the query encoders: of the sweep's
weights, w = 0.5 gave the lowest error on the degraded sketches (30.50, against 32.19, 30.91,
30.80 and 31.73 at w = 0, 0.25, 0.75 and 1) and w = 0.75 on the rough ones (31.63, against 32.07
at w = 0.5); w = 0.5 beat no projection on 73.5% of the degraded sketches and w = 0.75 on 64.5%,
short of the 70% targeted, so the default stayed at 0.5, where it was before the query
encoders. The dotted line (and the sweep's last two rows) is a *perfect search*: the rough
sketch's latents blended at each weight with the clean sketch's own projection (its ten
neighbours and their weights), projection as it would be if its search found the faces the clean
drawing finds. Searching from the query encoders finds many of them (the shared-neighbours row;
"Query encoders", below), and projection removes most of what a perfect search would; what a
perfect search still leaves is the blend's own limit: the right rows are other people's parts.
The official and cartoon models keep w = 1, full projection, as their default; any weight can be
set per component, in the pad, on the command line or in code.

## Feature banks, measured

The banks decide where projection can take a latent, and a bank needs sketches only. The same
networks with three banks, each measured by `quality` on the same 200 held-out faces:

| banks (`banks --params P --data ...`) | `data/photo_faces` | `data/photo_faces data/photo_faces_extra` | the same `--mirror` (these banks) |
|---|---:|---:|---:|
| rows per component, both sexes | 2000 | 6000 | 12000 |
| degraded sketches: projection wins | 35.5% | 43.0% | 48.0% |
| rough sketches: projection wins | 42.0% | 49.0% | 52.5% |
| rough sketches: error removed by projection | -1.9% | 0.3% | 0.8% |
| MAE generated vs photo (clean sketches, w = 1) | 31.10 | 30.48 | 30.42 |

`data/photo_faces_extra` is faces 2000 to 5999 (`photo-data --first 2000 --n 4000`, about an
hour on two cores). Mirroring doubles the rows for nothing more than the encoding. 12000 rows
bring the weights to {_weights_mb(params_dir):.1f} MB of their 30, so the banks stop there.
The default K = 10 was checked on 200 other faces (`photo-data --first 2000000 --n 200`, never
used for the table): with K 5 / 10 / 20 / 40, projection won on 42.5 / 47.0 / 48.0 / 41.0% of
their degraded sketches and removed -0.0 / 0.7 / 0.9 / -0.1% of their rough sketches' error;
10 and 20 are within a point of each other, so K stayed 10.

## Encoders, measured

Projection can only repair a sketch whose latent it moves nearer the clean sketch's. The
`geometry` subcommand measures that in latent space, straight after stage 1: on 100 of those
validation faces, with banks of the 2000 training sketches and K = 10, each degraded or rough
latent's distance to its clean sketch's latent, before and after projection, in bank spacings
(the median distance between two bank rows).

![where projection takes the latents](projection_geometry.png)

- Top, these encoders. On mildly degraded sketches the parts' latents lie 0.36-0.41 spacings
  from the clean latent, and projection takes them to 0.40-0.45: nearer for only 23-30% of the
  faces. Even the clean latent's own projection lies 0.28-0.33 away, so a perfect search would
  gain little there. Rough sketches' parts start at 0.62-0.67 and projection brings them to
  0.57-0.59 (nearer for 62-78% of the faces), but the search finds only a quarter of the clean
  sketch's ten neighbours, so it stops about twice as far away as the clean latent's own
  projection. The remainder's own projection (0.37) lies farther than its rough latent (0.33):
  with this bank, projecting the remainder can only move it away. Banks three times as dense
  (`--data data/photo_faces data/photo_faces_extra`, 6000 sketches) shrink the clean latent's
  own projection only to 0.25-0.30, and the degraded parts projected nearer rise only to 29-35%.
- Bottom, a denoising stage 1 (half of its input sketches degraded, the clean sketch the
  target): `train --config photo --data data/photo_faces --out runs/photo_dn --steps-stage1 1000
  --steps-stage2 0 --stage1-augment 0.5`, 19 minutes. Its degraded latents land nearer their
  clean ones (0.21-0.29) and its rough ones a little nearer (0.52-0.57), but the search finds
  hardly more of the right neighbours (28-33% against 24-28%), so projection lands nearer for
  even fewer faces: 2-19% of the degraded sketches' parts and none of the remainders. A stage 2
  on these encoders would make projection matter less, so it was not trained.

Reproduce: `python -m dfd_kit.training geometry --out runs/photo runs/photo_dn --data
data/photo_faces --heldout data/photo_faces_val --figure Params/photo/projection_geometry.png`
(about four minutes). This section and the one before were measured before the query encoders,
with the paper's search.

## Query encoders

Every measurement above points at the search. With the clean sketch's own neighbours the blend
would remove a tenth of the rough sketches' error or more (the perfect-search rows), but a search
that starts from the rough latent finds few of them (the shared-neighbours row): the rough latent
lies off the manifold, among other people's parts. So this model has a second encoder per
component, a *query encoder* (`dfd_kit/training/query.py`; an addition of this kit, not in the
paper): the stage-1 encoder, copied and fine-tuned with everything else frozen so that a rough or
hand-drawn crop lands where its clean crop's latent lies. Its loss is the squared distance to the
clean latent over the bank's variance; each training sketch is roughened (`roughen_sketch`) with
odds 0.6, given hand-drawn strokes (`augment_sketch`) with odds 0.25, or left clean, which holds a
clean drawing's query on its own latent; the copies keep the encoder's normalisation statistics,
so they start as the encoder itself and the banks stay the space they search. Projection searches
from the query and fits the locally-linear weights there; the blend still starts from the
drawing's own latent, so w = 0 keeps every stroke as before.
`DeepFaceDrawing.without_query_encoders()` gives the same model with the paper's search.

On the 200 validation faces, every component at weight w, the share of the rough sketches'
error removed (`quality --params P --heldout data/photo_faces_val --figures <another folder>`):

| w | 0.25 | 0.5 | 0.75 | 1 |
|---|---:|---:|---:|---:|
| the paper's search (this model before its query encoders) | 2.5% | 3.6% | 3.2% | 1.2% |
| query encoders after 2000 steps | 4.6% | 8.1% | 9.3% | 7.8% |
| query encoders after 4000 steps (these) | 4.8% | 8.5% | 9.7% | 8.2% |
| a perfect search (the clean sketch's neighbours) | 6.1% | 10.9% | 12.6% | 10.6% |

They find the clean sketch's neighbours more often (on the validation faces 29% of them for the
parts and 80% for the remainder) and close about two thirds of the gap to a perfect search.
The second 2000 steps added little, so training stops at 4000. A weight per component does
better than one for all: the parts at 0.75 and the remainder at 0.5 removed 10.1% of the rough
validation sketches' error and beat no projection on 70.5% of the degraded ones; a model's
default is one weight for every component, so this one keeps w = 0.5, and the pad's sliders and
`part_weights` set the components apart.

Reproduce (on a model without them): `python -m dfd_kit.training query --params Params/photo
--data data/photo_faces --out runs/photo` (the recipe's last training step, about 40 minutes on
two idle cores), then, for int8 encoders as here, `python -c "from dfd_kit.training.recipes import
quantize_encoders; quantize_encoders('Params/photo')"`.

## Hand-drawn sketches

The three sketches in `examples/hand_drawn` were drawn stroke by stroke as a person draws
(`examples/hand_drawn/draw.py` holds the strokes; the third is drawn in a hurry: shaky lines,
an eye left out, a scribbled mouth). Stroke distance (px, w = 0 / w = 1): {hand_text}.

![hand-drawn sketches through the photo model](hand_drawn.png)

## Limits

- **Its faces are blurry.** Which quality targets it meets, the Metrics table says. The sketch
  says nothing about skin, hair or clothes colour, and two thousand faces and the training above,
  on two cores, give soft faces with a faint checkerboard texture.
- **Manifold projection repairs, but less than the target asks** (Metrics). Stage 2 saw only the
  latents of clean sketches, as in the paper, and the query encoders find many of the clean
  sketch's neighbours, so projection lowers the error on rough sketches at every weight. At the
  default (w = {PHOTO.blend_weight:g}, "Projection by weight") it wins for most faces of both kinds, but removes
  about 8% of the rough sketches' error, not 10%; no one weight for every component reaches 10%
  here (the sweep); a weight per component reached it on validation faces ("Query encoders"). At
  w = 1 it wins for only about half of the mildly degraded sketches: a fully projected part is
  other people's. It does what the paper says it does, fill in a part left out and tidy a
  scribbled one (`projection.png`), but the repaired part is a plausible one, not the true face's:
  even a perfect search (the clean sketch's neighbours) removes only about 12% at its best
  weight, against 15% for a perfect projection (the clean sketch's own latents). Before the query
  encoders the search was the limit (the paper's search removed under 4% at any weight); denser
  banks helped little ("Feature banks, measured") and a denoising stage 1 made it worse
  ("Encoders, measured").
- The training sketches are extracted from photos and are broken and sparse; sketches drawn by
  hand are cleaner, more complete and drawn differently (no shoulders, a hair outline of their
  own), so they lie off the training data: on them (`hand_drawn.png`) the model paints the hair as
  a mass around the face rather than along the drawn outline.
- 256 x 256, and the faces are StyleGAN's: mostly frontal, well lit, young to middle-aged
  adults and children; the model knows nothing else. A 512 x 512 version does not fit the
  recipe's budget of about three hours on two cores: the same networks on the layout doubled
  (`photo-data --size 512`, then `train --config` with that layout), timed over 20 steps of each
  stage on 16 faces, took 3.20 s a stage-1 step and 6.50 s a stage-2 step, against 1.05 and 1.74
  s at 256 in the same session, so the recipe's 1000 + 3000 steps would take about six hours.
"""
    path = Path(params_dir) / "MODEL_CARD.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _sex_counts(data_dir) -> str:
    """'N male, M female' for a data set."""
    from ..data import load_samples

    sexes = [s.sex for s in load_samples(data_dir)]
    return f"{sexes.count('male')} male, {sexes.count('female')} female"


def _banks_text(summary: dict) -> str:
    """The model card's bullet on the feature banks."""
    b = summary.get("banks")
    if not b:
        return "- Feature banks: every training sketch.\n"
    return (f"- Feature banks: the first {b['remainder_faces']} faces of facesjs seed {b['seed']} for the remainder, "
            f"the first {b['part_faces']} for each part\n"
            f"  (the training faces come first; a bank needs sketches only), encoded by the trained encoders\n"
            f"  and stored as int8; default K = {b['k']}. Re-encoding took {b['minutes']} minutes on {b['machine']}.\n")


def _weights_mb(params_dir) -> float:
    """Megabytes (10^6 bytes) of a Params folder's networks and banks."""
    root = Path(params_dir)
    return sum(f.stat().st_size for f in list(root.glob("*/*.pkl")) + list(root.glob("*/*.bin"))) / 1e6


def _photo_banks_text(summary: dict) -> str:
    """The photo model card's bullet on the feature banks."""
    b = summary.get("banks") or {}
    k = b.get("k", PHOTO_K)
    if not b.get("mirror") and len(b.get("data", [PHOTO_DATA])) == 1:
        return (f"- Feature banks: every training sketch ({_sex_counts(summary.get('data', PHOTO_DATA))}), encoded by "
                f"the\n  trained encoders and stored as int8; default K = {k}.\n")
    n, extra = summary["n_faces"], b["remainder_faces"] - summary["n_faces"]
    rows = b["rows"]
    mirrored = ("; each also\n  mirrored left to right, since a face's mirror image is another plausible face "
                "(the layout's\n  boxes are mirror images of each other)" if b.get("mirror") else "")
    return (f"- Feature banks: the sketches of faces 0 to {b['remainder_faces'] - 1} (the {n} training faces, then "
            f"{extra} more\n  made the same way for the banks alone: a bank needs sketches, not photos){mirrored}: "
            f"{rows['male']['remainder']}\n  male and {rows['female']['remainder']} female rows per component, "
            f"encoded by the trained encoders and stored as\n  int8; default K = {k}. What the denser banks change: "
            f"\"Feature banks, measured\", below.\n")


def data_source(params) -> str:
    """"stylegan" for a model on the photo layout, else "facesjs": which generator makes
    its training and held-out faces."""
    from ..config import PHOTO_LAYOUT, ModelConfig

    path = Path(params) / "config.json"
    try:
        layout = ModelConfig.from_dict(json.loads(path.read_text())).layout
    except (OSError, ValueError, KeyError, TypeError):
        return "facesjs"
    return "stylegan" if layout == PHOTO_LAYOUT else "facesjs"


def _built(folder) -> bool:
    """Whether ``folder`` was named and already holds a data set."""
    return folder is not None and (Path(folder) / "samples.csv").is_file()


def measure_quality(params, data=None, heldout=None, n_faces: Optional[int] = None, figures=None,
                    progress: bool = True) -> None:
    """The recipes' last step and the ``quality`` subcommand: measure the model in ``params``
    on held-out faces (:mod:`dfd_kit.training.quality`; only the first ``n_faces`` if given),
    write figures and quality.json to ``figures`` (default ``params``), fill in its model
    card's metrics (only when they go to ``params``: measurements elsewhere, e.g. on validation
    faces, leave the card alone) and print them. The data sets default to the model's own kind
    (facesjs or StyleGAN faces) and are built if missing; a held-out folder named that already
    holds a data set is measured as it is, whatever it was built with (validation faces:
    ``photo-data --first 2000000 --n 200``)."""
    from ..config import DEMO
    from .quality import (HELDOUT_FACES, HELDOUT_SEED, comparison_markdown, evaluate_quality, update_model_card,
                          write_report)

    params = Path(params)
    out = Path(figures) if figures else params
    if data_source(params) == "stylegan":
        from ..data.stylegan import HELDOUT_FIRST

        data = data or PHOTO_DATA
        ensure_stylegan_data(data, PHOTO_FACES, 0, progress)
        if not _built(heldout):
            heldout = heldout or PHOTO_HELDOUT
            ensure_stylegan_data(heldout, HELDOUT_FACES, HELDOUT_FIRST, progress)
    else:
        data = data or DEMO_DATA
        ensure_facesjs_data(data, DEMO_FACES, 0, DEMO.layout, progress)
        if not _built(heldout):
            heldout = heldout or "data/facesjs_heldout"
            ensure_facesjs_data(heldout, HELDOUT_FACES, HELDOUT_SEED, DEMO.layout, progress)
    report = evaluate_quality(params, heldout, data, out, n_faces=n_faces, progress=progress)
    extra = ""
    if data_source(params) == "stylegan":
        report.ratio_target = PHOTO_RATIO_TARGET
        cartoon = DEMO_PARAMS_DIR
        if (cartoon / "config.json").exists():   # the cartoon model on the same faces, for comparison
            other = evaluate_quality(cartoon, heldout, data, None, n_faces=n_faces, progress=progress)
            extra = ("The cartoon model (`Params/demo`) on the same held-out faces and sketches:\n\n"
                     + comparison_markdown({"this model": report, "cartoon model": other}))
            write_report(other, out / "quality_cartoon.json")
    write_report(report, out / "quality.json")
    card = out.resolve() == params.resolve() and update_model_card(params / "MODEL_CARD.md", report, extra)
    print(report.markdown())
    if extra:
        print(extra)
    print(f"figures: {', '.join(report.figures.values())}; quality.json in {out}"
          + ("; model card updated" if card else ""))


def measure_geometry(out_dirs, data_dirs, heldout, k: int = PHOTO_K, n_faces: Optional[int] = 100, figure=None,
                     progress: bool = True) -> list:
    """The ``geometry`` subcommand: for the stage-1 encoders of each run folder in
    ``out_dirs``, where projection takes the held-out faces' degraded and rough latents
    (:func:`~dfd_kit.training.quality.projection_geometry`, banks of the sketches of
    ``data_dirs``); one panel per run in ``figure`` (default
    ``<first run>/figures/projection_geometry.png``). Needs stage 1 only: it says whether
    an encoder is worth a stage 2. Returns the reports."""
    import numpy as np

    from ..plotting import plot_projection_geometry
    from .checkpoints import read_model_config
    from .data import TrainingData
    from .figures import save_figure
    from .quality import _compact_png, projection_geometry
    from .stage1 import load_stage1

    reports, bank = [], None
    for out in map(Path, out_dirs):
        layout = read_model_config(out).layout
        if bank is None or bank[0] != layout:   # runs on one layout share the bank's sketches
            sets = [TrainingData(d, layout, photos=False, shard=False, progress=progress) for d in data_dirs]
            bank = (layout, np.concatenate([s.sketches for s in sets]), np.concatenate([s.sexes for s in sets]))
        _, sketches, sexes = bank
        encoders, _ = load_stage1(out)
        reports.append(projection_geometry(encoders, sketches, sexes, heldout, layout, k, n_faces,
                                           label=out.name, progress=progress))
    figure = Path(figure) if figure else Path(out_dirs[0]) / "figures" / "projection_geometry.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    _compact_png(save_figure(plot_projection_geometry(reports), figure))
    print(f"figure: {figure}")
    return reports
