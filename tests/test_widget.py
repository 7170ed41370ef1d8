"""The drawing pad without a browser: events are simulated through ipycanvas' own message
dispatch (the path a browser's messages take), the model is the small random demo model."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dfd_kit
from dfd_kit.config import COMPONENTS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_draw_it_yourself.ipynb"
NOW = datetime.now(timezone.utc)


@pytest.fixture
def pad(demo_model):
    from dfd_kit.widgets import DrawingPad

    return DrawingPad(demo_model, display_size=512)


def send(pad, event, **content):
    """Deliver a front-end event exactly as ipycanvas receives it from the browser."""
    pad.canvas._canvases[-1]._handle_frontend_event(pad.canvas, dict(event=event, **content), [])


def mouse_stroke(pad, points):
    (x0, y0), rest = points[0], points[1:]
    send(pad, "mouse_down", x=x0, y=y0)
    for x, y in rest:
        send(pad, "mouse_move", x=x, y=y)
    send(pad, "mouse_up", x=rest[-1][0] if rest else x0, y=rest[-1][1] if rest else y0)


def dark(a, thr=128):
    return np.argwhere(a < thr)


def test_starts_with_a_face_for_the_blank_page(pad):
    assert pad.error is None
    assert pad.result is not None and pad.result.image.shape == (256, 256, 3)
    assert pad.face.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert (pad.sketch == 255).all()
    assert pad.stats["generated"] == 1
    assert all(pad.stats["encoded"][c] == 1 for c in COMPONENTS)
    assert pad.latency > 0 and "ms" in pad.status.value


def test_mouse_stroke_lands_scaled_in_the_sketch(pad):
    generated = pad.stats["generated"]
    send(pad, "mouse_down", x=100, y=300)
    for x in range(110, 301, 10):
        send(pad, "mouse_move", x=x, y=300)
        assert pad.stats["generated"] == generated, "the model must not run while the mouse moves"
    assert (pad.sketch == 255).all(), "nothing is committed before the stroke ends"
    send(pad, "mouse_up", x=300, y=300)
    assert pad.stats["generated"] == generated + 1
    assert len(pad.strokes) == 1
    ink = dark(pad.sketch)
    rows, cols = ink[:, 0], ink[:, 1]
    # display (100..300, 300) on a 512 canvas = sketch (50..150, 150) at 256
    assert rows.min() >= 147 and rows.max() <= 152
    assert cols.min() >= 47 and cols.max() <= 152
    assert (pad.sketch[149:151, 55:146] < 128).any(axis=0).all(), "the line is continuous"


def test_touch_stroke(pad):
    generated = pad.stats["generated"]
    send(pad, "touch_start", touches=[{"x": 400, "y": 100}])
    for y in range(110, 301, 10):
        send(pad, "touch_move", touches=[{"x": 400, "y": y}])
    assert pad.stats["generated"] == generated
    send(pad, "touch_end", touches=[])          # the browser lists the fingers still down
    assert pad.stats["generated"] == generated + 1
    ink = dark(pad.sketch)
    assert ink[:, 1].min() >= 197 and ink[:, 1].max() <= 202
    assert ink[:, 0].min() >= 47 and ink[:, 0].max() <= 152


def test_mouse_out_ends_the_stroke_and_a_click_makes_a_dot(pad):
    send(pad, "mouse_down", x=40, y=40)
    send(pad, "mouse_move", x=60, y=40)
    send(pad, "mouse_out", x=70, y=40)
    assert len(pad.strokes) == 1
    send(pad, "mouse_up", x=70, y=40)           # a stray up after leaving adds nothing
    assert len(pad.strokes) == 1
    mouse_stroke(pad, [(400, 400)])
    assert len(pad.strokes) == 2
    assert pad.sketch[199:202, 199:202].min() < 128


def test_eraser(pad):
    pad.add_stroke([(20, 30), (120, 30)], width=3)
    assert pad.sketch[30, 40:100].max() < 128
    pad.tool.value = "eraser"
    pad.width_slider.value = 6
    mouse_stroke(pad, [(100, 60), (140, 60), (180, 60)])   # sketch (50..90, 30)
    assert pad.strokes[-1].eraser
    assert (pad.sketch[28:33, 52:88] == 255).all()
    assert pad.sketch[30, 20:45].max() < 128


def test_undo_redo_clear(pad):
    blank = pad.sketch
    pad.add_stroke([(10, 10), (60, 10)])
    one = pad.sketch
    pad.add_stroke([(10, 40), (60, 40)])
    two = pad.sketch
    assert pad.undo() and np.array_equal(pad.sketch, one) and len(pad.strokes) == 1
    assert pad.undo() and np.array_equal(pad.sketch, blank)
    assert not pad.undo()
    assert pad.undo_button.disabled and not pad.redo_button.disabled
    assert pad.redo() and pad.redo() and np.array_equal(pad.sketch, two)
    assert not pad.redo()
    pad.clear()
    assert np.array_equal(pad.sketch, blank) and pad.strokes == ()
    assert pad.undo() and np.array_equal(pad.sketch, two), "clear is undoable"
    pad.add_stroke([(100, 200), (120, 210)])
    assert not pad.redo(), "a new stroke drops the redo history"
    assert pad.error is None


def test_a_left_eye_stroke_re_encodes_only_the_left_eye(pad):
    box = pad.model.layout.box("left_eye")
    enc0, gen0, sh0 = pad.stats["encoded"].copy(), pad.stats["generated"], pad.stats["shadowed"].copy()
    fd0 = pad.stats["feature_decoded"].copy()
    # in the left-eye box and in no other box (the nose box overlaps its lower right corner)
    x0, y = box.x + 6, box.y + 10
    mouse_stroke(pad, [(2 * x0, 2 * y), (2 * (x0 + 12), 2 * (y + 4)), (2 * (x0 + 22), 2 * y)])
    assert pad.error is None
    assert pad.stats["encoded"] - enc0 == {"left_eye": 1}
    assert pad.stats["generated"] == gen0 + 1
    assert pad.stats["shadowed"] - sh0 == {"left_eye": 1}
    assert pad.stats["feature_decoded"] - fd0 == {"left_eye": 1}, "one feature decoder per changed part"
    # and the result is what a full generation of this sketch gives
    full = pad.model.generate(pad.sketch, shadows=False, k=pad.k)
    for c in COMPONENTS:
        np.testing.assert_allclose(pad.result.latents[c], full.latents[c], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pad.result.generator_output, full.generator_output, atol=1e-4)


def test_a_stroke_outside_the_boxes_re_encodes_only_the_remainder(pad):
    enc0 = pad.stats["encoded"].copy()
    pad.add_stroke([(10, 250), (120, 252)])   # below the mouth box
    assert pad.stats["encoded"] - enc0 == {"remainder": 1}


def test_weight_slider_reprojects_without_re_encoding(pad):
    pad.add_stroke([(30, 200), (200, 230)])
    enc0, proj0, gen0 = pad.stats["encoded"].copy(), pad.stats["projected"].copy(), pad.stats["generated"]
    sh0 = pad.stats["shadowed"].copy()
    before = pad.result.image.copy()
    pad.weight_sliders["remainder"].value = 0.0
    assert pad.stats["encoded"] == enc0
    assert pad.stats["projected"] - proj0 == {"remainder": 1}
    assert pad.stats["generated"] == gen0 + 1
    assert pad.stats["shadowed"] == sh0, "a weight does not move the neighbours: shadows stay"
    assert pad.result.part_weights["remainder"] == 0.0
    np.testing.assert_array_equal(pad.result.projections["remainder"].vector, pad.result.latents["remainder"])
    assert not np.array_equal(pad.result.image, before)


def test_sex_and_k_re_project_every_component(pad):
    enc0 = pad.stats["encoded"].copy()
    male = {c: pad.result.projections[c].neighbours.copy() for c in COMPONENTS}
    gen0 = pad.stats["generated"]
    pad.sex_toggle.value = "female"
    assert pad.result.sex == "female" and pad.stats["generated"] == gen0 + 1
    assert any(not np.array_equal(male[c], pad.result.projections[c].neighbours) for c in COMPONENTS)
    pad.k_slider.value = 4
    assert all(len(pad.result.projections[c].neighbours) == 4 for c in COMPONENTS)
    assert pad.result.k == 4
    assert pad.stats["encoded"] == enc0
    assert pad.k_slider.max == min(30, min(len(b[c]) for b in pad.model.banks.values() for c in COMPONENTS))


def test_shadows_match_the_model_and_follow_the_toggle(pad):
    res = pad.result
    assert res.shadow is not None and res.shadow.shape == (256, 256)
    for c in COMPONENTS:
        ref = pad.model.shadow(c, res.projections[c], pad.sex)
        assert np.abs(ref.astype(int) - res.shadows[c].astype(int)).max() <= 1
    np.testing.assert_array_equal(res.shadow, pad.model.compose_shadows(res.shadows))
    # opacity is display only
    sh0, gen0 = pad.stats["shadowed"].copy(), pad.stats["generated"]
    pad.opacity_slider.value = 0.9
    assert pad.stats["shadowed"] == sh0 and pad.stats["generated"] == gen0
    # off: strokes do not compute shadows; on again: the stale ones are caught up
    pad.shadow_toggle.value = False
    pad.add_stroke([(10, 250), (120, 252)])   # below the mouth box
    assert pad.stats["shadowed"] == sh0
    pad.shadow_toggle.value = True
    assert pad.stats["shadowed"] - sh0 == {"remainder": 1}


def test_neighbour_sketches_are_decoded_once(pad):
    decoded = sum(pad.stats["decoded_rows"].values())
    pad.k_slider.value = pad.k_slider.value   # no change
    pad.sex_toggle.value = "female"
    pad.sex_toggle.value = "male"             # back to rows already decoded
    after_female = sum(pad.stats["decoded_rows"].values())
    pad.sex_toggle.value = "female"
    assert sum(pad.stats["decoded_rows"].values()) == after_female >= decoded


def test_save_round_trip(pad, tmp_path):
    pad.add_stroke([(40, 60), (200, 80), (120, 200)], width=3)
    pad.add_stroke([(100, 100), (110, 110)], width=1)
    sketch_path, face_path = pad.save(tmp_path / "out")
    assert sketch_path.name.startswith("sketch_") and face_path.name.startswith("face_")
    assert sketch_path.exists() and face_path.exists()
    assert str(sketch_path) in pad.save_label.value
    np.testing.assert_array_equal(np.asarray(Image.open(sketch_path)), pad.sketch)
    np.testing.assert_array_equal(np.asarray(Image.open(face_path).convert("RGB")), pad.result.image)
    again = pad.save(tmp_path / "out")       # same second: a new name, nothing overwritten
    assert again[0] != sketch_path and again[0].exists()
    # the saved sketch loads back identical
    from dfd_kit.widgets import DrawingPad

    other = DrawingPad(pad.model, generate=False)
    other.load_sketch(sketch_path)
    np.testing.assert_array_equal(other.sketch, pad.sketch)


def test_save_after_a_failed_generation_keeps_the_sketch_without_a_stale_face(pad, tmp_path, monkeypatch):
    pad.add_stroke([(40, 60), (200, 80)], width=3)
    assert pad.result is not None and pad.error is None

    def broken(feature_map):
        raise RuntimeError("synthesis exploded")

    monkeypatch.setattr(pad.model, "synthesize", broken)
    pad.add_stroke([(60, 160), (160, 160)], width=3)     # this drawing has no face
    assert pad.error is not None
    sketch_path, face_path = pad.save(tmp_path / "out")
    assert face_path is None and not list((tmp_path / "out").glob("face_*.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(sketch_path)), pad.sketch)
    assert "not this drawing" in pad.save_label.value


def test_save_button_uses_the_folder_box(pad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pad.folder.value = "saved"
    pad.save_button.click()
    assert len(list((tmp_path / "saved").glob("sketch_*.png"))) == 1
    assert len(list((tmp_path / "saved").glob("face_*.png"))) == 1


def test_generation_errors_are_shown_and_keep_the_drawing(pad, monkeypatch):
    def broken(feature_map):
        raise RuntimeError("synthesis exploded")

    monkeypatch.setattr(pad.model, "synthesize", broken)
    mouse_stroke(pad, [(60, 60), (160, 60)])
    assert "synthesis exploded" in pad.error_area.value and "RuntimeError" in pad.error
    assert "color:#b00020" in pad.error_area.value
    assert len(pad.strokes) == 1 and (pad.sketch < 128).any()
    pad.weight_sliders["nose"].value = 0.5    # sliders fail the same way, no exception
    assert pad.error is not None
    assert pad.undo() and pad.strokes == () and (pad.sketch == 255).all()
    assert pad.redo() and len(pad.strokes) == 1
    monkeypatch.undo()
    pad.add_stroke([(60, 90), (160, 90)])
    assert pad.error is None and pad.error_area.value == ""
    # the failed updates' work is redone: the latents are those of the current sketch
    full = pad.model.generate(pad.sketch, shadows=False, part_weights=pad.part_weights, k=pad.k)
    np.testing.assert_allclose(pad.result.generator_output, full.generator_output, atol=1e-4)


def test_load_sketch_replaces_the_drawing(pad, tmp_path, demo_sketch):
    pad.add_stroke([(10, 10), (250, 250)])
    path = tmp_path / "drawn.png"
    Image.fromarray(demo_sketch).save(path)
    pad.load_sketch(path)
    assert pad.strokes == ()
    np.testing.assert_array_equal(pad.sketch, pad.model.normalise(demo_sketch))
    assert pad.error is None and pad.result is not None
    np.testing.assert_array_equal(pad.result.sketch, pad.sketch)
    # strokes go on top of the loaded sketch, and undo walks back through the load
    pad.add_stroke([(5, 5), (40, 5)])
    assert pad.sketch[5, 10] < 128
    pad.undo()
    pad.undo()
    assert len(pad.strokes) == 1 and pad.strokes[0].points[0] == (10.0, 10.0)


def test_upload_widget_loads_a_file_and_reports_bad_ones(pad, demo_sketch):
    import io

    buf = io.BytesIO()
    Image.fromarray(demo_sketch).resize((512, 512)).save(buf, "JPEG")
    data = buf.getvalue()
    pad.upload.value = ({"name": "mine.jpg", "type": "image/jpeg", "size": len(data),
                         "content": memoryview(data), "last_modified": NOW},)
    assert pad.error is None
    assert np.abs(pad.sketch.astype(int) - pad.model.normalise(data).astype(int)).max() == 0
    assert "mine.jpg" in pad.save_label.value
    kept = pad.sketch
    pad.upload.value = ({"name": "broken.png", "type": "image/png", "size": 3,
                         "content": memoryview(b"abc"), "last_modified": NOW},)
    assert "broken.png" in pad.error_area.value
    np.testing.assert_array_equal(pad.sketch, kept)


def test_boxes_overlay_and_client_ready_redraw(pad):
    pad.boxes_toggle.value = True
    pad.boxes_toggle.value = False
    pad.add_stroke([(10, 10), (30, 30)], eraser=False)
    send(pad, "client_ready")     # a new browser view: every layer is repainted, no error
    assert pad.error is None


def test_default_model_honours_dfd_params(monkeypatch):
    from dfd_kit import widgets

    seen = []
    monkeypatch.setattr(dfd_kit, "load", lambda params=None, shadows=True: seen.append(params) or "model")
    monkeypatch.setenv("DFD_PARAMS", "/some/where")
    assert widgets.default_model() == "model" and seen[-1] == "/some/where"
    monkeypatch.delenv("DFD_PARAMS")
    widgets.default_model()
    assert seen[-1] is None


def test_notebook_is_short_and_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert 2 <= len(code) <= 3
    for c in code:
        assert c["outputs"] == [] and c["execution_count"] is None
    src = "".join("".join(c["source"]) for c in code)
    assert "DrawingPad(" in src and "default_model()" in src
    assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][-1]["cell_type"] == "markdown"
