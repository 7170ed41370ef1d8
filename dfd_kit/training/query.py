"""Query encoders for Manifold Projection (a kit addition; the paper has none).

Projection searches the feature bank for the K latents nearest the drawing's. A rough
drawing's latent lies off the manifold, which is why projection exists; but it also lies
far from where the same person's *clean* drawing would land, so its nearest bank rows are
mostly other people's parts (on the photo model's held-out faces, the paper's search from a
rough sketch found 16% of the parts' neighbours its clean sketch finds; with query encoders,
27%). The blend can only be as good as what the search finds.

A query encoder per component tells the search where to look. It is the stage-1 encoder,
copied and fine-tuned so that a drawing lands where its clean drawing's latent lies:

    loss = sum over components c of mean |Q_c(x_c) - E_c(y_c)|^2 / var(E_c(y))

x: a training sketch, made rough (:func:`~dfd_kit.data.sketch.roughen_sketch`, odds
``rough_prob``), hand-drawn (:func:`~dfd_kit.data.sketch.augment_sketch`, ``augment_prob``)
or left clean; y: the clean sketch. E stays frozen, and Q keeps E's normalisation
statistics, so Q(clean) starts equal to E(clean) and the clean samples hold it there: the
bank, encoded by E, stays the space Q searches. At inference (:mod:`dfd_kit.manifold`) the
neighbours and their weights come from Q(x) and the blend still starts from E(x), so a
weight of 0 keeps every stroke; only where to search changed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from .checkpoints import trainable
from .configs import QueryConfig
from .data import BatchSampler, TrainingData, sample_rng
from .loop import Run, StageResult, begin_stage, step_on_sum
from .stage1 import stack_crops
from ..config import COMPONENTS, ModelConfig
from ..layers import Norm2d

import jittor as jt

STAGE = "query"
_STAGE_ID = 3   # sample_rng's stream for this stage (stage 1 and 2 use 1 and 2)


def build_query_encoders(encoders: Dict[str, object], config: ModelConfig) -> Dict[str, object]:
    """Copies of the trained ``encoders`` in training mode, their normalisation frozen at the
    encoders' running statistics (:attr:`dfd_kit.layers.Norm2d.frozen`)."""
    from ..pipeline import build_network

    out = {}
    for c in COMPONENTS:
        net = build_network("query_encoder", config, c, fast=False)
        net.load_state_dict({k: jt.array(v.numpy()) for k, v in encoders[c].state_dict().items()})
        net.train()
        for m in net.modules():
            if isinstance(m, Norm2d):
                m.frozen = True
        out[c] = net
    return out


def make_query_inputs(data: TrainingData, rows: np.ndarray, step: int, cfg: QueryConfig) -> np.ndarray:
    """The batch's input sketches: each training sketch made rough, hand-drawn or left
    clean, with the odds of ``cfg`` (randomness from :func:`sample_rng`: a resumed run draws
    the same)."""
    from ..data.sketch import augment_sketch, roughen_sketch

    out = data.sketches[rows].copy()
    for j, r in enumerate(rows):
        rng = sample_rng(cfg.seed, _STAGE_ID, step, data.indices[r])
        u = rng.random()
        if u < cfg.rough_prob:
            out[j] = roughen_sketch(out[j], rng, data.layout, cfg.strength)
        elif u < cfg.rough_prob + cfg.augment_prob:
            out[j] = augment_sketch(out[j], rng, cfg.strength)
    return out


def query_step(query, opt, inputs: np.ndarray, targets: Dict[str, np.ndarray], scale: Dict[str, float],
               layout) -> Dict[str, float]:
    """One Adam step of the five query encoders: uint8 (B, size, size) input sketches and the
    clean sketches' latents {c: (B, D)} -> {component: loss, "total": their sum}."""
    x = stack_crops(inputs, layout)
    losses = {c: ((query[c](jt.array(x[c])) - jt.array(targets[c])) ** 2).mean() / scale[c]
              for c in COMPONENTS}
    return step_on_sum(opt, losses)


def train_query_encoders(encoders: Dict[str, object], data_dir, out_dir, config: ModelConfig,
                         cfg: Optional[QueryConfig] = None, data: Optional[TrainingData] = None,
                         on_step: Optional[Callable[[int], None]] = None) -> StageResult:
    """Train (or resume training) query encoders for the trained ``encoders`` (which stay
    as they are) on the sketches of ``data_dir``, into ``out_dir/query``. Returns them in
    eval mode, in the result's ``nets["query_encoders"]``."""
    from .banks import encode_all

    cfg = cfg or QueryConfig()
    config, data = begin_stage(cfg, out_dir, config, data, data_dir, photos=False)
    targets = encode_all(encoders, data.sketches, config.layout)
    # each component's loss in units of its latents' variance, so the five weigh alike
    scale = {c: float(targets[c].var()) for c in COMPONENTS}
    query = build_query_encoders(encoders, config)
    opt = jt.optim.Adam(trainable(query.values()), cfg.lr, betas=(cfg.beta1, cfg.beta2))
    sampler = BatchSampler(len(data), cfg.batch_size, cfg.seed)
    run = Run(STAGE, out_dir, cfg, {f"query_encoder.{c}": query[c] for c in COMPONENTS}, {"adam": opt}, sampler)
    run.resume()

    def step_fn(step: int) -> Dict[str, float]:
        rows = sampler.next()
        return query_step(query, opt, make_query_inputs(data, rows, step, cfg),
                          {c: targets[c][rows] for c in COMPONENTS}, scale, config.layout)

    stopped = run.loop(step_fn, lambda step: None, on_step)
    for m in query.values():
        m.eval()
    return StageResult(STAGE, run.step, run.elapsed, run.checkpoint_path, run.history,
                       {"query_encoders": query}, stopped)


def export_query_encoders(params_dir, query: Dict[str, object], dtype=np.float16) -> Path:
    """Write the query encoders into a Params folder beside its encoders and set
    ``query_encoders`` in its config.json (each file replaced atomically, under the folder's
    lock, so a load waits until all are written)."""
    from ..loading import (atomic_write, checkpoint_file, encoder_key_table, official_state, params_lock,
                           read_config, write_checkpoint)

    root = Path(params_dir)
    config = read_config(root)
    n_enc = len(config.nets.encoder_channels)
    with params_lock(root, exclusive=True):
        for c in COMPONENTS:
            write_checkpoint(root / checkpoint_file("query_encoder", c),
                             official_state(query[c], encoder_key_table(n_enc), dtype))
        doc = json.loads((root / "config.json").read_text())
        doc["query_encoders"] = True
        atomic_write(root / "config.json", lambda f: f.write(json.dumps(doc, indent=2)), "w")
    return root


__all__ = ["train_query_encoders", "export_query_encoders", "build_query_encoders",
           "make_query_inputs", "query_step"]
