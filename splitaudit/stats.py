"""Two-sample statistics behind the shift and "easier validation" checks.

Pure functions of numpy arrays that return small frozen dataclasses: no file I/O, no printing.
Every p-value here is valid (close to uniform) when both samples come from one distribution,
which is what a random split produces:

* :func:`domain_auc` fits a classifier on one fold and scores the other (cross-fitting), so
  the held-out Mann-Whitney test sees scores that never saw their own labels.
* :func:`mmd_test` uses random Fourier features and a permutation null (gamma-approximated,
  so very small p-values can be reported) on a bandwidth chosen without the labels.
* :func:`difficulty_test` compares val->train with train->train nearest neighbours where each
  train query leaves itself out and each val query leaves one random train sample out, so both
  search among the same number of candidates.

Large inputs are subsampled uniformly at random, which keeps the tests valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from splitaudit.errors import invalid_param

#: Categories whose expected count is below this are pooled before a chi-square test.
MIN_EXPECTED = 5.0
#: One-line advice when data are ordered before Keras' ``validation_split``.
SHUFFLE_HINT = ("shuffle before fit, e.g. `idx = np.random.permutation(len(x)); "
                "x, y = x[idx], y[idx]` (validation_split takes the LAST fraction, unshuffled)")


# --------------------------------------------------------------------------- helpers


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the BLAS and OpenMP libraries loaded so far on one thread inside the block.

    The statistics here make many small BLAS / OpenMP calls (75-column matrices, 10k rows),
    where worker threads only add start-up and barrier waits, and after a two-thread call an
    idle OpenBLAS worker spins for ~0.1 CPU-s; on a 2-core machine shared with other work
    those waits dominate. Measured at 20k images on such a machine (CPU seconds, two threads
    -> one): the former lbfgs fits of :func:`domain_auc` 5.3 -> 0.13, the exact k-NN of
    :func:`difficulty_test` 0.3-0.55 -> 0.16, a 5000 x 74 QR 0.03 -> 0.004. Results are the
    same up to the rounding of the BLAS kernels. Libraries loaded inside the block keep their
    thread count, so callers import first.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _as_2d(x: object, name: str, owner: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise invalid_param(name, owner, "a numeric (N, D) array", getattr(arr, "shape", x))
    return arr


def _check_int(value: object, name: str, owner: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise invalid_param(name, owner, f"an int >= {minimum}", value)
    return int(value)


def subsample(n: int, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform random subset of ``range(n)`` of size ``min(n, max_samples)``."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def _mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(AUC = P(x > y) + ties/2, one-sided p for x > y, DeLong variance of the AUC).

    Normal approximation with tie correction (exact permutation distribution for small
    samples without ties, as scipy chooses).
    """
    from scipy.stats import mannwhitneyu, rankdata

    nx, ny = len(x), len(y)
    res = mannwhitneyu(x, y, alternative="greater", method="auto")
    auc = float(res.statistic) / (nx * ny)
    # DeLong structural components from mid-ranks: O(n log n), never an nx x ny matrix.
    pooled = rankdata(np.concatenate([x, y]))
    v10 = (pooled[:nx] - rankdata(x)) / ny  # share of y below each x
    v01 = 1.0 - (pooled[nx:] - rankdata(y)) / nx  # share of x above each y
    var = (np.var(v10, ddof=1) / nx if nx > 1 else 0.0) + (np.var(v01, ddof=1) / ny if ny > 1 else 0.0)
    return auc, float(res.pvalue), float(var)


def _feature_pair(features_a, features_b, owner: str, min_a: int, min_b: int,
                  expected_rows: str) -> tuple[np.ndarray, np.ndarray]:
    """Both feature arrays as 2-D, with the same columns and enough rows (validated)."""
    a = _as_2d(features_a, "features_a", owner)
    b = _as_2d(features_b, "features_b", owner)
    if a.shape[1] != b.shape[1]:
        raise invalid_param("features_b", owner, f"an array with {a.shape[1]} columns", b.shape)
    if len(a) < min_a or len(b) < min_b:
        raise invalid_param("features_a", owner, expected_rows, (len(a), len(b)))
    return a, b


def _standardize(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean, unit variance (pooled, so label-blind); NaN -> column mean."""
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=0)
    # nanmean warns on an all-NaN column (the JPEG quality of a PNG-only dataset): count.
    mean = np.where(finite, x, 0.0).sum(axis=0) / np.maximum(count, 1)
    x = np.where(finite, x, mean) - mean
    std = x.std(axis=0)
    return x / np.where(std > 1e-12, std, 1.0)


def reduce_features(
    blocks: Sequence[np.ndarray | None], *, n_components: int = 64, seed: int = 0
) -> np.ndarray:
    """Concatenate feature blocks, each standardized and PCA-reduced when it is wide.

    Every step is fitted on all rows together, without split labels, so tests on the result
    stay valid. Blocks wider than ``n_components`` (CNN embeddings) are reduced to their
    leading principal components, so a few narrow blocks (image properties) are not drowned.

    Parameters
    ----------
    blocks : sequence of numpy.ndarray or None
        (N, D_i) arrays with the same N; None entries are skipped. NaN is allowed.
    n_components : int
        Columns kept per wide block.
    seed : int
        Seed of the randomized SVD.

    Returns
    -------
    numpy.ndarray
        (N, sum of kept columns) float32, standardized columns.
    """
    n_components = _check_int(n_components, "n_components", "reduce_features", 1)
    out = []
    for b in blocks:
        if b is None:
            continue
        x = _standardize(_as_2d(b, "blocks", "reduce_features"))
        if x.shape[1] > n_components and len(x) > n_components:
            from sklearn.decomposition import PCA

            with single_threaded():
                x = PCA(n_components, svd_solver="randomized", random_state=seed).fit_transform(x)
            x = _standardize(x)
        out.append(x.astype(np.float32))
    if not out:
        raise invalid_param("blocks", "reduce_features", "at least one feature block", blocks)
    return np.concatenate(out, axis=1)


def _cramers_v(chi2: float, n: int, rows: int, cols: int) -> float:
    k = min(rows, cols) - 1
    return math.sqrt(chi2 / (n * k)) if n > 0 and k > 0 else 0.0


def _chi2_table(table: np.ndarray) -> tuple[float, int, float, float]:
    """(chi2, dof, p, Cramer's V) of a 2 x K count table; sparse columns pooled first."""
    from scipy.stats import chi2 as chi2_dist

    table = np.asarray(table, np.float64)
    table = table[:, table.sum(axis=0) > 0]
    n = table.sum()
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0, 1.0, 0.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    sparse = expected.min(axis=0) < MIN_EXPECTED
    if sparse.any() and (~sparse).sum() >= 1 and sparse.sum() >= 1:
        # Pool rare categories into one "other" column so the chi-square law holds.
        table = np.column_stack([table[:, ~sparse], table[:, sparse].sum(axis=1)])
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    if table.shape[1] < 2:
        return 0.0, 0, 1.0, 0.0
    chi2 = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return chi2, dof, float(chi2_dist.sf(chi2, dof)), _cramers_v(chi2, int(n), 2, table.shape[1])


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in input order."""
    p = np.asarray(p, np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


# --------------------------------------------------------------------------- domain classifier


@dataclass(frozen=True)
class DomainResult:
    """Adversarial validation: how well a classifier tells sample b from sample a.

    Attributes
    ----------
    auc : float
        Held-out ROC AUC (mean over folds) of scoring b above a; 0.5 = indistinguishable.
    ci_low, ci_high : float
        95% DeLong confidence interval of ``auc``.
    p_value : float
        One-sided (AUC > 0.5) exact/normal Mann-Whitney p-value of the first fold's held-out
        scores (uniform under the null; see the comment where it is set).
    fold_aucs : tuple of float
    n_a, n_b : int
        Samples used (after subsampling).
    most_a_like, most_b_like : tuple of int
        Indices into ``a`` scored most a-like and indices into ``b`` scored most b-like
        (held-out scores): the samples that make the two sets differ.
    """

    auc: float
    ci_low: float
    ci_high: float
    p_value: float
    fold_aucs: tuple[float, ...]
    n_a: int
    n_b: int
    most_a_like: tuple[int, ...]
    most_b_like: tuple[int, ...]


def domain_auc(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    folds: int = 2,
    seed: int = 0,
    max_samples: int | None = 10000,
    evidence: int = 5,
) -> DomainResult:
    """Cross-fitted classifier two-sample test (adversarial validation).

    A logistic regression on standardized features is fitted on ``folds - 1`` folds and scores
    the held-out fold; on each held-out fold the Mann-Whitney test of b-scores above a-scores
    is exact under the null (the model never saw those labels). Fold p-values are combined
    with Bonferroni.

    Parameters
    ----------
    features_a, features_b : numpy.ndarray
        (N_a, D) and (N_b, D) features (e.g. :func:`reduce_features` output). NaN allowed.
    folds : int
        Cross-fitting folds (>= 2); 2 keeps the most samples per held-out test.
    seed : int
    max_samples : int or None
        Each side is subsampled to at most this many rows.
    evidence : int
        How many most-a-like / most-b-like indices to return.

    Returns
    -------
    DomainResult
    """
    owner = "domain_auc"
    folds = _check_int(folds, "folds", owner, 2)
    a, b = _feature_pair(features_a, features_b, owner, folds, folds, f"at least {folds} rows per side")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    ia, ib = subsample(len(a), max_samples, rng), subsample(len(b), max_samples, rng)
    x = _standardize(np.concatenate([a[ia], b[ib]]))
    y = np.concatenate([np.zeros(len(ia), np.int8), np.ones(len(ib), np.int8)])
    scores = np.zeros(len(y))
    aucs, ps, vars_ = [], [], []
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with single_threaded():
        for fit_rows, test_rows in cv.split(x, y):
            # Newton steps (a Cholesky solve of the (D+1)-square Hessian) minimise the same
            # L2-regularised objective as the former lbfgs, to its optimum: on the ~75
            # features of a 20k-image scan 3 steps, where lbfgs took 58-83 iterations (CPU-s
            # per fold on one thread: 0.015 vs 0.065) and stopped 0.02 above the optimum
            # (held-out p off by 0.01). The tight tol costs 1-2 steps over the default and
            # takes the AUC to within 1e-7 of the optimum's (default: 3e-5).
            model = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-8,
                                       class_weight="balanced")
            model.fit(x[fit_rows], y[fit_rows])
            s = model.decision_function(x[test_rows])
            scores[test_rows] = s
            yt = y[test_rows]
            auc, p, var = _mann_whitney(s[yt == 1], s[yt == 0])
            aucs.append(auc)
            ps.append(p)
            vars_.append(var)
    auc = float(np.mean(aucs))
    sd = math.sqrt(sum(vars_)) / folds
    sa, sb = scores[: len(ia)], scores[len(ia):]
    e = max(int(evidence), 0)
    return DomainResult(
        auc=auc,
        ci_low=max(0.0, auc - 1.959964 * sd),
        ci_high=min(1.0, auc + 1.959964 * sd),
        # The first fold's held-out p-value only: exact and uniform under the null. The folds'
        # p-values are positively correlated (both grow when the two halves' chance
        # differences point the same way), so Stouffer's z over them rejected 16-20% of
        # random splits at 0.05 and Bonferroni piled p-values up at 1
        # (benchmarks/shift_calibration.py); the AUC estimate still averages every fold.
        p_value=ps[0],
        fold_aucs=tuple(float(v) for v in aucs),
        n_a=len(ia),
        n_b=len(ib),
        most_a_like=tuple(int(i) for i in ia[np.argsort(sa, kind="stable")[:e]]),
        most_b_like=tuple(int(i) for i in ib[np.argsort(-sb, kind="stable")[:e]]),
    )


# --------------------------------------------------------------------------- MMD


@dataclass(frozen=True)
class MMDResult:
    """Kernel two-sample test with a Gaussian kernel approximated by random Fourier features.

    Attributes
    ----------
    mmd2 : float
        Squared MMD minus its permutation-null mean (an unbiased-like estimate; ~0 under the
        null, may be slightly negative).
    statistic : float
        The biased squared MMD of the random features.
    p_value : float
        Upper tail of a gamma fitted to the permutation null (can go below 1/permutations).
    p_permutation : float
        Plain permutation p-value ``(1 + #null >= statistic) / (1 + permutations)``.
    bandwidth : float
        Gaussian kernel sigma (median heuristic on a label-blind subsample).
    n_a, n_b : int
    """

    mmd2: float
    statistic: float
    p_value: float
    p_permutation: float
    bandwidth: float
    n_a: int
    n_b: int


def _rff_permutation_null(x: np.ndarray, w: np.ndarray, na: int, permutations: int,
                          rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Squared distance between the side means of the random Fourier features
    ``cos(x @ w), sin(x @ w)``, with rows ``:na`` as side a (observed) and for
    ``permutations`` random relabellings (the null)."""
    n, half = len(x), w.shape[1]
    # The features are float32 for the permutation products anyway: cos and sin of float32
    # projections (vectorised, unlike float64 here) move them by at most ~3e-8, and took
    # 12 instead of 53 ms at 14k rows.
    proj = (x @ w).astype(np.float32)
    phi = np.empty((n, 2 * half), np.float32)
    np.cos(proj, out=phi[:, :half])
    np.sin(proj, out=phi[:, half:])
    phi /= np.float32(math.sqrt(half))
    # Centring keeps mean differences exact-ish in the float32 products below.
    phi -= phi.mean(axis=0, dtype=np.float64).astype(np.float32)
    total = phi.sum(axis=0, dtype=np.float64)

    def stat(members: np.ndarray) -> np.ndarray:
        # members: (P, n) 0/1 rows, 1 = side a: one matrix product gives every side-a sum.
        sum_a = (members @ phi).astype(np.float64)
        diff = sum_a / na - (total - sum_a) / (n - na)
        return (diff ** 2).sum(axis=1)

    first = np.zeros((1, n), np.float32)
    first[0, :na] = 1.0
    observed = float(stat(first)[0])
    null = []
    for start in range(0, permutations, 50):  # bounds the (P, n) membership matrix
        p = min(50, permutations - start)
        members = np.zeros((p, n), np.float32)
        for i in range(p):
            members[i, rng.permutation(n)[:na]] = 1.0
        null.append(stat(members))
    return observed, np.concatenate(null)


def mmd_test(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    n_features: int = 256,
    permutations: int = 200,
    seed: int = 0,
    max_samples: int | None = 5000,
    bandwidth: float | None = None,
) -> MMDResult:
    """Maximum mean discrepancy test on random Fourier features, with a permutation null.

    Cost is O((N_a + N_b) * (D + permutations) * n_features): linear in the samples, so
    100k-sample splits are subsampled to ``max_samples`` per side (uniformly, keeping the
    test valid) rather than forming any N x M kernel matrix.

    Parameters
    ----------
    features_a, features_b : numpy.ndarray
        (N_a, D) and (N_b, D) features; NaN becomes the pooled column mean.
    n_features : int
        Random Fourier features (cos and sin of n_features / 2 projections).
    permutations : int
        Label permutations of the null.
    seed : int
    max_samples : int or None
        Each side is subsampled to at most this many rows.
    bandwidth : float, optional
        Kernel sigma; None: median pairwise distance of up to 1000 pooled rows.

    Returns
    -------
    MMDResult
    """
    owner = "mmd_test"
    a, b = _feature_pair(features_a, features_b, owner, 2, 2, "at least 2 rows per side")
    n_features = _check_int(n_features, "n_features", owner, 2)
    permutations = _check_int(permutations, "permutations", owner, 10)
    from scipy.spatial.distance import pdist
    from scipy.stats import gamma

    rng = np.random.default_rng(seed)
    ia, ib = subsample(len(a), max_samples, rng), subsample(len(b), max_samples, rng)
    x = _standardize(np.concatenate([a[ia], b[ib]]))
    na, n = len(ia), len(ia) + len(ib)
    if bandwidth is None:
        probe = x[subsample(n, 1000, rng)]
        d = pdist(probe)
        bandwidth = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
    half = n_features // 2
    w = rng.normal(0.0, 1.0 / bandwidth, (x.shape[1], half))
    with single_threaded():
        observed, null_t = _rff_permutation_null(x, w, na, permutations, rng)
    mean, var = float(null_t.mean()), float(null_t.var(ddof=1))
    if var > 0 and mean > 0:
        p_value = float(gamma.sf(observed, mean * mean / var, scale=var / mean))
    else:
        p_value = 1.0
    p_perm = float((1 + (null_t >= observed).sum()) / (1 + permutations))
    return MMDResult(observed - mean, observed, p_value, p_perm, float(bandwidth), na, n - na)


# --------------------------------------------------------------------------- label shift


@dataclass(frozen=True)
class LabelShiftResult:
    """Class frequencies of two splits compared.

    Attributes
    ----------
    chi2, dof, p_value : float, int, float
        Chi-square test of the 2 x K contingency table (rare classes pooled).
    cramers_v : float
        Effect size in [0, 1].
    total_variation : float
        Half the L1 distance between the two class distributions.
    only_a, only_b : tuple of str
        Labels present in one split only.
    imbalance_a, imbalance_b : float
        Largest / smallest class count in each split (inf when a class of the union is
        missing there).
    counts_a, counts_b : dict
        label -> count.
    """

    chi2: float
    dof: int
    p_value: float
    cramers_v: float
    total_variation: float
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    imbalance_a: float
    imbalance_b: float
    counts_a: dict = field(default_factory=dict)
    counts_b: dict = field(default_factory=dict)


def label_shift_test(labels_a: Sequence, labels_b: Sequence) -> LabelShiftResult:
    """Chi-square test and effect sizes of a change in class frequencies between two splits.

    Parameters
    ----------
    labels_a, labels_b : sequence
        Class labels (any hashable; reported as str).

    Returns
    -------
    LabelShiftResult
    """
    la = [str(v) for v in labels_a]
    lb = [str(v) for v in labels_b]
    if not la or not lb:
        raise invalid_param("labels_a" if not la else "labels_b", "label_shift_test",
                            "a non-empty sequence of labels", len(la) if not la else len(lb))
    classes = sorted(set(la) | set(lb))
    pos = {c: i for i, c in enumerate(classes)}
    ca = np.bincount([pos[v] for v in la], minlength=len(classes))
    cb = np.bincount([pos[v] for v in lb], minlength=len(classes))
    chi2, dof, p, v = _chi2_table(np.vstack([ca, cb]))
    tv = 0.5 * float(np.abs(ca / ca.sum() - cb / cb.sum()).sum())

    def imbalance(c: np.ndarray) -> float:
        return float(c.max() / c.min()) if c.min() > 0 else math.inf

    return LabelShiftResult(
        chi2=chi2, dof=dof, p_value=p, cramers_v=v, total_variation=tv,
        only_a=tuple(c for c, x, y in zip(classes, ca, cb) if x and not y),
        only_b=tuple(c for c, x, y in zip(classes, ca, cb) if y and not x),
        imbalance_a=imbalance(ca), imbalance_b=imbalance(cb),
        counts_a={c: int(x) for c, x in zip(classes, ca)},
        counts_b={c: int(x) for c, x in zip(classes, cb)},
    )


# --------------------------------------------------------------------------- property drift


@dataclass(frozen=True)
class PropertyDrift:
    """One per-image property compared between two splits.

    Attributes
    ----------
    name : str
    kind : str
        ``numeric`` (KS test, normalized Wasserstein) or ``categorical`` (chi-square,
        Cramer's V).
    statistic : float
        KS D or chi-square.
    p_value, q_value : float
        Raw and Benjamini-Hochberg adjusted p-values.
    effect : float
        W1 / pooled std (numeric) or Cramer's V (categorical).
    effect_name : str
    center_a, center_b : float
        Medians (numeric) or NaN (categorical).
    n_a, n_b : int
        Non-missing values used.
    missing_a, missing_b : float
        Share of NaN values per split.
    """

    name: str
    kind: str
    statistic: float
    p_value: float
    q_value: float
    effect: float
    effect_name: str
    center_a: float
    center_b: float
    n_a: int
    n_b: int
    missing_a: float
    missing_b: float


@dataclass(frozen=True)
class PropertyDriftResult:
    """Every property compared; ``p_value`` is the smallest BH q-value (a Simes global test)."""

    p_value: float
    properties: tuple[PropertyDrift, ...]

    def significant(self, alpha: float) -> tuple[PropertyDrift, ...]:
        """Properties whose q-value is below ``alpha``, largest effect first."""
        return tuple(sorted((p for p in self.properties if p.q_value < alpha),
                            key=lambda p: -p.effect))


def _compare_property(name: str, x: np.ndarray, y: np.ndarray, categorical: bool) -> tuple:
    """(name, kind, statistic, p, effect, effect name, (center_a, center_b), n_a, n_b,
    (missing_a, missing_b)) of one property column of a and b (NaN = unknown)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    fx, fy = np.isfinite(x), np.isfinite(y)
    xs, ys = x[fx], y[fy]
    miss = (1 - fx.mean() if len(x) else 0.0, 1 - fy.mean() if len(y) else 0.0)
    if categorical:
        kind, ename, center = "categorical", "cramers_v", (math.nan, math.nan)
        if len(xs) and len(ys):
            codes = np.unique(np.concatenate([xs, ys]))
            table = np.vstack([(xs[:, None] == codes).sum(0), (ys[:, None] == codes).sum(0)])
            stat, _, p, eff = _chi2_table(table)
        else:
            stat, p, eff = 0.0, 1.0, 0.0
    else:
        kind, ename = "numeric", "normalized_wasserstein"
        if len(xs) >= 2 and len(ys) >= 2:
            center = (float(np.median(xs)), float(np.median(ys)))
            ks = ks_2samp(xs, ys)
            stat, p = float(ks.statistic), float(ks.pvalue)
            sd = float(np.concatenate([xs, ys]).std())
            eff = float(wasserstein_distance(xs, ys) / sd) if sd > 1e-12 else 0.0
        else:
            center, stat, p, eff = (math.nan, math.nan), 0.0, 1.0, 0.0
    return name, kind, stat, p, eff, ename, center, len(xs), len(ys), miss


def property_drift_test(
    props_a: np.ndarray,
    props_b: np.ndarray,
    names: Sequence[str],
    categorical: Mapping[str, Sequence] | Sequence[str] = (),
) -> PropertyDriftResult:
    """KS / chi-square test per property, Benjamini-Hochberg across properties.

    Parameters
    ----------
    props_a, props_b : numpy.ndarray
        (N_a, P) and (N_b, P) float values, NaN where unknown. Categorical columns hold
        category codes.
    names : sequence of str
        P property names.
    categorical : mapping or sequence of str
        Names of categorical properties (a ``{name: vocabulary}`` mapping is accepted).

    Returns
    -------
    PropertyDriftResult
    """
    owner = "property_drift_test"
    a = _as_2d(props_a, "props_a", owner).astype(np.float64)
    b = _as_2d(props_b, "props_b", owner).astype(np.float64)
    names = [str(n) for n in names]
    if a.shape[1] != len(names) or b.shape[1] != len(names):
        raise invalid_param("names", owner, f"{a.shape[1]} names (one per column)", len(names))
    cats = set(categorical)
    # scipy's wasserstein_distance makes a BLAS call, which on two threads left a worker
    # spinning for ~0.1 CPU-s after the check (more than the test itself).
    with single_threaded():
        rows = [_compare_property(name, a[:, j], b[:, j], name in cats)
                for j, name in enumerate(names)]
    # A property that takes one value in both splits (every image 32x32 PNG, say) carries no
    # information; counting its p = 1 in the correction would only make the test conservative.
    informative = [i for i, (name, *_rest) in enumerate(rows)
                   if len(np.unique(np.concatenate([a[:, i][np.isfinite(a[:, i])],
                                                    b[:, i][np.isfinite(b[:, i])]]))) > 1]
    q = np.ones(len(rows))
    if informative:
        q[informative] = benjamini_hochberg([rows[i][3] for i in informative])
    props = tuple(
        PropertyDrift(name, kind, float(stat), float(p), float(qv), float(eff), ename,
                      center[0], center[1], nx, ny, float(miss[0]), float(miss[1]))
        for (name, kind, stat, p, eff, ename, center, nx, ny, miss), qv in zip(rows, q)
    )
    return PropertyDriftResult(float(q[informative].min()) if informative else 1.0, props)


# --------------------------------------------------------------------------- difficulty


def _knn(reference: np.ndarray, queries: Sequence[np.ndarray],
         k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(Euclidean distances, reference indices), each (M, k), of each query's k nearest
    reference rows, for each query set (one index of ``reference`` serves them all).

    FAISS inner-product search in batches (:func:`splitaudit.neighbours.vector_knn_many`) on
    augmented vectors: ``[q, 1] . [r, -|r|^2 / 2] = -(|q - r|^2 - |q|^2) / 2`` ranks the
    reference rows exactly as the Euclidean distance does.
    """
    import faiss  # noqa: F401  (loaded before single_threaded(), which then limits it too)

    from splitaudit.neighbours import vector_knn_many

    ref = np.asarray(reference, np.float32)
    ref_aug = np.column_stack([ref, -0.5 * (ref.astype(np.float64) ** 2).sum(1)]).astype(np.float32)
    qrys = [np.asarray(q, np.float32) for q in queries]
    q_augs = [np.column_stack([q, np.ones(len(q), np.float32)]) for q in qrys]
    k = min(k, len(ref))
    # Exact: the augmented vectors are not unit-norm, which the approximate index assumes.
    with single_threaded():
        found = vector_knn_many(ref_aug, q_augs, k, min_score=-np.inf, mode="exact")
    out = []
    for qry, nb in zip(qrys, found):
        # vector_knn_many returns k rows per query, queries in order, neighbours in rank order.
        idx = nb.reference.reshape(len(qry), k)
        sim = nb.score.astype(np.float64).reshape(len(qry), k)
        sq = (qry.astype(np.float64) ** 2).sum(1)[:, None] - 2.0 * sim
        out.append((np.sqrt(np.maximum(sq, 0.0)), idx))
    return out


@dataclass(frozen=True)
class EasinessResult:
    """How much easier b (val) is than a (train), for one choice of b samples.

    Attributes
    ----------
    p_value : float
        Bonferroni over the two one-sided Mann-Whitney tests below (distance only: its p).
    effect : float
        The larger of the two Cliff's deltas (positive = b easier).
    distance_delta, distance_p : float
        Cliff's delta of nearest-neighbour Euclidean distance, b->a vs a->a leave-one-out
        (positive = b nearer to train), and its one-sided p-value.
    distance_b, distance_a : float
        Median nearest-neighbour distances.
    agreement_delta, agreement_p : float or None
        Cliff's delta and one-sided p of the per-sample k-NN label agreement (share of the k
        neighbours with the sample's label); None without labels.
    agreement_b, agreement_a : float or None
        Mean k-NN label agreement.
    accuracy_b, accuracy_a : float or None
        k-NN majority-vote accuracy.
    n_a, n_b : int
    """

    p_value: float
    effect: float
    distance_delta: float
    distance_p: float
    distance_b: float
    distance_a: float
    agreement_delta: float | None
    agreement_p: float | None
    agreement_b: float | None
    agreement_a: float | None
    accuracy_b: float | None
    accuracy_a: float | None
    n_a: int
    n_b: int


@dataclass(frozen=True)
class DifficultyResult:
    """Val-vs-train difficulty from the neighbour graph, with and without leaked samples.

    Attributes
    ----------
    all : EasinessResult
        Every b sample.
    without_leaks : EasinessResult or None
        b samples not flagged as leaked (None when none was flagged or too few remain).
    leak_share : float or None
        Share of ``all.effect`` explained by the leaks: ``1 - without / all`` clipped to
        [0, 1] (None without leaks or without a positive effect).
    per_class : tuple of dict
        ``{"label", "n_b", "n_a", "agreement_b", "agreement_a"}`` per class, largest gap first.
    easiest_b : tuple of int
        Indices into b of the samples nearest to train (leaks first, by construction).
    k : int
    """

    all: EasinessResult
    without_leaks: EasinessResult | None
    leak_share: float | None
    per_class: tuple[dict, ...]
    easiest_b: tuple[int, ...]
    k: int


def _easiness(dist_a: np.ndarray, dist_b: np.ndarray, agree_a: np.ndarray | None,
              agree_b: np.ndarray | None, acc_a: np.ndarray | None,
              acc_b: np.ndarray | None) -> EasinessResult:
    # Smaller distance = easier: test -d_b above -d_a.
    auc_d, p_d, _ = _mann_whitney(-dist_b, -dist_a)
    delta_d = 2 * auc_d - 1
    if agree_a is not None and agree_b is not None:
        auc_g, p_g, _ = _mann_whitney(agree_b, agree_a)
        delta_g: float | None = 2 * auc_g - 1
        p = min(1.0, 2 * min(p_d, p_g))
        effect = max(delta_d, delta_g)
        means = (float(agree_b.mean()), float(agree_a.mean()),
                 float(acc_b.mean()), float(acc_a.mean()))
    else:
        p_g, delta_g, p, effect = None, None, p_d, delta_d
        means = (None, None, None, None)
    return EasinessResult(
        p_value=float(p), effect=float(effect), distance_delta=float(delta_d),
        distance_p=float(p_d), distance_b=float(np.median(dist_b)),
        distance_a=float(np.median(dist_a)),
        agreement_delta=None if delta_g is None else float(delta_g),
        agreement_p=None if p_g is None else float(p_g),
        agreement_b=means[0], agreement_a=means[1], accuracy_b=means[2], accuracy_a=means[3],
        n_a=len(dist_a), n_b=len(dist_b),
    )


def difficulty_test(
    features_a: np.ndarray,
    features_b: np.ndarray,
    labels_a: Sequence | None = None,
    labels_b: Sequence | None = None,
    *,
    leaked_b: np.ndarray | None = None,
    keep_a: np.ndarray | None = None,
    k: int = 10,
    max_queries: int | None = 10000,
    seed: int = 0,
    evidence: int = 5,
) -> DifficultyResult:
    """Is b (val) easier than a (train)? Nearest-neighbour distance and k-NN label agreement.

    a is split at random into held-out queries (at most ``max_queries`` and half of a) and
    a reference set (the rest). Up to ``max_queries`` b samples and the held-out a samples are
    searched among the same reference set, so under the null (b and a drawn alike) their
    distances are independent and identically distributed and the one-sided Mann-Whitney
    tests (b easier) are exact; a leave-one-out search of a among a would not be (mutual
    nearest neighbours share a distance). Both the nearest-neighbour distance and the share of
    the k neighbours with the sample's label are tested; effects are Cliff's deltas. All
    searches use FAISS in batches.

    Parameters
    ----------
    features_a, features_b : numpy.ndarray
        (N_a, D) and (N_b, D) features, compared by Euclidean distance (for unit-norm
        embeddings, or their principal components, this ranks neighbours like the cosine).
    labels_a, labels_b : sequence, optional
        Class labels; without them only the distance test runs.
    leaked_b : numpy.ndarray, optional
        (N_b,) bool: b samples with a copy in a; the result is also given without them.
    keep_a : numpy.ndarray, optional
        (N_a,) bool: a samples that stay in the reference set (e.g. the train copies of leaked
        val samples, so the leaks show as near-zero distances).
    k : int
        Neighbours for label agreement.
    max_queries : int or None
        At most this many b queries and held-out a queries.
    seed : int
    evidence : int
        How many easiest b indices to return.

    Returns
    -------
    DifficultyResult
    """
    owner = "difficulty_test"
    k = _check_int(k, "k", owner, 1)
    a, b = _feature_pair(features_a, features_b, owner, 3, 2, ">= 3 rows in a and >= 2 in b")
    with_labels = labels_a is not None and labels_b is not None
    if with_labels and (len(labels_a) != len(a) or len(labels_b) != len(b)):
        raise invalid_param("labels_a", owner, "one label per row", (len(labels_a), len(labels_b)))
    leaked = np.zeros(len(b), bool) if leaked_b is None else np.asarray(leaked_b, bool)
    if leaked.shape != (len(b),):
        raise invalid_param("leaked_b", owner, f"a bool array of length {len(b)}", leaked.shape)
    keep = np.zeros(len(a), bool) if keep_a is None else np.asarray(keep_a, bool)
    if keep.shape != (len(a),):
        raise invalid_param("keep_a", owner, f"a bool array of length {len(a)}", keep.shape)
    rng = np.random.default_rng(seed)
    free = np.flatnonzero(~keep)
    if len(free) < 2:  # nearly every a sample is a leak source: held-out queries need some
        free = np.arange(len(a))
    n_qa = min(len(a) // 2, len(free), max_queries if max_queries is not None else len(a))
    qa = np.sort(rng.choice(free, n_qa, replace=False))
    ref = np.setdiff1d(np.arange(len(a)), qa)
    qb = subsample(len(b), max_queries, rng)
    k = min(k, len(ref))
    (dist_a, nb_a), (dist_b, nb_b) = _knn(a[ref], [a[qa], b[qb]], k)
    nb_a, nb_b = ref[nb_a], ref[nb_b]  # reference positions -> rows of a
    agree_a = agree_b = acc_a = acc_b = None
    if with_labels:
        classes = {c: i for i, c in enumerate(sorted({str(v) for v in (*labels_a, *labels_b)}))}
        ya = np.asarray([classes[str(v)] for v in labels_a], np.int64)
        yb = np.asarray([classes[str(v)] for v in labels_b], np.int64)
        agree_a = (ya[nb_a] == ya[qa][:, None]).mean(axis=1)
        agree_b = (ya[nb_b] == yb[qb][:, None]).mean(axis=1)

        def vote(nb: np.ndarray, y: np.ndarray) -> np.ndarray:
            counts = np.zeros((len(nb), len(classes)), np.int32)
            np.add.at(counts, (np.repeat(np.arange(len(nb)), nb.shape[1]), ya[nb].ravel()), 1)
            return (counts.argmax(axis=1) == y).astype(np.float64)

        acc_a, acc_b = vote(nb_a, ya[qa]), vote(nb_b, yb[qb])
    nn_a, nn_b = dist_a[:, 0], dist_b[:, 0]
    full = _easiness(nn_a, nn_b, agree_a, agree_b, acc_a, acc_b)
    clean = ~leaked[qb]
    without = None
    share = None
    if (~clean).any() and clean.sum() >= 2:
        without = _easiness(nn_a, nn_b[clean], agree_a,
                            None if agree_b is None else agree_b[clean], acc_a,
                            None if acc_b is None else acc_b[clean])
        if full.effect > 0:
            share = float(np.clip(1 - max(without.effect, 0.0) / full.effect, 0.0, 1.0))
    per_class: list[dict] = []
    if with_labels:
        names = sorted(classes, key=classes.get)
        ca, cb = ya[qa], yb[qb]
        for c, name in enumerate(names):
            ma, mb = ca == c, cb == c
            if ma.any() and mb.any():
                per_class.append({"label": name, "n_b": int(mb.sum()), "n_a": int(ma.sum()),
                                  "agreement_b": float(agree_b[mb].mean()),
                                  "agreement_a": float(agree_a[ma].mean())})
        per_class.sort(key=lambda d: -(d["agreement_b"] - d["agreement_a"]))
    easiest = qb[np.argsort(nn_b, kind="stable")[: max(int(evidence), 0)]]
    return DifficultyResult(full, without, share, tuple(per_class),
                            tuple(int(i) for i in easiest), k)


# --------------------------------------------------------------------------- ordering


@dataclass(frozen=True)
class OrderResult:
    """Would Keras' ``validation_split`` (the last fraction, taken before shuffling) be
    representative of these data in this order?

    Attributes
    ----------
    p_value : float
        Bonferroni over the component tests that ran.
    effect : float
        Largest component effect: Cramer's V of head vs tail labels, excess adjacency of equal
        labels (0 = random order, 1 = fully grouped), |Spearman rho| of a value vs position.
    effect_name : str
        Which component gave ``effect``.
    label_shift : LabelShiftResult or None
        Head (first ``1 - validation_split``) vs tail labels.
    adjacency_excess, adjacency_p : float or None
        Grouping of equal labels next to each other, and its permutation-normal p-value.
    trends : tuple of (int, float, float)
        (value column, Spearman rho vs position, p-value).
    hint : str
        One-line fix.
    """

    p_value: float
    effect: float
    effect_name: str
    label_shift: LabelShiftResult | None
    adjacency_excess: float | None
    adjacency_p: float | None
    trends: tuple[tuple[int, float, float], ...]
    hint: str


def order_test(
    labels: Sequence | None,
    values: np.ndarray | None = None,
    validation_split: float = 0.2,
    *,
    permutations: int = 200,
    seed: int = 0,
) -> OrderResult:
    """Detect ordered data (sorted or grouped labels, a trend) that would make the last
    ``validation_split`` fraction an unrepresentative validation set.

    Parameters
    ----------
    labels : sequence or None
        Labels in input order (class ids or names; one-hot rows are reduced by argmax).
    values : numpy.ndarray, optional
        (N,) or (N, P) per-sample values (e.g. brightness, a timestamp) in input order.
    validation_split : float
        Fraction Keras holds out from the end, in (0, 1).
    permutations : int
        Random orders used for the adjacency null.
    seed : int

    Returns
    -------
    OrderResult
    """
    owner = "order_test"
    vs = validation_split
    if not isinstance(vs, (int, float)) or isinstance(vs, bool) or not 0.0 < vs < 1.0:
        raise invalid_param("validation_split", owner, "a float in (0, 1)", vs)
    permutations = _check_int(permutations, "permutations", owner, 10)
    if labels is None and values is None:
        raise invalid_param("labels", owner, "labels or values (not both None)", None)
    from scipy.stats import norm, spearmanr

    rng = np.random.default_rng(seed)
    ps: list[float] = []
    effects: list[tuple[float, str]] = []
    shift = adj = adj_p = None
    n = None
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim == 2:
            y = y.argmax(axis=1)
        y = np.asarray([str(v) for v in y.ravel()])
        n = len(y)
        # Keras: split_at = int(n * (1 - validation_split)); train = [:split_at].
        cut = int(n * (1 - vs))
        if 0 < cut < n:
            shift = label_shift_test(y[:cut], y[cut:])
            ps.append(shift.p_value)
            effects.append((shift.cramers_v, "cramers_v_head_tail"))
        _, codes = np.unique(y, return_inverse=True)
        if n >= 3 and codes.max() > 0:
            same = float((codes[1:] == codes[:-1]).sum())
            null = np.empty(permutations)
            for i in range(permutations):
                c = rng.permutation(codes)
                null[i] = (c[1:] == c[:-1]).sum()
            counts = np.bincount(codes)
            expected = (n - 1) * float((counts * (counts - 1)).sum()) / (n * (n - 1))
            sd = float(null.std(ddof=1))
            z = (same - expected) / sd if sd > 0 else (math.inf if same > expected else 0.0)
            adj_p = float(norm.sf(z))
            adj = float((same - expected) / max(n - 1 - expected, 1e-12))
            ps.append(adj_p)
            effects.append((adj, "adjacency_excess"))
    trends = []
    if values is not None:
        v = _as_2d(values, "values", owner).astype(np.float64)
        if n is not None and len(v) != n:
            raise invalid_param("values", owner, f"{n} rows (one per label)", len(v))
        pos = np.arange(len(v))
        for j in range(v.shape[1]):
            col = v[:, j]
            ok = np.isfinite(col)
            if ok.sum() >= 3 and np.ptp(col[ok]) > 0:
                r = spearmanr(pos[ok], col[ok])
                rho, p = float(r.statistic), float(r.pvalue)
                trends.append((j, rho, p))
                ps.append(p)
                effects.append((abs(rho), f"spearman_rho[{j}]"))
    p_value = min(1.0, len(ps) * min(ps)) if ps else 1.0
    effect, name = max(effects, default=(0.0, "none"))
    return OrderResult(float(p_value), float(effect), name, shift, adj, adj_p, tuple(trends),
                       SHUFFLE_HINT)
