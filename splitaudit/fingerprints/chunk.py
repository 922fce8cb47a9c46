"""Every fingerprint of a chunk of decoded images at once: the unit of work of a decoder.

Per image, the Pillow steps run once and are shared: one Pillow image, one grey conversion
for both the thumbnail and the luma statistics. Across the chunk, the arithmetic runs on
stacks: one DCT call for the pHashes (:func:`~splitaudit.fingerprints.hashes.phash_batch`),
one pass per group of equal shapes for the pixel statistics
(:func:`~splitaudit.fingerprints.properties.properties_many`). One by one, those steps cost
more than decoding a 256 px JPEG.

Pure: bytes and pixels in, arrays out. The callers read files (:mod:`splitaudit.extract`) or
arrays (:mod:`splitaudit.extract_memory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from splitaudit.fingerprints.hashes import (
    DIGEST_BYTES, as_image, file_digest, grey_thumbnail, phash_batch, pixel_digest,
)
from splitaudit.fingerprints.properties import properties_many
from splitaudit.imaging import ImageInfo


@dataclass
class ChunkFingerprints:
    """Fingerprints of B images as column arrays (row j = image j).

    Attributes
    ----------
    file_digest : numpy.ndarray
        (B, DIGEST_BYTES) uint8: BLAKE2b-128 of each file's bytes (equal for byte-identical
        files).
    pixel_digest : numpy.ndarray
        (B, DIGEST_BYTES) uint8: BLAKE2b-128 of the decoded pixels and their shape (equal for
        one picture in different lossless encodings); for an image decoded at reduced size,
        derived from the file digest instead (its pixels say nothing about the full-size ones).
    thumbs : numpy.ndarray
        (B, 32, 32) uint8 grey thumbnails (:func:`~splitaudit.fingerprints.hashes.grey_thumbnail`).
    phash, phash_flip : numpy.ndarray
        (B, 8) uint8 pHash of each thumbnail and of its mirror image.
    cnn : numpy.ndarray or None
        (B, S, S, 3) uint8 CNN inputs, when a size was asked for.
    properties : numpy.ndarray or None
        (B, len(PROPERTY_NAMES)) float32, when image infos were given.
    """

    file_digest: np.ndarray
    pixel_digest: np.ndarray
    thumbs: np.ndarray
    phash: np.ndarray
    phash_flip: np.ndarray
    cnn: np.ndarray | None
    properties: np.ndarray | None

    def __len__(self) -> int:
        return len(self.thumbs)


def fingerprint_chunk(
    raws: Sequence[bytes],
    rgbs: Sequence[np.ndarray],
    infos: Sequence[ImageInfo] | None = None,
    *,
    reduced: Sequence[bool] | None = None,
    cnn_size: int | None = None,
    file_digests: Sequence[bytes] | None = None,
) -> ChunkFingerprints:
    """Compute every fingerprint of a chunk of decoded images.

    Parameters
    ----------
    raws : sequence of bytes
        Each image's encoded bytes (or, for an in-memory array, its pixel bytes): the content
        digest is taken over them, and a JPEG's quantization table is read from them when its
        info lacks one.
    rgbs : sequence of numpy.ndarray
        (H, W, 3) uint8 decoded pixels of each image.
    infos : sequence of ImageInfo, optional
        What each file said about itself (:func:`splitaudit.imaging.load_rgb_bytes`); the
        properties are computed only when given.
    reduced : sequence of bool, optional
        True where ``rgbs[j]`` was decoded at reduced size (JPEG draft mode). Default: none.
    cnn_size : int or None
        When given, also make each image's (cnn_size, cnn_size) RGB input for the CNN.
    file_digests : sequence of bytes, optional
        :func:`~splitaudit.fingerprints.hashes.file_digest` of each raw, when the caller has
        it already.

    Returns
    -------
    ChunkFingerprints
    """
    n = len(rgbs)
    if len(raws) != n or (infos is not None and len(infos) != n):
        raise ValueError(f"raws, rgbs and infos must have one entry per image; got "
                         f"{len(raws)}, {n} and {len(infos) if infos is not None else None}")
    reduced = reduced if reduced is not None else [False] * n
    fdigs = list(file_digests) if file_digests is not None else [file_digest(r) for r in raws]
    pdigs, thumbs, images, greys, cnn = [], [], [], [], []
    for raw, rgb, small, fdig in zip(raws, rgbs, reduced, fdigs):
        image = as_image(rgb)  # one Pillow image and one grey image per sample, shared
        grey = image.convert("L")
        thumbs.append(np.asarray(grey_thumbnail(grey)))
        images.append(image)
        greys.append(grey)
        pdigs.append(file_digest(b"reduced:" + fdig) if small else pixel_digest(rgb))
        if cnn_size is not None:
            cnn.append(np.asarray(
                image.resize((cnn_size, cnn_size), Image.Resampling.BILINEAR, reducing_gap=2.0)))
    stack = np.stack(thumbs) if n else np.zeros((0, 32, 32), np.uint8)
    phash, phash_flip = phash_batch(stack)
    props = None
    if infos is not None:
        props = properties_many(rgbs, infos, raws=raws, images=images, greys=greys)
    return ChunkFingerprints(
        file_digest=_digest_array(fdigs),
        pixel_digest=_digest_array(pdigs),
        thumbs=stack,
        phash=phash,
        phash_flip=phash_flip,
        cnn=np.stack(cnn) if cnn else None,
        properties=props,
    )


def _digest_array(digests: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(digests), np.uint8).reshape(len(digests), DIGEST_BYTES)
