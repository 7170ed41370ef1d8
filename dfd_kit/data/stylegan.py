"""Photo-realistic training data: faces of people who do not exist, from MobileStyleGAN.

The ``random-face`` wheel on PyPI carries MobileStyleGAN (Belousov 2021, arXiv
2104.04767, distilled from StyleGAN2 trained on FFHQ) as OpenVINO IR files. This
module runs them with the current ``openvino`` (not the wheel's outdated wrapper) and
turns each generated face into a training pair in the format of :mod:`dfd_kit.data`::

    z_i ~ N(0, 1)^512, drawn by np.random.default_rng(i)   (face i; any face regenerates alone)
    w_i = mapping(z_i);  w_i <- w_mean + truncation * (w_i - w_mean)
    photo_i = synthesis(w_i)                     1024 x 1024, FFHQ alignment
    photo_i <- crop FFHQ_CROP, resize to 256     CelebA-HQ framing: PHOTO_LAYOUT's boxes
    photo_i <- person kept, background white     MediaPipe's selfie segmentation
    sketch_i = photo_to_sketch(photo_i, **PHOTO_SKETCH) + the person's outline
    sex_i = sign((w_i - midpoint) . direction)   direction from faces labelled by eye

Data sets are ranges of face indices: the photo recipe trains on faces 0.., holds out
faces from :data:`HELDOUT_FIRST` and validates on faces from :data:`VALIDATION_FIRST`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..config import PHOTO_LAYOUT, Layout
from ..errors import DataError
from . import write_samples_csv

#: The wheel whose IR files are used (installed with ``pip install --no-deps``: its own
#: requirements, OpenCV and Jupyter among them, are for its wrapper, which is not used).
RANDOM_FACE = "random-face==2021.7.21.1"
#: Held-out and validation faces: index ranges far from the training faces.
HELDOUT_FIRST = 1_000_000
VALIDATION_FIRST = 2_000_000

#: (x, y, size) of the square cut from the 1024 x 1024 FFHQ-aligned face. Measured on faces
#: 0-199 with MediaPipe FaceMesh: eye centres at (389.5, 490.5) and (635.9, 489.9) on
#: average (sd 10 px), mouth corners at y = 748. The cut scales the eyes to 73.5 px apart
#: at 256 and puts them on the row y = 110, where the official layout (halved) has them,
#: centred left to right. FFHQ shows more around the face than CelebA-HQ; this zooms in.
FFHQ_CROP = (83, 121, 858)

#: Truncation toward the mean style: 1 is every face the generator can make (with its
#: rarer artefacts: hats merging into hair, second faces at the border), smaller values
#: trade variety for cleaner faces. 0.75 keeps age, skin, hair and glasses varied.
TRUNCATION = 0.75

#: photo_to_sketch settings for these photos at 256 x 256: a median filter first (hair
#: texture and backgrounds became hatching), a lower threshold (so faint jaw lines survive
#: the smoothing) and longer minimum strokes (no specks). Chosen by eye on faces 0-199.
PHOTO_SKETCH = dict(presmooth=5, threshold=0.03, min_component=30)


#: What replaces everything behind the person. A sketch says nothing about the wall behind
#: a face, so a generator trained on StyleGAN's busy backgrounds can only paint their
#: average; on white it can draw the outline of the hair and shoulders the sketch shows,
#: and the sketch of a photo gets that outline instead of background clutter.
BACKGROUND = "white"


class BackgroundRemover:
    """The person (face, hair, neck, clothes) kept, the rest painted white.

    The mask is MediaPipe's selfie segmentation (the general 256 x 256 model, shipped inside
    the ``mediapipe`` wheel; deterministic on CPU), blended softly so hair edges stay soft."""

    def __init__(self):
        try:
            import mediapipe as mp
        except ImportError as e:
            raise StyleGANError("removing the photos' backgrounds needs mediapipe: make setup installs it "
                                "(pip install --no-deps mediapipe==0.10.14)") from e
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def mask(self, photo: np.ndarray) -> np.ndarray:
        """float32 (H, W) in [0, 1]: 1 on the person."""
        m = self._seg.process(np.ascontiguousarray(photo[..., :3])).segmentation_mask
        return np.clip(np.asarray(m, np.float32), 0.0, 1.0)

    def __call__(self, photo: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(photo on white, mask)``."""
        m = self.mask(photo)
        out = photo[..., :3] * m[..., None] + 255.0 * (1.0 - m[..., None])
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), m


def outline(mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W) sketch (black on white) of the person's outline: the edge of the mask.

    Where hair meets a white background the photo's own lines are faint or missing, yet a
    person drawing a face draws that outline first; so the training sketches get it
    explicitly. Specks of the mask (a few per cent of the image) are left out."""
    from scipy import ndimage

    from .sketch import remove_small_components

    m = remove_small_components(np.asarray(mask) > 0.5, int(0.02 * mask.size))
    edge = m & ~ndimage.binary_erosion(m, np.ones((3, 3), bool), border_value=1)
    edge[:, :2] = edge[:, -2:] = edge[:2, :] = edge[-2:, :] = False   # none along the image border
    return np.where(edge, 0, 255).astype(np.uint8)


def photo_sketch(photo: np.ndarray) -> np.ndarray:
    """The photo model's sketch of a photo: :data:`PHOTO_SKETCH`, strokes scaled to its size."""
    from .sketch import photo_to_sketch

    settings = dict(PHOTO_SKETCH)
    settings["min_component"] = max(2, round(settings["min_component"] * min(photo.shape[:2]) / 256))
    return photo_to_sketch(photo, **settings)

#: Sex by eye of faces 0-99 (z from default_rng(i)): m, f, or ? where unsure (small
#: children, faces hidden by hats or hands); the ? faces are not used. The sex direction is
#: the difference of the two groups' mean styles; faces are split at the groups' midpoint.
#: Checked by eye on faces 100-199: 72 of 78 faces labelled with confidence agree (92.3%).
SEX_LABELS = ("f?mmfmf?mm" "mm?mfmmfmm" "mfmmmfffmm" "ffm?mfmff?" "fffmffm?fm"
              "mff?mffff?" "mmf?fffmff" "mmffmfm???" "?mf?m?fm?m" "fmmmf?f?f?")
#: Faces 100-199 labelled by eye the same way: the check of the sex direction.
SEX_LABELS_CHECK = ("fmf?f??ffm" "fffmmf?ff?" "mmfm??m?ff" "f?mffmmmff" "fffmmmfm?m"
                    "?fffm?mff?" "?ffffffmff" "f??f?m?mmm" "mmfm?f??ff" "mffmff?mmf")
#: Faces whose mean style is the truncation centre (indices 10**9 ...: never a data face).
MEAN_STYLE_FACES = 4096


class StyleGANError(DataError):
    """openvino or the random-face wheel is missing, or its IR files do not load."""


def ir_files() -> Dict[str, Path]:
    """The IR files of the installed random-face wheel: {"mapping": xml, "synthesis": xml}.

    Found without importing the package (its ``__init__`` imports its old wrapper)."""
    import importlib.util

    spec = importlib.util.find_spec("random_face")
    if spec is None or not spec.submodule_search_locations:
        raise StyleGANError(f"the random-face wheel is not installed: pip install --no-deps {RANDOM_FACE} "
                            "(make setup does this)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = {"mapping": data / "MappingNetwork.xml", "synthesis": data / "SynthesisNetwork.xml"}
    for f in files.values():
        if not f.exists() or not f.with_suffix(".bin").exists():
            raise StyleGANError(f"{f} (or its .bin) is missing: reinstall with "
                                f"pip install --force-reinstall --no-deps {RANDOM_FACE}")
    return files


def latent(index: int) -> np.ndarray:
    """float32 (1, 512): face ``index``'s z."""
    return np.random.default_rng(index).standard_normal((1, 512)).astype(np.float32)


class FaceGenerator:
    """MobileStyleGAN on OpenVINO's CPU plugin: ``style(i)`` and ``photo(w)``.

    ``threads``: OpenVINO inference threads (1 per worker process is fastest when
    several processes share the cores).
    """

    def __init__(self, threads: Optional[int] = 1):
        try:
            import openvino as ov
        except ImportError as e:
            raise StyleGANError("openvino is not installed: pip install -e '.[photo]' (make setup does this)") from e
        files = ir_files()
        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
        try:
            self._mapping = core.compile_model(core.read_model(str(files["mapping"])), "CPU", cfg)
            self._synthesis = core.compile_model(core.read_model(str(files["synthesis"])), "CPU", cfg)
        except Exception as e:  # OpenVINO raises its own RuntimeError for a bad IR
            raise StyleGANError(f"OpenVINO could not load the MobileStyleGAN IR files ({e}); "
                                f"reinstall them: pip install --force-reinstall --no-deps {RANDOM_FACE}") from e
        self._mean: Optional[np.ndarray] = None
        self._sex: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def mapping(self, z: np.ndarray) -> np.ndarray:
        """z (1, 512) -> style w (1, 512), untruncated."""
        return np.asarray(self._mapping({"var": np.asarray(z, np.float32)})[self._mapping.outputs[0]])

    def mean_style(self) -> np.ndarray:
        """(512,): the mean style of :data:`MEAN_STYLE_FACES` faces (computed once)."""
        if self._mean is None:
            ws = [self.mapping(latent(10**9 + i))[0] for i in range(MEAN_STYLE_FACES)]
            self._mean = np.mean(ws, axis=0)
        return self._mean

    def style(self, index: int, truncation: float = TRUNCATION) -> np.ndarray:
        """Face ``index``'s style (1, 512), truncated toward the mean style."""
        w = self.mapping(latent(index))
        if truncation != 1.0:
            m = self.mean_style()
            w = m + truncation * (w - m)
        return w.astype(np.float32)

    def photo(self, w: np.ndarray) -> np.ndarray:
        """uint8 (1024, 1024, 3) RGB from a style."""
        img = np.asarray(self._synthesis({"style": w})[self._synthesis.outputs[0]])[0]
        # rounded, not truncated like the kit's own outputs (dfd_kit.synthesis.to_uint8): these
        # are the data sets' photos, and the faces already made were rounded
        return np.clip((img.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)

    def sex_direction(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(direction, midpoint)`` (512,) each, from :data:`SEX_LABELS` (computed once)."""
        if self._sex is None:
            ws = np.stack([self.mapping(latent(i))[0] for i in range(len(SEX_LABELS))])
            lab = np.array(list(SEX_LABELS))
            male, female = ws[lab == "m"].mean(0), ws[lab == "f"].mean(0)
            self._sex = (male - female, (male + female) / 2)
        return self._sex

    def sex_score(self, w: np.ndarray) -> float:
        """> 0: male, < 0: female (see :data:`SEX_LABELS`)."""
        d, mid = self.sex_direction()
        return float((np.asarray(w).reshape(-1) - mid) @ d)


def align(photo: np.ndarray, size: int = 256) -> np.ndarray:
    """uint8 (size, size, 3): the FFHQ-aligned photo cut to :data:`FFHQ_CROP` and resized."""
    h = photo.shape[0]
    x, y, s = (v * h / 1024 for v in FFHQ_CROP)
    img = Image.fromarray(photo).resize((size, size), Image.LANCZOS, box=(x, y, x + s, y + s))
    return np.asarray(img)


@dataclass(frozen=True)
class Face:
    """One generated training pair: ``photo`` (S, S, 3) and ``sketch`` (S, S) uint8."""
    index: int
    photo: np.ndarray
    sketch: np.ndarray
    sex: str
    sex_score: float


def make_face(gen: FaceGenerator, index: int, layout: Layout = PHOTO_LAYOUT,
              truncation: float = TRUNCATION, background: Optional[BackgroundRemover] = None) -> Face:
    """Generate face ``index``: photo in the layout's framing on a white background
    (``background``: a :class:`BackgroundRemover` to reuse), its sketch and its sex."""
    w = gen.style(index, truncation)
    photo, mask = (background or BackgroundRemover())(align(gen.photo(w), layout.size))
    score = gen.sex_score(w)
    sketch = np.minimum(photo_sketch(photo), outline(mask))
    return Face(index, photo, sketch, "male" if score > 0 else "female", score)


# ----------------------------------------------------------------------------- data set builder

@dataclass(frozen=True)
class BuildSettings:
    """What a StyleGAN data set was built with (``stylegan.json`` in its folder)."""
    first: int
    n: int
    size: int
    truncation: float
    crop: Tuple[int, int, int] = FFHQ_CROP
    sketch: Tuple[Tuple[str, object], ...] = tuple(sorted(PHOTO_SKETCH.items()))
    source: str = RANDOM_FACE
    background: str = BACKGROUND


_WORKER: Dict[str, object] = {}


def _init_worker():
    _WORKER["gen"] = FaceGenerator(threads=1)
    _WORKER["background"] = BackgroundRemover()


def _save_png(img: np.ndarray, path: Path) -> None:
    """Write through a temporary name, so an interrupted build never leaves half a file."""
    from ..loading import atomic_write

    atomic_write(path, lambda f: Image.fromarray(img).save(f, format="PNG", compress_level=1))


def _build_one(args) -> dict:
    index, out_dir, size, truncation = args
    from dataclasses import replace

    face = make_face(_WORKER["gen"], index, replace(PHOTO_LAYOUT, size=size), truncation, _WORKER["background"])
    sid = f"{index:07d}"
    _save_png(face.photo, Path(out_dir) / "photo" / f"{sid}.png")
    _save_png(face.sketch, Path(out_dir) / "sketch" / f"{sid}.png")
    return {"id": sid, "index": index, "sex": face.sex, "sex_score": round(face.sex_score, 4)}


def _done(out: Path) -> Dict[int, dict]:
    """Faces already built: the log's lines whose two images exist."""
    done = {}
    log = out / "faces.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:   # a line cut short by an interruption
                continue
            if (out / "photo" / f"{r['id']}.png").exists() and (out / "sketch" / f"{r['id']}.png").exists():
                done[int(r["index"])] = r
    return done


def build_stylegan_dataset(out_dir, n: int, first: int = 0, size: int = 256, truncation: float = TRUNCATION,
                           workers: Optional[int] = None, progress: bool = True) -> Path:
    """Generate faces ``first`` .. ``first + n - 1`` as a (sketch, photo, sex) data set.

    Writes ``photo/``, ``sketch/``, ``samples.csv`` (written last: its presence means
    complete), ``faces.jsonl`` (per face: index, sex and its score) and ``stylegan.json``
    (the settings). Resumable: run it again after an interruption and only the missing
    faces are made; settings that differ from the folder's raise :class:`DataError`.
    ``workers`` processes (default: all cores), each with one OpenVINO thread.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    # Faces are independent, so a folder may grow or shrink (n); what makes each face must
    # match what is already there.
    record = json.loads(json.dumps(asdict(BuildSettings(first, n, size, truncation))))
    meta = out / "stylegan.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        same = {k: v for k, v in old.items() if k != "n"} == {k: v for k, v in record.items() if k != "n"}
        if not same:
            raise DataError(f"{out} was built with other settings ({old}); use another folder, or delete it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "photo").mkdir(parents=True, exist_ok=True)
    (out / "sketch").mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(record, indent=2))
    done = _done(out)
    todo = [i for i in range(first, first + n) if i not in done]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=n, initial=n - len(todo), desc="StyleGAN faces", unit="face", disable=not progress)
    jobs = ((i, str(out), size, truncation) for i in todo)
    try:
        with open(out / "faces.jsonl", "a") as log:
            if not todo:
                results, pool = [], None
            elif workers == 1:
                _init_worker()
                results: Iterable[dict] = map(_build_one, jobs)
                pool = None
            else:
                import multiprocessing as mp

                pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
                results = pool.imap_unordered(_build_one, jobs, chunksize=4)
            try:
                for r in results:
                    log.write(json.dumps(r, sort_keys=True) + "\n")
                    log.flush()
                    done[r["index"]] = r
                    bar.update()
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
    finally:
        bar.close()
    # samples.csv is written last and whole (temporary folder, then a rename): its
    # presence means the set is complete.
    import tempfile

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        write_samples_csv(tmp, [(done[i]["id"], done[i]["sex"]) for i in range(first, first + n)])
        os.replace(Path(tmp) / "samples.csv", out / "samples.csv")
    return out


# ----------------------------------------------------------------------------- layout check

#: MediaPipe FaceMesh landmark indices of each part (image-left eye is the person's right).
LANDMARKS = {
    "left_eye": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    "right_eye": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    "nose": (1, 2, 98, 327),
    "mouth": (61, 291, 0, 17, 37, 267, 84, 314),
}


def face_landmarks(photos: Iterable[np.ndarray]) -> List[Optional[np.ndarray]]:
    """FaceMesh landmarks in pixels, (468, 2) per photo, None where no face is found.

    MediaPipe (0.10.14, whose wheel carries the FaceMesh model) is a development
    dependency: ``pip install -e '.[dev]'``."""
    try:
        import mediapipe as mp
    except ImportError as e:
        raise StyleGANError("the layout check needs mediapipe: pip install -e '.[dev]'") from e
    out = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        for p in photos:
            r = fm.process(np.ascontiguousarray(p[..., :3]))
            if not r.multi_face_landmarks:
                out.append(None)
                continue
            h, w = p.shape[:2]
            out.append(np.array([[q.x * w, q.y * h] for q in r.multi_face_landmarks[0].landmark]))
    return out


def check_layout(photos: Iterable[np.ndarray], layout: Layout = PHOTO_LAYOUT) -> Dict[str, float]:
    """Share of photos whose parts lie wholly inside their boxes, by FaceMesh landmarks.

    Returns {part: share, ..., "all": share with all four inside, "n": photos,
    "no_face": photos where FaceMesh found no face (they count as misses)}."""
    marks = face_landmarks(photos)
    inside = {c: [] for c in LANDMARKS}
    for m in marks:
        for c, idx in LANDMARKS.items():
            if m is None:
                inside[c].append(False)
                continue
            b = layout.box(c)
            p = m[list(idx)]
            inside[c].append(bool(((p[:, 0] >= b.x) & (p[:, 0] < b.x + b.size)
                                   & (p[:, 1] >= b.y) & (p[:, 1] < b.y + b.size)).all()))
    res = {c: float(np.mean(v)) for c, v in inside.items()}
    res["all"] = float(np.mean(np.all([inside[c] for c in LANDMARKS], axis=0)))
    res["n"] = len(marks)
    res["no_face"] = sum(m is None for m in marks)
    return res


def check_sex_labels(gen: Optional[FaceGenerator] = None) -> Dict[str, float]:
    """Agreement of the sex direction with :data:`SEX_LABELS_CHECK` (untruncated faces,
    as they were labelled): {"agree": share, "n": confident labels}."""
    gen = gen or FaceGenerator(threads=None)
    first = len(SEX_LABELS)
    hits = []
    for k, lab in enumerate(SEX_LABELS_CHECK):
        if lab == "?":
            continue
        score = gen.sex_score(gen.mapping(latent(first + k)))
        hits.append((score > 0) == (lab == "m"))
    return {"agree": float(np.mean(hits)), "n": len(hits)}


__all__ = ["BackgroundRemover", "BACKGROUND", "outline", "FaceGenerator", "Face", "make_face", "align", "build_stylegan_dataset", "check_layout",
           "check_sex_labels", "face_landmarks", "ir_files", "latent", "StyleGANError", "FFHQ_CROP",
           "TRUNCATION", "PHOTO_SKETCH", "SEX_LABELS", "HELDOUT_FIRST", "VALIDATION_FIRST", "RANDOM_FACE"]
