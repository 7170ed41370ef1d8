"""Parity with the official DeepFaceDrawing inference, stage by stage.

The fixture (tests/fixtures/official_parity, see its README) records what the official
code computed on the stand-in weights for three cases. Tolerances are the fixture
README's §6.2 "recommended" column. Each stage is tested twice: inside one end-to-end
generation (anchor="official"), and on its own from the fixture's EXPECTED inputs to that
stage, so that a failure points at one stage.
"""
from __future__ import annotations

import numpy as np
import pytest

from dfd_kit.config import COMPONENTS
from dfd_kit.manifold import (blend, blend_shadow, locally_linear_weights, nearest_neighbours,
                              official_distances, project_to_manifold, Projection)

from conftest import CASE_IDS, FIXTURE, NPZ_TAG, SEX, case_by_id, case_weights, load_expected

pytestmark = pytest.mark.slow

K = 15
cases = pytest.mark.parametrize("case_id", CASE_IDS, ids=[f"case{i}" for i in CASE_IDS])
components = pytest.mark.parametrize("component", COMPONENTS)


# --------------------------------------------------------------------------- tolerance helpers

def assert_close(actual, expected, atol, rtol=0.0, what=""):
    """Element-wise |a - e| <= atol + rtol * |e| (the fixture's float rule)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    err = np.abs(a - e)
    bound = atol + rtol * np.abs(e)
    bad = err > bound
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} values off; max |diff| {err.max():.3g} "
                           f"(atol {atol}, rtol {rtol})")


def assert_pixels(actual, expected, max_levels, max_fraction, what=""):
    """uint8 images: no pixel more than ``max_levels`` off, at most ``max_fraction`` differ."""
    a, e = np.asarray(actual, np.int64), np.asarray(expected, np.int64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    d = np.abs(a - e)
    assert d.max() <= max_levels, f"{what}: a pixel is {d.max()} levels off (allowed {max_levels})"
    assert (d > 0).mean() <= max_fraction, \
        f"{what}: {(d > 0).mean():.2%} of pixels differ (allowed {max_fraction:.0%})"


def sorted_by_distance(indices, distances):
    """Indices ordered by (distance, index), as the fixture's knn_idx_sorted."""
    indices, distances = np.asarray(indices), np.asarray(distances)
    return indices[np.lexsort((indices, distances))]


def channel_stats(maps):
    """(C, H, W) -> per-channel mean and std (ddof 0) in float64."""
    m = np.asarray(maps, np.float64)
    return m.mean(axis=(1, 2)), m.std(axis=(1, 2))


def pool4(face_map):
    """(C, H, W) -> 4x4 block means in float32, stored as float16 (the fixture's combined_pool4)."""
    c, h, w = face_map.shape
    blocks = np.asarray(face_map, np.float32).reshape(c, h // 4, 4, w // 4, 4)
    return blocks.mean(axis=(2, 4), dtype=np.float32).astype(np.float16)


WINDOW = (slice(None), slice(320, 384), slice(160, 224))   # rows 320:384, cols 160:224


def bank_of(model, case_id, component):
    return model.banks[SEX[case_by_id(case_id)["sex"]]][component]


# --------------------------------------------------------------------------- end to end

@cases
@components
def test_crops_are_exact(parity_run, case_id, component):
    r = parity_run(case_id)
    np.testing.assert_array_equal(r.result.crops[component], r.expected[f"crop_{NPZ_TAG[component]}"])


@cases
@components
def test_latents_match(parity_run, case_id, component):
    r = parity_run(case_id)
    assert_close(r.result.latents[component], r.expected[f"latent_{NPZ_TAG[component]}"][0], 5e-4,
                 what=f"latent {component}")


@cases
@components
def test_neighbours_in_official_order(parity_run, case_id, component):
    r = parity_run(case_id)
    p = r.result.projections[component]
    np.testing.assert_array_equal(p.neighbours, r.expected[f"knn_idx_official_{NPZ_TAG[component]}"])


@cases
@components
def test_neighbours_in_sorted_order(parity_run, case_id, component):
    r = parity_run(case_id)
    p = r.result.projections[component]
    np.testing.assert_array_equal(sorted_by_distance(p.neighbours, p.distances),
                                  r.expected[f"knn_idx_sorted_{NPZ_TAG[component]}"])


@cases
@components
def test_neighbour_distances(parity_run, case_id, component):
    r = parity_run(case_id)
    t = NPZ_TAG[component]
    p = r.result.projections[component]
    top = dict(zip(r.expected[f"knn_top20_idx_{t}"].tolist(), r.expected[f"knn_top20_dist_{t}"]))
    assert_close(p.distances, [top[i] for i in p.neighbours.tolist()], 0.0, 2e-5, what=f"distances {component}")


@cases
@components
def test_locally_linear_weights(parity_run, case_id, component):
    r = parity_run(case_id)
    w = r.result.projections[component].weights
    assert_close(w, r.expected[f"lle_xx_{NPZ_TAG[component]}"], 2e-5, what=f"lle weights {component}")
    assert abs(w.sum() - 1.0) < 1e-9


@cases
@components
def test_blended_vectors(parity_run, case_id, component):
    r = parity_run(case_id)
    assert_close(r.result.projections[component].vector, r.expected[f"vec_{NPZ_TAG[component]}"][0], 5e-4,
                 what=f"vector {component}")


@cases
@components
def test_raw_shadows(parity_run, case_id, component):
    r = parity_run(case_id)
    assert_pixels(r.result.shadows[component], r.expected[f"shadow_raw_{NPZ_TAG[component]}"][..., 0],
                  2, 0.01, what=f"shadow {component}")


@cases
@components
def test_component_feature_map_statistics(parity_run, case_id, component):
    r = parity_run(case_id)
    t = NPZ_TAG[component]
    size = r.result.crops[component].shape[0]
    assert r.result.feature_maps[component].shape == (32, size, size)   # before pasting
    mean, std = channel_stats(r.result.feature_maps[component])
    assert_close(mean, r.expected[f"feat_{t}_chan_mean"], 1e-4, what=f"feature mean {component}")
    assert_close(std, r.expected[f"feat_{t}_chan_std"], 1e-4, what=f"feature std {component}")


@cases
def test_pasted_feature_map(parity_run, case_id):
    r = parity_run(case_id)
    check_face_map(r.result.feature_map, r.expected)


@cases
def test_generator_output(parity_run, case_id):
    r = parity_run(case_id)
    assert_close(r.result.generator_output[WINDOW], r.expected["netG_out_crop_r320_c160"], 2e-3,
                 what="generator output")


@cases
def test_generated_image(parity_run, case_id):
    r = parity_run(case_id)
    assert r.result.image.dtype == np.uint8
    assert_pixels(r.result.image, r.expected["generated"], 2, 0.05, what="generated image")


@pytest.mark.parametrize("case_id", [1, 2], ids=["gray-array", "rgb-array"])
def test_generate_leaves_the_callers_sketch_untouched(parity_run, case_id):
    # The official whole-face crop painted the part boxes white in the caller's array.
    r = parity_run(case_id)
    assert int(r.expected["sketch_mutated_pixels"]) > 0          # the official bug, recorded
    np.testing.assert_array_equal(r.sketch_after, r.sketch_before)


def test_zero_weight_gives_the_latent_exactly(parity_run):
    r = parity_run(1)   # every w = 0
    assert set(case_weights(r.case).values()) == {0.0}
    for c in COMPONENTS:
        np.testing.assert_array_equal(r.result.projections[c].vector, r.result.latents[c])


# --------------------------------------------------------------------------- stages on their own

@cases
@components
def test_knn_from_expected_latent_is_exact(standin_model, case_id, component):
    e, t = load_expected(case_id), NPZ_TAG[component]
    bank = bank_of(standin_model, case_id, component)
    assert len(bank) == int(e[f"bank_rows_{t}"])
    latent = e[f"latent_{t}"][0]
    idx, _ = nearest_neighbours(latent, bank, K, anchor="official")
    np.testing.assert_array_equal(idx, e[f"knn_idx_official_{t}"])
    idx, _ = nearest_neighbours(latent, bank, K, anchor="nearest")
    np.testing.assert_array_equal(idx, e[f"knn_idx_sorted_{t}"])


@cases
@components
def test_top20_distances_from_expected_latent(standin_model, case_id, component):
    e, t = load_expected(case_id), NPZ_TAG[component]
    dist = official_distances(e[f"latent_{t}"][0], bank_of(standin_model, case_id, component))
    top20 = np.lexsort((np.arange(len(dist)), dist))[:20]
    np.testing.assert_array_equal(top20, e[f"knn_top20_idx_{t}"])
    assert_close(dist[top20], e[f"knn_top20_dist_{t}"], 0.0, 2e-5, what="top-20 distances")


@cases
@components
def test_lle_weights_from_expected_latent_and_neighbours(standin_model, case_id, component):
    e, t = load_expected(case_id), NPZ_TAG[component]
    rows = bank_of(standin_model, case_id, component)[e[f"knn_idx_official_{t}"]]
    w = locally_linear_weights(e[f"latent_{t}"][0], rows)
    assert_close(w, e[f"lle_xx_{t}"], 2e-5, what=f"lle weights {component}")


@cases
@components
def test_vector_from_expected_latent_neighbours_and_weights(standin_model, case_id, component):
    e, t = load_expected(case_id), NPZ_TAG[component]
    weight = case_weights(case_by_id(case_id))[component]
    latent = e[f"latent_{t}"][0]
    rows = np.asarray(bank_of(standin_model, case_id, component)[e[f"knn_idx_official_{t}"]], np.float64)
    assert_close(blend(latent, e[f"lle_xx_{t}"] @ rows, weight), e[f"vec_{t}"][0], 5e-4, what="blend")
    # ... and the whole projection stage from the latent alone
    p = project_to_manifold(latent, bank_of(standin_model, case_id, component), K, weight, anchor="official")
    assert_close(p.vector, e[f"vec_{t}"][0], 5e-4, what=f"projected vector {component}")


@cases
@components
def test_feature_decoder_from_expected_vector(staged_synthesis, case_id, component):
    parts, _, _ = staged_synthesis(case_id)
    e, t = load_expected(case_id), NPZ_TAG[component]
    mean, std = channel_stats(parts[component])
    assert_close(mean, e[f"feat_{t}_chan_mean"], 1e-4, what=f"feature mean {component}")
    assert_close(std, e[f"feat_{t}_chan_std"], 1e-4, what=f"feature std {component}")


@cases
def test_pasted_feature_map_from_expected_vectors(staged_synthesis, case_id):
    _, face, _ = staged_synthesis(case_id)
    check_face_map(face, load_expected(case_id))


@cases
def test_generator_from_expected_vectors(staged_synthesis, case_id):
    _, _, out = staged_synthesis(case_id)
    assert_close(out[WINDOW], load_expected(case_id)["netG_out_crop_r320_c160"], 2e-3, what="generator output")


def check_face_map(face, e):
    """The pasted (C, 512, 512) generator input against the fixture's summaries."""
    assert face.shape == (32, 512, 512)
    mean, std = channel_stats(face)
    assert_close(mean, e["combined_chan_mean"], 1e-4, what="combined mean")
    assert_close(std, e["combined_chan_std"], 1e-4, what="combined std")
    assert_close(pool4(face).astype(np.float32), e["combined_pool4"].astype(np.float32), 5e-4, 1e-3,
                 what="combined 4x4 pool")
    assert_close(face[WINDOW], e["combined_crop_r320_c160"], 1e-3, what="combined crop")


# --------------------------------------------------------------------------- shadow blend unit test

@pytest.fixture(scope="module")
def unit_shadow(standin_model):
    u = np.load(FIXTURE / "expected" / "unit_shadow_eye1.npz")
    idx = u["knn_idx_case0_eye1"]
    decoded = standin_model.decode_neighbours("left_eye", standin_model.banks["male"]["left_eye"][idx])
    return u, idx, decoded


@pytest.mark.parametrize("which", ["A", "B"])
def test_shadow_blend_unit(unit_shadow, which):
    u, _, decoded = unit_shadow
    w = u[f"weights_{which}"]
    # the weights exercise the 0.5 cap (0.9, 0.7), exactly 0.5, zeros and negatives (skipped)
    assert (w > 0.5).any() and (w <= 0).any()
    if which == "B":
        assert w[0] < 0   # a negative FIRST weight is skipped like any other
    assert_pixels(blend_shadow(decoded, w), u[f"shadow_{which}"][..., 0], 2, 0.01, what=f"shadow {which}")


@pytest.mark.parametrize("which", ["A", "B"])
def test_model_shadow_skips_non_positive_weights(standin_model, unit_shadow, which):
    """DeepFaceDrawing.shadow decodes only the neighbours with positive weight; same result."""
    u, idx, _ = unit_shadow
    w = u[f"weights_{which}"]
    p = Projection(idx, np.zeros(K, np.float32), w, np.zeros(512, np.float32), np.zeros(512, np.float32))
    assert_pixels(standin_model.shadow("left_eye", p, "male"), u[f"shadow_{which}"][..., 0], 2, 0.01,
                  what=f"shadow {which}")


# --------------------------------------------------------------------------- anchors and weights

@cases
@components
def test_nearest_anchor_sorts_neighbours_nearest_first(standin_model, case_id, component):
    e, t = load_expected(case_id), NPZ_TAG[component]
    p = project_to_manifold(e[f"latent_{t}"][0], bank_of(standin_model, case_id, component), K, 1.0,
                            anchor="nearest")
    np.testing.assert_array_equal(p.neighbours, e[f"knn_idx_sorted_{t}"])
    assert p.neighbours[0] == e[f"knn_top20_idx_{t}"][0]
    assert np.all(np.diff(p.distances) >= 0)
    assert abs(p.weights.sum() - 1.0) < 1e-9


@cases
@components
def test_zero_weight_projection_returns_the_latent(standin_model, case_id, component):
    e, t = load_expected(case_id), NPZ_TAG[component]
    latent = e[f"latent_{t}"][0]
    for anchor in ("official", "nearest"):
        p = project_to_manifold(latent, bank_of(standin_model, case_id, component), K, 0.0, anchor=anchor)
        np.testing.assert_array_equal(p.vector, latent)
