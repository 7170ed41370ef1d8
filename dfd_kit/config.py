"""Configuration as dataclasses: the component layout and the network widths.

The official 512x512 model and the kit's small demo model are two instances of
:class:`ModelConfig`; every stage reads its sizes from here, so one code path
serves both.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Tuple

#: The paper's component names, in the order the official code processes them.
COMPONENTS: Tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth", "remainder")
#: The four local parts (everything but the remainder).
PARTS: Tuple[str, ...] = COMPONENTS[:4]
#: The two feature banks (the paper's male and female sets of real sketches).
SEXES: Tuple[str, ...] = ("male", "female")
#: How the official files name each component (the remainder is the empty string).
OFFICIAL_NAMES: Dict[str, str] = {"left_eye": "eye1", "right_eye": "eye2", "nose": "nose",
                                  "mouth": "mouth", "remainder": ""}


@dataclass(frozen=True)
class Box:
    """A square component box: crop = image[y:y+size, x:x+size]."""
    x: int
    y: int
    size: int


@dataclass(frozen=True)
class Layout:
    """Where the components sit in a ``size`` x ``size`` sketch.

    ``nose_rows`` is how many rows of the nose feature map are pasted into the face
    map; the official model pastes only the first 124 of 160 so the mouth keeps the
    rows where the two boxes overlap.
    """
    size: int
    boxes: Dict[str, Box]
    nose_rows: int
    # Paste order into the face feature map: later parts overwrite earlier ones.
    paste_order: Tuple[str, ...] = ("mouth", "nose", "left_eye", "right_eye")

    def box(self, component: str) -> Box:
        if component == "remainder":
            return Box(0, 0, self.size)
        if component not in self.boxes:
            raise ValueError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")
        return self.boxes[component]

    def crop_size(self, component: str) -> int:
        return self.box(component).size

    @property
    def mirror_symmetric(self) -> bool:
        """True when a sketch flipped left to right puts each part into a box of the
        same kind: the eye boxes are each other's mirror images and the nose and mouth
        boxes are centred. A flipped face is then another plausible face in the same
        layout (what :func:`~dfd_kit.training.banks.densify_banks` uses with ``mirror``)."""
        flip = lambda b: Box(self.size - b.x - b.size, b.y, b.size)   # noqa: E731
        b = self.boxes
        return (flip(b["left_eye"]) == b["right_eye"] and flip(b["nose"]) == b["nose"]
                and flip(b["mouth"]) == b["mouth"])


OFFICIAL_LAYOUT = Layout(
    size=512,
    boxes={"left_eye": Box(108, 156, 128), "right_eye": Box(255, 156, 128),
           "nose": Box(182, 232, 160), "mouth": Box(169, 301, 192)},
    nose_rows=124,
)

# The official boxes halved, with each size rounded up to a multiple of 32 (the
# encoders downsample 5 times) about the same centre.
DEMO_LAYOUT = Layout(
    size=256,
    boxes={"left_eye": Box(54, 78, 64), "right_eye": Box(127, 78, 64),
           "nose": Box(83, 108, 96), "mouth": Box(84, 150, 96)},
    nose_rows=62,
)


# The photo model's layout: MobileStyleGAN's FFHQ-aligned faces cropped to CelebA-HQ
# framing (dfd_kit.data.stylegan.FFHQ_CROP: eyes 73.5 px apart on the row y = 110, as in
# the official layout halved). Each box is centred on where FaceMesh landmarks put that
# part on 200 generated faces (sizes as in DEMO_LAYOUT); the nose pastes down to y = 172,
# just below the nostrils, so the mouth keeps the upper lip. Checked on other faces by
# dfd_kit.data.stylegan.check_layout (numbers in Params/photo/MODEL_CARD.md).
PHOTO_LAYOUT = Layout(
    size=256,
    boxes={"left_eye": Box(59, 77, 64), "right_eye": Box(133, 77, 64),
           "nose": Box(80, 92, 96), "mouth": Box(80, 145, 96)},
    nose_rows=80,
)


@dataclass(frozen=True)
class NetworkConfig:
    """Widths of the three network families.

    * component auto-encoders: ``encoder_channels`` after each stride-2 conv (5 of them);
      the image decoder mirrors them with ``decoder_channels``;
    * feature decoders (Feature Mapping): ``feature_decoder_channels``, output ``feature_channels``;
    * generator (Image Synthesis): pix2pixHD global generator with ``ngf`` base width,
      ``n_downsample`` stride-2 convs and ``n_blocks`` residual blocks.
    """
    latent_dim: int = 512
    encoder_channels: Tuple[int, ...] = (32, 64, 128, 256, 512)
    decoder_channels: Tuple[int, ...] = (512, 256, 128, 64, 32, 32)
    feature_decoder_channels: Tuple[int, ...] = (512, 256, 256, 128, 64, 64)
    feature_channels: int = 32
    ngf: int = 56
    n_downsample: int = 4
    n_blocks: int = 9


@dataclass(frozen=True)
class ModelConfig:
    layout: Layout = OFFICIAL_LAYOUT
    nets: NetworkConfig = field(default_factory=NetworkConfig)
    k: int = 15  # neighbours used by manifold projection (the official sample_Num)
    # The blending weight w every component gets when the caller gives none (generation, the
    # pad's sliders, the command line). 1 is the paper's full projection; a kit model whose
    # faces come out nearer the truth at a partial weight on validation faces records it here.
    blend_weight: float = 1.0
    # True where the model has a query encoder per component (AE_whole/latest_net_query_encoder_*):
    # manifold projection then searches from where it puts a rough drawing, not from the raw
    # latent (dfd_kit.manifold). The official models have none.
    query_encoders: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        lay = d["layout"]
        layout = Layout(size=lay["size"], nose_rows=lay["nose_rows"],
                        boxes={k: Box(**v) for k, v in lay["boxes"].items()},
                        paste_order=tuple(lay.get("paste_order", Layout.paste_order)))
        nets = NetworkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["nets"].items()})
        return ModelConfig(layout=layout, nets=nets, k=d.get("k", 15), blend_weight=d.get("blend_weight", 1.0),
                           query_encoders=d.get("query_encoders", False))


OFFICIAL = ModelConfig()

DEMO = ModelConfig(
    layout=DEMO_LAYOUT,
    nets=NetworkConfig(latent_dim=128,
                       encoder_channels=(16, 32, 48, 64, 96),
                       decoder_channels=(96, 64, 48, 32, 16, 16),
                       feature_decoder_channels=(96, 64, 48, 32, 16, 16),
                       feature_channels=16, ngf=16, n_downsample=3, n_blocks=4),
    k=10,
)

# The photo model: the demo's networks on the photo layout (trained in about an hour
# on two CPU cores; dfd_kit.training photo). Its default weight is the one of the sweep
# (0, 0.25, ..., 1) at which its faces had the lowest error against the true photos, on
# both degraded and rough sketches of 200 validation faces never used for its card
# (``photo-data --first 2000000``): at w = 1 a rough drawing's part is replaced by a blend
# of other people's, a step of the way keeps what the drawing says (see its model card).
PHOTO = replace(DEMO, layout=PHOTO_LAYOUT, blend_weight=0.5)

__all__ = ["COMPONENTS", "PARTS", "SEXES", "OFFICIAL_NAMES", "Box", "Layout", "NetworkConfig", "ModelConfig",
           "OFFICIAL", "DEMO", "PHOTO", "OFFICIAL_LAYOUT", "DEMO_LAYOUT",
           "PHOTO_LAYOUT", "replace"]
