"""Wires the stages: sources -> fingerprints -> neighbours -> checks -> report."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from splitaudit._version import __version__
from splitaudit.checks import REGISTRY, AuditContext
from splitaudit.config import AuditConfig
from splitaudit.errors import MissingWeightsError
from splitaudit.extract import FingerprintTable, ScanPool, extract, fingerprint_identity, scan_pool
from splitaudit.matching import EXACT, KIND_NAMES, NEAR, Matcher, Matches
from splitaudit.report import (
    AuditReport,
    CheckResult,
    DuplicatePair,
    SampleRef,
    SplitPairSummary,
    Unreadable,
    decide_verdict,
    shift_check_ids,
)
from splitaudit.sources import SampleSet, discover

ProgressFn = Callable[[str, int, int], None]
#: Receives one line of advice for the user (the CLI prints it on stderr).
NoticeFn = Callable[[str], None]


def _make_embedder(config: AuditConfig, notes: list[str], notice: NoticeFn | None):
    """The CNN embedder, or None (with a note saying why) for a hash-only scan."""
    if not config.embeddings:
        notes.append("Hash-only scan (--no-embeddings): crops, rotations and overlays are "
                     "found only when another signal retrieves them.")
        return None
    from splitaudit.fingerprints.embedder import Embedder

    kwargs = {} if config.input_size is None else {"input_size": config.input_size}
    try:
        return Embedder(weights=config.weights, allow_download=config.download_weights,
                        batch_size=config.batch_size, **kwargs)
    except MissingWeightsError as exc:
        if config.require_embeddings:
            raise
        msg = "CNN weights unavailable, running a hash-only scan. " + str(exc).splitlines()[0]
        notes.append(msg)
        if notice is not None:
            notice(str(exc))
        return None


#: Near pairs of equal size this close may be the same pixels in another encoding of an image
#: that was decoded at reduced size: decode both at full size to find out.
EXACT_RECHECK_NCC = 0.995
#: The same when one file is a JPEG and the other is not: libjpeg's DCT scaling and the box
#: reduction of a PNG of the same pixels differ slightly at 64 px (NCC 0.991 for a star field
#: in benchmarks/accuracy.py). Two JPEGs of the same pixels decode to the same reduced pixels.
EXACT_RECHECK_NCC_MIXED = 0.98


#: Modules the search imports on first use (scipy's sparse and image modules come with the
#: worker pool, :func:`~splitaudit.extract.scan_pool`).
SEARCH_MODULES = ("faiss",)
#: Modules the shift checks import on first use (scipy's statistics, scikit-learn).
SHIFT_CHECK_MODULES = ("scipy.stats", "scipy.spatial.distance", "sklearn.linear_model",
                       "sklearn.decomposition", "sklearn.model_selection", "threadpoolctl")


class _Prefetch:
    """Imports the later stages' modules in a thread while the decoders run (hash-only scans).

    About 0.6 s of imports on a 2-core machine, otherwise in the serial part of a scan. The
    scan joins the thread before its own thread imports anything: two threads importing
    overlapping packages at once is unsafe (CPython's import lock handling failed here with
    ``KeyError: 'scipy'`` when the search began while the thread was importing scipy).
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def start(self, modules: tuple[str, ...]) -> None:
        """Start importing ``modules`` (only after the scan's worker processes have forked)."""
        def run() -> None:
            for name in modules:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass  # the import where the module is used raises it, in its context

        self.thread = threading.Thread(target=run, name="splitaudit-prefetch", daemon=True)
        self.thread.start()

    def join(self) -> None:
        """Wait for the imports to end."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None


def _jpeg_rows(table: FingerprintTable) -> np.ndarray | None:
    """True for rows decoded from a JPEG (None when the table has no properties)."""
    if table.properties is None:
        return None
    from splitaudit.fingerprints.properties import CATEGORICAL, PROPERTY_NAMES

    codes = table.properties[:, PROPERTY_NAMES.index("format")]
    vocab = CATEGORICAL["format"]
    return (codes == vocab.index("JPEG")) | (codes == vocab.index("MPO"))


def _confirm_exact(samples: SampleSet, table: FingerprintTable, m: Matches,
                   pool: ScanPool | None = None) -> None:
    """Upgrade near pairs whose full-size decoded pixels are identical to ``exact`` (in place).

    Fingerprints of large images come from a reduced decode, so their pixel digests cannot
    prove "same pixels"; the files of the few candidate pairs are decoded again here, at the
    I/O edge, each once however many pairs it is in, in the scan's worker processes when
    there are (250 pairs of a 20,000-image scan took 0.23 s here, one decode after another).
    """
    close = m.ncc >= EXACT_RECHECK_NCC
    jpeg = _jpeg_rows(table)
    if jpeg is not None:
        close |= (m.ncc >= EXACT_RECHECK_NCC_MIXED) & (jpeg[m.query] != jpeg[m.reference])
    cand = [i for i in np.flatnonzero((m.kind == NEAR) & close).tolist()
            if (table.width[m.query[i]], table.height[m.query[i]])
            == (table.width[m.reference[i]], table.height[m.reference[i]])
            and samples.samples[m.query[i]].abspath is not None
            and samples.samples[m.reference[i]].abspath is not None]
    if not cand:
        return
    rows = sorted({int(m.query[i]) for i in cand} | {int(m.reference[i]) for i in cand})
    paths = [os.fspath(samples.samples[r].abspath) for r in rows]
    jobs = (paths[s:s + _RECHECK_CHUNK] for s in range(0, len(paths), _RECHECK_CHUNK))
    parts = pool.run_ordered(_full_size_digests, jobs, share=True) if pool is not None \
        else map(_full_size_digests, jobs)
    digest = dict(zip(rows, (d for part in parts for d in part)))
    for i in cand:
        a, b = digest[int(m.query[i])], digest[int(m.reference[i])]
        if a is not None and a == b:
            m.kind[i] = EXACT
            m.ncc[i] = 1.0
            m.evidence[i] = "same pixels"


#: Files decoded at full size per job of :func:`_confirm_exact`.
_RECHECK_CHUNK = 16


def _full_size_digests(paths: list[str]) -> list[bytes | None]:
    """Pixel digest (shape included) of each file decoded at full size; None if it fails."""
    from splitaudit.errors import DecodeError
    from splitaudit.fingerprints.hashes import pixel_digest
    from splitaudit.imaging import load_rgb

    out: list[bytes | None] = []
    for path in paths:
        try:
            # A min_side no image reaches: no draft mode, no reduction.
            rgb, _ = load_rgb(path, min_side=1 << 30)
        except DecodeError:
            out.append(None)
            continue
        out.append(pixel_digest(rgb))
    return out


class _Lazy:
    """Builds its object on first use: on a cache hit checks get the fingerprint table and
    matcher only if they look at them (none of the built-in checks does)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make = make
        self._obj: object | None = None

    def _get(self):
        if self._obj is None:
            self._obj = self._make()
        return self._obj

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)

    def __len__(self) -> int:
        return len(self._get())


def _open_cache(samples: SampleSet, config: AuditConfig, embedder, notes: list[str],
                notice: NoticeFn | None):
    """The configured fingerprint cache of this dataset root, or None."""
    if not config.cache or samples.root is None:
        return None
    from splitaudit.cache import CacheError, FingerprintCache

    def say(text: str) -> None:
        notes.append(f"cache: {text}")
        if notice is not None:
            notice(text)

    cache = FingerprintCache.open(samples.root, config.cache_dir, notice=say)
    if cache is None:
        return None
    try:
        cache.configure(fingerprint_identity(embedder, config.max_pixels),
                        embedder.identity() if embedder is not None else None)
    except CacheError:
        return None
    return cache


def _state_key(cache, config: AuditConfig, order: list[str]) -> str:
    from splitaudit.incremental import state_key

    return state_key(cache.fp_identity, cache.model_identity, config.match, order,
                     extra=f"exact_recheck={EXACT_RECHECK_NCC}")


def _cached_matches(samples: SampleSet, cache, key: str):
    """(cross, within, errors) from the cache when no file changed since the last scan."""
    from splitaudit.cache import CacheError
    from splitaudit.incremental import decode_result, paths_digest

    try:
        rels = [s.path for s in samples.samples]
        joined = "\x00".join(rels)
        result = cache.unchanged_result(key, samples.samples, paths_digest(samples.samples, joined),
                                        rels, joined)
        return None if result is None else decode_result(result)
    except CacheError:
        return None
    except (ValueError, KeyError, OSError):  # a damaged blob: match again
        return None


def _match_with_cache(samples: SampleSet, table: FingerprintTable, matcher: Matcher, cache,
                      key: str, rows: dict[str, np.ndarray], progress: ProgressFn | None):
    """Match incrementally against the last stored state (or fully), then store the result."""
    from splitaudit.cache import CacheError
    from splitaudit.incremental import (
        decode_result,
        decode_state,
        encode_candidates,
        encode_keys,
        encode_result,
        full_match,
        paths_digest,
        rematch,
        sample_tokens,
        state_digest,
    )

    order = samples.splits
    tokens = sample_tokens(samples.samples, table.content_keys, table.errors)

    def confirm(m: Matches) -> None:
        _confirm_exact(samples, table, m, matcher.pool)

    digest = state_digest(samples.samples, tokens)
    probe = cache.probe(samples.samples)
    snapshot = (paths_digest(samples.samples), probe.started_ns, probe.snapshot_stat())
    res = None
    try:
        stored = cache.load_state(key)
        if stored is not None and stored[0] == digest:
            # Files were touched or re-checked but their contents are the same: nothing to match.
            cross, within, _ = decode_result(stored[1])
            cache.stats.matches = "reused"
            cache.update_snapshot(key, *snapshot)
            return cross, within
        detail = cache.load_state_detail(key)
        if detail is not None:
            old = decode_state(*detail)
            res = rematch(matcher, rows, order, old, samples.samples, tokens, on_cross=confirm,
                          progress=progress)
    except CacheError:
        pass
    except (ValueError, KeyError, OSError, IndexError):  # a damaged state: match fully
        res = None
    if res is None:
        res = full_match(matcher, rows, order, on_cross=confirm, progress=progress)
    cache.stats.matches = res.mode
    if cache.enabled:
        try:
            cache.store_state(key, digest, encode_result(res, table.errors),
                              encode_keys(samples.samples, tokens), encode_candidates(res), snapshot)
            cache.prune(probe.path_keys)
        except CacheError:
            pass
    return res.cross, res.within


def _checks_token(cache, key: str, config: AuditConfig, ids) -> str | None:
    """What the stored statistics depend on: the match state (contents and settings), the
    shift settings, the check ids and the version; None when no state is stored."""
    import hashlib
    import json

    from splitaudit.cache import CacheError

    try:
        state = cache.load_state(key)
    except CacheError:
        return None
    if state is None:
        return None
    shift = None if config.shift is None else config.shift.__dict__
    spec = json.dumps([__version__, state[0].hex(), shift, list(ids)], sort_keys=True, default=str)
    return hashlib.blake2b(spec.encode(), digest_size=16).hexdigest()


#: Checks whose results are kept in the cache: the statistics read every fingerprint (an
#: unchanged re-scan would otherwise load them all); the copy checks only read the pairs.
def _cacheable(cid: str) -> bool:
    return bool(getattr(REGISTRY[cid], "flags", None))


def _checks_slot(key: str, ids) -> str:
    # One entry per set of check ids: `splitaudit check` (copy checks only) and `scan` (all)
    # share the match state but must not overwrite each other's statistics.
    import hashlib

    return f"{key}:{hashlib.blake2b(','.join(ids).encode(), digest_size=8).hexdigest()}"


def _stored_checks(cache, key: str, config: AuditConfig, ids) -> dict[str, CheckResult]:
    """The shift checks' results of the last scan of this unchanged dataset, if stored."""
    import json

    from splitaudit.cache import CacheError

    token = _checks_token(cache, key, config, ids)
    if token is None:
        return {}
    try:
        raw = cache.load_checks(_checks_slot(key, ids))
    except CacheError:
        return {}
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:  # a damaged entry: compute again
        return {}
    if doc.get("token") != token:
        return {}
    return {cid: CheckResult(cid, r["status"], r["summary"], r["metrics"])
            for cid, r in doc.get("results", {}).items() if cid in ids and _cacheable(cid)}


def _store_checks(cache, key: str, config: AuditConfig, checks: dict[str, CheckResult]) -> None:
    import json

    from splitaudit.cache import CacheError

    results = {cid: r.to_dict() for cid, r in checks.items() if _cacheable(cid)}
    token = _checks_token(cache, key, config, tuple(checks))
    if token is None or not results:
        return
    try:
        cache.store_checks(_checks_slot(key, tuple(checks)), json.dumps({"token": token, "results": results}))
    except CacheError:
        pass  # the cache has said why and disabled itself


def _ref(samples: SampleSet, row: int) -> SampleRef:
    s = samples.samples[row]
    return SampleRef(s.split, s.path if s.abspath is not None else None, s.label, s.index)


def _pairs(samples: SampleSet, m: Matches) -> list[DuplicatePair]:
    out = []
    refs: dict[int, SampleRef] = {}  # one SampleRef per row, shared by its pairs

    def ref(row: int) -> SampleRef:
        r = refs.get(row)
        if r is None:
            r = refs[row] = _ref(samples, row)
        return r

    # Plain Python lists: indexing numpy arrays element by element is several times slower.
    for q, r, kind, ncc, cos, ham, ev in zip(m.query.tolist(), m.reference.tolist(), m.kind.tolist(),
                                              m.ncc.tolist(), m.cosine.tolist(), m.hamming.tolist(),
                                              m.evidence):
        out.append(DuplicatePair(
            query=ref(q), reference=ref(r), match=KIND_NAMES[kind], ncc=ncc,
            cosine=None if cos != cos else cos,  # NaN: no embeddings
            hamming=ham, evidence=ev,
        ))
    # Most severe first, then most similar: what a person should look at first.
    out.sort(key=lambda p: (KIND_NAMES.index(p.match), -p.ncc, p.query.split, p.query.path or ""))
    return out


def _summaries(samples: SampleSet, cross: dict[tuple[str, str], Matches],
               counts: dict[str, int] | None = None) -> list[SplitPairSummary]:
    counts = counts if counts is not None else samples.counts()
    out = []
    for (q, r), m in cross.items():
        worst: dict[int, int] = {}
        for row, kind in zip(m.query.tolist(), m.kind.tolist()):
            worst[row] = min(worst.get(row, kind), kind)
        by_kind = [sum(1 for k in worst.values() if k == i) for i in range(3)]
        out.append(SplitPairSummary(q, r, counts[q], *by_kind))
    return out


def audit_samples(
    samples: SampleSet,
    config: AuditConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    notice: NoticeFn | None = None,
) -> AuditReport:
    """Audit an already discovered :class:`SampleSet`.

    Parameters
    ----------
    samples : SampleSet
        Samples in split order (see :func:`splitaudit.sources.discover`).
    config : AuditConfig, optional
        Settings; defaults when None.
    progress : callable, optional
        ``progress(stage, done, total)`` for long stages.
    notice : callable, optional
        Receives advice worth showing a person (e.g. how to get CNN weights).

    Returns
    -------
    AuditReport
    """
    config = config or AuditConfig()
    timings: dict[str, float] = {}
    notes = list(getattr(samples, "notes", []))
    t0 = time.perf_counter()
    embedder = _make_embedder(config, notes, notice)
    cache = _open_cache(samples, config, embedder, notes, notice)
    try:
        return _audit(samples, config, embedder, cache, notes, timings, t0, progress)
    finally:
        if cache is not None:
            cache.close()


def _audit(samples: SampleSet, config: AuditConfig, embedder, cache, notes: list[str],
           timings: dict[str, float], t0: float, progress: ProgressFn | None,
           given_table: FingerprintTable | None = None, matched: tuple | None = None) -> AuditReport:
    """Body of :func:`audit_samples` once the embedder and cache are settled.

    In-memory inputs (:func:`audit`) come with their fingerprints already computed
    (``given_table``) and, for tabular data, with their matches too (``matched`` =
    ``(matcher or None, cross, within)``).
    """
    prefetch = _Prefetch()
    try:
        return _audit_stages(samples, config, embedder, cache, notes, timings, t0, progress,
                             given_table, matched, prefetch)
    finally:
        prefetch.join()


@contextlib.contextmanager
def _scan_workers(samples: SampleSet, config: AuditConfig, embedder,
                  prefetch: _Prefetch) -> Iterator[ScanPool | None]:
    """The scan's worker processes (decoding, then verification), then a thread of imports.

    The processes fork first, while this process has no other thread. A hash-only scan then
    imports the later stages' modules beside the decoding; with the CNN a thread is busy
    importing TensorFlow (:meth:`Embedder.start_build`, started by ``extract`` when there is
    something to embed), and no second thread may import at the same time.
    """
    with scan_pool(config.workers, len(samples.samples), with_cnn=embedder is not None) as pool:
        if pool is not None and embedder is None:
            shift = set(config.checks or REGISTRY) & set(shift_check_ids())
            prefetch.start(SEARCH_MODULES + (SHIFT_CHECK_MODULES if shift else ()))
        yield pool


def _audit_stages(samples: SampleSet, config: AuditConfig, embedder, cache, notes: list[str],
                  timings: dict[str, float], t0: float, progress: ProgressFn | None,
                  given_table: FingerprintTable | None, matched: tuple | None,
                  prefetch: _Prefetch) -> AuditReport:
    """The stages of :func:`_audit`: fingerprints (or the cached matches), search, checks."""
    order = samples.splits

    def fingerprints(pool: ScanPool | None = None) -> FingerprintTable:
        if given_table is not None:
            return given_table
        return extract(samples.samples, embedder=embedder, workers=config.workers,
                       max_pixels=config.max_pixels, progress=progress, cache=cache, pool=pool)

    key = _state_key(cache, config, order) if cache is not None else ""
    hit = _cached_matches(samples, cache, key) if cache is not None else None
    if hit is not None:
        # Nothing changed since the last scan with these settings: reuse its verified pairs.
        cross, within, errors = hit
        cache.stats.files = cache.stats.reused = len(samples.samples)
        cache.stats.matches = "reused"
        timings["fingerprint"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = _Lazy(fingerprints)
        matcher = _Lazy(lambda: Matcher(table._get(), config.match))
        timings["search"] = time.perf_counter() - t0
    else:
        rows_by_split = {s: [] for s in samples.splits}
        for i, s in enumerate(samples.samples):
            rows_by_split[s.split].append(i)
        rows = {s: np.asarray(v, np.int64) for s, v in rows_by_split.items()}
        # In-memory inputs come fingerprinted, maybe after TensorFlow started (no fork then).
        workers = _scan_workers(samples, config, embedder, prefetch) if given_table is None \
            else contextlib.nullcontext()
        with workers as pool:
            table = fingerprints(pool)
            prefetch.join()  # before this thread imports anything itself (see _Prefetch)
            errors = table.errors
            timings["fingerprint"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            matcher = Matcher(table, config.match, pool=pool) if matched is None else matched[0]
            if matched is not None:
                cross, within = matched[1], matched[2]
            elif cache is not None and cache.enabled:
                cross, within = _match_with_cache(samples, table, matcher, cache, key, rows, progress)
            else:
                cross = {}
                todo = [(q, r) for qi, q in enumerate(order) for r in order[:qi]]
                for done, (q, r) in enumerate(todo):
                    cross[(q, r)] = matcher.match(rows[q], rows[r])
                    _confirm_exact(samples, table, cross[(q, r)], pool)
                    if progress is not None:
                        progress("search", done + 1, len(todo))
                within = {s: matcher.match_within(rows[s]) for s in order}
        if matcher is not None:
            matcher.release()  # the pool closed with the stage; the checks do not search
        timings["search"] = time.perf_counter() - t0

    unreadable = [Unreadable(k.path, k.split, k.reason) for k in samples.skipped]
    unreadable += [
        Unreadable(samples.samples[i].path, samples.samples[i].split, reason)
        for i, reason in sorted(errors.items())
    ]
    pairs = [p for m in cross.values() for p in _pairs(samples, m)]
    pairs.sort(key=lambda p: (KIND_NAMES.index(p.match), -p.ncc))
    within_pairs = [p for m in within.values() for p in _pairs(samples, m)]
    context = AuditContext(samples, table, matcher, cross, within, pairs, unreadable, config, notes)
    ids = config.checks or tuple(REGISTRY)
    checks = {}
    t0 = time.perf_counter()
    # The token of stored results includes the content digest of the match state, so they are
    # reused whenever the contents and settings are those of the last scan.
    stored = _stored_checks(cache, key, config, ids) if cache is not None and cache.enabled else {}
    for cid in ids:
        checks[cid] = stored[cid] if cid in stored else REGISTRY[cid]().run(context)
        if progress is not None:
            progress("checks", len(checks), len(ids))
    if cache is not None and cache.enabled and not stored:
        _store_checks(cache, key, config, checks)
    timings["checks"] = time.perf_counter() - t0
    counts = samples.counts()
    summaries = _summaries(samples, cross, counts)
    verdict = decide_verdict(summaries, pairs, fail_on=config.fail_on, max_leak_rate=config.max_leak_rate,
                             checks=checks, fail_on_findings=config.fail_on_findings,
                             alpha=config.alpha)
    settings = {
        "version": __version__,
        "embedder": embedder.identity() if embedder is not None else None,
        **{k: v for k, v in config.to_dict().items() if k not in ("checks",)},
    }
    if cache is not None:
        settings["cache_stats"] = cache.stats.to_dict()
    return AuditReport(
        dataset=os.fspath(samples.root) if samples.root is not None else None,
        layout=samples.layout,
        splits=counts,
        split_pairs=summaries,
        cross_split_duplicates=pairs,
        within_split_duplicates=within_pairs,
        unreadable=unreadable,
        checks=checks,
        verdict=verdict,
        settings=settings,
        timings=timings,
        notes=notes,
    )


def scan(
    dataset: str | os.PathLike | None = None,
    *,
    splits: Mapping[str, str | os.PathLike] | None = None,
    manifest: str | os.PathLike | None = None,
    config: AuditConfig | None = None,
    progress: ProgressFn | None = None,
    notice: NoticeFn | None = None,
) -> AuditReport:
    """Discover the splits of a dataset directory (or manifest) and audit them.

    Parameters
    ----------
    dataset : path, optional
        Dataset directory (``train/``, ``val/``, ``test/`` inside) or a CSV manifest.
    splits : mapping, optional
        Explicit ``{name: folder}`` splits.
    manifest : path, optional
        CSV manifest with columns ``path,split[,label][,group]``.
    config, progress, notice
        See :func:`audit_samples`.

    Returns
    -------
    AuditReport
    """
    samples = discover(dataset, splits=splits, manifest=manifest)
    return audit_samples(samples, config, progress=progress, notice=notice)


def audit(
    train: object,
    val: object,
    *,
    test: object = None,
    labels: Mapping[str, object] | None = None,
    checks: list[str] | tuple[str, ...] | None = None,
    config: AuditConfig | None = None,
    model: object = None,
    progress: ProgressFn | None = None,
    notice: NoticeFn | None = None,
) -> AuditReport:
    """Audit in-memory splits (arrays, tf.data) or files (path lists, directories).

    Each of ``train``, ``val`` and ``test`` may be:

    * a numpy array of images, ``(N, H, W)``, ``(N, H, W, 1)``, ``(N, H, W, 3)`` or
      ``(N, H, W, 4)`` (alpha dropped), uint8 or float in ``[0, 1]`` or ``[0, 255]``;
    * a 2-D numeric array ``(N, D)`` (or a pandas DataFrame): tabular rows. Exact duplicate
      rows and k-NN near duplicates on standardized features are found
      (:mod:`splitaudit.tabular`); every split must then be tabular with the same ``D``;
    * an ``(x, y)`` tuple (Keras' ``validation_data`` shape; a third item, sample weights,
      is ignored): ``y`` gives the labels (class ids, names, or one-hot rows);
    * a ``tf.data.Dataset`` of ``x`` or ``(x, y)`` elements, batched or not. It is streamed
      in bounded chunks, never loaded whole; TensorFlow is imported only for such inputs;
    * a list of image file paths, or a directory (class subfolders give labels).

    Pairs found between array or tf.data inputs carry ``index`` (the sample's position in
    its input) on each side instead of ``path``.

    Parameters
    ----------
    train, val : array, (x, y) tuple, tf.data.Dataset, list of paths or directory
        The training split and the split compared with it.
    test : same, optional
        A third split, compared with train and with val.
    labels : mapping, optional
        ``{"train": y_train, "val": y_val, "test": y_test}`` labels of inputs given without
        them (bare arrays or path lists); any subset of the splits.
    checks : sequence of str, optional
        Check ids to run (see :func:`splitaudit.list_checks`); overrides ``config.checks``.
    config : AuditConfig, optional
        Settings (defaults when None). ``AuditConfig(embeddings=False)`` is a fast,
        hash-only audit that never imports TensorFlow for array inputs (tabular inputs never
        need the CNN). The fingerprint cache (``cache``) is not used for these inputs.
    model : keras.Model, optional
        A compiled Keras model. When given, it is evaluated on the whole val split and on
        its leak-free subset (val minus the samples with an exact or near copy in train);
        both results are in ``report.leak_adjusted``. Needs val as an array with labels,
        an ``(x, y)`` tuple or a tf.data.Dataset of ``(x, y)`` elements.
    progress : callable, optional
        ``progress(stage, done, total)``; ``total`` is 0 while a tf.data input's length is
        unknown.
    notice : callable, optional
        Receives advice worth showing a person (e.g. how to get CNN weights).

    Returns
    -------
    AuditReport

    Raises
    ------
    InvalidInputError
        A parameter of the wrong type, shape or dtype; the message names it.

    Examples
    --------
    >>> report = audit(x_train, (x_val, y_val), labels={"train": y_train})  # doctest: +SKIP
    >>> report.raise_for_leakage(fail_on="near")  # doctest: +SKIP
    """
    import dataclasses

    from splitaudit.errors import invalid_param
    from splitaudit.report import CheckResult
    from splitaudit.sources.arrays import load_inputs
    from splitaudit.tabular import IMAGE_ONLY_CHECKS

    if config is None:
        config = AuditConfig()
    elif not isinstance(config, AuditConfig):
        raise invalid_param("config", "audit", "an AuditConfig or None", config)
    if checks is not None:
        if isinstance(checks, str) or not all(isinstance(c, str) and c in REGISTRY for c in checks):
            raise invalid_param("checks", "audit", f"a list of check ids from {', '.join(REGISTRY)}",
                                checks)
        config = dataclasses.replace(config, checks=tuple(checks))
    inputs = load_inputs({"train": train, "val": val, "test": test}, labels, owner="audit")
    if model is not None:
        from splitaudit.leak_adjusted import check_model

        check_model(model, inputs, owner="audit")
    timings: dict[str, float] = {}
    notes = list(inputs.notes)
    t0 = time.perf_counter()
    if inputs.tabular:
        from splitaudit.tabular import audit_tabular

        samples, table, cross, within, tab_timings = audit_tabular(inputs, progress=progress)
        notes += samples.notes
        ids = config.checks or tuple(REGISTRY)
        skip = [cid for cid in ids if cid in IMAGE_ONLY_CHECKS]
        run = dataclasses.replace(config, checks=tuple(c for c in ids if c not in skip)) if skip else config
        report = _audit(samples, run, None, None, notes, timings, t0, progress,
                        given_table=table, matched=(None, cross, within))
        report.timings.update(tab_timings)
        results = {cid: report.checks.get(cid) or CheckResult(
            cid, "skipped", "Needs image pixels or properties; the inputs are tabular rows.")
            for cid in ids}
        report.checks = results
    else:
        from splitaudit.extract_memory import fingerprint_inputs

        embedder = _make_embedder(config, notes, notice)
        samples, table = fingerprint_inputs(inputs, embedder=embedder, workers=config.workers,
                                            max_pixels=config.max_pixels, progress=progress)
        report = _audit(samples, config, embedder, None, notes, timings, t0, progress,
                        given_table=table)
    if model is not None:
        from splitaudit.leak_adjusted import leak_adjusted_metrics

        report.leak_adjusted = leak_adjusted_metrics(model, inputs, report)
    return report
