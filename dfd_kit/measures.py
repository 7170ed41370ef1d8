"""How faithful to its sketch, and how real, a generated face is: the measures the model
cards (:mod:`dfd_kit.training.quality`) and notebook 07 share.

Faithfulness compares lines with lines: the sketch's ink against the *edges* of the face,
found by the same line extractor that made the photo model's training sketches
(:func:`~dfd_kit.data.stylegan.photo_sketch`), so a face that follows the drawing
exactly has its edges where the strokes are.

* :func:`stroke_distance` -- one-sided: how far the strokes lie from the face's edges
  (a stroke the face ignores costs; an edge the face invents does not);
* :func:`chamfer_distance` / :func:`line_distance` -- symmetric: both directions averaged,
  so invented edges cost as much as ignored strokes.

Realism has no ground truth for a freehand drawing, so there are two proxies:

* :func:`bank_distance` -- in latent space, where projection acts: how far a component's
  vector lies from the nearest latent of a real sample (a bank row), in units of the
  bank's own typical nearest-neighbour spacing (:func:`bank_spacing`);
* :func:`spectral_distance` / :func:`ring_spectrum_distance` -- in pixels: how far a
  face's spectrum (its balance of coarse and fine detail) lies from that of reference
  faces.

All image measures work at 256 x 256 (larger images are resized), so distances in
pixels compare across models.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

#: The size every image measure works at; distances are in pixels at this size.
MEASURE_SIZE = 256
#: Lines farther than this from the other image's lines count as this far (pixels at 256):
#: one stray scribble or a missing hair outline should not outweigh the rest of the face.
STROKE_DISTANCE_CAP = 8

#: A box in the measure's 256-pixel frame: (x, y, size).
Box = Tuple[int, int, int]


# ---------------------------------------------------------------------------------------
# lines and edges
# ---------------------------------------------------------------------------------------

def mean_absolute_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| over pixels and channels, in 0-255 levels."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def _resized(a: np.ndarray, size: int) -> np.ndarray:
    """uint8 array resized to size x size (unchanged when it has that size)."""
    from PIL import Image

    a = np.asarray(a)
    if a.shape[0] == size and a.shape[1] == size:
        return a
    return np.asarray(Image.fromarray(a).resize((size, size), Image.LANCZOS))


def sketch_lines(sketch: np.ndarray, size: int = MEASURE_SIZE) -> np.ndarray:
    """bool (size, size): the ink of a sketch (dark on white), resized to ``size``."""
    return np.asarray(_resized(np.asarray(sketch, np.uint8), size)) < 128


def face_edges(image: np.ndarray, size: int = MEASURE_SIZE) -> np.ndarray:
    """bool (size, size): the edges of a face, drawn by the photo model's sketch maker
    (:func:`~dfd_kit.data.stylegan.photo_sketch`): the lines a sketch of this face would have."""
    from .data.stylegan import photo_sketch

    return photo_sketch(_resized(np.asarray(image, np.uint8), size)) < 128


def distance_to(mask: np.ndarray, cap: int = STROKE_DISTANCE_CAP) -> np.ndarray:
    """float64, mask's shape: the chessboard distance of every pixel to the nearest True
    pixel of ``mask``, capped at ``cap`` (all ``cap`` when the mask is empty)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, float(cap))
    return np.minimum(ndimage.distance_transform_cdt(~mask, metric="chessboard"), cap).astype(np.float64)


def _in_box(mask: np.ndarray, box: Optional[Box]) -> np.ndarray:
    """``mask`` with everything outside ``box`` cleared (the whole mask when box is None)."""
    if box is None:
        return mask
    x, y, s = box
    out = np.zeros_like(mask)
    out[y:y + s, x:x + s] = mask[y:y + s, x:x + s]
    return out


def stroke_distance(sketch: np.ndarray, image: np.ndarray, cap: int = STROKE_DISTANCE_CAP) -> float:
    """How closely a generated face follows the sketch: the mean distance (pixels per 256
    of image size, capped at ``cap``) from each stroke pixel of the sketch to the nearest
    edge of the face (:func:`face_edges`). 0: every stroke lies on an edge of the face; a
    face that ignores a stroke (a wide mouth drawn, a small one generated) scores high.
    A one-sided chamfer distance; :func:`line_distance` is the symmetric one."""
    ink = sketch_lines(sketch)
    if not ink.any():
        return 0.0
    return float(distance_to(face_edges(image), cap)[ink].mean())


def chamfer_distance(a: np.ndarray, b: np.ndarray, cap: int = STROKE_DISTANCE_CAP,
                     box: Optional[Box] = None) -> float:
    """Symmetric chamfer distance between two line images (bool masks, True = line, same
    shape): the mean distance from the lines of ``a`` to the nearest line of ``b``, and
    from ``b`` to ``a``, averaged; each distance capped at ``cap`` pixels.

    0 when the lines coincide; ``cap`` when one image has lines and the other none (within
    ``box``); 0 when neither has any. ``box`` (x, y, size) counts only the lines inside it,
    measured to lines anywhere (a stroke just across the box edge still counts as near).
    Swapping ``a`` and ``b`` gives the same number."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"line images of different shapes: {a.shape} and {b.shape}")
    la, lb = _in_box(a, box), _in_box(b, box)
    if not la.any() and not lb.any():
        return 0.0

    def one_way(src, dst):
        return distance_to(dst, cap)[src].mean() if src.any() else float(cap)

    return float((one_way(la, b) + one_way(lb, a)) / 2)


def line_distance(sketch: np.ndarray, image: np.ndarray, cap: int = STROKE_DISTANCE_CAP,
                  box: Optional[Box] = None) -> float:
    """Faithfulness of a face to its sketch: :func:`chamfer_distance` between the sketch's
    ink and the face's edges, in pixels at 256 (lower = more faithful). A stroke the face
    ignores and an edge the face adds where nothing was drawn cost alike."""
    return chamfer_distance(sketch_lines(sketch), face_edges(image), cap, box)


# ---------------------------------------------------------------------------------------
# realism in latent space: distance to the bank
# ---------------------------------------------------------------------------------------

def _nearest_distances(queries: np.ndarray, bank: np.ndarray, skip: Optional[np.ndarray] = None,
                       chunk: int = 256) -> np.ndarray:
    """float64 (Q,): Euclidean distance of each query row to its nearest bank row (the row
    ``skip[i]`` excluded for query i), in chunks so a large bank needs little memory."""
    # The nearest row is found with float32 products (twice as fast as float64 on a large
    # bank); its distance is then computed exactly, so a row's distance to itself is 0.
    q = np.asarray(queries, np.float32)
    b = np.asarray(bank, np.float32)
    bb = (b * b).sum(1)
    out = np.empty(len(q))
    for start in range(0, len(q), chunk):
        part = q[start:start + chunk]
        d2 = bb[None, :] - 2.0 * part @ b.T
        if skip is not None:
            d2[np.arange(len(part)), skip[start:start + chunk]] = np.inf
        nearest = d2.argmin(1)
        diff = part.astype(np.float64) - b[nearest].astype(np.float64)
        out[start:start + chunk] = np.sqrt((diff * diff).sum(1))
    return out


def bank_spacing(bank: np.ndarray, sample: int = 512, seed: int = 0) -> float:
    """How far apart a bank's rows typically are: the median distance from a row to its
    nearest *other* row, over ``sample`` rows drawn at random (all of a smaller bank).
    The unit of :func:`bank_distance`, so that components whose latents spread differently
    compare. Repeated rows (a sketch encoded twice) count once: a copy is no neighbour."""
    bank = np.unique(np.asarray(bank), axis=0)
    if len(bank) < 2:
        raise ValueError("a bank needs at least two different rows to have a spacing")
    rows = np.random.default_rng(seed).permutation(len(bank))[:sample]
    return float(np.median(_nearest_distances(bank[rows], bank, skip=rows)))


def bank_distance(vector: np.ndarray, bank: np.ndarray, spacing: Optional[float] = None) -> float:
    """Realism of one component's vector in latent space: the distance from it to the
    nearest bank row (a real sample's latent), divided by the bank's typical row spacing
    (:func:`bank_spacing`; pass it when measuring many vectors). About 1 or below: as close
    to a real sample as real samples are to each other; much more: off the manifold."""
    spacing = bank_spacing(bank) if spacing is None else spacing
    return float(_nearest_distances(np.asarray(vector).reshape(1, -1), bank)[0] / spacing)


# ---------------------------------------------------------------------------------------
# realism in pixels: the spectrum
# ---------------------------------------------------------------------------------------

def log_spectrum(image: np.ndarray, bins: int = 32) -> np.ndarray:
    """float64 (bins,): the log power of a grey image's spectrum, averaged over rings of
    frequency (0 to the Nyquist frequency)."""
    g = np.asarray(image, np.float64)
    g = g @ np.array([0.299, 0.587, 0.114]) if g.ndim == 3 else g
    g = (g - g.mean()) * np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1]))
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    h, w = p.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h // 2) / h, (xx - w // 2) / w) * 2  # 1 at the Nyquist frequency
    ring = np.minimum((r * bins).astype(int), bins)
    sums = np.bincount(ring.ravel(), p.ravel(), bins + 1)[:bins]
    counts = np.bincount(ring.ravel(), minlength=bins + 1)[:bins]
    return np.log10(sums / np.maximum(counts, 1) + 1e-6)


def ring_spectrum_distance(spectrum: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference, in dB (10 log10), between two :func:`log_spectrum` curves."""
    return float(10 * np.abs(np.asarray(spectrum) - np.asarray(reference)).mean())


def spectral_distance(generated: List[np.ndarray], photos: List[np.ndarray]) -> float:
    """How photo-like a model's faces are: the mean absolute difference, in dB (10 log10),
    between the average ring spectrum of the generated faces and that of the true photos,
    over all frequencies. Blur (missing fine detail) and flat cartoon shading lower the
    high frequencies; checkerboard artefacts raise some. 0 for the photos themselves.
    Chosen because it needs no network trained elsewhere (FID needs Inception weights,
    which cannot be downloaded here) and reads as one number per model."""
    a = np.mean([log_spectrum(g) for g in generated], axis=0)
    b = np.mean([log_spectrum(p) for p in photos], axis=0)
    return ring_spectrum_distance(a, b)


def mean_spectrum(images: Sequence[np.ndarray], box: Optional[Box] = None) -> np.ndarray:
    """The average :func:`log_spectrum` of ``images`` (each resized to 256, cut to ``box``)."""
    return np.mean([log_spectrum(_crop(_resized(np.asarray(i, np.uint8), MEASURE_SIZE), box)) for i in images],
                   axis=0)


def _crop(image: np.ndarray, box: Optional[Box]) -> np.ndarray:
    if box is None:
        return image
    x, y, s = box
    return image[y:y + s, x:x + s]


__all__ = ["MEASURE_SIZE", "STROKE_DISTANCE_CAP", "bank_distance", "bank_spacing", "chamfer_distance",
           "distance_to", "face_edges", "line_distance", "log_spectrum", "mean_spectrum",
           "ring_spectrum_distance", "sketch_lines", "spectral_distance", "stroke_distance"]
