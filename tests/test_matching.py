"""Pure-array tests of the verifier (alignment) and the FAISS search wrappers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageOps

from splitaudit import alignment as al
from splitaudit import matching
from splitaudit.errors import InvalidInputError
from splitaudit.extract import FingerprintTable
from splitaudit.fingerprints.hashes import grey_thumbnail, phash_batch
from splitaudit.matching import NEAR, SIMILAR, MatchConfig, Matcher
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


def _table(images: list[Image.Image]) -> FingerprintTable:
    t = FingerprintTable.allocate(len(images), None)
    t.ok[:] = True
    t.file_digest[:] = np.random.default_rng(0).integers(0, 256, t.file_digest.shape)
    t.pixel_digest[:] = t.file_digest
    t.thumbs[:] = np.stack([_thumb(im) for im in images])
    t.phash[:], t.phash_flip[:] = phash_batch(t.thumbs)
    t.width[:] = [im.width for im in images]
    t.height[:] = [im.height for im in images]
    return t


@pytest.fixture(scope="module")
def edited_table() -> FingerprintTable:
    """Photos (rows 0..5), one edited copy of each (6..11) and unrelated photos (12..15)."""
    rng = np.random.default_rng(21)
    photos = [random_photo(rng, 128) for _ in range(6)]
    edits = [
        ImageOps.mirror(photos[0]),
        photos[1].rotate(14, resample=Image.Resampling.BILINEAR),
        photos[2].crop((6, 0, 120, 110)),
        ImageOps.mirror(photos[3].rotate(-22, resample=Image.Resampling.BILINEAR)),
        photos[4].resize((128, 96)),
        photos[5].crop((0, 10, 112, 128)).rotate(5, resample=Image.Resampling.BILINEAR),
    ]
    return _table(photos + edits + [random_photo(rng, 128) for _ in range(4)])


def test_verify_classifies_each_pair_as_the_per_pair_rules_say(edited_table, monkeypatch):
    """Vectorised classification in verify == the rules applied pair by pair (no embeddings:
    the CNN rules never apply), and chunking the alignment does not change it."""
    config = MatchConfig(near_threshold=0.985, similar_threshold=0.9)
    m = Matcher(edited_table, config)
    pairs = np.array([(q, r) for q in range(6, 16) for r in range(6)])
    got = m.verify(pairs)
    found = {(int(q), int(r)): (int(k), e) for q, r, k, e in
             zip(got.query, got.reference, got.kind, got.evidence)}
    # Every copy is found and nothing else; both kinds occur, so both rules are exercised.
    assert set(found) == {(6 + i, i) for i in range(6)}
    assert {kind for kind, _ in found.values()} == {NEAR, SIMILAR}
    t = edited_table
    q, r = pairs[:, 0], pairs[:, 1]
    hamming = np.minimum(matching._popcount(t.phash[q] ^ t.phash[r]),
                         matching._popcount(t.phash_flip[q] ^ t.phash[r]))
    score, index = m._align_chunks(r, q, hamming <= config.hash_radius)
    for (qi, ri), s, i in zip(pairs.tolist(), score, index):
        want = None
        if i >= 0:
            tr = al.transform_set()[i]
            plain = tr.kind == "identity"
            threshold = config.near_threshold_plain if plain else config.near_threshold
            if s >= threshold:
                want = (NEAR, tr.describe())
            elif s >= config.similar_threshold:
                want = (SIMILAR, tr.describe())
        assert found.get((qi, ri)) == want
    monkeypatch.setattr(matching, "VERIFY_CHUNK", 7)
    again = m.verify(pairs)
    np.testing.assert_array_equal(again.ncc, got.ncc)
    assert again.evidence == got.evidence


def test_verify_compares_float32_scores_with_float32_thresholds(edited_table, monkeypatch):
    """A score equal to float32(threshold) passes it, as a float32 scalar compared with the
    Python float did; the next float32 below does not."""
    m = Matcher(edited_table)
    t = np.float32(m.config.similar_threshold)
    scores = np.array([t, np.nextafter(t, np.float32(0))], np.float32)
    crop = next(i for i, tr in enumerate(al.transform_set()) if tr.kind == "crop")
    monkeypatch.setattr(Matcher, "_align_chunks",
                        lambda self, ref, qry, vouched: (scores, np.full(2, crop)))
    got = m.verify(np.array([[12, 13], [14, 15]]))
    assert got.kind.tolist() == [SIMILAR] and got.query.tolist() == [12]


def test_verify_scores_faint_thumbnails_whatever_their_brightness(edited_table):
    """NCC is blind to brightness, and so are the float32 scores: the photos and edits of
    ``edited_table`` cut to ~3 grey levels of contrast score the same on a dark and a bright
    ground (before prepare_thumbs centred the thumbnails they moved by ~1e-2, above 1)."""
    thumbs = edited_table.thumbs.astype(np.float64)
    faint = np.round(60 + 0.1 * (thumbs - thumbs.mean(axis=(1, 2), keepdims=True))).astype(np.uint8)
    pairs = np.array([(q, r) for q in range(6, 16) for r in range(6)])
    q, r = pairs[:, 0], pairs[:, 1]
    runs = []
    for ground in (0, 130):
        m = Matcher(dataclasses.replace(edited_table, thumbs=faint + np.uint8(ground)))
        runs.append((m._align_chunks(r, q, np.ones(len(pairs), bool)), m.verify(pairs)))
    ((dark, dark_index), dark_matches), ((bright, bright_index), bright_matches) = runs
    np.testing.assert_allclose(bright, dark, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(bright_index, dark_index)
    assert max(dark.max(), bright.max()) <= 1 + 1e-5
    assert bright_matches.kind.tolist() == dark_matches.kind.tolist()
    assert bright_matches.evidence == dark_matches.evidence


def test_verify_in_the_scan_pool_equals_verify_here(edited_table, monkeypatch):
    """Chunks verified by worker processes (and this one's share) give the same pairs, scores
    and evidence, in the same order, as chunks verified here."""
    from splitaudit.extract import scan_pool

    monkeypatch.setattr(matching, "VERIFY_CHUNK", 8)  # 60 pairs: 8 chunks, several per worker
    pairs = np.array([(q, r) for q in range(6, 16) for r in range(6)])
    config = MatchConfig(near_threshold=0.985, similar_threshold=0.9)  # finds all six copies
    here = Matcher(edited_table, config).verify(pairs)
    with scan_pool(2, 10_000, with_cnn=False) as pool:
        assert pool is not None and pool.size == 2
        there = Matcher(edited_table, config, pool=pool).verify(pairs)
    for field in ("query", "reference", "kind", "ncc", "hamming"):
        assert np.array_equal(getattr(here, field), getattr(there, field)), field
    assert here.evidence == there.evidence and len(here) == 6


@pytest.mark.parametrize("share", [False, True])
def test_scan_pool_runs_jobs_in_order(share):
    from splitaudit.extract import scan_pool

    with scan_pool(2, 10_000, with_cnn=False) as pool:
        got = list(pool.run_ordered(abs, iter(range(-25, 0)), window=3, share=share))
    assert got == [abs(x) for x in range(-25, 0)]
    with scan_pool(0, 10_000, with_cnn=False) as none, scan_pool(2, 10, with_cnn=False) as small:
        assert none is None and small is None  # in-process: no workers, or too little work
