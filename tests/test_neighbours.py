"""Index choice of :mod:`splitaudit.neighbours`: the approximate vector index and the
multi-index hash must find what the exact flat indexes find, on structured data."""

from __future__ import annotations

import numpy as np
import pytest

from splitaudit import neighbours
from splitaudit.errors import InvalidInputError
from splitaudit.neighbours import (
    MultiIndexHash, choose_hash_index, choose_vector_index, hamming_within, search_mode,
    vector_knn, vector_knn_many,
)


def clustered_vectors(n: int, d: int, seed: int, *, rank: int = 32, clusters: int = 50) -> np.ndarray:
    """Unit vectors from a mixture of Gaussians in a low-rank subspace plus a little noise:
    neighbours are crowded inside clusters, which is what makes IVF recall hard."""
    g = np.random.default_rng(123)  # structure shared by every call with the same d
    basis = g.standard_normal((rank, d)).astype(np.float32)
    centres = g.standard_normal((clusters, rank)).astype(np.float32)
    rng = np.random.default_rng(seed)
    lat = centres[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, rank), dtype=np.float32)
    x = lat @ basis + 0.3 * np.sqrt(rank) * rng.standard_normal((n, d), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near_copies(reference: np.ndarray, src: np.ndarray, seed: int) -> np.ndarray:
    """Rows of ``reference`` moved to a cosine between 0.90 and 0.99 of the original."""
    rng = np.random.default_rng(seed)
    r = reference[src]
    noise = rng.standard_normal(r.shape).astype(np.float32)
    noise -= (noise * r).sum(1, keepdims=True) * r
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = rng.uniform(0.90, 0.99, len(src)).astype(np.float32)[:, None]
    return (cos * r + np.sqrt(1 - cos ** 2) * noise).astype(np.float32)


def pairs(nb) -> set[tuple[int, int]]:
    return set(zip(nb.query.tolist(), nb.reference.tolist()))


def test_approximate_knn_finds_every_planted_near_duplicate():
    ref = clustered_vectors(6000, 96, seed=1)
    src = np.random.default_rng(2).choice(len(ref), 150, replace=False)
    query = np.concatenate([near_copies(ref, src, seed=3), clustered_vectors(300, 96, seed=4)])
    exact = vector_knn(ref, query, 3, min_score=0.3, mode="exact")
    approx = vector_knn(ref, query, 3, min_score=0.3, mode="approximate")
    planted = {(i, int(s)) for i, s in enumerate(src)}
    assert planted <= pairs(exact)
    assert planted <= pairs(approx)  # recall 1.0 of the planted near duplicates
    # The approximate index re-ranks with exact cosines: every score is the true one.
    true = np.einsum("pd,pd->p", query[approx.query], ref[approx.reference])
    np.testing.assert_allclose(approx.score, true, atol=1e-5)
    assert approx.score.min() >= 0.3
    # Results come in decreasing cosine per query, as from the flat index.
    same_query = approx.query[1:] == approx.query[:-1]
    assert np.all(np.diff(approx.score)[same_query] <= 1e-6)


def test_approximate_knn_reduces_high_dimensional_vectors():
    # 1280-d float16, like the CNN embeddings: the PCA path is taken (1280 > IVF_PCA_DIM).
    ref = clustered_vectors(3000, 1280, seed=5).astype(np.float16)
    src = np.arange(0, 3000, 60)
    query = near_copies(ref.astype(np.float32), src, seed=6).astype(np.float16)
    approx = vector_knn(ref, query, 5, min_score=0.5, mode="approximate")
    assert {(i, int(s)) for i, s in enumerate(src)} <= pairs(approx)


def test_exact_and_approximate_agree_on_exact_duplicates():
    ref = clustered_vectors(4000, 64, seed=7)
    rows = np.arange(0, 4000, 37)
    exact = vector_knn(ref, ref[rows], 1, mode="exact")
    approx = vector_knn(ref, ref[rows], 1, mode="approximate")
    np.testing.assert_array_equal(exact.reference, rows)
    np.testing.assert_array_equal(approx.reference, rows)
    np.testing.assert_allclose(approx.score, 1.0, atol=1e-5)


def test_small_references_stay_exact_and_identical_to_a_flat_index():
    import faiss

    ref = clustered_vectors(500, 48, seed=8)
    query = clustered_vectors(40, 48, seed=9)
    auto = vector_knn(ref, query, 4, min_score=-1.0)
    flat = faiss.IndexFlatIP(48)
    flat.add(ref)
    sims, idx = flat.search(query, 4)
    np.testing.assert_array_equal(auto.reference, idx.ravel())
    np.testing.assert_array_equal(auto.score, sims.ravel())
    np.testing.assert_array_equal(auto.query, np.repeat(np.arange(40), 4))


@pytest.mark.parametrize("rows_per_block", [1, 7, 64, 10_000])
def test_exact_search_block_by_block_finds_the_true_nearest(rows_per_block, monkeypatch):
    # float16 references widened a block at a time must give what one flat index gives: the
    # same scores and the same rows, except where scores tie (41 equal rows below), where any
    # of the tied rows is right (FAISS' own order among equal scores follows its BLAS blocks).
    import faiss

    d, k = 40, 4
    ref = clustered_vectors(600, d, seed=20)
    ref[300:340] = ref[10]
    ref = ref.astype(np.float16)
    query = np.concatenate([clustered_vectors(30, d, seed=21), ref[[10, 5, 599]].astype(np.float32)])
    monkeypatch.setattr(neighbours, "EXACT_BLOCK_BYTES", rows_per_block * 4 * d)
    got = vector_knn(ref, query, k, mode="exact")
    flat = faiss.IndexFlatIP(d)
    flat.add(ref.astype(np.float32))
    sims, idx = flat.search(query, k)
    np.testing.assert_array_equal(got.query, np.repeat(np.arange(len(query)), k))
    np.testing.assert_allclose(got.score, sims.ravel(), atol=1e-6)
    true = ref.astype(np.float64) @ query.astype(np.float64).T  # (N, M)
    kth = np.sort(true, axis=0)[-k]
    assert np.all(true[got.reference, got.query] >= kth[got.query] - 1e-6)
    tied = {10, *range(300, 340)}
    assert set(got.reference[got.query == 30]) <= tied and len(got.reference[got.query == 30]) == k
    untied = ~np.isin(idx.ravel(), list(tied))
    np.testing.assert_array_equal(got.reference[untied], idx.ravel()[untied])


def test_vector_knn_many_equals_separate_searches():
    ref = clustered_vectors(3000, 32, seed=10)
    qa, qb = clustered_vectors(50, 32, seed=11), clustered_vectors(70, 32, seed=12)
    for mode in ("exact", "approximate"):
        many = vector_knn_many(ref, [qa, qb], 3, min_score=0.2, mode=mode)
        for one, q in zip(many, (qa, qb)):
            alone = vector_knn(ref, q, 3, min_score=0.2, mode=mode)
            np.testing.assert_array_equal(one.reference, alone.reference)
            np.testing.assert_array_equal(one.query, alone.query)


def test_vector_index_choice_switches_at_the_threshold(monkeypatch):
    monkeypatch.setattr(neighbours, "APPROX_MIN_REFERENCE", 1000)
    assert choose_vector_index(999) == "flat"
    assert choose_vector_index(1000) == "ivf"
    assert choose_vector_index(10**7, mode="exact") == "flat"
    assert choose_vector_index(10, mode="approximate") == "ivf"
    built = _count_builds(monkeypatch, "IvfIndex")
    ref = clustered_vectors(1000, 32, seed=13)
    vector_knn(ref[:999], ref[:5], 2)
    assert built == []
    got = vector_knn(ref, ref[:5], 2)
    assert built == [1000]
    np.testing.assert_array_equal(got.reference[::2], np.arange(5))
    with search_mode("exact"):
        vector_knn(ref, ref[:5], 2)
    assert built == [1000]
    assert neighbours.SEARCH_MODE == "auto"  # restored


def random_codes(n: int, seed: int) -> np.ndarray:
    """Packed 64-bit codes with correlated bits (clustered latent), as pHashes have."""
    g = np.random.default_rng(321)
    mix = g.standard_normal((8, 64))
    centres = g.standard_normal((40, 8))
    rng = np.random.default_rng(seed)
    lat = (centres[rng.integers(40, size=n)] + 0.5 * rng.standard_normal((n, 8))) @ mix
    lat += rng.standard_normal((n, 64))
    return np.packbits(lat > np.median(lat, axis=1, keepdims=True), axis=1)


def flipped(codes: np.ndarray, max_bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = np.unpackbits(codes, axis=1)
    for row in bits:
        row[rng.choice(64, rng.integers(0, max_bits + 1), replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def _count_builds(monkeypatch, name: str) -> list[int]:
    """Replace ``neighbours.<name>`` by a subclass recording the reference size of each build."""
    built: list[int] = []
    real = getattr(neighbours, name)

    class Spy(real):
        def __init__(self, reference):
            built.append(len(reference))
            super().__init__(reference)

    monkeypatch.setattr(neighbours, name, Spy)
    return built


def _assert_mih_equals_flat(ref: np.ndarray, query: np.ndarray, radius: int) -> None:
    flat = hamming_within(ref, query, radius, mode="exact")
    mih = hamming_within(ref, query, radius, mode="approximate")
    assert len(flat.query) > 0
    np.testing.assert_array_equal(mih.query, flat.query)
    np.testing.assert_array_equal(mih.reference, flat.reference)
    np.testing.assert_array_equal(mih.score, flat.score)


@pytest.mark.parametrize("radius", [0, 1, 3, 6, 10, 11])
def test_multi_index_hash_is_identical_to_flat_range_search(radius):
    ref = random_codes(5000, seed=1)
    query = np.concatenate([flipped(ref[:300], 12, seed=2), random_codes(300, seed=3)])
    _assert_mih_equals_flat(ref, query, radius)


def test_multi_index_hash_finds_planted_copies_and_no_far_codes():
    ref = random_codes(4000, seed=4)
    src = np.arange(0, 4000, 20)
    query = flipped(ref[src], 10, seed=5)
    nb = MultiIndexHash(ref).search(query, 10)
    assert {(i, int(s)) for i, s in enumerate(src)} <= pairs(nb)
    true = np.unpackbits(query[nb.query] ^ ref[nb.reference], axis=1).sum(1)
    np.testing.assert_array_equal(nb.score, true)
    assert true.max() <= 10


def test_hash_index_choice_switches_at_the_threshold(monkeypatch):
    monkeypatch.setattr(neighbours, "HASH_INDEX_MIN_REFERENCE", 2000)
    assert choose_hash_index(1999, 64, 10) == "flat"
    assert choose_hash_index(2000, 64, 10) == "multi-index"
    assert choose_hash_index(10**6, 64, 12) == "flat"  # too wide for an exact multi-index
    assert choose_hash_index(10**6, 72, 10) == "flat"  # not a multiple of 64 bits
    built = _count_builds(monkeypatch, "MultiIndexHash")
    ref = random_codes(2000, seed=6)
    a = hamming_within(ref[:1999], ref[:50], 10)
    assert built == []
    b = hamming_within(ref, ref[:50], 10)
    assert built == [2000]
    assert pairs(a) <= pairs(b)


def test_bad_modes_and_radii_are_rejected():
    with pytest.raises(InvalidInputError, match=r"The 'mode' parameter of vector_knn must be one of"):
        vector_knn(np.ones((2, 4), np.float32), np.ones((1, 4), np.float32), 1, mode="fast")
    with pytest.raises(InvalidInputError, match="'mode' parameter of search_mode"):
        with search_mode("sometimes"):
            pass
    with pytest.raises(InvalidInputError, match="'radius' parameter"):
        MultiIndexHash(random_codes(10, seed=7)).search(random_codes(2, seed=8), 12)


def test_approximate_index_is_pq_fast_scan_with_high_planted_recall():
    import faiss

    ref = clustered_vectors(20000, 148, seed=20)
    src = np.random.default_rng(21).choice(len(ref), 400, replace=False)
    planted = {(i, int(s)) for i, s in enumerate(src)}
    query = np.concatenate([near_copies(ref, src, seed=22), clustered_vectors(400, 148, seed=23)])
    index = neighbours.IvfIndex(ref)
    assert isinstance(index.ivf, faiss.IndexIVFPQFastScan)
    assert not index.ivf.by_residual  # one look-up table per query, not per probed list
    assert isinstance(index.store, faiss.IndexScalarQuantizer)  # float16 PCA vectors
    assert index.ivf.ntotal == index.store.ntotal == 20000
    assert index.dim == neighbours.IVF_PCA_DIM
    with search_mode("approximate"):
        a, b = vector_knn_many(ref, [query, query[::-1].copy()], 3, min_score=0.3)
    exact = vector_knn(ref, query, 3, min_score=0.3, mode="exact")
    found = planted & pairs(exact)
    assert len(found) == len(planted)
    assert len(found & pairs(a)) / len(found) >= 0.99
    # The second query set is the first reversed: the same pairs, rows mirrored.
    flipped_back = {(len(query) - 1 - q, r) for q, r in pairs(b)}
    assert len(found & flipped_back) / len(found) >= 0.99
    # Scores are exact cosines, so pairs found by both searches carry the same score.
    ex = dict(zip(zip(exact.query.tolist(), exact.reference.tolist()), exact.score.tolist()))
    for q, r, s in zip(a.query.tolist(), a.reference.tolist(), a.score.tolist()):
        if (q, r) in ex:
            assert abs(ex[(q, r)] - s) < 1e-5
    # Same inputs, same index: the candidates are reproducible.
    again = vector_knn(ref, query, 3, min_score=0.3, mode="approximate")
    np.testing.assert_array_equal(again.reference, a.reference)


def test_approximate_mode_on_tiny_references_is_exact(monkeypatch):
    ref = clustered_vectors(neighbours.IVF_MIN_ROWS - 1, 20, seed=24)
    query = clustered_vectors(30, 20, seed=25)
    exact = vector_knn(ref, query, 4, mode="exact")
    approx = vector_knn(ref, query, 4, mode="approximate")
    np.testing.assert_array_equal(approx.reference, exact.reference)
    np.testing.assert_allclose(approx.score, exact.score, atol=1e-6)


def test_odd_dimensions_are_padded_for_the_fast_scan():
    ref = clustered_vectors(3000, 33, seed=26)
    src = np.arange(0, 3000, 25)
    approx = vector_knn(ref, near_copies(ref, src, seed=27), 2, mode="approximate")
    assert {(i, int(s)) for i, s in enumerate(src)} <= pairs(approx)


@pytest.mark.parametrize("radius", [3, 10, 11])
def test_three_substring_layout_is_identical_to_flat_range_search(monkeypatch, radius):
    # Free probes make the 3 x 21-22-bit layout the cheaper one (as for ~5M references).
    monkeypatch.setattr(neighbours, "MIH_PROBE_COST", 0.0)
    assert neighbours._mih_layout(64, 5000, radius)[0] == [22, 21, 21]
    ref = random_codes(5000, seed=30)
    query = np.concatenate([flipped(ref[:300], 12, seed=31), random_codes(300, seed=32)])
    _assert_mih_equals_flat(ref, query, radius)


def test_multi_index_layout_follows_reference_size():
    assert neighbours._mih_layout(64, 100_000, 10) == ([16] * 4, [1, 2, 2, 2])
    assert neighbours._mih_layout(64, 1_000_000, 10)[0] == [16] * 4
    assert neighbours._mih_layout(64, 50_000_000, 10)[0] == [22, 21, 21]
    assert neighbours._mih_layout(128, 100_000, 10)[0] == [16] * 8


def test_index_built_in_parts_equals_one_built_sequentially(monkeypatch):
    # The build encodes one contiguous part of the reference per core and merges the parts:
    # the merged index must give exactly the candidates of one sequential build.
    ref = clustered_vectors(9000, 96, seed=40)
    src = np.arange(0, 9000, 45)
    query = np.concatenate([near_copies(ref, src, seed=41), clustered_vectors(300, 96, seed=42)])
    monkeypatch.setattr(neighbours, "available_cores", lambda: 1)
    one = neighbours.IvfIndex(ref)
    alone = one.search(query, 3, min_score=0.3)
    monkeypatch.setattr(neighbours, "available_cores", lambda: 3)
    parts = neighbours.IvfIndex(ref)
    assert parts.ivf.ntotal == parts.store.ntotal == len(ref)
    merged = parts.search(query, 3, min_score=0.3)
    np.testing.assert_array_equal(merged.query, alone.query)
    np.testing.assert_array_equal(merged.reference, alone.reference)
    np.testing.assert_array_equal(merged.score, alone.score)
    assert {(i, int(s)) for i, s in enumerate(src)} <= pairs(merged)


def test_auto_selection_forced_to_ivf_keeps_planted_near_duplicates(monkeypatch):
    # What a scan above APPROX_MIN_REFERENCE runs, at a small scale: both query sets against
    # one index, planted recall against the exact search at the matcher's k and cosine.
    monkeypatch.setattr(neighbours, "APPROX_MIN_REFERENCE", 5000)
    built = _count_builds(monkeypatch, "IvfIndex")
    ref = clustered_vectors(12000, 148, seed=43)
    src = np.random.default_rng(44).choice(len(ref), 500, replace=False)
    noise = clustered_vectors(500, 148, seed=45)
    qa = np.concatenate([near_copies(ref, src, seed=46), noise])
    qb = np.concatenate([noise, near_copies(ref, src, seed=47)])
    a, b = vector_knn_many(ref, [qa, qb], 3, min_score=0.3)
    assert built == [len(ref)]
    exact_a, exact_b = vector_knn_many(ref, [qa, qb], 3, min_score=0.3, mode="exact")
    planted_a = {(i, int(s)) for i, s in enumerate(src)} & pairs(exact_a)
    planted_b = {(500 + i, int(s)) for i, s in enumerate(src)} & pairs(exact_b)
    assert len(planted_a) == len(planted_b) == len(src)
    assert len(planted_a & pairs(a)) / len(planted_a) >= 0.99
    assert len(planted_b & pairs(b)) / len(planted_b) >= 0.99


def test_pca_of_wide_vectors_keeps_the_leading_variance():
    # Above 2 * IVF_PCA_DIM dimensions the PCA comes from a subspace iteration, not a full
    # eigendecomposition: it must capture nearly the variance of the exact top directions.
    x = clustered_vectors(4000, 400, seed=48, rank=120, clusters=200)
    index = neighbours.IvfIndex.__new__(neighbours.IvfIndex)
    index._fit_pca(x, np.random.default_rng(0))
    import faiss

    proj = faiss.vector_to_array(index.transform.A).reshape(index.dim, 400)
    np.testing.assert_allclose(proj @ proj.T, np.eye(index.dim), atol=1e-4)  # orthonormal
    centred = (x - x.mean(0)).astype(np.float64)
    cov = centred.T @ centred
    best = np.linalg.eigvalsh(cov)[-index.dim:].sum()
    assert np.einsum("ij,jk,ik->", proj, cov, proj) >= 0.99 * best
    # The transform centres: the mean row maps to the origin.
    np.testing.assert_allclose(index._reduce(x.mean(0, keepdims=True)), 0, atol=1e-4)


def test_hash_search_of_several_query_sets_is_exact_in_every_mode(monkeypatch):
    # Matcher.candidates searches the pHashes of both orientations against one index.
    monkeypatch.setattr(neighbours, "HASH_INDEX_MIN_REFERENCE", 1000)
    ref = random_codes(6000, seed=49)
    qa = np.concatenate([flipped(ref[:400], 11, seed=50), random_codes(200, seed=51)])
    qb = flipped(ref[3000:3300], 10, seed=52)
    built = _count_builds(monkeypatch, "MultiIndexHash")
    auto = neighbours.hamming_within_many(ref, [qa, qb], 10)
    assert built == [len(ref)]
    flat = neighbours.hamming_within_many(ref, [qa, qb], 10, mode="exact")
    for got, want in zip(auto, flat):
        assert len(want.query) > 0
        np.testing.assert_array_equal(got.query, want.query)
        np.testing.assert_array_equal(got.reference, want.reference)
        np.testing.assert_array_equal(got.score, want.score)


def test_own_pq_encoding_matches_faiss(monkeypatch):
    # The build encodes with its own look-up of the nearest 1-d centroid; the codes must be
    # FAISS' own (sa_encode layout: list number, then the packed 4-bit PQ codes).
    captured = []
    real = neighbours.IvfIndex._prepare_encoder

    def spy(self, ivf, quantizer):
        captured.append(neighbours._faiss().clone_index(ivf))
        real(self, ivf, quantizer)

    monkeypatch.setattr(neighbours.IvfIndex, "_prepare_encoder", spy)
    ref = clustered_vectors(8000, 148, seed=53)
    index = neighbours.IvfIndex(ref)
    reduced = index._reduce(clustered_vectors(3000, 148, seed=54))
    ours, theirs = index._encode(reduced), captured[0].sa_encode(reduced)
    assert ours.shape == theirs.shape
    assert (ours == theirs).mean() > 0.9999  # a value on a midpoint may go either way
