"""The typed result of an audit. JSON, terminal and HTML are renderings of an AuditReport."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
#: Match kinds from most to least severe; ``--fail-on K`` counts K and everything before it.
MATCH_KINDS = ("exact", "near", "similar")
FAIL_ON = (*MATCH_KINDS, "never")
#: Verdict statuses from most to least severe (``ok`` only when none of the others holds).
STATUSES = ("leaked", "shifted", "easier", "ok")
#: Statuses that ``--fail-on`` may name besides a match kind (exit 1 only when asked).
FAIL_ON_STATUSES = ("shifted", "easier")


def parse_fail_on(value: str | list[str] | tuple[str, ...], owner: str = "scan") -> tuple[str, tuple[str, ...]]:
    """Split a ``fail_on`` setting into its leak level and the other findings that fail.

    ``value`` is a comma-separated string or a list of items: at most one match kind
    (``exact``, ``near``, ``similar``, ``never``; ``near`` when none is named) plus any of
    ``shifted``, ``easier`` and the ids of the shift checks (``domain_classifier``, ...).

    Examples
    --------
    >>> parse_fail_on("near,shifted")
    ('near', ('shifted',))
    >>> parse_fail_on("easier")
    ('near', ('easier',))
    """
    from splitaudit.errors import invalid_param

    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(i).strip() for i in items if str(i).strip()]
    allowed = (*FAIL_ON, *FAIL_ON_STATUSES, *shift_check_ids())
    expected = ("a match kind (exact, near, similar, never) and/or shifted, easier or a shift "
                "check id, comma-separated")
    levels = [i for i in items if i in FAIL_ON]
    bad = [i for i in items if i not in allowed]
    if bad or len(levels) > 1 or not items:
        raise invalid_param("fail_on", owner, expected, value)
    extras = tuple(dict.fromkeys(i for i in items if i not in FAIL_ON))
    return (levels[0] if levels else "near"), extras


def shift_check_ids() -> tuple[str, ...]:
    """Ids of the registered checks whose failure supports a ``shifted``/``easier`` verdict."""
    from splitaudit.checks import REGISTRY

    return tuple(cid for cid, cls in REGISTRY.items() if getattr(cls, "flags", None))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given).

    Examples
    --------
    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


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
class ShiftTest:
    """How one shift check entered the verdict.

    Attributes
    ----------
    check : str
        Check id.
    flags : str
        The status it supports (``shifted`` or ``easier``).
    p_value : float
        The check's own p-value.
    p_adjusted : float
        Holm-adjusted across every shift check that produced a p-value in this audit.
    effect_size, effect_threshold : float
        The check's effect size and the size below which a significant difference is
        considered too small to matter.
    holds : bool
        ``p_adjusted < alpha`` and ``effect_size >= effect_threshold``.
    """

    check: str
    flags: str
    p_value: float
    p_adjusted: float
    effect_size: float
    effect_threshold: float
    holds: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"check": self.check, "flags": self.flags, "p_value": _round_p(self.p_value),
                "p_adjusted": _round_p(self.p_adjusted), "effect_size": round(self.effect_size, 6),
                "effect_threshold": self.effect_threshold, "holds": self.holds}


def _round_p(p: float) -> float:
    # Tiny p-values keep their order of magnitude instead of rounding to 0.
    return float(f"{p:.3g}")


@dataclass(frozen=True)
class Verdict:
    """The overall answer, with the reasons behind it and the exit code it implies.

    ``status`` is the most severe of ``statuses`` (lower-case: ``leaked``, ``shifted``,
    ``easier`` or ``ok``); ``statuses`` lists every one that holds, most severe first.
    """

    status: str
    statuses: list[str]
    reasons: list[str]
    fail_on: str
    max_leak_rate: float
    exit_code: int
    fail_on_findings: tuple[str, ...] = ()
    alpha: float = 0.05
    shift_tests: list[ShiftTest] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "status": self.status,
            "statuses": list(self.statuses),
            "reasons": list(self.reasons),
            "fail_on": ",".join((self.fail_on, *self.fail_on_findings)),
            "max_leak_rate": self.max_leak_rate,
            "alpha": self.alpha,
            "shift_tests": [t.to_dict() for t in self.shift_tests],
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


def shift_tests(checks: dict[str, CheckResult], alpha: float) -> list[ShiftTest]:
    """Holm-correct the p-values of the shift checks that ran, and say which ones hold.

    Each check is calibrated on its own (its p-value is uniform on a random split); running
    five of them at ``alpha`` each would flag one random split in four, so the verdict
    controls the family-wise error with Holm's method and also demands a material effect.
    """
    flags = dict.fromkeys(shift_check_ids())
    from splitaudit.checks import REGISTRY

    rows = []
    for cid, res in checks.items():
        if cid not in flags or res.status == "skipped":
            continue
        p = res.metrics.get("p_value")
        eff = res.metrics.get("effect_size")
        thr = res.metrics.get("effect_threshold")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (p, eff, thr)):
            continue
        rows.append((cid, REGISTRY[cid].flags, float(p), float(eff), float(thr)))
    adjusted = holm([r[2] for r in rows])
    return [ShiftTest(cid, flag, p, pa, eff, thr, pa < alpha and eff >= thr)
            for (cid, flag, p, eff, thr), pa in zip(rows, adjusted)]


def decide_verdict(
    summaries: list[SplitPairSummary],
    pairs: list[DuplicatePair],
    *,
    fail_on: str,
    max_leak_rate: float,
    checks: dict[str, CheckResult] | None = None,
    fail_on_findings: tuple[str, ...] = (),
    alpha: float = 0.05,
) -> Verdict:
    """The one place where findings become a verdict and an exit code.

    A split pair is leaked when the share of its query samples with an exact or near copy in
    the reference split exceeds ``max_leak_rate``. The split is shifted (or easier) when a
    shift check supporting that status holds after Holm's correction (see
    :func:`shift_tests`). The exit code is 1 when the share of query samples with a match at
    least as severe as ``fail_on`` exceeds ``max_leak_rate``, or when a status or check id
    named in ``fail_on_findings`` holds.
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
    tests = shift_tests(checks or {}, alpha)
    holding = [t for t in tests if t.holds]
    for t in sorted(holding, key=lambda t: (STATUSES.index(t.flags), t.p_adjusted)):
        summary = (checks or {})[t.check].summary.rstrip(".")
        reasons.append(f"{t.flags}: {t.check}: {summary} (Holm-adjusted p = {t.p_adjusted:.3g}, "
                       f"effect {t.effect_size:.3g} >= {t.effect_threshold:g})")
    statuses = [st for st in STATUSES[:-1]
                if (st == "leaked" and leaked) or any(t.flags == st for t in holding)]
    if conflicts:
        reasons.append(f"{conflicts} copied pairs carry different labels (label conflicts)")
    if not leaked:
        reasons.insert(0, "no validation/test sample copies a sample of an earlier split"
                       + (f" beyond the allowed rate {max_leak_rate:g}" if max_leak_rate else ""))
    if not statuses:
        statuses = ["ok"]
        if tests:
            reasons.append(f"no shift check finds a material difference between the splits "
                           f"({len(tests)} tests, Holm-corrected at alpha {alpha:g})")
    for item in fail_on_findings:
        if item in statuses or any(t.check == item for t in holding):
            fails = True
    return Verdict(statuses[0], statuses, reasons, fail_on, max_leak_rate, 1 if fails else 0,
                   tuple(fail_on_findings), alpha, tests)


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
    #: Model metrics on the whole val split and on its leak-free subset, when
    #: :func:`splitaudit.audit` was given a model: ``{"split": "val", "full": {...},
    #: "leak_free": {...} or None, "removed": n, "evaluated": {"full": N, "leak_free": N - n}}``.
    leak_adjusted: dict[str, Any] | None = None

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
            **({"leak_adjusted": _json_safe(self.leak_adjusted)} if self.leak_adjusted is not None else {}),
        }

    def raise_for_leakage(self, fail_on: str = "near", max_leak_rate: float | None = None) -> "AuditReport":
        """Raise :class:`~splitaudit.errors.LeakageError` when a split pair is leaked.

        Parameters
        ----------
        fail_on : {"exact", "near", "similar", "never"}
            Least severe match kind that counts: ``near`` counts exact and near copies.
            ``never`` never raises.
        max_leak_rate : float in [0, 1], optional
            Share of a split's samples that may have such a copy (None: the audit's own
            ``max_leak_rate``, 0 by default: any copy raises).

        Returns
        -------
        AuditReport
            ``self``, so ``audit(...).raise_for_leakage()`` chains.

        Raises
        ------
        LeakageError
            Its message says which split pairs leak and shows the first few pairs; its
            ``report`` attribute is this report.
        """
        from splitaudit.errors import LeakageError, invalid_param

        if fail_on not in FAIL_ON:
            raise invalid_param("fail_on", "raise_for_leakage", f"one of {', '.join(FAIL_ON)}", fail_on)
        if max_leak_rate is None:
            max_leak_rate = self.verdict.max_leak_rate
        elif (not isinstance(max_leak_rate, (int, float)) or isinstance(max_leak_rate, bool)
              or not 0.0 <= max_leak_rate <= 1.0):
            raise invalid_param("max_leak_rate", "raise_for_leakage", "a float in [0, 1]", max_leak_rate)
        if fail_on == "never":
            return self
        levels = MATCH_KINDS[: MATCH_KINDS.index(fail_on) + 1]
        lines = []
        for s in self.split_pairs:
            counts = _worst_kind_counts(self.cross_split_duplicates, s.query_split, s.reference_split)
            n = sum(counts[k] for k in levels)
            if n and s.query_samples and n / s.query_samples > max_leak_rate:
                kinds = ", ".join(f"{counts[k]} {k}" for k in levels)
                lines.append(f"{n} of {s.query_samples} {s.query_split} samples "
                             f"({100 * n / s.query_samples:.2f}%) have a copy in {s.reference_split} "
                             f"({kinds})")
        if not lines:
            return self
        examples = [p for p in self.cross_split_duplicates if p.match in levels][:5]
        text = "Leakage found (fail_on=%r, max_leak_rate=%g): " % (fail_on, max_leak_rate) + "; ".join(lines)
        text += ". For example: " + "; ".join(
            f"{_ref_text(p.query)} ~ {_ref_text(p.reference)} ({p.match}, {p.evidence})" for p in examples)
        error = LeakageError(text)
        error.report = self  # the whole report, for callers that want more than the message
        raise error

    def to_html(self, **kw: Any) -> str:
        """One self-contained HTML file (see :func:`splitaudit.render.html.render_html`)."""
        from splitaudit.render.html import render_html

        return render_html(self, **kw)

    def _repr_html_(self) -> str:
        """Jupyter: the HTML report in a sandboxed iframe (at most 1000 pairs)."""
        from splitaudit.render.html import render_notebook

        return render_notebook(self)


def _ref_text(ref: SampleRef) -> str:
    return ref.path if ref.path is not None else f"{ref.split}[{ref.index}]"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
