"""Decode any image file Pillow can read into a small 8-bit RGB array.

This is the single place where splitaudit touches image bytes. It runs once per sample
(tens of thousands of times per scan, in worker processes), so it reads each file once,
decodes from memory, decodes JPEGs at reduced size and never keeps more pixels than the
fingerprints need. Every failure is reported as a :class:`~splitaudit.errors.DecodeError`
with a short, stable, lowercase ``reason``.

Pillow's global settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``)
are never changed; the pixel limit is enforced here, per call.
"""

from __future__ import annotations

import io
import operator
import os
import re
import stat
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from splitaudit.errors import DecodeError, invalid_param

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageInfo",
    "load_rgb",
    "load_rgb_bytes",
    "read_and_decode",
]

#: Largest ``width * height`` accepted by default (about 0.18 gigapixels): Pillow's
#: ``Image.MAX_IMAGE_PIXELS`` before Pillow 13, and Pillow 13's hard error threshold
#: (``2 * Image.MAX_IMAGE_PIXELS``, with ``MAX_IMAGE_PIXELS = 89_478_485``).
DEFAULT_MAX_PIXELS = 178_956_970

_ORIENTATION_TAG = 0x0112  # EXIF "Orientation"
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# O_NONBLOCK: opening a FIFO must not block forever waiting for a writer (we reject it
# right after, on fstat). It has no effect on regular files. O_BINARY matters on Windows.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)

# Modes that are already one of the four working modes below.
_WORKING_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
# Signatures of common formats, to tell "broken PNG" from "not an image at all".
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"RIFF", "webp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
_BOMB_RE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


@dataclass(frozen=True)
class ImageInfo:
    """What the file said about itself, before any resizing.

    Attributes
    ----------
    width, height : int
        Original size in pixels, after the EXIF orientation was applied (so a portrait photo
        stored sideways reports ``width < height``). Not the size of the returned array,
        which may be smaller.
    format : str or None
        Pillow format name (``"JPEG"``, ``"PNG"``, ``"WEBP"``, ...), detected from the file's
        content, never from its extension.
    mode : str
        Pillow mode of the file as stored (``"RGB"``, ``"P"``, ``"CMYK"``, ``"I;16"``, ...).
    n_frames : int
        Number of frames (pages) Pillow found; more than 1 for animated GIF/PNG/WebP and
        multi-page TIFF. Only the first frame is decoded.
    file_size : int
        Size of the encoded file in bytes.
    quantization : tuple of int or None
        JPEG only: the first (luminance) quantization table, 64 values in natural (row-major)
        order, as Pillow's ``image.quantization[0]``; None for other formats. It tells how
        strongly the file was compressed (see
        :func:`splitaudit.fingerprints.properties.estimate_jpeg_quality`).
    """

    width: int
    height: int
    format: str | None
    mode: str
    n_frames: int
    file_size: int
    quantization: tuple[int, ...] | None = None


def read_and_decode(
    path: str | os.PathLike[str],
    *,
    min_side: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, np.ndarray, ImageInfo]:
    """Read a file once and decode it, returning the raw bytes too.

    Callers that also need a digest of the file (exact-duplicate detection) use this to
    avoid reading it a second time.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Any name is accepted (spaces, unicode, leading dash, newline).
    min_side : int, default 256
        Smallest shorter side the returned array needs; see :func:`load_rgb_bytes`.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Largest ``width * height`` accepted; None disables this check (Pillow's own hard
        limit of ``2 * Image.MAX_IMAGE_PIXELS`` still applies).

    Returns
    -------
    data : bytes
        The whole file content.
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous, read-only RGB array.
    info : ImageInfo
        Original size, format, mode, frame count and file size.

    Raises
    ------
    DecodeError
        If the file cannot be read or decoded; ``reason`` says why.
    """
    min_side, max_pixels = _check_params(min_side, max_pixels)
    data = _read_file(path)
    rgb, info = _decode_bytes(data, min_side, max_pixels)
    return data, rgb, info


def load_rgb(
    path: str | os.PathLike[str],
    *,
    min_side: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image file to an ``(H, W, 3)`` uint8 C-contiguous RGB array.

    Same as :func:`read_and_decode` without the raw bytes; see :func:`load_rgb_bytes` for
    how pixels are normalized and downscaled.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    min_side : int, default 256
        Smallest shorter side the returned array needs.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Largest ``width * height`` accepted (decompression-bomb guard).

    Returns
    -------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous, read-only RGB array.
    info : ImageInfo
        Original size, format, mode, frame count and file size.

    Raises
    ------
    DecodeError
        If the file cannot be read or decoded; ``reason`` says why.
    """
    _, rgb, info = read_and_decode(path, min_side=min_side, max_pixels=max_pixels)
    return rgb, info


def load_rgb_bytes(
    data: bytes,
    *,
    min_side: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    full_size_below: int = 0,
) -> tuple[np.ndarray, ImageInfo]:
    """Decode an encoded image held in memory to an ``(H, W, 3)`` uint8 RGB array.

    Decoding steps and the choices made:

    * **Format** is detected from the content by Pillow; anything Pillow reads is accepted
      (JPEG, PNG, WebP, BMP, GIF, TIFF, PPM/PGM/PBM, ...). For animated or multi-page files
      only the first frame is decoded.
    * **Decompression bombs**: ``width * height`` from the header is checked against
      ``max_pixels`` before any pixel is decoded.
    * **Size**: JPEGs are decoded in draft mode (DCT scaling by 1/2, 1/4 or 1/8) to the
      smallest size whose sides are both still >= ``min_side``. Other formats decode at
      full size. If the shorter side is then more than ``2 * min_side``, the image is
      box-downscaled by an integer factor (:meth:`PIL.Image.Image.reduce`) so the shorter
      side lands in ``[min_side, 1.5 * min_side]``. Aspect ratio is kept; images smaller
      than ``min_side`` are returned at their own size, never upscaled.
    * **EXIF orientation** (tag 0x0112, also read from XMP by Pillow) is applied, like
      :func:`PIL.ImageOps.exif_transpose`.
    * **Modes** are normalized to 8-bit RGB:

      - ``1``, ``L``: gray replicated to 3 channels (``1`` becomes 0/255).
      - ``P``: palette looked up; a palette with transparency is treated as alpha.
      - Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, and ``L``/``RGB`` with a
        colour-key ``transparency``): composited onto a **white** background, so a
        transparent pixel becomes (255, 255, 255).
      - ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: Pillow's conversion to RGB (ICC
        profiles are ignored).
      - ``I;16``, ``I;16B``, ``I;16L``, ``I``: treated as 16-bit data (which is what Pillow
        produces for 16-bit PNG/TIFF/PGM) and scaled by full range, ``value >> 8`` after
        clipping ``I`` to ``[0, 65535]``; so 65535 maps to 255 and 32768 to 128 (Pillow's
        own ``convert("L")`` would clip everything above 255 to white).
      - ``F`` (float): if every finite value is <= 1.0 the data is taken as ``[0, 1]`` and
        multiplied by 255, otherwise as ``[0, 255]``; then clipped and rounded. NaN gives 0.

    Parameters
    ----------
    data : bytes
        Encoded image.
    min_side : int, default 256
        Smallest shorter side the returned array needs (a positive int).
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Largest ``width * height`` accepted; None disables this check. Pillow's own hard
        limit of ``2 * Image.MAX_IMAGE_PIXELS`` (178,956,970 with Pillow 13's defaults)
        still applies, since we may not raise Pillow's global setting; a larger value has
        no effect.
    full_size_below : int, default 0
        Images whose shorter side is below this are never draft-decoded nor reduced, whatever
        ``min_side`` allows (the caller wants their exact pixels, e.g. for a pixel digest).

    Returns
    -------
    rgb : numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous RGB array. It is **read-only** (it wraps the
        buffer Pillow produced, saving a copy); use ``rgb.copy()`` to modify it.
    info : ImageInfo
        Original size (after orientation), format, mode, frame count and ``len(data)``.

    Raises
    ------
    DecodeError
        If the data cannot be decoded; ``reason`` is e.g. ``"empty file (0 bytes)"``,
        ``"not an image (unrecognized format)"``, ``"truncated image data"``,
        ``"corrupt image data: <detail>"``, ``"decompression bomb: WxH pixels exceeds the
        limit of N"`` (``"decompression bomb: P pixels exceeds the limit of N"`` when
        Pillow's own limit fires first, before the size is known to us) or
        ``"unsupported image mode 'X'"``.
    """
    min_side, max_pixels = _check_params(min_side, max_pixels)
    keep = _as_int(full_size_below)
    if keep is None or keep < 0:
        raise invalid_param("full_size_below", "load_rgb", "a non-negative int", full_size_below)
    return _decode_bytes(data, min_side, max_pixels, keep)


# --------------------------------------------------------------------------------------
# internals


def _check_params(min_side: int, max_pixels: int | None) -> tuple[int, int | None]:
    """Validate the size parameters; accept any integer type (e.g. numpy ints)."""
    side = _as_int(min_side)
    if side is None or side < 1:
        raise invalid_param("min_side", "load_rgb", "a positive int", min_side)
    if max_pixels is None:
        return side, None
    limit = _as_int(max_pixels)
    if limit is None or limit < 1:
        raise invalid_param("max_pixels", "load_rgb", "a positive int or None", max_pixels)
    return side, limit


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):  # an int subclass, but never a meaningful size
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _read_file(path: str | os.PathLike[str]) -> bytes:
    """Return the whole content of a regular file, or raise DecodeError."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise DecodeError("file not found") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except IsADirectoryError:  # Windows / some platforms refuse to open directories
        raise DecodeError("not a regular file") from None
    except ValueError:  # embedded NUL byte
        raise DecodeError("invalid file name") from None
    except OSError as exc:
        raise DecodeError(_os_reason(exc)) from None
    try:
        # fstat on the open descriptor: no race between the check and the read.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DecodeError("not a regular file")
        f = open(fd, "rb", buffering=0)  # noqa: SIM115 - owns fd from here, closed below
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            return f.read()  # FileIO.readall: one allocation sized from fstat
        except IsADirectoryError:
            raise DecodeError("not a regular file") from None
        except OSError as exc:
            raise DecodeError(_os_reason(exc)) from None


def _os_reason(exc: OSError) -> str:
    detail = (exc.strerror or type(exc).__name__).lower()
    return f"read error: {detail}"


def _decode_bytes(
    data: bytes, min_side: int, max_pixels: int | None, full_size_below: int = 0
) -> tuple[np.ndarray, ImageInfo]:
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if data.startswith(b"\xff\xd8\xff"):
        fast = _decode_plain_jpeg(data, min_side, max_pixels, full_size_below)
        if fast is not None:
            return fast
    # Pillow warns (DecompressionBombWarning, palette transparency, bad EXIF, ...) through
    # the warnings module; none of that may reach our caller. catch_warnings swaps
    # process-global state (not thread-safe before Python 3.14); splitaudit decodes in
    # worker processes, one image at a time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _decode(data, min_side, max_pixels, full_size_below)
        except (DecodeError, MemoryError):
            raise
        except Image.DecompressionBombError as exc:
            raise DecodeError(_bomb_reason(exc)) from exc
        except UnidentifiedImageError as exc:
            raise DecodeError(_unidentified_reason(data)) from exc
        except Exception as exc:
            # Pillow plugins raise OSError, SyntaxError, ValueError, struct.error,
            # EOFError, IndexError, ... on malformed input: all mean "bad file".
            raise DecodeError(_corrupt_reason(exc)) from exc


# --------------------------------------------------------------------------------------
# plain JPEGs: libjpeg-turbo through simplejpeg, straight into numpy

#: Pillow's DCT scale factors, largest first (libjpeg-turbo also has M/8 factors Pillow
#: never uses: the fast path asks for Pillow's factor exactly, so both give the same pixels).
_DRAFT_SCALES = (8, 4, 2, 1)
#: libjpeg colour spaces the fast path decodes, with the Pillow mode of such a file.
_PLAIN_COLOURSPACES = {"YCbCr": "RGB", "RGB": "RGB", "Gray": "L"}
#: Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _zigzag_to_natural() -> tuple[int, ...]:
    """For each natural (row-major) position of an 8x8 block, its index in zigzag order."""
    order = sorted(((r, c) for r in range(8) for c in range(8)),
                   key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]))
    index = [0] * 64
    for z, (r, c) in enumerate(order):
        index[8 * r + c] = z
    return tuple(index)


#: Picks a table's 64 entries, stored in zigzag order, in natural order (as Pillow does).
_NATURAL_ORDER = operator.itemgetter(*_zigzag_to_natural())


def _plain_jpeg_header(data: bytes) -> tuple[bool, tuple[int, ...] | None]:
    """Walk a JPEG's markers up to its first scan: (plain, luminance quantization table).

    ``plain`` is False whenever Pillow's decoder must handle the file for its result to stay
    the same: an APP1 segment (EXIF or XMP, where Pillow reads the orientation), an APP2
    multi-picture (MPO) index, a sample precision other than 8 bits, or markers that are
    not laid out cleanly (Pillow skips junk; its error messages describe broken files). The
    table is Pillow's ``quantization[0]``: the last table 0 defined before the scan, in
    natural order.
    """
    pos, end_of_data, table = 2, len(data), None
    while pos + 4 <= end_of_data:
        if data[pos] != 0xFF:
            return False, None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the header is complete
            return True, table
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            return False, None
        end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if end < pos + 4 or end > end_of_data:
            return False, None
        if marker == 0xE1 or (marker == 0xE2 and data.startswith(b"MPF\0", pos + 4)):
            return False, None
        if marker in _SOF_MARKERS and data[pos + 4] != 8:
            return False, None
        if marker == 0xDB:  # quantization tables, several per segment possible
            at = pos + 4
            while at < end:
                wide = data[at] >> 4  # 0: 8-bit entries, 1: 16-bit big-endian entries
                stop = at + 1 + 64 * (wide + 1)
                if wide > 1 or stop > end:
                    return False, None
                if data[at] & 15 == 0:
                    raw = data[at + 1:stop]
                    values = raw if not wide else [(raw[2 * i] << 8) | raw[2 * i + 1] for i in range(64)]
                    table = _NATURAL_ORDER(values)
                at = stop
        pos = end
    return False, None


def _decode_plain_jpeg(
    data: bytes, min_side: int, max_pixels: int | None, full_size_below: int
) -> tuple[np.ndarray, ImageInfo] | None:
    """Decode a plain JPEG without Pillow's per-image overhead; None: let Pillow decode it.

    Same pixels as the Pillow path (both are libjpeg-turbo with its default DCT and fancy
    upsampling, at the same scale; ``tests/test_imaging.py`` compares them), in about half
    the time for a 256 px JPEG (0.13 vs 0.24 ms). Anything unusual, including every kind of
    broken file, goes back to Pillow, whose error reasons are the ones reported.
    """
    plain, table = _plain_jpeg_header(data)
    if not plain:
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    mode = _PLAIN_COLOURSPACES.get(colourspace)
    if mode is None or width < 1 or height < 1 or width * height > 2 * Image.MAX_IMAGE_PIXELS:
        return None  # CMYK/YCCK; or Pillow's own bomb limit, with Pillow's message
    _check_pixels(width, height, max_pixels)
    scale = 1
    if min(width, height) >= max(2 * min_side, full_size_below):  # as Pillow's draft()
        ratio = min(width // min_side, height // min_side)
        scale = next(s for s in _DRAFT_SCALES if ratio >= s)
    shape = (-(-height // scale), -(-width // scale))
    try:
        # strict: libjpeg's warnings (truncated or corrupt data) raise, and Pillow decides.
        arr = simplejpeg.decode_jpeg(data, colorspace="GRAY" if mode == "L" else "RGB",
                                     min_height=shape[0], min_width=shape[1], min_factor=scale)
    except ValueError:
        return None
    if arr.shape[:2] != shape:
        return None
    if mode == "L" or min(shape) > max(2 * min_side, full_size_below):
        # Grey to RGB, or a box reduction still to make: the Pillow path's own step.
        arr = np.asarray(_to_rgb(Image.fromarray(arr.reshape(shape) if mode == "L" else arr),
                                 min_side, full_size_below))
    arr.flags.writeable = False  # as the Pillow path's array (see load_rgb_bytes)
    info = ImageInfo(width=width, height=height, format="JPEG", mode=mode, n_frames=1,
                     file_size=len(data), quantization=table)
    return arr, info


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """The decompression-bomb check, on the size read from the header."""
    if max_pixels is not None and width * height > max_pixels:
        raise DecodeError(f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}")


def _decode(
    data: bytes, min_side: int, max_pixels: int | None, full_size_below: int = 0
) -> tuple[np.ndarray, ImageInfo]:
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        fmt, mode = im.format, im.mode
        quantization = _luma_quantization(im)  # parsed with the header: no extra pass
        if width < 1 or height < 1:
            raise DecodeError("corrupt image data: zero width or height")
        _check_pixels(width, height, max_pixels)
        if min(width, height) >= max(2 * min_side, full_size_below):
            # JPEG only (a no-op for other formats): let libjpeg scale by 1/2..1/8 while
            # decoding, keeping both sides >= min_side. Far faster and smaller than full
            # size. Skipped when no 1/2 scaling is possible (saves Pillow's overhead).
            im.draft("RGB", (min_side, min_side))
        im.load()
        orientation = _orientation(im)  # after load: PNG may store eXIf after IDAT
        out = _to_rgb(im, min_side, full_size_below)
        method = _TRANSPOSE.get(orientation)
        if method is not None:
            out = out.transpose(method)  # on the small image: cheaper than before reducing
            if method in (
                Image.Transpose.TRANSPOSE,
                Image.Transpose.TRANSVERSE,
                Image.Transpose.ROTATE_90,
                Image.Transpose.ROTATE_270,
            ):
                width, height = height, width
        # np.asarray wraps Pillow's bytes without another copy (hence read-only).
        rgb = np.asarray(out)
        n_frames = _n_frames(im)  # last: walking frames changes ``im`` (maybe ``out``)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:  # defensive
        raise DecodeError(f"unsupported image mode {mode!r}")
    info = ImageInfo(
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        n_frames=n_frames,
        file_size=len(data),
        quantization=quantization,
    )
    return rgb, info


def _luma_quantization(im: Image.Image) -> tuple[int, ...] | None:
    # JPEG and MPO files expose the tables Pillow parsed from their DQT segments.
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables:
        return None
    table = tuple(int(v) for v in tables[0])
    return table if len(table) == 64 else None


def _orientation(im: Image.Image) -> int:
    # A broken EXIF block must not make an otherwise good image undecodable.
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:
        return 1


def _n_frames(im: Image.Image) -> int:
    # GIF/TIFF count frames by walking the file; a broken later frame does not matter
    # since only the first one is used.
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:
        return 1


def _to_rgb(im: Image.Image, min_side: int, full_size_below: int = 0) -> Image.Image:
    """Normalize a loaded image to a (possibly reduced) 8-bit ``RGB`` image."""
    im = _to_working_mode(im)  # one of L, LA, RGB, RGBA
    short = min(im.size)
    if short > max(2 * min_side, full_size_below):
        # Integer box reduction: shorter side becomes ceil(short / factor) >= min_side.
        # Done before flattening alpha: reduce() premultiplies LA/RGBA itself.
        im = im.reduce(short // min_side)
    if im.mode in ("LA", "RGBA"):
        # Composite onto white: transparent pixels become white (a common "no content"
        # background), instead of whatever colour the hidden RGB values happen to hold.
        base = "L" if im.mode == "LA" else "RGB"
        bg = Image.new(base, im.size, 255 if base == "L" else (255, 255, 255))
        bg.paste(im, (0, 0), im)  # mask=im uses its alpha band
        im = bg
    if im.mode == "L":
        im = im.convert("RGB")
    return im


def _to_working_mode(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to one of L, LA, RGB, RGBA (8 bits per channel)."""
    mode = im.mode
    has_key = "transparency" in im.info
    if mode in _WORKING_MODES:
        if has_key and mode in ("L", "RGB"):
            return im.convert("LA" if mode == "L" else "RGBA")
        return im
    if mode == "1":
        return im.convert("L")
    if mode == "P":
        return im.convert("RGBA" if has_key else "RGB")
    if mode in ("PA", "RGBa"):
        return im.convert("RGBA")
    if mode == "La":
        # Pillow cannot convert La; premultiplied over white is simply c + (255 - a).
        arr = np.asarray(im).astype(np.int16)
        flat = np.clip(arr[..., 0] + (255 - arr[..., 1]), 0, 255).astype(np.uint8)
        return Image.fromarray(flat)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if arr.dtype.kind != "u" or arr.dtype.itemsize != 2:
            arr = np.clip(arr, 0, 65535)
        # Full-range 16 -> 8 bits; exact inverse of the usual 8 -> 16 bit v * 257.
        return Image.fromarray((arr >> 8).astype(np.uint8))
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        finite = np.isfinite(arr)
        peak = float(arr[finite].max()) if finite.any() else 0.0
        scaled = arr * 255.0 if peak <= 1.0 else arr.copy()
        scaled[~finite] = 0.0
        np.clip(scaled, 0.0, 255.0, out=scaled)
        return Image.fromarray(np.rint(scaled).astype(np.uint8))
    try:
        # CMYK, YCbCr, LAB, HSV, RGBX and anything else Pillow knows how to convert.
        return im.convert("RGB")
    except ValueError:
        raise DecodeError(f"unsupported image mode {mode!r}") from None


def _unidentified_reason(data: bytes) -> str:
    # Pillow also says "cannot identify" when a plugin recognized the signature but
    # rejected the header (e.g. a bad PNG IHDR checksum): report those as corrupt.
    for magic, name in _MAGIC:
        if data.startswith(magic) and (name != "webp" or data[8:12] == b"WEBP"):
            return f"corrupt image data: invalid {name} header"
    return "not an image (unrecognized format)"


def _bomb_reason(exc: Exception) -> str:
    match = _BOMB_RE.search(str(exc))
    if match:
        return f"decompression bomb: {match[1]} pixels exceeds the limit of {match[2]}"
    return "decompression bomb: image exceeds pillow's pixel limit"


def _corrupt_reason(exc: Exception) -> str:
    text = str(exc).strip()
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return "truncated image data"
    detail = text.splitlines()[0].strip().rstrip(".").lower() if text else ""
    if not detail:
        detail = type(exc).__name__.lower()
    if len(detail) > 100:
        detail = detail[:97] + "..."
    return f"corrupt image data: {detail}"
