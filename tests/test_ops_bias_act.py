"""bias_act: parity with the original, numpy formulas for every activation, gradients, XLA, dtypes, errors."""

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.ops.bias_act import ACTIVATIONS, bias_act

FILE = "ops_bias_act.npz"


pytestmark = pytest.mark.usefixtures("reference_ops_unless_custom")


def _cases():
    return parity.case_names(FILE)


def _axis_for(dim, ndim):
    """Original NCHW `dim` -> our axis after the NCHW -> NHWC transpose (2-D [N, C] inputs are unchanged)."""
    if ndim == 2:
        return dim
    return {1: 3, 2: 1, 3: 2, 0: 0}[dim]


@pytest.mark.parametrize("impl", ["ref", "custom"])
@pytest.mark.parametrize("case", _cases())
def test_parity(case, impl):
    parity.skip_unless_compiled(impl, "bias_act")
    z = parity.load(FILE)
    p = parity.meta(z, case + "/params")
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    b = tf.constant(z[case + "/b"]) if case + "/b" in z else None
    axis = _axis_for(p["dim"], x.shape.rank)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if b is not None:
            tape.watch(b)
        y = bias_act(x, b, axis=axis, act=p["act"], alpha=p["alpha"], gain=p["gain"], clamp=p["clamp"], impl=impl)
        loss = tf.reduce_sum(y * parity.nchw_to_nhwc(z[case + "/gy"]))
    y64 = parity.nchw_to_nhwc(z[case + "/y_f64"])
    scale = max(1.0, float(np.abs(y64).max()))
    parity.assert_close(y.numpy(), parity.nchw_to_nhwc(z[case + "/y"]), atol=2.4e-7 * scale, name=f"bias_act/{case}/y")
    err_orig = float(np.abs(z[case + "/y"] - z[case + "/y_f64"]).max())
    parity.assert_close(y.numpy(), y64, atol=2 * err_orig + 1e-7 * scale, name=f"bias_act/{case}/y_vs_f64")
    dx_ref = parity.nchw_to_nhwc(z[case + "/dx"])
    parity.assert_close(tape.gradient(loss, x).numpy(), dx_ref, atol=2.4e-7 * max(1.0, float(np.abs(dx_ref).max())),
                        name=f"bias_act/{case}/dx")
    if b is not None:
        db_ref = z[case + "/db"]
        # db is a sum over N*H*W elements: the summation order differs from the original's, allow ~1e-6 relative.
        parity.assert_close(tape.gradient(loss, b).numpy(), db_ref, atol=1e-6 * max(1.0, float(np.abs(db_ref).max())),
                            name=f"bias_act/{case}/db")
        # ... and it equals the exact (float64) sum of the original's dx over the non-bias axes.
        red = tuple(i for i in range(x.shape.rank) if i != axis)
        parity.assert_close(tape.gradient(loss, b).numpy(), dx_ref.astype(np.float64).sum(axis=red),
                            atol=1e-6 * max(1.0, float(np.abs(db_ref).max())), name=f"bias_act/{case}/db_vs_sum_dx")


# ---------------------------------------------------------------------------------------------------------------
# numpy formulas (independent of TF).

def _np_act(v, act, alpha):
    return {
        "linear": lambda: v,
        "relu": lambda: np.maximum(v, 0),
        "lrelu": lambda: np.where(v > 0, v, v * alpha),
        "tanh": lambda: np.tanh(v),
        "sigmoid": lambda: 1 / (1 + np.exp(-v)),
        "elu": lambda: np.where(v > 0, v, np.expm1(v)),
        "selu": lambda: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v)),
        "softplus": lambda: np.log1p(np.exp(v)),
        "swish": lambda: v / (1 + np.exp(-v)),
    }[act]()


_DEF_GAIN = dict(linear=1, relu=np.sqrt(2), lrelu=np.sqrt(2), tanh=1, sigmoid=1, elu=1, selu=1, softplus=1,
                 swish=np.sqrt(2))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_activation_formulas_and_defaults(act):
    rng = np.random.default_rng(0)
    x = rng.standard_normal([2, 3, 4, 5]) * 2
    b = rng.standard_normal([5])
    y = bias_act(tf.constant(x), b, act=act).numpy()
    alpha = 0.2 if act == "lrelu" else 0.0
    parity.assert_close(y, _np_act(x + b, act, alpha) * _DEF_GAIN[act], atol=1e-12, name=f"bias_act/{act}")
    assert ACTIVATIONS[act].def_gain == pytest.approx(_DEF_GAIN[act])
    bb = rng.standard_normal([3])
    y = bias_act(tf.constant(x), bb, axis=1, act=act, alpha=0.3, gain=0.5, clamp=0.4).numpy()
    a = 0.3 if act == "lrelu" else 0.0
    ref = np.clip(_np_act(x + bb[None, :, None, None], act, a) * 0.5, -0.4, 0.4)
    parity.assert_close(y, ref, atol=1e-12, name=f"bias_act/{act}/axis1_clamp")


# ---------------------------------------------------------------------------------------------------------------
# Gradients.

def _fd(fun, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp = x.copy(); xp[idx] += eps
        xm = x.copy(); xm[idx] -= eps
        g[idx] = (fun(xp) - fun(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_gradient_finite_differences(act):
    rng = np.random.default_rng(1)
    x = rng.standard_normal([2, 3, 4])
    x = np.where(np.abs(x) < 0.05, 0.3, x)  # keep away from the kinks
    b = rng.standard_normal([4]) * 0.1
    gy = rng.standard_normal([2, 3, 4])
    loss = lambda a, bb: float(tf.reduce_sum(bias_act(tf.constant(a), tf.constant(bb), act=act, clamp=5.0) * gy))
    xt, bt = tf.constant(x), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch([xt, bt])
        l = tf.reduce_sum(bias_act(xt, bt, act=act, clamp=5.0) * gy)
    gx, gb = tape.gradient(l, [xt, bt])
    parity.assert_close(gx.numpy(), _fd(lambda a: loss(a, b), x), atol=1e-7, name=f"bias_act/{act}/fd_dx")
    parity.assert_close(gb.numpy(), _fd(lambda bb: loss(x, bb), b), atol=1e-7, name=f"bias_act/{act}/fd_db")


def test_clamp_gradient_semantics():
    x = tf.constant([-3.0, -0.5, 0.2, 0.9, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(bias_act(x, act="lrelu", clamp=1.0))  # y = [-0.85, -0.14, 0.28, 1.27->1, 2.83->1]
    g = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(g, [0.2 * np.sqrt(2), 0.2 * np.sqrt(2), np.sqrt(2), 0, 0], rtol=1e-6)


def test_second_order_gradient():
    """Gradient of the gradient norm (as R1 needs) exists and matches finite differences."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal([3, 4])
    b = rng.standard_normal([4])
    w = rng.standard_normal([4, 4])

    def gn(a):
        at = tf.constant(a)
        with tf.GradientTape() as t2:
            t2.watch(at)
            with tf.GradientTape() as t1:
                t1.watch(at)
                h = bias_act(tf.matmul(at, w), b, act="softplus")
                h = bias_act(tf.matmul(h, w), b, act="lrelu", clamp=3.0)
                loss = tf.reduce_sum(tf.sin(h))
            g = t1.gradient(loss, at)
            n = tf.reduce_sum(g * g)
        return float(n), t2.gradient(n, at)

    _, gg = gn(x)
    assert gg is not None
    parity.assert_close(gg.numpy(), _fd(lambda a: gn(a)[0], x, eps=1e-6), atol=1e-6, name="bias_act/second_order")


# ---------------------------------------------------------------------------------------------------------------
# XLA, dtypes, errors.

def test_jit_compile_matches_eager():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal([2, 5, 6, 7]), tf.float32)
    b = tf.constant(rng.standard_normal([7]), tf.float32)
    fn = lambda a: bias_act(a, b, act="lrelu", clamp=1.1)
    ref = fn(x).numpy()
    for jit in (False, True):
        parity.assert_close(tf.function(fn, jit_compile=jit)(x).numpy(), ref, atol=1e-6, name=f"bias_act/jit={jit}")


@pytest.mark.parametrize("dtype, tol", [(tf.float16, 2e-3), (tf.bfloat16, 1.6e-2)])
def test_low_precision(dtype, tol):
    rng = np.random.default_rng(4)
    x = rng.standard_normal([2, 4, 4, 3]).astype(np.float32)
    b = rng.standard_normal([3]).astype(np.float32)
    y = bias_act(tf.cast(x, dtype), b, act="lrelu", clamp=1.5)
    assert y.dtype == dtype
    ref = bias_act(x, b, act="lrelu", clamp=1.5).numpy()
    assert float(np.abs(tf.cast(y, tf.float32).numpy() - ref).max()) <= tol * 4


def test_errors():
    x = tf.zeros([2, 3, 3, 4])
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="b has 3 entries but x.shape\\[3\\] = 4"):
        bias_act(x, tf.zeros([3]))
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(x, tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="axis=4 is out of range"):
        bias_act(x, tf.zeros([4]), axis=4)
    with pytest.raises(ValueError, match="clamp must be None or >= 0"):
        bias_act(x, clamp=-1)
    with pytest.raises(TypeError, match="floating"):
        bias_act(tf.zeros([2, 3], tf.int32))
