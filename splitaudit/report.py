"""The typed result of an audit. JSON, terminal and HTML are renderings of an AuditReport."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
#: Match kinds from most to least severe; ``--fail-on K`` counts K and everything before it.
MATCH_KINDS = ("exact", "near", "similar")
FAIL_ON = (*MATCH_KINDS, "never")


@dataclass(frozen=True)
class SampleRef:
    """One side of a pair: where the sample lives."""

    split: str
    path: str | None
    label: str | None
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``index`` only for array inputs."""
        out: dict[str, Any] = {"split": self.split, "path": self.path, "label": self.label}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass(frozen=True)
class DuplicatePair:
    """A query sample that copies (or resembles) a reference sample of an earlier split.

    Attributes
    ----------
    query, reference : SampleRef
        ``reference`` is in the earlier split (train before val before test).
    match : str
        ``exact`` (same bytes or pixels), ``near`` (same picture after an edit) or
        ``similar`` (same scene or object, informational).
    ncc : float
        Aligned normalised cross-correlation of the grey thumbnails, in [-1, 1].
    cosine : float or None
        CNN embedding cosine similarity, None on hash-only scans.
    hamming : int
        pHash Hamming distance (best of both orientations).
    evidence : str
        "same bytes", "same pixels", or the transform that aligned the pair.
    """

    query: SampleRef
    reference: SampleRef
    match: str
    ncc: float
    cosine: float | None
    hamming: int
    evidence: str

    @property
    def label_conflict(self) -> bool:
        """True when both labels are known and differ."""
        a, b = self.query.label, self.reference.label
        return a is not None and b is not None and a != b

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "query": self.query.to_dict(),
            "reference": self.reference.to_dict(),
            "match": self.match,
            "ncc": round(self.ncc, 4),
            "cosine": None if self.cosine is None else round(self.cosine, 4),
            "hamming": self.hamming,
            "evidence": self.evidence,
            "label_conflict": self.label_conflict,
        }


@dataclass(frozen=True)
class Unreadable:
    """A file that could not be used, and why."""

    path: str
    split: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"path": self.path, "split": self.split, "reason": self.reason}


@dataclass(frozen=True)
class SplitPairSummary:
    """Leak counts for one (query split, reference split) pair."""

    query_split: str
    reference_split: str
    query_samples: int
    exact: int
    near: int
    similar: int

    @property
    def leaked_samples(self) -> int:
        """Query samples with at least one exact or near copy in the reference split."""
        return self.exact + self.near

    @property
    def leak_rate(self) -> float:
        """``leaked_samples / query_samples`` (0 for an empty split)."""
        return self.leaked_samples / self.query_samples if self.query_samples else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; counts are of query samples, each counted at its worst kind."""
        return {
            "query_split": self.query_split,
            "reference_split": self.reference_split,
            "query_samples": self.query_samples,
            "exact": self.exact,
            "near": self.near,
            "similar": self.similar,
            "leaked_samples": self.leaked_samples,
            "leak_rate": round(self.leak_rate, 6),
        }


@dataclass
class CheckResult:
    """What one registered check found.

    Attributes
    ----------
    id : str
        The check's snake_case id (same in CLI, config and JSON).
    status : str
        ``fail`` (a problem above threshold), ``warn`` (worth a look), ``pass`` or ``skipped``.
    summary : str
        One sentence for people.
    metrics : dict
        Numbers behind the summary (JSON-ready scalars).
    """

    id: str
    status: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"status": self.status, "summary": self.summary, "metrics": self.metrics}


@dataclass(frozen=True)
class Verdict:
    """The overall answer, with the reasons behind it and the exit code it implies.

    ``status`` is the most severe of ``statuses`` (lower-case: ``leaked`` or ``ok``).
    """

    status: str
    statuses: list[str]
    reasons: list[str]
    fail_on: str
    max_leak_rate: float
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "status": self.status,
            "statuses": list(self.statuses),
            "reasons": list(self.reasons),
            "fail_on": self.fail_on,
            "max_leak_rate": self.max_leak_rate,
            "exit_code": self.exit_code,
        }


def _worst_kind_counts(pairs: list[DuplicatePair], q: str, r: str) -> dict[str, int]:
    worst: dict[str, int] = {}
    for p in pairs:
        if p.query.split == q and p.reference.split == r:
            key = p.query.path if p.query.path is not None else str(p.query.index)
            rank = MATCH_KINDS.index(p.match)
            worst[key] = min(worst.get(key, rank), rank)
    counts = {k: 0 for k in MATCH_KINDS}
    for rank in worst.values():
        counts[MATCH_KINDS[rank]] += 1
    return counts


def decide_verdict(
    summaries: list[SplitPairSummary],
    pairs: list[DuplicatePair],
    *,
    fail_on: str,
    max_leak_rate: float,
) -> Verdict:
    """The one place where findings become a verdict and an exit code.

    A split pair is leaked when the share of its query samples with an exact or near copy in
    the reference split exceeds ``max_leak_rate``. The exit code is 1 when the share of query
    samples with a match at least as severe as ``fail_on`` exceeds ``max_leak_rate``.
    """
    reasons: list[str] = []
    leaked = False
    fails = False
    levels = MATCH_KINDS[: MATCH_KINDS.index(fail_on) + 1] if fail_on != "never" else ()
    for s in summaries:
        if s.leaked_samples and s.leak_rate > max_leak_rate:
            leaked = True
            reasons.append(
                f"{s.leaked_samples} of {s.query_samples} {s.query_split} samples "
                f"({100 * s.leak_rate:.2f}%) have a copy in {s.reference_split} "
                f"({s.exact} exact, {s.near} near)"
            )
        counts = _worst_kind_counts(pairs, s.query_split, s.reference_split)
        failing = sum(counts[k] for k in levels)
        if failing and s.query_samples and failing / s.query_samples > max_leak_rate:
            fails = True
    conflicts = sum(1 for p in pairs if p.match != "similar" and p.label_conflict)
    if conflicts:
        reasons.append(f"{conflicts} copied pairs carry different labels (label conflicts)")
    status = "leaked" if leaked else "ok"
    if not leaked:
        reasons.insert(0, "no validation/test sample copies a sample of an earlier split"
                       + (f" beyond the allowed rate {max_leak_rate:g}" if max_leak_rate else ""))
    return Verdict(status, [status], reasons, fail_on, max_leak_rate, 1 if fails else 0)


@dataclass
class AuditReport:
    """Everything an audit found.

    Attributes
    ----------
    dataset : str or None
        Dataset root as given.
    layout : str
        How splits were found.
    splits : dict
        Split name -> number of samples found (readable or not).
    cross_split_duplicates : list of DuplicatePair
        Every verified pair between splits.
    within_split_duplicates : list of DuplicatePair
        Exact and near copies inside one split (informational).
    unreadable : list of Unreadable
        Files skipped, with the reason.
    checks : dict
        Check id -> CheckResult.
    verdict : Verdict
    settings : dict
        Settings used (thresholds, model, versions).
    timings : dict
        Seconds per stage.
    notes : list of str
        Things worth knowing that are not findings (e.g. "embeddings unavailable").
    """

    dataset: str | None
    layout: str
    splits: dict[str, int]
    split_pairs: list[SplitPairSummary]
    cross_split_duplicates: list[DuplicatePair]
    within_split_duplicates: list[DuplicatePair]
    unreadable: list[Unreadable]
    checks: dict[str, CheckResult]
    verdict: Verdict
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def label_conflicts(self) -> list[DuplicatePair]:
        """Exact/near cross-split pairs whose labels differ."""
        return [p for p in self.cross_split_duplicates if p.match != "similar" and p.label_conflict]

    @property
    def exit_code(self) -> int:
        """0 when no leak passes the fail threshold, 1 otherwise."""
        return self.verdict.exit_code

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape (see README, "JSON report")."""
        return {
            "schema_version": self.schema_version,
            "tool": {"name": "splitaudit", "version": self.settings.get("version")},
            "dataset": self.dataset,
            "layout": self.layout,
            "verdict": self.verdict.to_dict(),
            "splits": dict(self.splits),
            "split_pairs": [s.to_dict() for s in self.split_pairs],
            "cross_split_duplicates": [p.to_dict() for p in self.cross_split_duplicates],
            "label_conflicts": [p.to_dict() for p in self.label_conflicts],
            "within_split_duplicates": [p.to_dict() for p in self.within_split_duplicates],
            "unreadable": [u.to_dict() for u in self.unreadable],
            "checks": {k: v.to_dict() for k, v in self.checks.items()},
            "settings": _json_safe(self.settings),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": list(self.notes),
        }

    def to_html(self, **kw: Any) -> str:
        """One self-contained HTML file (see :func:`splitaudit.render.html.render_html`)."""
        from splitaudit.render.html import render_html

        return render_html(self, **kw)

    def _repr_html_(self) -> str:
        """Jupyter: the HTML report in a sandboxed iframe (at most 1000 pairs)."""
        from splitaudit.render.html import render_notebook

        return render_notebook(self)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
