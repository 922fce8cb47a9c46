"""FAISS search: every candidate pair comes from here.

The reference split is indexed once and the query split is searched in batches, so memory is
O(N + batch * k), never N x M. Binary (Hamming) indexes serve perceptual hashes; inner-product
indexes serve unit-norm vectors (thumbnail descriptors and CNN embeddings), where the inner
product is the cosine similarity.

The index is chosen by the size of the reference set (``benchmarks/scaling.py`` measured where
each choice pays off):

* vectors: an exact flat index below :data:`APPROX_MIN_REFERENCE` rows; above it an
  approximate one (PCA to :data:`IVF_PCA_DIM` dimensions, an IVF index in that space returns a
  shortlist, which is re-ranked with the exact cosine of the full vectors, so every score
  returned is exact and only a true neighbour missing from the shortlist can be lost);
* binary codes: a flat range search below :data:`HASH_INDEX_MIN_REFERENCE` rows; above it a
  multi-index hash (the code is cut into 16-bit substrings, each a sorted table). By the
  pigeonhole principle a code within the radius is within a few bits of the query in at least
  one substring, so the multi-index search is *exact*, not approximate.

:data:`SEARCH_MODE` (or :func:`search_mode`, or the ``mode`` argument) forces one choice.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from splitaudit.errors import invalid_param

#: Query rows per FAISS call: bounds the (batch, k) result arrays and keeps progress granular.
QUERY_BATCH = 4096

#: "auto" picks the index by reference size; "exact" forces the flat indexes (bit-identical
#: to the historical results), "approximate" forces the IVF / multi-index ones at any size.
SEARCH_MODE = "auto"
_MODES = ("auto", "exact", "approximate")

#: Reference rows from which :func:`vector_knn` uses the approximate index. Measured on the
#: shared 2-core machine (benchmarks/results/scaling.json, CPU seconds): at 10k references x
#: 1k queries the exact search of all signals costs ~2 s and nothing is gained; on the real
#: CIFAR-10 fingerprints, 50k train x 2k test, exact 11.0 s vs approximate 19.8 s for the
#: 1280-d embedding (the PCA/IVF build dominates) but 3.9 s vs 1.5 s for the thumbnail
#: descriptors, so with 10% as many queries as references both break even near 50k; at 100k
#: x 10k exact takes minutes, the IVF index ~25 s for both signals with recall 1.0 of planted
#: near duplicates. The threshold sits just above 60k so that CIFAR-10 (50k train) and
#: Fashion-MNIST (60k) keep the exact search their accuracy figures (README) were measured
#: with; on real CIFAR-10 the IVF path kept 97.1% of the embedding pairs at cosine >= 0.8.
APPROX_MIN_REFERENCE = 65_536
#: Reference rows from which :func:`hamming_within` uses the multi-index hash (exact, so the
#: threshold is only about speed): at 100k x 2 x 10k queries the flat range search took
#: ~4.4 s wall, the multi-index one 1.0 s CPU; at 10k the flat one takes 0.1 s.
HASH_INDEX_MIN_REFERENCE = 50_000

#: Dimensions of the PCA space in which the IVF shortlist is searched (64 keeps 96% of the
#: variance of the thumbnail descriptors; near duplicates stay near in any projection).
IVF_PCA_DIM = 64
#: Reference rows per IVF list (nlist = N / this, rounded down to a power of two, at least
#: 16): 1,024 lists at 1M rows. More lists scan fewer rows per query but cost k-means
#: training and assignment time (N * nlist * IVF_PCA_DIM) at build.
IVF_ROWS_PER_LIST = 512
#: IVF lists visited per query: on 300k synthetic thumbnail descriptors 8 probes kept every
#: planted near duplicate in the shortlist with 256 or 1,024 lists, 4 probes lost 0.5-1.6%.
IVF_NPROBE = 8
#: Shortlist re-ranked exactly: max(IVF_SHORTLIST_MIN, IVF_SHORTLIST_FACTOR * k).
IVF_SHORTLIST_FACTOR = 4
IVF_SHORTLIST_MIN = 16
#: Training rows per IVF list (the k-means sample), capped at N.
IVF_TRAIN_PER_LIST = 40
#: k-means iterations of the IVF training (FAISS' default is 25; the lists need not be
#: optimal, only balanced enough, and training is a large share of the build at 1M rows).
IVF_KMEANS_ITERATIONS = 10
#: Bits per multi-index hash table (each is a sorted 2**16-bucket table).
MIH_SUBSTRING_BITS = 16
#: Bits flipped per substring probe above which the multi-index search is not worth it.
MIH_MAX_FLIPS = 2
#: Candidate rows examined per multi-index step (bounds the temporary arrays, ~8 bytes each).
MIH_CANDIDATE_CHUNK = 1 << 22


@dataclass(frozen=True)
class Neighbours:
    """Candidate pairs between a query set and a reference set.

    Attributes
    ----------
    query, reference : numpy.ndarray
        (P,) int64 row indices into the query and reference arrays.
    score : numpy.ndarray
        (P,) float32: Hamming distance for binary searches, cosine for vector searches.
    """

    query: np.ndarray
    reference: np.ndarray
    score: np.ndarray

    @staticmethod
    def empty() -> "Neighbours":
        """A search result with no pairs."""
        return Neighbours(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _faiss():
    import faiss  # imported here: it is not needed for --help or discovery errors

    return faiss


# ------------------------------------------------------------------------------ index choice


def _resolve_mode(mode: str | None, owner: str) -> str:
    mode = SEARCH_MODE if mode is None else mode
    if mode not in _MODES:
        raise invalid_param("mode", owner, "one of 'auto', 'exact', 'approximate'", mode)
    return mode


@contextmanager
def search_mode(mode: str) -> Iterator[None]:
    """Temporarily set :data:`SEARCH_MODE` (for tests and benchmarks; not thread-safe).

    Parameters
    ----------
    mode : {"auto", "exact", "approximate"}
    """
    global SEARCH_MODE
    _resolve_mode(mode, "search_mode")
    old, SEARCH_MODE = SEARCH_MODE, mode
    try:
        yield
    finally:
        SEARCH_MODE = old


def choose_vector_index(n_reference: int, mode: str | None = None) -> str:
    """Index :func:`vector_knn` uses for ``n_reference`` rows: ``"flat"`` or ``"ivf"``.

    Parameters
    ----------
    n_reference : int
        Rows in the reference set.
    mode : {"auto", "exact", "approximate"}, optional
        Defaults to :data:`SEARCH_MODE`.
    """
    mode = _resolve_mode(mode, "vector_knn")
    if mode == "exact":
        return "flat"
    if mode == "approximate":
        return "ivf"
    return "ivf" if n_reference >= APPROX_MIN_REFERENCE else "flat"


def _mih_flips(n_bits: int, radius: int) -> list[int] | None:
    """Bits to flip per 16-bit substring so that a multi-index search is exact, or None.

    Generalised pigeonhole: with m substrings, if every substring were further than tau_t
    bits from the query the whole code would be at least sum(tau_t) + m bits away; so
    sum(tau_t) >= radius - m + 1 guarantees that every code within ``radius`` is within
    tau_t of the query in some substring t.
    """
    if n_bits % 64 or radius < 0:
        return None
    m = n_bits // MIH_SUBSTRING_BITS
    need = max(0, radius - m + 1)
    flips = [need // m + (1 if t < need % m else 0) for t in range(m)]
    return flips if max(flips) <= MIH_MAX_FLIPS else None


def choose_hash_index(n_reference: int, n_bits: int, radius: int, mode: str | None = None) -> str:
    """Index :func:`hamming_within` uses: ``"flat"`` or ``"multi-index"`` (both exact).

    The multi-index hash needs a code length that is a multiple of 64 bits and a radius small
    enough that each substring is probed with at most :data:`MIH_MAX_FLIPS` flipped bits
    (``radius <= 11`` for 64-bit pHashes); otherwise the flat index is used in every mode.
    """
    mode = _resolve_mode(mode, "hamming_within")
    if mode == "exact" or _mih_flips(n_bits, radius) is None:
        return "flat"
    if mode == "approximate":
        return "multi-index"
    return "multi-index" if n_reference >= HASH_INDEX_MIN_REFERENCE else "flat"


# ------------------------------------------------------------------------------ vectors


def vector_knn(
    reference: np.ndarray, query: np.ndarray, k: int, *, min_score: float = -1.0,
    mode: str | None = None,
) -> Neighbours:
    """Inner-product k nearest neighbours of each query row among reference rows.

    Exact (flat index) below :data:`APPROX_MIN_REFERENCE` reference rows, approximate above
    (see the module docstring); the scores returned are exact cosines in both cases.

    Parameters
    ----------
    reference, query : numpy.ndarray
        (N, D) and (M, D) unit-norm float vectors (float16 is accepted and widened per batch).
    k : int
        Neighbours per query (capped at N).
    min_score : float
        Pairs with a lower cosine are dropped.
    mode : {"auto", "exact", "approximate"}, optional
        Index choice; defaults to :data:`SEARCH_MODE`.

    Returns
    -------
    Neighbours
        Each query's pairs in decreasing cosine.
    """
    return vector_knn_many(reference, [query], k, min_score=min_score, mode=mode)[0]


def vector_knn_many(
    reference: np.ndarray, queries: Sequence[np.ndarray], k: int, *, min_score: float = -1.0,
    mode: str | None = None,
) -> list[Neighbours]:
    """:func:`vector_knn` of several query sets against one reference set, indexed once.

    Returns
    -------
    list of Neighbours
        One per query set, in order.
    """
    index_kind = choose_vector_index(len(reference), mode)
    if len(reference) == 0 or k <= 0:
        return [Neighbours.empty() for _ in queries]
    k = min(k, len(reference))
    if index_kind == "ivf":
        return _ivf_knn(reference, queries, k, min_score)
    faiss = _faiss()
    index = faiss.IndexFlatIP(reference.shape[1])
    for start in range(0, len(reference), QUERY_BATCH * 4):
        index.add(np.ascontiguousarray(reference[start:start + QUERY_BATCH * 4], np.float32))
    results = []
    for query in queries:
        if len(query) == 0:
            results.append(Neighbours.empty())
            continue
        out_q, out_r, out_s = [], [], []
        for start in range(0, len(query), QUERY_BATCH):
            q = np.ascontiguousarray(query[start:start + QUERY_BATCH], np.float32)
            sims, idx = index.search(q, k)
            _keep_pairs(out_q, out_r, out_s, start, sims, idx, min_score)
        results.append(_concat(out_q, out_r, out_s))
    return results


def _keep_pairs(out_q: list, out_r: list, out_s: list, start: int, sims: np.ndarray,
                idx: np.ndarray, min_score: float) -> None:
    rows = np.repeat(np.arange(start, start + len(idx)), idx.shape[1])
    keep = (idx.ravel() >= 0) & (sims.ravel() >= min_score)
    out_q.append(rows[keep])
    out_r.append(idx.ravel()[keep])
    out_s.append(sims.ravel()[keep])


def _concat(out_q: list, out_r: list, out_s: list) -> Neighbours:
    return Neighbours(
        np.concatenate(out_q).astype(np.int64),
        np.concatenate(out_r).astype(np.int64),
        np.concatenate(out_s).astype(np.float32),
    )


def ivf_lists(n_reference: int) -> int:
    """IVF lists for ``n_reference`` rows: a power of two near N / :data:`IVF_ROWS_PER_LIST`,
    at least 16, and never more than the rows allow for training (FAISS wants ~39 per list)."""
    nlist = 1 << max(4, int(np.log2(max(1, n_reference // IVF_ROWS_PER_LIST))))
    return max(1, min(nlist, n_reference // 39))


def _ivf_knn(reference: np.ndarray, queries: Sequence[np.ndarray], k: int,
             min_score: float) -> list[Neighbours]:
    index = IvfIndex(reference)
    return [index.search(q, k, min_score=min_score) for q in queries]


class IvfIndex:
    """Approximate inner-product k-NN: IVF shortlist in a PCA space, exact re-ranking.

    For unit vectors the nearest by cosine are the nearest by L2 distance, and a centred PCA
    projection preserves L2 distances best, so the shortlist of max(:data:`IVF_SHORTLIST_MIN`,
    :data:`IVF_SHORTLIST_FACTOR` * k) rows is searched with L2 in :data:`IVF_PCA_DIM`
    dimensions, then re-ranked with the exact cosine of the full vectors. Memory: the reduced
    float32 vectors and ids (about 4 * IVF_PCA_DIM + 8 bytes per row) beside ``reference``,
    which is kept by reference, not copied.

    Parameters
    ----------
    reference : numpy.ndarray
        (N, D) unit-norm vectors, float16 or float32.
    """

    def __init__(self, reference: np.ndarray) -> None:
        faiss = _faiss()
        n, d = reference.shape
        self.reference = reference
        nlist = ivf_lists(n)
        # A fixed seed: the same inputs give the same index, hence the same candidates.
        rng = np.random.default_rng(0)
        n_train = min(n, max(IVF_TRAIN_PER_LIST * nlist, 2 * d))
        rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
        sample = np.ascontiguousarray(reference[rows], np.float32)
        dr = min(d, IVF_PCA_DIM)
        self.pca = None
        if dr < d:
            # 8,192 rows estimate 64 principal directions well; more only cost d*d per row.
            self.pca = faiss.PCAMatrix(d, dr)
            self.pca.train(np.ascontiguousarray(sample[:: max(1, len(sample) // 8192)]))
        self.ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(dr), dr, nlist, faiss.METRIC_L2)
        self.ivf.cp.niter = IVF_KMEANS_ITERATIONS
        self.ivf.train(self._reduce(sample))
        del sample
        for start in range(0, n, QUERY_BATCH * 4):
            chunk = np.ascontiguousarray(reference[start:start + QUERY_BATCH * 4], np.float32)
            self.ivf.add(self._reduce(chunk))
        self.ivf.nprobe = min(IVF_NPROBE, nlist)

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.pca.apply(x) if self.pca is not None else x)

    def search(self, query: np.ndarray, k: int, *, min_score: float = -1.0) -> Neighbours:
        """k nearest reference rows of each query row (exact cosines, decreasing)."""
        n, d = self.reference.shape
        k = min(k, n)
        if len(query) == 0 or k <= 0:
            return Neighbours.empty()
        shortlist = min(n, max(IVF_SHORTLIST_MIN, IVF_SHORTLIST_FACTOR * k))
        step = max(1, (1 << 22) // (shortlist * d))  # re-rank ~16 MB of float32 rows at a time
        out_q, out_r, out_s = [], [], []
        for start in range(0, len(query), QUERY_BATCH):
            q = np.ascontiguousarray(query[start:start + QUERY_BATCH], np.float32)
            _, cand = self.ivf.search(self._reduce(q), shortlist)
            sims = np.empty(cand.shape, np.float32)
            for s in range(0, len(q), step):
                rows_f = self.reference[np.maximum(cand[s:s + step], 0)].astype(np.float32)
                sims[s:s + step] = np.matmul(rows_f, q[s:s + step, :, None])[:, :, 0]
            sims[cand < 0] = -np.inf
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            _keep_pairs(out_q, out_r, out_s, start, np.take_along_axis(sims, order, 1),
                        np.take_along_axis(cand, order, 1), min_score)
        return _concat(out_q, out_r, out_s)


# ------------------------------------------------------------------------------ binary codes


def hamming_within(
    reference: np.ndarray, query: np.ndarray, radius: int, *, mode: str | None = None
) -> Neighbours:
    """All (query, reference) pairs whose packed binary codes differ in at most ``radius`` bits.

    Flat range search below :data:`HASH_INDEX_MIN_REFERENCE` reference rows, multi-index hash
    above; both are exact and give the same pairs, in increasing (query, reference) order.

    Parameters
    ----------
    reference, query : numpy.ndarray
        (N, B) and (M, B) uint8 packed codes (B bytes = 8*B bits).
    radius : int
        Maximum Hamming distance, inclusive.
    mode : {"auto", "exact", "approximate"}, optional
        Index choice; defaults to :data:`SEARCH_MODE` ("exact" forces the flat index).

    Returns
    -------
    Neighbours
        ``score`` is the Hamming distance.
    """
    return hamming_within_many(reference, [query], radius, mode=mode)[0]


def hamming_within_many(
    reference: np.ndarray, queries: Sequence[np.ndarray], radius: int, *,
    mode: str | None = None,
) -> list[Neighbours]:
    """:func:`hamming_within` of several query sets against one reference set, indexed once."""
    index_kind = choose_hash_index(len(reference), reference.shape[1] * 8, radius, mode)
    if len(reference) == 0:
        return [Neighbours.empty() for _ in queries]
    if index_kind == "multi-index":
        index = MultiIndexHash(reference)
        return [index.search(q, radius) for q in queries]
    faiss = _faiss()
    flat = faiss.IndexBinaryFlat(reference.shape[1] * 8)
    flat.add(np.ascontiguousarray(reference, np.uint8))
    results = []
    for query in queries:
        out_q, out_r, out_s = [], [], []
        for start in range(0, len(query), QUERY_BATCH):
            q = np.ascontiguousarray(query[start:start + QUERY_BATCH], np.uint8)
            # FAISS binary range search keeps distances strictly below the threshold.
            lims, dist, idx = flat.range_search(q, radius + 1)
            counts = np.diff(lims).astype(np.int64)
            out_q.append(np.repeat(np.arange(start, start + len(q)), counts))
            out_r.append(idx)
            out_s.append(dist)
        results.append(_concat(out_q, out_r, out_s) if out_q else Neighbours.empty())
    return results


def _flip_masks(bits: int, flips: int) -> np.ndarray:
    """Every ``bits``-bit mask with at most ``flips`` bits set (0 first)."""
    out = [0]
    for f in range(1, flips + 1):
        out += [sum(1 << i for i in c) for c in itertools.combinations(range(bits), f)]
    return np.asarray(out, np.int64)


class MultiIndexHash:
    """Exact Hamming range search by multi-index hashing (Norouzi et al., CVPR 2012).

    Each code is cut into 16-bit substrings; per substring the reference rows are sorted by
    its value, so the rows sharing a value are one contiguous bucket. A query probes, in
    each substring, every value within a few flipped bits of its own (see
    :func:`_mih_flips`), and only the rows of those buckets are compared in full. Memory:
    about 14 bytes per reference row and 16-bit substring (row order, sorted codes, value):
    ~60 bytes per 64-bit pHash.

    Parameters
    ----------
    reference : numpy.ndarray
        (N, B) uint8 packed codes, B a multiple of 8.
    """

    def __init__(self, reference: np.ndarray) -> None:
        reference = np.ascontiguousarray(reference, np.uint8)
        n, b = reference.shape
        if b % 8:
            raise invalid_param("reference", "MultiIndexHash", "codes of a multiple of 8 bytes",
                                f"{b} bytes")
        self.n_bits = 8 * b
        self.words = reference.view(">u8").astype(np.uint64)  # (N, W) native uint64
        self.subs = reference.view(">u2").astype(np.uint16)  # (N, m) substring values
        idx_type = np.int32 if n < 2**31 else np.int64
        self.tables = []
        for t in range(self.subs.shape[1]):
            order = np.argsort(self.subs[:, t], kind="stable").astype(idx_type, copy=False)
            starts = np.zeros((1 << MIH_SUBSTRING_BITS) + 1, np.int64)
            np.cumsum(np.bincount(self.subs[:, t], minlength=1 << MIH_SUBSTRING_BITS),
                      out=starts[1:])
            words = self.words[order]
            self.tables.append((order, words.ravel() if words.shape[1] == 1 else words, starts))

    def search(self, query: np.ndarray, radius: int) -> Neighbours:
        """All (query, reference) pairs within ``radius`` bits, sorted by (query, reference).

        Raises
        ------
        InvalidInputError
            When the radius is too large for an exact multi-index search (see
            :func:`choose_hash_index`).
        """
        flips = _mih_flips(self.n_bits, radius)
        if flips is None:
            raise invalid_param("radius", "MultiIndexHash.search",
                                f"at most {3 * self.n_bits // MIH_SUBSTRING_BITS - 1}", radius)
        query = np.ascontiguousarray(query, np.uint8)
        if len(query) == 0:
            return Neighbours.empty()
        q_words = query.view(">u8").astype(np.uint64)
        q_subs = query.view(">u2").astype(np.int64)
        if q_words.shape[1] == 1:
            q_words = q_words.ravel()
        masks = {f: _flip_masks(MIH_SUBSTRING_BITS, f) for f in set(flips)}
        batches = [(s, min(s + QUERY_BATCH, len(query))) for s in range(0, len(query), QUERY_BATCH)]
        # numpy releases the GIL in the per-candidate work: threads use every core.
        threads = min(len(batches), _cores())
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(
                    lambda b: self._search_batch(q_words, q_subs, b[0], b[1], radius, flips, masks),
                    batches))
        else:
            parts = [self._search_batch(q_words, q_subs, b0, b1, radius, flips, masks)
                     for b0, b1 in batches]
        parts = [p for part in parts for p in part]
        if not parts:
            return Neighbours.empty()
        nb = _concat(*zip(*parts))
        order = np.lexsort((nb.reference, nb.query))
        return Neighbours(nb.query[order], nb.reference[order], nb.score[order])

    def _search_batch(self, q_words: np.ndarray, q_subs: np.ndarray, start: int, stop: int,
                      radius: int, flips: list[int], masks: dict[int, np.ndarray]) -> list[tuple]:
        """(query rows, reference rows, distances) of queries ``start:stop``, unsorted."""
        out = []
        for t, (order, sorted_words, starts) in enumerate(self.tables):
            mk = masks[flips[t]]
            keys = q_subs[start:stop, t, None] ^ mk[None, :]
            lo = starts[keys].ravel()
            cnt = starts[keys + 1].ravel() - lo
            nz = np.flatnonzero(cnt)
            lo, cnt, rows = lo[nz], cnt[nz], start + nz // len(mk)
            cum = np.cumsum(cnt)
            i0 = 0
            while i0 < len(cnt):  # slices of at most ~MIH_CANDIDATE_CHUNK candidates
                base = cum[i0] - cnt[i0]
                i1 = max(i0 + 1, int(np.searchsorted(cum, base + MIH_CANDIDATE_CHUNK, "right")))
                c, ends, r = cnt[i0:i1], cum[i0:i1] - base, rows[i0:i1]
                # Positions of every candidate: each probed bucket is a contiguous run.
                pos = np.repeat(lo[i0:i1] - (ends - c), c)
                pos += np.arange(int(ends[-1]), dtype=np.int64)
                x = sorted_words[pos]
                x ^= np.repeat(q_words[r], c, axis=0)
                dist = np.bitwise_count(x)
                if dist.ndim == 2:
                    dist = dist.sum(axis=1, dtype=np.int64)
                keep = np.flatnonzero(dist <= radius)
                qq = r[np.searchsorted(ends, keep, "right")]
                rr = order[pos[keep]].astype(np.int64)
                dist = dist[keep]
                # A pair within the radius is probed in every substring that is close
                # enough: keep it only from the first such substring.
                first = np.ones(len(qq), bool)
                for t2 in range(t):
                    first &= np.bitwise_count(q_subs[qq, t2] ^ self.subs[rr, t2]) > flips[t2]
                out.append((qq[first], rr[first], dist[first]))
                i0 = i1
        return out


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def exact_matches(reference: np.ndarray, query: np.ndarray) -> Neighbours:
    """All (query, reference) pairs with identical rows (digests), by hashing, not comparing.

    Parameters
    ----------
    reference, query : numpy.ndarray
        (N, B) and (M, B) uint8 digests.
    """
    table: dict[bytes, list[int]] = {}
    for i, row in enumerate(reference):
        table.setdefault(row.tobytes(), []).append(i)
    qs, rs = [], []
    for j, row in enumerate(query):
        for i in table.get(row.tobytes(), ()):
            qs.append(j)
            rs.append(i)
    return Neighbours(
        np.asarray(qs, np.int64), np.asarray(rs, np.int64), np.zeros(len(qs), np.float32)
    )
