"""Command line: ``python -m dfd_kit.training demo|photo|photo-data|train|export|banks|query|quality|geometry ...``;
each subcommand calls one function of :mod:`.recipes` (``--help`` lists them, and each
subcommand's ``--help`` its options). The demo model's recipe::

    python -m dfd_kit.training demo --out runs/demo --params Params/demo

Both stages on your own data set, e.g. CelebAMask-HQ photos prepared by
``build_photo_dataset`` for the official 512 layout, data-parallel under mpirun::

    mpirun -np 4 python -m dfd_kit.training train --data data/celeba --out runs/celeba \\
        --config official --steps-stage1 20000 --steps-stage2 100000 --batch-size 4

Run the same command again after an interruption: it resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DFDError, TrainingInterrupted
from .recipes import (DEMO_BANK_DATA, DEMO_BANK_FACES, DEMO_BANK_PART_FACES, DEMO_DATA, DEMO_FACES, DEMO_K,
                      DEMO_PROJECT_PROB, DEMO_STEPS_STAGE1, DEMO_STEPS_STAGE2, PHOTO_BANK_DATA, PHOTO_BANK_EXTRA,
                      PHOTO_DATA, PHOTO_FACES, PHOTO_HELDOUT, PHOTO_K, PHOTO_STEPS_STAGE1,
                      PHOTO_STEPS_STAGE2, densify_banks_from_data, densify_demo_banks, measure_geometry,
                      measure_quality, train, train_demo, train_photo, train_query)


def _config(name: str):
    """'official', 'demo', 'photo' or a config.json path -> ModelConfig."""
    from ..config import DEMO, OFFICIAL, PHOTO, ModelConfig

    named = {"official": OFFICIAL, "demo": DEMO, "photo": PHOTO}
    if name in named:
        return named[name]
    return ModelConfig.from_dict(json.loads(Path(name).read_text()))


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
    d.add_argument("--project-prob", type=float, default=DEMO_PROJECT_PROB,
                   help="share of stage 2's samples whose latents are projected (0: clean latents only, the "
                        "paper's recipe; the model card compares the two)")
    d.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: all cores; 1 is faster on a machine busy with other work)")
    d.add_argument("--no-progress", action="store_true")
    t = sub.add_parser("train", help="both stages on your own data set (e.g. from build_photo_dataset), then "
                                     "export; under mpirun -np N data-parallel")
    t.add_argument("--data", required=True, help="data set folder (samples.csv, sketch/, photo/)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, figures, banks); resumed if present")
    t.add_argument("--config", default="official",
                   help="'official' (512 x 512, the paper's sizes), 'demo' (256 x 256, narrow), 'photo' (the demo's "
                        "networks on the photo layout) or a config.json")
    t.add_argument("--steps-stage1", type=int, required=True)
    t.add_argument("--steps-stage2", type=int, required=True)
    t.add_argument("--minutes-stage1", type=float, default=None, help="optional time budget")
    t.add_argument("--minutes-stage2", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=4, help="per process")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--params", default=None, help="export folder (default: <out>/params)")
    t.add_argument("--stage1-augment", type=float, default=0.0, metavar="P",
                   help="share of stage 1's input sketches made to look hand-drawn, the clean sketch staying the "
                        "target (a denoising auto-encoder; default 0, as in the paper)")
    t.add_argument("--threads", type=int, default=None, help="OpenMP threads per process")
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("export", help="write a run folder's trained model as a Params folder")
    e.add_argument("--out", required=True, help="run folder")
    e.add_argument("--params", required=True, help="Params folder to write")
    e.add_argument("--float32", action="store_true", help="store float32 (default float16)")
    b = sub.add_parser("banks", help="re-encode a model's feature banks from more sketches (a denser sample of "
                                     "the manifold: facesjs, or with --data any data sets built already), int8, "
                                     "and set its default K")
    b.add_argument("--params", default="Params/demo", help="model folder to update")
    b.add_argument("--sketches", default=DEMO_BANK_DATA, help="facesjs set (built here from --seed if missing)")
    b.add_argument("--data", nargs="+", default=None, metavar="DIR",
                   help="instead of --sketches: data sets that exist already (e.g. data/photo_faces and more "
                        "faces from photo-data --first 2000), their samples in this order; nothing is built")
    b.add_argument("--faces", type=int, default=None,
                   help=f"faces for the remainder's bank (default: {DEMO_BANK_FACES}; with --data all)")
    b.add_argument("--part-faces", type=int, default=None,
                   help=f"faces for each part's bank (default: {DEMO_BANK_PART_FACES}; with --data all)")
    b.add_argument("--k", type=int, default=None,
                   help=f"the model's new default number of neighbours (default: {DEMO_K}; with --data kept)")
    b.add_argument("--mirror", action="store_true",
                   help="with --data: each sketch also flipped left to right (twice the rows; needs a layout "
                        "whose boxes mirror each other, as the photo model's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-progress", action="store_true")
    qe = sub.add_parser("query", help="train query encoders for a model (they tell manifold projection where a "
                                      "rough drawing's clean version lies) and write them into its folder")
    qe.add_argument("--params", required=True, help="model folder to add them to (its encoders stay as they are)")
    qe.add_argument("--data", required=True, help="training set whose sketches they learn from (e.g. the model's own)")
    qe.add_argument("--out", required=True, help="run folder (checkpoint in <out>/query); resumed if present")
    qe.add_argument("--steps", type=int, default=None,
                    help="default: QueryConfig's 4000 (batch 12; about 40 minutes for the photo model's networks "
                         "on two cores)")
    qe.add_argument("--seed", type=int, default=0)
    qe.add_argument("--threads", type=int, default=None)
    qe.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("quality", help="measure a trained model on held-out faces; figures, quality.json and the "
                                       "model card's metrics")
    q.add_argument("--params", default="Params/demo", help="model to measure")
    q.add_argument("--data", default=None, help="training set, the mean-face baseline (default: the model's own "
                                                "kind, data/facesjs_train or data/photo_faces)")
    q.add_argument("--heldout", default=None, help="held-out set, built if missing (default: data/facesjs_heldout "
                                                   "or data/photo_faces_heldout); a folder that holds a data set "
                                                   "already is measured as it is")
    q.add_argument("--n-faces", type=int, default=None, help="use only the first N held-out faces")
    q.add_argument("--figures", default=None, help="where figures and quality.json go (default: --params, whose "
                                                   "model card is then updated)")
    q.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("geometry", help="before stage 2: where projection takes held-out degraded and rough "
                                        "sketches' latents, against their clean sketches' (stage-1 encoders)")
    m.add_argument("--out", nargs="+", required=True, metavar="RUN", help="run folders with a finished stage 1")
    m.add_argument("--data", nargs="+", required=True, metavar="DIR", help="data sets whose sketches form the banks")
    m.add_argument("--heldout", required=True, help="held-out data set")
    m.add_argument("--k", type=int, default=PHOTO_K, help="neighbours")
    m.add_argument("--n-faces", type=int, default=100, help="held-out faces measured")
    m.add_argument("--figure", default=None, help="PNG (default: <first run>/figures/projection_geometry.png)")
    m.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("photo", help="the photo recipe: MobileStyleGAN faces, PHOTO config, both stages, banks, "
                                     "model card, measurements (resumes where it stopped)")
    p.add_argument("--data", default=PHOTO_DATA, help="training set folder (built or finished here)")
    p.add_argument("--heldout", default=PHOTO_HELDOUT, help="held-out set folder (built or finished here)")
    p.add_argument("--out", default="runs/photo", help="run folder (checkpoints, figures, banks); resumed if present")
    p.add_argument("--params", default="Params/photo", help="export folder")
    p.add_argument("--n-faces", type=int, default=PHOTO_FACES)
    p.add_argument("--steps-stage1", type=int, default=PHOTO_STEPS_STAGE1)
    p.add_argument("--steps-stage2", type=int, default=PHOTO_STEPS_STAGE2)
    p.add_argument("--steps-query", type=int, default=None, help="query encoders' steps (default: QueryConfig's)")
    p.add_argument("--k", type=int, default=PHOTO_K, help="the model's default number of neighbours")
    p.add_argument("--bank-data", default=PHOTO_BANK_DATA,
                   help="folder of the faces made for the banks only (built or finished here)")
    p.add_argument("--bank-extra", type=int, default=PHOTO_BANK_EXTRA,
                   help="faces made for the banks on top of the training faces (0: the training sketches only)")
    p.add_argument("--batch-size", type=int, default=4, help="per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads")
    p.add_argument("--no-quality", action="store_true", help="skip the held-out measurements after export")
    p.add_argument("--no-progress", action="store_true")
    g = sub.add_parser("photo-data", help="generate faces of people who do not exist (MobileStyleGAN) as a "
                                          "(sketch, photo, sex) data set; resumable, parallel")
    g.add_argument("--out", required=True, help="data set folder")
    g.add_argument("--n", type=int, required=True, help="number of faces")
    g.add_argument("--first", type=int, default=0, help="index of the first face (face i is seeded by i)")
    g.add_argument("--size", type=int, default=256, choices=(256, 512))
    g.add_argument("--truncation", type=float, default=None, help="toward the mean style (default: the recipe's)")
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "photo-data":
        from ..data.stylegan import TRUNCATION, build_stylegan_dataset

        out = build_stylegan_dataset(a.out, a.n, a.first, a.size, TRUNCATION if a.truncation is None else a.truncation,
                                     a.workers, not a.no_progress)
        print(f"{a.n} faces in {out}")
        return 0
    if a.cmd == "quality":
        measure_quality(a.params, a.data, a.heldout, a.n_faces, a.figures, not a.no_progress)
        return 0
    if a.cmd == "geometry":
        from dataclasses import asdict

        reports = measure_geometry(a.out, a.data, a.heldout, a.k, a.n_faces, a.figure, not a.no_progress)
        print(json.dumps([asdict(r) for r in reports], indent=1))
        return 0
    if a.cmd == "query":
        summary = train_query(a.params, a.data, a.out, a.steps, a.seed, not a.no_progress, a.threads)
        print(json.dumps(summary, indent=2))
        return 0
    if a.cmd == "banks":
        if a.data:
            summary = densify_banks_from_data(a.params, a.data, a.faces, a.part_faces, a.k, a.mirror,
                                              not a.no_progress)
        else:
            if a.mirror:
                raise DFDError("--mirror works with --data: the facesjs layout's boxes are not mirror images "
                               "of each other")
            summary = densify_demo_banks(a.params, a.sketches, a.faces or DEMO_BANK_FACES,
                                         a.part_faces or DEMO_BANK_PART_FACES, a.k or DEMO_K, a.seed,
                                         not a.no_progress)
        print(json.dumps(summary, indent=2))
        return 0
    if a.cmd == "export":
        import numpy as np

        from .stage2 import export_model

        print(export_model(a.out, a.params, dtype=np.float32 if a.float32 else np.float16))
        return 0
    if a.cmd == "photo":
        summary = train_photo(a.data, a.out, a.params, a.heldout, a.n_faces, a.steps_stage1, a.steps_stage2, a.k,
                              a.batch_size, a.seed, a.threads, not a.no_progress, not a.no_quality, a.bank_data,
                              a.bank_extra, a.steps_query)
    elif a.cmd == "train":
        summary = train(a.data, a.out, _config(a.config), a.minutes_stage1, a.minutes_stage2, a.steps_stage1,
                        a.steps_stage2, a.batch_size, a.seed, a.params, a.threads, not a.no_progress,
                        augment_prob_stage1=a.stage1_augment)
    else:
        summary = train_demo(a.data, a.out, a.minutes_stage1, a.minutes_stage2, a.n_faces, a.seed, a.batch_size,
                             a.params, a.heldout, a.threads, not a.no_progress, a.steps_stage1, a.steps_stage2,
                             not a.no_quality, project_prob=a.project_prob)
    from .parallel import is_main   # imports Jittor, so not at the top: --help stays quick

    if is_main():   # under mpirun, one summary
        print(json.dumps(summary, indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
