"""Notebook 07's measures and sweep (dfd_kit.measures, dfd_kit.tradeoff, plotting's 07 section)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from dfd_kit import measures  # noqa: E402
from dfd_kit.colab import CELL_ID  # noqa: E402
from dfd_kit.config import COMPONENTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "07_the_tradeoff_measured.ipynb"


def line_image(*segments, size=256, width=2) -> np.ndarray:
    """bool (size, size): straight lines ((x0, y0, x1, y1), ...) on empty paper."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for seg in segments:
        draw.line(seg, fill=255, width=width)
    return np.asarray(img) > 0


# ------------------------------------------------------------------ faithfulness

def test_chamfer_distance_is_zero_on_identical_lines_and_symmetric():
    a = line_image((40, 60, 200, 60), (128, 20, 128, 230))
    b = line_image((40, 64, 200, 64), (60, 200, 190, 180))
    assert measures.chamfer_distance(a, a) == 0.0
    assert measures.chamfer_distance(a, b) == measures.chamfer_distance(b, a) > 0


def test_chamfer_distance_grows_with_the_offset_up_to_the_cap():
    base = line_image((30, 100, 220, 100), width=1)
    shifted = [measures.chamfer_distance(base, line_image((30, 100 + d, 220, 100 + d), width=1))
               for d in (1, 3, 6, 20)]
    assert shifted[0] < shifted[1] < shifted[2] < shifted[3] == measures.STROKE_DISTANCE_CAP
    assert shifted[1] == pytest.approx(3.0)                 # a parallel line 3 px away: 3 px both ways
    empty = np.zeros_like(base)
    assert measures.chamfer_distance(base, empty) == measures.STROKE_DISTANCE_CAP
    assert measures.chamfer_distance(empty, empty) == 0.0


def test_chamfer_distance_in_a_box_counts_only_the_lines_inside_it():
    a = line_image((20, 40, 100, 40), (150, 200, 240, 200))
    b = line_image((20, 40, 100, 40), (150, 180, 240, 180))   # the second line moved 20 px
    assert measures.chamfer_distance(a, b, box=(0, 0, 128)) == 0.0
    assert measures.chamfer_distance(a, b, box=(128, 128, 128)) == measures.STROKE_DISTANCE_CAP
    with pytest.raises(ValueError, match="different shapes"):
        measures.chamfer_distance(a, a[:100])


@pytest.fixture(scope="module")
def hard():
    from dfd_kit.config import PHOTO_LAYOUT
    from dfd_kit.examples import hard_examples

    return [e for e in hard_examples(PHOTO_LAYOUT) if e.photo is not None]


def test_line_distance_ranks_a_sketchs_own_face_above_every_other_face(hard):
    # the rough sketches were drawn from these photos: each is closest to its own
    for e in hard:
        own = measures.line_distance(e.sketch, e.photo)
        others = [measures.line_distance(e.sketch, o.photo) for o in hard if o is not e]
        assert own < min(others), (e.name, own, others)


def test_line_distance_ranks_the_face_generated_from_the_sketch_above_one_from_another_sketch():
    import dfd_kit
    from dfd_kit.tradeoff import tradeoff_sketches

    model = dfd_kit.load("photo", shadows=False)
    sk = {e.name: e for e in tradeoff_sketches(model.layout)}
    pairs = [("hand1_male", "hand2_female"), ("hand2_female", "hand1_male")]
    # at w = 0, where the face should follow its own strokes (between the ends the photo model's
    # faces of these two drawings lie about as far from either's lines)
    faces = {n: model.generate(sk[n].sketch, {c: 0.0 for c in dfd_kit.COMPONENTS}, sex=sk[n].sex, shadows=False,
                               keep_features=False).image
             for n in {n for p in pairs for n in p}}
    for mine, other in pairs:
        assert measures.line_distance(sk[mine].sketch, faces[mine]) < measures.line_distance(sk[mine].sketch,
                                                                                              faces[other])


def test_the_model_cards_measures_still_import_from_quality():
    from dfd_kit.training import quality

    assert quality.stroke_distance is measures.stroke_distance
    assert quality.spectral_distance is measures.spectral_distance
    assert quality.STROKE_DISTANCE_CAP == measures.STROKE_DISTANCE_CAP


# ------------------------------------------------------------------ realism

def test_bank_distance_is_zero_on_a_bank_row_and_grows_off_the_bank():
    bank = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    spacing = measures.bank_spacing(bank)
    assert spacing > 0
    assert measures.bank_distance(bank[7], bank, spacing) == pytest.approx(0.0, abs=1e-6)
    direction = np.random.default_rng(1).standard_normal(16)
    direction /= np.linalg.norm(direction)
    far = [measures.bank_distance(bank[7] + t * spacing * direction, bank, spacing) for t in (0.2, 1, 3, 10)]
    assert all(a < b for a, b in zip(far, far[1:]))
    assert far[-1] > 5                                   # ten spacings out: far off the manifold
    assert far[0] == pytest.approx(0.2, rel=0.05)       # close in: the distance to the row itself


def test_bank_spacing_is_the_median_distance_to_the_nearest_other_row():
    bank = np.arange(10, dtype=np.float32)[:, None] * np.array([[3.0, 4.0]], np.float32)   # rows 5 apart
    assert measures.bank_spacing(bank) == pytest.approx(5.0)
    assert measures.bank_spacing(np.repeat(bank, 2, axis=0)) == pytest.approx(5.0)   # a copy is no neighbour


def test_spectral_distance_of_a_face_to_itself_is_zero_and_grows_with_blur(hard):
    from PIL import ImageFilter

    photo = hard[0].photo
    ref = measures.mean_spectrum([photo])
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(3)))
    assert measures.ring_spectrum_distance(measures.log_spectrum(photo), ref) == 0.0
    assert measures.ring_spectrum_distance(measures.log_spectrum(blurred), ref) > 1.0


# ------------------------------------------------------------------ the sweep

@pytest.fixture(scope="module")
def sweep():
    import dfd_kit
    from dfd_kit import tradeoff as dt

    model = dfd_kit.load("cartoon", shadows=False)
    sketches = [e for e in dt.tradeoff_sketches(model.layout) if e.name in ("rough4_male", "hand1_male")]
    return dt.measure_tradeoff(model, sketches, weights=(1.0, 0.0), n_references=4)


def test_the_sweep_measures_every_sketch_group_and_weight(sweep):
    from dfd_kit.tradeoff import ALL

    assert sweep.names == ["rough4_male", "hand1_male"] and sweep.sexes == ["male", "male"]
    assert list(sweep.weights) == [0.0, 1.0]                               # sorted
    assert sweep.groups == (ALL,) + COMPONENTS
    for a in (sweep.faithfulness, sweep.latent, sweep.spectral):
        assert a.shape == (2, 6, 2) and np.isfinite(a).all() and (a >= 0).all()
    assert sweep.faces.shape == (2, 2, 256, 256, 3) and sweep.faces.dtype == np.uint8
    assert list(sweep.clean) == [False, True]
    # w = 1 everywhere is one face, whichever group's sweep reached it
    g = {name: i for i, name in enumerate(sweep.groups)}
    assert np.allclose(sweep.faithfulness[:, g[ALL], -1], sweep.faithfulness[:, g["remainder"], -1])
    # all at once, the latent measure is the mean of the components' own
    assert np.allclose(sweep.latent[:, 0], sweep.latent[:, 1:].mean(1))
    # projection pulls every component towards the bank
    assert (sweep.latent[:, :, -1] < sweep.latent[:, :, 0]).all()
    assert sweep.reference_spread[ALL] > 0
    assert "freehand" in sweep.summary() and "clean" in sweep.summary()
    with pytest.raises(KeyError, match="no sketch"):
        sweep.index("nobody")


def test_the_sweep_refuses_weights_outside_0_to_1_and_no_sketches(demo_model):
    from dfd_kit import tradeoff as dt

    sketches = dt.tradeoff_sketches(demo_model.layout, small=True)
    with pytest.raises(ValueError, match="weights"):
        dt.measure_tradeoff(demo_model, sketches, weights=(0.0, 1.5))
    with pytest.raises(ValueError, match="no sketches"):
        dt.measure_tradeoff(demo_model, [])


def test_the_tradeoff_figure_labels_its_axes_and_marks_the_default(sweep):
    from dfd_kit import plotting as dp

    for fig, n_lines in ((dp.plot_tradeoff(sweep), 2), (dp.plot_tradeoff(sweep, "rough4_male"), 6)):
        axes = fig.axes
        assert len(axes) == 2
        for ax in axes:
            assert "faithful" in ax.get_xlabel() and "real" in ax.get_ylabel()
            stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
            assert len(stars) == n_lines                           # one default per line
        legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert "w = 1 (full projection)" in legend and "w = 0 (the drawing)" in legend
    fig = dp.plot_tradeoff(sweep)
    stars = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"]
    assert [float(ln.get_xdata()[0]) for ln in stars] == pytest.approx(list(sweep.faithfulness[:, 0, -1]))
    assert [float(ln.get_ydata()[0]) for ln in stars] == pytest.approx(list(sweep.latent[:, 0, -1]))


def test_the_faces_figure_shows_the_sketch_and_a_face_and_an_overlay_per_weight(sweep):
    from dfd_kit import plotting as dp

    fig = dp.plot_tradeoff_faces(sweep, "hand1_male")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 2 * (1 + len(sweep.weights))
    assert sweep.blend_weight == 1.0 and "w = 1 (default)" in titles and "w = 0" in titles
    # a model whose default is another weight of the sweep has that one marked instead
    other = [ax.get_title() for ax in dp.plot_tradeoff_faces(dataclasses.replace(sweep, blend_weight=0.0),
                                                              "hand1_male").axes]
    assert other.count("w = 0 (default)") == 1 and "w = 1 (default)" not in other
    assert sum(t.startswith("lines ") and " px" in t for t in titles) == len(sweep.weights)


# ------------------------------------------------------------------ the notebook

def test_notebook_07_is_committed_clean_and_shaped_like_a_lesson():
    nb = json.loads(NOTEBOOK.read_text())
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "clear the outputs before committing"
    code = [c for c in code if c.get("id") != CELL_ID]   # the Colab setup cell (tests/test_colab.py) comes first
    assert cells[0]["cell_type"] == "markdown" and "What you will" in "".join(cells[0]["source"])
    assert "## Summary" in "".join(cells[-1]["source"]) and "## Try it" in "".join(cells[-1]["source"])
    first = "".join(code[0]["source"])
    # both models the kit ships: the default one (honouring $DFD_PARAMS) and the cartoon one
    assert first.index("import dfd_kit") < first.index("dfd_kit.load(shadows=False)") < first.index(
        'dfd_kit.load("cartoon"')
    # every widget cell is followed by a static picture of what it does
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and "interact(" in "".join(c["source"]):
            after = [d for d in cells[i + 1:] if d["cell_type"] == "code"][0]
            assert "dp.plot_" in "".join(after["source"])
