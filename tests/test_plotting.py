"""The figure helpers of dfd_kit.plotting and the example sketches of dfd_kit.examples.

Each helper returns a closed matplotlib Figure with the panels and titles the notebooks
rely on. Most tests use a numpy stand-in for the model (no Jittor, milliseconds); one
runs the model-facing helpers against a real (random) demo model to check the pipeline
API they use.
"""
from __future__ import annotations

import dataclasses
import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

import dfd_kit  # noqa: E402,F401
from dfd_kit import plotting as P  # noqa: E402
from dfd_kit.components import crop_components  # noqa: E402
from dfd_kit.config import COMPONENTS, DEMO, OFFICIAL_LAYOUT, PARTS  # noqa: E402
from dfd_kit.examples import example_names, example_sketch, procedural_sketch, shift_sketch  # noqa: E402
from dfd_kit.manifold import project_to_manifold  # noqa: E402
from dfd_kit.pipeline import GenerationResult  # noqa: E402

LAYOUT = DEMO.layout
D = 8          # latent size of the stand-in model
C = 4          # feature channels of the stand-in model


def titles(fig: Figure):
    return [ax.get_title() for ax in fig.axes]


# ------------------------------------------------------------------ a numpy stand-in model

@dataclasses.dataclass
class FakeResult:
    """The fields of dfd_kit.pipeline.GenerationResult the helpers read and write."""
    sketch: np.ndarray
    crops: dict
    latents: dict
    projections: dict
    part_weights: dict
    sex: str
    k: int
    shadows: dict = dataclasses.field(default_factory=dict)
    shadow: np.ndarray = None
    feature_maps: dict = dataclasses.field(default_factory=dict)
    feature_map: np.ndarray = None
    generator_output: np.ndarray = None
    image: np.ndarray = None

    @property
    def neighbours(self):
        return {c: p.neighbours for c, p in self.projections.items()}

    with_vectors = GenerationResult.with_vectors   # the real method: it only replaces fields


class FakeModel:
    """Same methods as DeepFaceDrawing, made of numpy: latents are crop statistics, the
    decoder paints a latent-dependent gradient, the 'image' encodes the vectors' mean."""

    def __init__(self, rows: int = 12):
        rng = np.random.default_rng(0)
        self.layout = LAYOUT
        self.config = dataclasses.replace(DEMO, k=4)
        self.banks = {s: {c: rng.standard_normal((rows, D)).astype(np.float32) for c in COMPONENTS}
                      for s in P.SEXES}
        self.renders = 0

    def crop(self, sketch):
        return crop_components(sketch, self.layout)

    def encode(self, crops):
        return {c: np.resize(x.astype(np.float32).reshape(-1)[::97] / 255.0, D) for c, x in crops.items()}

    def encode_queries(self, crops):
        return {}   # no query encoders: the search starts from the latent

    def decode_neighbours(self, component, rows):
        s = self.layout.crop_size(component)
        ramp = np.linspace(-1, 1, s)[None, :, None]
        return np.tanh(np.asarray(rows, np.float32)[:, :1, None] * ramp * np.ones((1, 1, s))).astype(np.float32)

    def shadow(self, component, projection, sex):
        s = self.layout.crop_size(component)
        return np.full((s, s), 200, np.uint8)

    def render(self, res, keep_features=True):
        self.renders += 1
        level = np.mean([p.vector.mean() for p in res.projections.values()])
        res.image = np.full((LAYOUT.size, LAYOUT.size, 3), np.uint8(np.clip(128 + 60 * level, 0, 255)))
        if keep_features:
            res.feature_maps = {c: np.random.default_rng(1).random((C, self.layout.crop_size(c), self.layout.crop_size(c)),
                                                                    dtype=np.float32) for c in COMPONENTS}
            res.feature_map = np.random.default_rng(2).random((C, LAYOUT.size, LAYOUT.size), dtype=np.float32)
        return res

    def generate(self, sketch, sex="male", k=None):
        k = k or self.config.k
        crops = self.crop(sketch)
        latents = self.encode(crops)
        proj = {c: project_to_manifold(z, self.banks[sex][c], k, 1.0) for c, z in latents.items()}
        res = FakeResult(sketch, crops, latents, proj, {c: 1.0 for c in COMPONENTS}, sex, k)
        res.shadow = np.full((LAYOUT.size, LAYOUT.size), 220, np.uint8)
        return self.render(res)


@pytest.fixture(scope="module")
def fake():
    return FakeModel()


@pytest.fixture(scope="module")
def sketch():
    return procedural_sketch(LAYOUT, 0)


@pytest.fixture(scope="module")
def result(fake, sketch):
    return fake.generate(sketch)


@pytest.fixture(autouse=True)
def no_pyplot_leftovers():
    yield
    assert plt.get_fignums() == [], "a helper left a figure open in pyplot"


# ------------------------------------------------------------------ basics

def test_to_image_maps_minus_one_to_one_onto_0_255():
    img = P.to_image(np.array([[-1.0, 0.0, 1.0]]))
    assert img.dtype == np.uint8 and img.tolist() == [[0, 127, 255]]


def test_to_image_turns_a_chw_generator_output_into_hwc():
    assert P.to_image(np.zeros((3, 5, 7), np.float32)).shape == (5, 7, 3)


def test_to_image_passes_uint8_through():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert P.to_image(a) is a


def test_show_images_lays_out_a_titled_gallery():
    fig = P.show_images([np.zeros((4, 4), np.uint8)] * 5, ["a", "b", "c", "d", "e"], ncols=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6 and titles(fig)[:5] == ["a", "b", "c", "d", "e"]
    assert not fig.axes[5].axison   # the unused sixth slot is blank


def test_show_images_accepts_a_mapping_of_title_to_image():
    fig = P.show_images({"left": np.zeros((4, 4)), "right": np.ones((4, 4))})
    assert titles(fig) == ["left", "right"]


def test_show_images_draws_sketches_in_gray_on_a_fixed_range():
    fig = P.show_images([np.full((4, 4), 200, np.uint8)])
    im = fig.axes[0].images[0]
    assert im.get_cmap().name == "gray" and im.get_clim() == (0, 255)


def test_show_images_rejects_an_empty_list():
    with pytest.raises(ValueError):
        P.show_images([])


# ------------------------------------------------------------------ 00 pipeline

def test_plot_generation_shows_sketch_shadow_and_face(result):
    fig = P.plot_generation(result)
    assert titles(fig) == ["sketch (normalised)", "shadow guidance", "generated face"]


def test_plot_generation_leaves_out_a_missing_shadow(result):
    fig = P.plot_generation(dataclasses.replace(result, shadow=None))
    assert titles(fig) == ["sketch (normalised)", "generated face"]


def test_plot_results_has_one_labelled_row_per_result(result):
    fig = P.plot_results({"male": result, "female": result}, panels=("sketch", "image"))
    assert len(fig.axes) == 4
    assert [fig.axes[0].get_ylabel(), fig.axes[2].get_ylabel()] == ["male", "female"]


def test_plot_results_in_columns_titles_each_column_with_its_result(result):
    fig = P.plot_results({"A": result, "B": result}, panels=("sketch", "image", "feature_map"), columns=True)
    assert len(fig.axes) == 6 and titles(fig)[:2] == ["A", "B"]


# ------------------------------------------------------------------ 01 components

def test_plot_layout_draws_one_box_per_part_and_the_nose_trim(sketch):
    fig = P.plot_layout(sketch, LAYOUT)
    ax = fig.axes[0]
    assert ax.get_title() == "the component layout"
    assert len(ax.patches) == len(PARTS) + 1          # four boxes + the hatched trim
    assert {t.get_text() for t in ax.texts} == {"left eye", "right eye", "nose", "mouth"}


def test_plot_crops_titles_each_crop_with_name_and_size(sketch):
    fig = P.plot_crops(crop_components(sketch, LAYOUT))
    assert titles(fig) == ["left_eye  64x64", "right_eye  64x64", "nose  96x96", "mouth  96x96",
                           "remainder  256x256"]


def test_plot_crops_stacks_several_sets_with_row_labels(sketch):
    crops = crop_components(sketch, LAYOUT)
    shifted = crop_components(shift_sketch(sketch, 20, 0), LAYOUT)
    fig = P.plot_crops(crops, shifted, labels=["centred", "shifted"])
    assert len(fig.axes) == 10 and fig.axes[5].get_ylabel() == "shifted"


def test_plot_remainder_shows_the_sketch_and_the_painted_out_remainder(sketch):
    fig = P.plot_remainder(sketch, crop_components(sketch, LAYOUT)["remainder"], LAYOUT)
    assert titles(fig) == ["sketch", "remainder: parts painted out"]


# ------------------------------------------------------------------ 02 embedding

def test_reconstruct_returns_one_uint8_image_per_crop_at_crop_size(fake, result):
    rec = P.reconstruct(fake, result.crops)
    assert list(rec) == list(COMPONENTS)
    assert all(rec[c].dtype == np.uint8 and rec[c].shape == result.crops[c].shape for c in COMPONENTS)


def test_plot_reconstructions_puts_inputs_above_reconstructions(fake, result):
    fig = P.plot_reconstructions(result.crops, P.reconstruct(fake, result.crops))
    assert len(fig.axes) == 10
    assert [fig.axes[0].get_ylabel(), fig.axes[5].get_ylabel()] == ["input crop", "encode + decode"]


def test_pca_fit_finds_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) * [10.0, 1.0, 0.1]
    pca = P.pca_fit(x)
    assert abs(abs(pca.axes[0, 0]) - 1) < 1e-2 and pca.explained[0] > 0.95
    assert pca.transform(x).shape == (500, 2)
    np.testing.assert_allclose(pca.transform(x).mean(axis=0), 0, atol=1e-9)


def test_pca_fit_is_deterministic_in_sign():
    x = np.random.default_rng(1).standard_normal((50, 4))
    np.testing.assert_array_equal(P.pca_fit(x).axes, P.pca_fit(x.copy()).axes)
    assert (P.pca_fit(x).axes[np.arange(2), np.abs(P.pca_fit(x).axes).argmax(axis=1)] > 0).all()


def test_plot_bank_pca_has_a_labelled_scatter_per_component(fake, result):
    fig = P.plot_bank_pca(fake.banks, marks={"your sketch": result.latents}, neighbours=result.neighbours)
    assert titles(fig) == list(COMPONENTS)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC 1") and ax.get_ylabel().startswith("PC 2")
    labels = fig.axes[-1].get_legend_handles_labels()[1]
    assert {"male bank", "female bank", "your sketch", "nearest 4"} <= set(labels)


def test_plot_bank_pca_draws_a_sample_of_large_banks_with_the_sexes_mixed():
    rng = np.random.default_rng(3)
    banks = {"male": {c: rng.standard_normal((50, 4)) for c in COMPONENTS},
             "female": {c: rng.standard_normal((30, 4)) + 5 for c in COMPONENTS}}
    fig = P.plot_bank_pca(banks, components=["nose"], max_points=20)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["male bank (20 of 50)", "female bank (20 of 30)"]
    dots = max(fig.axes[0].collections, key=lambda c: len(c.get_offsets()))
    assert len(dots.get_offsets()) == 40
    # mixed order: the female points are not all drawn last
    female = dots.get_facecolors()[:, 0] > 0.5          # tab:orange is red-heavy, tab:blue is not
    assert female.sum() == 20 and not female[-20:].all() and female[:20].any()
    # small banks are drawn whole, under the plain labels
    assert P.plot_bank_pca(banks, components=["nose"]).axes[0].get_legend_handles_labels()[1] == [
        "male bank", "female bank"]


def test_interpolate_latents_runs_from_a_to_b():
    a, b = np.zeros(3), np.ones(3)
    z = P.interpolate_latents(a, b, 5)
    assert z.shape == (5, 3) and z.dtype == np.float32
    np.testing.assert_allclose(z[:, 0], [0, .25, .5, .75, 1])


def test_plot_interpolation_titles_each_step_with_t():
    fig = P.plot_interpolation([np.zeros((8, 8))] * 3)
    assert titles(fig) == ["t = 0.00", "t = 0.50", "t = 1.00"]


# ------------------------------------------------------------------ 03 manifold

def test_plot_neighbours_shows_each_neighbour_with_its_weight_and_a_bar_chart(fake, result):
    p = result.projections["mouth"]
    decoded = fake.decode_neighbours("mouth", fake.banks["male"]["mouth"][p.neighbours])
    fig = P.plot_neighbours(decoded, p, crop=result.crops["mouth"])
    t = titles(fig)
    assert t[0] == "your drawing" and len(fig.axes) == 1 + len(p.neighbours) + 1
    assert all(f"a = {a:+.2f}" in s and "w =" not in s for a, s in zip(p.weights, t[1:]))   # a, not the part weight w
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "weight a" and len(bar.patches) == len(p.neighbours)


def test_projection_views_decode_raw_projected_and_blended(fake, result):
    views = P.projection_views(fake, result.crops["nose"], "nose", k=5, weight=0.25)
    assert list(views) == ["your drawing", "reconstruction (w = 0)", "projected, K = 5 (w = 1)",
                           "blend, w = 0.25", "shadow"]
    assert all(v.shape[:2] == (96, 96) for v in views.values())


def test_plot_projection_is_one_row_of_the_views(fake, result):
    fig = P.plot_projection(fake, result.crops["nose"], "nose", weight=0.5, sex="female")
    assert len(fig.axes) == 5 and fig._suptitle.get_text() == "nose: female bank"


def test_plot_shadow_shows_sketch_shadow_and_overlay(result):
    assert titles(P.plot_shadow(result)) == ["your sketch", "shadow guidance", "sketch over its shadow"]


# ------------------------------------------------------------------ 04 mapping and synthesis

def test_plot_feature_maps_has_a_row_per_component_and_a_column_per_channel(result):
    fig = P.plot_feature_maps(result.feature_maps, channels=3)
    assert len(fig.axes) == 5 * 3
    assert titles(fig)[:3] == ["channel 0", "channel 1", "channel 2"]
    assert fig.axes[3].get_ylabel().startswith("right_eye")


def test_paste_owners_follows_paste_order_and_nose_trim():
    owner = P.paste_owners(LAYOUT)
    idx = {c: COMPONENTS.index(c) for c in COMPONENTS}
    nose, mouth = LAYOUT.box("nose"), LAYOUT.box("mouth")
    assert owner[0, 0] == idx["remainder"]
    # just above the trim the nose wins; just below, where the boxes overlap, the mouth
    x = nose.x + nose.size // 2
    assert owner[nose.y + LAYOUT.nose_rows - 1, x] == idx["nose"]
    assert owner[nose.y + LAYOUT.nose_rows, x] == idx["mouth"]
    le = LAYOUT.box("left_eye")
    assert owner[le.y + le.size - 1, le.x + le.size - 1] == idx["left_eye"]   # eyes are pasted after the nose


def test_paste_owners_works_for_the_official_layout():
    owner = P.paste_owners(OFFICIAL_LAYOUT)
    assert owner.shape == (512, 512) and set(np.unique(owner)) == set(range(5))


def test_plot_paste_shows_ownership_and_a_channel(result):
    fig = P.plot_paste(result.feature_map, LAYOUT, channel=1)
    assert titles(fig) == ["which component fills each pixel", f"face feature map, channel 1 of {C}"]
    assert "62" in fig.axes[0].get_xlabel()


def test_feature_rgb_is_an_image_of_the_map_size():
    rgb = P.feature_rgb(np.random.default_rng(0).random((6, 10, 12)))
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8


def test_feature_rgb_handles_fewer_than_three_channels():
    assert P.feature_rgb(np.random.default_rng(0).random((2, 5, 5))).shape == (5, 5, 3)


def test_plot_synthesis_shows_map_and_output(result):
    t = titles(P.plot_synthesis(result))
    assert t[0] == "sketch" and t[1].startswith("face feature map") and t[2] == "generator output"


def test_swap_components_takes_the_donors_vectors_and_crops(fake, sketch, result):
    donor = fake.generate(procedural_sketch(LAYOUT, 5))
    mixed = P.swap_components(fake, result, donor, ["mouth"])
    np.testing.assert_array_equal(mixed.projections["mouth"].vector, donor.projections["mouth"].vector)
    np.testing.assert_array_equal(mixed.projections["nose"].vector, result.projections["nose"].vector)
    b = LAYOUT.box("left_eye")
    np.testing.assert_array_equal(mixed.sketch[b.y:b.y + b.size, b.x:b.x + b.size], result.crops["left_eye"])
    assert mixed.image is not None and mixed is not result
    assert result.sketch is sketch   # the originals are untouched


def test_swap_components_rejects_unknown_names(fake, result):
    with pytest.raises(ValueError, match="unknown component"):
        P.swap_components(fake, result, result, ["eyes"])


def test_weight_sweep_renders_every_component_weight_pair(fake, result):
    before = fake.renders
    sweep = P.weight_sweep(fake, result, ["nose", "mouth"], [0.0, 1.0])
    assert set(sweep) == {("nose", 0.0), ("nose", 1.0), ("mouth", 0.0), ("mouth", 1.0)}
    assert fake.renders - before == 4


def test_weight_sweep_at_the_results_own_weight_reproduces_its_vector(fake, result):
    # result was projected with w = 1 for every part: sweeping to 1 must give the same image
    sweep = P.weight_sweep(fake, result, ["nose"], [1.0])
    np.testing.assert_array_equal(sweep[("nose", 1.0)], result.image)


def test_plot_weight_sweep_is_a_component_by_weight_grid(fake, result):
    fig = P.plot_weight_sweep(P.weight_sweep(fake, result, ["nose", "mouth"], [0.0, 0.5, 1.0]))
    assert len(fig.axes) == 6 and titles(fig)[:3] == ["w = 0.00", "w = 0.50", "w = 1.00"]
    assert [fig.axes[0].get_ylabel(), fig.axes[3].get_ylabel()] == ["nose", "mouth"]


# ------------------------------------------------------------------ listings

def test_show_source_lists_the_code_that_runs():
    from dfd_kit.manifold import locally_linear_weights, project_to_manifold

    listing = P.show_source(project_to_manifold, locally_linear_weights)
    assert listing.data.startswith("def project_to_manifold(") and "def locally_linear_weights(" in listing.data
    assert "nearest_neighbours(query, bank, k, anchor)" in listing.data   # the body, not only the signature
    assert "project_to_manifold" in listing._repr_html_()   # what the notebook shows


# ------------------------------------------------------------------ 06 training

def test_plot_losses_draws_one_line_per_loss_on_labelled_axes():
    fig = P.plot_losses({"l1": np.linspace(1, .1, 50), "gan": np.linspace(2, 1, 50)}, smooth=5)
    ax = fig.axes[0]
    assert ax.get_legend_handles_labels()[1] == ["l1", "gan"]
    assert len(ax.lines) == 4            # each smoothed curve over its faint raw values
    assert ax.get_xlabel() == "step" and ax.get_ylabel().startswith("loss")
    assert ax.get_yscale() == "log"


def test_plot_losses_uses_a_linear_scale_for_negative_values():
    fig = P.plot_losses({"d": [-1.0, 0.5, 0.2]})
    assert fig.axes[0].get_yscale() == "linear"


def test_plot_losses_reads_a_training_runs_history():
    history = [{"step": i, "total": 1.0 / i, "nose": 0.5 / i, "sec": 0.1} for i in range(1, 21)]
    fig = P.plot_losses(history, keys=["total"], smooth=4)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1] if ax.get_legend() else [ln.get_label() for ln in ax.lines]
    assert "total" in labels and "nose" not in labels and "sec" not in labels
    assert ax.lines[-1].get_xdata()[-1] == 20          # x is the recorded step


def test_plot_losses_history_ignores_step_and_timing_columns():
    fig = P.plot_losses([{"step": 1, "a": 1.0, "b": 2.0, "sec": 3.0}, {"step": 2, "a": .5, "b": 1.0, "sec": 3.0}])
    assert fig.axes[0].get_legend_handles_labels()[1] == ["a", "b"]


def test_plot_dataset_shows_sketch_over_photo_titled_with_id_and_sex(tmp_path):
    from dfd_kit.data import write_samples_csv

    for sub in ("sketch", "photo"):
        (tmp_path / sub).mkdir()
    for sid in ("00000", "00001", "00002"):
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "sketch" / f"{sid}.png")
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "photo" / f"{sid}.png")
    write_samples_csv(tmp_path, [("00000", "male"), ("00001", "female"), ("00002", "male")])
    fig = P.plot_dataset(tmp_path, n=2)
    assert len(fig.axes) == 4 and titles(fig)[:2] == ["00000 (male)", "00001 (female)"]
    assert [fig.axes[0].get_ylabel(), fig.axes[2].get_ylabel()] == ["sketch", "photo"]
    assert fig.axes[0].images[0].get_array().shape == (256, 256)   # resized to the layout


def test_plot_samples_has_a_column_per_key(result):
    fig = P.plot_samples({"sketch": [result.sketch] * 2, "model": [result.image] * 2})
    assert len(fig.axes) == 4 and titles(fig)[:2] == ["sketch", "model"]


# ------------------------------------------------------------------ example sketches

def test_procedural_sketch_is_uint8_dark_on_white_at_layout_size():
    s = procedural_sketch(LAYOUT)
    assert s.shape == (256, 256) and s.dtype == np.uint8
    assert np.median(s) == 255 and s.min() < 50


@pytest.mark.parametrize("layout", [LAYOUT, OFFICIAL_LAYOUT], ids=["demo", "official"])
def test_procedural_sketch_puts_ink_in_every_part_box(layout):
    s = procedural_sketch(layout)
    for name in PARTS:
        b = layout.box(name)
        inner = s[b.y + b.size // 4:b.y + 3 * b.size // 4, b.x + b.size // 4:b.x + 3 * b.size // 4]
        assert (inner < 128).mean() > 0.01, f"no feature drawn in the middle of the {name} box"


def test_procedural_variants_differ_and_repeat():
    assert not np.array_equal(procedural_sketch(LAYOUT, 1), procedural_sketch(LAYOUT, 2))
    np.testing.assert_array_equal(procedural_sketch(LAYOUT, 3), procedural_sketch(LAYOUT, 3))


def test_example_sketch_falls_back_to_procedural_without_files(tmp_path):
    s = example_sketch(0, LAYOUT, folder=tmp_path / "missing")
    np.testing.assert_array_equal(s, procedural_sketch(LAYOUT, 0))
    np.testing.assert_array_equal(example_sketch(0, LAYOUT, procedural=True), procedural_sketch(LAYOUT, 0))


def test_example_sketch_reads_files_by_index_and_name_at_layout_size(tmp_path):
    Image.fromarray(np.full((512, 512), 255, np.uint8)).save(tmp_path / "b_face.png")
    a = np.full((300, 300), 255, np.uint8)
    a[100:110] = 0
    Image.fromarray(a).save(tmp_path / "a_face.png")
    assert example_names(tmp_path) == ["a_face", "b_face"]
    first = example_sketch(0, LAYOUT, folder=tmp_path)
    assert first.shape == (256, 256) and first.min() < 50
    assert example_sketch("b_face", LAYOUT, folder=tmp_path).min() == 255
    np.testing.assert_array_equal(example_sketch(2, LAYOUT, folder=tmp_path), first)   # wraps around


def test_example_sketch_names_the_available_files_when_one_is_missing(tmp_path):
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "only.png")
    with pytest.raises(KeyError, match="only"):
        example_sketch("other", LAYOUT, folder=tmp_path)


def test_shift_sketch_moves_strokes_and_fills_with_paper():
    s = np.full((10, 10), 255, np.uint8)
    s[2, 3] = 0
    moved = shift_sketch(s, dx=4, dy=-2)
    assert moved[0, 7] == 0 and (moved == 0).sum() == 1
    assert shift_sketch(s, dx=10).min() == 255


# ------------------------------------------------------------------ against the real pipeline

def test_helpers_run_on_a_real_demo_model(demo_model, demo_sketch):
    res = demo_model.generate(demo_sketch, k=4)
    assert set(P.reconstruct(demo_model, res.crops)) == set(COMPONENTS)
    assert len(P.projection_views(demo_model, res.crops["mouth"], "mouth", k=4, weight=.5)) == 5
    mixed = P.swap_components(demo_model, res, res, ["left_eye"])
    assert mixed.image.shape == (256, 256, 3) and mixed.feature_map.shape[1:] == (256, 256)
    sweep = P.weight_sweep(demo_model, res, ["nose"], [0.0])
    assert sweep[("nose", 0.0)].shape == (256, 256, 3)
    for fig in (P.plot_generation(res), P.plot_feature_maps(res.feature_maps), P.plot_paste(res.feature_map, demo_model.layout),
                P.plot_synthesis(res), P.plot_shadow(res)):
        assert isinstance(fig, Figure)


# ------------------------------------------------------------------ the notebooks built on these helpers

TUTORIALS = ["00_quick_start", "01_components", "02_embedding", "03_manifold_projection",
             "04_feature_mapping_and_synthesis", "06_train_your_own"]


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_notebook_is_committed_clean_and_shaped_like_a_lesson(name):
    import json
    from pathlib import Path

    from dfd_kit.colab import CELL_ID

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb").read_text())
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "clear the outputs before committing"
    code = [c for c in code if c.get("id") != CELL_ID]   # the Colab setup cell (tests/test_colab.py) comes first
    assert cells[0]["cell_type"] == "markdown" and "What you will" in "".join(cells[0]["source"])
    # 01-04 and 06 end with an Exercises section (scripts/exercise_cells.py), the summary just before it
    ex = next((i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises")), len(cells))
    assert (ex < len(cells)) == (name != "00_quick_start")
    summary = "".join(cells[ex - 1]["source"])
    assert "## Summary" in summary and "## Try it" in summary
    first = "".join(code[0]["source"])
    # dfd_kit.load() reads $DFD_PARAMS itself: the notebooks do not repeat it
    assert "DFD_PARAMS" not in first and ("dfd_kit.load()" in first or 'dfd_kit.load("cartoon")' in first)
    assert first.index("import dfd_kit") < first.index("dfd_kit.load")


# ------------------------------------------------------------------ the projection effect

def test_hard_examples_are_rough_held_out_sketches_with_their_photos_and_one_drawn_by_hand():
    from dfd_kit.examples import hard_examples

    exs = hard_examples(LAYOUT)
    with_photo = [e for e in exs if e.photo is not None]
    assert len(with_photo) == 6 and len(exs) == 7
    for e in exs:
        assert e.sketch.shape == (LAYOUT.size, LAYOUT.size) and e.sex in P.SEXES
        assert 0.005 < (e.sketch < 128).mean() < 0.3          # a line drawing on white paper
    assert all(e.photo.shape == (LAYOUT.size, LAYOUT.size, 3) and e.photo.std() > 20 for e in with_photo)
    # each roughened sketch comes with the sketch it was roughened from: the same face, other strokes
    for e in with_photo:
        assert e.clean.shape == e.sketch.shape
        ink, rough_ink = e.clean < 128, e.sketch < 128
        assert 0 < (ink != rough_ink).mean() < 0.2 and (ink & rough_ink).sum() > 0.2 * ink.sum()
    assert [e.clean for e in exs if e.photo is None] == [None]


class WeightShade:
    """generate() paints the face grey level 100 + 50 * (mean part weight)."""
    def generate(self, sketch, part_weights, sex="male", k=None, shadows=True, keep_features=True):
        level = 100 + 50 * np.mean(list(part_weights.values()))
        return types.SimpleNamespace(image=np.full(sketch.shape + (3,), level, np.uint8))


def test_projection_effect_measures_the_two_faces_apart_and_against_the_photo(sketch):
    ex = [types.SimpleNamespace(name="a", sketch=sketch, sex="male", photo=np.full(sketch.shape + (3,), 110, np.uint8)),
          types.SimpleNamespace(name="b", sketch=sketch, sex="female", photo=None)]
    eff = P.projection_effect(WeightShade(), ex)
    assert [e.name for e in eff] == ["a", "b"]
    assert eff[0].difference == pytest.approx(50.0)
    assert (eff[0].mae_w0, eff[0].mae_w1) == (pytest.approx(10.0), pytest.approx(40.0))
    assert eff[1].mae_w0 is None and eff[1].photo is None
    fig = P.plot_projection_effect(eff)
    t = titles(fig)
    assert "|w1 - w0|: mean 50.0" in t and "w = 0 (the drawing)\nerror to photo 10.0" in t
    assert len(fig.axes) == 10


def test_example_sketch_finds_the_hand_drawn_examples_by_name():
    from dfd_kit.examples import HAND_DRAWN_DIR

    s = example_sketch("hand2_female", LAYOUT)
    assert s.shape == (LAYOUT.size, LAYOUT.size) and (s < 128).mean() > 0.005
    ref = np.asarray(Image.open(HAND_DRAWN_DIR / "hand2_female.png").convert("L").resize((LAYOUT.size,) * 2))
    assert np.abs(s.astype(int) - ref).mean() < 10        # that file, not another sketch
    with pytest.raises(KeyError, match="hand1_male"):      # the error lists them too
        example_sketch("no_such_face", LAYOUT)


def test_projection_effect_summary_counts_the_faces_brought_closer(sketch):
    photo = np.full(sketch.shape + (3,), 140, np.uint8)          # w = 1's grey (150) is closer than w = 0's (100)
    ex = [types.SimpleNamespace(name=n, sketch=sketch, sex="male", photo=p) for n, p in (("a", photo), ("b", None))]
    text = P.projection_effect_summary(P.projection_effect(WeightShade(), ex))
    assert "over 2 sketches" in text and "differ by 50.0 grey levels" in text
    assert "closer to the true photo for 1 of 1" in text and "40.0 -> 10.0: -75.0%" in text
    assert "faces at w = 0 and w = 1 differ" in text


def test_projection_effect_says_which_weights_it_projected_at(sketch):
    ex = [types.SimpleNamespace(name="a", sketch=sketch, sex="male", photo=None)]
    half = P.projection_effect(WeightShade(), ex, projected={c: 0.5 for c in COMPONENTS})
    assert half[0].difference == pytest.approx(25.0) and half[0].projected_as == "w = 0.5"
    assert "faces at w = 0 and w = 0.5 differ by 25.0" in P.projection_effect_summary(half)
    parts = P.projection_effect(WeightShade(), ex, projected={"remainder": 0.0})   # the rest stay at 1
    assert parts[0].difference == pytest.approx(40.0)
    assert parts[0].projected_as == "w = 1 for left_eye, right_eye, nose, mouth; w = 0 for remainder"
    assert "w = 0 and projected (w = 1 for left_eye" in P.projection_effect_summary(parts)
    titles = [ax.get_title() for ax in P.plot_projection_effect(half).axes]
    assert any(t.startswith("w = 0.5 (projected)") for t in titles)


def test_projection_effect_measures_where_a_perfect_projection_would_land(sketch):
    clean = np.full_like(sketch, 255)

    class CleanKnown(WeightShade):   # the clean sketch's face is the photo's grey, 120
        def generate(self, s, part_weights, **kw):
            if np.array_equal(s, clean):
                return types.SimpleNamespace(image=np.full(s.shape + (3,), 120, np.uint8))
            return super().generate(s, part_weights, **kw)

    photo = np.full(sketch.shape + (3,), 120, np.uint8)
    ex = [types.SimpleNamespace(name="a", sketch=sketch, sex="male", photo=photo, clean=clean),
          types.SimpleNamespace(name="b", sketch=sketch, sex="male", photo=photo, clean=None)]
    eff = P.projection_effect(CleanKnown(), ex)
    assert (eff[0].mae_w0, eff[0].mae_w1, eff[0].mae_clean) == (20.0, 30.0, 0.0) and eff[1].mae_clean is None
    text = P.projection_effect_summary(eff)
    assert "20.0 -> 30.0: +50.0%" in text
    assert "would take the error of the 1 with a clean sketch from 20.0 to 0.0 (-100.0%)" in text
    assert "would take the error of these" in P.projection_effect_summary(eff[:1])


def test_weight_sweep_effect_splits_the_change_at_the_components_box():
    size = LAYOUT.size
    b = LAYOUT.box("mouth")
    lo, hi = np.zeros((size, size, 3), np.uint8), np.zeros((size, size, 3), np.uint8)
    hi[b.y:b.y + b.size, b.x:b.x + b.size] = 90                     # only the mouth's box changes
    eff = P.weight_sweep_effect({("mouth", 0.0): lo, ("mouth", 1.0): hi, ("remainder", 0.0): lo,
                                 ("remainder", 1.0): lo + 10}, LAYOUT)
    assert eff["mouth"] == (pytest.approx(90.0), pytest.approx(0.0))
    assert eff["remainder"] == (pytest.approx(10.0), 0.0)


def test_plot_bank_pca_draws_your_sketch_on_top(fake, result):
    marks = {"your sketch": result.latents, "after projection": result.latents}   # same spot
    fig = P.plot_bank_pca(fake.banks, marks=marks, neighbours=result.neighbours)
    by_label = {c.get_label(): c for c in fig.axes[0].collections}
    star, cross = by_label["your sketch"], by_label["after projection"]
    assert star.get_zorder() > max(c.get_zorder() for c in fig.axes[0].collections if c is not star)
    assert star.get_sizes()[0] > cross.get_sizes()[0]


def test_projection_effect_can_project_only_some_components(sketch):
    ex = [types.SimpleNamespace(name="a", sketch=sketch, sex="male", photo=None)]
    half = {"left_eye": 1.0, "right_eye": 1.0, "nose": 0.0, "mouth": 0.0, "remainder": 0.5}   # mean 0.5
    assert P.projection_effect(WeightShade(), ex, projected=half)[0].difference == pytest.approx(25.0)
