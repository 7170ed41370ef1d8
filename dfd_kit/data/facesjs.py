"""A synthetic sketch -> photo training set from facesjs cartoon faces.

DeepFaceDrawing trains on pairs of aligned face photos and line sketches of them
(CelebA-HQ photos, sketches made with a photocopy filter and simplified). Those
photos cannot ship with a tutorial, so this module makes a stand-in that needs
nothing but npm: random cartoon faces from the `facesjs` package, each rendered
twice from the same vector drawing,

* the *photo*: the colour face, RGB uint8 (size, size, 3);
* the *sketch*: a line drawing of the same face (outlines of head, hair, eyes,
  brows, nose, mouth, ears, neck), grayscale uint8 (size, size), dark lines on white;

and aligned like the paper's data: a similarity transform (scale + translation)
puts each face's eyes, nose and mouth at the centres of the layout's component
boxes (``left_eye``, ``right_eye``, ``nose``, ``mouth``; the ``remainder`` is the
whole image), so the component crops of :mod:`dfd_kit.components` see the features
they are named after.

Pipeline, per face::

    node scripts/facesjs_faces.mjs       face parameters + colour SVG (one process for all N)
      -> feature_points()                where the eyes, brows, nose and mouth landed
      -> fit_similarity()                facesjs coordinates -> layout pixels
      -> render_svg(svg) / render_svg(sketch_svg(svg))
      -> photo/NNNNN.png, sketch/NNNNN.png, samples.csv, facesjs.jsonl

Run it from a shell with ``python -m dfd_kit.data.facesjs --out DIR --n N --seed S``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..config import DEMO_LAYOUT, PARTS, Layout
from ..errors import DFDError
from . import write_samples_csv

SVG_NS = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG_NS)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "facesjs_faces.mjs"

#: facesjs draws every face in a 400 x 600 viewBox.
FACESJS_VIEWBOX = (400.0, 600.0)

#: Where facesjs centres each feature's bounding box (its display() positions, facesjs
#: 5.0.3). Only used as a fallback for a feature that draws no ink at all.
FACESJS_ANCHORS: Dict[str, Tuple[float, float]] = {
    "left_eye": (140.0, 310.0), "right_eye": (260.0, 310.0),
    "left_eyebrow": (140.0, 270.0), "right_eyebrow": (260.0, 270.0),
    "nose": (200.0, 370.0), "mouth": (200.0, 440.0),
}

#: The paper's eye crops hold the eyebrow too, so the point put at an eye box's
#: centre is a third of the way from the eye to its brow (eye weighted 2, brow 1):
#: the eye sits a little below the box centre and the brow stays inside the box.
EYEBROW_WEIGHT = 1.0 / 3.0

#: Light grey behind the face in the photos (facesjs draws no background).
PHOTO_BACKGROUND = (236, 236, 236)

#: Sketch strokes are facesjs' stroke widths times this: facesjs outlines are bold
#: cartoon lines, the paper's sketches are thin pencil-like lines.
SKETCH_LINE_SCALE = 0.55
#: Thinnest sketch line, in output pixels (thinner lines render as faint grey).
SKETCH_MIN_PX = 1.0


class FacesjsError(DFDError, RuntimeError):
    """Node.js or the facesjs npm package is missing, or the face generator failed."""


# ---------------------------------------------------------------------------
# Running the Node generator
# ---------------------------------------------------------------------------

def facesjs_version(root: Path = REPO_ROOT) -> str:
    """The installed facesjs version (from node_modules), or raise FacesjsError."""
    pkg = Path(root) / "node_modules" / "facesjs" / "package.json"
    if not pkg.exists():
        raise FacesjsError(f"the npm package facesjs is not installed ({pkg} is missing): "
                           f"run `npm install` in {root}")
    return json.loads(pkg.read_text())["version"]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise FacesjsError("Node.js (`node`) is not on PATH; install Node 18 or newer, then run "
                           f"`npm install` in {REPO_ROOT}")
    return node


def generate_faces(n: int, seed: int = 0, start: int = 0, accessories: bool = False,
                   colours: bool = False) -> Iterator[dict]:
    """Stream ``n`` random facesjs faces: one Node process for all of them.

    Yields dicts ``{"index": int, "sex": "male"|"female", "face": dict, "svg": str}``
    for indices ``start .. start+n-1``. Face ``i`` depends on ``(seed, i)`` only; even
    indices are male, odd ones female. ``accessories=True`` keeps glasses and hats.
    ``colours=True`` keeps facesjs's random skin and hair colours; by default every face
    has one skin tone and one hair colour, because a line sketch does not show colour
    and a sketch-to-face model could only guess it (the shapes are the same either way).
    """
    if n < 0 or start < 0 or seed < 0:
        raise ValueError("n, seed and start must be non-negative")
    facesjs_version()
    cmd = [_node(), str(SCRIPT), "--seed", str(int(seed)), "--n", str(int(n)), "--start", str(int(start))]
    if accessories:
        cmd.append("--accessories")
    if colours:
        cmd.append("--colours")
    return _stream(cmd, n)  # checks above run now, not at the first next()


def _stream(cmd: List[str], n: int) -> Iterator[dict]:
    # stderr goes to a temporary file: a pipe nobody reads could fill up and stall Node.
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as errf:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=errf,
                                text=True, encoding="utf-8")
        count = 0
        try:
            for line in proc.stdout:
                if line.strip():
                    count += 1
                    yield json.loads(line)
        finally:
            if proc.poll() is None and count < n:  # the consumer stopped early
                proc.kill()
            proc.stdout.close()
            proc.wait()
        if proc.returncode != 0 or count != n:
            errf.seek(0)
            raise FacesjsError(f"{SCRIPT.name} failed (exit {proc.returncode}, {count} of {n} faces): "
                               f"{errf.read().strip()}")


# ---------------------------------------------------------------------------
# Reading facesjs SVG styles
# ---------------------------------------------------------------------------

_DRAWABLE = {"path", "circle", "ellipse", "rect", "polygon", "polyline", "line"}
# Inherited presentation properties, with their SVG defaults.
_INHERITED = {"fill": "#000", "stroke": "none", "stroke-width": "1", "fill-opacity": "1",
              "stroke-opacity": "1", "fill-rule": "nonzero", "stroke-linecap": "butt",
              "stroke-linejoin": "miter", "stroke-miterlimit": "4", "stroke-dasharray": "none"}
_STYLE_ATTRS = set(_INHERITED) | {"opacity", "style", "mix-blend-mode", "display"}
_NAMED = {"black": (0, 0, 0), "white": (255, 255, 255), "currentcolor": (0, 0, 0)}


def _tag(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def _style(el: ET.Element) -> Dict[str, str]:
    """Presentation attributes overridden by the style attribute, as CSS does."""
    props = {k: v for k, v in el.attrib.items() if k in _STYLE_ATTRS and k != "style"}
    for decl in (el.get("style") or "").split(";"):
        if ":" in decl:
            k, v = decl.split(":", 1)
            props[k.strip()] = v.strip()
    return props


def parse_color(value: str) -> Optional[Tuple[float, float, float, float]]:
    """SVG paint -> (r, g, b, alpha) with r, g, b in 0..255 and alpha in 0..1.

    None for ``none``/``transparent`` and for gradients (``url(...)``): facesjs uses
    gradients only for soft shading, which a line drawing leaves out.
    """
    v = value.strip().lower()
    if v in ("none", "transparent", "") or v.startswith("url("):
        return None
    if v in _NAMED:
        return (*_NAMED[v], 1.0)
    m = re.fullmatch(r"rgba?\(([^)]*)\)", v)
    if m:
        parts = [p.strip() for p in m.group(1).split(",")]
        rgb = [float(p[:-1]) * 2.55 if p.endswith("%") else float(p) for p in parts[:3]]
        a = float(parts[3]) if len(parts) > 3 else 1.0
        return (*rgb, a)
    if v.startswith("#"):
        h = v[1:]
        if len(h) in (3, 4):
            h = "".join(c * 2 for c in h)
        if len(h) >= 6 and re.fullmatch(r"[0-9a-f]+", h):
            a = int(h[6:8], 16) / 255 if len(h) == 8 else 1.0
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), a)
    return (0.0, 0.0, 0.0, 1.0)  # an unknown paint: draw it, as browsers draw black


def _luminance(rgba) -> float:
    r, g, b = rgba[:3]
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


@dataclass
class _Paint:
    """A drawable element's effective paint after inheritance and opacities."""
    fill: Optional[Tuple[float, float, float, float]]    # alpha includes opacities
    stroke: Optional[Tuple[float, float, float, float]]
    props: Dict[str, str]                                # the other inherited properties


def _walk(el: ET.Element, inherited: Dict[str, str], opacity: float, out: List[Tuple[ET.Element, _Paint]]):
    if _tag(el) in ("defs", "style", "title", "desc", "linearGradient", "radialGradient"):
        return
    own = _style(el)
    if own.get("display") == "none":
        out.append((el, None))  # hidden: to be removed
        return
    props = dict(inherited)
    props.update({k: v for k, v in own.items() if k in _INHERITED})
    opacity *= float(own.get("opacity", 1.0))
    if _tag(el) in _DRAWABLE:
        fill = parse_color(props["fill"])
        stroke = parse_color(props["stroke"])
        if fill is not None:
            fill = (*fill[:3], fill[3] * opacity * float(props["fill-opacity"]))
        if stroke is not None:
            width = float(re.sub(r"[a-z%]+$", "", props["stroke-width"]) or 0)
            stroke = (*stroke[:3], stroke[3] * opacity * float(props["stroke-opacity"])) if width > 0 else None
        out.append((el, _Paint(fill, stroke, props)))
    for child in el:
        _walk(child, props, opacity, out)


def _paints(root: ET.Element) -> List[Tuple[ET.Element, Optional[_Paint]]]:
    out: List[Tuple[ET.Element, Optional[_Paint]]] = []
    _walk(root, dict(_INHERITED), 1.0, out)
    return out


def _remove(root: ET.Element, doomed: Sequence[ET.Element]) -> None:
    doomed = set(map(id, doomed))
    for parent in list(root.iter()):
        for child in list(parent):
            if id(child) in doomed:
                parent.remove(child)


def _feature_groups(root: ET.Element) -> List[Tuple[str, ET.Element]]:
    """The top-level groups of a facesjs SVG with the feature each one draws.

    facesjs puts each feature instance in a group of its own under <svg>; our Node
    script tags the snippet inside it with class ``dfd-<feature>``. Eyes, brows and
    ears come in two instances, image-left first.
    """
    out = []
    for g in root:
        name = ""
        for sub in g.iter():
            cls = sub.get("class", "")
            if cls.startswith("dfd-"):
                name = cls[4:]
                break
        out.append((name, g))
    return out


def parse_svg(svg: str) -> ET.Element:
    return ET.fromstring(svg)


# ---------------------------------------------------------------------------
# Line drawing
# ---------------------------------------------------------------------------

# Opacity below which a shape counts as shading (cheek blush, stubble, shave
# shadows, mouth shadows) and is left out of the line drawing.
_SHADING_ALPHA = 0.5


def sketch_svg(svg: str, face: Optional[Mapping] = None, line_scale: float = SKETCH_LINE_SCALE,
               min_width: float = 0.0, max_width: float = float("inf")) -> str:
    """A line-drawing version of a facesjs colour SVG (same 400 x 600 viewBox).

    Rules, per shape, applied after resolving inherited styles:

    * shading (gradients, alpha < 0.5: blush, stubble, shave shadows) is dropped;
    * dark strokes become black lines, ``line_scale`` times as wide and clamped to
      [``min_width``, ``max_width``] (facesjs units); light or coloured strokes become
      white, because facesjs layers coloured strokes over black ones to draw bands
      (jersey trims) and their job is to hide ink;
    * filled shapes become white, so hair still hides the head outline behind it,
      as the colours do in the photo; but eyebrows and dark fills (pupils, lashes,
      lids, an open mouth) become solid black, the way a pencil sketch or a
      photocopy filter renders them. A dark fill in the face's own skin or hair
      colour (``face`` gives those) stays white, or dark-haired faces would get
      solid black hair.
    """
    root = parse_svg(svg)
    own_colours = set()
    if face:
        for c in (face.get("body", {}).get("color"), face.get("hair", {}).get("color"),
                  *face.get("teamColors", [])):
            rgba = parse_color(c) if c else None
            if rgba:
                own_colours.add(tuple(round(x) for x in rgba[:3]))
    doomed = []
    for feature, group in _feature_groups(root):
        for el, p in _paints(group):
            if p is None:
                doomed.append(el)
                continue
            stroke = p.stroke if p.stroke is not None and p.stroke[3] >= _SHADING_ALPHA else None
            fill = p.fill if p.fill is not None and p.fill[3] >= _SHADING_ALPHA else None
            if fill is None and stroke is None:
                doomed.append(el)
                continue
            attrs = {}
            if stroke is not None:
                dark = _luminance(stroke) < 0.4
                width = float(re.sub(r"[a-z%]+$", "", p.props["stroke-width"]) or 1)
                if dark:
                    width = min(max(width * line_scale, min_width), max_width)
                attrs["stroke"] = "#000" if dark else "#fff"
                attrs["stroke-width"] = f"{width:.4g}"
                for k in ("stroke-linecap", "stroke-linejoin", "stroke-miterlimit", "stroke-dasharray"):
                    attrs[k] = p.props[k]
            else:
                attrs["stroke"] = "none"
            if fill is not None:
                ink = feature == "eyebrow" or (_luminance(fill) < 0.3
                                               and tuple(round(x) for x in fill[:3]) not in own_colours)
                attrs["fill"] = "#000" if ink else "#fff"
                attrs["fill-rule"] = p.props["fill-rule"]
            else:
                attrs["fill"] = "none"
            for k in list(el.attrib):
                if k in _STYLE_ATTRS:
                    del el.attrib[k]
            el.attrib.update(attrs)
    _strip_styles_groups(root)
    _remove(root, doomed)
    return ET.tostring(root, encoding="unicode")


def _strip_styles_groups(root: ET.Element) -> None:
    # Leaves carry explicit paint now; group styles (opacity, blend modes) must go.
    for el in root.iter():
        if _tag(el) not in _DRAWABLE:
            for k in list(el.attrib):
                if k in _STYLE_ATTRS:
                    del el.attrib[k]


# ---------------------------------------------------------------------------
# Finding the features and aligning
# ---------------------------------------------------------------------------

# Colour codes of the feature map: one pure colour per feature instance.
_FEATURE_CODES = {
    "left_eye": (255, 0, 0), "right_eye": (0, 255, 0), "left_eyebrow": (0, 0, 255),
    "right_eyebrow": (255, 255, 0), "nose": (255, 0, 255), "mouth": (0, 255, 255),
}


def _feature_instances(root: ET.Element) -> Dict[str, ET.Element]:
    """Top-level groups of the eyes, brows, nose and mouth, keyed by instance name."""
    seen: Dict[str, int] = {}
    out = {}
    for name, g in _feature_groups(root):
        if name in ("eye", "eyebrow"):
            k = seen.get(name, 0)
            seen[name] = k + 1
            if k < 2:
                out[("left_" if k == 0 else "right_") + name] = g
        elif name in ("nose", "mouth"):
            out[name] = g
    return out


def feature_map_svg(svg: str) -> str:
    """The eyes, brows, nose and mouth alone, each a silhouette in its own colour code.

    Shapes keep their geometry and stroke widths; shading (alpha < 0.5) is dropped.
    Used to measure where each feature's ink is (:func:`feature_points`) and by the
    tests to check the alignment.
    """
    root = parse_svg(svg)
    inst = _feature_instances(root)
    keep = {id(g): name for name, g in inst.items()}
    for g in list(root):
        if id(g) not in keep:
            root.remove(g)
    for name, g in inst.items():
        code = "#%02x%02x%02x" % _FEATURE_CODES[name]
        paints = _paints(g)
        doomed = [el for el, p in paints if p is None]
        for el, p in paints:
            if p is None:
                continue
            fill = p.fill is not None and p.fill[3] >= _SHADING_ALPHA
            stroke = p.stroke is not None and p.stroke[3] >= _SHADING_ALPHA
            if not (fill or stroke):
                doomed.append(el)
                continue
            width = p.props["stroke-width"]
            for k in list(el.attrib):
                if k in _STYLE_ATTRS:
                    del el.attrib[k]
            el.attrib.update({"fill": code if fill else "none", "stroke": code if stroke else "none",
                              "stroke-width": width, "fill-rule": p.props["fill-rule"]})
        _strip_styles_groups(g)
        _remove(g, doomed)
    return ET.tostring(root, encoding="unicode")


def _classify(rgb: np.ndarray) -> np.ndarray:
    """Feature index (0..5, in :data:`_FEATURE_CODES` order) of each pixel of a feature
    map rendered on black, or -1 for background and anti-aliased edges (any channel
    more than 40 levels from 0 or 255)."""
    rgb = rgb.astype(np.int16)
    clean = ((rgb <= 40) | (rgb >= 215)).all(axis=-1)
    bits = ((rgb[..., 0] >= 128).astype(np.int16) << 2) | ((rgb[..., 1] >= 128).astype(np.int16) << 1) \
        | (rgb[..., 2] >= 128).astype(np.int16)
    lut = np.full(8, -1, np.int16)
    for i, code in enumerate(_FEATURE_CODES.values()):
        lut[(code[0] >= 128) << 2 | (code[1] >= 128) << 1 | (code[2] >= 128)] = i
    return np.where(clean, lut[bits], -1)


def feature_masks(feature_svg: str, size: int, transform=(1.0, 0.0, 0.0)) -> Dict[str, np.ndarray]:
    """Render a :func:`feature_map_svg` and split it into one boolean mask per feature.

    ``transform`` = (s, tx, ty) maps facesjs coordinates to the ``size`` x ``size``
    image (x' = s*x + tx). Anti-aliased edges between two features belong to neither.
    """
    labels = _classify(render_svg(feature_svg, (size, size), transform, background=(0, 0, 0)))
    return {name: labels == i for i, name in enumerate(_FEATURE_CODES)}


# The part of the facesjs viewBox that holds eyes, brows, nose and mouth, with a
# wide margin (x0, y0, x1, y1): the feature map is rendered from this window only.
_FEATURE_WINDOW = (40.0, 180.0, 360.0, 540.0)


def feature_points(svg: str, scale: float = 0.5) -> Dict[str, Tuple[float, float]]:
    """Where the face's components are, in facesjs coordinates (x right, y down).

    Renders the feature map (:func:`feature_map_svg`) at ``scale`` pixels per facesjs
    unit and takes the centroid of each feature's ink (strokes and fills). Returns
    ``left_eye``, ``right_eye``, ``nose``, ``mouth``; an eye's point lies between the
    eye and its brow (:data:`EYEBROW_WEIGHT`) because the paper's eye crops hold
    both. A feature without ink falls back to facesjs' anchor for it
    (:data:`FACESJS_ANCHORS`).
    """
    x0, y0, x1, y1 = _FEATURE_WINDOW
    w, h = int(round((x1 - x0) * scale)), int(round((y1 - y0) * scale))
    labels = _classify(render_svg(feature_map_svg(svg), (w, h), (scale, -x0 * scale, -y0 * scale),
                                  background=(0, 0, 0)))
    flat = labels.ravel() + 1  # 0 = nothing
    k = len(_FEATURE_CODES) + 1
    ys, xs = np.divmod(np.arange(flat.size), w)
    count = np.bincount(flat, minlength=k)
    sx = np.bincount(flat, weights=xs, minlength=k)
    sy = np.bincount(flat, weights=ys, minlength=k)
    centres = {}
    for i, name in enumerate(_FEATURE_CODES, start=1):
        if count[i] >= 3:  # pixel centres are at +0.5
            centres[name] = ((sx[i] / count[i] + 0.5) / scale + x0, (sy[i] / count[i] + 0.5) / scale + y0)
        else:
            centres[name] = FACESJS_ANCHORS[name]
    pts = {}
    for side in ("left", "right"):
        e, b = np.array(centres[f"{side}_eye"]), np.array(centres[f"{side}_eyebrow"])
        pts[f"{side}_eye"] = tuple((1 - EYEBROW_WEIGHT) * e + EYEBROW_WEIGHT * b)
    pts["nose"] = centres["nose"]
    pts["mouth"] = centres["mouth"]
    return {k: (float(v[0]), float(v[1])) for k, v in pts.items()}


def box_centres(layout: Layout) -> Dict[str, Tuple[float, float]]:
    """Centres of the four part boxes, in pixel coordinates (x right, y down)."""
    out = {}
    for name in PARTS:
        b = layout.box(name)
        out[name] = (b.x + b.size / 2.0, b.y + b.size / 2.0)
    return out


def fit_similarity(src: Mapping[str, Sequence[float]], dst: Mapping[str, Sequence[float]]) -> Tuple[float, float, float]:
    """Least-squares scale + translation taking points ``src`` onto ``dst``.

    Returns (s, tx, ty) with dst ~ s * src + (tx, ty), fitted over the names both
    mappings share. No rotation: facesjs faces are upright by construction.
    """
    names = [k for k in src if k in dst]
    if len(names) < 2:
        raise ValueError("need at least two shared points to fit a similarity")
    p = np.array([src[k] for k in names], np.float64)
    q = np.array([dst[k] for k in names], np.float64)
    pc, qc = p - p.mean(0), q - q.mean(0)
    s = float((pc * qc).sum() / (pc * pc).sum())
    t = q.mean(0) - s * p.mean(0)
    return s, float(t[0]), float(t[1])


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def render_svg(svg: str, size: Tuple[int, int], transform=(1.0, 0.0, 0.0),
               background: Optional[Tuple[int, int, int]] = (255, 255, 255)) -> np.ndarray:
    """Render a facesjs-coordinate SVG into a ``size = (width, height)`` pixel image.

    ``transform`` = (s, tx, ty): a point (x, y) of the SVG lands at pixel
    (s*x + tx, s*y + ty). Returns uint8 (H, W, 3) on ``background``, or (H, W, 4)
    RGBA (straight alpha) when ``background`` is None.
    """
    root = parse_svg(svg)
    w, h = int(size[0]), int(size[1])
    s, tx, ty = transform
    out = ET.Element(f"{{{SVG_NS}}}svg", {"width": str(w), "height": str(h), "viewBox": f"0 0 {w} {h}"})
    if background is not None:
        ET.SubElement(out, f"{{{SVG_NS}}}rect", {"width": str(w), "height": str(h),
                                                  "fill": "#%02x%02x%02x" % tuple(background)})
    g = ET.SubElement(out, f"{{{SVG_NS}}}g", {"transform": f"matrix({s:.6f} 0 0 {s:.6f} {tx:.4f} {ty:.4f})"})
    g.extend(list(root))
    rgba = _rasterize(ET.tostring(out), w, h)
    return rgba if background is None else rgba[..., :3].copy()


def _rasterize(data: bytes, w: int, h: int) -> np.ndarray:
    """SVG bytes -> (h, w, 4) uint8 RGBA with straight alpha, via cairosvg.

    Reads cairo's pixel buffer directly (cairosvg documents ``output=None`` as
    "render in memory"): encoding and decoding a PNG per render would cost about
    a fifth of the time.
    """
    import cairosvg  # imported here: only the builders need cairo
    try:
        from cairosvg.parser import Tree
        from cairosvg.surface import PNGSurface

        surface = PNGSurface(Tree(bytestring=data), None, 96, output_width=w, output_height=h)
        cs = surface.cairo
        cs.flush()
        if (cs.get_width(), cs.get_height()) != (w, h):
            raise ValueError("unexpected surface size")
        buf = np.frombuffer(cs.get_data(), np.uint8).reshape(h, cs.get_stride())[:, :4 * w].reshape(h, w, 4)
        # cairo's ARGB32 is a native-endian 32-bit word, premultiplied by alpha.
        order = [2, 1, 0, 3] if sys.byteorder == "little" else [1, 2, 3, 0]
        rgba = buf[..., order].copy()
        surface.finish()
        a = rgba[..., 3:4].astype(np.uint16)
        if (a < 255).any():
            with np.errstate(divide="ignore", invalid="ignore"):
                un = np.where(a > 0, (rgba[..., :3].astype(np.uint16) * 255 + a // 2) // np.maximum(a, 1), 0)
            rgba[..., :3] = np.minimum(un, 255).astype(np.uint8)
        return rgba
    except (ImportError, AttributeError, TypeError, ValueError):  # a cairosvg without these internals
        png = cairosvg.svg2png(bytestring=data, output_width=w, output_height=h)
        return np.asarray(Image.open(BytesIO(png)).convert("RGBA")).copy()


@dataclass
class RenderedFace:
    photo: np.ndarray                  # (size, size, 3) uint8
    sketch: np.ndarray                 # (size, size) uint8, dark lines on white
    transform: Tuple[float, float, float]
    points: Dict[str, Tuple[float, float]]  # facesjs coordinates of the components


def render_face(record: Mapping, layout: Layout = DEMO_LAYOUT) -> RenderedFace:
    """Align and render one record of :func:`generate_faces` at ``layout.size``."""
    svg = record["svg"]
    pts = feature_points(svg)
    transform = fit_similarity(pts, box_centres(layout))
    size = (layout.size, layout.size)
    photo = render_svg(svg, size, transform, background=PHOTO_BACKGROUND)
    # Sketch lines 1 to size/128 pixels wide, whatever the face's scale.
    s = transform[0]
    sk = render_svg(sketch_svg(svg, record.get("face"), min_width=SKETCH_MIN_PX / s,
                               max_width=layout.size / 128.0 / s),
                    size, transform, background=(255, 255, 255))
    sketch = np.asarray(Image.fromarray(sk).convert("L"))
    return RenderedFace(photo, sketch, transform, pts)


# ---------------------------------------------------------------------------
# The dataset builder
# ---------------------------------------------------------------------------

def _sample_id(index: int) -> str:
    return f"{index:05d}"


def _build_one(args):
    record, layout, out_dir = args
    face = render_face(record, layout)
    sid = _sample_id(record["index"])
    Image.fromarray(face.photo, "RGB").save(Path(out_dir) / "photo" / f"{sid}.png", compress_level=1)
    Image.fromarray(face.sketch, "L").save(Path(out_dir) / "sketch" / f"{sid}.png", compress_level=1)
    return {"id": sid, "sex": record["sex"], "face": record["face"],
            "transform": [round(v, 6) for v in face.transform],
            "points": {k: [round(c, 3) for c in v] for k, v in face.points.items()}}


def build_facesjs_dataset(out_dir, n: int, seed: int = 0, layout: Layout = DEMO_LAYOUT, progress: bool = True,
                          workers: Optional[int] = None, accessories: bool = False, colours: bool = False) -> Path:
    """Generate ``n`` aligned (sketch, photo) pairs from random facesjs faces.

    Writes into ``out_dir``:

    * ``photo/NNNNN.png``  RGB, layout.size x layout.size, the colour face on light grey;
    * ``sketch/NNNNN.png`` L (grayscale), same size, black lines on white;
    * ``samples.csv``      columns ``id,sex`` (``id`` is the NNNNN stem; sex is
      ``male``/``female``, alternating, so half of each);
    * ``facesjs.jsonl``    per face: id, sex, the facesjs parameters (``face``), the
      alignment ``transform`` (s, tx, ty: pixel = s * facesjs + t) and the measured
      component ``points`` in facesjs coordinates.

    The same ``seed`` gives byte-identical files. One Node process makes all faces;
    rendering runs on ``workers`` processes (default: all CPUs; 1 = in this process,
    also used for small ``n``). ``accessories`` and ``colours``: see
    :func:`generate_faces`. Returns ``Path(out_dir)``.
    """
    from ..progress import tqdm  # tqdm.auto, ending cleanly in notebooks

    out = Path(out_dir)
    (out / "photo").mkdir(parents=True, exist_ok=True)
    (out / "sketch").mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = os.cpu_count() or 1
    if n < 64:  # a pool costs more to start than a few faces take to render
        workers = 1
    jobs = ((rec, layout, str(out)) for rec in generate_faces(n, seed, accessories=accessories, colours=colours))
    results = []
    bar = tqdm(total=n, desc="facesjs faces", unit="face", disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                results.append(_build_one(job))
                bar.update()
        else:
            import multiprocessing as mp

            # spawn, not fork: safe from Jupyter kernels and threaded parents.
            with mp.get_context("spawn").Pool(workers) as pool:
                for res in pool.imap(_build_one, jobs, chunksize=8):
                    results.append(res)
                    bar.update()
    finally:
        bar.close()
    if len(results) != n:
        raise FacesjsError(f"expected {n} faces from {SCRIPT.name}, got {len(results)}")
    write_samples_csv(out, [(r["id"], r["sex"]) for r in results])
    with open(out / "facesjs.jsonl", "w") as f:
        for r in results:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfd_kit.data.facesjs",
                                 description="Build a synthetic DeepFaceDrawing training set from facesjs faces.")
    ap.add_argument("--out", required=True, help="output folder (photo/, sketch/, samples.csv)")
    ap.add_argument("--n", type=int, default=2000, help="number of faces (half male, half female)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, choices=(256, 512),
                    help="256: the demo layout; 512: the official layout")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: all CPUs)")
    ap.add_argument("--accessories", action="store_true", help="keep facesjs glasses and hats")
    ap.add_argument("--colours", action="store_true",
                    help="keep facesjs's random skin and hair colours (default: one palette; a sketch has no colour)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    from ..config import OFFICIAL_LAYOUT
    layout = DEMO_LAYOUT if a.size == 256 else OFFICIAL_LAYOUT
    try:
        out = build_facesjs_dataset(a.out, a.n, a.seed, layout, progress=not a.quiet, workers=a.workers,
                                    accessories=a.accessories, colours=a.colours)
    except FacesjsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.n} faces to {out}")
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, so worker processes unpickle
    # dfd_kit.data.facesjs._build_one rather than a second __main__ instance.
    from dfd_kit.data.facesjs import main as _main

    sys.exit(_main())
