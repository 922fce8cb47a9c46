"""Per-image fingerprints: digests, perceptual hashes and the grey thumbnail used for matching.

Everything here is pure: it takes bytes and decoded pixels and returns arrays. The caller
(``splitaudit.extract``) reads files and runs this in worker processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

#: Side of the square grey thumbnail kept for every image (1 KiB as uint8). It is also exactly
#: the 32x32 image imagehash's pHash computes its DCT from, so the hash comes for free.
THUMB_SIZE = 32
#: Bytes of a perceptual hash (64 bits).
HASH_BYTES = 8
#: Bytes of a content digest (BLAKE2b-128: collisions are not a practical concern).
DIGEST_BYTES = 16


@dataclass(frozen=True)
class ImageFingerprint:
    """Fingerprints of one decoded image.

    Attributes
    ----------
    file_digest : bytes
        BLAKE2b-128 of the file bytes: equal for byte-identical files.
    pixel_digest : bytes
        BLAKE2b-128 of the decoded RGB pixels and their shape: equal for the same picture
        stored in different lossless encodings (PNG, BMP, TIFF, ...).
    phash : bytes
        imagehash pHash (64 bits, packed).
    phash_flip : bytes
        pHash of the horizontally mirrored image, so a flipped copy is one Hamming lookup away.
    thumb : numpy.ndarray
        (THUMB_SIZE, THUMB_SIZE) uint8 grey thumbnail of the whole image (aspect ignored).
    cnn_input : numpy.ndarray or None
        (S, S, 3) uint8 RGB image for the CNN, when one was asked for.
    """

    file_digest: bytes
    pixel_digest: bytes
    phash: bytes
    phash_flip: bytes
    thumb: np.ndarray
    cnn_input: np.ndarray | None


def file_digest(data: bytes) -> bytes:
    """BLAKE2b-128 digest of raw file bytes."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def pixel_digest(rgb: np.ndarray) -> bytes:
    """BLAKE2b-128 digest of an (H, W, 3) uint8 array, shape included."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    h.update(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(rgb).data)
    return h.digest()


def grey_thumbnail(image: Image.Image) -> Image.Image:
    """The 32x32 grey thumbnail, made the way imagehash's pHash makes its input.

    ``reducing_gap`` lets Pillow shrink large images in integer steps first: same result to
    within a grey level, several times faster on 1-megapixel inputs.
    """
    return image.convert("L").resize(
        (THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0
    )


def _phash_bytes(thumb: Image.Image) -> bytes:
    # imagehash resizes to 32x32 first; our thumbnail already is, so this is its exact pHash.
    bits = imagehash.phash(thumb, hash_size=8, highfreq_factor=4).hash
    return np.packbits(bits.reshape(-1)).tobytes()


def as_image(rgb: np.ndarray) -> Image.Image:
    """``rgb`` as a Pillow image, made once per sample and shared by every fingerprint."""
    return Image.fromarray(rgb, mode="RGB") if rgb.ndim == 3 else Image.fromarray(rgb)


def fingerprint_image(
    raw: bytes, rgb: np.ndarray, *, cnn_size: int | None = None, reduced: bool = False,
    image: Image.Image | None = None,
) -> ImageFingerprint:
    """Compute every fingerprint of one image.

    Parameters
    ----------
    raw : bytes
        The file's bytes (for the content digest).
    rgb : numpy.ndarray
        (H, W, 3) uint8 decoded pixels.
    cnn_size : int or None
        When given, also return the image resized to (cnn_size, cnn_size) for the CNN.
    reduced : bool
        True when ``rgb`` was decoded at reduced size (JPEG draft mode): its pixels then say
        nothing about the full-size pixels, so the pixel digest is derived from the file digest
        instead (such an image is an exact match only of byte-identical files).
    image : PIL.Image.Image, optional
        ``rgb`` as a Pillow image, when the caller already has one (see :func:`as_image`).

    Returns
    -------
    ImageFingerprint
    """
    image = as_image(rgb) if image is None else image
    thumb = grey_thumbnail(image)
    cnn_input = None
    if cnn_size is not None:
        cnn_input = np.asarray(
            image.resize((cnn_size, cnn_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        )
    fdig = file_digest(raw)
    pdig = file_digest(b"reduced:" + fdig) if reduced else pixel_digest(rgb)
    return ImageFingerprint(
        file_digest=fdig,
        pixel_digest=pdig,
        phash=_phash_bytes(thumb),
        phash_flip=_phash_bytes(thumb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        thumb=np.asarray(thumb, dtype=np.uint8),
        cnn_input=cnn_input,
    )
