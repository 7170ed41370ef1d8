"""The whole DeepFaceDrawing pipeline: sketch -> components -> latents -> manifold
projection -> feature map -> image, every intermediate kept for inspection."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import jittor as jt
import numpy as np

from . import components as comp
from .backend import memory_headroom_bytes
from .config import COMPONENTS, PARTS, ModelConfig
from .embedding import ComponentEncoder, LatentDecoder, encode, sketch_decoder
from .errors import ConfigError
from .loading import (GENERATOR_FILE, SEXES, bank_file, check_params_dir, checkpoint_file,
                      decoder_key_table, read_checkpoint, encoder_key_table, generator_key_table,
                      bank_dtype, load_into, params_lock, params_sha256, read_bank, read_config)
from . import fast as fast_path
from .fast import paste_feature_maps as fast_paste
from .fast.compact import compact_checkpoint
from .fast.precision import check_precision, convert_network, resolve as resolve_precision
from .manifold import Projection, project_to_manifold, shadow_from_sum, shadow_weights
from .mapping import feature_decoder, paste_feature_maps
from .synthesis import Generator, to_uint8_image

#: Memory a shadow pass needs besides the sketch decoders' weights, with a margin: at full
#: size shadows raised the peak by 0.3 GB in all (bench/bench_memory.py).
SHADOW_WORKSPACE_BYTES = 512 << 20


@dataclass
class GenerationResult:
    """Everything one generation computed. Per-component dicts are keyed by COMPONENTS."""
    sketch: np.ndarray                      # uint8 (size, size): the normalised input
    crops: Dict[str, np.ndarray]            # uint8 (S, S)
    latents: Dict[str, np.ndarray]          # float32 (D,)
    projections: Dict[str, Projection]      # neighbours, distances, weights, projected, vector
    part_weights: Dict[str, float]
    sex: str
    k: int
    shadows: Dict[str, np.ndarray] = field(default_factory=dict)   # uint8 (S, S) per component
    shadow: Optional[np.ndarray] = None     # uint8 (size, size) guidance composite
    feature_maps: Dict[str, np.ndarray] = field(default_factory=dict)  # float32 (C, S, S)
    feature_map: Optional[np.ndarray] = None  # float32 (C, size, size): the generator input
    generator_output: Optional[np.ndarray] = None  # float32 (3, size, size) in [-1, 1]
    image: Optional[np.ndarray] = None      # uint8 (size, size, 3) RGB
    # float32 (D,): where each component's search started, for a model with query encoders
    queries: Dict[str, np.ndarray] = field(default_factory=dict)

    # shortcuts the notebooks like
    @property
    def neighbours(self):
        return {c: p.neighbours for c, p in self.projections.items()}

    @property
    def vectors(self):
        return {c: p.vector for c, p in self.projections.items()}

    def with_vectors(self, vectors: Dict[str, np.ndarray]) -> "GenerationResult":
        """A copy whose projections carry ``vectors`` (the components given; the others keep
        theirs), with the images and maps cleared: :meth:`DeepFaceDrawing.render` draws it.
        For faces from vectors no weight gives, e.g. one part swapped from another face."""
        proj = {c: dataclasses.replace(p, vector=np.asarray(vectors.get(c, p.vector), np.float32))
                for c, p in self.projections.items()}
        return dataclasses.replace(self, projections=proj, shadows={}, shadow=None, feature_maps={},
                                   feature_map=None, generator_output=None, image=None)


def check_part_weights(part_weights, default: float = 1.0) -> Dict[str, float]:
    """Fill in ``default`` (a model's ``config.blend_weight``) for the components not given,
    and validate names and ranges."""
    w = {c: float(default) for c in COMPONENTS}
    for name, value in (part_weights or {}).items():
        if name not in w:
            raise ConfigError(f"unknown component {name!r} in part_weights; use {', '.join(COMPONENTS)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"weight of {name} must be a number in [0, 1], not {value!r}") from None
        if not (0.0 <= v <= 1.0):  # also rejects NaN
            raise ConfigError(f"weight of {name} must be in [0, 1], not {value}")
        w[name] = v
    return w


def check_k(k, default: int, bank_rows: int, sex: str) -> int:
    """K is between 2 (the weights need the anchor and one more neighbour) and the bank size."""
    if k is None:
        k = default
    try:
        k_int = int(k)
    except (TypeError, ValueError):
        raise ConfigError(f"K must be a whole number of neighbours, not {k!r}") from None
    if (isinstance(k, float) and k != k_int) or not 2 <= k_int <= bank_rows:
        raise ConfigError(f"K must be between 2 and the bank size ({bank_rows} rows in the {sex} bank), "
                          f"not {k!r}")
    return k_int


def check_sex(sex) -> str:
    if sex not in SEXES:
        raise ConfigError(f"sex must be 'male' or 'female', not {sex!r}")
    return sex


class DeepFaceDrawing:
    """A loaded model. Each stage is a method; :meth:`generate` runs them all."""

    #: "fp32", or "bf16" where :func:`load_model` converted the decoders and the generator.
    precision = "fp32"
    #: True where :func:`load_model` runs the fast path (:mod:`dfd_kit.fast`).
    fast = False

    def __init__(self, config: ModelConfig, encoders, sketch_decoders, feature_decoders, generator,
                 banks, source: str = "", query_encoders=None):
        self.config, self.layout = config, config.layout
        self.encoders: Dict[str, ComponentEncoder] = encoders
        # {} for a model without them (the official ones): the search starts from the latent
        self.query_encoders: Dict[str, ComponentEncoder] = query_encoders or {}
        if self.query_encoders and set(self.query_encoders) != set(COMPONENTS):
            raise ConfigError(f"query encoders are all five components' or none, not {sorted(self.query_encoders)}")
        self.sketch_decoders: Dict[str, LatentDecoder] = sketch_decoders
        self.feature_decoders: Dict[str, LatentDecoder] = feature_decoders
        self.generator: Generator = generator
        self.banks: Dict[str, Dict[str, np.ndarray]] = banks   # sex -> component -> (N, D)
        self.source = source
        self._shadows_refused = False
        self._params_hash: Optional[str] = None

    def __repr__(self):
        def rows(sex):   # a bank may sample more faces for the remainder than for the parts
            n = {c: len(self.banks[sex][c]) for c in COMPONENTS}
            parts = {n[c] for c in PARTS}
            if parts == {n["remainder"]}:
                return str(n["remainder"])
            return f"{n['remainder']} remainder + {'/'.join(map(str, sorted(parts)))} part"

        return (f"DeepFaceDrawing({self.source or 'unsaved'}: {self.layout.size}px, latent "
                f"{self.config.nets.latent_dim}, banks male {rows('male')} / female {rows('female')} rows, "
                f"K {self.config.k}{', searched from query encoders' if self.query_encoders else ''})")

    def without_query_encoders(self) -> "DeepFaceDrawing":
        """This model searching from each drawing's own latent, as the paper does: the same
        networks and banks, shared, in a new object (this one is unchanged). What a model's
        query encoders change is then one comparison away; a model without them is returned
        as it is."""
        if not self.query_encoders:
            return self
        twin = copy.copy(self)
        twin.config = dataclasses.replace(self.config, query_encoders=False)
        twin.query_encoders = {}
        twin.source = f"{self.source or 'unsaved'}, searched from latents"
        twin._params_hash = None   # not the folder's files: a drawing saved with it must say so
        return twin

    @property
    def name(self) -> str:
        """What the model is called: its Params folder's name ('photo', 'demo', ...), else
        its ``source`` text (a model built in memory)."""
        if self.source and Path(self.source).is_dir():
            return Path(self.source).name
        return self.source or "unsaved"

    @property
    def params_hash(self) -> str:
        """A stable sha256 of what decides this model's faces, computed on first use: for a
        model loaded from a Params folder, of the folder's files
        (:func:`~dfd_kit.loading.params_sha256`; the same files give the same hash on any
        machine); for a model built in memory, of its configuration, weights and banks. A
        saved drawing records it, so that loading the drawing elsewhere can tell whether its
        face will be reproduced."""
        if self._params_hash is None:
            if self.source and Path(self.source).is_dir():
                self._params_hash = params_sha256(self.source)
            else:
                self._params_hash = self._weights_sha256()
        return self._params_hash

    def _weights_sha256(self) -> str:
        sha = hashlib.sha256(self.config.to_json().encode())

        def add(tag, a):
            a = np.ascontiguousarray(a)
            sha.update(f"{tag} {a.dtype.str} {a.shape}\n".encode())
            sha.update(a.tobytes())

        nets = [(f"encoder/{c}", self.encoders[c]) for c in COMPONENTS]
        nets += [(f"query_encoder/{c}", self.query_encoders[c]) for c in COMPONENTS if c in self.query_encoders]
        nets += [(f"feature_decoder/{c}", self.feature_decoders[c]) for c in COMPONENTS]
        for tag, net in nets + [("generator", self.generator)]:
            for key, value in sorted(net.state_dict().items()):
                add(f"{tag}/{key}", value.numpy() if hasattr(value, "numpy") else np.asarray(value))
        for sex in SEXES:
            for c in COMPONENTS:
                add(f"bank/{sex}/{c}", np.asarray(self.banks[sex][c], np.float32))
        return sha.hexdigest()

    # ---- stages --------------------------------------------------------
    def normalise(self, sketch, name: Optional[str] = None) -> np.ndarray:
        """Any sketch -> uint8 (size, size), see :func:`~dfd_kit.components.normalise_sketch`
        (``name``: what error messages call it, e.g. an uploaded file's name)."""
        return comp.normalise_sketch(sketch, self.layout, name)

    def crop(self, sketch: np.ndarray) -> Dict[str, np.ndarray]:
        return comp.crop_components(sketch, self.layout)

    def encode(self, crops: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """{component: uint8 (S, S)} -> {component: float32 (D,)} for the components given."""
        return {c: encode(self.encoders[c], x) for c, x in crops.items()}

    def encode_queries(self, crops: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """{component: uint8 (S, S)} -> {component: float32 (D,)}: where manifold projection
        searches for each crop, by the model's query encoders; {} for a model without them
        (the search then starts from the latent, as in the paper)."""
        return {c: encode(self.query_encoders[c], x) for c, x in crops.items() if c in self.query_encoders}

    def project(self, latents, part_weights=None, sex="male", k=None, anchor="nearest",
                queries=None) -> Dict[str, Projection]:
        """``queries``: :meth:`encode_queries` of the same crops, where the model has query
        encoders (a component missing from it is searched from its latent)."""
        w = check_part_weights(part_weights, self.config.blend_weight)
        bank = self.banks[check_sex(sex)]
        k = check_k(k, self.config.k, min(len(bank[c]) for c in latents), sex)
        queries = queries or {}
        return {c: project_to_manifold(z, bank[c], k, w[c], anchor, queries.get(c)) for c, z in latents.items()}

    def decode_neighbours(self, component: str, rows: np.ndarray) -> np.ndarray:
        """Bank rows (N, D) -> decoded sketches (N, S, S), one row at a time: how many rows a
        shadow needs depends on K and the weights, and every new batch shape would make Jittor
        compile new kernels (minutes in a fresh notebook kernel), and one row keeps the
        activations small (the official remainder decoder's are 33 MB a row). The notebooks
        and the widget's row cache use it; a shadow needs only the weighted sum of the rows,
        which :meth:`shadow` computes faster, several rows at a time."""
        rows = np.asarray(rows, np.float32)
        size = self.layout.crop_size(component)
        decoder = self.sketch_decoders[component]
        with jt.no_grad():
            parts = [decoder(jt.array(rows[i:i + 1])).numpy()[:, 0] for i in range(len(rows))]
        return np.concatenate(parts) if parts else np.zeros((0, size, size), np.float32)

    def shadow(self, component: str, projection: Projection, sex: str, normalise: bool = False) -> np.ndarray:
        """uint8 (S, S) guidance sketch: the neighbours drawn faintly by their weights
        (:func:`~dfd_kit.manifold.blend_shadow`, computed from the weighted sum of their
        decodings, which costs less than decoding each). ``normalise``: scale the weights
        to sum at most 1 (:func:`~dfd_kit.manifold.shadow_weights`; the drawing pad's
        choice), else the official blend."""
        w = shadow_weights(projection.weights, normalise)
        keep = w > 0   # the rest would add no ink
        rows = np.asarray(self.banks[sex][component][projection.neighbours[keep]], np.float32)
        with jt.no_grad():
            total = self.sketch_decoders[component].weighted_sum(jt.array(rows), w[keep]).numpy()[0, 0]
        return shadow_from_sum(total, float(w[keep].sum()))

    def compose_shadows(self, shadows: Dict[str, np.ndarray]) -> np.ndarray:
        """Paste the per-component shadows into one (size, size) guidance image: each part
        fades out towards its box edges, and the darkest ink wins."""
        canvas = shadows["remainder"].astype(np.float64) if "remainder" in shadows else \
            np.full((self.layout.size,) * 2, 255.0)
        for c in PARTS:
            if c not in shadows:
                continue
            b = self.layout.box(c)
            fade = _edge_fade(b.size)
            part = 255 - (255 - shadows[c].astype(np.float64)) * fade
            region = canvas[b.y:b.y + b.size, b.x:b.x + b.size]
            np.minimum(region, part, out=region)
        return canvas.astype(np.uint8)

    def feature_map(self, vectors: Dict[str, np.ndarray], keep_parts: bool = False, cache: Optional[dict] = None):
        """{component: (D,)} -> (face map jt.Var (1, C, size, size), {component: (C, S, S)} if keep_parts).

        ``cache`` (a dict the caller keeps between calls) remembers each component's map
        with the vector it came from, so an interactive edit of one part runs only that
        part's feature decoder.
        """
        maps = {}
        with jt.no_grad():
            for c in COMPONENTS:
                v = np.asarray(vectors[c], np.float32)
                hit = cache.get(c) if cache is not None else None
                if hit is not None and np.array_equal(hit[0], v):
                    maps[c] = hit[1]
                    continue
                maps[c] = self.feature_decoders[c](jt.array(v[None]))
                if cache is not None:
                    cache[c] = (v.copy(), maps[c])
            parts = {c: m.numpy()[0] for c, m in maps.items()} if keep_parts else {}
            paste = fast_paste if self.fast else paste_feature_maps
            return paste(maps, self.layout), parts

    def synthesize(self, feature_map) -> np.ndarray:
        """(1, C, size, size) feature map -> float32 (3, size, size) in [-1, 1]."""
        with jt.no_grad():
            x = feature_map if isinstance(feature_map, jt.Var) else jt.array(np.asarray(feature_map, np.float32)[None])
            return self.generator(x).numpy()[0]

    # ---- everything ----------------------------------------------------
    def generate(self, sketch, part_weights=None, sex="male", k=None, anchor="nearest",
                 shadows=True, keep_features=True) -> GenerationResult:
        """Run every stage on ``sketch`` (path, PIL image or array of any size and mode).

        part_weights: {component: w in [0, 1]}, missing ones the model's
        ``config.blend_weight`` (w=1 projects fully onto the manifold, the official and cartoon
        models' default; w=0 uses the drawing's own latent; the photo model's default lies
        between). sex: 'male' or 'female' (which bank). k: neighbours (default: the model's).
        anchor: 'nearest' (default) or 'official' to reproduce the official neighbour order exactly.
        shadows: also decode the shadow guidance. keep_features: keep the feature maps.
        """
        w = check_part_weights(part_weights, self.config.blend_weight)
        sex = check_sex(sex)
        k = check_k(k, self.config.k, min(len(self.banks[sex][c]) for c in COMPONENTS), sex)
        img = self.normalise(sketch)
        crops = self.crop(img)
        latents = self.encode(crops)
        queries = self.encode_queries(crops)
        proj = self.project(latents, w, sex, k, anchor, queries)
        res = GenerationResult(img, crops, latents, proj, w, sex, k, queries=queries)
        if shadows and self.shadows_fit_in_memory():
            res.shadows = {c: self.shadow(c, proj[c], sex) for c in COMPONENTS}
            res.shadow = self.compose_shadows(res.shadows)
            jt.gc()   # Jittor's allocator would keep the decoders' freed activations for itself
        self.render(res, keep_features)
        return res

    def shadows_fit_in_memory(self) -> bool:
        """False when the model was loaded without its sketch decoders (``shadows=False``),
        and, with a warning the first time, when they are not loaded yet and this machine's
        available memory cannot hold them and a decoding pass."""
        if self._shadows_refused:
            return False
        if not self.sketch_decoders:
            return False   # loaded with shadows=False: no shadow guidance to draw
        pending = getattr(self.sketch_decoders, "pending_bytes", 0)
        if not pending:
            return True
        need, free = pending + SHADOW_WORKSPACE_BYTES, available_memory()
        if free >= need:
            return True
        self._shadows_refused = True
        warnings.warn(f"shadows are turned off: their sketch decoders need about {need / 2**30:.1f} GB and "
                      f"this machine has {free / 2**30:.1f} GB available. Faces are generated without "
                      "shadow guidance; free memory and reload the model to get them back.", stacklevel=3)
        return False

    def render(self, res: GenerationResult, keep_features=True, cache: Optional[dict] = None) -> GenerationResult:
        """Feature mapping and synthesis for the vectors in ``res`` (fills map and image);
        ``cache``: see :meth:`feature_map`."""
        fmap, parts = self.feature_map({c: p.vector for c, p in res.projections.items()}, keep_features, cache)
        out = self.synthesize(fmap)
        if keep_features:
            res.feature_maps, res.feature_map = parts, fmap.numpy()[0]
        res.generator_output = out
        res.image = to_uint8_image(out)
        return res


class LazyNetworks(Mapping):
    """{component: network}, each loaded on first use: the sketch decoders (525 MB at
    full size) are needed only when shadows are asked for."""

    def __init__(self, load: Callable[[str], object], sizes: Dict[str, int]):
        self._load, self._sizes, self._nets = load, dict(sizes), {}

    def __getitem__(self, component):
        if component not in self._sizes:
            raise KeyError(component)
        if component not in self._nets:
            self._nets[component] = self._load(component)
        return self._nets[component]

    def __contains__(self, component):   # without loading it
        return component in self._sizes

    def __iter__(self):
        return iter(self._sizes)

    def __len__(self):
        return len(self._sizes)

    @property
    def loaded(self) -> list:
        return [c for c in self._sizes if c in self._nets]

    @property
    def pending_bytes(self) -> int:
        """Checkpoint bytes of the networks not loaded yet (an upper bound of their memory:
        big linear layers stay in their files)."""
        return sum(n for c, n in self._sizes.items() if c not in self._nets)


def available_memory() -> int:
    """Bytes this process can still take: the kernel's MemAvailable, capped by a cgroup
    memory limit (containers and notebook servers often set one)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    room = memory_headroom_bytes()
    if room is not None:
        free = room if free is None else min(free, room)
    return free if free is not None else 1 << 62


def _edge_fade(size: int) -> np.ndarray:
    """(size, size) weights: 1 in the middle, falling smoothly to 0 at the box edge."""
    t = np.minimum(np.arange(size), np.arange(size)[::-1]) / (size * 0.2)
    r = np.clip(t, 0, 1)
    r = r * r * (3 - 2 * r)
    return np.minimum.outer(r, r)


def build(config: ModelConfig, shadows: bool = True):
    """Fresh, randomly initialised networks for ``config``: (encoders, sketch decoders,
    feature decoders, generator)."""
    enc = {c: build_network("encoder", config, c) for c in COMPONENTS}
    dec = {c: build_network("sketch_decoder", config, c) for c in COMPONENTS} if shadows else {}
    fdec = {c: build_network("feature_decoder", config, c) for c in COMPONENTS}
    return enc, dec, fdec, build_network("generator", config)


def build_network(kind: str, config: ModelConfig, component: str = "", fast: bool = True):
    """One fresh network. kind: encoder | sketch_decoder | feature_decoder | generator.
    ``fast``: with the fast path's blocks (:func:`dfd_kit.fast.accelerate`) where its kernels
    work here; they train as the reference blocks do."""
    n, size = config.nets, config.layout.crop_size(component) if component else 0
    if kind in ("encoder", "query_encoder"):
        net = ComponentEncoder(size, n.encoder_channels, n.latent_dim).eval()
    elif kind == "sketch_decoder":
        net = sketch_decoder(size, n.decoder_channels, n.latent_dim).eval()
    elif kind == "feature_decoder":
        net = feature_decoder(size, n.feature_decoder_channels, n.latent_dim, n.feature_channels)
    else:
        net = Generator(n.feature_channels, n.ngf, n.n_downsample, n.n_blocks)
    return fast_path.accelerate(net) if fast and fast_path.available() else net


def key_table(kind: str, config: ModelConfig):
    n = config.nets
    return {"encoder": lambda: encoder_key_table(len(n.encoder_channels)),
            "query_encoder": lambda: encoder_key_table(len(n.encoder_channels)),
            "sketch_decoder": lambda: decoder_key_table(len(n.decoder_channels) - 1),
            "feature_decoder": lambda: decoder_key_table(len(n.feature_decoder_channels) - 1),
            "generator": lambda: generator_key_table(n.n_downsample, n.n_blocks)}[kind]()


def checkpoint_budget(net) -> int:
    """The most bytes a checkpoint of ``net`` may have: every value as float64, plus room
    for key names and pickle records. A larger file is refused before it is read. (A
    freshly built network costs no memory: Jittor allocates its weights when first used.)"""
    values = sum(int(np.prod(v.shape)) for v in net.state_dict().values())
    return 8 * values + 4096 * len(net.state_dict()) + (1 << 20)


def load_network(root: Path, config: ModelConfig, kind: str, component: str = "", state=None, fast: bool = True):
    """Build one network and fill it from its checkpoint, or from ``state`` (what
    :func:`read_state` gave earlier)."""
    rel = checkpoint_file(kind, component) if component else GENERATOR_FILE
    net = build_network(kind, config, component, fast)
    if state is None:
        state = read_state(root, rel, checkpoint_budget(net), fast)
    load_into(net, state, key_table(kind, config), rel)
    return net


def read_state(root: Path, rel: str, max_bytes: int, fast: bool = True):
    """{key: array} of the checkpoint ``root/rel``: on the fast path from its compact copy,
    written on first load (:func:`~dfd_kit.fast.compact.compact_checkpoint`: memory-mapped arrays,
    read in milliseconds), else from the pickle itself."""
    if fast:
        return compact_checkpoint(root, rel, max_bytes)
    return read_checkpoint(root / rel, max_bytes)


def load_model(params_dir, shadows: bool = True, precision: str = "auto", fast: bool = True) -> DeepFaceDrawing:
    """Load a Params/ folder (official layout; a ``config.json`` describes non-official sizes).

    On the fast path (the default) weights come from the compact cache (written on first
    load), one network at a time; the big linear layers stay memory-mapped, and the sketch
    decoders load when shadows are first asked for (from the compact copies mapped now, so
    they match the rest even if the folder is exported again meanwhile). The folder is read under a shared lock
    (:func:`~dfd_kit.loading.params_lock`): a ``save_model`` into it waits, and waits for.
    ``precision``: "auto", "fp32" or "bf16" for the feature decoders, the generator and the
    sketch decoders (:mod:`dfd_kit.fast.precision`; the model's ``precision`` says which it got).
    ``fast``: run the fast path (:mod:`dfd_kit.fast`) where its kernels work here (one warning
    where not); False: the reference model, plain Jittor, in float32."""
    check_precision(precision)
    if not fast and precision == "bf16":
        raise ConfigError("precision='bf16' runs on the fast path's kernels: load with fast=True, "
                          "or with precision='fp32' for the reference path")
    root = check_params_dir(params_dir, shadows)
    fast = fast and fast_path.available()
    with params_lock(root):
        config = read_config(root)
        enc = {c: load_network(root, config, "encoder", c, fast=fast) for c in COMPONENTS}
        query = {c: load_network(root, config, "query_encoder", c, fast=fast) for c in COMPONENTS} \
            if config.query_encoders else {}
        fdec = {c: load_network(root, config, "feature_decoder", c, fast=fast) for c in COMPONENTS}
        gen = load_network(root, config, "generator", fast=fast)
        precision = resolve_precision(precision, config) if fast else "fp32"
        if precision == "bf16":   # each network's float32 convolution weights are freed as it converts
            for c in COMPONENTS:
                convert_network(fdec[c], "feature_decoder", root, checkpoint_file("feature_decoder", c),
                                key_table("feature_decoder", config))
            convert_network(gen, "generator", root, GENERATOR_FILE, key_table("generator", config))
        dec = {}
        if shadows:
            sizes = {c: (root / checkpoint_file("sketch_decoder", c)).stat().st_size for c in COMPONENTS}
            # mapped, not read: no memory until a shadow is asked for (on the reference path
            # the pickle is read then)
            states = {c: read_state(root, checkpoint_file("sketch_decoder", c),
                                    checkpoint_budget(build_network("sketch_decoder", config, c, False)))
                      for c in COMPONENTS} if fast else {}

            def load_decoder(c):
                net = load_network(root, config, "sketch_decoder", c, states.pop(c, None), fast)
                if precision == "bf16":
                    convert_network(net, "sketch_decoder", root, checkpoint_file("sketch_decoder", c),
                                    key_table("sketch_decoder", config))
                return net

            dec = LazyNetworks(load_decoder, sizes)
        dtype = bank_dtype(root)
        banks = {s: {c: read_bank(root / bank_file(c, s), config.nets.latent_dim, dtype) for c in COMPONENTS}
                 for s in SEXES}
    model = DeepFaceDrawing(config, enc, dec, fdec, gen, banks, source=str(Path(root)), query_encoders=query)
    model.precision, model.fast = precision, fast
    return model


def save_model(model: DeepFaceDrawing, params_dir, dtype=np.float16, model_card: str = "",
               bank_dtype: Optional[str] = None) -> Path:
    """Write a model in the official Params/ layout plus ``config.json`` (float16 storage
    by default: half the size, and the loader widens it back to float32). The feature
    banks are stored like the weights unless ``bank_dtype`` says otherwise ('float32',
    'float16' or 'int8', see :func:`~dfd_kit.loading.write_bank`)."""
    from .loading import atomic_write, official_state, write_bank, write_checkpoint

    if model.precision != "fp32":
        raise ConfigError(f"this model was loaded with precision={model.precision!r}: its generator and feature "
                          "decoders hold weights rounded to bfloat16, and saving them would keep that loss for "
                          "good. Load the Params again with precision='fp32' and save that model.")
    root = Path(params_dir)
    root.mkdir(parents=True, exist_ok=True)
    bank_type = bank_dtype or ("float16" if np.dtype(dtype) == np.float16 else "float32")
    n = model.config.nets
    n_enc, n_dec, n_fdec = len(n.encoder_channels), len(n.decoder_channels) - 1, len(n.feature_decoder_channels) - 1
    config = json.loads(model.config.to_json())
    config["query_encoders"] = bool(model.query_encoders)
    if bank_type != "float32":
        config["bank_dtype"] = bank_type
    # each file is replaced atomically, and a load of this folder waits until all are
    with params_lock(root, exclusive=True):
        for c in COMPONENTS:
            write_checkpoint(root / checkpoint_file("encoder", c),
                             official_state(model.encoders[c], encoder_key_table(n_enc), dtype))
            if c in model.query_encoders:
                write_checkpoint(root / checkpoint_file("query_encoder", c),
                                 official_state(model.query_encoders[c], encoder_key_table(n_enc), dtype))
            if c in model.sketch_decoders:
                write_checkpoint(root / checkpoint_file("sketch_decoder", c),
                                 official_state(model.sketch_decoders[c], decoder_key_table(n_dec), dtype))
            write_checkpoint(root / checkpoint_file("feature_decoder", c),
                             official_state(model.feature_decoders[c], decoder_key_table(n_fdec), dtype))
            for s in SEXES:
                write_bank(root / bank_file(c, s), model.banks[s][c], bank_type)
        write_checkpoint(root / GENERATOR_FILE,
                         official_state(model.generator, generator_key_table(n.n_downsample, n.n_blocks), dtype))
        atomic_write(root / "config.json", lambda f: f.write(json.dumps(config, indent=2)), "w")
        if model_card:
            atomic_write(root / "MODEL_CARD.md", lambda f: f.write(model_card), "w")
    return root
