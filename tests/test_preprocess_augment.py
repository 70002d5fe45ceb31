"""runtime.preprocess and runtime.augment: numbers against direct numpy formulas."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.augment import (Augmenter, color_jitter, fit_pca, flip, pca_color, random_crop,
                             random_scale_crop)
from runtime.preprocess import Preprocessor


def _x(n=20, c=3, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, c, h, w)) * 255 * np.arange(1, c + 1)[None, :, None, None]
            ).astype(np.float32)


# ----------------------------------------------------------------------------- preprocess

def test_standardize_per_channel_fit_on_train_only():
    tr, te = _x(seed=0), _x(seed=1)
    p = Preprocessor([{"standardize": "per_channel"}]).fit(tr)
    out = p.apply(tr)
    assert out.dtype == np.float32 and out.shape == tr.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)
    m = tr.astype(np.float64).mean(axis=(0, 2, 3))[None, :, None, None]
    s = tr.astype(np.float64).std(axis=(0, 2, 3))[None, :, None, None]
    np.testing.assert_allclose(p.apply(te), (te - m) / s, rtol=1e-5, atol=1e-5)
    assert not np.allclose(p.apply(te).mean(axis=(0, 2, 3)), 0, atol=1e-3)  # test stats unused


def test_global_mean_subtract_rescale_pipeline():
    tr = _x()
    p = Preprocessor([{"rescale": {"scale": 1 / 255, "shift": -0.5}},
                      {"mean_subtract": "per_pixel"}, {"standardize": "global"}]).fit(tr)
    a = tr.astype(np.float64) / 255 - 0.5
    a = a - a.mean(axis=0)
    a = (a - a.mean()) / a.std()
    np.testing.assert_allclose(p.apply(tr), a, rtol=1e-4, atol=1e-5)
    st = p.state()
    assert set(st) == {"1.mean", "2.mean", "2.std"} and st["1.mean"].shape == (3, 6, 5)
    q = Preprocessor.from_state(p.cfg, st)
    np.testing.assert_array_equal(q.apply(tr), p.apply(tr))
    with pytest.raises(ValueError, match="missing"):
        Preprocessor.from_state(p.cfg, {"1.mean": st["1.mean"]})


def test_mean_subtract_per_channel_and_constant_pixels():
    tr = np.zeros((4, 1, 3, 3), np.float32)          # constant data: std clamps, no NaN
    out = Preprocessor([{"standardize": "per_channel"}]).fit_apply(tr)
    assert np.all(np.isfinite(out)) and np.all(out == 0)
    tr = _x()
    p = Preprocessor([{"mean_subtract": "per_channel"}]).fit(tr)
    np.testing.assert_allclose(p.apply(tr).mean(axis=(0, 2, 3)), 0, atol=1e-3)
    assert p.state()["0.mean"].shape == (3, 1, 1)


def test_preprocess_config_errors_and_no_mutation():
    with pytest.raises(ValueError, match="unknown step"):
        Preprocessor([{"whiten": {}}])
    with pytest.raises(ValueError, match="per_channel"):
        Preprocessor([{"standardize": "per_row"}])
    with pytest.raises(RuntimeError):
        Preprocessor([{"standardize": "global"}]).apply(_x())
    tr = _x()
    keep = tr.copy()
    Preprocessor([{"rescale": {"scale": 2.0}}]).apply(tr)
    np.testing.assert_array_equal(tr, keep)


# ----------------------------------------------------------------------------- augment

def test_random_crop_matches_padded_window():
    x = _x(n=8)
    rng = np.random.default_rng(5)
    out = random_crop(x, rng, pad=2)
    oy = np.random.default_rng(5).integers(0, 5, 8)
    ox = np.random.default_rng(5)
    ox.integers(0, 5, 8)
    ox = ox.integers(0, 5, 8)
    xp = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(8):
        np.testing.assert_array_equal(out[i], xp[i, :, oy[i]:oy[i] + 6, ox[i]:ox[i] + 5])


def test_flip_exact():
    x = _x(n=50)
    out = flip(x, np.random.default_rng(1))
    m = np.random.default_rng(1).random(50) < 0.5
    np.testing.assert_array_equal(out[m], x[m][..., ::-1])
    np.testing.assert_array_equal(out[~m], x[~m])
    assert 10 < m.sum() < 40


def test_random_scale_crop_identity_and_nearest():
    x = _x(n=4)
    # scale 1 and ratio 1: the whole image; bilinear with half-pixel centres is exact
    out = random_scale_crop(x, np.random.default_rng(0), (1.0, 1.0), (1.0, 1.0))
    np.testing.assert_allclose(out, x, rtol=1e-6, atol=1e-3)
    out = random_scale_crop(x, np.random.default_rng(0), (1.0, 1.0), (1.0, 1.0), "nearest")
    np.testing.assert_array_equal(out, x)
    # a smaller crop of a linear ramp is still a ramp with a smaller slope (bilinear is exact
    # for affine images inside the crop)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32), (3, 1, 8, 8)).copy()
    out = random_scale_crop(ramp, np.random.default_rng(2), (0.25, 0.25), (1.0, 1.0))
    d = np.diff(out[:, 0], axis=2)
    np.testing.assert_allclose(d, 0.5, atol=1e-5)
    assert out.shape == ramp.shape and out.dtype == np.float32


def test_color_jitter():
    x = _x(n=6)
    rng = np.random.default_rng(3)
    out = color_jitter(x, rng, brightness=0.3)
    b = np.random.default_rng(3).uniform(0.7, 1.3, 6)
    np.testing.assert_allclose(out, x * b.astype(np.float32)[:, None, None, None], rtol=1e-6)
    # contrast keeps the mean grey level of each image
    out = color_jitter(x, np.random.default_rng(4), contrast=0.5)
    g = lambda a: np.einsum("nchw,c->n", a, [0.299, 0.587, 0.114]) / 30
    np.testing.assert_allclose(g(out), g(x), rtol=1e-4)
    # saturation on 1-channel images is a no-op
    x1 = _x(n=6, c=1)
    np.testing.assert_array_equal(color_jitter(x1, np.random.default_rng(0), saturation=0.9), x1)
    # saturation factor 0 would give grey images: with s in [0.9,1.1] channels move toward grey
    out = color_jitter(x, np.random.default_rng(0), saturation=0.5, clip=(0, 255))
    assert out.min() >= 0 and out.max() <= 255


def test_pca_color_against_alexnet_formula():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 0.4]])
    pix = rng.normal(size=(3000, 3)) @ mix
    x = pix.reshape(30, 10, 10, 3).transpose(0, 3, 1, 2).astype(np.float32)
    vals, vecs = fit_pca(x)
    ref_vals = np.linalg.eigvalsh(np.cov(pix.T, bias=True))[::-1]
    np.testing.assert_allclose(vals, ref_vals, rtol=1e-4)
    out = pca_color(x[:5], np.random.default_rng(9), vals, vecs, std=0.1)
    alpha = np.random.default_rng(9).normal(0, 0.1, (5, 3))
    off = np.stack([vecs @ (a * vals) for a in alpha])
    np.testing.assert_allclose(out - x[:5], np.broadcast_to(off[:, :, None, None], out.shape),
                               atol=1e-5)


def test_augmenter_pipeline_deterministic_and_non_mutating():
    tr = _x(n=30)
    cfg = [{"random_crop": {"pad": 1}}, {"random_scale_crop": {"scale": [0.6, 1.0]}},
           {"flip": "horizontal"}, {"color_jitter": {"brightness": 0.2, "contrast": 0.2,
                                                     "saturation": 0.2}},
           {"pca_color": {"std": 0.1}}]
    aug = Augmenter(cfg, tr)
    keep = tr.copy()
    a = aug(tr[:10], np.random.default_rng(11))
    b = aug(tr[:10], np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tr, keep)
    assert a.shape == (10, 3, 6, 5) and a.dtype == np.float32
    assert a.min() >= tr.min() and a.max() <= tr.max()         # clipped to the train range
    assert not np.allclose(a, tr[:10])
    assert not Augmenter([], None) and np.array_equal(Augmenter([], None)(tr, None), tr)
    with pytest.raises(ValueError, match="unknown augmentation"):
        Augmenter([{"cutout": {}}], tr)
    with pytest.raises(ValueError, match="unknown key"):
        Augmenter([{"random_crop": {"padding": 4}}], tr)


@pytest.mark.parametrize("item", [{"random_crop": {"pad": 2}},
                                  {"random_scale_crop": {"scale": [0.5, 1.0]}},
                                  {"random_scale_crop": {"scale": [0.5, 1.0],
                                                         "interpolation": "nearest"}},
                                  {"flip": "horizontal"}, {"flip": {"direction": "vertical"}},
                                  {"color_jitter": {"contrast": 0.3, "clip": False}},
                                  {"pca_color": {"std": 0.2}}])
def test_each_op_returns_new_float32_array(item):
    tr = _x(n=16).astype(np.float64)                 # also checks the float32 conversion
    keep = tr.copy()
    out = Augmenter([item], tr)(tr, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == tr.shape
    assert not np.shares_memory(out, tr)
    np.testing.assert_array_equal(tr, keep)


def test_zca_whitening_decorrelates_and_keeps_the_shape():
    """zca_whiten: the whitened training data has covariance U diag(S/(S+eps)) Uᵀ (identity
    for eps -> 0 on full-rank data), samples keep their shape, the state round-trips, and
    samples too large for a D x D matrix are refused with the numbers."""
    import netspec
    from runtime.preprocess import Preprocessor
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((12, 12))
    x = (rng.standard_normal((3000, 12)) @ mix).reshape(3000, 3, 2, 2).astype(np.float32) + 5
    p = Preprocessor([{"zca_whiten": {"eps": 1e-6}}]).fit(x)
    z = p.apply(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(np.cov(z.reshape(3000, -1).T, bias=True), np.eye(12), atol=2e-3)
    flat = x.reshape(3000, -1).astype(np.float64)
    S, U = np.linalg.eigh(np.cov(flat.T, bias=True))
    z1 = Preprocessor([{"zca_whiten": {"eps": 1.0}}]).fit(x).apply(x).reshape(3000, -1)
    np.testing.assert_allclose(np.cov(z1.T, bias=True), (U * (S / (S + 1.0))) @ U.T, atol=2e-3)
    q = Preprocessor.from_state([{"zca_whiten": {"eps": 1e-6}}], p.state())
    np.testing.assert_array_equal(q.apply(x[:4]), z[:4])
    with pytest.raises(ValueError, match=r"4107 x 4107 whitening matrix .*limit is 4096"):
        Preprocessor([{"zca_whiten": {}}]).fit(np.zeros((5, 37, 111), np.float32)[:, None])
    spec = netspec.load("netspec: 1\nname: t\ninput: [4]\nlayers:\n  - linear: {out: 2}\n"
                        "train:\n  preprocess: [{zca_whiten: {eps: 0.01}}]\n")
    assert spec.train["preprocess"] == [{"zca_whiten": {"eps": 0.01}}]


def test_random_crop_to_a_smaller_size_and_the_centre_crop():
    """random_crop {size: [h, w]} picks (h, w) windows at uniform offsets (pad: 0 -> inside
    the image); center_crop takes torchvision's centre; eval_crop finds the size in a config."""
    from runtime.augment import center_crop, eval_crop
    rng = np.random.default_rng(0)
    x = np.arange(2 * 1 * 8 * 10, dtype=np.float32).reshape(2, 1, 8, 10)
    seen = set()
    for _ in range(200):
        c = random_crop(x, rng, 0, size=(5, 6))
        assert c.shape == (2, 1, 5, 6)
        for n in range(2):
            oy, ox = divmod(int(c[n, 0, 0, 0] - x[n, 0, 0, 0]), 10)
            np.testing.assert_array_equal(c[n], x[n, :, oy:oy + 5, ox:ox + 6])
            seen.add((oy, ox))
    assert seen == {(a, b) for a in range(4) for b in range(5)}
    np.testing.assert_array_equal(center_crop(x, (5, 6)), x[..., 2:7, 2:8])   # round(1.5)=2, round(2)=2
    assert center_crop(x, (8, 10)) is x
    with pytest.raises(ValueError, match="does not fit"):
        center_crop(x, (9, 9))
    assert eval_crop([{"flip": "horizontal"}, {"random_crop": {"pad": 0, "size": [5, 6]}}]) == (5, 6)
    assert eval_crop([{"random_crop": {"pad": 4}}]) is None
    a = Augmenter([{"random_crop": {"pad": 0, "size": [5, 6]}}], x)
    assert a(x, rng).shape == (2, 1, 5, 6) and a.eval_crop == (5, 6)
