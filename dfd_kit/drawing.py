"""A drawing as data: its strokes with their times, the JSON file that carries it to another
machine, and its replay as an animated GIF. The drawing pad (:mod:`dfd_kit.widgets`) uses
these; they need neither a browser nor ipywidgets.

    pad.save_drawing("face.json")                          # strokes, weights, K, sex, model
    pad2 = DrawingPad.load_drawing("face.json", model=m)   # a new pad, the same face
    pad.replay("face.gif")                                 # sketch and face, stroke by stroke

The file (:data:`FORMAT`, version :data:`VERSION`) is JSON::

    {"format": "dfd_kit.drawing", "version": 1, "dfd_kit": "0.1.0",
     "model": {"name": "photo", "params_sha256": "...", "size": 256, "precision": "fp32"},
     "settings": {"part_weights": {"left_eye": 1.0, ...}, "k": 10, "sex": "male"},
     "base_png": null,
     "strokes": [{"tool": "pen", "width": 2.0, "t": 0.0, "duration": 0.8,
                  "points": [[x, y], ...]}, ...]}

Points and widths are in sketch pixels of a ``size`` x ``size`` sketch and are written as
Python writes floats (the shortest text that reads back as the same number), so the
sketch, and with the same model the face, come back bit for bit. ``base_png`` is the page
the strokes are drawn on when it is not blank (a loaded sketch), as a base64 PNG.
``precision`` is the arithmetic the model ran in ("fp32", or "bf16" where the kit converted
it; the same files then draw slightly different faces); it may be absent.
``t`` is when the pen went down, in seconds since the pad opened, ``duration`` how long
it stayed down. A GIF is written with Pillow; no MP4, as no video writer is a dependency.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config import COMPONENTS
from .errors import DrawingFileError
from .loading import SEXES, atomic_write

FORMAT = "dfd_kit.drawing"
VERSION = 1
#: A drawing file larger than this is refused before it is parsed (an hour of drawing is
#: a few MB).
MAX_FILE_BYTES = 64 << 20
PAPER = 255
INK = 0
#: From this many strokes on, :func:`replay_gif` shows a tqdm progress bar by default.
PROGRESS_MIN_STROKES = 20
_BAND = 24   # caption band under the replay's panels, pixels


@dataclass(frozen=True)
class Stroke:
    """One pen or eraser stroke in sketch pixel coordinates (0..layout.size, continuous:
    pixel (row r, column c) covers [c, c+1) x [r, r+1)). ``t``: when the pen went down, in
    seconds since the pad opened; ``duration``: how long it stayed down (the timeline)."""
    points: Tuple[Tuple[float, float], ...]
    width: float
    eraser: bool = False
    t: float = 0.0
    duration: float = 0.0

    @property
    def bbox(self) -> Tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        r = self.width / 2 + 1
        return min(xs) - r, min(ys) - r, max(xs) + r, max(ys) + r


def rasterize_stroke(img: Image.Image, stroke: Stroke) -> None:
    """Draw ``stroke`` into a mode-"L" image in place: round joins and round caps, no
    anti-aliasing (the sketch the model reads is black and white, and an eraser stroke
    clears every pixel it covers)."""
    draw = ImageDraw.Draw(img)
    fill = PAPER if stroke.eraser else INK
    # PIL puts integer coordinates at pixel centres; ours put them at pixel corners.
    pts = [(x - 0.5, y - 0.5) for x, y in stroke.points]
    w = max(1, int(round(stroke.width)))
    if len(pts) > 1:
        draw.line(pts, fill=fill, width=w, joint="curve" if w > 2 else None)
    if w <= 1:
        draw.point([(round(x), round(y)) for x, y in pts], fill=fill)
        return
    r = stroke.width / 2
    dots = pts if w > 2 else pts[:1] + pts[-1:]
    for x, y in dots:
        draw.ellipse([x - r + 0.5, y - r + 0.5, x + r - 0.5, y + r - 0.5], fill=fill)


def render(base: np.ndarray, strokes: Sequence[Stroke]) -> np.ndarray:
    """The sketch: ``strokes`` drawn in order on a copy of ``base``."""
    img = Image.fromarray(np.asarray(base, np.uint8).copy())
    for s in strokes:
        rasterize_stroke(img, s)
    return np.array(img, dtype=np.uint8)


# ------------------------------------------------------------------ the file

@dataclass
class Drawing:
    """What a drawing file holds (see the module docstring)."""
    base: Optional[np.ndarray]          # uint8 (size, size), None for a blank page
    strokes: Tuple[Stroke, ...]
    part_weights: Dict[str, float]
    k: int
    sex: str
    model_name: str
    params_hash: Optional[str]
    size: int
    precision: Optional[str] = None   # None: not recorded

    def to_json(self) -> str:
        base = None
        if self.base is not None:
            buf = io.BytesIO()
            Image.fromarray(np.asarray(self.base, np.uint8)).save(buf, "PNG")
            base = base64.b64encode(buf.getvalue()).decode("ascii")
        from . import __version__

        doc = {"format": FORMAT, "version": VERSION, "dfd_kit": __version__,
               "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "model": {"name": self.model_name, "params_sha256": self.params_hash, "size": self.size,
                         "precision": self.precision},
               "settings": {"part_weights": {c: float(self.part_weights[c]) for c in COMPONENTS},
                            "k": int(self.k), "sex": self.sex},
               "base_png": base,
               "strokes": [{"tool": "eraser" if s.eraser else "pen", "width": s.width, "t": s.t,
                            "duration": s.duration, "points": [list(p) for p in s.points]}
                           for s in self.strokes]}
        return json.dumps(doc, allow_nan=False)


def read_drawing(source, name: Optional[str] = None) -> Drawing:
    """A drawing from a file path, or from the file's bytes (``name``: what error messages
    call it). Every entry is checked before anything is returned; a file that is not JSON,
    not a dfd_kit drawing, of another format version, or has missing or malformed entries
    raises one :class:`~dfd_kit.errors.DrawingFileError` that says what is wrong."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        what = name or "the drawing"
        data = bytes(source)
    else:
        path = Path(source)
        what = name or str(path)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise DrawingFileError(f"{what} is larger than {MAX_FILE_BYTES >> 20} MB: not a drawing file")
            data = path.read_bytes()
        except FileNotFoundError:
            raise DrawingFileError(f"no drawing file at {path}") from None
        except IsADirectoryError:
            raise DrawingFileError(f"{path} is a folder, not a drawing file") from None
        except OSError as e:
            raise DrawingFileError(f"could not read {path}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DrawingFileError(f"{what} is larger than {MAX_FILE_BYTES >> 20} MB: not a drawing file")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        return _parse(doc)
    except _Bad as e:
        raise DrawingFileError(f"{what} is not a usable drawing file: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise DrawingFileError(f"{what} is not a drawing file: it is not JSON ({e}). A drawing file is "
                               "what pad.save_drawing() (or the pad's save button) writes.") from None


class _Bad(Exception):
    pass


def _no_constant(name):
    raise _Bad(f"it holds {name}, which is not a number a drawing may hold")


def _get(d: dict, key: str, where: str):
    if key not in d:
        raise _Bad(f"{where} has no {key!r} entry")
    return d[key]


def _dict(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise _Bad(f"{where} must be a JSON object, not {_kind(v)}")
    return v


def _number(v, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(f"{where} must be a number, not {_kind(v)}")
    if not lo <= v <= hi:
        raise _Bad(f"{where} must be between {lo:g} and {hi:g}, not {v!r}")
    return float(v)


def _int(v, where: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{where} must be a whole number, not {_kind(v)}")
    if v < lo:
        raise _Bad(f"{where} must be at least {lo}, not {v}")
    return v


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(v), repr(v))


def _parse(doc) -> Drawing:
    doc = _dict(doc, "the file")
    fmt = _get(doc, "format", "the file")
    if fmt != FORMAT:
        raise _Bad(f"its format is {fmt!r}, not {FORMAT!r}")
    version = _get(doc, "version", "the file")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _Bad(f"its version must be a whole number, not {_kind(version)}")
    if version != VERSION:
        newer = " (written by a newer dfd_kit: update dfd_kit to read it)" if version > VERSION else ""
        raise _Bad(f"it is format version {version}; this dfd_kit reads version {VERSION}{newer}")

    model = _dict(_get(doc, "model", "the file"), "'model'")
    model_name = _get(model, "name", "'model'")
    if not isinstance(model_name, str):
        raise _Bad(f"'model'.'name' must be text, not {_kind(model_name)}")
    params_hash = _get(model, "params_sha256", "'model'")
    if params_hash is not None and not isinstance(params_hash, str):
        raise _Bad(f"'model'.'params_sha256' must be text or null, not {_kind(params_hash)}")
    size = _int(_get(model, "size", "'model'"), "'model'.'size'", 16)
    if size > 4096:
        raise _Bad(f"'model'.'size' {size} is larger than any model's sketch")
    precision = model.get("precision")
    if precision is not None and not isinstance(precision, str):
        raise _Bad(f"'model'.'precision' must be text or null, not {_kind(precision)}")

    settings = _dict(_get(doc, "settings", "the file"), "'settings'")
    weights = _dict(_get(settings, "part_weights", "'settings'"), "'settings'.'part_weights'")
    unknown = sorted(set(weights) - set(COMPONENTS))
    if unknown:
        raise _Bad(f"'settings'.'part_weights' names unknown components {unknown}; they are {list(COMPONENTS)}")
    part_weights = {c: _number(_get(weights, c, "'settings'.'part_weights'"), f"the {c} weight", 0.0, 1.0)
                    for c in COMPONENTS}
    k = _int(_get(settings, "k", "'settings'"), "'settings'.'k'", 2)
    sex = _get(settings, "sex", "'settings'")
    if sex not in SEXES:
        raise _Bad(f"'settings'.'sex' must be 'male' or 'female', not {sex!r}")

    base = _get(doc, "base_png", "the file")
    if base is not None:
        base = _base_image(base, size)

    strokes_doc = _get(doc, "strokes", "the file")
    if not isinstance(strokes_doc, list):
        raise _Bad(f"'strokes' must be a list, not {_kind(strokes_doc)}")
    strokes = tuple(_stroke(s, i, size) for i, s in enumerate(strokes_doc))
    return Drawing(base, strokes, part_weights, k, sex, model_name, params_hash, size, precision)


def _base_image(text, size: int) -> np.ndarray:
    if not isinstance(text, str):
        raise _Bad(f"'base_png' must be a base64 PNG or null, not {_kind(text)}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        img = Image.open(io.BytesIO(raw))
        if img.format != "PNG" or img.size != (size, size):
            raise ValueError(f"a {img.format} of {img.size[0]} x {img.size[1]}, not a {size} x {size} PNG")
        a = np.array(img.convert("L"), dtype=np.uint8)
    except (binascii.Error, UnicodeEncodeError, OSError, ValueError, SyntaxError) as e:
        raise _Bad(f"'base_png' is not the base64 PNG of the page ({e})") from None
    return a


def _stroke(s, i: int, size: int) -> Stroke:
    where = f"stroke {i}"
    s = _dict(s, where)
    tool = _get(s, "tool", where)
    if tool not in ("pen", "eraser"):
        raise _Bad(f"{where}: 'tool' must be 'pen' or 'eraser', not {tool!r}")
    width = _number(_get(s, "width", where), f"{where}: 'width'", 0.0, float(size))
    if width <= 0:
        raise _Bad(f"{where}: 'width' must be more than 0")
    t = _number(_get(s, "t", where), f"{where}: 't'", 0.0)
    duration = _number(_get(s, "duration", where), f"{where}: 'duration'", 0.0)
    points = _get(s, "points", where)
    if not isinstance(points, list) or not points:
        raise _Bad(f"{where}: 'points' must be a non-empty list of [x, y] pairs")
    pts = []
    for j, p in enumerate(points):
        if not (isinstance(p, list) and len(p) == 2):
            raise _Bad(f"{where}, point {j}: must be an [x, y] pair, not {_kind(p)}")
        # a little outside the page is what a stroke that left the canvas records
        pts.append((_number(p[0], f"{where}, point {j}: x", -size, 2 * size),
                    _number(p[1], f"{where}, point {j}: y", -size, 2 * size)))
    return Stroke(tuple(pts), width, tool == "eraser", t, duration)


def write_drawing(path, drawing: Drawing) -> Path:
    """Write ``drawing`` as JSON, atomically (a reader never sees half a file)."""
    path = Path(path).expanduser()
    if path.suffix == "":
        path = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = drawing.to_json()
    atomic_write(path, lambda f: f.write(text), "w")
    return path


def fit_to_size(drawing: Drawing, size: int) -> Tuple[np.ndarray, Tuple[Stroke, ...]]:
    """The drawing's page and strokes for a model whose sketch is ``size`` pixels: the same
    when the sizes agree, else scaled (points and widths) and resized (the page)."""
    if drawing.size == size:
        base = drawing.base if drawing.base is not None else np.full((size, size), PAPER, np.uint8)
        return base, drawing.strokes
    f = size / drawing.size
    if drawing.base is None:
        base = np.full((size, size), PAPER, np.uint8)
    else:
        base = np.asarray(Image.fromarray(drawing.base).resize((size, size), Image.BICUBIC))
    strokes = tuple(Stroke(tuple((x * f, y * f) for x, y in s.points), s.width * f, s.eraser, s.t, s.duration)
                    for s in drawing.strokes)
    return base, strokes


# ------------------------------------------------------------------ replay

def stroke_faces(model, sketches: Sequence[np.ndarray], part_weights, sex: str, k: int) -> Iterator[np.ndarray]:
    """The face of each sketch in turn, doing only the work that changed from the previous
    one (as the pad does): re-encode the touched components, re-project them, decode only
    the part feature maps whose vector moved."""
    from .components import components_touched
    from .pipeline import GenerationResult

    prev, crops, latents, queries, proj, cache, face = None, {}, {}, {}, {}, {}, None
    for sketch in sketches:
        touched = set(COMPONENTS) if prev is None else components_touched(prev, sketch, model.layout)
        if touched:
            new = model.crop(sketch)
            todo = {c: new[c] for c in COMPONENTS if c in touched}
            latents.update(model.encode(todo))
            queries.update(model.encode_queries(todo))
            crops.update(todo)
            proj.update(model.project({c: latents[c] for c in COMPONENTS if c in touched}, part_weights, sex, k,
                                      queries=queries))
            res = GenerationResult(sketch, dict(crops), dict(latents), dict(proj), dict(part_weights), sex, k,
                                   queries=dict(queries))
            face = model.render(res, keep_features=False, cache=cache).image
        prev = sketch
        yield face


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# A replay frame is a palette image. The face gets most of the 256 colours; the sketch, the
# highlights and the caption get fixed entries of their own, so a face full of colours never
# shifts them (Pillow's own conversion of an RGB frame shares one palette among everything).
_GREYS = 16
_RED, _PINK, _BAND_RGB, _BAR = (210, 30, 30), (255, 190, 190), (238, 238, 238), (70, 90, 140)
_FIXED = [(round(255 * i / (_GREYS - 1)),) * 3 for i in range(_GREYS)] + [_RED, _PINK, _BAND_RGB, _BAR]
_FACE_COLOURS = 256 - len(_FIXED)
_I_RED, _I_PINK, _I_BAND, _I_BAR = range(_FACE_COLOURS + _GREYS, 256)
_I_TEXT = _FACE_COLOURS   # the darkest grey: black


def replay_frame(sketch: np.ndarray, before: Optional[np.ndarray], face: np.ndarray, index: int, total: int,
                 t: Optional[float], panel: int) -> Image.Image:
    """One frame, a palette image: the sketch (ink the last stroke added in red, ink it
    erased in pink) and the face, each ``panel`` pixels square, over a caption band with
    the stroke count and a progress bar."""
    sketch = np.asarray(sketch, np.uint8)
    idx = (_FACE_COLOURS + np.round(sketch / 255.0 * (_GREYS - 1))).astype(np.uint8)
    if before is not None:
        idx[(sketch < 128) & (before >= 128)] = _I_RED
        idx[(sketch >= 128) & (before < 128)] = _I_PINK
    left = Image.fromarray(idx, "L").resize((panel, panel), Image.NEAREST)
    face_img = Image.fromarray(np.asarray(face, np.uint8)).resize((panel, panel), Image.BICUBIC)
    face_p = face_img.quantize(colors=_FACE_COLOURS)
    palette = (face_p.getpalette() or [])[:3 * _FACE_COLOURS]
    palette += [0] * (3 * _FACE_COLOURS - len(palette))
    palette += [v for rgb in _FIXED for v in rgb]
    frame = Image.new("P", (2 * panel, panel + _BAND), _I_BAND)
    frame.putpalette(palette)
    frame.paste(left, (0, 0))
    frame.paste(Image.fromarray(np.asarray(face_p, np.uint8), "L"), (panel, 0))
    draw = ImageDraw.Draw(frame)
    y = panel
    if total:
        draw.rectangle([0, y + _BAND - 5, round((2 * panel - 1) * index / total), y + _BAND - 1], fill=_I_BAR)
    text = "start" if index == 0 else f"stroke {index} of {total}"
    if t is not None and index:
        text += f"   pen down at {t:.1f} s"
    draw.text((6, y + 3), text, fill=_I_TEXT, font=_font(13))
    return frame


def replay_gif(model, base: np.ndarray, strokes: Sequence[Stroke], part_weights, sex: str, k: int, path=None,
               seconds_per_stroke: float = 0.5, hold: float = 2.0, speed: Optional[float] = None,
               panel: Optional[int] = None, progress: Optional[bool] = None):
    """An animated GIF of the drawing being made: one frame for the page before the first
    stroke, then one after each stroke, each showing the sketch and the face ``model``
    makes of it with these settings. Returns the path written, or the GIF's bytes when
    ``path`` is None. See :meth:`dfd_kit.widgets.DrawingPad.replay` for the options."""
    from tqdm.auto import tqdm

    if seconds_per_stroke <= 0 or hold < 0 or (speed is not None and not speed > 0):
        raise ValueError("seconds_per_stroke and speed must be more than 0, hold at least 0")
    panel = int(panel or model.layout.size)
    sketches: List[np.ndarray] = []
    img = Image.fromarray(np.asarray(base, np.uint8).copy())
    sketches.append(np.array(img))
    for s in strokes:
        rasterize_stroke(img, s)
        sketches.append(np.array(img))
    n = len(strokes)
    show = n >= PROGRESS_MIN_STROKES if progress is None else bool(progress)
    frames = []
    bar = tqdm(total=n + 1, desc="replay", unit="frame", disable=not show, leave=False)
    try:
        for i, face in enumerate(stroke_faces(model, sketches, part_weights, sex, k)):
            t = strokes[i - 1].t if i else None
            frames.append(replay_frame(sketches[i], sketches[i - 1] if i else None, face, i, n, t, panel))
            bar.update(1)
    finally:
        bar.close()
    durations = []
    for i in range(n + 1):
        if i == n:
            d = max(hold, seconds_per_stroke)
        elif speed is None or i == 0:
            d = seconds_per_stroke
        else:   # the time from this stroke's start to the next one's, sped up
            d = min(max((strokes[i].t - strokes[i - 1].t) / speed, 0.05), 3.0)
        durations.append(int(round(d * 1000)))
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    data = buf.getvalue()
    if path is None:
        return data
    path = Path(path).expanduser()
    if path.suffix == "":
        path = path.with_suffix(".gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    return path


__all__ = ["Drawing", "Stroke", "read_drawing", "write_drawing", "rasterize_stroke", "render", "replay_gif",
           "stroke_faces", "fit_to_size", "FORMAT", "VERSION"]
