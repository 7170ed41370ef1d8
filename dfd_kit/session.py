"""One drawing, generated incrementally: the engine under the drawing pad, with no UI.

A drawing changes a stroke at a time, and a stroke touches one or two components. A
:class:`Session` remembers what it computed for the last sketch (crops, latents,
projections, feature maps, shadows) and, on :meth:`Session.update`, runs only what the
change reaches, in the paper's order:

* **components / embedding**: only the components whose crops changed are encoded again;
* **manifold projection**: those, and the components whose weight changed, are projected
  again (a new bank or K projects them all);
* **feature mapping**: only the components whose vector changed are decoded again (the
  model's feature-map cache); **synthesis** runs once;
* **shadows**, when asked for (:meth:`Session.update_shadows`): only the components whose
  neighbours changed, each bank row decoded once and kept in a per-model row cache.

A stage can be *pinned* for a component (:meth:`Session.freeze`): its current output is
kept whatever reaches it, so only what lies downstream follows the drawing. The drawing
pad (:mod:`dfd_kit.widgets`) and its lens (:mod:`dfd_kit.inspector`) are a view of a
session; scripts can drive one directly::

    s = Session(dfd_kit.load())
    s.update(sketch)                            # every component the first time
    s.update(sketch_with_a_new_mouth)           # the mouth only
    s.result.image
"""
from __future__ import annotations

import time
import weakref
from collections import Counter, OrderedDict
from typing import Dict, Mapping, Optional, Set, Tuple

import numpy as np

from .components import components_touched
from .config import COMPONENTS
from .errors import ConfigError
from .manifold import Projection, blend_shadow, shadow_weights

#: The stages that can be pinned, per component, in the order data flows through them: the
#: encoder's latent, the projected (blended) vector, the part's feature map. The generator
#: is last: pinning it would leave nothing downstream to watch.
STAGES = ("embedding", "projection", "mapping")
PAPER = 255


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: a stage to freeze is one of {', '.join(STAGES)}")
    return stage


def check_component(component: str) -> str:
    if component not in COMPONENTS:
        raise ConfigError(f"unknown component {component!r}: expected one of {', '.join(COMPONENTS)}")
    return component


class RowCache:
    """LRU cache of decoded bank rows (the neighbour sketches the shadows are made of):
    a neighbour decoded once is never decoded again while it stays in the budget."""

    def __init__(self, budget_bytes: int = 256 << 20):
        self.budget, self.used = budget_bytes, 0
        self.rows: "OrderedDict[tuple, np.ndarray]" = OrderedDict()

    def get(self, key):
        a = self.rows.get(key)
        if a is not None:
            self.rows.move_to_end(key)
        return a

    def put(self, key, a: np.ndarray):
        a = a.astype(np.float16)
        self.rows[key] = a
        self.used += a.nbytes
        while self.used > self.budget and len(self.rows) > 1:
            _, old = self.rows.popitem(last=False)
            self.used -= old.nbytes


_ROW_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def row_cache(model) -> RowCache:
    """One cache per model, shared by its sessions (a re-run notebook cell is instant)."""
    try:
        return _ROW_CACHES.setdefault(model, RowCache())
    except TypeError:   # not weak-referenceable
        return RowCache()


class Session:
    """The incremental state of one drawing on one model (see the module docstring).

    ``result`` is the latest :class:`~dfd_kit.pipeline.GenerationResult` (feature maps
    kept); ``stats`` counts the work per component; ``timings`` holds the last update's
    stages in seconds."""

    def __init__(self, model):
        self.model = model
        self._sketch: Optional[np.ndarray] = None   # the sketch the caches describe
        self._crops: Dict[str, np.ndarray] = {}
        self._latents: Dict[str, np.ndarray] = {}
        # where each component's search starts (a model with query encoders; else empty), and
        # the query of a pinned embedding, kept with it so the pinned part projects as before
        self._queries: Dict[str, np.ndarray] = {}
        self._pinned_queries: Dict[str, np.ndarray] = {}
        self._proj: Dict[str, Projection] = {}
        self._settings: Optional[tuple] = None      # (weights, sex, k) the projections were made with
        self._dirty: Set[str] = set(COMPONENTS)     # to project again whatever the drawing does
        self._shadows: Dict[str, np.ndarray] = {}
        self._shadow_stale: Set[str] = set(COMPONENTS)
        self._shadow_img: Optional[np.ndarray] = None
        self._feature_maps: Dict[str, tuple] = {}   # per component: (vector, map), see DeepFaceDrawing.feature_map
        self._pins: Dict[Tuple[str, str], object] = {}
        self.rows = row_cache(model)
        self.result = None
        self.timings: Dict[str, float] = {}
        self.stats = {"encoded": Counter(), "projected": Counter(), "shadowed": Counter(),
                      "decoded_rows": Counter(), "feature_decoded": Counter(), "generated": 0, "updates": 0}

    # ------------------------------------------------------------------ generation
    def update(self, sketch: np.ndarray, part_weights: Optional[Mapping[str, float]] = None, sex: str = "male",
               k: Optional[int] = None) -> Optional[Set[str]]:
        """Bring :attr:`result` up to date with a normalised (size, size) uint8 sketch and
        the settings, running only what changed. Returns the components encoded again
        (empty when only settings changed), or None when nothing changed at all. On an
        error nothing is committed: the session still describes the previous sketch."""
        from .pipeline import GenerationResult, check_k, check_part_weights, check_sex

        m = self.model
        w = check_part_weights(part_weights, m.config.blend_weight)
        sex = check_sex(sex)
        k = check_k(k, m.config.k, min(len(m.banks[sex][c]) for c in COMPONENTS), sex)
        dirty, shadow_stale = set(self._dirty), set()
        if self._settings is not None:
            old_w, old_sex, old_k = self._settings
            if (sex, k) != (old_sex, old_k):   # another bank or K: other neighbours everywhere
                dirty |= set(COMPONENTS)
                shadow_stale |= set(COMPONENTS)
            else:   # a weight moves the vector, not the neighbours: the shadows stay
                dirty |= {c for c in COMPONENTS if w[c] != old_w[c]}
        if self._sketch is None:
            touched = set(COMPONENTS)
        else:
            touched = set(components_touched(self._sketch, sketch, m.layout))
            # a latent let go of by unfreeze("embedding") is encoded again from the crop
            touched |= {c for c in COMPONENTS if c not in self._latents}
        reproject = touched | dirty
        if not reproject and self.result is not None:
            return None
        t = {}
        a = time.perf_counter()
        crops, latents, queries = dict(self._crops), dict(self._latents), dict(self._queries)
        if touched:
            new_crops = m.crop(sketch)
            todo = {c: new_crops[c] for c in COMPONENTS if c in touched}
            latents.update(m.encode(todo))
            queries.update(m.encode_queries(todo))
            crops.update(todo)
            self.stats["encoded"].update(todo.keys())
        for (stage, c), pinned in self._pins.items():
            if stage == "embedding":   # the crop follows the drawing, the latent does not
                latents[c] = pinned
                if c in self._pinned_queries:
                    queries[c] = self._pinned_queries[c]
        t["encode"] = time.perf_counter() - a
        a = time.perf_counter()
        proj = dict(self._proj)
        order = [c for c in COMPONENTS if c in reproject]
        proj.update(m.project({c: latents[c] for c in order}, w, sex, k, queries=queries))
        self.stats["projected"].update(order)
        for (stage, c), pinned in self._pins.items():
            if stage == "projection":
                proj[c] = pinned
            elif stage == "mapping":   # the cache hands the pinned map to whatever vector comes
                self._feature_maps[c] = (np.array(proj[c].vector, np.float32), pinned)
        t["project"] = time.perf_counter() - a
        a = time.perf_counter()
        res = GenerationResult(sketch, crops, latents, proj, w, sex, k, queries=dict(queries))
        before = {c: id(v[1]) for c, v in self._feature_maps.items()}
        m.render(res, cache=self._feature_maps)   # only parts whose vector changed are decoded
        self.stats["feature_decoded"].update(c for c, v in self._feature_maps.items() if id(v[1]) != before.get(c))
        self.stats["generated"] += 1
        t["render"] = time.perf_counter() - a
        # commit: the caches now describe `sketch` and these settings
        self._sketch, self._crops, self._latents, self._proj = sketch, crops, latents, proj
        self._queries = queries
        self._settings, self._dirty = (w, sex, k), set()
        self._shadow_stale |= touched | shadow_stale
        self.result = res
        self.timings = t
        self.stats["updates"] += 1
        return touched

    def update_shadows(self) -> bool:
        """Recompute the shadows of the components whose neighbours changed and compose
        them into ``result.shadow``. Returns True if the guidance image changed."""
        if self.result is None:
            return False
        sex = self.result.sex
        stale = [c for c in COMPONENTS if c in self._shadow_stale or c not in self._shadows]
        for c in stale:
            self._shadows[c] = self.shadow(c, self._proj[c], sex)
            self._shadow_stale.discard(c)
            self.stats["shadowed"][c] += 1
        if stale or self._shadow_img is None:
            self._shadow_img = self.model.compose_shadows(self._shadows)
        self.result.shadows = dict(self._shadows)
        self.result.shadow = self._shadow_img
        return bool(stale)

    def shadow(self, c: str, projection: Projection, sex: str) -> np.ndarray:
        """uint8 (S, S): the neighbours drawn faintly by their weights, normalised to sum at
        most 1 (:func:`~dfd_kit.manifold.shadow_weights`), each row decoded once."""
        keep = shadow_weights(projection.weights) > 0   # the same neighbours whether normalised or not
        if not keep.any():
            return np.full((self.model.layout.crop_size(c),) * 2, PAPER, np.uint8)
        decoded = self.decode_rows(c, sex, projection.neighbours[keep])
        return blend_shadow(decoded, projection.weights[keep], normalise=True)

    def decode_rows(self, component: str, sex: str, rows) -> np.ndarray:
        """Bank rows -> decoded sketches (N, S, S) in about [-1, 1], each row decoded once
        (one at a time: a fixed batch shape, so Jittor compiles nothing new) and kept in
        the model's row cache."""
        bank = self.model.banks[sex][component]
        out = []
        for r in rows:
            key = (sex, component, int(r))
            d = self.rows.get(key)
            if d is None:
                d = self.model.decode_neighbours(component, bank[int(r)][None])[0]
                self.rows.put(key, d)
                self.stats["decoded_rows"][component] += 1
            out.append(d.astype(np.float32))
        size = self.model.layout.crop_size(component)
        return np.stack(out) if out else np.zeros((0, size, size), np.float32)

    @property
    def shadow_image(self) -> Optional[np.ndarray]:
        """uint8 (size, size): the composed shadow guidance (None before the first)."""
        return self._shadow_img

    # ------------------------------------------------------------------ pinned stages
    @property
    def frozen(self) -> frozenset:
        """The pinned stages, as {(stage, component), ...}."""
        return frozenset(self._pins)

    def freeze(self, stage: str, component: str):
        """Pin one stage's current output for one component: ``"embedding"`` (the latent),
        ``"projection"`` (the blended vector) or ``"mapping"`` (its feature map). Takes
        effect at the next :meth:`update`."""
        stage, c = check_stage(stage), check_component(component)
        if self.result is None:
            raise ConfigError("nothing generated yet: draw something first, then freeze a stage")
        if stage == "embedding":
            value = np.array(self._latents[c], np.float32)
            if c in self._queries:
                self._pinned_queries[c] = np.array(self._queries[c], np.float32)
        elif stage == "projection":
            p = self._proj[c]
            value = Projection(p.neighbours.copy(), p.distances.copy(), p.weights.copy(), p.projected.copy(),
                               p.vector.copy())
        else:
            value = self._feature_maps[c][1]
        self._pins[(stage, c)] = value
        self._changed(c)

    def unfreeze(self, stage: Optional[str] = None, component: Optional[str] = None) -> Set[str]:
        """Let go of pinned stages: one (``stage`` of ``component``), all of a stage or of a
        component, or every pin (no arguments). Returns the components let go of."""
        stage = None if stage is None else check_stage(stage)
        component = None if component is None else check_component(component)
        gone = [key for key in self._pins if stage in (None, key[0]) and component in (None, key[1])]
        for key in gone:
            del self._pins[key]
            if key[0] == "mapping":   # its cache entry holds the pinned map
                self._feature_maps.pop(key[1], None)
            elif key[0] == "embedding":   # the session's latent is the pinned one: encode the crop again
                self._latents.pop(key[1], None)
                self._queries.pop(key[1], None)
                self._pinned_queries.pop(key[1], None)
        released = {key[1] for key in gone}
        for c in released:
            self._changed(c)
        return released

    def use_bank_sample(self, component: str, row: int, sex: str):
        """Pin ``component``'s projection to bank row ``row`` of ``sex``'s bank, as if the
        drawing projected exactly onto that sample."""
        c = check_component(component)
        bank = self.model.banks[sex][c]
        if not 0 <= int(row) < len(bank):
            raise ConfigError(f"bank row must be between 0 and {len(bank) - 1}, not {row}")
        v = np.asarray(bank[int(row)], np.float32)
        latent = self._latents.get(c)
        d = np.float32(((latent - v) ** 2).sum()) if latent is not None else np.float32(0)
        self._pins[("projection", c)] = Projection(np.array([int(row)], np.int32), np.array([d], np.float32),
                                                   np.array([1.0]), v.copy(), v.copy())
        self._changed(c)

    def _changed(self, c: str):
        self._dirty.add(c)
        self._shadow_stale.add(c)


__all__ = ["Session", "STAGES", "RowCache", "row_cache", "check_stage", "check_component"]
