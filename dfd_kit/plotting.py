"""Figures for the notebooks: one function per picture, each returning a matplotlib Figure.

Every helper builds its figure with pyplot and closes it before returning, so a notebook
cell that *ends* with the call shows the figure exactly once (``fig = plot_...(...)``
shows nothing, ``display(fig)`` shows it again); nothing piles up in pyplot's state.

Conventions: sketches and decoded sketches in gray (white paper, dark ink, fixed range,
so a faint stroke looks faint); feature channels in ``viridis``, each channel on its own
scale; one colour per component everywhere (:data:`COMPONENT_COLOURS`), one per sex
(:data:`SEX_COLOURS`); every image panel titled, every chart axis labelled.

The few computations the figures need and the pipeline does not return (reconstructions,
PCA, interpolations, component swaps, weight sweeps) are here as well, in numpy plus the
model's own stage methods, so the notebooks stay one call per picture.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
from matplotlib import patheffects
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .config import COMPONENTS, PARTS, SEXES, Layout
from .manifold import Projection, blend, project_to_manifold
from .measures import mean_absolute_error
from .synthesis import to_uint8

COMPONENT_COLOURS = {"left_eye": "tab:blue", "right_eye": "tab:cyan", "nose": "tab:green",
                     "mouth": "tab:red", "remainder": "tab:gray"}
SEX_COLOURS = {"male": "tab:blue", "female": "tab:orange"}
PANEL = 2.4          # inches per image panel
FACE_PANEL = 3.2     # inches per full-face panel
SKETCH_CMAP = "gray"
FEATURE_CMAP = "viridis"


# ---------------------------------------------------------------------------------------
# basics
# ---------------------------------------------------------------------------------------

#: Inches. A wider figure is shrunk to the notebook's column, and its thumbnails with it.
MAX_FIGURE_WIDTH = 10.0


def _grid(nrows: int, ncols: int, panel: float = PANEL, extra_h: float = 0.35, **kw):
    """A constrained-layout figure with an (nrows, ncols) array of axes, at most
    MAX_FIGURE_WIDTH wide: many columns get smaller panels, not a wider figure."""
    panel = min(panel, MAX_FIGURE_WIDTH / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, (panel + extra_h) * nrows),
                             squeeze=False, layout="constrained", **kw)
    return fig, axes


def _done(fig: Figure) -> Figure:
    plt.close(fig)   # the caller (or Jupyter) shows the returned Figure; pyplot forgets it
    return fig


def to_image(a: np.ndarray) -> np.ndarray:
    """Anything the pipeline produces -> something ``imshow`` draws faithfully.

    uint8 arrays pass through; float (S, S) sketches and float (3, H, W) generator outputs
    in about [-1, 1] become uint8 (S, S) / (H, W, 3).
    """
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    return to_uint8(a.transpose(1, 2, 0) if a.ndim == 3 and a.shape[0] == 3 else a)


def show_image(ax, image: np.ndarray, title: Optional[str] = None, cmap: str = SKETCH_CMAP):
    """Draw one image on ``ax``: grayscale ones on a fixed 0-255 range, ticks off."""
    img = to_image(image)
    if img.ndim == 2:
        ax.imshow(img, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=10)
    return ax


def show_images(images: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None, ncols: Optional[int] = None,
                suptitle: Optional[str] = None, panel: float = PANEL) -> Figure:
    """A gallery: ``images`` (uint8, or float in [-1, 1]) in rows of ``ncols`` with ``titles``.

    ``images`` may also be a mapping {title: image}.
    """
    if isinstance(images, Mapping):
        titles, images = list(images.keys()), list(images.values())
    images = list(images)
    n = len(images)
    if n == 0:
        raise ValueError("show_images needs at least one image")
    titles = list(titles) if titles is not None else [None] * n
    ncols = min(n, ncols or n)
    nrows = -(-n // ncols)
    fig, axes = _grid(nrows, ncols, panel)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(ax, images[i], titles[i])
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    return _done(fig)


def _outline(ax, layout: Layout, components: Iterable[str] = PARTS, labels: bool = True, linestyle="-",
             lw: float = 1.8, halo: bool = False):
    """Draw the component boxes of ``layout`` on ``ax`` (image coordinates); ``halo``
    puts a white edge around each line so it shows on a busy background."""
    effects = [patheffects.withStroke(linewidth=lw + 2.5, foreground="white")] if halo else None
    for name in components:
        b = layout.box(name)
        colour = COMPONENT_COLOURS[name]
        ax.add_patch(Rectangle((b.x - .5, b.y - .5), b.size, b.size, fill=False, ec=colour, lw=lw, ls=linestyle,
                               path_effects=effects))
        if labels:
            above = name in ("left_eye", "right_eye")
            ax.text(b.x + 2, (b.y - 3) if above else (b.y + b.size - 3), name.replace("_", " "), color=colour,
                    fontsize=8, va="bottom" if above else "bottom", fontweight="bold",
                    bbox=dict(fc="white", ec="none", alpha=.7, pad=1))


# ---------------------------------------------------------------------------------------
# 00: the whole pipeline
# ---------------------------------------------------------------------------------------

_PANEL_TITLES = {"sketch": "sketch (normalised)", "shadow": "shadow guidance", "image": "generated face",
                 "feature_map": "feature map (3 PCs as RGB)"}


def _panel(result, what: str) -> np.ndarray:
    if what == "feature_map":
        return feature_rgb(result.feature_map)
    value = getattr(result, what)
    if value is None:
        raise ValueError(f"the result has no {what!r}; generate it with shadows=True / keep_features=True")
    return value


def plot_generation(result, title: Optional[str] = None) -> Figure:
    """Sketch in, (shadow guidance,) face out: one row of a GenerationResult."""
    panels = ["sketch"] + (["shadow"] if result.shadow is not None else []) + ["image"]
    fig, axes = _grid(1, len(panels), FACE_PANEL)
    for ax, p in zip(axes[0], panels):
        show_image(ax, _panel(result, p), _PANEL_TITLES[p])
    if title:
        fig.suptitle(title)
    return _done(fig)


def plot_results(results: Mapping[str, object], panels: Sequence[str] = ("sketch", "shadow", "image"),
                 panel: float = PANEL, columns: bool = False) -> Figure:
    """Several GenerationResults side by side: one row each, labelled with its key, one
    column per entry of ``panels`` ("sketch", "shadow", "image", "feature_map").
    ``columns=True`` turns it round: one column per result, titled with its key."""
    if columns:
        fig, axes = _grid(len(panels), len(results), panel)
        for c, (label, res) in enumerate(results.items()):
            for r, p in enumerate(panels):
                show_image(axes[r, c], _panel(res, p), label if r == 0 else None)
                if c == 0:
                    axes[r, 0].set_ylabel(_PANEL_TITLES.get(p, p), fontsize=10)
        return _done(fig)
    fig, axes = _grid(len(results), len(panels), panel)
    for r, (label, res) in enumerate(results.items()):
        for c, p in enumerate(panels):
            show_image(axes[r, c], _panel(res, p), _PANEL_TITLES.get(p, p) if r == 0 else None)
        axes[r, 0].set_ylabel(label, fontsize=11)
    return _done(fig)


class ProjectionEffect(NamedTuple):
    """One sketch through the model at w = 0 and projected (w = 1 for every component unless
    other weights were asked for; ``projected_as`` says which): the two faces,
    how far apart they are (mean |difference|, grey levels 0-255) and, when the sketch has
    a true photo, each face's mean absolute error to it; when it also has its sketch before
    roughening, ``mae_clean``: the error of the face from that clean sketch's own latents
    (w = 0), which is what a perfect projection of the rough latents would reach."""
    name: str
    sketch: np.ndarray
    face_w0: np.ndarray
    face_w1: np.ndarray
    difference: float
    photo: Optional[np.ndarray] = None
    mae_w0: Optional[float] = None
    mae_w1: Optional[float] = None
    mae_clean: Optional[float] = None
    projected_as: str = "w = 1"


def _weights_text(weights: Mapping[str, float]) -> str:
    """'w = 0.5' when every component has that weight, else each weight with its components."""
    by = {}
    for c in COMPONENTS:
        by.setdefault(float(weights[c]), []).append(c)
    if len(by) == 1:
        return f"w = {next(iter(by)):g}"
    return "; ".join(f"w = {w:g} for {', '.join(cs)}" for w, cs in by.items())


def projection_effect(model, examples, k: Optional[int] = None,
                      projected: Optional[Mapping[str, float]] = None) -> list:
    """:class:`ProjectionEffect` for each of ``examples`` (:func:`dfd_kit.examples.hard_examples`
    or anything with ``name``, ``sketch``, ``sex`` and ``photo``): what projection changes.
    ``projected``: the part weights of the projected face (default: every component at 1;
    a component left out gets 1)."""
    out = []
    ones = {c: 1.0 for c in COMPONENTS} | dict(projected or {})
    zeros = {c: 0.0 for c in COMPONENTS}
    for ex in examples:
        faces = [model.generate(ex.sketch, ws, sex=ex.sex, k=k, shadows=False, keep_features=False).image
                 for ws in (zeros, ones)]
        photo, clean = getattr(ex, "photo", None), getattr(ex, "clean", None)
        maes = (None, None) if photo is None else tuple(mean_absolute_error(f, photo) for f in faces)
        perfect = None
        if photo is not None and clean is not None:
            perfect = mean_absolute_error(
                model.generate(clean, zeros, sex=ex.sex, shadows=False, keep_features=False).image, photo)
        out.append(ProjectionEffect(ex.name, ex.sketch, faces[0], faces[1], mean_absolute_error(faces[0], faces[1]),
                                    photo, *maes, perfect, _weights_text(ones)))
    return out


def projection_effect_summary(effects: Sequence[ProjectionEffect]) -> str:
    """One sentence of the measured effect: how far apart the w = 0 and projected faces are, for
    how many sketches with a true photo projection brings the face closer to it, and, where
    the clean sketches are known, how close a perfect projection would bring them."""
    truth = [e for e in effects if e.photo is not None]
    closer = sum(e.mae_w1 < e.mae_w0 for e in truth)
    both = effects[0].projected_as
    both = both if ";" not in both else f"projected ({both})"
    text = (f"over {len(effects)} sketches the faces at w = 0 and {both} differ by "
            f"{np.mean([e.difference for e in effects]):.1f} grey levels (0-255) on average")
    if truth:
        m0, m1 = np.mean([e.mae_w0 for e in truth]), np.mean([e.mae_w1 for e in truth])
        text += (f"; projection brings the face closer to the true photo for {closer} of {len(truth)} "
                 f"(mean error {m0:.1f} -> {m1:.1f}: {100 * (m1 - m0) / m0:+.1f}%)")
    known = [e for e in truth if e.mae_clean is not None]
    if known:
        m0, mc = np.mean([e.mae_w0 for e in known]), np.mean([e.mae_clean for e in known])
        text += (f"; a perfect projection (the clean sketch's own latents) would take the error of "
                 f"{'these' if len(known) == len(truth) else f'the {len(known)} with a clean sketch'} "
                 f"from {m0:.1f} to {mc:.1f} ({100 * (mc - m0) / m0:+.1f}%)")
    return text + "."


def plot_projection_effect(effects: Sequence[ProjectionEffect], panel: float = 1.9) -> Figure:
    """One row per sketch: the sketch, its face at w = 0 (the drawing's own latents) and
    projected (w = 1 unless ``projection_effect`` was asked for other weights), where the two
    differ (|w1 - w0|, brighter is more), and the true photo
    where there is one; titles carry the measured numbers."""
    fig, axes = _grid(len(effects), 5, panel, extra_h=0.45)
    for r, e in enumerate(effects):
        err0 = "" if e.mae_w0 is None else f"\nerror to photo {e.mae_w0:.1f}"
        err1 = "" if e.mae_w1 is None else f"\nerror to photo {e.mae_w1:.1f}"
        show_image(axes[r, 0], e.sketch, e.name)
        show_image(axes[r, 1], e.face_w0, "w = 0 (the drawing)" + err0)
        show_image(axes[r, 2], e.face_w1, (f"{e.projected_as} (projected)" if len(e.projected_as) < 12 else "projected") + err1)
        diff = np.abs(e.face_w1.astype(np.float64) - e.face_w0.astype(np.float64)).mean(-1)
        axes[r, 3].imshow(diff, cmap="magma", vmin=0, vmax=128)
        axes[r, 3].set_title(f"|w1 - w0|: mean {e.difference:.1f}", fontsize=9)
        axes[r, 3].axis("off")
        if e.photo is not None:
            show_image(axes[r, 4], e.photo, "true photo")
        else:
            axes[r, 4].axis("off")
            axes[r, 4].text(0.5, 0.5, "drawn by hand:\nno true photo", ha="center", va="center", fontsize=9)
    for ax in axes.flat:
        ax.title.set_fontsize(9)
    return _done(fig)


# ---------------------------------------------------------------------------------------
# 01: components
# ---------------------------------------------------------------------------------------

def plot_layout(sketch: np.ndarray, layout: Layout, title: str = "the component layout") -> Figure:
    """The sketch with the four part boxes drawn over it; the nose rows that are *not*
    pasted into the face map (they belong to the mouth) are hatched."""
    fig, axes = _grid(1, 1, 4.5)
    ax = axes[0, 0]
    show_image(ax, sketch, title)
    _outline(ax, layout)
    nb = layout.box("nose")
    if layout.nose_rows < nb.size:
        ax.add_patch(Rectangle((nb.x - .5, nb.y + layout.nose_rows - .5), nb.size, nb.size - layout.nose_rows,
                               fill=False, hatch="///", ec=COMPONENT_COLOURS["nose"], lw=0, alpha=.5))
    ax.set_xlabel(f"{layout.size} x {layout.size} px; hatched: nose rows left to the mouth", fontsize=9)
    return _done(fig)


def plot_crops(*crop_sets: Mapping[str, np.ndarray], labels: Optional[Sequence[str]] = None) -> Figure:
    """One row per set of crops ({component: (S, S)}), one column per component, each
    titled with its name and size."""
    if not crop_sets:
        raise ValueError("plot_crops needs at least one set of crops")
    names = [c for c in COMPONENTS if c in crop_sets[0]]
    fig, axes = _grid(len(crop_sets), len(names))
    for r, crops in enumerate(crop_sets):
        for c, name in enumerate(names):
            img = crops[name]
            show_image(axes[r, c], img, f"{name}  {img.shape[0]}x{img.shape[1]}")
            for side in axes[r, c].spines.values():
                side.set_edgecolor(COMPONENT_COLOURS[name]), side.set_linewidth(2)
        if labels:
            axes[r, 0].set_ylabel(labels[r], fontsize=11)
    return _done(fig)


def plot_remainder(sketch: np.ndarray, remainder: np.ndarray, layout: Layout) -> Figure:
    """The whole sketch next to the remainder crop: the four part boxes painted white."""
    fig, axes = _grid(1, 2, 3.8)
    show_image(axes[0, 0], sketch, "sketch")
    _outline(axes[0, 0], layout, labels=False)
    show_image(axes[0, 1], remainder, "remainder: parts painted out")
    _outline(axes[0, 1], layout, labels=False, linestyle="--", lw=1)
    return _done(fig)


# ---------------------------------------------------------------------------------------
# 02: embedding
# ---------------------------------------------------------------------------------------

def reconstruct(model, crops: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Encode each crop with its component's encoder and decode it back with the
    auto-encoder's sketch decoder -> {component: uint8 (S, S)}."""
    latents = model.encode(dict(crops))
    return {c: to_image(model.decode_neighbours(c, z[None])[0]) for c, z in latents.items()}


def plot_reconstructions(crops: Mapping[str, np.ndarray], reconstructions: Mapping[str, np.ndarray]) -> Figure:
    """Top row the crops, bottom row what the auto-encoders make of them."""
    return plot_crops(crops, reconstructions, labels=["input crop", "encode + decode"])


class PCA(NamedTuple):
    """A 2-D (or n-D) principal-component basis: ``transform(X) = (X - mean) @ axes.T``."""
    mean: np.ndarray        # (D,)
    axes: np.ndarray        # (n, D), unit rows
    explained: np.ndarray   # (n,) fraction of the variance along each axis

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return (x - self.mean) @ self.axes.T


def pca_fit(x: np.ndarray, n: int = 2) -> PCA:
    """PCA of the rows of ``x`` (N, D) by SVD of the centred data (numpy only)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    # A sign convention, so the picture does not flip between runs or machines.
    signs = np.sign(vt[:n][np.arange(min(n, len(vt))), np.abs(vt[:n]).argmax(axis=1)])
    return PCA(mean, vt[:n] * signs[:, None], var[:n] / var.sum())


def plot_bank_pca(banks: Mapping[str, Mapping[str, np.ndarray]], components: Sequence[str] = COMPONENTS,
                  marks: Optional[Mapping[str, Mapping[str, np.ndarray]]] = None,
                  neighbours: Optional[Mapping[str, np.ndarray]] = None, neighbour_sex: str = "male",
                  max_points: int = 1000) -> Figure:
    """The feature banks in 2-D: per component, the bank latents projected on the first
    two principal axes of both banks together, coloured by sex.

    The axes come from every row; at most ``max_points`` rows of each sex are drawn (a
    seeded random sample), the two sexes in mixed order: thousands of points painted sex
    after sex would hide the first bank under the second.
    marks: {label: {component: latent (D,)}} extra points (your sketch, its projection),
    drawn with the same PCA. neighbours: {component: bank rows} of the ``neighbour_sex``
    bank to ring (the K nearest neighbours).
    """
    fig, axes = _grid(1, len(components), 3.2, extra_h=0.3)
    for ax, comp in zip(axes[0], components):
        pca = pca_fit(np.concatenate([banks[s][comp] for s in SEXES]))
        rng = np.random.default_rng(0)
        xy, colours = [], []
        for sex in SEXES:
            bank = banks[sex][comp]
            rows = np.sort(rng.choice(len(bank), max_points, replace=False)) if len(bank) > max_points else slice(None)
            xy.append(pca.transform(bank[rows]))
            colours += [SEX_COLOURS[sex]] * len(xy[-1])
            shown = "" if len(xy[-1]) == len(bank) else f" ({len(xy[-1])} of {len(bank)})"
            ax.scatter([], [], s=10, c=SEX_COLOURS[sex], label=f"{sex} bank{shown}", lw=0)   # the legend's entry
        order = rng.permutation(len(colours))
        xy = np.concatenate(xy)[order]
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=.6, c=np.asarray(colours)[order], lw=0)
        if neighbours is not None and comp in neighbours:
            xy = pca.transform(banks[neighbour_sex][comp][np.asarray(neighbours[comp])])
            ax.scatter(xy[:, 0], xy[:, 1], s=60, facecolors="none", edgecolors="k", lw=1,
                       label=f"nearest {len(xy)}")
        # The first mark (your sketch: a star) is larger, white-edged and on top (highest
        # zorder, so it is painted last), so that a cross on the same spot cannot hide it.
        styled = list(zip((marks or {}).items(), "*XPD"))
        for order, ((label, vecs), marker) in enumerate(styled):
            if comp in vecs:
                xy = pca.transform(np.asarray(vecs[comp])[None])
                star = marker == "*"
                ax.scatter(xy[:, 0], xy[:, 1], s=320 if star else 150, marker=marker,
                           c="k" if star else "tab:red", edgecolors="white", lw=1.4 if star else .8,
                           label=label, zorder=10 + len(styled) - order)
        ax.set_title(comp)
        ax.set_xlabel(f"PC 1 ({pca.explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({pca.explained[1]:.0%})")
        ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7, loc="best")
    return _done(fig)


def interpolate_latents(a: np.ndarray, b: np.ndarray, steps: int = 7) -> np.ndarray:
    """float32 (steps, D): the straight line from latent ``a`` (t=0) to ``b`` (t=1)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return ((1 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)).astype(np.float32)


def plot_interpolation(images: Sequence[np.ndarray], title: str = "decoding the line between two latents") -> Figure:
    """A strip of decoded sketches along an interpolation, titled with t."""
    ts = np.linspace(0.0, 1.0, len(images))
    return show_images(list(images), [f"t = {t:.2f}" for t in ts], suptitle=title, panel=1.9)


# ---------------------------------------------------------------------------------------
# 03: manifold projection
# ---------------------------------------------------------------------------------------

def plot_neighbours(decoded: np.ndarray, projection: Projection, crop: Optional[np.ndarray] = None,
                    ncols: int = 8) -> Figure:
    """The K nearest bank samples, decoded, each titled with its bank row, squared distance
    and locally-linear weight, and a bar chart of the weights underneath (negative ones red).
    ``crop``: the drawn component, shown first for comparison."""
    images = ([crop] if crop is not None else []) + list(decoded)
    titles = (["your drawing"] if crop is not None else []) + [
        f"#{r}  d={d:.3g}\na = {a:+.2f}" for r, d, a in
        zip(projection.neighbours, projection.distances, projection.weights)]
    n = len(images)
    nrows = -(-n // ncols)
    ncols = -(-n // nrows)          # balance the rows: 11 images -> 6 + 5, not 8 + 3
    cell = min(1.7, MAX_FIGURE_WIDTH / ncols)
    fig = plt.figure(figsize=(cell * ncols, (cell + 0.3) * nrows + 1.8), layout="constrained")
    gs = fig.add_gridspec(nrows + 1, ncols, height_ratios=[2.0] * nrows + [1.6])
    for i in range(n):
        show_image(fig.add_subplot(gs[i // ncols, i % ncols]), images[i], titles[i]).title.set_fontsize(8)
    bar = fig.add_subplot(gs[nrows, :])
    w = np.asarray(projection.weights)
    bar.bar(np.arange(len(w)), w, color=np.where(w < 0, "tab:red", "tab:blue"))
    bar.axhline(0, color="k", lw=.6)
    bar.set_xticks(np.arange(len(w)), [f"#{r}" for r in projection.neighbours], fontsize=7)
    bar.set_xlabel("neighbour (bank row), nearest first")
    bar.set_ylabel("weight a")
    # "a", not "w": w is the component weight that blends the projection with the drawing.
    bar.set_title(f"locally-linear weights a (sum = {w.sum():.2f})", fontsize=9)
    return _done(fig)


def projection_views(model, crop: np.ndarray, component: str, k: Optional[int] = None, weight: float = 1.0,
                     sex: str = "male", anchor: str = "nearest") -> Dict[str, np.ndarray]:
    """What manifold projection does to one drawn component: {title: image}.

    The drawing, its own reconstruction (w = 0), the projection onto the K nearest bank
    latents (w = 1), the blend at ``weight`` (all three decoded with the auto-encoder's
    sketch decoder), and the shadow the neighbours cast.
    """
    k = model.config.k if k is None else int(k)
    latent = model.encode({component: crop})[component]
    query = model.encode_queries({component: crop}).get(component)
    proj = project_to_manifold(latent, model.banks[sex][component], k, weight, anchor, query)
    dec = model.decode_neighbours(component, np.stack([latent, proj.projected, proj.vector]))
    return {"your drawing": crop, "reconstruction (w = 0)": dec[0], f"projected, K = {k} (w = 1)": dec[1],
            f"blend, w = {weight:.2f}": dec[2], "shadow": model.shadow(component, proj, sex)}


def plot_projection(model, crop: np.ndarray, component: str, k: Optional[int] = None, weight: float = 1.0,
                    sex: str = "male", anchor: str = "nearest") -> Figure:
    """:func:`projection_views` as one row of pictures (use it with ipywidgets.interact)."""
    views = projection_views(model, crop, component, k, weight, sex, anchor)
    return show_images(views, suptitle=f"{component}: {sex} bank", panel=2.2)


def plot_shadow(result) -> Figure:
    """The sketch, the shadow guidance the neighbours cast, and the sketch drawn over it
    (what the drawing interface shows the user)."""
    over = np.minimum(result.sketch, (128 + result.shadow.astype(np.int32) // 2).astype(np.uint8))
    return show_images([result.sketch, result.shadow, over],
                       ["your sketch", "shadow guidance", "sketch over its shadow"], panel=FACE_PANEL)


# ---------------------------------------------------------------------------------------
# 04: feature mapping and synthesis
# ---------------------------------------------------------------------------------------

def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [1, 99])
    return np.clip((x - lo) / (hi - lo + 1e-8), 0, 1)


def plot_feature_maps(feature_maps: Mapping[str, np.ndarray], channels: int = 8) -> Figure:
    """Channel mosaic: one row per component, its first ``channels`` feature channels,
    each on its own colour scale."""
    names = [c for c in COMPONENTS if c in feature_maps]
    channels = min(channels, min(feature_maps[c].shape[0] for c in names))
    fig, axes = _grid(len(names), channels, 1.5, extra_h=0.25)
    for r, name in enumerate(names):
        fm = feature_maps[name]
        for ch in range(channels):
            ax = axes[r, ch]
            ax.imshow(_normalise(fm[ch]), cmap=FEATURE_CMAP, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"channel {ch}", fontsize=9)
        axes[r, 0].set_ylabel(f"{name}\n{fm.shape[0]}x{fm.shape[1]}x{fm.shape[2]}", fontsize=9)
    return _done(fig)


def paste_owners(layout: Layout) -> np.ndarray:
    """int (size, size): index into COMPONENTS of the feature map each pixel of the face
    map comes from, following the paste order and the nose trim of
    :func:`dfd_kit.mapping.paste_feature_maps`."""
    from .mapping import paste_owner

    owner, _ = paste_owner(layout)   # -1: the remainder, else an index into the paste order
    index = np.array([COMPONENTS.index(c) for c in layout.paste_order] + [COMPONENTS.index("remainder")])
    return index[owner].astype(np.int64)


def plot_paste(feature_map: np.ndarray, layout: Layout, channel: int = 0) -> Figure:
    """How the face map is assembled: which component's features each pixel holds (left),
    and one channel of the assembled map with the boxes (right)."""
    from matplotlib.colors import ListedColormap

    fig, axes = _grid(1, 2, 4.2)
    ax = axes[0, 0]
    cmap = ListedColormap([COMPONENT_COLOURS[c] for c in COMPONENTS])
    ax.imshow(paste_owners(layout), cmap=cmap, vmin=-.5, vmax=len(COMPONENTS) - .5, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("which component fills each pixel", fontsize=9)
    nb = layout.box("nose")
    ax.axhline(nb.y + layout.nose_rows - .5, xmin=nb.x / layout.size, xmax=(nb.x + nb.size) / layout.size,
               color="k", ls="--", lw=1)
    ax.set_xlabel(f"pasted in order: {', '.join(layout.paste_order)}\n(later parts win where boxes overlap);\n"
                  f"dashed: the nose is cut after {layout.nose_rows} of its {nb.size} rows", fontsize=9)
    ax.legend(handles=[Patch(color=COMPONENT_COLOURS[c], label=c) for c in COMPONENTS], fontsize=7,
              loc="lower left", framealpha=.9)
    ax = axes[0, 1]
    ax.imshow(_normalise(feature_map[channel]), cmap=FEATURE_CMAP, vmin=0, vmax=1)
    _outline(ax, layout, labels=False, lw=2.0, halo=True)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"face feature map, channel {channel} of {feature_map.shape[0]}", fontsize=9)
    return _done(fig)


def feature_rgb(feature_map: np.ndarray) -> np.ndarray:
    """(C, H, W) feature map -> uint8 (H, W, 3): its first three principal components as
    red, green and blue -- a way to see C channels at once."""
    c, h, w = feature_map.shape
    x = feature_map.reshape(c, -1).T
    n = min(3, c)
    rgb = pca_fit(x, n).transform(x)
    if n < 3:
        rgb = np.concatenate([rgb, np.zeros((len(rgb), 3 - n))], axis=1)
    rgb = np.stack([_normalise(rgb[:, i]) for i in range(3)], axis=1)
    return (rgb.reshape(h, w, 3) * 255).astype(np.uint8)


def plot_synthesis(result) -> Figure:
    """The generator's input (the face feature map, 3 principal components as RGB) and
    its output."""
    return show_images([result.sketch, feature_rgb(result.feature_map), result.image],
                       ["sketch", f"face feature map ({result.feature_map.shape[0]} ch, 3 PCs as RGB)",
                        "generator output"], panel=FACE_PANEL)


def swap_components(model, target, donor, components: Sequence[str], keep_features: bool = True):
    """``target`` with the projected vectors of ``components`` taken from ``donor``,
    rendered: a new GenerationResult. Its ``sketch`` shows the swap too: the donor's crops
    pasted into the target's sketch (the donor's whole sketch when the remainder swaps)."""
    for c in components:
        if c not in COMPONENTS:
            raise ValueError(f"unknown component {c!r}; expected one of {', '.join(COMPONENTS)}")
    mixed = target.with_vectors({c: donor.projections[c].vector for c in components})
    base = donor if "remainder" in components else target
    sketch = base.sketch.copy()
    for c in model.layout.paste_order:   # overlapping boxes: later parts win, as in the face map
        src = donor if c in components else target
        b = model.layout.box(c)
        sketch[b.y:b.y + b.size, b.x:b.x + b.size] = src.crops[c]
    mixed.sketch = sketch
    mixed.crops = {c: (donor if c in components else target).crops[c] for c in target.crops}
    return model.render(mixed, keep_features)


def weight_sweep_effect(sweep: Mapping[Tuple[str, float], np.ndarray], layout: Layout) -> Dict[str, Tuple[float, float]]:
    """{component: (inside, outside)}: how much the face changes between the lowest and the
    highest weight of a :func:`weight_sweep`, as mean |difference| (grey levels) inside the
    component's box and outside it (the remainder's box is the whole face: outside is 0)."""
    out = {}
    for c in dict.fromkeys(c for c, _ in sweep):
        ws = sorted(w for cc, w in sweep if cc == c)
        diff = np.abs(sweep[(c, ws[-1])].astype(np.float64) - sweep[(c, ws[0])].astype(np.float64)).mean(-1)
        inside = np.zeros(diff.shape, bool)
        b = layout.box(c)
        inside[b.y:b.y + b.size, b.x:b.x + b.size] = True
        out[c] = (float(diff[inside].mean()), float(diff[~inside].mean()) if (~inside).any() else 0.0)
    return out


def weight_sweep(model, result, components: Sequence[str], weights: Sequence[float]) -> Dict[Tuple[str, float], np.ndarray]:
    """{(component, w): image}: ``result`` re-rendered with one component's weight set to
    each w (the others as they were). Only the blend changes: the neighbours and the
    projected latent do not depend on w."""
    out = {}
    for c in components:
        p = result.projections[c]
        for w in weights:
            res = model.render(result.with_vectors({c: blend(result.latents[c], p.projected.astype(np.float64), w)}),
                               keep_features=False)
            out[(c, float(w))] = res.image
    return out


def plot_weight_sweep(sweep: Mapping[Tuple[str, float], np.ndarray]) -> Figure:
    """Grid of a :func:`weight_sweep`: one row per component, one column per weight."""
    comps = list(dict.fromkeys(c for c, _ in sweep))
    weights = sorted({w for _, w in sweep})
    fig, axes = _grid(len(comps), len(weights), 2.0)
    for r, c in enumerate(comps):
        for col, w in enumerate(weights):
            show_image(axes[r, col], sweep[(c, w)], f"w = {w:.2f}" if r == 0 else None)
        axes[r, 0].set_ylabel(c, fontsize=11, color=COMPONENT_COLOURS[c])
    fig.suptitle("one component's weight at a time (w = 0: the drawing, w = 1: the bank)")
    return _done(fig)


# ---------------------------------------------------------------------------------------
# 06: training
# ---------------------------------------------------------------------------------------

def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    k = np.ones(window) / window
    return np.convolve(y, k, mode="valid")


#: What a training run's history records beside its losses: step, seconds, memory.
NOT_LOSSES = ("step", "sec", "rss_mb")


def _loss_series(history, keys):
    """{name: values} or a training run's history (a list of {"step": s, name: value, ...},
    as in ``StageResult.history``) -> (steps per name, values per name)."""
    if isinstance(history, Mapping):
        names = [k for k in history if keys is None or k in keys]
        return ({k: np.arange(1, len(history[k]) + 1) for k in names},
                {k: np.asarray(history[k], np.float64) for k in names})
    rows = list(history)
    names = list(dict.fromkeys(k for r in rows for k in r if k not in NOT_LOSSES))
    names = [k for k in names if keys is None or k in keys]
    steps = {k: np.array([r.get("step", i + 1) for i, r in enumerate(rows) if k in r]) for k in names}
    return steps, {k: np.array([r[k] for r in rows if k in r], np.float64) for k in names}


def plot_losses(history, keys: Optional[Sequence[str]] = None, title: str = "training loss", smooth: int = 1,
                log: bool = True, xlabel: str = "step", panels: bool = False) -> Figure:
    """Loss curves: ``history`` is {name: values per step} or a training run's history
    (``StageResult.history``, a list of per-step dicts); ``keys`` picks some of the losses.
    A moving average over ``smooth`` steps (the raw values faint behind it); log scale when
    every value is positive. One axes with a line per loss, or with ``panels`` one panel per
    loss on its own scale (the training runs' own figures: a GAN's terms differ by orders
    of magnitude)."""
    steps, values = _loss_series(history, keys)
    names = [n for n in values if len(values[n])]
    cols = min(3, len(names)) if panels and names else 1
    rows = -(-len(names) // cols) if panels and names else 1
    fig, axes = _grid(rows, cols, 3.3 if panels else 5.0, extra_h=0.2 if panels else -1.6)
    groups = [[n] for n in names] if panels else [names]
    for ax, group in zip(axes.flat, groups):
        positive = True
        for name in group:
            x, y = steps[name], values[name]
            colour = f"C{names.index(name) % 10}"
            positive &= bool((y > 0).all())
            ys = _smooth(y, smooth)
            if len(ys) < len(y):
                ax.plot(x, y, color=colour, alpha=.25, lw=.8)
            ax.plot(x[len(y) - len(ys):], ys, color=colour, label=name)
        if log and positive:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4 if panels else "auto", integer=True))
        ax.grid(alpha=.3)
        if panels:
            ax.set_title(group[0], fontsize=10)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    if panels:
        fig.suptitle(title)
    else:
        ax = axes[0, 0]
        ax.set_ylabel("loss" + (f" ({smooth}-step average)" if smooth > 1 else ""))
        ax.set_title(title)
        if len(names) > 1:
            ax.legend(fontsize=8)
    return _done(fig)


def show_source(*objs):
    """The code of kit functions or classes as one highlighted listing, for a notebook to
    show the stage it explains (``IPython.display.Code``; plain text where there is no
    front end). Read from the installed modules each time it is called, so a listing is
    never out of date with the code that runs."""
    import inspect

    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(o).rstrip() for o in objs), language="python")


def plot_dataset(data_dir, n: int = 4, layout: Optional[Layout] = None) -> Figure:
    """The first ``n`` (sketch, photo) pairs of a dataset folder (samples.csv, sketch/,
    photo/), one column each, titled with the sample id and sex."""
    from .config import DEMO_LAYOUT
    from .data import load_pair, load_samples

    samples = load_samples(data_dir)[:n]
    fig, axes = _grid(2, len(samples), 2.2)
    for j, s in enumerate(samples):
        sketch, photo = load_pair(s, layout or DEMO_LAYOUT)
        show_image(axes[0, j], sketch, f"{s.sketch_path.stem} ({s.sex})")
        show_image(axes[1, j], photo)
    axes[0, 0].set_ylabel("sketch", fontsize=11)
    axes[1, 0].set_ylabel("photo", fontsize=11)
    return _done(fig)


def plot_samples(rows: Mapping[str, Sequence[np.ndarray]], n: Optional[int] = None) -> Figure:
    """Columns of images side by side, e.g. {"sketch": [...], "photo": [...], "model": [...]}:
    one row per sample, one column per key."""
    cols = list(rows)
    n = min(len(rows[c]) for c in cols) if n is None else n
    fig, axes = _grid(n, len(cols), 2.2)
    for r in range(n):
        for c, name in enumerate(cols):
            show_image(axes[r, c], rows[name][r], name if r == 0 else None)
    return _done(fig)


__all__ = ["COMPONENT_COLOURS", "SEX_COLOURS", "to_image", "show_image", "show_images", "plot_generation",
           "plot_results", "plot_layout", "plot_crops", "plot_remainder", "reconstruct", "plot_reconstructions",
           "PCA", "pca_fit", "plot_bank_pca", "interpolate_latents", "plot_interpolation", "plot_neighbours",
           "projection_views", "plot_projection", "plot_shadow", "plot_feature_maps", "paste_owners", "plot_paste",
           "feature_rgb", "plot_synthesis", "swap_components", "weight_sweep", "plot_weight_sweep", "plot_losses",
           "show_source", "plot_dataset", "plot_samples"]


# ---------------------------------------------------------------------------------------
# 07: the trade-off measured
# ---------------------------------------------------------------------------------------

_W0_MARK = dict(marker="o", markersize=7, markerfacecolor="white", zorder=3)
_W1_MARK = dict(marker="*", markersize=14, markeredgecolor="black", markeredgewidth=0.8, zorder=4)
_TRADEOFF_LABELS = {
    "faithfulness": "sketch lines vs face edges (px at 256)\n<- more faithful to the strokes",
    "latent": "distance to the bank (row spacings)\n<- more real",
    "spectral": "spectrum vs faces of real samples (dB)\n<- more real",
}


def plot_tradeoff(tradeoff, sketch: Optional[str] = None, title: Optional[str] = None) -> Figure:
    """Faithfulness (x) against realism (y, two panels: the latent's distance to the bank,
    the face's spectral distance to faces of real samples) as w goes from 0 (open circle)
    to 1 (star: full projection), from a :func:`dfd_kit.tradeoff.measure_tradeoff` sweep.

    sketch None: all components' weights at once, one line per sketch (freehand solid,
    clean dashed). sketch given: that sketch only, one line per group (all at once in
    black, each component alone in its colour, measured in its own box). Dotted lines:
    where faces of real samples lie (the bank's own row spacing; their spectral spread)."""
    from .tradeoff import ALL

    if sketch is None:
        s_idx = range(len(tradeoff.names))
        # tab10's colours first, then tab20's lighter shades of them
        colour = lambda i: plt.get_cmap("tab10")(i) if i < 10 else plt.get_cmap("tab20")(2 * (i % 10) + 1)  # noqa: E731
        lines = [(s, ALL, tradeoff.names[s], colour(i), "--" if tradeoff.clean[s] else "-")
                 for i, s in enumerate(s_idx)]
        what = "every component's weight at once, one line per sketch"
    else:
        s = tradeoff.index(sketch)
        lines = [(s, g, g if g != ALL else "all at once", "black" if g == ALL else COMPONENT_COLOURS[g], "-")
                 for g in tradeoff.groups]
        what = f"{sketch}: all at once, and one component at a time (the others at 1)"
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.6), layout="constrained")
    for ax, measure, head in zip(axes, ("latent", "spectral"), ("realism in latent space", "realism in pixels")):
        for s, g, label, colour, style in lines:
            gi = tradeoff.groups.index(g)
            x, y = tradeoff.faithfulness[s, gi], getattr(tradeoff, measure)[s, gi]
            ax.plot(x, y, style, color=colour, marker=".", markersize=5, linewidth=1.4, label=label)
            ax.plot(x[:1], y[:1], color=colour, markeredgecolor=colour, linestyle="none", **_W0_MARK)
            ax.plot(x[-1:], y[-1:], color=colour, linestyle="none", **_W1_MARK)
        # the spectral spread is per measuring box: drawn when every line is measured on the whole face
        ref = 1.0 if measure == "latent" else (tradeoff.reference_spread.get(ALL) if sketch is None else None)
        if ref is not None:
            ax.axhline(ref, color="0.5", linestyle=":", linewidth=1)
            ax.annotate("a real sample to its nearest other" if measure == "latent" else "faces of real samples",
                        (1.0, ref), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8,
                        color="0.4", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
        ax.set_xlabel(_TRADEOFF_LABELS["faithfulness"])
        ax.set_ylabel(_TRADEOFF_LABELS[measure])
        ax.set_title(head, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    keep = [i for i, lab in enumerate(labels) if not lab.startswith("_")]
    marks = [plt.Line2D([], [], color="0.3", linestyle="none", **_W0_MARK, label="w = 0 (the drawing)"),
             plt.Line2D([], [], color="0.3", linestyle="none", **_W1_MARK, label="w = 1 (full projection)")]
    fig.legend([handles[i] for i in keep] + marks, [labels[i] for i in keep] + [m.get_label() for m in marks],
               loc="outside lower center", ncol=min(5, len(keep) + 2), fontsize=8, frameon=False)
    fig.suptitle(title or f"{tradeoff.model}: {what}", fontsize=11)
    return _done(fig)


def _line_overlay(lines: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """uint8 RGB: white paper, the sketch's lines blue, the face's edges red, both black."""
    out = np.full(lines.shape + (3,), 255, np.uint8)
    out[lines] = (40, 90, 220)
    out[edges] = (220, 50, 40)
    out[lines & edges] = (0, 0, 0)
    return out


def plot_tradeoff_faces(tradeoff, sketch: str) -> Figure:
    """What a :func:`~dfd_kit.tradeoff.measure_tradeoff` sweep measured for one sketch, all
    weights at once: top, the sketch and the face at each w; below, the sketch's lines
    (blue) over the face's edges (red; black where they meet) that faithfulness compares,
    titled with the three measures."""
    from . import measures
    from .tradeoff import ALL

    s, gi = tradeoff.index(sketch), tradeoff.groups.index(ALL)
    n = len(tradeoff.weights)
    fig, axes = _grid(2, n + 1, min(1.75, 9.6 / (n + 1)), extra_h=0.55)
    lines = measures.sketch_lines(tradeoff.sketches[s])
    show_image(axes[0, 0], tradeoff.sketches[s], sketch)
    show_image(axes[1, 0], np.where(lines, 0, 255).astype(np.uint8), "its lines")
    for j, w in enumerate(tradeoff.weights):
        face = tradeoff.faces[s, j]
        show_image(axes[0, j + 1], face, f"w = {w:g}" + (" (default)" if w == tradeoff.blend_weight else ""))
        show_image(axes[1, j + 1], _line_overlay(lines, measures.face_edges(face)),
                   f"lines {tradeoff.faithfulness[s, gi, j]:.2f} px\nbank {tradeoff.latent[s, gi, j]:.2f}\n"
                   f"spectrum {tradeoff.spectral[s, gi, j]:.2f} dB")
    for ax in axes.flat:
        ax.title.set_fontsize(8)
    fig.suptitle(f"{tradeoff.model}, every weight at once: the sketch's lines blue, the face's edges red, "
                 "black where they meet", fontsize=10)
    return _done(fig)


__all__ += ["plot_tradeoff", "plot_tradeoff_faces"]


# ---------------------------------------------------------------------------------------
# 05: the pad's lens, on paper (the same data as the live panels, dfd_kit.inspector)
# ---------------------------------------------------------------------------------------

def plot_stage_view(view, title: Optional[str] = None) -> Figure:
    """One component through every stage (a :class:`dfd_kit.inspector.StageView`), as the
    pad's inspector shows it: the crop, its reconstruction and the projected point decoded;
    the K neighbours with their locally-linear weights; a few feature-map channels, the
    face map and the face with the part's box."""
    k = len(view.neighbours)
    ncols = max(k, 2 + len(view.channels), 3)
    # at most 10 inches wide, however large K is: thumbnails stay readable in a notebook
    fig = plt.figure(figsize=(min(MAX_FIGURE_WIDTH, 1.0 * ncols), 6.0), layout="constrained")
    rows = fig.subfigures(4, 1, height_ratios=[1.25, 1.0, 0.7, 1.25])
    blank = np.full((8, 8), 255, np.uint8)

    top = rows[0].subplots(1, 3)
    for ax, img, t in zip(top, [view.crop, view.reconstruction, view.projected_sketch],
                          ["crop (encoder input)", "reconstruction\nof its latent", "projected point\n(w = 1), decoded"]):
        show_image(ax, img if img is not None else blank, t)
    rows[0].suptitle(f"1 · embedding: {view.component}" + (f" (frozen: {', '.join(view.frozen)})" if view.frozen
                                                            else ""), fontsize=10)
    neigh = rows[1].subplots(1, k, squeeze=False)[0]
    for i, ax in enumerate(neigh):
        img = view.neighbour_sketches[i] if view.neighbour_sketches is not None else blank
        show_image(ax, img, f"#{view.neighbours[i]}")
    rows[1].suptitle(f"2 · projection: the K = {k} nearest bank sketches", fontsize=10)
    bar = rows[2].subplots(1, 1)
    w = np.asarray(view.weights)
    bar.bar(np.arange(k), w, color=np.where(w < 0, "tab:red", "tab:blue"))
    bar.axhline(0, color="k", lw=0.6)
    bar.set_xticks(np.arange(k), [f"#{r}" for r in view.neighbours], fontsize=7)
    bar.set_xlim(-0.5, k - 0.5)
    bar.set_ylabel("weight a", fontsize=8)
    bar.set_title(f"their locally-linear weights (sum {w.sum():.2f}); the face uses w = {view.weight:.2f}",
                  fontsize=9)
    bottom = rows[3].subplots(1, len(view.channels) + 2)
    lo, hi = float(view.channels.min()), float(view.channels.max())
    for ax, ch, i in zip(bottom, view.channels, view.channel_ids):
        ax.imshow(ch, cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(f"channel {i}", fontsize=8)
        ax.axis("off")
    x, y, s = view.box
    bottom[-2].imshow(view.face_map, cmap="viridis")
    bottom[-2].add_patch(plt.Rectangle((x - 0.5, y - 0.5), s, s, fill=False, ec="white", lw=1.5))
    bottom[-2].set_title("face map", fontsize=8)
    bottom[-2].axis("off")
    show_image(bottom[-1], view.face, "the face")
    rows[3].suptitle("3 · feature mapping (the part's channels, its place) · 4 · synthesis", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return _done(fig)


def plot_manifold_map(bank_map, latent: np.ndarray, projection: Projection, component: str,
                      picked: Optional[int] = None, query: Optional[np.ndarray] = None) -> Figure:
    """The pad's manifold map on paper: one bank in 2-D (a :class:`dfd_kit.inspector.BankMap`),
    the drawing's latent (star), its K neighbours (rings), the projected point (cross) and,
    optionally, a picked bank row (orange ring) and where the search started (``query``, for a
    model with query encoders: ``result.queries.get(component)``)."""
    fig, axes = _grid(1, 1, 4.4)
    ax = axes[0, 0]
    xy = bank_map.xy
    ax.scatter(xy[:, 0], xy[:, 1], s=9, c="#9aa7b8", lw=0, label=f"bank ({len(xy)} sketches)")
    n = xy[np.asarray(projection.neighbours)]
    ax.scatter(n[:, 0], n[:, 1], s=70, facecolors="none", edgecolors="k", lw=1.2, label=f"K = {len(n)} nearest")
    if picked is not None:
        ax.scatter(*xy[picked], s=140, facecolors="none", edgecolors="#ff7f0e", lw=2.2, label=f"picked #{picked}")
    p = bank_map.place(projection.projected)
    ax.scatter(*p, s=140, marker="X", c="tab:red", edgecolors="white", lw=0.8, zorder=11, label="projected")
    z = bank_map.place(latent)
    ax.scatter(*z, s=320, marker="*", c="k", edgecolors="white", lw=1.4, zorder=12, label="your drawing")
    if query is not None:
        ax.scatter(*bank_map.place(query), s=150, marker="P", c="tab:blue", edgecolors="white", lw=0.8, zorder=12,
                   label="search starts")
    e = bank_map.explained
    ax.set_title(f"{component}: the bank on its first two principal axes", fontsize=10)
    ax.set_xlabel(f"PC 1 ({e[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({e[1]:.0%})")
    ax.legend(fontsize=7, loc="best")
    return _done(fig)


def plot_search_start(model, component: str, clean, paper, searched, local: int = 300) -> Figure:
    """Where manifold projection searches, for one rough drawing's ``component``: left, from
    the drawing's own latent (the paper; ``paper``, the result of
    ``model.without_query_encoders().generate(rough)``); right, from where the model's query
    encoder puts the drawing (``searched``, ``model.generate(rough)``). ``clean``: the result
    for the clean drawing the rough one was made from, whose K neighbours (green dots) are
    the rows a perfect search would find. The map is the plane of the ``local`` bank rows
    nearest the clean drawing's latent (a whole bank's first two axes hide the distances
    that decide a search); rings are the rows each search found, so a ring on a green dot
    is a right one."""
    bank = np.asarray(model.banks[searched.sex][component], np.float64)
    latent, query = paper.latents[component], searched.queries[component]
    clean_latent = clean.latents[component]
    clean, paper, searched = (r.projections[component] for r in (clean, paper, searched))
    near = np.argsort(((bank - clean_latent) ** 2).sum(axis=1))[:local]
    rows = np.unique(np.concatenate([near, clean.neighbours, paper.neighbours, searched.neighbours]))
    pca = pca_fit(bank[rows])
    place = lambda x: pca.transform(np.asarray(x, np.float64).reshape(-1, bank.shape[1]))
    xy = place(bank[rows])
    fig, axes = _grid(1, 2, 4.0)
    right = set(clean.neighbours.tolist())
    for ax, proj, start, title in ((axes[0, 0], paper, None, "searched from the drawing's latent (the paper)"),
                                   (axes[0, 1], searched, query, "searched from the query encoder's point")):
        ax.scatter(xy[:, 0], xy[:, 1], s=7, c="#c3cad4", lw=0, label=f"bank rows near the clean drawing ({len(rows)})")
        g = place(bank[clean.neighbours])
        ax.scatter(g[:, 0], g[:, 1], s=30, c="tab:green", lw=0, label="the clean drawing's K neighbours")
        n = place(bank[proj.neighbours])
        hits = len(right & set(proj.neighbours.tolist()))
        ax.scatter(n[:, 0], n[:, 1], s=75, facecolors="none", edgecolors="k", lw=1.1,
                   label=f"K = {len(n)} found ({hits} of them right)")
        ax.scatter(*place(clean_latent)[0], s=110, marker="D", c="tab:green", edgecolors="white", lw=0.8, zorder=11,
                   label="the clean drawing")
        ax.scatter(*place(latent)[0], s=280, marker="*", c="k", edgecolors="white", lw=1.2, zorder=12,
                   label="the rough drawing")
        if start is not None:
            ax.scatter(*place(start)[0], s=140, marker="P", c="tab:blue", edgecolors="white", lw=0.8,
                       zorder=12, label="search starts")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("local axis 1")
        ax.legend(fontsize=6.5, loc="best")
    axes[0, 0].set_ylabel("local axis 2")
    fig.suptitle(f"{component}: where the search starts decides which bank rows are blended", fontsize=10)
    return _done(fig)


__all__ += ["plot_stage_view", "plot_manifold_map", "plot_search_start"]


# ---------------------------------------------------------------------------------------
# training: can projection repair a rough sketch's latents? (quality.projection_geometry)
# ---------------------------------------------------------------------------------------

_GEOMETRY_BARS = (("degraded", "degraded sketch", "#9ecae1"), ("degraded_projected", "degraded, projected", "#2171b5"),
                  ("rough", "rough sketch", "#fdae6b"), ("rough_projected", "rough, projected", "#d94801"),
                  ("clean_projected", "clean sketch, projected", "#969696"))


def plot_projection_geometry(reports: Sequence[object]) -> Figure:
    """One panel per :class:`~dfd_kit.training.quality.GeometryReport` (e.g. two encoders on
    the same faces): per component, how far each latent lies from the clean sketch's, raw
    and projected. Projection repairs a sketch where its dark bar is shorter than the light
    one beside it; the grey bar is as close as projection gets when it finds the clean
    sketch's own neighbours. The percentages: faces where projection lands closer."""
    fig, axes = _grid(len(reports), 1, panel=MAX_FIGURE_WIDTH, extra_h=0.0)
    fig.set_size_inches(MAX_FIGURE_WIDTH, 3.2 * len(reports))
    width = 0.16
    for ax, r in zip(axes[:, 0], reports):
        x = np.arange(len(COMPONENTS))
        for j, (key, label, colour) in enumerate(_GEOMETRY_BARS):
            h = [r.components[c][key] for c in COMPONENTS]
            bars = ax.bar(x + (j - 2) * width, h, width, color=colour, label=label)
            if key.endswith("_projected") and key != "clean_projected":
                closer = [r.components[c][key.replace("_projected", "_closer")] for c in COMPONENTS]
                for b, share in zip(bars, closer):
                    ax.text(b.get_x() + width / 2, b.get_height(), f"{100 * share:.0f}%", ha="center",
                            va="bottom", fontsize=7, color=colour)
        ax.set_xticks(x, [c.replace("_", " ") for c in COMPONENTS])
        ax.set_ylabel("distance to the clean\nsketch's latent (bank spacings)", fontsize=8)
        ax.set_title(f"{r.label + ': ' if r.label else ''}{r.n_faces} held-out faces, banks of {r.bank_rows} "
                     f"sketches, K = {r.k} (percentages: faces where projection lands closer)", fontsize=9)
        ax.margins(y=0.15)
    axes[0, 0].legend(fontsize=7, ncols=5, loc="upper left")
    return _done(fig)


__all__ += ["plot_projection_geometry"]


def plot_projection_by_weight(report, target_wins: float = 0.7) -> Figure:
    """A :class:`~dfd_kit.training.quality.QualityReport`'s sweep over the projection weight w
    (every component at once): left, the error against the true photo for degraded and rough
    sketches, with the error of the clean sketch's own latents (a perfect projection of the
    rough ones) for scale and, dotted, a perfect search (the rough latents blended with the
    clean sketch's own projection: what projection could do if its search found the right
    faces); right, the share of faces where each weight beats w = 0. A curve that dips between
    the ends says a step towards the manifold repairs more than a jump. A model whose default
    weight is not 1 (its ``blend_weight``) has it marked by a vertical line."""
    ws = sorted(report.by_weight, key=float)
    x = np.array([float(w) for w in ws])
    fig, axes = _grid(1, 2, panel=MAX_FIGURE_WIDTH / 2, extra_h=0.0)
    fig.set_size_inches(MAX_FIGURE_WIDTH, 3.2)
    err, wins = axes[0, 0], axes[0, 1]
    for kind, colour in (("degraded", "tab:blue"), ("rough", "tab:red")):
        err.plot(x, [report.by_weight[w][f"{kind}_mae"] for w in ws], "o-", color=colour, label=f"{kind} sketches")
        wins.plot(x[1:], [100 * report.by_weight[w][f"{kind}_wins"] for w in ws[1:]], "o-", color=colour,
                  label=f"{kind} sketches")
    if report.has_perfect_search:
        err.plot(x, [report.by_weight[w]["rough_search_mae"] for w in ws], "o:", color="tab:red", alpha=0.6,
                 markerfacecolor="none", label="rough, a perfect search")
    if np.isfinite(report.mae_clean_unprojected):
        err.axhline(report.mae_clean_unprojected, color="grey", linestyle="--",
                    label="the clean sketch (a perfect projection)")
    if report.blend_weight != 1.0:
        for ax in (err, wins):
            ax.axvline(report.blend_weight, color="0.35", linewidth=0.8, zorder=0,
                       label=f"the model's default, w = {report.blend_weight:g}")
    err.set_xlabel("projection weight w (0 = the drawing's own latents)")
    err.set_ylabel("MAE against the true photo (0-255)")
    err.set_title(f"error on {report.n_faces} held-out faces", fontsize=9)
    err.legend(fontsize=7)
    wins.axhline(100 * target_wins, color="grey", linestyle=":", label=f"{100 * target_wins:.0f}% of faces")
    wins.set_ylim(0, 100)
    wins.set_xlim(-0.05, 1.05)
    wins.set_xlabel("projection weight w")
    wins.set_ylabel("faces where w beats w = 0 (%)")
    wins.set_title("how often projection repairs the face", fontsize=9)
    wins.legend(fontsize=7)
    return _done(fig)


__all__ += ["plot_projection_by_weight"]
