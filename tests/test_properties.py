"""Per-image properties: definitions on real files written by Pillow, their place in the
fingerprint table (``extract``), and their round trip through the SQLite cache."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from splitaudit.cache import FingerprintCache, cache_file_name
from splitaudit.errors import InvalidInputError
from splitaudit.extract import FULL_SIZE_BELOW, MIN_DECODE_SIDE, FingerprintTable, extract, fingerprint_identity
from splitaudit.fingerprints.properties import (
    CATEGORICAL,
    PROPERTY_NAMES,
    estimate_jpeg_quality,
    ijg_quantization_table,
    image_properties,
    properties_from_bytes,
)
from splitaudit.imaging import load_rgb_bytes
from splitaudit.sources import discover

COL = {name: i for i, name in enumerate(PROPERTY_NAMES)}


def scene(width: int = 192, height: int = 144, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: gradients, a few shapes with edges, mild texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([80 + 100 * x / width, 60 + 120 * y / height, 140 - 60 * x / width], -1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
        w, h = rng.integers(10, width // 3), rng.integers(10, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
    return img


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def props(data: bytes) -> dict[str, float]:
    row = properties_from_bytes(data)
    assert row.dtype == np.float32 and row.shape == (len(PROPERTY_NAMES),)
    return dict(zip(PROPERTY_NAMES, row.tolist()))


def code(column: str, value: str) -> float:
    return float(CATEGORICAL[column].index(value))


# ------------------------------------------------------------------------- definitions


def test_names_and_vocabularies():
    assert PROPERTY_NAMES[:13] == ("width", "height", "aspect_ratio", "brightness", "contrast",
                                   "saturation", "sharpness", "channels", "mode", "format",
                                   "jpeg_quality", "file_size", "n_frames")
    assert set(CATEGORICAL) <= set(PROPERTY_NAMES)
    for vocab in CATEGORICAL.values():
        assert vocab[-1] == "other" and len(set(vocab)) == len(vocab)


@pytest.mark.parametrize("quality", [30, 40, 75, 90, 95])
def test_jpeg_quality_is_recovered_from_the_quantization_table(quality):
    p = props(encode(scene(), "JPEG", quality=quality))
    assert abs(p["jpeg_quality"] - quality) <= 2
    assert p["format"] == code("format", "JPEG") and p["mode"] == code("mode", "RGB")


def test_jpeg_quality_orders_files_by_compression():
    img = scene(seed=1)
    low, high = props(encode(img, "JPEG", quality=40)), props(encode(img, "JPEG", quality=90))
    assert low["jpeg_quality"] < high["jpeg_quality"]
    assert low["file_size"] < high["file_size"]


def test_quality_estimate_inverts_the_ijg_scaling_and_rejects_bad_tables():
    assert [estimate_jpeg_quality(ijg_quantization_table(q)) for q in range(1, 101)] == list(range(1, 101))
    # A table that is no IJG table (every entry doubled from q=80) lands between the neighbours.
    assert 55 <= estimate_jpeg_quality(2 * ijg_quantization_table(80)) <= 70
    assert np.isnan(estimate_jpeg_quality(None))
    assert np.isnan(estimate_jpeg_quality([0] * 64))
    assert np.isnan(estimate_jpeg_quality([10] * 63))
    with pytest.raises(InvalidInputError, match="'quality' parameter"):
        ijg_quantization_table(0)


def test_png_has_no_jpeg_quality_and_exact_size_fields():
    data = encode(scene(width=300, height=100), "PNG")
    p = props(data)
    assert np.isnan(p["jpeg_quality"])
    assert (p["width"], p["height"], p["aspect_ratio"]) == (300, 100, 3.0)
    assert p["file_size"] == len(data) and p["n_frames"] == 1
    assert p["channels"] == 3 and p["format"] == code("format", "PNG")


@pytest.mark.parametrize("mode, fmt, channels, mode_name", [
    ("L", "PNG", 1, "L"),
    ("LA", "PNG", 2, "LA"),
    ("RGBA", "PNG", 4, "RGBA"),
    ("P", "PNG", 3, "P"),
    ("1", "PNG", 1, "1"),
    ("CMYK", "JPEG", 4, "CMYK"),
    ("RGB", "BMP", 3, "RGB"),
    ("RGB", "WEBP", 3, "RGB"),
    ("RGB", "TIFF", 3, "RGB"),
])
def test_channels_mode_and_format_as_stored(mode, fmt, channels, mode_name):
    data = encode(scene().convert(mode), fmt)
    p = props(data)
    assert p["channels"] == channels
    assert p["mode"] == code("mode", mode_name)
    assert p["format"] == code("format", fmt)
    assert np.isnan(p["jpeg_quality"]) == (fmt != "JPEG")


def test_cmyk_jpeg_quality_and_sixteen_bit_png():
    cmyk = props(encode(scene().convert("CMYK"), "JPEG", quality=60))
    assert abs(cmyk["jpeg_quality"] - 60) <= 2
    deep = (np.arange(96 * 64, dtype=np.uint32).reshape(64, 96) * 10).astype(np.uint16)
    p = props(encode(Image.fromarray(deep), "PNG"))
    assert p["mode"] == code("mode", "I;16") and p["channels"] == 1
    assert p["saturation"] == 0.0 and 0.0 < p["brightness"] < 1.0


def test_animated_gif_counts_its_frames():
    frames = [scene(seed=s).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    p = props(buf.getvalue())
    assert p["n_frames"] == 3 and p["format"] == code("format", "GIF") and p["mode"] == code("mode", "P")
    assert props(encode(frames[0], "GIF"))["n_frames"] == 1


def test_blur_lowers_sharpness_and_nothing_else_much():
    img = scene(seed=2)
    sharp = props(encode(img, "PNG"))
    blurred = props(encode(img.filter(ImageFilter.GaussianBlur(3)), "PNG"))
    assert blurred["sharpness"] < 0.5 * sharp["sharpness"]
    assert abs(blurred["brightness"] - sharp["brightness"]) < 0.02


def test_sharpness_does_not_depend_on_resolution():
    big = scene(width=768, height=576, seed=3).filter(ImageFilter.GaussianBlur(1))
    small = big.resize((192, 144), Image.Resampling.LANCZOS)
    a, b = props(encode(big, "PNG")), props(encode(small, "PNG"))
    assert 0.67 < a["sharpness"] / b["sharpness"] < 1.5
    assert abs(a["brightness"] - b["brightness"]) < 0.01 and abs(a["contrast"] - b["contrast"]) < 0.02
    # ... while blurring the small copy is still seen.
    blurred = props(encode(small.filter(ImageFilter.GaussianBlur(2)), "PNG"))
    assert blurred["sharpness"] < 0.5 * b["sharpness"]


def test_brightness_contrast_saturation():
    img = scene(seed=4)
    base = props(encode(img, "PNG"))
    arr = np.asarray(img).astype(np.int16)
    brighter = props(encode(Image.fromarray(np.clip(arr + 50, 0, 255).astype(np.uint8)), "PNG"))
    flat = props(encode(Image.fromarray((arr // 3 + 85).astype(np.uint8)), "PNG"))
    grey = props(encode(img.convert("L").convert("RGB"), "PNG"))
    assert brighter["brightness"] > base["brightness"] + 0.1
    assert flat["contrast"] < 0.5 * base["contrast"]
    assert grey["saturation"] < 0.01 < 0.2 < base["saturation"]
    black = props(encode(Image.new("RGB", (80, 60)), "PNG"))
    white = props(encode(Image.new("RGB", (80, 60), (255, 255, 255)), "PNG"))
    assert (black["brightness"], black["contrast"], black["sharpness"]) == (0.0, 0.0, 0.0)
    assert white["brightness"] == pytest.approx(1.0) and black["saturation"] == 0.0
    red = props(encode(Image.new("RGB", (80, 60), (255, 0, 0)), "PNG"))
    assert red["saturation"] == pytest.approx(1.0)


def test_size_is_the_original_one_even_when_decoded_reduced():
    img = scene(width=1024, height=640, seed=5)
    data = encode(img, "JPEG", quality=85)
    rgb, info = load_rgb_bytes(data, min_side=MIN_DECODE_SIDE)
    assert rgb.shape[0] < 640  # draft mode decoded it smaller
    p = dict(zip(PROPERTY_NAMES, image_properties(rgb, info, data).tolist()))
    assert (p["width"], p["height"]) == (1024, 640) and p["aspect_ratio"] == pytest.approx(1.6)
    assert abs(p["jpeg_quality"] - 85) <= 2
    # The pixel statistics of the reduced decode match those of a full-size decode.
    full = props(encode(img, "PNG"))
    for name in ("brightness", "contrast", "saturation"):
        assert abs(p[name] - full[name]) < 0.02, name
    assert 0.67 < p["sharpness"] / full["sharpness"] < 1.5


def test_exif_rotation_swaps_width_and_height():
    img = scene(width=240, height=120)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown rotated by 90 degrees
    p = props(encode(img, "JPEG", exif=exif.tobytes()))
    assert (p["width"], p["height"], p["aspect_ratio"]) == (120, 240, 0.5)


def test_quality_is_read_from_the_bytes_when_the_info_has_no_table():
    data = encode(scene(), "JPEG", quality=70)
    rgb, info = load_rgb_bytes(data)
    assert info.quantization is not None and len(info.quantization) == 64
    import dataclasses

    bare = dataclasses.replace(info, quantization=None)
    assert np.isnan(image_properties(rgb, bare)[COL["jpeg_quality"]])
    assert abs(image_properties(rgb, bare, data)[COL["jpeg_quality"]] - 70) <= 2
    assert np.array_equal(image_properties(rgb, bare, data), image_properties(rgb, info),
                          equal_nan=True)
    # Passing the Pillow image of the pixels gives the same row.
    assert np.array_equal(image_properties(rgb, info, image=Image.fromarray(rgb)),
                          image_properties(rgb, info), equal_nan=True)


# ------------------------------------------------------------------------- extract and cache


@pytest.fixture()
def folder(tmp_path) -> Path:
    """train/val with images of several formats, modes and sizes, and one corrupt file."""
    root = tmp_path / "data"
    files = {
        "train/a/q40.jpg": encode(scene(seed=10), "JPEG", quality=40),
        "train/a/q90.jpg": encode(scene(seed=11), "JPEG", quality=90),
        "train/a/wide.png": encode(scene(width=400, height=100, seed=12), "PNG"),
        "train/b/grey.png": encode(scene(seed=13).convert("L"), "PNG"),
        "train/b/alpha.png": encode(scene(seed=14).convert("RGBA"), "PNG"),
        "train/b/big.jpg": encode(scene(width=800, height=600, seed=15), "JPEG", quality=80),
        "val/a/palette.gif": encode(scene(seed=16).convert("P"), "GIF"),
        "val/a/blur.png": encode(scene(seed=17).filter(ImageFilter.GaussianBlur(3)), "PNG"),
        "val/b/cmyk.jpg": encode(scene(seed=18).convert("CMYK"), "JPEG", quality=75),
        "val/b/broken.jpg": encode(scene(seed=19), "JPEG")[:200],
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _age(root)
    return root


def _age(root: Path) -> None:
    """Old mtimes, as in a real dataset (the cache re-hashes files modified within 2 s)."""
    t = time.time() - 3600
    for p in root.rglob("*"):
        os.utime(p, (t, t))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def test_extract_fills_one_row_per_sample_and_nan_for_corrupt_files(folder):
    samples = discover(folder).samples
    table = extract(samples, workers=0)
    assert table.properties.shape == (len(samples), len(PROPERTY_NAMES))
    assert table.properties.dtype == np.float32
    for i, s in enumerate(samples):
        row = table.properties[i]
        if s.path.endswith("broken.jpg"):
            assert not table.ok[i] and np.isnan(row).all()
            continue
        # The row is exactly what the properties of the file's own decode are.
        expected = properties_from_bytes(Path(s.abspath).read_bytes(), min_side=MIN_DECODE_SIDE,
                                         full_size_below=FULL_SIZE_BELOW)
        assert np.array_equal(_bits(row), _bits(expected)), s.path
        assert row[COL["width"]] == table.width[i] and row[COL["height"]] == table.height[i]
    by_name = {Path(s.path).name: table.properties[i] for i, s in enumerate(samples)}
    assert by_name["big.jpg"][COL["width"]] == 800
    assert by_name["wide.png"][COL["aspect_ratio"]] == 4.0
    assert by_name["grey.png"][COL["channels"]] == 1
    assert abs(by_name["q40.jpg"][COL["jpeg_quality"]] - 40) <= 2
    assert np.isnan(by_name["blur.png"][COL["jpeg_quality"]])


def test_allocate_fills_properties_with_nan():
    t = FingerprintTable.allocate(3, None)
    assert t.properties.shape == (3, len(PROPERTY_NAMES)) and np.isnan(t.properties).all()


def _cached_extract(samples, cache_dir: Path):
    cache = FingerprintCache.open(_root(samples), cache_dir)
    assert cache is not None
    cache.configure(fingerprint_identity(None), None)
    try:
        return extract(samples, workers=0, cache=cache), cache.stats, cache.path
    finally:
        cache.close()


def _root(samples) -> Path:
    return Path(samples[0].abspath).parents[2]  # <root>/<split>/<class>/<file>


def test_cache_restores_identical_properties(folder, tmp_path):
    samples = discover(folder).samples
    plain = extract(samples, workers=0)
    first, st1, _ = _cached_extract(samples, tmp_path / "c")
    second, st2, _ = _cached_extract(samples, tmp_path / "c")
    assert st1.decoded == len(samples) and st2.decoded == 0
    for t in (first, second):
        assert np.array_equal(_bits(t.properties), _bits(plain.properties))
        assert np.array_equal(t.ok, plain.ok)


def test_cache_row_without_properties_is_fingerprinted_again(folder, tmp_path):
    samples = discover(folder).samples
    plain = extract(samples, workers=0)
    _, _, db = _cached_extract(samples, tmp_path / "c")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE contents SET properties = NULL")  # as a row written without them
    conn.commit()
    conn.close()
    again, st, _ = _cached_extract(samples, tmp_path / "c")
    assert st.decoded == int(plain.ok.sum())  # the rows of good files, not the broken one
    assert np.array_equal(_bits(again.properties), _bits(plain.properties))
    assert _cached_extract(samples, tmp_path / "c")[1].decoded == 0


def test_schema_1_cache_is_upgraded_in_place(folder, tmp_path):
    samples = discover(folder).samples
    plain = extract(samples, workers=0)
    cache_dir = tmp_path / "c"
    _, _, db = _cached_extract(samples, cache_dir)
    # Turn it into what splitaudit wrote before properties existed.
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE contents DROP COLUMN properties")
    conn.execute("UPDATE contents SET fp = replace(fp, 'fp2|', 'fp1|')")
    conn.execute("UPDATE meta SET value = replace(value, 'fp2|', 'fp1|') WHERE key = 'fingerprint_identity'")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    table, st, path = _cached_extract(samples, cache_dir)
    assert path == db and not list(cache_dir.glob("*.bad-*"))
    assert st.decoded == len(samples)
    assert np.array_equal(_bits(table.properties), _bits(plain.properties))
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert _cached_extract(samples, cache_dir)[1].decoded == 0
    assert db.name == cache_file_name(folder)


def test_cache_copes_with_renamed_copies(folder, tmp_path):
    """A copy under another name reuses the cached row (by content) with its properties."""
    samples = discover(folder).samples
    _cached_extract(samples, tmp_path / "c")
    copy = folder / "val/a/copy_of_q40.jpg"
    shutil.copy(folder / "train/a/q40.jpg", copy)
    t = time.time() - 60
    os.utime(copy, (t, t))
    samples = discover(folder).samples
    table, st, _ = _cached_extract(samples, tmp_path / "c")
    assert st.decoded == 0 and st.rehashed == 1
    names = [Path(s.path).name for s in samples]
    assert np.array_equal(_bits(table.properties[names.index("copy_of_q40.jpg")]),
                          _bits(table.properties[names.index("q40.jpg")]))


def test_worker_processes_carry_the_properties(folder, monkeypatch):
    """The multi-process path (chunks pickled back from workers) gives the same rows."""
    import splitaudit.extract as extract_mod

    samples = discover(folder).samples
    plain = extract(samples, workers=0)
    monkeypatch.setattr(extract_mod, "MIN_PARALLEL", 1)
    monkeypatch.setattr(extract_mod, "CHUNK", 3)
    pooled = extract(samples, workers=2)
    assert np.array_equal(_bits(pooled.properties), _bits(plain.properties))
    assert np.isnan(pooled.properties[~pooled.ok]).all()
    assert not np.isnan(pooled.properties[pooled.ok, 0]).any()
