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
from dfd_kit.colab import CELL_ID
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


def test_the_sliders_start_at_the_models_default_weight(demo_model):
    import copy
    from dataclasses import replace

    from dfd_kit.widgets import DrawingPad

    quarter = copy.copy(demo_model)
    quarter.config = replace(demo_model.config, blend_weight=0.25)
    pad = DrawingPad(quarter, generate=False)
    assert pad.part_weights == {c: 0.25 for c in COMPONENTS}
    assert DrawingPad(demo_model, generate=False).part_weights == {c: 1.0 for c in COMPONENTS}


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
        ref = pad.model.shadow(c, res.projections[c], pad.sex, normalise=True)   # the pad's faint blend
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
    # the message names the file and says what is wrong, not PIL's internal object
    assert "BytesIO" not in pad.error_area.value and " at 0x" not in pad.error_area.value
    assert "not a valid image" in pad.error_area.value
    np.testing.assert_array_equal(pad.sketch, kept)


def test_boxes_overlay_and_client_ready_redraw(pad):
    pad.boxes_toggle.value = True
    pad.boxes_toggle.value = False
    pad.add_stroke([(10, 10), (30, 30)], eraser=False)
    send(pad, "client_ready")     # a new browser view: every layer is repainted, no error
    assert pad.error is None


def test_load_and_the_pads_default_model_honour_dfd_params(monkeypatch):
    import dfd_kit.pipeline
    from dfd_kit import widgets

    seen = []
    monkeypatch.setattr(dfd_kit.pipeline, "load_model", lambda params, shadows=True: seen.append(params) or "model")
    monkeypatch.setenv("DFD_PARAMS", "/some/where")
    assert widgets.default_model() == "model" and seen[-1] == "/some/where"
    monkeypatch.setenv("DFD_PARAMS", "cartoon")                 # a bundled model's name works too
    dfd_kit.load()
    assert seen[-1] == dfd_kit.DEMO_PARAMS
    dfd_kit.load("photo")                                        # an explicit argument wins
    assert seen[-1] == dfd_kit.PHOTO_PARAMS
    monkeypatch.delenv("DFD_PARAMS")
    widgets.default_model()
    assert seen[-1] == dfd_kit.PHOTO_PARAMS                      # unset: the default photo model


def test_notebook_is_short_and_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    # the Colab setup cell (tests/test_colab.py) aside
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("id") != CELL_ID]
    # load, pad, the pad driven from code (a static picture), the lens on paper (stage view, freeze,
    # manifold map, replay), the API tour
    assert 3 <= len(code) <= 8
    assert any("add_stroke(" in "".join(c["source"]) and "plot_generation" in "".join(c["source"]) for c in code)
    for c in code:
        assert c["outputs"] == [] and c["execution_count"] is None
    src = "".join("".join(c["source"]) for c in code)
    assert "DrawingPad(" in src and "default_model()" in src
    assert "pad.stats}" not in src and "pad.work_summary()" in src, "statistics read as a table, not a Counter"
    assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][-1]["cell_type"] == "markdown"


# --------------------------------------------------------------------------- timeline, replay, drawing files

def _draw_a_face(pad):
    """Strokes in several components, an eraser stroke, and settings away from the defaults."""
    pad.add_stroke([(70, 100), (86, 92), (102, 100)])
    pad.add_stroke([(150, 100), (166, 92), (182, 100)], width=3)
    pad.add_stroke([(110, 180), (128, 188), (146, 180)])
    pad.add_stroke([(60, 60), (50, 140), (80, 210), (128, 235)], width=2.5)
    pad.add_stroke([(60, 150), (60, 170)], eraser=True, width=6)   # erases part of the jaw
    pad.weight_sliders["mouth"].value = 0.35
    pad.weight_sliders["remainder"].value = 0.8
    pad.k_slider.value = 6
    pad.sex_toggle.value = "female"
    assert pad.error is None


def test_timeline_records_strokes_with_their_times(pad):
    import time

    send(pad, "mouse_down", x=100, y=300)
    time.sleep(0.15)
    send(pad, "mouse_move", x=200, y=300)
    send(pad, "mouse_up", x=300, y=300)
    time.sleep(0.05)
    pad.tool.value = "eraser"
    mouse_stroke(pad, [(150, 300), (250, 300)])
    pad.add_stroke([(10, 10), (20, 20)], t=42.0, duration=1.5)
    first, second, third = pad.strokes
    assert first.duration >= 0.15 and not first.eraser and first.width == 2.0
    assert first.points[0] == (50.0, 150.0) and first.points[-1] == (150.0, 150.0)
    assert second.eraser and second.t >= first.t + first.duration + 0.05 - 1e-3
    assert (third.t, third.duration) == (42.0, 1.5)
    rows = pad.timeline
    assert [r["tool"] for r in rows] == ["pen", "eraser", "pen"]
    assert [r["points"] for r in rows] == [3, 2, 2]
    assert rows[0]["t"] == round(first.t, 3) and rows[2]["duration"] == 1.5
    pad.undo()
    assert len(pad.timeline) == 2, "the timeline is the drawing's: an undone stroke leaves it"


def test_replay_is_a_gif_with_a_frame_per_stroke(pad, tmp_path):
    import io

    _draw_a_face(pad)
    data = pad.replay(progress=False)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.info.get("loop") == 0
    assert gif.n_frames == len(pad.strokes) + 1, "the starting page, then one frame per stroke"
    assert gif.size == (2 * 256, 256 + 24), "sketch and face side by side over a caption band"
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations[:-1] == [500] * len(pad.strokes) and durations[-1] == 2000
    # the first frame is the blank page, the last shows this sketch and this face
    gif.seek(0)
    first = np.asarray(gif.convert("RGB")).astype(int)
    assert (first[:256, :256] > 240).all()
    gif.seek(gif.n_frames - 1)
    last = np.asarray(gif.convert("RGB")).astype(int)
    ink = pad.sketch < 128
    # ink dark (the last stroke's in red), paper light (what the last stroke erased in pink)
    assert (last[:256, :256][ink].max(axis=-1) < 240).all() and (last[:256, :256, 0][~ink] > 240).all()
    assert (last[:256, :256][~ink].min(axis=-1) < 240).any(), "the eraser's last stroke is shown"
    # the face panel is the pad's face, through the same palette reduction
    from dfd_kit.drawing import replay_frame

    expected = np.asarray(replay_frame(pad.sketch, None, pad.result.image, 1, 1, None, 256).convert("RGB"))
    np.testing.assert_array_equal(last[:256, 256:], expected[:256, 256:])
    assert np.abs(last[:256, 256:] - pad.result.image.astype(int)).mean() < 12
    # a path: written there; the recorded times, sped up, set the frame durations
    path = pad.replay(tmp_path / "made", speed=4, panel=128, progress=False)
    assert path == tmp_path / "made.gif"
    again = Image.open(path)
    assert again.size == (256, 128 + 24) and again.n_frames == len(pad.strokes) + 1


def test_replay_shows_progress_for_long_drawings(pad, capsys):
    from dfd_kit.drawing import PROGRESS_MIN_STROKES

    for i in range(PROGRESS_MIN_STROKES):
        pad.add_stroke([(20 + 10 * i, 240), (25 + 10 * i, 250)], update=False)
    pad.replay(panel=64)
    assert "replay" in capsys.readouterr().err, "no tqdm bar"
    pad.undo()
    pad.replay(panel=64)
    assert "replay" not in capsys.readouterr().err, "a short drawing shows no bar"


def test_drawing_file_round_trip_reproduces_the_face(pad, demo_model, demo_sketch, tmp_path):
    from dfd_kit.widgets import DrawingPad

    pad.load_sketch(demo_sketch)   # a page that is not blank
    _draw_a_face(pad)
    path = pad.save_drawing(tmp_path / "mine")
    assert path == tmp_path / "mine.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == "dfd_kit.drawing" and doc["version"] == 1
    assert doc["model"] == {"name": demo_model.name, "params_sha256": demo_model.params_hash, "size": 256,
                            "precision": getattr(demo_model, "precision", "fp32")}
    assert doc["settings"]["k"] == 6 and doc["settings"]["sex"] == "female"
    assert doc["settings"]["part_weights"]["mouth"] == 0.35 and len(doc["strokes"]) == 5

    other = DrawingPad.load_drawing(path, model=demo_model)   # a new pad, as on another machine
    assert isinstance(other, DrawingPad) and other is not pad and other.error is None
    assert other.strokes == pad.strokes, "points, widths, tools and times come back exactly"
    np.testing.assert_array_equal(other.sketch, pad.sketch)
    assert (other.part_weights, other.k, other.sex) == (pad.part_weights, pad.k, pad.sex)
    np.testing.assert_array_equal(other.result.image, pad.result.image)   # the same face, pixel for pixel
    assert other.stats["generated"] == 1, "the settings are applied together: one generation"
    assert other.undo_button.disabled

    # into an existing pad: replaces its drawing, undoably
    third = DrawingPad(demo_model)
    third.add_stroke([(5, 5), (50, 5)])
    before = third.sketch
    assert third.load_drawing(path.read_bytes()) is third
    np.testing.assert_array_equal(third.result.image, pad.result.image)
    assert third.undo() and np.array_equal(third.sketch, before)


BAD_DRAWINGS = {
    "not JSON": b"\x89PNG\r\n\x1a\n not json at all",
    "a JSON list": b"[1, 2, 3]",
    "another format": json.dumps({"format": "something.else", "version": 1}).encode(),
    "another version": "version",
    "no strokes": "strokes",
    "a width as text": "width",
    "a weight out of range": "weight",
    "a point with NaN": "nan",
    "a broken page": "base_png",
}


def _broken(good: dict, how: str) -> bytes:
    doc = json.loads(json.dumps(good))
    if how == "version":
        doc["version"] = 2
    elif how == "strokes":
        del doc["strokes"]
    elif how == "width":
        doc["strokes"][0]["width"] = "3"
    elif how == "weight":
        doc["settings"]["part_weights"]["nose"] = 1.5
    elif how == "base_png":
        doc["base_png"] = "bm90IGEgcG5n"
    elif how == "nan":
        return json.dumps(doc).replace("[[70.0, 100.0]", "[[NaN, 100.0]", 1).encode()
    return json.dumps(doc).encode()


@pytest.mark.parametrize("kind", list(BAD_DRAWINGS))
def test_bad_drawing_files_raise_one_clear_error_and_change_nothing(pad, tmp_path, kind):
    import warnings

    from dfd_kit.errors import DrawingFileError
    from dfd_kit.widgets import DrawingPad

    _draw_a_face(pad)
    good = json.loads(pad.save_drawing(tmp_path / "good.json").read_text())
    bad = BAD_DRAWINGS[kind]
    data = bad if isinstance(bad, bytes) else _broken(good, bad)
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    state = (pad.sketch, pad.strokes, pad.part_weights, pad.k, pad.sex, len(pad._undo), pad.result.image.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # one error, not a warning on the way
        with pytest.raises(DrawingFileError) as err:
            pad.load_drawing(path)
        with pytest.raises(DrawingFileError):
            DrawingPad.load_drawing(path, model=pad.model)
    message = str(err.value)
    assert str(path) in message and "Traceback" not in message and len(message) < 400, message
    after = (pad.sketch, pad.strokes, pad.part_weights, pad.k, pad.sex, len(pad._undo), pad.result.image)
    for a, b in zip(state, after):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
    # the same through the upload button: the message in the pad, the drawing kept
    pad.upload.value = ({"name": "bad.json", "type": "application/json", "size": len(data),
                         "content": memoryview(data), "last_modified": NOW},)
    assert "bad.json" in pad.error_area.value and "Traceback" not in pad.error_area.value
    np.testing.assert_array_equal(pad.sketch, state[0])
    assert pad.strokes == state[1]


def test_bad_drawing_messages_say_what_is_wrong(tmp_path):
    from dfd_kit.drawing import read_drawing
    from dfd_kit.errors import DrawingFileError

    def message(data):
        with pytest.raises(DrawingFileError) as err:
            read_drawing(data, name="x.json")
        return str(err.value)

    assert "not JSON" in message(b"{oops")
    assert "version 2" in message(json.dumps({"format": "dfd_kit.drawing", "version": 2}).encode())
    assert "update dfd_kit" in message(json.dumps({"format": "dfd_kit.drawing", "version": 2}).encode())
    assert "'model'" in message(json.dumps({"format": "dfd_kit.drawing", "version": 1}).encode())
    with pytest.raises(DrawingFileError, match="no drawing file"):
        read_drawing(tmp_path / "missing.json")


def test_a_drawing_from_another_model_warns(pad, demo_params, params_copy, tmp_path):
    from dfd_kit.errors import DrawingModelWarning
    from dfd_kit.widgets import DrawingPad

    _draw_a_face(pad)
    path = pad.save_drawing(tmp_path / "d.json")
    saved = dfd_kit.load(demo_params)                    # same weights, but a Params folder: another hash
    with pytest.warns(DrawingModelWarning) as caught:
        other = DrawingPad.load_drawing(path, model=saved)
    text = str(caught[0].message)
    assert pad.model.name in text and saved.name in text and "sha256" in text
    assert "dfd_kit.load(" in text and "model=" in text, "it says what to do"
    np.testing.assert_array_equal(other.sketch, pad.sketch)   # the drawing is still loaded

    # the hash is stable: the same files elsewhere (another path, another name) hash the same
    copy = dfd_kit.load(params_copy)
    assert copy.params_hash == saved.params_hash and len(saved.params_hash) == 64
    mine = DrawingPad(saved, generate=False)
    mine.add_stroke([(70, 100), (90, 100)])
    p2 = mine.save_drawing(tmp_path / "e.json")
    with pytest.warns(DrawingModelWarning, match="model") as caught:
        DrawingPad.load_drawing(p2, model=copy)          # another name, same hash: still said
    assert "sha256" not in str(caught[0].message).split("this pad has")[0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DrawingPad.load_drawing(p2, model=saved)         # the same model: silent
    # the same files run in other arithmetic draw other faces: said too
    doc = json.loads(p2.read_text())
    doc["model"]["precision"] = "fp32" if getattr(saved, "precision", "fp32") == "bf16" else "bf16"
    p3 = tmp_path / "f.json"
    p3.write_text(json.dumps(doc))
    with pytest.warns(DrawingModelWarning, match="arithmetic"):
        DrawingPad.load_drawing(p3, model=saved)


def test_changed_params_change_the_hash(params_copy):
    """The hash covers the banks too, not only the checkpoints."""
    from dfd_kit.loading import bank_file, params_sha256

    before = params_sha256(params_copy)
    bank = params_copy / bank_file("nose", "male")
    data = bytearray(bank.read_bytes())
    data[-1] ^= 1
    bank.write_bytes(bytes(data))
    assert params_sha256(params_copy) != before


# --------------------------------------------------------------------------- polish

def test_eraser_has_its_own_wider_width_and_clears_a_line(pad):
    pen = pad.width_slider.value
    pad.add_stroke([(40, 60), (200, 60)])              # a pen line at the default width
    assert pad.sketch[60, 50:190].max() < 128
    pad.tool.value = "eraser"
    assert pad.width_slider.value >= 3 * pen - 1e-9, "the eraser starts wider than the pen"
    # a hand-drawn erasing stroke, a pixel off the line and wobbling
    mouse_stroke(pad, [(90, 122), (140, 118), (200, 123), (260, 119), (310, 121)])
    assert (pad.sketch[55:66, 47:153] == 255).all(), "grey or black leftovers on the erased part"
    pad.width_slider.value = 4
    pad.tool.value = "pen"
    assert pad.width_slider.value == pen, "each tool keeps its width"
    pad.tool.value = "eraser"
    assert pad.width_slider.value == 4


def test_box_labels_lie_above_the_ink():
    from dfd_kit import widgets

    assert widgets._LAYER_SHADOW < widgets._LAYER_INK < widgets._LAYER_BOXES < widgets._LAYER_PREVIEW


def test_upload_button_has_a_label_and_a_tooltip(pad):
    assert pad.upload.tooltip and "null" not in pad.upload.tooltip and "PNG" in pad.upload.tooltip
    # ipywidgets draws "<description> (<count>)"; the pad's style hides the text, shows the label
    assert '.dfd-upload.widget-upload::after{content:"load sketch"' in pad._style.value
    assert "dfd-upload" in pad.upload._dom_classes and pad._style in pad.children


def test_shadow_stays_faint_at_large_k(pad):
    from dfd_kit.manifold import shadow_weights

    pad.k_slider.value = pad.k_slider.max
    res = pad.result
    summed = [shadow_weights(res.projections[c].weights).sum() for c in COMPONENTS]
    assert max(summed) > 1, "the test needs a component whose capped weights sum to more than 1"
    for c in COMPONENTS:
        w = shadow_weights(res.projections[c].weights, normalise=True)
        assert w.sum() <= 1 + 1e-9
        official = pad.model.shadow(c, res.projections[c], pad.sex)
        # never darker than the official blend, and lighter where its weights summed past 1
        assert (res.shadows[c].astype(int) >= official.astype(int) - 1).all()
    worst = int(np.argmax(summed))
    c = COMPONENTS[worst]
    assert res.shadows[c].astype(int).mean() > pad.model.shadow(c, res.projections[c], pad.sex).astype(int).mean()


def test_display_adds_a_note_for_reopened_notebooks_and_scrolls_the_pad_into_view(pad, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    pad._ipython_display_()
    (view, r1), (note, r2), (script, r3) = shown
    assert r1 and r2 and r3
    assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == pad.model_id
    assert "run the cells again" in note["text/html"].lower() and "model not found" in note["text/html"]
    js = script["application/javascript"]
    assert f".dfd-pad-{pad._uid}" in js and f".dfd-pad-note-{pad._uid}" in js and "scrollIntoView" in js
    assert f"dfd-pad-{pad._uid}" in pad._dom_classes


def test_work_summary_is_a_readable_table(pad):
    assert pad.work_summary().startswith("1 face generated in 1 update; the last update took ")
    pad.add_stroke([(10, 250), (120, 252)])   # the remainder only
    text = pad.work_summary()
    lines = text.splitlines()
    assert lines[0].startswith("2 faces generated in 2 updates")
    assert "left eye" in lines[1] and "remainder" in lines[1]
    encoded = lines[2].split()
    assert encoded[0] == "encoded" and encoded[1:] == ["1", "1", "1", "1", "2"]
    assert "Counter" not in text
