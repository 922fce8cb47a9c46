"""The two-sample statistics of splitaudit.stats on synthetic arrays: planted effects are found
(with the right samples as evidence) and same-distribution samples are not flagged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import kstest

from splitaudit import stats
from splitaudit.errors import InvalidInputError


def _clusters(rng: np.random.Generator, n: int, classes: int = 4, dim: int = 16, spread: float = 1.0):
    """Labelled Gaussian clusters: features (n, dim), labels (n,), class centres."""
    centres = rng.normal(0, 2.0, (classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(0, spread, (n, dim)), y, centres


# --------------------------------------------------------------------------- domain_auc


def test_domain_auc_finds_shift_and_the_shifted_samples():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 10))
    b = rng.normal(size=(200, 10))
    b[:40, 3] += 4.0  # 40 val samples from elsewhere
    res = stats.domain_auc(a, b, seed=1)
    assert res.p_value < 1e-4
    assert res.ci_low < res.auc < res.ci_high
    assert res.auc > 0.6 and res.ci_low > 0.5
    assert len(res.fold_aucs) == 2 and res.n_a == 400 and res.n_b == 200
    # The most val-like val samples are the planted ones.
    assert set(res.most_b_like) <= set(range(40))


def test_domain_auc_same_distribution_not_flagged_and_subsamples():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3000, 8)), rng.normal(size=(500, 8))
    res = stats.domain_auc(a, b, seed=0, max_samples=1000)
    assert res.p_value > 0.05
    assert abs(res.auc - 0.5) < 0.06
    assert res.n_a == 1000 and res.n_b == 500
    assert all(0 <= i < 3000 for i in res.most_a_like)


def test_domain_auc_null_false_positive_rate():
    rng = np.random.default_rng(2)
    p = [stats.domain_auc(rng.normal(size=(120, 5)), rng.normal(size=(60, 5)), seed=i).p_value
         for i in range(100)]
    assert np.mean(np.asarray(p) < 0.05) < 0.1


def test_domain_auc_newton_fit_matches_a_converged_lbfgs_fit(monkeypatch):
    """The Newton solver minimises the objective lbfgs did: on the same folds, lbfgs run to a
    tight tolerance gives the same held-out AUC and p-value."""
    import sklearn.linear_model

    rng = np.random.default_rng(8)
    a = rng.normal(size=(1500, 40))
    b = rng.normal(size=(700, 40))
    b[:, :3] += 0.15  # a small planted shift
    newton = stats.domain_auc(a, b, seed=3)
    lbfgs_class = sklearn.linear_model.LogisticRegression

    def converged_lbfgs(**kwargs):
        return lbfgs_class(**{**kwargs, "solver": "lbfgs", "tol": 1e-10, "max_iter": 10_000})

    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", converged_lbfgs)
    reference = stats.domain_auc(a, b, seed=3)
    assert newton.p_value < 1e-3
    np.testing.assert_allclose(newton.fold_aucs, reference.fold_aucs, atol=1e-6)
    assert newton.p_value == pytest.approx(reference.p_value, rel=1e-4)


def test_domain_auc_separable_splits_fit_without_warnings():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(300, 20)), rng.normal(size=(150, 20))
    b[:, 0] += 50.0  # perfectly separable: the L2 penalty still bounds the optimum
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = stats.domain_auc(a, b, seed=0)
    assert res.auc == 1.0 and res.p_value < 1e-20


def test_domain_auc_null_p_values_are_uniform_with_many_features():
    # The scan gives the classifier ~75 standardized columns: p stays uniform under the null.
    rng = np.random.default_rng(10)
    p = [stats.domain_auc(rng.normal(size=(300, 75)), rng.normal(size=(150, 75)), seed=i).p_value
         for i in range(60)]
    assert kstest(p, "uniform").pvalue > 0.01
    assert np.mean(np.asarray(p) < 0.05) < 0.15


def test_domain_auc_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="'folds' parameter of domain_auc must be an int >= 2"):
        stats.domain_auc(np.zeros((10, 2)), np.zeros((10, 2)), folds=1)
    with pytest.raises(InvalidInputError, match="features_b"):
        stats.domain_auc(np.zeros((10, 2)), np.zeros((10, 3)))


# --------------------------------------------------------------------------- mmd_test


def test_mmd_detects_distribution_change_with_same_marginals():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(600, 4))
    # Same N(0, 1) marginals, but two columns correlated: no per-column test sees it.
    z = rng.normal(size=(300, 4))
    b = z.copy()
    b[:, 1] = 0.95 * z[:, 0] + np.sqrt(1 - 0.95 ** 2) * z[:, 1]
    res = stats.mmd_test(a, b, seed=0)
    assert res.p_value < 1e-4 and res.p_permutation < 0.01
    assert res.mmd2 > 0 and res.bandwidth > 0
    # A narrower kernel than the median heuristic can be given explicitly.
    assert stats.mmd_test(a, b, seed=0, bandwidth=1.0).bandwidth == 1.0


def test_mmd_null_p_values_are_not_small():
    rng = np.random.default_rng(4)
    p = np.array([stats.mmd_test(rng.normal(size=(150, 6)), rng.normal(size=(80, 6)),
                                 permutations=100, seed=i).p_value for i in range(150)])
    assert np.mean(p < 0.05) < 0.1
    assert 0.35 < np.median(p) < 0.65  # roughly uniform, not piled up at 0 or 1


def test_mmd_subsamples_large_inputs():
    rng = np.random.default_rng(5)
    res = stats.mmd_test(rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3)), max_samples=2000)
    assert (res.n_a, res.n_b) == (2000, 2000)
    assert res.p_value > 0.01


# --------------------------------------------------------------------------- label_shift_test


def test_label_shift_planted_prior_shift():
    rng = np.random.default_rng(6)
    la = rng.choice(list("abcd"), 4000)
    lb = rng.choice(list("abcde"), 1000, p=[0.4, 0.2, 0.2, 0.15, 0.05])
    res = stats.label_shift_test(la, lb)
    assert res.p_value < 1e-10
    assert res.cramers_v > 0.1
    assert res.only_b == ("e",) and res.only_a == ()
    assert res.imbalance_a == pytest.approx(max(res.counts_a.values()) / min(
        v for v in res.counts_a.values() if v), rel=1e-9) or res.imbalance_a == np.inf
    assert res.counts_b["e"] > 0 and res.counts_a["e"] == 0


def test_label_shift_null_false_positive_rate():
    rng = np.random.default_rng(7)
    p = [stats.label_shift_test(rng.integers(0, 5, 500), rng.integers(0, 5, 150)).p_value
         for _ in range(200)]
    assert np.mean(np.asarray(p) < 0.05) < 0.1


def test_label_shift_single_class_and_empty():
    res = stats.label_shift_test(["x"] * 10, ["x"] * 5)
    assert res.p_value == 1.0 and res.cramers_v == 0.0
    with pytest.raises(InvalidInputError, match="labels_b"):
        stats.label_shift_test(["x"], [])


# --------------------------------------------------------------------------- property_drift_test


def test_property_drift_flags_the_changed_property_only():
    rng = np.random.default_rng(8)
    names = ["brightness", "contrast", "format"]
    a = np.column_stack([rng.normal(0.5, 0.1, 2000), rng.normal(0.2, 0.05, 2000),
                         rng.choice([0.0, 1.0], 2000, p=[0.9, 0.1])])
    b = np.column_stack([rng.normal(0.56, 0.1, 800), rng.normal(0.2, 0.05, 800),
                         rng.choice([0.0, 1.0], 800, p=[0.9, 0.1])])
    b[:50, 1] = np.nan  # NaN-aware: missing values are left out
    res = stats.property_drift_test(a, b, names, {"format": ("JPEG", "PNG")})
    by = {p.name: p for p in res.properties}
    assert by["brightness"].q_value < 1e-6
    assert by["brightness"].effect == pytest.approx(0.06 / 0.1, abs=0.15)
    assert by["contrast"].q_value > 0.05 and by["contrast"].n_b == 750
    assert by["contrast"].missing_b == pytest.approx(50 / 800)
    assert by["format"].kind == "categorical" and by["format"].effect_name == "cramers_v"
    assert [p.name for p in res.significant(0.05)] == ["brightness"]
    assert res.p_value == pytest.approx(by["brightness"].q_value)


def test_property_drift_tiny_difference_in_big_samples_has_tiny_effect():
    rng = np.random.default_rng(9)
    a = rng.normal(0.0, 1.0, (200000, 1))
    b = rng.normal(0.03, 1.0, (100000, 1))
    res = stats.property_drift_test(a, b, ["brightness"])
    assert res.p_value < 1e-6  # significant...
    assert res.properties[0].effect < 0.05  # ...but trivially small


def test_property_drift_null_false_positive_rate():
    rng = np.random.default_rng(10)
    p = [stats.property_drift_test(rng.normal(size=(300, 4)), rng.normal(size=(100, 4)),
                                   list("wxyz")).p_value for _ in range(200)]
    assert np.mean(np.asarray(p) < 0.05) < 0.1


def test_benjamini_hochberg_matches_hand_computation():
    q = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


# --------------------------------------------------------------------------- difficulty_test


def test_difficulty_prototypical_val_is_easier():
    rng = np.random.default_rng(11)
    x, y, centres = _clusters(rng, 3000, spread=1.5)
    dist = np.linalg.norm(x - centres[y], axis=1)
    order = np.argsort(dist)
    val = order[:400]  # the most prototypical samples (closest to their class centre)
    train = order[400:]
    res = stats.difficulty_test(x[train], x[val], y[train], y[val], k=10, seed=0)
    assert res.all.p_value < 1e-6
    assert res.all.effect > 0.2
    assert res.all.agreement_b > res.all.agreement_a
    assert res.without_leaks is None and res.leak_share is None
    assert {c["label"] for c in res.per_class} == {"0", "1", "2", "3"}


def test_difficulty_random_split_is_not_easier():
    rng = np.random.default_rng(12)
    x, y, _ = _clusters(rng, 2000)
    perm = rng.permutation(2000)
    tr, va = perm[:1500], perm[1500:]
    res = stats.difficulty_test(x[tr], x[va], y[tr], y[va], seed=3)
    assert res.all.p_value > 0.05
    assert abs(res.all.distance_delta) < 0.1


def test_difficulty_null_false_positive_rate():
    rng = np.random.default_rng(13)
    p = []
    for i in range(100):
        x, y, _ = _clusters(rng, 240, dim=6)
        p.append(stats.difficulty_test(x[:180], x[180:], y[:180], y[180:], k=5, seed=i).all.p_value)
    assert np.mean(np.asarray(p) < 0.05) < 0.1


def test_difficulty_leaks_explain_the_easiness():
    rng = np.random.default_rng(14)
    x, y, _ = _clusters(rng, 1500)
    tr, va = np.arange(1200), np.arange(1200, 1500)
    # 60 val samples are copies (tiny noise) of train samples.
    src = rng.choice(tr, 60, replace=False)
    xv = x[va].copy()
    yv = y[va].copy()
    xv[:60] = x[src] + rng.normal(0, 1e-3, (60, x.shape[1]))
    yv[:60] = y[src]
    leaked = np.zeros(300, bool)
    leaked[:60] = True
    keep = np.isin(tr, src)
    res = stats.difficulty_test(x[tr], xv, y[tr], yv, leaked_b=leaked, keep_a=keep, seed=0)
    assert res.all.p_value < 1e-4 and res.all.distance_delta > 0.15
    assert set(res.easiest_b) <= set(range(60))  # the copies are nearest to train
    assert res.without_leaks is not None and res.without_leaks.n_b == 240
    assert res.without_leaks.p_value > 0.01
    assert res.leak_share is not None and res.leak_share > 0.6


def test_difficulty_without_labels_uses_distance_only():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(300, 5))
    res = stats.difficulty_test(x[:200], x[200:] * 0.5)  # val concentrated: nearer to train
    assert res.all.agreement_p is None and res.all.agreement_b is None
    assert res.all.p_value == res.all.distance_p < 1e-3


def test_difficulty_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="'k' parameter of difficulty_test"):
        stats.difficulty_test(np.zeros((10, 2)), np.zeros((5, 2)), k=0)
    with pytest.raises(InvalidInputError, match="leaked_b"):
        stats.difficulty_test(np.zeros((10, 2)), np.zeros((5, 2)), leaked_b=np.zeros(3, bool))


# --------------------------------------------------------------------------- order_test


def test_order_test_sorted_labels_flagged_with_hint():
    y = np.repeat(np.arange(5), 200)  # sorted by label, as many datasets are stored
    res = stats.order_test(y, validation_split=0.2)
    assert res.p_value < 1e-10
    assert res.effect > 0.9
    assert res.label_shift is not None and res.label_shift.only_a == ("0", "1", "2", "3")
    assert "np.random.permutation" in res.hint


def test_order_test_grouped_but_balanced_labels_flagged_by_adjacency():
    # Labels in runs of 10 cycling through the classes: head and tail have the same class
    # frequencies, yet the order is far from random.
    y = np.tile(np.repeat(np.arange(4), 10), 25)
    res = stats.order_test(y, validation_split=0.2)
    assert res.label_shift.p_value > 0.5
    assert res.adjacency_p < 1e-10 and res.adjacency_excess > 0.5
    assert res.effect_name == "adjacency_excess"


def test_order_test_shuffled_data_and_value_trend():
    rng = np.random.default_rng(16)
    y = rng.integers(0, 5, 1000)
    res = stats.order_test(y, validation_split=0.2, seed=0)
    assert res.p_value > 0.05
    trend = np.linspace(0, 1, 1000) + rng.normal(0, 0.2, 1000)  # e.g. capture time
    res = stats.order_test(y, trend, validation_split=0.2)
    assert res.p_value < 1e-10 and res.trends[0][1] > 0.5
    assert res.effect_name == "spearman_rho[0]"


def test_order_test_one_hot_labels_and_bad_split():
    onehot = np.eye(3)[np.repeat(np.arange(3), 50)]
    assert stats.order_test(onehot).p_value < 1e-6
    with pytest.raises(InvalidInputError,
                       match=r"'validation_split' parameter of order_test must be a float in \(0, 1\)"):
        stats.order_test([0, 1], validation_split=1.5)


def test_reduce_features_keeps_narrow_blocks_and_reduces_wide_ones():
    rng = np.random.default_rng(17)
    x = stats.reduce_features([rng.normal(size=(300, 200)), None, rng.normal(size=(300, 3))],
                              n_components=16)
    assert x.shape == (300, 19) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)


def test_knn_searches_several_query_sets_in_one_index_exactly():
    rng = np.random.default_rng(18)
    ref = rng.normal(size=(500, 12))
    queries = [rng.normal(size=(70, 12)), rng.normal(size=(40, 12))]
    for q, (dist, idx) in zip(queries, stats._knn(ref, queries, 5)):
        brute = np.linalg.norm(q[:, None, :] - ref[None, :, :], axis=2)
        np.testing.assert_array_equal(idx, np.argsort(brute, axis=1)[:, :5])
        np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :5], rtol=1e-4, atol=1e-4)


def test_single_threaded_limits_blas_and_openmp_inside_the_block_only():
    from threadpoolctl import threadpool_info

    def threads() -> dict[str, int]:
        return {i["filepath"]: i["num_threads"] for i in threadpool_info()}

    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    before = threads()
    with stats.single_threaded():
        assert set(threads().values()) == {1}
    assert threads() == before
