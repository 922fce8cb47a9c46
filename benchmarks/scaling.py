"""Scaling of the candidate search: synthetic fingerprints for 10k, 100k and 1M reference
samples against 10% as many queries, exact (flat) against automatically chosen indexes.

The search stage of a scan is every signal of ``Matcher.candidates``: pHash within the Hamming
radius in both orientations, the thumbnail descriptor k-NN in both orientations and the CNN
embedding k-NN, with the k and minimum cosines of ``Matcher.knn_signals``. This benchmark
runs each of them on synthetic data with the matcher's parameters, in the ``auto`` mode of
:mod:`splitaudit.neighbours` (what a scan uses) and in the ``exact`` mode, and reports:

* index build time, query time (CPU and wall), peak RSS growth of the search;
* recall of *planted near duplicates* (a query made from a reference row: cosine 0.90-0.99
  for vectors, 0-10 flipped bits for pHashes): the share the auto index finds among those the
  exact one finds at the same k and minimum cosine, over ``--planted-check`` planted queries
  (2,000 by default, all of them when there are fewer), with its one-sided 95% Clopper-Pearson
  lower bound; and the k-NN recall of all pairs.

For large references the exact search is too slow to run in full: it is timed on a random
sample of queries (``--exact-queries``) and its time extrapolated linearly (marked ``~`` in
the table); the all-pairs recalls are measured on that sample, the planted recall on the
planted queries searched exactly besides it.

Synthetic data has realistic structure (HNSW/IVF recall depends on it): vectors are a common
mean direction plus a mixture of Gaussians in a low-rank subspace with a power-law spectrum
plus isotropic noise, calibrated on MobileNetV2 embeddings of CIFAR-10 (random-pair cosine
~0.3-0.4, nearest-neighbour cosine ~0.72 at 50k, 73% of the variance in 128 PCA components
against 69% for the real ones); pHashes have 32 set bits of which the first always is (the DC
term), with correlated bits from a clustered latent (0.1-0.15 pairs within radius 10 per
query at 50k references, as on CIFAR-10).

Usage::

    python benchmarks/scaling.py                      # 10k, 100k, 1M (about 8 min idle)
    python benchmarks/scaling.py --sizes 10000 100000 # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, markdown_table, write_json  # noqa: E402

from splitaudit import neighbours  # noqa: E402
from splitaudit.matching import MatchConfig, Matcher  # noqa: E402

EMB_DIM = 1280  # MobileNetV2 pooled features
THUMB_DIM = 148  # alignment.descriptors of a 32x32 thumbnail
#: Cosine from which a vector pair counts as strong (MatchConfig.near_cosine: the CNN then
#: confirms a near duplicate); recall is also reported over the exact pairs above it.
STRONG = MatchConfig().near_cosine


# ------------------------------------------------------------------------------ data


def synthetic_vectors(n: int, d: int, seed: int, *, rank: int, alpha: float, w_mean: float,
                      w_iso: float, clusters: int = 2000, dtype=np.float16) -> np.ndarray:
    """(n, d) unit vectors: mean + clustered low-rank part + isotropic noise (see module doc).

    The structure (basis, spectrum, cluster centres, mean) depends only on ``d``, so reference
    and query sets drawn with different seeds come from the same distribution.
    """
    g = np.random.default_rng(1000 + d)
    # Random Gaussian columns are nearly orthonormal in d >= 148 dimensions (no QR needed).
    basis = (g.standard_normal((d, rank)) / np.sqrt(d)).astype(np.float32)
    scale = (1 + np.arange(rank, dtype=np.float32)) ** -alpha
    scale /= np.sqrt((scale ** 2).sum())
    centres = g.standard_normal((clusters, rank)).astype(np.float32)
    mean = g.standard_normal(d).astype(np.float32)
    mean /= np.linalg.norm(mean)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype)
    for s in range(0, n, 32768):
        m = min(32768, n - s)
        lat = (centres[rng.integers(clusters, size=m)]
               + 0.8 * rng.standard_normal((m, rank), dtype=np.float32)) * scale
        # Uniform noise from random bytes (unit variance): far cheaper than Gaussian at 1M x 1280.
        noise = (np.frombuffer(rng.bytes(m * d), np.uint8).reshape(m, d).astype(np.float32)
                 - 127.5) * np.float32(np.sqrt(12) / 256 * w_iso / np.sqrt(d))
        x = w_mean * mean + lat @ basis.T + noise
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def embeddings(n: int, seed: int) -> np.ndarray:
    return synthetic_vectors(n, EMB_DIM, seed, rank=256, alpha=0.4, w_mean=1.0, w_iso=0.6)


def thumb_descriptors(n: int, seed: int) -> np.ndarray:
    # Zero-mean (NCC samples), 85% of the variance in 32 components as for CIFAR-10 thumbnails.
    # float16, as Matcher.desc holds them (alignment.thumb_descriptors).
    return synthetic_vectors(n, THUMB_DIM, seed, rank=96, alpha=0.9, w_mean=0.0, w_iso=0.3,
                             dtype=np.float16)


def phashes(n: int, seed: int, clusters: int = 4096, rank: int = 16) -> np.ndarray:
    """(n, 8) packed 64-bit codes with 32 set bits, bit 0 always set, correlated bits."""
    g = np.random.default_rng(77)
    mix = g.standard_normal((rank, 64)) / np.sqrt(rank)
    centres = g.standard_normal((clusters, rank))
    rng = np.random.default_rng(seed)
    out = np.empty((n, 8), np.uint8)
    for s in range(0, n, 131072):
        m = min(131072, n - s)
        lat = (centres[rng.integers(clusters, size=m)] + 0.5 * rng.standard_normal((m, rank))) @ mix
        lat += rng.standard_normal((m, 64))
        lat[:, 0] = np.inf  # the DC coefficient is always above the median
        out[s:s + m] = np.packbits(lat > np.median(lat, axis=1, keepdims=True), axis=1)
    return out


def plant_vectors(query: np.ndarray, reference: np.ndarray, rows: np.ndarray, src: np.ndarray,
                  rng: np.random.Generator, lo: float = 0.90, hi: float = 0.99) -> None:
    """Overwrite ``query[rows]`` with ``reference[src]`` moved to a cosine in [lo, hi]."""
    r = reference[src].astype(np.float32)
    noise = rng.standard_normal(r.shape, dtype=np.float32)
    noise -= (noise * r).sum(1, keepdims=True) * r
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = rng.uniform(lo, hi, len(rows)).astype(np.float32)[:, None]
    query[rows] = cos * r + np.sqrt(1 - cos ** 2) * noise


def plant_hashes(query: np.ndarray, reference: np.ndarray, rows: np.ndarray, src: np.ndarray,
                 rng: np.random.Generator, max_bits: int) -> None:
    """Overwrite ``query[rows]`` with ``reference[src]`` with 0..max_bits bits flipped."""
    bits = np.unpackbits(reference[src], axis=1)
    for j in range(len(rows)):
        flip = rng.choice(np.arange(1, 64), rng.integers(0, max_bits + 1), replace=False)
        bits[j, flip] ^= 1
    query[rows] = np.packbits(bits, axis=1)


def make_dataset(n: int, m: int, planted: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    emb_ref, desc_ref, ph_ref = embeddings(n, seed), thumb_descriptors(n, seed), phashes(n, seed)
    emb_q, desc_q = embeddings(m, seed + 1), thumb_descriptors(m, seed + 1)
    desc_flip_q, ph_q, ph_flip_q = thumb_descriptors(m, seed + 2), phashes(m, seed + 1), phashes(m, seed + 2)
    rows = np.sort(rng.choice(m, planted, replace=False))
    src = rng.choice(n, planted, replace=False)
    plant_vectors(emb_q, emb_ref, rows, src, rng)
    plant_vectors(desc_q, desc_ref, rows, src, rng)
    plant_hashes(ph_q, ph_ref, rows, src, rng, MatchConfig().hash_radius)
    return dict(emb_ref=emb_ref, emb_q=emb_q, desc_ref=desc_ref, desc_q=desc_q,
                desc_flip_q=desc_flip_q, ph_ref=ph_ref, ph_q=ph_q, ph_flip_q=ph_flip_q,
                planted_rows=rows, planted_src=src)


# ------------------------------------------------------------------------------ measuring


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Measure:
    """CPU and wall time and peak RSS growth (VmHWM after resetting it) of a block."""

    def __enter__(self) -> "Measure":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        except OSError:
            pass
        self.rss0 = _rss_kb("VmRSS")
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0
        self.peak_mb = max(0, _rss_kb("VmHWM") - self.rss0) / 1024


def signals(data: dict) -> list[dict]:
    """The matcher's own signal definitions (k, minimum cosine, radius) on this data."""
    cfg = MatchConfig()
    fake = SimpleNamespace(table=SimpleNamespace(embeddings=data["emb_ref"]), config=cfg,
                           desc=data["desc_ref"], desc_flip=data["desc_flip_q"])
    out = [dict(name="phash", kind="hash", ref=data["ph_ref"],
                queries=[data["ph_q"], data["ph_flip_q"]], radius=cfg.hash_radius)]
    knn = Matcher.knn_signals(fake)  # [(name, ref, query, k, min_score)], thumb twice
    by_ref: dict[int, dict] = {}
    for name, ref, _, k, min_score in knn:
        q = {"thumb": data["desc_q"], "thumb_flip": data["desc_flip_q"],
             "embedding": data["emb_q"]}[name]
        key = id(ref)
        if key in by_ref:
            by_ref[key]["queries"].append(q)
            by_ref[key]["name"] += "+flip"
        else:
            by_ref[key] = dict(name=name, kind="vector", ref=ref, queries=[q], k=k,
                               min_score=min_score)
            out.append(by_ref[key])
    return out


def run_signal(sig: dict, mode: str, query_rows: list[np.ndarray | None] | None = None) -> dict:
    """Build and search one signal in ``mode``; query set i restricted to ``query_rows[i]``
    (None: every query). Pairs are returned with the global query rows."""
    ref = sig["ref"]
    rows = query_rows or [None] * len(sig["queries"])
    queries = [q if r is None else q[r] for q, r in zip(sig["queries"], rows)]
    n = len(ref)
    if sig["kind"] == "hash":
        kind = neighbours.choose_hash_index(n, ref.shape[1] * 8, sig["radius"], mode)
        with Measure() as build:
            index = neighbours.MultiIndexHash(ref) if kind == "multi-index" else None

        def search(q):
            return (index.search(q, sig["radius"]) if index is not None
                    else neighbours.hamming_within(ref, q, sig["radius"], mode="exact"))
    else:
        kind = neighbours.choose_vector_index(n, mode)
        with Measure() as build:
            index = neighbours.IvfIndex(ref) if kind == "ivf" else None

        def search(q):
            return (index.search(q, sig["k"], min_score=sig["min_score"]) if index is not None
                    else neighbours.vector_knn(ref, q, sig["k"], min_score=sig["min_score"],
                                               mode="exact"))
    res, searches = [], []
    for q in queries:
        with Measure() as m:
            res.append(search(q))
        searches.append(m)
    del index
    pairs, strong = [], []
    for r, rws in zip(res, rows):
        glob = r.query if rws is None else rws[r.query]
        pairs.append(set(zip(glob.tolist(), r.reference.tolist())))
        keep = r.score >= STRONG if sig["kind"] == "vector" else np.ones(len(glob), bool)
        strong.append(set(zip(glob[keep].tolist(), r.reference[keep].tolist())))
    return dict(index=kind, build_cpu=build.cpu, build_wall=build.wall,
                search_cpu=sum(m.cpu for m in searches), search_wall=sum(m.wall for m in searches),
                search_walls=[m.wall for m in searches], search_cpus=[m.cpu for m in searches],
                peak_mb=max([build.peak_mb] + [m.peak_mb for m in searches]),
                pairs=pairs, strong=strong)


def recall_lower_bound(found: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a recall of ``found`` out of ``n``."""
    if n == 0:
        return float("nan")
    if found == 0:
        return 0.0
    from scipy import stats

    return float(stats.beta.ppf(1 - confidence, found, n - found + 1))


def pair_recall(exact: list[set], approx: list[set], queries: set | None) -> float:
    """Share of the exact pairs (of ``queries`` only, if given) that approx also found."""
    found = total = 0
    for e, a in zip(exact, approx):
        if queries is not None:
            e = {p for p in e if p[0] in queries}
        found += len(e & a)
        total += len(e)
    return found / total if total else float("nan")


def bench_size(n: int, args: argparse.Namespace) -> list[dict]:
    m = max(1, int(n * args.query_fraction))
    planted = max(1, int(m * args.planted_fraction))
    t0 = time.perf_counter()
    data = make_dataset(n, m, planted, args.seed)
    gen_s = time.perf_counter() - t0
    print(f"N={n:,} M={m:,}: data generated in {gen_s:.1f} s (load {os.getloadavg()[0]:.1f})",
          flush=True)
    rng = np.random.default_rng(args.seed + 7)
    # Planted queries searched exactly for the planted recall: all of them, or a random
    # sample of --planted-check (the planted copies are in the first query set).
    check = data["planted_rows"]
    if len(check) > args.planted_check:
        check = np.sort(rng.choice(check, args.planted_check, replace=False))
    src_of = dict(zip(data["planted_rows"].tolist(), data["planted_src"].tolist()))
    planted_pairs = {(q, src_of[q]) for q in check.tolist()}
    sample = None  # random queries for the timing of the exact search and the all-pairs recall
    if m > args.exact_queries:
        sample = np.sort(rng.choice(m, args.exact_queries, replace=False))
    rows_out = []
    for sig in signals(data):
        auto = run_signal(sig, "auto")
        if sample is None:
            exact_rows = None
        else:
            exact_rows = [np.union1d(sample, check)] + [sample] * (len(sig["queries"]) - 1)
        exact = run_signal(sig, "exact", exact_rows)
        if sample is None:
            exact_s, exact_cpu_s = exact["build_wall"] + exact["search_wall"], \
                exact["build_cpu"] + exact["search_cpu"]
        else:  # each query set's search time scaled to all m queries
            exact_s = exact["build_wall"] + sum(w * m / len(r) for w, r in
                                                zip(exact["search_walls"], exact_rows))
            exact_cpu_s = exact["build_cpu"] + sum(c * m / len(r) for c, r in
                                                   zip(exact["search_cpus"], exact_rows))
        in_sample = None if sample is None else set(sample.tolist())
        rec_all = pair_recall(exact["pairs"], auto["pairs"], in_sample)
        rec_strong = pair_recall(exact["strong"], auto["pairs"], in_sample)
        planted_exact = exact["pairs"][0] & planted_pairs
        planted_found = len(planted_exact & auto["pairs"][0])
        rec_planted = planted_found / len(planted_exact) if planted_exact else float("nan")
        row = dict(
            n_reference=n, n_query=m, query_sets=len(sig["queries"]), signal=sig["name"],
            auto_index=auto["index"], params=(dict(radius=sig["radius"]) if sig["kind"] == "hash"
                                              else dict(k=sig["k"], min_score=sig["min_score"])),
            auto_build_s=auto["build_wall"], auto_build_cpu_s=auto["build_cpu"],
            auto_query_s=auto["search_wall"], auto_query_cpu_s=auto["search_cpu"],
            auto_peak_rss_mb=auto["peak_mb"],
            auto_pairs=sum(len(p) for p in auto["pairs"]),
            exact_s=exact_s, exact_cpu_s=exact_cpu_s,
            exact_extrapolated=sample is not None,
            exact_queries_run=len(sample) if sample is not None else m,
            exact_peak_rss_mb=exact["peak_mb"],
            planted_queries_checked=len(planted_pairs),
            planted_found_by_exact=len(planted_exact), planted_found_by_auto=planted_found,
            planted_recall=rec_planted,
            planted_recall_lower95=recall_lower_bound(planted_found, len(planted_exact)),
            knn_recall=rec_all, strong_recall=rec_strong,
            strong_pairs_by_exact=sum(len(x) if in_sample is None
                                      else sum(p[0] in in_sample for p in x)
                                      for x in exact["strong"]),
            load_1min=os.getloadavg()[0],
        )
        rows_out.append(row)
        print(f"  {sig['name']:<15} auto={auto['index']:<11} build {auto['build_wall']:.1f}s "
              f"query {auto['search_wall']:.1f}s (cpu {auto['build_cpu'] + auto['search_cpu']:.1f}s) "
              f"exact {'~' if sample is not None else ''}{exact_s:.1f}s "
              f"recall planted {rec_planted:.4f} ({planted_found}/{len(planted_exact)}, "
              f">= {row['planted_recall_lower95']:.4f} at 95%) strong {rec_strong:.4f} "
              f"all {rec_all:.4f} peak +{auto['peak_mb']:.0f} MB "
              f"(load {row['load_1min']:.1f})", flush=True)
    del data
    return rows_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--query-fraction", type=float, default=0.1)
    ap.add_argument("--planted-fraction", type=float, default=0.2,
                    help="share of the queries that are planted near duplicates")
    ap.add_argument("--exact-queries", type=int, default=500,
                    help="above this many queries the exact search runs on a sample of this size")
    ap.add_argument("--planted-check", type=int, default=2000,
                    help="planted queries searched exactly for the planted recall (a random "
                         "sample when there are more)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=RESULTS / "scaling.json")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args)
    load_after = os.getloadavg()
    table = []
    for r in rows:
        table.append([
            f"{r['n_reference']:,} x {r['n_query']:,}", r["signal"], r["auto_index"],
            f"{r['auto_build_s']:.1f}", f"{r['auto_query_s']:.1f}",
            f"{r['auto_build_cpu_s'] + r['auto_query_cpu_s']:.1f}",
            f"{'~' if r['exact_extrapolated'] else ''}{r['exact_s']:.1f}",
            f"{'~' if r['exact_extrapolated'] else ''}{r['exact_cpu_s']:.1f}",
            f"{r['planted_recall']:.4f} ({r['planted_found_by_exact']})",
            f"{r['planted_recall_lower95']:.4f}",
            f"{r['strong_recall']:.4f} ({r['strong_pairs_by_exact']})", f"{r['knn_recall']:.3f}",
            f"{r['auto_peak_rss_mb']:.0f}", f"{r['load_1min']:.1f}",
        ])
    totals = {}
    for r in rows:
        t = totals.setdefault(r["n_reference"], dict(auto_s=0.0, auto_cpu_s=0.0, exact_s=0.0,
                                                     exact_cpu_s=0.0, auto_peak_rss_mb=0.0))
        t["auto_s"] += r["auto_build_s"] + r["auto_query_s"]
        t["auto_cpu_s"] += r["auto_build_cpu_s"] + r["auto_query_cpu_s"]
        t["exact_s"] += r["exact_s"]
        t["exact_cpu_s"] += r["exact_cpu_s"]
        t["auto_peak_rss_mb"] = max(t["auto_peak_rss_mb"], r["auto_peak_rss_mb"])
    header = ["reference x queries", "signal", "auto index", "build s", "query s", "auto CPU s",
              "exact s", "exact CPU s", "planted recall (n)", "planted >= (95%)",
              "recall cos>=0.8 (n)", "k-NN recall", "peak +MB", "load"]
    print()
    print(markdown_table(header, table))
    print()
    print(markdown_table(
        ["reference", "whole search auto s", "auto CPU s", "exact s", "exact CPU s",
         "peak +MB (largest signal)", "bytes/reference row"],
        [[f"{n:,}", f"{t['auto_s']:.1f}", f"{t['auto_cpu_s']:.1f}", f"{t['exact_s']:.1f}",
          f"{t['exact_cpu_s']:.1f}", f"{t['auto_peak_rss_mb']:.0f}",
          f"{t['auto_peak_rss_mb'] * 2**20 / n:.0f}"] for n, t in totals.items()]))
    busy = max(load_before[0], load_after[0]) > 1.5
    if busy:
        print(f"\nWARNING: load average {load_before[0]:.1f} before / {load_after[0]:.1f} after on "
              f"{len(os.sched_getaffinity(0))} cores: other processes competed for the CPU, the "
              "wall times are not final (CPU seconds are steadier).")
    write_json(args.output, dict(
        environment=environment(), faiss=__import__("faiss").__version__,
        loadavg_before=list(load_before), loadavg_after=list(load_after), busy=busy,
        settings=dict(
            sizes=args.sizes, query_fraction=args.query_fraction,
            planted_fraction=args.planted_fraction, exact_queries=args.exact_queries,
            planted_check=args.planted_check,
            seed=args.seed, APPROX_MIN_REFERENCE=neighbours.APPROX_MIN_REFERENCE,
            HASH_INDEX_MIN_REFERENCE=neighbours.HASH_INDEX_MIN_REFERENCE,
            IVF_PCA_DIM=neighbours.IVF_PCA_DIM, IVF_ROWS_PER_LIST=neighbours.IVF_ROWS_PER_LIST,
            IVF_NPROBE=neighbours.IVF_NPROBE, IVF_SHORTLIST_FACTOR=neighbours.IVF_SHORTLIST_FACTOR,
            IVF_SHORTLIST_MIN=neighbours.IVF_SHORTLIST_MIN,
            IVF_REFINE_FACTOR=neighbours.IVF_REFINE_FACTOR,
            IVF_PCA_ITERATIONS=neighbours.IVF_PCA_ITERATIONS,
            IVF_INDEX="IVF-PQ fast-scan (4-bit, one sub-quantizer per PCA dimension, not by "
                      "residual), refined with float16 PCA vectors",
            MIH_LAYOUT_BITS={str(n): neighbours._mih_layout(64, n, MatchConfig().hash_radius)[0]
                             for n in args.sizes}),
        rows=rows, totals={str(n): t for n, t in totals.items()},
    ))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
