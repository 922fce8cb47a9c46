"""Synthetic photographs, copy transforms and example datasets with planted leaks.

Used by the test-suite, the benchmarks and ``splitaudit demo``: every planted leak is a real
image file produced by a real edit (re-encoding, crop, flip, ...), and the function that plants
it returns the ground truth so callers can check what a scan reports.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

#: Transform families that produce a byte- or pixel-identical copy.
EXACT_FAMILIES = ("exact", "png")
#: Transform families that produce a near duplicate (same picture, edited).
NEAR_FAMILIES = (
    "jpeg",
    "downscale",
    "upscale",
    "crop",
    "brightness",
    "contrast",
    "saturation",
    "hflip",
    "rotation",
    "grayscale",
    "blur",
    "overlay",
    "aspect",
)


def _smooth_noise(rng: np.random.Generator, size: int, octaves: int = 5) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: the 1/f texture of natural images."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 1)
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        layer = np.asarray(
            Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC), np.float32
        )
        out += amp * layer
        total += amp
        amp *= 0.55
    out /= total
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def random_photo(
    rng: np.random.Generator, size: int = 128, *, palette: tuple[int, int, int] | None = None
) -> Image.Image:
    """A synthetic "photograph": textured background plus a few shapes.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same seed gives the same picture.
    size : int
        Side in pixels.
    palette : tuple of int, optional
        Dominant colour; images drawn with one palette look alike (a "class"), which makes
        them hard negatives for duplicate detection.
    """
    base = np.asarray(palette if palette is not None else rng.integers(40, 216, 3), np.float32)
    tex = _smooth_noise(rng, size)[..., None]
    tint = rng.normal(0, 40, 3).astype(np.float32)
    arr = np.clip(base * 0.6 + tex * (120 + tint) - 40 + rng.normal(0, 4, (size, size, 3)), 0, 255)
    image = Image.fromarray(arr.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        colour = tuple(int(c) for c in np.clip(base + rng.normal(0, 70, 3), 0, 255))
        shape = int(rng.integers(0, 3))
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def photo_array(n: int, seed: int, size: int = 32) -> np.ndarray:
    """(n, size, size, 3) uint8 distinct synthetic photographs (array inputs for tests/demos)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(random_photo(rng, size)) for _ in range(n)])


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    # Remove 3-10% of each side's length in total, split unevenly between the two edges.
    fx, fy = rng.uniform(0.03, 0.10, 2)
    left, top = rng.uniform(0, fx) * w, rng.uniform(0, fy) * h
    return image.crop((round(left), round(top), round(left + (1 - fx) * w), round(top + (1 - fy) * h)))


def _rotation(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(4, 15) * rng.choice([-1, 1]))
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)


def _overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    # A watermark-like caption covering ~3% of the picture, in a top or bottom band.
    bw, bh = max(3, w // 4), max(2, h // 8)
    x = int(rng.uniform(0.02, 0.7) * w)
    y = int(rng.choice([0.03, 0.85]) * h)
    draw.rectangle([x, y, x + bw, y + bh], fill=(255, 255, 255))
    if bh >= 8:
        font = ImageFont.load_default(size=max(6, bh - 2))
        draw.text((x + 1, y), "(c) 2026", fill=(0, 0, 0), font=font)
    return out


def _aspect(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    f = float(rng.choice([0.75, 0.8, 1.25, 1.33]))
    return image.resize((max(8, round(w * f)), h), Image.Resampling.BILINEAR)


#: family -> function(image, rng) -> edited image. "exact" and "png" are written by
#: :func:`write_copy` from the source file itself.
TRANSFORMS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "jpeg": lambda im, rng: _jpeg(im, int(rng.integers(25, 45))),
    "downscale": lambda im, rng: im.resize(
        (max(8, im.width // 2), max(8, im.height // 2)), Image.Resampling.BILINEAR
    ),
    "upscale": lambda im, rng: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    "crop": _crop,
    "brightness": lambda im, rng: ImageEnhance.Brightness(im).enhance(
        float(rng.choice([0.7, 0.8, 1.2, 1.3]))
    ),
    "contrast": lambda im, rng: ImageEnhance.Contrast(im).enhance(
        float(rng.choice([0.6, 0.75, 1.3, 1.5]))
    ),
    "saturation": lambda im, rng: ImageEnhance.Color(im).enhance(float(rng.choice([0.3, 1.8]))),
    "hflip": lambda im, rng: ImageOps.mirror(im),
    "rotation": _rotation,
    "grayscale": lambda im, rng: ImageOps.grayscale(im).convert("RGB"),
    "blur": lambda im, rng: im.filter(
        ImageFilter.GaussianBlur(max(0.6, min(im.size) / 128 * float(rng.uniform(1.0, 2.0))))
    ),
    "overlay": _overlay,
    "aspect": _aspect,
}


def different_crops(
    image: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, Image.Image]:
    """Two crops of one photograph that are NOT copies of each other (a hard negative).

    Each covers 55-70% of each side; their offsets differ by at least 25% of the side along
    one axis, so they share a scene but neither is a small crop of the other.
    """
    w, h = image.size
    s = rng.uniform(0.55, 0.7)
    cw, ch = round(s * w), round(s * h)
    # Both crops lie inside the photo: the first starts near the left edge, the second is
    # shifted right by at least 25% of the width (and at most what the photo leaves room for).
    room = 1 - s
    x_a = rng.uniform(0, max(room - 0.25, 0.0) * 0.5) * w
    shift = rng.uniform(0.25, room) if room > 0.25 else room
    x_b = min(x_a + shift * w, w - cw)
    y_a = y_b = rng.uniform(0, room) * h
    a = image.crop((round(x_a), round(y_a), round(x_a) + cw, round(y_a) + ch))
    b = image.crop((round(x_b), round(y_b), round(x_b) + cw, round(y_b) + ch))
    return a, b


def write_copy(source: Path, dest: Path, family: str, rng: np.random.Generator) -> None:
    """Write a copy of ``source`` to ``dest`` made by one transform family.

    ``exact`` copies the bytes; ``png`` stores the same pixels losslessly; every other family
    decodes, edits and saves (JPEG quality 90 unless the family sets its own encoding).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if family == "exact":
        shutil.copyfile(source, dest)
        return
    with Image.open(source) as im:
        image = im.convert("RGB")
    if family == "png":
        image.save(dest, "PNG")
        return
    edited = TRANSFORMS[family](image, rng)
    fmt = "PNG" if dest.suffix.lower() == ".png" else "JPEG"
    edited.save(dest, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


@dataclass(frozen=True)
class PlantedLeak:
    """Ground truth for one planted cross-split copy (paths relative to the dataset root)."""

    family: str
    reference: str
    query: str

    @property
    def kind(self) -> str:
        """``exact`` or ``near``: what a scan must report for this pair."""
        return "exact" if self.family in EXACT_FAMILIES else "near"


def make_dataset(
    root: Path,
    *,
    classes: int = 3,
    train_per_class: int = 12,
    val_per_class: int = 4,
    test_per_class: int = 0,
    size: int = 96,
    families: tuple[str, ...] = (),
    seed: int = 0,
    brightness: dict[str, float] | None = None,
) -> list[PlantedLeak]:
    """Write a class-folder dataset of distinct synthetic photos and plant leaks in val.

    Every class has its own palette, so images of one class look alike. For each family in
    ``families`` one extra val image is written: a copy of a train image of the same class
    made by that family. ``brightness`` plants a distribution shift: ``{"test": 1.3}`` makes
    every original test image 30% brighter (a different camera or lighting).

    Returns
    -------
    list of PlantedLeak
        One entry per planted copy.
    """
    rng = np.random.default_rng(seed)
    palettes = [tuple(int(c) for c in rng.integers(40, 216, 3)) for _ in range(classes)]
    counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    for split, n in counts.items():
        for c in range(classes):
            for i in range(n):
                path = root / split / f"class_{c}" / f"{split}_{c}_{i:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                photo = random_photo(rng, size, palette=palettes[c])
                factor = (brightness or {}).get(split)
                if factor is not None:
                    photo = ImageEnhance.Brightness(photo).enhance(factor)
                photo.save(path, "JPEG", quality=92)
    planted = []
    for j, family in enumerate(families):
        c = j % classes
        src_rel = f"train/class_{c}/train_{c}_{j % train_per_class:04d}.jpg"
        ext = ".png" if family == "png" else ".jpg"
        dst_rel = f"val/class_{c}/leak_{family}_{j:03d}{ext}"
        write_copy(root / src_rel, root / dst_rel, family, rng)
        planted.append(PlantedLeak(family, src_rel, dst_rel))
    return planted
