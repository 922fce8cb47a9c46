"""Re-scan cost with the persistent cache: CIFAR-10 (60,000 JPEGs), hash-only.

1. a first scan with a cold cache (``splitaudit scan --no-embeddings``);
2. a second scan of the unchanged dataset (and ``splitaudit check``, the pre-commit path);
3. 10 files changed (5 test images replaced by copies of train images, 5 train images
   re-encoded): how many files were fingerprinted again, how long it took, and (``--verify``,
   default on) whether the incremental result equals a full scan without the cache;
4. ``splitaudit --version`` start-up (the hook's import cost floor), median of 10.

The dataset is never modified: the scans run on a tree of hard links (symlinks when /tmp is
another file system) to the extracted CIFAR-10 folder, and a changed file is a new file moved
over its link, so the original stays as it was. Caches go to a temporary folder.

    python benchmarks/rescan.py                  # /tmp/cifar if complete, else extract ../shared's tar
    python benchmarks/rescan.py --data /tmp/cifar --repeat 5 --no-verify
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    RESULTS,
    count_files,
    ensure_extracted,
    environment,
    markdown_table,
    require_shared,
    run_timed,
    write_json,
)

EXPECTED = 60_000


def splitaudit_cmd() -> list[str]:
    exe = shutil.which("splitaudit")
    return [exe] if exe else [sys.executable, "-m", "splitaudit.cli"]


def link_tree(src: Path, dst: Path) -> str:
    """Mirror ``src`` under ``dst`` with hard links (or symlinks); returns the kind used."""
    kind = "hardlink"
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            s, d = os.path.join(dirpath, name), target / name
            if kind == "hardlink":
                try:
                    os.link(s, d)
                    continue
                except OSError:
                    kind = "symlink"
            os.symlink(s, d)
    return kind


def replace_file(path: Path, data: bytes) -> None:
    """Put new bytes at ``path`` without touching the file its link points to."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def change_ten(tree: Path) -> list[dict]:
    """5 test images become byte copies of train images (planted exact leaks); 5 train images
    are re-encoded (new bytes, same picture)."""
    from PIL import Image

    changes = []
    classes = sorted(p.name for p in (tree / "test").iterdir())
    for i, cls in enumerate(classes[:5]):
        victim = sorted((tree / "test" / cls).iterdir())[100 + i]
        source = sorted((tree / "train" / cls).iterdir())[200 + i]
        replace_file(victim, source.read_bytes())
        changes.append({"path": victim.relative_to(tree).as_posix(), "change": "copy of",
                        "source": source.relative_to(tree).as_posix()})
    import io

    for i, cls in enumerate(classes[5:10]):
        victim = sorted((tree / "train" / cls).iterdir())[300 + i]
        with Image.open(victim) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=80)
        replace_file(victim, buf.getvalue())
        changes.append({"path": victim.relative_to(tree).as_posix(), "change": "re-encoded"})
    return changes


def run_scan(cmd: list[str], out: Path) -> tuple[float, dict]:
    res = run_timed(cmd + ["-o", str(out)])
    if res.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
    doc = json.loads(out.read_text())
    return res.wall_s, doc


def pair_set(doc: dict) -> set:
    return {(p["query"]["path"], p["reference"]["path"], p["match"]) for p in doc["cross_split_duplicates"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="extracted CIFAR-10 (train/, test/; 60,000 jpgs)")
    ap.add_argument("--extract-to", type=Path, default=Path("/tmp/splitaudit-cifar10"))
    ap.add_argument("--repeat", type=int, default=5, help="runs of each warm measurement (median)")
    ap.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                    help="compare the incremental result with a full scan without cache (+1 cold scan)")
    ap.add_argument("--output", type=Path, default=RESULTS / "rescan.json")
    args = ap.parse_args()

    if args.data is None:
        if Path("/tmp/cifar").is_dir() and count_files(Path("/tmp/cifar"), ".jpg") == EXPECTED:
            args.data = Path("/tmp/cifar")
        else:
            (tar,) = require_shared("data/cifar10/cifar10-jpg.tar")
            args.data = ensure_extracted(tar, args.extract_to, expected=EXPECTED)
    if count_files(args.data, ".jpg") != EXPECTED:
        raise SystemExit(f"{args.data} does not hold {EXPECTED} jpgs")

    work = Path(tempfile.mkdtemp(prefix="splitaudit-rescan-"))
    try:
        tree = work / "cifar10"
        t0 = time.perf_counter()
        link_kind = link_tree(args.data, tree)
        print(f"Linked {args.data} -> {tree} ({link_kind}s) in {time.perf_counter() - t0:.1f} s", flush=True)
        cache_dir = work / "cache"
        sa = splitaudit_cmd()
        scan = sa + ["scan", str(tree), "--no-embeddings", "--format", "json", "--fail-on", "never",
                     "--cache-dir", str(cache_dir), "-q"]
        check = sa + ["check", str(tree), "--cache-dir", str(cache_dir), "--fail-on", "never", "-q",
                      "--baseline", str(work / "none.json")]
        load = [os.getloadavg()[0]]

        print("First scan (cold cache) ...", flush=True)
        first_s, first = run_scan(scan, work / "first.json")
        print(f"  {first_s:.1f} s; {first['settings']['cache_stats']}", flush=True)
        db = Path(first["settings"]["cache_stats"]["path"])
        db_mb = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6

        second, seconds, texts, checks = None, [], [], []
        text_scan = [a for a in scan if a not in ("--format", "json")] + ["-o", str(work / "second.txt")]
        for _ in range(args.repeat):  # interleaved, so load changes hit all three alike
            s, second = run_scan(scan, work / "second.json")
            seconds.append(s)
            texts.append(run_timed(text_scan).wall_s)
            checks.append(run_timed(check).wall_s)
        print(f"Second scan (unchanged), JSON report: median {statistics.median(seconds):.2f} s of "
              f"{[round(x, 2) for x in seconds]}", flush=True)
        print(f"Second scan (unchanged), text report: median {statistics.median(texts):.2f} s", flush=True)
        print(f"check (unchanged): median {statistics.median(checks):.2f} s", flush=True)
        assert pair_set(second) == pair_set(first), "a reused result must equal the first scan"

        changes = change_ten(tree)
        changed_s, changed = run_scan(scan, work / "changed.json")
        cs = changed["settings"]["cache_stats"]
        print(f"10 files changed: {changed_s:.2f} s; {cs}", flush=True)
        planted = {(c["path"], c["source"]) for c in changes if c["change"] == "copy of"}
        got = {(q, r) for q, r, m in pair_set(changed) if m == "exact"}
        found_planted = len(planted & got)
        after, afters = None, []
        for _ in range(args.repeat):
            s, after = run_scan(scan, work / "after.json")
            afters.append(s)

        verify = None
        if args.verify:
            print("Full scan without cache, for comparison ...", flush=True)
            full_s, full = run_scan(sa + ["scan", str(tree), "--no-embeddings", "--format", "json",
                                          "--fail-on", "never", "--no-cache", "-q"], work / "full.json")
            a, b = pair_set(changed), pair_set(full)
            verify = {"full_scan_s": round(full_s, 2), "equal": a == b, "only_incremental": len(a - b),
                      "only_full": len(b - a)}
            print(f"  {verify}", flush=True)

        work_report_bytes = (work / "second.json").stat().st_size
        versions = []
        for _ in range(10):
            versions.append(run_timed(sa + ["--version"]).wall_s)
        load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    second_med = statistics.median(seconds)
    result = {
        "benchmark": "rescan",
        "environment": environment(),
        "dataset": os.fspath(args.data),
        "images": sum(first["splits"].values()),
        "link_kind": link_kind,
        "loadavg_1min": {"before": round(load[0], 2), "after": round(load[1], 2)},
        "cache_size_mb": round(db_mb, 1),
        "first_scan": {"wall_s": round(first_s, 2), "timings": first["timings"],
                       "cache": first["settings"]["cache_stats"]},
        "second_scan": {"wall_s_median": round(second_med, 3), "wall_s_runs": [round(s, 3) for s in seconds],
                        "timings": second["timings"], "cache": second["settings"]["cache_stats"],
                        "speedup": round(first_s / second_med, 1),
                        "report_mb": round((work_report_bytes or 0) / 1e6, 1)},
        "second_scan_text": {"wall_s_median": round(statistics.median(texts), 3),
                             "wall_s_runs": [round(s, 3) for s in texts],
                             "speedup": round(first_s / statistics.median(texts), 1)},
        "check_unchanged": {"wall_s_median": round(statistics.median(checks), 3),
                            "wall_s_runs": [round(s, 3) for s in checks]},
        "ten_changed": {"wall_s": round(changed_s, 2), "timings": changed["timings"], "cache": cs,
                        "changes": changes, "planted_leaks_found": f"{found_planted}/{len(planted)}",
                        "next_scan_wall_s_median": round(statistics.median(afters), 3),
                        "next_scan_matches": after["settings"]["cache_stats"]["matches"],
                        "verify_against_full_scan": verify},
        "version_startup": {"wall_s_median": round(statistics.median(versions), 3),
                            "wall_s_runs": [round(s, 3) for s in versions]},
        "targets": {"second_scan_s": 2.0, "speedup": 50, "version_s": 0.5},
    }
    write_json(args.output, result)

    rows = [
        ["first scan, cold cache", f"{first_s:.1f} s", f"decoded {first['settings']['cache_stats']['decoded']}", ""],
        ["second scan, unchanged, JSON report (median)", f"{second_med:.2f} s", "decoded 0, matches reused",
         f"{first_s / second_med:.0f}x faster than the first"],
        ["second scan, unchanged, text report (median)", f"{statistics.median(texts):.2f} s", "same",
         f"{first_s / statistics.median(texts):.0f}x faster"],
        ["`splitaudit check`, unchanged (median)", f"{statistics.median(checks):.2f} s", "hook path", ""],
        ["10 files changed", f"{changed_s:.2f} s", f"decoded {cs['decoded']}, rehashed {cs['rehashed']}, "
         f"matches {cs['matches']}", f"planted leaks found {found_planted}/{len(planted)}"],
        ["next scan after the change (median)", f"{statistics.median(afters):.2f} s",
         after["settings"]["cache_stats"]["matches"], ""],
        ["`splitaudit --version` (median of 10)", f"{statistics.median(versions):.3f} s", "", ""],
    ]
    if verify:
        rows.insert(5, ["full scan without cache (verify)", f"{verify['full_scan_s']:.1f} s",
                        "same pairs as incremental" if verify["equal"] else
                        f"differs: +{verify['only_incremental']} / -{verify['only_full']}", ""])
    print()
    print(markdown_table(["run (CIFAR-10, 60,000 images, hash-only)", "wall", "work", "note"], rows))
    print(f"\ncache database: {db_mb:.1f} MB; load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after; "
          f"{result['environment']['cores']} cores")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
