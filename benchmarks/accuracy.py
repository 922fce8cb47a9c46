"""Accuracy of the duplicate matcher on a hard suite, measured through the real product path.

What it does
------------
1. Writes a dataset directory with ``train/`` and ``val/`` splits:

   * ``train/`` holds every *source*: real photographs (peer fixtures in ``../shared``, the two
     scikit-learn sample photos, scikit-image's bundled photos) plus the four quadrants of each
     photo at least 512 px wide, ~300 random CIFAR-10 test images, and ~100
     :func:`splitaudit.synth.random_photo` pictures drawn from 10 palettes ("classes").
   * ``val/`` holds, for every source and every family in ``EXACT_FAMILIES + NEAR_FAMILIES``,
     one copy written by :func:`splitaudit.synth.write_copy` (the planted positives), and hard
     negatives: for each whole photo one of its :func:`~splitaudit.synth.different_crops`
     (the other piece goes to train), ~300 other CIFAR-10 test images of the same classes and
     ~100 more random photos drawn with the train palettes.

2. Runs :func:`splitaudit.api.scan` on it with ``AuditConfig(embeddings=False)`` (hash-only)
   and, when ``../shared/models/mobilenet_v2_1.0_224_no_top.h5`` exists, with
   ``AuditConfig(weights=that_file)`` (CNN).

3. Scores the reported ``cross_split_duplicates`` (val -> train) per planted pair:

   * recall: planted (copy, source) pairs reported with the right kind (exact families must
     be ``exact``; near families ``near``, ``exact`` also accepted); "found" counts either kind;
   * a false pair is any reported exact/near pair that was not planted. Pairs between two
     pieces of one photo whose regions cover >= 80% of each other's width and height (e.g. a
     quadrant lying inside a val crop) are legitimately the same picture: counted as
     "ambiguous", neither true nor false;
   * precision = true pairs / (true + false pairs); the false-pair rate of negatives is the
     share of val negatives with at least one false pair.

4. Sweeps ``MatchConfig.near_threshold`` by re-running only the matching on the fingerprints
   the scan computed (captured by wrapping ``splitaudit.api.extract``; the scan itself is
   unchanged, and the default-threshold rerun is checked to reproduce the scan's pairs).

Outputs markdown tables on stdout, ``<out>/accuracy.json`` and a contact sheet of every
missed positive and false pair, ``<out>/accuracy_errors.png``.

Usage::

    python benchmarks/accuracy.py [--seed 0] [--quick] [--out benchmarks/results] [--no-cnn]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _photos  # noqa: E402

import splitaudit  # noqa: E402
import splitaudit.api as api  # noqa: E402
from splitaudit.config import AuditConfig  # noqa: E402
from splitaudit.matching import KIND_NAMES, Matcher  # noqa: E402
from splitaudit.synth import EXACT_FAMILIES, NEAR_FAMILIES, different_crops, random_photo, write_copy  # noqa: E402

FAMILIES = tuple(EXACT_FAMILIES) + tuple(NEAR_FAMILIES)
WEIGHTS = _photos.SHARED / "models" / "mobilenet_v2_1.0_224_no_top.h5"
SWEEP = (0.86, 0.88, 0.90, 0.92, 0.94, 0.96)
NEG_ROLES = ("neg_crop", "neg_cifar", "neg_synth")
#: Two pieces of one photo whose overlap covers this share of each axis of both are the same
#: picture for scoring purposes (a 0.85-scale crop is within what the matcher is meant to find).
SAME_REGION = 0.8
#: Contact-sheet tiles at most (false pairs first, then misses); the JSON lists every error.
MAX_TILES = 400


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Suite
# ----------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One file of the suite and its ground truth."""

    rel: str  # path relative to the dataset root (as the report prints it)
    split: str
    stype: str  # photo / cifar / synth
    role: str  # source / train_crop / copy / neg_crop / neg_cifar / neg_synth
    family: str | None = None
    ref: str | None = None  # planted reference (copies)
    base: str | None = None  # base photo (photo-derived items)
    box: tuple[float, float, float, float] | None = None


def _save(image: Image.Image, path: Path, lossless: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if lossless:
        image.save(path, "PNG")
    else:
        image.convert("RGB").save(path, "JPEG", quality=92)


def build_suite(root: Path, seed: int, quick: bool, notes: list[str]) -> tuple[dict[str, Item], dict]:
    rng = np.random.default_rng(seed)
    items: dict[str, Item] = {}

    def add(item: Item) -> None:
        assert item.rel not in items, item.rel
        items[item.rel] = item

    # --- real photographs and their quadrants
    whole, photo_srcs = _photos.photo_sources(notes, quick=quick)
    for p in photo_srcs:
        rel = f"train/photo/{p.name}.{'png' if p.lossless else 'jpg'}"
        _save(p.image, root / rel, p.lossless)
        add(Item(rel, "train", "photo", "source", base=p.base, box=p.box))
    # hard negatives: two different crops of one photo, one per split
    black_bars = 0
    for p in whole:
        a, b = different_crops(p.image, rng)
        w, h = p.image.size
        boxes = []
        for piece in (a, b):
            x, y = _photos.locate(p.image, piece)
            boxes.append((x / w, y / h, (x + piece.width) / w, (y + piece.height) / h))
        black_bars += boxes[1][2] > 1.0 + 1e-9
        ra, rb = f"train/photo/{p.name}__cropA.jpg", f"val/photo/{p.name}__cropB.jpg"
        _save(a, root / ra, False)
        _save(b, root / rb, False)
        add(Item(ra, "train", "photo", "train_crop", base=p.base, box=boxes[0]))
        add(Item(rb, "val", "photo", "neg_crop", base=p.base, box=boxes[1]))
    if black_bars:
        notes.append(f"different_crops: {black_bars}/{len(whole)} val crops extend past the right "
                     "edge of their photo (black bar from PIL's crop padding)")

    # --- CIFAR-10 test images: sources and same-class negatives
    per_class = 4 if quick else 30
    cifar = _photos.cifar_test_files(notes)
    for cls, files in cifar.items():
        order = rng.permutation(len(files))
        chosen = []
        for i in order:
            with Image.open(files[i]) as im:
                if _photos.thumb_std(im) < _photos.BLANK_STD:
                    continue
            chosen.append(files[i])
            if len(chosen) == 2 * per_class:
                break
        for f in chosen[:per_class]:
            rel = f"train/cifar/{cls}_{f.stem}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, root / rel)
            add(Item(rel, "train", "cifar", "source"))
        for f in chosen[per_class:]:
            rel = f"val/cifar/neg_{cls}_{f.stem}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, root / rel)
            add(Item(rel, "val", "cifar", "neg_cifar"))

    # --- synthetic photos: 10 palettes ("classes"); val negatives share the palettes
    n_pal, per_pal = (3, 4) if quick else (10, 10)
    palettes = [tuple(int(c) for c in rng.integers(40, 216, 3)) for _ in range(n_pal)]
    for split, role in (("train", "source"), ("val", "neg_synth")):
        for c, pal in enumerate(palettes):
            for i in range(per_pal):
                size = int(rng.choice([96, 128, 160]))
                rel = f"{split}/synth/{'' if split == 'train' else 'neg_'}p{c}_{i:02d}.jpg"
                _save(random_photo(rng, size, palette=pal), root / rel, False)
                add(Item(rel, split, "synth", role))

    # --- planted copies: every source x every family
    sources = [it for it in items.values() if it.role == "source"]
    for it in sources:
        stem = Path(it.rel).stem
        for fam in FAMILIES:
            ext = Path(it.rel).suffix if fam == "exact" else (".png" if fam == "png" else ".jpg")
            rel = f"val/{it.stype}/{stem}__{fam}{ext}"
            write_copy(root / it.rel, root / rel, fam, rng)
            add(Item(rel, "val", it.stype, "copy", fam, it.rel, it.base, it.box))

    counts = Counter((it.split, it.stype, it.role) for it in items.values())
    info = {
        "seed": seed,
        "quick": quick,
        "families": list(FAMILIES),
        "photos_whole": [p.name for p in whole],
        "photo_sources": len(photo_srcs),
        "cifar_sources": sum(1 for it in sources if it.stype == "cifar"),
        "synth_sources": sum(1 for it in sources if it.stype == "synth"),
        "train_files": sum(1 for it in items.values() if it.split == "train"),
        "val_files": sum(1 for it in items.values() if it.split == "val"),
        "positives": sum(1 for it in items.values() if it.role == "copy"),
        "negatives": {r: counts_role for r, counts_role in Counter(
            it.role for it in items.values() if it.role in NEG_ROLES).items()},
        "layout": {f"{s}/{t}/{r}": n for (s, t, r), n in sorted(counts.items())},
    }
    return items, info


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def _cover(a: tuple, b: tuple) -> float:
    """Smallest share, over both axes and both boxes, of a side that the overlap covers."""
    out = 1.0
    for lo, hi in ((0, 2), (1, 3)):
        inter = max(0.0, min(a[hi], b[hi]) - max(a[lo], b[lo]))
        out = min(out, inter / max(a[hi] - a[lo], b[hi] - b[lo]))
    return out


def ambiguous(items: dict[str, Item], q: str, r: str) -> bool:
    a, b = items[q], items[r]
    return (a.base is not None and a.base == b.base and a.box is not None and b.box is not None
            and _cover(a.box, b.box) >= SAME_REGION)


def right_kind(family: str, kind: str) -> bool:
    return kind == "exact" if family in EXACT_FAMILIES else kind in ("exact", "near")


@dataclass
class Pair:
    query: str
    reference: str
    kind: str
    ncc: float
    cosine: float | None = None
    evidence: str = ""


def _pct(a: int, b: int) -> float | None:
    return None if b == 0 else round(100.0 * a / b, 2)


def score(items: dict[str, Item], pairs: list[Pair]) -> dict:
    """Per-planted-pair recall, false pairs and precision; overall, per family, per source type."""
    planted = {(it.rel, it.ref): it for it in items.values() if it.role == "copy"}
    reported = [p for p in pairs if p.kind in ("exact", "near")]
    hit: dict[tuple[str, str], Pair] = {}
    false: list[Pair] = []
    amb: list[Pair] = []
    for p in reported:
        key = (p.query, p.reference)
        if key in planted:
            hit[key] = p
        elif ambiguous(items, p.query, p.reference):
            amb.append(p)
        else:
            false.append(p)
    similar = {(p.query, p.reference): p for p in pairs if p.kind == "similar"}

    def block(sel_copy, sel_query) -> dict:
        pos = [k for k, it in planted.items() if sel_copy(it)]
        found = [k for k in pos if k in hit]
        correct = [k for k in found if right_kind(planted[k].family, hit[k].kind)]
        fp = [p for p in false if sel_query(items[p.query])]
        negs = [it for it in items.values() if it.role in NEG_ROLES and sel_query(it)]
        neg_hit = {p.query for p in fp if items[p.query].role in NEG_ROLES}
        copy_q = {p.query for p in fp if items[p.query].role == "copy"}
        true_n = len(found)
        return {
            "positives": len(pos),
            "recall": None if not pos else round(len(correct) / len(pos), 4),
            "found_any_kind": None if not pos else round(len(found) / len(pos), 4),
            "correct": len(correct),
            "wrong_kind": len(found) - len(correct),
            "missed": len(pos) - len(found),
            "false_pairs": len(fp),
            "false_pairs_from_negatives": sum(1 for p in fp if items[p.query].role in NEG_ROLES),
            "false_pairs_from_copies": sum(1 for p in fp if items[p.query].role == "copy"),
            "copies_with_false_pair": len(copy_q),
            "negatives": len(negs),
            "negatives_with_false_pair": len(neg_hit),
            "negative_fp_rate_pct": _pct(len(neg_hit), len(negs)),
            "precision": None if true_n + len(fp) == 0 else round(true_n / (true_n + len(fp)), 4),
            "median_ncc_found": None if not found else round(float(np.median([hit[k].ncc for k in found])), 4),
        }

    out = {
        "overall": block(lambda it: True, lambda it: True),
        "per_family": {f: block(lambda it, f=f: it.family == f, lambda it, f=f: it.family == f)
                       for f in FAMILIES},
        "per_negative_kind": {r: block(lambda it: False, lambda it, r=r: it.role == r) for r in NEG_ROLES},
        "per_source_type": {s: block(lambda it, s=s: it.stype == s, lambda it, s=s: it.stype == s)
                            for s in ("photo", "cifar", "synth")},
        "ambiguous_pairs": len(amb),
        "reported_exact_near": len(reported),
    }
    errors = []
    for k, it in planted.items():
        p = hit.get(k)
        if p is None:
            s = similar.get(k)
            errors.append({"type": "miss", "query": k[0], "reference": k[1], "family": it.family,
                           "reported": "similar" if s else None,
                           "ncc": None if s is None else round(s.ncc, 4),
                           "cosine": None if s is None or s.cosine is None else round(s.cosine, 4)})
        elif not right_kind(it.family, p.kind):
            errors.append({"type": "wrong_kind", "query": k[0], "reference": k[1], "family": it.family,
                           "reported": p.kind, "ncc": round(p.ncc, 4), "evidence": p.evidence,
                           "cosine": None if p.cosine is None else round(p.cosine, 4)})
    for p in false:
        q = items[p.query]
        errors.append({"type": "false", "query": p.query, "reference": p.reference,
                       "family": q.family or q.role, "planted_reference": q.ref, "reported": p.kind,
                       "ncc": round(p.ncc, 4), "evidence": p.evidence,
                       "cosine": None if p.cosine is None else round(p.cosine, 4)})
    out["errors"] = errors
    out["ambiguous"] = [{"query": p.query, "reference": p.reference, "kind": p.kind,
                         "ncc": round(p.ncc, 4)} for p in amb]
    return out


# ----------------------------------------------------------------------------------------------
# Running the product
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_fingerprints(store: dict):
    """Wrap ``splitaudit.api.extract`` to keep the table the scan computes (read-only)."""
    original = api.extract

    def spy(samples, **kwargs):
        table = original(samples, **kwargs)
        store["table"], store["samples"] = table, list(samples)
        return table

    api.extract = spy
    try:
        yield store
    finally:
        api.extract = original


def _matches_to_pairs(m, samples) -> list[Pair]:
    out = []
    for i in range(len(m)):
        cos = float(m.cosine[i])
        out.append(Pair(samples[int(m.query[i])].path, samples[int(m.reference[i])].path,
                        KIND_NAMES[int(m.kind[i])], float(m.ncc[i]),
                        None if np.isnan(cos) else cos, m.evidence[i]))
    return out


def run_config(name: str, config: AuditConfig, root: Path, items: dict[str, Item]) -> dict:
    log(f"[{name}] scanning {root} ...")
    store: dict = {}
    t0 = time.perf_counter()
    with capture_fingerprints(store):
        report = api.scan(root, config=config)
    wall = time.perf_counter() - t0
    pairs = [Pair(p.query.path, p.reference.path, p.match, p.ncc, p.cosine, p.evidence)
             for p in report.cross_split_duplicates
             if p.query.split == "val" and p.reference.split == "train"]
    unknown = {p.query for p in pairs} - set(items)
    if unknown:
        raise RuntimeError(f"report paths not in the suite, e.g. {sorted(unknown)[:3]}")
    result = score(items, pairs)
    result["timings_s"] = {**{k: round(v, 2) for k, v in report.timings.items()}, "wall": round(wall, 2)}
    result["settings"] = {"embeddings": report.settings.get("embeddings"),
                          "match": dataclasses.asdict(config.match)}
    result["unreadable"] = [u.to_dict() for u in report.unreadable]
    result["within_train_duplicates"] = [
        {"a": p.query.path, "b": p.reference.path, "kind": p.match, "ncc": round(p.ncc, 4)}
        for p in report.within_split_duplicates if p.query.split == "train"]
    result["notes"] = list(report.notes)
    log(f"[{name}] scan took {wall:.1f}s ({result['timings_s']}); "
        f"recall {result['overall']['recall']}, false pairs {result['overall']['false_pairs']}")

    table, samples = store.get("table"), store.get("samples")
    if table is None:
        result["sweep"] = None
        log(f"[{name}] fingerprints not captured (api.extract changed?): no sweep/diagnostics")
        return result
    split = np.array([s.split for s in samples])
    val_rows, train_rows = np.flatnonzero(split == "val"), np.flatnonzero(split == "train")

    # Sanity: the matcher re-run on the captured table reproduces the scan.
    key = lambda ps: {(p.query, p.reference, p.kind) for p in ps}  # noqa: E731
    again = _matches_to_pairs(Matcher(table, config.match).match(val_rows, train_rows), samples)
    result["rerun_reproduces_scan"] = key(again) == key(pairs)
    if not result["rerun_reproduces_scan"]:
        log(f"[{name}] WARNING: matcher re-run differs from the scan "
            f"({len(key(again) ^ key(pairs))} pairs): sweep numbers are approximate")

    # Threshold sweep: only the matching is re-run.
    sweep = []
    t0 = time.perf_counter()
    for thr in SWEEP:
        mc = dataclasses.replace(config.match, near_threshold=thr)
        ps = _matches_to_pairs(Matcher(table, mc).match(val_rows, train_rows), samples)
        s = score(items, ps)
        fam_recall = {f: s["per_family"][f]["recall"] for f in FAMILIES}
        worst = min(fam_recall, key=lambda f: fam_recall[f])
        sweep.append({"near_threshold": thr, **{k: s["overall"][k] for k in (
            "recall", "found_any_kind", "false_pairs", "false_pairs_from_negatives",
            "negatives_with_false_pair", "negative_fp_rate_pct", "precision")},
            "ambiguous_pairs": s["ambiguous_pairs"], "worst_family": worst,
            "worst_family_recall": fam_recall[worst], "per_family_recall": fam_recall,
            "per_source_recall": {t: s["per_source_type"][t]["recall"] for t in ("photo", "cifar", "synth")}})
    result["sweep"] = sweep
    result["sweep_time_s"] = round(time.perf_counter() - t0, 2)

    # Diagnostics of every miss: was the pair a candidate at all, and what did it score?
    rows = {s.path: i for i, s in enumerate(samples)}
    misses = [e for e in result["errors"] if e["type"] == "miss"]
    if misses:
        matcher = Matcher(table, config.match)
        ok_val, ok_train = val_rows[table.ok[val_rows]], train_rows[table.ok[train_rows]]
        try:
            cand = {tuple(x) for x in matcher.candidates(ok_val, ok_train).tolist()}
        except Exception as exc:  # noqa: BLE001 - internal API may change under us
            cand = None
            log(f"[{name}] candidates() unavailable: {exc}")
        loose = Matcher(table, dataclasses.replace(config.match, similar_threshold=0.0,
                                                   screen_threshold=0.0, similar_cosine=1.0))
        arr = np.array([[rows[e["query"]], rows[e["reference"]]] for e in misses], np.int64)
        v = loose.verify(arr)
        got = {(int(a), int(b)): (float(n), e) for a, b, n, e in zip(v.query, v.reference, v.ncc, v.evidence)}
        for e, (qi, ri) in zip(misses, arr.tolist()):
            e["candidate"] = None if cand is None else (qi, ri) in cand
            e["flat"] = bool(matcher.flat[qi] or matcher.flat[ri])
            if (qi, ri) in got:
                e["ncc"] = round(got[(qi, ri)][0], 4)
                e["evidence"] = got[(qi, ri)][1]
            if table.embeddings is not None:
                e["cosine"] = round(float(np.dot(table.embeddings[qi].astype(np.float32),
                                                 table.embeddings[ri].astype(np.float32))), 4)
            e["reason"] = ("flat thumbnail" if e["flat"] else
                           "not retrieved" if e["candidate"] is False else
                           f"verified below threshold (ncc {e['ncc']})")
    return result


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _f(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else str(v)


def markdown(results: dict, info: dict) -> str:
    names = list(results)
    out = []
    out.append(f"## Suite (seed {info['seed']}{', quick' if info['quick'] else ''})\n")
    out.append(f"train {info['train_files']} files ({info['photo_sources']} photo sources, "
               f"{info['cifar_sources']} CIFAR, {info['synth_sources']} synthetic, plus "
               f"{len(info['photos_whole'])} different-crop pieces); val {info['val_files']} files "
               f"({info['positives']} planted copies, negatives {info['negatives']}).\n")

    out.append("## Overall (default thresholds)\n")
    out.append("| config | recall (right kind) | found (any kind) | missed | wrong kind | false pairs "
               "(from negatives / copies) | negatives with a false pair | precision | ambiguous | "
               "fingerprint s | search s | wall s |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        o, t = results[n]["overall"], results[n]["timings_s"]
        out.append(f"| {n} | {_f(o['recall'], True)} | {_f(o['found_any_kind'], True)} | {o['missed']} | "
                   f"{o['wrong_kind']} | {o['false_pairs']} ({o['false_pairs_from_negatives']} / "
                   f"{o['false_pairs_from_copies']}) | {o['negatives_with_false_pair']}/{o['negatives']} "
                   f"({_f(o['negative_fp_rate_pct'])}%) | {_f(o['precision'], True)} | "
                   f"{results[n]['ambiguous_pairs']} | {t.get('fingerprint', '-')} | {t.get('search', '-')} | "
                   f"{t['wall']} |")

    out.append("\n## Per family\n")
    head = "| family | n |" + "".join(f" {n} recall | {n} missed | {n} wrong kind | {n} false pairs | "
                                     f"{n} median ncc |" for n in names)
    out.append(head)
    out.append("|---|---|" + "---|---|---|---|---|" * len(names))
    for f in FAMILIES:
        row = f"| {f} | {results[names[0]]['per_family'][f]['positives']} |"
        for n in names:
            b = results[n]["per_family"][f]
            row += (f" {_f(b['recall'], True)} | {b['missed']} | {b['wrong_kind']} | {b['false_pairs']} | "
                    f"{_f(b['median_ncc_found'])} |")
        out.append(row)
    for r in NEG_ROLES:
        row = f"| *{r}* | {results[names[0]]['per_negative_kind'][r]['negatives']} neg |"
        for n in names:
            b = results[n]["per_negative_kind"][r]
            row += (f" - | - | - | {b['false_pairs']} ({b['negatives_with_false_pair']} images, "
                    f"{_f(b['negative_fp_rate_pct'])}%) | - |")
        out.append(row)

    out.append("\n## Per source type\n")
    out.append("| source | config | positives | recall | missed | wrong kind | false pairs | "
               "negatives with a false pair | precision |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for s in ("photo", "cifar", "synth"):
        for n in names:
            b = results[n]["per_source_type"][s]
            out.append(f"| {s} | {n} | {b['positives']} | {_f(b['recall'], True)} | {b['missed']} | "
                       f"{b['wrong_kind']} | {b['false_pairs']} | {b['negatives_with_false_pair']}/"
                       f"{b['negatives']} ({_f(b['negative_fp_rate_pct'])}%) | {_f(b['precision'], True)} |")

    for n in names:
        sw = results[n].get("sweep")
        if not sw:
            continue
        out.append(f"\n## near_threshold sweep: {n} (matching re-run on the scan's fingerprints; "
                   f"reproduces scan: {results[n].get('rerun_reproduces_scan')})\n")
        out.append("| near_threshold | recall | photo | cifar | synth | false pairs (from negatives) | "
                   "negatives with a false pair | precision | worst family |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in sw:
            ps = r["per_source_recall"]
            out.append(f"| {r['near_threshold']:.2f} | {_f(r['recall'], True)} | {_f(ps['photo'], True)} | "
                       f"{_f(ps['cifar'], True)} | {_f(ps['synth'], True)} | {r['false_pairs']} "
                       f"({r['false_pairs_from_negatives']}) | {r['negatives_with_false_pair']} "
                       f"({_f(r['negative_fp_rate_pct'])}%) | {_f(r['precision'], True)} | "
                       f"{r['worst_family']} {_f(r['worst_family_recall'], True)} |")
        out.append("\nPer-family recall by threshold:\n")
        out.append("| family | " + " | ".join(f"{r['near_threshold']:.2f}" for r in sw) + " |")
        out.append("|---|" + "---|" * len(sw))
        for f in FAMILIES:
            out.append(f"| {f} | " + " | ".join(_f(r["per_family_recall"][f], True) for r in sw) + " |")

    for n in names:
        errs = results[n]["errors"]
        if not errs:
            continue
        out.append(f"\n## Errors: {n}\n")
        by = Counter((e["type"], e["family"], _reason(e)) for e in errs)
        out.append("| type | family | reason / reported as | count |")
        out.append("|---|---|---|---|")
        for (t, f, r), c in sorted(by.items()):
            out.append(f"| {t} | {f} | {r} | {c} |")
    return "\n".join(out) + "\n"


def _reason(e: dict) -> str:
    if e["type"] == "miss":
        r = e.get("reason") or ""
        r = "verified below threshold" if r.startswith("verified below") else r
        return r + (" (reported similar)" if e.get("reported") == "similar" else "")
    return f"reported {e.get('reported')}"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _panel(path: Path, side: int) -> Image.Image:
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.Resampling.LANCZOS)
            if im.width < side // 2 and im.height < side // 2:  # enlarge tiny images (CIFAR)
                f = side / max(im.size)
                im = im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.NEAREST)
    except OSError:
        return canvas
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


def contact_sheet(results: dict, root: Path, dest: Path) -> dict:
    """One tile per error: query | reference, with type, family, score and config."""
    merged: dict[tuple, dict] = {}
    for n, r in results.items():
        for e in r["errors"]:
            k = (e["type"], e["query"], e["reference"])
            if k not in merged:
                merged[k] = {**e, "configs": []}
            merged[k]["configs"].append(n)
    order = {"false": 0, "wrong_kind": 1, "miss": 2}
    errs = sorted(merged.values(), key=lambda e: (order[e["type"]], FAMILIES.index(e["family"])
                                                   if e["family"] in FAMILIES else -1, e["query"]))
    shown = errs[:MAX_TILES]
    side, pad, cap = 112, 6, 44
    tw, th = 2 * side + 3 * pad, side + cap + 2 * pad
    cols = 7
    rows = max(1, -(-len(shown) // cols))
    title_h = 30
    sheet = Image.new("RGB", (cols * tw, title_h + rows * th), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font, small = _font(13), _font(11)
    cnt = Counter(e["type"] for e in errs)
    draw.text((6, 6), f"splitaudit accuracy errors: {dict(cnt)} (showing {len(shown)}); "
              "left = val query, right = train reference. H=hash-only, C=CNN", fill=(0, 0, 0), font=font)
    colours = {"false": (200, 30, 30), "miss": (30, 60, 200), "wrong_kind": (200, 130, 0)}
    for i, e in enumerate(shown):
        x, y = (i % cols) * tw, title_h + (i // cols) * th
        draw.rectangle([x + 1, y + 1, x + tw - 2, y + th - 2], outline=colours[e["type"]], width=2)
        sheet.paste(_panel(root / e["query"], side), (x + pad, y + pad))
        sheet.paste(_panel(root / e["reference"], side), (x + 2 * pad + side, y + pad))
        tag = "+".join("H" if c == "hash" else "C" for c in e["configs"])
        ncc = "-" if e.get("ncc") is None else f"{e['ncc']:.3f}"
        cos = "" if e.get("cosine") is None else f" cos {e['cosine']:.2f}"
        line1 = f"{e['type'].upper()} {e['family']} [{tag}]"
        line2 = f"ncc {ncc}{cos} {e.get('reported') or ''}"
        line3 = (e.get("reason") or e.get("evidence") or "")[:38]
        draw.text((x + pad, y + pad + side + 2), line1, fill=colours[e["type"]], font=font)
        draw.text((x + pad, y + pad + side + 17), line2, fill=(0, 0, 0), font=small)
        draw.text((x + pad, y + pad + side + 30), line3, fill=(60, 60, 60), font=small)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return {"tiles": len(shown), "errors": len(errs), "by_type": dict(cnt)}


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer sources (smoke run)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN config even if weights exist")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated dataset directory")
    args = ap.parse_args(argv)

    notes: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="splitaudit-accuracy-"))
    try:
        t0 = time.perf_counter()
        items, info = build_suite(root, args.seed, args.quick, notes)
        info["build_s"] = round(time.perf_counter() - t0, 1)
        log(f"suite written to {root} in {info['build_s']}s: train {info['train_files']}, "
            f"val {info['val_files']}")
        for n in notes:
            log(f"note: {n}")

        configs = [("hash", AuditConfig(embeddings=False))]
        if not args.no_cnn and WEIGHTS.is_file():
            configs.append(("cnn", AuditConfig(weights=str(WEIGHTS), require_embeddings=True)))
        elif not args.no_cnn:
            notes.append(f"CNN config skipped: {WEIGHTS} not found")
        results = {name: run_config(name, cfg, root, items) for name, cfg in configs}

        args.out.mkdir(parents=True, exist_ok=True)
        sheet = contact_sheet(results, root, args.out / "accuracy_errors.png")
        md = markdown(results, info)
        print(md)
        payload = {
            "benchmark": "accuracy",
            "splitaudit_version": splitaudit.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "suite": info,
            "notes": notes,
            "configs": results,
            "contact_sheet": sheet,
        }
        (args.out / "accuracy.json").write_text(json.dumps(payload, indent=1, default=str))
        log(f"wrote {args.out / 'accuracy.json'} and {args.out / 'accuracy_errors.png'} "
            f"({sheet['tiles']} tiles of {sheet['errors']} errors)")
    finally:
        if args.keep_data:
            log(f"dataset kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
