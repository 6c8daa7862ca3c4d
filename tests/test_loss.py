"""Loss phases (R1 with blur + augmentation, lazy regularisation, style mixing, path length) and D-input blur."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import convolve1d

from afgan_tf.training.augment import AugmentPipe, apply_color, apply_geometric
from afgan_tf.training.blur import DInputBlur, blur_images, blur_kernel, blur_sigma, blur_size, kernel_std
from afgan_tf.training.loss import (StyleGAN2Loss, lazy_adam_params, phase_schedule, r1_penalty,
                                    sanitize_gradients)

DT = tf.float64


class TinyD(tf.Module):
    """A small non-linear D stand-in: conv 3x3 -> softplus -> mean-pool -> dense -> logit. float64."""

    def __init__(self, channels=1, seed=0, dtype=DT):
        super().__init__()
        rs = np.random.RandomState(seed)
        self.k = tf.Variable(rs.normal(size=(3, 3, channels, 4)) * 0.5, dtype=dtype)
        self.b = tf.Variable(rs.normal(size=(4,)) * 0.1, dtype=dtype)
        self.w = tf.Variable(rs.normal(size=(4, 1)), dtype=dtype)

    def __call__(self, img, c=None):
        h = tf.nn.softplus(tf.nn.conv2d(tf.cast(img, self.k.dtype), self.k, 1, "SAME") + self.b)
        h = tf.reduce_mean(tf.square(h), axis=[1, 2])                  # [N, 4]
        return h @ self.w                                              # [N, 1]


class TinyG(tf.Module):
    """G stand-in with the DESIGN.md interface: mapping -> ws [N, num_ws, w_dim], synthesis -> NHWC image."""

    def __init__(self, z_dim=4, num_ws=5, res=8, channels=1, seed=1, dtype=DT):
        super().__init__()
        rs = np.random.RandomState(seed)
        self.z_dim, self.w_dim, self.num_ws, self.res, self.ch = z_dim, z_dim, num_ws, res, channels
        self.mw = tf.Variable(rs.normal(size=(z_dim, z_dim)) / 2, dtype=dtype)
        self.A = tf.Variable(rs.normal(size=(num_ws * z_dim, res * res * channels)) * 0.1, dtype=dtype)
        self.emas_calls = []

    def mapping(self, z, c=None, update_emas=False):
        self.emas_calls.append(("mapping", update_emas))
        w = tf.tanh(tf.cast(z, self.mw.dtype) @ self.mw)               # [N, w_dim]
        layer = tf.cast(tf.range(self.num_ws), w.dtype)[None, :, None]
        return w[:, None, :] * (1 + 0.1 * layer)                       # [N, num_ws, w_dim]

    def synthesis(self, ws, update_emas=False):
        self.emas_calls.append(("synthesis", update_emas))
        n = tf.shape(ws)[0]
        img = tf.reshape(ws, [n, -1]) @ self.A
        return tf.reshape(img, [n, self.res, self.res, self.ch])

    @property
    def trainable_variables(self):
        return [self.mw, self.A]


def _real(n=2, res=8, ch=1, seed=3):
    return tf.constant(np.random.RandomState(seed).uniform(-1, 1, (n, res, res, ch)), DT)


# ---------------------------------------------------------------------------------------------------------------
# Helpers

def test_lazy_adam_params_spec_values():
    lr, (b1, b2) = lazy_adam_params(0.002, (0.0, 0.99), 16)
    assert abs(lr - 0.0018824) < 5e-8 and abs(lr - 0.002 * 16 / 17) < 1e-15
    assert b1 == 0.0 and abs(b2 - 0.9905855) < 5e-8
    assert lazy_adam_params(0.0025, (0.0, 0.99), None) == (0.0025, (0.0, 0.99))
    lr4, (_, b2_4) = lazy_adam_params(0.002, (0.0, 0.99), 4)      # stylegan2 G reg interval
    assert abs(lr4 - 0.0016) < 1e-12 and abs(b2_4 - 0.99 ** 0.8) < 1e-12


def test_phase_schedule():
    runs = [i for i in range(50) if phase_schedule(i, 16)]
    assert runs == [0, 16, 32, 48]
    assert [bool(phase_schedule(tf.constant(i, tf.int64), 16)) for i in (0, 1, 15, 16, 17)] == \
        [True, False, False, True, False]
    assert not phase_schedule(0, None)


def test_sanitize_gradients():
    g = tf.constant([1.5, np.nan, np.inf, -np.inf, -2e6, 3e5], tf.float32)
    out = sanitize_gradients([g, None])
    assert out[1] is None
    np.testing.assert_array_equal(out[0].numpy(), np.array([1.5, 0, 1e5, -1e5, -2e6, 3e5], np.float32))


# ---------------------------------------------------------------------------------------------------------------
# R1

def _fd_input_grad(f, x, eps=1e-5):
    x = x.numpy()
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(tf.constant(xp)) - f(tf.constant(xm))) / (2 * eps)
    return g


def test_r1_value_and_gradient_vs_finite_differences_through_blur_and_augment():
    D = TinyD(channels=1)
    pipe = AugmentPipe(p=0.7, seed=5)
    loss = StyleGAN2Loss(TinyG(), D, augment_pipe=pipe, r1_gamma=3.0, blur_init_sigma=1.0, blur_fade_kimg=1.0,
                         seed=0)
    real = _real(2, 8, 1)
    cur_nimg = 200                                                    # sigma = 0.8 -> 5-tap blur active
    assert blur_size(loss.blur.sigma(cur_nimg)) == 2

    pipe.rng.reset_from_seed(123)                                    # the draws dreg_grads will make
    G_inv, C = pipe.sample_params(2, 8, 8, 1)

    @tf.function
    def chain_sum_tf(x):                                              # sum_n D(aug(blur(x_n))), fixed draws
        y = blur_images(x, loss.blur.sigma(cur_nimg))
        return tf.reduce_sum(D(apply_color(apply_geometric(y, G_inv), C)))

    chain_sum = lambda x: float(chain_sum_tf(x).numpy())
    pipe.rng.reset_from_seed(123)
    _, grads, stats = loss.dreg_grads(real, None, cur_nimg=cur_nimg, gain=16.0)
    g_fd = _fd_input_grad(chain_sum, real)                            # [N, H, W, C]
    pen_fd = np.sum(g_fd ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(stats["Loss/r1_penalty"].numpy(), pen_fd, rtol=1e-6)
    assert np.all(pen_fd > 0)

    # Value incl. lazy gain and gradient w.r.t. D's variables (finite differences along a random direction).
    def reg_loss():
        pipe.rng.reset_from_seed(123)
        return float(loss.dreg_loss(real, None, cur_nimg=cur_nimg, gain=16.0)[0].numpy())

    assert abs(reg_loss() - 16 * 1.5 * pen_fd.mean()) < 1e-6 * abs(reg_loss())
    rs = np.random.RandomState(9)
    dirs = [rs.normal(size=v.shape) for v in D.trainable_variables]
    analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, dirs))
    eps = 1e-5
    for v, d in zip(D.trainable_variables, dirs):
        v.assign_add(eps * d)
    lp = reg_loss()
    for v, d in zip(D.trainable_variables, dirs):
        v.assign_sub(2 * eps * d)
    lm = reg_loss()
    for v, d in zip(D.trainable_variables, dirs):
        v.assign_add(eps * d)
    assert abs((lp - lm) / (2 * eps) - analytic) < 1e-5 * max(1.0, abs(analytic))


def test_r1_penalty_inside_tf_function():
    D = TinyD(channels=1, dtype=tf.float32)
    x = tf.cast(_real(3, 8, 1), tf.float32)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            logits, pen = r1_penalty(lambda a, c: D(a, c), x)
            val = tf.reduce_mean(pen)
        return logits, pen, tape.gradient(val, D.trainable_variables)

    logits, pen, grads = step(x)
    assert logits.shape == (3, 1) and pen.shape == (3,)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


# ---------------------------------------------------------------------------------------------------------------
# Main phases

def test_gmain_and_dmain_values_and_gradients():
    G, D = TinyG(), TinyD(channels=1)
    loss = StyleGAN2Loss(G, D, augment_pipe=None, r1_gamma=1.0, seed=0)
    z = tf.constant(np.random.RandomState(0).normal(size=(3, 4)), DT)
    real = _real(3, 8, 1)
    sp = lambda a: np.logaddexp(0, a)

    fake_logits = D(G.synthesis(G.mapping(z))).numpy()
    real_logits = D(real).numpy()
    G.emas_calls.clear()
    lg, g_grads, _ = loss.gmain_grads(z, None)
    assert abs(float(lg) - sp(-fake_logits).mean()) < 1e-12
    assert G.emas_calls == [("mapping", False), ("synthesis", False)]
    G.emas_calls.clear()
    ld, d_grads, st = loss.dmain_grads(real, None, z, None)
    assert abs(float(ld) - (sp(fake_logits).mean() + sp(-real_logits).mean())) < 1e-12
    assert G.emas_calls == [("mapping", True), ("synthesis", True)]   # fake forward updates EMAs in Dmain
    np.testing.assert_allclose(st["real_logits"].numpy(), real_logits)
    assert len(d_grads) == 3 and all(g is not None for g in d_grads)

    # Finite-difference checks (G phase: G variables; D phase: D variables).
    for variables, grads, fn in [(G.trainable_variables, g_grads, lambda: float(loss.gmain_loss(z, None)[0])),
                                 (D.trainable_variables, d_grads,
                                  lambda: float(loss.dmain_loss(real, None, z, None)[0]))]:
        rs = np.random.RandomState(1)
        dirs = [rs.normal(size=v.shape) for v in variables]
        an = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, dirs))
        eps = 1e-6
        for v, d in zip(variables, dirs):
            v.assign_add(eps * d)
        lp = fn()
        for v, d in zip(variables, dirs):
            v.assign_sub(2 * eps * d)
        lm = fn()
        for v, d in zip(variables, dirs):
            v.assign_add(eps * d)
        assert abs((lp - lm) / (2 * eps) - an) < 1e-6 * max(1.0, abs(an))


def test_g_gradient_flows_through_augmentation():
    G, D = TinyG(), TinyD(channels=1)
    pipe = AugmentPipe(p=1.0, seed=2)
    loss = StyleGAN2Loss(G, D, augment_pipe=pipe, seed=0)
    z = tf.constant(np.random.RandomState(0).normal(size=(2, 4)), DT)
    pipe.rng.reset_from_seed(7)
    _, grads, _ = loss.gmain_grads(z, None)
    rs = np.random.RandomState(2)
    dirs = [rs.normal(size=v.shape) for v in G.trainable_variables]
    an = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, dirs))

    def f():
        pipe.rng.reset_from_seed(7)
        return float(loss.gmain_loss(z, None)[0])

    eps = 1e-6
    for v, d in zip(G.trainable_variables, dirs):
        v.assign_add(eps * d)
    lp = f()
    for v, d in zip(G.trainable_variables, dirs):
        v.assign_sub(2 * eps * d)
    lm = f()
    for v, d in zip(G.trainable_variables, dirs):
        v.assign_add(eps * d)
    assert abs(an) > 0 and abs((lp - lm) / (2 * eps) - an) < 1e-5 * max(1.0, abs(an))


def test_phases_in_tf_function_with_tensor_cur_nimg():
    G, D = TinyG(dtype=tf.float32), TinyD(channels=1, dtype=tf.float32)
    pipe = AugmentPipe(p=0.5, seed=2)
    loss = StyleGAN2Loss(G, D, augment_pipe=pipe, r1_gamma=1.0, blur_init_sigma=2.0, blur_fade_kimg=1.0, seed=0)

    @tf.function
    def step(real, z, cur_nimg):                                       # (Dmain is checked eagerly above)
        a = loss.gmain_grads(z, None, cur_nimg)
        c = loss.dreg_grads(real, None, cur_nimg, gain=16.0)
        return a[0], c[0], a[1] + c[1]

    real = tf.cast(_real(2, 8, 1), tf.float32)
    z = tf.random.normal([2, 4])
    for n in (0, 500, 5000):                                           # blur on, half, off: one trace
        out = step(real, z, tf.constant(n, tf.int64))
        assert all(np.all(np.isfinite(t.numpy())) for t in out[:2])
        assert all(g is not None for g in out[2])
    assert step.experimental_get_tracing_count() == 1


# ---------------------------------------------------------------------------------------------------------------
# Style mixing and path length

def test_style_mixing():
    G, D = TinyG(num_ws=6), TinyD()
    z = tf.constant(np.random.RandomState(0).normal(size=(3, 4)), DT)
    ws0 = G.mapping(z).numpy()
    off = StyleGAN2Loss(G, D, style_mixing_prob=0.0, seed=0)
    _, ws = off.run_G(z, None)
    np.testing.assert_array_equal(ws.numpy(), ws0)
    on = StyleGAN2Loss(G, D, style_mixing_prob=1.0, seed=0)
    cutoffs = []
    for _ in range(40):
        _, ws = on.run_G(z, None)
        same = np.all(np.isclose(ws.numpy(), ws0), axis=(0, 2))      # [num_ws]
        k = int(np.argmin(same))
        assert k >= 1 and np.all(same[:k]) and not np.any(same[k:])  # one cutoff per call, for all samples
        cutoffs.append(k)
    assert set(cutoffs) == {1, 2, 3, 4, 5}                             # U{1..num_ws-1}
    half = StyleGAN2Loss(G, D, style_mixing_prob=0.5, seed=1)
    mixed = [not np.allclose(half.run_G(z, None)[1].numpy(), ws0) for _ in range(200)]
    assert 0.38 < np.mean(mixed) < 0.62


def test_path_length_regularisation():
    G, D = TinyG(num_ws=3, res=4), TinyD()
    loss = StyleGAN2Loss(G, D, pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01, seed=0)
    z = tf.constant(np.random.RandomState(0).normal(size=(4, 4)), DT)
    loss.rng.reset_from_seed(31)
    pl_loss, grads, st = loss.greg_grads(z, None, gain=4.0)
    # Independent computation: synthesis is linear (img = ws.flat @ A), so d<img, y>/d ws = A @ y.
    noise = tf.random.Generator.from_seed(31).normal([2, 4, 4, 1], dtype=DT).numpy() / 4.0   # / sqrt(H*W)
    A = G.A.numpy()
    g = (noise.reshape(2, -1) @ A.T).reshape(2, 3, 4)
    lengths = np.sqrt(np.mean(np.sum(g ** 2, axis=2), axis=1))
    pl_mean = 0.01 * lengths.mean()
    assert abs(float(loss.pl_mean.numpy()) - pl_mean) < 1e-6 * pl_mean     # state kept in float32
    np.testing.assert_allclose(st["Loss/pl_penalty"].numpy(), (lengths - pl_mean) ** 2, rtol=1e-10)
    assert abs(float(pl_loss) - 4.0 * 2.0 * np.mean((lengths - pl_mean) ** 2)) < 1e-10 * float(pl_loss)
    assert grads[1] is not None and np.abs(grads[1].numpy()).max() > 0  # gradient reaches synthesis weights
    off = StyleGAN2Loss(G, D, pl_weight=0.0)
    with pytest.raises(ValueError, match="pl_weight"):
        off.greg_loss(z, None)


def test_bad_arguments():
    with pytest.raises(ValueError, match="r1_gamma"):
        StyleGAN2Loss(TinyG(), TinyD(), r1_gamma=-1)
    with pytest.raises(ValueError, match="real_img"):
        StyleGAN2Loss(TinyG(), TinyD()).dmain_loss(tf.zeros([2, 8, 8], DT), None, tf.zeros([2, 4], DT), None)
    with pytest.raises(ValueError, match="fade_kimg"):
        DInputBlur(10.0, 0)


# ---------------------------------------------------------------------------------------------------------------
# D-input blur (docs/ALGORITHM.md §5.5)

def test_blur_kernel_sigma10():
    f = blur_kernel(10.0).numpy()
    assert f.size == 61
    assert abs(f.sum() - 1) < 1e-6
    j = np.arange(-30, 31)
    ref = 2.0 ** (-(j / 10.0) ** 2)
    np.testing.assert_allclose(f, ref / ref.sum(), rtol=1e-5)
    assert abs(kernel_std(f) - 8.474) < 5e-4


def test_blur_schedule():
    b = DInputBlur(init_sigma=10.0, fade_kimg=200.0)
    assert b.sigma(0) == 10.0 and abs(b.sigma(100_000) - 5.0) < 1e-12 and b.sigma(200_000) == 0.0
    assert b.sigma(10 ** 7) == 0.0
    assert abs(float(blur_sigma(tf.constant(150_000, tf.int64), 10.0, 200.0)) - 2.5) < 1e-6
    assert blur_size(b.sigma(0)) == 30
    assert blur_size(b.sigma(199_000)) == 0                            # sigma 0.05 -> off
    assert blur_sigma(5, 0.0, 200.0) == 0.0                            # config T / resume: off


def test_blur_images_vs_scipy_and_noop():
    rs = np.random.RandomState(0)
    x = rs.uniform(-1, 1, (2, 20, 17, 3)).astype(np.float32)
    for sigma in (0.5, 2.0, 4.0):
        f = 2.0 ** (-(np.arange(-blur_size(sigma), blur_size(sigma) + 1) / sigma) ** 2)
        f /= f.sum()
        ref = convolve1d(convolve1d(x.astype(np.float64), f, axis=1, mode="constant"), f, axis=2, mode="constant")
        np.testing.assert_allclose(blur_images(x, sigma).numpy(), ref, atol=2e-6)
        # Tensor sigma with a static maximum length gives the same numbers.
        got = blur_images(x, tf.constant(sigma), max_sigma=10.0).numpy()
        np.testing.assert_allclose(got, ref, atol=2e-6)
    np.testing.assert_array_equal(blur_images(x, 0.3).numpy(), x)     # floor(0.9) = 0: no-op
    np.testing.assert_array_equal(blur_images(x, tf.constant(0.3), max_sigma=10.0).numpy(), x)


def test_grads_default_variables_are_keras_variables():
    """gmain/dmain grads with the default variable lists (Keras 3 variables) work and are non-zero."""
    import keras
    G = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3 * 8 * 8), keras.layers.Reshape((8, 8, 3))])
    D = keras.Sequential([keras.layers.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])

    class _G:
        def __init__(self, net):
            self.net, self.trainable_variables = net, net.trainable_variables
            self.z_dim, self.c_dim, self.num_ws = 4, 0, 1

        def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
            return tf.convert_to_tensor(z)[:, None, :]

        def synthesis(self, ws, update_emas=False, **kw):
            return self.net(ws[:, 0])

    class _D:
        def __init__(self, net):
            self.net, self.trainable_variables = net, net.trainable_variables

        def __call__(self, img, c=None, **kw):
            return self.net(img)

    from afgan_tf.training.loss import StyleGAN2Loss
    loss = StyleGAN2Loss(_G(G), _D(D), r1_gamma=1.0)
    z = tf.random.normal([2, 4], seed=1)
    c = tf.zeros([2, 0])
    _, grads, _ = loss.gmain_grads(z, c)
    assert len(grads) == len(G.trainable_variables) and all(g is not None for g in grads)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
