"""Fingerprints of single images and chunks: the batched pHash is imagehash's pHash, bit for bit."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from splitaudit.extract import FULL_SIZE_BELOW, MIN_DECODE_SIDE, _work
from splitaudit.fingerprints.hashes import THUMB_SIZE, file_digest, grey_thumbnail, phash_batch
from splitaudit.fingerprints.properties import image_properties
from splitaudit.imaging import load_rgb_bytes
from splitaudit.synth import photo_array

from conftest import SHARED


def _imagehash_bytes(image: Image.Image) -> bytes:
    return np.packbits(imagehash.phash(image, hash_size=8, highfreq_factor=4).hash.reshape(-1)).tobytes()


def _thumbs(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(grey_thumbnail(im)) for im in images])


def test_phash_batch_equals_imagehash_on_synthetic_photos():
    images = [Image.fromarray(a) for a in photo_array(60, seed=5, size=96)]
    thumbs = _thumbs(images)
    ph, ph_flip = phash_batch(thumbs)
    assert ph.shape == ph_flip.shape == (60, 8) and ph.dtype == np.uint8
    for j, im in enumerate(images):
        thumb = Image.fromarray(thumbs[j])
        assert ph[j].tobytes() == _imagehash_bytes(thumb)
        assert ph_flip[j].tobytes() == _imagehash_bytes(thumb.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    # A mirrored image's hash is the original's mirror hash (what makes flips one lookup away).
    mirrored = _thumbs([im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images])
    assert (phash_batch(mirrored)[0] == ph_flip).all()
    # The hashes differ between distinct photos (a constant result would pass the above).
    assert len({h.tobytes() for h in ph}) == 60


def test_phash_batch_equals_imagehash_on_shared_photos():
    root = SHARED / "data" / "peer-fixtures"
    photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                    and "corrupt" not in p.name) if root.exists() else []
    if not photos:
        pytest.skip("../shared peer fixture photographs not present")
    thumbs = _thumbs([Image.open(p).convert("RGB") for p in photos])
    ph, _ = phash_batch(thumbs)
    assert [h.tobytes() for h in ph] == [_imagehash_bytes(Image.fromarray(t)) for t in thumbs]


def test_phash_batch_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        phash_batch(np.zeros((2, 16, 16), np.uint8))
    assert phash_batch(np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.uint8))[0].shape == (0, 8)


def _jpeg_bytes(side: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_array(1, seed=seed, size=side)[0]).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_fingerprint_decode_sizes():
    # 256 px JPEGs decode at 1/4 scale (64 px); smaller images keep every pixel.
    rgb, _ = load_rgb_bytes(_jpeg_bytes(256, 1), min_side=MIN_DECODE_SIDE, full_size_below=FULL_SIZE_BELOW)
    assert rgb.shape == (64, 64, 3)
    rgb, _ = load_rgb_bytes(_jpeg_bytes(200, 2), min_side=MIN_DECODE_SIDE, full_size_below=FULL_SIZE_BELOW)
    assert rgb.shape == (200, 200, 3)
    buf = io.BytesIO()
    Image.fromarray(photo_array(1, seed=3, size=256)[0]).save(buf, "PNG")
    rgb, _ = load_rgb_bytes(buf.getvalue(), min_side=MIN_DECODE_SIDE, full_size_below=FULL_SIZE_BELOW)
    assert rgb.shape == (256, 256, 3)  # a lossless 256 px image is not reduced


def test_work_chunk_hashes_match_single_images(tmp_path):
    paths = []
    for i, side in enumerate((256, 96, 512)):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(_jpeg_bytes(side, 10 + i))
        paths.append(str(p))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    items = list(enumerate(paths)) + [(3, str(tmp_path / "bad.jpg"))]
    res = _work((items, None, MIN_DECODE_SIDE, 10**8))
    assert res.indices == [0, 1, 2] and [e[0] for e in res.errors] == [3]
    fp = res.fp
    # Three shapes in one chunk (64, 96 and 128 px decodes): the batched statistics must
    # equal those of each image alone.
    for j, (index, path) in enumerate(items[:3]):
        raw = open(path, "rb").read()
        rgb, info = load_rgb_bytes(raw, min_side=MIN_DECODE_SIDE, full_size_below=FULL_SIZE_BELOW)
        thumb = grey_thumbnail(Image.fromarray(rgb))
        assert fp.phash[j].tobytes() == _imagehash_bytes(thumb)
        assert (fp.thumbs[j] == np.asarray(thumb)).all()
        assert fp.file_digest[j].tobytes() == file_digest(raw)
        assert np.array_equal(fp.properties[j], image_properties(rgb, info, raw), equal_nan=True)
        assert tuple(res.sizes[j]) == (info.width, info.height)
    assert len({fp.properties[j].tobytes() for j in range(3)}) == 3


def test_decode_side_keeps_128_px_for_the_cnn():
    from splitaudit.extract import CNN_MIN_DECODE_SIDE, decode_side

    assert decode_side(None) == MIN_DECODE_SIDE == 64
    assert decode_side(112) == CNN_MIN_DECODE_SIDE == 128
    assert decode_side(224) == 224
