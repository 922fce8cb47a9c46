"""Pairwise verification: is image B the same picture as image A after a geometric and
photometric edit?

Each image is kept as a 32x32 grey thumbnail. For a candidate pair we search a fixed set of
geometric transforms (crops of up to ~15% per side in either direction, horizontal flips,
rotations up to 30 degrees) and score each by normalised cross-correlation (NCC) of the two
thumbnails, lightly blurred, inside a central ellipse (so black corners left by a rotation
and borders removed by a crop do not count). NCC is invariant to brightness, contrast and
colour changes, and blur/JPEG/resizing barely move it; a different photograph, even of the
same class or another crop of the same scene, does not align under any of the transforms.

Every transform is bilinear sampling: four taps (pixel index and weight) per point of the
comparison grid (:func:`_taps`). A transform set is one sparse linear operator built from
them, so scoring a batch of pairs is a single sparse-dense product followed by batched dot
products; a single transform per pair (the robust score) gathers its taps directly.
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
#: Pairs scored per sparse product (bounds memory to ~batch * 150 KB).
BATCH = 128


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
#: Samples per transform (grid points inside the ellipse).
_M = int(_MASK.sum())


def _mirror_index() -> np.ndarray:
    # The grid is symmetric about x = 0 (x of column k is exactly minus x of column G-1-k) and
    # so is the ellipse: the samples of the mirrored image are a permutation of the samples.
    cols = np.arange(GRID * GRID) % GRID
    mirrored = np.arange(GRID * GRID) - cols + (GRID - 1 - cols)
    position = np.cumsum(_MASK) - 1
    return position[mirrored[_MASK]]


_MIRROR = _mirror_index()


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


def _transform_list(coarse: bool) -> tuple[Transform, ...]:
    """The transforms of the full search (or of the coarse screen), in search order."""
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
    return tuple(ts)


_SETS = {False: _transform_list(False), True: _transform_list(True)}


def transform_set(coarse: bool = False) -> tuple[Transform, ...]:
    """Every transform of the full search (or of the coarse screen), in search order.

    The same for every aspect bin (only the matrices differ); ``AlignmentScores.index`` and
    the ``index`` argument of :func:`robust_rows` point into it. Transform 0 is the identity.
    """
    return _SETS[coarse]


def _axis_taps(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First pixel and weight of the second pixel for normalised coordinates along one axis."""
    p = np.clip((coord + 0.5) * THUMB_SIZE - 0.5, 0, THUMB_SIZE - 1.000001)
    i0 = np.floor(p).astype(np.intp)
    return i0, p - i0


@lru_cache(maxsize=2 * len(ASPECT_BINS))
def _taps(aspect_bin: int, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps of every transform of :func:`transform_set` over the masked grid points.

    Returns (T, 4, M) int32 pixel indices (into a flattened thumbnail; for each sample the
    four increase) and their (T, 4, M) float32 weights. Tap-major, so that each tap of a
    batch of samples is a contiguous slice (:func:`_bilinear` was ~1.5x slower tap-minor).
    """
    pts = _POINTS[_MASK]
    ts = transform_set(coarse)
    cols = np.empty((len(ts), 4, _M), np.int32)
    weights = np.empty((len(ts), 4, _M), np.float32)
    for i, t in enumerate(ts):
        mat, off = transform_matrix(t, aspect_bin)
        src = pts @ mat.T + off  # normalised coords in the moving image
        x0, wx = _axis_taps(src[:, 0])
        y0, wy = _axis_taps(src[:, 1])
        cols[i] = y0 * THUMB_SIZE + x0 + np.array([0, 1, THUMB_SIZE, THUMB_SIZE + 1])[:, None]
        weights[i] = [(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy]
    cols.flags.writeable = weights.flags.writeable = False
    return cols, weights


def _bilinear(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum over the tap axis (the second last, of length 4) of ``values * weights``.

    In tap order, one product at a time: the same float32 arithmetic as the sparse product
    of :func:`_operator`, so a sample is the same whichever way it was computed.
    """
    out = values[..., 0, :] * weights[..., 0, :]
    for k in (1, 2, 3):
        out += values[..., k, :] * weights[..., k, :]
    return out


def _identity_taps() -> tuple[np.ndarray, np.ndarray]:
    cols, weights = _taps(ASPECT_BINS.index(1.0))
    return cols[0], weights[0]  # transform 0 is the identity, the same for every aspect


#: Around a coarse rotation, the fine search looks this many degrees either side.
REFINE_DEGREES = 6


def _subset_key(hint: Transform) -> tuple[bool, float | None]:
    return (hint.flip, hint.angle if hint.kind == "rotation" else None)


def _subset(key: tuple[bool, float | None] | None) -> np.ndarray:
    """Indices into the full :func:`transform_set` searched near a coarse hint's ``key``.

    A coarse crop/identity hint keeps every crop (and rotations up to REFINE_DEGREES) of the
    same flip; a coarse rotation keeps the rotations within REFINE_DEGREES of it (and, unless
    flipped, the identity). Without a key, every transform.
    """
    ts = transform_set()
    if key is None:
        return np.arange(len(ts))
    flip, angle = key
    keep = []
    for i, t in enumerate(ts):
        if t.flip != flip:
            continue
        if angle is None:
            ok = t.kind != "rotation" or abs(t.angle) <= REFINE_DEGREES
        else:
            ok = t.kind == "rotation" and abs(t.angle - angle) <= REFINE_DEGREES
        if ok or (t.kind == "identity" and not t.flip):
            keep.append(i)
    return np.asarray(keep)


@lru_cache(maxsize=512)
def _operator(
    aspect_bin: int, coarse: bool = False, key: tuple[bool, float | None] | None = None
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (T*M, S*S) bilinear sampling operator of a transform set, and its indices.

    The whole coarse set with ``coarse``; otherwise the full set, restricted to
    :func:`_subset` of ``key`` when one is given.
    """
    from scipy import sparse  # here, not at import: scipy costs ~0.3 s of start-up

    index = np.arange(len(transform_set(True))) if coarse else _subset(key)
    cols, weights = _taps(aspect_bin, coarse)
    rows = len(index) * _M
    op = sparse.csr_matrix(  # four taps per row, in tap order
        (weights[index].transpose(0, 2, 1).ravel(), cols[index].transpose(0, 2, 1).ravel(),
         np.arange(0, 4 * rows + 1, 4, dtype=np.int32)),
        shape=(rows, THUMB_SIZE * THUMB_SIZE),
    )
    return op, index


@lru_cache(maxsize=1)
def _coarse_keys() -> tuple[tuple[tuple[bool, float | None], ...], np.ndarray]:
    """Distinct :func:`_subset_key` of the coarse set, and the key of each coarse transform."""
    keys = [_subset_key(t) for t in transform_set(True)]
    distinct = tuple(dict.fromkeys(keys))
    return distinct, np.array([distinct.index(k) for k in keys])


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


def prepare_thumbs(thumbs: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """Band-pass uint8 (N, 32, 32) thumbnails and flatten them to float32 (N, 1024).

    The results are centred: the mean of their identity samples (the fixed side of every
    NCC) is zero, that of any transform's samples of the order of their spread. Every score
    is an NCC, blind to the mean, but float32 is not: the search's one-pass variance
    sum(w^2) - sum(w)^2 / m of samples that carried the band-pass's share of the grey level
    (~60, against a spread below 1 for faint images) cancelled catastrophically. On a
    20,000-image scan (25,538 aligned candidates) that put 690 NCCs > 1e-4 off a float64 run
    of the same search, 86 verified pairs above 1 (up to 3.56) and ~50 decisions per
    threshold on the wrong side. Centred, every NCC is within 2e-5 of float64 at the
    transform it chose (all but one, of two near-blank images, within 6e-6), none exceeds 1.

    The centring is one exact subtraction from the input (:func:`_centring_weights`), so the
    blurs work on small values too: subtracting the output's grid mean instead left 33 NCCs
    > 1e-5 off. Centred on the mean pixel, a transform's samples kept a mean of up to 70x
    their spread (9x on the grid's mean) and one NCC was 7e-5 off.

    ``batch``: 256 images (1 MB temporaries) was ~18% faster than 1024.
    """
    fine, wide = _blur_matrix(BLUR_SIGMA), _blur_matrix(BACKGROUND_SIGMA)
    centring = _centring_weights()
    out = np.empty((len(thumbs), THUMB_SIZE * THUMB_SIZE), np.float32)
    for start in range(0, len(thumbs), batch):
        x = thumbs[start:start + batch].astype(np.float32)
        # einsum, not x @ centring: a BLAS product wakes OpenBLAS's threads, whose spinning
        # tripled this function's CPU time. Rounded to 1/1024, the level is subtracted
        # exactly (|x - level| < 1024 needs 20 of float32's 24 bits).
        level = np.einsum("ij,j->i", x.reshape(len(x), -1), centring)
        x -= (np.round(level * 1024) / 1024)[:, None, None]
        t = fine @ x @ fine.T - BACKGROUND_WEIGHT * (wide @ x @ wide.T)
        out[start:start + batch] = t.reshape(len(x), -1)
    return out


@lru_cache(maxsize=1)
def _centring_weights() -> np.ndarray:
    """(1024,) weights c of the level that :func:`prepare_thumbs` subtracts from a thumbnail.

    The band-pass is linear, so the mean of its output's identity samples is a fixed
    weighting of the input pixels, u; it passes a constant at gain ``u.sum()``. Hence
    c = u / u.sum(): band-passing x - c.x leaves identity samples of mean zero.
    """
    fine, wide = (_blur_matrix(s).astype(np.float64) for s in (BLUR_SIGMA, BACKGROUND_SIGMA))
    cols, weights = _identity_taps()
    grid = np.bincount(cols.ravel(), weights.ravel(), THUMB_SIZE * THUMB_SIZE)
    grid = grid.reshape(THUMB_SIZE, THUMB_SIZE) / _M  # pixel weights of the samples' mean
    u = fine.T @ grid @ fine - BACKGROUND_WEIGHT * (wide.T @ grid @ wide)
    return (u / u.sum()).astype(np.float32).ravel()


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    # A flat image (constant grey) has no structure to align: its NCC is 0 with everything.
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-3)


def _identity_samples(prepared: np.ndarray) -> np.ndarray:
    """Identity samples (N, M) of prepared (N, 1024) thumbnails, not normalised."""
    cols, weights = _identity_taps()
    # np.take of the flattened taps is ~4x faster than fancy indexing with the (4, M) array.
    values = np.take(prepared, cols.ravel(), axis=1).reshape(len(prepared), 4, _M)
    return _bilinear(values, weights)


def _unit(samples: np.ndarray, flip: bool) -> np.ndarray:
    # The mirrored image's samples are a permutation of the samples.
    return _normalise(samples[:, _MIRROR] if flip else samples)


def descriptors(prepared: np.ndarray, *, flip: bool = False) -> np.ndarray:
    """Unit-norm identity samples (N, M) of prepared thumbnails: NCC is their inner product.

    With ``flip`` the samples of the mirrored image are returned, so that an inner-product
    search finds flipped copies too.
    """
    return _unit(_identity_samples(prepared), flip)


def thumb_descriptors(thumbs: np.ndarray, *, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """:func:`descriptors` of uint8 (N, 32, 32) thumbnails, in both orientations.

    Prepared batch by batch: the prepared thumbnails (4 KB per image in float32) are never
    all held at once, only the (N, M) descriptors, as float16 (about 0.3 KB per image each;
    the k-NN search converts them to float32 batch by batch, and half precision moves an
    NCC by less than 0.001). The mirrored samples are a permutation of the samples
    (:data:`_MIRROR`), not a second sampling.
    """
    out = np.empty((2, len(thumbs), _M), np.float16)
    for s in range(0, len(thumbs), batch):
        samples = _identity_samples(prepare_thumbs(thumbs[s:s + batch]))
        out[0, s:s + batch] = _unit(samples, False)
        out[1, s:s + batch] = _unit(samples, True)
    return out[0], out[1]


def thumb_std(thumbs: np.ndarray, *, batch: int = 1024) -> np.ndarray:
    """Grey-level standard deviation (N,) of uint8 (N, 32, 32) thumbnails, exactly.

    Equal to ``thumbs.reshape(N, -1).std(axis=1)`` bit for bit, ~2.5x cheaper (28 vs 76 ms
    for 20,000 thumbnails; no float64 copy of every pixel): pixels and their squares summed
    256 at a time are integers below 2**24, so float32 sums them exactly; n * sum(x^2) -
    sum(x)^2 is then exact in float64, and with n = 1024 a power of two so are the divisions
    numpy's std makes.
    """
    n = THUMB_SIZE * THUMB_SIZE
    out = np.empty(len(thumbs), np.float64)
    for s in range(0, len(thumbs), batch):
        x = thumbs[s:s + batch].reshape(-1, n // 256, 256).astype(np.float32)
        s1 = x.sum(axis=(1, 2), dtype=np.float64)
        s2 = (x * x).sum(axis=2).sum(axis=1, dtype=np.float64)
        out[s:s + batch] = np.sqrt(np.maximum(n * s2 - s1 * s1, 0.0) / (n * n))
    return out


class PreparedThumbs:
    """Band-passed thumbnails of N images, ready to be aligned pair by pair.

    Pairs refer to images by row, so an image in many pairs (a train image near several val
    images) is prepared and sampled once, and no (pairs, 1024) copy of either side is made.

    Parameters
    ----------
    prepared : numpy.ndarray
        (N, 1024) output of :func:`prepare_thumbs` (centred, which the NCC's float32
        precision relies on).

    Attributes
    ----------
    pixels : numpy.ndarray
        ``prepared``, float32 (N, 1024).
    samples : numpy.ndarray
        (N, M) identity samples, not normalised.
    unit : numpy.ndarray
        (N, M) ``samples`` normalised to zero mean and unit norm: the fixed side of every
        NCC.
    """

    def __init__(self, prepared: np.ndarray) -> None:
        self.pixels = np.ascontiguousarray(prepared, dtype=np.float32)
        self.samples = _identity_samples(self.pixels)
        self.unit = _normalise(self.samples)

    def fixed(self, rows: np.ndarray) -> np.ndarray:
        """Normalised identity samples of ``rows`` as an (M, n) C-contiguous array."""
        # Rows gathered, then transposed: ~20x faster than np.take along columns of .T.
        return np.ascontiguousarray(self.unit[rows].T)

    @classmethod
    def from_thumbs(cls, thumbs: np.ndarray) -> PreparedThumbs:
        """Prepare uint8 (N, 32, 32) thumbnails (:func:`prepare_thumbs`)."""
        return cls(prepare_thumbs(thumbs))

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass(frozen=True)
class AlignmentScores:
    """Best alignment of each pair.

    Attributes
    ----------
    ncc : numpy.ndarray
        (P,) best NCC in [-1, 1] over all transforms and both directions.
    transform : list of Transform
        The transform that achieved it.
    direction : numpy.ndarray
        (P,) 0 where the second image of the pair is the fixed one (the first is moved onto
        it), 1 the other way.
    index : numpy.ndarray
        (P,) position of ``transform`` in :func:`transform_set` (of the coarse set for a
        coarse search).
    """

    ncc: np.ndarray
    transform: list[Transform]
    direction: np.ndarray
    index: np.ndarray


def _by_group(labels: np.ndarray) -> list[np.ndarray]:
    """Positions of each distinct label, labels in increasing order (a stable grouping)."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []


def _search(
    side_a: PreparedThumbs, rows_a: np.ndarray, side_b: PreparedThumbs, rows_b: np.ndarray,
    aspect_a: np.ndarray, aspect_b: np.ndarray, coarse: bool,
    keys: tuple | None, key_of: np.ndarray | None, batch: int,
) -> AlignmentScores:
    """Best transform of every pair over a transform set (see :func:`align_rows`).

    ``keys`` are the distinct :func:`_subset_key` of the hints and ``key_of`` each pair's.
    """
    p = len(rows_a)
    best = np.full(p, -1.0, dtype=np.float32)
    best_i = np.zeros(p, np.intp)  # transform 0, the identity, where nothing scores above -1
    best_d = np.zeros(p, np.int8)
    n_keys = 1 if keys is None else len(keys)
    key_of = np.zeros(p, np.intp) if key_of is None else key_of
    # Both directions: B is a crop/rotation of A, or A of B.
    for direction, (fixed, frows, faspect, moving, mrows) in enumerate((
        (side_b, rows_b, aspect_b, side_a, rows_a), (side_a, rows_a, aspect_a, side_b, rows_b)
    )):
        # One operator per (aspect of the fixed image, hint's subset): pairs are sorted into
        # these groups (at most 7 x 14) and scored a batch at a time.
        labels = np.asarray(faspect, np.intp) * n_keys + key_of
        for members in _by_group(labels):
            ab, k = divmod(int(labels[members[0]]), n_keys)
            op, index = _operator(ab, coarse, None if keys is None else keys[k])
            for start in range(0, len(members), batch):
                sel = members[start:start + batch]
                n = len(sel)
                # (T*M, n) samples of the moving images under every transform; f is (M, n).
                w = (op @ moving.pixels[mrows[sel]].T).reshape(len(index), _M, n)
                f = fixed.fixed(frows[sel])  # (M, n), as w
                # f has zero mean, so the dot product needs no centred copy of w; only w's
                # centred norm does, in one pass: sum(w^2) - sum(w)^2 / m, accurate in
                # float32 only because prepare_thumbs centres the images (a second pass
                # would cost a (T, M, n) subtraction). einsum sums like .sum(), ~1.5x faster.
                scores = np.einsum("tmp,mp->tp", w, f)
                total = np.einsum("tmp->tp", w)
                var = np.einsum("tmp,tmp->tp", w, w)
                var -= total ** 2 / _M
                # scores = num / sqrt(var), 0 where var <= 1e-6; in place, same values.
                flat = var <= 1e-6
                np.sqrt(np.maximum(var, 1e-12, out=var), out=var)
                scores /= var
                scores[flat] = 0.0
                arg = scores.argmax(axis=0)
                val = scores[arg, np.arange(n)]
                better = val > best[sel]
                upd = sel[better]
                best[upd] = val[better]
                best_i[upd] = index[arg[better]]
                best_d[upd] = direction
    ts = transform_set(coarse)
    return AlignmentScores(best, [ts[i] for i in best_i], best_d, best_i)


def align_rows(
    thumbs: PreparedThumbs,
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    aspect_a: np.ndarray,
    aspect_b: np.ndarray,
    *,
    coarse: bool = False,
    hints: np.ndarray | None = None,
    batch: int = BATCH,
) -> AlignmentScores:
    """Score P pairs of prepared thumbnails, image ``rows_a[i]`` with image ``rows_b[i]``.

    Parameters
    ----------
    thumbs : PreparedThumbs
        The images of both sides.
    rows_a, rows_b : numpy.ndarray
        (P,) rows of ``thumbs``: the two sides of each pair.
    aspect_a, aspect_b : numpy.ndarray
        (P,) aspect bin of each side (:func:`aspect_bin`).
    coarse : bool
        Search the small screening set of transforms instead of the full one.
    hints : numpy.ndarray, optional
        (P,) best coarse transform of each pair (``index`` of a coarse search): the full
        search is then restricted to the transforms near it (several times faster, same
        answer in practice).
    batch : int
        Pairs scored per sparse product (bounds memory to ~batch * 150 KB).

    Returns
    -------
    AlignmentScores
    """
    keys = key_of = None
    if hints is not None and not coarse:
        keys, key_ids = _coarse_keys()
        key_of = key_ids[np.asarray(hints, np.intp)]
    return _search(thumbs, np.asarray(rows_a, np.intp), thumbs, np.asarray(rows_b, np.intp),
                   aspect_a, aspect_b, coarse, keys, key_of, batch)


def align_pairs(
    prepared_a: np.ndarray,
    prepared_b: np.ndarray,
    aspect_a: np.ndarray,
    aspect_b: np.ndarray,
    *,
    coarse: bool = False,
    hints: list[Transform] | None = None,
    batch: int = BATCH,
) -> AlignmentScores:
    """Score P pairs (row i of ``prepared_a`` with row i of ``prepared_b``).

    Parameters
    ----------
    prepared_a, prepared_b : numpy.ndarray
        (P, 1024) outputs of :func:`prepare_thumbs` for the two sides of each pair (centred,
        which the NCC's float32 precision relies on).
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

    See Also
    --------
    align_rows : the same for pairs of rows of one :class:`PreparedThumbs`.
    """
    keys = key_of = None
    if hints is not None and not coarse:
        hint_keys = [_subset_key(h) for h in hints]
        position = {k: i for i, k in enumerate(dict.fromkeys(hint_keys))}
        keys = tuple(position)
        key_of = np.array([position[k] for k in hint_keys], np.intp)
    rows = np.arange(len(prepared_a))
    return _search(PreparedThumbs(prepared_a), rows, PreparedThumbs(prepared_b), rows,
                   aspect_a, aspect_b, coarse, keys, key_of, batch)


#: The robust score tiles the grid into TILES x TILES blocks and ignores the DROP_BLOCKS that
#: match worst: a caption or logo pasted over a copy changes a few blocks a lot, a different
#: picture changes all of them.
TILES = 4
DROP_BLOCKS = 3


def _blocks(tiles: int) -> np.ndarray:
    return ((_POINTS[_MASK] + 0.5) * tiles).astype(int).clip(0, tiles - 1) @ np.array([1, tiles])


@lru_cache(maxsize=8)
def _block_runs(tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample order that makes each block contiguous, start of each block in it, empty blocks."""
    block = _blocks(tiles)
    order = np.argsort(block, kind="stable")
    starts = np.searchsorted(block[order], np.arange(tiles * tiles))
    return order, np.minimum(starts, _M - 1), np.bincount(block, minlength=tiles * tiles) == 0


def _robust(
    side_a: PreparedThumbs, rows_a: np.ndarray, side_b: PreparedThumbs, rows_b: np.ndarray,
    aspect_a: np.ndarray, aspect_b: np.ndarray, index: np.ndarray, direction: np.ndarray,
    tiles: int, drop: int,
) -> np.ndarray:
    """:func:`robust_rows` of pairs whose two sides may come from two sets of thumbnails."""
    p = len(rows_a)
    out = np.zeros(p, np.float32)
    block = _blocks(tiles)
    nb = tiles * tiles
    order, starts, empty = _block_runs(tiles)
    direction = np.asarray(direction)
    # One group per (direction, aspect of the fixed image): at most 14, each scored at once by
    # gathering every pair's own taps. Grouping by transform as well made thousands of tiny
    # groups: 0.84 s on a 20k scan's 24,324 pairs, 0.12 s this way.
    for d, (fixed, frows, faspect, moving, mrows) in enumerate((
        (side_b, rows_b, aspect_b, side_a, rows_a), (side_a, rows_a, aspect_a, side_b, rows_b)
    )):
        on = direction == d
        if not on.any():
            continue
        for members in _by_group(np.asarray(faspect)[on]):
            sel = np.flatnonzero(on)[members]
            cols, weights = _taps(int(faspect[sel[0]]))
            start = (mrows[sel] * THUMB_SIZE * THUMB_SIZE).astype(np.int32)
            taps = cols[index[sel]] + start[:, None, None]
            f = fixed.unit[frows[sel]]
            w = _normalise(_bilinear(moving.pixels.ravel()[taps], weights[index[sel]]))
            # Residual energy per block: blocks made contiguous, then one reduceat (a matrix
            # product with a one-hot block matrix would spawn BLAS threads for big groups).
            energy = np.add.reduceat(((w - f) ** 2)[:, order], starts, axis=1)
            energy[:, empty] = 0.0
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


def robust_rows(
    thumbs: PreparedThumbs,
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    aspect_a: np.ndarray,
    aspect_b: np.ndarray,
    index: np.ndarray,
    direction: np.ndarray,
    *,
    tiles: int = TILES,
    drop: int = DROP_BLOCKS,
) -> np.ndarray:
    """NCC at each pair's best transform after dropping the ``drop`` worst-matching blocks.

    Parameters
    ----------
    thumbs : PreparedThumbs
        The images of both sides.
    rows_a, rows_b, aspect_a, aspect_b : numpy.ndarray
        (P,) the two sides of each pair, as for :func:`align_rows`.
    index, direction : numpy.ndarray
        (P,) the full search's ``AlignmentScores.index`` and ``direction``.
    tiles, drop : int
        The grid is cut into ``tiles`` x ``tiles`` blocks, ``drop`` of them ignored.

    Returns
    -------
    numpy.ndarray
        (P,) float32 robust NCC.
    """
    return _robust(thumbs, np.asarray(rows_a, np.intp), thumbs, np.asarray(rows_b, np.intp),
                   aspect_a, aspect_b, np.asarray(index, np.intp), direction, tiles, drop)


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
    """NCC at each pair's best transform after dropping the ``drop`` worst-matching blocks.

    :func:`robust_rows` for (P, 1024) prepared thumbnails of each side and the transforms
    themselves (each must be in the full :func:`transform_set`).
    """
    position = _full_position()
    rows = np.arange(len(prepared_a))
    index = np.array([position[t] for t in transforms], np.intp)
    return _robust(PreparedThumbs(prepared_a), rows, PreparedThumbs(prepared_b), rows,
                   aspect_a, aspect_b, index, directions, tiles, drop)


@lru_cache(maxsize=1)
def _full_position() -> dict[Transform, int]:
    return {t: i for i, t in enumerate(transform_set())}
