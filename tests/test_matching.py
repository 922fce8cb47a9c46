"""Pure-array tests of the verifier (alignment) and the FAISS search wrappers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from splitaudit import alignment as al
from splitaudit.errors import InvalidInputError
from splitaudit.fingerprints.hashes import grey_thumbnail
from splitaudit.matching import MatchConfig
from splitaudit.neighbours import exact_matches, hamming_within, vector_knn
from splitaudit.synth import different_crops, random_photo


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(grey_thumbnail(image))


def _score(a: Image.Image, b: Image.Image) -> float:
    ta, tb = _thumb(a)[None], _thumb(b)[None]
    pa, pb = al.prepare_thumbs(ta), al.prepare_thumbs(tb)
    asp_a = al.aspect_bin(np.array([a.width]), np.array([a.height]))
    asp_b = al.aspect_bin(np.array([b.width]), np.array([b.height]))
    res = al.align_pairs(pa, pb, asp_a, asp_b)
    return float(res.ncc[0])


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return random_photo(np.random.default_rng(5), 160)


@pytest.mark.parametrize("edit", [
    lambda im: ImageOps.mirror(im),
    lambda im: im.rotate(12, resample=Image.Resampling.BILINEAR),
    lambda im: im.crop((8, 5, 150, 152)),
    lambda im: ImageOps.grayscale(im).convert("RGB"),
    lambda im: im.resize((60, 80)),
])
def test_edited_copies_align(photo, edit):
    assert _score(photo, edit(photo)) >= 0.9


def test_different_pictures_and_crops_do_not_align(photo):
    other = random_photo(np.random.default_rng(6), 160)
    assert _score(photo, other) < 0.85
    a, b = different_crops(photo, np.random.default_rng(1))
    assert _score(a, b) < 0.9


def test_flat_images_score_zero():
    flat = Image.new("RGB", (64, 64), (120, 120, 120))
    assert _score(flat, flat) == 0.0


def test_hamming_radius_is_inclusive():
    ref = np.zeros((3, 8), np.uint8)
    ref[1, 0] = 0b111  # distance 3 from zeros
    ref[2, 0] = 0b1111  # distance 4
    nb = hamming_within(ref, np.zeros((1, 8), np.uint8), radius=3)
    assert sorted(zip(nb.reference.tolist(), nb.score.tolist())) == [(0, 0.0), (1, 3.0)]


def test_vector_knn_returns_nearest_first_and_respects_min_score():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(100, 16)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    nb = vector_knn(ref, ref[[7, 42]], k=3)
    assert nb.reference[0] == 7 and nb.reference[3] == 42
    assert np.allclose(nb.score[[0, 3]], 1.0, atol=1e-5)
    assert len(vector_knn(ref, ref[:5], k=3, min_score=0.999).query) == 5
    assert len(vector_knn(ref[:0], ref[:5], k=3).query) == 0


def test_exact_matches_handles_repeats():
    ref = np.array([[1, 2], [3, 4], [1, 2]], np.uint8)
    nb = exact_matches(ref, np.array([[1, 2], [9, 9]], np.uint8))
    assert sorted(zip(nb.query.tolist(), nb.reference.tolist())) == [(0, 0), (0, 2)]


def test_match_config_validation_message():
    with pytest.raises(InvalidInputError, match=r"The 'near_threshold' parameter of scan must be a float in \[0, 1\]. Got 1.5 instead."):
        MatchConfig(near_threshold=1.5)
