"""Compiled CPU bias_act kernel on tensors large enough to be split over the thread pool.

The kernel walks flat element ranges whose ends fall anywhere inside a bias row, specialises per activation /
clamp, writes in place when the input buffer can be forwarded and skips the kernel in the backward of
linear without clamp. Checked here against float64 numpy formulas (forward, dx, db) and against the
reference for the second order of the linear shortcut.
"""

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.ops.bias_act import bias_act


def _need_lib():
    parity.need_op_library("bias_act")


def _np_act(act, z, alpha):
    """(act(z), act'(z)) in float64."""
    if act == "linear":
        return z, np.ones_like(z)
    if act == "relu":
        return np.maximum(z, 0), (z > 0).astype(z.dtype)
    if act == "lrelu":
        return np.where(z > 0, z, alpha * z), np.where(z > 0, 1.0, alpha)
    if act == "tanh":
        t = np.tanh(z)
        return t, 1 - t * t
    raise ValueError(act)


# Odd sizes (C = 67, 41 * 67 ...) so the pool's block boundaries fall inside bias rows; >= 300k elements.
CASES = [
    # (shape, axis or None for no bias, act, alpha, gain, clamp)
    ((3, 37, 41, 67), -1, "lrelu", 0.2, np.sqrt(2), 2.0),    # generator / discriminator layer (clamp hit)
    ((3, 37, 41, 67), 1, "linear", 0.0, 1.0, 1.5),           # bias on a middle axis (inner > 1)
    ((3, 37, 41, 67), 2, "relu", 0.0, np.sqrt(2), None),
    ((3, 37, 41, 67), 0, "lrelu", 0.1, 1.3, None),           # bias on the outer axis
    ((3, 37, 41, 67), -1, "tanh", 0.0, 1.0, 0.9),            # generic (x-based) backward
    ((3, 37, 41, 67), None, "lrelu", 0.2, np.sqrt(2), 2.0),   # no bias
    ((1000, 517), -1, "lrelu", 0.2, np.sqrt(2), None),        # rank 2 (mapping-layer like)
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_large_vs_numpy(case):
    _need_lib()
    shape, axis, act, alpha, gain, clamp = CASES[case]
    rng = np.random.default_rng(100 + case)
    x64 = 1.5 * rng.standard_normal(shape)
    ax = 0 if axis is None else axis % len(shape)
    b64 = rng.standard_normal(shape[ax]) if axis is not None else None
    gy64 = rng.standard_normal(shape)
    x = tf.constant(x64.astype(np.float32))
    b = None if b64 is None else tf.constant(b64.astype(np.float32))
    gy = tf.constant(gy64.astype(np.float32))

    @tf.function
    def run(x, b):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if b is not None:
                tape.watch(b)
            y = bias_act(x, b, axis=ax, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="custom")
            loss = tf.reduce_sum(y * gy)
        return y, tape.gradient(loss, [x] if b is None else [x, b])

    y, grads = run(x, b)
    bshape = [1] * len(shape)
    bshape[ax] = -1
    z = x.numpy().astype(np.float64) + (0 if b is None else b.numpy().astype(np.float64).reshape(bshape))
    f, d = _np_act(act, z, alpha)
    y_ref = gain * f
    live = np.ones_like(y_ref)
    if clamp is not None:
        live = (np.abs(y_ref) < clamp).astype(np.float64)
        y_ref = np.clip(y_ref, -clamp, clamp)
        assert 0 < live.mean() < 1  # the clamp is hit somewhere, not everywhere
    dx_ref = gy.numpy().astype(np.float64) * gain * d * live
    parity.assert_close(y.numpy(), y_ref, atol=1e-5 * np.abs(y_ref).max(), name=f"large/{act}/y")
    parity.assert_close(grads[0].numpy(), dx_ref, atol=1e-5 * np.abs(dx_ref).max(), name=f"large/{act}/dx")
    if b is not None:
        db_ref = dx_ref.sum(axis=tuple(i for i in range(len(shape)) if i != ax))
        parity.assert_close(grads[1].numpy(), db_ref, atol=1e-4 * np.abs(db_ref).max() + 1e-3,
                            name=f"large/{act}/db")


def test_in_place_output_keeps_shared_input():
    """The forward may write into x's buffer only when nobody else reads x: a tensor that is also returned
    (or used later) must come out unchanged, and a temporary one must give the right result."""
    _need_lib()
    rng = np.random.default_rng(7)
    x = tf.constant(rng.standard_normal([2, 33, 35, 64]).astype(np.float32))
    b = tf.constant(rng.standard_normal([64]).astype(np.float32))

    @tf.function
    def run(x):
        t = x * 2.0                                   # temporary: may be overwritten in place
        y1 = bias_act(t * 1.0, b, act="lrelu", clamp=1.0, impl="custom")
        y2 = bias_act(t, b, act="lrelu", clamp=1.0, impl="custom")
        return t, y1, y2, t + 1.0                     # t is read after the op

    t, y1, y2, t1 = run(x)
    z = 2.0 * x.numpy().astype(np.float64) + b.numpy()
    y_ref = np.clip(np.sqrt(2) * np.where(z > 0, z, 0.2 * z), -1.0, 1.0)
    np.testing.assert_array_equal(t.numpy(), 2.0 * x.numpy())
    np.testing.assert_array_equal(t1.numpy(), 2.0 * x.numpy() + 1.0)
    parity.assert_close(y1.numpy(), y_ref, atol=1e-6, name="inplace/y1")
    parity.assert_close(y2.numpy(), y_ref, atol=1e-6, name="inplace/y2")


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_linear_without_clamp_second_order(gain):
    """linear without clamp: the backward is gain * dy in TF (no kernel); first and second order match the ref."""
    _need_lib()
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal([3, 5, 4, 7]).astype(np.float32))
    b = tf.constant(rng.standard_normal([7]).astype(np.float32))
    gy = tf.constant(rng.standard_normal([3, 5, 4, 7]).astype(np.float32))
    res = {}
    for impl in ("ref", "custom"):
        with tf.GradientTape() as t2:
            t2.watch([x, b])
            with tf.GradientTape() as t1:
                t1.watch([x, b])
                y = bias_act(x, b, act="linear", gain=gain, impl=impl)
                loss = tf.reduce_sum(y * gy * x)       # second derivative w.r.t. x is non-zero
            dx, db = t1.gradient(loss, [x, b])
            pen = tf.reduce_sum(dx * dx) + tf.reduce_sum(db * db)
        res[impl] = [v.numpy() for v in (y, dx, db) + tuple(t2.gradient(pen, [x, b]))]
    for name, c, r in zip(("y", "dx", "db", "ddx", "ddb"), res["custom"], res["ref"]):
        parity.assert_close(c, r, atol=1e-5 * max(1.0, float(np.abs(r).max())), name=f"linear/{gain}/{name}")
