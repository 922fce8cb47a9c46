"""Data for the shift calibration benchmark: real image files, fingerprinted once and kept.

* Fashion-MNIST (idx.gz in ``../shared``) is written as 28x28 grey PNG files and CIFAR-10 is
  extracted from its JPEG tar, so the real read + decode + properties path of
  :func:`splitaudit.extract.extract` runs on them.
* Transformed copies of a held-out set of images (brighter, blurred, re-encoded as JPEG) are
  written as real files beside them.
* Fingerprints are computed once: a hash-only :func:`~splitaudit.extract.extract` per file
  list (``fp-<key>.npz``) plus CNN embeddings kept by file content digest
  (``embeddings-<model>.npz``), so changing the pool or the split sizes never re-embeds an
  image already embedded, and a rerun costs seconds.

Everything lives under one work folder (default ``/tmp/splitaudit-calib``); delete it to start
over.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Fashion-MNIST class names, in label order (folder names are made safe from them).
FMNIST_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle_boot")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass
class Images:
    """A list of image files with integer labels, and (once fingerprinted) their table.

    Attributes
    ----------
    name : str
        Short name used in sample paths (``pool``, ``brightness``, ...).
    root : Path
        Folder the relative paths are under.
    paths : list of str
        POSIX paths relative to ``root``.
    labels : numpy.ndarray
        (N,) int class index.
    classes : tuple of str
        Class names, indexed by label.
    origin : numpy.ndarray or None
        For transformed copies: the row of the original image in the pool.
    table : FingerprintTable or None
    """

    name: str
    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    origin: np.ndarray | None = None
    table: object | None = None

    def __len__(self) -> int:
        return len(self.paths)


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """An idx(.gz) array: big-endian header of dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(shared: Path, workdir: Path, n: int, seed: int) -> Images:
    """``n`` Fashion-MNIST images (a fixed random subset of all 70,000), as PNG files.

    Files are named by split and original index (``train/coat/12345.png``) and written only
    when missing, so growing ``n`` writes only the new ones.
    """
    from PIL import Image

    folder = shared / "data" / "fashion-mnist"
    xs, ys, names = [], [], []
    for split, (img_file, lab_file) in FMNIST_FILES.items():
        x, y = _read_idx(folder / img_file), _read_idx(folder / lab_file)
        xs.append(x)
        ys.append(y)
        names += [f"{split}/{FMNIST_CLASSES[c]}/{i:05d}.png" for i, c in enumerate(y)]
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    n = min(n, len(x))
    # A fixed permutation (independent of n): a larger pool contains a smaller one.
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    root = workdir / "fmnist"
    t0, wrote = time.perf_counter(), 0
    for i in pick:
        p = root / names[i]
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            Image.fromarray(x[i], "L").save(tmp, format="PNG")
            os.replace(tmp, p)
            wrote += 1
    if wrote:
        log(f"  wrote {wrote} Fashion-MNIST PNG files under {root} in {time.perf_counter() - t0:.1f} s")
    return Images("pool", root, [names[i] for i in pick], y[pick], FMNIST_CLASSES)


def cifar10(root: Path, n: int | None, seed: int, only_split: str | None = None) -> Images:
    """CIFAR-10 JPEG files under ``root`` (``train/<class>/NNNN.jpg``, ``test/...``).

    ``n`` None takes every image (in sorted path order), otherwise a fixed random subset.
    """
    paths: list[str] = []
    for split in ("train", "test"):
        if only_split is not None and split != only_split:
            continue
        for cls in sorted(os.listdir(root / split)):
            for f in sorted(os.listdir(root / split / cls)):
                if f.endswith(".jpg"):
                    paths.append(f"{split}/{cls}/{f}")
    classes = tuple(sorted({p.split("/")[1] for p in paths}))
    labels = np.array([classes.index(p.split("/")[1]) for p in paths], np.int64)
    if n is not None and n < len(paths):
        pick = np.sort(np.random.default_rng(seed).permutation(len(paths))[:n])
        paths, labels = [paths[i] for i in pick], labels[pick]
    return Images("pool", root, paths, labels, classes)


# ------------------------------------------------------------------------------------------
# Planted image shifts, written as real files
# ------------------------------------------------------------------------------------------


def _save_like(img, original, dest: Path, *, fmt: str | None = None, quality: int | None = None) -> None:
    """Save ``img`` in the format of ``original`` (JPEG: with its own quantization tables).

    Keeping the original's format and tables means a brightness or blur shift is not also a
    format or JPEG-quality shift (one more JPEG generation at the same tables is the only
    side effect, as when a real pipeline edits a JPEG).
    """
    fmt = fmt or original.format
    tmp = dest.with_name(dest.name + ".tmp")
    if fmt == "JPEG":
        if quality is not None:
            img.save(tmp, format="JPEG", quality=quality)
        elif getattr(original, "quantization", None):
            img.save(tmp, format="JPEG", qtables=original.quantization)
        else:
            img.save(tmp, format="JPEG", quality=75)
    else:
        img.save(tmp, format=fmt)
    os.replace(tmp, dest)


def transform(kind: str, img, *, brightness: float, blur_radius: float):
    """The edited image for one shift kind (``brightness``, ``blur``; ``jpeg`` returns it as is)."""
    from PIL import ImageFilter

    if kind == "brightness":
        a = np.asarray(img, np.float32) * brightness
        from PIL import Image

        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), img.mode)
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=blur_radius))
    if kind == "jpeg":
        return img
    raise ValueError(kind)


def write_transformed(pool: Images, rows: np.ndarray, kind: str, workdir: Path, dataset: str, *,
                      brightness: float, blur_radius: float, jpeg_quality: int) -> Images:
    """Write the ``kind`` copy of pool images ``rows`` (only files not written yet)."""
    from PIL import Image

    tag = {"brightness": f"brightness{brightness:g}", "blur": f"blur{blur_radius:g}",
           "jpeg": f"jpeg{jpeg_quality}"}[kind]
    root = workdir / f"{dataset}-{tag}"
    paths, wrote, t0 = [], 0, time.perf_counter()
    for r in rows:
        rel = pool.paths[r]
        if kind == "jpeg":
            rel = rel.rsplit(".", 1)[0] + ".jpg"
        dest = root / rel
        paths.append(rel)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(pool.root / pool.paths[r]) as im:
            im.load()
            out = transform(kind, im.copy(), brightness=brightness, blur_radius=blur_radius)
            if kind == "jpeg":
                _save_like(out.convert("RGB") if out.mode not in ("L", "RGB") else out, im, dest,
                           fmt="JPEG", quality=jpeg_quality)
            else:
                _save_like(out, im, dest)
        wrote += 1
    if wrote:
        log(f"  wrote {wrote} '{kind}' files under {root} in {time.perf_counter() - t0:.1f} s")
    return Images(kind, root, paths, pool.labels[rows].copy(), pool.classes, origin=np.asarray(rows))


# ------------------------------------------------------------------------------------------
# Fingerprints (hash-only extract + embeddings by content), kept on disk
# ------------------------------------------------------------------------------------------


def _table_arrays(table) -> dict[str, np.ndarray]:
    """The per-row array columns of a FingerprintTable (whatever fields it has today)."""
    out = {}
    for f in dataclasses.fields(table):
        v = getattr(table, f.name)
        if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(table.ok):
            out[f.name] = v
    return out


def _property_names() -> tuple[str, ...] | None:
    try:
        from splitaudit.fingerprints.properties import PROPERTY_NAMES
    except ImportError:
        return None
    return tuple(PROPERTY_NAMES)


def fingerprint(images: Images, workdir: Path, embedder, *, workers: int | None = None) -> None:
    """Fill ``images.table``: a FingerprintTable with embeddings (when ``embedder``) and properties.

    The hash-only part is cached per file list and fingerprint identity; embeddings are looked
    up by file digest in ``embeddings-*.npz`` and only missing images go through the CNN.
    """
    from splitaudit.extract import FingerprintTable, extract, fingerprint_identity
    from splitaudit.sources.base import Sample

    samples = [Sample("all", p, abspath=images.root / p) for p in images.paths]
    props = _property_names()
    key = hashlib.sha1("\n".join([os.fspath(images.root), fingerprint_identity(), repr(props)]
                                 + images.paths).encode()).hexdigest()[:16]
    cache = workdir / f"fp-{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            cols = {k: z[k] for k in z.files}
        table = FingerprintTable(**{k: v for k, v in cols.items() if k != "error_rows"})
        table.errors = {int(i): "unreadable" for i in cols.get("error_rows", [])}
    else:
        t0 = time.perf_counter()
        log(f"  fingerprinting {len(samples)} '{images.name}' files (hash-only) ...")
        table = extract(samples, embedder=None, workers=workers)
        log(f"    {time.perf_counter() - t0:.1f} s ({len(samples) / (time.perf_counter() - t0):.0f} img/s), "
            f"load {os.getloadavg()[0]:.1f}")
        cols = _table_arrays(table)
        cols.pop("embeddings", None)
        np.savez(cache, error_rows=np.array(sorted(table.errors), np.int64), **cols)
    if embedder is not None:
        table.embeddings = embeddings_for(images, table, workdir, embedder, workers=workers)
    if not table.ok.all():
        log(f"  WARNING: {int((~table.ok).sum())} '{images.name}' files did not decode")
    images.table = table


def _store_files(workdir: Path, identity: str) -> list[Path]:
    return sorted(workdir.glob(f"embeddings-{hashlib.sha1(identity.encode()).hexdigest()[:12]}*.npz"))


def _load_store(workdir: Path, identity: str) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """(digests (K,16) uint8, vectors (K,D) float16, files read) of the stored embeddings.

    Several processes may share a work folder: each writes its own file, so a file can
    vanish (merged by another process) between listing and reading.
    """
    digs, vecs, read = [], [], []
    for p in _store_files(workdir, identity) + sorted(workdir.glob("embeddings-seed*.npz")):
        try:
            with np.load(p) as z:
                if str(z["identity"]) != identity:
                    continue
                digs.append(z["digests"])
                vecs.append(z["vectors"])
        except FileNotFoundError:
            continue
        read.append(p)
    if not digs:
        return np.zeros((0, 16), np.uint8), np.zeros((0, 0), np.float16), read
    return np.concatenate(digs), np.concatenate(vecs), read


def embeddings_for(images: Images, table, workdir: Path, embedder, *, workers: int | None = None) -> np.ndarray:
    """(N, D) float16 embeddings of ``images``, from the store or computed (and stored)."""
    from splitaudit.extract import extract
    from splitaudit.sources.base import Sample

    identity = embedder.identity()
    digs, vecs, read = _load_store(workdir, identity)
    void = np.dtype((np.void, 16))
    known = {d: i for i, d in enumerate(np.ascontiguousarray(digs).view(void).ravel().tolist())}
    mine = np.ascontiguousarray(table.file_digest).view(void).ravel().tolist()
    out = np.zeros((len(images), embedder.dim), np.float16)
    missing = []
    for i, d in enumerate(mine):
        j = known.get(d)
        if j is not None:
            out[i] = vecs[j]
        elif table.ok[i]:
            missing.append(i)
    if missing:
        t0 = time.perf_counter()
        log(f"  embedding {len(missing)} '{images.name}' images (MobileNetV2) ... load {os.getloadavg()[0]:.1f}")
        sub = [Sample("all", images.paths[i], abspath=images.root / images.paths[i]) for i in missing]
        done = 0

        def progress(_stage: str, n: int, total: int) -> None:
            nonlocal done
            if n - done >= 5000 or n == total:
                done = n
                log(f"    {n}/{total} ({n / (time.perf_counter() - t0):.0f} img/s)")

        t = extract(sub, embedder=embedder, workers=workers, progress=progress)
        out[np.asarray(missing)] = t.embeddings
        log(f"    {time.perf_counter() - t0:.1f} s ({len(missing) / (time.perf_counter() - t0):.0f} img/s), "
            f"load {os.getloadavg()[0]:.1f}")
        ok = t.ok
        new_d = np.concatenate([digs, t.file_digest[ok]])
        new_v = t.embeddings[ok] if len(vecs) == 0 else np.concatenate([vecs, t.embeddings[ok]])
        stem = f"embeddings-{hashlib.sha1(identity.encode()).hexdigest()[:12]}-{os.getpid()}-{time.time_ns()}"
        path = workdir / f"{stem}.npz"
        tmp = workdir / f"{stem}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, identity=np.array(identity), digests=new_d, vectors=new_v)
        os.replace(tmp, path)
        # The files read are now contained in the new one (another process may have read
        # them too: it keeps what it loaded, and duplicates are harmless).
        for p in read:
            p.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def concat_tables(tables: list):
    """Row-wise concatenation of FingerprintTables (the library's own, errors re-indexed)."""
    from splitaudit.extract_memory import concat_tables as concat

    return concat(tables)


def slice_table(table, rows: np.ndarray):
    """The FingerprintTable of ``rows`` (in that order)."""
    from splitaudit.extract import FingerprintTable

    n = len(table)
    pos = {int(r): i for i, r in enumerate(rows)} if table.errors else {}
    kw = {}
    for f in dataclasses.fields(table):
        v = getattr(table, f.name)
        if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n:
            kw[f.name] = v[rows]
        elif f.name == "errors":
            kw[f.name] = {pos[i]: r for i, r in v.items() if i in pos}
        elif f.name == "content_keys" and v is not None:
            kw[f.name] = [v[i] for i in rows]
        else:
            kw[f.name] = v
    return FingerprintTable(**kw)


def slice_matcher(matcher, table, rows: np.ndarray):
    """A Matcher on ``table`` (= ``matcher.table`` sliced to ``rows``) without recomputing.

    Every derived array of a Matcher is per row, so slicing them gives exactly what a new
    Matcher on the sliced table would compute, at no cost.
    """
    from splitaudit.matching import Matcher

    n = len(matcher.table)
    m = Matcher.__new__(Matcher)
    for k, v in vars(matcher).items():
        setattr(m, k, v[rows] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v)
    m.table = table
    return m

