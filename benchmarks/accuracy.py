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
missed positive and false pair, ``<out>/accuracy_errors.png`` (``accuracy-quick.json`` and
``accuracy_errors-quick.png`` with ``--quick``, so a smoke run never overwrites a full one).

Usage::

    python benchmarks/accuracy.py [--seed 0] [--quick] [--out benchmarks/results] [--no-cnn]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _photos  # noqa: E402
import peers as peer_tools  # noqa: E402
from _common import environment, require_shared, write_json  # noqa: E402

import splitaudit.api as api  # noqa: E402
from splitaudit import alignment  # noqa: E402
from splitaudit.config import AuditConfig  # noqa: E402
from splitaudit.matching import KIND_NAMES, Matcher  # noqa: E402
from splitaudit.synth import EXACT_FAMILIES, NEAR_FAMILIES, different_crops, random_photo, write_copy  # noqa: E402

FAMILIES = tuple(EXACT_FAMILIES) + tuple(NEAR_FAMILIES)
WEIGHTS = _photos.SHARED / "models" / "mobilenet_v2_1.0_224_no_top.h5"
#: One-parameter sweeps around the defaults (parameters the MatchConfig lacks are skipped; only
#: near_threshold matters without embeddings).
SWEEPS = {
    "near_threshold": (0.88, 0.90, 0.92, 0.94, 0.96, 0.98),
    "near_threshold_cnn": (0.86, 0.88, 0.90, 0.92, 0.94),
    "near_cosine": (0.5, 0.6, 0.7, 0.8, 0.9),
}
NEG_ROLES = ("neg_crop", "neg_cifar", "neg_synth")
#: Two pieces of one photo whose overlap covers this share of each axis of both are the same
#: picture for scoring purposes (a 0.85-scale crop is within what the matcher is meant to find).
SAME_REGION = 0.8
#: Plain shifted NCC at or above which two pictures gathered for the suite are already copies of
#: each other (CIFAR-10's test set holds a few); the later one is dropped. Different ships on
#: the sea reach ~0.90, the duplicate pairs found in CIFAR-10 test ~0.95.
DUP_NCC = 0.93
#: Contact-sheet tiles at most (false pairs first, then misses); the JSON lists every error.
MAX_TILES = 400


#: Missed/false pairs kept per peer in accuracy_peers.json (the rest are counted).
MAX_ERRORS_KEPT = 200


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


@dataclass
class _Pic:
    """A picture staged for the suite before it is written."""

    image: Image.Image
    stype: str
    name: str
    base: str | None = None
    box: tuple | None = None
    lossless: bool = False
    file: Path | None = None  # CIFAR: copy the original JPEG bytes
    role: str | None = None


def _drop_existing_copies(pics: list[_Pic], notes: list[str]) -> list[_Pic]:
    """Drop pictures that are already copies of an earlier one (e.g. CIFAR-10 test duplicates).

    Uses plain shifted NCC (``_photos.rigid_similarity``), not splitaudit's matcher; pieces of
    one photo are compared by geometry instead, so they are exempt here.
    """
    sim = _photos.rigid_similarity([p.image for p in pics])
    kept: list[int] = []
    for i, p in enumerate(pics):
        dup = next((j for j in kept if sim[i, j] >= DUP_NCC
                    and not (p.base is not None and p.base == pics[j].base)), None)
        if dup is None:
            kept.append(i)
        else:
            notes.append(f"suite: dropped {p.stype} {p.name}, a copy of {pics[dup].name} already "
                         f"(plain ncc {sim[i, dup]:.3f})")
    return [pics[i] for i in kept]


def build_suite(root: Path, seed: int, quick: bool, notes: list[str]) -> tuple[dict[str, Item], dict]:
    rng = np.random.default_rng(seed)
    items: dict[str, Item] = {}

    def add(item: Item) -> None:
        assert item.rel not in items, item.rel
        items[item.rel] = item

    pics: list[_Pic] = []
    # --- real photographs and their quadrants
    whole, photo_srcs, symmetric = _photos.photo_sources(notes, quick=quick)
    for p in photo_srcs:
        pics.append(_Pic(p.image, "photo", p.name, p.base, p.box, p.lossless, role="source"))
    # hard negatives: two different crops of one photo, one per split
    black_bars = 0
    crop_photos = [p for p in whole if p.name not in symmetric]
    for p in crop_photos:
        a, b = different_crops(p.image, rng)
        w, h = p.image.size
        boxes = []
        for piece in (a, b):
            x, y = _photos.locate(p.image, piece)
            boxes.append((x / w, y / h, (x + piece.width) / w, (y + piece.height) / h))
        black_bars += boxes[1][2] > 1.0 + 1e-9
        pics.append(_Pic(a, "photo", f"{p.name}__cropA", p.base, boxes[0], role="train_crop"))
        pics.append(_Pic(b, "photo", f"{p.name}__cropB", p.base, boxes[1], role="neg_crop"))
    if black_bars:
        notes.append(f"different_crops: {black_bars}/{len(crop_photos)} val crops extend past the right "
                     "edge of their photo (black bar from PIL's crop padding)")

    # --- CIFAR-10 test images: sources and same-class negatives (a few spare candidates per
    # class replace any that duplicate another picture of the suite)
    per_class = 4 if quick else 30
    cifar = _photos.cifar_test_files(notes)
    for cls, files in cifar.items():
        order = rng.permutation(len(files))
        n = 0
        for i in order:
            with Image.open(files[i]) as im:
                image = im.convert("RGB")
            if _photos.thumb_std(image) < _photos.BLANK_STD:
                continue
            pics.append(_Pic(image, "cifar", f"{cls}_{files[i].stem}", file=files[i], role=cls))
            n += 1
            if n == 2 * per_class + 3:
                break

    # --- synthetic photos: 10 palettes ("classes"); val negatives share the palettes
    n_pal, per_pal = (3, 4) if quick else (10, 10)
    palettes = [tuple(int(c) for c in rng.integers(40, 216, 3)) for _ in range(n_pal)]
    for role in ("source", "neg_synth"):
        for c, pal in enumerate(palettes):
            for i in range(per_pal):
                size = int(rng.choice([96, 128, 160]))
                name = f"{'' if role == 'source' else 'neg_'}p{c}_{i:02d}"
                pics.append(_Pic(random_photo(rng, size, palette=pal), "synth", name, role=role))

    pics = _drop_existing_copies(pics, notes)
    by_class: dict[str, list[_Pic]] = defaultdict(list)
    for p in pics:
        if p.stype == "cifar":
            by_class[p.role].append(p)
    for cls, lst in by_class.items():
        for k, p in enumerate(lst[:2 * per_class]):
            p.role = "source" if k < per_class else "neg_cifar"
            if p.role == "neg_cifar":
                p.name = f"neg_{p.name}"
    pics = [p for p in pics if p.role in ("source", "train_crop") + NEG_ROLES]

    for p in pics:
        split = "train" if p.role in ("source", "train_crop") else "val"
        rel = f"{split}/{p.stype}/{p.name}.{'png' if p.lossless else 'jpg'}"
        if p.file is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p.file, root / rel)
        else:
            _save(p.image, root / rel, p.lossless)
        add(Item(rel, split, p.stype, p.role, base=p.base, box=p.box))

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
        "mirror_symmetric_photos": sorted(symmetric),
        "different_crop_negatives": len(crop_photos),
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


def _transform_class(evidence: str) -> str:
    """Coarse class of an aligning transform: exact / identity / crop<=19% / crop>19% / rotation."""
    if evidence in ("same bytes", "same pixels") or evidence.startswith("both blank"):
        return "exact or blank"
    flip = "flip+" if evidence.startswith("flip") else ""
    if "rotate" in evidence:
        deg = abs(float(evidence.split("rotate ")[1].split("deg")[0]))
        return flip + ("rotate <=16deg" if deg <= 16 else "rotate >16deg")
    if "crop" in evidence:
        pct = float(evidence.split("crop ")[1].split("%")[0])
        return flip + ("crop <=19%" if pct <= 19 else "crop >19%")
    return flip + "aligned" if flip else "aligned"


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
        result["sweeps"] = None
        log(f"[{name}] fingerprints not captured (api.extract changed?): no sweep/diagnostics")
        return result
    split = np.array([s.split for s in samples])
    val_rows, train_rows = np.flatnonzero(split == "val"), np.flatnonzero(split == "train")

    # Threshold sweeps, one parameter at a time around the config's defaults. The matching alone
    # is re-run once, permissively (every verified pair scoring >= the lowest threshold comes
    # back as "near" with its score and cosine); each setting is then applied with the
    # verifier's rule: near iff ncc >= near_threshold, or ncc >= near_threshold_cnn and the CNN
    # cosine >= near_cosine. The shortcut is checked: at the defaults it must reproduce the
    # scan's pairs exactly, otherwise every setting is re-run through the matcher instead.
    t0 = time.perf_counter()
    mc0 = config.match
    fields = {f.name for f in dataclasses.fields(mc0)}
    grid = {k: sorted(set(v) | {getattr(mc0, k)}) for k, v in SWEEPS.items() if k in fields}
    if table.embeddings is None:
        grid = {k: v for k, v in grid.items() if k == "near_threshold"}
    floor = min(min(v) for k, v in grid.items() if k != "near_cosine")
    loose = dataclasses.replace(mc0, near_threshold=floor, **(
        {"near_threshold_cnn": 1.0} if "near_threshold_cnn" in fields else {}))
    base_pairs = _matches_to_pairs(Matcher(table, loose).match(val_rows, train_rows), samples)

    def rule(mc) -> list[Pair]:
        out = []
        for p in base_pairs:
            if p.kind == "near" and not p.evidence.startswith("both blank"):
                cnn_ok = (p.cosine is not None and getattr(mc, "near_cosine", 2.0) <= p.cosine
                          and p.ncc >= getattr(mc, "near_threshold_cnn", 2.0))
                if not (p.ncc >= mc.near_threshold or cnn_ok):
                    p = dataclasses.replace(p, kind="similar")
            out.append(p)
        return out

    key = lambda ps: {(p.query, p.reference, p.kind) for p in ps if p.kind in ("exact", "near")}  # noqa: E731
    shortcut = key(rule(mc0)) == key(pairs)
    result["sweep_shortcut_reproduces_scan"] = shortcut
    if not shortcut:
        log(f"[{name}] shortcut differs from the scan: re-running the matcher per setting")
    sweeps = {}
    for param, values in grid.items():
        rows_out = []
        for v in values:
            mc = dataclasses.replace(mc0, **{param: v})
            if shortcut:
                ps = rule(mc)
            else:
                ps = _matches_to_pairs(Matcher(table, mc).match(val_rows, train_rows), samples)
            s = score(items, ps)
            fam_recall = {f: s["per_family"][f]["recall"] for f in FAMILIES}
            worst = min(fam_recall, key=lambda f: fam_recall[f])
            rows_out.append({param: v, "default": v == getattr(mc0, param), **{k: s["overall"][k] for k in (
                "recall", "found_any_kind", "false_pairs", "false_pairs_from_negatives",
                "negatives_with_false_pair", "negative_fp_rate_pct", "precision")},
                "ambiguous_pairs": s["ambiguous_pairs"], "worst_family": worst,
                "worst_family_recall": fam_recall[worst], "per_family_recall": fam_recall,
                "per_family_false_pairs": {f: s["per_family"][f]["false_pairs"] for f in FAMILIES},
                "per_source_recall": {t: s["per_source_type"][t]["recall"] for t in ("photo", "cifar", "synth")},
                "per_source_false_pairs": {t: s["per_source_type"][t]["false_pairs"]
                                           for t in ("photo", "cifar", "synth")}})
        sweeps[param] = rows_out
    result["sweeps"] = sweeps
    result["sweep_time_s"] = round(time.perf_counter() - t0, 2)

    # Reported exact/near pairs by the transform that aligned them: true vs false.
    by_t: dict[str, Counter] = defaultdict(Counter)
    false_keys = {(e["query"], e["reference"]) for e in result["errors"] if e["type"] == "false"}
    for p in pairs:
        if p.kind in ("exact", "near"):
            by_t[_transform_class(p.evidence)]["false" if (p.query, p.reference) in false_keys else "other"] += 1
    result["pairs_by_transform"] = {k: dict(v) for k, v in sorted(by_t.items())}

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
        # The verifier's coarse screen, as Matcher.verify runs it (reference first, query second).
        try:
            coarse = alignment.align_pairs(matcher.prepared(arr[:, 1]), matcher.prepared(arr[:, 0]),
                                           matcher.aspect[arr[:, 1]], matcher.aspect[arr[:, 0]],
                                           coarse=True).ncc
        except Exception as exc:  # noqa: BLE001 - internal API may change under us
            coarse = None
            log(f"[{name}] coarse alignment unavailable: {exc}")
        screen = getattr(config.match, "screen_threshold", None)
        for k, (e, (qi, ri)) in enumerate(zip(misses, arr.tolist())):
            e["reported_ncc"] = e.pop("ncc", None)
            e["candidate"] = None if cand is None else (qi, ri) in cand
            e["flat"] = bool(matcher.flat[qi] or matcher.flat[ri])
            e["ncc"] = round(got[(qi, ri)][0], 4) if (qi, ri) in got else None
            e["evidence"] = got[(qi, ri)][1] if (qi, ri) in got else ""
            e["coarse_ncc"] = None if coarse is None else round(float(coarse[k]), 4)
            if table.embeddings is not None:
                e["cosine"] = round(float(np.dot(table.embeddings[qi].astype(np.float32),
                                                 table.embeddings[ri].astype(np.float32))), 4)
            if e["flat"]:
                e["reason"] = "flat thumbnail"
            elif e["candidate"] is False:
                e["reason"] = "not retrieved"
            elif e["coarse_ncc"] is not None and screen is not None and e["coarse_ncc"] < screen:
                e["reason"] = f"dropped by coarse screen (coarse {e['coarse_ncc']}, full {e['ncc']})"
            elif (e.get("cosine") is not None and e["ncc"] is not None
                  and e["ncc"] >= getattr(config.match, "near_threshold_cnn", 2.0)
                  and e["cosine"] < getattr(config.match, "near_cosine", -2.0)):
                e["reason"] = f"CNN gate: cosine {e['cosine']} < near_cosine (ncc {e['ncc']})"
            else:
                e["reason"] = f"verified below threshold (ncc {e['ncc']})"
    return result


# ----------------------------------------------------------------------------------------------
# Peers (each in its own venv, see peers.py): the same suite, the same scoring
# ----------------------------------------------------------------------------------------------

#: Peer methods run on the suite: (peer, method) keys of peers.DRIVERS. imagededup's CNN is not
#: here: its ImageNet weights are a download, impossible offline (random weights would make its
#: accuracy meaningless).
PEER_METHODS = {"imagededup": ("phash",), "cleanvision": ("duplicates",), "difpy": ("similar",)}
DEFAULT_PEERS = "imagededup,cleanvision"


def run_peer(peer: str, method: str, root: Path, items: dict[str, Item]) -> dict:
    """Score one peer's pairs on the suite exactly as splitaudit's (val -> train pairs only).

    Peers have no NCC: their pairs carry ``ncc`` 0 and ``median_ncc_found`` is dropped. A peer
    with no notion of an exact copy (imagededup PHash, difPy) reports every pair as ``near``,
    so for it "found (any kind)" is the comparable recall.
    """
    log(f"[{peer} {method}] running on {root} ...")
    t0 = time.perf_counter()
    ans, _ = peer_tools.run_method(peer, method, root)
    wall = time.perf_counter() - t0
    pairs = []
    for a, b, kind, dist in ans["pairs"]:
        sa, sb = a.split("/", 1)[0], b.split("/", 1)[0]
        if {sa, sb} != {"train", "val"}:
            continue
        q, r = (a, b) if sa == "val" else (b, a)
        pairs.append(Pair(q, r, kind, 0.0, None, f"{peer} {kind}" + ("" if dist is None else f" d={dist}")))
    unknown = {p.query for p in pairs} - set(items)
    if unknown:
        raise RuntimeError(f"{peer} reported paths not in the suite, e.g. {sorted(unknown)[:3]}")
    result = score(items, pairs)
    for block in [result["overall"], *result["per_family"].values(),
                  *result["per_negative_kind"].values(), *result["per_source_type"].values()]:
        block.pop("median_ncc_found", None)
    for e in result["errors"]:
        e.pop("ncc", None)
    result["timings_s"] = {**ans["stages_s"], "wall": round(wall, 2)}
    result["what"] = peer_tools.DRIVERS[(peer, method)][1]
    result["images_seen"] = ans["n_images"]
    log(f"[{peer} {method}] {wall:.1f}s; found {result['overall']['found_any_kind']}, "
        f"recall (right kind) {result['overall']['recall']}, false pairs {result['overall']['false_pairs']}")
    return result


def peers_markdown(rows: dict[str, dict], info: dict) -> str:
    """Side-by-side table: found (any kind) / false pairs per family, per negative kind, overall."""
    names = list(rows)
    out = [f"## splitaudit and peers on the same suite (seed {info['seed']}"
           f"{', quick' if info['quick'] else ''})\n",
           "found: planted copies reported at all (any kind); right kind: exact families reported "
           "exact, the others exact or near; false: reported pairs that were not planted (hard "
           "negatives and copies matched to the wrong source).\n"]
    out.append("| family | n | " + " | ".join(f"{n} found / right kind / false" for n in names) + " |")
    out.append("|---|---|" + "---|" * len(names))
    first = rows[names[0]]
    for f in FAMILIES:
        cells = []
        for n in names:
            b = rows[n]["per_family"][f]
            cells.append(f"{_f(b['found_any_kind'], True)} / {_f(b['recall'], True)} / {b['false_pairs']}")
        out.append(f"| {f} | {first['per_family'][f]['positives']} | " + " | ".join(cells) + " |")
    for r in NEG_ROLES:
        cells = []
        for n in names:
            b = rows[n]["per_negative_kind"][r]
            cells.append(f"- / - / {b['false_pairs']} ({b['negatives_with_false_pair']} images)")
        out.append(f"| *{r}* | {first['per_negative_kind'][r]['negatives']} neg | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        o = rows[n]["overall"]
        cells.append(f"**{_f(o['found_any_kind'], True)} / {_f(o['recall'], True)} / {o['false_pairs']}**")
    out.append(f"| **overall** | {first['overall']['positives']} | " + " | ".join(cells) + " |")
    out.append("\n| tool | precision | negatives with a false pair | wall s | what ran |")
    out.append("|---|---|---|---|---|")
    for n in names:
        o = rows[n]["overall"]
        out.append(f"| {n} | {_f(o['precision'], True)} | {o['negatives_with_false_pair']}/{o['negatives']} "
                   f"({_f(o['negative_fp_rate_pct'])}%) | {rows[n].get('timings_s', {}).get('wall', '-')} | "
                   f"{rows[n].get('what', 'splitaudit api.scan, in-process (no interpreter start)')} |")
    return "\n".join(out) + "\n"


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
               f"{info['different_crop_negatives']} different-crop pieces); val {info['val_files']} files "
               f"({info['positives']} planted copies, negatives {info['negatives']}).\n")

    for note in info.get("notes", []):
        out.append(f"* {note}")
    if info.get("notes"):
        out.append("")
    out.append(f"Load average (1 min) before / after the scans: {info.get('load_before')} / "
               f"{info.get('load_after')} on {os.cpu_count()} cores: timings are wall-clock on a "
               "shared machine.\n")
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

    out.append("\nrecall: planted pairs reported with the right kind; found: either kind; false pairs: "
               "reported exact/near pairs that were not planted (from negatives = the val image is a "
               "hard negative, from copies = a planted copy also matched another train image); "
               "ambiguous: pairs of two pieces of one photo that overlap >= 80% per axis (not scored).\n")
    out.append("\n## Per family\n")
    out.append("false pairs of a family: reported pairs whose val image is a copy of that family but "
               "whose train image is not its source.\n")
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
        sweeps = results[n].get("sweeps") or {}
        for param, sw in sweeps.items():
            others = ", ".join(f"{k}={v}" for k, v in results[n]["settings"]["match"].items()
                               if k in SWEEPS and k != param and (k == "near_threshold" or len(sweeps) > 1))
            out.append(f"\n## Sweep of {param}: {n} ({others or 'no other gate'}; matching re-run on the "
                       f"scan's fingerprints, reproduces the scan at the defaults: "
                       f"{results[n].get('sweep_shortcut_reproduces_scan')})\n")
            out.append(f"| {param} | recall | photo | cifar | synth | false pairs (from negatives) | "
                       "false pairs photo / cifar / synth | negatives with a false pair | precision | "
                       "worst family |")
            out.append("|---|---|---|---|---|---|---|---|---|---|")
            for r in sw:
                ps, pf = r["per_source_recall"], r["per_source_false_pairs"]
                mark = " (default)" if r.get("default") else ""
                out.append(f"| {r[param]:.2f}{mark} | {_f(r['recall'], True)} | {_f(ps['photo'], True)} | "
                           f"{_f(ps['cifar'], True)} | {_f(ps['synth'], True)} | {r['false_pairs']} "
                           f"({r['false_pairs_from_negatives']}) | {pf['photo']} / {pf['cifar']} / "
                           f"{pf['synth']} | {r['negatives_with_false_pair']} "
                           f"({_f(r['negative_fp_rate_pct'])}%) | {_f(r['precision'], True)} | "
                           f"{r['worst_family']} {_f(r['worst_family_recall'], True)} |")
            out.append(f"\nPer-family recall (false pairs) by {param}:\n")
            out.append("| family | " + " | ".join(f"{r[param]:.2f}" for r in sw) + " |")
            out.append("|---|" + "---|" * len(sw))
            for f in FAMILIES:
                out.append(f"| {f} | " + " | ".join(
                    f"{_f(r['per_family_recall'][f], True)} ({r['per_family_false_pairs'][f]})" for r in sw) + " |")

    out.append("\n## Reported exact/near pairs by aligning transform (default thresholds)\n")
    classes = sorted({c for n in names for c in results[n].get("pairs_by_transform", {})})
    out.append("| transform | " + " | ".join(f"{n} true+ambiguous | {n} false" for n in names) + " |")
    out.append("|---|" + "---|---|" * len(names))
    for c in classes:
        row = f"| {c} |"
        for n in names:
            v = results[n].get("pairs_by_transform", {}).get(c, {})
            row += f" {v.get('other', 0)} | {v.get('false', 0)} |"
        out.append(row)

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
        r = "dropped by coarse screen" if r.startswith("dropped by coarse") else r
        r = "CNN gate: cosine < near_cosine" if r.startswith("CNN gate") else r
        return r + (" (reported similar)" if e.get("reported") == "similar" else "")
    return f"reported {e.get('reported')}"


def _short_reason(e: dict) -> str:
    r = e.get("reason") or ""
    if r.startswith("dropped by coarse"):
        return f"coarse screen {e.get('coarse_ncc')}; {e.get('evidence', '')}"
    if r.startswith("CNN gate"):
        return f"CNN gate: cos {e.get('cosine')}; {e.get('evidence', '')}"
    if r.startswith("verified below"):
        return f"below threshold; {e.get('evidence', '')}"
    if r:
        return f"{r}; {e.get('evidence', '')}"
    return e.get("evidence") or ""


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
        line2 = f"ncc {ncc}{cos} -> {e.get('reported') or 'none'}"
        line3 = _short_reason(e)[:40]
        draw.text((x + pad, y + pad + side + 2), line1, fill=colours[e["type"]], font=font)
        draw.text((x + pad, y + pad + side + 17), line2, fill=(0, 0, 0), font=small)
        draw.text((x + pad, y + pad + side + 30), line3, fill=(60, 60, 60), font=small)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours: a quarter of the bytes of full RGB, and still plain to read.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        dest, optimize=True)
    return {"tiles": len(shown), "errors": len(errs), "by_type": dict(cnt)}


# ----------------------------------------------------------------------------------------------


def run_peers(args: argparse.Namespace, root: Path, items: dict[str, Item], info: dict,
              results: dict, suffix: str) -> None:
    """Run the peers on the suite; print the comparison and write ``accuracy_peers<suffix>.json``."""
    ready, skipped = peer_tools.available(args.peers, log=log)
    rows: dict[str, dict] = {f"splitaudit {n}": r for n, r in results.items()}
    source = "this run"
    if not rows:  # --peers-only: splitaudit's figures from the last full run on the same suite
        prev = args.out / f"accuracy{suffix}.json"
        try:
            old = json.loads(prev.read_text())
            if old["suite"]["seed"] == info["seed"] and old["suite"]["positives"] == info["positives"]:
                rows = {f"splitaudit {n} (from {prev.name})": r for n, r in old["configs"].items()}
                source = os.fspath(prev)
        except (OSError, ValueError, KeyError):
            pass
    failed: dict[str, str] = {}
    for peer in ready:
        for method in PEER_METHODS.get(peer, ()):
            try:
                rows[f"{peer} {method}"] = run_peer(peer, method, root, items)
            except RuntimeError as exc:  # recorded, the other peers still run
                failed[f"{peer} {method}"] = str(exc)
                log(f"[{peer} {method}] failed: {exc}")
    md = peers_markdown(rows, info) if rows else ""
    for k, why in {**skipped, **failed}.items():
        md += f"\n* {k} skipped: {why}"
    if "imagededup" in ready:
        md += ("\n* imagededup CNN not run: its model's ImageNet weights (torchvision "
               "MobileNetV3-Small) are downloaded at run time, impossible offline.")
    print(md)
    def _capped_errors(row: dict) -> dict:
        # A weak peer misses thousands of pairs: keep a sample and the count, not a 1 MB list.
        errors = row.get("errors")
        if isinstance(errors, list) and len(errors) > MAX_ERRORS_KEPT:
            row = dict(row, errors=errors[:MAX_ERRORS_KEPT], errors_total=len(errors))
        return row

    keep = ("overall", "per_family", "per_negative_kind", "per_source_type", "ambiguous_pairs",
            "timings_s", "what", "images_seen", "errors")
    payload = {
        "benchmark": "accuracy_peers",
        "environment": environment(),
        "suite": {k: v for k, v in info.items() if k != "layout"},
        "splitaudit_figures_from": source,
        "peer_versions": {p: peer_tools.versions(p) for p in ready},
        "skipped": {**skipped, **failed},
        "not_run": ({"imagededup cnn": "ImageNet weights of torchvision MobileNetV3-Small are a "
                     "download (no network here)"} if "imagededup" in ready else {}),
        "tools": {n: _capped_errors({k: r[k] for k in keep if k in r}) for n, r in rows.items()},
        "table_markdown": md,
    }
    path = args.out / f"accuracy_peers{suffix}.json"
    write_json(path, json.loads(json.dumps(payload, default=str)))
    log(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer sources (smoke run)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN config even if weights exist")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated dataset directory")
    ap.add_argument("--peers", default=DEFAULT_PEERS,
                    help="peer tools to run on the same suite, comma-separated (imagededup, cleanvision, "
                         f"difpy), or 'none'; each installed into its own venv (default {DEFAULT_PEERS})")
    ap.add_argument("--peers-only", action="store_true",
                    help="run only the peers (splitaudit's figures are then read from accuracy.json "
                         "when its seed matches)")
    args = ap.parse_args(argv)
    args.peers = [] if args.peers.strip() in ("", "none") else [p.strip() for p in args.peers.split(",")]
    require_shared("data/peer-fixtures/imagededup/base_images", "data/peer-fixtures/cleanvision",
                   "data/cifar10/cifar10-jpg.tar")

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

        configs = [] if args.peers_only else [("hash", AuditConfig(embeddings=False))]
        if args.peers_only:
            pass
        elif not args.no_cnn and WEIGHTS.is_file():
            configs.append(("cnn", AuditConfig(weights=str(WEIGHTS), require_embeddings=True)))
        elif not args.no_cnn:
            notes.append(f"CNN config skipped: {WEIGHTS} not found")
        info["load_before"] = round(os.getloadavg()[0], 2)
        results = {name: run_config(name, cfg, root, items) for name, cfg in configs}
        info["load_after"] = round(os.getloadavg()[0], 2)
        info["notes"] = notes

        args.out.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if args.quick else ""
        if args.peers:
            run_peers(args, root, items, info, results, suffix)
        if not results:
            return 0
        json_path = args.out / f"accuracy{suffix}.json"
        png_path = args.out / f"accuracy_errors{suffix}.png"
        sheet = contact_sheet(results, root, png_path)
        md = markdown(results, info)
        print(md)
        payload = {
            "benchmark": "accuracy",
            "environment": environment(),
            "suite": info,
            "configs": results,
            "contact_sheet": sheet,
        }
        write_json(json_path, json.loads(json.dumps(payload, default=str)))
        log(f"wrote {json_path} and {png_path} "
            f"({sheet['tiles']} tiles of {sheet['errors']} errors)")
    finally:
        if args.keep_data:
            log(f"dataset kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
