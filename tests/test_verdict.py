"""The verdict: leak findings and shift checks combined, Holm-corrected, with exit codes."""

from __future__ import annotations

import json

import pytest

from splitaudit.cli import main
from splitaudit.config import AuditConfig
from splitaudit.errors import InvalidInputError
from splitaudit.report import (
    CheckResult,
    SplitPairSummary,
    decide_verdict,
    holm,
    parse_fail_on,
    shift_check_ids,
)


def _shift(cid: str, p: float, effect: float, threshold: float = 0.1) -> CheckResult:
    status = "fail" if p < 0.05 and effect >= threshold else ("warn" if p < 0.05 else "pass")
    return CheckResult(cid, status, f"{cid} statistic", {
        "p_value": p, "effect_size": effect, "effect_threshold": threshold, "alpha": 0.05})


def _clean_summary() -> list[SplitPairSummary]:
    return [SplitPairSummary("val", "train", 100, 0, 0, 0)]


def test_shift_check_ids_are_registered_with_their_status():
    from splitaudit.checks import REGISTRY

    ids = shift_check_ids()
    assert {"domain_classifier", "embedding_mmd", "label_shift", "property_drift", "difficulty"} <= set(ids)
    assert REGISTRY["difficulty"].flags == "easier"
    assert all(REGISTRY[c].flags == "shifted" for c in ids if c != "difficulty")


def test_holm_matches_the_step_down_definition():
    p = [0.001, 0.02, 0.03, 0.5]
    # sorted: 4*0.001, 3*0.02, 2*0.03 (kept monotone), 1*0.5
    assert holm(p) == pytest.approx([0.004, 0.06, 0.06, 0.5])
    assert holm([]) == []


def test_no_findings_is_ok_with_a_reason_per_part():
    checks = {"label_shift": _shift("label_shift", 0.4, 0.01), "difficulty": _shift("difficulty", 0.7, 0.0)}
    v = decide_verdict(_clean_summary(), [], fail_on="near", max_leak_rate=0.0, checks=checks)
    assert v.status == "ok" and v.statuses == ["ok"] and v.exit_code == 0
    assert any("no shift check" in r for r in v.reasons)
    assert [t.check for t in v.shift_tests] == ["label_shift", "difficulty"]


def test_shifted_and_easier_are_ordered_by_severity_and_cite_the_statistic():
    checks = {
        "difficulty": _shift("difficulty", 1e-8, 0.4),
        "domain_classifier": _shift("domain_classifier", 1e-6, 0.3),
        "label_shift": _shift("label_shift", 0.6, 0.02),
    }
    leaked = [SplitPairSummary("val", "train", 100, 3, 2, 0)]
    v = decide_verdict(leaked, [], fail_on="near", max_leak_rate=0.0, checks=checks)
    assert v.statuses == ["leaked", "shifted", "easier"] and v.status == "leaked"
    shifted = [r for r in v.reasons if r.startswith("shifted: domain_classifier")]
    assert shifted and "Holm-adjusted p" in shifted[0] and "effect 0.3" in shifted[0]
    d = v.to_dict()
    assert d["statuses"] == ["leaked", "shifted", "easier"]
    assert {t["check"]: t["holds"] for t in d["shift_tests"]} == {
        "difficulty": True, "domain_classifier": True, "label_shift": False}


def test_a_significant_but_trivial_difference_does_not_hold():
    checks = {"property_drift": _shift("property_drift", 1e-12, 0.02, threshold=0.1)}
    v = decide_verdict(_clean_summary(), [], fail_on="near", max_leak_rate=0.0, checks=checks)
    assert v.status == "ok"


def test_holm_correction_can_clear_a_borderline_check():
    # Alone, p = 0.03 holds at 0.05; among three tests its Holm-adjusted p is 0.09.
    alone = {"embedding_mmd": _shift("embedding_mmd", 0.03, 1.0)}
    assert decide_verdict(_clean_summary(), [], fail_on="near", max_leak_rate=0.0, checks=alone).status == "shifted"
    three = dict(alone, label_shift=_shift("label_shift", 0.5, 0.0), difficulty=_shift("difficulty", 0.9, 0.0))
    assert decide_verdict(_clean_summary(), [], fail_on="near", max_leak_rate=0.0, checks=three).status == "ok"


def test_skipped_checks_do_not_count_towards_the_correction():
    checks = {"embedding_mmd": _shift("embedding_mmd", 0.03, 1.0),
              "label_shift": CheckResult("label_shift", "skipped", "no labels", {})}
    v = decide_verdict(_clean_summary(), [], fail_on="near", max_leak_rate=0.0, checks=checks)
    assert v.status == "shifted" and len(v.shift_tests) == 1


@pytest.mark.parametrize("extras, code", [((), 0), (("shifted",), 1), (("easier",), 0),
                                          (("domain_classifier",), 1), (("label_shift",), 0)])
def test_exit_code_for_shift_findings_only_when_asked(extras, code):
    checks = {"domain_classifier": _shift("domain_classifier", 1e-9, 0.5),
              "label_shift": _shift("label_shift", 0.8, 0.0)}
    v = decide_verdict(_clean_summary(), [], fail_on="near", max_leak_rate=0.0, checks=checks,
                       fail_on_findings=extras)
    assert v.status == "shifted" and v.exit_code == code


def test_parse_fail_on():
    assert parse_fail_on("near") == ("near", ())
    assert parse_fail_on("exact, shifted,easier") == ("exact", ("shifted", "easier"))
    assert parse_fail_on(["never", "difficulty"]) == ("never", ("difficulty",))
    for bad in ("near,exact", "", "bogus", "near,nonsense"):
        with pytest.raises(InvalidInputError, match="'fail_on' parameter of scan"):
            parse_fail_on(bad)
    c = AuditConfig(fail_on="similar,easier")
    assert (c.fail_on, c.fail_on_findings) == ("similar", ("easier",))


def test_project_config_accepts_shift_settings_and_rejects_unknown_ones(tmp_path, clean_dataset, capsys):
    good = tmp_path / "good.toml"
    good.write_text(f'[tool.splitaudit]\ndataset = "{clean_dataset}"\nfail_on = ["near", "shifted"]\n'
                    'alpha = 0.01\nembeddings = false\n')
    code = main(["scan", "--config", str(good), "--format", "json", "--no-cache", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"]["fail_on"] == "near,shifted" and out["verdict"]["alpha"] == 0.01
    assert code == out["verdict"]["exit_code"]
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[tool.splitaudit]\ndataset = "{clean_dataset}"\n[tool.splitaudit.shift]\nnot_a_setting = 1\n')
    assert main(["scan", "--config", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not_a_setting" in err and len(err.strip().splitlines()) == 1


def test_an_unchanged_rescan_reuses_the_shift_statistics(tmp_path, monkeypatch):
    import shutil

    from splitaudit.api import scan
    from splitaudit.checks import REGISTRY
    from splitaudit.checks.shift import ShiftConfig
    from splitaudit.synth import make_dataset

    root = tmp_path / "data"
    make_dataset(root, classes=3, train_per_class=15, val_per_class=10, size=64, seed=5,
                 brightness={"val": 1.4})
    config = AuditConfig(embeddings=False, cache=True, cache_dir=str(tmp_path / "cache"))
    first = scan(root, config=config)
    assert "shifted" in first.verdict.statuses
    calls = []
    original = REGISTRY["property_drift"].run
    monkeypatch.setattr(REGISTRY["property_drift"], "run",
                        lambda self, ctx: calls.append(1) or original(self, ctx))
    again = scan(root, config=config)
    assert calls == [] and again.to_dict()["checks"] == first.to_dict()["checks"]
    assert again.verdict == first.verdict
    # A run of other checks on the same state (what `splitaudit check` does) keeps them.
    scan(root, config=AuditConfig(embeddings=False, cache=True, cache_dir=str(tmp_path / "cache"),
                                  checks=("cross_split_duplicates",)))
    assert scan(root, config=config).checks == first.checks and calls == []
    # Other shift settings or changed files: computed again.
    stricter = AuditConfig(embeddings=False, cache=True, cache_dir=str(tmp_path / "cache"),
                           shift=ShiftConfig(alpha=0.01))
    scan(root, config=stricter)
    assert len(calls) == 1
    victim = next((root / "val").rglob("*.jpg"))
    shutil.copyfile(next((root / "train").rglob("*.jpg")), victim)
    changed = scan(root, config=config)
    assert len(calls) == 2 and changed.checks["cross_split_duplicates"].status == "fail"
