"""Pairwise verification: is image B the same picture as image A after a geometric and
photometric edit?

Each image is kept as a 32x32 grey thumbnail. For a candidate pair we search a fixed set of
geometric transforms (crops of up to ~15% per side in either direction, horizontal flips,
rotations up to 30 degrees) and score each by normalised cross-correlation (NCC) of the two
thumbnails, lightly blurred, inside a central ellipse (so black corners left by a rotation
and borders removed by a crop do not count). NCC is invariant to brightness, contrast and
colour changes, and blur/JPEG/resizing barely move it; a different photograph, even of the
same class or another crop of the same scene, does not align under any of the transforms.

The whole transform set is one sparse linear operator (bilinear sampling), so scoring a
batch of pairs is a single sparse-dense product followed by a batched dot product.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from splitaudit.fingerprints.hashes import THUMB_SIZE

#: Samples per side of the comparison grid.
GRID = 16
#: Radius of the comparison ellipse, in units of the image's width/height.
MASK_RADIUS = 0.42
#: Blur applied to thumbnails before sampling (pixels of the 32x32 thumbnail).
BLUR_SIGMA = 0.8
#: Half of a wide blur (sigma 4) is subtracted: a band-pass that keeps edges and shapes but
#: damps the smooth light gradient every photo has, which otherwise makes unrelated images
#: correlate (on benchmarks/accuracy.py this cut false pairs by a third at equal recall).
BACKGROUND_SIGMA = 4.0
BACKGROUND_WEIGHT = 0.5
#: Crop scales searched per axis (1.0 means no crop on that axis).
CROP_SCALES = (1.0, 0.95, 0.9, 0.85)
#: Rotation angles searched, degrees (0 is covered by the crop family).
ROTATIONS = tuple(a for a in range(-30, 31, 2) if a != 0)
#: Aspect ratios (width / height of the fixed image) for which rotations are modelled; a
#: rotation of a 4:3 photo is a shear in the square thumbnail, so it needs the real aspect.
ASPECT_BINS = (9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 16 / 9)


@dataclass(frozen=True)
class Transform:
    """One geometric hypothesis: moving-image coordinates = matrix @ fixed coordinates + offset."""

    kind: str  # "identity", "crop", "rotation"
    flip: bool
    scale: tuple[float, float]
    offset: tuple[float, float]
    angle: float

    def describe(self) -> str:
        """Short human-readable description, e.g. ``"flip+rotate 12deg"``."""
        parts = []
        if self.flip:
            parts.append("flip")
        if self.kind == "crop" and self.scale != (1.0, 1.0):
            parts.append(f"crop {round(100 * (1 - self.scale[0] * self.scale[1]))}%")
        if self.kind == "rotation":
            parts.append(f"rotate {self.angle:g}deg")
        return "+".join(parts) or "aligned"


def _grid_points() -> np.ndarray:
    c = (np.arange(GRID) + 0.5) / GRID - 0.5
    v, u = np.meshgrid(c, c, indexing="ij")
    return np.stack([u.ravel(), v.ravel()], axis=1)  # (G*G, 2) as (x, y)


_POINTS = _grid_points()
_MASK = (_POINTS[:, 0] ** 2 + _POINTS[:, 1] ** 2) <= MASK_RADIUS**2


#: The coarse set screens candidate pairs cheaply before the full search.
COARSE_CROP_SCALES = (1.0, 0.9)
COARSE_ROTATIONS = (-24, -16, -8, 8, 16, 24)


def transform_matrix(t: Transform, aspect_bin: int) -> tuple[np.ndarray, np.ndarray]:
    """2x2 matrix and offset mapping fixed-image coordinates to moving-image coordinates.

    Coordinates are normalised to [-0.5, 0.5]; ``aspect_bin`` is the fixed image's aspect bin
    (a rotation of a non-square photo is modelled in its real, unsquashed geometry).
    """
    fx = -1.0 if t.flip else 1.0
    if t.kind != "rotation":
        return np.array([[fx * t.scale[0], 0.0], [0.0, t.scale[1]]]), np.asarray(t.offset, float)
    a = ASPECT_BINS[aspect_bin]
    d = np.diag([a, 1.0]) / max(a, 1.0)
    th = np.deg2rad(t.angle)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return np.linalg.inv(d) @ rot @ d @ np.diag([fx, 1.0]), np.zeros(2)


def _transforms(aspect_bin: int, coarse: bool = False) -> list[tuple[Transform, np.ndarray, np.ndarray]]:
    """Transforms for one aspect bin, each with its 2x2 matrix and offset."""
    ts: list[Transform] = []
    scales = COARSE_CROP_SCALES if coarse else CROP_SCALES
    angles = COARSE_ROTATIONS if coarse else ROTATIONS
    for flip in (False, True):
        for sx in scales:
            offs_x = (0.0,) if sx == 1.0 or coarse else (-(1 - sx) / 2, 0.0, (1 - sx) / 2)
            for sy in scales:
                if coarse and sy != sx:
                    continue
                offs_y = (0.0,) if sy == 1.0 or coarse else (-(1 - sy) / 2, 0.0, (1 - sy) / 2)
                for ox in offs_x:
                    for oy in offs_y:
                        kind = "identity" if (sx, sy) == (1.0, 1.0) else "crop"
                        ts.append(Transform(kind, flip, (sx, sy), (ox, oy), 0.0))
        ts += [Transform("rotation", flip, (1.0, 1.0), (0.0, 0.0), float(a)) for a in angles]
    return [(t, *transform_matrix(t, aspect_bin)) for t in ts]


@lru_cache(maxsize=2 * len(ASPECT_BINS))
def _operator(aspect_bin: int, coarse: bool = False) -> tuple[sparse.csr_matrix, tuple[Transform, ...]]:
    """Sparse (T*M, S*S) bilinear sampling operator over the masked grid points."""
    from scipy import sparse  # here, not at import: scipy costs ~0.3 s of start-up

    pts = _POINTS[_MASK]
    m = len(pts)
    rows, cols, vals = [], [], []
    transforms = []
    for ti, (t, mat, off) in enumerate(_transforms(aspect_bin, coarse)):
        transforms.append(t)
        src = pts @ mat.T + off  # normalised coords in the moving image
        px = np.clip((src[:, 0] + 0.5) * THUMB_SIZE - 0.5, 0, THUMB_SIZE - 1.000001)
        py = np.clip((src[:, 1] + 0.5) * THUMB_SIZE - 0.5, 0, THUMB_SIZE - 1.000001)
        x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
        wx, wy = px - x0, py - y0
        r = ti * m + np.arange(m)
        for dx, dy, w in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)),
                          (0, 1, (1 - wx) * wy), (1, 1, wx * wy)):
            rows.append(r)
            cols.append((y0 + dy) * THUMB_SIZE + (x0 + dx))
            vals.append(w)
    op = sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(transforms) * m, THUMB_SIZE * THUMB_SIZE),
    )
    return op, tuple(transforms)


@lru_cache(maxsize=8192)
def _transform_rows(aspect_bin: int, index: int, coarse: bool = False) -> sparse.csr_matrix:
    """The (M, S*S) rows of one transform of :func:`_operator`.

    Cached: slicing a CSR matrix copies it, and verification asks for the same few hundred
    transforms thousands of times (it was most of the robust score's time).
    """
    op, _ = _operator(aspect_bin, coarse)
    m = int(_MASK.sum())
    return op[index * m:(index + 1) * m]


@lru_cache(maxsize=len(ASPECT_BINS))
def _identity_index(aspect_bin: int) -> int:
    return next(i for i, t in enumerate(_operator(aspect_bin)[1]) if t.kind == "identity" and not t.flip)


#: Around a coarse rotation, the fine search looks this many degrees either side.
REFINE_DEGREES = 6


def _subset_key(hint: Transform) -> tuple[bool, float | None]:
    return (hint.flip, hint.angle if hint.kind == "rotation" else None)


@lru_cache(maxsize=512)
def _sub_operator(
    aspect_bin: int, key: tuple[bool, float | None]
) -> tuple[sparse.csr_matrix, tuple[Transform, ...]]:
    """The full operator restricted to the transforms near a coarse hint.

    A coarse crop/identity hint keeps every crop (and rotations up to REFINE_DEGREES) of the
    same flip; a coarse rotation keeps the rotations within REFINE_DEGREES of it.
    """
    op, transforms = _operator(aspect_bin)
    flip, angle = key
    m = int(_MASK.sum())
    keep = []
    for i, t in enumerate(transforms):
        if t.flip != flip:
            continue
        if angle is None:
            ok = t.kind != "rotation" or abs(t.angle) <= REFINE_DEGREES
        else:
            ok = t.kind == "rotation" and abs(t.angle - angle) <= REFINE_DEGREES
        if ok or (t.kind == "identity" and not t.flip):
            keep.append(i)
    rows = np.concatenate([np.arange(i * m, (i + 1) * m) for i in keep])
    return op[rows], tuple(transforms[i] for i in keep)


@lru_cache(maxsize=len(ASPECT_BINS))
def _transform_index(aspect_bin: int) -> dict[Transform, int]:
    return {t: i for i, t in enumerate(_operator(aspect_bin)[1])}


def aspect_bin(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Index of the nearest modelled aspect ratio (in log space) for each image."""
    ratio = np.log(np.maximum(width, 1) / np.maximum(height, 1))
    bins = np.log(np.asarray(ASPECT_BINS))
    return np.abs(ratio[:, None] - bins[None, :]).argmin(axis=1)


@lru_cache(maxsize=4)
def _blur_matrix(sigma: float) -> np.ndarray:
    # Gaussian blur along one axis of a 32-pixel side as a matrix (same result as
    # scipy.ndimage.gaussian_filter1d with mode="nearest"): two small matrix products per
    # image blur it, several times faster than filtering 60k thumbnails one by one.
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.eye(THUMB_SIZE, dtype=np.float32), sigma, axis=0, mode="nearest")


def prepare_thumbs(thumbs: np.ndarray, *, batch: int = 1024) -> np.ndarray:
    """Band-pass uint8 (N, 32, 32) thumbnails and flatten them to float32 (N, 1024)."""
    fine, wide = _blur_matrix(BLUR_SIGMA), _blur_matrix(BACKGROUND_SIGMA)
    out = np.empty((len(thumbs), THUMB_SIZE * THUMB_SIZE), np.float32)
    for start in range(0, len(thumbs), batch):
        x = thumbs[start:start + batch].astype(np.float32)
        t = fine @ x @ fine.T - BACKGROUND_WEIGHT * (wide @ x @ wide.T)
        out[start:start + batch] = t.reshape(len(x), -1)
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    # A flat image (constant grey) has no structure to align: its NCC is 0 with everything.
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-3)


def descriptors(prepared: np.ndarray, *, flip: bool = False) -> np.ndarray:
    """Unit-norm identity samples (N, M) of prepared thumbnails: NCC is their inner product.

    With ``flip`` the samples of the mirrored image are returned, so that an inner-product
    search finds flipped copies too.
    """
    op, transforms = _operator(ASPECT_BINS.index(1.0))
    m = int(_MASK.sum())
    idx = next(i for i, t in enumerate(transforms) if t.kind == "identity" and t.flip == flip)
    block = op[idx * m:(idx + 1) * m]
    return _normalise(np.asarray(block @ prepared.T).T.astype(np.float32))


def thumb_descriptors(thumbs: np.ndarray, *, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """:func:`descriptors` of uint8 (N, 32, 32) thumbnails, in both orientations.

    Prepared batch by batch: the prepared thumbnails (4 KB per image in float32) are never
    all held at once, only the (N, M) descriptors, as float16 (about 0.3 KB per image each;
    the k-NN search converts them to float32 batch by batch, and half precision moves an
    NCC by less than 0.001).
    """
    parts = [(descriptors(p).astype(np.float16), descriptors(p, flip=True).astype(np.float16))
             for p in (prepare_thumbs(thumbs[s:s + batch]) for s in range(0, len(thumbs), batch))]
    if not parts:
        empty = descriptors(np.zeros((0, THUMB_SIZE * THUMB_SIZE), np.float32)).astype(np.float16)
        return empty, empty.copy()
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


@dataclass(frozen=True)
class AlignmentScores:
    """Best alignment of each pair.

    Attributes
    ----------
    ncc : numpy.ndarray
        (P,) best NCC in [-1, 1] over all transforms and both directions.
    transform : list of Transform
        The transform that achieved it.
    """

    ncc: np.ndarray
    transform: list[Transform]
    direction: np.ndarray


def align_pairs(
    prepared_a: np.ndarray,
    prepared_b: np.ndarray,
    aspect_a: np.ndarray,
    aspect_b: np.ndarray,
    *,
    coarse: bool = False,
    hints: list[Transform] | None = None,
    batch: int = 128,
) -> AlignmentScores:
    """Score P pairs (row i of ``prepared_a`` with row i of ``prepared_b``).

    Parameters
    ----------
    prepared_a, prepared_b : numpy.ndarray
        (P, 1024) outputs of :func:`prepare_thumbs` for the two sides of each pair.
    aspect_a, aspect_b : numpy.ndarray
        (P,) aspect bin of each side (:func:`aspect_bin`).
    coarse : bool
        Search the small screening set of transforms instead of the full one.
    hints : list of Transform, optional
        Best coarse transform of each pair: the full search is then restricted to the
        transforms near it (several times faster, same answer in practice).
    batch : int
        Pairs scored per sparse product (bounds memory to ~batch * 150 KB).

    Returns
    -------
    AlignmentScores
    """
    p = len(prepared_a)
    best = np.full(p, -1.0, dtype=np.float32)
    best_t: list[Transform | None] = [None] * p
    best_d = np.zeros(p, np.int8)
    if p == 0:
        return AlignmentScores(best, [], best_d)
    m = int(_MASK.sum())
    keys = [_subset_key(h) for h in hints] if hints is not None else [None] * p
    # Both directions: B is a crop/rotation of A, or A of B.
    for direction, (fixed, moving, fixed_aspect) in enumerate(
        ((prepared_b, prepared_a, aspect_b), (prepared_a, prepared_b, aspect_a))
    ):
        groups: dict[tuple, list[int]] = {}
        for i in range(p):
            groups.setdefault((int(fixed_aspect[i]), keys[i]), []).append(i)
        for (ab, key), members in groups.items():
            ident_op = _transform_rows(ab, 0, coarse)  # transform 0 is the identity
            op, transforms = _operator(ab, coarse) if key is None else _sub_operator(ab, key)
            sel_all = np.asarray(members)
            for start in range(0, len(sel_all), batch):
                sel = sel_all[start:start + batch]
                f = _normalise(np.asarray(ident_op @ fixed[sel].T).T)
                w = np.asarray(op @ moving[sel].T).T.reshape(len(sel), len(transforms), m)
                # f has zero mean, so the dot product needs no centred copy of w; only w's
                # centred norm does: sum(w^2) - sum(w)^2 / m.
                num = np.einsum("ptm,pm->pt", w, f)
                var = np.einsum("ptm,ptm->pt", w, w) - w.sum(axis=2) ** 2 / m
                scores = np.where(var > 1e-6, num / np.sqrt(np.maximum(var, 1e-12)), 0.0)
                arg = scores.argmax(axis=1)
                val = scores[np.arange(len(sel)), arg]
                better = val > best[sel]
                best[sel[better]] = val[better]
                best_d[sel[better]] = direction
                for i in np.flatnonzero(better):
                    best_t[sel[i]] = transforms[arg[i]]
    return AlignmentScores(best, [t if t is not None else _IDENTITY for t in best_t], best_d)


_IDENTITY = Transform("identity", False, (1.0, 1.0), (0.0, 0.0), 0.0)


#: The robust score tiles the grid into TILES x TILES blocks and ignores the DROP_BLOCKS that
#: match worst: a caption or logo pasted over a copy changes a few blocks a lot, a different
#: picture changes all of them.
TILES = 4
DROP_BLOCKS = 3


def _blocks(tiles: int) -> np.ndarray:
    return ((_POINTS[_MASK] + 0.5) * tiles).astype(int).clip(0, tiles - 1) @ np.array([1, tiles])


def robust_scores(
    prepared_a: np.ndarray,
    prepared_b: np.ndarray,
    aspect_a: np.ndarray,
    aspect_b: np.ndarray,
    transforms: list[Transform],
    directions: np.ndarray,
    *,
    tiles: int = TILES,
    drop: int = DROP_BLOCKS,
) -> np.ndarray:
    """NCC at each pair's best transform after dropping the ``drop`` worst-matching blocks."""
    p = len(prepared_a)
    out = np.zeros(p, np.float32)
    m = int(_MASK.sum())
    block = _blocks(tiles)
    nb = tiles * tiles
    onehot = np.zeros((m, nb), np.float32)
    onehot[np.arange(m), block] = 1.0
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i in range(p):
        d = int(directions[i])
        ab = int(aspect_b[i] if d == 0 else aspect_a[i])
        groups.setdefault((d, ab, _transform_index(ab)[transforms[i]]), []).append(i)
    for (d, ab, ti), idx in groups.items():
        sel = np.asarray(idx)
        fixed, moving = (prepared_b, prepared_a) if d == 0 else (prepared_a, prepared_b)
        f = _normalise(np.asarray(_transform_rows(ab, _identity_index(ab)) @ fixed[sel].T).T)
        w = _normalise(np.asarray(_transform_rows(ab, ti) @ moving[sel].T).T)
        energy = ((w - f) ** 2) @ onehot  # (P, blocks) residual per block
        worst = np.argsort(-energy, axis=1)[:, :drop]
        dropped = np.zeros((len(sel), nb), bool)
        np.put_along_axis(dropped, worst, True, axis=1)
        keep = ~dropped[:, block]
        fk = np.where(keep, f, 0.0)
        wk = np.where(keep, w, 0.0)
        cnt = keep.sum(1, keepdims=True)
        fk = np.where(keep, fk - fk.sum(1, keepdims=True) / cnt, 0.0)
        wk = np.where(keep, wk - wk.sum(1, keepdims=True) / cnt, 0.0)
        num = (fk * wk).sum(1)
        den = np.sqrt((fk**2).sum(1) * (wk**2).sum(1))
        out[sel] = np.where(den > 1e-6, num / np.maximum(den, 1e-12), 0.0)
    return out
