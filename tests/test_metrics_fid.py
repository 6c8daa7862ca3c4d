"""FID / KID math vs independent numpy formulas, feature extractors (Keras + frozen GraphDef), stats caching."""
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from afgan_tf.metrics import fid
from afgan_tf.metrics.toy import ToyGenerator


def _feats(n, d, seed, shift=0.0):
    rng = np.random.RandomState(seed)
    A = rng.randn(d, d) / np.sqrt(d)
    return rng.randn(n, d) @ A + shift


def _fid_eig(x, y):
    """Independent FID: tr(sqrt(Σ1Σ2)) from the symmetric form sqrt(Σ1)·Σ2·sqrt(Σ1) (eigh only)."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    e = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(e, 0, None)).sum()


def test_stats_streaming_mean_cov_match_numpy():
    x = _feats(777, 16, 0, shift=3.0)
    s = fid.FeatureStats(capture_all=True)
    for i in range(0, 777, 100):
        s.append(x[i:i + 100], chunk=37)
    mu, cov = s.get_mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False, bias=True), atol=1e-10)
    np.testing.assert_allclose(s.get_all(), x.astype(np.float32))
    capped = fid.FeatureStats(max_items=50)
    capped.append(x[:40])
    capped.append(x[40:100])
    assert capped.num_items == 50 and capped.is_full()
    np.testing.assert_allclose(capped.get_mean_cov()[0], x[:50].mean(0), rtol=1e-12)


def test_fid_self_is_zero_and_matches_independent_formula():
    x = _feats(2000, 32, 1)
    y = _feats(1500, 32, 2, shift=0.3)
    sx, sy = fid.FeatureStats(), fid.FeatureStats()
    sx.append(x)
    sy.append(y)
    assert abs(fid.fid_from_stats(sx, sx)) < 1e-6
    got = fid.fid_from_stats(sx, sy)
    exp = _fid_eig(y, x)
    assert got > 1.0
    np.testing.assert_allclose(got, exp, rtol=1e-7)


def _fid_diag(a, b, eps=0.0):
    """Independent FID of two zero-mean Gaussians with diagonal covariances a, b, when sqrt(Σ1Σ2) is computed from
    Σ + eps·I (the fallback adds eps to the covariances inside the square root only)."""
    return float(np.sum(a + b) - 2 * np.sum(np.sqrt((a + eps) * (b + eps))))


@pytest.mark.parametrize("bad", ["nan", "residual", "imag"])
def test_fid_inaccurate_sqrtm_warns_and_adds_eps(monkeypatch, bad):
    """The fallback branch, taken deterministically: sqrtm's first answer is made non-finite, inaccurate
    (residual ‖X² − A‖/‖A‖ = 2e-2 > 1e-3) or complex (imaginary part 1e-2 > 1e-3); the second call must get
    (Σ1 + eps·I)(Σ2 + eps·I). Whether the real sqrtm of a rank-deficient product passes the residual check depends
    on floating-point rounding (OpenBLAS picks kernels per CPU), so no test relies on it."""
    real_sqrtm = fid.scipy.linalg.sqrtm
    calls = []

    def fake_sqrtm(a):
        calls.append(np.array(a))
        x = real_sqrtm(a)
        if len(calls) > 1:
            return x
        if bad == "nan":
            return np.full_like(x, np.nan)
        if bad == "residual":
            return x * 1.01                                   # X² = 1.0201·A
        return x + 1e-2j                                      # finite, accurate real part, large imaginary part

    monkeypatch.setattr(fid.scipy.linalg, "sqrtm", fake_sqrtm)
    a, b = np.array([1.0, 2.0, 0.5]), np.array([0.3, 1.5, 4.0])
    eps = 1e-2
    with pytest.warns(UserWarning, match="near-singular"):
        v = fid.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b), eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.diag((a + eps) * (b + eps)), rtol=1e-15)
    np.testing.assert_allclose(v, _fid_diag(a, b, eps), rtol=1e-12)


def test_fid_accurate_sqrtm_takes_no_fallback():
    """Well-conditioned covariances: no warning, no eps (the value is the exact diagonal formula)."""
    a, b = np.array([1.0, 2.0, 0.5]), np.array([0.3, 1.5, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = fid.frechet_distance(np.ones(3), np.diag(a), np.zeros(3), np.diag(b))
    np.testing.assert_allclose(v, 3.0 + _fid_diag(a, b), rtol=1e-12)


def test_fid_rank_deficient_covariances_stay_finite_and_shapes_are_checked():
    """Rank-2 covariances in 200 dims (which branch is taken depends on rounding: no assertion on the warning)."""
    rng = np.random.RandomState(0)
    x, y = rng.randn(3, 200), rng.randn(3, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = fid.frechet_distance(x.mean(0), np.cov(x, rowvar=False, bias=True),
                                 y.mean(0), np.cov(y, rowvar=False, bias=True))
    assert np.isfinite(v) and v > 0
    with pytest.raises(ValueError, match="shape mismatch"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _mmd2_unbiased(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m = x.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_matches_unbiased_mmd_and_is_near_zero_for_same_distribution():
    x = _feats(300, 24, 5)
    y = _feats(300, 24, 6, shift=0.5)
    # subset size = n: every subset is a permutation of the full set, so KID == the full unbiased MMD².
    got = fid.kernel_inception_distance(x, y, num_subsets=3, max_subset_size=1000, seed=0)
    np.testing.assert_allclose(got, _mmd2_unbiased(y, x), rtol=1e-9)
    rng = np.random.RandomState(8)
    same = fid.kernel_inception_distance(rng.randn(400, 24), rng.randn(400, 24), num_subsets=20,
                                         max_subset_size=100, seed=1)
    a = fid.kernel_inception_distance(x, y, num_subsets=20, max_subset_size=100, seed=3)
    assert abs(same) < 0.1 * a
    b = fid.kernel_inception_distance(x, y, num_subsets=20, max_subset_size=100, seed=3)
    assert a == b and a > 0


def test_quantize_matches_spec_rounding():
    img = np.array([-1.5, -1.0, 0.0, 0.004, 0.5, 1.0, 1.2], np.float32).reshape(1, 1, 7, 1)
    q = fid.quantize_images(img).ravel()
    np.testing.assert_array_equal(q, [0, 0, 128, 128, 191, 255, 255])
    assert fid.quantize_images(img).dtype == np.uint8


def _legacy_resize_np(x, oh, ow):
    N, H, W, C = x.shape
    out = np.zeros((N, oh, ow, C))
    for j in range(oh):
        sy = j * H / oh
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, H - 1); fy = sy - y0
        for i in range(ow):
            sx = i * W / ow
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, W - 1); fx = sx - x0
            out[:, j, i] = ((1 - fy) * ((1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1])
                            + fy * ((1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]))
    return out


def test_legacy_resize_alignment():
    x = np.random.RandomState(0).rand(2, 7, 5, 3).astype(np.float32) * 255
    got = fid.legacy_resize_bilinear(x, (13, 11)).numpy()
    np.testing.assert_allclose(got, _legacy_resize_np(x, 13, 11), atol=1e-3)


# ------------------------------------------------------------------ extractors

W_CONV = np.random.RandomState(9).randn(3, 3, 3, 8).astype(np.float32) * 0.3
RES_IN = 20


def _tiny_features_tf(x):
    """The feature net used by both extractors (after resize + normalisation)."""
    y = tf.nn.relu(tf.nn.conv2d(x, W_CONV, 1, "VALID"))
    return tf.reduce_mean(y, axis=[1, 2], keepdims=True)                     # [N, 1, 1, 8] like pool_3


def write_tiny_pb(path):
    """A frozen GraphDef shaped like classify_image_graph_def.pb: DecodeJpeg -> Cast -> ExpandDims ->
    ResizeBilinear (legacy) -> Sub -> Mul -> conv -> pool_3 (+ a batch-1 reshape that must not run)."""
    g = tf.Graph()
    with g.as_default():
        dec = tf.compat.v1.placeholder(tf.uint8, [None, None, 3], name="DecodeJpeg")
        x = tf.cast(dec, tf.float32, name="Cast")
        x = tf.expand_dims(x, 0, name="ExpandDims")
        x = tf.raw_ops.ResizeBilinear(images=x, size=[RES_IN, RES_IN], align_corners=False,
                                      half_pixel_centers=False, name="ResizeBilinear")
        x = tf.subtract(x, 128.0, name="Sub")
        x = tf.multiply(x, 1 / 128.0, name="Mul")
        y = tf.nn.relu(tf.nn.conv2d(x, tf.constant(W_CONV), 1, "VALID"))
        p = tf.reduce_mean(y, axis=[1, 2], keepdims=True, name="pool_3")
        tf.reshape(p, [1, 8], name="pool_3/_reshape")
    with open(path, "wb") as fh:
        fh.write(g.as_graph_def().SerializeToString())
    return str(path)


@pytest.fixture(scope="module")
def tiny_pb(tmp_path_factory):
    return write_tiny_pb(str(tmp_path_factory.mktemp("pb") / "classify_image_graph_def.pb"))


def test_graphdef_extractor_matches_keras_extractor(tiny_pb):
    imgs = np.random.RandomState(1).randint(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    pb = fid.InceptionGraphDef(tiny_pb, batch_size=3)
    kx = fid.KerasFeatureExtractor(_tiny_features_tf, name="tiny", resize=(RES_IN, RES_IN), batch_size=2)
    a, b = pb(imgs), kx(imgs)
    assert a.shape == (5, 8)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # grayscale images are repeated to 3 channels
    g = imgs[..., :1]
    np.testing.assert_allclose(pb(g), pb(np.repeat(g, 3, -1)), rtol=1e-6)


def test_graphdef_errors(tmp_path, tiny_pb):
    with pytest.raises(FileNotFoundError, match="classify_image_graph_def"):
        fid.InceptionGraphDef(str(tmp_path / "missing.pb"))
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x00not a graph" * 10)
    with pytest.raises(ValueError, match="bad.pb"):
        fid.InceptionGraphDef(str(bad))
    with pytest.raises(ValueError, match="no node 'pool_9'"):
        fid.InceptionGraphDef(tiny_pb, output_name="pool_9:0")


# ------------------------------------------------------------------ dataset statistics cache + generator

def write_dataset(folder, n=6, res=16, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, (res, res, 3)).astype(np.uint8)).save(os.path.join(folder, f"{i:03d}.png"))


def test_dataset_stats_cache_hit_and_miss(tmp_path):
    data = str(tmp_path / "data")
    write_dataset(data)
    cache = str(tmp_path / "cache")
    ex = fid.KerasFeatureExtractor(_tiny_features_tf, name="tiny", resize=(RES_IN, RES_IN))
    s1, st1 = fid.dataset_stats(data, ex, cache_dir=cache, return_cache_status=True)
    s2, st2 = fid.dataset_stats(data, ex, cache_dir=cache, return_cache_status=True)
    assert (st1, st2) == ("miss", "hit")
    np.testing.assert_allclose(s1.get_mean_cov()[1], s2.get_mean_cov()[1])
    assert s1.num_items == 6
    # another detector -> miss; changed content -> miss
    ex2 = fid.KerasFeatureExtractor(_tiny_features_tf, name="tiny2", resize=(RES_IN, RES_IN))
    assert fid.dataset_stats(data, ex2, cache_dir=cache, return_cache_status=True)[1] == "miss"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(os.path.join(data, "003.png"))
    s3, st3 = fid.dataset_stats(data, ex, cache_dir=cache, return_cache_status=True)
    assert st3 == "miss"
    assert not np.allclose(s3.get_mean_cov()[0], s1.get_mean_cov()[0])
    # directly computed features agree with the cached statistics
    imgs = np.concatenate(list(fid.iterate_dataset(data)))
    np.testing.assert_allclose(s3.get_mean_cov()[0], ex(imgs).mean(0), rtol=1e-10)


def test_generator_stats_quantises_and_fid_of_generator_with_itself(tmp_path):
    G = ToyGenerator(16, seed=0)
    ex = fid.KerasFeatureExtractor(_tiny_features_tf, name="tiny", resize=(RES_IN, RES_IN))
    a = fid.generator_stats(G, ex, num_gen=12, batch_size=5, seed=1, capture_all=True)
    z = np.random.RandomState(1).randn(5, G.z_dim).astype(np.float32)
    first = ex(fid.quantize_images(G(z).numpy()))
    np.testing.assert_allclose(a.get_all()[:5], first.astype(np.float32), rtol=1e-5)
    b = fid.generator_stats(G, ex, num_gen=12, batch_size=4, seed=1)
    assert abs(fid.fid_from_stats(a, b)) < 1e-6
