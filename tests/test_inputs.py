"""Sketch inputs and argument checks, on a small randomly initialised demo-size model.

Whatever form a drawing arrives in (file, PIL image, array of any dtype, channels, size or
polarity) it becomes the same normalised sketch; whatever is wrong with an input or an
argument is reported as a dfd_kit error whose message says what and how to fix it.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from dfd_kit import ConfigError, DFDError, SketchError
from dfd_kit.config import COMPONENTS, DEMO

from conftest import DEMO_BANK_ROWS, FIXTURE

SIZE = DEMO.layout.size


@pytest.fixture(scope="module")
def full_sketch() -> np.ndarray:
    """The 512 x 512 fixture drawing (ink in columns 79..437), uint8 gray."""
    return np.asarray(Image.open(FIXTURE / "inputs" / "sketch_0.png").convert("L"))


def raises(error, *fragments):
    """Context manager: the call raises ``error`` (a dfd_kit error, not Jittor's or numpy's)
    whose message contains every fragment."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(error)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert isinstance(self.info.value, DFDError)
            for f in fragments:
                assert f.lower() in msg.lower(), f"{f!r} not in message: {msg}"
            assert "jittor" not in msg.lower() and "Traceback" not in msg
            return handled
    return _Check()


# --------------------------------------------------------------------------- equivalent inputs

def test_path_pil_and_array_give_the_same_sketch(demo_model, demo_sketch, tmp_path):
    path = tmp_path / "s.png"
    Image.fromarray(demo_sketch).save(path)
    ref = demo_model.normalise(demo_sketch)
    assert ref.dtype == np.uint8 and ref.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(ref, demo_sketch)                       # already normalised
    np.testing.assert_array_equal(demo_model.normalise(path), ref)        # pathlib.Path
    np.testing.assert_array_equal(demo_model.normalise(str(path)), ref)   # str
    np.testing.assert_array_equal(demo_model.normalise(Image.open(path)), ref)
    np.testing.assert_array_equal(demo_model.normalise(path.read_bytes()), ref)


def test_rgb_with_equal_channels_is_the_gray_sketch(demo_model, demo_sketch):
    rgb = np.repeat(demo_sketch[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(demo_model.normalise(rgb), demo_sketch)
    np.testing.assert_array_equal(demo_model.normalise(Image.fromarray(rgb)), demo_sketch)
    np.testing.assert_array_equal(demo_model.normalise(demo_sketch[:, :, None]), demo_sketch)   # (H, W, 1)


def test_transparent_background_is_white_paper(demo_model, demo_sketch):
    # A canvas export: black ink whose opacity is the stroke darkness, on fully transparent black.
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 3] = 255 - demo_sketch
    out = demo_model.normalise(rgba)
    np.testing.assert_array_equal(out, demo_sketch)
    assert (out[demo_sketch == 255] == 255).all()
    # PIL's RGBA composite rounds in 8 bits: within one level
    out_pil = demo_model.normalise(Image.fromarray(rgba, "RGBA")).astype(int)
    assert np.abs(out_pil - demo_sketch).max() <= 1


def test_float_arrays_in_unit_range_are_scaled(demo_model, demo_sketch):
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(demo_model.normalise((demo_sketch / 255.0).astype(dtype)), demo_sketch)
    np.testing.assert_array_equal(demo_model.normalise(demo_sketch.astype(np.float32)), demo_sketch)   # [0, 255]


def test_jpeg_file_is_close_to_the_png(demo_model, demo_sketch, tmp_path):
    path = tmp_path / "s.jpg"
    Image.fromarray(demo_sketch).save(path, quality=90)
    diff = np.abs(demo_model.normalise(path).astype(int) - demo_sketch)
    assert diff.mean() < 2.0


def test_larger_sketches_are_resized_to_the_layout(demo_model, demo_sketch, full_sketch):
    out = demo_model.normalise(full_sketch)
    assert out.shape == (SIZE, SIZE) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, demo_sketch)   # demo_sketch is that same bicubic resize


def test_non_square_sketches_are_padded_with_white_about_the_centre(demo_model, full_sketch):
    tall = full_sketch[:, 56:456]            # 512 x 400: only white columns removed
    assert (full_sketch[:, :56] == 255).all() and (full_sketch[:, 456:] == 255).all()
    np.testing.assert_array_equal(demo_model.normalise(tall), demo_model.normalise(full_sketch))
    wide = np.ascontiguousarray(tall.T)      # 400 x 512
    np.testing.assert_array_equal(demo_model.normalise(wide), demo_model.normalise(full_sketch.T.copy()))


def test_light_on_dark_drawings_are_inverted(demo_model, demo_sketch):
    np.testing.assert_array_equal(demo_model.normalise(255 - demo_sketch), demo_sketch)
    inverted_rgb = np.repeat((255 - demo_sketch)[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(demo_model.normalise(inverted_rgb), demo_sketch)


def test_inputs_are_never_modified(demo_model, demo_sketch):
    arrays = [demo_sketch.copy(), (demo_sketch / 255.0), np.dstack([demo_sketch] * 3 + [np.full_like(demo_sketch, 200)])]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        demo_model.generate(a, shadows=False, keep_features=False)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


def test_generate_on_the_demo_model(demo_model, demo_sketch):
    r = demo_model.generate(demo_sketch)
    assert r.image.shape == (SIZE, SIZE, 3) and r.image.dtype == np.uint8
    assert set(r.latents) == set(COMPONENTS) == set(r.shadows)
    assert r.shadow.shape == (SIZE, SIZE) and np.isfinite(r.generator_output).all()
    assert all(len(p.neighbours) == DEMO.k for p in r.projections.values())


# --------------------------------------------------------------------------- bad sketches

def test_missing_file(demo_model, tmp_path):
    path = tmp_path / "nowhere.png"
    with raises(SketchError, "not found", "nowhere.png"):
        demo_model.generate(path)


def test_corrupt_file(demo_model, tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"this is not an image \x00\x01\x02" * 40)
    with raises(SketchError, "corrupt.png", "not a valid image"):
        demo_model.generate(path)


def test_truncated_png(demo_model, demo_sketch, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(demo_sketch).save(buf, "PNG")
    path = tmp_path / "half.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with raises(SketchError, "half.png"):
        demo_model.generate(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_array(demo_model, demo_sketch, bad):
    a = demo_sketch.astype(np.float32)
    a[10, 10] = bad
    with raises(SketchError, "NaN or infinite"):
        demo_model.generate(a)


@pytest.mark.parametrize("shape", [(SIZE,), (1, SIZE, SIZE, 1), (SIZE, SIZE, 2), (SIZE, SIZE, 5)])
def test_wrong_shape(demo_model, shape):
    with raises(SketchError, "shape", str(shape)):
        demo_model.generate(np.full(shape, 255, np.uint8))


def test_empty_and_non_numeric_arrays(demo_model):
    with raises(SketchError, "empty"):
        demo_model.generate(np.zeros((0, 0), np.uint8))
    with raises(SketchError, "dtype"):
        demo_model.generate(np.full((4, 4), "x"))


def test_unsupported_object(demo_model):
    with raises(SketchError, "file path", "PIL image", "numpy array"):
        demo_model.generate([[0, 255], [255, 0]])


# --------------------------------------------------------------------------- bad arguments

def test_unknown_component_in_part_weights(demo_model, demo_sketch):
    with raises(ConfigError, "left_eyebrow", *COMPONENTS):
        demo_model.generate(demo_sketch, part_weights={"left_eyebrow": 0.5})


def test_official_part_names_are_not_components(demo_model, demo_sketch):
    with raises(ConfigError, "'eye1'", "left_eye"):
        demo_model.generate(demo_sketch, part_weights={"eye1": 0.5})


@pytest.mark.parametrize("w", [1.5, -0.1, math.nan, math.inf])
def test_weight_out_of_range(demo_model, demo_sketch, w):
    with raises(ConfigError, "nose", "[0, 1]"):
        demo_model.generate(demo_sketch, part_weights={"nose": w})


def test_weight_not_a_number(demo_model, demo_sketch):
    with raises(ConfigError, "mouth", "number"):
        demo_model.generate(demo_sketch, part_weights={"mouth": "strong"})


@pytest.mark.parametrize("sex", ["man", "Male", 0, None])
def test_bad_sex(demo_model, demo_sketch, sex):
    with raises(ConfigError, "'male' or 'female'", repr(sex)):
        demo_model.generate(demo_sketch, sex=sex)


@pytest.mark.parametrize("k", [0, 1, DEMO_BANK_ROWS["male"] + 1])
def test_k_out_of_range(demo_model, demo_sketch, k):
    with raises(ConfigError, "K must be between 2 and the bank size", str(DEMO_BANK_ROWS["male"]), str(k)):
        demo_model.generate(demo_sketch, sex="male", k=k, shadows=False)


def test_k_up_to_the_bank_size_works(demo_model, demo_sketch):
    n = DEMO_BANK_ROWS["female"]
    r = demo_model.generate(demo_sketch, sex="female", k=n, shadows=False, keep_features=False)
    assert sorted(r.projections["mouth"].neighbours.tolist()) == list(range(n))


def test_bad_anchor(demo_model, demo_sketch):
    with raises(ConfigError, "anchor", "nearest", "official"):
        demo_model.generate(demo_sketch, anchor="closest", shadows=False)


def test_duplicate_bank_rows_still_project():
    # A bank built from repeated sketches has identical rows: the normal equations are
    # singular, and projection must still give weights summing to 1 that rebuild the point.
    from dfd_kit.manifold import project_to_manifold

    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 16)).astype(np.float32)
    bank = np.concatenate([base, base])                  # every row twice
    latent = (0.5 * base[0] + 0.5 * base[1]).astype(np.float32)
    p = project_to_manifold(latent, bank, k=6, weight=1.0)
    assert np.isfinite(p.weights).all()
    assert abs(p.weights.sum() - 1.0) < 1e-9
    assert np.abs(p.vector - latent).max() < 0.05      # the midpoint lies on the bank's span


# --------------------------------------------------------------------------- hostile images

def png_claiming(width: int, height: int) -> bytes:
    """A 1 x 1 gray PNG whose header says ``width`` x ``height``: PIL's lazy open reports
    that size, and decoding it would fail (its data holds one pixel)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (1, 1), 255).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(demo_model, tmp_path):
    from dfd_kit.sketch_input import MAX_PIXELS

    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(8000, MAX_PIXELS // 8000 + 1))
    with raises(SketchError, "huge.png", "megapixels", "scale it down"):
        demo_model.normalise(path)


def test_a_decompression_bomb_is_a_sketch_error(demo_model, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(30000, 30000))   # PIL itself refuses 900 megapixels at open
    with raises(SketchError, "bomb.png", "too large"):
        demo_model.normalise(path)


MEASURE = r'''
import io, resource, sys
import numpy as np
from PIL import Image
from dfd_kit.components import normalise_sketch
from dfd_kit.config import DEMO
buf = io.BytesIO()
Image.new("L", (int(sys.argv[1]), int(sys.argv[2])), 0).save(buf, "PNG")
normalise_sketch(np.zeros((8, 8), np.uint8), DEMO.layout)      # imports and first calls
# address space capped 1.5 GB above what is mapped now: a runaway allocation fails here
# with MemoryError instead of taking the machine's memory
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1536 << 20), resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = normalise_sketch(buf.getvalue(), DEMO.layout)
assert out.shape == (DEMO.layout.size,) * 2 and (out[:, :100] == 255).all()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
'''


@pytest.mark.parametrize("width, height", [(1, 20000), (20000, 1), (1, 4000)])
def test_a_long_thin_image_costs_little_memory(width, height):
    """An 85-byte 1 x 4000 PNG once peaked at 259 MB (a float64 square before the resize);
    1 x 20000 would have needed about 6 GB, enough to kill a 2 GB notebook server."""
    import subprocess
    import sys

    from conftest import ROOT

    p = subprocess.run([sys.executable, "-c", MEASURE, str(width), str(height)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.split()[-1]) < 100   # MB above the process's peak before the call


def sixteen_bit(sketch: np.ndarray, mode: str) -> Image.Image:
    values = sketch.astype(np.uint16) * 257   # 0..255 -> 0..65535
    return Image.frombytes(mode, sketch.shape[::-1], values.astype(">u2" if mode.endswith("B") else "<u2").tobytes())


@pytest.mark.parametrize("make", [
    lambda s: sixteen_bit(s, "I;16"),
    lambda s: sixteen_bit(s, "I;16B"),
    lambda s: sixteen_bit(s, "I;16").convert("I"),
    lambda s: Image.fromarray(s).convert("P"),
    lambda s: Image.fromarray(s).convert("RGB").convert("CMYK"),
    lambda s: Image.fromarray(s).convert("RGB").convert("LAB"),
], ids=["I;16", "I;16B", "I", "P", "CMYK", "LAB"])
def test_other_image_modes_give_the_gray_sketch(demo_model, demo_sketch, make):
    img = make(demo_sketch)
    out = demo_model.normalise(img)
    # CMYK rounds through RGB; LAB gives its lightness L*, which is not luma in the mid-greys
    assert np.abs(out.astype(int) - demo_sketch).max() <= (12 if img.mode == "LAB" else 2)
    ink, paper = demo_sketch == 0, demo_sketch == 255
    assert (out[ink] <= 2).all() and (out[paper] >= 253).all()


def test_an_animated_gif_gives_its_first_frame(demo_model, demo_sketch, tmp_path):
    frames = [Image.fromarray(demo_sketch), Image.fromarray(np.full_like(demo_sketch, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "a.gif").n_frames == 2
    np.testing.assert_array_equal(demo_model.normalise(tmp_path / "a.gif"), demo_sketch)


def test_a_float_image_with_nan_is_a_sketch_error(demo_model, demo_sketch):
    a = demo_sketch.astype(np.float32)
    a[3, 3] = np.nan
    with raises(SketchError, "NaN or infinite"):
        demo_model.normalise(Image.fromarray(a, "F"))


def test_one_bad_file_never_stops_a_cli_batch(demo_params, demo_sketch, tmp_path, capsys):
    from dfd_kit import cli

    Image.fromarray(demo_sketch).save(tmp_path / "a.png")
    (tmp_path / "b_bomb.png").write_bytes(png_claiming(30000, 30000))
    Image.fromarray(demo_sketch).save(tmp_path / "c.png")
    rc = cli.main(["generate", str(tmp_path), "--params", str(demo_params), "--out", str(tmp_path / "out"),
                   "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert rc == 1 and len(err) == 1 and "b_bomb.png" in err[0] and "too large" in err[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
