"""Helpers shared by the benchmarks: shared-data lookup, tar extraction, timed subprocess runs
with peak memory of the whole process tree, markdown tables and JSON results.

Standard library only (plus numpy where a caller already needs it), so a benchmark runs in the
project's own environment without extra installs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

#: Repository root (this file is benchmarks/_common.py).
REPO = Path(__file__).resolve().parent.parent
#: Real data and weights beside the checkout (see ../shared/README.md); absent for users who
#: clone the project. ``SPLITAUDIT_SHARED`` overrides the location.
SHARED = Path(os.environ.get("SPLITAUDIT_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"


def skip(message: str) -> NoReturn:
    """Print why the benchmark cannot run and exit 0 (a skip is not a failure)."""
    print(f"SKIPPED: {message}")
    sys.exit(0)


def require_shared(*relative: str) -> list[Path]:
    """Paths inside ../shared; skips the benchmark cleanly when any is missing."""
    if not SHARED.is_dir():
        skip(f"{SHARED} is absent (benchmarks need the shared data beside the checkout)")
    paths = [SHARED / r for r in relative]
    missing = [os.fspath(p) for p in paths if not p.exists()]
    if missing:
        skip("missing shared file(s): " + ", ".join(missing))
    return paths


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def count_files(root: Path, suffix: str) -> int:
    """Files under ``root`` whose name ends with ``suffix`` (os.scandir, no stat)."""
    n, stack = 0, [os.fspath(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.name.endswith(suffix):
                    n += 1
    return n


def ensure_extracted(tar: Path, dest: Path, *, expected: int, suffix: str = ".jpg") -> Path:
    """Extract ``tar`` into ``dest`` unless ``dest`` already holds ``expected`` files.

    Extraction goes to a sibling temporary folder renamed into place at the end, so an
    interrupted run never leaves a half-extracted ``dest`` that looks complete.
    """
    if dest.is_dir() and count_files(dest, suffix) == expected:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"Extracting {tar} -> {dest} ...", flush=True)
    with tarfile.open(tar) as tf:
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(tmp, **kwargs)
    got = count_files(tmp, suffix)
    if got != expected:
        raise SystemExit(f"{tar} holds {got} '{suffix}' files, expected {expected}")
    tmp.rename(dest)
    print(f"  extracted {got} files in {time.perf_counter() - t0:.1f} s", flush=True)
    return dest


# ------------------------------------------------------------------------------------------
# Timed runs
# ------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    """ppid -> [pid] for every process visible in /proc."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; PSS falls back to RSS when smaps_rollup is missing."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
        return rss, pss
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0, 0
    return rss, rss


class TreeMemorySampler:
    """Samples the summed RSS and PSS of a process and all its descendants (Linux /proc).

    ``ru_maxrss`` from ``wait4`` is the peak of the single largest process; workers running
    beside the main process add to it, which only sampling the whole tree shows. PSS splits
    pages shared after ``fork`` between the processes, so its sum does not double count them.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemorySampler":
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = _children()
            tree, todo = [], [self.pid]
            while todo:
                p = todo.pop()
                tree.append(p)
                todo.extend(kids.get(p, ()))
            rss = pss = 0
            for p in tree:
                r, s = _memory_kb(p)
                rss, pss = rss + r, pss + s
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_procs = max(self.peak_procs, len(tree))
            self._stop.wait(self.interval)


@dataclass
class RunResult:
    """One timed subprocess run."""

    cmd: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    #: Peak RSS of the largest single process of the tree (``ru_maxrss`` from ``wait4``).
    max_process_rss_mb: float
    #: Peak of the summed RSS / PSS of the whole tree (sampled every 0.2 s).
    tree_rss_mb: float
    tree_pss_mb: float
    peak_processes: int
    stderr: str = field(repr=False, default="")


def run_timed(cmd: list[str], *, env: dict | None = None, cwd: str | None = None) -> RunResult:
    """Run ``cmd`` to completion, measuring wall/CPU time and peak memory of its process tree."""
    with open(os.devnull, "wb") as devnull:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=devnull, stderr=subprocess.PIPE, env=env, cwd=cwd)
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
        reader.start()
        with TreeMemorySampler(proc.pid) as mem:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        reader.join()
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return RunResult(
        cmd=list(cmd),
        returncode=proc.returncode,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_process_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        tree_rss_mb=mem.peak_rss_kb / 1024,
        tree_pss_mb=mem.peak_pss_kb / 1024,
        peak_processes=mem.peak_procs,
        stderr=b"".join(chunks).decode("utf-8", "replace"),
    )


def median(values: list[float]) -> float:
    """Median of a non-empty list (the middle run is what one would see)."""
    return statistics.median(values)


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def environment() -> dict:
    """Machine and package versions, recorded next to every figure."""
    import numpy

    try:
        from splitaudit import __version__ as sa_version
    except Exception:  # pragma: no cover - the benchmark still records its figures
        sa_version = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": cores,
        "numpy": numpy.__version__,
        "splitaudit": sa_version,
    }


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
