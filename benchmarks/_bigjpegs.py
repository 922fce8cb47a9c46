"""Sets of distinct square JPEGs of a given size cut from real photographs (speed benchmark).

Every file is a random square crop (20-90% of the photo's shorter side, anywhere in it) of one
of the real photographs :func:`_photos.base_photos` gathers (UKBench and cleanvision fixtures
from ``../shared``, scikit-learn's and scikit-image's bundled photos), rotated by a random angle
(the largest upright square inside is kept), its colour channels shuffled, randomly mirrored,
brightened or darkened by up to 15%, resized to ``size`` x ``size`` and saved as a JPEG of
quality 90. The crops differ, so the files are distinct pictures of the same few dozen scenes,
as a real dataset of photos is (and some overlap, so the matcher has real candidates to verify).
Files go to ``<dest>/train/`` (80%) and ``<dest>/val/`` (20%).

A set is written once and reused while its ``.params.json`` matches.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

import _photos

#: Share of the files in ``train/`` (the rest in ``val/``).
TRAIN_SHARE = 0.8
QUALITY = 90
_SOURCES: list[Image.Image] = []


def _init(sources: list[Image.Image]) -> None:
    global _SOURCES
    _SOURCES = sources


def _one(task: tuple[int, int, int, str]) -> None:
    index, size, seed, path = task
    rng = np.random.default_rng([seed, index])
    src = _SOURCES[int(rng.integers(len(_SOURCES)))]
    w, h = src.size
    side = max(16, int(min(w, h) * rng.uniform(0.2, 0.9)))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    im = src.crop((x, y, x + side, y + side))
    # Any rotation and channel order: pictures of one scene that splitaudit does not call copies
    # (it aligns rotations of up to 30 degrees), so most files are distinct to it as well.
    angle = float(rng.uniform(0.0, 360.0))
    rad = np.deg2rad(angle)
    inner = int(side / (abs(np.cos(rad)) + abs(np.sin(rad))))  # square inside the rotated one
    im = im.rotate(angle, Image.Resampling.BILINEAR)
    off = (side - inner) // 2
    im = im.crop((off, off, off + inner, off + inner))
    im = Image.merge("RGB", [im.getchannel(int(c)) for c in rng.permutation(3)])
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.85, 1.15)))
    im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    im.save(path, "JPEG", quality=QUALITY)


def make_set(dest: Path, n: int, size: int, *, seed: int = 0, log=print) -> Path:
    """Write (or reuse) ``n`` distinct ``size`` px JPEGs under ``dest``; returns ``dest``."""
    notes: list[str] = []
    sources = [p for p in _photos.base_photos(notes) if _photos.thumb_std(p.image) >= _photos.BLANK_STD]
    if not sources:
        raise SystemExit("no source photographs found (see benchmarks/_photos.py)")
    for note in notes:  # e.g. scikit-image missing: fewer photographs, a different set
        log(f"  {note}")
    photos = [p.image for p in sources]
    # The photographs available (scikit-image's ship with its wheel) decide the set: a set cut
    # from other photographs is not reused.
    params = {"n": n, "size": size, "seed": seed, "quality": QUALITY, "train_share": TRAIN_SHARE,
              "version": 2, "photos": [p.name for p in sources]}
    marker = dest / ".params.json"
    try:
        if json.loads(marker.read_text()) == params:
            return dest
    except (OSError, ValueError):
        pass
    if dest.exists():
        shutil.rmtree(dest)
    n_train = int(round(n * TRAIN_SHARE))
    for split in ("train", "val"):
        (dest / split).mkdir(parents=True)
    tasks = [(i, size, seed, os.fspath(dest / ("train" if i < n_train else "val") / f"{i:06d}.jpg"))
             for i in range(n)]
    t0 = time.perf_counter()
    log(f"writing {n} x {size}px JPEGs from {len(photos)} photographs to {dest} ...")
    with get_context("fork").Pool(min(2, os.cpu_count() or 1), _init, (photos,)) as pool:
        pool.map(_one, tasks, chunksize=64)
    marker.write_text(json.dumps(params))
    log(f"  done in {time.perf_counter() - t0:.1f} s")
    return dest
