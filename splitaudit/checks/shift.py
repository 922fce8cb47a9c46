"""Shift and "easier validation" checks: is val (or test) drawn like train, and is it harder?

Every check compares the first split (train) with each later split, on the rows that decoded,
and reports a p-value (Bonferroni over the compared splits), an effect size and its threshold.
A check fails only when the difference is both significant and large enough to matter, so
big datasets do not flag trivial differences. The statistics live in :mod:`splitaudit.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from splitaudit.checks.base import AuditContext, Check
from splitaudit.errors import invalid_param
from splitaudit.report import CheckResult

if TYPE_CHECKING:
    from splitaudit import stats as _stats


@dataclass(frozen=True)
class ShiftConfig:
    """Settings of the shift checks.

    Attributes
    ----------
    alpha : float
        Significance level.
    domain_threshold : float
        Smallest domain-classifier ROC AUC that counts (0.5 = no shift).
    mmd_threshold : float
        Smallest squared MMD (Gaussian kernel, median bandwidth, standardized features).
    label_threshold : float
        Smallest Cramer's V of the class frequencies.
    property_threshold : float
        Smallest normalized Wasserstein distance (W1 / pooled std) or Cramer's V of a property.
    difficulty_threshold : float
        Smallest Cliff's delta of nearest-neighbour distance or k-NN label agreement.
    max_samples : int
        Rows per split used by the domain classifier, MMD and difficulty queries (uniform
        subsample: the tests stay valid).
    max_queries : int
        Train and val samples whose neighbours the difficulty check searches (each among
        all train samples).
    permutations : int
        Permutations of the MMD null.
    min_samples : int
        Splits with fewer usable rows are skipped.
    k : int
        Neighbours for k-NN label agreement.
    difficulty_without_leaks : bool
        Judge "easier" on the val samples without an exact/near copy in train (the leaks are
        reported by the leak checks; both results are in the metrics either way).
    seed : int
        Seed of every random choice (subsamples, folds, features, permutations).
    """

    alpha: float = 0.05
    domain_threshold: float = 0.55
    mmd_threshold: float = 0.002
    label_threshold: float = 0.05
    property_threshold: float = 0.1
    difficulty_threshold: float = 0.1
    max_samples: int = 10000
    max_queries: int = 5000
    permutations: int = 200
    min_samples: int = 20
    k: int = 10
    difficulty_without_leaks: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        def real(name: str, lo: float, hi: float, open_lo: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v > hi or v < lo or (open_lo and v == lo):
                bracket = "(" if open_lo else "["
                raise invalid_param(name, "scan", f"a float in {bracket}{lo}, {hi}]", v)

        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise invalid_param(name, "scan", f"an int >= {lo}", v)

        real("alpha", 0.0, 1.0, open_lo=True)
        real("domain_threshold", 0.5, 1.0)
        real("mmd_threshold", 0.0, 2.0)
        for name in ("label_threshold", "property_threshold", "difficulty_threshold"):
            real(name, 0.0, 1.0)
        integer("max_samples", 100)
        integer("max_queries", 100)
        integer("permutations", 10)
        integer("min_samples", 5)
        integer("k", 1)
        integer("seed", 0)
        if not isinstance(self.difficulty_without_leaks, bool):
            raise invalid_param("difficulty_without_leaks", "scan", "True or False",
                                self.difficulty_without_leaks)


# --------------------------------------------------------------------------- shared helpers


def _shift_config(context: AuditContext) -> ShiftConfig:
    return getattr(context.config, "shift", None) or ShiftConfig()


def _r(x: Any) -> Any:
    """JSON-ready number: floats rounded to 6 digits, NaN/inf -> None."""
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _rp(p: float) -> float:
    """p-values keep their order of magnitude (3 significant digits) instead of rounding to 0."""
    return float(f"{float(p):.3g}")


def _fmt_p(p: float) -> str:
    return "p < 1e-6" if p < 1e-6 else f"p = {p:.2g}"


def _memo(context: AuditContext, key: tuple, make: Callable[[], Any]) -> Any:
    """Per-audit cache of derived arrays shared by the shift checks (rows, labels, features,
    properties)."""
    store = context.__dict__.setdefault("_shift_memo", {})
    if key not in store:
        store[key] = make()
    return store[key]


def _rows_by_split(context: AuditContext) -> dict[str, np.ndarray]:
    """Rows that decoded, per split, in split order (once per audit: the Python loop over
    the samples took 25 ms of every check at 20k images)."""
    def make():
        ok = np.asarray(context.table.ok, bool)
        out: dict[str, list[int]] = {s: [] for s in context.samples.splits}
        for i, s in enumerate(context.samples.samples):
            if ok[i]:
                out.setdefault(s.split, []).append(i)
        return {s: np.asarray(v, np.int64) for s, v in out.items()}
    return _memo(context, ("rows",), make)


def _name(context: AuditContext, row: int) -> Any:
    """How a sample is shown as evidence: its path, or its index for array inputs."""
    s = context.samples.samples[int(row)]
    return s.path if s.abspath is not None or s.index is None else int(s.index)


def _labels(context: AuditContext, split: str) -> list[str] | None:
    """Labels of the split's usable rows (in :func:`_rows_by_split` order), None when one is
    missing."""
    def make():
        samples = context.samples.samples
        labels = [samples[int(i)].label for i in _rows_by_split(context)[split]]
        return None if any(v is None for v in labels) else [str(v) for v in labels]
    return _memo(context, ("labels", split), make)


def _properties(context: AuditContext) -> tuple[np.ndarray, list[str], dict] | None:
    """(N, P) per-image property matrix, names and categorical vocabularies, or None when the
    table has none (tabular data, tables built without properties)."""
    def make():
        props = getattr(context.table, "properties", None)
        if props is None:
            return None
        from splitaudit.fingerprints.properties import CATEGORICAL, PROPERTY_NAMES

        return np.asarray(props, np.float32), list(PROPERTY_NAMES), dict(CATEGORICAL)
    return _memo(context, ("properties",), make)


#: Principal components of the CNN embeddings used by every shift check.
EMBEDDING_COMPONENTS = 64
#: Rows the PCA is fitted on (a label-blind random subsample: cheap, and tests stay valid).
PCA_FIT_ROWS = 5000


def _embedding_pcs(context: AuditContext, shift: ShiftConfig) -> tuple[np.ndarray, str]:
    """(N, 64) float32 per-row features: the leading principal components of the CNN
    embeddings, or 8x8 means of the 32x32 thumbnails on a hash-only scan."""
    def make():
        table = context.table
        emb = getattr(table, "embeddings", None)
        if emb is None:
            t = np.asarray(table.thumbs)
            n = len(t)
            # Means of 4x4 uint8 blocks: integer sums are exact in any order, so summing rows
            # of 4 then columns of 4 gives the float32 block means bit for bit, in 30 ms
            # instead of 100 ms at 20k thumbnails (a float mean over two strided axes).
            rows4 = t.reshape(n * 8, 4, 32).sum(axis=1, dtype=np.uint16)
            blocks = rows4.reshape(n * 64, 4).sum(axis=1, dtype=np.uint16)
            small = blocks.reshape(n, 64).astype(np.float32) / np.float32(16)
            return small, "8x8 thumbnails (hash-only scan: no embeddings)"
        dims = min(EMBEDDING_COMPONENTS, emb.shape[1])
        if dims == emb.shape[1]:
            return np.asarray(emb, np.float32), f"embeddings ({dims}-d)"
        from sklearn.decomposition import PCA

        from splitaudit import stats

        ok = np.flatnonzero(np.asarray(table.ok, bool))
        rng = np.random.default_rng(shift.seed)
        fit_rows = np.sort(rng.choice(ok, min(len(ok), PCA_FIT_ROWS), replace=False))
        pca = PCA(dims, svd_solver="randomized", iterated_power=2, random_state=shift.seed)
        out = np.zeros((len(emb), dims), np.float32)
        with stats.single_threaded():
            pca.fit(np.asarray(emb[fit_rows], np.float32))
            for start in range(0, len(emb), 8192):  # float16 -> float32 in chunks bounds memory
                chunk = np.asarray(emb[start:start + 8192], np.float32)
                out[start:start + 8192] = pca.transform(chunk)
        return out, f"cnn embeddings (PCA {dims})"
    return _memo(context, ("pcs", shift.seed), make)


def _pair_features(context: AuditContext, a: str, b: str, rows_a: np.ndarray,
                   rows_b: np.ndarray, shift: ShiftConfig):
    """Subsampled rows of a and b and their standardized features (embedding components
    plus numeric image properties), shared by the domain classifier and the MMD test."""
    from splitaudit import stats

    def make():
        rng = np.random.default_rng(shift.seed)
        ia = rows_a[stats.subsample(len(rows_a), shift.max_samples, rng)]
        ib = rows_b[stats.subsample(len(rows_b), shift.max_samples, rng)]
        both = np.concatenate([ia, ib])
        pcs, source = _embedding_pcs(context, shift)
        blocks = [pcs[both]]
        got = _properties(context)
        if got is not None:
            props, names, cats = got
            # Categorical codes are not ordinal: only numeric properties become features.
            numeric = [j for j, n in enumerate(names) if n not in cats]
            # Properties are non-negative and heavy-tailed (file size, sharpness): log1p
            # keeps a few huge files from dominating the standardized features.
            blocks.append(np.log1p(np.clip(props[both][:, numeric], 0, None)))
            source += " + image properties"
        x = stats.reduce_features(blocks, n_components=EMBEDDING_COMPONENTS, seed=shift.seed)
        return ia, ib, x[: len(ia)], x[len(ia):], source
    return _memo(context, ("pair", a, b, shift), make)


def _skip(check_id: str, reason: str, shift: ShiftConfig, effect_name: str, threshold: float,
          extra: dict | None = None) -> CheckResult:
    metrics = {"p_value": None, "effect_size": None, "effect_name": effect_name,
               "effect_threshold": threshold, "alpha": shift.alpha, "skipped_reason": reason,
               "splits": {}}
    metrics.update(extra or {})
    return CheckResult(check_id, "skipped", reason, metrics)


def _compared(context: AuditContext, shift: ShiftConfig):
    """(train name, train rows, {split: rows}, {split: skip reason}) or a skip reason (str)."""
    splits = context.samples.splits
    if len(splits) < 2:
        return "Only one split: nothing to compare."
    rows = _rows_by_split(context)
    a = splits[0]
    if len(rows.get(a, ())) < shift.min_samples:
        return (f"Split {a!r} has {len(rows.get(a, ()))} usable samples "
                f"(fewer than {shift.min_samples}).")
    todo, skipped = {}, {}
    for b in splits[1:]:
        n = len(rows.get(b, ()))
        if n < shift.min_samples:
            skipped[b] = f"{n} usable samples (fewer than {shift.min_samples})"
        else:
            todo[b] = rows[b]
    if not todo:
        return "Every split after " + repr(a) + " is empty or too small: " + "; ".join(
            f"{s}: {r}" for s, r in skipped.items()) + "."
    return a, rows[a], todo, skipped


def _finish(check_id: str, shift: ShiftConfig, per_split: dict[str, dict], skipped: dict[str, str],
            effect_name: str, threshold: float, describe: Callable[[str, dict], str],
            extra: dict | None = None) -> CheckResult:
    """Combine per-split results: Bonferroni p, effect of the worst split, status, summary."""
    m = len(per_split)
    p_min = min(d["p_value"] for d in per_split.values())
    p = min(1.0, m * p_min)
    for d in per_split.values():
        d["p_adjusted"] = min(1.0, m * d["p_value"])
    significant = [s for s, d in per_split.items() if d["p_adjusted"] < shift.alpha]
    if significant:
        worst = max(significant, key=lambda s: per_split[s]["effect"])
    else:
        worst = min(per_split, key=lambda s: per_split[s]["p_value"])
    effect = per_split[worst]["effect"]
    if p < shift.alpha and effect >= threshold:
        status = "fail"
    elif p < shift.alpha:
        status = "warn"
    else:
        status = "pass"
    summary = describe(worst, per_split[worst])
    if status == "warn":
        summary += f" Significant but below the effect threshold ({threshold:g})."
    splits_out: dict[str, Any] = {}
    for s, d in per_split.items():
        splits_out[s] = _json(d)
    for s, reason in skipped.items():
        splits_out[s] = {"skipped": reason}
    metrics = {"p_value": _rp(p), "effect_size": _r(effect), "effect_name": effect_name,
               "effect_threshold": threshold, "alpha": shift.alpha, "worst_split": worst,
               "splits": splits_out}
    metrics.update(extra or {})
    return CheckResult(check_id, status, summary, metrics)


def _json(v: Any, key: str = "") -> Any:
    """JSON-ready copy: p-values (keys p_*, *_p) keep 3 significant digits, other floats 6 digits."""
    if isinstance(v, dict):
        return {str(k): _json(x, str(k)) for k, x in v.items()}
    if (key.startswith("p_") or key.endswith("_p")) and isinstance(v, (float, np.floating)):
        return _rp(v) if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, str) or v is None:
        return v
    return _r(v)


def _feature_check(check_id: str, context: AuditContext, shift: ShiftConfig, effect_name: str,
                   threshold: float, test, describe) -> CheckResult:
    """Run a two-sample test on the shared features of train vs each later split.

    ``test(a, b, rows_a, rows_b, features_a, features_b)`` returns the split's metrics (with
    ``p_value`` and ``effect``); ``describe(a, b, metrics)`` the sentence for the summary.
    """
    got = _compared(context, shift)
    if isinstance(got, str):
        return _skip(check_id, got, shift, effect_name, threshold)
    a, rows_a, todo, skipped = got
    per, source = {}, ""
    for b, rows_b in todo.items():
        ia, ib, xa, xb, source = _pair_features(context, a, b, rows_a, rows_b, shift)
        per[b] = test(a, b, ia, ib, xa, xb)
    return _finish(check_id, shift, per, skipped, effect_name, threshold,
                   lambda b, d: describe(a, b, d), {"features": source})


# --------------------------------------------------------------------------- checks


class DomainClassifier(Check):
    """A classifier can tell val from train (adversarial validation): the splits differ.

    A logistic regression on CNN embeddings (PCA 64) plus image properties is cross-fitted
    on two folds; the held-out ROC AUC has a DeLong interval and an exact/normal Mann-Whitney
    p-value. The samples it scores most val-like and most train-like are the evidence.
    """

    id = "domain_classifier"
    title = "Domain classifier (adversarial validation)"
    flags = "shifted"

    def run(self, context: AuditContext) -> CheckResult:
        from splitaudit import stats

        shift = _shift_config(context)

        def test(a: str, b: str, ia, ib, xa, xb) -> dict:
            res = stats.domain_auc(xa, xb, folds=2, seed=shift.seed, max_samples=None)
            return {"p_value": res.p_value, "effect": res.auc, "auc": res.auc,
                    "ci": [res.ci_low, res.ci_high], "fold_aucs": list(res.fold_aucs),
                    "n_" + a: res.n_a, "n_" + b: res.n_b,
                    f"most_{b}_like": [_name(context, ib[i]) for i in res.most_b_like],
                    f"most_{a}_like": [_name(context, ia[i]) for i in res.most_a_like]}

        def describe(a: str, b: str, d: dict) -> str:
            lo, hi = d["ci"]
            return (f"Domain classifier tells {b} from {a} with AUC {d['auc']:.2f} "
                    f"[{lo:.2f}, {hi:.2f}], {_fmt_p(d['p_adjusted'])}.")
        return _feature_check(self.id, context, shift, "roc_auc", shift.domain_threshold, test, describe)


class EmbeddingMMD(Check):
    """Kernel two-sample test (MMD) between the embeddings of val and train.

    Gaussian-kernel MMD on random Fourier features of the (PCA-reduced) embeddings, median
    bandwidth, permutation null with a gamma tail; large splits are subsampled, which keeps
    the test valid and its cost linear.
    """

    id = "embedding_mmd"
    title = "Embedding MMD"
    flags = "shifted"

    def run(self, context: AuditContext) -> CheckResult:
        from splitaudit import stats

        shift = _shift_config(context)

        def test(a: str, b: str, ia, ib, xa, xb) -> dict:
            res = stats.mmd_test(xa, xb, permutations=shift.permutations, seed=shift.seed,
                                 max_samples=None)
            return {"p_value": res.p_value, "effect": res.mmd2, "mmd2": res.mmd2,
                    "statistic": res.statistic, "p_permutation": res.p_permutation,
                    "bandwidth": res.bandwidth, "n_" + a: res.n_a, "n_" + b: res.n_b}

        def describe(a: str, b: str, d: dict) -> str:
            return (f"MMD² between {b} and {a} embeddings is {d['mmd2']:.4f}, "
                    f"{_fmt_p(d['p_adjusted'])}.")
        return _feature_check(self.id, context, shift, "mmd2", shift.mmd_threshold, test, describe)


class LabelShift(Check):
    """Class frequencies differ between val and train (prior shift).

    Chi-square test of the split x class table (rare classes pooled), Cramer's V as the
    effect size, labels present in one split only and each split's imbalance ratio.
    """

    id = "label_shift"
    title = "Label shift"
    flags = "shifted"

    def run(self, context: AuditContext) -> CheckResult:
        from splitaudit import stats

        shift = _shift_config(context)
        thr = shift.label_threshold
        got = _compared(context, shift)
        if isinstance(got, str):
            return _skip(self.id, got, shift, "cramers_v", thr)
        a, rows_a, todo, skipped = got
        la = _labels(context, a)
        if la is None:
            return _skip(self.id, f"Split {a!r} has samples without labels.", shift, "cramers_v", thr)
        per = {}
        for b, rows_b in todo.items():
            lb = _labels(context, b)
            if lb is None:
                skipped[b] = "samples without labels"
                continue
            if len(set(la) | set(lb)) < 2:
                skipped[b] = "a single class"
                continue
            res = stats.label_shift_test(la, lb)
            per[b] = {"p_value": res.p_value, "effect": res.cramers_v, "cramers_v": res.cramers_v,
                      "chi2": res.chi2, "dof": res.dof, "total_variation": res.total_variation,
                      f"only_in_{a}": list(res.only_a)[:20], f"only_in_{b}": list(res.only_b)[:20],
                      f"imbalance_{a}": res.imbalance_a, f"imbalance_{b}": res.imbalance_b,
                      "counts": {c: [res.counts_a[c], res.counts_b[c]] for c in res.counts_a}}
        if not per:
            reason = "; ".join(f"{s}: {r}" for s, r in skipped.items())
            return _skip(self.id, f"No split can be compared by labels ({reason}).", shift,
                         "cramers_v", thr)

        def describe(b: str, d: dict) -> str:
            text = (f"Class frequencies of {b} vs {a}: Cramer's V {d['cramers_v']:.3f}, "
                    f"chi2 {d['chi2']:.1f} ({d['dof']} dof), {_fmt_p(d['p_adjusted'])}.")
            only = d[f"only_in_{b}"]
            if only:
                text += f" Labels only in {b}: {', '.join(only[:5])}."
            if d[f"only_in_{a}"]:
                text += f" Labels missing from {b}: {', '.join(d[f'only_in_{a}'][:5])}."
            return text
        return _finish(self.id, shift, per, skipped, "cramers_v", thr, describe)


class PropertyDrift(Check):
    """Per-image properties (size, brightness, contrast, sharpness, format, ...) differ.

    KS test per numeric property (effect: Wasserstein distance / pooled std), chi-square per
    categorical one (effect: Cramer's V), Benjamini-Hochberg across properties; the effect is
    the largest one among properties significant after FDR.
    """

    id = "property_drift"
    title = "Image property drift"
    flags = "shifted"

    def run(self, context: AuditContext) -> CheckResult:
        from splitaudit import stats

        shift = _shift_config(context)
        thr = shift.property_threshold
        got = _compared(context, shift)
        if isinstance(got, str):
            return _skip(self.id, got, shift, "normalized_wasserstein_or_cramers_v", thr)
        a, rows_a, todo, skipped = got
        found = _properties(context)
        if found is None:
            return _skip(self.id, "No per-image properties (tabular data, or a fingerprint table "
                         "made without them).", shift, "normalized_wasserstein_or_cramers_v", thr)
        props, names, cats = found
        per = {}
        for b, rows_b in todo.items():
            res = stats.property_drift_test(props[rows_a], props[rows_b], names, cats)
            sig = res.significant(shift.alpha)
            # The effect that can fail the check must come from a property that is itself
            # significant after FDR; otherwise report the largest effect, for information.
            top = sig[0] if sig else max(res.properties, key=lambda q: q.effect)
            per[b] = {
                "p_value": res.p_value, "effect": top.effect if sig else 0.0,
                "largest_effect": top.effect, "property": top.name,
                "drifted": [q.name for q in sig if q.effect >= thr],
                "properties": {q.name: {"kind": q.kind, "statistic": q.statistic,
                                        "p_value": _rp(q.p_value), "q_value": _rp(q.q_value),
                                        "effect": q.effect, "effect_name": q.effect_name,
                                        f"median_{a}": q.center_a, f"median_{b}": q.center_b,
                                        f"missing_{a}": q.missing_a, f"missing_{b}": q.missing_b}
                               for q in res.properties},
            }

        def describe(b: str, d: dict) -> str:
            q = d["properties"][d["property"]]
            if d["effect"] > 0:
                shown = ", ".join(d["drifted"][:4]) or d["property"]
                return (f"Image properties of {b} differ from {a}: {shown} "
                        f"({q['effect_name']} {q['effect']:.2f} for {d['property']}, "
                        f"FDR {_fmt_p(d['p_adjusted'])}).")
            return (f"No image property of {b} differs from {a} after FDR "
                    f"(largest: {d['property']}, {q['effect_name']} {q['effect']:.2f}).")
        return _finish(self.id, shift, per, skipped, "normalized_wasserstein_or_cramers_v", thr,
                       describe)


class Difficulty(Check):
    """Val is easier than train: its samples sit closer to training samples than training
    samples sit to each other, and their neighbours agree with their labels more often.

    Nearest-neighbour cosine distance val->train vs train->train (leave-one-out) and k-NN
    label agreement, one-sided Mann-Whitney tests, Cliff's deltas as effects; computed with
    and without val samples that have an exact or near copy in train, to show how much of the
    easiness the leaks explain. Neighbours come from FAISS, in batches.
    """

    id = "difficulty"
    title = "Easier validation"
    flags = "easier"

    def run(self, context: AuditContext) -> CheckResult:
        from splitaudit import stats

        shift = _shift_config(context)
        thr = shift.difficulty_threshold
        got = _compared(context, shift)
        if isinstance(got, str):
            return _skip(self.id, got, shift, "cliffs_delta", thr)
        a, rows_a, todo, skipped = got
        feats, source = _embedding_pcs(context, shift)
        la = _labels(context, a)
        where = _rows_by_name(context)
        per = {}
        notes = []
        for b, rows_b in todo.items():
            lb = _labels(context, b)
            use_labels = la is not None and lb is not None and len(set(la) | set(lb)) >= 2
            if not use_labels:
                notes.append(f"{b}: distance only ("
                             + ("no labels" if la is None or lb is None else "a single class")
                             + ")")
            leaks = [p for p in context.pairs if p.match in ("exact", "near")
                     and p.query.split == b and p.reference.split == a]
            leaked = np.isin(rows_b, _rows_of(where, (p.query for p in leaks)))
            sources = np.isin(rows_a, _rows_of(where, (p.reference for p in leaks)))
            res = stats.difficulty_test(feats[rows_a], feats[rows_b],
                                        la if use_labels else None, lb if use_labels else None,
                                        leaked_b=leaked, keep_a=sources, k=shift.k,
                                        max_queries=shift.max_queries, seed=shift.seed)
            # Leaks are the leak checks' finding: by default "easier" is judged on the val
            # samples without a copy in train, so it is evidence beyond the leaks.
            clean = shift.difficulty_without_leaks and res.without_leaks is not None
            head = res.without_leaks if clean else res.all
            d = _easiness_dict(head)
            d.update({"p_value": head.p_value, "effect": _backed_effect(head, shift.alpha),
                      "scored": "without leaked samples" if clean else "all samples",
                      "leaked": int(leaked.sum()),
                      "with_leaks": _easiness_dict(res.all),
                      "without_leaks": (None if res.without_leaks is None
                                        else _easiness_dict(res.without_leaks)),
                      "leak_share_of_effect": res.leak_share,
                      "per_class": [dict(c) for c in res.per_class[:10]],
                      f"nearest_{b}_to_{a}": [_name(context, rows_b[i]) for i in res.easiest_b],
                      "k": res.k})
            per[b] = d

        def describe(b: str, d: dict) -> str:
            left_out = d["scored"] != "all samples"
            text = f"{b} vs {a}" + (f" ({d['leaked']} leaked samples left out)" if left_out else "")
            text += (f": nearest-neighbour distance Cliff's delta {d['distance_delta']:+.2f} "
                     f"(positive = {b} closer to {a})")
            if d.get("agreement_b") is not None:
                text += (f", k-NN label agreement {d['agreement_b']:.2f} vs "
                         f"{d['agreement_a']:.2f}")
            text += f", {_fmt_p(d['p_adjusted'])}."
            if d["without_leaks"] is not None:
                other, name = ((d["with_leaks"], "With") if left_out
                               else (d["without_leaks"], "Without"))
                text += f" {name} its {d['leaked']} leaked samples: effect {other['effect']:+.2f}"
                if d["leak_share_of_effect"] is not None:
                    text += f" (leaks explain {100 * d['leak_share_of_effect']:.0f}% of it)"
                text += "."
            return text
        extra = {"features": source}
        if notes:
            extra["notes"] = notes
        return _finish(self.id, shift, per, skipped, "cliffs_delta", thr, describe, extra)


def _backed_effect(e: "_stats.EasinessResult", alpha: float) -> float:
    """The larger Cliff's delta among the components (distance, agreement) that are
    significant on their own (Bonferroni over the two), so a fail never rests on a large but
    noisy delta next to a significant but tiny one; the larger delta when none is."""
    comps = [(e.distance_delta, e.distance_p)]
    if e.agreement_delta is not None and e.agreement_p is not None:
        comps.append((e.agreement_delta, e.agreement_p))
    backed = [d for d, p in comps if min(1.0, len(comps) * p) < alpha]
    return max(backed) if backed else max(d for d, _ in comps)


def _rows_by_name(context: AuditContext) -> dict[str, dict[Any, int]]:
    """split -> {name: row}, where pairs name array samples by index (path None) and files
    by path. One dict per split, not a dict of (split, name) tuples: 20k tuples set off a
    full garbage collection that took 60-95 ms of the difficulty check."""
    def make():
        out: dict[str, dict[Any, int]] = {}
        for i, s in enumerate(context.samples.samples):
            out.setdefault(s.split, {})[s.path if s.abspath is not None else s.index] = i
        return out
    return _memo(context, ("names",), make)


def _rows_of(where: dict[str, dict[Any, int]], refs) -> np.ndarray:
    """Rows of the samples that pairs name (by path, or by index for array inputs)."""
    rows = (where.get(r.split, {}).get(r.path if r.path is not None else r.index) for r in refs)
    return np.fromiter((r for r in rows if r is not None), np.int64)


def _easiness_dict(e: "_stats.EasinessResult") -> dict:
    return {"p_value": e.p_value, "effect": e.effect, "distance_delta": e.distance_delta,
            "distance_p": e.distance_p, "median_nn_distance_b": e.distance_b,
            "median_nn_distance_a": e.distance_a, "agreement_delta": e.agreement_delta,
            "agreement_p": e.agreement_p, "agreement_b": e.agreement_b,
            "agreement_a": e.agreement_a, "knn_accuracy_b": e.accuracy_b,
            "knn_accuracy_a": e.accuracy_a, "n_a": e.n_a, "n_b": e.n_b}


SHIFT_CHECKS = (DomainClassifier, EmbeddingMMD, LabelShift, PropertyDrift, Difficulty)
