"""upfirdn2d and its wrappers: parity with the original, a direct numpy loop, gradients, XLA, dtypes, errors."""

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf import ops as U

FILE = "ops_upfirdn2d.npz"


pytestmark = pytest.mark.usefixtures("reference_ops_unless_custom")


def _cases():
    return parity.case_names(FILE)


# ---------------------------------------------------------------------------------------------------------------
# Independent numpy reference: a literal zero-stuff / pad / convolve / decimate loop (docs/ALGORITHM.md §1.2).

def np_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """x [N, H, W, C] float64 numpy; same argument forms as the op."""
    x = np.asarray(x, np.float64)
    upx, upy = (up, up) if np.isscalar(up) else up
    dx, dy = (down, down) if np.isscalar(down) else down
    p = [padding] * 4 if np.isscalar(padding) else list(padding)
    if len(p) == 2:
        p = [p[0], p[0], p[1], p[1]]
    px0, px1, py0, py1 = p
    if f is None:
        f2 = np.ones([1, 1]) * gain
    else:
        f = np.asarray(f, np.float64)
        f2 = np.outer(f, f) * gain if f.ndim == 1 else f * gain
    n, h, w, c = x.shape
    z = np.zeros([n, h * upy, w * upx, c])
    z[:, ::upy, ::upx] = x
    z = np.pad(z, [[0, 0], [max(py0, 0), max(py1, 0)], [max(px0, 0), max(px1, 0)], [0, 0]])
    z = z[:, max(-py0, 0): z.shape[1] - max(-py1, 0), max(-px0, 0): z.shape[2] - max(-px1, 0)]
    fh, fw = f2.shape
    ho = (z.shape[1] - fh) // dy + 1
    wo = (z.shape[2] - fw) // dx + 1
    out = np.zeros([n, ho, wo, c])
    for i in range(ho):
        for j in range(wo):
            for ky in range(fh):
                for kx in range(fw):
                    # true convolution: c[m] = sum_k f[k] P[m + F - 1 - k]; correlation: f[k] P[m + k]
                    wgt = f2[ky, kx] if flip_filter else f2[fh - 1 - ky, fw - 1 - kx]
                    out[:, i, j, :] += wgt * z[:, i * dy + ky, j * dx + kx, :]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Parity with the original implementation.

def _run_case(z, c, x, impl="auto"):
    p = parity.meta(z, c + "/params")
    f = z[c + "/f"] if c + "/f" in z else None
    if "wrapper" in p:
        return getattr(U, p["wrapper"])(x, f, impl=impl, **p["wrapper_args"])
    return U.upfirdn2d(x, f, up=p["up"], down=p["down"], padding=p["padding"], flip_filter=p["flip_filter"],
                       gain=p["gain"], impl=impl)


@pytest.mark.parametrize("impl", ["ref", "custom"])
@pytest.mark.parametrize("case", _cases())
def test_parity(case, impl):
    parity.skip_unless_compiled(impl, "upfirdn2d")
    z = parity.load(FILE)
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    gy = parity.nchw_to_nhwc(z[case + "/gy"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _run_case(z, case, x, impl)
        loss = tf.reduce_sum(y * gy)
    dx = tape.gradient(loss, x)
    y_ref = parity.nchw_to_nhwc(z[case + "/y"])
    y64 = parity.nchw_to_nhwc(z[case + "/y_f64"])
    scale = max(1.0, float(np.abs(y64).max()))
    # float32 rounding budget: a few ulps of the output scale.
    parity.assert_close(y.numpy(), y_ref, atol=4e-7 * scale, name=f"upfirdn2d/{case}/y")
    # Our float32 error w.r.t. the float64 result is of the order of the original's own float32 error.
    err_orig = float(np.abs(z[case + "/y"] - z[case + "/y_f64"]).max())
    parity.assert_close(y.numpy(), y64, atol=2 * err_orig + 1e-7 * scale, name=f"upfirdn2d/{case}/y_vs_f64")
    dscale = max(1.0, float(np.abs(z[case + "/dx"]).max()))
    parity.assert_close(dx.numpy(), parity.nchw_to_nhwc(z[case + "/dx"]), atol=4e-7 * dscale,
                        name=f"upfirdn2d/{case}/dx")


def test_wrapper_cases_equal_raw_upfirdn2d():
    z = parity.load(FILE)
    for c in _cases():
        p = parity.meta(z, c + "/params")
        if "wrapper" not in p:
            continue
        x = parity.nchw_to_nhwc(z[c + "/x"])
        a = getattr(U, p["wrapper"])(x, z[c + "/f"], **p["wrapper_args"]).numpy()
        b = U.upfirdn2d(x, z[c + "/f"], **p["equivalent_upfirdn2d_args"]).numpy()
        np.testing.assert_array_equal(a, b, err_msg=c)


# ---------------------------------------------------------------------------------------------------------------
# Against the numpy loop on random configurations.

_RANDOM_CONFIGS = [
    # f shape, up, down, padding, flip
    ((12,), 2, 2, [7, 4, 3, 8], False),
    ((5,), [1, 2], [2, 1], [2, 1, 0, 3], True),
    ((3, 4), 4, 1, [3, 2, 1, 1], False),
    ((4, 3), 1, [3, 2], [-1, 2, 1, -2], True),
    ((6,), 1, 4, 3, False),
    (None, 2, 1, [1, 0, -1, 2], False),
    ((1,), 3, 2, [0, 0, 0, 0], True),
]


@pytest.mark.parametrize("i", range(len(_RANDOM_CONFIGS)))
def test_against_numpy_loop(i):
    fshape, up, down, pad, flip = _RANDOM_CONFIGS[i]
    rng = np.random.default_rng(i)
    x = rng.standard_normal([2, 7, 9, 3])
    f = None if fshape is None else rng.standard_normal(fshape)
    gain = 1.7
    ref = np_upfirdn2d(x, f, up, down, pad, flip, gain)
    y = U.upfirdn2d(tf.constant(x), None if f is None else f.astype(np.float32), up=up, down=down, padding=pad,
                    flip_filter=flip, gain=gain)
    assert y.dtype == tf.float64
    f32 = None if f is None else f.astype(np.float32).astype(np.float64)
    ref = np_upfirdn2d(x, f32, up, down, pad, flip, gain)  # filters are float32 by contract
    parity.assert_close(y.numpy(), ref, atol=1e-12, name=f"upfirdn2d/numpy_loop/{i}")


def test_setup_filter_rules():
    f = U.setup_filter([1, 3, 3, 1]).numpy()
    np.testing.assert_allclose(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, rtol=1e-7)
    f = U.setup_filter(np.arange(1, 9)).numpy()  # 8 taps -> stays separable
    assert f.shape == (8,)
    np.testing.assert_allclose(f, np.arange(1, 9) / 36, rtol=1e-6)
    f = U.setup_filter([1, 2, 3], flip_filter=True, gain=4, separable=False).numpy()
    np.testing.assert_allclose(f, np.outer([3, 2, 1], [3, 2, 1]) / 36 * 4, rtol=1e-6)
    assert U.setup_filter(None).numpy().shape == (1, 1)


def test_wrapper_output_sizes():
    x = tf.zeros([1, 10, 12, 2])
    f = U.setup_filter([1, 3, 3, 1])
    assert U.upsample2d(x, f).shape == (1, 20, 24, 2)
    assert U.downsample2d(x, f).shape == (1, 5, 6, 2)
    assert U.filter2d(x, f).shape == (1, 10, 12, 2)
    assert U.upsample2d(x, tf.ones([24]) / 24, up=4).shape == (1, 40, 48, 2)


# ---------------------------------------------------------------------------------------------------------------
# Gradients: finite differences (float64), second order.

def _fd_grad(fun, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        xp = x.copy(); xp[idx] += eps
        xm = x.copy(); xm[idx] -= eps
        g[idx] = (fun(xp) - fun(xm)) / (2 * eps)
    return g


def test_gradient_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal([1, 4, 5, 2])
    f = rng.standard_normal([5]).astype(np.float32)

    def fwd(a):
        return U.upfirdn2d(a, f, up=2, down=[1, 2], padding=[2, 1, 3, 0], gain=1.3)

    gy = rng.standard_normal(fwd(tf.constant(x)).shape)
    loss = lambda a: float(tf.reduce_sum(fwd(tf.constant(a)) * gy))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        l = tf.reduce_sum(fwd(xt) * gy)
    g = tape.gradient(l, xt).numpy()
    parity.assert_close(g, _fd_grad(loss, x), atol=1e-7, name="upfirdn2d/fd_grad")


def test_second_order_gradient():
    """d/dx of ||d loss / dx||^2 for a nonlinear loss, checked by finite differences of the first gradient."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal([1, 4, 4, 2])
    f = rng.standard_normal([4, 3]).astype(np.float32)

    def grad_norm(a):
        at = tf.constant(a)
        with tf.GradientTape() as t2:
            t2.watch(at)
            with tf.GradientTape() as t1:
                t1.watch(at)
                y = U.upfirdn2d(at, f, up=2, down=2, padding=1)
                loss = tf.reduce_sum(tf.sin(y))
            g = t1.gradient(loss, at)
            gn = tf.reduce_sum(g * g)
        return float(gn), t2.gradient(gn, at)

    _, gg = grad_norm(x)
    assert gg is not None
    fd = _fd_grad(lambda a: grad_norm(a)[0], x, eps=1e-5)
    parity.assert_close(gg.numpy(), fd, atol=1e-6, name="upfirdn2d/second_order")


# ---------------------------------------------------------------------------------------------------------------
# XLA, tf.function, dtypes.

def test_jit_compile_and_function_match_eager():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal([2, 11, 9, 3]), tf.float32)
    f = rng.standard_normal([12]).astype(np.float32)
    f2 = rng.standard_normal([3, 5]).astype(np.float32)

    def fn(a):
        y1 = U.upfirdn2d(a, f, up=2, down=2, padding=[7, 4, 3, 8])
        y2 = U.upfirdn2d(a, f2, up=[2, 1], down=[1, 2], padding=[2, 1, 0, 3], flip_filter=True)
        return y1, y2

    eager = fn(x)
    for jit in (False, True):
        out = tf.function(fn, jit_compile=jit)(x)
        for a, b in zip(out, eager):
            scale = max(1.0, float(np.abs(b.numpy()).max()))
            parity.assert_close(a.numpy(), b.numpy(), atol=4e-7 * scale, name=f"upfirdn2d/jit={jit}")


def test_unknown_batch_in_function():
    f = np.ones([4], np.float32) / 4
    fn = tf.function(lambda a: U.upsample2d(a, f), input_signature=[tf.TensorSpec([None, 6, 6, 2], tf.float32)])
    assert fn(tf.zeros([3, 6, 6, 2])).shape == (3, 12, 12, 2)


@pytest.mark.parametrize("dtype, tol", [(tf.float16, 2e-3), (tf.bfloat16, 1.6e-2)])
def test_low_precision(dtype, tol):
    rng = np.random.default_rng(3)
    x = rng.standard_normal([2, 10, 8, 3]).astype(np.float32)
    f = rng.standard_normal([12]).astype(np.float32) / 6
    ref = U.upfirdn2d(x, f, up=2, down=2, padding=[6, 5, 6, 5]).numpy()
    xl = tf.cast(x, dtype)
    y = U.upfirdn2d(xl, f, up=2, down=2, padding=[6, 5, 6, 5])
    assert y.dtype == dtype
    # input rounding of x dominates; result rounding adds one more ulp of |y|.
    xin = tf.cast(xl, tf.float32).numpy()
    ref_in = U.upfirdn2d(xin, f, up=2, down=2, padding=[6, 5, 6, 5]).numpy()
    parity.assert_close(tf.cast(y, tf.float32).numpy(), ref_in, atol=0, rtol=tol / 2 + 1e-7,
                        name=f"upfirdn2d/{dtype.name}/vs_rounded_input")
    assert float(np.abs(tf.cast(y, tf.float32).numpy() - ref).max()) < tol * float(np.abs(ref).max()) * 4


# ---------------------------------------------------------------------------------------------------------------
# Errors.

def test_errors():
    x = tf.zeros([1, 4, 4, 2])
    with pytest.raises(ValueError, match="rank 4"):
        U.upfirdn2d(tf.zeros([4, 4, 2]), None)
    with pytest.raises(TypeError, match="floating"):
        U.upfirdn2d(tf.zeros([1, 4, 4, 2], tf.int32), None)
    with pytest.raises(ValueError, match="1-D .*or 2-D"):
        U.upfirdn2d(x, np.ones([2, 2, 2]))
    with pytest.raises(ValueError, match="up must be >= 1"):
        U.upfirdn2d(x, None, up=0)
    with pytest.raises(ValueError, match="down must be >= 1"):
        U.upfirdn2d(x, None, down=[1, -2])
    with pytest.raises(ValueError, match="padding empties the output along x"):
        U.upfirdn2d(x, np.ones([6], np.float32), padding=[0, 1, 3, 3])
    with pytest.raises(ValueError, match="padding empties the output along y"):
        U.upfirdn2d(x, None, padding=[0, 0, -2, -2])
    with pytest.raises(ValueError, match="padding must be"):
        U.upfirdn2d(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="impl must be one of"):
        U.upfirdn2d(x, None, impl="cuda")
