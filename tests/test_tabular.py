"""splitaudit.audit() on 2-D tabular arrays: exact duplicate rows and k-NN near duplicates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitaudit import InvalidInputError, LeakageError, audit
from splitaudit.render.text import render_text
from splitaudit.tabular import canonical_rows, row_digests, typical_nn_distance


def _leaks(report, kinds=("exact", "near")) -> dict[tuple[int, int], str]:
    return {(p.query.index, p.reference.index): p.match
            for p in report.cross_split_duplicates if p.match in kinds}


@pytest.fixture(scope="module")
def leaked_table():
    """train 3000 x 10 features, val 600 with planted exact rows and jittered rows."""
    rng = np.random.default_rng(0)
    scales = np.array([1, 10, 100, 0.01, 1, 1, 5, 2, 1, 1000.0])  # standardisation matters
    train = rng.normal(size=(3000, 10)) * scales
    val = rng.normal(size=(600, 10)) * scales
    planted = {}
    for v, t in [(3, 10), (77, 2048), (599, 0)]:
        val[v] = train[t]
        planted[(v, t)] = "exact"
    for v, t in [(5, 11), (150, 1500), (420, 2999)]:
        val[v] = train[t] + rng.normal(scale=0.01, size=10) * scales  # 1% jitter per feature
        planted[(v, t)] = "near"
    return train, val, planted


def test_planted_rows_found_with_their_indices(leaked_table):
    train, val, planted = leaked_table
    report = audit(train, val)
    assert _leaks(report) == planted
    assert report.layout == "tabular"
    assert report.verdict.status == "leaked"
    exact = next(p for p in report.cross_split_duplicates if p.query.index == 3)
    assert (exact.evidence, exact.ncc, exact.hamming) == ("same row", 1.0, 0)
    near = next(p for p in report.cross_split_duplicates if p.query.index == 5)
    assert near.evidence.startswith("distance ") and "x typical" in near.evidence
    assert 0.9 < near.ncc < 1.0 and near.hamming == 10  # every feature was jittered
    assert near.cosine is None
    with pytest.raises(LeakageError, match="6 of 600 val samples"):
        report.raise_for_leakage()


def test_clean_random_split_not_flagged():
    rng = np.random.default_rng(1)
    report = audit(rng.normal(size=(3000, 10)), rng.normal(size=(600, 10)),
                   test=rng.normal(size=(400, 10)))
    assert report.cross_split_duplicates == []
    assert report.within_split_duplicates == []
    assert "leaked" not in report.verdict.statuses
    report.raise_for_leakage()


def test_canonical_values_and_dtypes_count_as_the_same_row():
    rng = np.random.default_rng(2)
    train = rng.integers(0, 1000, size=(500, 6)).astype(np.float64)
    train[7, 2] = 0.0
    train[9, 4] = np.nan
    val = rng.integers(0, 1000, size=(100, 6)).astype(np.float64) + 0.5
    val[0] = train[7]
    val[0, 2] = -0.0             # -0.0 == 0.0
    val[1] = train[9]            # NaN in the same place
    val[2] = train[20]
    report = audit(train, val.astype(np.float32))
    assert _leaks(report, ("exact",)) == {(0, 7): "exact", (1, 9): "exact", (2, 20): "exact"}
    # Integer train rows and their float copies are the same rows.
    ints = rng.integers(0, 50, size=(300, 5))
    report = audit(ints, np.vstack([ints[[4, 8]].astype(np.float64), rng.random((20, 5)) + 100]))
    assert _leaks(report, ("exact",)) == {(0, 4): "exact", (1, 8): "exact"}


def test_within_split_duplicates_and_labels():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(1000, 8))
    train[500] = train[12]
    y_train = rng.integers(0, 3, 1000)
    val = rng.normal(size=(200, 8))
    val[4] = train[30]
    y_val = rng.integers(0, 3, 200)
    y_val[4] = (y_train[30] + 1) % 3  # copied row, other label
    report = audit((train, y_train), (val, y_val))
    within = [(p.query.index, p.reference.index, p.match) for p in report.within_split_duplicates]
    assert within == [(500, 12, "exact")]
    assert [(p.query.index, p.reference.index) for p in report.label_conflicts] == [(4, 30)]
    assert report.checks["label_conflicts"].status == "warn"


def test_every_check_runs_or_skips_cleanly_on_tabular_data(leaked_table):
    train, val, _ = leaked_table
    report = audit(train, val)
    for cid, result in report.checks.items():
        assert result.status in {"pass", "warn", "fail", "skipped"}, cid
    if "property_drift" in report.checks:  # image properties do not exist for rows
        assert report.checks["property_drift"].status == "skipped"
    assert report.checks["unreadable_files"].status == "pass"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["cross_split_duplicates"][0]["query"]["index"] is not None
    assert "val[3]" in render_text(report)


def test_shift_checks_see_standardised_features():
    """A shifted tabular val split (mean moved by one train std) is visible to shift checks."""
    rng = np.random.default_rng(4)
    train = rng.normal(size=(1500, 5)) * [1, 100, 1, 1, 1]
    val = rng.normal(size=(500, 5)) * [1, 100, 1, 1, 1] + [0, 100, 0, 0, 0]
    report = audit(train, val)
    if "domain_classifier" not in report.checks:
        pytest.skip("shift checks are not registered")
    assert report.checks["domain_classifier"].status == "fail"
    assert "shifted" in report.verdict.statuses
    assert report.cross_split_duplicates == [] or all(
        p.match == "similar" for p in report.cross_split_duplicates)


def test_pandas_dataframes(leaked_table):
    pd = pytest.importorskip("pandas")
    train, val, planted = leaked_table
    report = audit(pd.DataFrame(train), pd.DataFrame(val))
    assert _leaks(report) == planted


def test_typical_distance_and_digests_are_pure():
    rows = canonical_rows(np.array([[0.0, np.nan], [-0.0, np.nan], [1.0, 2.0]]))
    d = row_digests(rows)
    assert (d[0] == d[1]).all() and not (d[0] == d[2]).all()
    grid = np.array([[i, j] for i in range(10) for j in range(10)], np.float32)
    assert typical_nn_distance(grid) == pytest.approx(1.0)
    assert typical_nn_distance(np.zeros((5, 3), np.float32)) == 0.0


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        (np.zeros((10, 4)), np.zeros((5, 3)),
         "The 'val' parameter of audit must be tabular rows with as many columns as train (4). "
         "Got 3 columns instead."),
        (np.zeros((10, 4)), np.zeros((5, 8, 8)), "must all be tabular rows (N, D) or all images"),
        (np.zeros((0, 4)), np.zeros((5, 4)), "The 'train' parameter of audit must be"),
        (np.array([["a", "b"]]), np.zeros((5, 2)), "The 'train' parameter of audit must be"),
    ],
)
def test_bad_tabular_inputs(train, val, message):
    with pytest.raises(InvalidInputError) as info:
        audit(train, val)
    assert message in str(info.value)
