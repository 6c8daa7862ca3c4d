"""filtered_lrelu: parity with the original, numpy composition, gradients, grid centring, XLA, dtypes, errors."""

import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

import parity
from afgan_tf.ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_lowmem
from test_ops_upfirdn2d import np_upfirdn2d

FILE = "ops_filtered_lrelu.npz"


pytestmark = pytest.mark.usefixtures("reference_ops_unless_custom")


def _cases():
    return parity.case_names(FILE)


def _run(z, c, x, b, impl="auto"):
    p = parity.meta(z, c + "/params")
    fu = z[c + "/fu"] if c + "/fu" in z else None
    fd = z[c + "/fd"] if c + "/fd" in z else None
    return filtered_lrelu(x, fu, fd, b, up=p["up"], down=p["down"], padding=p["padding"], gain=p["gain"],
                          slope=p["slope"], clamp=p["clamp"], flip_filter=p["flip_filter"], impl=impl)


@pytest.mark.parametrize("impl", ["ref", "custom"])
@pytest.mark.parametrize("case", _cases())
def test_parity(case, impl):
    parity.skip_unless_compiled(impl, "filtered_lrelu")
    z = parity.load(FILE)
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    b = tf.constant(z[case + "/b"]) if case + "/b" in z else None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if b is not None:
            tape.watch(b)
        y = _run(z, case, x, b, impl)
        loss = tf.reduce_sum(y * parity.nchw_to_nhwc(z[case + "/gy"]))
    y64 = parity.nchw_to_nhwc(z[case + "/y_f64"])
    scale = max(1.0, float(np.abs(y64).max()))
    parity.assert_close(y.numpy(), parity.nchw_to_nhwc(z[case + "/y"]), atol=4e-7 * scale,
                        name=f"filtered_lrelu/{case}/y")
    err_orig = float(np.abs(z[case + "/y"] - z[case + "/y_f64"]).max())
    parity.assert_close(y.numpy(), y64, atol=2 * err_orig + 1e-7 * scale, name=f"filtered_lrelu/{case}/y_vs_f64")
    dx_ref = parity.nchw_to_nhwc(z[case + "/dx"])
    parity.assert_close(tape.gradient(loss, x).numpy(), dx_ref, atol=4e-7 * max(1.0, float(np.abs(dx_ref).max())),
                        name=f"filtered_lrelu/{case}/dx")
    if b is not None:
        db_ref = z[case + "/db"]
        db = tape.gradient(loss, b).numpy()
        # db sums N*H*W float32 values: only the summation order differs; compare with the exact float64 sum too.
        tol = 4e-6 * max(1.0, float(np.abs(db_ref).max()))
        parity.assert_close(db, db_ref, atol=tol, name=f"filtered_lrelu/{case}/db")
        parity.assert_close(db, dx_ref.astype(np.float64).sum(axis=(0, 1, 2)), atol=tol,
                            name=f"filtered_lrelu/{case}/db_vs_sum_dx")


# ---------------------------------------------------------------------------------------------------------------
# Independent numpy composition (docs/ALGORITHM.md §1.4) on random configurations.

def np_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip):
    t = x + (0 if b is None else b)
    upx, upy = (up, up) if np.isscalar(up) else up
    t = np_upfirdn2d(t, fu, up=up, padding=padding, flip_filter=flip, gain=upx * upy)
    t = np.where(t >= 0, t, t * slope) * gain
    if clamp is not None:
        t = np.clip(t, -clamp, clamp)
    return np_upfirdn2d(t, fd, down=down, flip_filter=flip)


_CONFIGS = [
    # fu, fd, up, down, padding, clamp, flip, bias
    ((8,), (6,), 2, 2, [4, 3, 5, 2], 0.7, False, True),
    ((4, 4), (3, 5), 2, 1, 2, None, True, True),
    (None, (8,), 1, 2, [3, 4], 0.5, False, False),
    ((12,), None, 4, 1, [-1, 2, 0, 1], None, False, True),
    ((6,), (8,), [2, 1], [1, 2], [2, 3, 5, 4], 1.0, True, True),
]


@pytest.mark.parametrize("i", range(len(_CONFIGS)))
def test_against_numpy_composition(i):
    fus, fds, up, down, pad, clamp, flip, has_b = _CONFIGS[i]
    rng = np.random.default_rng(10 + i)
    x = rng.standard_normal([2, 6, 7, 3])
    fu = None if fus is None else rng.standard_normal(fus).astype(np.float32)
    fd = None if fds is None else rng.standard_normal(fds).astype(np.float32)
    b = rng.standard_normal([3]) if has_b else None
    y = filtered_lrelu(tf.constant(x), fu, fd, None if b is None else tf.constant(b), up=up, down=down, padding=pad,
                       gain=1.3, slope=0.15, clamp=clamp, flip_filter=flip)
    ref = np_filtered_lrelu(x, None if fu is None else fu.astype(np.float64),
                            None if fd is None else fd.astype(np.float64), b, up, down, pad, 1.3, 0.15, clamp, flip)
    parity.assert_close(y.numpy(), ref, atol=1e-11 * max(1, float(np.abs(ref).max())), name=f"filtered_lrelu/numpy/{i}")


# ---------------------------------------------------------------------------------------------------------------
# Gradients.

def _fd(fun, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp = x.copy(); xp[idx] += eps
        xm = x.copy(); xm[idx] -= eps
        g[idx] = (fun(xp) - fun(xm)) / (2 * eps)
    return g


def test_gradient_finite_differences_with_clamp():
    rng = np.random.default_rng(5)
    x = rng.standard_normal([1, 5, 4, 2])
    b = rng.standard_normal([2]) * 0.3
    fu = (np.hanning(8) / np.hanning(8).sum()).astype(np.float32)
    fd = rng.standard_normal([3, 4]).astype(np.float32)
    kw = dict(up=2, down=2, padding=[4, 3, 5, 2], gain=1.4, slope=0.2, clamp=0.4)
    gy = rng.standard_normal(filtered_lrelu(x, fu, fd, b, **kw).shape)
    loss = lambda a, bb: float(tf.reduce_sum(filtered_lrelu(tf.constant(a), fu, fd, tf.constant(bb), **kw) * gy))
    xt, bt = tf.constant(x), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch([xt, bt])
        l = tf.reduce_sum(filtered_lrelu(xt, fu, fd, bt, **kw) * gy)
    gx, gb = tape.gradient(l, [xt, bt])
    # The clamp is active on part of the high-rate signal (the test is about its zero gradient there).
    t = np_upfirdn2d(x + b, fu.astype(np.float64), up=2, padding=[4, 3, 5, 2], gain=4)
    assert 0.05 < np.mean(np.abs(np.where(t >= 0, t, 0.2 * t) * 1.4) > 0.4) < 0.95
    parity.assert_close(gx.numpy(), _fd(lambda a: loss(a, b), x), atol=1e-7, name="filtered_lrelu/fd_dx")
    parity.assert_close(gb.numpy(), _fd(lambda bb: loss(x, bb), b), atol=1e-7, name="filtered_lrelu/fd_db")


def test_second_order_gradient_exists():
    rng = np.random.default_rng(6)
    x = tf.constant(rng.standard_normal([1, 6, 6, 2]))
    fu = np.ones([4], np.float32) / 4
    with tf.GradientTape() as t2:
        t2.watch(x)
        with tf.GradientTape() as t1:
            t1.watch(x)
            y = filtered_lrelu(x * x, fu, fu, up=2, down=2, padding=3)
            loss = tf.reduce_sum(y)
        g = t1.gradient(loss, x)
        gn = tf.reduce_sum(g * g)
    assert t2.gradient(gn, x) is not None


# ---------------------------------------------------------------------------------------------------------------
# Grid centring (docs/ALGORITHM.md §1.1, §3.4, §11 centering.py): a cosine through a layer's filter chain stays centred.

def _layer_padding(in_size, out_size, k, up, down, n_up, n_down):
    p = (out_size - 1) * down + 1 - (in_size + k - 1) * up + n_up + n_down - 2
    lo = (p + up) // 2
    return lo, p - lo


_LAYERS = [
    # name, in/out size, s_in, s_out, up, down, up filter (n, fc, fh), down filter (n, fc, fh)
    ("T256_L0_up2_dn2", 36, 36, 16, 16, 2, 2, (12, 2.0, 6.0), (12, 2.0, 6.0)),
    ("T256_L3_up4_dn2", 36, 52, 16, 32, 4, 2, (24, 4.0, 4.0), (12, 5.6569, 10.3431)),
    ("T256_L13_critical", 276, 256, 256, 256, 2, 2, (12, 128.0, 29.5865), (12, 128.0, 29.5865)),
]


def _centring_ratio(layer, shift=0):
    name, in_size, out_size, s_in, s_out, up, down, (nu, fcu, fhu), (nd, fcd, fhd) = layer
    s_tmp = max(s_in, s_out) * 2
    k = 3
    fu = scipy.signal.firwin(nu, fcu, width=2 * fhu, fs=s_tmp).astype(np.float32)
    fd = scipy.signal.firwin(nd, fcd, width=2 * fhd, fs=s_tmp).astype(np.float32)
    lo, hi = _layer_padding(in_size, out_size, k, up, down, nu, nd)
    n_in = in_size + k - 1                            # the modulated conv's "full" output feeds the op
    pos_in = (np.arange(n_in) + 0.5 - n_in / 2) / s_in
    pos_out = (np.arange(out_size) + 0.5 - out_size / 2) / s_out
    freq = 0.4 * min(fcu, fcd)                        # well inside the passband
    sig = 3.0 + np.cos(2 * np.pi * freq * pos_in)    # positive: the lrelu stays in its linear branch
    x = np.broadcast_to(sig[None, None, :, None], [1, n_in, n_in, 1]).copy()  # varies along x
    y = filtered_lrelu(tf.constant(x), fu, fd, up=up, down=down, padding=[lo + shift, hi - shift, lo, hi],
                       gain=1.0, slope=0.2).numpy()[0, :, :, 0]
    row = y[out_size // 2]                           # any row; the signal varies along x
    margin = out_size // 4                           # stay away from the zero-padded borders
    p = pos_out[margin:-margin]
    a = np.stack([np.cos(2 * np.pi * freq * p), np.sin(2 * np.pi * freq * p), np.ones_like(p)], 1)
    (ca, cb, _), *_ = np.linalg.lstsq(a, row[margin:-margin], rcond=None)
    return abs(cb / ca)


@pytest.mark.parametrize("layer", _LAYERS, ids=[l[0] for l in _LAYERS])
def test_grid_centring(layer):
    assert _centring_ratio(layer) < 1e-5
    # The test is sensitive: shifting the padding by one high-rate sample breaks the centring.
    assert _centring_ratio(layer, shift=1) > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Output size, XLA, dtypes, errors.

def test_output_size_rule():
    x = tf.zeros([1, 38, 38, 2])
    f12 = np.ones([12], np.float32) / 12
    f24 = np.ones([24], np.float32) / 24
    assert filtered_lrelu(x, f12, f12, up=2, down=2, padding=[9, 8, 9, 8]).shape == (1, 36, 36, 2)
    assert filtered_lrelu(x, f24, f12, up=4, down=2, padding=[-6, -9, -6, -9]).shape == (1, 52, 52, 2)
    assert filtered_lrelu(tf.zeros([1, 278, 278, 1]), f12, f12, up=2, down=2,
                          padding=[-11, -12, -11, -12]).shape == (1, 256, 256, 1)


def test_jit_compile_matches_eager():
    z = parity.load(FILE)
    c = "net_t64_L4_up4_down2"
    x = tf.constant(parity.nchw_to_nhwc(z[c + "/x"]))
    b = tf.constant(z[c + "/b"])
    fn = lambda a: _run(z, c, a, b)
    ref = fn(x).numpy()
    for jit in (False, True):
        parity.assert_close(tf.function(fn, jit_compile=jit)(x).numpy(), ref, atol=4e-7 * float(np.abs(ref).max()),
                            name=f"filtered_lrelu/jit={jit}")


@pytest.mark.parametrize("dtype, tol", [(tf.float16, 2e-3), (tf.bfloat16, 1.6e-2)])
def test_low_precision(dtype, tol):
    z = parity.load(FILE)
    c = "net_t64_L0_up2_down2"
    x = parity.nchw_to_nhwc(z[c + "/x"])
    b = z[c + "/b"]
    y = _run(z, c, tf.cast(x, dtype), tf.cast(b, dtype))
    assert y.dtype == dtype
    ref = parity.nchw_to_nhwc(z[c + "/y"])
    err = float(np.abs(tf.cast(y, tf.float32).numpy() - ref).max())
    assert err < tol * 4 * float(np.abs(ref).max()), err


def test_errors():
    x = tf.zeros([1, 8, 8, 2])
    f = np.ones([6], np.float32) / 6
    with pytest.raises(ValueError, match="padding empties the output along x"):
        filtered_lrelu(x, f, f, up=1, down=2, padding=[-2, 0, 4, 4])
    with pytest.raises(ValueError, match="padding empties the output along y"):
        filtered_lrelu(x, f, f, up=2, down=1, padding=[0, 0, -5, -5])
    with pytest.raises(ValueError, match="b must have shape \\[2\\]"):
        filtered_lrelu(x, b=np.zeros([3], np.float32))
    with pytest.raises(ValueError, match="clamp must be None or >= 0"):
        filtered_lrelu(x, clamp=-1)
    with pytest.raises(ValueError, match="gain must be > 0"):
        filtered_lrelu(x, gain=0)
    with pytest.raises(ValueError, match="fu must be 1-D"):
        filtered_lrelu(x, fu=np.ones([2, 2, 2], np.float32))
    with pytest.raises(ValueError, match="down must be >= 1"):
        filtered_lrelu(x, down=0)
    with pytest.raises(ValueError, match="rank 4"):
        filtered_lrelu(tf.zeros([8, 8, 2]))
    with pytest.raises(TypeError, match="floating"):
        filtered_lrelu(tf.zeros([1, 8, 8, 2], tf.int32))


# ---------------------------------------------------------------------------------------------------------------
# filtered_lrelu_lowmem: custom gradient from an int8 code (docs/ALGORITHM.md §1.4 recipe).

@pytest.mark.parametrize("case", _cases())
def test_lowmem_parity(case):
    z = parity.load(FILE)
    p = parity.meta(z, case + "/params")
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    b = tf.constant(z[case + "/b"]) if case + "/b" in z else None
    fu = z[case + "/fu"] if case + "/fu" in z else None
    fd = z[case + "/fd"] if case + "/fd" in z else None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if b is not None:
            tape.watch(b)
        y = filtered_lrelu_lowmem(x, fu, fd, b, up=p["up"], down=p["down"], padding=p["padding"], gain=p["gain"],
                                  slope=p["slope"], clamp=p["clamp"], flip_filter=p["flip_filter"])
        loss = tf.reduce_sum(y * parity.nchw_to_nhwc(z[case + "/gy"]))
    np.testing.assert_array_equal(y.numpy(), _run(z, case, x, b).numpy())  # same forward as the reference
    dx_ref = parity.nchw_to_nhwc(z[case + "/dx"])
    # Different (but exact-in-math) backward computation: float32 rounding of sums of ~100 products.
    parity.assert_close(tape.gradient(loss, x).numpy(), dx_ref, atol=1e-6 * max(1.0, float(np.abs(dx_ref).max())),
                        name=f"filtered_lrelu_lowmem/{case}/dx")
    if b is not None:
        db_ref = z[case + "/db"]
        parity.assert_close(tape.gradient(loss, b).numpy(), db_ref,
                            atol=4e-6 * max(1.0, float(np.abs(db_ref).max())), name=f"filtered_lrelu_lowmem/{case}/db")


def test_lowmem_gradients_match_autodiff_float64():
    """First order vs finite differences and second order (gradient of a gradient norm) vs autodiff of the
    reference composition, with the clamp active and asymmetric filters / padding / factors."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal([1, 5, 4, 2])
    b = rng.standard_normal([2]) * 0.3
    fu = rng.standard_normal([6]).astype(np.float32)
    fd = rng.standard_normal([3, 4]).astype(np.float32)
    kw = dict(up=[2, 1], down=[1, 2], padding=[3, 1, 2, 4], gain=1.3, slope=0.15, clamp=0.8, flip_filter=True)
    gy = rng.standard_normal(filtered_lrelu(x, fu, fd, b, **kw).shape)
    loss = lambda a, bb: float(tf.reduce_sum(
        filtered_lrelu_lowmem(tf.constant(a), fu, fd, tf.constant(bb), **kw) * gy))
    xt, bt = tf.constant(x), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch([xt, bt])
        l = tf.reduce_sum(filtered_lrelu_lowmem(xt, fu, fd, bt, **kw) * gy)
    gx, gb = tape.gradient(l, [xt, bt])
    parity.assert_close(gx.numpy(), _fd(lambda a: loss(a, b), x), atol=1e-7, name="filtered_lrelu_lowmem/fd_dx")
    parity.assert_close(gb.numpy(), _fd(lambda bb: loss(x, bb), b), atol=1e-7, name="filtered_lrelu_lowmem/fd_db")

    def second(fn):
        with tf.GradientTape() as t2:
            t2.watch(xt)
            with tf.GradientTape() as t1:
                t1.watch(xt)
                out = tf.reduce_sum(tf.sin(fn(xt, fu, fd, bt, **kw)))
            g = t1.gradient(out, xt)
            n = tf.reduce_sum(g * g)
        return t2.gradient(n, xt).numpy()

    ref = second(filtered_lrelu)
    parity.assert_close(second(filtered_lrelu_lowmem), ref, atol=1e-10 * max(1.0, float(np.abs(ref).max())),
                        name="filtered_lrelu_lowmem/second_order_vs_autodiff")


def test_lowmem_jit_and_no_bias():
    rng = np.random.default_rng(8)
    x = tf.constant(rng.standard_normal([1, 10, 10, 2]), tf.float32)
    f = np.hanning(10)[1:-1].astype(np.float32)
    f /= f.sum()

    def fn(fl, a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = fl(a, f, f, up=2, down=2, padding=[4, 3, 4, 3], clamp=0.5)
            l = tf.reduce_sum(y * y)
        return y, tape.gradient(l, a)

    ref = fn(filtered_lrelu, x)
    out = tf.function(lambda a: fn(filtered_lrelu_lowmem, a), jit_compile=True)(x)
    for a, r in zip(out, ref):
        parity.assert_close(a.numpy(), r.numpy(), atol=1e-6 * float(np.abs(r.numpy()).max()),
                            name="filtered_lrelu_lowmem/jit")
