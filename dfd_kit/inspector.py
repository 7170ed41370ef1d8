"""The drawing pad as a lens on the model: the stage inspector and the manifold map.

Both hang off a :class:`~dfd_kit.widgets.DrawingPad` and follow it live (its "inspect"
and "manifold map" toggles, off by default so the plain pad stays fast):

* :class:`StageInspector` shows one component on its way through the model, in the paper's
  order: the crop the encoder sees and the auto-encoder's reconstruction of its latent
  (Component Embedding); the K bank neighbours, decoded, with their locally-linear weights
  and the projected point decoded beside the raw one (Manifold Projection); a few channels
  of the part's feature map and where it lands in the face map (Feature Mapping); the
  face with the part's box outlined (Image Synthesis). Any of the first three stages can
  be *frozen* for that component (:data:`STAGES`): its current output is pinned, so that
  a learner sees what changes downstream when only one stage moves.
* :class:`ManifoldMap` shows the component's feature bank in 2-D (PCA, fitted once per
  bank and cached: :func:`bank_pca`), the drawing's latent as a live star, its K
  neighbours ringed and the projected point as a cross. Clicking a bank point shows that
  sample's decoded sketch; "use it" puts the sample in place of the component (it pins
  the projection stage to that bank latent), so the face shows what that part would do.

The data behind the panels is plain numpy (:func:`inspect_stage`, :class:`StageView`),
so tests and notebooks can read it without a browser.

Why matplotlib through ``ipympl`` for the map: the kit draws every other figure with
matplotlib already, so the live map is the same kind of figure as notebook 03's static
one; ipympl adds half a megabyte to a Binder image (bqplot needs pandas, plotly a
multi-megabyte front end) and answers clicks with data coordinates. A redraw is rendered
in the kernel (Agg), tens of milliseconds for a bank of a few thousand points.
"""
from __future__ import annotations

import io
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .config import COMPONENTS
from .errors import ConfigError
from .manifold import Projection
from .session import STAGES, check_component, check_stage  # noqa: F401  (STAGES, check_stage: the lens's API)
from .synthesis import to_uint8

STAGE_LABELS = {"embedding": "embedding", "projection": "projection", "mapping": "feature map"}
_NICE = {"left_eye": "left eye", "right_eye": "right eye", "nose": "nose", "mouth": "mouth",
         "remainder": "remainder"}
BOX_COLOURS = {"left_eye": "#1f77b4", "right_eye": "#2ca02c", "nose": "#ff7f0e", "mouth": "#d62728",
               "remainder": "#7f7f7f"}
THUMB = 64            # neighbour thumbnails, screen pixels (smaller when K would not fit)
ROW_WIDTH = 720       # the neighbours' row
PANEL = 128           # the larger panels
N_CHANNELS = 4        # feature-map channels shown


# ------------------------------------------------------------------------------- data

@dataclass
class StageView:
    """One component at every stage of one generation (what :class:`StageInspector` shows)."""
    component: str
    crop: np.ndarray                          # uint8 (S, S): the crop as the encoder sees it
    latent: np.ndarray                        # float32 (D,): the latent used (pinned if frozen)
    reconstruction: Optional[np.ndarray]      # uint8 (S, S): the auto-encoder's decoding of it
    projection: Projection                    # neighbours, weights, projected point, vector
    neighbour_sketches: Optional[np.ndarray]  # uint8 (K, S, S): the neighbours, decoded
    projected_sketch: Optional[np.ndarray]    # uint8 (S, S): the projected point, decoded
    weight: float                             # the component's blend weight w
    channels: np.ndarray                      # float32 (n, S, S): some channels of its feature map
    channel_ids: np.ndarray                   # int (n,): which ones
    face_map: np.ndarray                      # float32 (size, size): mean |activation| of the face map
    box: Tuple[int, int, int]                 # (x, y, size): the part's place in the face map
    face: np.ndarray                          # uint8 (size, size, 3): the face, box outlined
    frozen: Tuple[str, ...] = ()              # stages pinned for this component

    @property
    def weights(self) -> np.ndarray:
        return self.projection.weights

    @property
    def neighbours(self) -> np.ndarray:
        return self.projection.neighbours


def strongest_channels(feature_map: np.ndarray, n: int = N_CHANNELS) -> np.ndarray:
    """The ``n`` channels of (C, S, S) with the most spatial variation: flat channels show
    nothing of the part's shape."""
    std = np.asarray(feature_map, np.float64).reshape(len(feature_map), -1).std(axis=1)
    return np.sort(np.argsort(-std, kind="stable")[:min(n, len(std))])


def outline_box(image: np.ndarray, box: Tuple[int, int, int], colour: str, width: int = 2) -> np.ndarray:
    """A copy of an RGB (H, W, 3) or grey image with the square box drawn on it."""
    img = Image.fromarray(np.asarray(image)).convert("RGB")
    x, y, s = box
    ImageDraw.Draw(img).rectangle([x, y, x + s - 1, y + s - 1], outline=colour, width=width)
    return np.asarray(img)


def inspect_stage(model, result, component: str, decode_rows: Optional[Callable] = None,
                  channel_ids: Optional[Sequence[int]] = None, frozen: Sequence[str] = ()) -> StageView:
    """The :class:`StageView` of ``component`` in ``result`` (a
    :class:`~dfd_kit.pipeline.GenerationResult` rendered with its feature maps kept).

    The sketches are decoded by the model's sketch decoders, one row at a time (None when
    the model was loaded without them). decode_rows: ``decode_rows(component, sex, rows)
    -> (N, S, S)`` for the bank neighbours, e.g. the pad's, which decodes each bank row
    once. channel_ids: which feature-map channels to show (default:
    :func:`strongest_channels`). frozen: the stages pinned for this component (recorded).
    """
    c = check_component(component)
    if result.feature_map is None or c not in result.feature_maps:
        raise ConfigError("the result has no feature maps: render it with keep_features=True")
    proj = result.projections[c]
    latent = np.asarray(result.latents[c], np.float32)
    has_decoders = bool(getattr(model, "sketch_decoders", None))
    recon = neigh = projected = None
    if has_decoders:
        own = model.decode_neighbours(c, np.stack([latent, np.asarray(proj.projected, np.float32)]))
        recon, projected = to_uint8(own[0]), to_uint8(own[1])
        decode_rows = decode_rows or (lambda comp, sex, rows: decode_bank_rows(model, comp, sex, rows))
        neigh = to_uint8(decode_rows(c, result.sex, proj.neighbours))
    fmap = np.asarray(result.feature_maps[c], np.float32)
    ids = strongest_channels(fmap) if channel_ids is None else np.asarray(channel_ids, int)
    b = model.layout.box(c)
    box = (b.x, b.y, b.size)
    face = outline_box(result.image, box, BOX_COLOURS[c])
    face_map = np.abs(np.asarray(result.feature_map, np.float32)).mean(axis=0)
    return StageView(c, np.asarray(result.crops[c]), latent, recon, proj, neigh, projected,
                     float(result.part_weights[c]), fmap[ids], ids, face_map, box, face, tuple(frozen))


def decode_bank_rows(model, component: str, sex: str, rows: np.ndarray) -> np.ndarray:
    """Bank rows of ``sex`` -> decoded sketches (N, S, S) in about [-1, 1]."""
    bank = model.banks[sex][component]
    vectors = np.stack([np.asarray(bank[int(r)], np.float32) for r in rows]) if len(rows) else \
        np.zeros((0, bank.shape[1]), np.float32)
    return model.decode_neighbours(component, vectors)


# ---------------------------------------------------------------------- PCA per bank

@dataclass
class BankMap:
    """One bank in 2-D: the PCA basis (``plotting.PCA``) and every row's position."""
    pca: object
    xy: np.ndarray     # (N, 2)

    @property
    def explained(self) -> np.ndarray:
        """Fraction of the bank's variance along the two axes (the rest is what the map hides)."""
        return self.pca.explained

    def place(self, latent: np.ndarray) -> np.ndarray:
        return self.pca.transform(np.asarray(latent, np.float64)[None])[0]

    def nearest(self, x: float, y: float) -> int:
        """The bank row drawn nearest to (x, y) on the map."""
        return int(np.argmin(((self.xy - np.array([x, y])) ** 2).sum(axis=1)))


_PCA_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def bank_pca(model, sex: str, component: str) -> BankMap:
    """The :class:`BankMap` of one bank, fitted on first use and cached per model (a
    re-run notebook cell, or a second pad on the same model, fits nothing again)."""
    from .plotting import pca_fit

    c = check_component(component)
    try:
        cache = _PCA_CACHE.setdefault(model, {})
    except TypeError:   # not weak-referenceable: no cache
        cache = {}
    key = (sex, c)
    if key not in cache:
        bank = np.asarray(model.banks[sex][c], np.float64)
        pca = pca_fit(bank)
        cache[key] = BankMap(pca, pca.transform(bank))
    return cache[key]


# ------------------------------------------------------------------------- rendering

def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _resized(a: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(np.asarray(a))
    return np.asarray(img.resize((size, size), Image.NEAREST if img.width < size else Image.BILINEAR))


def colourise(a: np.ndarray, lo: Optional[float] = None, hi: Optional[float] = None) -> np.ndarray:
    """float (H, W) -> uint8 RGB by matplotlib's viridis, scaled to [lo, hi] (default: the
    array's own range)."""
    from matplotlib import colormaps

    a = np.asarray(a, np.float64)
    lo = float(a.min()) if lo is None else lo
    hi = float(a.max()) if hi is None else hi
    t = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (colormaps["viridis"](np.clip(t, 0, 1))[..., :3] * 255).astype(np.uint8)


def strip(images: Sequence[np.ndarray], size: int = THUMB, gap: int = 4) -> np.ndarray:
    """Images side by side at ``size`` px, white gaps; RGB."""
    if not len(images):
        return np.full((size, size, 3), 255, np.uint8)
    tiles = [_resized(np.asarray(Image.fromarray(np.asarray(a)).convert("RGB")), size) for a in images]
    out = np.full((size, len(tiles) * (size + gap) - gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        out[:, i * (size + gap):i * (size + gap) + size] = t
    return out


def weight_bars(weights: np.ndarray, rows: np.ndarray, size: int = THUMB, gap: int = 4) -> str:
    """HTML: one bar per neighbour under its thumbnail, height by |weight| (red if negative),
    labelled with the weight and the bank row."""
    w = np.asarray(weights, np.float64)
    top = max(float(np.abs(w).max()), 1e-9) if len(w) else 1.0
    cells = []
    for wi, r in zip(w, rows):
        h = int(round(28 * abs(wi) / top))
        colour = "#c0392b" if wi < 0 else "#2c7fb8"
        cells.append(f"<div style='width:{size}px;margin-right:{gap}px;text-align:center;line-height:1.2;"
                     f"font-size:{10 if size >= 48 else 8}px'>"
                     f"<div style='height:30px;display:flex;align-items:flex-end;justify-content:center'>"
                     f"<div class='dfd-bar' style='width:60%;height:{h}px;background:{colour}'></div></div>"
                     f"{wi:+.2f}<br><span style='color:#888'>#{int(r)}</span></div>")
    return "<div style='display:flex'>" + "".join(cells) + "</div>"


def _caption(text: str, width: int = PANEL + 20) -> str:
    # ipywidgets' HTML widget sets a line height meant for one-line labels: reset it
    return f"<div style='font-size:11px;line-height:1.3;color:#444;max-width:{width}px'>{text}</div>"


#: The component menus' first entry: follow the component under the last stroke.
FOLLOW = "follow"


class StageInspector:
    """The inspector panel of a pad (``pad.inspector``; shown by its "inspect" toggle).

    ``component``: the one shown, or None for the component under the last stroke.
    ``refresh()`` runs after every update of the pad while the panel is shown;
    ``view`` is the latest :class:`StageView`."""

    def __init__(self, pad):
        import ipywidgets as W

        self.pad = pad
        self.view: Optional[StageView] = None
        self.latency: Optional[float] = None
        self._channels: Dict[str, np.ndarray] = {}   # pinned per component, so the same channels stay in view
        self.picker = W.Dropdown(options=[("under the last stroke", FOLLOW)] + [(_NICE[c], c) for c in COMPONENTS],
                                 value=FOLLOW, description="component", style={"description_width": "initial"},
                                 layout=W.Layout(width="280px"))
        self.picker.observe(lambda ch: self.refresh(), "value")
        self.freeze_boxes = {s: W.Checkbox(value=False, description=f"freeze {STAGE_LABELS[s]}", indent=False,
                                           layout=W.Layout(width="150px")) for s in STAGES}
        for s, box in self.freeze_boxes.items():
            box.observe(lambda ch, s=s: self._on_freeze(s, ch["new"]), "value")
        self._syncing = False

        def img(px):
            im = W.Image(format="png", width=px, height=px)
            im.layout.width = im.layout.height = f"{px}px"
            im.layout.border = "1px solid #ddd"
            return im

        self.crop_image, self.recon_image, self.projected_image = img(PANEL), img(PANEL), img(PANEL)
        self.neighbours_image = W.Image(format="png")
        self.bars = W.HTML()
        self.channels_image = W.Image(format="png")
        self.face_map_image, self.face_image = img(PANEL), img(PANEL)
        self.title = W.HTML()
        self.title.add_class("dfd-inspector-title")
        cap = lambda t: W.HTML(_caption(t))   # noqa: E731
        col = lambda im, t: W.VBox([im, cap(t)])   # noqa: E731
        self.embedding_row = W.HBox([col(self.crop_image, "crop: what the encoder sees"),
                                     col(self.recon_image, "auto-encoder's reconstruction of its latent"),
                                     col(self.projected_image, "the projected point (w = 1), decoded")])
        self.neighbour_caption = W.HTML()
        self.mapping_row = W.HBox([W.VBox([self.channels_image, W.HTML(_caption(
                                       f"{N_CHANNELS} channels of the part's feature map (the most varied)"))]),
                                   col(self.face_map_image, "face map (mean |activation|); the part's box"),
                                   col(self.face_image, "the face; the part's box")])
        self.widget = W.VBox([
            W.HBox([self.picker, *self.freeze_boxes.values()]), self.title,
            W.HTML("<b>1 · component embedding</b>"), self.embedding_row,
            W.HTML("<b>2 · manifold projection</b>"), self.neighbour_caption, self.neighbours_image, self.bars,
            W.HTML("<b>3 · feature mapping · 4 · image synthesis</b>"), self.mapping_row],
            layout=W.Layout(border="1px solid #ccc", padding="6px", margin="8px 0 0 0"))
        self.widget.add_class("dfd-inspector")

    @property
    def component(self) -> str:
        return self.pad.last_component if self.picker.value == FOLLOW else self.picker.value

    def _on_freeze(self, stage, on):
        if self._syncing:
            return
        c = self.component
        try:
            if on:
                self.pad.freeze(stage, c)
            else:
                self.pad.unfreeze(stage, c)
        except Exception as e:   # e.g. nothing generated yet: say so in the pad
            self.pad._show_error(f"could not {'freeze' if on else 'unfreeze'} {stage}: {e}")

    def refresh(self):
        pad = self.pad
        if pad.result is None or pad.result.feature_map is None:
            return
        t0 = time.perf_counter()
        c = self.component
        frozen = tuple(s for s in STAGES if (s, c) in pad.frozen)
        ids = self._channels.get(c)
        v = inspect_stage(pad.model, pad.result, c, pad.decode_rows, ids, frozen)
        self._channels.setdefault(c, v.channel_ids)
        self.view = v
        self._syncing = True
        try:
            for s, box in self.freeze_boxes.items():
                box.value = s in frozen
        finally:
            self._syncing = False
        blank = np.full((8, 8), 255, np.uint8)
        self.crop_image.value = _png(v.crop)
        self.recon_image.value = _png(blank if v.reconstruction is None else v.reconstruction)
        self.projected_image.value = _png(blank if v.projected_sketch is None else v.projected_sketch)
        k = len(v.neighbours)
        self.neighbour_caption.value = _caption(
            f"the K = {k} nearest sketches in the {pad.sex} bank, decoded, and their locally-linear weights "
            f"(sum {v.weights.sum():.2f}); the face uses w = {v.weight:.2f} of the projected point", width=640)
        thumb = max(28, min(THUMB, ROW_WIDTH // k - 4))   # K thumbnails in one row, however large K is
        self.neighbours_image.value = _png(strip(list(v.neighbour_sketches) if v.neighbour_sketches is not None
                                                 else [blank] * k, size=thumb))
        self.neighbours_image.layout.width = f"{k * (thumb + 4) - 4}px"
        self.bars.value = weight_bars(v.weights, v.neighbours, size=thumb)
        lo, hi = float(v.channels.min()), float(v.channels.max())
        self.channels_image.value = _png(strip([colourise(ch, lo, hi) for ch in v.channels], size=PANEL // 2 + 16))
        self.face_map_image.value = _png(outline_box(colourise(v.face_map), v.box, "white"))
        self.face_image.value = _png(v.face)
        pins = ", ".join(STAGE_LABELS[s] for s in frozen)
        self.title.value = (f"<b style='color:{BOX_COLOURS[c]}'>{_NICE[c]}</b>"
                            + (f" · <span style='color:#b35900'>frozen: {pins}</span>" if pins else ""))
        self.latency = time.perf_counter() - t0


class ManifoldMap:
    """The manifold map of a pad (``pad.manifold_map``; shown by its "manifold map" toggle).

    The shown component's bank (the pad's sex) in 2-D, the drawing's latent as a star, its
    K neighbours ringed, the projected point as a cross (and, for a model with query encoders,
    where the search for the neighbours started). Click a point (or call
    :meth:`select`) to see that sample decoded; :meth:`use_selected` ("use it") puts it in
    place of the component; :meth:`back_to_drawing` undoes that."""

    def __init__(self, pad):
        import ipywidgets as W
        from ipympl.backend_nbagg import Canvas, FigureManager
        from matplotlib.figure import Figure

        self.pad = pad
        self.selected: Optional[int] = None
        self.latency: Optional[float] = None
        self._shown: Optional[Tuple[str, str]] = None   # (sex, component) the bank points are of
        self.picker = W.Dropdown(options=[("under the last stroke", FOLLOW)] + [(_NICE[c], c) for c in COMPONENTS],
                                 value=FOLLOW, description="component", style={"description_width": "initial"},
                                 layout=W.Layout(width="280px"))
        self.picker.observe(lambda ch: self.refresh(), "value")
        self.figure = Figure(figsize=(4.4, 4.0), dpi=100)
        self.canvas = Canvas(self.figure)
        with warnings.catch_warnings():   # ipympl's own toolbar trips a traitlets deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            FigureManager(self.canvas, 0)   # ipympl's manager wires the canvas to the browser
        self.canvas.toolbar_visible = False
        self.canvas.header_visible = False
        self.canvas.footer_visible = False
        self.canvas.resizable = False
        self.canvas.add_class("dfd-manifold-canvas")
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.ax = self.figure.add_axes((0.12, 0.12, 0.84, 0.78))
        self.bank_points = self.ax.scatter([], [], s=9, c="#9aa7b8", lw=0, label="bank")
        self.neighbour_points = self.ax.scatter([], [], s=70, facecolors="none", edgecolors="k", lw=1.2,
                                                label="K nearest")
        self.selected_point = self.ax.scatter([], [], s=140, facecolors="none", edgecolors="#ff7f0e", lw=2.2,
                                              label="picked")
        self.projected_point = self.ax.scatter([], [], s=140, marker="X", c="tab:red", edgecolors="white",
                                               lw=0.8, zorder=11, label="projected")
        self.latent_point = self.ax.scatter([], [], s=320, marker="*", c="k", edgecolors="white", lw=1.4,
                                            zorder=12, label="your drawing")
        # a model with query encoders searches from where they put the drawing, not from the star
        self.query_point = self.ax.scatter([], [], s=150, marker="P", c="tab:blue", edgecolors="white", lw=0.8,
                                           zorder=12, label="search starts" if pad.model.query_encoders
                                           else "_nolegend_")
        self.ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
        # Blitting: a full draw (the bank's thousands of points, axes, legend) happens only
        # the first time a bank is shown or when the browser asks; after a stroke only the
        # marks are drawn again over that bank's saved background, a few milliseconds
        # instead of a few tenths.
        self._marks = (self.neighbour_points, self.selected_point, self.projected_point, self.latent_point,
                       self.query_point)
        for a in self._marks:
            a.set_animated(True)
        self._backgrounds: Dict[Tuple[str, str], object] = {}   # (sex, component) -> saved pixels
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self.sample_image = W.Image(format="png", width=PANEL, height=PANEL)
        self.sample_image.layout.width = self.sample_image.layout.height = f"{PANEL}px"
        self.sample_image.layout.border = "1px solid #ddd"
        self.sample_label = W.HTML(_caption("click a point of the bank to see its sketch"))
        self.sample_label.add_class("dfd-manifold-picked")
        self.use_button = W.Button(description="use it", icon="check", disabled=True,
                                   tooltip="put this sample in place of the component (pins its projection)")
        self.use_button.add_class("dfd-use-sample")
        self.back_button = W.Button(description="back to my drawing", icon="undo", disabled=True)
        self.use_button.on_click(lambda _: self.use_selected())
        self.back_button.on_click(lambda _: self.back_to_drawing())
        self.widget = W.VBox([self.picker, W.HBox([self.canvas, W.VBox([
            self.sample_image, self.sample_label, self.use_button, self.back_button])])],
            layout=W.Layout(border="1px solid #ccc", padding="6px", margin="8px 0 0 0"))
        self.widget.add_class("dfd-manifold-map")

    @property
    def component(self) -> str:
        return self.pad.last_component if self.picker.value == FOLLOW else self.picker.value

    @property
    def bank_map(self) -> BankMap:
        return bank_pca(self.pad.model, self.pad.sex, self.component)

    def refresh(self):
        pad = self.pad
        if pad.result is None:
            return
        t0 = time.perf_counter()
        c, sex = self.component, pad.sex
        bm = self.bank_map
        if self._shown != (sex, c):   # new bank: new points, limits and title; the pick is void
            self._shown = (sex, c)
            self.selected = None
            self.bank_points.set_offsets(bm.xy)
            lo, hi = bm.xy.min(axis=0), bm.xy.max(axis=0)
            pad_xy = 0.06 * (hi - lo + 1e-9)
            self.ax.set_xlim(lo[0] - pad_xy[0], hi[0] + pad_xy[0])
            self.ax.set_ylim(lo[1] - pad_xy[1], hi[1] + pad_xy[1])
            e = bm.explained
            self.ax.set_title(f"{_NICE[c]}: the {sex} bank ({len(bm.xy)} sketches)", fontsize=10)
            self.ax.set_xlabel(f"PC 1 ({e[0]:.0%} of variance)", fontsize=8)
            self.ax.set_ylabel(f"PC 2 ({e[1]:.0%})", fontsize=8)
            self.ax.tick_params(labelsize=7)
            self.sample_label.value = _caption("click a point of the bank to see its sketch")
            self.use_button.disabled = True
        res = pad.result
        proj = res.projections[c]
        self.neighbour_points.set_offsets(bm.xy[proj.neighbours])
        self.projected_point.set_offsets(bm.place(proj.projected)[None])
        self.latent_point.set_offsets(bm.place(res.latents[c])[None])
        self.query_point.set_offsets(bm.place(res.queries[c])[None] if c in res.queries else np.zeros((0, 2)))
        self.selected_point.set_offsets(bm.xy[[self.selected]] if self.selected is not None else np.zeros((0, 2)))
        self.back_button.disabled = ("projection", c) not in pad.frozen
        self._blit()
        self.latency = time.perf_counter() - t0

    def _on_draw(self, event):
        """After every full draw: keep the background, then draw the marks over it."""
        self._backgrounds[self._shown] = self.canvas.copy_from_bbox(self.figure.bbox)
        for a in self._marks:
            self.ax.draw_artist(a)

    def _blit(self):
        """Show the marks' new places: over the saved background, or by a full draw when
        there is none (first time, new bank)."""
        if self.canvas.syncing_data_url:
            # No browser view yet (ipympl stops this once one says "initialized"): drawing now
            # would store the picture as the widget's data URL, which ipympl 0.10 writes
            # without its "data:image/png;base64," prefix, and the view then fails to render.
            # The view asks for a full draw when it appears; the marks are set already.
            self.canvas.draw_idle()
            return
        background = self._backgrounds.get(self._shown)
        if background is None:
            self.canvas.draw()   # its draw_event saves the background and draws the marks
            return
        self.canvas.restore_region(background)
        for a in self._marks:
            self.ax.draw_artist(a)
        self.canvas.blit(self.figure.bbox)

    def _on_click(self, event):
        if event.inaxes is not self.ax or event.xdata is None:
            return
        try:
            self.select(self.bank_map.nearest(event.xdata, event.ydata))
        except Exception as e:
            self.pad._show_error(f"manifold map: {type(e).__name__}: {e}")

    def select(self, row: int):
        """Pick bank row ``row`` of the shown component: ring it and show its sketch."""
        c, sex = self.component, self.pad.sex
        n = len(self.pad.model.banks[sex][c])
        if not 0 <= int(row) < n:
            raise ConfigError(f"bank row must be between 0 and {n - 1}, not {row}")
        if self._shown != (sex, c):   # another bank than the one drawn: draw it first
            self.refresh()
        self.selected = int(row)
        if self.pad.has_decoders:
            sketch = to_uint8(self.pad.decode_rows(c, sex, np.array([row]))[0])
            self.sample_image.value = _png(sketch)
        self.sample_label.value = _caption(f"{_NICE[c]} #{row} of the {sex} bank")
        self.use_button.disabled = False
        self.selected_point.set_offsets(self.bank_map.xy[[self.selected]])
        self._blit()

    def use_selected(self):
        """Put the picked sample in place of the component (the pad regenerates the face)."""
        if self.selected is None:
            raise ConfigError("pick a bank point first (click it, or call select(row))")
        self.pad.use_bank_sample(self.component, self.selected)

    def back_to_drawing(self):
        self.pad.unfreeze("projection", self.component)

    def point_position(self, row: int) -> Tuple[float, float]:
        """Where bank row ``row`` is drawn, in pixels from the figure's top left (for
        scripted clicks, e.g. the browser test)."""
        if self._shown is None:
            self.refresh()   # sets the limits the transform depends on
        x, y = self.ax.transData.transform(self.bank_map.xy[int(row)])
        return float(x), float(self.figure.bbox.height - y)


__all__ = ["STAGES", "StageView", "inspect_stage", "BankMap", "bank_pca", "StageInspector", "ManifoldMap",
           "strongest_channels", "check_stage"]
