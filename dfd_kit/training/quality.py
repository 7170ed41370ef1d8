"""How good is a trained model? The demo model card's numbers come from here.

Three measurements on held-out faces (never trained on), each against the true photo:

1. **Reconstruction**: mean absolute RGB error (0-255 levels) of the face generated
   from the clean sketch, next to the error of the laziest possible model -- always
   answering the training set's mean face. A model that learnt anything from the
   sketch must beat it clearly (the demo's target: at most half).
2. **Manifold projection**: the sketch is degraded to look hand-drawn
   (:func:`~dfd_kit.data.sketch.augment_sketch`) and roughened as people draw
   (:func:`~dfd_kit.data.sketch.roughen_sketch`); the face generated with projection
   (every part weight 1.0) should be closer to the truth than the one without (0.0),
   which is the paper's claim that projection repairs imperfect drawings. The weights
   between (every component at once, :data:`PARTIAL_WEIGHTS`) are measured too: a step
   towards the manifold can repair more than the full jump to other faces' parts. Two more
   numbers say how much there was to repair and why projection repairs what it does: the
   face from the *clean* sketch's own latents at w = 0 is what a perfect projection of
   the rough latents would give, and the share of the clean sketch's K
   neighbours that the rough sketch finds too says whether projection searches near the
   right faces at all. A *perfect search* separates the two halves of projection: at each
   weight, the drawing's latents blended with the clean sketch's own projection (its
   neighbours and weights) -- what projection would give if its search, started from the
   drawing, found the right faces.
3. Figures: sketch / generated / photo for a few faces, and degraded sketch /
   without / with projection / photo.

And one measurement that needs no stage 2 (:func:`projection_geometry`, the ``geometry``
subcommand): in latent space, how far the degraded and rough sketches' latents lie from the
clean sketch's, before and after projection -- whether an encoder gives projection anything
to repair.

From a shell::

    python -m dfd_kit.training quality --params Params/demo --data data/facesjs_train \\
        --heldout data/facesjs_heldout --figures Params/demo

Missing data sets are built first (the held-out one from its own seed, so it never
overlaps the training faces).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..config import COMPONENTS, PHOTO, Layout
from ..data import load_pair, load_samples
from ..errors import DataError
# The measures live in dfd_kit.measures since notebook 07 uses them too; imported here so
# the model cards' code and `from dfd_kit.training.quality import stroke_distance` keep working.
from ..measures import (STROKE_DISTANCE_CAP, log_spectrum, mean_absolute_error, spectral_distance,  # noqa: F401
                        stroke_distance)
from ..tradeoff import WEIGHTS

#: The demo's held-out set: 200 faces from a seed far from the training seed 0.
HELDOUT_FACES = 200
HELDOUT_SEED = 12345

ALL_ON = {c: 1.0 for c in COMPONENTS}
ALL_OFF = {c: 0.0 for c in COMPONENTS}
#: The four parts projected, the remainder as drawn: on the photo model the remainder's
#: bank is too sparse for its projection to land near the true face (the hair outline
#: moves), so the card measures this setting beside w = 1 everywhere.
PARTS_ONLY = {**ALL_ON, "remainder": 0.0}
#: The weights between 0 and 1 measured too, every component at once (notebook 07's grid):
#: w = 1 jumps to a blend of other faces' parts, a step of the way keeps most of the drawing.
PARTIAL_WEIGHTS = tuple(w for w in WEIGHTS if 0.0 < w < 1.0)
#: The card's partial projection: the photo model's default weight (``config.blend_weight``),
#: chosen on its 200 validation faces (``photo-data --first 2000000``, never used for its
#: card) so that the held-out figures stay unbiased; measured on the cartoon model too.
PARTIAL_WEIGHT = PHOTO.blend_weight


def mean_face(data_dir, layout: Layout, progress: bool = True) -> np.ndarray:
    """float64 (S, S, 3): the pixel-wise mean of a data set's photos (streamed, so a
    large set needs no memory)."""
    from tqdm.auto import tqdm

    samples = load_samples(data_dir)
    total = np.zeros((layout.size, layout.size, 3), np.float64)
    for s in tqdm(samples, desc="mean face", unit="photo", disable=not progress, leave=False):
        total += load_pair(s, layout)[1]
    return total / len(samples)


@dataclass
class QualityReport:
    n_faces: int
    mae_generated: float          # clean sketch -> generated (at blend_weight) vs photo, mean over faces
    mae_mean_face: float          # training mean face vs photo, mean over faces
    ratio: float                  # mae_generated / mae_mean_face (target <= 0.5)
    projection_win_rate: float    # share of degraded sketches where w=1 beats w=0 (target >= 0.7)
    mae_degraded_projected: float
    mae_degraded_unprojected: float
    degrade_strength: float
    degrade_seed: int
    # rough sketches (roughen_sketch: missing, doubled, stretched and scribbled parts)
    rough_win_rate: float = float("nan")
    mae_rough_projected: float = float("nan")
    mae_rough_unprojected: float = float("nan")
    # how closely the face follows the rough sketch's strokes (stroke_distance, pixels)
    stroke_distance_projected: float = float("nan")
    stroke_distance_unprojected: float = float("nan")
    # how photo-like the faces from clean sketches are (spectral_distance, dB)
    spectral_distance: float = float("nan")
    # rough sketches with the four parts projected and the remainder as drawn (PARTS_ONLY)
    rough_parts_win_rate: float = float("nan")
    mae_rough_parts_projected: float = float("nan")
    # the clean sketch's own latents at w = 0, where a perfect projection of the rough sketch's
    # latents would land
    mae_clean_unprojected: float = float("nan")
    # of the clean sketch's K neighbours, the share the rough sketch's K neighbours include
    shared_neighbours_parts: float = float("nan")       # mean over the four parts
    shared_neighbours_remainder: float = float("nan")
    model: str = ""
    ratio_target: float = 0.5
    figures: Dict[str, str] = field(default_factory=dict)
    # every component at each weight of the sweep (0 and 1 included): {"w": {measure: value}},
    # measures degraded_mae, degraded_wins, rough_mae, rough_wins (wins: beats w = 0), and
    # rough_search_mae: the same weight with a perfect search (see search_error_reduction_at)
    by_weight: Dict[str, Dict[str, float]] = field(default_factory=dict)
    per_face: Dict[str, List[float]] = field(default_factory=dict)
    # the model's default weight, at which mae_generated and spectral_distance were measured
    blend_weight: float = 1.0

    @property
    def passed(self) -> bool:
        return self.ratio <= self.ratio_target and self.projection_win_rate >= 0.7

    @property
    def rough_error_reduction(self) -> float:
        """How much lower the error is with projection on rough sketches (0.1 = 10%)."""
        return 1.0 - self.mae_rough_projected / self.mae_rough_unprojected

    @property
    def perfect_projection_reduction(self) -> float:
        """What a perfect projection would remove on rough sketches, one that brought each rough
        latent back to its clean sketch's: the error of the clean sketch's face at w = 0 against
        the rough sketch's at w = 0. (Not a bound: a projection's faces can also come out nearer
        the average face than the clean sketch's, which lowers a mean absolute error too.)"""
        return 1.0 - self.mae_clean_unprojected / self.mae_rough_unprojected

    @property
    def rough_parts_error_reduction(self) -> float:
        """The same with only the four parts projected (PARTS_ONLY)."""
        return 1.0 - self.mae_rough_parts_projected / self.mae_rough_unprojected

    @property
    def has_perfect_search(self) -> bool:
        """Whether the sweep measured the perfect search (reports written before it did not)."""
        return bool(self.by_weight) and all("rough_search_mae" in m for m in self.by_weight.values())

    def at_weight(self, w: float) -> Dict[str, float]:
        """The sweep's measures at weight ``w`` (empty when it was not measured)."""
        return self.by_weight.get(f"{w:g}", {})

    def error_reduction_at(self, w: float) -> float:
        """The share of the rough sketches' error that projection at weight ``w`` removes."""
        return 1.0 - self.at_weight(w)["rough_mae"] / self.mae_rough_unprojected

    def search_error_reduction_at(self, w: float) -> float:
        """The share of the rough sketches' error that a *perfect search* removes at weight ``w``:
        the rough latents blended with the clean sketch's own projection (its neighbours and
        weights), as if the search from the rough drawing had found the faces the clean one
        finds. What projection at ``w`` could do; :meth:`error_reduction_at` is what it does."""
        return 1.0 - self.at_weight(w)["rough_search_mae"] / self.mae_rough_unprojected

    def best_search(self):
        """(w, share removed): the weight at which the perfect search removes the most error on
        rough sketches (w > 0)."""
        w = min((w for w in self.by_weight if float(w) > 0), key=lambda w: self.by_weight[w]["rough_search_mae"])
        return float(w), self.search_error_reduction_at(float(w))

    def weight_summary(self) -> str:
        """One line: where the sweep over w gives the lowest error on rough sketches (and, when
        measured, where a perfect search would) and where it beats w = 0 most often on degraded
        ones, against the ends (and the model's default weight, when it is not 1)."""
        ws = sorted(self.by_weight, key=float)
        best = min(ws, key=lambda w: self.by_weight[w]["rough_mae"])
        most = max(ws, key=lambda w: self.by_weight[w]["degraded_wins"])
        search = ""
        if self.has_perfect_search:
            w, removed = self.best_search()
            search = (f"; with a perfect search {self.at_weight(w)['rough_search_mae']:.2f} at w = {w:g} "
                      f"({100 * removed:.1f}% removed)")
        default = self.at_weight(self.blend_weight) if self.blend_weight != 1.0 else {}
        at_default = (f"; at the model's default w = {self.blend_weight:g}: "
                      f"{100 * self.error_reduction_at(self.blend_weight):.1f}% of the rough sketches' error removed, "
                      f"projection beats none for {100 * default['degraded_wins']:.0f}% of the degraded ones"
                      if default else "")
        return (f"rough sketches: error {self.by_weight['0']['rough_mae']:.2f} at w = 0, "
                f"{self.by_weight['1']['rough_mae']:.2f} at w = 1, lowest {self.by_weight[best]['rough_mae']:.2f} "
                f"at w = {best} ({100 * self.error_reduction_at(float(best)):.1f}% removed){search}; degraded "
                f"sketches: projection beats none for {100 * self.by_weight['1']['degraded_wins']:.0f}% of the faces "
                f"at w = 1, most often at w = {most} ({100 * self.by_weight[most]['degraded_wins']:.0f}%)"
                f"{at_default}")

    def weight_markdown(self) -> str:
        """The sweep as a table: a column per weight."""
        ws = sorted(self.by_weight, key=float)
        share = lambda measure: lambda w: f"{100 * self.by_weight[w][measure]:.1f}%"   # noqa: E731
        level = lambda measure: lambda w: f"{self.by_weight[w][measure]:.2f}"         # noqa: E731
        rows = [("degraded sketches: projection beats none", share("degraded_wins")),
                ("degraded sketches: MAE", level("degraded_mae")),
                ("rough sketches: projection beats none", share("rough_wins")),
                ("rough sketches: MAE", level("rough_mae")),
                ("rough sketches: error removed", lambda w: f"{100 * self.error_reduction_at(float(w)):.1f}%")]
        if self.has_perfect_search:
            rows += [("rough sketches, a perfect search (the clean sketch's neighbours): MAE", level("rough_search_mae")),
                     ("rough sketches, a perfect search: error removed",
                      lambda w: f"{100 * self.search_error_reduction_at(float(w)):.1f}%")]
        out = ["| every component's weight w | " + " | ".join(ws) + " |", "|---|" + "---:|" * len(ws)]
        out += [f"| {label} | " + " | ".join(f(w) for w in ws) + " |" for label, f in rows]
        return "\n".join(out)

    def markdown(self) -> str:
        """The model card's metrics table."""
        ok = lambda b: "yes" if b else "**no**"   # noqa: E731
        partial = self.at_weight(PARTIAL_WEIGHT)
        search = self.best_search() if self.has_perfect_search else None
        return "\n".join([
            f"Measured on {self.n_faces} held-out faces (never trained on).",
            "",
            "| measurement | value | target | met |",
            "|---|---|---|---|",
            f"| MAE generated vs photo (0-255; clean sketches, the model's default w={self.blend_weight:g}) | "
            f"{self.mae_generated:.2f} | | |",
            f"| MAE training mean face vs photo | {self.mae_mean_face:.2f} | | |",
            f"| ratio | {self.ratio:.3f} | <= {self.ratio_target} | {ok(self.ratio <= self.ratio_target)} |",
            f"| degraded sketches where projection (w=1) beats none (w=0) | "
            f"{100 * self.projection_win_rate:.1f}% | >= 70% | {ok(self.projection_win_rate >= 0.7)} |",
            f"| MAE on degraded sketches, w=1 / w=0 | {self.mae_degraded_projected:.2f} / "
            f"{self.mae_degraded_unprojected:.2f} | | |",
            f"| rough sketches where projection (w=1) beats none (w=0) | {100 * self.rough_win_rate:.1f}% | | |",
            f"| MAE on rough sketches, w=1 / w=0 | {self.mae_rough_projected:.2f} / "
            f"{self.mae_rough_unprojected:.2f} | | |",
            f"| error removed by projection on rough sketches | {100 * self.rough_error_reduction:.1f}% | >= 10% | "
            f"{ok(self.rough_error_reduction >= 0.1)} |",
            *([f"| degraded sketches where partial projection (w={PARTIAL_WEIGHT:g}, the photo model's default) "
               f"beats none | "
               f"{100 * partial['degraded_wins']:.1f}% | >= 70% | {ok(partial['degraded_wins'] >= 0.7)} |",
               f"| error removed by partial projection (w={PARTIAL_WEIGHT:g}) on rough sketches | "
               f"{100 * self.error_reduction_at(PARTIAL_WEIGHT):.1f}% | >= 10% | "
               f"{ok(self.error_reduction_at(PARTIAL_WEIGHT) >= 0.1)} |"] if partial else []),
            *([f"| rough sketches, parts projected and remainder as drawn: wins / error removed | "
               f"{100 * self.rough_parts_win_rate:.1f}% / {100 * self.rough_parts_error_reduction:.1f}% | | |"]
              if np.isfinite(self.mae_rough_parts_projected) else []),
            *([f"| rough sketches, a perfect projection (the clean sketch's latents, w=0): MAE / error removed | "
               f"{self.mae_clean_unprojected:.2f} / {100 * self.perfect_projection_reduction:.1f}% | | |",
               f"| clean sketch's K neighbours that the rough sketch finds too: parts / remainder | "
               f"{100 * self.shared_neighbours_parts:.0f}% / {100 * self.shared_neighbours_remainder:.0f}% | | |"]
              if np.isfinite(self.mae_clean_unprojected) else []),
            *([f"| rough sketches, a perfect search (the clean sketch's neighbours and weights) at its best weight "
               f"(w={search[0]:g}): error removed | {100 * search[1]:.1f}% | | |"] if search else []),
            f"| stroke distance on rough sketches, w=1 / w=0 (px) | {self.stroke_distance_projected:.2f} / "
            f"{self.stroke_distance_unprojected:.2f} | | |",
            f"| spectral distance to photos (dB; 0 = photo-like) | {self.spectral_distance:.2f} | | |",
            "",
            f"Degradation: `augment_sketch(strength={self.degrade_strength})`; rough: `roughen_sketch`"
            f"(strength {self.degrade_strength}); rng seed {self.degrade_seed}. Stroke distance: the mean distance "
            f"from the sketch's strokes to the face's edges (`quality.stroke_distance`, capped at "
            f"{STROKE_DISTANCE_CAP} px): lower follows the drawing more closely.",
            *(["", "Projection by weight, on the same faces and sketches (every component's weight at once; "
               "w = 0 is no projection):", "", self.weight_markdown()] if self.by_weight else []),
        ])


def evaluate_quality(params_dir, heldout_dir, train_dir, figures_dir=None, n_faces: Optional[int] = None,
                     degrade_strength: float = 1.0, degrade_seed: int = 0, n_figure: int = 8,
                     progress: bool = True, model=None) -> QualityReport:
    """Measure a model (a Params folder, or ``model`` already loaded) on ``heldout_dir``.

    ``train_dir`` gives the mean-face baseline. Figures go to ``figures_dir`` (none if
    None). The degradation draws from one generator seeded ``degrade_seed``, face after
    face, so the numbers are reproducible.
    """
    from tqdm.auto import tqdm

    from ..config import PARTS
    from ..data.sketch import augment_sketch, roughen_sketch
    from ..manifold import blend
    from ..pipeline import load_model
    from ..plotting import plot_projection_by_weight
    from .figures import save_figure, save_image_grid

    model = model or load_model(params_dir)
    samples = load_samples(heldout_dir)[:n_faces]
    if not samples:
        raise DataError(f"{heldout_dir} has no samples: build the held-out set again")
    base = mean_face(train_dir, model.layout, progress)
    rng = np.random.default_rng(degrade_seed)
    per = {k: [] for k in ("generated", "mean_face", "degraded_projected", "degraded_unprojected",
                           "rough_projected", "rough_unprojected", "rough_parts_projected", "strokes_projected",
                           "strokes_unprojected", "clean_unprojected", "clean_projected", "shared_parts",
                           "shared_remainder",
                           *(f"{kind}_w{w:g}" for w in PARTIAL_WEIGHTS for kind in ("degraded", "rough", "rough_search")))}
    rough_rng = np.random.default_rng(degrade_seed + 1)
    clean_rows, degraded_rows, generated, photos = [], [], [], []
    for s in tqdm(samples, desc="held-out faces", unit="face", disable=not progress):
        sketch, photo = load_pair(s, model.layout)
        clean = model.generate(sketch, sex=s.sex, shadows=False, keep_features=False)
        gen = clean.image
        per["generated"].append(mean_absolute_error(gen, photo))
        per["clean_unprojected"].append(mean_absolute_error(
            model.generate(sketch, ALL_OFF, sex=s.sex, shadows=False, keep_features=False).image, photo))
        # the clean sketch's face at w = 1, where a perfect search of the rough sketch lands at w = 1
        # (the face above when the model's default weight is 1)
        full = gen if clean.part_weights == ALL_ON else model.render(
            clean.with_vectors({c: p.projected for c, p in clean.projections.items()}), keep_features=False).image
        per["clean_projected"].append(mean_absolute_error(full, photo))
        per["mean_face"].append(mean_absolute_error(base, photo))
        mild = augment_sketch(sketch, rng, degrade_strength)
        on = model.generate(mild, ALL_ON, sex=s.sex, shadows=False, keep_features=False).image
        off = model.generate(mild, ALL_OFF, sex=s.sex, shadows=False, keep_features=False).image
        per["degraded_projected"].append(mean_absolute_error(on, photo))
        per["degraded_unprojected"].append(mean_absolute_error(off, photo))
        rough = roughen_sketch(sketch, rough_rng, model.layout, degrade_strength)
        rough_res = model.generate(rough, ALL_ON, sex=s.sex, shadows=False, keep_features=False)
        on = rough_res.image
        off = model.generate(rough, ALL_OFF, sex=s.sex, shadows=False, keep_features=False).image
        shared = shared_neighbours(clean.projections, rough_res.projections)
        per["shared_parts"].append(float(np.mean([shared[c] for c in PARTS])))
        per["shared_remainder"].append(shared["remainder"])
        parts = model.generate(rough, PARTS_ONLY, sex=s.sex, shadows=False, keep_features=False).image
        for w in PARTIAL_WEIGHTS:
            part = {c: w for c in COMPONENTS}
            per[f"degraded_w{w:g}"].append(mean_absolute_error(
                model.generate(mild, part, sex=s.sex, shadows=False, keep_features=False).image, photo))
            per[f"rough_w{w:g}"].append(mean_absolute_error(
                model.generate(rough, part, sex=s.sex, shadows=False, keep_features=False).image, photo))
            # a perfect search: the drawing's latents blended with the clean sketch's projection
            # (at w = 1 that is the clean sketch's own face, measured above)
            vectors = {c: blend(rough_res.latents[c], clean.projections[c].projected.astype(np.float64), w)
                       for c in COMPONENTS}
            per[f"rough_search_w{w:g}"].append(mean_absolute_error(
                model.render(rough_res.with_vectors(vectors), keep_features=False).image, photo))
        per["rough_projected"].append(mean_absolute_error(on, photo))
        per["rough_unprojected"].append(mean_absolute_error(off, photo))
        per["rough_parts_projected"].append(mean_absolute_error(parts, photo))
        per["strokes_projected"].append(stroke_distance(rough, on))
        per["strokes_unprojected"].append(stroke_distance(rough, off))
        generated.append(gen)
        photos.append(photo)
        if len(clean_rows) < n_figure:
            clean_rows.append([sketch, gen, photo])
            degraded_rows.append([rough, off, on, photo])
    m = {k: float(np.mean(v)) for k, v in per.items()}
    wins = np.asarray(per["degraded_projected"]) < np.asarray(per["degraded_unprojected"])
    rough_wins = np.asarray(per["rough_projected"]) < np.asarray(per["rough_unprojected"])
    parts_wins = np.asarray(per["rough_parts_projected"]) < np.asarray(per["rough_unprojected"])
    report = QualityReport(len(samples), m["generated"], m["mean_face"], m["generated"] / m["mean_face"],
                           float(wins.mean()), m["degraded_projected"], m["degraded_unprojected"],
                           degrade_strength, degrade_seed, float(rough_wins.mean()), m["rough_projected"],
                           m["rough_unprojected"], m["strokes_projected"], m["strokes_unprojected"],
                           spectral_distance(generated, photos), float(parts_wins.mean()),
                           m["rough_parts_projected"], m["clean_unprojected"], m["shared_parts"],
                           m["shared_remainder"], str(params_dir or ""),
                           by_weight=_sweep(per), blend_weight=model.config.blend_weight,
                           per_face={k: [round(x, 3) for x in v] for k, v in per.items()})
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        report.figures["heldout"] = _compact_png(save_image_grid(
            clean_rows, figures_dir / "heldout.png", ["held-out sketch", "generated", "true photo"],
            title=f"held-out faces (MAE {m['generated']:.1f} vs mean face {m['mean_face']:.1f})", cell=2.0))
        report.figures["projection"] = _compact_png(save_image_grid(
            degraded_rows, figures_dir / "projection.png",
            ["rough sketch", "no projection (w=0)", "projection (w=1)", "true photo"],
            title=f"rough sketches: projection is closer to the photo for {100 * report.rough_win_rate:.0f}% of "
                  f"{len(samples)} faces, error {100 * report.rough_error_reduction:.0f}% lower", cell=2.0))
        report.figures["projection_weights"] = _compact_png(save_figure(
            plot_projection_by_weight(report), figures_dir / "projection_weights.png"))
    return report


def _sweep(per: Dict[str, list]) -> Dict[str, Dict[str, float]]:
    """{"w": {degraded_mae, degraded_wins, rough_mae, rough_wins, rough_search_mae}} from the
    per-face errors of :func:`evaluate_quality`, w = 0 and w = 1 included; wins: the share of
    faces where the weight gives a lower error than w = 0. A perfect search at w = 0 is the
    drawing's own face, at w = 1 the clean sketch's projected face."""
    key = {0.0: "{}_unprojected", 1.0: "{}_projected", **{w: f"{{}}_w{w:g}" for w in PARTIAL_WEIGHTS}}
    search = {0.0: "rough_unprojected", 1.0: "clean_projected",
              **{w: f"rough_search_w{w:g}" for w in PARTIAL_WEIGHTS}}
    out = {}
    for w in WEIGHTS:
        m = {}
        for kind in ("degraded", "rough"):
            errors, none = np.asarray(per[key[w].format(kind)]), np.asarray(per[f"{kind}_unprojected"])
            m[f"{kind}_mae"], m[f"{kind}_wins"] = float(errors.mean()), float((errors < none).mean())
        m["rough_search_mae"] = float(np.mean(per[search[w]]))
        out[f"{w:g}"] = m
    return out


def shared_neighbours(a, b) -> Dict[str, float]:
    """{component: share of ``a``'s neighbours that ``b``'s include}, for two generations'
    projections (:class:`~dfd_kit.manifold.Projection` per component, same K): 1.0 when the
    rough sketch's projection searches among the same bank faces as the clean sketch's."""
    return {c: len(set(a[c].neighbours.tolist()) & set(b[c].neighbours.tolist())) / len(a[c].neighbours)
            for c in a}


def _best_search_cell(r: QualityReport) -> str:
    if not r.has_perfect_search:
        return "-"
    w, removed = r.best_search()
    return f"{100 * removed:.1f}% (w={w:g})"


def comparison_markdown(reports: Dict[str, "QualityReport"]) -> str:
    """One table, a column per model, of the measures that compare models on the same faces."""
    names = list(reports)
    rows = [("MAE generated vs photo (clean sketches, each model's default weight)",
             lambda r: f"{r.mae_generated:.2f} (w={r.blend_weight:g})"),
            ("ratio to the mean face", lambda r: f"{r.ratio:.3f}"),
            ("rough sketches: projection wins", lambda r: f"{100 * r.rough_win_rate:.1f}%"),
            ("rough sketches: error removed by projection", lambda r: f"{100 * r.rough_error_reduction:.1f}%"),
            ("the same, parts only (remainder as drawn): wins / error removed",
             lambda r: f"{100 * r.rough_parts_win_rate:.1f}% / {100 * r.rough_parts_error_reduction:.1f}%"),
            (f"partial projection (w={PARTIAL_WEIGHT:g}): degraded sketches' wins / rough sketches' error removed",
             lambda r: f"{100 * r.at_weight(PARTIAL_WEIGHT)['degraded_wins']:.1f}% / "
                       f"{100 * r.error_reduction_at(PARTIAL_WEIGHT):.1f}%" if r.by_weight else "-"),
            ("error a perfect projection would remove (the clean sketch's latents)",
             lambda r: f"{100 * r.perfect_projection_reduction:.1f}%"),
            ("error a perfect search would remove at its best weight (the clean sketch's neighbours)",
             _best_search_cell),
            ("clean sketch's neighbours the rough sketch finds: parts / remainder",
             lambda r: f"{100 * r.shared_neighbours_parts:.0f}% / {100 * r.shared_neighbours_remainder:.0f}%"),
            ("stroke distance, w=1 / w=0 (px)",
             lambda r: f"{r.stroke_distance_projected:.2f} / {r.stroke_distance_unprojected:.2f}"),
            ("spectral distance to photos (dB)", lambda r: f"{r.spectral_distance:.2f}")]
    out = ["| measured on the same faces | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    out += [f"| {label} | " + " | ".join(f(reports[n]) for n in names) + " |" for label, f in rows]
    return "\n".join(out)


def _compact_png(path) -> str:
    """Re-save a figure with a 256-colour palette: a third of the size, which matters for
    figures committed next to a model that must stay small."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    return str(path)


def write_report(report: QualityReport, path) -> Path:
    """quality.json: the summary and every per-face error."""
    path = Path(path)
    path.write_text(json.dumps(asdict(report), indent=1) + "\n")
    return path


def read_report(path) -> QualityReport:
    """A quality.json back as a :class:`QualityReport` (e.g. a model card's, for its figures):
    what :func:`write_report` wrote. A missing file says how to make it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: measure the model first "
                        "(python -m dfd_kit.training quality --params <its Params folder>)")
    try:
        return QualityReport(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:   # not JSON, or not a report's fields
        raise DataError(f"{path} is not a quality report ({e}): measure the model again") from None


CARD_START, CARD_END = "<!-- quality:start -->", "<!-- quality:end -->"


def update_model_card(card_path, report: QualityReport, extra: str = "") -> bool:
    """Replace the metrics block between the card's quality markers (``extra`` markdown
    goes after the table); False when the card has no markers (it is left alone)."""
    card_path = Path(card_path)
    if not card_path.exists():
        return False
    text = card_path.read_text()
    a, b = text.find(CARD_START), text.find(CARD_END)
    if a < 0 or b < a:
        return False
    body = report.markdown() + ("\n\n" + extra if extra else "")
    card_path.write_text(text[:a + len(CARD_START)] + "\n" + body + "\n" + text[b:])
    return True


# --------------------------------------------------------------------------- latent geometry

#: The measures of :func:`projection_geometry`, each a mean over faces: distances to the
#: clean sketch's latent (in bank spacings), the share of faces where projection lands
#: closer than the raw latent, and the share of the clean sketch's K neighbours found.
GEOMETRY_MEASURES = ("degraded", "degraded_projected", "rough", "rough_projected", "clean_projected",
                     "degraded_closer", "rough_closer", "shared_rough")


@dataclass
class GeometryReport:
    """Where manifold projection takes a freehand sketch's latents (:func:`projection_geometry`):
    ``components[c][m]`` for each component and measure of :data:`GEOMETRY_MEASURES`."""
    n_faces: int
    k: int
    bank_rows: int
    components: Dict[str, Dict[str, float]]
    label: str = ""


def bank_spacing(bank: np.ndarray, n: int = 200) -> float:
    """The median distance between two rows of a bank (from up to ``n`` x ``n`` pairs of
    distinct rows): the unit of :func:`projection_geometry`, so encoders whose latents have
    different scales compare."""
    m = min(n, len(bank) // 2)
    if m < 1:
        raise DataError(f"a bank of {len(bank)} rows has no spacing: it needs at least two")
    a, b = bank[:m].astype(np.float64), bank[m:2 * m].astype(np.float64)
    return float(np.median(np.linalg.norm(a[:, None] - b[None], axis=2)))


def projection_geometry(encoders, bank_sketches: np.ndarray, bank_sexes, heldout_dir, layout: Layout, k: int,
                        n_faces: Optional[int] = 100, degrade_strength: float = 1.0, degrade_seed: int = 0,
                        label: str = "", progress: bool = True) -> GeometryReport:
    """Measure, in latent space and before any stage 2, whether projection can repair a
    freehand sketch: for each held-out face, the clean sketch's latent is the ground truth,
    and the degraded and rough sketches' latents (the same degradations, from the same seeds,
    as :func:`evaluate_quality`) are compared with it before and after projection onto the
    bank of ``bank_sketches`` (K ``k``, w = 1, the face's sex).

    Distances are in bank spacings (:func:`bank_spacing`, per component and sex).
    Projection can only help where it lands nearer the clean latent than the raw latent
    does; ``clean_projected`` (the clean latent's own projection) is the closest it gets
    even when it finds the right neighbours. Costs one encoding of the bank: minutes for
    thousands of sketches."""
    from ..data.sketch import augment_sketch, roughen_sketch
    from ..manifold import project_to_manifold
    from .banks import encode_all

    samples = load_samples(heldout_dir)[:n_faces]
    if not samples:
        raise DataError(f"{heldout_dir} has no samples: build the held-out set again")
    sexes = np.asarray(bank_sexes)
    bank = encode_all(encoders, np.asarray(bank_sketches), layout, progress=progress)
    rng, rough_rng = np.random.default_rng(degrade_seed), np.random.default_rng(degrade_seed + 1)
    clean = np.stack([load_pair(s, layout)[0] for s in samples])
    degraded = np.stack([augment_sketch(x, rng, degrade_strength) for x in clean])
    rough = np.stack([roughen_sketch(x, rough_rng, layout, degrade_strength) for x in clean])
    z = {name: encode_all(encoders, x, layout) for name, x in
         (("clean", clean), ("degraded", degraded), ("rough", rough))}
    out = {}
    for c in COMPONENTS:
        per = {m: [] for m in GEOMETRY_MEASURES}
        by_sex = {sex: bank[c][sexes == sex] for sex in {s.sex for s in samples}}
        spacing = {sex: bank_spacing(b) for sex, b in by_sex.items()}
        for i, s in enumerate(samples):
            b, unit = by_sex[s.sex], spacing[s.sex]
            truth = z["clean"][c][i]
            dist = lambda v: float(np.linalg.norm(v - truth)) / unit   # noqa: E731
            own = project_to_manifold(truth, b, k, 1.0)
            per["clean_projected"].append(dist(own.projected))
            for name in ("degraded", "rough"):
                p = project_to_manifold(z[name][c][i], b, k, 1.0)
                raw, projected = dist(z[name][c][i]), dist(p.projected)
                per[name].append(raw)
                per[name + "_projected"].append(projected)
                per[name + "_closer"].append(float(projected < raw))
                if name == "rough":
                    per["shared_rough"].append(shared_neighbours({c: own}, {c: p})[c])
        out[c] = {m: float(np.mean(v)) for m, v in per.items()}
    return GeometryReport(len(samples), k, len(bank_sketches), out, label)
