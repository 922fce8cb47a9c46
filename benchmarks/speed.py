"""Speed and memory of ``splitaudit scan`` end to end, beside peer tools on the same files.

What it measures
----------------
For each image set (CIFAR-10 JPEGs at 32 px, and square JPEGs of 256 px and 1024 px cut from real
photographs, see ``_bigjpegs.py``), in rounds (``--repeat``, default 3), one run of each:

* ``splitaudit scan DIR --no-embeddings`` (hash-only) and ``splitaudit scan DIR --weights W``
  (full: hashes + MobileNetV2 CNN), both with ``--no-cache`` (cold: every image is decoded) and
  ``--format json``, as a user runs them: a fresh process, so interpreter start-up, imports
  and model loading are included (the files themselves are read once before every run of every
  tool, so the page cache is warm for all alike);
* the peers, each in its own virtual environment (``peers.py``): imagededup's PHash
  (encode + ``find_duplicates``), cleanvision's exact + near duplicates, and imagededup's CNN
  encoding with random weights (its ImageNet weights are a download; same work per image; by
  default on the 1024 px set only, ``--peer-cnn-sets``), difPy with ``--peers difpy`` on sets of
  at most ``--difpy-max`` images (it compares all pairs).

Per run: wall time, CPU time of the process tree, peak memory of the process tree (PSS and RSS
summed over the tool and its workers, sampled every 0.2 s, and ``ru_maxrss`` of its largest
process), and the stage times (splitaudit's JSON ``timings``; the peers' drivers time their
imports, encoding and search). Medians over the rounds; the speed ratio splitaudit/peer is
taken per round (the two runs side by side) and its median reported.

Also: the CNN alone (``Embedder.embed`` on preloaded uint8 batches at the scan's input size,
after a warm-up batch), to set the full scan's throughput against, run two ways
(``CNN_EXECUTIONS``): as the scan runs it (the reference), and as TensorFlow runs a Keras model
by default (the previous sessions' reference, ~1.5x slower); and each splitaudit mode on
a small subset of every set, so the memory growth per image beyond the fixed part (model,
libraries) is ``(peak(N) - peak(small)) / (N - small)``.

Targets checked (2-core CPU): hash-only scan of 256 px JPEGs >= 3,000 images/s end to end and
>= 10x imagededup's PHash; full scan >= 80% of the CNN's own throughput and >= 10x imagededup's
CNN; peak memory <= 2 KB per image beyond the fixed part.

The machine's load average is recorded before and after every run: figures taken while other
processes compete for the 2 cores are not final.

Usage::

    python benchmarks/speed.py                      # everything, defaults (~10 min idle)
    python benchmarks/speed.py --quick              # small sizes, 1 round (smoke run)
    python benchmarks/speed.py --sets 256 --peers none --no-full
    python benchmarks/speed.py --n256 20000 --n1024 2000 --cifar 60000 --peer-cnn-sets none
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bigjpegs  # noqa: E402
import peers  # noqa: E402
from _common import (  # noqa: E402
    REPO, RESULTS, SHARED, RunResult, environment, ensure_extracted, markdown_table, median,
    run_timed, write_json,
)

WEIGHTS = SHARED / "models" / "mobilenet_v2_1.0_224_no_top.h5"
CIFAR_TAR = SHARED / "data" / "cifar10" / "cifar10-jpg.tar"
CIFAR_DIR = Path("/tmp/cifar")
#: Generated sets live here (reused while their parameters match).
DATA_ROOT = Path(os.environ.get("SPLITAUDIT_SPEED_DATA", "/tmp/splitaudit-speed"))
#: Images in the small subset that gives the fixed part of the memory (``--small``). It must
#: fill the fixed-size working buffers of the verifier (two threads of 1,024 candidate pairs,
#: ~70 MB in all): with 200 images they were half empty, so the growth between 200 and 5,000
#: images counted those buffers as per-image memory.
SMALL = 2000
#: Memory growth per image is only judged on sets at least this many images larger than SMALL.
MIN_MEMORY_SPAN = 2000
TARGETS = {
    "hash_256_images_per_s": 3000.0,
    "hash_256_vs_imagededup_phash": 10.0,
    "full_vs_cnn_alone": 0.8,
    "full_vs_imagededup_cnn": 10.0,
    "memory_kb_per_image": 2.0,
}
DEFAULT_PEERS = "imagededup,cleanvision"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def cifar_subset(n: int, dest_root: Path) -> Path:
    """``n`` CIFAR-10 JPEGs (80% from train, 20% from test, classes balanced) as hard links."""
    src = ensure_extracted(CIFAR_TAR, CIFAR_DIR, expected=60000)
    dest = dest_root / f"cifar-{n}"
    marker = dest / ".params.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"n": n}:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    n_train = int(round(0.8 * n))
    for split, count in (("train", n_train), ("test", n - n_train)):
        classes = sorted(p for p in (src / split).iterdir() if p.is_dir())
        per = [count // len(classes) + (i < count % len(classes)) for i in range(len(classes))]
        for cls, k in zip(classes, per):
            out = dest / split / cls.name
            out.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:k]:
                try:
                    os.link(f, out / f.name)
                except OSError:  # another file system: copy
                    shutil.copyfile(f, out / f.name)
    marker.write_text(json.dumps({"n": n}))
    return dest


def make_sets(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    """name -> (full set, small subset)."""
    out = {}
    for name in args.sets:
        if name == "cifar":
            out[name] = (cifar_subset(args.cifar, DATA_ROOT), cifar_subset(args.small, DATA_ROOT))
        else:
            size, n = int(name), getattr(args, f"n{name}")
            out[name] = (_bigjpegs.make_set(DATA_ROOT / f"jpeg{size}-{n}", n, size, log=log),
                         _bigjpegs.make_set(DATA_ROOT / f"jpeg{size}-{args.small}", args.small, size, log=log))
    return out


def warm_page_cache(root: Path) -> None:
    """Read every file once, so no tool pays for disk reads the one before it did not.

    On the VMs this was written on, the kernel evicts the page cache of files not read for a
    while (proactive reclaim): the first tool to read a set would otherwise be charged for the
    disk. "Cold" in this benchmark means no fingerprint cache, not a cold page cache.
    """
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb", buffering=0) as fh:
                while fh.read(1 << 20):
                    pass


def count_images(root: Path) -> int:
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if not f.startswith(".") and f.lower().endswith((".jpg", ".jpeg", ".png")))
    return n


# ------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------


def splitaudit_env() -> dict:
    # The checkout first on the path: the benchmark measures this working tree, whatever
    # an editable install elsewhere points at.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.fspath(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_splitaudit(mode: str, root: Path, weights: Path | None, workdir: Path) -> dict:
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "splitaudit.cli", "scan", os.fspath(root), "--format", "json",
           "--output", os.fspath(report), "--fail-on", "never", "--no-cache", "--quiet"]
    cmd += ["--no-embeddings"] if mode == "hash" else ["--weights", os.fspath(weights),
                                                       "--require-embeddings"]
    before = loadavg()
    res = run_timed(cmd, env=splitaudit_env(), cwd=os.fspath(workdir))
    if res.returncode != 0:
        raise SystemExit(f"splitaudit {mode} scan of {root} failed (exit {res.returncode}):\n"
                         + res.stderr[-2000:])
    rep = json.loads(report.read_text())
    n = sum(rep["splits"].values())
    stages = {k: round(v, 3) for k, v in rep["timings"].items()}
    stages["other"] = round(res.wall_s - sum(rep["timings"].values()), 3)
    return _record(res, n, stages, before, {"pairs": len(rep["cross_split_duplicates"])
                                            + len(rep.get("within_split_duplicates", []))})


def run_peer(peer: str, method: str, root: Path) -> dict:
    before = loadavg()
    ans, res = peers.run_method(peer, method, root, timed=True, count_only=True)
    stages = dict(ans["stages_s"])
    stages["other"] = round(res.wall_s - sum(stages.values()), 3)
    return _record(res, ans["n_images"], stages, before, {"pairs": ans["n_pairs"]})


def _record(res: RunResult, n: int, stages: dict, before: float, extra: dict) -> dict:
    return {
        "images": n, "wall_s": round(res.wall_s, 3), "images_per_s": round(n / res.wall_s, 1),
        "cpu_s": round(res.user_s + res.sys_s, 2),
        "tree_pss_mb": round(res.tree_pss_mb, 1), "tree_rss_mb": round(res.tree_rss_mb, 1),
        "max_process_rss_mb": round(res.max_process_rss_mb, 1), "peak_processes": res.peak_processes,
        "stages_s": stages, "loadavg_before": before, "loadavg_after": loadavg(), **extra,
    }


#: The CNN alone, in a fresh interpreter of ours (TensorFlow stays out of this process).
CNN_ALONE = r"""
import json, os, sys, time
import numpy as np
from PIL import Image
from splitaudit.fingerprints.embedder import DEFAULT_INPUT_SIZE, Embedder
args = json.load(open(sys.argv[1]))
s = DEFAULT_INPUT_SIZE
files = args["files"]
batch = np.stack([np.asarray(Image.open(f).convert("RGB").resize((s, s), Image.Resampling.BILINEAR))
                  for f in files]).astype(np.uint8)
emb = Embedder(weights=args["weights"], input_size=s, **args["embedder"])
emb.embed(batch[:1])  # builds the model, which decides the parts
embed, parts = emb.embed, emb.parts
if args["plain"]:  # the Keras model called as it is, the whole batch at once
    import tensorflow as tf
    model, part, parts = emb._model, emb.batch_size, 1
    @tf.function(input_signature=[tf.TensorSpec((None, s, s, 3), tf.uint8)])
    def plain(x):
        return tf.math.l2_normalize(model(tf.cast(x, tf.float32) / 127.5 - 1.0, training=False), axis=1)
    def embed(x):
        return np.concatenate([plain(x[i:i + part]).numpy() for i in range(0, len(x), part)])
embed(batch[: emb.batch_size])  # warm-up (and the plain function's trace)
rates = []
for _ in range(args["repeat"]):
    t = time.perf_counter()
    embed(batch)
    rates.append(len(batch) / (time.perf_counter() - t))
json.dump({"input_size": s, "batch_size": emb.batch_size, "parts": parts, "images": len(batch),
           "images_per_s_runs": [round(r, 1) for r in rates]}, open(sys.argv[2], "w"))
"""

#: How the CNN alone is run. "scan": as ``splitaudit scan`` runs it (default batch, parts side
#: by side, one TensorFlow thread per op, ``TF_NUM_INTRAOP_THREADS=1``, which the CLI sets):
#: the reference of the full-scan target. "tensorflow_default": the Keras model
#: called on whole batches of 64, each op split over every core, as TensorFlow runs it unless
#: told otherwise (the reference of sessions 1-4). "api": the embedder in a process whose
#: TensorFlow threading is left at its default (``splitaudit.scan`` from a user's program).
CNN_EXECUTIONS = {
    "scan": ({"TF_NUM_INTRAOP_THREADS": "1"}, {}, False),
    "tensorflow_default": ({}, {"batch_size": 64}, True),
    "api": ({}, {}, False),
}


def cnn_alone(weights: Path, root: Path, n: int, repeat: int) -> dict:
    """Throughput of ``Embedder.embed`` on preloaded images, per execution (``CNN_EXECUTIONS``).

    The top-level fields are the "scan" execution's; each execution's are under ``executions``.
    """
    files = sorted(str(p) for p in root.rglob("*.jpg"))[:n]
    found = {}
    with tempfile.TemporaryDirectory(prefix="splitaudit-cnn-") as tmp:
        script, argf, outf = Path(tmp, "cnn.py"), Path(tmp, "args.json"), Path(tmp, "out.json")
        script.write_text(CNN_ALONE)
        for name, (env_extra, kwargs, plain) in CNN_EXECUTIONS.items():
            argf.write_text(json.dumps({"files": files, "weights": os.fspath(weights), "repeat": repeat,
                                        "embedder": kwargs, "plain": plain}))
            env = splitaudit_env()
            env.pop("TF_NUM_INTRAOP_THREADS", None)
            env.update(env_extra)
            before = loadavg()
            proc = subprocess.run([sys.executable, os.fspath(script), os.fspath(argf), os.fspath(outf)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit("CNN-alone measurement failed:\n" + proc.stderr[-2000:])
            out = json.loads(outf.read_text())
            out["images_per_s"] = median(out["images_per_s_runs"])
            out["loadavg_before"], out["loadavg_after"] = before, loadavg()
            out["env"] = env_extra
            found[name] = out
    return {**found["scan"], "executions": found}


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------

TOOLS = {
    # name: (kind, what it runs)
    "splitaudit hash-only": ("splitaudit", "hash"),
    "imagededup PHash": ("peer", ("imagededup", "phash")),
    "cleanvision exact+near": ("peer", ("cleanvision", "duplicates")),
    "difPy similar": ("peer", ("difpy", "similar")),
    "splitaudit full (CNN)": ("splitaudit", "full"),
    "imagededup CNN (random weights)": ("peer", ("imagededup", "cnn")),
}
#: Which splitaudit run each peer is compared with.
COMPARE = {
    "imagededup PHash": "splitaudit hash-only",
    "cleanvision exact+near": "splitaudit hash-only",
    "difPy similar": "splitaudit hash-only",
    "imagededup CNN (random weights)": "splitaudit full (CNN)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="cifar,256,1024",
                    help="image sets to run, comma-separated: cifar, 256, 1024 (default all)")
    ap.add_argument("--cifar", type=int, default=10000, help="CIFAR-10 images (80%% train, 20%% test)")
    ap.add_argument("--n256", type=int, default=5000, help="256 px JPEGs")
    ap.add_argument("--n1024", type=int, default=500, help="1024 px JPEGs")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (medians over them)")
    ap.add_argument("--peers", default=DEFAULT_PEERS,
                    help=f"peers to run (imagededup, cleanvision, difpy) or 'none' (default {DEFAULT_PEERS})")
    ap.add_argument("--peer-cnn-sets", default="1024",
                    help="sets on which imagededup's CNN runs (it is slow: ~40 ms of CPU per image), "
                         "comma-separated, or 'none' (default 1024)")
    ap.add_argument("--difpy-max", type=int, default=1000,
                    help="run difPy (all pairs, O(N^2)) only on sets of at most this many images")
    ap.add_argument("--no-hash", action="store_true", help="skip splitaudit's hash-only scans")
    ap.add_argument("--no-full", action="store_true", help="skip splitaudit's full (CNN) scans")
    ap.add_argument("--no-memory-baseline", action="store_true",
                    help="skip the small-subset runs that give the memory growth per image")
    ap.add_argument("--small", type=int, default=SMALL,
                    help=f"images in the subset that gives the fixed part of the memory (default {SMALL})")
    ap.add_argument("--cnn-alone-images", type=int, default=1024)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1,000 CIFAR, 500 x 256 px, 100 x 1024 px, 1 round")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.cifar, args.n256, args.n1024, args.repeat, args.small = 1000, 500, 100, 1, 200
        args.cnn_alone_images = 256
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in args.sets if s not in ("cifar", "256", "1024")]
    if bad:
        ap.error(f"unknown set(s) {bad}: use cifar, 256, 1024")
    args.peers = [] if args.peers.strip() in ("", "none") else [p.strip() for p in args.peers.split(",")]
    args.peer_cnn_sets = [s.strip() for s in args.peer_cnn_sets.split(",") if s.strip() not in ("", "none")]
    if not args.no_full and not args.weights.is_file():
        log(f"weights {args.weights} not found: full (CNN) scans skipped")
        args.no_full = True
    return args


def tools_for(args: argparse.Namespace, set_name: str, n: int, ready: dict) -> list[str]:
    out = []
    for name, (kind, what) in TOOLS.items():
        if kind == "splitaudit":
            if (what == "hash" and args.no_hash) or (what == "full" and args.no_full):
                continue
        else:
            peer, method = what
            if peer not in ready:
                continue
            if method == "cnn" and set_name not in args.peer_cnn_sets:
                continue
            if peer == "difpy" and n > args.difpy_max:
                continue
        out.append(name)
    return out


def summarise(runs: list[dict]) -> dict:
    keys = ("wall_s", "images_per_s", "cpu_s", "tree_pss_mb", "tree_rss_mb", "max_process_rss_mb")
    out = {k: median([r[k] for r in runs]) for k in keys}
    out["wall_s_min"] = min(r["wall_s"] for r in runs)
    stages = sorted({s for r in runs for s in r["stages_s"]})
    out["stages_s"] = {s: round(median([r["stages_s"].get(s, 0.0) for r in runs]), 3) for s in stages}
    wall = out["wall_s"]
    out["stage_share"] = {s: round(v / wall, 3) for s, v in out["stages_s"].items()} if wall else {}
    out["images"] = runs[0]["images"]
    out["loadavg_max"] = max(max(r["loadavg_before"], r["loadavg_after"]) for r in runs)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for p in ([CIFAR_TAR] if "cifar" in args.sets else []):
        if not p.exists():
            print(f"SKIPPED: {p} is absent (benchmarks need ../shared beside the checkout)")
            return 0
    t_start = time.perf_counter()
    ready, skipped = peers.available(args.peers, log=log) if args.peers else ({}, {})
    sets = make_sets(args)
    results: dict[str, dict] = {}
    cnn = None
    with tempfile.TemporaryDirectory(prefix="splitaudit-speed-") as tmp:
        work = Path(tmp)
        if not args.no_full:
            src = sets.get("256", next(iter(sets.values())))[0]
            log(f"CNN alone: Embedder.embed on {args.cnn_alone_images} preloaded images ...")
            cnn = cnn_alone(args.weights, src, args.cnn_alone_images, max(3, args.repeat))
            for name, ex in cnn["executions"].items():
                log(f"  {name}: {ex['images_per_s']:.0f} img/s at {ex['input_size']} px, batch "
                    f"{ex['batch_size']} in {ex['parts']} parts (runs {ex['images_per_s_runs']})")
        for name, (root, small) in sets.items():
            n = count_images(root)
            tools = tools_for(args, name, n, ready)
            log(f"== set {name}: {n} images in {root}; tools: {', '.join(tools)}")
            runs: dict[str, list[dict]] = {t: [] for t in tools}
            errors: dict[str, str] = {}
            for r in range(args.repeat):
                for tool in tools:
                    if tool in errors:
                        continue
                    kind, what = TOOLS[tool]
                    warm_page_cache(root)
                    try:
                        rec = (run_splitaudit(what, root, args.weights, work) if kind == "splitaudit"
                               else run_peer(*what, root))
                    except RuntimeError as exc:  # a peer's failure is recorded, not fatal
                        errors[tool] = str(exc)
                        log(f"  {tool}: FAILED {exc}")
                        continue
                    runs[tool].append(rec)
                    log(f"  round {r + 1} {tool}: {rec['wall_s']:.2f} s ({rec['images_per_s']:.0f} img/s), "
                        f"CPU {rec['cpu_s']:.1f} s, tree PSS {rec['tree_pss_mb']:.0f} MB, "
                        f"load {rec['loadavg_before']} -> {rec['loadavg_after']}")
            res = {"images": n, "path": os.fspath(root), "tools": {}, "errors": errors}
            for tool, rs in runs.items():
                if not rs:
                    continue
                entry = {"summary": summarise(rs), "runs": rs}
                kind, what = TOOLS[tool]
                if kind == "peer":
                    entry["what"] = peers.DRIVERS[what][1]
                    base = COMPARE[tool]
                    if runs.get(base):
                        ratios = [p["wall_s"] / s["wall_s"] for p, s in zip(rs, runs[base])]
                        # CPU seconds of the whole tree: steadier than wall time on a busy machine.
                        cpu = [p["cpu_s"] / s["cpu_s"] for p, s in zip(rs, runs[base])]
                        entry["speedup_of_splitaudit"] = {
                            "vs": base, "per_round": [round(x, 2) for x in ratios],
                            "median": round(median(ratios), 2),
                            "cpu_per_round": [round(x, 2) for x in cpu], "cpu_median": round(median(cpu), 2)}
                res["tools"][tool] = entry
            # Memory growth per image: the same splitaudit runs on a small subset.
            if not args.no_memory_baseline:
                n_small = count_images(small)
                for tool in [t for t in tools if TOOLS[t][0] == "splitaudit" and runs.get(t)]:
                    warm_page_cache(small)
                    rec = run_splitaudit(TOOLS[tool][1], small, args.weights, work)
                    big = res["tools"][tool]["summary"]
                    res["tools"][tool]["memory"] = {
                        "small_images": n_small, "small_tree_pss_mb": rec["tree_pss_mb"],
                        "small_tree_rss_mb": rec["tree_rss_mb"],
                        "small_max_process_rss_mb": rec["max_process_rss_mb"],
                        "kb_per_image_pss": round((big["tree_pss_mb"] - rec["tree_pss_mb"]) * 1024 / (n - n_small), 2),
                        "kb_per_image_max_process_rss": round(
                            (big["max_process_rss_mb"] - rec["max_process_rss_mb"]) * 1024 / (n - n_small), 2),
                    }
                    log(f"  memory {tool}: {rec['tree_pss_mb']:.0f} MB at {n_small} images -> "
                        f"{big['tree_pss_mb']:.0f} MB at {n}: "
                        f"{res['tools'][tool]['memory']['kb_per_image_pss']} KB/image")
            results[name] = res

    targets = check_targets(results, cnn)
    tables = markdown(results, cnn, targets, skipped)
    payload = {
        "benchmark": "speed",
        "environment": environment(),
        "loadavg_end": loadavg(),
        "settings": {"sets": args.sets, "cifar": args.cifar, "n256": args.n256, "n1024": args.n1024,
                     "repeat": args.repeat, "peers": args.peers, "peer_cnn_sets": args.peer_cnn_sets,
                     "weights": os.fspath(args.weights) if not args.no_full else None,
                     "command_splitaudit": "python -m splitaudit.cli scan DIR --format json --output R "
                                           "--fail-on never --no-cache --quiet "
                                           "(--no-embeddings | --weights W --require-embeddings)"},
        "peers": {"versions": {p: peers.versions(p) for p in ready}, "skipped": skipped,
                  "notes": {p: list(peers.PEERS[p].notes) for p in ready if peers.PEERS[p].notes}},
        "cnn_alone": cnn,
        "sets": results,
        "targets": targets,
        "tables_markdown": tables,
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("speed-quick.json" if args.quick else "speed.json")
    write_json(path, payload)
    print(tables)
    print(f"\nWrote {path} in {payload['total_s']:.0f} s.")
    return 0


def check_targets(results: dict, cnn: dict | None) -> list[dict]:
    out = []

    def add(what: str, value, target, ok_if_ge: bool = True, note: str = "") -> None:
        ok = None if value is None else (value >= target if ok_if_ge else value <= target)
        out.append({"target": what, "value": value, "goal": (">= " if ok_if_ge else "<= ") + str(target),
                    "met": ok, "note": note})

    j256 = results.get("256", {}).get("tools", {})
    h = j256.get("splitaudit hash-only")
    if h:
        add("hash-only scan of 256 px JPEGs, images/s end to end", h["summary"]["images_per_s"],
            TARGETS["hash_256_images_per_s"])
    p = j256.get("imagededup PHash")
    if p and "speedup_of_splitaudit" in p:
        add("hash-only vs imagededup PHash on 256 px JPEGs (x)", p["speedup_of_splitaudit"]["median"],
            TARGETS["hash_256_vs_imagededup_phash"])
    for name, res in results.items():
        full = res["tools"].get("splitaudit full (CNN)")
        if full and cnn:
            fp = full["summary"]["stages_s"].get("fingerprint")
            rate = full["summary"]["images_per_s"]
            default = cnn.get("executions", {}).get("tensorflow_default")
            notes = [f"fingerprint stage alone: {round(res['images'] / fp / cnn['images_per_s'], 3)}"] if fp else []
            if default:
                notes.append(f"vs the CNN as TensorFlow runs it by default "
                             f"({default['images_per_s']:.0f} img/s): {round(rate / default['images_per_s'], 3)}")
            add(f"full scan on {name}: end-to-end img/s / CNN-alone img/s ({cnn['images_per_s']:.0f})",
                round(rate / cnn["images_per_s"], 3), TARGETS["full_vs_cnn_alone"], note="; ".join(notes))
        pc = res["tools"].get("imagededup CNN (random weights)")
        if pc and "speedup_of_splitaudit" in pc:
            add(f"full scan vs imagededup CNN on {name} (x)", pc["speedup_of_splitaudit"]["median"],
                TARGETS["full_vs_imagededup_cnn"])
        for tool in ("splitaudit hash-only", "splitaudit full (CNN)"):
            mem = res["tools"].get(tool, {}).get("memory")
            # Peaks sampled every 0.2 s vary by tens of MB between runs: the slope means
            # nothing unless the set is much larger than the small subset.
            if mem and res["images"] - mem["small_images"] >= MIN_MEMORY_SPAN:
                add(f"{tool} on {name}: peak tree PSS growth, KB/image", mem["kb_per_image_pss"],
                    TARGETS["memory_kb_per_image"], ok_if_ge=False,
                    note=f"largest process RSS: {mem['kb_per_image_max_process_rss']} KB/image")
    return out


def markdown(results: dict, cnn: dict | None, targets: list[dict], skipped: dict) -> str:
    out = []
    load = max([t["summary"]["loadavg_max"] for r in results.values() for t in r["tools"].values()] or [0])
    out.append(f"Highest 1-min load average during the runs: {load} on "
               f"{len(os.sched_getaffinity(0))} cores" + (" (machine busy: figures not final)"
                                                          if load > 2.5 else ""))
    if cnn:
        for name, ex in cnn.get("executions", {"scan": cnn}).items():
            out.append(f"\nCNN alone, {name} execution (Embedder.embed, {ex['images']} preloaded images, "
                       f"{ex['input_size']} px, batch {ex['batch_size']} in {ex.get('parts', 1)} parts"
                       f"{', ' + ' '.join(f'{k}={v}' for k, v in ex.get('env', {}).items()) if ex.get('env') else ''})"
                       f": {ex['images_per_s']:.0f} img/s (runs {ex['images_per_s_runs']})")
    for name, res in results.items():
        label = {"cifar": "CIFAR-10 32 px JPEGs"}.get(name, f"{name} px JPEGs")
        out.append(f"\n### {label}: {res['images']:,} images\n")
        rows = []
        for tool, e in res["tools"].items():
            s = e["summary"]
            st = ", ".join(f"{k} {v:.1f}" for k, v in s["stages_s"].items())
            sp = e.get("speedup_of_splitaudit", {}).get("median")
            sp_cpu = e.get("speedup_of_splitaudit", {}).get("cpu_median")
            m = e.get("memory", {})
            mem = m.get("kb_per_image_pss") if res["images"] - m.get("small_images", res["images"]) >= MIN_MEMORY_SPAN else None
            rows.append([tool, f"{s['wall_s']:.2f} (min {s['wall_s_min']:.2f})", f"{s['images_per_s']:,.0f}",
                         f"{s['cpu_s']:.1f}", f"{s['tree_pss_mb']:,.0f} / {s['max_process_rss_mb']:,.0f}",
                         "-" if mem is None else f"{mem:.2f}", st,
                         "-" if sp is None else f"{sp:.1f}x (CPU {sp_cpu:.1f}x)"])
        out.append(markdown_table(["tool", "wall s (median)", "img/s", "CPU s",
                                   "peak MB: tree PSS / largest proc RSS", "KB/image growth",
                                   "stages s (median)", "splitaudit speed-up: wall (CPU), median of rounds"], rows))
        for tool, err in res["errors"].items():
            out.append(f"\n{tool} failed: {err}")
    out.append("\n### Targets\n")
    out.append(markdown_table(["target", "measured", "goal", "met", "note"],
                              [[t["target"], t["value"], t["goal"],
                                {True: "yes", False: "NO", None: "-"}[t["met"]], t["note"]] for t in targets]))
    for p, why in skipped.items():
        out.append(f"\n{p} skipped: {why}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
