"""The whole DeepFaceDrawing pipeline: sketch -> components -> latents -> manifold
projection -> feature map -> image, every intermediate kept for inspection."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import jittor as jt
import numpy as np

from . import components as comp
from .config import COMPONENTS, PARTS, ModelConfig
from .embedding import ComponentEncoder, LatentDecoder, crop_to_input, sketch_decoder
from .errors import ConfigError
from .loading import (GENERATOR_FILE, SEXES, bank_file, check_params_dir, checkpoint_file,
                      decoder_key_table, encoder_key_table, generator_key_table, load_into,
                      read_bank, read_checkpoint, read_config)
from .manifold import Projection, blend_shadow, project_to_manifold, shadow_weights
from .mapping import feature_decoder, paste_feature_maps
from .synthesis import Generator, to_uint8_image

DEFAULT_WEIGHTS = {c: 1.0 for c in COMPONENTS}


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

    # shortcuts the notebooks like
    @property
    def neighbours(self):
        return {c: p.neighbours for c, p in self.projections.items()}

    @property
    def vectors(self):
        return {c: p.vector for c, p in self.projections.items()}


def check_part_weights(part_weights) -> Dict[str, float]:
    """Fill in defaults (1.0) and validate names and ranges."""
    w = dict(DEFAULT_WEIGHTS)
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

    def __init__(self, config: ModelConfig, encoders, sketch_decoders, feature_decoders, generator,
                 banks, source: str = ""):
        self.config, self.layout = config, config.layout
        self.encoders: Dict[str, ComponentEncoder] = encoders
        self.sketch_decoders: Dict[str, LatentDecoder] = sketch_decoders
        self.feature_decoders: Dict[str, LatentDecoder] = feature_decoders
        self.generator: Generator = generator
        self.banks: Dict[str, Dict[str, np.ndarray]] = banks   # sex -> component -> (N, D)
        self.source = source

    def __repr__(self):
        return (f"DeepFaceDrawing({self.source or 'unsaved'}: {self.layout.size}px, latent "
                f"{self.config.nets.latent_dim}, banks male {len(self.banks['male']['remainder'])} / "
                f"female {len(self.banks['female']['remainder'])} rows)")

    # ---- stages --------------------------------------------------------
    def normalise(self, sketch) -> np.ndarray:
        return comp.normalise_sketch(sketch, self.layout)

    def crop(self, sketch: np.ndarray) -> Dict[str, np.ndarray]:
        return comp.crop_components(sketch, self.layout)

    def encode(self, crops: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """{component: uint8 (S, S)} -> {component: float32 (D,)} for the components given."""
        with jt.no_grad():
            return {c: self.encoders[c](jt.array(crop_to_input(x))).numpy()[0] for c, x in crops.items()}

    def project(self, latents, part_weights=None, sex="male", k=None, anchor="nearest") -> Dict[str, Projection]:
        w = check_part_weights(part_weights)
        bank = self.banks[check_sex(sex)]
        k = check_k(k, self.config.k, min(len(bank[c]) for c in latents), sex)
        return {c: project_to_manifold(z, bank[c], k, w[c], anchor) for c, z in latents.items()}

    def decode_neighbours(self, component: str, rows: np.ndarray) -> np.ndarray:
        """Bank rows (N, D) -> decoded sketches (N, S, S), one batched decoder pass."""
        with jt.no_grad():
            return self.sketch_decoders[component](jt.array(np.asarray(rows, np.float32))).numpy()[:, 0]

    def shadow(self, component: str, projection: Projection, sex: str) -> np.ndarray:
        """uint8 (S, S) guidance sketch: the neighbours drawn faintly by their weights."""
        keep = shadow_weights(projection.weights) > 0   # the rest would add no ink
        rows = self.banks[sex][component][projection.neighbours[keep]]
        decoded = self.decode_neighbours(component, rows)
        return blend_shadow(decoded, projection.weights[keep])

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
            return paste_feature_maps(maps, self.layout), parts

    def synthesize(self, feature_map) -> np.ndarray:
        """(1, C, size, size) feature map -> float32 (3, size, size) in [-1, 1]."""
        with jt.no_grad():
            x = feature_map if isinstance(feature_map, jt.Var) else jt.array(np.asarray(feature_map, np.float32)[None])
            return self.generator(x).numpy()[0]

    # ---- everything ----------------------------------------------------
    def generate(self, sketch, part_weights=None, sex="male", k=None, anchor="nearest",
                 shadows=True, keep_features=True) -> GenerationResult:
        """Run every stage on ``sketch`` (path, PIL image or array of any size and mode).

        part_weights: {component: w in [0, 1]}, missing ones 1.0 (w=1 projects fully onto
        the manifold, w=0 uses the drawing's own latent). sex: 'male' or 'female' (which
        bank). k: neighbours (default: the model's). anchor: 'nearest' (default) or
        'official' to reproduce the official neighbour order exactly.
        shadows: also decode the shadow guidance. keep_features: keep the feature maps.
        """
        w = check_part_weights(part_weights)
        sex = check_sex(sex)
        k = check_k(k, self.config.k, min(len(self.banks[sex][c]) for c in COMPONENTS), sex)
        img = self.normalise(sketch)
        crops = self.crop(img)
        latents = self.encode(crops)
        proj = self.project(latents, w, sex, k, anchor)
        res = GenerationResult(img, crops, latents, proj, w, sex, k)
        if shadows:
            res.shadows = {c: self.shadow(c, proj[c], sex) for c in COMPONENTS}
            res.shadow = self.compose_shadows(res.shadows)
        self.render(res, keep_features)
        return res

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


def _edge_fade(size: int) -> np.ndarray:
    """(size, size) weights: 1 in the middle, falling smoothly to 0 at the box edge."""
    t = np.minimum(np.arange(size), np.arange(size)[::-1]) / (size * 0.2)
    r = np.clip(t, 0, 1)
    r = r * r * (3 - 2 * r)
    return np.minimum.outer(r, r)


def build(config: ModelConfig, shadows: bool = True):
    """Fresh, randomly initialised networks for ``config``: (encoders, sketch decoders,
    feature decoders, generator)."""
    n, lay = config.nets, config.layout
    enc = {c: ComponentEncoder(lay.crop_size(c), n.encoder_channels, n.latent_dim) for c in COMPONENTS}
    dec = {c: sketch_decoder(lay.crop_size(c), n.decoder_channels, n.latent_dim) for c in COMPONENTS} if shadows else {}
    fdec = {c: feature_decoder(lay.crop_size(c), n.feature_decoder_channels, n.latent_dim, n.feature_channels)
            for c in COMPONENTS}
    gen = Generator(n.feature_channels, n.ngf, n.n_downsample, n.n_blocks)
    for m in list(enc.values()) + list(dec.values()):
        m.eval()
    return enc, dec, fdec, gen


def load_model(params_dir, shadows: bool = True) -> DeepFaceDrawing:
    """Load a Params/ folder (official layout; a ``config.json`` describes non-official sizes)."""
    root = check_params_dir(params_dir, shadows)
    config = read_config(root)
    n = config.nets
    enc, dec, fdec, gen = build(config, shadows)
    n_enc, n_dec = len(n.encoder_channels), len(n.decoder_channels) - 1
    n_fdec = len(n.feature_decoder_channels) - 1
    for c in COMPONENTS:
        f = checkpoint_file("encoder", c)
        load_into(enc[c], read_checkpoint(root / f), encoder_key_table(n_enc), f)
        if shadows:
            f = checkpoint_file("sketch_decoder", c)
            load_into(dec[c], read_checkpoint(root / f), decoder_key_table(n_dec), f)
        f = checkpoint_file("feature_decoder", c)
        load_into(fdec[c], read_checkpoint(root / f), decoder_key_table(n_fdec), f)
    load_into(gen, read_checkpoint(root / GENERATOR_FILE), generator_key_table(n.n_downsample, n.n_blocks),
              GENERATOR_FILE)
    banks = {s: {c: read_bank(root / bank_file(c, s), n.latent_dim) for c in COMPONENTS} for s in SEXES}
    return DeepFaceDrawing(config, enc, dec, fdec, gen, banks, source=str(Path(root)))


def save_model(model: DeepFaceDrawing, params_dir, dtype=np.float16, model_card: str = "") -> Path:
    """Write a model in the official Params/ layout plus ``config.json`` (float16 storage
    by default: half the size, and the loader widens it back to float32)."""
    from .loading import official_state, write_checkpoint

    root = Path(params_dir)
    n = model.config.nets
    n_enc, n_dec, n_fdec = len(n.encoder_channels), len(n.decoder_channels) - 1, len(n.feature_decoder_channels) - 1
    for c in COMPONENTS:
        write_checkpoint(root / checkpoint_file("encoder", c), official_state(model.encoders[c], encoder_key_table(n_enc), dtype))
        if c in model.sketch_decoders:
            write_checkpoint(root / checkpoint_file("sketch_decoder", c),
                             official_state(model.sketch_decoders[c], decoder_key_table(n_dec), dtype))
        write_checkpoint(root / checkpoint_file("feature_decoder", c),
                         official_state(model.feature_decoders[c], decoder_key_table(n_fdec), dtype))
        for s in SEXES:
            np.asarray(model.banks[s][c], "<f4").tofile(root / bank_file(c, s))
    write_checkpoint(root / GENERATOR_FILE, official_state(model.generator, generator_key_table(n.n_downsample, n.n_blocks), dtype))
    (root / "config.json").write_text(model.config.to_json())
    if model_card:
        (root / "MODEL_CARD.md").write_text(model_card)
    return root
