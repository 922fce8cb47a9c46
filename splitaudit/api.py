"""Wires the stages: sources -> fingerprints -> neighbours -> checks -> report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import numpy as np

from splitaudit._version import __version__
from splitaudit.checks import REGISTRY, AuditContext
from splitaudit.config import AuditConfig
from splitaudit.errors import MissingWeightsError
from splitaudit.extract import FingerprintTable, extract
from splitaudit.matching import EXACT, KIND_NAMES, NEAR, Matcher, Matches
from splitaudit.report import (
    AuditReport,
    DuplicatePair,
    SampleRef,
    SplitPairSummary,
    Unreadable,
    decide_verdict,
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


#: Near pairs this close may be the same pixels in another encoding of an image that was
#: decoded at reduced size (large JPEG): decode both at full size to find out.
EXACT_RECHECK_NCC = 0.995


def _confirm_exact(samples: SampleSet, table: FingerprintTable, m: Matches) -> None:
    """Upgrade near pairs whose full-size decoded pixels are identical to ``exact`` (in place).

    Fingerprints of large images come from a reduced decode, so their pixel digests cannot
    prove "same pixels"; the few candidate pairs are re-decoded here, at the I/O edge.
    """
    from splitaudit.errors import DecodeError
    from splitaudit.imaging import load_rgb

    full_size = 1 << 30  # a min_side no image reaches: no draft mode, no reduction
    for i in np.flatnonzero((m.kind == NEAR) & (m.ncc >= EXACT_RECHECK_NCC)):
        q, r = int(m.query[i]), int(m.reference[i])
        if (table.width[q], table.height[q]) != (table.width[r], table.height[r]):
            continue
        a, b = samples.samples[q].abspath, samples.samples[r].abspath
        if a is None or b is None:
            continue
        try:
            pa, _ = load_rgb(a, min_side=full_size)
            pb, _ = load_rgb(b, min_side=full_size)
        except DecodeError:
            continue
        if pa.shape == pb.shape and np.array_equal(pa, pb):
            m.kind[i] = EXACT
            m.ncc[i] = 1.0
            m.evidence[i] = "same pixels"


def _ref(samples: SampleSet, row: int) -> SampleRef:
    s = samples.samples[row]
    return SampleRef(s.split, s.path if s.abspath is not None else None, s.label, s.index)


def _pairs(samples: SampleSet, m: Matches) -> list[DuplicatePair]:
    out = []
    for i in range(len(m)):
        cos = float(m.cosine[i])
        out.append(DuplicatePair(
            query=_ref(samples, int(m.query[i])),
            reference=_ref(samples, int(m.reference[i])),
            match=KIND_NAMES[int(m.kind[i])],
            ncc=float(m.ncc[i]),
            cosine=None if np.isnan(cos) else cos,
            hamming=int(m.hamming[i]),
            evidence=m.evidence[i],
        ))
    # Most severe first, then most similar: what a person should look at first.
    out.sort(key=lambda p: (KIND_NAMES.index(p.match), -p.ncc, p.query.split, p.query.path or ""))
    return out


def _summaries(samples: SampleSet, cross: dict[tuple[str, str], Matches]) -> list[SplitPairSummary]:
    counts = samples.counts()
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
    table: FingerprintTable = extract(
        samples.samples, embedder=embedder, workers=config.workers,
        max_pixels=config.max_pixels, progress=progress,
    )
    timings["fingerprint"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    matcher = Matcher(table, config.match)
    rows_by_split = {s: [] for s in samples.splits}
    for i, s in enumerate(samples.samples):
        rows_by_split[s.split].append(i)
    rows = {s: np.asarray(v, np.int64) for s, v in rows_by_split.items()}
    cross: dict[tuple[str, str], Matches] = {}
    order = samples.splits
    todo = [(q, r) for qi, q in enumerate(order) for r in order[:qi]]
    for done, (q, r) in enumerate(todo):
        cross[(q, r)] = matcher.match(rows[q], rows[r])
        _confirm_exact(samples, table, cross[(q, r)])
        if progress is not None:
            progress("search", done + 1, len(todo))
    within = {s: matcher.match_within(rows[s]) for s in order}
    timings["search"] = time.perf_counter() - t0

    unreadable = [Unreadable(k.path, k.split, k.reason) for k in samples.skipped]
    unreadable += [
        Unreadable(samples.samples[i].path, samples.samples[i].split, reason)
        for i, reason in sorted(table.errors.items())
    ]
    pairs = [p for m in cross.values() for p in _pairs(samples, m)]
    pairs.sort(key=lambda p: (KIND_NAMES.index(p.match), -p.ncc))
    within_pairs = [p for m in within.values() for p in _pairs(samples, m)]
    context = AuditContext(samples, table, matcher, cross, within, pairs, unreadable, config, notes)
    ids = config.checks or tuple(REGISTRY)
    checks = {cid: REGISTRY[cid]().run(context) for cid in ids}
    summaries = _summaries(samples, cross)
    verdict = decide_verdict(summaries, pairs, fail_on=config.fail_on, max_leak_rate=config.max_leak_rate)
    settings = {
        "version": __version__,
        "embedder": embedder.identity() if embedder is not None else None,
        **{k: v for k, v in config.to_dict().items() if k not in ("checks",)},
    }
    return AuditReport(
        dataset=os.fspath(samples.root) if samples.root is not None else None,
        layout=samples.layout,
        splits=samples.counts(),
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
