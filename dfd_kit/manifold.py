"""Stage 3 -- Manifold Projection.

A freehand component's latent is replaced by a locally-linear combination of its K
nearest neighbours among the latents of real samples (the per-sex feature bank), then
blended with the raw latent by the component's weight w:

    projected = sum_i a_i v_i   (sum_i a_i = 1)
    vector    = w * projected + (1 - w) * latent

w = 1 trusts the data (a plausible face), w = 0 trusts the drawing.

The search for the neighbours starts from the latent itself, as in the paper. A kit model
may add *query encoders* (one per component; :mod:`dfd_kit.training.query`): trained to
map a rough drawing of a part to the latent of its clean drawing, they say where to search,
and the neighbours and their weights come from that query. The blend still starts from the
drawing's own latent, so w = 0 keeps every stroke.

Everything here is numpy; the arithmetic (float32 differences and squares, double sums,
float64 solves) follows the official code so that recorded outputs are reproduced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import ConfigError
from .official_order import nth_element, sort_keys

ANCHORS = ("nearest", "official")

# The weights are fitted with the extra row [10, ..., 10 | 0], which adds
# 100 * (sum of the other weights)^2 = 100 * (1 - a_0)^2 to the residual: a strong pull
# of the FIRST neighbour's weight towards 1. So which neighbour comes first matters.
_ANCHOR_PENALTY_ROW = 10.0


def official_distances(latent: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Squared L2 distances (N,) float32, computed as the official kernel does: difference
    and square in float32, summed in order in float64, stored as float32."""
    diff = np.asarray(bank, np.float32) - np.asarray(latent, np.float32).reshape(1, -1)
    sq = (diff * diff).astype(np.float64)
    # cumsum adds strictly left to right, like the kernel's loop (np.sum pairs terms up).
    return np.cumsum(sq, axis=1)[:, -1].astype(np.float32)


def nearest_neighbours(latent: np.ndarray, bank: np.ndarray, k: int, anchor: str = "nearest"):
    """K nearest bank rows -> (indices int32 (K,), distances float32 (K,)).

    ``anchor="nearest"``: sorted by (distance, index), so the anchor -- the neighbour the
    weights favour -- is the true nearest. ``anchor="official"``: the order the official
    kernel returns (``std::nth_element``'s), whose first entry is usually *not* the
    nearest; use it to reproduce official outputs.
    """
    if anchor not in ANCHORS:
        raise ConfigError(f"anchor must be one of {ANCHORS}, not {anchor!r}")
    n = len(bank)
    if not 2 <= k <= n:
        raise ConfigError(f"K must be between 2 and the bank size {n}, not {k}")
    dist = official_distances(latent, bank)
    if anchor == "nearest":
        idx = np.lexsort((np.arange(n), dist))[:k]
    else:
        keys = nth_element(sort_keys(dist), k)
        idx = np.array([key & 0xFFFFFFFF for key in keys[:k]], dtype=np.int64)
    return idx.astype(np.int32), dist[idx]


def locally_linear_weights(latent: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Weights a (K,) float64, summing to 1, that reconstruct ``latent`` from the rows of
    ``neighbours`` (K, D): least squares on the differences to the first (anchor) row, with
    the anchor penalty row. Solved via the normal equations in float64, as officially."""
    v = np.asarray(neighbours, np.float32)
    g = np.asarray(latent, np.float32).reshape(-1)
    m = np.empty((v.shape[1] + 1, len(v) - 1), np.float64)
    m[:-1] = (v[1:] - v[0]).T
    m[-1] = _ANCHOR_PENALTY_ROW
    r = np.zeros(v.shape[1] + 1, np.float64)
    r[:-1] = g - v[0]
    try:
        x = np.linalg.solve(m.T @ m, m.T @ r)
    except np.linalg.LinAlgError:
        x = None
    if x is None or not np.all(np.isfinite(x)):
        # Duplicate (or collinear) neighbours make the normal equations singular, e.g. a bank
        # built from repeated sketches; the minimum-norm least-squares solution is finite and
        # still sums to 1 with the anchor (a duplicate of the anchor can take a negative
        # weight that frees the others from the anchor penalty).
        x = np.linalg.lstsq(m, r, rcond=None)[0]
    return np.concatenate([[1.0 - x.sum()], x])


def blend(latent: np.ndarray, projected: np.ndarray, weight: float) -> np.ndarray:
    """float32 w * projected + (1 - w) * latent, computed in float64."""
    return (projected * weight + (1.0 - weight) * np.asarray(latent, np.float64)).astype(np.float32)


@dataclass
class Projection:
    """Manifold projection of one component latent."""
    neighbours: np.ndarray   # int32 (K,) bank rows, anchor first
    distances: np.ndarray    # float32 (K,) squared distances
    weights: np.ndarray      # float64 (K,) locally-linear weights, sum 1
    projected: np.ndarray    # float32 (D,) sum_i weights_i * bank[neighbours_i]
    vector: np.ndarray       # float32 (D,) blended latent that the feature decoder receives


def project_to_manifold(latent: np.ndarray, bank: np.ndarray, k: int, weight: float,
                        anchor: str = "nearest", query: Optional[np.ndarray] = None) -> Projection:
    """Project a latent (D,) onto the bank's manifold and blend by ``weight`` in [0, 1].
    ``query``: where the search starts and what the weights are fitted to (a query
    encoder's output for the same crop); default the latent itself, as in the paper."""
    if not (0.0 <= float(weight) <= 1.0):
        raise ConfigError(f"component weight must be in [0, 1], not {weight}")
    query = latent if query is None else query
    idx, dist = nearest_neighbours(query, bank, k, anchor)
    rows = np.asarray(bank[idx], np.float32)
    w = locally_linear_weights(query, rows)
    projected64 = w @ rows.astype(np.float64)
    return Projection(idx, dist, w, projected64.astype(np.float32), blend(latent, projected64, weight))


# --- shadow guidance (display only) ---

SHADOW_WEIGHT_CAP = 0.5  # the official GUI caps each neighbour's ink at half strength


def shadow_weights(weights: np.ndarray, normalise: bool = False) -> np.ndarray:
    """Per-neighbour ink strength: non-positive weights drop out, the rest are capped at
    0.5. The official GUI stops there (``normalise=False``, the default, which the parity
    tests reproduce); but the positive locally-linear weights often sum to well over 1 (at
    K = 30 the mouth's capped weights sum to about 2.3 on the photo model), so the summed
    ink saturates into a dark, blocky patch instead of a faint guide. ``normalise=True``
    scales the capped weights down to sum 1 when they sum to more (a sum below 1 is kept:
    a lone neighbour still draws at half strength). The drawing pad uses it."""
    w = np.asarray(weights, np.float64)
    w = np.where(w > 0, np.minimum(w, SHADOW_WEIGHT_CAP), 0.0)
    total = w.sum()
    if normalise and total > 1.0:
        w = w / total
    return w


def blend_shadow(decoded: np.ndarray, weights: np.ndarray, normalise: bool = False) -> np.ndarray:
    """Decoded neighbour sketches (K, S, S) in about [-1, 1] (dark = -1) and their weights
    -> uint8 (S, S) shadow: white paper darkened by each neighbour's ink
    (``normalise``: see :func:`shadow_weights`)."""
    w = shadow_weights(weights, normalise)
    return shadow_from_sum(np.tensordot(w, decoded.astype(np.float64), axes=1), float(w.sum()))


def shadow_from_sum(weighted_sum: np.ndarray, total_weight: float) -> np.ndarray:
    """The same shadow from sum_i w_i * decoded_i and sum_i w_i (w: :func:`shadow_weights`).
    Each neighbour's ink is (1 - decoded) / 2 (0 = paper, 1 = full ink), so the summed ink
    is (total_weight - weighted_sum) / 2: the blend needs only the weighted sum of the
    decoded sketches, which :meth:`~dfd_kit.embedding.LatentDecoder.weighted_sum` computes
    without decoding each neighbour in full."""
    acc = (total_weight - np.asarray(weighted_sum, np.float64)) / 2.0
    return np.clip((1.0 - acc) * 255.0, 0, 255).astype(np.uint8)
