"""Tests of splitaudit.imaging: decoding, normalization, downscaling and every error path."""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from badfiles import (
    ODD_NAMES,
    encode,
    noise_image,
    write_bad_png_header,
    write_broken_symlink,
    write_corrupt_png,
    write_empty,
    write_fifo,
    write_garbage,
    write_image,
    write_png_header_only,
    write_svg,
    write_text,
    write_truncated,
    write_unreadable,
)
from splitaudit import imaging
from splitaudit.errors import DecodeError, InvalidInputError
from splitaudit.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    load_rgb,
    load_rgb_bytes,
    read_and_decode,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _check_array(rgb: np.ndarray, height: int, width: int) -> None:
    assert isinstance(rgb, np.ndarray)
    assert rgb.shape == (height, width, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous


def _reason(path, **kwargs) -> str:
    with pytest.raises(DecodeError) as excinfo:
        load_rgb(path, **kwargs)
    reason = excinfo.value.reason
    assert reason == str(excinfo.value)
    assert reason == reason.lower()
    return reason


def _quadrants(width: int = 64, height: int = 32) -> Image.Image:
    """Left half red, right half blue, except the top-left quadrant is green."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = RED
    arr[:, width // 2 :] = BLUE
    arr[: height // 2, : width // 2] = GREEN
    return Image.fromarray(arr)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "ext", "kwargs"),
    [
        ("PNG", "png", {}),
        ("BMP", "bmp", {}),
        ("TIFF", "tif", {}),
        ("WEBP", "webp", {"lossless": True}),
        ("PPM", "ppm", {}),
        ("GIF", "gif", {}),
    ],
)
def test_lossless_formats_roundtrip_exactly(tmp_path, fmt, ext, kwargs):
    img = _quadrants(40, 30)
    path = write_image(tmp_path, f"img.{ext}", img, fmt, **kwargs)
    rgb, info = load_rgb(path)
    _check_array(rgb, 30, 40)
    np.testing.assert_array_equal(rgb, np.asarray(img))
    assert info == ImageInfo(
        width=40, height=30, format=fmt, mode=info.mode, n_frames=1,
        file_size=path.stat().st_size,
    )


def test_jpeg_basic(tmp_path):
    path = write_image(tmp_path, "a.jpg", Image.new("RGB", (50, 40), (200, 100, 50)), "JPEG")
    rgb, info = load_rgb(path)
    _check_array(rgb, 40, 50)
    assert np.abs(rgb.astype(int) - (200, 100, 50)).max() <= 3
    assert (info.width, info.height, info.format, info.mode, info.n_frames) == (
        50, 40, "JPEG", "RGB", 1,
    )


def test_pgm_and_pbm(tmp_path):
    gray = Image.fromarray(np.array([[0, 77], [200, 255]], np.uint8))
    rgb, info = load_rgb(write_image(tmp_path, "g.pgm", gray, "PPM"))
    assert (info.format, info.mode) == ("PPM", "L")
    np.testing.assert_array_equal(rgb[..., 0], [[0, 77], [200, 255]])
    assert (rgb == rgb[..., :1]).all()  # gray replicated to 3 channels

    bits = Image.fromarray(np.array([[True, False], [False, True]]))
    rgb, info = load_rgb(write_image(tmp_path, "b.pbm", bits, "PPM"))
    assert info.mode == "1"
    np.testing.assert_array_equal(rgb[..., 1], [[255, 0], [0, 255]])


def test_ascii_pbm_text(tmp_path):
    path = tmp_path / "plain.pbm"
    path.write_bytes(b"P1\n2 2\n0 1\n1 0\n")  # 1 = black in PBM
    rgb, info = load_rgb(path)
    np.testing.assert_array_equal(rgb[..., 0], [[255, 0], [0, 255]])
    assert info.format == "PPM"


def test_format_from_content_not_extension(tmp_path):
    img = Image.new("RGB", (20, 10), (10, 200, 10))
    for name in ("really_a_jpeg.png", "really_a_jpeg.svg", "no_extension"):
        rgb, info = load_rgb(write_image(tmp_path, name, img, "JPEG"))
        assert info.format == "JPEG"
        _check_array(rgb, 10, 20)
        assert np.abs(rgb.astype(int) - (10, 200, 10)).max() <= 3


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 12), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    rgb, info = load_rgb(path)
    assert info.n_frames == 3
    assert info.format == "GIF"
    _check_array(rgb, 12, 16)
    assert (rgb == RED).all()


def test_animated_webp_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 12), c) for c in (BLUE, RED)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    rgb, info = load_rgb(path)
    assert info.n_frames == 2
    assert (rgb == BLUE).all()


def test_multipage_tiff(tmp_path):
    pages = [Image.new("RGB", (8, 8), c) for c in (GREEN, RED)]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    rgb, info = load_rgb(path)
    assert (info.format, info.n_frames) == ("TIFF", 2)
    assert (rgb == GREEN).all()


# --------------------------------------------------------------------------- modes


def test_cmyk_jpeg(tmp_path):
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[:, 16:] = (0, 255, 255, 0)  # right half: red ink-wise
    path = write_image(tmp_path, "cmyk.jpg", Image.fromarray(arr, "CMYK"), "JPEG", quality=95)
    rgb, info = load_rgb(path)
    assert (info.format, info.mode) == ("JPEG", "CMYK")
    _check_array(rgb, 32, 32)
    assert np.abs(rgb[16, 4].astype(int) - WHITE).max() <= 6  # no ink = white
    assert np.abs(rgb[16, 28].astype(int) - RED).max() <= 6


def test_16bit_png_scaled_by_full_range(tmp_path):
    values = np.array([[0, 257 * 77, 32768, 65535]], np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    rgb, info = load_rgb(write_image(tmp_path, "deep.png", img, "PNG"))
    assert info.mode == "I;16"
    # mid-gray 32768 -> 128 (not clipped to 255); v * 257 -> v exactly
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 77, 128, 255])
    assert (rgb == rgb[..., :1]).all()


def test_16bit_pgm_mode_i(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)
    path = write_image(tmp_path, "deep.pgm", Image.fromarray(values), "PPM")
    rgb, info = load_rgb(path)
    assert info.mode in ("I", "I;16", "I;16B")
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1000 >> 8, 128, 255])


def test_32bit_int_tiff_clipped_to_16bit_range(tmp_path):
    values = np.array([[-5, 256, 32768, 70000]], np.int32)
    rgb, info = load_rgb(write_image(tmp_path, "i.tif", Image.fromarray(values, "I"), "TIFF"))
    assert info.mode == "I"
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])


def test_float_tiff(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    rgb, info = load_rgb(write_image(tmp_path, "unit.tif", Image.fromarray(unit, "F"), "TIFF"))
    assert info.mode == "F"
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 128, 255, 0])

    wide = np.array([[-3.0, 100.4, 254.6, 1e6]], np.float32)
    rgb, _ = load_rgb(write_image(tmp_path, "wide.tif", Image.fromarray(wide, "F"), "TIFF"))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 100, 255, 255])


def test_rgba_png_transparent_becomes_white(tmp_path):
    arr = np.array(
        [[(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128), (10, 200, 10, 0)]], np.uint8
    )
    rgb, info = load_rgb(write_image(tmp_path, "a.png", Image.fromarray(arr, "RGBA"), "PNG"))
    assert info.mode == "RGBA"
    assert tuple(rgb[0, 0]) == RED
    assert tuple(rgb[0, 1]) == WHITE
    assert np.abs(rgb[0, 2].astype(int) - 127).max() <= 1  # half-transparent black
    assert tuple(rgb[0, 3]) == WHITE  # hidden colour does not leak through


def test_la_png(tmp_path):
    arr = np.array([[(0, 0), (50, 255), (0, 128)]], np.uint8)
    rgb, info = load_rgb(write_image(tmp_path, "la.png", Image.fromarray(arr, "LA"), "PNG"))
    assert info.mode == "LA"
    np.testing.assert_array_equal(rgb[0, :, 0], [255, 50, 127])
    assert (rgb == rgb[..., :1]).all()


def test_palette_png_with_transparency_index(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.putdata([0, 1, 0])
    path = write_image(tmp_path, "p.png", img, "PNG", transparency=1)
    rgb, info = load_rgb(path)
    assert info.mode == "P"
    np.testing.assert_array_equal(rgb[0], [RED, WHITE, RED])


def test_palette_png_with_alpha_bytes(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (253 * 3))
    img.putdata([0, 1, 2])
    # per-entry alpha (tRNS with several values): the case Pillow warns about on convert
    path = write_image(tmp_path, "pa.png", img, "PNG", transparency=bytes([255, 0, 255]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb, _ = load_rgb(path)
    np.testing.assert_array_equal(rgb[0], [RED, WHITE, GREEN])


def test_palette_without_transparency(tmp_path):
    img = Image.new("RGB", (4, 4), (0, 0, 255)).convert("P")
    rgb, info = load_rgb(write_image(tmp_path, "p.png", img, "PNG"))
    assert info.mode == "P"
    assert (rgb == BLUE).all()


def test_rgb_png_with_colour_key_transparency(tmp_path):
    arr = np.array([[RED, BLUE]], np.uint8)
    path = write_image(tmp_path, "key.png", Image.fromarray(arr), "PNG", transparency=BLUE)
    rgb, _ = load_rgb(path)
    np.testing.assert_array_equal(rgb[0], [RED, WHITE])


def test_one_bit_png(tmp_path):
    bits = np.array([[True, False, True]])
    rgb, info = load_rgb(write_image(tmp_path, "bits.png", Image.fromarray(bits), "PNG"))
    assert info.mode == "1"
    np.testing.assert_array_equal(rgb[0, :, 2], [255, 0, 255])


def test_grayscale_jpeg(tmp_path):
    rgb, info = load_rgb(write_image(tmp_path, "g.jpg", Image.new("L", (8, 8), 90), "JPEG"))
    assert info.mode == "L"
    assert np.abs(rgb.astype(int) - 90).max() <= 2


def test_lab_tiff(tmp_path):
    img = Image.new("LAB", (4, 4), (128, 128, 128))  # mid-lightness neutral
    rgb, info = load_rgb(write_image(tmp_path, "lab.tif", img, "TIFF"))
    assert info.mode == "LAB"
    assert np.ptp(rgb) == 0  # neutral: R == G == B everywhere
    assert 100 < int(rgb[0, 0, 0]) < 140


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("La", (100, 255), (100, 100, 100)),  # opaque
        ("La", (0, 0), WHITE),  # fully transparent
        ("PA", None, None),
        ("RGBa", (0, 0, 0, 0), WHITE),
        ("RGBa", (255, 0, 0, 255), RED),
        ("HSV", (0, 255, 255), RED),
        ("YCbCr", (255, 128, 128), WHITE),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
    ],
)
def test_rare_modes_in_memory(mode, value, expected):
    # These modes cannot all be written to files; test the normalization directly.
    if mode == "PA":
        img = Image.new("PA", (2, 2))
        img.putpalette([255, 0, 0] * 256)
        img.putpixel((0, 0), (0, 255))
        img.putpixel((1, 0), (0, 0))
        out = np.asarray(imaging._to_rgb(img, 256))
        assert tuple(out[0, 0]) == RED and tuple(out[0, 1]) == WHITE
        return
    out = np.asarray(imaging._to_rgb(Image.new(mode, (3, 2), value), 256))
    assert out.shape == (2, 3, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_unsupported_mode_reason(monkeypatch):
    img = Image.new("RGB", (2, 2))

    def refuse(*args, **kwargs):
        raise ValueError("conversion not supported")

    monkeypatch.setattr(img, "_mode", "XYZ")
    monkeypatch.setattr(img, "convert", refuse)
    with pytest.raises(DecodeError, match=r"^unsupported image mode 'XYZ'$"):
        imaging._to_working_mode(img)


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize(
    ("orientation", "rot"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # rotate 90 degrees clockwise to display
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
        (5, lambda a: a.transpose(1, 0, 2)),
    ],
)
def test_exif_orientation(tmp_path, orientation, rot):
    img = _quadrants(64, 32)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = write_image(tmp_path, "o.jpg", img, "JPEG", exif=exif.tobytes(), quality=95)
    rgb, info = load_rgb(path)
    expected = rot(np.asarray(img))
    assert rgb.shape == expected.shape
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])
    # compare at block centres (JPEG blurs the edges between colours)
    h, w = expected.shape[:2]
    for y in (h // 4, 3 * h // 4):
        for x in (w // 4, 3 * w // 4):
            assert np.abs(rgb[y, x].astype(int) - expected[y, x]).max() <= 8, (y, x)
    assert rgb.flags.c_contiguous


def test_exif_orientation_6_with_draft_and_png(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    img = _quadrants(2048, 1024)
    rgb, info = load_rgb(write_image(tmp_path, "big.jpg", img, "JPEG", exif=exif.tobytes()))
    assert (info.width, info.height) == (1024, 2048)
    assert rgb.shape[0] > rgb.shape[1] >= 256
    rgb, info = load_rgb(write_image(tmp_path, "o.png", _quadrants(), "PNG", exif=exif))
    assert (info.width, info.height) == (32, 64)
    assert rgb.shape == (64, 32, 3)
    np.testing.assert_array_equal(rgb, np.rot90(np.asarray(_quadrants()), -1))


def test_broken_exif_does_not_fail(tmp_path):
    path = write_image(tmp_path, "e.jpg", Image.new("RGB", (8, 8), RED), "JPEG",
                       exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    rgb, _ = load_rgb(path)
    assert rgb.shape == (8, 8, 3)


# --------------------------------------------------------------------------- sizes


def test_large_jpeg_uses_draft(tmp_path):
    img = _quadrants(2048, 1536)
    rgb, info = load_rgb(write_image(tmp_path, "big.jpg", img, "JPEG"))
    assert (info.width, info.height) == (2048, 1536)
    assert 256 <= min(rgb.shape[:2]) < 1536
    assert rgb.shape == (384, 512, 3)  # DCT scale 1/4: both sides still >= 256
    # content kept: quadrant colours at the right places
    assert np.abs(rgb[96, 128].astype(int) - GREEN).max() <= 8
    assert np.abs(rgb[288, 128].astype(int) - RED).max() <= 8
    assert np.abs(rgb[192, 400].astype(int) - BLUE).max() <= 8


def test_draft_respects_min_side(tmp_path):
    path = write_image(tmp_path, "big.jpg", noise_image(2048, 1536), "JPEG")
    rgb, _ = load_rgb(path, min_side=64)
    assert min(rgb.shape[:2]) >= 64 and max(rgb.shape[:2]) <= 2048 // 8 + 1
    rgb, _ = load_rgb(path, min_side=1000)
    assert min(rgb.shape[:2]) >= 1000
    rgb, _ = load_rgb(path, min_side=1536)
    assert rgb.shape == (1536, 2048, 3)


def test_large_png_downscaled(tmp_path):
    img = _quadrants(2000, 1200)
    rgb, info = load_rgb(write_image(tmp_path, "big.png", img, "PNG"))
    assert (info.width, info.height) == (2000, 1200)
    assert 256 <= rgb.shape[0] <= 384
    assert rgb.shape == (300, 500, 3)  # reduce by 4, aspect ratio kept
    assert tuple(rgb[50, 100]) == GREEN and tuple(rgb[250, 400]) == BLUE


def test_large_rgba_png_downscaled_and_flattened(tmp_path):
    arr = np.zeros((1100, 1300, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, :650, 3] = 255  # left opaque red, right fully transparent
    rgb, _ = load_rgb(write_image(tmp_path, "big.png", Image.fromarray(arr, "RGBA"), "PNG"))
    assert rgb.shape == (275, 325, 3)  # factor 1100 // 256 = 4
    assert tuple(rgb[100, 10]) == RED and tuple(rgb[100, 300]) == WHITE


def test_moderate_sizes_not_resized(tmp_path):
    for w, h in ((500, 300), (512, 512), (100, 4000)):
        rgb, _ = load_rgb(write_image(tmp_path, "m.png", noise_image(w, h), "PNG"))
        assert rgb.shape == (h, w, 3)


def test_small_images_never_upscaled(tmp_path):
    for fmt in ("JPEG", "PNG"):
        rgb, info = load_rgb(write_image(tmp_path, f"s.{fmt}", noise_image(32, 20), fmt))
        assert rgb.shape == (20, 32, 3)
        assert (info.width, info.height) == (32, 20)
    rgb, _ = load_rgb(write_image(tmp_path, "px.png", Image.new("RGB", (1, 1), RED), "PNG"))
    assert rgb.shape == (1, 1, 3) and tuple(rgb[0, 0]) == RED


def test_16bit_large_png_downscaled(tmp_path):
    img = Image.fromarray(np.full((600, 800), 65535, np.uint16))
    rgb, _ = load_rgb(write_image(tmp_path, "d.png", img, "PNG"), min_side=100)
    assert rgb.shape == (100, 134, 3) and (rgb == 255).all()


# --------------------------------------------------------------------------- errors


def test_empty_file(tmp_path):
    assert _reason(write_empty(tmp_path)) == "empty file (0 bytes)"
    with pytest.raises(DecodeError, match="empty file"):
        load_rgb_bytes(b"")


def test_text_svg_and_garbage_are_not_images(tmp_path):
    for path in (write_text(tmp_path), write_svg(tmp_path), write_garbage(tmp_path)):
        assert _reason(path) == "not an image (unrecognized format)"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
def test_truncated(tmp_path, fmt):
    assert _reason(write_truncated(tmp_path, fmt)) == "truncated image data"


def test_truncated_webp(tmp_path):
    assert _reason(write_truncated(tmp_path, "WEBP")).startswith(
        ("truncated image data", "corrupt image data")
    )


def test_truncated_inside_header(tmp_path):
    path = write_truncated(tmp_path, "PNG", fraction=0.02)
    assert _reason(path) in ("truncated image data", "corrupt image data: invalid png header")


def test_corrupt_png_data(tmp_path):
    reason = _reason(write_corrupt_png(tmp_path))
    assert reason.startswith("corrupt image data: ")
    assert reason == "corrupt image data: broken data stream when reading image file"


def test_bad_png_header_is_corrupt_not_unknown(tmp_path):
    assert _reason(write_bad_png_header(tmp_path)) == "corrupt image data: invalid png header"


def test_corrupt_bmp_header(tmp_path):
    path = tmp_path / "bad.bmp"
    path.write_bytes(b"BM" + b"\x00" * 60)
    assert _reason(path).startswith("corrupt image data: ")


def test_directory(tmp_path):
    assert _reason(tmp_path) == "not a regular file"


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "file not found"
    assert _reason(tmp_path / "nope" / "deeper.jpg") == "file not found"
    (tmp_path / "file").write_bytes(b"x")
    assert _reason(tmp_path / "file" / "below.jpg") == "file not found"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_broken_symlink(tmp_path):
    assert _reason(write_broken_symlink(tmp_path)) == "file not found"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_rejected_without_blocking(tmp_path):
    # Opening a FIFO for reading normally blocks until a writer appears.
    assert _reason(write_fifo(tmp_path)) == "not a regular file"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_device_file():
    assert _reason("/dev/null") == "not a regular file"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_file(tmp_path):
    path = write_unreadable(tmp_path)
    try:
        if os.geteuid() == 0:  # root reads mode-000 files anyway
            rgb, _ = load_rgb(path)
            assert rgb.shape == (32, 32, 3)
        else:
            assert _reason(path) == "permission denied"
    finally:
        path.chmod(0o644)


def test_nul_in_name(tmp_path):
    assert _reason(str(tmp_path / "a\x00b.jpg")) == "invalid file name"


def test_decompression_bomb_by_limit(tmp_path):
    path = write_image(tmp_path, "b.png", noise_image(100, 100), "PNG")
    assert _reason(path, max_pixels=1000) == (
        "decompression bomb: 100x100 pixels exceeds the limit of 1000"
    )
    rgb, _ = load_rgb(path, max_pixels=10_000)  # exactly at the limit is fine
    assert rgb.shape == (100, 100, 3)


def test_decompression_bomb_header_only(tmp_path):
    # 100 Mpx: above Pillow 13's *warning* threshold (89.5 Mpx), below its error: our own
    # check fires before any pixel is allocated, and the DecompressionBombWarning is hidden.
    path = write_png_header_only(tmp_path, 10000, 10000)
    assert path.stat().st_size < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _reason(path, max_pixels=50_000_000) == (
            "decompression bomb: 10000x10000 pixels exceeds the limit of 50000000"
        )


@pytest.mark.parametrize("max_pixels", [DEFAULT_MAX_PIXELS, None, 10**12])
def test_decompression_bomb_beyond_pillow_limit(tmp_path, max_pixels):
    # Pillow raises DecompressionBombError itself at open time (above
    # 2 * Image.MAX_IMAGE_PIXELS): still a DecodeError, whatever max_pixels says.
    path = write_png_header_only(tmp_path, 15000, 15000)
    limit = 2 * Image.MAX_IMAGE_PIXELS
    expected = {
        f"decompression bomb: 225000000 pixels exceeds the limit of {limit}",
        f"decompression bomb: 15000x15000 pixels exceeds the limit of {max_pixels}",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _reason(path, max_pixels=max_pixels) in expected


def test_header_only_png_without_limit_is_truncated(tmp_path):
    path = write_png_header_only(tmp_path, 300, 200)
    assert _reason(path) == "truncated image data"


def test_no_global_pillow_state_changed(tmp_path):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    load_rgb(write_image(tmp_path, "a.png", noise_image(), "PNG"), max_pixels=10**10)
    with pytest.raises(DecodeError):
        load_rgb(write_truncated(tmp_path, "JPEG"))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_pillow_exceptions_never_escape(tmp_path):
    # A grab bag of near-valid headers; whatever Pillow raises must become DecodeError.
    blobs = [
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40,
        b"GIF89a\xff\xff\xff\xff" + b"\x00" * 20,
        b"II*\x00\x08\x00\x00\x00" + b"\xff" * 40,
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
        b"P6\n99999 99999\n255\n" + b"\x00" * 10,
        b"P5\n0 0\n255\n",
        b"BM" + b"\xff" * 60,
    ]
    for i, blob in enumerate(blobs):
        with pytest.raises(DecodeError) as excinfo:
            load_rgb_bytes(blob)
        assert excinfo.value.reason == excinfo.value.reason.lower(), i


def test_no_warnings_or_resource_warnings(tmp_path):
    paths = [
        write_truncated(tmp_path, "JPEG"),
        write_text(tmp_path),
        write_image(tmp_path, "ok.gif", noise_image().convert("P"), "GIF"),
        write_png_header_only(tmp_path, 15000, 15000),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in paths:
            try:
                load_rgb(path)
            except DecodeError:
                pass
        gc.collect()


def test_invalid_parameters(tmp_path):
    path = write_image(tmp_path, "a.png", noise_image(), "PNG")
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(InvalidInputError, match="min_side"):
            load_rgb(path, min_side=bad)
    for bad in (0, -5, 1.5):
        with pytest.raises(InvalidInputError, match="max_pixels"):
            load_rgb(path, max_pixels=bad)
    rgb, _ = load_rgb(path, min_side=np.int64(16), max_pixels=np.int32(10**6))
    assert rgb.shape == (16, 22, 3)  # 48 // 16 = 3: reduced by 3, ceil(64 / 3) = 22


def test_decode_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(DecodeError("truncated image data")))
    assert isinstance(err, DecodeError) and err.reason == "truncated image data"


# --------------------------------------------------------------------------- paths & API


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_file_names(tmp_path, name):
    path = write_image(tmp_path, name, Image.new("RGB", (12, 8), BLUE), "PNG")
    rgb, info = load_rgb(path)
    assert (rgb == BLUE).all() and info.format == "PNG"
    rgb2, _ = load_rgb(str(path))
    np.testing.assert_array_equal(rgb, rgb2)


def test_read_and_decode_returns_raw_bytes(tmp_path):
    path = write_image(tmp_path, "a.jpg", noise_image(300, 260), "JPEG")
    raw = path.read_bytes()
    data, rgb, info = read_and_decode(path)
    assert data == raw
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(raw).hexdigest()
    assert info.file_size == len(raw)
    rgb2, info2 = load_rgb_bytes(raw)
    np.testing.assert_array_equal(rgb, rgb2)
    assert info == info2


def test_returned_array_is_readonly_and_independent(tmp_path):
    rgb, _ = load_rgb(write_image(tmp_path, "a.png", noise_image(), "PNG"))
    assert not rgb.flags.writeable
    copy = rgb.copy()
    copy[0, 0] = 0  # callers that need to modify copy first
    assert copy.flags.c_contiguous


def test_image_info_is_frozen(tmp_path):
    _, info = load_rgb(write_image(tmp_path, "a.png", noise_image(), "PNG"))
    with pytest.raises(AttributeError):
        info.width = 5  # type: ignore[misc]


def test_pathlike_and_str_equivalent(tmp_path):
    path = write_image(tmp_path, "a.bmp", noise_image(), "BMP")
    a, ia = load_rgb(path)
    b, ib = load_rgb(os.fspath(path))
    np.testing.assert_array_equal(a, b)
    assert ia == ib
    assert isinstance(path, Path)


def test_encode_helper_matches_file(tmp_path):
    img = noise_image()
    assert write_image(tmp_path, "x.png", img, "PNG").read_bytes() == encode(img, "PNG")


# --------------------------------------------------------------------------------------
# plain JPEGs decoded through simplejpeg: the same result as Pillow's path


def _gradient(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like picture: smooth gradients plus noise (pure noise hides upsampling errors)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 7 % 256], -1)
    return np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)


def _jpeg(width: int, height: int, seed: int = 0, mode: str = "RGB", **save) -> bytes:
    buf = __import__("io").BytesIO()
    Image.fromarray(_gradient(width, height, seed)).convert(mode).save(buf, "JPEG", **save)
    return buf.getvalue()


def _pillow_decode(data: bytes, min_side: int, full_size_below: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return imaging._decode(data, min_side, DEFAULT_MAX_PIXELS, full_size_below)


@pytest.mark.parametrize("size", [(32, 32), (33, 17), (256, 256), (201, 513), (640, 480), (4000, 300)])
@pytest.mark.parametrize("variant", [
    {"quality": 90},
    {"quality": 35, "subsampling": 0},
    {"quality": 75, "subsampling": 1, "progressive": True},
    {"quality": 80, "mode": "L"},
    {"qtables": "web_high"},
])
def test_plain_jpeg_fast_path_matches_pillow(size, variant):
    data = _jpeg(*size, seed=size[0], **variant)
    for min_side, full_below in ((32, 0), (64, 256), (128, 256), (256, 0)):
        fast = imaging._decode_plain_jpeg(data, min_side, DEFAULT_MAX_PIXELS, full_below)
        assert fast is not None  # a plain JPEG never falls back
        rgb, info = fast
        ref_rgb, ref_info = _pillow_decode(data, min_side, full_below)
        assert np.array_equal(rgb, ref_rgb), (min_side, full_below)
        assert info == ref_info  # size, mode, format, frames, file size, quantization table
        assert not rgb.flags.writeable and rgb.flags.c_contiguous
        assert rgb.shape[2] == 3


def test_jpeg_with_exif_or_mpo_or_cmyk_is_left_to_pillow(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = __import__("io").BytesIO()
    Image.fromarray(_gradient(64, 48, 1)).save(buf, "JPEG", exif=exif.tobytes())
    assert imaging._plain_jpeg_header(buf.getvalue())[0] is False
    rgb, info = load_rgb_bytes(buf.getvalue())
    assert rgb.shape == (64, 48, 3) and (info.width, info.height) == (48, 64)  # rotated by Pillow
    cmyk = _jpeg(40, 30, mode="CMYK")
    assert imaging._decode_plain_jpeg(cmyk, 64, DEFAULT_MAX_PIXELS, 0) is None
    assert load_rgb_bytes(cmyk)[1].mode == "CMYK"


def test_broken_jpegs_keep_pillows_reasons():
    data = _jpeg(256, 256, quality=90)
    assert imaging._decode_plain_jpeg(data[: len(data) // 2], 64, DEFAULT_MAX_PIXELS, 0) is None
    with pytest.raises(DecodeError, match="truncated image data"):
        load_rgb_bytes(data[: len(data) // 2])
    garbled = data[:600] + bytes(200) + data[800:]
    try:
        rgb, _ = load_rgb_bytes(garbled, min_side=64)
    except DecodeError as exc:  # whatever Pillow makes of it, never another exception
        assert exc.reason.startswith(("corrupt image data", "truncated image data"))
    else:
        assert rgb.shape == (64, 64, 3)


def test_jpeg_decompression_bomb_from_header(tmp_path):
    data = bytearray(_jpeg(64, 48))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (8000).to_bytes(2, "big") + (10000).to_bytes(2, "big")  # height, width
    # Our limit, checked on the header alone, with the Pillow path's message.
    with pytest.raises(DecodeError, match="decompression bomb: 10000x8000 pixels exceeds the limit of 1000000"):
        load_rgb_bytes(bytes(data), max_pixels=1_000_000)
    # Beyond Pillow's own limit, Pillow's message, as before.
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") + (30000).to_bytes(2, "big")
    with pytest.raises(DecodeError, match="decompression bomb: 600000000 pixels"):
        load_rgb_bytes(bytes(data), max_pixels=None)
