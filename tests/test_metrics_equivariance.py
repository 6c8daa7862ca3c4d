"""Equivariance metrics: resampling helpers vs independent references, masks, toy generators, determinism."""
import math
import os

import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from afgan_tf.metrics import equivariance as eq
from afgan_tf.metrics.toy import ToyGenerator

RNG = np.random.RandomState(123)


def _imgs(n=2, h=16, w=16, c=3, seed=0):
    return np.random.RandomState(seed).randn(n, h, w, c).astype(np.float32)


# ------------------------------------------------------------------ integer translation

@pytest.mark.parametrize("tx,ty", [(3 / 16, -2 / 16), (-0.125, 0.0625), (0.0, 0.0), (1 / 16, 1 / 16)])
def test_integer_translation_reproduces_shift_exactly(tx, ty):
    x = _imgs()
    ref, mask = eq.apply_integer_translation(x, tx, ty)
    ref, mask = ref.numpy(), mask.numpy()
    ix, iy = int(round(tx * 16)), int(round(ty * 16))
    rolled = np.roll(x, (iy, ix), axis=(1, 2))
    # Valid region: pixels that received a shifted value (no wrap-around).
    expect_mask = np.zeros_like(x)
    expect_mask[:, max(iy, 0):16 + min(iy, 0), max(ix, 0):16 + min(ix, 0)] = 1
    np.testing.assert_array_equal(mask, expect_mask)
    np.testing.assert_array_equal(ref * mask, rolled * expect_mask)   # bit exact inside
    assert np.all(ref[mask == 0] == 0)


def test_integer_translation_of_shifted_content_scores_infinite_psnr():
    # An image and a copy whose content moved by (2, -3) pixels: reference == shifted copy on the mask.
    big = _imgs(1, 24, 24, 3, seed=1)
    orig = big[:, 4:20, 4:20]
    moved = big[:, 4 + 3:20 + 3, 4 - 2:20 - 2]      # content moved right by 2, up by 3
    ref, mask = eq.apply_integer_translation(orig, 2 / 16, -3 / 16)
    d = ((ref.numpy() - moved) ** 2 * mask.numpy()).sum()
    assert d == 0.0
    # The pixels brought in from outside differ and are excluded by the mask.
    assert ((ref.numpy() - moved) ** 2 * (1 - mask.numpy())).sum() > 0


# ------------------------------------------------------------------ fractional translation

def _lanczos_ref_1d(x, tau, a=3):
    """Direct evaluation of ref[p] = Σ_m L(m−φ)/ΣL · x[p − i − m] (float64), valid mask per axis."""
    n = x.shape[0]
    i = math.floor(tau)
    phi = tau - i
    ms = np.arange(-(a - 1), a + 1)
    w = np.array([np.sinc(m - phi) * np.sinc((m - phi) / a) for m in ms])
    w /= w.sum()
    out = np.zeros_like(x, dtype=np.float64)
    valid = np.zeros(n, bool)
    for p in range(n):
        idx = p - i - ms
        ok = (idx >= 0) & (idx < n)
        out[p] = sum(wm * x[j] for wm, j, o in zip(w, idx, ok) if o)
        valid[p] = ok.all()
    return out, valid


@pytest.mark.parametrize("tx,ty", [(0.0371, -0.0912), (-0.11, 0.02), (0.125, -0.125), (0.0, 0.0)])
def test_fractional_translation_matches_direct_formula(tx, ty):
    x = _imgs(1, 16, 16, 2, seed=2)
    ref, mask = eq.apply_fractional_translation(x, tx, ty)
    ref, mask = ref.numpy()[0], mask.numpy()[0]
    taux = float(np.float32(tx) * np.float32(16))
    tauy = float(np.float32(ty) * np.float32(16))
    exp = np.zeros((16, 16, 2))
    vx = vy = None
    for ch in range(2):
        tmp = np.zeros((16, 16))
        for r in range(16):
            tmp[r], vx = _lanczos_ref_1d(x[0, r, :, ch].astype(np.float64), taux)
        for col in range(16):
            exp[:, col, ch], vy = _lanczos_ref_1d(tmp[:, col], tauy)
    exp_mask = (vy[:, None] & vx[None, :]).astype(np.float32)
    np.testing.assert_array_equal(mask[..., 0], exp_mask)
    np.testing.assert_allclose(ref * mask, exp * mask[..., :1], atol=2e-6)


def test_fractional_translation_integer_shift_equals_integer_translation():
    x = _imgs(2, 16, 16, 3, seed=3)
    a, ma = eq.apply_fractional_translation(x, 3 / 16, -2 / 16)
    b, mb = eq.apply_integer_translation(x, 3 / 16, -2 / 16)
    m = (ma * mb).numpy()
    assert m.sum() > 0
    np.testing.assert_allclose(a.numpy() * m, b.numpy() * m, atol=1e-6)


# ------------------------------------------------------------------ rotation filters and resampling

def test_bandlimit_filter_sizes_and_polyphase_normalisation():
    for ang in (0.3, -2.1):
        f = eq.construct_affine_bandlimit_filter(eq.rotation_matrix(ang), a=3, amax=6, up=4)
        assert f.shape == (47, 47)
        fp = np.pad(f, [[0, 1], [0, 1]]) * 16
        sums = fp.reshape(12, 4, 12, 4).sum(axis=(0, 2))
        np.testing.assert_allclose(sums, np.ones((4, 4)), atol=1e-12)
        np.testing.assert_allclose(f, f[::-1, ::-1], atol=1e-9)   # point symmetric (even sinc/window)
        g = eq.construct_affine_bandlimit_filter(eq.rotation_matrix(-ang), a=3, amax=6, up=1)
        assert g.shape == (11, 11)
        assert abs(g.sum() - 1) < 1e-12
    # Rotating by 90 degrees maps the square spectrum onto itself: the filter is the plain windowed sinc
    # product, i.e. separable and symmetric under transposition.
    f = eq.construct_affine_bandlimit_filter(eq.rotation_matrix(np.pi / 2), a=3, amax=6, up=1)
    np.testing.assert_allclose(f, f.T, atol=1e-9)
    u, s, _ = np.linalg.svd(f)
    assert s[1] / s[0] < 1e-6


def _upfirdn_slow(x, f, up, p0, p1, gain):
    """Zero-stuff, pad, true 2-D convolution ('valid'), gain — straight from docs/ALGORITHM.md §1.2 (one channel)."""
    H, W = x.shape
    u = np.zeros((H * up, W * up))
    u[::up, ::up] = x
    u = np.pad(u, [[p0, p1], [p0, p1]])
    return scipy.signal.convolve2d(u, f, mode="valid") * gain


@pytest.mark.parametrize("F,up,pad", [(47, 4, 23), (9, 2, 4), (8, 4, 3), (7, 3, 0)])
def test_polyphase_upsample_matches_zero_stuffing(F, up, pad):
    rng = np.random.RandomState(F)
    f = rng.randn(F, F)
    x = rng.randn(2, 9, 11, 2).astype(np.float32)
    y = eq.upsample2d_polyphase(x, f, up=up, padding=pad).numpy()
    p0 = pad + (F + up - 1) // 2
    p1 = pad + (F - up) // 2
    for n in range(2):
        for c in range(2):
            # different H/W: apply the spec formula per axis with the same paddings
            u = np.zeros((9 * up, 11 * up))
            u[::up, ::up] = x[n, :, :, c]
            u = np.pad(u, [[p0, p1], [p0, p1]])
            exp = scipy.signal.convolve2d(u, f, mode="valid") * up * up
            np.testing.assert_allclose(y[n, :, :, c], exp, rtol=1e-4, atol=1e-4 * np.abs(exp).max())
    assert y.shape == (2, 9 * up + 2 * pad, 11 * up + 2 * pad, 2)


def test_filter2d_same_matches_scipy():
    rng = np.random.RandomState(5)
    f = rng.randn(11, 11)
    x = rng.randn(1, 20, 20, 2).astype(np.float32)
    y = eq.filter2d_same(x, f).numpy()
    for c in range(2):
        exp = scipy.signal.convolve2d(x[0, :, :, c], f, mode="same")
        np.testing.assert_allclose(y[0, :, :, c], exp, atol=1e-4)


def test_affine_sampling_matches_torch_grid_sample():
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(7)
    x = rng.randn(2, 12, 12, 3).astype(np.float32)
    ang = 0.7
    z, m = eq.apply_fractional_rotation(x, ang)
    # Independent pipeline with torch's affine_grid / grid_sample on our upsampled image (checks the grid
    # construction, bilinear + zeros padding and the nearest-sampled mask).
    mat = eq.rotation_matrix(ang)
    f = eq.construct_affine_bandlimit_filter(mat, a=3, amax=6, up=4)
    p = f.shape[0] // 2
    y = eq.upsample2d_polyphase(x, f, up=4, padding=p).numpy()
    th = torch.linalg.inv(torch.tensor(mat, dtype=torch.float32))
    th[:2, 2] *= 2
    th[0, 2] += 1 / 4 / 12
    th[1, 2] += 1 / 4 / 12
    th[0, :] *= 12 / (12 + p / 4 * 2)
    th[1, :] *= 12 / (12 + p / 4 * 2)
    g = torch.nn.functional.affine_grid(th[:2, :].unsqueeze(0).repeat(2, 1, 1), [2, 3, 12, 12], align_corners=False)
    yt = torch.tensor(y).permute(0, 3, 1, 2)
    zt = torch.nn.functional.grid_sample(yt, g, mode="bilinear", padding_mode="zeros", align_corners=False)
    mt = torch.zeros_like(yt)
    c = 2 * p + 1
    mt[:, :, c:-c, c:-c] = 1
    mt = torch.nn.functional.grid_sample(mt, g, mode="nearest", padding_mode="zeros", align_corners=False)
    np.testing.assert_allclose(z.numpy(), zt.permute(0, 2, 3, 1).numpy(), atol=2e-5)
    np.testing.assert_array_equal(m.numpy(), mt.permute(0, 2, 3, 1).numpy())


def test_rotation_of_bandlimited_pattern_is_accurate_and_mask_excludes_outside():
    # A smooth cosine pattern defined analytically: rotating it must reproduce the analytically rotated
    # pattern inside the mask; the mask must be empty near the corners (pixels brought in from outside).
    R = 32
    pix = (np.arange(R) + 0.5 - R / 2) / R
    py, px = np.meshgrid(pix, pix, indexing="ij")
    fx, fy = 3.0, 2.0
    img = lambda X, Y: np.cos(2 * np.pi * (fx * X + fy * Y) + 0.3)
    ang = 0.4
    x = img(px, py)[None, :, :, None].astype(np.float32)
    ref, mask = eq.apply_fractional_rotation(x, ang)
    ca, sa = math.cos(ang), math.sin(ang)
    # content rotated by +ang: value at p comes from A·p, A = [[c, −s], [s, c]]
    exp = img(ca * px - sa * py, sa * px + ca * py)
    m = mask.numpy()[0, :, :, 0]
    assert 0 < m.sum() < R * R
    assert m[0, 0] == 0 and m[-1, -1] == 0 and m[R // 2, R // 2] == 1
    err = np.abs(ref.numpy()[0, :, :, 0] - exp)[m > 0]
    assert err.max() < 0.02, err.max()


# ------------------------------------------------------------------ metric on toy generators

Z = np.random.RandomState(0).randn(8, 8).astype(np.float32)


@pytest.fixture(scope="module")
def toys():
    return ToyGenerator(32, glue=0.0, seed=1), ToyGenerator(32, glue=0.3, seed=1)


def test_equivariant_toy_scores_high_glued_scores_low(toys):
    good, glued = toys
    for kind, lo in (("int", 80.0), ("frac", 38.0), ("rot", 40.0)):
        pg = eq.eq_psnr(good, Z, kind)
        pb = eq.eq_psnr(glued, Z, kind)
        assert pg.shape == (8,) and pb.shape == (8,)
        assert np.all(pg > lo), (kind, pg)
        assert np.all(pb < 25.0), (kind, pb)
    # explicit, off-grid translations for "int" are snapped to the pixel grid like the original's drawn t
    t = RNG.uniform(-0.125, 0.125, (8, 2))
    assert np.all(eq.eq_psnr(good, Z, "int", translate=t) > 80.0)


def test_explicit_transforms_and_determinism(toys):
    _, glued = toys
    t = RNG.uniform(-0.125, 0.125, (8, 2))
    a1 = eq.eq_psnr(glued, Z, "frac", translate=t, batch_size=3)
    a2 = eq.eq_psnr(glued, Z, "frac", translate=t, batch_size=8)
    np.testing.assert_allclose(a1, a2, rtol=1e-6)          # batching does not change per-sample values
    # per-sample value == single-sample call
    s = eq.eq_psnr(glued, Z[2:3], "frac", translate=t[2:3])
    np.testing.assert_allclose(s[0], a1[2], rtol=1e-6)
    ang = RNG.uniform(-np.pi, np.pi, 8)
    r1 = eq.eq_psnr(glued, Z, "rot", angle=ang)
    r2 = eq.eq_psnr(glued, Z, "rot", angle=ang)
    np.testing.assert_array_equal(r1, r2)
    d1 = eq.eq_psnr(glued, Z, "int", seed=5)
    d2 = eq.eq_psnr(glued, Z, "int", seed=5)
    d3 = eq.eq_psnr(glued, Z, "int", seed=6)
    np.testing.assert_array_equal(d1, d2)
    assert not np.array_equal(d1, d3)


def test_sums_give_global_metric_and_transform_restored(toys):
    _, glued = toys
    T0 = np.array([[1, 0, 0.01], [0, 1, -0.02], [0, 0, 1]], np.float32)
    glued.synthesis.input.transform.assign(T0)
    p, s1, s2 = eq.eq_psnr(glued, Z, "rot", seed=1, return_sums=True)
    np.testing.assert_array_equal(glued.synthesis.input.transform.numpy(), T0)
    glued.synthesis.input.transform.assign(np.eye(3, dtype=np.float32))
    np.testing.assert_allclose(p, 20 * np.log10(2) - 10 * np.log10(s1 / s2))
    res = eq.eq_metric(glued, "eqr50k", num_samples=6, batch_size=3, seed=2)
    assert res["num_samples"] == 6
    assert abs(res["psnr"] - (20 * np.log10(2) - 10 * np.log10(res["s1"] / res["s2"]))) < 1e-9
    res2 = eq.eq_metric(glued, "rot", num_samples=6, batch_size=3, seed=2)
    assert res2["psnr"] == res["psnr"]


def test_bad_arguments_raise_clear_errors(toys):
    good, _ = toys
    with pytest.raises(ValueError, match="kind"):
        eq.eq_psnr(good, Z, "scale")
    with pytest.raises(ValueError, match="z must have shape"):
        eq.eq_psnr(good, Z[:, :3], "int")
    with pytest.raises(ValueError, match="translate must have shape"):
        eq.eq_psnr(good, Z, "int", translate=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="angle must have shape"):
        eq.eq_psnr(good, Z, "rot", angle=np.zeros((8, 1)))
    with pytest.raises(ValueError, match="NHWC"):
        eq.apply_integer_translation(np.zeros((4, 4)), 0, 0)


# ------------------------------------------------------------------ real generator (when available)

def _load_g_t64():
    try:
        from parity import load, meta
        from afgan_tf.networks import Generator  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the network helper's progress
        pytest.skip(f"generator not available yet: {e}")
    npz = load("g_t64.npz")
    from afgan_tf.networks import Generator
    G = Generator(**meta(npz, "meta/init_kwargs"))
    sd = {k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")}
    G.load_original_state_dict(sd)
    return G, npz


def test_g_t64_metrics_run_and_are_deterministic():
    G, npz = _load_g_t64()
    z = npz["in/z"][:1]
    for kind in ("int", "frac", "rot"):
        a = eq.eq_psnr(G, z, kind, seed=3, batch_size=1)
        b = eq.eq_psnr(G, z, kind, seed=3, batch_size=1)
        assert a.shape == (1,) and np.all(np.isfinite(a)) and np.all(a > 20)
        np.testing.assert_array_equal(a, b)
