"""Reuse the verified pairs of the last scan: nothing to do when nothing changed, and only the
changed files' pairs to compute when a few did.

A *match state* is what matching produced for one ordered list of samples: per split pair the
verified :class:`~splitaudit.matching.Matches` and the candidate pairs they were verified from,
per split the within-split matches, and the unreadable files. It is keyed by everything that
changes the result besides the files (fingerprint and model identity, matcher thresholds, split
order, splitaudit version: :func:`state_key`) and stamped with a digest of the ordered
``(split, path, content digest)`` list (:func:`state_digest`).

Incremental re-matching after some files changed (added, edited or removed; "changed" below):

* pairs whose two sides are unchanged are kept as they were verified (verification looks at
  the two fingerprints only), and so are the candidate pairs they came from;
* every changed query is matched against every reference (all signals: digests, pHash radius,
  nearest neighbours), as is every unchanged query one of whose old candidates was changed or
  removed (its k nearest neighbours may now be others);
* every other query is matched against the changed references only: digests and pHash radius
  exactly, and nearest-neighbour pairs only when they score at least the query's *floor*, the
  score of its k-th neighbour at the last search (a reference below it cannot be among the
  query's k nearest, whatever else was added).

The candidate set is therefore the one a full scan would build, plus two kinds of pairs a full
scan might not retrieve: an old candidate of an unchanged query that a new reference pushed out
of its k nearest neighbours, and a new reference that beats the query's old floor but not its
new k-th neighbour. Every pair is verified exactly as in a full scan, so the result can differ
from a full re-scan only by *keeping* such a verified pair, never by losing one. Exact-pixel
confirmation (full-size re-decode of near pairs with NCC >= 0.995) is applied to the new pairs
by the caller, as in a full scan. Within-split matching (digests and pHash radius only) is
exact.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from splitaudit._version import __version__
from splitaudit.matching import SIMILAR, Matcher, Matches
from splitaudit.neighbours import exact_matches, hamming_within, vector_knn

#: Above this share of changed samples a full match is cheaper than bookkeeping.
MAX_INCREMENTAL_SHARE = 0.3
#: Bump when the meaning of a stored state changes.
STATE_FORMAT = 1

Pair = tuple[str, str]


@dataclass
class MatchResult:
    """Matches of one scan, row indices into its sample list."""

    cross: dict[Pair, Matches]
    within: dict[str, Matches]
    candidates: dict[Pair, np.ndarray]  # (P, 2) int64 (query row, reference row)
    floors: dict[Pair, dict[str, np.ndarray]]  # "rows" and one floor per kNN signal
    mode: str = "full"


def state_key(fp_identity: str, model_identity: str | None, match_config, splits: Sequence[str],
              extra: str = "") -> str:
    """Key of a match state: everything but the files that the matches depend on."""
    text = json.dumps([STATE_FORMAT, __version__, fp_identity, model_identity or "hash-only",
                       asdict(match_config), list(splits), extra], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def sample_tokens(samples: Sequence, keys: Sequence[bytes | None], errors: dict[int, str]) -> list[str]:
    """Per-sample state token: hex content digest, or ``"!" + reason`` for unread files."""
    out = []
    for i, k in enumerate(keys):
        out.append(k.hex() if k is not None else "!" + errors.get(i, "unread"))
    return out


def paths_digest(samples: Sequence, joined: str | None = None) -> bytes:
    """Digest of the ordered (split, path) list (split boundaries as run lengths);
    ``joined`` is ``"\\x00".join(paths)`` when the caller has it already."""
    h = hashlib.blake2b(digest_size=16)
    runs: list[list] = []
    for split in [s.split for s in samples]:
        if runs and runs[-1][0] == split:
            runs[-1][1] += 1
        else:
            runs.append([split, 1])
    h.update(json.dumps(runs).encode())
    if joined is None:
        joined = "\x00".join([s.path for s in samples])
    h.update(joined.encode("utf-8", "surrogateescape"))
    return h.digest()


def state_digest(samples: Sequence, tokens: Sequence[str]) -> bytes:
    """Digest of the ordered (split, path, token) list."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\x00".join(f"{s.split}\x01{s.path}\x01{t}" for s, t in zip(samples, tokens)).encode(
        "utf-8", "surrogateescape"))
    return h.digest()


# ------------------------------------------------------------------------------ matching


def candidate_search(matcher: Matcher, query: np.ndarray, reference: np.ndarray,
                     floors: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:meth:`Matcher.candidates` (all signals, same parameters) that also returns, per kNN
    signal, each query's *floor*: the score of its k-th neighbour, or the signal's minimum
    score when fewer than k neighbours pass it. A reference scoring below a query's floor
    cannot be among its k nearest neighbours, however many references are added later.

    ``floors`` (per signal, an array indexed by table row) switches to the incremental use:
    ``query`` is searched among ``reference`` (the changed references only) and kNN pairs
    scoring below the query's floor are dropped.
    """
    t, c = matcher.table, matcher.config
    found: list[np.ndarray] = []

    def add(qi: np.ndarray, ri: np.ndarray) -> None:
        found.append(np.stack([query[qi], reference[ri]], axis=1))

    for codes in (t.phash, t.phash_flip):
        nb = hamming_within(t.phash[reference], codes[query], c.hash_radius)
        add(nb.query, nb.reference)
    out_floors: dict[str, np.ndarray] = {}
    for name, ref_vecs, query_vecs, k, min_score in matcher.knn_signals():
        nb = vector_knn(ref_vecs[reference], query_vecs[query], k, min_score=min_score)
        if floors is not None:
            keep = nb.score >= floors[name][query[nb.query]]
            add(nb.query[keep], nb.reference[keep])
            continue
        add(nb.query, nb.reference)
        count = np.bincount(nb.query, minlength=len(query))
        kth = np.full(len(query), np.inf, np.float32)
        np.minimum.at(kth, nb.query, nb.score)
        # Fewer than k neighbours above the minimum score: any reference above it may enter.
        full = count >= k if len(reference) >= k else np.zeros(len(query), bool)
        out_floors[name] = np.where(full, kth, np.float32(min_score)).astype(np.float32)
    if not found:
        return np.zeros((0, 2), np.int64), out_floors
    pairs = np.concatenate(found)
    return (np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)), out_floors


def match_pair(matcher: Matcher, query: np.ndarray, reference: np.ndarray,
               floors: dict[str, np.ndarray] | None = None):
    """:meth:`Matcher.match` that also returns the candidate pairs it verified and the kNN
    floors of its queries (see :func:`candidate_search`); ``tests/test_cache.py`` checks that
    it finds the same pairs as ``Matcher.match``.

    Returns
    -------
    (Matches, numpy.ndarray, dict)
        Matches, (P, 2) candidate pairs, and {signal: (Q,) float32 floors} of the readable
        ``query`` rows, which are under the key ``"rows"`` (empty floors when ``floors`` given).
    """
    t = matcher.table
    query = query[t.ok[query]]
    reference = reference[t.ok[reference]]
    digests = exact_matches(t.file_digest[reference], t.file_digest[query])
    cand, out_floors = candidate_search(matcher, query, reference, floors)
    allp = np.concatenate([np.stack([query[digests.query], reference[digests.reference]], axis=1), cand])
    allp = np.unique(allp, axis=0) if len(allp) else np.zeros((0, 2), np.int64)
    out_floors["rows"] = query
    return matcher.verify(allp), allp, out_floors


def within_changed(matcher: Matcher, rows: np.ndarray, changed: np.ndarray) -> Matches:
    """:meth:`Matcher.match_within` restricted to pairs with at least one changed row."""
    t = matcher.table
    rows = rows[t.ok[rows]]
    changed = changed[t.ok[changed]]
    digests = exact_matches(t.file_digest[rows], t.file_digest[changed])
    close = hamming_within(t.phash[rows], t.phash[changed], min(matcher.config.hash_radius, 6))
    pairs = np.concatenate([
        np.stack([changed[digests.query], rows[digests.reference]], axis=1),
        np.stack([changed[close.query], rows[close.reference]], axis=1),
    ]).astype(np.int64)
    pairs = np.sort(pairs, axis=1)[:, ::-1]  # (larger row, smaller row), as match_within
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
    m = matcher.verify(pairs)
    return take(m, m.kind != SIMILAR)


def take(m: Matches, sel) -> Matches:
    """Rows ``sel`` (bool mask or indices) of ``m``."""
    idx = np.flatnonzero(sel) if np.asarray(sel).dtype == bool else np.asarray(sel, np.int64)
    return Matches(m.query[idx], m.reference[idx], m.kind[idx], m.ncc[idx], m.cosine[idx],
                   m.hamming[idx], [m.evidence[i] for i in idx.tolist()])


def concat(parts: Sequence[Matches]) -> Matches:
    """Matches of every part, in (query, reference) order, each pair once (first wins)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_matches()
    m = Matches(
        np.concatenate([p.query for p in parts]).astype(np.int64),
        np.concatenate([p.reference for p in parts]).astype(np.int64),
        np.concatenate([p.kind for p in parts]).astype(np.int8),
        np.concatenate([p.ncc for p in parts]).astype(np.float32),
        np.concatenate([p.cosine for p in parts]).astype(np.float32),
        np.concatenate([p.hamming for p in parts]).astype(np.int16),
        [e for p in parts for e in p.evidence],
    )
    pairs = np.stack([m.query, m.reference], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)  # sorted by (query, reference)
    return take(m, first)


def empty_matches() -> Matches:
    """No pairs."""
    z = np.zeros(0, np.int64)
    return Matches(z, z.copy(), np.zeros(0, np.int8), np.zeros(0, np.float32),
                   np.zeros(0, np.float32), np.zeros(0, np.int16), [])


def _remap(m: Matches, old_to_new: np.ndarray) -> Matches:
    """Pairs whose two sides are unchanged, in new row indices."""
    if not len(m):
        return empty_matches()
    q, r = old_to_new[m.query], old_to_new[m.reference]
    keep = (q >= 0) & (r >= 0)
    k = take(m, keep)
    return Matches(q[keep], r[keep], k.kind, k.ncc, k.cosine, k.hamming, k.evidence)


def full_match(matcher: Matcher, rows: dict[str, np.ndarray], order: Sequence[str],
               on_cross=None, progress=None) -> MatchResult:
    """Match every split pair and every split, keeping candidates and kNN floors."""
    cross, cand, floors = {}, {}, {}
    todo = [(q, r) for qi, q in enumerate(order) for r in order[:qi]]
    for done, (q, r) in enumerate(todo):
        m, c, f = match_pair(matcher, rows[q], rows[r])
        if on_cross is not None:
            on_cross(m)
        cross[(q, r)], cand[(q, r)], floors[(q, r)] = m, c, f
        if progress is not None:
            progress("search", done + 1, len(todo))
    within = {s: matcher.match_within(rows[s]) for s in order}
    return MatchResult(cross, within, cand, floors, "full")


def _floor_arrays(prev: dict[str, np.ndarray], old_to_new: np.ndarray, n: int,
                  signals: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Old floors moved to new row indices, as arrays over all n rows (NaN: unknown), and the
    mask of rows that have every floor; None when a signal is missing."""
    if any(name not in prev for name in signals):
        return None
    new_rows = old_to_new[prev["rows"]] if len(prev["rows"]) else np.zeros(0, np.int64)
    keep = new_rows >= 0
    out, have = {}, np.zeros(n, bool)
    have[new_rows[keep]] = True
    for name in signals:
        arr = np.full(n, np.nan, np.float32)
        arr[new_rows[keep]] = prev[name][keep]
        out[name] = arr
    return out, have


def rematch(matcher: Matcher, rows: dict[str, np.ndarray], order: Sequence[str],
            old: "StoredState", samples: Sequence, tokens: Sequence[str],
            on_cross=None, progress=None) -> MatchResult | None:
    """Incremental matching against a previous state; None when a full match is better."""
    n = len(samples)
    index = {(sp, p): i for i, (sp, p, _) in enumerate(old.keys)}
    old_to_new = np.full(len(old.keys), -1, np.int64)
    changed = np.ones(n, bool)
    for i, (s, tok) in enumerate(zip(samples, tokens)):
        j = index.get((s.split, s.path))
        if j is not None and old.keys[j][2] == tok and not tok.startswith("!"):
            old_to_new[j] = i
            changed[i] = False
    current = {(s.split, s.path) for s in samples}
    removed = sum(1 for sp, p, _ in old.keys if (sp, p) not in current)
    n_changed = int(changed.sum()) + removed  # an edited file counts once
    if n_changed > MAX_INCREMENTAL_SHARE * max(n, 1):
        return None
    signals = [name for name, *_ in matcher.knn_signals()]
    ok = matcher.table.ok
    cross, cand, floors = {}, {}, {}
    todo = [(q, r) for qi, q in enumerate(order) for r in order[:qi]]
    for done, (q, r) in enumerate(todo):
        prev_m, prev_c = old.cross.get((q, r)), old.candidates.get((q, r))
        moved = None
        if prev_m is not None and prev_c is not None and (q, r) in old.floors:
            moved = _floor_arrays(old.floors[(q, r)], old_to_new, n, signals)
        if moved is None:
            m, c, f = match_pair(matcher, rows[q], rows[r])
            if on_cross is not None:
                on_cross(m)
            cross[(q, r)], cand[(q, r)], floors[(q, r)] = m, c, f
            continue
        floor_arrays, has_floor = moved
        # Queries that lost a candidate (changed or removed reference) start over: their k
        # nearest neighbours may now be others. So do changed queries, and any without floors.
        redo = changed | (ok & ~has_floor)
        if len(prev_c):
            lost = prev_c[old_to_new[prev_c[:, 1]] < 0, 0]
            again = old_to_new[np.unique(lost)]
            redo[again[again >= 0]] = True
        kept = _remap(prev_m, old_to_new)
        kept = take(kept, ~redo[kept.query])
        kc = old_to_new[prev_c] if len(prev_c) else np.zeros((0, 2), np.int64)
        kc = kc[(kc >= 0).all(axis=1)] if len(kc) else kc
        kc = kc[~redo[kc[:, 0]]] if len(kc) else kc
        qrows, rrows = rows[q], rows[r]
        q_redo, q_keep = qrows[redo[qrows]], qrows[~redo[qrows]]
        r_changed = rrows[changed[rrows]]
        new, cands = [], [kc]
        f_rows = [q_keep]
        f_vals = {name: [floor_arrays[name][q_keep]] for name in signals}
        if len(q_redo):
            m1, c1, f1 = match_pair(matcher, q_redo, rrows)
            new.append(m1)
            cands.append(c1)
            f_rows.append(f1["rows"])
            for name in signals:
                f_vals[name].append(f1[name])
        if len(q_keep) and len(r_changed):
            m2, c2, _ = match_pair(matcher, q_keep, r_changed, floors=floor_arrays)
            new.append(m2)
            cands.append(c2)
        for m in new:
            if on_cross is not None:
                on_cross(m)
        cross[(q, r)] = concat([*new, kept])
        allc = np.concatenate([c.reshape(-1, 2).astype(np.int64) for c in cands])
        cand[(q, r)] = np.unique(allc, axis=0) if len(allc) else np.zeros((0, 2), np.int64)
        floors[(q, r)] = {"rows": np.concatenate(f_rows).astype(np.int64),
                          **{name: np.concatenate(v).astype(np.float32) for name, v in f_vals.items()}}
        if progress is not None:
            progress("search", done + 1, len(todo))
    within = {}
    for s in order:
        prev = old.within.get(s)
        if prev is None:
            within[s] = matcher.match_within(rows[s])
            continue
        kept = _remap(prev, old_to_new)
        srows = rows[s]
        ch = srows[changed[srows]]
        within[s] = concat([within_changed(matcher, srows, ch), kept]) if len(ch) else concat([kept])
    return MatchResult(cross, within, cand, floors, f"incremental ({n_changed} changed)")


# ------------------------------------------------------------------------------ storage


@dataclass
class StoredState:
    """A match state read back from the cache."""

    keys: list[tuple[str, str, str]]
    cross: dict[Pair, Matches]
    within: dict[str, Matches]
    candidates: dict[Pair, np.ndarray]
    errors: dict[int, str]
    floors: dict[Pair, dict[str, np.ndarray]]


def _pack(arrays: dict[str, np.ndarray], header: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return buf.getvalue()


def _unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("__header__").tobytes().decode())
    return arrays, header


def encode_result(res: MatchResult, errors: dict[int, str]) -> bytes:
    """The matches (and unreadable reasons) of a state, as one blob."""
    arrays: dict[str, np.ndarray] = {}
    header: dict = {"cross": [], "within": [], "evidence": {}, "errors": {str(k): v for k, v in errors.items()}}
    named = [(f"c{i}", pair, m) for i, (pair, m) in enumerate(res.cross.items())]
    named += [(f"w{i}", s, m) for i, (s, m) in enumerate(res.within.items())]
    for name, what, m in named:
        header["cross" if name[0] == "c" else "within"].append([name, what])
        arrays[name + "q"] = m.query.astype(np.int32)
        arrays[name + "r"] = m.reference.astype(np.int32)
        arrays[name + "k"] = m.kind.astype(np.int8)
        arrays[name + "n"] = m.ncc.astype(np.float32)
        arrays[name + "c"] = m.cosine.astype(np.float32)
        arrays[name + "h"] = m.hamming.astype(np.int16)
        header["evidence"][name] = list(m.evidence)
    return _pack(arrays, header)


def decode_result(blob: bytes) -> tuple[dict[Pair, Matches], dict[str, Matches], dict[int, str]]:
    """Inverse of :func:`encode_result`."""
    arrays, header = _unpack(blob)

    def matches(name: str) -> Matches:
        return Matches(arrays[name + "q"].astype(np.int64), arrays[name + "r"].astype(np.int64),
                       arrays[name + "k"], arrays[name + "n"], arrays[name + "c"], arrays[name + "h"],
                       list(header["evidence"][name]))

    cross = {tuple(pair): matches(name) for name, pair in header["cross"]}
    within = {s: matches(name) for name, s in header["within"]}
    errors = {int(k): v for k, v in header["errors"].items()}
    return cross, within, errors


def encode_keys(samples: Sequence, tokens: Sequence[str]) -> bytes:
    """The ordered (split, path, token) list, compressed."""
    return zlib.compress(json.dumps([[s.split, s.path, t] for s, t in zip(samples, tokens)]).encode(
        "utf-8", "surrogateescape"), 1)


def encode_candidates(res: MatchResult) -> bytes:
    """Candidate pairs and kNN floors per split pair."""
    header: dict = {"pairs": []}
    arrays = {}
    for i, (pair, c) in enumerate(res.candidates.items()):
        f = res.floors.get(pair, {})
        header["pairs"].append([f"p{i}", pair, sorted(k for k in f if k != "rows")])
        arrays[f"p{i}"] = np.asarray(c, np.int32).reshape(-1, 2)
        for k, v in f.items():
            arrays[f"p{i}_{k}"] = np.asarray(v, np.int32 if k == "rows" else np.float32)
    return _pack(arrays, header)


def decode_state(result: bytes, keys: bytes, candidates: bytes) -> StoredState:
    """A full stored state (for incremental matching)."""
    cross, within, errors = decode_result(result)
    key_list = [tuple(k) for k in json.loads(zlib.decompress(keys).decode("utf-8", "surrogateescape"))]
    arrays, header = _unpack(candidates)
    cand, floors = {}, {}
    for name, pair, signals in header["pairs"]:
        cand[tuple(pair)] = arrays[name].astype(np.int64)
        if f"{name}_rows" in arrays:
            floors[tuple(pair)] = {"rows": arrays[f"{name}_rows"].astype(np.int64),
                                   **{k: arrays[f"{name}_{k}"] for k in signals}}
    return StoredState(key_list, cross, within, cand, errors, floors)
