"""Real source photographs for the accuracy benchmark (read in place, never copied into the repo).

Sources, all optional (whatever is missing is skipped and reported):

* ``../shared/data/peer-fixtures/imagededup/base_images/*.jpg`` (UKBench photos, Apache-2.0)
* ``../shared/data/peer-fixtures/cleanvision/*.png`` (Apache-2.0), minus the two files the
  shared README lists as duplicates of others and the 15754x1382 strip
* ``sklearn.datasets.load_sample_images()`` (2 photos, bundled with scikit-learn)
* ``skimage.data`` natural images that ship inside the scikit-image wheel (no pooch download)
* CIFAR-10 test JPEGs from ``../shared/data/cifar10/cifar10-jpg.tar`` (extracted to /tmp once)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from _common import SHARED, ensure_extracted

CIFAR_TAR = SHARED / "data" / "cifar10" / "cifar10-jpg.tar"
#: Already extracted copies that are reused (the second is where cifar10_scan.py extracts to).
CIFAR_DIRS = (Path("/tmp/cifar"), Path("/tmp/splitaudit-cifar10"))

#: cleanvision fixtures left out: 236 and 408 duplicate 142 and 103 (shared/README.md), 604 is a
#: 15754x1382 strip (mostly blank, and its quadrants would be slivers).
CLEANVISION_EXCLUDE = {"image_236.png", "image_408.png", "image_604.png"}

#: skimage.data images that are natural photographs and load offline. Left out on purpose:
#: textures (brick, grass, gravel: strongly repeated content, so quadrants are ambiguous),
#: drawings and masks (logo, colorwheel, checkerboard, binary_blobs, horse, shepp_logan_phantom),
#: ``cat`` (the same picture as ``chelsea``) and the 25x25 ``lfw_subset`` faces.
SKIMAGE_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "clock",
    "hubble_deep_field", "immunohistochemistry", "retina", "cell", "stereo_motorcycle",
    "page", "text",
)

#: A source whose 32x32 grey thumbnail has a smaller standard deviation is near-blank: it has no
#: content that could tell a copy from another blank picture, so it is dropped.
BLANK_STD = 8.0
#: Photos at least this wide also contribute their four non-overlapping quadrants.
QUADRANT_MIN_WIDTH = 512
#: Plain NCC of 32x32 grey thumbnails (best over shifts of up to 3 px) above which two pictures
#: count as mirror images / repeats of each other. A mirror-symmetric photo (a diamond, a
#: bottle in front of carpet) has quadrants and different crops that really are flipped copies
#: of each other, so those pieces would be ambiguous ground truth and are not used.
MIRROR_NCC = 0.9


@dataclass
class Photo:
    """One source photograph (or a quadrant of one).

    ``box`` is the region of the base photo it shows, in normalised (x0, y0, x1, y1)
    coordinates, so that overlaps between pieces of one photo can be judged geometrically.
    """

    name: str
    image: Image.Image
    origin: str
    base: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    lossless: bool = False
    notes: list[str] = field(default_factory=list)


def thumb_std(image: Image.Image) -> float:
    """Grey-level standard deviation of the 32x32 thumbnail."""
    g = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
    return float(g.std())


def _load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _skimage_photos(log: list[str]) -> list[Photo]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import skimage.data as skd
    except ImportError:
        log.append("scikit-image not installed: skimage.data photos skipped (pip install scikit-image)")
        return []
    out = []
    for name in SKIMAGE_NAMES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = getattr(skd, name)()
        except Exception as exc:  # noqa: BLE001 - pooch-only files raise various errors offline
            log.append(f"skimage.data.{name} unavailable offline ({type(exc).__name__}): skipped")
            continue
        if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity): left only
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).astype(np.uint8) if arr.max() <= 1 else arr.astype(np.uint8)
        image = Image.fromarray(arr).convert("RGB")
        out.append(Photo(f"skimage_{name}", image, "skimage.data", f"skimage_{name}"))
    return out


def base_photos(log: list[str]) -> list[Photo]:
    """Every available whole photograph, in a fixed order."""
    photos: list[Photo] = []
    ukb = SHARED / "data" / "peer-fixtures" / "imagededup" / "base_images"
    for p in sorted(ukb.glob("*.jpg")):
        photos.append(Photo(p.stem, _load(p), "imagededup", p.stem))
    cv = SHARED / "data" / "peer-fixtures" / "cleanvision"
    for p in sorted(cv.glob("*.png")):
        if p.name in CLEANVISION_EXCLUDE:
            continue
        photos.append(Photo(f"cv_{p.stem}", _load(p), "cleanvision", f"cv_{p.stem}", lossless=True))
    if not photos:
        log.append(f"peer fixtures not found under {SHARED}: only bundled photos used")
    try:
        from sklearn.datasets import load_sample_images

        for fname, arr in zip(("china", "flower"), load_sample_images().images):
            photos.append(Photo(f"sklearn_{fname}", Image.fromarray(arr), "sklearn", f"sklearn_{fname}"))
    except Exception as exc:  # noqa: BLE001
        log.append(f"sklearn sample images unavailable ({exc}): skipped")
    photos += _skimage_photos(log)
    return photos


def quadrants(photo: Photo) -> list[Photo]:
    """The four non-overlapping quadrants of a photo."""
    w, h = photo.image.size
    out = []
    for qi, (x, y) in enumerate(((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2))):
        crop = photo.image.crop((x, y, x + w // 2, y + h // 2))
        box = (x / w, y / h, (x + w // 2) / w, (y + h // 2) / h)
        out.append(Photo(f"{photo.name}_q{qi}", crop, photo.origin, photo.base, box, photo.lossless))
    return out


def _grey32(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float32)


def shifted_ncc(a: np.ndarray, b: np.ndarray, shift: int = 3) -> float:
    """Best NCC of two equal-size grey arrays over integer shifts of up to ``shift`` pixels.

    Deliberately independent of splitaudit's own matcher: it only decides which pieces of a
    photo are too alike to be used as distinct sources.
    """
    best = -1.0
    n = a.shape[0]
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            pa = a[max(0, dy):n + min(0, dy), max(0, dx):n + min(0, dx)].ravel()
            pb = b[max(0, -dy):n + min(0, -dy), max(0, -dx):n + min(0, -dx)].ravel()
            pa, pb = pa - pa.mean(), pb - pb.mean()
            den = float(np.linalg.norm(pa) * np.linalg.norm(pb))
            if den > 1e-6:
                best = max(best, float(pa @ pb) / den)
    return best


def rigid_similarity(images: list[Image.Image], shift: int = 3) -> np.ndarray:
    """(N, N) best plain NCC of 32x32 grey thumbnails over shifts of up to ``shift`` px, with and
    without mirroring the second image; the diagonal is set to -1.

    Vectorised :func:`shifted_ncc` for every pair: used to find pictures of the suite that are
    copies of each other to begin with (CIFAR-10's test set has a few), independently of
    splitaudit's matcher.
    """
    g = np.stack([_grey32(im) for im in images])
    n = g.shape[1]
    best = np.full((len(images), len(images)), -1.0, np.float32)
    for mirror in (False, True):
        h = g[:, :, ::-1] if mirror else g
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                a = g[:, max(0, dy):n + min(0, dy), max(0, dx):n + min(0, dx)].reshape(len(g), -1)
                b = h[:, max(0, -dy):n + min(0, -dy), max(0, -dx):n + min(0, -dx)].reshape(len(g), -1)
                a = a - a.mean(1, keepdims=True)
                b = b - b.mean(1, keepdims=True)
                a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)
                b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-6)
                np.maximum(best, a @ b.T, out=best)
    best = np.maximum(best, best.T)
    np.fill_diagonal(best, -1.0)
    return best


def mirror_symmetric(photo: Photo) -> float:
    """Self-similarity of a photo with its own mirror image (1.0 = perfectly symmetric)."""
    g = _grey32(photo.image)
    return shifted_ncc(g, g[:, ::-1])


def quadrant_repeat(quads: list[Photo]) -> float:
    """Highest similarity between two quadrants of one photo, directly or mirrored."""
    gs = [_grey32(q.image) for q in quads]
    return max(shifted_ncc(gs[i], f(gs[j])) for i in range(len(gs)) for j in range(i + 1, len(gs))
               for f in (lambda x: x, lambda x: x[:, ::-1]))


def photo_sources(log: list[str], *, quick: bool = False) -> tuple[list[Photo], list[Photo]]:
    """(whole photos, all photo sources incl. quadrants, mirror-symmetric photo names).

    Near-blank photos and quadrants are dropped; mirror-symmetric photos, and photos whose
    quadrants repeat each other, contribute no quadrants.
    """
    photos = base_photos(log)
    if quick:
        photos = photos[::3]
    kept = []
    for p in photos:
        s = thumb_std(p.image)
        if s < BLANK_STD:
            log.append(f"dropped near-blank photo {p.name} (thumbnail std {s:.1f})")
        else:
            kept.append(p)
    sources = list(kept)
    symmetric = set()
    for p in kept:
        sym = mirror_symmetric(p)
        if sym >= MIRROR_NCC:
            symmetric.add(p.name)
            log.append(f"{p.name} is mirror-symmetric (ncc {sym:.3f} with its mirror image): "
                       "no quadrants, no different-crops negative")
            continue
        if p.image.width >= QUADRANT_MIN_WIDTH:
            quads = quadrants(p)
            rep = quadrant_repeat(quads)
            if rep >= MIRROR_NCC:
                log.append(f"{p.name}: quadrants repeat each other (ncc {rep:.3f}): no quadrants")
                continue
            for q in quads:
                s = thumb_std(q.image)
                if s < BLANK_STD:
                    log.append(f"dropped near-blank quadrant {q.name} (thumbnail std {s:.1f})")
                else:
                    sources.append(q)
    return kept, sources, symmetric


def locate(big: Image.Image, small: Image.Image) -> tuple[int, int]:
    """Top-left (x, y) where ``small`` is an exact pixel crop of ``big`` (padding allowed)."""
    b = np.asarray(big.convert("RGB")).astype(np.int16)
    s = np.asarray(small.convert("RGB")).astype(np.int16)
    h, w = b.shape[:2]
    # Candidates: positions whose pixel equals the crop's top-left pixel, refined pixel by pixel
    # along the crop's first row and column (inside the image).
    cand = np.argwhere((b == s[0, 0]).all(axis=-1))
    for k in range(1, 16):
        if len(cand) <= 1:
            break
        for dy, dx in ((0, k), (k, 0), (k, k)):
            if dy >= s.shape[0] or dx >= s.shape[1]:
                continue
            ys, xs = cand[:, 0] + dy, cand[:, 1] + dx
            inside = (ys < h) & (xs < w)
            ok = np.zeros(len(cand), bool)
            ok[inside] = (b[ys[inside], xs[inside]] == s[dy, dx]).all(axis=-1)
            cand = cand[ok]
    for y, x in cand:
        hh, ww = min(s.shape[0], h - y), min(s.shape[1], w - x)
        if np.array_equal(b[y:y + hh, x:x + ww], s[:hh, :ww]):
            return int(x), int(y)
    raise ValueError("crop not found in its source image")


def cifar_test_files(log: list[str]) -> dict[str, list[Path]]:
    """class -> sorted CIFAR-10 test JPEGs; extracts the tar into /tmp once if needed."""
    for d in CIFAR_DIRS:
        test = d / "test"
        if test.is_dir() and sum(1 for _ in test.glob("*/*.jpg")) == 10000:
            break
    else:
        if not CIFAR_TAR.is_file():
            log.append(f"CIFAR-10 not found ({CIFAR_TAR}): CIFAR sources skipped")
            return {}
        test = ensure_extracted(CIFAR_TAR, CIFAR_DIRS[-1], expected=60000) / "test"
    return {c.name: sorted(c.glob("*.jpg")) for c in sorted(test.iterdir()) if c.is_dir()}
