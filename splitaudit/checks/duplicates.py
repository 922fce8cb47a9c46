"""Checks built on the shared neighbour graph: cross-split copies, label conflicts, etc."""

from __future__ import annotations

from splitaudit.checks.base import AuditContext, Check
from splitaudit.report import CheckResult


class CrossSplitDuplicates(Check):
    """Validation/test samples that are exact or near copies of samples of an earlier split.

    Candidates come from digests, pHash, thumbnail and CNN nearest neighbours; each is
    verified by aligning the two images (crop, flip, rotation) before it counts as a copy.
    Fails when a split pair's leak rate exceeds ``max_leak_rate``.
    """

    id = "cross_split_duplicates"
    title = "Cross-split duplicates"

    def run(self, context: AuditContext) -> CheckResult:
        counts = {"exact": 0, "near": 0, "similar": 0}
        for p in context.pairs:
            counts[p.match] += 1
        leaked: dict[str, set[str]] = {}
        for p in context.pairs:
            if p.match != "similar":
                leaked.setdefault(p.query.split, set()).add(p.query.path or str(p.query.index))
        sizes = context.samples.counts()
        rates = {s: len(v) / sizes[s] for s, v in leaked.items() if sizes.get(s)}
        worst = max(rates.values(), default=0.0)
        status = "fail" if leaked and worst > context.config.max_leak_rate else "pass"
        if leaked:
            parts = ", ".join(f"{len(v)} {s} ({100 * rates[s]:.2f}%)" for s, v in leaked.items())
            summary = f"Samples with a copy in an earlier split: {parts}."
        else:
            summary = "No sample has an exact or near copy in an earlier split."
        return CheckResult(
            self.id, status, summary,
            {"pairs": counts, "leaked_samples": {s: len(v) for s, v in leaked.items()},
             "leak_rate": {s: round(r, 6) for s, r in rates.items()}},
        )


class LabelConflicts(Check):
    """Copied pairs (exact or near) whose two sides carry different labels.

    A copy with another label is either a labelling error or a sample that teaches the model
    both answers; either way the validation score on it is meaningless.
    """

    id = "label_conflicts"
    title = "Label conflicts"

    def run(self, context: AuditContext) -> CheckResult:
        conflicts = [p for p in context.pairs if p.match != "similar" and p.label_conflict]
        within = sum(
            1
            for m in context.within.values()
            for q, r in zip(m.query, m.reference)
            if _labels_differ(context, int(q), int(r))
        )
        status = "warn" if conflicts or within else "pass"
        summary = (
            f"{len(conflicts)} cross-split and {within} within-split copies have different labels."
            if status == "warn" else "No copied pair has conflicting labels."
        )
        return CheckResult(self.id, status, summary, {"cross_split": len(conflicts), "within_split": within})


def _labels_differ(context: AuditContext, a: int, b: int) -> bool:
    la, lb = context.samples.samples[a].label, context.samples.samples[b].label
    return la is not None and lb is not None and la != lb


class WithinSplitDuplicates(Check):
    """Exact and near copies inside one split (informational: they do not leak, but they
    over-weight some samples in training and in the validation score)."""

    id = "within_split_duplicates"
    title = "Within-split duplicates"

    def run(self, context: AuditContext) -> CheckResult:
        counts = {s: len(m) for s, m in context.within.items()}
        total = sum(counts.values())
        summary = (
            "Copies inside splits: " + ", ".join(f"{n} pairs in {s}" for s, n in counts.items() if n) + "."
            if total else "No copies inside any split."
        )
        return CheckResult(self.id, "warn" if total else "pass", summary, {"pairs": counts})


class UnreadableFiles(Check):
    """Files that could not be decoded (corrupt, truncated, empty, not an image, too large)."""

    id = "unreadable_files"
    title = "Unreadable files"

    def run(self, context: AuditContext) -> CheckResult:
        n = len(context.unreadable)
        reasons: dict[str, int] = {}
        for u in context.unreadable:
            key = u.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        summary = f"{n} files could not be used." if n else "Every file was decoded."
        return CheckResult(self.id, "warn" if n else "pass", summary, {"count": n, "reasons": reasons})
