"""End to end through splitaudit.api.scan on real files: planted leaks, clean splits, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badfiles import write_empty, write_garbage, write_png_header_only, write_text, write_truncated
from splitaudit.api import scan
from splitaudit.config import AuditConfig
from splitaudit.synth import write_copy

HASH_ONLY = AuditConfig(embeddings=False, workers=0)


def _found(report) -> dict[tuple[str, str], str]:
    return {(p.reference.path, p.query.path): p.match for p in report.cross_split_duplicates}


def test_every_planted_family_is_found_with_the_right_kind(leaky_dataset):
    root, planted = leaky_dataset
    report = scan(root, config=HASH_ONLY)
    found = _found(report)
    missing = [(p.family, found.get((p.reference, p.query))) for p in planted
               if found.get((p.reference, p.query)) != p.kind]
    assert missing == []
    assert report.verdict.status == "leaked"
    assert report.exit_code == 1


def test_no_false_copies_besides_the_planted_ones(leaky_dataset):
    root, planted = leaky_dataset
    report = scan(root, config=HASH_ONLY)
    truth = {(p.reference, p.query) for p in planted}
    false = [(p.reference.path, p.query.path, p.ncc) for p in report.cross_split_duplicates
             if p.match != "similar" and (p.reference.path, p.query.path) not in truth]
    assert false == []
    val = next(s for s in report.split_pairs if (s.query_split, s.reference_split) == ("val", "train"))
    assert val.leaked_samples == len(planted)
    assert val.query_samples == 3 * 6 + len(planted)


def test_clean_random_split_is_not_flagged(clean_dataset):
    report = scan(clean_dataset, config=HASH_ONLY)
    assert [p for p in report.cross_split_duplicates if p.match != "similar"] == []
    assert report.verdict.status == "ok"
    assert report.exit_code == 0
    assert report.splits == {"train": 160, "val": 48, "test": 32}


def test_parallel_workers_give_the_same_pairs(leaky_dataset):
    root, _ = leaky_dataset
    serial = scan(root, config=HASH_ONLY)
    parallel = scan(root, config=AuditConfig(embeddings=False, workers=2))
    assert _found(serial) == _found(parallel)


def test_test_split_is_compared_with_val_too(tmp_path, leaky_dataset):
    root, _ = leaky_dataset
    data = tmp_path / "data"
    shutil.copytree(root, data)
    val_img = sorted((data / "val" / "class_0").glob("val_*.jpg"))[0]
    write_copy(val_img, data / "test" / "class_0" / "copy_of_val.jpg", "jpeg", np.random.default_rng(0))
    report = scan(data, config=HASH_ONLY)
    hits = [p for p in report.cross_split_duplicates if p.query.path == "test/class_0/copy_of_val.jpg"]
    assert [(p.reference.path, p.match) for p in hits] == [(val_img.relative_to(data).as_posix(), "near")]


def test_label_conflicts_are_reported(tmp_path, leaky_dataset):
    root, _ = leaky_dataset
    data = tmp_path / "data"
    shutil.copytree(root, data)
    src = data / "train" / "class_0" / "train_0_0003.jpg"
    (data / "val" / "class_1").mkdir(exist_ok=True)
    shutil.copyfile(src, data / "val" / "class_1" / "mislabelled.jpg")
    report = scan(data, config=HASH_ONLY)
    conflicts = [(p.query.path, p.query.label, p.reference.label) for p in report.label_conflicts]
    assert ("val/class_1/mislabelled.jpg", "class_1", "class_0") in conflicts
    assert report.checks["label_conflicts"].status == "warn"
    assert report.to_dict()["label_conflicts"]


def test_within_split_duplicates_are_informational(tmp_path, clean_dataset):
    data = tmp_path / "data"
    shutil.copytree(clean_dataset, data)
    src = sorted((data / "train" / "class_2").glob("*.jpg"))[0]
    shutil.copyfile(src, data / "train" / "class_2" / "again.jpg")
    report = scan(data, config=HASH_ONLY)
    assert report.verdict.status == "ok"
    pairs = {(p.query.path, p.reference.path) for p in report.within_split_duplicates}
    assert pairs == {("train/class_2/again.jpg", src.relative_to(data).as_posix())} or pairs == {
        (src.relative_to(data).as_posix(), "train/class_2/again.jpg")}


def test_bad_files_are_reported_and_the_scan_goes_on(tmp_path, leaky_dataset):
    root, planted = leaky_dataset
    data = tmp_path / "data"
    shutil.copytree(root, data)
    bad = data / "val" / "class_0"
    expected = {
        write_empty(bad).name: "empty file",
        write_garbage(bad).name: "not an image",
        write_truncated(bad, "JPEG").name: "truncated",
        write_png_header_only(bad, 40000, 40000).name: "decompression bomb",
    }
    notes = write_text(bad)
    (bad / "README.txt").write_text("labels are folder names")
    Image.new("CMYK", (64, 64), (10, 200, 30, 0)).save(bad / "cmyk.jpg")
    Image.new("I;16", (64, 64), 30000).save(bad / "sixteen.png")
    report = scan(data, config=HASH_ONLY)
    reasons = {Path(u.path).name: u.reason for u in report.unreadable}
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons.get(name))
    assert "not an image" in reasons[notes.name]
    assert reasons["README.txt"] == "not an image file (.txt)"
    assert "cmyk.jpg" not in reasons and "sixteen.png" not in reasons
    assert report.checks["unreadable_files"].metrics["count"] == len(report.unreadable)
    # The planted leaks are still all found.
    assert all(_found(report).get((p.reference, p.query)) == p.kind for p in planted)


def test_fail_on_and_max_leak_rate_drive_the_exit_code(leaky_dataset):
    root, planted = leaky_dataset
    assert scan(root, config=AuditConfig(embeddings=False, workers=0, fail_on="never")).exit_code == 0
    exact_only = scan(root, config=AuditConfig(embeddings=False, workers=0, fail_on="exact"))
    assert exact_only.exit_code == 1
    rate = len(planted) / (3 * 6 + len(planted))
    lenient = scan(root, config=AuditConfig(embeddings=False, workers=0, max_leak_rate=rate + 0.01))
    assert lenient.exit_code == 0 and lenient.verdict.status == "ok"
    strict = scan(root, config=AuditConfig(embeddings=False, workers=0, max_leak_rate=rate - 0.01))
    assert strict.exit_code == 1


@pytest.mark.slow
def test_cnn_path_end_to_end(leaky_dataset, random_weights):
    root, planted = leaky_dataset
    config = AuditConfig(weights=str(random_weights), input_size=32, workers=0, require_embeddings=True)
    report = scan(root, config=config)
    assert report.settings["embedder"]
    found = _found(report)
    assert all(found.get((p.reference, p.query)) == p.kind for p in planted)
    near = [p for p in report.cross_split_duplicates if p.match == "near"]
    assert all(p.cosine is not None and -1.0 <= p.cosine <= 1.0 for p in near)


def test_missing_weights_fall_back_to_hash_only(leaky_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras"))
    root, planted = leaky_dataset
    notices: list[str] = []
    report = scan(root, config=AuditConfig(workers=0), notice=notices.append)
    assert report.settings["embedder"] is None
    assert any("weights" in n for n in report.notes)
    assert notices and "--weights" in notices[0]
    assert all(_found(report).get((p.reference, p.query)) == p.kind for p in planted)


def test_lossless_copy_of_a_large_jpeg_is_exact(tmp_path):
    # Large JPEGs are fingerprinted from a reduced decode; the pair is re-decoded at full size.
    rng = np.random.default_rng(2)
    from splitaudit.synth import random_photo

    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    photo = random_photo(rng, 600)
    photo.save(tmp_path / "train" / "big.jpg", quality=90)
    with Image.open(tmp_path / "train" / "big.jpg") as im:
        im.convert("RGB").save(tmp_path / "val" / "big.png")
        im.convert("RGB").save(tmp_path / "val" / "big_q97.jpg", quality=97)
    for i in range(3):
        random_photo(rng, 600).save(tmp_path / "train" / f"other_{i}.jpg", quality=90)
    report = scan(tmp_path, config=HASH_ONLY)
    got = {p.query.path: (p.match, p.evidence) for p in report.cross_split_duplicates}
    assert got["val/big.png"] == ("exact", "same pixels")
    assert got["val/big_q97.jpg"][0] == "near"
