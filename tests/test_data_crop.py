"""FFHQ-U crop (docs/ALGORITHM.md §6.1): geometry, shift distribution, retries / no padding, seeding, PIL and tf resampling."""
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from afgan_tf.data import ffhqu
from helpers_data import fake_landmarks, smooth_image


def test_landmark_params_hand_computed():
    # eyes (100,100)/(140,100): |eye_to_eye| = 40; mouth corners (110,150)/(130,150): eye_to_mouth = (0, 50)
    lm = fake_landmarks((100, 100), (140, 100), (110, 150), (130, 150))
    c0, q = ffhqu.landmark_crop_params(lm)
    assert q == pytest.approx(2 * max(2 * 40, 1.8 * 50))  # 180
    np.testing.assert_allclose(c0, [120, 105], atol=1e-9)  # eye_avg + 0.1 * eye_to_mouth
    # eye distance dominates when the mouth is close
    lm = fake_landmarks((100, 100), (160, 100), (120, 110), (140, 110))
    assert ffhqu.landmark_crop_params(lm)[1] == pytest.approx(2 * 2 * 60)
    # axis aligned: a tilted face does not rotate the crop, only the centre/size follow the landmarks
    c0t, qt = ffhqu.landmark_crop_params(fake_landmarks((100, 90), (140, 110), (105, 150), (125, 160)))
    assert qt == pytest.approx(2 * max(2 * np.hypot(40, 20), 1.8 * np.hypot(-5, 55)))
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        ffhqu.landmark_crop_params(np.zeros([5, 2]))


def test_shift_distribution_sigma_is_0p2_q():
    rng = np.random.RandomState(123)
    c0, q, n = np.array([5000.0, 5000.0]), 100.0, 4000
    shifts = np.array([(ffhqu.random_shift_crop(c0, q, 10000, 10000, rng)[0] - c0) / q for _ in range(n)])
    assert abs(shifts.mean(axis=0)).max() < 4 * 0.2 / np.sqrt(n)
    np.testing.assert_allclose(shifts.std(axis=0), 0.2, atol=4 * 0.2 / np.sqrt(2 * n))
    assert abs(np.corrcoef(shifts.T)[0, 1]) < 4 / np.sqrt(n)  # independent axes
    for axis in range(2):
        assert scipy.stats.kstest(shifts[:, axis] / 0.2, "norm").pvalue > 1e-3
    # share of crops that still contain the unshifted centre: (1 - 2 Phi(-2.5))^2 for sigma = 0.2 q
    inside = np.all(np.abs(shifts) < 0.5, axis=1).mean()
    p = (1 - 2 * scipy.stats.norm.cdf(-2.5)) ** 2
    assert abs(inside - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_retries_keep_crop_inside_image_and_consume_the_rng_stream():
    w, h = 300, 240
    c0, q = np.array([120.0, 100.0]), 150.0
    rng = np.random.RandomState(7)
    replay = np.random.RandomState(7)
    attempts_seen = []
    for _ in range(300):
        c, attempts = ffhqu.random_shift_crop(c0, q, w, h, rng)
        x0, y0, x1, y1 = ffhqu.square_bbox(c, q)
        assert x0 >= 0 and y0 >= 0 and x1 < w and y1 < h  # never needs padding
        assert (x0, y0, x1, y1) == (np.floor(c[0] - q / 2), np.floor(c[1] - q / 2),
                                    np.ceil(c[0] + q / 2), np.ceil(c[1] + q / 2))
        # independent replay of the spec's procedure: draw N(0,1)^2 until the integer box fits
        for k in range(1000):
            cr = c0 + q * 0.2 * replay.normal(0, 1, 2)
            b = np.floor(cr - q / 2), np.ceil(cr + q / 2)
            if b[0].min() >= 0 and b[1][0] < w and b[1][1] < h:
                break
        np.testing.assert_array_equal(c, cr)
        assert attempts == k + 1
        attempts_seen.append(attempts)
    assert max(attempts_seen) > 1  # the retries were exercised
    # same seed → same crops; another seed → different crops
    a = [ffhqu.random_shift_crop(c0, q, w, h, np.random.RandomState(5))[0] for _ in range(2)]
    b = ffhqu.random_shift_crop(c0, q, w, h, np.random.RandomState(6))[0]
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.allclose(a[0], b)


def test_face_inside_unshifted_crop_and_crop_errors():
    lm = fake_landmarks((100, 100), (140, 100), (110, 150), (130, 150))
    c0, q = ffhqu.landmark_crop_params(lm)
    x0, y0, x1, y1 = ffhqu.square_bbox(c0, q)
    key = lm[36:60]  # eyes, brows region and outer mouth
    assert key[:, 0].min() > x0 and key[:, 0].max() < x1 and key[:, 1].min() > y0 and key[:, 1].max() < y1
    with pytest.raises(ffhqu.CropError, match="no padding"):
        ffhqu.random_shift_crop(c0, q, 150, 150, np.random.RandomState(0))  # square larger than the image
    with pytest.raises(ffhqu.CropError):
        ffhqu.random_shift_crop(np.array([10.0, 10.0]), 50, 400, 400, np.random.RandomState(0), random_shift=0)


def _ramp(size=256):
    x = np.arange(size, dtype=np.float64)
    return np.stack([np.broadcast_to(x[None, :], (size, size)), np.broadcast_to(x[:, None], (size, size)),
                     np.full((size, size), 128.0)], -1).astype(np.uint8)  # R = x, G = y


@pytest.mark.parametrize("c,q,out", [((120.3, 110.6), 100.0, 32), ((128.0, 127.0), 200.0, 32),
                                     ((100.0, 140.0), 40.0, 64)])
def test_crop_geometry_on_a_ramp(c, q, out):
    """Pixel value = its x (R) / y (G) index, so output pixel j must hold its sample position
    c - q/2 + (j + 0.5)·q/out. The tf path is exact; PIL's uint8 bilinear warp truncates (a -0.5 bias on
    average, as in the original FFHQ script) but has the same slope and grid."""
    j = np.arange(out)
    shrink = int(np.floor(q / out * 0.5))
    if shrink < 2:
        ex = c[0] - q / 2 + (j + 0.5) * q / out
        ey = c[1] - q / 2 + (j + 0.5) * q / out
        tol = 0.1
    else:
        # the original divides the coordinates by `shrink`, while the Lanczos pre-shrink maps pixel centres
        # with the factor s = rint(256/shrink)/256: sample p' in the shrunk image holds (p' + 0.5)/s - 0.5
        s = np.rint(256 / shrink) / 256
        ex = ((c[0] - q / 2) / shrink + (j + 0.5) * q / shrink / out + 0.5) / s - 0.5
        ey = ((c[1] - q / 2) / shrink + (j + 0.5) * q / shrink / out + 0.5) / s - 0.5
        tol = 0.3
    inner = slice(2, -2)
    crop = ffhqu.crop_square_tf(tf.constant(_ramp()), tf.constant(c, tf.float32), q, out).numpy()
    np.testing.assert_allclose(crop[out // 2, inner, 0], ex[inner], atol=tol)
    np.testing.assert_allclose(crop[inner, out // 2, 1], ey[inner], atol=tol)
    crop = ffhqu.crop_square_pil(_ramp(), np.array(c), q, out).astype(np.float64)
    for got, want in ((crop[out // 2, inner, 0], ex[inner]), (crop[inner, out // 2, 1], ey[inner])):
        slope, icpt = np.polyfit(want, got, 1)
        assert abs(slope - 1) < 0.02
        err = got - want
        assert -0.8 < err.mean() < 0.1 and np.abs(err).max() < 1.6, err


def test_crop_square_tf_matches_pil():
    img = smooth_image(np.random.RandomState(0), 300, 400)
    for c, q, out in [((200.3, 150.7), 120.4, 32), ((200.0, 150.0), 250.0, 32), ((210.0, 140.0), 60.0, 64)]:
        a = ffhqu.crop_square_pil(img, np.array(c), q, out).astype(np.float64)
        b = ffhqu.crop_square_tf(tf.constant(img), tf.constant(c, tf.float32), q, out).numpy()
        assert b.shape == (out, out, 3)
        assert np.abs(a - b).mean() < 1.0 and np.abs(a - b).max() < 4.0, (c, q, np.abs(a - b).mean())
        # a half-pixel shift is clearly detected, so the match above pins the sample grid
        b2 = ffhqu.crop_square_tf(tf.constant(img), tf.constant(c, tf.float32) + [0.5, 0.0], q, out).numpy()
        assert np.abs(a - b2).mean() > 1.5 * np.abs(a - b).mean()


def test_ffhqu_crop_tf_map_function():
    img = smooth_image(np.random.RandomState(1), 320, 360)
    lm = fake_landmarks((160, 140), (200, 140), (170, 190), (190, 190))
    c0, q = ffhqu.landmark_crop_params(lm)

    def fn(i):
        out, (c, qq, ok) = ffhqu.ffhqu_crop_tf(tf.constant(img), tf.constant(lm, tf.float32), 32,
                                               tf.stack([tf.constant(11, tf.int64), i]), return_center=True)
        return out, c, qq, ok

    ds = tf.data.Dataset.range(400).map(fn, num_parallel_calls=2, deterministic=True)
    outs, cs, qs, oks = [], [], [], []
    for o, c, qq, ok in ds:
        outs.append(o.numpy()) if len(outs) < 3 else None
        cs.append(c.numpy())
        qs.append(float(qq))
        oks.append(bool(ok))
    cs = np.array(cs)
    assert all(oks) and np.allclose(qs, q, rtol=1e-5)
    for c in cs:
        x0, y0, x1, y1 = ffhqu.square_bbox(c, q)
        assert x0 >= 0 and y0 >= 0 and x1 < 360 and y1 < 320
    # retries truncate the distribution but the spread is of the order 0.2 q
    assert 0.08 < ((cs - c0) / q).std() < 0.2
    # same seed → same crop (rerun), and the crop is the FFHQ resampling at the drawn centre
    again = [o.numpy() for o, *_ in ds.take(3)]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a, b)
    ref = ffhqu.crop_square_pil(img, cs[0].astype(np.float64), q, 32).astype(np.float64)
    assert np.abs(outs[0] - ref).mean() < 1.0
    with pytest.raises(ValueError, match="landmarks"):
        ffhqu.ffhqu_crop_tf(img, np.zeros([5, 2], np.float32), 32, [1, 2])
