"""Known duplicate relationships in other projects' test images (../shared, skipped if absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SHARED
from splitaudit.api import scan
from splitaudit.config import AuditConfig

PEERS = SHARED / "data" / "peer-fixtures"
pytestmark = [pytest.mark.shared, pytest.mark.skipif(not PEERS.is_dir(), reason="../shared is absent")]


def _split(tmp_path: Path, train: list[Path], val: list[Path]) -> Path:
    for split, files in (("train", train), ("val", val)):
        (tmp_path / split).mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, tmp_path / split / f.name)
    return tmp_path


def _pairs(report) -> dict[tuple[str, str], str]:
    return {(Path(p.query.path).name, Path(p.reference.path).name): p.match
            for p in report.cross_split_duplicates}


def test_imagededup_transformed_copies_are_all_found(tmp_path):
    mixed = PEERS / "imagededup" / "mixed_images"
    data = _split(tmp_path, [mixed / "ukbench00120.jpg", mixed / "ukbench09268.jpg"],
                  [mixed / f"ukbench00120_{k}.jpg" for k in ("resize", "hflip", "rotation")]
                  + [mixed / "ukbench09268_corrupt.jpg", PEERS / "imagededup" / "ukbench00120_gray.jpg"])
    report = scan(data, config=AuditConfig(embeddings=False, workers=0))
    pairs = _pairs(report)
    # imagededup's own pHash finds only the resize; the flip and rotation need alignment.
    for k in ("resize", "hflip", "rotation"):
        assert pairs.get((f"ukbench00120_{k}.jpg", "ukbench00120.jpg")) == "near", k
    assert pairs.get(("ukbench00120_gray.jpg", "ukbench00120.jpg")) == "near"
    assert not any(ref == "ukbench09268.jpg" and kind != "similar" for (_, ref), kind in pairs.items())
    assert [Path(u.path).name for u in report.unreadable] == ["ukbench09268_corrupt.jpg"]


def test_imagededup_formats_are_exact_or_near(tmp_path):
    fmts = PEERS / "imagededup" / "formats_images"
    base = PEERS / "imagededup" / "base_images"
    data = _split(tmp_path, sorted(base.glob("*.jpg")), sorted(fmts.iterdir()))
    report = scan(data, config=AuditConfig(embeddings=False, workers=0))
    pairs = _pairs(report)
    for ext in ("bmp", "jpeg", "png", "svg"):  # JPEG bytes under misleading extensions
        assert pairs.get((f"ukbench09380.{ext}", "ukbench09380.jpg")) == "exact", ext
    assert pairs.get(("ukbench09380.webp", "ukbench09380.jpg")) == "near"
    others = [(q, r) for (q, r), k in pairs.items() if k != "similar" and not q.startswith("ukbench09380")]
    assert others == []


def test_cleanvision_exact_and_near_pairs(tmp_path):
    cv = PEERS / "cleanvision"
    images = sorted(cv.glob("*.png"))
    train = [f for f in images if f.name not in ("image_236.png", "image_408.png")]
    data = _split(tmp_path, train, [cv / "image_236.png", cv / "image_408.png"])
    report = scan(data, config=AuditConfig(embeddings=False, workers=0))
    pairs = _pairs(report)
    assert pairs.get(("image_236.png", "image_142.png")) == "exact"
    assert pairs.get(("image_408.png", "image_103.png")) == "near"
    assert sum(1 for k in pairs.values() if k != "similar") == 2
