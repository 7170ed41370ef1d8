"""The paper's central claim, measured (notebook 07).

Each component's vector is ``w * projected + (1 - w) * latent``: w = 0 keeps the
drawing's own latent (faithful to the strokes), w = 1 replaces it by its projection onto
the manifold of real samples (a plausible face). :func:`measure_tradeoff` sweeps w over a
grid for a set of sketches, all components at once and one component at a time (the
others at the default 1), and measures every face it makes:

* faithfulness -- :func:`~dfd_kit.measures.line_distance`, the symmetric chamfer distance
  between the sketch's lines and the face's edges (pixels at 256; lower = more faithful);
* realism in latent space -- :func:`~dfd_kit.measures.bank_distance`, how far the vector
  the decoder receives lies from the nearest real sample of its bank, in units of the
  bank's own row spacing (lower = more real);
* realism in pixels -- the spectral distance (dB) of the face to the faces the same model
  makes from real samples (:func:`reference_faces`; lower = more real).

One component at a time is measured where that component is: its box of the layout for
the lines and the spectrum, its own bank for the latent (the remainder's box is the
whole face). All at once is measured on the whole face, the latent distance averaged
over the five components.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import measures
from .components import normalise_sketch
from .config import COMPONENTS, Layout
from .examples import EXAMPLES_DIR, HAND_DRAWN_DIR, HardExample, hard_examples
from .manifold import blend

#: The grid of weights swept (w = 1 is full projection, the official and cartoon models' default).
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: The label of "every component's weight at once" among the groups of a sweep.
ALL = "all"
#: Clean sketches: two drawn by hand with care and two held-out facesjs sketches (the
#: cartoon model's own style).
CLEAN = (("hand_drawn", "hand1_male"), ("hand_drawn", "hand2_female"),
         ("sketches", "face1_male"), ("sketches", "face2_female"))
#: The small set for automated runs: one clean and one freehand sketch, both drawn by hand.
SMALL = ("hand1_male", "hand3_rough_male")


def tradeoff_sketches(layout: Layout, small: bool = False) -> List[HardExample]:
    """The notebook's fixed sketches at ``layout.size``: the freehand ones of
    :func:`~dfd_kit.examples.hard_examples` (rough, with missing, doubled and scribbled
    parts), then the :data:`CLEAN` ones. ``small``: only the two of :data:`SMALL`."""
    folders = {"hand_drawn": HAND_DRAWN_DIR, "sketches": EXAMPLES_DIR}
    out = list(hard_examples(layout))
    out += [HardExample(name, normalise_sketch(folders[f] / f"{name}.png", layout), name.split("_")[-1])
            for f, name in CLEAN]
    return [e for e in out if e.name in SMALL] if small else out


def is_clean(name: str) -> bool:
    """Whether a sketch of :func:`tradeoff_sketches` is one of the clean ones."""
    return name in {n for _, n in CLEAN}


def measure_boxes(layout: Layout) -> Dict[str, Optional[measures.Box]]:
    """{group: box in the measures' 256-pixel frame}: each component's layout box scaled,
    None (the whole face) for the remainder and for all components at once."""
    s = measures.MEASURE_SIZE / layout.size
    out: Dict[str, Optional[measures.Box]] = {ALL: None, "remainder": None}
    for c in COMPONENTS:
        if c != "remainder":
            b = layout.box(c)
            out[c] = (round(b.x * s), round(b.y * s), round(b.size * s))
    return out


def reference_faces(model, sex: str, n: int = 12) -> List[np.ndarray]:
    """``n`` faces the model makes from real samples: row i of every component's bank (one
    training sketch's five latents, when the banks were encoded in one pass, as the kit's
    trainers do), decoded and synthesised, for rows spread evenly over the bank. They
    stand in for the training photos, which do not ship with a model."""
    from .synthesis import to_uint8_image

    bank = model.banks[sex]
    rows = np.linspace(0, min(len(bank[c]) for c in COMPONENTS) - 1, n).round().astype(int)
    faces = []
    for i in rows:
        face_map, _ = model.feature_map({c: bank[c][i] for c in COMPONENTS})
        faces.append(to_uint8_image(model.synthesize(face_map)))
    return faces


@dataclass
class Reference:
    """What realism is measured against, for one model and sex."""
    faces: List[np.ndarray]                       # reference_faces
    spectra: Dict[str, np.ndarray]                # group -> mean log spectrum over the faces, in its box
    spread: Dict[str, float]                      # group -> mean spectral distance of a face to the others'
    spacing: Dict[str, float]                     # component -> bank_spacing


def reference(model, sex: str, n: int = 12) -> Reference:
    """The :class:`Reference` of one bank: its faces, their spectra per measuring box, how
    far one of them typically lies from the rest (leave-one-out: the realism of a face of
    a real sample), and each component bank's row spacing."""
    faces = reference_faces(model, sex, n)
    boxes = measure_boxes(model.layout)
    spectra, spread = {}, {}
    for g, box in boxes.items():
        each = np.stack([measures.mean_spectrum([f], box) for f in faces])
        spectra[g] = each.mean(0)
        spread[g] = float(np.mean([measures.ring_spectrum_distance(each[i], np.delete(each, i, 0).mean(0))
                                   for i in range(len(each))]))
    spacing = {c: measures.bank_spacing(model.banks[sex][c]) for c in COMPONENTS}
    return Reference(faces, spectra, spread, spacing)


@dataclass
class Tradeoff:
    """A sweep's measurements. Arrays are indexed [sketch, group, weight]; groups are
    :data:`ALL` (every weight at once) then each component alone (the others at 1)."""
    model: str
    names: List[str]
    sexes: List[str]
    weights: np.ndarray                          # (W,)
    groups: Tuple[str, ...]                      # (G,)
    faithfulness: np.ndarray                     # (S, G, W) symmetric chamfer, px at 256
    latent: np.ndarray                           # (S, G, W) distance to the bank, in bank spacings
    spectral: np.ndarray                         # (S, G, W) dB to the faces of real samples
    sketches: List[np.ndarray]                   # (S,) the sketches, uint8 (size, size)
    faces: np.ndarray                            # (S, W, size, size, 3) all components at each weight
    reference_spread: Dict[str, float] = field(default_factory=dict)  # group -> faces of real samples' own
    blend_weight: float = 1.0                    # the model's default weight (config.blend_weight)

    @property
    def clean(self) -> np.ndarray:
        """bool (S,): which sketches are clean."""
        return np.array([is_clean(n) for n in self.names])

    def index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"no sketch {name!r} in this sweep; it has {', '.join(self.names)}")
        return self.names.index(name)

    def change(self, what: str = "faithfulness", group: str = ALL) -> np.ndarray:
        """float64 (S,): the measure at w = 1 minus at w = 0, per sketch (positive: it grew)."""
        a = getattr(self, what)[:, self.groups.index(group)]
        return a[:, -1] - a[:, 0]

    def summary(self) -> str:
        """A table, one row per set of sketches (freehand, clean) and group: each measure's
        mean at w = 0 and w = 1, and for how many sketches the face's lines were farther
        from the strokes, and its spectrum nearer to faces of real samples, at w = 1."""
        lines = [f"{self.model}: mean over the sketches, w = {self.weights[0]:g} -> w = {self.weights[-1]:g}; "
                 f"how many sketches at w = {self.weights[-1]:g} have their lines farther, their spectrum nearer",
                 f"{'sketches':<10} {'weights':<10} {'lines (px)':>16} {'bank distance':>16} {'spectrum (dB)':>16}"
                 f"   {'lines farther':>14} {'spectrum nearer':>16}"]
        for label, pick in (("freehand", ~self.clean), ("clean", self.clean)):
            if not pick.any():
                continue
            for gi, g in enumerate(self.groups):
                cells = []
                for what in ("faithfulness", "latent", "spectral"):
                    a = getattr(self, what)[pick, gi]
                    cells.append(f"{a[:, 0].mean():6.2f} -> {a[:, -1].mean():5.2f}")
                n = int(pick.sum())
                worse = int((self.change("faithfulness", g)[pick] > 0).sum())
                real = int((self.change("spectral", g)[pick] < 0).sum())
                lines.append(f"{label:<10} {g:<10} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}"
                             f"   {f'{worse} of {n}':>14} {f'{real} of {n}':>16}")
        return "\n".join(lines)

    def verdict(self, group: str = ALL, tolerance: float = 0.05) -> str:
        """One sentence per set of sketches: did going from w = 0 to w = 1 cost faithfulness
        and buy realism in pixels, on average -- the paper's trade-off -- or not? Mean changes
        smaller than ``tolerance`` (px, dB) count as no change."""
        out = []
        for label, pick in (("freehand", ~self.clean), ("clean", self.clean)):
            if not pick.any():
                continue
            df, ds = self.change("faithfulness", group)[pick], self.change("spectral", group)[pick]
            dl = self.change("latent", group)[pick]
            n = len(df)
            faithful = ("less faithful" if df.mean() > tolerance else
                        "more faithful" if df.mean() < -tolerance else "about as faithful")
            real = ("more real" if ds.mean() < -tolerance else
                    "less real" if ds.mean() > tolerance else "about as real")
            kind = "the trade-off" if df.mean() > tolerance and ds.mean() < -tolerance else "no trade-off"
            out.append(f"{self.model}, {label} sketches ({group}), w = {self.weights[0]:g} -> {self.weights[-1]:g}: "
                       f"lines {df.mean():+.2f} px (farther for {int((df > 0).sum())} of {n}), "
                       f"bank {dl.mean():+.2f} (nearer for {int((dl < 0).sum())} of {n}), "
                       f"spectrum {ds.mean():+.2f} dB (nearer for {int((ds < 0).sum())} of {n}): "
                       f"{kind}, {faithful} and {real} by the spectrum.")
        return "\n".join(out)


def measure_tradeoff(model, examples: Sequence, weights: Sequence[float] = WEIGHTS,
                     components: Sequence[str] = COMPONENTS, n_references: int = 12,
                     references: Optional[Dict[str, Reference]] = None, name: Optional[str] = None) -> Tradeoff:
    """Sweep w for every sketch of ``examples`` (objects with ``name``, ``sketch``, ``sex``,
    e.g. :func:`tradeoff_sketches`): all components at once, then each of ``components``
    alone with the others at 1, measuring each face (see the module docstring).

    The drawing is encoded and projected once per sketch (neither depends on w); each
    weight only re-blends and re-renders. ``references``: {sex: :class:`Reference`}, made
    here (``n_references`` faces per sex) for the sexes the sketches need when not given.
    ``name``: what figures call the model (default: its Params folder's name).
    """
    weights = np.asarray(sorted(float(w) for w in weights))
    if len(weights) < 2 or weights[0] < 0 or weights[-1] > 1:
        raise ValueError(f"weights must be at least two values in [0, 1], not {list(weights)}")
    if not len(examples):
        raise ValueError("no sketches to sweep")
    groups = (ALL,) + tuple(components)
    references = dict(references or {})
    for sex in dict.fromkeys(e.sex for e in examples):
        if sex not in references:
            references[sex] = reference(model, sex, n_references)
    boxes = measure_boxes(model.layout)
    shape = (len(examples), len(groups), len(weights))
    faith, latent, spectral = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    faces = np.zeros((len(examples), len(weights), model.layout.size, model.layout.size, 3), np.uint8)
    sketches = []
    for s, ex in enumerate(examples):
        res = model.generate(ex.sketch, sex=ex.sex, shadows=False, keep_features=False)
        ref, bank = references[ex.sex], model.banks[ex.sex]
        sketches.append(res.sketch)
        lines = measures.sketch_lines(res.sketch)
        projected = {c: res.projections[c].projected.astype(np.float64) for c in COMPONENTS}
        cache: dict = {}   # feature maps by vector: one component alone re-decodes only itself
        made: dict = {}    # weights off 1 -> (vectors, face, its edges): w = 1 everywhere is made once

        def face_at(w_of):
            key = tuple(sorted((c, w) for c, w in w_of.items() if w != 1.0))
            if key not in made:
                vectors = {c: blend(res.latents[c], projected[c], w_of.get(c, 1.0)) for c in COMPONENTS}
                image = model.render(res.with_vectors(vectors), keep_features=False, cache=cache).image
                made[key] = vectors, image, measures.face_edges(image)
            return made[key]

        for gi, g in enumerate(groups):
            parts = COMPONENTS if g == ALL else (g,)
            for wi, w in enumerate(weights):
                vectors, image, edges = face_at({c: w for c in parts})
                if g == ALL:
                    faces[s, wi] = image
                faith[s, gi, wi] = measures.chamfer_distance(lines, edges, box=boxes[g])
                latent[s, gi, wi] = np.mean([measures.bank_distance(vectors[c], bank[c], ref.spacing[c])
                                             for c in parts])
                spectrum = measures.mean_spectrum([image], boxes[g])
                spectral[s, gi, wi] = measures.ring_spectrum_distance(spectrum, ref.spectra[g])
    spread = {g: float(np.mean([references[x].spread[g] for x in dict.fromkeys(e.sex for e in examples)]))
              for g in groups}
    name = name or Path(str(getattr(model, "source", "") or "model")).name
    return Tradeoff(name, [e.name for e in examples],
                    [e.sex for e in examples], weights, groups, faith, latent, spectral, sketches, faces, spread,
                    model.config.blend_weight)


__all__ = ["ALL", "CLEAN", "SMALL", "WEIGHTS", "Reference", "Tradeoff", "is_clean", "measure_boxes",
           "measure_tradeoff", "reference", "reference_faces", "tradeoff_sketches"]
