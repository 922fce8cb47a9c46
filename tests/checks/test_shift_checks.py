"""The registered shift / easier checks end to end, on generated image datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from splitaudit import scan
from splitaudit.api import audit_samples
from splitaudit.checks import REGISTRY
from splitaudit.checks.shift import ShiftConfig
from splitaudit.config import AuditConfig
from splitaudit.errors import InvalidInputError
from splitaudit.sources import discover
from splitaudit.synth import make_dataset, random_photo

SHIFT_IDS = ("domain_classifier", "embedding_mmd", "label_shift", "property_drift", "difficulty")
HASH_ONLY = AuditConfig(embeddings=False, workers=0)


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory) -> Path:
    """train/val of one distribution: 4 classes, 40 train and 15 val images per class."""
    root = tmp_path_factory.mktemp("shift-base")
    make_dataset(root, classes=4, train_per_class=40, val_per_class=15, size=64, seed=21)
    return root


def _copy_with_val_edit(src: Path, dest: Path, edit) -> Path:
    shutil.copytree(src, dest)
    for path in sorted((dest / "val").rglob("*.jpg")):
        with Image.open(path) as im:
            edited = edit(im.convert("RGB"))
        edited.save(path, "JPEG", quality=92)
    return dest


def _assert_json_ready(result) -> None:
    m = result.metrics
    for key in ("p_value", "effect_size", "effect_name", "effect_threshold", "alpha", "splits"):
        assert key in m, key
    json.dumps(m, allow_nan=False)


def test_registered_after_the_leak_checks_with_flags():
    ids = list(REGISTRY)
    assert ids[:4] == ["cross_split_duplicates", "label_conflicts", "within_split_duplicates",
                       "unreadable_files"]
    assert tuple(ids[4:9]) == SHIFT_IDS
    assert [REGISTRY[c].flags for c in SHIFT_IDS] == ["shifted"] * 4 + ["easier"]


def test_clean_random_split_is_not_flagged(clean_dataset):
    report = scan(clean_dataset, config=HASH_ONLY)
    for cid in SHIFT_IDS:
        r = report.checks[cid]
        assert r.status in ("pass", "warn"), (cid, r.summary)
        assert r.metrics["p_value"] >= 0.01, (cid, r.summary)
        assert set(r.metrics["splits"]) == {"val", "test"}
        _assert_json_ready(r)
    assert "hash-only" in report.checks["domain_classifier"].metrics["features"]
    summary = report.checks["domain_classifier"].summary
    assert summary.startswith("Domain classifier tells") and "AUC" in summary


def test_brighter_val_is_flagged_by_property_drift(base_dataset, tmp_path):
    root = _copy_with_val_edit(base_dataset, tmp_path / "bright",
                               lambda im: ImageEnhance.Brightness(im).enhance(1.3))
    report = scan(root, config=HASH_ONLY)
    r = report.checks["property_drift"]
    assert r.status == "fail", r.summary
    val = r.metrics["splits"]["val"]
    assert "brightness" in val["drifted"]
    assert val["properties"]["brightness"]["median_val"] > val["properties"]["brightness"]["median_train"]
    assert "brightness" in r.summary or val["property"] in r.summary
    # The classifier sees it too, and names val samples as the most val-like.
    d = report.checks["domain_classifier"]
    assert d.status == "fail", d.summary
    assert all(p.startswith("val/") for p in d.metrics["splits"]["val"]["most_val_like"])
    assert all(p.startswith("train/") for p in d.metrics["splits"]["val"]["most_train_like"])
    # Unedited classes keep their frequencies: no label shift.
    assert report.checks["label_shift"].status == "pass"


def test_blurred_val_is_flagged_by_property_drift(base_dataset, tmp_path):
    root = _copy_with_val_edit(base_dataset, tmp_path / "blur",
                               lambda im: im.filter(ImageFilter.GaussianBlur(1.5)))
    report = scan(root, config=HASH_ONLY)
    r = report.checks["property_drift"]
    assert r.status == "fail", r.summary
    val = r.metrics["splits"]["val"]
    assert "sharpness" in val["drifted"]
    assert val["properties"]["sharpness"]["median_val"] < val["properties"]["sharpness"]["median_train"]


def test_effect_threshold_from_config_turns_fail_into_warn(base_dataset, tmp_path):
    root = _copy_with_val_edit(base_dataset, tmp_path / "bright2",
                               lambda im: ImageEnhance.Brightness(im).enhance(1.3))
    shift = ShiftConfig(property_threshold=1.0, domain_threshold=1.0)
    config = AuditConfig(embeddings=False, workers=0, shift=shift,
                         checks=("property_drift", "domain_classifier"))
    report = scan(root, config=config)
    for cid in ("property_drift", "domain_classifier"):
        r = report.checks[cid]
        assert r.status == "warn", r.summary
        assert r.metrics["effect_threshold"] == 1.0
        assert "below the effect threshold" in r.summary


def test_label_shift_flags_missing_classes(tmp_path):
    root = tmp_path / "prior"
    make_dataset(root, classes=4, train_per_class=30, val_per_class=15, size=48, seed=5)
    for c in (2, 3):  # val keeps only classes 0 and 1
        shutil.rmtree(root / "val" / f"class_{c}")
    report = scan(root, config=AuditConfig(embeddings=False, workers=0, checks=("label_shift",)))
    r = report.checks["label_shift"]
    assert r.status == "fail", r.summary
    val = r.metrics["splits"]["val"]
    assert val["only_in_train"] == ["class_2", "class_3"]
    assert val["counts"]["class_2"] == [30, 0]
    assert r.metrics["effect_size"] > 0.3 and "Cramer's V" in r.summary


def test_difficulty_reports_leaks_separately(leaky_dataset):
    root, planted = leaky_dataset
    report = scan(root, config=HASH_ONLY)
    r = report.checks["difficulty"]
    val = r.metrics["splits"]["val"]
    leaked = {p.query.path for p in report.cross_split_duplicates
              if p.match in ("exact", "near") and p.query.split == "val"}
    assert val["leaked"] == len(leaked) >= len(planted) - 3
    # "Easier" is judged without the leaks (the leak checks report those)...
    assert val["scored"] == "without leaked samples"
    assert val["n_b"] == val["without_leaks"]["n_b"] == val["with_leaks"]["n_b"] - val["leaked"]
    # ...which made val look much nearer to train than it is.
    assert val["with_leaks"]["distance_delta"] > 0.3
    assert val["with_leaks"]["distance_delta"] > val["without_leaks"]["distance_delta"] + 0.2
    assert val["leak_share_of_effect"] > 0.5
    # The val samples nearest to train are planted copies.
    assert set(val["nearest_val_to_train"]) <= leaked
    assert "leaked samples left out" in r.summary and "leaks explain" in r.summary
    # Scored with the leaks, the same split is "easier".
    config = AuditConfig(embeddings=False, workers=0, checks=("difficulty",),
                         shift=ShiftConfig(difficulty_without_leaks=False))
    with_leaks = scan(root, config=config).checks["difficulty"]
    assert with_leaks.status == "fail", with_leaks.summary


def _flat_dataset(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """Split folders holding images directly (no class subfolders: no labels)."""
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            random_photo(rng, 48).save(root / split / f"{i:03d}.jpg", "JPEG", quality=90)
    return root


def test_no_labels_skips_label_shift_and_difficulty_uses_distance(tmp_path):
    root = _flat_dataset(tmp_path / "flat", {"train": 60, "val": 30})
    report = scan(root, config=HASH_ONLY)
    r = report.checks["label_shift"]
    assert r.status == "skipped" and "without labels" in r.summary
    d = report.checks["difficulty"]
    assert d.status in ("pass", "warn")
    assert any("no labels" in n for n in d.metrics["notes"])
    assert d.metrics["splits"]["val"]["agreement_b"] is None


def test_too_small_split_is_skipped_with_reason(tmp_path):
    root = _flat_dataset(tmp_path / "small", {"train": 40, "val": 5})
    report = scan(root, config=HASH_ONLY)
    for cid in SHIFT_IDS:
        r = report.checks[cid]
        assert r.status == "skipped", (cid, r.summary)
        assert "fewer than 20" in r.summary
        assert r.metrics["p_value"] is None
        _assert_json_ready(r)


def test_single_class_skips_label_shift(tmp_path):
    root = tmp_path / "one"
    make_dataset(root, classes=1, train_per_class=40, val_per_class=20, size=48, seed=2)
    report = scan(root, config=HASH_ONLY)
    r = report.checks["label_shift"]
    assert r.status == "skipped" and "single class" in r.summary
    assert report.checks["difficulty"].status != "skipped"


def test_one_split_is_skipped(tmp_path):
    root = _flat_dataset(tmp_path / "single", {"train": 30, "val": 30})
    samples = discover(root)
    samples.samples = [s for s in samples.samples if s.split == "train"]
    samples.splits = ["train"]
    report = audit_samples(samples, HASH_ONLY)
    for cid in SHIFT_IDS:
        assert report.checks[cid].status == "skipped"
        assert "Only one split" in report.checks[cid].summary


def test_shift_config_validates_its_parameters():
    with pytest.raises(InvalidInputError,
                       match=r"The 'alpha' parameter of scan must be a float in \(0.0, 1.0\]. Got 1.5"):
        ShiftConfig(alpha=1.5)
    with pytest.raises(InvalidInputError, match="'max_samples' parameter of scan must be an int"):
        ShiftConfig(max_samples=10.5)
    with pytest.raises(InvalidInputError, match="domain_threshold"):
        ShiftConfig(domain_threshold=0.3)


@pytest.mark.slow
def test_cnn_embeddings_clean_split_not_flagged(clean_dataset, random_weights):
    report = scan(clean_dataset, config=AuditConfig(weights=str(random_weights), workers=0))
    assert "cnn embeddings" in report.checks["domain_classifier"].metrics["features"]
    for cid in SHIFT_IDS:
        r = report.checks[cid]
        assert r.status in ("pass", "warn"), (cid, r.summary)
        _assert_json_ready(r)


def _array_context(emb: np.ndarray, labels: np.ndarray, n_train: int):
    """An AuditContext over in-memory rows: embeddings, no image properties (like tabular
    data or a table made without properties)."""
    from types import SimpleNamespace

    from splitaudit.checks.base import AuditContext
    from splitaudit.sources.base import Sample, SampleSet

    n = len(emb)
    table = SimpleNamespace(ok=np.ones(n, bool), embeddings=emb.astype(np.float16),
                            thumbs=np.zeros((n, 32, 32), np.uint8), width=np.zeros(n, np.int32),
                            height=np.zeros(n, np.int32), properties=None)
    samples = [Sample("train" if i < n_train else "val",
                      f"train[{i}]" if i < n_train else f"val[{i - n_train}]", None, str(labels[i]),
                      index=i if i < n_train else i - n_train) for i in range(n)]
    return AuditContext(SampleSet(None, ["train", "val"], samples), table, None, {}, {}, [], [],
                        AuditConfig(embeddings=False))


def test_embeddings_shift_found_with_array_indices_as_evidence():
    rng = np.random.default_rng(30)
    emb = rng.normal(size=(1500, 256))
    emb[1200:1260, :8] += 3.0  # 60 of the 300 val rows come from elsewhere
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ctx = _array_context(emb, rng.integers(0, 3, 1500), 1200)
    d = REGISTRY["domain_classifier"]().run(ctx)
    assert d.status == "fail", d.summary
    assert d.metrics["features"] == "cnn embeddings (PCA 64)"
    evidence = d.metrics["splits"]["val"]["most_val_like"]
    assert all(isinstance(i, int) and i < 60 for i in evidence)
    m = REGISTRY["embedding_mmd"]().run(ctx)
    assert m.metrics["splits"]["val"]["p_value"] < 0.01
    p = REGISTRY["property_drift"]().run(ctx)
    assert p.status == "skipped" and "No per-image properties" in p.summary
    json.dumps({c: REGISTRY[c]().run(ctx).to_dict() for c in SHIFT_IDS}, allow_nan=False)


def test_hash_only_features_are_the_exact_8x8_means_of_the_thumbnails():
    from splitaudit.checks.shift import _embedding_pcs

    rng = np.random.default_rng(31)
    ctx = _array_context(rng.normal(size=(50, 8)), np.zeros(50), 40)
    ctx.table.embeddings = None
    ctx.table.thumbs = rng.integers(0, 256, (50, 32, 32), dtype=np.uint8)
    feats, source = _embedding_pcs(ctx, ShiftConfig())
    expected = ctx.table.thumbs.astype(np.float32).reshape(50, 8, 4, 8, 4).mean(axis=(2, 4))
    np.testing.assert_array_equal(feats, expected.reshape(50, 64))
    assert feats.dtype == np.float32 and "hash-only" in source
