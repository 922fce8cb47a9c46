"""Calibration, power and runtime of the shift checks (issue #3) on real images.

Every registered check whose class has a ``flags`` attribute (``domain_classifier``,
``embedding_mmd``, ``label_shift``, ``property_drift``, ``difficulty``, ...) runs on
train/val splits cut from a fingerprinted pool of Fashion-MNIST and CIFAR-10 images:

* **Calibration**: ``--splits`` random splits (``--train`` vs ``--val`` samples, classes as
  balanced as a random split leaves them). A valid test gives p-values close to uniform: the
  script prints each check's false-alarm rate (status ``fail``), its rate of p < alpha, and the
  Kolmogorov-Smirnov distance of its p-values from U(0, 1); and the verdict-level false-alarm
  rate (target: the verdict says OK in >= 95% of random splits at alpha 0.05).
* **Power**: ``--reps`` splits per planted shift, with val drawn with a class-prior shift
  (total variation ``--prior-shift``), brighter (x ``--brightness``), blurred (Gaussian
  ``--blur-radius``), re-encoded as JPEG (``--jpeg-quality``), made of the most prototypical
  samples of each class (closest to the class mean embedding), or taken as Keras
  ``validation_split`` takes it from label-sorted data (the last fraction). Detection = status
  ``fail``; target: every shift detected by at least one check in >= 90% of the reps.
* **Runtime**: every check once on CIFAR-10's own split (50,000 train vs 10,000 test, 1280-d
  embeddings already computed), against the full scan's wall time
  (``results/cifar10_scan.json``, ~253 s); target: all checks together <= 20% of it.

Images are real files (Fashion-MNIST written as PNG, CIFAR-10 JPEGs from the shared tar,
transformed copies written beside them) fingerprinted once by ``splitaudit.extract.extract``
(decode, hashes, properties, MobileNetV2 embeddings) and kept under ``--workdir``
(``/tmp/splitaudit-calib``); see ``_shiftdata.py``. Needs ``../shared`` (skips with exit 0
otherwise)::

    python benchmarks/shift_calibration.py                       # defaults (see README for times)
    python benchmarks/shift_calibration.py --datasets fmnist --splits 5 --reps 2 --train 2000 --val 1000
    python benchmarks/shift_calibration.py --skip-runtime --shifts prior,ordered

Results: ``benchmarks/results/shift_calibration.json`` (runs with other sizes or subsets get a
suffix, so a quick run never overwrites the figures of a full one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    RESULTS,
    SHARED,
    ensure_extracted,
    environment,
    markdown_table,
    require_shared,
    write_json,
)

# Benchmark the checkout this script belongs to, whatever is installed.
sys.path.insert(1, os.fspath(REPO))

DATASETS = ("fmnist", "cifar10")
SHIFTS = ("prior", "brightness", "blur", "jpeg", "prototypical", "ordered")
SHIFT_TITLES = {
    "prior": "class-prior shift",
    "brightness": "brightness",
    "blur": "Gaussian blur",
    "jpeg": "JPEG re-encode",
    "prototypical": "most prototypical per class",
    "ordered": "validation_split of label-sorted data",
}
IMAGE_SHIFTS = ("brightness", "blur", "jpeg")
CIFAR_TAR = "data/cifar10/cifar10-jpg.tar"
FMNIST_DIR = "data/fashion-mnist"
WEIGHTS = "models/mobilenet_v2_1.0_224_no_top.h5"
#: Full CNN scan of CIFAR-10 when results/cifar10_scan.json is absent (commit 464aed2).
SCAN_WALL_S = 253.0
RUNTIME_BUDGET = 0.20
CALIBRATION_TARGET = 0.95
POWER_TARGET = 0.90
#: Defaults; a run with other values writes a suffixed JSON.
DEFAULTS = dict(train=10000, val=10000, splits=50, reps=10, fmnist_pool=30000, cifar_pool=60000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: fmnist, cifar10")
    p.add_argument("--train", type=int, default=DEFAULTS["train"], help="train samples per split")
    p.add_argument("--val", type=int, default=DEFAULTS["val"], help="val samples per split")
    p.add_argument("--splits", type=int, default=DEFAULTS["splits"], help="random splits for calibration")
    p.add_argument("--reps", type=int, default=DEFAULTS["reps"], help="splits per planted shift")
    p.add_argument("--shifts", default=",".join(SHIFTS), help="comma-separated: " + ", ".join(SHIFTS)
                   + " (empty: calibration only)")
    p.add_argument("--fmnist-pool", type=int, default=DEFAULTS["fmnist_pool"],
                   help="Fashion-MNIST images written and fingerprinted (of 70,000)")
    p.add_argument("--cifar-pool", type=int, default=DEFAULTS["cifar_pool"],
                   help="CIFAR-10 images the splits are drawn from (of 60,000)")
    p.add_argument("--prior-shift", type=float, default=0.10,
                   help="total variation distance of val's class priors from uniform (half the "
                   "classes up, half down)")
    p.add_argument("--brightness", type=float, default=1.10, help="pixel value factor of the brightness shift")
    p.add_argument("--blur-radius", type=float, default=1.0, help="Gaussian blur radius (pixels)")
    p.add_argument("--jpeg-quality", type=int, default=50, help="quality of the JPEG re-encoding shift")
    p.add_argument("--no-embeddings", action="store_true",
                   help="hash-only tables (the checks' thumbnail fallback); no TensorFlow")
    p.add_argument("--skip-runtime", action="store_true", help="skip the CIFAR-10 50k vs 10k timing")
    p.add_argument("--runtime-repeat", type=int, default=1, help="timing runs per check (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="decoding processes for fingerprinting")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "splitaudit-calib",
                   help="images and fingerprints kept between runs")
    p.add_argument("--cifar-data", type=Path, help="an extracted CIFAR-10 folder (default: extract "
                   "the shared tar to /tmp/splitaudit-cifar10)")
    p.add_argument("--weights", type=Path, help="CNN weights (default ../shared/" + WEIGHTS + ")")
    p.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    p.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                   help="merge the results of per-dataset runs (same sizes) into one JSON and "
                   "print its tables; nothing is computed")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.shifts = [s for s in args.shifts.split(",") if s]
    bad = [d for d in args.datasets if d not in DATASETS] + [s for s in args.shifts if s not in SHIFTS]
    if bad:
        p.error(f"unknown dataset(s) or shift(s): {', '.join(bad)}")
    if min(args.train, args.val) < 10 or args.splits < 0 or args.reps < 0 or args.runtime_repeat < 1:
        p.error("--train and --val must be >= 10, --splits and --reps >= 0, --runtime-repeat >= 1")
    if not 0 <= args.prior_shift < 0.5:
        p.error("--prior-shift must be in [0, 0.5)")
    return args


# ------------------------------------------------------------------------------------------
# The checks under test
# ------------------------------------------------------------------------------------------


def shift_checks() -> list[type]:
    """Registered checks with a ``flags`` attribute (the shift / easier checks), in run order."""
    from splitaudit.checks import REGISTRY

    found = [c for c in REGISTRY.values() if getattr(c, "flags", None)]
    if not found:
        raise SystemExit("No shift checks are registered yet (no class in splitaudit.checks.REGISTRY "
                         "has a non-None 'flags'): nothing to calibrate.")
    return found


def order_test_fn():
    """``splitaudit.stats.order_test`` (the Keras validation_split ordering test) if it exists."""
    try:
        from splitaudit.stats import order_test
    except ImportError:
        return None
    return order_test


def shift_config():
    """The ShiftConfig the checks read by default (alpha and thresholds recorded in the JSON)."""
    try:
        from splitaudit.checks.shift import ShiftConfig
    except ImportError:
        return None
    return ShiftConfig()


def _metric(m: dict, key: str) -> float | None:
    v = m.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def library_verdict(results: list, alpha: float) -> tuple[str, str]:
    """(status, how) of the verdict over the shift checks' results.

    Uses ``splitaudit.report.decide_verdict`` when it takes the check results (issue #3);
    otherwise applies the rule the issue specifies: Holm across the shift checks' p-values
    at alpha, and the effect size at or above the check's threshold.
    """
    import inspect

    from splitaudit import report

    params = inspect.signature(report.decide_verdict).parameters
    if "checks" in params:
        kw = {"alpha": alpha} if "alpha" in params else {}
        v = report.decide_verdict([], [], fail_on="near", max_leak_rate=0.0,
                                  checks={r.id: r for r in results}, **kw)
        return v.status, "splitaudit.report.decide_verdict"
    return holm_verdict(results), "Holm + effect threshold (benchmark's own; decide_verdict takes no checks)"


def holm_verdict(results: list) -> str:
    tested = []
    for r in results:
        p, eff, thr = (_metric(r.metrics, k) for k in ("p_value", "effect_size", "effect_threshold"))
        if r.status != "skipped" and p is not None:
            tested.append((p, r, eff, thr))
    alpha = next((_metric(r.metrics, "alpha") for _, r, _, _ in tested), None) or 0.05
    tested.sort(key=lambda t: t[0])
    flagged = []
    for i, (p, r, eff, thr) in enumerate(tested):
        if p * (len(tested) - i) >= alpha:
            break  # Holm step-down stops at the first non-rejection
        if eff is not None and thr is not None and eff >= thr:
            flagged.append(getattr(r, "id", ""))
    if not flagged:
        return "ok"
    kinds = {"difficulty": "easier"}
    return "easier" if all(kinds.get(f) == "easier" for f in flagged) else "shifted"


# ------------------------------------------------------------------------------------------
# Data: one "universe" table per dataset (pool + transformed copies of held-out pool images)
# ------------------------------------------------------------------------------------------


@dataclass
class Universe:
    dataset: str
    pool: object  # _shiftdata.Images
    transforms: dict
    table: object
    matcher: object
    labels: np.ndarray
    paths: list[str]
    abspaths: list[Path]
    classes: tuple[str, ...]
    eligible: np.ndarray  # pool rows splits are drawn from (deduplicated, decoded)
    heldout: np.ndarray  # pool rows whose transformed copies exist (never in train of an image shift)
    offsets: dict = field(default_factory=dict)  # transform kind -> first universe row
    notes: list[str] = field(default_factory=list)


def build_universe(dataset: str, args: argparse.Namespace, embedder) -> Universe:
    import _shiftdata as sd

    t0 = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sd.log(f"[{dataset}] preparing images and fingerprints under {args.workdir}")
    if dataset == "fmnist":
        require_shared(FMNIST_DIR)
        pool = sd.fashion_mnist(SHARED, args.workdir, args.fmnist_pool, args.seed)
        pool_size = len(pool)
    else:
        root = cifar_root(args)
        pool = sd.cifar10(root, None, args.seed)  # all 60,000: the runtime part needs them all
        pool_size = min(args.cifar_pool, len(pool))
    sd.fingerprint(pool, args.workdir, embedder, workers=args.workers)
    rng = np.random.default_rng([args.seed, 7])
    chosen = np.sort(rng.permutation(len(pool))[:pool_size])
    ok = pool.table.ok
    chosen = chosen[ok[chosen]]

    # Held-out originals of the transformed copies: chosen once, fixed across reps.
    need_t = [s for s in args.shifts if s in IMAGE_SHIFTS]
    n_held = min(args.val, len(chosen) // 2) if need_t else 0
    heldout = np.sort(np.random.default_rng([args.seed, 11]).permutation(chosen)[:n_held])
    transforms = {}
    for kind in need_t:
        im = sd.write_transformed(pool, heldout, kind, args.workdir, dataset, brightness=args.brightness,
                                  blur_radius=args.blur_radius, jpeg_quality=args.jpeg_quality)
        sd.fingerprint(im, args.workdir, embedder, workers=args.workers)
        transforms[kind] = im

    parts = [pool] + list(transforms.values())
    table = sd.concat_tables([p.table for p in parts])
    offsets, off = {}, len(pool)
    for kind, im in transforms.items():
        offsets[kind] = off
        off += len(im)
    paths = list(pool.paths) + [f"{k}/{p}" for k, im in transforms.items() for p in im.paths]
    abspaths = [pool.root / p for p in pool.paths] + [im.root / p for im in transforms.values() for p in im.paths]
    labels = np.concatenate([p.labels for p in parts])

    from splitaudit.matching import Matcher

    tm = time.perf_counter()
    matcher = Matcher(table)
    # Pools must hold no copies across a split: drop one side of every within-pool pair
    # (exact digests and close pHashes, verified by alignment: Matcher.match_within).
    within = matcher.match_within(chosen)
    dropped = np.unique(within.query)
    eligible = np.setdiff1d(chosen, dropped)
    heldout = np.intersect1d(heldout, eligible)
    note = (f"{dataset}: pool {len(chosen)} images, {len(within)} within-pool copy pairs "
            f"(exact or pHash-close, verified), {len(dropped)} images dropped -> {len(eligible)} eligible; "
            f"matcher + dedupe {time.perf_counter() - tm:.1f} s")
    sd.log("  " + note)
    u = Universe(dataset, pool, transforms, table, matcher, labels, paths, abspaths, pool.classes,
                 eligible, heldout, offsets, [note])
    sd.log(f"  ready in {time.perf_counter() - t0:.1f} s (load {os.getloadavg()[0]:.1f})")
    return u


def cifar_root(args: argparse.Namespace) -> Path:
    if args.cifar_data is not None:
        return args.cifar_data.resolve()
    (tar,) = require_shared(CIFAR_TAR)
    return ensure_extracted(tar, Path(tempfile.gettempdir()) / "splitaudit-cifar10", expected=60000)


# ------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------


def draw_split(u: Universe, scenario: str, rng: np.random.Generator, args: argparse.Namespace,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train rows, val rows, label sequence for the order test or None) of one split."""
    T, V = args.train, args.val
    if scenario in IMAGE_SHIFTS:
        source = np.setdiff1d(u.eligible, u.heldout)
        if T > len(source):
            raise SystemExit(f"{u.dataset}: --train {T} exceeds the {len(source)} pool images left "
                             "beside the held-out set; lower --train or raise the pool")
        train = rng.choice(source, T, replace=False)
        # Universe rows of the copies whose originals survived deduplication.
        pos = {int(r): i for i, r in enumerate(u.transforms[scenario].origin)}
        copies = np.array([u.offsets[scenario] + pos[int(r)] for r in u.heldout])
        copies = copies[u.table.ok[copies]]
        val = copies if len(copies) <= V else rng.choice(copies, V, replace=False)
        return train, val, None
    if T + V > len(u.eligible):
        raise SystemExit(f"{u.dataset}: --train + --val = {T + V} exceeds the {len(u.eligible)} "
                         "eligible pool images")
    perm = rng.permutation(u.eligible)
    if scenario == "none":
        return perm[:T], perm[T:T + V], u.labels[perm[:T + V]]
    if scenario == "ordered":
        rows = perm[:T + V]
        rows = rows[np.argsort(u.labels[rows], kind="stable")]
        return rows[:T], rows[T:], u.labels[rows]
    K = len(u.classes)
    if scenario == "prior":
        # Val first (from the whole pool, so rare classes of a deduplicated pool suffice),
        # then train at random from the rest.
        rest = perm
        # Total variation s: the first half of the classes get 1/K + 2s/K each, the rest less.
        d = 2 * args.prior_shift / K
        priors = np.array([1 / K + d if k < K // 2 else 1 / K - d for k in range(K)])
        priors /= priors.sum()
        counts = np.floor(priors * V).astype(int)
        counts[np.argsort(-priors)[: V - counts.sum()]] += 1
        val = []
        for k in range(K):
            cand = rest[u.labels[rest] == k]
            if counts[k] > len(cand):
                raise SystemExit(f"{u.dataset}: class {k} has {len(cand)} images left, needs {counts[k]}")
            val.append(rng.choice(cand, counts[k], replace=False))
        val = np.concatenate(val)
        return rng.choice(np.setdiff1d(u.eligible, val), T, replace=False), val, None
    train, rest = perm[:T], perm[T:]
    if scenario == "prototypical":
        feats = features(u)
        val = []
        per = int(np.ceil(V / K))
        for k in range(K):
            cand = rest[u.labels[rest] == k]
            cls_rows = u.eligible[u.labels[u.eligible] == k]
            centre = feats[cls_rows].astype(np.float32).mean(axis=0)
            score = feats[cand].astype(np.float32) @ centre
            val.append(cand[np.argsort(-score)[:per]])
        return train, np.concatenate(val)[:V], None
    raise ValueError(scenario)


_FEATS: dict[str, np.ndarray] = {}


def features(u: Universe) -> np.ndarray:
    """Unit-norm vectors for prototypicality: the CNN embeddings, else centred thumbnails."""
    if u.dataset not in _FEATS:
        if u.table.embeddings is not None:
            f = u.table.embeddings.astype(np.float32)
        else:
            f = u.table.thumbs.reshape(len(u.table), -1).astype(np.float32)
            f -= f.mean(axis=1, keepdims=True)
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-6)
        _FEATS[u.dataset] = f
    return _FEATS[u.dataset]


def make_context(u: Universe, train: np.ndarray, val: np.ndarray, config):
    """An AuditContext for train vs val rows: no cross-split copies by construction."""
    import _shiftdata as sd

    from splitaudit.checks.base import AuditContext
    from splitaudit.sources.base import Sample, SampleSet

    rows = np.concatenate([train, val])
    samples = [Sample(split, u.paths[r], abspath=u.abspaths[r], label=u.classes[u.labels[r]])
               for split, part in (("train", train), ("val", val)) for r in part]
    table = sd.slice_table(u.table, rows)
    matcher = sd.slice_matcher(u.matcher, table, rows)
    sset = SampleSet(None, ["train", "val"], samples, layout="benchmark")
    return AuditContext(sset, table, matcher, {}, {}, [], [], config)


def run_checks(u: Universe, train, val, labels_seq, checks, config, order_test, alpha: float) -> dict:
    """Every shift check (and the order test) on one split, with its time."""
    if labels_seq is None:
        # As Keras would see the arrays if val had been appended to train (val shuffled, so
        # the order test sees only what differs between the head and the tail).
        labels_seq = u.labels[np.concatenate([train, np.random.default_rng(len(val)).permutation(val)])]
    ctx = make_context(u, train, val, config)
    out, results = {}, []
    for cls in checks:
        t0 = time.perf_counter()
        r = cls().run(ctx)
        dt = time.perf_counter() - t0
        results.append(r)
        m = r.metrics
        out[cls.id] = {"status": r.status, "p_value": _metric(m, "p_value"),
                       "effect_size": _metric(m, "effect_size"),
                       "effect_threshold": _metric(m, "effect_threshold"), "seconds": round(dt, 3)}
    status, how = library_verdict(results, alpha)
    out["_verdict"] = {"status": status, "how": how}
    if order_test is not None:
        t0 = time.perf_counter()
        o = order_test(labels_seq, validation_split=len(val) / (len(train) + len(val)))
        out["_order_test"] = {"p_value": _attr(o, "p_value"), "effect_size": _attr(o, "effect_size", "effect"),
                              "seconds": round(time.perf_counter() - t0, 3)}
    return out


def _attr(obj, *names) -> float | None:
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            return float(v)
    return None


# ------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------


def ks_uniform(p: list[float]) -> tuple[float | None, float | None]:
    """(KS distance, KS p-value) of p-values against U(0, 1)."""
    if len(p) < 2:
        return None, None
    from scipy import stats

    r = stats.kstest(np.asarray(p, float), "uniform")
    return float(r.statistic), float(r.pvalue)


def summarise(runs: list[dict], ids: list[str], alpha: float) -> dict:
    out = {}
    for cid in ids:
        rs = [r[cid] for r in runs if cid in r]
        tested = [r for r in rs if r.get("status", "pass") != "skipped" and r["p_value"] is not None]
        p = [r["p_value"] for r in tested]
        eff = [r["effect_size"] for r in tested if r.get("effect_size") is not None]
        d, ks_p = ks_uniform(p)
        out[cid] = {
            "runs": len(rs),
            "skipped": sum(r.get("status") == "skipped" for r in rs),
            "fail_rate": _rate(sum(r.get("status") == "fail" for r in rs), len(rs)),
            "warn_rate": _rate(sum(r.get("status") == "warn" for r in rs), len(rs)),
            "p_below_alpha_rate": _rate(sum(x < alpha for x in p), len(p)),
            "ks_distance": None if d is None else round(d, 4),
            "ks_p_value": None if ks_p is None else round(ks_p, 4),
            "p_median": None if not p else round(statistics.median(p), 4),
            "p_one_rate": _rate(sum(x >= 0.999 for x in p), len(p)),
            "effect_median": None if not eff else round(statistics.median(eff), 4),
            "effect_max": None if not eff else round(max(eff), 4),
            "effect_threshold": next((r["effect_threshold"] for r in rs if r.get("effect_threshold") is not None), None),
            "seconds_median": None if not rs or "seconds" not in rs[0] else round(statistics.median(r["seconds"] for r in rs), 3),
        }
    v = [r["_verdict"]["status"] for r in runs]
    out["_verdict"] = {"runs": len(v), "not_ok_rate": _rate(sum(s != "ok" for s in v), len(v)),
                       "statuses": {s: v.count(s) for s in sorted(set(v))},
                       "how": runs[0]["_verdict"]["how"] if runs else None}
    return out


def _rate(k: int, n: int) -> float | None:
    return None if n == 0 else round(k / n, 4)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def num(x: float | None, f: str = ".3f") -> str:
    return "-" if x is None else format(x, f)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def suffix(args: argparse.Namespace) -> str:
    parts = [f"{k}{getattr(args, k)}" for k in DEFAULTS if getattr(args, k) != DEFAULTS[k]]
    if args.datasets != list(DATASETS):
        parts.append("-".join(args.datasets))
    if args.shifts != list(SHIFTS):
        parts.append("shifts-" + ("-".join(args.shifts) or "none"))
    if args.no_embeddings:
        parts.append("hash")
    return ("-" + "-".join(parts)) if parts else ""


def runtime_cifar(u: Universe, checks, config, order_test, repeat: int) -> dict:
    """Every check on CIFAR-10's own train (50,000) vs test (10,000) split."""
    import _shiftdata as sd

    train = np.array([i for i, p in enumerate(u.pool.paths) if p.startswith("train/") and u.table.ok[i]])
    test = np.array([i for i, p in enumerate(u.pool.paths) if p.startswith("test/") and u.table.ok[i]])
    sd.log(f"[runtime] CIFAR-10 train {len(train)} vs test {len(test)}, {repeat} run(s) per check")
    ctx = make_context(u, train, test, config)
    per: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    for cls in checks:
        times, cpu, r = [], [], None
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            r = cls().run(ctx)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        per[cls.id] = {"seconds": round(statistics.median(times), 2), "runs_s": [round(t, 2) for t in times],
                       "cpu_s": round(statistics.median(cpu), 2),
                       "status": r.status, "summary": r.summary, "p_value": _metric(r.metrics, "p_value"),
                       "effect_size": _metric(r.metrics, "effect_size"),
                       "effect_threshold": _metric(r.metrics, "effect_threshold")}
        sd.log(f"  {cls.id}: {per[cls.id]['seconds']:.2f} s, {r.status}: {r.summary}")
    if order_test is not None:
        labels = u.labels[np.concatenate([train, test])]
        t0, c0 = time.perf_counter(), time.process_time()
        order_test(labels, validation_split=len(test) / (len(train) + len(test)))
        per["_order_test"] = {"seconds": round(time.perf_counter() - t0, 2),
                              "cpu_s": round(time.process_time() - c0, 2)}
    total = sum(v["seconds"] for v in per.values())
    total_cpu = sum(v["cpu_s"] for v in per.values())
    scan, scan_cpu = scan_wall()
    return {"train": len(train), "test": len(test), "per_check": per, "total_s": round(total, 2),
            "total_cpu_s": round(total_cpu, 2), "scan_wall_s": scan, "scan_cpu_s": scan_cpu,
            "share_of_scan": round(total / scan, 4),
            "cpu_share_of_scan": None if not scan_cpu else round(total_cpu / scan_cpu, 4),
            "budget_share": RUNTIME_BUDGET,
            "loadavg_1min_before": round(load_before, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2),
            "embeddings": u.table.embeddings is not None}


def scan_wall() -> tuple[float, float | None]:
    """(wall s, CPU s) of the full CIFAR-10 scan from results/cifar10_scan.json."""
    try:
        m = json.loads((RESULTS / "cifar10_scan.json").read_text())["results"]["full"]["median"]
        return float(m["wall_s"]), float(m["user_s"]) + float(m["sys_s"])
    except (OSError, KeyError, ValueError, TypeError):
        return SCAN_WALL_S, None


def combine(args: argparse.Namespace) -> int:
    """Merge per-dataset result files (run side by side, e.g. one process per dataset)."""
    parts = [json.loads(p.read_text(encoding="utf-8")) for p in args.combine]
    keys = ("train", "val", "splits", "reps", "shifts", "prior_shift", "brightness", "blur_radius",
            "jpeg_quality", "no_embeddings")
    first = parts[0]
    for p, d in zip(args.combine, parts):
        diff = [k for k in keys if d["settings"].get(k) != first["settings"].get(k)]
        if diff:
            raise SystemExit(f"{p}: other settings than {args.combine[0]} ({', '.join(diff)})")
    out = dict(first)
    out["datasets"] = {ds: r for d in parts for ds, r in d["datasets"].items()}
    out["notes"] = [n for d in parts for n in d["notes"]]
    out["combined_from"] = [{"file": p.name, "environment": d["environment"], "wall_s": d["wall_s"],
                             "loadavg_end": d["loadavg_end"]} for p, d in zip(args.combine, parts)]
    out["wall_s"] = max(d["wall_s"] for d in parts)
    for k in keys:
        setattr(args, k, first["settings"][k])
    args.datasets = [ds for ds in DATASETS if ds in out["datasets"]]
    args.fmnist_pool = first["settings"].get("fmnist_pool", DEFAULTS["fmnist_pool"])
    args.cifar_pool = first["settings"].get("cifar_pool", DEFAULTS["cifar_pool"])
    tables = render(out, args, out["checks"], any("_order_test" in r["calibration"]["summary"]
                                                  for r in out["datasets"].values()))
    out["tables_markdown"] = tables
    path = args.results / f"shift_calibration{suffix(args)}.json"
    write_json(path, out)
    for t in tables.values():
        print()
        print(t)
    print(f"\nWrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        return combine(args)
    if not SHARED.is_dir():
        require_shared()
    checks = shift_checks()
    ids = [c.id for c in checks]
    order_test = order_test_fn()
    from splitaudit.config import AuditConfig

    config = AuditConfig(embeddings=not args.no_embeddings)
    shift_cfg = getattr(config, "shift", None) or shift_config()
    alpha = float(getattr(shift_cfg, "alpha", 0.05)) if shift_cfg is not None else 0.05
    embedder = None
    if not args.no_embeddings:
        from splitaudit.fingerprints.embedder import Embedder

        weights = args.weights or require_shared(WEIGHTS)[0]
        embedder = Embedder(weights=weights)
    print(f"Shift checks: {', '.join(ids)}" + (" + order_test (validation_split)" if order_test else "")
          + f"; alpha {alpha}; load {os.getloadavg()[0]:.1f}", flush=True)
    all_ids = ids + (["_order_test"] if order_test else [])

    out: dict = {"benchmark": "shift_calibration", "environment": environment(),
                 "settings": {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                 "checks": ids, "alpha": alpha,
                 "shift_config": _jsonable(shift_cfg), "datasets": {}, "notes": [],
                 "loadavg_start": list(os.getloadavg())}
    started = time.perf_counter()
    for di, ds in enumerate(args.datasets):
        u = build_universe(ds, args, embedder)
        out["notes"] += u.notes
        res: dict = {"classes": list(u.classes), "eligible": int(len(u.eligible)),
                     "calibration": {}, "power": {}}
        cal_runs = []
        t0 = time.perf_counter()
        for i in range(args.splits):
            rng = np.random.default_rng([args.seed, di, 0, i])
            tr, va, seq = draw_split(u, "none", rng, args)
            cal_runs.append(run_checks(u, tr, va, seq, checks, config, order_test, alpha))
            if (i + 1) % 10 == 0 or i + 1 == args.splits:
                fa = sum(r["_verdict"]["status"] != "ok" for r in cal_runs)
                print(f"[{ds}] calibration {i + 1}/{args.splits}: verdict not OK in {fa}; "
                      f"{(time.perf_counter() - t0) / (i + 1):.1f} s/split, load {os.getloadavg()[0]:.1f}",
                      flush=True)
        res["calibration"] = {"summary": summarise(cal_runs, all_ids, alpha), "runs": cal_runs}
        for si, shift in enumerate(args.shifts):
            runs = []
            t0 = time.perf_counter()
            for i in range(args.reps):
                rng = np.random.default_rng([args.seed, di, si + 1, i])
                tr, va, seq = draw_split(u, shift, rng, args)
                runs.append(run_checks(u, tr, va, seq, checks, config, order_test, alpha))
                runs[-1]["_sizes"] = {"train": int(len(tr)), "val": int(len(va))}
            s = summarise(runs, all_ids, alpha)
            res["power"][shift] = {"summary": s, "runs": runs}
            best = max(ids, key=lambda c: s[c]["fail_rate"] or 0)
            print(f"[{ds}] {shift}: best {best} {pct(s[best]['fail_rate'])}, verdict "
                  f"{pct(s['_verdict']['not_ok_rate'])} ({(time.perf_counter() - t0) / max(1, args.reps):.1f} s/rep)",
                  flush=True)
        if ds == "cifar10" and not args.skip_runtime:
            res["runtime"] = runtime_cifar(u, checks, config, order_test, args.runtime_repeat)
        out["datasets"][ds] = res
        del u
        _FEATS.clear()
    if "cifar10" not in args.datasets and not args.skip_runtime:
        print("(runtime part skipped: it needs --datasets to include cifar10)")
    out["wall_s"] = round(time.perf_counter() - started, 1)
    out["loadavg_end"] = list(os.getloadavg())
    tables = render(out, args, ids, order_test is not None)
    out["tables_markdown"] = tables
    path = args.results / f"shift_calibration{suffix(args)}.json"
    write_json(path, out)
    for name, t in tables.items():
        print()
        print(t)
    print(f"\nWrote {path} ({out['wall_s']:.0f} s, load {os.getloadavg()[0]:.1f})")
    return 0


def _jsonable(cfg) -> dict | None:
    if cfg is None:
        return None
    import dataclasses

    if dataclasses.is_dataclass(cfg):
        return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return {"repr": repr(cfg)}


def render(out: dict, args: argparse.Namespace, ids: list[str], with_order: bool) -> dict[str, str]:
    tables = {}
    shown = ids + (["_order_test"] if with_order else [])
    name = {"_order_test": "order_test (validation_split)"}
    rows = []
    for ds, res in out["datasets"].items():
        s = res["calibration"]["summary"]
        for cid in shown:
            c = s[cid]
            rows.append([f"{ds} {name.get(cid, cid)}", c["runs"] - c["skipped"],
                         pct(c["fail_rate"]) if cid != "_order_test" else "-", pct(c["p_below_alpha_rate"]),
                         num(c["ks_distance"]), num(c["ks_p_value"]), num(c["p_median"]), pct(c["p_one_rate"]),
                         f"{num(c['effect_median'])} / {num(c['effect_max'])} / {num(c['effect_threshold'])}",
                         num(c["seconds_median"], ".2f")])
        v = s["_verdict"]
        ok = v["not_ok_rate"] is not None and 1 - v["not_ok_rate"] >= CALIBRATION_TARGET
        rows.append([f"{ds} **verdict**", v["runs"], pct(v["not_ok_rate"]) + (" (ok)" if ok else " (> 5%)"),
                     "", "", "", "", "", "", ""])
    if rows:
        tables["calibration"] = (
            f"Calibration: {args.splits} random splits per dataset ({args.train} train vs {args.val} val), "
            f"alpha {out['alpha']}; false alarm = status fail (p < alpha and effect >= threshold)\n\n"
            + markdown_table(["dataset / check", "tested splits", "false alarm (fail)", "p < alpha",
                              "KS distance from U(0,1)", "KS p", "median p", "p = 1",
                              "effect median / max / threshold", "median s"], rows))
    if args.shifts and args.reps:
        header = ["dataset / shift"] + [name.get(c, c) for c in shown] + ["verdict not OK", "best check"]
        rows = []
        for ds, res in out["datasets"].items():
            for shift, r in res["power"].items():
                s = r["summary"]
                cells = [pct(s[c]["fail_rate"] if c != "_order_test" else s[c]["p_below_alpha_rate"]) for c in shown]
                best = max(ids, key=lambda c: s[c]["fail_rate"] or 0)
                hit = (s[best]["fail_rate"] or 0) >= POWER_TARGET
                rows.append([f"{ds} {SHIFT_TITLES[shift]}"] + cells
                            + [pct(s["_verdict"]["not_ok_rate"]),
                               f"{best} {pct(s[best]['fail_rate'])}" + (" (ok)" if hit else " (< 90%)")])
        tables["power"] = (
            f"Power: detection rate (status fail) over {args.reps} splits per planted shift, "
            f"{args.train} train vs {args.val} val (order_test column: p < alpha on the labels of "
            "train followed by val, or of the label-sorted data)\n\n"
            + markdown_table(header, rows))
    rt = out["datasets"].get("cifar10", {}).get("runtime")
    if rt:
        rows = [[name.get(c, c), num(v["seconds"], ".2f"), num(v.get("cpu_s"), ".2f"), v.get("status", "-"),
                 num(v.get("p_value"), ".3g"), num(v.get("effect_size"))] for c, v in rt["per_check"].items()]
        ok = rt["share_of_scan"] <= RUNTIME_BUDGET
        cpu_share = rt.get("cpu_share_of_scan")
        rows.append(["**all checks**", num(rt["total_s"], ".2f"), num(rt.get("total_cpu_s"), ".2f"),
                     f"wall {100 * rt['share_of_scan']:.1f}% of the {rt['scan_wall_s']:.0f} s scan"
                     + (" (ok)" if ok else " (> 20%)")
                     + ("" if cpu_share is None else f"; CPU {100 * cpu_share:.1f}% of its {rt['scan_cpu_s']:.0f} s"),
                     "", ""])
        tables["runtime"] = (
            f"Runtime on CIFAR-10's own split ({rt['train']} train vs {rt['test']} test, "
            f"{'1280-d embeddings' if rt['embeddings'] else 'hash-only'}), 1-min load "
            f"{rt['loadavg_1min_before']} -> {rt['loadavg_1min_after']}\n\n"
            + markdown_table(["check", "wall s", "CPU s", "status", "p", "effect"], rows))
    return tables


if __name__ == "__main__":
    sys.exit(main())
