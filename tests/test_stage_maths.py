"""The fast tier (``make check``): the stage maths as small property tests on random
inputs, seeded so a failure repeats. No weights, no networks: numpy only, seconds in all.

Each property is what the paper's stage promises whatever the input: the neighbour order
the official kernel leaves, weights that sum to one, w = 0 returning the drawing's latent,
crops that are their boxes, a remainder with the boxes painted out, and the components a
change touches."""
from __future__ import annotations

import numpy as np
import pytest

from dfd_kit.components import components_touched, crop_components
from dfd_kit.config import COMPONENTS, DEMO, OFFICIAL_LAYOUT, PARTS
from dfd_kit.errors import ConfigError
from dfd_kit.manifold import (blend, locally_linear_weights, nearest_neighbours, project_to_manifold,
                              shadow_weights)
from dfd_kit.official_order import nth_element

pytestmark = pytest.mark.fast
SEEDS = range(25)


@pytest.mark.parametrize("seed", SEEDS)
def test_nth_element_leaves_a_partition_like_np_partition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    # ties too: the official keys are (distance, index) packed, but the order must hold for any ints
    a = rng.integers(0, max(2, n // 3), size=n).tolist()
    nth = int(rng.integers(0, n))
    out = nth_element(list(a), nth)
    assert sorted(out) == sorted(a), "a permutation of the input"
    assert out[nth] == np.partition(np.array(a), nth)[nth]
    assert max(out[:nth], default=out[nth]) <= out[nth] <= min(out[nth + 1:], default=out[nth])


def random_rows_and_latent(rng, rows: int, dims: int):
    """float32 (rows, dims) latents (a bank, or K neighbours) and one latent (dims,) to project."""
    return rng.normal(size=(rows, dims)).astype(np.float32), rng.normal(size=dims).astype(np.float32)


@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_neighbours_are_the_k_smallest_distances_nearest_first(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 300)), int(rng.integers(1, 64))
    bank, z = random_rows_and_latent(rng, n, d)
    k = int(rng.integers(2, n + 1))
    idx, dist = nearest_neighbours(z, bank, k)
    full = ((bank.astype(np.float64) - z) ** 2).sum(axis=1)
    assert len(set(idx.tolist())) == k
    np.testing.assert_allclose(np.sort(dist), np.sort(full)[:k], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(dist) >= 0), "nearest first"
    off, _ = nearest_neighbours(z, bank, k, anchor="official")
    assert set(off.tolist()) == set(idx.tolist()), "the official order is another order of the same rows"


@pytest.mark.parametrize("seed", SEEDS)
def test_locally_linear_weights_sum_to_one(seed):
    rng = np.random.default_rng(seed)
    k, d = int(rng.integers(2, 20)), int(rng.integers(2, 128))
    neighbours, z = random_rows_and_latent(rng, k, d)
    w = locally_linear_weights(z, neighbours)
    assert w.shape == (k,) and abs(w.sum() - 1.0) < 1e-9


def test_a_latent_on_its_anchor_gets_all_the_weight():
    rng = np.random.default_rng(0)
    neighbours = rng.normal(size=(8, 32)).astype(np.float32)
    w = locally_linear_weights(neighbours[0], neighbours)
    np.testing.assert_allclose(w, np.eye(8)[0], atol=1e-6)


def test_duplicate_neighbours_still_give_finite_weights_summing_to_one():
    row = np.arange(16, dtype=np.float32)
    rows = np.stack([row, row, row + 2])   # a bank built from repeated sketches
    w = locally_linear_weights(row + 1, rows)
    assert np.all(np.isfinite(w)) and abs(w.sum() - 1) < 1e-9
    # and the fit is no worse than without the duplicate
    single = locally_linear_weights(row + 1, rows[[0, 2]])
    assert np.abs(w @ rows - (row + 1)).max() <= np.abs(single @ rows[[0, 2]] - (row + 1)).max() + 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_w0_returns_the_drawing_w1_the_projection_and_between_a_straight_line(seed):
    rng = np.random.default_rng(seed)
    bank = rng.normal(size=(int(rng.integers(10, 100)), 24)).astype(np.float32)
    z = rng.normal(size=24).astype(np.float32)
    k = int(rng.integers(2, 10))
    p0, p1 = project_to_manifold(z, bank, k, 0.0), project_to_manifold(z, bank, k, 1.0)
    np.testing.assert_array_equal(p0.vector, z)
    np.testing.assert_array_equal(p1.vector, p1.projected)
    np.testing.assert_allclose(p1.projected, p1.weights @ bank[p1.neighbours].astype(np.float64), rtol=1e-5, atol=1e-5)
    w = float(rng.uniform())
    np.testing.assert_allclose(project_to_manifold(z, bank, k, w).vector, blend(z, p1.projected, w), atol=1e-6)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        project_to_manifold(z, bank, k, 1.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_shadow_weights_are_capped_and_normalised_to_at_most_one(seed):
    w = np.random.default_rng(seed).normal(size=12)
    official, pad = shadow_weights(w), shadow_weights(w, normalise=True)
    assert np.all(official >= 0) and np.all(official <= 0.5)
    assert np.all((official > 0) == (w > 0)), "only positive weights draw ink"
    assert pad.sum() <= 1.0 + 1e-12 and np.all((pad > 0) == (w > 0))


@pytest.mark.parametrize("layout", [DEMO.layout, OFFICIAL_LAYOUT], ids=["demo", "official"])
@pytest.mark.parametrize("seed", range(5))
def test_crops_are_their_boxes_and_the_remainder_has_them_painted_out(layout, seed):
    sketch = np.random.default_rng(seed).integers(0, 256, size=(layout.size,) * 2).astype(np.uint8)
    before = sketch.copy()
    crops = crop_components(sketch, layout)
    np.testing.assert_array_equal(sketch, before)   # the caller's sketch is left alone
    assert list(crops) == list(COMPONENTS)
    inside = np.zeros(sketch.shape, bool)
    for c in PARTS:
        b = layout.box(c)
        np.testing.assert_array_equal(crops[c], sketch[b.y:b.y + b.size, b.x:b.x + b.size])
        inside[b.y:b.y + b.size, b.x:b.x + b.size] = True
    assert np.all(crops["remainder"][inside] == 255)
    np.testing.assert_array_equal(crops["remainder"][~inside], sketch[~inside])


@pytest.mark.parametrize("seed", range(10))
def test_a_change_touches_exactly_the_components_whose_crops_differ(seed):
    layout = DEMO.layout
    rng = np.random.default_rng(seed)
    a = np.full((layout.size,) * 2, 255, np.uint8)
    b = a.copy()
    y, x = rng.integers(0, layout.size, size=2)
    b[y, x] = 0   # one pixel
    want = {c for c in COMPONENTS
            if not np.array_equal(crop_components(a, layout)[c], crop_components(b, layout)[c])}
    assert components_touched(a, b, layout) == want and len(want) >= 1
    assert components_touched(a, a, layout) == set()
