"""The photo model's side of the kit: MobileStyleGAN faces from the random-face wheel's IR
files, their layout, the resumable data set builder, the rough-sketch degradation, the
quality measures, and the bundled photo model as the default."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import dfd_kit
from dfd_kit.config import COMPONENTS, PARTS, PHOTO, PHOTO_LAYOUT
from dfd_kit.data import SEXES, load_samples
from dfd_kit.errors import DataError

openvino = pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[photo]')")

from dfd_kit.data import stylegan as sg  # noqa: E402
from dfd_kit.data.sketch import roughen_sketch  # noqa: E402
from dfd_kit.training.quality import spectral_distance, stroke_distance  # noqa: E402

SMALL = replace(PHOTO_LAYOUT, size=128)   # faces are made at 1024; the photo and sketch at 128


@pytest.fixture(scope="module")
def generator():
    return sg.FaceGenerator(threads=None)


@pytest.fixture(scope="module")
def heldout_faces(generator):
    """The first four held-out faces at the photo layout's size."""
    return [sg.make_face(generator, sg.HELDOUT_FIRST + i) for i in range(4)]


def test_the_ir_files_come_from_the_installed_wheel_and_make_a_face(generator):
    files = sg.ir_files()
    assert all(f.exists() and "random_face" in str(f) for f in files.values())
    face = sg.make_face(generator, 3, SMALL)
    assert face.photo.shape == (128, 128, 3) and face.photo.dtype == np.uint8
    assert face.sketch.shape == (128, 128) and face.sketch.dtype == np.uint8
    assert face.photo.std() > 20                     # a picture, not a flat colour
    assert (face.sketch < 128).mean() > 0.01         # the sketch has lines
    assert face.sex in SEXES and (face.sex == "male") == (face.sex_score > 0)


def test_the_background_is_painted_white_and_the_outline_drawn_in(generator, heldout_faces):
    pytest.importorskip("mediapipe", reason="the background mask is MediaPipe's selfie segmentation")
    photo = sg.align(generator.photo(generator.style(sg.HELDOUT_FIRST)), 256)
    white, mask = sg.BackgroundRemover()(photo)
    assert mask.shape == (256, 256) and 0.0 <= mask.min() and mask.max() <= 1.0
    assert 0.3 < mask.mean() < 0.95                             # a person, and some background
    assert (white[mask < 0.01] >= 252).all()                      # background: white
    person = mask > 0.99
    assert np.abs(white[person].astype(int) - photo[person]).max() <= 3   # the person: untouched
    assert np.array_equal(heldout_faces[0].photo, white)          # what make_face keeps
    line = sg.outline(mask)
    assert (line < 128).sum() > 200                               # the outline is a long line ...
    assert (heldout_faces[0].sketch <= line).all()                # ... and in the training sketch


def test_the_outline_follows_the_mask_and_skips_the_border_and_specks():
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 40) ** 2 + (xx - 32) ** 2 < 20 ** 2).astype(np.float32)   # cut by the bottom edge
    speck = np.zeros_like(disc)
    speck[3:5, 3:5] = 1.0
    ink = sg.outline(np.maximum(disc, speck)) < 128
    r = np.hypot(yy - 40, xx - 32)
    assert ink.any() and (np.abs(r[ink] - 19.5) < 1.5).all()      # on the disc's edge
    assert not ink[-2:].any() and not ink[:8, :8].any()            # no border line, no speck


def test_the_same_index_gives_the_same_face(generator):
    a, b = sg.make_face(generator, 11, SMALL), sg.make_face(generator, 11, SMALL)
    assert np.array_equal(a.photo, b.photo) and np.array_equal(a.sketch, b.sketch)
    assert not np.array_equal(a.photo, sg.make_face(generator, 12, SMALL).photo)


def test_truncation_pulls_styles_toward_the_mean(generator):
    m = generator.mean_style()
    far = np.linalg.norm(generator.style(5, 1.0) - m)
    near = np.linalg.norm(generator.style(5, 0.5) - m)
    assert near == pytest.approx(0.5 * far, rel=1e-4)


def test_eyes_nose_and_mouth_fall_inside_the_photo_layouts_boxes(heldout_faces):
    pytest.importorskip("mediapipe", reason="the layout check uses MediaPipe FaceMesh (make setup installs it)")
    res = sg.check_layout([f.photo for f in heldout_faces])
    assert res["n"] == 4 and res["no_face"] == 0
    assert res["all"] == 1.0, res


def test_the_sex_direction_agrees_with_labels_made_by_eye():
    res = sg.check_sex_labels()
    assert res["n"] == sum(c != "?" for c in sg.SEX_LABELS_CHECK)
    assert res["agree"] >= 0.9


def test_the_builder_resumes_and_only_makes_missing_faces(tmp_path):
    out = tmp_path / "faces"
    sg.build_stylegan_dataset(out, 2, first=40, size=64, workers=1, progress=False)
    samples = load_samples(out)
    assert [s.sketch_path.stem for s in samples] == ["0000040", "0000041"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "photo").iterdir()}
    # An interruption: the log's last line is cut short and one face's photo is missing.
    log = (out / "faces.jsonl").read_text().splitlines()
    (out / "faces.jsonl").write_text(log[0] + "\n" + log[1][:10])
    (out / "photo" / "0000041.png").unlink()
    (out / "samples.csv").unlink()
    sg.build_stylegan_dataset(out, 3, first=40, size=64, workers=1, progress=False)
    assert len(load_samples(out)) == 3
    after = {p.name: p.stat().st_mtime_ns for p in (out / "photo").iterdir()}
    assert after["0000040.png"] == before["0000040.png"]          # kept, not made again
    assert set(after) == {"0000040.png", "0000041.png", "0000042.png"}
    assert not list(out.rglob(".*.tmp"))                           # no half-written files
    assert json.loads((out / "stylegan.json").read_text())["truncation"] == sg.TRUNCATION


def test_the_builder_refuses_to_mix_settings(tmp_path):
    sg.build_stylegan_dataset(tmp_path, 1, first=7, size=64, workers=1, progress=False)
    with pytest.raises(DataError, match="other settings"):
        sg.build_stylegan_dataset(tmp_path, 1, first=7, size=64, truncation=0.5, workers=1, progress=False)


def test_rough_sketches_change_the_parts_and_repeat_with_the_same_seed(heldout_faces):
    sk = heldout_faces[0].sketch
    a = roughen_sketch(sk, np.random.default_rng(3), PHOTO_LAYOUT)
    b = roughen_sketch(sk, np.random.default_rng(3), PHOTO_LAYOUT)
    assert np.array_equal(a, b) and a.shape == sk.shape and a.dtype == np.uint8
    # Over many draws every part is sometimes changed beyond augment_sketch's strokes.
    from dfd_kit.data.sketch import augment_sketch

    changed = {c: 0 for c in PARTS}
    for seed in range(12):
        mild = augment_sketch(sk, np.random.default_rng(seed))
        rough = roughen_sketch(sk, np.random.default_rng(seed), PHOTO_LAYOUT)
        for c in PARTS:
            box = PHOTO_LAYOUT.box(c)
            win = (slice(box.y, box.y + box.size), slice(box.x, box.x + box.size))
            changed[c] += int(np.abs(mild[win].astype(int) - rough[win]).mean() > 0.5)
    assert all(n >= 2 for n in changed.values()), changed


def test_stroke_distance_is_zero_on_the_face_itself_and_high_on_a_blank_face(heldout_faces):
    face = heldout_faces[1]
    # under a pixel: the outline drawn in from the mask sits on its soft edge, not always on
    # the photo's own edge pixel
    assert stroke_distance(face.sketch, face.photo) < 1.0
    blank = np.full_like(face.photo, 128)
    assert stroke_distance(face.sketch, blank) == pytest.approx(8.0)


def test_spectral_distance_is_zero_for_the_photos_and_grows_with_blur(heldout_faces):
    from PIL import Image, ImageFilter

    photos = [f.photo for f in heldout_faces]
    blurred = [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(2))) for p in photos]
    assert spectral_distance(photos, photos) == 0.0
    assert spectral_distance(blurred, photos) > 3.0


def test_load_names_the_bundled_models_and_defaults_to_the_photo_model():
    model = dfd_kit.load(shadows=False)
    assert Path(model.source).resolve() == dfd_kit.PHOTO_PARAMS.resolve()
    assert model.layout == PHOTO_LAYOUT
    # the shipped config.json is the recipe's: the photo model's partial default weight included,
    # and the query encoders its last step trained (the training config has none)
    assert model.config == replace(PHOTO, query_encoders=True) and 0 < PHOTO.blend_weight < 1
    assert set(model.query_encoders) == set(COMPONENTS)
    for name in ("cartoon", "demo"):
        cartoon = dfd_kit.load(name, shadows=False)
        assert Path(cartoon.source).resolve() == dfd_kit.DEMO_PARAMS.resolve()
        assert cartoon.config.blend_weight == 1.0


def test_the_photo_model_fits_its_30_mb_and_draws_a_face_from_a_hand_drawn_sketch():
    root = dfd_kit.PHOTO_PARAMS
    files = list(root.glob("*/*.pkl")) + list(root.glob("*/*.bin"))
    assert len(files) == 31 and sum(f.stat().st_size for f in files) <= 30_000_000
    sketch = dfd_kit.REPO_ROOT / "examples" / "hand_drawn" / "hand1_male.png"
    img = dfd_kit.load("photo", shadows=False).generate(str(sketch), sex="male").image
    assert img.shape == (256, 256, 3) and img.std() > 20
