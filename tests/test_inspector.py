"""The pad's lens without a browser: the stage inspector's data, frozen stages, the
manifold map (PCA cache, picking a bank point, "use it"). The model is the small random
demo model; the browser side is in test_browser.py."""
from __future__ import annotations

import numpy as np
import pytest

from dfd_kit.config import COMPONENTS
from dfd_kit.errors import ConfigError


@pytest.fixture
def pad(demo_model, demo_sketch):
    from dfd_kit.widgets import DrawingPad

    p = DrawingPad(demo_model, display_size=512)
    p.load_sketch(demo_sketch)
    return p


def box_stroke(pad, component, frac=((0.2, 0.45), (0.8, 0.55))):
    """A stroke across the middle of a part's box, clear of the other boxes' overlap."""
    b = pad.model.layout.box(component)
    return pad.add_stroke([(b.x + fx * b.size, b.y + fy * b.size) for fx, fy in frac])


def test_the_lens_is_off_and_unbuilt_by_default(pad):
    assert not pad.inspect_toggle.value and not pad.map_toggle.value
    assert pad.inspector is None and pad.manifold_map is None
    assert pad._lens_box.children == ()


def test_inspector_view_shows_every_stage_of_the_component(pad):
    pad.inspect_toggle.value = True
    assert pad.error is None
    model, lay = pad.model, pad.model.layout
    for c in COMPONENTS:
        pad.inspector.picker.value = c
        v = pad.inspector.view
        s = lay.crop_size(c)
        k = pad.k
        assert v.component == c
        assert v.crop.shape == (s, s) and v.crop.dtype == np.uint8
        np.testing.assert_array_equal(v.crop, pad.result.crops[c])
        assert v.reconstruction.shape == (s, s) and v.projected_sketch.shape == (s, s)
        assert v.neighbour_sketches.shape == (k, s, s)
        assert v.neighbours.shape == (k,) and v.weights.shape == (k,)
        assert abs(v.weights.sum() - 1.0) < 1e-9
        # the neighbour thumbnails are the bank rows the projection chose, decoded
        row = np.asarray(model.banks[pad.sex][c][v.neighbours[0]], np.float32)[None]
        want = np.clip((model.decode_neighbours(c, row)[0].astype(np.float64) + 1) * 127.5, 0, 255).astype(np.uint8)
        # (the pad's row cache keeps decoded rows in float16: one grey level of rounding)
        assert np.abs(v.neighbour_sketches[0].astype(int) - want).max() <= 1
        assert v.channels.shape[1:] == (s, s) and 1 <= len(v.channels) <= 4
        np.testing.assert_array_equal(v.channels, pad.result.feature_maps[c][v.channel_ids])
        assert v.face_map.shape == (lay.size, lay.size)
        assert v.face.shape == (lay.size, lay.size, 3)
        b = lay.box(c)
        assert v.box == (b.x, b.y, b.size)
        # the face with its box outlined: the image differs from the face on the box edge only
        diff = np.any(v.face != pad.result.image, axis=2)
        if diff.any():
            ys, xs = np.nonzero(diff)
            assert ys.min() >= b.y and ys.max() < b.y + b.size and xs.min() >= b.x and xs.max() < b.x + b.size
            assert not diff[b.y + 3:b.y + b.size - 3, b.x + 3:b.x + b.size - 3].any()
        for im in (pad.inspector.crop_image, pad.inspector.neighbours_image, pad.inspector.face_image):
            assert im.value[:8] == b"\x89PNG\r\n\x1a\n"
        assert pad.inspector.bars.value.count("dfd-bar") == k


def test_inspector_follows_the_last_stroke_and_updates(pad):
    pad.inspect_toggle.value = True
    for c in ("mouth", "left_eye", "nose"):
        before = pad.inspector.view.crop.copy() if pad.inspector.view.component == c else None
        box_stroke(pad, c)
        assert pad.last_component == c
        v = pad.inspector.view
        assert v.component == c
        assert before is None or not np.array_equal(before, v.crop)
    assert pad.lens_latency is not None and pad.lens_latency > 0


@pytest.mark.parametrize("stage", ["embedding", "projection", "mapping"])
def test_a_frozen_stage_stays_frozen_while_its_input_moves(pad, stage):
    pad.inspect_toggle.value = True
    box_stroke(pad, "mouth")
    r = pad.result
    pinned = {"embedding": r.latents["mouth"].copy(), "projection": r.projections["mouth"].vector.copy(),
              "mapping": r.feature_maps["mouth"].copy()}[stage]
    crop = r.crops["mouth"].copy()
    pad.freeze(stage, "mouth")
    assert (stage, "mouth") in pad.frozen
    assert pad.inspector.freeze_boxes[stage].value   # the checkbox shows it
    box_stroke(pad, "mouth", ((0.3, 0.2), (0.7, 0.8)))
    pad.weight_sliders["mouth"].value = 0.4
    r = pad.result
    now = {"embedding": r.latents["mouth"], "projection": r.projections["mouth"].vector,
           "mapping": r.feature_maps["mouth"]}[stage]
    np.testing.assert_array_equal(now, pinned)
    assert not np.array_equal(r.crops["mouth"], crop), "the crop upstream of the pin still follows the drawing"
    if stage == "embedding":   # downstream of the pin: the weight still moves the vector
        assert not np.array_equal(r.projections["mouth"].vector, r.projections["mouth"].projected)
    pad.unfreeze(stage, "mouth")
    assert not pad.frozen
    r = pad.result
    now = {"embedding": r.latents["mouth"], "projection": r.projections["mouth"].vector,
           "mapping": r.feature_maps["mouth"]}[stage]
    assert not np.array_equal(now, pinned), "unfreezing brings the stage back to the drawing"
    # and it is the same face as a pad that never froze anything
    fresh = type(pad)(pad.model, display_size=512)
    fresh.load_sketch(pad.sketch)
    fresh.weight_sliders["mouth"].value = 0.4
    np.testing.assert_array_equal(fresh.result.image, pad.result.image)


def test_the_freeze_checkbox_pins_and_releases(pad):
    pad.inspect_toggle.value = True
    pad.inspector.picker.value = "nose"
    pad.inspector.freeze_boxes["projection"].value = True
    assert pad.frozen == {("projection", "nose")}
    pad.inspector.freeze_boxes["projection"].value = False
    assert not pad.frozen


def test_bad_freeze_requests_say_what_to_do(pad):
    with pytest.raises(ConfigError, match="embedding, projection, mapping"):
        pad.freeze("generator", "mouth")
    with pytest.raises(ConfigError, match="unknown component"):
        pad.freeze("projection", "ear")


def test_bank_pca_is_fitted_once_per_bank(demo_model, monkeypatch):
    from dfd_kit import inspector, plotting

    calls = []
    real = plotting.pca_fit
    monkeypatch.setattr(plotting, "pca_fit", lambda x, n=2: calls.append(len(x)) or real(x, n))
    inspector._PCA_CACHE.pop(demo_model, None)
    a = inspector.bank_pca(demo_model, "male", "mouth")
    b = inspector.bank_pca(demo_model, "male", "mouth")
    assert a is b and len(calls) == 1
    inspector.bank_pca(demo_model, "female", "mouth")
    assert len(calls) == 2
    bank = np.asarray(demo_model.banks["male"]["mouth"], np.float64)
    assert a.xy.shape == (len(bank), 2)
    np.testing.assert_allclose(a.xy, (bank - bank.mean(0)) @ a.pca.axes.T, atol=1e-9)
    assert 0 < a.explained.sum() <= 1
    # the point nearest a bank row's own position is that row
    assert a.nearest(*a.xy[7]) == 7


def test_manifold_map_marks_the_drawing_its_neighbours_and_projection(pad):
    from dfd_kit.inspector import bank_pca

    pad.map_toggle.value = True
    box_stroke(pad, "mouth")
    mm = pad.manifold_map
    assert mm.component == "mouth"
    bm = bank_pca(pad.model, pad.sex, "mouth")
    p = pad.result.projections["mouth"]
    np.testing.assert_allclose(mm.bank_points.get_offsets(), bm.xy)
    np.testing.assert_allclose(mm.neighbour_points.get_offsets(), bm.xy[p.neighbours])
    np.testing.assert_allclose(mm.latent_point.get_offsets()[0], bm.place(pad.result.latents["mouth"]))
    np.testing.assert_allclose(mm.projected_point.get_offsets()[0], bm.place(p.projected))
    star = mm.latent_point.get_offsets()[0].copy()
    box_stroke(pad, "mouth", ((0.2, 0.2), (0.8, 0.8)))
    assert not np.allclose(mm.latent_point.get_offsets()[0], star), "the star follows the drawing"
    pad.sex_toggle.value = "female"
    np.testing.assert_allclose(mm.bank_points.get_offsets(), bank_pca(pad.model, "female", "mouth").xy)


def test_clicking_a_bank_point_and_using_it_changes_the_face(pad):
    pad.map_toggle.value = True
    box_stroke(pad, "mouth")
    mm = pad.manifold_map
    bm = mm.bank_map
    row = int(np.argmax(((bm.xy - bm.place(pad.result.latents["mouth"])) ** 2).sum(1)))   # far from the drawing
    x, y = bm.xy[row]

    class Click:   # what matplotlib hands a button_press_event handler
        inaxes, xdata, ydata = mm.ax, x, y
    mm._on_click(Click())
    assert mm.selected == row and not mm.use_button.disabled
    assert mm.sample_image.value[:8] == b"\x89PNG\r\n\x1a\n"
    face = pad.result.image.copy()
    mm.use_button.click()
    bank_row = np.asarray(pad.model.banks[pad.sex]["mouth"][row], np.float32)
    np.testing.assert_array_equal(pad.result.projections["mouth"].vector, bank_row)
    assert ("projection", "mouth") in pad.frozen and not mm.back_button.disabled
    assert np.abs(pad.result.image.astype(int) - face).mean() > 0.5
    mm.back_button.click()
    assert not pad.frozen
    np.testing.assert_array_equal(pad.result.image, face)


def test_point_position_is_inside_the_figure(pad):
    pad.map_toggle.value = True
    mm = pad.manifold_map
    x, y = mm.point_position(3)
    w, h = mm.figure.bbox.width, mm.figure.bbox.height
    assert 0 < x < w and 0 < y < h
    with pytest.raises(ConfigError, match="bank row"):
        mm.select(10 ** 6)


def test_a_failing_panel_keeps_the_drawing(pad, monkeypatch):
    from dfd_kit import inspector

    pad.inspect_toggle.value = True
    monkeypatch.setattr(inspector, "inspect_stage", lambda *a, **k: 1 / 0)
    sketch = pad.sketch.copy()
    stroke = box_stroke(pad, "nose")
    assert "inspector failed" in pad.error_area.value and "ZeroDivisionError" in pad.error_area.value
    assert pad.strokes[-1] == stroke and not np.array_equal(pad.sketch, sketch)
    assert pad.result is not None   # the face was still made
