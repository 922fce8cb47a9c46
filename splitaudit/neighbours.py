"""FAISS search: every candidate pair comes from here.

The reference split is indexed once and the query split is searched in batches, so memory is
O(N + batch * k), never N x M. Binary (Hamming) indexes serve perceptual hashes; inner-product
indexes serve unit-norm vectors (thumbnail descriptors and CNN embeddings), where the inner
product is the cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Query rows per FAISS call: bounds the (batch, k) result arrays and keeps progress granular.
QUERY_BATCH = 4096


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


def vector_knn(
    reference: np.ndarray, query: np.ndarray, k: int, *, min_score: float = -1.0
) -> Neighbours:
    """Exact inner-product k nearest neighbours of each query row among reference rows.

    Parameters
    ----------
    reference, query : numpy.ndarray
        (N, D) and (M, D) unit-norm float vectors (float16 is accepted and widened per batch).
    k : int
        Neighbours per query (capped at N).
    min_score : float
        Pairs with a lower cosine are dropped.

    Returns
    -------
    Neighbours
    """
    if len(reference) == 0 or len(query) == 0 or k <= 0:
        return Neighbours.empty()
    faiss = _faiss()
    index = faiss.IndexFlatIP(reference.shape[1])
    for start in range(0, len(reference), QUERY_BATCH * 4):
        index.add(np.ascontiguousarray(reference[start:start + QUERY_BATCH * 4], np.float32))
    k = min(k, len(reference))
    out_q, out_r, out_s = [], [], []
    for start in range(0, len(query), QUERY_BATCH):
        q = np.ascontiguousarray(query[start:start + QUERY_BATCH], np.float32)
        sims, idx = index.search(q, k)
        rows = np.repeat(np.arange(start, start + len(q)), k)
        keep = (idx.ravel() >= 0) & (sims.ravel() >= min_score)
        out_q.append(rows[keep])
        out_r.append(idx.ravel()[keep])
        out_s.append(sims.ravel()[keep])
    return Neighbours(
        np.concatenate(out_q).astype(np.int64),
        np.concatenate(out_r).astype(np.int64),
        np.concatenate(out_s).astype(np.float32),
    )


def hamming_within(reference: np.ndarray, query: np.ndarray, radius: int) -> Neighbours:
    """All (query, reference) pairs whose packed binary codes differ in at most ``radius`` bits.

    Parameters
    ----------
    reference, query : numpy.ndarray
        (N, B) and (M, B) uint8 packed codes (B bytes = 8*B bits).
    radius : int
        Maximum Hamming distance, inclusive.

    Returns
    -------
    Neighbours
        ``score`` is the Hamming distance.
    """
    if len(reference) == 0 or len(query) == 0:
        return Neighbours.empty()
    faiss = _faiss()
    index = faiss.IndexBinaryFlat(reference.shape[1] * 8)
    index.add(np.ascontiguousarray(reference, np.uint8))
    out_q, out_r, out_s = [], [], []
    for start in range(0, len(query), QUERY_BATCH):
        q = np.ascontiguousarray(query[start:start + QUERY_BATCH], np.uint8)
        # FAISS binary range search keeps distances strictly below the threshold.
        lims, dist, idx = index.range_search(q, radius + 1)
        counts = np.diff(lims).astype(np.int64)
        out_q.append(np.repeat(np.arange(start, start + len(q)), counts))
        out_r.append(idx)
        out_s.append(dist)
    return Neighbours(
        np.concatenate(out_q).astype(np.int64),
        np.concatenate(out_r).astype(np.int64),
        np.concatenate(out_s).astype(np.float32),
    )


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
