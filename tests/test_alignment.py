"""The vectorised alignment (:mod:`splitaudit.alignment`) against straightforward references.

The references sample with :func:`scipy.ndimage.map_coordinates` (bilinear), score one pair
and one transform at a time in float64, and rebuild the comparison grid from the public
constants, so they share no code with the operators, gathers and batched reductions they
check.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy.ndimage import gaussian_filter, map_coordinates

from splitaudit import alignment as al
from splitaudit.fingerprints.hashes import THUMB_SIZE, grey_thumbnail
from splitaudit.synth import random_photo

S = THUMB_SIZE


def _grid() -> np.ndarray:
    c = (np.arange(al.GRID) + 0.5) / al.GRID - 0.5
    v, u = np.meshgrid(c, c, indexing="ij")
    pts = np.stack([u.ravel(), v.ravel()], axis=1)
    return pts[(pts**2).sum(axis=1) <= al.MASK_RADIUS**2]


GRID_POINTS = _grid()
IDENTITY = al.Transform("identity", False, (1.0, 1.0), (0.0, 0.0), 0.0)


def _samples(image: np.ndarray, t: al.Transform, aspect: int) -> np.ndarray:
    """Bilinear samples (M,) of a prepared (32, 32) image under one transform, in float64."""
    mat, off = al.transform_matrix(t, aspect)
    src = GRID_POINTS @ mat.T + off
    px, py = (np.clip((src[:, k] + 0.5) * S - 0.5, 0, S - 1.000001) for k in (0, 1))
    return map_coordinates(image.astype(np.float64), [py, px], order=1)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    n = np.linalg.norm(x)
    return x / n if n > 1e-3 else np.zeros_like(x)


def _reference_search(pa, pb, aa, ab, transforms):
    """Best (ncc, transform, direction) and the runner-up's ncc, one transform at a time."""
    scored = []
    for d, (fixed, moving, aspect) in enumerate(((pb, pa, ab), (pa, pb, aa))):
        f = _unit(_samples(fixed.reshape(S, S), IDENTITY, aspect))
        for t in transforms:
            w = _samples(moving.reshape(S, S), t, aspect)
            var = ((w - w.mean()) ** 2).sum()
            scored.append((float(f @ w / np.sqrt(var)) if var > 1e-6 else 0.0, d, t))
    order = sorted(range(len(scored)), key=lambda i: -scored[i][0])
    best, second = scored[order[0]], scored[order[1]]
    return best[0], best[2], best[1], second[0]


def _reference_robust(pa, pb, aa, ab, t, d, tiles=al.TILES, drop=al.DROP_BLOCKS) -> float:
    fixed, moving, aspect = (pb, pa, ab) if d == 0 else (pa, pb, aa)
    f = _unit(_samples(fixed.reshape(S, S), IDENTITY, aspect))
    w = _unit(_samples(moving.reshape(S, S), t, aspect))
    cell = np.clip(((GRID_POINTS + 0.5) * tiles).astype(int), 0, tiles - 1)
    block = cell[:, 0] + tiles * cell[:, 1]
    energy = np.bincount(block, (w - f) ** 2, minlength=tiles * tiles)
    keep = ~np.isin(block, np.argsort(-energy)[:drop])
    fk, wk = f[keep] - f[keep].mean(), w[keep] - w[keep].mean()
    den = np.sqrt((fk**2).sum() * (wk**2).sum())
    return float(fk @ wk / den) if den > 1e-6 else 0.0


def _reference_prepare(thumbs: np.ndarray) -> np.ndarray:
    """The band-pass of :func:`al.prepare_thumbs` in float64 (which needs no centring)."""
    x = thumbs.astype(np.float64)
    fine = [gaussian_filter(i, al.BLUR_SIGMA, mode="nearest") for i in x]
    wide = [gaussian_filter(i, al.BACKGROUND_SIGMA, mode="nearest") for i in x]
    return (np.stack(fine) - al.BACKGROUND_WEIGHT * np.stack(wide)).reshape(len(x), -1)


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(grey_thumbnail(image))


@pytest.fixture(scope="module")
def pairs():
    """Real pairs (photos and their edits, photos and other photos) plus random noise pairs."""
    rng = np.random.default_rng(11)
    edits = [
        lambda im: im,
        ImageOps.mirror,
        lambda im: im.rotate(10, resample=Image.Resampling.BILINEAR),
        lambda im: ImageOps.mirror(im.rotate(-20, resample=Image.Resampling.BILINEAR)),
        lambda im: im.crop((10, 4, 150, 140)),
        lambda im: im.resize((120, 160)),
    ]
    a, b, wa, wb = [], [], [], []
    for i in range(12):
        photo = random_photo(rng, 160)
        other = edits[i % len(edits)](photo) if i < 9 else random_photo(rng, 160)
        a.append(_thumb(photo))
        b.append(_thumb(other))
        wa.append(photo.size)
        wb.append(other.size)
    noise = rng.integers(0, 256, (6, S, S), dtype=np.uint8)
    a += list(noise[:3])
    b += list(noise[3:])
    wa += [(64, 48), (48, 64), (100, 100)]
    wb += [(100, 100), (64, 36), (30, 50)]
    wa, wb = np.array(wa), np.array(wb)
    return (al.prepare_thumbs(np.stack(a)), al.prepare_thumbs(np.stack(b)),
            al.aspect_bin(wa[:, 0], wa[:, 1]), al.aspect_bin(wb[:, 0], wb[:, 1]))


def test_operator_samples_like_map_coordinates():
    rng = np.random.default_rng(0)
    image = al.prepare_thumbs(rng.integers(0, 256, (1, S, S), dtype=np.uint8))[0]
    for aspect in (0, 3, 5):
        for coarse in (False, True):
            op, index = al._operator(aspect, coarse)
            got = np.asarray(op @ image).reshape(len(index), -1)
            for k, i in enumerate(index):
                t = al.transform_set(coarse)[i]
                np.testing.assert_allclose(got[k], _samples(image.reshape(S, S), t, aspect),
                                           rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("coarse", [False, True])
def test_search_matches_per_pair_reference(pairs, coarse):
    pa, pb, aa, ab = pairs
    res = al.align_pairs(pa, pb, aa, ab, coarse=coarse)
    ts = al.transform_set(coarse)
    for i in range(len(pa)):
        ncc, t, d, second = _reference_search(pa[i], pb[i], aa[i], ab[i], ts)
        assert abs(res.ncc[i] - ncc) < 1e-4
        assert res.transform[i] is ts[res.index[i]]
        if ncc - second > 1e-3:  # a clear winner: the same transform and direction
            assert (res.transform[i], res.direction[i]) == (t, d)


def test_hinted_search_matches_reference_over_the_subset(pairs):
    pa, pb, aa, ab = pairs
    coarse = al.align_pairs(pa, pb, aa, ab, coarse=True)
    fine = al.align_pairs(pa, pb, aa, ab, hints=coarse.transform)
    for i in range(len(pa)):
        subset = [al.transform_set()[j] for j in al._subset(al._subset_key(coarse.transform[i]))]
        ncc, t, d, second = _reference_search(pa[i], pb[i], aa[i], ab[i], subset)
        assert abs(fine.ncc[i] - ncc) < 1e-4
        if ncc - second > 1e-3:
            assert (fine.transform[i], fine.direction[i]) == (t, d)


def test_rows_and_batches_do_not_change_scores(pairs):
    """Pairs by row of one prepared set, in any batching, score as copied pairs do."""
    pa, pb, aa, ab = pairs
    n = len(pa)
    thumbs = al.PreparedThumbs(np.concatenate([pb, pa]))
    ref = al.align_pairs(pa, pb, aa, ab, coarse=True)
    for batch in (2, 5, 128):
        got = al.align_rows(thumbs, np.arange(n, 2 * n), np.arange(n), aa, ab, coarse=True,
                            batch=batch)
        np.testing.assert_array_equal(got.ncc, ref.ncc)
        np.testing.assert_array_equal(got.index, ref.index)
        np.testing.assert_array_equal(got.direction, ref.direction)
    fine = al.align_rows(thumbs, np.arange(n, 2 * n), np.arange(n), aa, ab, hints=ref.index)
    same = al.align_pairs(pa, pb, aa, ab, hints=ref.transform)
    np.testing.assert_array_equal(fine.ncc, same.ncc)
    assert fine.transform == same.transform


def test_robust_scores_match_reference(pairs):
    pa, pb, aa, ab = pairs
    fine = al.align_pairs(pa, pb, aa, ab)
    # Every pair at its best transform, and every pair at a few other transforms and both
    # directions (groups of several aspects, directions and transforms at once).
    ts = al.transform_set()
    picks = [fine.transform] + [[ts[(7 * i + k) % len(ts)] for i in range(len(pa))] for k in (1, 2)]
    for transforms in picks:
        for directions in (fine.direction, 1 - fine.direction):
            got = al.robust_scores(pa, pb, aa, ab, transforms, directions)
            want = [_reference_robust(pa[i], pb[i], aa[i], ab[i], t, d)
                    for i, (t, d) in enumerate(zip(transforms, directions))]
            np.testing.assert_allclose(got, want, atol=1e-4)
    thumbs = al.PreparedThumbs(np.concatenate([pa, pb]))
    rows = al.robust_rows(thumbs, np.arange(len(pa)), np.arange(len(pa), 2 * len(pa)), aa, ab,
                          fine.index, fine.direction)
    np.testing.assert_array_equal(rows, al.robust_scores(pa, pb, aa, ab, fine.transform,
                                                         fine.direction))


def test_descriptors_are_unit_identity_samples_in_both_orientations(pairs):
    pa = pairs[0]
    thumbs = np.random.default_rng(2).integers(0, 256, (9, S, S), dtype=np.uint8)
    desc, flip = al.thumb_descriptors(thumbs, batch=4)
    mirrored = al.descriptors(al.prepare_thumbs(thumbs[:, :, ::-1]))
    for i, image in enumerate(al.prepare_thumbs(thumbs)):
        np.testing.assert_allclose(desc[i], _unit(_samples(image.reshape(S, S), IDENTITY, 3)),
                                   atol=2e-3)  # float16
        np.testing.assert_allclose(flip[i], mirrored[i], atol=2e-3)
    mirror = pa.reshape(-1, S, S)[:, :, ::-1].reshape(len(pa), -1)
    np.testing.assert_allclose(al.descriptors(pa, flip=True), al.descriptors(mirror), atol=1e-6)
    empty = al.thumb_descriptors(np.zeros((0, S, S), np.uint8))
    assert [e.shape for e in empty] == [(0, desc.shape[1])] * 2


def test_thumb_std_is_numpy_std_to_the_bit():
    rng = np.random.default_rng(3)
    thumbs = rng.integers(0, 256, (50, S, S), dtype=np.uint8)
    thumbs[0] = 7
    thumbs[1] = 255
    thumbs[2] = 100
    thumbs[2, ::2] = 106  # standard deviation exactly 3
    thumbs[3] = rng.integers(120, 124, (S, S))
    np.testing.assert_array_equal(al.thumb_std(thumbs, batch=16),
                                  thumbs.reshape(len(thumbs), -1).std(axis=1))
    assert al.thumb_std(thumbs[2:3])[0] == 3.0


def test_hint_subsets():
    """Near a coarse crop: every crop and the rotations up to REFINE_DEGREES, of that flip;
    near a coarse rotation: the rotations within REFINE_DEGREES, plus the identity unless
    flipped."""
    ts = al.transform_set()

    def described(key):
        return sorted((t.kind, t.flip, t.angle) for t in (ts[i] for i in al._subset(key)))

    crops = [t for t in ts if t.kind != "rotation" and t.flip]
    assert len(al._subset((True, None))) == len(crops) + 6
    assert all(flip for _, flip, _ in described((True, None)))
    assert described((True, 8.0)) == [("rotation", True, float(a)) for a in range(2, 15, 2)]
    assert described((False, -24.0)) == (
        [("identity", False, 0.0)] + [("rotation", False, float(a)) for a in range(-30, -17, 2)])
    assert len(al._subset(None)) == len(ts)


@pytest.fixture(scope="module")
def faint_pairs():
    """Faint thumbnails (a smooth texture of 2-6 grey levels on a bright ground), each paired
    with a brightened copy (true NCC 1), its mirror image and another faint thumbnail."""
    rng = np.random.default_rng(4)
    n = 6
    texture = np.stack([gaussian_filter(rng.standard_normal((S, S)), 3.0) for _ in range(n + 1)])
    texture /= texture.std(axis=(1, 2), keepdims=True)
    ground = rng.uniform(170, 230, (n + 1, 1, 1))
    faint = np.round(ground + rng.uniform(2, 6, (n + 1, 1, 1)) * texture).astype(np.uint8)
    a = np.concatenate([faint[:n]] * 3)
    b = np.concatenate([faint[:n] + np.uint8(3), faint[:n, :, ::-1], faint[1:]])
    return a, b, np.full(len(a), 3)


def test_low_contrast_pairs_score_as_in_float64(faint_pairs):
    """Every NCC of faint, bright thumbnails (coarse, full, robust, descriptors) equals a float64
    run of the whole pipeline, band-pass included, and none exceeds 1; uncentred, the same
    float32 search fails on these pairs."""
    ta, tb, aspect = faint_pairs
    pa, pb = al.prepare_thumbs(ta), al.prepare_thumbs(tb)
    ra, rb = _reference_prepare(ta), _reference_prepare(tb)
    for coarse in (True, False):
        got = al.align_pairs(pa, pb, aspect, aspect, coarse=coarse)
        want = [_reference_search(ra[i], rb[i], aspect[i], aspect[i], al.transform_set(coarse))[0]
                for i in range(len(ta))]
        np.testing.assert_allclose(got.ncc, want, rtol=0, atol=1e-5)
        assert got.ncc.max() <= 1 + 1e-5
    robust = al.robust_scores(pa, pb, aspect, aspect, got.transform, got.direction)
    want = [_reference_robust(ra[i], rb[i], aspect[i], aspect[i], t, d)
            for i, (t, d) in enumerate(zip(got.transform, got.direction))]
    np.testing.assert_allclose(robust, want, rtol=0, atol=1e-5)
    want = [_unit(_samples(image.reshape(S, S), IDENTITY, 3)) for image in ra]
    np.testing.assert_allclose(al.descriptors(pa), want, rtol=0, atol=1e-5)
    # The pairs are hard: with the grey level that the band-pass used to leave in (its gain
    # at zero frequency times the mean pixel), the one-pass variance cancels (here NCCs move
    # by up to 1e-3, brightened copies score above 1).
    level = (1 - al.BACKGROUND_WEIGHT) * ta.mean(axis=(1, 2))[:, None]
    uncentred = al.align_pairs(pa + level, pb + level, aspect, aspect)
    assert np.abs(uncentred.ncc - got.ncc).max() > 1e-4


def test_prepare_thumbs_is_the_band_pass_centred_on_the_grid():
    """prepare_thumbs = the float64 band-pass minus one level per image, the level that makes
    the identity samples' mean zero; a blank thumbnail prepares to exact zeros."""
    rng = np.random.default_rng(6)
    thumbs = np.concatenate([
        rng.integers(0, 256, (5, S, S)),
        np.round(200 + 3 * rng.standard_normal((3, S, S))),
        np.full((2, S, S), 17),
        np.full((1, S, S), 255),
    ]).astype(np.uint8)
    got = al.prepare_thumbs(thumbs, batch=4)
    want = _reference_prepare(thumbs)
    level = (want - got).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(got, want - level, rtol=0, atol=1e-4)
    for image in got:
        samples = _samples(image.reshape(S, S), IDENTITY, 3)
        assert abs(samples.mean()) < 1e-3
    assert not got[-3:].any()
