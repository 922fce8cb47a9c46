"""The command line as a user runs it: exit codes, stdout/stderr discipline, JSON shape."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from splitaudit.cli import main

JSON_PAIR_KEYS = {"query", "reference", "match", "ncc", "cosine", "hamming", "evidence", "label_conflict"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitaudit.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_json_report_has_the_documented_shape(leaky_dataset):
    root, planted = leaky_dataset
    proc = run("scan", str(root), "--no-embeddings", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # stdout carries only the report
    assert doc["schema_version"] == 1
    assert doc["verdict"]["status"] == "leaked"
    assert set(doc["verdict"]) >= {"status", "statuses", "reasons", "exit_code"}
    assert doc["splits"] == {"train": 60, "val": 18 + len(planted), "test": 12}
    assert isinstance(doc["unreadable"], list)
    pairs = doc["cross_split_duplicates"]
    assert pairs and all(set(p) >= JSON_PAIR_KEYS for p in pairs)
    for p in pairs:
        assert set(p["query"]) >= {"split", "path", "label"} and p["match"] in ("exact", "near", "similar")
        order = ["train", "val", "test"]
        assert order.index(p["reference"]["split"]) < order.index(p["query"]["split"])
        assert not p["query"]["path"].startswith("/") and "\\" not in p["query"]["path"]
    got = {(p["reference"]["path"], p["query"]["path"]): p["match"] for p in pairs}
    assert all(got[(x.reference, x.query)] == x.kind for x in planted)
    assert set(doc["checks"]) == {"cross_split_duplicates", "label_conflicts",
                                  "within_split_duplicates", "unreadable_files", "domain_classifier",
                                  "embedding_mmd", "label_shift", "property_drift", "difficulty"}
    for cid in ("domain_classifier", "embedding_mmd", "label_shift", "property_drift", "difficulty"):
        metrics = doc["checks"][cid]["metrics"]
        assert doc["checks"][cid]["status"] in ("pass", "warn", "fail", "skipped")
        assert {"p_value", "effect_size", "effect_threshold", "alpha"} <= set(metrics)
    assert {t["check"] for t in doc["verdict"]["shift_tests"]} <= set(doc["checks"])


def test_text_report_and_exit_codes(leaky_dataset, clean_dataset, tmp_path):
    root, _ = leaky_dataset
    proc = run("scan", str(root), "--no-embeddings")
    assert proc.returncode == 1
    assert proc.stdout.startswith("LEAKED")
    assert "What to do next" in proc.stdout
    clean = run("scan", str(clean_dataset), "--no-embeddings")
    assert clean.returncode == 0 and clean.stdout.startswith("OK")
    never = run("scan", str(root), "--no-embeddings", "--fail-on", "never", "-o", str(tmp_path / "r.txt"))
    assert never.returncode == 0 and never.stdout == ""
    assert (tmp_path / "r.txt").read_text().startswith("LEAKED")


@pytest.mark.parametrize("args, fragment", [
    (["scan", "/nonexistent/data"], "does not exist"),
    (["scan", "--max-leak-rate", "1.5", "x"], "must be a number in [0, 1]"),
    (["scan", "--fail-on", "sometimes", "x"], "must be a match kind"),
    (["scan", "--fail-on", "near,exact", "x"], "must be a match kind"),
    (["scan", "--alpha", "1.5", "x"], "must be a number in (0, 1)"),
    (["scan"], "needs DATASET_DIR"),
    (["scan", "x", "--split", "nonsense"], "NAME=PATH"),
    (["scan", "x", "--weights", "/no/such/file.h5"], "'weights' parameter of scan"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, fragment, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    assert main(["scan", "--max-leak-rate", "lots", "x"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_unknown_layout_explains_the_understood_layouts(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    assert main(["scan", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--split NAME=PATH" in err and "manifest" in err


def test_help_and_hash_only_scan_do_not_import_tensorflow(leaky_dataset):
    root, _ = leaky_dataset
    code = ("import sys, splitaudit.cli as c\n"
            "rc = c.main(['scan', sys.argv[1], '--no-embeddings', '-q', '--format', 'json'])\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-c", "import sys, splitaudit.cli as c\n"
                           "try: c.main(['--help'])\nexcept SystemExit: pass\n"
                           "assert 'tensorflow' not in sys.modules and 'faiss' not in sys.modules"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_demo_writes_a_dataset_the_scan_flags(tmp_path):
    out = tmp_path / "demo"
    assert run("demo", str(out)).returncode == 0
    proc = run("scan", str(out), "--no-embeddings", "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    val = next(s for s in doc["split_pairs"] if s["query_split"] == "val")
    # 13 near copies are planted; hash-only, the captioned one may only reach "similar".
    assert val["exact"] == 2 and val["near"] >= 12 and val["near"] + val["similar"] >= 13
    # The planted brightness shift of test is found by the property check, citing brightness.
    assert doc["verdict"]["statuses"][:2] == ["leaked", "shifted"]
    drift = doc["checks"]["property_drift"]
    assert drift["status"] == "fail" and drift["metrics"]["worst_split"] == "test"
    assert "brightness" in drift["summary"]
    assert doc["checks"]["label_shift"]["status"] == "pass"
    assert run("scan", str(out), "--no-embeddings", "--fail-on", "never,shifted", "-q").returncode == 1
    html = tmp_path / "demo.html"
    assert run("scan", str(out), "--no-embeddings", "--fail-on", "never,easier", "-q", "--format", "html",
               "-o", str(html)).returncode == 0
    page = html.read_text()
    shift = page[page.index('id="shift"'):page.index('id="checks"')]
    assert "Holm" in shift and "<code>property_drift</code>" in shift and ">shifted<" in shift
    again = run("demo", str(out))  # never overwrites
    assert again.returncode == 2 and "never overwrites" in again.stderr


def test_list_checks(capsys):
    assert main(["list-checks"]) == 0
    out = capsys.readouterr().out
    assert "cross_split_duplicates" in out and "label_conflicts" in out


def test_manifest_and_explicit_splits(leaky_dataset, tmp_path):
    root, planted = leaky_dataset
    proc = run("scan", str(root), "--split", "train=train", "--split", "val=val", "--no-embeddings",
               "--format", "json")
    doc = json.loads(proc.stdout)
    assert set(doc["splits"]) == {"train", "val"}
    rows = ["path,split,label"]
    for split in ("train", "val"):
        for f in sorted((root / split).rglob("*.*")):
            rows.append(f"{f.relative_to(root).as_posix()},{split},{f.parent.name}")
    data = tmp_path / "data"
    shutil.copytree(root, data)
    manifest = data / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    proc = run("scan", "--manifest", str(manifest), "--no-embeddings", "--format", "json")
    doc = json.loads(proc.stdout)
    assert doc["layout"] == "manifest"
    got = {(p["reference"]["path"], p["query"]["path"]) for p in doc["cross_split_duplicates"]}
    assert all((p.reference, p.query) in got for p in planted)


def test_tensorflow_native_lines_are_held_to_the_log_level(capfd, monkeypatch):
    import os

    from splitaudit import cli

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with cli._tensorflow_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796540224.117571   12942 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"W0000 00:00:1796540224.117994   12942 stub.cc:31] a native warning\n")
        os.write(2, b"E0000 00:00:1796540224.117994   12942 stub.cc:31] a native error\n")
        os.write(2, b"Traceback (most recent call last): from a child process\n")
        print("splitaudit: a notice", file=sys.stderr)
    err = capfd.readouterr().err
    assert "absl" not in err and "oneDNN" not in err and "a native warning" not in err
    assert "a native error" in err and "from a child process" in err and "splitaudit: a notice" in err
    # Level 0 (the user wants to see everything): nothing is filtered.
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with cli._tensorflow_stderr():
        os.write(2, b"I0000 00:00:1796540224.117571   12942 port.cc:153] oneDNN custom operations are on.\n")
    assert "oneDNN" in capfd.readouterr().err


def test_cnn_scan_keeps_tensorflow_chatter_off_stderr(leaky_dataset, random_weights, tmp_path):
    root, _ = leaky_dataset
    proc = run("scan", str(root), "--weights", str(random_weights), "--require-embeddings",
               "--format", "json", "-o", str(tmp_path / "r.json"), "--fail-on", "never", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["embedder"]
    assert "I0000" not in proc.stderr and "absl" not in proc.stderr and "oneDNN" not in proc.stderr, proc.stderr


def test_cnn_scan_runs_each_tensorflow_op_on_one_thread(leaky_dataset, random_weights, monkeypatch):
    # The CLI's process is its own: the CNN's batch parts run side by side, one thread per op.
    import os

    from splitaudit import cli

    root, _ = leaky_dataset
    parser = cli.build_parser()
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    cli._Settings(parser.parse_args(["scan", str(root), "--no-embeddings"]), "scan")
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ  # no CNN: nothing set
    settings = cli._Settings(parser.parse_args(["scan", str(root), "--weights", str(random_weights)]),
                             "scan")
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1" and settings.config.batch_size == 64
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "4")  # the user's choice wins
    settings = cli._Settings(parser.parse_args(["scan", str(root), "--weights", str(random_weights),
                                                "--batch-size", "32"]), "scan")
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "4" and settings.config.batch_size == 32
