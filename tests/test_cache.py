"""The persistent cache: reuse, invalidation (touch, edit, model, version), a killed scan
resuming, corrupted or foreign cache files, concurrent scans, incremental re-matching."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from splitaudit import cache as cache_mod
from splitaudit.api import scan
from splitaudit.cache import FingerprintCache, cache_file_name, default_cache_dir
from splitaudit.config import AuditConfig
from splitaudit.extract import extract, fingerprint_identity
from splitaudit.incremental import candidate_search, match_pair
from splitaudit.matching import Matcher
from splitaudit.sources import discover
from splitaudit.synth import EXACT_FAMILIES, NEAR_FAMILIES, make_dataset, write_copy

HASH_ONLY = AuditConfig(embeddings=False, workers=0)


def cached(cache_dir: Path, **kw) -> AuditConfig:
    return AuditConfig(embeddings=False, workers=0, cache=True, cache_dir=str(cache_dir), **kw)


def age(root: Path, seconds: float = 3600) -> None:
    """Make every file old, as files are in a real dataset (fresh files are re-hashed once:
    a change within the file system's timestamp granularity would otherwise go unseen)."""
    t = time.time() - seconds
    for p in root.rglob("*"):
        os.utime(p, (t, t))


def pairs(report) -> tuple:
    cross = sorted((p.query.path, p.reference.path, p.match, round(p.ncc, 3), p.evidence)
                   for p in report.cross_split_duplicates)
    within = sorted((p.query.path, p.reference.path, p.match) for p in report.within_split_duplicates)
    bad = sorted((u.path, u.reason) for u in report.unreadable)
    return cross, within, bad


def stats(report) -> dict:
    return report.settings["cache_stats"]


@pytest.fixture()
def data(tmp_path, leaky_dataset) -> Path:
    root = tmp_path / "data"
    shutil.copytree(leaky_dataset[0], root)
    age(root)
    return root


def test_second_scan_reuses_fingerprints_and_matches(data, tmp_path):
    first = scan(data, config=cached(tmp_path / "c"))
    n = sum(first.splits.values())
    assert stats(first)["decoded"] == n and stats(first)["matches"] == "full"
    second = scan(data, config=cached(tmp_path / "c"))
    assert stats(second)["decoded"] == 0 and stats(second)["reused"] == n
    assert stats(second)["matches"] == "reused"
    plain = scan(data, config=HASH_ONLY)
    assert pairs(first) == pairs(second) == pairs(plain)
    a, b = first.to_dict(), second.to_dict()
    for doc in (a, b):
        doc.pop("timings")
        doc["settings"].pop("cache_stats")
    assert a == b
    assert Path(stats(second)["path"]).parent == tmp_path / "c"


def test_touched_file_is_rehashed_not_decoded(data, tmp_path):
    scan(data, config=cached(tmp_path / "c"))
    victim = sorted((data / "val").rglob("*.jpg"))[0]
    t = time.time() - 60  # a new mtime (what a git checkout does), old enough not to be racy
    os.utime(victim, (t, t))
    again = scan(data, config=cached(tmp_path / "c"))
    assert stats(again)["rehashed"] == 1 and stats(again)["decoded"] == 0
    assert stats(again)["matches"] == "reused"
    assert pairs(again) == pairs(scan(data, config=HASH_ONLY))
    # The new mtime was recorded: the next scan does not even read the file.
    third = scan(data, config=cached(tmp_path / "c"))
    assert stats(third)["rehashed"] == 0 and stats(third)["matches"] == "reused"


def test_recently_modified_files_are_rehashed_until_old_enough(tmp_path):
    """git's "racily clean" rule: a file modified within 2 s of being checked could change again
    without its (size, mtime) changing, so it is re-hashed (never decoded) until it is older."""
    root = tmp_path / "fresh"
    make_dataset(root, classes=2, train_per_class=5, val_per_class=2, size=48, seed=1)
    n = 14
    first = scan(root, config=cached(tmp_path / "c"))
    assert stats(first)["decoded"] == n
    second = scan(root, config=cached(tmp_path / "c"))
    assert stats(second)["rehashed"] == n and stats(second)["decoded"] == 0
    assert stats(second)["matches"] == "reused"
    age(root)
    assert stats(scan(root, config=cached(tmp_path / "c")))["rehashed"] == n  # new mtimes: hashed once
    last = scan(root, config=cached(tmp_path / "c"))
    assert stats(last)["rehashed"] == 0 and stats(last)["reused"] == n


def test_edited_file_is_fingerprinted_again(data, tmp_path):
    first = scan(data, config=cached(tmp_path / "c"))
    victim = sorted((data / "val" / "class_1").glob("val_*.jpg"))[0]
    source = sorted((data / "train" / "class_2").glob("*.jpg"))[5]
    write_copy(source, victim, "jpeg", np.random.default_rng(0))  # same path, new content
    again = scan(data, config=cached(tmp_path / "c"))
    assert stats(again)["decoded"] == 1
    assert stats(again)["matches"].startswith("incremental")
    found = {(p.query.path, p.reference.path): p.match for p in again.cross_split_duplicates}
    vp, sp = victim.relative_to(data).as_posix(), source.relative_to(data).as_posix()
    assert found.get((vp, sp)) == "near"
    assert (vp, sp) not in {(p.query.path, p.reference.path) for p in first.cross_split_duplicates}
    assert pairs(again) == pairs(scan(data, config=HASH_ONLY))


def test_incremental_rematch_matches_a_full_rescan(data, tmp_path):
    """Add, remove, edit and touch files in rounds; the cached scan must report what a fresh
    scan reports (it may only ever add pairs; on these rounds it adds none)."""
    rng, nrng = random.Random(5), np.random.default_rng(5)
    families = EXACT_FAMILIES + NEAR_FAMILIES
    scan(data, config=cached(tmp_path / "c"))
    for step in range(6):
        files = sorted(p for p in data.rglob("*.*") if p.is_file())
        op = step % 3
        if op == 0:
            for k in range(3):
                src = rng.choice(files)
                split = rng.choice(["train", "val", "test"])
                write_copy(src, data / split / src.parent.name / f"new_{step}_{k}.jpg",
                           rng.choice(families), nrng)
        elif op == 1:
            for f in rng.sample(files, 3):
                f.unlink()
        else:
            for a, b in [rng.sample(files, 2) for _ in range(3)]:
                tmp = b.with_name("tmp-" + b.name)
                write_copy(a, tmp, "jpeg", nrng)
                os.replace(tmp, b)
        inc = scan(data, config=cached(tmp_path / "c"))
        full = scan(data, config=HASH_ONLY)
        assert stats(inc)["matches"].startswith("incremental"), stats(inc)
        assert stats(inc)["decoded"] == (3 if op != 1 else 0)
        assert pairs(inc) == pairs(full), step


def test_match_pair_mirrors_matcher_match(leaky_dataset):
    samples = discover(leaky_dataset[0])
    table = extract(samples.samples, workers=0)
    matcher = Matcher(table)
    rows = {s: np.asarray([i for i, x in enumerate(samples.samples) if x.split == s]) for s in samples.splits}
    for q, r in (("val", "train"), ("test", "train"), ("test", "val")):
        a = matcher.match(rows[q], rows[r])
        b, cand, _ = match_pair(matcher, rows[q], rows[r])
        assert np.array_equal(a.query, b.query) and np.array_equal(a.reference, b.reference)
        assert np.array_equal(a.kind, b.kind) and a.evidence == b.evidence
        assert {(int(x), int(y)) for x, y in zip(a.query, a.reference)} <= {tuple(c) for c in cand.tolist()}
        ok_q, ok_r = rows[q][table.ok[rows[q]]], rows[r][table.ok[rows[r]]]
        mine, floors = candidate_search(matcher, ok_q, ok_r)
        assert np.array_equal(mine, matcher.candidates(ok_q, ok_r))
        assert set(floors) == {"thumb", "thumb_flip"} and all(len(f) == len(ok_q) for f in floors.values())


def test_matcher_settings_are_part_of_the_key(data, tmp_path):
    scan(data, config=cached(tmp_path / "c"))
    from splitaudit.matching import MatchConfig

    strict = scan(data, config=cached(tmp_path / "c", match=MatchConfig(near_threshold=0.99)))
    assert stats(strict)["matches"] == "full" and stats(strict)["decoded"] == 0
    assert pairs(strict) == pairs(scan(data, config=AuditConfig(embeddings=False, workers=0,
                                                                match=MatchConfig(near_threshold=0.99))))


# ------------------------------------------------------------------------- models and versions


class FakeEmbedder:
    """Stands in for the CNN: the identity and call count are what the cache sees."""

    dim, input_size, batch_size = 8, 32, 16
    ready = True  # no model to build: start_build and wait_build have nothing to do

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def start_build(self) -> None:
        pass

    def wait_build(self) -> None:
        pass

    def identity(self) -> str:
        return f"fake|{self.name}"

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.calls += len(images)
        x = images.reshape(len(images), -1, 3).astype(np.float32)
        seed = sum(map(ord, self.name))
        feats = np.concatenate([x.mean(1), x.std(1), np.full((len(x), 2), seed % 7 + 1.0)], axis=1)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def _extract(samples, cache_dir, embedder=None):
    cache = FingerprintCache.open(samples.root, cache_dir)
    cache.configure(fingerprint_identity(embedder), embedder.identity() if embedder else None)
    try:
        table = extract(samples.samples, embedder=embedder, workers=0, cache=cache)
        return table, cache.stats
    finally:
        cache.close()


def test_model_change_invalidates_embeddings_but_not_hashes(data, tmp_path):
    samples = discover(data)
    n = len(samples.samples)
    a = FakeEmbedder("a")
    t1, s1 = _extract(samples, tmp_path / "c", a)
    assert a.calls == n and s1.embedded == n
    a2 = FakeEmbedder("a")
    t2, s2 = _extract(samples, tmp_path / "c", a2)
    assert a2.calls == 0 and s2.decoded == 0
    assert np.array_equal(t1.embeddings, t2.embeddings) and t2.embeddings.dtype == np.float16
    b = FakeEmbedder("b")
    t3, s3 = _extract(samples, tmp_path / "c", b)
    assert b.calls == n  # embeddings of another model are never reused
    assert not np.array_equal(t3.embeddings, t1.embeddings)
    assert np.array_equal(t3.thumbs, t1.thumbs)
    # A hash-only scan decodes at 64 px, a CNN scan at 128 px: the hash-only fingerprints are
    # its own (decoded once), then reused by the next hash-only scan.
    t4, s4 = _extract(samples, tmp_path / "c", None)
    assert s4.decoded == n and t4.embeddings is None
    t5, s5 = _extract(samples, tmp_path / "c", None)
    assert s5.decoded == 0 and s5.reused == n and np.array_equal(t5.phash, t4.phash)
    # Model a's embeddings were dropped when b took over: a computes them again.
    a3 = FakeEmbedder("a")
    _extract(samples, tmp_path / "c", a3)
    assert a3.calls == n


def test_new_splitaudit_version_invalidates_fingerprints(data, tmp_path, monkeypatch):
    samples = discover(data)
    n = len(samples.samples)
    _extract(samples, tmp_path / "c")
    assert _extract(samples, tmp_path / "c")[1].decoded == 0
    monkeypatch.setattr(cache_mod, "__version__", "999.0")
    assert _extract(samples, tmp_path / "c")[1].decoded == n


def test_decode_settings_are_part_of_the_fingerprint_identity():
    small, other = FakeEmbedder("a"), FakeEmbedder("b")  # input 32 px: decoded at 128 px
    assert fingerprint_identity(small) == fingerprint_identity(other)
    assert fingerprint_identity(None) != fingerprint_identity(small)  # hash-only: 64 px
    big = FakeEmbedder("a")
    big.input_size = 224
    assert fingerprint_identity(big) != fingerprint_identity(None)
    assert fingerprint_identity(None, max_pixels=1000) != fingerprint_identity(None)


# ------------------------------------------------------------------------- crashes and damage


KILL_SCRIPT = r"""
import os, signal, sys
import splitaudit.cache as c
c.COMMIT_SECONDS = 1e9            # commit on the row count only: deterministic
from splitaudit.cache import FingerprintCache
from splitaudit.extract import extract, fingerprint_identity
from splitaudit.sources import discover
samples = discover(sys.argv[1])
cache = FingerprintCache.open(samples.root, sys.argv[2])
cache.configure(fingerprint_identity(None), None)
def progress(stage, done, total):
    if done >= int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)   # no clean-up, no atexit: a real crash
extract(samples.samples, workers=0, cache=cache, progress=progress)
"""


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    make_dataset(root, classes=5, train_per_class=120, val_per_class=20, size=40, seed=3)
    age(root)
    return root


def test_killed_scan_resumes_from_what_it_committed(big_dataset, tmp_path):
    samples = discover(big_dataset)
    n = len(samples.samples)
    assert n == 700
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(big_dataset), str(tmp_path / "c"), "600"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    table, st = _extract(samples, tmp_path / "c")
    committed = cache_mod.COMMIT_ROWS
    assert st.reused == committed and st.decoded == n - committed
    plain = extract(samples.samples, workers=0)
    for name in ("ok", "file_digest", "pixel_digest", "phash", "phash_flip", "thumbs", "width", "height"):
        assert np.array_equal(getattr(table, name), getattr(plain, name)), name
    assert _extract(samples, tmp_path / "c")[1].decoded == 0


def _db(cache_dir: Path, root: Path) -> Path:
    return cache_dir / cache_file_name(root)


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(5000))


def _foreign(path: Path) -> None:
    path.unlink()  # another application's SQLite file in its place
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.execute("INSERT INTO notes VALUES ('someone else''s data')")
    conn.commit()
    conn.close()


def _old_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _scribbled(path: Path) -> None:
    """Valid header, garbage over the pages after it."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    data[4096:] = rng.integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_garbage, _foreign, _old_schema, _truncated, _scribbled])
def test_damaged_cache_is_reported_moved_aside_and_rebuilt(data, tmp_path, damage):
    cache_dir = tmp_path / "c"
    first = scan(data, config=cached(cache_dir))
    db = _db(cache_dir, data)
    assert db.exists()
    conn = sqlite3.connect(db)  # fold the WAL into the main file, then damage it
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    damage(db)
    notices: list[str] = []
    again = scan(data, config=cached(cache_dir), notice=notices.append)
    assert pairs(again) == pairs(first)
    assert notices and any("cache" in n for n in notices), notices
    assert any(n.startswith("cache:") for n in again.notes)
    assert list(cache_dir.glob("*.bad-*")), "the damaged file is kept aside, not deleted"
    # Damage found on opening is rebuilt by the same scan; damage found only while reading rows
    # (pages behind a valid header) disables the cache for that scan and is rebuilt by the next.
    later = [scan(data, config=cached(cache_dir)) for _ in range(2)]
    assert stats(later[-1])["matches"] == "reused" and stats(later[-1])["decoded"] == 0
    assert all(pairs(r) == pairs(first) for r in later)
    if damage is not _scribbled:
        assert stats(later[0])["matches"] == "reused"


def test_unwritable_cache_dir_disables_the_cache_with_a_notice(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    notices: list[str] = []
    report = scan(data, config=cached(blocker / "sub"), notice=notices.append)
    assert "cache_stats" not in report.settings and any("cache disabled" in n for n in notices)
    assert pairs(report) == pairs(scan(data, config=HASH_ONLY))


def test_concurrent_scans_share_one_cache(data, tmp_path):
    cmd = [sys.executable, "-m", "splitaudit.cli", "scan", str(data), "--no-embeddings", "--format", "json",
           "--cache-dir", str(tmp_path / "c"), "--workers", "0", "-q"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [1, 1, 1], [o[1] for o in outs]
    docs = [json.loads(o[0]) for o in outs]
    got = [sorted((d["query"]["path"], d["reference"]["path"], d["match"]) for d in doc["cross_split_duplicates"])
           for doc in docs]
    assert got[0] == got[1] == got[2]
    last = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout)
    assert last["settings"]["cache_stats"]["matches"] == "reused"
    assert last["settings"]["cache_stats"]["decoded"] == 0


# ------------------------------------------------------------------------- location and flags


def test_default_location_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "splitaudit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "splitaudit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "splitaudit"


def test_cli_cache_flags(data, tmp_path, monkeypatch):
    from splitaudit.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["scan", str(data), "--no-embeddings", "-q", "--no-cache", "-o", str(tmp_path / "r.txt")]) == 1
    assert not (tmp_path / "xdg").exists()
    assert main(["scan", str(data), "--no-embeddings", "-q", "-o", str(tmp_path / "r.txt")]) == 1
    assert _db(tmp_path / "xdg" / "splitaudit", data).exists()
    assert main(["scan", str(data), "--no-embeddings", "-q", "--cache-dir", str(tmp_path / "mine"),
                 "-o", str(tmp_path / "r.txt")]) == 1
    assert _db(tmp_path / "mine", data).exists()
    assert not list(data.rglob("*.sqlite3")), "nothing is written into the dataset"


EMBED_SCRIPT = r"""
import json, sys
from splitaudit.api import scan
from splitaudit.config import AuditConfig
config = AuditConfig(weights=sys.argv[2], input_size=32, workers=0, require_embeddings=True,
                     cache=True, cache_dir=sys.argv[3])
report = scan(sys.argv[1], config=config)
print(json.dumps({"stats": report.settings["cache_stats"], "tf": "tensorflow" in sys.modules,
                  "pairs": sorted([p.query.path, p.reference.path, p.match, p.cosine is not None]
                                  for p in report.cross_split_duplicates)}))
"""


@pytest.mark.slow
def test_cached_cnn_scan_needs_no_tensorflow_the_second_time(data, tmp_path, random_weights):
    def run() -> dict:
        proc = subprocess.run([sys.executable, "-c", EMBED_SCRIPT, str(data), str(random_weights),
                               str(tmp_path / "c")], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    n = len(list(data.rglob("*.*")))
    assert first["stats"]["embedded"] > 0 and first["tf"]
    assert second["stats"]["matches"] == "reused" and second["stats"]["embedded"] == 0
    assert not second["tf"], "a fully cached scan with embeddings must not load TensorFlow"
    assert second["pairs"] == first["pairs"] and n > 0
    victim = sorted((data / "val").rglob("*.jpg"))[0]
    victim.write_bytes(sorted((data / "train").rglob("*.jpg"))[3].read_bytes())
    third = run()
    assert third["stats"]["decoded"] == 0 and third["stats"]["rehashed"] == 1  # known bytes
    assert third["stats"]["embedded"] == 0 and third["stats"]["matches"].startswith("incremental")
