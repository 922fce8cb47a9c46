"""splitaudit.audit() on numpy image arrays, path lists and directories (hash-only: fast)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from splitaudit import AuditConfig, InvalidInputError, LeakageError, audit
from splitaudit.render.text import render_text
from splitaudit.synth import photo_array

HASH_ONLY = AuditConfig(embeddings=False)


photos = photo_array


@pytest.fixture(scope="module")
def leaked_arrays():
    """train (120) and val (40) with three planted copies: exact, brighter, mirrored."""
    train = photos(120, seed=1)
    val = photos(40, seed=2)
    val[5] = train[17]
    val[11] = np.clip(train[42].astype(np.int16) + 12, 0, 255).astype(np.uint8)
    val[30] = train[99, :, ::-1]
    planted = {(5, 17): "exact", (11, 42): "near", (30, 99): "near"}
    y_train = np.arange(120) % 4
    y_val = np.arange(40) % 4
    return train, val, y_train, y_val, planted


def _leaks(report, kinds=("exact", "near")) -> dict[tuple[int, int], str]:
    return {(p.query.index, p.reference.index): p.match
            for p in report.cross_split_duplicates if p.match in kinds}


def test_planted_copies_found_with_their_indices(leaked_arrays):
    train, val, y_train, y_val, planted = leaked_arrays
    report = audit(train, val, labels={"train": y_train, "val": y_val}, config=HASH_ONLY)
    assert _leaks(report) == planted
    assert report.verdict.status == "leaked"
    assert report.layout == "arrays"
    assert report.splits == {"train": 120, "val": 40}
    pair = next(p for p in report.cross_split_duplicates if p.query.index == 5)
    assert pair.query.split == "val" and pair.reference.split == "train"
    assert pair.query.path is None and pair.reference.path is None
    assert pair.query.label == str(y_val[5]) and pair.reference.label == str(y_train[17])
    d = pair.to_dict()
    assert d["query"]["index"] == 5 and d["reference"]["index"] == 17
    assert report.checks["cross_split_duplicates"].status == "fail"


def test_same_copies_in_every_supported_pixel_format(leaked_arrays):
    train, val, _, _, planted = leaked_arrays
    grey_w = np.array([0.299, 0.587, 0.114], np.float32)
    cases = {
        "float [0, 1]": (train, val.astype(np.float32) / 255),
        "float [0, 255]": (train.astype(np.float64), val.astype(np.float64)),
        "rgba": (np.concatenate([train, np.full(train.shape[:3] + (1,), 255, np.uint8)], -1), val),
        "grey (N, H, W)": ((train @ grey_w).round().astype(np.uint8),
                           (val @ grey_w).round().astype(np.uint8)),
        "grey (N, H, W, 1)": ((train @ grey_w).round().astype(np.uint8)[..., None],
                              (val @ grey_w).round().astype(np.uint8)[..., None]),
    }
    for name, (a, b) in cases.items():
        found = _leaks(audit(a, b, config=HASH_ONLY))
        assert set(found) == set(planted), name
        assert found[(5, 17)] == "exact", name


def test_clean_random_split_is_ok():
    report = audit(photos(120, seed=3), photos(40, seed=4), test=photos(30, seed=5), config=HASH_ONLY)
    assert _leaks(report) == {}
    assert report.verdict.statuses == ["ok"], report.verdict.reasons
    assert report.checks["cross_split_duplicates"].status == "pass"
    assert report.verdict.exit_code == 0
    report.raise_for_leakage()  # nothing to raise
    assert {(s.query_split, s.reference_split) for s in report.split_pairs} == {
        ("val", "train"), ("test", "train"), ("test", "val")}


def test_test_split_and_tuple_labels(leaked_arrays):
    train, val, y_train, y_val, _ = leaked_arrays
    test = photos(20, seed=6)
    test[3] = val[8]  # test copies val, not train
    report = audit((train, y_train), (val, y_val), test=test, config=HASH_ONLY)
    test_pairs = [(p.reference.split, p.query.index, p.reference.index)
                  for p in report.cross_split_duplicates if p.query.split == "test" and p.match != "similar"]
    assert test_pairs == [("val", 3, 8)]
    assert report.cross_split_duplicates[0].reference.label is not None


def test_raise_for_leakage(leaked_arrays):
    train, val, _, _, _ = leaked_arrays
    report = audit(train, val, config=HASH_ONLY)
    with pytest.raises(LeakageError) as info:
        report.raise_for_leakage(fail_on="near")
    text = str(info.value)
    assert "3 of 40 val samples" in text and "val[5]" in text and "train[17]" in text
    assert info.value.report is report
    with pytest.raises(LeakageError, match="1 of 40 val samples"):
        report.raise_for_leakage(fail_on="exact")
    assert report.raise_for_leakage(fail_on="never") is report
    assert report.raise_for_leakage(max_leak_rate=0.1) is report  # 7.5% allowed
    with pytest.raises(InvalidInputError, match="'fail_on' parameter of raise_for_leakage"):
        report.raise_for_leakage(fail_on="sometimes")


def test_report_renders_as_text_json_and_html(leaked_arrays):
    train, val, _, _, _ = leaked_arrays
    report = audit(train, val, config=HASH_ONLY)
    text = render_text(report)
    assert "val[5]" in text and "train[17]" in text and "LEAKED" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["layout"] == "arrays"
    assert {(p["query"]["index"], p["reference"]["index"]) for p in data["cross_split_duplicates"]
            if p["match"] != "similar"} == {(5, 17), (11, 42), (30, 99)}
    assert "leak_adjusted" not in data
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html") and "val" in html


def test_hash_only_array_audit_never_imports_tensorflow():
    code = (
        "import sys, numpy as np\n"
        "from splitaudit import audit, AuditConfig\n"
        "rng = np.random.default_rng(0)\n"
        "x = (rng.random((40, 16, 16, 3)) * 255).astype(np.uint8)\n"
        "r = audit(x, x[:10].copy(), config=AuditConfig(embeddings=False))\n"
        "assert len([p for p in r.cross_split_duplicates if p.match == 'exact']) == 10\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "r = audit(rng.random((50, 4)), rng.random((20, 4)))\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _save(arr: np.ndarray, path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


def test_path_lists_and_directories(tmp_path, leaked_arrays):
    train, val, _, _, _ = leaked_arrays
    train_paths = [_save(train[i], tmp_path / "pool" / f"t{i:03d}.png") for i in range(40)]
    for i in range(12, 24):  # val images without planted copies
        _save(val[i], tmp_path / "val" / ("cat" if i % 2 else "dog") / f"v{i:02d}.png")
    _save(train[17], tmp_path / "val" / "dog" / "copy_of_t017.png")
    (tmp_path / "val" / "notes.txt").write_text("not an image")
    report = audit(train_paths, tmp_path / "val", labels={"train": ["a"] * 40}, config=HASH_ONLY)
    leaks = [(p.query.path, p.reference.path, p.match) for p in report.cross_split_duplicates
             if p.match != "similar"]
    assert leaks == [("val/dog/copy_of_t017.png", "pool/t017.png", "exact")]
    pair = report.cross_split_duplicates[0]
    assert pair.query.label == "dog" and pair.reference.label == "a"
    assert pair.reference.index == 17  # position in the given list
    assert report.splits == {"train": 40, "val": 13}
    assert [u.path for u in report.unreadable] == ["val/notes.txt"]
    assert report.dataset == str(tmp_path)


def test_arrays_against_files(tmp_path, leaked_arrays):
    train, val, _, _, _ = leaked_arrays
    paths = [_save(val[i], tmp_path / "v" / f"{i}.png") for i in range(12, 22)]
    paths.append(_save(train[63], tmp_path / "v" / "leak.png"))
    report = audit(train, paths, config=HASH_ONLY)
    leaks = [(p.query.path, p.reference.index, p.match, p.evidence)
             for p in report.cross_split_duplicates if p.match != "similar"]
    # The PNG decodes to the very pixels of the array row.
    assert leaks == [("leak.png", 63, "exact", "same pixels")]  # relative to the files' folder
    assert report.dataset == str(tmp_path / "v")
    assert report.layout == "mixed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train": np.zeros(10), "val": np.zeros((5, 8, 8))},
         "The 'train' parameter of audit must be a numpy array of images"),
        ({"train": np.zeros((4, 8, 8, 3, 1)), "val": np.zeros((5, 8, 8))},
         "The 'train' parameter of audit must be"),
        ({"train": np.zeros((4, 8, 8, 2)), "val": np.zeros((5, 8, 8))},
         "The 'train' parameter of audit must be images with 1, 3 or 4 channels"),
        ({"train": np.zeros((4, 8, 8), bool), "val": np.zeros((5, 8, 8))},
         "dtype bool"),
        ({"train": np.zeros((4, 8, 8)), "val": np.full((5, 8, 8), -1.0)},
         "The 'val' parameter of audit must be images with values in [0, 1] (float) or [0, 255]. "
         "Got float64 values in [-1, -1] instead."),
        ({"train": np.zeros((4, 8, 8)), "val": np.full((5, 8, 8), 300, np.int32)},
         "The 'val' parameter of audit must be images with values in"),
        ({"train": np.zeros((4, 8, 8)), "val": None}, "The 'val' parameter of audit must be"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 3))},
         "must all be tabular rows (N, D) or all images"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "labels": {"train": [1, 2]}},
         "The 'labels' parameter of audit must be 4 labels"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "labels": {"valid": [1] * 5}},
         "The 'labels' parameter of audit must be a mapping with keys among train, val, test"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "labels": [1, 2]},
         "The 'labels' parameter of audit must be a mapping"),
        ({"train": (np.zeros((4, 8, 8)), [0, 1, 2, 3]), "val": np.zeros((5, 8, 8)),
          "labels": {"train": [0, 1, 2, 3]}}, "The 'labels' parameter of audit"),
        ({"train": "/no/such/folder", "val": np.zeros((5, 8, 8))},
         "The 'train' parameter of audit must be"),
        ({"train": np.zeros((4, 8, 8)), "val": np.array(["a", "b"])}, "dtype <U1"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "checks": ["nope"]},
         "The 'checks' parameter of audit must be a list of check ids"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "config": {"embeddings": False}},
         "The 'config' parameter of audit must be an AuditConfig"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "model": object()},
         "The 'model' parameter of audit must be a compiled Keras model"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((5, 8, 8)), "model": None, "test": [1, 2]},
         "The 'test' parameter of audit must be"),
    ],
)
def test_bad_inputs_get_one_clear_message(kwargs, message):
    train, val = kwargs.pop("train"), kwargs.pop("val")
    with pytest.raises(InvalidInputError) as info:
        audit(train, val, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_checks_parameter_selects_checks(leaked_arrays):
    train, val, _, _, _ = leaked_arrays
    report = audit(train, val, checks=["cross_split_duplicates"], config=HASH_ONLY)
    assert list(report.checks) == ["cross_split_duplicates"]


def test_progress_reports_every_sample(leaked_arrays):
    train, val, _, _, _ = leaked_arrays
    seen = []
    audit(train, val, config=HASH_ONLY, progress=lambda stage, done, total: seen.append((stage, done, total)))
    fp = [s for s in seen if s[0] == "fingerprint"]
    assert fp[-1] == ("fingerprint", 160, 160)
    assert [d for _, d, _ in fp] == sorted(d for _, d, _ in fp)


def test_in_memory_images_get_image_properties():
    pytest.importorskip("splitaudit.fingerprints.properties")
    from splitaudit.extract_memory import fingerprint_inputs
    from splitaudit.fingerprints.properties import PROPERTY_NAMES
    from splitaudit.sources.arrays import load_inputs

    colour = photos(10, seed=8)
    grey = (colour @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    samples, table = fingerprint_inputs(load_inputs({"train": colour, "val": grey}))
    assert table.properties.shape == (20, len(PROPERTY_NAMES))
    col = {name: table.properties[:, i] for i, name in enumerate(PROPERTY_NAMES)}
    assert (col["channels"][:10] == 3).all() and (col["channels"][10:] == 1).all()
    assert (col["width"] == 32).all() and (col["saturation"][10:] == 0).all()
    assert (col["saturation"][:10] > 0).all()
    assert np.isnan(col["file_size"]).all()  # arrays have no encoded size to compare
    assert [s.index for s in samples.samples] == list(range(10)) * 2
