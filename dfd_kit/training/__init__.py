"""Training DeepFaceDrawing (the official release publishes inference only).

Two stages, as in the paper:

1. :func:`train_stage1` -- the five component auto-encoders (encoder + sketch decoder)
   learn to reconstruct the crops of the training sketches;
   :func:`build_banks` then encodes every training sketch with the frozen encoders into
   the per-sex feature banks used for manifold projection;
2. :func:`train_stage2` -- the feature decoders and the generator learn, as a
   conditional GAN against the real photos, to turn the latents into a face.

A kit model may add query encoders (:func:`train_query_encoders`, not in the paper): the
stage-1 encoders fine-tuned to tell manifold projection where a rough drawing's clean
version would lie, so that its search finds that person's neighbours.

:func:`export_model` writes the result as a Params folder that :func:`dfd_kit.load`
reads. :func:`train_demo` runs everything on the facesjs demo data within a time budget;
from a shell (:mod:`.recipes` holds the recipes, :mod:`.__main__` their command line)::

    python -m dfd_kit.training demo --out runs/demo --params Params/demo

Every stage checkpoints to ``<out>/<stage>/checkpoint.npz`` and resumes from it exactly
(same weights as an uninterrupted run); under ``mpirun -np N`` the stages train
data-parallel (each rank one shard, gradients averaged, rank 0 writes).

Names load lazily, so ``import dfd_kit.training`` does not import Jittor.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "RunConfig": "configs", "Stage1Config": "configs", "Stage2Config": "configs", "QueryConfig": "configs",
    "TrainingData": "data", "BatchSampler": "data", "seed_all": "data",
    "save_checkpoint": "checkpoints", "load_checkpoint": "checkpoints", "find_checkpoint": "checkpoints",
    "StageResult": "loop", "SimulatedKill": "loop", "save_image_grid": "figures",
    "train_stage1": "stage1", "load_stage1": "stage1", "build_autoencoders": "stage1",
    "build_banks": "banks", "load_banks": "banks", "encode_all": "banks",
    "train_stage2": "stage2", "load_stage2": "stage2", "export_model": "stage2",
    "MultiscaleDiscriminator": "stage2", "PatchDiscriminator": "stage2",
    "train_query_encoders": "query", "export_query_encoders": "query",
    "train_demo": "recipes", "evaluate_quality": "quality",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
