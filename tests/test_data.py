"""The training-data side of the kit: facesjs faces, photo -> sketch, augmentation, readers."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from dfd_kit.config import DEMO_LAYOUT, OFFICIAL_LAYOUT, PARTS, PHOTO_LAYOUT, Box, Layout
from dfd_kit.data import Sample, load_pair, load_samples
from dfd_kit.errors import DataError, DataNotFoundError, DFDError
from dfd_kit.data import facesjs as fj
from dfd_kit.data.sketch import augment_sketch, build_photo_dataset, photo_to_sketch, read_sex_table

N_FACES = 6
SEED = 7


def _require_facesjs():
    """The project's set-up runs `npm install`; without it these tests must fail loudly, not skip."""
    if not (fj.REPO_ROOT / "node_modules" / "facesjs" / "package.json").exists():
        pytest.fail(f"node_modules/facesjs is missing: run `npm install` in {fj.REPO_ROOT} "
                    "(package.json pins facesjs)", pytrace=False)


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    _require_facesjs()
    out = tmp_path_factory.mktemp("facesjs")
    fj.build_facesjs_dataset(out, N_FACES, seed=SEED, layout=DEMO_LAYOUT, progress=False)
    return out


@pytest.fixture(scope="module")
def face_records():
    _require_facesjs()
    return list(fj.generate_faces(N_FACES, seed=SEED))


def _grow(mask, r):
    """Binary dilation by a (2r+1)-square."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * r + 1))) > 0


def _shrink(mask, r):
    """Binary erosion by a (2r+1)-square."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * r + 1))) > 0


def _meta(out):
    return [json.loads(line) for line in (Path(out) / "facesjs.jsonl").read_text().splitlines()]


def _component_masks(record, transform, layout):
    """Each component's ink (the eye components include their brows) at the stored alignment."""
    m = fj.feature_masks(fj.feature_map_svg(record["svg"]), layout.size, tuple(transform))
    return {"left_eye": m["left_eye"] | m["left_eyebrow"], "right_eye": m["right_eye"] | m["right_eyebrow"],
            "nose": m["nose"], "mouth": m["mouth"]}


# ---------------------------------------------------------------------------
# facesjs builder
# ---------------------------------------------------------------------------

def test_package_json_pins_an_exact_facesjs_version_that_is_installed():
    _require_facesjs()
    pinned = json.loads((fj.REPO_ROOT / "package.json").read_text())["dependencies"]["facesjs"]
    assert pinned[0].isdigit(), f"facesjs should be pinned exactly, got {pinned!r}"
    assert fj.facesjs_version() == pinned


def test_facesjs_builder_writes_rgb_photos_and_grayscale_sketches_at_layout_size(faces_dir):
    samples = load_samples(faces_dir)
    assert len(samples) == N_FACES
    for s in samples:
        with Image.open(s.photo_path) as ph, Image.open(s.sketch_path) as sk:
            assert (ph.mode, ph.size) == ("RGB", (256, 256))
            assert (sk.mode, sk.size) == ("L", (256, 256))


def test_facesjs_builder_makes_half_male_half_female(faces_dir):
    with open(faces_dir / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "sex"]
    sexes = [r["sex"] for r in rows]
    assert sexes.count("male") == sexes.count("female") == N_FACES // 2


def test_facesjs_builder_keeps_each_faces_parameters_and_alignment(faces_dir):
    meta = _meta(faces_dir)
    assert [m["id"] for m in meta] == [f"{i:05d}" for i in range(N_FACES)]
    for m in meta:
        assert {"eye", "nose", "mouth", "hair", "head"} <= set(m["face"])
        s, tx, ty = m["transform"]
        assert 0.3 < s < 1.5


def test_facesjs_sketches_are_dark_lines_on_white(faces_dir):
    for s in load_samples(faces_dir):
        sketch, photo = load_pair(s, DEMO_LAYOUT)
        white = (sketch > 230).mean()
        dark = (sketch < 100).mean()
        assert white > 0.8, "a line drawing is mostly paper"
        assert 0.01 < dark < 0.15, "and has lines"
        assert sketch[0, 0] == 255 or sketch[:, 0].mean() > 200
        # the photo is a colour image, not a line drawing
        assert photo.std(axis=(0, 1)).min() > 20


def test_sketch_lines_follow_the_photos_edges(faces_dir):
    # The sketch is a drawing of the same face: its lines lie on edges of the photo.
    for s in load_samples(faces_dir):
        sketch, photo = load_pair(s, DEMO_LAYOUT)
        g = photo.astype(float).mean(axis=2)
        edge = np.zeros(g.shape, bool)
        edge[:, 1:] |= np.abs(np.diff(g, axis=1)) > 25
        edge[1:, :] |= np.abs(np.diff(g, axis=0)) > 25
        near_edge = _grow(edge, 3)
        ink = sketch < 128
        assert near_edge[ink].mean() > 0.85


def test_alignment_puts_every_component_ink_inside_its_box(faces_dir, face_records):
    # Render each feature alone at the stored transform: most of its ink lies in
    # its box and its centre of mass is near the box centre, for every test face.
    for rec, meta in zip(face_records, _meta(faces_dir)):
        for name, mask in _component_masks(rec, meta["transform"], DEMO_LAYOUT).items():
            b = DEMO_LAYOUT.box(name)
            assert mask.sum() > 20, f"face {meta['id']}: {name} has no ink"
            inside = mask[b.y:b.y + b.size, b.x:b.x + b.size].sum() / mask.sum()
            assert inside > 0.85, f"face {meta['id']}: only {inside:.0%} of the {name} ink is in its box"
            ys, xs = np.nonzero(mask)
            cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
            off = max(abs(cx - (b.x + b.size / 2)), abs(cy - (b.y + b.size / 2))) / b.size
            assert off < 0.3, f"face {meta['id']}: {name} centre is {off:.2f} box sizes from the box centre"


def test_written_sketch_has_the_component_lines_where_the_alignment_says(faces_dir, face_records):
    # Ties the stored transform to the written files: the outline of each feature,
    # rendered alone at that transform, is covered by the sketch's lines -- far
    # better than when the outline is moved 5 px in any direction.
    cover = {name: [] for name in PARTS}
    shifted = {name: [] for name in PARTS}
    for rec, meta, s in zip(face_records, _meta(faces_dir), load_samples(faces_dir)):
        sketch, _ = load_pair(s, DEMO_LAYOUT)
        ink = _grow(sketch < 128, 1)
        for name, mask in _component_masks(rec, meta["transform"], DEMO_LAYOUT).items():
            outline = mask & ~_shrink(mask, 1)
            cover[name].append(ink[outline].mean())
            shifted[name].append(max(ink[np.roll(outline, d, axis=ax)].mean() for d in (-5, 5) for ax in (0, 1)))
    for name in PARTS:
        assert np.mean(cover[name]) > 0.75, f"{name}: sketch lines miss the feature outline"
        assert np.mean(cover[name]) > np.mean(shifted[name]) + 0.2, f"{name}: alignment is off by pixels"


def test_alignment_also_fits_the_official_512_layout(tmp_path, face_records):
    rec = face_records[0]
    face = fj.render_face(rec, OFFICIAL_LAYOUT)
    assert face.photo.shape == (512, 512, 3) and face.sketch.shape == (512, 512)
    for name, mask in _component_masks(rec, face.transform, OFFICIAL_LAYOUT).items():
        b = OFFICIAL_LAYOUT.box(name)
        assert mask[b.y:b.y + b.size, b.x:b.x + b.size].sum() / mask.sum() > 0.85


def test_only_a_layout_whose_boxes_mirror_each_other_is_mirror_symmetric():
    # the photo layout's eyes mirror each other about x = 128 and its nose and mouth are centred
    assert PHOTO_LAYOUT.mirror_symmetric
    # the official boxes (and the demo's, halved from them) are not placed symmetrically about the middle
    assert not OFFICIAL_LAYOUT.mirror_symmetric and not DEMO_LAYOUT.mirror_symmetric
    boxes = {"left_eye": Box(10, 20, 32), "right_eye": Box(58, 20, 32), "nose": Box(34, 30, 32),
             "mouth": Box(34, 60, 32)}
    assert Layout(100, boxes, 20).mirror_symmetric
    for part, moved in (("right_eye", Box(58, 21, 32)), ("nose", Box(35, 30, 32)), ("mouth", Box(33, 60, 32))):
        assert not Layout(100, {**boxes, part: moved}, 20).mirror_symmetric, part


def test_fit_similarity_recovers_a_known_scale_and_shift():
    src = {"a": (0.0, 0.0), "b": (10.0, 0.0), "c": (5.0, 8.0)}
    dst = {k: (2.5 * x + 3.0, 2.5 * y - 7.0) for k, (x, y) in src.items()}
    s, tx, ty = fj.fit_similarity(src, dst)
    assert (s, tx, ty) == pytest.approx((2.5, 3.0, -7.0))


def test_same_seed_gives_byte_identical_files_and_prefixes_agree(faces_dir, tmp_path):
    # Face i depends on (seed, i) only: a shorter run repeats the first faces exactly.
    fj.build_facesjs_dataset(tmp_path, 3, seed=SEED, layout=DEMO_LAYOUT, progress=False)
    for sub in ("photo", "sketch"):
        for i in range(3):
            name = f"{i:05d}.png"
            assert (tmp_path / sub / name).read_bytes() == (faces_dir / sub / name).read_bytes()
    assert _meta(tmp_path) == _meta(faces_dir)[:3]


def test_another_seed_gives_other_faces(face_records):
    other = list(fj.generate_faces(2, seed=SEED + 1))
    assert [r["face"] for r in other] != [r["face"] for r in face_records[:2]]
    assert [r["sex"] for r in other] == ["male", "female"]


def test_one_palette_by_default_and_the_same_shapes_with_facesjs_colours(face_records):
    # A line sketch has no colour, so the default data set paints every face alike;
    # --colours keeps facesjs's palettes and must change nothing else.
    assert {r["face"]["body"]["color"] for r in face_records} == {"#bb876f"}
    assert {r["face"]["hair"]["color"] for r in face_records} == {"#272421"}
    coloured = list(fj.generate_faces(len(face_records), seed=SEED, colours=True))
    assert len({r["face"]["body"]["color"] for r in coloured}) > 1

    def shapes(face):
        return {k: ({kk: vv for kk, vv in v.items() if kk != "color"} if isinstance(v, dict) else v)
                for k, v in face.items()}
    assert [shapes(r["face"]) for r in coloured] == [shapes(r["face"]) for r in face_records]


def test_generated_svgs_tag_the_facial_features(face_records):
    for rec in face_records:
        names = [n for n, _ in fj._feature_groups(fj.parse_svg(rec["svg"]))]
        assert names.count("eye") == 2 and names.count("eyebrow") == 2
        assert "nose" in names and "mouth" in names and "head" in names


def test_cli_builds_a_dataset(tmp_path):
    _require_facesjs()
    assert fj.main(["--out", str(tmp_path / "cli"), "--n", "2", "--seed", "1", "--quiet"]) == 0
    samples = load_samples(tmp_path / "cli")
    assert [s.sex for s in samples] == ["male", "female"]


# ---------------------------------------------------------------------------
# Reading datasets
# ---------------------------------------------------------------------------

def test_load_pair_returns_uint8_arrays_resized_to_the_layout(faces_dir):
    s = load_samples(faces_dir)[0]
    assert isinstance(s, Sample) and s.sex in ("male", "female")
    sketch, photo = load_pair(s, DEMO_LAYOUT)
    assert sketch.dtype == photo.dtype == np.uint8
    assert sketch.shape == (256, 256) and photo.shape == (256, 256, 3)
    sketch, photo = load_pair(s, OFFICIAL_LAYOUT)
    assert sketch.shape == (512, 512) and photo.shape == (512, 512, 3)


def test_load_samples_names_missing_images(faces_dir, tmp_path):
    (tmp_path / "samples.csv").write_text("id,sex\n00000,male\n")
    # a dfd_kit error (the command lines print it as one line) that is still a FileNotFoundError
    with pytest.raises(DataNotFoundError, match="00000.png.*build the set again") as e:
        load_samples(tmp_path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, DFDError)


def test_load_samples_rejects_unknown_sex(tmp_path):
    (tmp_path / "samples.csv").write_text("id,sex\n00000,other\n")
    with pytest.raises(DataError, match="male") as e:
        load_samples(tmp_path)
    assert isinstance(e.value, ValueError)


# ---------------------------------------------------------------------------
# photo_to_sketch
# ---------------------------------------------------------------------------

def _synthetic_photo():
    """A smooth horizontal gradient with a dark ellipse and a bright rectangle on it."""
    size = 256
    x = np.linspace(70, 190, size)
    bg = np.tile(x, (size, 1))
    ellipse = Image.new("L", (size, size), 0)
    ImageDraw.Draw(ellipse).ellipse((40, 60, 150, 200), fill=255)
    rect = Image.new("L", (size, size), 0)
    ImageDraw.Draw(rect).rectangle((170, 30, 230, 110), fill=255)
    e, r = np.asarray(ellipse) > 0, np.asarray(rect) > 0
    img = np.where(e, 35.0, np.where(r, 235.0, bg))
    photo = np.stack([img, img * 0.9, img * 0.8], axis=-1).astype(np.uint8)
    edges = np.zeros((size, size), bool)
    for m in (e, r):
        edges[:, 1:] |= m[:, 1:] != m[:, :-1]
        edges[1:, :] |= m[1:, :] != m[:-1, :]
    return photo, edges




def test_photo_to_sketch_returns_white_paper_with_dark_lines():
    photo, _ = _synthetic_photo()
    sk = photo_to_sketch(photo)
    assert sk.dtype == np.uint8 and sk.shape == photo.shape[:2]
    assert set(np.unique(sk)) <= {0, 255}


def test_photo_to_sketch_draws_lines_on_the_edges_and_nothing_on_smooth_shading():
    photo, edges = _synthetic_photo()
    ink = photo_to_sketch(photo) < 128
    assert _grow(edges, 3)[ink].mean() > 0.97, "ink away from the shapes' edges"
    assert _grow(ink, 3)[edges].mean() > 0.9, "edges without a line"
    far = ~_grow(edges, 6)
    assert (~ink[far]).mean() > 0.995, "the smooth gradient and flat interiors stay white"


def test_photo_to_sketch_removes_isolated_specks():
    rng = np.random.default_rng(0)
    photo = np.full((256, 256), 180.0) + rng.normal(0, 1.0, (256, 256))
    for y, x in rng.integers(20, 236, size=(30, 2)):
        photo[y, x] = 60  # single dark specks
    ink = photo_to_sketch(np.clip(photo, 0, 255).astype(np.uint8)) < 128
    assert ink.sum() == 0


# ---------------------------------------------------------------------------
# augment_sketch
# ---------------------------------------------------------------------------

def _line_sketch():
    im = Image.new("L", (256, 256), 255)
    d = ImageDraw.Draw(im)
    d.ellipse((50, 30, 206, 230), outline=0, width=2)
    d.line((90, 100, 120, 100), fill=0, width=2)
    d.line((136, 100, 166, 100), fill=0, width=2)
    d.ellipse((98, 110, 112, 120), fill=0)
    d.arc((100, 150, 156, 190), 20, 160, fill=0, width=2)
    d.line((128, 110, 122, 140, 134, 140), fill=0, width=2)
    return np.asarray(im)


def test_augment_sketch_changes_the_strokes():
    sk = _line_sketch()
    out = augment_sketch(sk, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == sk.shape
    ink, new = sk < 128, out < 128
    changed = (ink ^ new).sum() / ink.sum()
    assert changed > 0.3, f"only {changed:.0%} of the stroke pixels moved"


def test_augment_sketch_keeps_ink_near_the_original_strokes():
    sk = _line_sketch()
    ink = sk < 128
    for seed in range(5):
        new = augment_sketch(sk, np.random.default_rng(seed)) < 128
        assert _grow(ink, 5)[new].mean() > 0.97
        assert 0.5 < new.sum() / ink.sum() < 2.5
        assert _grow(new, 5)[ink].mean() > 0.8, "most strokes survive"


def test_augment_sketch_is_deterministic_for_a_seed():
    sk = _line_sketch()
    a = augment_sketch(sk, np.random.default_rng(42))
    b = augment_sketch(sk, np.random.default_rng(42))
    c = augment_sketch(sk, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augment_sketch_with_zero_strength_is_the_identity():
    sk = _line_sketch()
    assert np.array_equal(augment_sketch(sk, np.random.default_rng(0), strength=0.0), sk)


# ---------------------------------------------------------------------------
# build_photo_dataset
# ---------------------------------------------------------------------------

def _save_photo(path, seed, size=(96, 80)):
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(120, 220, 3)))
    d = ImageDraw.Draw(im)
    d.ellipse((w * 0.2, h * 0.1, w * 0.8, h * 0.9), fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
    d.ellipse((w * 0.35, h * 0.35, w * 0.45, h * 0.42), fill=(20, 20, 20))
    d.ellipse((w * 0.55, h * 0.35, w * 0.65, h * 0.42), fill=(20, 20, 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _check_dataset(out, expected_sexes):
    samples = load_samples(out)
    assert [s.sex for s in samples] == expected_sexes
    for s in samples:
        sketch, photo = load_pair(s, DEMO_LAYOUT)
        with Image.open(s.photo_path) as ph, Image.open(s.sketch_path) as sk:
            assert (ph.mode, ph.size, sk.mode, sk.size) == ("RGB", (256, 256), "L", (256, 256))
        assert (sketch < 128).any() and (sketch > 128).mean() > 0.8
    return samples


def test_build_photo_dataset_reads_sex_from_male_and_female_folders(tmp_path):
    src = tmp_path / "photos"
    _save_photo(src / "male" / "a.png", 1)
    _save_photo(src / "male" / "b.jpg", 2)
    _save_photo(src / "female" / "c.png", 3)
    out = build_photo_dataset(src, tmp_path / "out", DEMO_LAYOUT, progress=False)
    _check_dataset(out, ["male", "male", "female"])
    with open(out / "sources.csv", newline="") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["male/a.png", "male/b.jpg", "female/c.png"]


def test_build_photo_dataset_reads_sex_from_a_csv(tmp_path):
    src = tmp_path / "photos"
    for i in range(3):
        _save_photo(src / f"{i}.jpg", i)
    table = tmp_path / "sex.csv"
    table.write_text("filename,sex\n0.jpg,female\n1.jpg,male\n2.jpg,F\n")
    out = build_photo_dataset(src, tmp_path / "out", DEMO_LAYOUT, sex_csv=table, progress=False)
    _check_dataset(out, ["female", "male", "female"])


def test_build_photo_dataset_reads_celeba_male_column_and_skips_unlisted_photos(tmp_path):
    src = tmp_path / "photos"
    for i in range(4):
        _save_photo(src / f"{i}.png", i)
    table = tmp_path / "attr.csv"
    table.write_text("image_id,Smiling,Male\n0.jpg,1,1\n1.jpg,-1,-1\n2.jpg,1,1\n")
    with pytest.warns(UserWarning, match="1 photo"):
        out = build_photo_dataset(src, tmp_path / "out", DEMO_LAYOUT, sex_csv=table, progress=False)
    _check_dataset(out, ["male", "female", "male"])


def test_read_sex_table_understands_celebamask_hq_attribute_files(tmp_path):
    p = tmp_path / "CelebAMask-HQ-attribute-anno.txt"
    p.write_text("2\nAttractive Male Young\n0.jpg 1 -1 1\n1.jpg -1 1 1\n")
    assert read_sex_table(p) == {"0.jpg": "female", "1.jpg": "male"}


def test_build_photo_dataset_without_sex_information_explains_the_options(tmp_path):
    src = tmp_path / "photos"
    _save_photo(src / "0.png", 0)
    with pytest.raises(ValueError, match="sex_csv"):
        build_photo_dataset(src, tmp_path / "out", DEMO_LAYOUT, progress=False)
