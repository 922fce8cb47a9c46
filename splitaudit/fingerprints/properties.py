"""Per-image properties (size, exposure, colour, sharpness, encoding) for drift checks.

A split can differ from training without sharing a single image with it: other cameras,
other resolutions, a re-encoding step applied to one split only, greyscale scans mixed in.
The ``property_drift`` check compares the distributions of the cheap, interpretable
properties computed here. They are computed once per image, in the decoding workers, on the
pixels already decoded for the fingerprints (no second decode), and stored next to the
fingerprints (and in the cache) as one float32 row per image, with NaN where a property
does not apply (the JPEG quality of a PNG).

Everything here is pure: numbers in, numbers out.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from splitaudit.errors import invalid_param
from splitaudit.imaging import ImageInfo

__all__ = [
    "CATEGORICAL",
    "PROPERTIES_VERSION",
    "PROPERTY_NAMES",
    "SHARPNESS_SIDE",
    "category_code",
    "channels_of_mode",
    "estimate_jpeg_quality",
    "ijg_quantization_table",
    "image_properties",
    "nan_properties",
    "properties_from_bytes",
    "properties_many",
    "table_properties",
]

#: Column names of a properties row, in order (append only: rows are cached by position).
PROPERTY_NAMES: tuple[str, ...] = (
    "width",  # original width in pixels, after EXIF orientation
    "height",  # original height in pixels, after EXIF orientation
    "aspect_ratio",  # width / height
    "brightness",  # mean luma, in [0, 1]
    "contrast",  # standard deviation of luma, in [0, 1]
    "saturation",  # mean HSV saturation, in [0, 1]
    "sharpness",  # variance of the Laplacian of luma at a fixed size (see SHARPNESS_SIDE)
    "channels",  # channels of the file as stored: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha/CMYK
    "mode",  # code in CATEGORICAL["mode"]
    "format",  # code in CATEGORICAL["format"]
    "jpeg_quality",  # IJG quality estimated from the luminance quantization table; NaN if not JPEG
    "file_size",  # bytes
    "n_frames",  # frames (pages) in the file
)

#: Vocabulary of each categorical column; the stored value is ``float(index)``. Values outside
#: the vocabulary are stored as the index of ``"other"`` (always last).
CATEGORICAL: dict[str, tuple[str, ...]] = {
    "mode": ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F", "other"),
    "format": ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "MPO", "ICO", "JPEG2000", "other"),
}

#: Changes whenever a property's definition changes (part of the fingerprint cache identity).
PROPERTIES_VERSION = 1

#: Shorter side of the grey image the luma statistics and the sharpness are measured on. A
#: fixed size makes them independent of the file's resolution (and of JPEG draft decoding):
#: a 4000 px photograph and its 128 px thumbnail get nearly the same values.
SHARPNESS_SIDE = 64
#: Longest side of that image, as a multiple of the shorter one (caps the cost of panoramas).
_MAX_ASPECT = 4
# Smallest shorter side saturation is averaged at (see _pixel_stats_many).
_SATURATION_SIDE = 32

# 1 / v for v in 0..255 (0 for 0: a black pixel has saturation 0), for HSV saturation.
_RECIPROCAL = np.concatenate([[0.0], 1.0 / np.arange(1, 256)]).astype(np.float32)
_CODES = {col: {v: float(i) for i, v in enumerate(vocab)} for col, vocab in CATEGORICAL.items()}
# Pillow modes that are spelled differently but store the same kind of data.
_MODE_ALIASES = {"I;16B": "I;16", "I;16L": "I;16", "I;16N": "I;16", "La": "LA", "RGBa": "RGBA"}
_MODE_CHANNELS = {
    "1": 1, "L": 1, "I": 1, "F": 1, "I;16": 1,
    "LA": 2, "La": 2,
    "P": 3,  # palette entries are colours (a palette transparency is not counted)
    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBX": 3,
    "PA": 4, "RGBA": 4, "RGBa": 4, "CMYK": 4,
}

# The IJG (libjpeg) example luminance quantization table (ITU-T T.81, Annex K), in natural
# (row-major) order, which is also the order of Pillow's ``Image.quantization`` tables.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


def ijg_quantization_table(quality: int) -> np.ndarray:
    """Luminance quantization table libjpeg writes for ``quality`` (1..100), natural order.

    Same scaling as libjpeg's ``jpeg_quality_scaling`` with ``force_baseline``: entries are
    clamped to [1, 255].
    """
    q = int(quality)
    if not 1 <= q <= 100:
        raise invalid_param("quality", "ijg_quantization_table", "an int in [1, 100]", quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255)


# Every quality's table, in log space: the estimate is a nearest-neighbour lookup.
_LOG_TABLES = np.log(np.stack([ijg_quantization_table(q) for q in range(1, 101)]).astype(np.float64))


def estimate_jpeg_quality(table: Sequence[int] | np.ndarray | None) -> float:
    """IJG quality (1..100) whose luminance table is closest to ``table``.

    Files written by libjpeg (Pillow, OpenCV, ImageMagick, most tools) get their exact
    ``quality`` setting back. Tables from other encoders (cameras, Photoshop) get the IJG
    quality whose table is nearest in log scale (mean absolute log ratio): a comparable
    "effective quality".

    Parameters
    ----------
    table : sequence of 64 ints, or None
        Luminance (first) quantization table in natural order, as Pillow's
        ``image.quantization[0]`` gives it.

    Returns
    -------
    float
        The quality; NaN when ``table`` is None or not 64 positive values. When several
        qualities fit equally well (only near 100, where entries clamp to 1) their mean.
    """
    if table is None:
        return float("nan")
    if isinstance(table, tuple):  # hashable (ImageInfo.quantization): a dataset has few tables
        return _quality_of_tuple(table)
    return _estimate_quality(table)


@functools.lru_cache(maxsize=512)
def _quality_of_tuple(table: tuple[int, ...]) -> float:
    return _estimate_quality(table)


def _estimate_quality(table: Sequence[int] | np.ndarray) -> float:
    arr = np.asarray(table, dtype=np.float64).reshape(-1)
    if arr.size != 64 or not np.all(arr > 0):
        return float("nan")
    err = np.abs(_LOG_TABLES - np.log(arr)).sum(axis=1)
    best = np.flatnonzero(err <= err.min() + 1e-9)
    return float(best.mean() + 1.0)


def category_code(column: str, value: str | None) -> float:
    """Code of ``value`` in ``CATEGORICAL[column]`` (the code of ``"other"`` when unknown)."""
    codes = _CODES[column]
    if column == "mode" and value is not None:
        value = _MODE_ALIASES.get(value, value)
    return codes.get(value, codes["other"]) if value is not None else codes["other"]


def channels_of_mode(mode: str) -> float:
    """Channels a Pillow mode stores: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha or CMYK.

    A palette (``P``) counts as 3 (its entries are colours); ``PA`` as 4. NaN for a mode
    Pillow does not know.
    """
    n = _MODE_CHANNELS.get(mode)
    if n is None:
        if mode.startswith("I;16"):
            return 1.0
        try:
            return float(len(Image.getmodebands(mode)))
        except (KeyError, ValueError):
            return float("nan")
    return float(n)


def nan_properties() -> np.ndarray:
    """A row of NaN: the properties of a sample that did not decode."""
    return np.full(len(PROPERTY_NAMES), np.nan, np.float32)


def image_properties(
    rgb: np.ndarray,
    info: ImageInfo,
    raw: bytes | None = None,
    image: Image.Image | None = None,
) -> np.ndarray:
    """Properties of one decoded image, as a float32 row ordered like :data:`PROPERTY_NAMES`.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8 pixels as decoded by :func:`splitaudit.imaging.load_rgb_bytes`
        (possibly at reduced size: the pixel statistics are measured at a fixed size anyway).
    info : ImageInfo
        What the decoder read from the file: original size, mode, format, frames, file size
        and (for JPEG) the luminance quantization table.
    raw : bytes, optional
        The encoded file. Only used when ``info`` carries no quantization table although the
        file is a JPEG (an ``ImageInfo`` made elsewhere): the table is then read from the
        file's header (no pixel is decoded).
    image : PIL.Image.Image, optional
        ``rgb`` as an RGB Pillow image, when the caller already has one (saves a conversion).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(len(PROPERTY_NAMES),)``; NaN where a property does not apply.
    """
    return properties_many([rgb], [info], raws=[raw], images=[image])[0]


def properties_many(
    rgbs: Sequence[np.ndarray],
    infos: Sequence[ImageInfo],
    *,
    raws: Sequence[bytes | None] | None = None,
    images: Sequence[Image.Image | None] | None = None,
    greys: Sequence[Image.Image | None] | None = None,
) -> np.ndarray:
    """:func:`image_properties` of many images at once (a worker's chunk).

    The Pillow steps run per image; the arithmetic runs once per group of images whose
    working arrays have the same shape (every image of a uniform dataset), which is what
    made it cost 0.08 ms per image one by one.

    Parameters
    ----------
    rgbs, infos, raws, images
        Per image, as the arguments of :func:`image_properties`.
    greys : sequence of PIL.Image.Image or None, optional
        ``images[i].convert("L")`` where the caller made it already (for the thumbnail).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(len(rgbs), len(PROPERTY_NAMES))``.
    """
    n = len(rgbs)
    raws = raws if raws is not None else [None] * n
    images = images if images is not None else [None] * n
    greys = greys if greys is not None else [None] * n
    out = np.empty((n, len(PROPERTY_NAMES)), np.float32)
    if n == 0:
        return out
    stats = _pixel_stats_many(rgbs, images, greys)
    for i, info in enumerate(infos):
        width, height = int(info.width), int(info.height)
        table = getattr(info, "quantization", None)
        if table is None and raws[i] is not None and info.format in ("JPEG", "MPO"):
            table = _luma_table_from_bytes(raws[i])
        out[i] = (
            width,
            height,
            width / height if height > 0 else np.nan,
            *stats[i],
            channels_of_mode(info.mode),
            category_code("mode", info.mode),
            category_code("format", info.format),
            estimate_jpeg_quality(table),
            info.file_size,
            info.n_frames,
        )
    return out


def properties_from_bytes(data: bytes, *, min_side: int = 128, full_size_below: int = 0) -> np.ndarray:
    """Decode ``data`` and return its properties (convenience for tools and tests).

    ``min_side`` and ``full_size_below`` are passed to
    :func:`~splitaudit.imaging.load_rgb_bytes`.

    Raises
    ------
    DecodeError
        When the data does not decode.
    """
    from splitaudit.imaging import load_rgb_bytes

    rgb, info = load_rgb_bytes(data, min_side=min_side, full_size_below=full_size_below)
    return image_properties(rgb, info, data)


def table_properties(rows: Sequence[np.ndarray | None]) -> np.ndarray:
    """Stack property rows into an ``(N, len(PROPERTY_NAMES))`` float32 array (None -> NaN)."""
    out = np.full((len(rows), len(PROPERTY_NAMES)), np.nan, np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return out


# --------------------------------------------------------------------------------------
# internals


def _fixed_size(width: int, height: int) -> tuple[int, int]:
    """(w, h) with the shorter side SHARPNESS_SIDE and the aspect kept up to _MAX_ASPECT."""
    side = SHARPNESS_SIDE
    cap = side * _MAX_ASPECT
    if width >= height:
        return min(cap, max(side, round(side * width / height))), side
    return side, min(cap, max(side, round(side * height / width)))


def _pixel_stats_many(
    rgbs: Sequence[np.ndarray],
    images: Sequence[Image.Image | None],
    greys: Sequence[Image.Image | None],
) -> list[list[float]]:
    """[brightness, contrast, saturation, sharpness] of each decoded image.

    Luma statistics and sharpness are measured on a grey image of the fixed size
    :func:`_fixed_size`; saturation, whose mean barely depends on resolution, on the colour
    image box-reduced by an integer factor to a shorter side of 32 to 63 pixels (exact
    resizing of three channels, or per-pixel arithmetic at full size, would cost more than
    everything else here). The Pillow reductions run per image, the arithmetic on stacks
    of equal shape (the same numbers as one by one: per-row reductions in the same order).
    """
    colours, lumas = [], []
    for rgb, image, grey in zip(rgbs, images, greys):
        h, w = rgb.shape[:2]
        size = _fixed_size(w, h)
        base = Image.fromarray(np.ascontiguousarray(rgb)) if image is None else image
        factor = min(w // size[0], h // size[1])
        # Integer box averaging (reduce) is far cheaper than a resize.
        small = base.reduce(factor) if factor >= 2 else base
        side = min(small.size)
        colour = small.reduce(side // _SATURATION_SIDE) if side >= 2 * _SATURATION_SIDE else small
        colours.append(np.asarray(rgb) if colour is base else np.asarray(colour))  # no copy
        # Luma as Pillow's convert("L") computes it (ITU-R 601-2).
        if small is not base or grey is None:
            grey = small.convert("L")
        if grey.size != size:
            # BOX when shrinking (area average); BILINEAR when a small image is enlarged, so
            # its lack of detail reads as blur rather than as blocky edges.
            shrink = grey.width >= size[0] and grey.height >= size[1]
            grey = grey.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
        lumas.append(np.asarray(grey))
    out = [[0.0] * 4 for _ in rgbs]
    for rows in _same_shape(colours):
        arr = np.stack([colours[i] for i in rows]).reshape(len(rows), -1, 3)
        # HSV saturation (max - min) / max per pixel, from the channels (cheaper than HSV).
        r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
        top = np.maximum(np.maximum(r, g), b)
        saturation = ((top - np.minimum(np.minimum(r, g), b)) * _RECIPROCAL[top]).mean(axis=1)
        for i, v in zip(rows, saturation.tolist()):
            out[i][2] = v
    for rows in _same_shape(lumas):
        # Integer arithmetic (the Laplacian lies in [-1020, 1020]): sums are exact whatever
        # the order, so the values do not depend on the CPU or the batch, and cost a third of
        # the same exact sums in float64.
        luma = np.stack([lumas[i] for i in rows]).astype(np.int16)
        lap = ((luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:]) + (luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1])
               - 4 * luma[:, 1:-1, 1:-1])
        mean, var = _mean_var(luma.reshape(len(rows), -1))
        _, lap_var = _mean_var(lap.reshape(len(rows), -1))
        for i, m, v, lv in zip(rows, mean.tolist(), var.tolist(), lap_var.tolist()):
            out[i][0], out[i][1], out[i][3] = m / 255, v ** 0.5 / 255, lv / 255**2
    return out


def _same_shape(arrays: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``arrays`` grouped by shape."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    return list(groups.values())


def _mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance of each row of small integers, exactly summed."""
    n = x.shape[1]
    total = x.sum(axis=1, dtype=np.int64).astype(np.float64)
    squares = np.square(x, dtype=np.int32).sum(axis=1, dtype=np.int64).astype(np.float64)
    mean = total / n
    return mean, np.maximum(0.0, (squares - total * mean) / n)


def _luma_table_from_bytes(data: bytes) -> list[int] | None:
    """The first quantization table of a JPEG, read from its header only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as im:
                tables = getattr(im, "quantization", None) or {}
                return list(tables[0]) if 0 in tables else None
        except (OSError, ValueError, SyntaxError, EOFError):
            # The pixels decoded already; a header Pillow now rejects only hides the quality.
            return None
