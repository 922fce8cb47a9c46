"""FAISS search: every candidate pair comes from here.

The reference split is indexed once and the query split is searched in batches, so memory is
O(N + batch * k), never N x M. Binary (Hamming) indexes serve perceptual hashes; inner-product
indexes serve unit-norm vectors (thumbnail descriptors and CNN embeddings), where the inner
product is the cosine similarity.

The index is chosen by the size of the reference set (``benchmarks/scaling.py`` measured where
each choice pays off):

* vectors: an exact flat index below :data:`APPROX_MIN_REFERENCE` rows; above it an
  approximate one (PCA to :data:`IVF_PCA_DIM` dimensions; in that space an IVF index of 4-bit
  PQ fast-scan codes returns a long shortlist, cut down with the distances of the reduced
  vectors (kept as float16), and the rest is re-ranked with the exact cosine of the full
  vectors, so every score returned is exact and only a true neighbour missing from the
  shortlists can be lost);
* binary codes: a flat range search below :data:`HASH_INDEX_MIN_REFERENCE` rows; above it a
  multi-index hash (the code is cut into substrings of 16 bits, 21-22 bits for very large
  references, each a sorted table). By the
  pigeonhole principle a code within the radius is within a few bits of the query in at least
  one substring, so the multi-index search is *exact*, not approximate.

Vector searches of many queries run in :data:`QUERY_BATCH` batches on every core, and the IVF
build encodes one part of the reference per core (Python threads, FAISS single-threaded in
each): on a 2-core machine shared with other work, OpenMP barriers of small FAISS calls cost
more than the calls (a PQ training took 22 s instead of 0.3 s). The multi-index hash search
is numpy work that runs in one thread (see :meth:`MultiIndexHash.search`).

:data:`SEARCH_MODE` (or :func:`search_mode`, or the ``mode`` argument) forces one choice.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from splitaudit._os import available_cores
from splitaudit.errors import invalid_param

#: Query rows per FAISS call: bounds the (batch, k) result arrays and keeps progress granular.
QUERY_BATCH = 4096
#: Bytes of float32 reference rows the exact vector search holds at a time. The references
#: (float16 embeddings) are widened block by block, never whole: a float32 index of the largest
#: exact set, 65,536 1280-d embeddings, would be 335 MB (5 KB per image); the thumbnail
#: descriptors of up to ~35,000 images fit in one block.
EXACT_BLOCK_BYTES = 16 << 20

#: "auto" picks the index by reference size; "exact" forces the exact searches (brute force,
#: the results the accuracy figures were measured with), "approximate" forces the IVF /
#: multi-index ones at any size.
SEARCH_MODE = "auto"
_MODES = ("auto", "exact", "approximate")

#: Reference rows from which :func:`vector_knn` uses the approximate index. Measured on the
#: shared 2-core machine (benchmarks/results/scaling.json, CPU seconds): at 10k references x
#: 1k queries the exact search of all signals costs ~2 s and nothing is gained; on the real
#: CIFAR-10 fingerprints, 50k train x 2k test, exact 11.0 s vs approximate 19.8 s for the
#: 1280-d embedding (the PCA/IVF build dominates) but 3.9 s vs 1.5 s for the thumbnail
#: descriptors, so with 10% as many queries as references both break even near 50k; at 100k
#: x 10k exact takes minutes (~260 CPU-s), the IVF fast-scan index ~10 CPU-s for both signals
#: with recall 1.0 of planted near duplicates. The threshold sits just above 60k so that CIFAR-10 (50k train) and
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
#: Rows from which the PCA is estimated (a covariance of 8,192 rows estimates 64 principal
#: directions well; more only cost D * D per row).
IVF_PCA_SAMPLE = 8192
#: Power iterations of the PCA of wide vectors (D > 2 * IVF_PCA_DIM): the leading
#: directions come from a subspace iteration on the covariance, not from a full
#: eigendecomposition (1.4-1.7 CPU-s for 1280-d embeddings; six iterations take ~0.05 s and
#: keep 99.9% of the variance that the exact top 64 directions keep).
IVF_PCA_ITERATIONS = 6
#: Reference rows per IVF list (nlist = N / this, rounded down to a power of two, at least
#: 16): 1,024 lists at 1M rows. More lists scan fewer codes per query but cost k-means
#: training and assignment time (N * nlist * IVF_PCA_DIM) at build: at 1M rows 512 lists
#: saved 2.7 CPU-s of assignment but cost 2 CPU-s more per 100k queries.
IVF_ROWS_PER_LIST = 512
#: IVF lists visited per query. The lists hold 4-bit PQ fast-scan codes of the PCA vectors,
#: not of their residuals to the list centroid (FAISS' default: one look-up table per query
#: instead of one per probed list, 2.7x faster to scan), so the search time grows with the
#: codes scanned. On 1M synthetic thumbnail descriptors 16 probes and a 64-code scan kept
#: 99.72% of 9,968 planted near duplicates in the scan, 8 probes 99.59% (8 probes and 128
#: codes: 99.77%, at the same cost); the CNN embeddings keep 100% with 8 or 16.
IVF_NPROBE = 16
#: Shortlist re-ranked with the exact cosine of the full vectors:
#: max(IVF_SHORTLIST_MIN, IVF_SHORTLIST_FACTOR * k).
IVF_SHORTLIST_FACTOR = 4
IVF_SHORTLIST_MIN = 16
#: Codes taken from the PQ fast-scan (approximate distances) per shortlisted row: the scan
#: returns this many times the shortlist, re-ranked by the distances of the PCA vectors
#: (kept as float16) to pick the shortlist.
IVF_REFINE_FACTOR = 4
#: Training rows per IVF list (the k-means sample), capped at N.
IVF_TRAIN_PER_LIST = 40
#: k-means iterations of the IVF training (FAISS' default is 25; the lists need not be
#: optimal, only balanced enough, and training is a large share of the build at 1M rows).
IVF_KMEANS_ITERATIONS = 10
#: Rows on which the PQ codebooks are trained (16 centroids per sub-quantizer need few).
IVF_PQ_TRAIN = 16384
#: Reference rows projected and added to the IVF per step of the build (bounds the float32
#: copies of float16 rows).
IVF_ADD_CHUNK = 8192
#: Below this many reference rows the "approximate" index searches exactly (a flat index):
#: a product quantizer cannot be trained on a handful of rows, and nothing is to be gained.
IVF_MIN_ROWS = 256
#: Bits per multi-index hash table when a 64-bit word is cut into 4 substrings; 3 substrings
#: of 21-22 bits are used instead where they cost less (see :func:`_mih_layout`).
MIH_SUBSTRING_BITS = 16
#: Bits flipped per 16-bit substring probe above which the multi-index search is not worth it
#: (this bounds the radius: 11 bits for 64-bit codes).
MIH_MAX_FLIPS = 2
#: Cost of probing one bucket, in candidate verifications. A probe reads the bucket start
#: table at a random place: 512 KB for 16 bits stays in cache, 16 MB for 22 bits does not,
#: so a probe costs several candidate checks. Measured at 1M references x 100k queries:
#: 4 x 16 bits 12 CPU-s (12k candidates per query), 3 x 21-22 bits 21 CPU-s (3.2k candidates
#: but 3.4k probes); with this cost 3 x 21-22 bits is chosen only from ~5M references.
MIH_PROBE_COST = 8.0
#: Candidate rows (and probed buckets) examined per multi-index step: bounds the temporary
#: arrays and keeps them in cache (at 1M references 2**16 was 1.8x faster than 2**22).
MIH_CANDIDATE_CHUNK = 1 << 16


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
    return _exact_knn_many(reference, queries, k, min_score)


def _exact_knn_many(reference: np.ndarray, queries: Sequence[np.ndarray], k: int,
                    min_score: float) -> list[Neighbours]:
    """Exact k-NN of each query set, reference block by block (:data:`EXACT_BLOCK_BYTES`).

    Each block's k best per query are merged into the best so far by score (a stable sort:
    among equal scores the earlier block's rows come first), so only (M, k) results are held
    per query set. Where more than k references tie at the k-th score, which of them are kept
    is arbitrary, as it is in one FAISS search of them all.
    """
    faiss = _faiss()
    step = max(k, EXACT_BLOCK_BYTES // (4 * reference.shape[1]))
    best: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(queries)
    for start in range(0, len(reference), step):
        block = np.ascontiguousarray(reference[start:start + step], np.float32)
        kb = min(k, len(block))
        for qi, query in enumerate(queries):
            sims = np.empty((len(query), kb), np.float32)
            idx = np.empty((len(query), kb), np.int64)
            for q in range(0, len(query), QUERY_BATCH):
                sims[q:q + QUERY_BATCH], idx[q:q + QUERY_BATCH] = faiss.knn(
                    np.ascontiguousarray(query[q:q + QUERY_BATCH], np.float32), block, kb,
                    metric=faiss.METRIC_INNER_PRODUCT)
            idx = np.where(idx >= 0, idx + start, -1)
            if best[qi] is not None:
                sims = np.concatenate([best[qi][0], sims], axis=1)
                idx = np.concatenate([best[qi][1], idx], axis=1)
                top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
                sims = np.take_along_axis(sims, top, axis=1)
                idx = np.take_along_axis(idx, top, axis=1)
            best[qi] = (sims, idx)
    results = []
    for query, found in zip(queries, best):
        if len(query) == 0 or found is None:
            results.append(Neighbours.empty())
            continue
        out_q: list = []
        out_r: list = []
        out_s: list = []
        _keep_pairs(out_q, out_r, out_s, 0, found[0], found[1], min_score)
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


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """Run FAISS calls of this thread on ``n`` OpenMP threads (the setting is per thread)."""
    faiss = _faiss()
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def _map(fn, items: Sequence) -> list:
    """``fn(item)`` for every item, results in order, on every core.

    Each worker runs FAISS single-threaded: two tasks in two threads keep both cores busy
    without OpenMP barriers, which on a loaded 2-core machine cost more than the work (a PQ
    training took 22 s instead of 0.3 s; adding 1M codes to an IVF index with two OpenMP
    threads took 8 s of wall time, in one thread 5.4 s).
    """
    threads = min(len(items), available_cores())
    if threads <= 1:
        with _faiss_threads(1):
            return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    def work(item):
        _faiss().omp_set_num_threads(1)  # this pool thread only
        return fn(item)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


def _map_batches(fn, n_rows: int) -> list:
    """``fn(start, stop)`` over :data:`QUERY_BATCH` row batches, in order, on every core."""
    return _map(lambda b: fn(*b),
                [(s, min(s + QUERY_BATCH, n_rows)) for s in range(0, n_rows, QUERY_BATCH)])


class IvfIndex:
    """Approximate inner-product k-NN: IVF-PQ fast-scan shortlist in a PCA space, exact re-ranking.

    For unit vectors the nearest by cosine are the nearest by L2 distance, and a centred PCA
    projection preserves L2 distances best, so the search runs with L2 in
    :data:`IVF_PCA_DIM` dimensions: an IVF index of 4-bit PQ fast-scan codes (one
    sub-quantizer per dimension) visits :data:`IVF_NPROBE` lists and returns
    :data:`IVF_REFINE_FACTOR` times the shortlist, re-ranked by the distance of the reduced
    vectors (FAISS ``IndexRefine`` over a float16 copy); the shortlist,
    max(:data:`IVF_SHORTLIST_MIN`, :data:`IVF_SHORTLIST_FACTOR` * k) rows, is then re-ranked
    with the exact cosine of the full vectors, so every score returned is exact and only a
    true neighbour missing from the shortlists can be lost. Memory beside ``reference`` (kept
    by reference, not copied): the float16 reduced vectors, the codes and ids, about
    2 * IVF_PCA_DIM + IVF_PCA_DIM / 2 + 8 bytes per row (168 at 64 dimensions).

    The build runs on every core: each encodes a contiguous part of the reference into its
    own copy of the trained index, and the parts are merged in order, which gives the same
    index as one sequential add.

    Parameters
    ----------
    reference : numpy.ndarray
        (N, D) unit-norm vectors, float16 or float32.
    """

    def __init__(self, reference: np.ndarray) -> None:
        faiss = _faiss()
        n, d = reference.shape
        self.reference = reference
        self.flat = n < IVF_MIN_ROWS  # too few rows to train on: searched exactly
        if self.flat:
            return
        nlist = ivf_lists(n)
        # A fixed seed: the same inputs give the same index, hence the same candidates.
        rng = np.random.default_rng(0)
        n_train = min(n, max(IVF_TRAIN_PER_LIST * nlist, IVF_PCA_SAMPLE, IVF_PQ_TRAIN, 2 * d))
        rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
        sample = np.ascontiguousarray(reference[rows], np.float32)
        self._fit_pca(sample[:: max(1, len(sample) // IVF_PCA_SAMPLE)], rng)
        dr = self.dim
        with _faiss_threads(1):  # small FAISS calls: OpenMP only adds barriers
            train = self._reduce(sample)
            del sample
            kmeans = faiss.Kmeans(dr, nlist, niter=IVF_KMEANS_ITERATIONS, seed=1234,
                                  max_points_per_centroid=IVF_TRAIN_PER_LIST)
            kmeans.train(train[:: max(1, len(train) // (IVF_TRAIN_PER_LIST * nlist))])
            quantizer = faiss.IndexFlatL2(dr)
            quantizer.add(kmeans.centroids)
            # One 4-bit sub-quantizer per dimension: half the recall loss of one per 2
            # dimensions (1M thumbnail descriptors: 99.85% against 98.95% of the planted near
            # duplicates). Built as a plain IVF-PQ, whose parts merge safely, then converted
            # to the fast-scan layout (the same index as adding to the fast-scan one).
            ivf = faiss.IndexIVFPQ(quantizer, dr, nlist, dr, 4)
            ivf.by_residual = False
            ivf.train(train[:: max(1, len(train) // IVF_PQ_TRAIN)])
        del train
        self._prepare_encoder(ivf, quantizer)
        # Each core encodes a contiguous part of the reference into its own trained, empty
        # copy; the parts are merged in order.
        parts = np.linspace(0, n, min(available_cores(), n // IVF_MIN_ROWS) + 1).astype(np.int64)
        copies = [ivf] + [faiss.clone_index(ivf) for _ in range(len(parts) - 2)]

        def build_part(i: int):
            store = faiss.IndexScalarQuantizer(dr, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
            for s in range(parts[i], parts[i + 1], IVF_ADD_CHUNK):
                stop = min(s + IVF_ADD_CHUNK, parts[i + 1])
                x = self._reduce(reference[s:stop])
                copies[i].add_sa_codes(self._encode(x), np.arange(s, stop, dtype=np.int64))
                store.add(x)
            return store

        stores = _map(build_part, range(len(parts) - 1))
        self.store = stores[0]
        for copy, store in zip(copies[1:], stores[1:]):
            ivf.merge_from(copy, 0)  # the ids are global already
            self.store.merge_from(store, 0)  # flat codes: ids are positions
        self.ivf = faiss.IndexIVFPQFastScan(ivf)
        # The fast-scan copy shares only the quantizer: let the IVF-PQ codes (40 MB at 1M
        # rows) go rather than keep them referenced from the Python wrapper.
        self.ivf.referenced_objects = [quantizer]
        self.ivf.nprobe = min(IVF_NPROBE, nlist)
        self.index = faiss.IndexRefine(self.ivf, self.store)

    def _prepare_encoder(self, ivf, quantizer) -> None:
        """Tables of :meth:`_encode` for the trained IVF-PQ ``ivf`` (one dimension per
        sub-quantizer, 16 centroids each) and its coarse ``quantizer``."""
        faiss = _faiss()
        centroids = faiss.vector_to_array(ivf.pq.centroids).reshape(self.dim, 16)
        order = np.argsort(centroids, axis=1)
        ranked = np.take_along_axis(centroids, order, 1)
        self._pq_order = order.astype(np.uint8)
        self._pq_bounds = ((ranked[:, 1:] + ranked[:, :-1]) / 2).astype(np.float32)
        self._quantizer = quantizer
        self._coarse_bytes = ivf.coarse_code_size()

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """FAISS ``sa_encode`` codes of reduced rows ``x`` (little-endian list number, then
        the 4-bit PQ codes, two per byte, low nibble first).

        With one dimension per sub-quantizer the nearest of its 16 centroids is found by
        counting the midpoints between sorted centroids below the value: 1.9 CPU-s for 1M
        rows, against 4.0 in FAISS' generic encoder, which its ``add`` runs in one thread.
        """
        _, lists = self._quantizer.search(x, 1)
        codes = np.empty((len(x), self._coarse_bytes + self.dim // 2), np.uint8)
        codes[:, :self._coarse_bytes] = (
            lists.astype("<i8").view(np.uint8).reshape(len(x), 8)[:, :self._coarse_bytes])
        dims = np.arange(self.dim)
        for s in range(0, len(x), 4096):  # (4096, dim, 15) comparisons: 4 MB at a time
            rank = (x[s:s + 4096, :, None] > self._pq_bounds).sum(axis=2, dtype=np.intp)
            pq = self._pq_order[dims, rank]
            codes[s:s + 4096, self._coarse_bytes:] = pq[:, 0::2] | (pq[:, 1::2] << 4)
        return codes

    def _fit_pca(self, sample: np.ndarray, rng: np.random.Generator) -> None:
        """Centred PCA to IVF_PCA_DIM dimensions (rounded up to even for the PQ fast-scan);
        with D <= IVF_PCA_DIM a rotation, padded with zero columns, that keeps distances.
        Sets ``self.transform`` (FAISS, x -> (x - mean) @ proj) and ``self.dim``."""
        faiss = _faiss()
        d = sample.shape[1]
        dr = min(d, IVF_PCA_DIM)
        dr += dr % 2
        mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred = sample - mean
        cov = (centred.T @ centred).astype(np.float64)
        proj = np.zeros((d, dr), np.float32)
        if d <= 2 * dr:
            _, vecs = np.linalg.eigh(cov)  # ascending
            keep = min(d, dr)
            proj[:, :keep] = vecs[:, ::-1][:, :keep]
        else:  # subspace iteration: the top dr directions of a D x D covariance
            basis = rng.standard_normal((d, dr + dr // 4))
            for _ in range(IVF_PCA_ITERATIONS):
                basis, _ = np.linalg.qr(cov @ basis)
            _, vecs = np.linalg.eigh(basis.T @ cov @ basis)
            proj[:] = (basis @ vecs[:, ::-1])[:, :dr]
        self.dim = dr
        self.transform = faiss.LinearTransform(d, dr, True)
        faiss.copy_array_to_vector(np.ascontiguousarray(proj.T).ravel(), self.transform.A)
        faiss.copy_array_to_vector(-(mean @ proj), self.transform.b)
        self.transform.is_trained = True

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        """(M, dim) float32 PCA coordinates of (M, D) rows, float16 widened a slice at a time."""
        out = np.empty((len(x), self.dim), np.float32)
        # 1 MB float32 slices stay in cache: 1M 1280-d rows cost 2.9 CPU-s, 4.3 in 40 MB ones.
        step = max(1, (1 << 18) // x.shape[1])
        for s in range(0, len(x), step):
            out[s:s + step] = self.transform.apply(np.ascontiguousarray(x[s:s + step], np.float32))
        return out

    def search(self, query: np.ndarray, k: int, *, min_score: float = -1.0) -> Neighbours:
        """k nearest reference rows of each query row (exact cosines, decreasing)."""
        n, d = self.reference.shape
        k = min(k, n)
        if len(query) == 0 or k <= 0:
            return Neighbours.empty()
        if self.flat:
            return _exact_knn_many(self.reference, [query], k, min_score)[0]
        shortlist = min(n, max(IVF_SHORTLIST_MIN, IVF_SHORTLIST_FACTOR * k))
        params = _faiss().IndexRefineSearchParameters(k_factor=float(IVF_REFINE_FACTOR))
        parts = _map_batches(
            lambda b0, b1: self._search_batch(query, b0, b1, k, shortlist, params, min_score),
            len(query))
        return _concat(*zip(*parts))

    def _search_batch(self, query: np.ndarray, start: int, stop: int, k: int, shortlist: int,
                      params, min_score: float) -> tuple:
        """(query rows, reference rows, cosines) of queries ``start:stop``."""
        d = self.reference.shape[1]
        q = np.ascontiguousarray(query[start:stop], np.float32)
        _, cand = self.index.search(self.transform.apply(q), shortlist, params=params)
        sims = np.empty(cand.shape, np.float32)
        step = max(1, (1 << 20) // (shortlist * d))  # re-rank ~4 MB of float32 rows at a time
        for s in range(0, len(q), step):
            rows_f = self.reference[np.maximum(cand[s:s + step], 0)].astype(np.float32)
            sims[s:s + step] = np.einsum("ijk,ik->ij", rows_f, q[s:s + step])
        sims[cand < 0] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out_q, out_r, out_s = [], [], []
        _keep_pairs(out_q, out_r, out_s, start, np.take_along_axis(sims, order, 1),
                    np.take_along_axis(cand, order, 1), min_score)
        return out_q[0], out_r[0], out_s[0]


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


def _mih_layout(n_bits: int, n_reference: int, radius: int) -> tuple[list[int], list[int]]:
    """(substring lengths, bits flipped per substring) of the cheapest exact multi-index search.

    Each 64-bit word is cut into 4 substrings of 16 bits or 3 of 21-22 bits. Generalised
    pigeonhole: with m substrings, if every substring t were further than tau_t bits from the
    query the whole code would be at least sum(tau_t) + m bits away, so sum(tau_t) >= radius -
    m + 1 guarantees that every code within ``radius`` is within tau_t of the query in some
    substring t. The cost of a layout is the buckets probed per query (each with
    :data:`MIH_PROBE_COST`) plus the candidates in them, N / 2**bits per bucket for uniform
    codes. Short substrings mean few probes but crowded buckets: 4 x 16 bits wins up to
    ~5M references, 3 x 21-22 bits above.
    """
    best: tuple[float, list[int], list[int]] | None = None
    for per_word, max_flips in ((4, MIH_MAX_FLIPS), (3, MIH_MAX_FLIPS + 1)):
        lengths = [64 // per_word + (1 if i < 64 % per_word else 0)
                   for i in range(per_word)] * (n_bits // 64)
        m = len(lengths)
        need = max(0, radius - m + 1)
        # The extra flips go to the last (shortest) substrings: fewer masks to probe.
        flips = [need // m + (1 if t >= m - need % m else 0) for t in range(m)]
        if max(flips) > max_flips:
            continue
        cost = 0.0
        for length, f in zip(lengths, flips):
            probes = sum(len(list(itertools.combinations(range(length), j))) for j in range(f + 1))
            cost += probes * (MIH_PROBE_COST + n_reference / 2.0 ** length)
        if best is None or cost < best[0]:
            best = (cost, lengths, flips)
    assert best is not None  # the 4 x 16-bit layout is feasible whenever _mih_flips is
    return best[1], best[2]


class MultiIndexHash:
    """Exact Hamming range search by multi-index hashing (Norouzi et al., CVPR 2012).

    Each code is cut into substrings (:func:`_mih_layout`: 16 bits, or 21-22 bits for very
    large references); per substring the reference rows are sorted by its value, so the rows sharing
    a value are one contiguous bucket. A query probes, in each substring, every value within a
    few flipped bits of its own, and only the rows of those buckets are compared in full.
    The tables of a layout are built at its first search. Memory per reference row and
    substring: about 16 bytes (row order, sorted codes, value), plus 2**bits bucket starts per
    table (16 MB per 22-bit table): ~60 bytes per 64-bit pHash, and ~50 MB more at 1M rows.

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
        self._layouts: dict[tuple[int, ...], tuple[np.ndarray, list]] = {}

    @staticmethod
    def _substrings(words: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
        """(N, m) int32 substring values of (N, W) uint64 words, most significant bits first."""
        out = np.empty((len(words), len(lengths)), np.int32)
        per_word = len(lengths) // words.shape[1]
        for t, length in enumerate(lengths):
            w, i = divmod(t, per_word)
            shift = 64 - sum(lengths[w * per_word:w * per_word + i + 1])
            out[:, t] = (words[:, w] >> np.uint64(shift)) & np.uint64((1 << length) - 1)
        return out

    def _tables(self, lengths: list[int]) -> tuple[np.ndarray, list]:
        key = tuple(lengths)
        if key not in self._layouts:
            n = len(self.words)
            subs = self._substrings(self.words, lengths)
            idx_type = np.int32 if n < 2**31 else np.int64
            tables = []
            for t, length in enumerate(lengths):
                order = np.argsort(subs[:, t], kind="stable").astype(idx_type, copy=False)
                starts = np.zeros((1 << length) + 1, idx_type)
                np.cumsum(np.bincount(subs[:, t], minlength=1 << length), out=starts[1:])
                words = self.words[order]
                tables.append((order, words.ravel() if words.shape[1] == 1 else words, starts))
            self._layouts[key] = (subs, tables)
        return self._layouts[key]

    def search(self, query: np.ndarray, radius: int) -> Neighbours:
        """All (query, reference) pairs within ``radius`` bits, sorted by (query, reference).

        Raises
        ------
        InvalidInputError
            When the radius is too large for an exact multi-index search (see
            :func:`choose_hash_index`).
        """
        if _mih_flips(self.n_bits, radius) is None:
            raise invalid_param("radius", "MultiIndexHash.search",
                                f"at most {3 * self.n_bits // MIH_SUBSTRING_BITS - 1}", radius)
        query = np.ascontiguousarray(query, np.uint8)
        if len(query) == 0 or len(self.words) == 0:
            return Neighbours.empty()
        lengths, flips = _mih_layout(self.n_bits, len(self.words), radius)
        subs, tables = self._tables(lengths)
        q_words = query.view(">u8").astype(np.uint64)
        q_subs = self._substrings(q_words, lengths)
        if q_words.shape[1] == 1:
            q_words = q_words.ravel()
        masks = [_flip_masks(length, f) for length, f in zip(lengths, flips)]
        # Per substring the queries are taken in the order of their value there: neighbouring
        # queries then probe neighbouring buckets of the sorted table, which stay in cache
        # (100k queries at 1M references: 4.6 CPU-s against 7.4 in query order).
        # One thread: np.repeat holds the GIL and the many short numpy calls hand it back and
        # forth, so a second thread bought no wall time (same search: 4.7-4.9 s in one
        # thread; 4.7-5.4 s wall and up to 50% more CPU in two).
        parts = []
        for t in range(len(tables)):
            parts += self._search_table(q_words, q_subs, t,
                                        np.argsort(q_subs[:, t], kind="stable"), radius, flips,
                                        masks, subs, tables)
        if not parts:
            return Neighbours.empty()
        nb = _concat(*zip(*parts))
        order = np.lexsort((nb.reference, nb.query))
        return Neighbours(nb.query[order], nb.reference[order], nb.score[order])

    @staticmethod
    def _search_table(q_words: np.ndarray, q_subs: np.ndarray, t: int, q_rows: np.ndarray,
                      radius: int, flips: list[int], masks: list[np.ndarray], subs: np.ndarray,
                      tables: list) -> list[tuple]:
        """(query rows, reference rows, distances) of the pairs that queries ``q_rows`` find
        first in substring ``t``, unsorted."""
        out = []
        order, sorted_words, starts = tables[t]
        mk = masks[t]
        # Queries per step so that the probed buckets fit MIH_CANDIDATE_CHUNK.
        q_step = max(1, MIH_CANDIDATE_CHUNK // len(mk))
        for j in range(0, len(q_rows), q_step):
            step_rows = q_rows[j:j + q_step]
            keys = q_subs[step_rows, t, None].astype(np.int64) ^ mk[None, :]
            lo = starts[keys].ravel().astype(np.int64)
            cnt = starts[keys + 1].ravel() - lo
            nz = np.flatnonzero(cnt)
            if not len(nz):
                continue
            lo, cnt, rows = lo[nz], cnt[nz], step_rows[nz // len(mk)]
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
                i0 = i1
                if not len(keep):
                    continue
                qq = r[np.searchsorted(ends, keep, "right")].astype(np.int64)
                rr = order[pos[keep]].astype(np.int64)
                dist = dist[keep]
                # A pair within the radius is probed in every substring that is close enough:
                # keep it only from the first such substring.
                first = np.ones(len(qq), bool)
                for t2 in range(t):
                    first &= np.bitwise_count(q_subs[qq, t2] ^ subs[rr, t2]) > flips[t2]
                out.append((qq[first], rr[first], dist[first]))
        return out




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
