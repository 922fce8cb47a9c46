"""`splitaudit check` / `splitaudit baseline` and the [tool.splitaudit] configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from splitaudit.baseline import Baseline, Finding, compare, load_baseline
from splitaudit.cli import main
from splitaudit.errors import InvalidInputError
from splitaudit.project import KNOWN_KEYS, find_config, load_config


@pytest.fixture()
def project(tmp_path, clean_dataset, monkeypatch) -> Path:
    """A project folder holding a clean dataset in data/; the working directory."""
    shutil.copytree(clean_dataset, tmp_path / "data")
    (tmp_path / ".git").mkdir()  # the repository root: config lookup stops here
    monkeypatch.chdir(tmp_path)
    return tmp_path


def leak(project: Path, name: str = "copied.jpg", cls: str = "class_1", index: int = 2) -> tuple[str, str]:
    src = sorted((project / "data" / "train" / cls).glob("*.jpg"))[index]
    dst = project / "data" / "val" / cls / name
    shutil.copyfile(src, dst)
    return dst.relative_to(project).as_posix(), src.relative_to(project).as_posix()


def check(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["check", *args])
    cap = capsys.readouterr()
    return code, [line for line in cap.out.splitlines() if line], cap.err


def test_check_fails_on_a_new_leak_with_one_line_naming_both_files(project, capsys):
    code, lines, err = check(capsys, "data")
    assert code == 0 and lines == [] and "OK" in err
    q, r = leak(project)
    code, lines, err = check(capsys, "data")
    assert code == 1
    assert lines == [f"LEAK exact {q} duplicates {r} (same bytes)"]
    assert "splitaudit baseline data" in err


def test_baseline_accepts_current_findings_and_check_reports_stale_entries(project, capsys):
    q, r = leak(project)
    assert main(["baseline", "data"]) == 0
    path = project / "data" / "splitaudit-baseline.json"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1
    assert doc["leaks"] == [{"query": q.removeprefix("data/"), "reference": r.removeprefix("data/"), "match": "exact"}]
    assert doc["unreadable"] == [] and doc["duplicates"] == []
    assert path.read_text().endswith("\n")
    capsys.readouterr()
    code, lines, _ = check(capsys, "data")
    assert code == 0 and lines == []
    # A second leak is new; the first stays accepted.
    q2, r2 = leak(project, "second.png", "class_0", 1)
    code, lines, _ = check(capsys, "data")
    assert code == 1 and lines == [f"LEAK exact {q2} duplicates {r2} (same bytes)"]
    (project / q2).unlink()
    # The accepted file goes away: the entry is stale (reported, not a failure).
    (project / q).unlink()
    code, lines, _ = check(capsys, "data")
    assert code == 0
    assert lines == [f"STALE baseline entry {q} ~ {r} (exact): no longer found; drop it with 'splitaudit baseline'"]


def test_baseline_file_is_sorted_and_written_atomically(project, capsys):
    for i, cls in enumerate(("class_3", "class_0", "class_2")):
        leak(project, f"z{i}.jpg", cls, i)
    (project / "data" / "val" / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = project / "accepted.json"
    assert main(["baseline", "data", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    queries = [e["query"] for e in doc["leaks"]]
    assert queries == sorted(queries) and len(queries) == 3
    assert doc["unreadable"] == [{"path": "val/class_0/broken.jpg", "reason": doc["unreadable"][0]["reason"]}]
    assert not list(project.glob(".accepted.json.tmp-*"))
    capsys.readouterr()
    code, lines, _ = check(capsys, "data", "--baseline", str(out))
    assert code == 0 and lines == []
    code, lines, _ = check(capsys, "data")  # the default baseline does not exist
    assert code == 1 and len(lines) == 4 and lines[-1].startswith("UNREADABLE data/val/class_0/broken.jpg: ")


def test_a_pair_accepted_as_near_that_becomes_exact_is_new():
    near = Finding("leak", "val/a.jpg", "train/b.jpg", "near", "ncc 0.97")
    exact = Finding("leak", "val/a.jpg", "train/b.jpg", "exact", "same bytes")
    base = Baseline(Path("b.json"), {near.key: near})
    assert compare([near], base).new == [] and compare([near], base).stale == []
    result = compare([exact], base)
    assert len(result.new) == 1 and "accepted as near" in result.new[0].detail
    assert compare([], base).stale == [near]


def test_pyproject_configuration_is_merged_under_flags(project, capsys):
    q, r = leak(project)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.splitaudit]\ndataset = "data"\nfail_on = "never"\n'
        'checks = ["cross_split_duplicates"]\nbaseline = "qa/accepted.json"\n')
    (project / "qa").mkdir()
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)
    assert find_config(sub) == project / "pyproject.toml"
    code, lines, _ = check(capsys)  # dataset from the config; fail_on never: nothing counts
    assert code == 0 and lines == []
    code, lines, _ = check(capsys, "--fail-on", "exact")  # the flag wins
    assert code == 1 and lines == [f"LEAK exact {q} duplicates {r} (same bytes)"]
    assert main(["baseline", "--fail-on", "exact"]) == 0
    assert (project / "qa" / "accepted.json").exists()  # the configured baseline path
    capsys.readouterr()
    code, lines, _ = check(capsys, "--fail-on", "exact")
    assert code == 0 and lines == []


def test_max_leak_rate_tolerates_a_share_of_new_leaks(project, capsys):
    leak(project)
    code, lines, err = check(capsys, "data", "--max-leak-rate", "0.5")
    assert code == 0 and len(lines) == 1 and "within --max-leak-rate" in err


def test_config_splits_and_relative_paths(tmp_path, clean_dataset, monkeypatch, capsys):
    shutil.copytree(clean_dataset / "train", tmp_path / "images" / "fit")
    shutil.copytree(clean_dataset / "val", tmp_path / "images" / "holdout")
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.splitaudit]\ndataset = "images"\n[tool.splitaudit.splits]\ntrain = "fit"\nval = "holdout"\n')
    monkeypatch.chdir(tmp_path / "images")
    src = sorted((tmp_path / "images" / "fit" / "class_0").glob("*.jpg"))[0]
    shutil.copyfile(src, tmp_path / "images" / "holdout" / "class_0" / "dup.jpg")
    code, lines, _ = check(capsys)
    assert code == 1
    assert lines == [f"LEAK exact holdout/class_0/dup.jpg duplicates fit/class_0/{src.name} (same bytes)"]
    assert main(["baseline"]) == 0
    assert (tmp_path / "splitaudit-baseline.json").exists()  # next to the pyproject.toml


@pytest.mark.parametrize("toml, fragment", [
    ('[tool.splitaudit]\ndatset = "data"\n', "Unknown key 'datset'"),
    ('[tool.splitaudit]\nfail-on = "near"\n', "did you mean 'fail_on'?"),
    ('[tool.splitaudit]\nembeddings = "yes"\n', "'embeddings'"),
    ('[tool.splitaudit]\nmax_leak_rate = 2\n', "[0, 1]"),
    ('[tool.splitaudit]\nfail_on = "sometimes"\n', "fail_on"),
    ('[tool.splitaudit]\nchecks = ["no_such_check"]\n', "Unknown check 'no_such_check'"),
    ('[tool.splitaudit\n', "not valid TOML"),
])
def test_bad_configuration_is_one_line_and_exit_2(project, capsys, toml, fragment):
    (project / "pyproject.toml").write_text(toml)
    code = main(["check", "data", "--config", str(project / "pyproject.toml")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1
    if "Unknown key" in fragment:
        assert all(k in err for k in KNOWN_KEYS)


def test_every_known_key_is_accepted(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.splitaudit]\ndataset = "d"\nmanifest = "m.csv"\nfail_on = "exact"\nmax_leak_rate = 0.1\n'
        'near_threshold = 0.95\nsimilar_threshold = 0.8\nembeddings = false\nweights = "w.h5"\n'
        'checks = ["unreadable_files"]\nbaseline = "b.json"\ncache_dir = ".cache"\ncache = false\n'
        'workers = 0\nalpha = 0.01\n[tool.splitaudit.splits]\ntrain = "a"\n'
        '[tool.splitaudit.shift]\ndomain_threshold = 0.6\npermutations = 100\n')
    cfg = load_config(tmp_path / "pyproject.toml")
    assert set(cfg.values) == set(KNOWN_KEYS)
    assert cfg.get("dataset") == str(tmp_path / "d") and cfg.get("cache_dir") == str(tmp_path / ".cache")
    assert cfg.get("splits") == {"train": "a"}  # relative to the dataset, like --split


def test_malformed_baseline_is_a_usage_error(project, capsys):
    (project / "data" / "splitaudit-baseline.json").write_text("{not json")
    code, _, err = check(capsys, "data")
    assert code == 2 and "not valid JSON" in err
    with pytest.raises(InvalidInputError):
        load_baseline(project / "data" / "splitaudit-baseline.json")


def test_check_needs_a_dataset(tmp_path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 2
    assert "'dataset' in [tool.splitaudit]" in capsys.readouterr().err


def test_check_never_imports_tensorflow_and_version_is_fast(project):
    leak(project)
    code = ("import sys, splitaudit.cli as c\n"
            "rc = c.main(['check', 'data', '-q'])\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=project)
    assert proc.returncode == 1, proc.stderr
    assert "LEAK exact" in proc.stdout
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "splitaudit.cli", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("splitaudit ")
    imported = proc.stderr
    for heavy in ("numpy", "PIL", "faiss", "tensorflow", "sqlite3"):
        assert f" {heavy}\n" not in imported and f" {heavy}." not in imported, heavy


def test_output_to_a_device_or_symlink_is_not_replaced(project, tmp_path, capsys):
    """`-o /dev/null` must write to the device, not rename a file over it (this is tested through
    a symlink to it, so a regression replaces the symlink, never /dev/null itself)."""
    import os
    import stat

    link = tmp_path / "null-link"
    os.symlink(os.devnull, link)
    assert main(["scan", "data", "--no-embeddings", "-q", "-o", str(link)]) == 0
    assert link.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    real = tmp_path / "real.txt"
    real.write_text("old")
    other = tmp_path / "other-link"
    os.symlink(real, other)
    assert main(["scan", "data", "--no-embeddings", "-q", "-o", str(other)]) == 0
    assert other.is_symlink() and real.read_text().startswith("OK")
    assert main(["baseline", "data", "-o", str(link)]) == 2
    assert "not a regular file" in capsys.readouterr().err
