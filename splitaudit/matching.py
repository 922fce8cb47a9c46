"""Candidate pairs -> verified ``exact`` / ``near`` / ``similar`` matches.

Candidates come from several signals, because no single one finds every kind of copy:
identical digests (exact copies), pHash within a Hamming radius in both orientations (cheap,
catches re-encodes), nearest neighbours of the thumbnail descriptor in both orientations
(catches brightness/contrast/colour/blur/grey), and nearest neighbours of the CNN embedding
(catches crops, rotations, overlays). Every candidate is then verified by aligning the two
thumbnails (:mod:`splitaudit.alignment`) before it is called a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from splitaudit import alignment
from splitaudit.errors import invalid_param
from splitaudit.extract import FingerprintTable, ScanPool
from splitaudit.neighbours import (
    Neighbours, exact_matches, hamming_within, hamming_within_many, vector_knn_many,
)

EXACT, NEAR, SIMILAR = 0, 1, 2
#: Candidate pairs verified at a time (bounds the working set to ~35 MB).
VERIFY_CHUNK = 1024

KIND_NAMES = ("exact", "near", "similar")


@dataclass(frozen=True)
class MatchConfig:
    """Thresholds of the matcher; every default was chosen on ``benchmarks/accuracy.py``.

    Attributes
    ----------
    near_threshold : float
        Aligned NCC (robust to a small overlay) that alone makes a pair a ``near`` duplicate,
        whatever transform aligned it.
    near_threshold_plain : float
        The same for a pair aligned without crop or rotation (identity, flip, aspect change):
        fewer hypotheses were tried, so chance alignments are rarer.
    near_threshold_cnn : float
        Lower aligned NCC that makes a ``near`` duplicate when the CNN agrees
        (cosine >= ``near_cosine``).
    near_cosine : float
        CNN cosine that confirms a pair between ``near_threshold_cnn`` and ``near_threshold``.
    large_rotation : float
        Rotations beyond this many degrees get no CNN shortcut: smooth skies and walls line
        up under large rotations.

    Why several thresholds: small images of simple scenes (a ship on the sea) align with
    lookalikes up to NCC ~0.97 once crops and rotations are allowed, and the more training
    images there are, the better the best lookalike. On the CIFAR-10 scan (50,000 train
    images) the share of a test image's best pair whose labels differ, a proxy for false
    pairs that needs no ground truth, is 0% at NCC >= 0.99, 2% in [0.98, 0.99), 10% in
    [0.97, 0.98) and 19% in [0.96, 0.97); with CNN cosine >= 0.8 it is 0% down to 0.90.
    similar_threshold : float
        Minimum aligned NCC for ``similar`` (same scene, not a copy).
    similar_cosine : float
        Minimum CNN cosine for ``similar`` when embeddings are available.
    hash_radius : int
        pHash Hamming radius that makes a pair a candidate.
    k_thumb, k_embedding : int
        Nearest neighbours per query taken from the thumbnail and CNN indexes.
    screen_threshold : float
        Coarse alignment score below which a candidate is dropped before the full search.
    flat_std : float
        Grey-level standard deviation below which a thumbnail counts as blank.
    """

    near_threshold: float = 0.98
    near_threshold_plain: float = 0.96
    near_threshold_cnn: float = 0.94
    near_cosine: float = 0.80
    large_rotation: float = 16.0
    similar_threshold: float = 0.94
    similar_cosine: float = 0.90
    hash_radius: int = 10
    k_thumb: int = 3
    k_embedding: int = 5
    screen_threshold: float = 0.5
    flat_std: float = 3.0

    def __post_init__(self) -> None:
        for name in ("near_threshold", "near_threshold_plain", "near_threshold_cnn", "near_cosine",
                     "similar_threshold", "similar_cosine", "screen_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise invalid_param(name, "scan", "a float in [0, 1]", v)
        for name, lo, hi in (("hash_radius", 0, 64), ("k_thumb", 0, 100), ("k_embedding", 0, 100)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise invalid_param(name, "scan", f"an int in [{lo}, {hi}]", v)


@dataclass(frozen=True)
class Matches:
    """Verified pairs between a query set and a reference set (indices into the table).

    Attributes
    ----------
    query, reference : numpy.ndarray
        (P,) table row of each side.
    kind : numpy.ndarray
        (P,) EXACT, NEAR or SIMILAR.
    ncc : numpy.ndarray
        (P,) best aligned NCC (1.0 for exact copies).
    cosine : numpy.ndarray
        (P,) CNN cosine similarity, NaN without embeddings.
    hamming : numpy.ndarray
        (P,) pHash Hamming distance (smaller of the two orientations).
    evidence : list of str
        Why the pair matched: "same bytes", "same pixels" or the aligning transform.
    """

    query: np.ndarray
    reference: np.ndarray
    kind: np.ndarray
    ncc: np.ndarray
    cosine: np.ndarray
    hamming: np.ndarray
    evidence: list[str]

    def __len__(self) -> int:
        return len(self.query)


def _rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``; a view, not a copy, when the rows are consecutive (a split's rows are,
    unless some of its files did not decode): the descriptors of every reference row copied
    were 0.24 KB per image of a scan's peak memory."""
    if len(rows) and (np.diff(rows) == 1).all():
        return values[rows[0]:rows[-1] + 1]
    return values[rows]


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x, axis=-1).sum(axis=-1)


class Matcher:
    """Matches query rows against reference rows of one :class:`FingerprintTable`.

    Derived arrays (descriptors, aspect bins) are computed once here and shared by every split
    pair and every check. The band-passed thumbnails that alignment works on are made only for
    the rows of the candidates being verified (:meth:`prepared`): for all rows they would be
    4 KB per image, four times the thumbnails themselves. With a ``pool`` (the scan's worker
    processes, :func:`splitaudit.extract.scan_pool`) candidates are verified on every core.
    """

    def __init__(self, table: FingerprintTable, config: MatchConfig | None = None,
                 pool: ScanPool | None = None) -> None:
        self.table = table
        self.config = config or MatchConfig()
        self.pool = pool
        self._descriptors: tuple[np.ndarray, np.ndarray] | None = None
        self.aspect = alignment.aspect_bin(table.width, table.height)
        self.flat = alignment.thumb_std(table.thumbs) < self.config.flat_std

    @property
    def desc(self) -> np.ndarray:
        """(N, M) float16 thumbnail descriptors (:func:`~splitaudit.alignment.thumb_descriptors`)."""
        return self._thumb_descriptors()[0]

    @property
    def desc_flip(self) -> np.ndarray:
        """:attr:`desc` of the mirrored thumbnails."""
        return self._thumb_descriptors()[1]

    def _thumb_descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._descriptors is None:
            self._descriptors = alignment.thumb_descriptors(self.table.thumbs)
        return self._descriptors

    def release(self) -> None:
        """Drop what only the search uses, once it is over: the worker pool (the scan closes it)
        and the descriptors (0.6 KB per image of the checks' peak; made again if asked for)."""
        self.pool = None
        self._descriptors = None

    def prepared(self, rows: np.ndarray) -> np.ndarray:
        """Band-passed float32 thumbnails (:func:`~splitaudit.alignment.prepare_thumbs`) of ``rows``."""
        return alignment.prepare_thumbs(self.table.thumbs[rows])

    def knn_signals(self) -> list[tuple[str, np.ndarray, np.ndarray, int, float]]:
        """(name, reference vectors, query vectors, k, minimum cosine) of each kNN signal.

        The one definition of the vector signals, shared with incremental re-matching.
        """
        t, c = self.table, self.config
        out = []
        if c.k_thumb:
            out.append(("thumb", self.desc, self.desc, c.k_thumb, 0.3))
            out.append(("thumb_flip", self.desc, self.desc_flip, c.k_thumb, 0.3))
        if t.embeddings is not None and c.k_embedding:
            out.append(("embedding", t.embeddings, t.embeddings, c.k_embedding, 0.5))
        return out

    def candidates(self, query: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Union of candidate pairs from every signal, as (P, 2) table rows (query, reference)."""
        t, c = self.table, self.config
        found: list[np.ndarray] = []

        def add(nb: Neighbours) -> None:
            found.append(np.stack([query[nb.query], reference[nb.reference]], axis=1))

        for nb in hamming_within_many(t.phash[reference], [t.phash[query], t.phash_flip[query]],
                                      c.hash_radius):
            add(nb)
        # Signals searching the same reference vectors (the thumbnail descriptor in both
        # orientations) share one index: at 1M references building it is seconds of CPU.
        groups: dict[tuple, tuple[np.ndarray, list[np.ndarray]]] = {}
        for _, ref_vecs, query_vecs, k, min_score in self.knn_signals():
            groups.setdefault((id(ref_vecs), k, min_score), (ref_vecs, []))[1].append(query_vecs)
        for (_, k, min_score), (ref_vecs, query_sets) in groups.items():
            for nb in vector_knn_many(_rows(ref_vecs, reference), [_rows(qv, query) for qv in query_sets],
                                      k, min_score=min_score):
                add(nb)
        pairs = np.concatenate(found)
        return np.unique(pairs, axis=0) if len(pairs) else pairs

    def verify(self, pairs: np.ndarray) -> Matches:
        """Classify candidate pairs; pairs that are neither copies nor similar are dropped."""
        t, c = self.table, self.config
        q, r = pairs[:, 0], pairs[:, 1]
        p = len(q)
        kind = np.full(p, -1, np.int8)
        ncc = np.zeros(p, np.float32)
        evidence = [""] * p
        same_bytes = (t.file_digest[q] == t.file_digest[r]).all(axis=1)
        same_pixels = (t.pixel_digest[q] == t.pixel_digest[r]).all(axis=1)
        for i in np.flatnonzero(same_bytes | same_pixels):
            kind[i], ncc[i] = EXACT, 1.0
            evidence[i] = "same bytes" if same_bytes[i] else "same pixels"
        # Blank images carry no structure to align: equal mean grey is all one can say.
        both_flat = np.flatnonzero(self.flat[q] & self.flat[r] & (kind < 0))
        mean_diff = np.abs(t.thumbs[q[both_flat]].mean(axis=(1, 2))
                           - t.thumbs[r[both_flat]].mean(axis=(1, 2)))
        for i in both_flat[mean_diff <= 4.0]:
            kind[i], ncc[i], evidence[i] = NEAR, 1.0, "both blank, same grey level"
        cosine = np.full(p, np.nan, np.float32)
        if t.embeddings is not None:
            # In chunks: both sides of every pair widened to float32 at once were 10 KB per
            # candidate pair (hundreds of MB on a 20,000-image full scan).
            for s in range(0, p, VERIFY_CHUNK):
                cosine[s:s + VERIFY_CHUNK] = np.einsum(
                    "pd,pd->p", t.embeddings[q[s:s + VERIFY_CHUNK]].astype(np.float32),
                    t.embeddings[r[s:s + VERIFY_CHUNK]].astype(np.float32))
        cnn_confirms = cosine >= c.near_cosine  # False where NaN (no embeddings)
        hamming = np.minimum(
            _popcount(t.phash[q] ^ t.phash[r]), _popcount(t.phash_flip[q] ^ t.phash[r])
        ).astype(np.int16)
        todo = np.flatnonzero((kind < 0) & ~self.flat[q] & ~self.flat[r])
        vouched = cnn_confirms[todo] | (hamming[todo] <= c.hash_radius)
        score, index = self._align_chunks(r[todo], q[todo], vouched)
        ncc[todo] = score  # pairs dropped by the coarse screen keep their coarse score
        aligned = index >= 0
        i, ti, sc = todo[aligned], index[aligned], score[aligned]
        # Per transform of the full set: its description, whether it is plain (no crop or
        # rotation) and whether it is a large rotation (no CNN shortcut). The scores are
        # float32 and compared with float32 thresholds, as a float32 scalar compares with a
        # Python float.
        ts = alignment.transform_set()
        described = [tr.describe() for tr in ts]
        plain = np.array([tr.kind == "identity" for tr in ts])
        large = np.array([tr.kind == "rotation" and abs(tr.angle) > c.large_rotation for tr in ts])
        threshold = np.where(plain[ti], np.float32(c.near_threshold_plain),
                             np.float32(c.near_threshold))
        shortcut = cnn_confirms[i] & ~large[ti]
        near = (sc >= threshold) | (shortcut & (sc >= np.float32(c.near_threshold_cnn)))
        kind[i[near]] = NEAR
        kind[i[~near & (sc >= np.float32(c.similar_threshold))]] = SIMILAR
        for j, k in zip(i.tolist(), ti.tolist()):
            evidence[j] = described[k]
        # High CNN similarity without alignment: same scene or object, not a copy.
        kind[(kind < 0) & (cosine >= c.similar_cosine)] = SIMILAR
        sel = np.flatnonzero(kind >= 0)
        return Matches(
            query=q[sel], reference=r[sel], kind=kind[sel], ncc=ncc[sel],
            cosine=cosine[sel], hamming=hamming[sel], evidence=[evidence[i] for i in sel],
        )

    def _align_chunks(
        self, ref: np.ndarray, qry: np.ndarray, vouched: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best aligned score of each (reference, query) row pair, and its transform.

        The transform is an index into :func:`splitaudit.alignment.transform_set`, -1 where
        the coarse screen dropped the pair (the score is then the coarse one). Pairs are
        aligned :data:`VERIFY_CHUNK` at a time (bounded memory), by :func:`_align_job`: in the
        scan's worker processes and this one when there is a pool, else here. Not in threads:
        two threads verifying chunks side by side were 4-6% *slower* in wall time on 2 cores
        (28,353 and 46,876 candidates of a 20,000-image scan, without and with CNN
        embeddings): the einsums overlap (1.4x), but two threads of sparse sampling products
        ran at 0.4-0.65x the serial speed although scipy releases the GIL.
        """
        n = len(ref)
        if n == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.intp)
        screen = self.config.screen_threshold

        def jobs() -> Iterator[tuple]:
            for s in range(0, n, VERIFY_CHUNK):
                r, q = ref[s:s + VERIFY_CHUNK], qry[s:s + VERIFY_CHUNK]
                # Each row once, however many pairs it is in (a train image near several val
                # images); pairs refer to rows of the chunk's thumbnails, never copy them.
                rows, inverse = np.unique(np.concatenate([r, q]), return_inverse=True)
                yield (self.table.thumbs[rows], inverse[:len(r)], inverse[len(r):],
                       self.aspect[r], self.aspect[q], vouched[s:s + VERIFY_CHUNK], screen)

        if self.pool is not None and n > VERIFY_CHUNK:
            parts = list(self.pool.run_ordered(_align_job, jobs(), share=True))
        else:
            parts = [_align_job(job) for job in jobs()]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def match(self, query: np.ndarray, reference: np.ndarray) -> Matches:
        """Find and verify every match of ``query`` rows among ``reference`` rows."""
        query = query[self.table.ok[query]]
        reference = reference[self.table.ok[reference]]
        digests = exact_matches(self.table.file_digest[reference], self.table.file_digest[query])
        pairs = [np.stack([query[digests.query], reference[digests.reference]], axis=1)]
        pairs.append(self.candidates(query, reference))
        allp = np.concatenate(pairs)
        allp = np.unique(allp, axis=0) if len(allp) else np.zeros((0, 2), np.int64)
        return self.verify(allp)

    def match_within(self, rows: np.ndarray) -> Matches:
        """Copies inside one split (exact digests and close pHashes only: it is informational)."""
        rows = rows[self.table.ok[rows]]
        t = self.table
        digests = exact_matches(t.file_digest[rows], t.file_digest[rows])
        close = hamming_within(t.phash[rows], t.phash[rows], min(self.config.hash_radius, 6))
        pairs = np.concatenate([
            np.stack([rows[digests.query], rows[digests.reference]], axis=1),
            np.stack([rows[close.query], rows[close.reference]], axis=1),
        ])
        pairs = pairs[pairs[:, 0] > pairs[:, 1]]  # each unordered pair once, no self pairs
        pairs = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
        m = self.verify(pairs)
        keep = m.kind != SIMILAR
        return Matches(m.query[keep], m.reference[keep], m.kind[keep], m.ncc[keep],
                       m.cosine[keep], m.hamming[keep], [e for e, k in zip(m.evidence, keep) if k])


def _align_job(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Align one chunk of candidate pairs (runs in a worker process, or in the caller's).

    ``job`` is (uint8 thumbnails of the chunk's rows, reference and query index into them,
    reference and query aspect bins, vouched flags, screen threshold); returns each pair's
    best score and transform index (-1 where the coarse screen dropped it).
    """
    thumbs, ia, ib, aa, ab, vouched, screen = job
    prepared = alignment.PreparedThumbs.from_thumbs(thumbs)
    coarse = alignment.align_rows(prepared, ia, ib, aa, ab, coarse=True)
    # Pairs the CNN or pHash already vouch for skip the cheap screen: its coarse grid can
    # miss an off-centre crop or a captioned copy that the full search aligns.
    sub = np.flatnonzero((coarse.ncc >= screen) | vouched)
    score = coarse.ncc.copy()
    index = np.full(len(ia), -1, np.intp)
    if len(sub):
        fine = alignment.align_rows(prepared, ia[sub], ib[sub], aa[sub], ab[sub],
                                    hints=coarse.index[sub])
        robust = alignment.robust_rows(prepared, ia[sub], ib[sub], aa[sub], ab[sub],
                                       fine.index, fine.direction)
        score[sub] = np.maximum(robust, fine.ncc)
        index[sub] = fine.index
    return score, index
