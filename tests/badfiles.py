"""Write bad, odd and tricky image files into a directory, for tests.

Every helper takes the target directory (usually pytest's ``tmp_path``) and returns the
:class:`~pathlib.Path` it wrote. Import with ``from badfiles import ...`` (pytest puts the
``tests`` folder on ``sys.path``).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Names that break naive shell / path handling; all legal on Linux.
ODD_NAMES: tuple[str, ...] = (
    "with space.jpg",
    "ünïcødé 图像.jpg",
    "-leading-dash.jpg",
    "new\nline.jpg",
    "quote'\"s.jpg",
    "#hash;semi&amp.jpg",
)


def encode(image: Image.Image, fmt: str, **save_kwargs: object) -> bytes:
    """Return ``image`` encoded as ``fmt`` (a Pillow format name)."""
    buf = io.BytesIO()
    image.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def write_bytes(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory / name`` and return the path."""
    path = Path(directory) / name
    path.write_bytes(data)
    return path


def write_image(
    directory: Path, name: str, image: Image.Image, fmt: str, **save_kwargs: object
) -> Path:
    """Save ``image`` as ``fmt`` under ``name`` (the extension is not used to pick it)."""
    return write_bytes(directory, name, encode(image, fmt, **save_kwargs))


def noise_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A deterministic RGB noise image (incompressible, so truncation really cuts pixels)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_empty(directory: Path, name: str = "empty.jpg") -> Path:
    """A 0-byte file with an image extension."""
    return write_bytes(directory, name, b"")


def write_text(directory: Path, name: str = "notes.jpg") -> Path:
    """A plain text file with an image extension."""
    return write_bytes(directory, name, b"this is not an image\nreally, it is text\n" * 20)


def write_svg(directory: Path, name: str = "drawing.svg") -> Path:
    """A real SVG document (vector text, which Pillow does not read)."""
    svg = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<rect width="64" height="64" fill="red"/></svg>\n'
    )
    return write_bytes(directory, name, svg)


def write_garbage(directory: Path, name: str = "garbage.jpg", size: int = 4096) -> Path:
    """Bytes with no image signature at all."""
    return write_bytes(directory, name, (b"GARBAGE\x00\x13\x37" * (size // 10 + 1))[:size])


def write_truncated(
    directory: Path, fmt: str = "JPEG", name: str | None = None, fraction: float = 0.5
) -> Path:
    """A valid 128x96 noise image of format ``fmt`` cut to ``fraction`` of its length."""
    data = encode(noise_image(128, 96), fmt)
    name = name or f"truncated.{fmt.lower()}"
    return write_bytes(directory, name, data[: int(len(data) * fraction)])


def write_corrupt_png(directory: Path, name: str = "corrupt.png") -> Path:
    """A PNG whose compressed pixel data (IDAT) has one byte flipped."""
    data = bytearray(encode(noise_image(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0xFF
    return write_bytes(directory, name, bytes(data))


def write_bad_png_header(directory: Path, name: str = "bad_header.png") -> Path:
    """A PNG whose IHDR checksum is wrong (signature is fine)."""
    data = bytearray(encode(noise_image(16, 16), "PNG"))
    data[20] ^= 0xFF  # inside the IHDR width/height field
    return write_bytes(directory, name, bytes(data))


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + tag
        + payload
        + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)
    )


def write_png_header_only(
    directory: Path, width: int, height: int, name: str = "bomb.png"
) -> Path:
    """A tiny (~60 byte) PNG whose header claims ``width x height`` RGB pixels.

    Useful for decompression-bomb tests: the check must happen before any pixel is
    decoded (decoding would fail anyway, the IDAT holds one byte of pixels).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00"))
        + _png_chunk(b"IEND", b"")
    )
    return write_bytes(directory, name, data)


def write_fifo(directory: Path, name: str = "pipe.jpg") -> Path:
    """A named pipe with an image name (POSIX only); reading it naively would block."""
    path = Path(directory) / name
    os.mkfifo(path)
    return path


def write_unreadable(directory: Path, name: str = "secret.jpg") -> Path:
    """A valid JPEG with mode 000 (still readable when the tests run as root)."""
    path = write_image(directory, name, noise_image(32, 32), "JPEG")
    path.chmod(0)
    return path


def write_broken_symlink(directory: Path, name: str = "dangling.jpg") -> Path:
    """A symlink pointing to a file that does not exist."""
    path = Path(directory) / name
    path.symlink_to(Path(directory) / "does-not-exist.jpg")
    return path
