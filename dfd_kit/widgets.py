"""A live drawing pad for Jupyter: draw a face sketch, watch the face appear.

    import dfd_kit
    from dfd_kit.widgets import DrawingPad, default_model
    pad = DrawingPad(default_model())
    pad                       # the last line of a cell displays it

How it works, in the paper's terms (DeepFaceDrawing, Chen et al. 2020, section 5):

* You draw on an ipycanvas ``MultiCanvas``. Layers, bottom to top: the *shadow guidance*
  (the K nearest real sketches of every component, drawn faintly), your ink, the
  component boxes and their labels (optional; above the ink so that drawing never hides
  them), and the live preview of the stroke you are drawing.
* Strokes are kept in Python as point lists and rasterised here with PIL into the sketch
  the model reads (``pad.sketch``, layout size). The browser canvas is only a display.
* When a stroke *ends* the pad re-encodes only the components whose crops changed,
  re-projects them onto the manifold, then runs the feature map and the generator once.
  The shadows of the changed components are recomputed after the face is shown.
* Sliders: the five component weights, male/female bank and K re-project (cheap numpy)
  and re-render; nothing is re-encoded.

All of that model-side bookkeeping is a :class:`dfd_kit.session.Session`, which scripts can
drive without a pad; the pad keeps the canvas, the controls and the messages.

Everything the mouse can do is also a method (``add_stroke``, ``undo``, ``redo``,
``clear``, ``load_sketch``, ``save``), so scripts and tests can drive the pad without a
browser. ``pad.stats`` counts the work done per component (``pad.work_summary()`` as a
table).

The pad keeps the drawing's timeline: every stroke records when the pen went down and for
how long (``pad.timeline``). ``pad.replay()`` makes an animated GIF of the sketch and the
face stroke by stroke; ``pad.save_drawing(path)`` writes the drawing as JSON (strokes,
component weights, K, sex, the model's name and Params hash) and
``DrawingPad.load_drawing(path, model=...)`` opens it in a new pad (``pad.load_drawing``
loads it into an existing one) with the same face. See :mod:`dfd_kit.drawing`.

Two toggles open the lens on the model (:mod:`dfd_kit.inspector`), both off by default:
**inspect** shows every stage for the component under the last stroke (``pad.freeze`` /
``pad.unfreeze`` pin a stage), **manifold map** the component's bank in 2-D with the
drawing's latent, its neighbours and the projected point (``pad.use_bank_sample`` puts a
bank sketch in place of the part).
"""
from __future__ import annotations

import contextlib
import html
import io
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import ipywidgets as W
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas
from PIL import Image

from .config import COMPONENTS, PARTS
from .drawing import PAPER, Drawing, Stroke, fit_to_size, rasterize_stroke, read_drawing, write_drawing
from .errors import DrawingFileError, DrawingModelWarning, SketchError
from .session import Session


# The boxes lie above the ink: their labels stay readable over whatever is drawn.
_LAYER_SHADOW, _LAYER_INK, _LAYER_BOXES, _LAYER_PREVIEW = range(4)
_BOX_COLOURS = {"left_eye": "#1f77b4", "right_eye": "#2ca02c", "nose": "#ff7f0e", "mouth": "#d62728"}
_SHADOW_TINT = np.array([70.0, 90.0, 140.0])   # shadows are drawn bluish-grey, ink is black
_NICE = {"left_eye": "left eye", "right_eye": "right eye", "nose": "nose", "mouth": "mouth",
         "remainder": "remainder"}


def _upload_style(label: str) -> str:
    """CSS for the upload button: its text node ("load sketch (0)") at size 0, the label
    drawn after it instead. Where the style does not apply the button still reads well."""
    text = json.dumps(label)   # a CSS string: JSON's quoting and escapes are valid CSS
    return ("<style>.dfd-upload.widget-upload{font-size:0 !important}"
            ".dfd-upload.widget-upload>i.fa{font-size:var(--jp-widgets-font-size,13px);margin-right:0.4em}"
            f".dfd-upload.widget-upload::after{{content:{text};font-size:var(--jp-widgets-font-size,13px)}}"
            "</style>")


def default_model(shadows: bool = True):
    """The model the notebooks use: ``dfd_kit.load()``, which honours ``$DFD_PARAMS``."""
    import dfd_kit

    return dfd_kit.load(shadows=shadows)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


_LOAD_DRAWING_DOC = """Open a drawing saved by :meth:`DrawingPad.save_drawing` (or the save button).

    ``DrawingPad.load_drawing(path, model=None, **options)``, on the class, makes a new pad
    with it (``options`` as for ``DrawingPad``); ``model=None`` loads the bundled model the
    file names if it is one, else :func:`default_model`; pass the notebook's model to reuse
    it. ``pad.load_drawing(path)``, on a pad, replaces that pad's drawing with it (undoable,
    like loading a sketch). Either way the strokes (with their times), the component
    weights, K and sex are restored and the face is generated once; with the same model it
    is the saved face, pixel for pixel. ``path`` may also be the file's bytes.

    A drawing made with another model (other name or Params hash, or another sketch size)
    is loaded with a :class:`~dfd_kit.errors.DrawingModelWarning` that says what differs.
    A file that is not a drawing (not JSON, another format or version, missing or
    malformed entries) raises :class:`~dfd_kit.errors.DrawingFileError` and changes nothing.
    Returns the pad."""


class _PadOrClassMethod:
    """A method that is a classmethod when called on the class and an ordinary method when
    called on an instance: ``DrawingPad.load_drawing(path)`` opens a new pad,
    ``pad.load_drawing(path)`` loads into that pad (the issue asks for the first form; the
    second is what the upload button needs)."""

    def __init__(self, on_class: str, on_instance: str, doc: str):
        self.on_class, self.on_instance, self.__doc__ = on_class, on_instance, doc

    def __get__(self, obj, cls=None):
        if obj is None:
            return getattr(cls, self.on_class)
        return getattr(obj, self.on_instance)


class DrawingPad(W.VBox):
    """Draw a sketch, see the generated face and the shadow guidance update live.

    model: a loaded :class:`dfd_kit.DeepFaceDrawing` (default: :func:`default_model`).
    display_size: canvas size in screen pixels (default: at least 512; strokes are scaled
    to the model's layout). face_size: the face's size on screen (default 320, so that
    both fit side by side in a notebook). width: default pen width in sketch pixels.
    folder: where the save button writes PNGs (default: the current directory).
    generate: produce the first face (for the blank canvas) right away.
    eraser_width: default eraser width in sketch pixels (default: three pen widths, so that
    a stroke drawn over a line clears it in one go; the width slider remembers a width
    per tool).
    """

    def __init__(self, model=None, display_size: Optional[int] = None, face_size: int = 320,
                 width: Optional[float] = None,
                 folder=".", sex: str = "male", k: Optional[int] = None, shadows: bool = True,
                 shadow_opacity: float = 0.5, show_boxes: bool = False, generate: bool = True,
                 eraser_width: Optional[float] = None):
        self.model = default_model() if model is None else model
        lay = self.model.layout
        self.size = lay.size
        self.display_size = int(display_size or max(512, self.size))
        self.scale = self.display_size / self.size
        self.face_size = int(face_size)
        self.has_shadows = bool(getattr(self.model, "sketch_decoders", None))

        # drawing state: a base image (blank or a loaded sketch) plus strokes on top
        self._base = np.full((self.size, self.size), PAPER, np.uint8)
        self._strokes: List[Stroke] = []
        self._undo: List[tuple] = []
        self._redo: List[tuple] = []
        self._img = Image.fromarray(self._base.copy())
        self._current: Optional[List[Tuple[float, float]]] = None   # display coordinates
        self._current_eraser = False
        self._current_t0 = 0.0
        self._clock0 = time.monotonic()   # stroke times are seconds since this
        self._quiet = False               # True while settings are applied together (load_drawing)
        self._uid = uuid.uuid4().hex[:12]

        # the model's side: one incremental engine (dfd_kit.session), the pad is its view
        self.session = Session(self.model)
        self.latency: Optional[float] = None
        self.shadow_latency: Optional[float] = None
        self.error: Optional[str] = None
        self.last_saved: Optional[tuple] = None
        # the lens (stage inspector, manifold map): made when first shown, so the plain pad
        # neither builds nor imports them
        self.last_component = "left_eye"   # the component under the last stroke
        self.inspector = None
        self.manifold_map = None
        self.lens_latency: Optional[float] = None

        self._build_ui(width, eraser_width, folder, sex, k, shadows, shadow_opacity, show_boxes)
        super().__init__([self._top, self._lens_box, self.error_area, self._style])
        self.add_class("dfd-pad")
        self.add_class(f"dfd-pad-{self._uid}")   # lets the display's script find this pad
        self._draw_boxes()
        self._redraw_ink()
        self._draw_shadow_layer()
        if generate:
            self._update("start")

    # ------------------------------------------------------------------ UI
    def _build_ui(self, width, eraser_width, folder, sex, k, shadows, shadow_opacity, show_boxes):
        D = self.display_size
        self.canvas = MultiCanvas(4, width=D, height=D)
        self.canvas.layout.width = f"{D}px"
        self.canvas.layout.height = f"{D}px"
        self.canvas.layout.border = "1px solid #999"
        self.canvas.add_class("dfd-canvas")
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(self._on_mouse_move)
        self.canvas.on_mouse_up(self._on_mouse_up)
        self.canvas.on_mouse_out(self._on_mouse_out)
        self.canvas.on_touch_start(self._on_touch_start)
        self.canvas.on_touch_move(self._on_touch_move)
        self.canvas.on_touch_end(self._on_touch_end)
        self.canvas.on_touch_cancel(self._on_touch_cancel)
        self.canvas.on_client_ready(self._redraw_all)

        s = {"description_width": "initial"}
        self.tool = W.ToggleButtons(options=[("pen", "pen"), ("eraser", "eraser")], value="pen",
                                    tooltips=["draw", "erase"], style={"button_width": "72px"})
        default_w = float(width) if width else float(max(1, round(1.5 * self.size / 256)))
        w_max = max(8.0, self.size / 32)
        # The eraser gets its own, wider default: at the pen's width a hand-drawn erasing
        # stroke never quite covers a line and leaves its edges behind.
        eraser_w = float(eraser_width) if eraser_width else min(w_max, 3 * default_w)
        self._widths = {"pen": default_w, "eraser": eraser_w}
        self.width_slider = W.FloatSlider(value=default_w, min=0.5, max=w_max, step=0.5,
                                          description="width", continuous_update=False, style=s,
                                          layout=W.Layout(width="220px"))
        self.tool.observe(self._on_tool, "value")
        b = W.Layout(width="auto")
        self.undo_button = W.Button(description="undo", icon="undo", layout=b)
        self.redo_button = W.Button(description="redo", icon="repeat", layout=b)
        self.clear_button = W.Button(description="clear", icon="trash", layout=b)
        self.undo_button.on_click(lambda _: self.undo())
        self.redo_button.on_click(lambda _: self.redo())
        self.clear_button.on_click(lambda _: self.clear())
        self.boxes_toggle = W.ToggleButton(value=show_boxes, description="boxes", icon="th-large",
                                           tooltip="show the component boxes", layout=b)
        self.boxes_toggle.observe(lambda ch: self._draw_boxes(), "value")
        self.upload = W.FileUpload(accept="image/png,image/jpeg,.png,.jpg,.jpeg,.json,application/json",
                                   multiple=False, description="load sketch", icon="upload", layout=b,
                                   tooltip="start from a PNG or JPEG sketch, or open a drawing saved as "
                                           ".json (by the save button or pad.save_drawing)")
        self.upload.add_class("dfd-upload")
        self.upload.observe(self._on_upload, "value")
        # ipywidgets' upload button always appends the number of files it holds, "(0)" here
        # (the pad empties it after each load); this style shows the label without it.
        self._style = W.HTML(value=_upload_style(self.upload.description), layout=W.Layout(display="none"))
        self.folder = W.Text(value=str(folder), description="folder", style=s, layout=W.Layout(width="200px"))
        self.save_button = W.Button(description="save", icon="save", layout=b,
                                    tooltip="write sketch_*.png, face_*.png and drawing_*.json (the strokes, "
                                            "to load again or replay) into the folder")
        self.save_button.on_click(lambda _: self._save_clicked())
        self.save_label = W.HTML(value="")
        self.save_label.add_class("dfd-saved")

        F = self.face_size
        self.face = W.Image(format="png", width=F, height=F)
        self.face.layout.width = f"{F}px"
        self.face.layout.height = f"{F}px"
        self.face.layout.border = "1px solid #999"
        self.face.add_class("dfd-face")
        self.status = W.HTML(value="")
        self.status.add_class("dfd-status")

        self.weight_sliders: Dict[str, W.FloatSlider] = {}
        for c in COMPONENTS:
            sl = W.FloatSlider(value=self.model.config.blend_weight, min=0.0, max=1.0, step=0.05,
                               description=_NICE[c], continuous_update=False, style={"description_width": "75px"},
                               layout=W.Layout(width="310px"))
            sl.observe(lambda ch, c=c: self._on_weight(c), "value")
            self.weight_sliders[c] = sl
        self.sex_toggle = W.ToggleButtons(options=["male", "female"], value=sex,
                                          style={"button_width": "70px"})
        self.sex_toggle.observe(lambda ch: self._on_bank_change("sex"), "value")
        n_min = min(len(bank[c]) for bank in self.model.banks.values() for c in COMPONENTS)
        k_max = max(2, min(n_min, 30))
        k0 = int(self.model.config.k if k is None else k)
        self.k_slider = W.IntSlider(value=min(max(k0, 2), k_max), min=2, max=k_max, description="K",
                                    continuous_update=False, style={"description_width": "75px"},
                                    layout=W.Layout(width="310px"))
        self.k_slider.observe(lambda ch: self._on_bank_change("K"), "value")
        self.shadow_toggle = W.Checkbox(value=bool(shadows and self.has_shadows), description="shadows",
                                        indent=False, disabled=not self.has_shadows,
                                        layout=W.Layout(width="90px"))
        self.shadow_toggle.observe(lambda ch: self._on_shadow_toggle(), "value")
        self.opacity_slider = W.FloatSlider(value=float(shadow_opacity), min=0.0, max=1.0, step=0.05,
                                            description="opacity", continuous_update=False,
                                            disabled=not self.has_shadows, style={"description_width": "50px"},
                                            layout=W.Layout(width="210px"))
        self.opacity_slider.observe(lambda ch: self._draw_shadow_layer(), "value")
        self.error_area = W.HTML(value="")
        self.error_area.add_class("dfd-error")
        self.inspect_toggle = W.ToggleButton(value=False, description="inspect", icon="search", layout=b,
                                             tooltip="show every stage for one component, live")
        self.inspect_toggle.add_class("dfd-inspect-toggle")
        self.map_toggle = W.ToggleButton(value=False, description="manifold map", icon="braille", layout=b,
                                         tooltip="show the component's feature bank in 2-D, live")
        self.map_toggle.add_class("dfd-map-toggle")
        self.inspect_toggle.observe(lambda ch: self._on_lens_toggle(), "value")
        self.map_toggle.observe(lambda ch: self._on_lens_toggle(), "value")
        self._lens_box = W.VBox([])

        tools = W.HBox([self.tool, self.width_slider])
        edit = W.HBox([self.undo_button, self.redo_button, self.clear_button, self.boxes_toggle, self.upload])
        save = W.HBox([self.folder, self.save_button])
        left = W.VBox([self.canvas, tools, edit, save, self.save_label])
        right = W.VBox([self.face, self.status,
                        W.HTML("<b>component weights</b><br><small>1 = follow the data, 0 = follow your drawing</small>"),
                        *self.weight_sliders.values(),
                        W.HBox([self.sex_toggle]), self.k_slider,
                        W.HBox([self.shadow_toggle, self.opacity_slider]),
                        W.HBox([self.inspect_toggle, self.map_toggle])],
                       layout=W.Layout(width=f"{max(F, 320)}px"))
        self._top = W.HBox([left, right], layout=W.Layout(flex_flow="row wrap", grid_gap="12px"))
        self._sync_buttons()

    def _sync_buttons(self):
        self.undo_button.disabled = not self._undo
        self.redo_button.disabled = not self._redo

    # -------------------------------------------------------------- state
    @property
    def sketch(self) -> np.ndarray:
        """The rasterised drawing the model sees: uint8 (size, size), dark on white."""
        return np.array(self._img, dtype=np.uint8)

    @property
    def strokes(self) -> Tuple[Stroke, ...]:
        return tuple(self._strokes)

    @property
    def part_weights(self) -> Dict[str, float]:
        return {c: float(s.value) for c, s in self.weight_sliders.items()}

    @property
    def sex(self) -> str:
        return self.sex_toggle.value

    @property
    def k(self) -> int:
        return int(self.k_slider.value)

    @property
    def result(self):
        """The latest :class:`~dfd_kit.pipeline.GenerationResult` (the session's)."""
        return self.session.result

    @property
    def stats(self) -> dict:
        """Work done per component (the session's counters; :meth:`work_summary` as a table)."""
        return self.session.stats

    @property
    def timings(self) -> Dict[str, float]:
        """The last update's stages, in seconds."""
        return self.session.timings

    @property
    def frozen(self) -> frozenset:
        """The pinned stages, as {(stage, component), ...} (see :meth:`freeze`)."""
        return self.session.frozen

    @property
    def has_decoders(self) -> bool:
        """Whether the model has its sketch decoders (shadows, the inspector's sketches)."""
        return bool(getattr(self.model, "sketch_decoders", None))

    @property
    def timeline(self) -> List[dict]:
        """The strokes of the drawing, in order, with their times: one dict per stroke with
        ``t`` (seconds since the pad opened when the pen went down), ``duration``, ``tool``,
        ``width`` and ``points`` (how many). The strokes themselves: :attr:`strokes`."""
        return [{"t": round(s.t, 3), "duration": round(s.duration, 3), "tool": "eraser" if s.eraser else "pen",
                 "width": s.width, "points": len(s.points)} for s in self._strokes]

    def _tool_width(self, eraser: bool) -> float:
        tool = "eraser" if eraser else "pen"
        if self.tool.value == tool:
            return float(self.width_slider.value)
        return self._widths[tool]

    def _state(self):
        return (self._base, tuple(self._strokes))

    def _push(self):
        self._undo.append(self._state())
        self._redo.clear()

    def _restore(self, state):
        self._base, strokes = state
        self._strokes = list(strokes)
        img = Image.fromarray(self._base.copy())
        for s in self._strokes:
            rasterize_stroke(img, s)
        self._img = img

    # ---------------------------------------------------------- the lens
    def freeze(self, stage: str, component: Optional[str] = None):
        """Pin one stage's current output for one component (default: the inspector's):
        ``"embedding"`` (the latent: new strokes in the part change nothing after the
        encoder), ``"projection"`` (the blended vector: neither strokes nor its weight
        slider move it) or ``"mapping"`` (its feature map). The face is regenerated, and
        from then on only the stages downstream of the pin follow the drawing's other
        changes. :meth:`unfreeze` lets go. The drawing itself is not touched."""
        self.session.freeze(stage, component or self._lens_component())
        self._update("freeze")

    def unfreeze(self, stage: Optional[str] = None, component: Optional[str] = None):
        """Let go of pinned stages: one (``stage`` of ``component``), all of a stage or of a
        component, or every pin (no arguments); the face follows the drawing again."""
        if self.session.unfreeze(stage, component):
            self._update("unfreeze")

    def use_bank_sample(self, component: str, row: int):
        """Put bank sample ``row`` (of the current sex's bank) in place of ``component``:
        its projection stage is pinned to that sample's latent, as if the drawing projected
        exactly onto it. :meth:`unfreeze` ``("projection", component)`` goes back."""
        self.session.use_bank_sample(component, row, self.sex)
        self._update(f"{_NICE[component]} from bank #{int(row)}")

    def decode_rows(self, component: str, sex: str, rows) -> np.ndarray:
        """Bank rows -> decoded sketches (N, S, S), each decoded once (:meth:`Session.decode_rows`)."""
        return self.session.decode_rows(component, sex, rows)

    def _component_under_last_stroke(self, touched) -> str:
        """Of the touched components, the part whose box holds most of the last stroke
        (the boxes overlap: a mouth stroke may touch the nose box), ties going to the box
        whose centre is nearest the stroke's; the remainder if no part was touched."""
        parts = [c for c in PARTS if c in touched]
        if not parts or not self._strokes:
            return parts[0] if parts else "remainder"
        pts = np.asarray(self._strokes[-1].points, np.float64).reshape(-1, 2)
        # points every pixel or so along the stroke, so that a long straight segment counts
        steps = [np.linspace(a, b, max(2, int(np.hypot(*(b - a))) + 1)) for a, b in zip(pts[:-1], pts[1:])]
        pts = np.concatenate(steps) if steps else pts
        centre = pts.mean(axis=0)

        def score(c):
            b = self.model.layout.box(c)
            inside = ((pts[:, 0] >= b.x) & (pts[:, 0] < b.x + b.size) &
                      (pts[:, 1] >= b.y) & (pts[:, 1] < b.y + b.size)).sum()
            return int(inside), -float(np.hypot(*(centre - (b.x + b.size / 2, b.y + b.size / 2))))
        return max(parts, key=score)

    def _lens_component(self) -> str:
        if self.inspector is not None:
            return self.inspector.component
        return self.last_component

    def _on_lens_toggle(self):
        from .inspector import ManifoldMap, StageInspector

        try:
            if self.inspect_toggle.value and self.inspector is None:
                self.inspector = StageInspector(self)
            if self.map_toggle.value and self.manifold_map is None:
                self.manifold_map = ManifoldMap(self)
        except Exception as e:   # e.g. ipympl missing: the pad keeps working
            self._show_error(f"could not open the panel: {type(e).__name__}: {e}")
        self._lens_box.children = tuple(
            p.widget for p, on in ((self.inspector, self.inspect_toggle.value),
                                   (self.manifold_map, self.map_toggle.value)) if p is not None and on)
        self._refresh_lens()

    def _refresh_lens(self):
        """Bring the shown panels up to date (after the face and the shadows)."""
        a = time.perf_counter()
        shown = [p for p, on in ((self.inspector, self.inspect_toggle.value),
                                 (self.manifold_map, self.map_toggle.value)) if p is not None and on]
        if not shown:
            return
        try:
            for p in shown:
                p.refresh()
        except Exception as e:
            self._show_error(f"inspector failed: {type(e).__name__}: {e}")
        self.lens_latency = time.perf_counter() - a

    # --------------------------------------------------- public drawing API
    def add_stroke(self, points: Iterable[Sequence[float]], width: Optional[float] = None,
                   eraser: bool = False, update: bool = True, t: Optional[float] = None,
                   duration: float = 0.0) -> Stroke:
        """Add a stroke through ``points`` [(x, y), ...] in sketch pixels (0..size), then
        update the face (only the components it touches are re-encoded). ``width``: in
        sketch pixels (default: the pen's or the eraser's width). ``t``: when it began, in
        seconds since the pad opened (default: now), ``duration``: how long it took; both
        go into the timeline."""
        t0 = time.perf_counter()
        pts = tuple((float(x), float(y)) for x, y in points)
        if not pts:
            raise ValueError("a stroke needs at least one point")
        when = time.monotonic() - self._clock0 if t is None else float(t)
        stroke = Stroke(pts, float(self._tool_width(eraser) if width is None else width), bool(eraser),
                        max(0.0, when), max(0.0, float(duration)))
        self._push()
        self._strokes.append(stroke)
        rasterize_stroke(self._img, stroke)
        with hold_canvas():
            self.canvas[_LAYER_PREVIEW].clear()
            self._draw_stroke(self.canvas[_LAYER_INK], stroke)
        self._sync_buttons()
        if update:
            self._update("stroke", t0)
        return stroke

    def undo(self) -> bool:
        """Undo the last stroke, clear or load. Returns False if there was nothing to undo."""
        if not self._undo:
            return False
        t0 = time.perf_counter()
        self._redo.append(self._state())
        self._restore(self._undo.pop())
        self._after_edit("undo", t0)
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        t0 = time.perf_counter()
        self._undo.append(self._state())
        self._restore(self._redo.pop())
        self._after_edit("redo", t0)
        return True

    def clear(self):
        """Blank the page (undoable)."""
        t0 = time.perf_counter()
        self._push()
        self._restore((np.full((self.size, self.size), PAPER, np.uint8), ()))
        self._after_edit("clear", t0)

    def load_sketch(self, sketch, name: Optional[str] = None):
        """Replace the drawing with a sketch (path, image file bytes, PIL image or array; it
        is normalised to the model's layout). Undoable. Raises SketchError if unreadable
        (``name``: what the message calls the sketch, e.g. an uploaded file's name)."""
        t0 = time.perf_counter()
        base = self.model.normalise(sketch) if name is None else self.model.normalise(sketch, name=name)
        self._push()
        self._restore((base, ()))
        self._after_edit("load", t0)

    def save(self, folder=None) -> Tuple[Path, Optional[Path]]:
        """Write the sketch and the current face as PNGs into ``folder`` (default: the
        folder box, else the current directory): sketch_YYYYmmdd-HHMMSS.png and
        face_YYYYmmdd-HHMMSS.png, and the drawing (:meth:`save_drawing`) beside them as
        drawing_YYYYmmdd-HHMMSS.json. Returns (sketch_path, face_path or None if no face);
        ``pad.last_saved`` is (sketch_path, face_path, drawing_path)."""
        folder = Path(folder if folder is not None else (self.folder.value.strip() or ".")).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n, suffix = 0, ""
        while any((folder / f"{kind}_{stamp}{suffix}.{ext}").exists()
                  for kind, ext in (("sketch", "png"), ("face", "png"), ("drawing", "json"))):
            n += 1
            suffix = f"-{n}"
        sketch_path = folder / f"sketch_{stamp}{suffix}.png"
        Image.fromarray(self.sketch).save(sketch_path)
        face_path = None
        # Only a matching pair: after a failed generation the face shown is the previous
        # drawing's, and saving it beside the new sketch would pair the wrong two.
        face_matches = (self.result is not None and self.result.image is not None
                        and np.array_equal(self.result.sketch, self.sketch))
        if face_matches:
            face_path = folder / f"face_{stamp}{suffix}.png"
            Image.fromarray(self.result.image).save(face_path)
        drawing_path = self.save_drawing(folder / f"drawing_{stamp}{suffix}.json")
        self.last_saved = (sketch_path, face_path, drawing_path)
        self.save_label.value = "saved " + ", ".join(f"<code>{html.escape(str(p))}</code>"
                                                     for p in self.last_saved if p)
        if self.result is not None and not face_matches:
            self.save_label.value += " (no face: the face shown is not this drawing's; fix the error and save again)"
        return sketch_path, face_path

    # ------------------------------------------- timeline, replay, drawing files
    def drawing(self) -> Drawing:
        """The drawing as data (:class:`dfd_kit.drawing.Drawing`): page, strokes with their
        times, the component weights, K, sex, and the model's name and Params hash."""
        base = None if (self._base == PAPER).all() else self._base.copy()
        return Drawing(base, tuple(self._strokes), self.part_weights, self.k, self.sex, self.model.name,
                       self._params_hash(), self.size, getattr(self.model, "precision", "fp32"))

    def _params_hash(self) -> Optional[str]:
        try:
            return self.model.params_hash
        except OSError:   # its Params folder went away since it was loaded: keep the drawing anyway
            return None

    def save_drawing(self, path) -> Path:
        """Write the drawing as one JSON file (:mod:`dfd_kit.drawing`: strokes with their
        times, the component weights, K, sex, the model's name and a sha256 of its Params;
        ``.json`` is added to a path without a suffix). Load it with :meth:`load_drawing`,
        here or on another machine, to get the same sketch and, with the same model, the
        same face. Returns the path written."""
        return write_drawing(path, self.drawing())

    def _load_drawing(self, source, name: Optional[str] = None, _stacklevel: int = 2) -> "DrawingPad":
        """``pad.load_drawing(path)``: see :attr:`load_drawing`."""
        t0 = time.perf_counter()
        d = read_drawing(source, name)     # every check first: a bad file changes nothing
        what = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the drawing")
        differs = self._model_differences(d)
        if differs:
            warnings.warn(f"{what} was made with another model than this pad's ({differs}). Its strokes, "
                          "weights, K and sex are loaded, but the face will not be the one saved. To reproduce "
                          f"it exactly, load the model it names (dfd_kit.load({d.model_name!r}) for a bundled "
                          "one, else its Params folder) and open the drawing with "
                          "DrawingPad.load_drawing(path, model=that_model).", DrawingModelWarning,
                          stacklevel=_stacklevel)
        k = d.k
        if k > self.k_slider.max:
            warnings.warn(f"{what} uses K = {k}, more neighbours than this model's banks allow here; "
                          f"using K = {self.k_slider.max}", DrawingModelWarning, stacklevel=_stacklevel)
            k = self.k_slider.max
        base, strokes = fit_to_size(d, self.size)
        self._push()
        with self._settings_together():
            for c, v in d.part_weights.items():
                self.weight_sliders[c].value = v
            self.sex_toggle.value = d.sex
            self.k_slider.value = k
        self._restore((np.array(base, np.uint8), strokes))
        # new strokes continue the loaded drawing's timeline
        end = max((st.t + st.duration for st in strokes), default=0.0)
        self._clock0 = time.monotonic() - end
        self._after_edit("load drawing", t0)
        return self

    load_drawing = _PadOrClassMethod("_open_drawing", "_load_drawing", _LOAD_DRAWING_DOC)

    @contextlib.contextmanager
    def _settings_together(self):
        """Set several controls without an update for each; the caller updates once."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _model_differences(self, d: Drawing) -> str:
        mine, theirs = [], []
        if d.model_name != self.model.name:
            theirs.append(f"model {d.model_name!r}")
            mine.append(f"{self.model.name!r}")
        mine_hash = self._params_hash()
        if d.params_hash != mine_hash:
            theirs.append(f"Params sha256 {(d.params_hash or 'unknown')[:12]}")
            mine.append(f"sha256 {(mine_hash or 'unknown')[:12]}")
        precision = getattr(self.model, "precision", "fp32")
        if d.precision is not None and d.precision != precision:
            theirs.append(f"{d.precision} arithmetic")
            mine.append(f"{precision}")
        if d.size != self.size:
            theirs.append(f"{d.size}-pixel sketches")
            mine.append(f"{self.size}-pixel ones, so the strokes are scaled")
        if not theirs:
            return ""
        return f"the file names {', '.join(theirs)}; this pad has {', '.join(mine)}"

    @classmethod
    def _open_drawing(cls, source, model=None, name: Optional[str] = None, **pad_options) -> "DrawingPad":
        """``DrawingPad.load_drawing(path, model=None, **options)``: see :attr:`load_drawing`."""
        d = read_drawing(source, name)   # a bad file fails before any model is loaded
        if model is None:
            import dfd_kit

            bundled = d.model_name in dfd_kit.BUNDLED and (Path(dfd_kit.PARAMS_ROOT) / d.model_name / "config.json").is_file()
            model = dfd_kit.load(d.model_name) if bundled else default_model()
        pad_options.pop("generate", None)   # the drawing's face is generated once, below
        pad = cls(model, generate=False, **pad_options)
        pad._load_drawing(source, name, _stacklevel=3)
        pad._undo.clear()   # a new pad: nothing before the drawing to go back to
        pad._sync_buttons()
        return pad

    def replay(self, path=None, seconds_per_stroke: float = 0.5, hold: float = 2.0, speed: Optional[float] = None,
               panel: Optional[int] = None, progress: Optional[bool] = None):
        """An animated GIF of this drawing being made: the sketch (the newest stroke's ink in
        red) and the face beside it, one frame for the starting page and one after each
        stroke of :attr:`strokes`, with the pad's current weights, sex and K.

        path: where to write it (".gif" is added to a path without a suffix); None returns
        the GIF's bytes (``IPython.display.Image(pad.replay())`` shows it in a notebook).
        seconds_per_stroke: how long each frame shows; hold: how long the last one stays;
        speed: if given, frames follow the recorded times instead, ``speed`` times faster
        (each between 0.05 and 3 s). panel: the size of sketch and face in the GIF
        (default: the model's sketch size). progress: a tqdm bar (default: from 20
        strokes on). GIF only: no video writer is among the kit's dependencies.
        Returns the path written, or the bytes."""
        from .drawing import replay_gif

        return replay_gif(self.model, self._base, tuple(self._strokes), self.part_weights, self.sex, self.k, path,
                          seconds_per_stroke, hold, speed, panel, progress)

    def work_summary(self) -> str:
        """What the pad has computed so far, as a small table: per component, how often it
        was encoded, projected, feature-decoded and shadowed (``pad.stats`` in words)."""
        st = self.stats
        names = [_NICE[c] for c in COMPONENTS]
        rows = [("encoded", "encoded"), ("projected", "projected"), ("feature map decoded", "feature_decoded"),
                ("shadow computed", "shadowed"), ("neighbour sketches decoded", "decoded_rows")]
        head = max(len(r[0]) for r in rows)
        widths = [max(len(n), 4) for n in names]
        ms = f"{self.latency * 1000:.0f} ms" if self.latency is not None else "none yet"
        def n(count, word):
            return f"{count} {word}{'' if count == 1 else 's'}"

        lines = [f"{n(st['generated'], 'face')} generated in {n(st['updates'], 'update')}; the last update "
                 f"took {ms}.",
                 " " * head + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
        for label, key in rows:
            lines.append(label.ljust(head) + "  " + "  ".join(str(st[key][c]).rjust(w)
                                                                for c, w in zip(COMPONENTS, widths)))
        return "\n".join(lines)

    def _ipython_display_(self, **kwargs):
        """Display the pad, a note for a reopened notebook, and a script that scrolls the pad
        into view. After Run All, JupyterLab has scrolled to the last cell and the page
        keeps it there while the pad's output grows above it; the script brings the pad
        back into view once, when it appears. A reopened notebook has no pad (it lives in
        the kernel) and JupyterLab says only "model not found": the note says to run the
        cells again, and the script, which runs only while the pad is live (a reopened
        notebook's outputs are not trusted, so their scripts do not run), hides it."""
        from IPython.display import display

        display(self._repr_mimebundle_(**kwargs), raw=True)
        display({"text/html": _NOTE.format(uid=self._uid)}, raw=True)
        display({"application/javascript": _SCROLL_JS.replace("UID", self._uid)}, raw=True)

    def _save_clicked(self):
        try:
            self.save()
        except Exception as e:   # e.g. a read-only folder: say so, keep the drawing
            self._show_error(f"could not save: {type(e).__name__}: {e}")

    def _after_edit(self, why, t0):
        self._redraw_ink()
        self._sync_buttons()
        self._update(why, t0)

    # ------------------------------------------------------- event handlers
    def _to_sketch(self, x, y) -> Tuple[float, float]:
        return float(x) / self.scale, float(y) / self.scale

    def _on_mouse_down(self, x, y):
        self._begin(x, y)

    def _on_mouse_move(self, x, y):
        self._extend(x, y)   # only the preview layer; the model never runs here

    def _on_mouse_up(self, x, y):
        if self._current is not None:
            self._extend(x, y)
        self._finish()

    def _on_mouse_out(self, x, y):
        self._finish()

    def _on_touch_start(self, touches):
        if touches:
            self._begin(*touches[0])

    def _on_touch_move(self, touches):
        if touches:
            self._extend(*touches[0])

    def _on_touch_end(self, touches):
        # the browser lists the fingers still down: the lifted one is not among them
        self._finish()

    def _on_touch_cancel(self, touches):
        self._current = None
        self.canvas[_LAYER_PREVIEW].clear()

    def _begin(self, x, y):
        self._current = [(float(x), float(y))]
        self._current_eraser = self.tool.value == "eraser"
        self._current_t0 = time.monotonic()
        layer = self.canvas[_LAYER_PREVIEW]
        w = float(self.width_slider.value) * self.scale
        with hold_canvas():
            layer.clear()
            layer.fill_style = self._preview_colour()
            layer.fill_circle(float(x), float(y), max(w / 2, 0.75))

    def _extend(self, x, y):
        if self._current is None:
            return
        x, y = float(x), float(y)
        px, py = self._current[-1]
        if (x - px) ** 2 + (y - py) ** 2 < 0.25:
            return
        self._current.append((x, y))
        layer = self.canvas[_LAYER_PREVIEW]
        with hold_canvas():   # one message per mouse move
            layer.stroke_style = self._preview_colour()
            layer.line_width = float(self.width_slider.value) * self.scale
            layer.line_cap = "round"
            layer.stroke_line(px, py, x, y)

    def _finish(self):
        if self._current is None:
            return
        pts = [self._to_sketch(x, y) for x, y in self._current]
        self._current = None
        try:
            self.add_stroke(pts, eraser=self._current_eraser, t=self._current_t0 - self._clock0,
                            duration=time.monotonic() - self._current_t0)
        except Exception as e:   # never let a handler lose the drawing
            self._show_error(f"{type(e).__name__}: {e}")

    def _preview_colour(self):
        return "rgba(230, 60, 60, 0.45)" if self._current_eraser else "#222"

    def _on_upload(self, change):
        files = change["new"]
        if not files:
            return
        f = files[0] if isinstance(files, (tuple, list)) else next(iter(files.values()))
        name = str(f.get("name") or "the uploaded file")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if name.lower().endswith(".json"):
                    self.load_drawing(bytes(f["content"]), name=name)
                else:
                    self.load_sketch(bytes(f["content"]), name=name)
            self.save_label.value = f"loaded <code>{html.escape(name)}</code>" + "".join(
                f"<div style='color:#8a5300'>&#9888; {html.escape(str(w.message))}</div>" for w in caught)
        except (SketchError, DrawingFileError) as e:   # their messages name the file and say what to do
            self._show_error(str(e))
        except Exception as e:
            self._show_error(f"could not load {name}: {type(e).__name__}: {e}")
        finally:
            try:
                self.upload.value = ()
            except Exception:
                pass

    def _on_weight(self, c):
        if not self._quiet:
            self._update(f"{_NICE[c]} weight")

    def _on_bank_change(self, what):
        if not self._quiet:
            self._update(what)

    def _on_tool(self, change):
        """Each tool keeps its own width: store the old tool's, show the new one's."""
        self._widths[change["old"]] = float(self.width_slider.value)
        self.width_slider.value = self._widths[change["new"]]

    def _on_shadow_toggle(self):
        if self.shadow_toggle.value:
            self._update_shadows()
        self._draw_shadow_layer()

    # ------------------------------------------------------------ the model
    def _update(self, why="update", t0=None):
        """Bring the face up to date with the drawing and the controls through the session,
        which runs only what changed; errors are shown in the pad and never touch the drawing."""
        t0 = time.perf_counter() if t0 is None else t0
        try:
            touched = self.session.update(self.sketch, self.part_weights, self.sex, self.k)
            if touched is None:   # nothing changed
                self.latency = time.perf_counter() - t0
                self._set_status(why, set(), nothing=True)
                return
            self.face.value = _png(self.result.image)
            self.latency = time.perf_counter() - t0
            if touched and len(touched) < len(COMPONENTS):   # a stroke, not a load or a clear
                self.last_component = self._component_under_last_stroke(touched)
            self._clear_error()
            self._set_status(why, touched)
        except Exception as e:
            self.latency = time.perf_counter() - t0
            self._show_error(f"generation failed ({why}): {type(e).__name__}: {e}")
            return
        if self.shadow_toggle.value:
            if self._update_shadows():
                self._draw_shadow_layer()
            self._set_status(why, touched)
        self._refresh_lens()

    def _update_shadows(self) -> bool:
        """Recompute the shadows whose neighbours changed (the session's); True if the
        guidance image changed."""
        if not self.has_shadows or self.result is None:
            return False
        if not self.model.shadows_fit_in_memory():   # warns once; the face still updates
            self.has_shadows = False
            return False
        a = time.perf_counter()
        changed = False
        try:
            changed = self.session.update_shadows()
        except Exception as e:
            self._show_error(f"shadow guidance failed: {type(e).__name__}: {e}")
        self.shadow_latency = time.perf_counter() - a
        return changed

    # ------------------------------------------------------------ drawing
    def _draw_stroke(self, layer, stroke: Stroke):
        s = self.scale
        pts = [(x * s, y * s) for x, y in stroke.points]
        layer.global_composite_operation = "destination-out" if stroke.eraser else "source-over"
        layer.stroke_style = "#000"
        layer.fill_style = "#000"
        # The browser anti-aliases the eraser's edge too, so at the same width it would take
        # only part of the ink's anti-aliased edge and leave a grey outline; one screen pixel
        # more on each side clears everything the sketch's (binary) eraser clears.
        grow = 2.0 if stroke.eraser else 0.0
        layer.line_width = stroke.width * s + grow
        layer.line_cap = "round"
        layer.line_join = "round"
        if len(pts) == 1:
            layer.fill_circle(pts[0][0], pts[0][1], max(stroke.width * s / 2, 0.75) + grow / 2)
        else:
            layer.stroke_lines(pts)
        layer.global_composite_operation = "source-over"

    def _redraw_ink(self):
        layer = self.canvas[_LAYER_INK]
        with hold_canvas():
            layer.clear()
            if (self._base < PAPER).any():
                rgba = np.zeros(self._base.shape + (4,), np.uint8)
                rgba[..., 3] = PAPER - self._base
                layer.save()
                layer.scale(self.scale)
                layer.put_image_data(rgba, 0, 0)
                layer.restore()
            for s in self._strokes:
                self._draw_stroke(layer, s)

    def _draw_shadow_layer(self):
        """Bottom layer: white paper, and the shadow guidance when it is on."""
        layer = self.canvas[_LAYER_SHADOW]
        op = float(self.opacity_slider.value)
        with hold_canvas():
            layer.clear()
            layer.fill_style = "white"
            layer.fill_rect(0, 0, self.display_size, self.display_size)
            shadow = self.session.shadow_image
            if self.shadow_toggle.value and shadow is not None and op > 0:
                ink = (PAPER - shadow.astype(np.float64)) / 255.0 * op
                rgb = 255.0 - ink[..., None] * (255.0 - _SHADOW_TINT)
                rgba = np.empty(shadow.shape + (4,), np.uint8)
                rgba[..., :3] = np.clip(np.round(rgb), 0, 255)
                rgba[..., 3] = 255
                layer.save()
                layer.scale(self.scale)
                layer.put_image_data(rgba, 0, 0)
                layer.restore()

    def _draw_boxes(self):
        layer = self.canvas[_LAYER_BOXES]
        with hold_canvas():
            layer.clear()
            if not self.boxes_toggle.value:
                return
            s = self.scale
            layer.line_width = 1.5
            layer.set_line_dash([6, 4])
            layer.font = "12px sans-serif"
            for c in PARTS:
                b = self.model.layout.box(c)
                layer.stroke_style = _BOX_COLOURS[c]
                layer.global_alpha = 0.6
                layer.stroke_rect(b.x * s, b.y * s, b.size * s, b.size * s)
                # the label on a white plate: this layer lies above the ink, and the plate
                # keeps the label readable where strokes cross it
                layer.global_alpha = 0.8
                layer.fill_style = "white"
                layer.fill_rect(b.x * s + 2, b.y * s + 2, 7 * len(_NICE[c]) + 4, 14)
                layer.global_alpha = 1.0
                layer.fill_style = _BOX_COLOURS[c]
                layer.fill_text(_NICE[c], b.x * s + 4, b.y * s + 13)
            layer.global_alpha = 1.0
            layer.set_line_dash([])

    def _redraw_all(self, *_):
        """A new browser view starts blank: repaint every layer."""
        self._draw_shadow_layer()
        self._draw_boxes()
        self._redraw_ink()
        self.canvas[_LAYER_PREVIEW].clear()

    # ------------------------------------------------------------ messages
    def _set_status(self, why, touched, nothing=False):
        ms = (self.latency or 0) * 1000
        if nothing:
            text = f"{why}: nothing changed ({ms:.0f} ms)"
        else:
            enc = ", ".join(_NICE[c] for c in COMPONENTS if c in touched) or "nothing"
            text = f"{why}: face in <b>{ms:.0f} ms</b> (re-encoded: {enc})"
        if self.shadow_toggle.value and self.shadow_latency is not None:
            text += f"; shadows {self.shadow_latency * 1000:.0f} ms"
        self.status.value = f"<span class='dfd-latency'>{text}</span> · update #{self.stats['updates']}"

    def _show_error(self, message: str):
        self.error = message
        self.error_area.value = (f"<div style='color:#b00020;font-weight:bold'>&#9888; {html.escape(message)}"
                                 "</div><div style='color:#b00020'>Your drawing is kept; undo still works.</div>")

    def _clear_error(self):
        self.error = None
        self.error_area.value = ""


_NOTE = ("<div class='dfd-pad-note dfd-pad-note-{uid}' style='color:#8a5300'>If no drawing pad shows just "
         "above (JupyterLab says <i>Error displaying widget: model not found</i>), the notebook was reopened or "
         "its kernel restarted: the pad lives in the kernel. <b>Run the cells again</b> (Run &#9656; Run All "
         "Cells) to get it back.</div>")

# Runs once where the outputs are trusted (the session that made them): finds this pad,
# hides the note above, and scrolls the pad into view if it is not. It gives up after two
# minutes (another front end, or the pad not rendered); it never throws.
_SCROLL_JS = """
(function () {
  var started = Date.now();
  function step() {
    try {
      var pad = document.querySelector(".dfd-pad-UID");
      if (!pad || !pad.isConnected || pad.getBoundingClientRect().height === 0) {
        if (Date.now() - started < 120000) { setTimeout(step, 250); }
        return;
      }
      var note = document.querySelector(".dfd-pad-note-UID");
      if (note) {
        var box = note.closest(".jp-OutputArea-child") || note;
        box.style.display = "none";
      }
      var canvas = pad.querySelector("canvas") || pad;
      var r = canvas.getBoundingClientRect();
      if (r.top < 0 || r.bottom > (window.innerHeight || document.documentElement.clientHeight)) {
        pad.scrollIntoView({block: "start", inline: "nearest"});
      }
    } catch (e) { /* never disturb the notebook */ }
  }
  setTimeout(step, 0);
})();
"""


__all__ = ["DrawingPad", "Stroke", "default_model", "rasterize_stroke"]
