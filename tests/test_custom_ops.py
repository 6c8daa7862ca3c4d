"""Compiled op library (custom_ops/, issue 9): compiled kernels vs the parity files of the original and vs our
pure-TF reference ops, forward, backward and second order; loader behaviour (fallback, stale, XLA).

Runs against whichever library the loader finds: the pip-built ``afgan_tf/_afgan_tf_ops*.so`` or the one named
by ``AFGAN_TF_OP_LIBRARY`` (e.g. the Bazel output). Skips with the load error when there is none.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.ops import _custom_ops
from afgan_tf.ops.bias_act import bias_act
from afgan_tf.ops.filtered_lrelu import filtered_lrelu
from afgan_tf.ops.upfirdn2d import upfirdn2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _need_lib():
    parity.need_op_library("filtered_lrelu")


def _pad4(p):
    if isinstance(p, int):
        return [p, p, p, p]
    return [p[0], p[0], p[1], p[1]] if len(p) == 2 else list(p)


def _grad(fn, inputs, gy):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
        loss = tf.reduce_sum(y * gy)
    return y, tape.gradient(loss, inputs)


def _tol(ref, rel=2e-6, floor=1e-7):
    return rel * float(np.abs(ref).max()) + floor


# ------------------------------------------------------------------------------------------------ parity files
def _cases(name):
    return parity.case_names(name)


@pytest.mark.parametrize("case", _cases("ops_upfirdn2d.npz"))
def test_upfirdn2d_parity(case):
    _need_lib()
    z = parity.load("ops_upfirdn2d.npz")
    p = parity.meta(z, case + "/params")
    p = dict(p, **p.get("equivalent_upfirdn2d_args", {}))
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    f = z[case + "/f"] if case + "/f" in z else None
    gy = parity.nchw_to_nhwc(z[case + "/gy"])
    fn = lambda x_: upfirdn2d(x_, f, up=p["up"], down=p["down"], padding=p["padding"], flip_filter=p["flip_filter"],
                              gain=p["gain"], impl="custom")
    y, (dx,) = _grad(fn, [x], gy)
    ref_y, ref_dx = parity.nchw_to_nhwc(z[case + "/y"]), parity.nchw_to_nhwc(z[case + "/dx"])
    parity.assert_close(y, ref_y, atol=_tol(ref_y), name=f"custom/upfirdn2d/{case}/y")
    parity.assert_close(dx, ref_dx, atol=_tol(ref_dx), name=f"custom/upfirdn2d/{case}/dx")


@pytest.mark.parametrize("case", _cases("ops_bias_act.npz"))
def test_bias_act_parity(case):
    _need_lib()
    z = parity.load("ops_bias_act.npz")
    p = parity.meta(z, case + "/params")
    x = z[case + "/x"]
    axis = p["dim"]
    if x.ndim == 4:  # NCHW dim -> NHWC axis
        x, axis = parity.nchw_to_nhwc(x), {1: 3, 2: 1, 3: 2}[axis]
    x = tf.constant(x)
    has_b = case + "/b" in z
    inputs = [x] + ([tf.constant(z[case + "/b"])] if has_b else [])
    fn = lambda x_, b_=None: bias_act(x_, b_, axis=axis, act=p["act"], alpha=p["alpha"], gain=p["gain"],
                                      clamp=p["clamp"], impl="custom")
    y, grads = _grad(fn, inputs, parity.nchw_to_nhwc(z[case + "/gy"]))
    ref_y = parity.nchw_to_nhwc(z[case + "/y"])
    parity.assert_close(y, ref_y, atol=_tol(ref_y), name=f"custom/bias_act/{case}/y")
    ref_dx = parity.nchw_to_nhwc(z[case + "/dx"])
    parity.assert_close(grads[0], ref_dx, atol=_tol(ref_dx), name=f"custom/bias_act/{case}/dx")
    if has_b:
        parity.assert_close(grads[1], z[case + "/db"], atol=_tol(z[case + "/db"], 5e-6),
                            name=f"custom/bias_act/{case}/db")


@pytest.mark.parametrize("case", _cases("ops_filtered_lrelu.npz"))
def test_filtered_lrelu_parity(case):
    _need_lib()
    z = parity.load("ops_filtered_lrelu.npz")
    p = parity.meta(z, case + "/params")
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    has_b = case + "/b" in z
    fu = z[case + "/fu"] if case + "/fu" in z else None
    fd = z[case + "/fd"] if case + "/fd" in z else None
    inputs = [x] + ([tf.constant(z[case + "/b"])] if has_b else [])
    fn = lambda x_, b_=None: filtered_lrelu(x_, fu, fd, b_, up=p["up"], down=p["down"], padding=p["padding"],
                                            gain=p["gain"], slope=p["slope"], clamp=p["clamp"],
                                            flip_filter=p["flip_filter"], impl="custom")
    y, grads = _grad(fn, inputs, parity.nchw_to_nhwc(z[case + "/gy"]))
    ref_y = parity.nchw_to_nhwc(z[case + "/y"])
    parity.assert_close(y, ref_y, atol=_tol(ref_y), name=f"custom/filtered_lrelu/{case}/y")
    ref_dx = parity.nchw_to_nhwc(z[case + "/dx"])
    parity.assert_close(grads[0], ref_dx, atol=_tol(ref_dx, 4e-6), name=f"custom/filtered_lrelu/{case}/dx")
    if has_b:
        parity.assert_close(grads[1], z[case + "/db"], atol=_tol(z[case + "/db"], 1e-5),
                            name=f"custom/filtered_lrelu/{case}/db")


# ------------------------------------------------------------------------------------------------ vs reference
def _kaiser_like(n, rng):
    f = np.sinc((np.arange(n) - (n - 1) / 2) / 2) * np.kaiser(n, 6.0)
    return (f / f.sum() + 0.01 * rng.standard_normal(n)).astype(np.float32)


UPFIRDN_CASES = [
    # (N, H, W, C, f shape, up, down, padding, flip, gain)
    (1, 7, 9, 3, (12,), 2, 1, [6, 5, 6, 5], False, 4.0),
    (2, 11, 6, 37, (4, 5), [2, 1], [1, 2], [2, 1, 0, 3], True, 1.0),
    (1, 9, 9, 130, (24,), 4, 1, [13, 10, 13, 10], False, 16.0),
    (2, 13, 15, 5, (7,), 1, 4, [3, 3, 3, 3], True, 2.5),
    (1, 10, 12, 8, (12, 12), 1, 2, [-2, 5, 5, -3], False, 1.0),
    (3, 5, 8, 2, None, 2, 2, [-1, 1, 2, -2], False, 0.7),
]


@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_upfirdn2d_vs_ref(case):
    _need_lib()
    n, h, w, c, fs, up, down, pad, flip, gain = UPFIRDN_CASES[case]
    rng = np.random.default_rng(case)
    x = tf.constant(rng.standard_normal([n, h, w, c]).astype(np.float32))
    f = None if fs is None else rng.standard_normal(fs).astype(np.float32)
    outs = {}
    for impl in ("ref", "custom"):
        fn = lambda x_: upfirdn2d(x_, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl=impl)
        y = fn(x)
        gy = tf.constant(np.random.default_rng(100 + case).standard_normal(y.shape).astype(np.float32))
        outs[impl] = _grad(fn, [x], gy)
    (y_r, (dx_r,)), (y_c, (dx_c,)) = outs["ref"], outs["custom"]
    parity.assert_close(y_c, y_r, atol=_tol(y_r), name=f"custom_vs_ref/upfirdn2d/{case}/y")
    parity.assert_close(dx_c, dx_r, atol=_tol(dx_r), name=f"custom_vs_ref/upfirdn2d/{case}/dx")


def test_upfirdn2d_second_order():
    """d/dx of |dL/dx|^2 through the compiled op (grad of grad) equals the reference's."""
    _need_lib()
    rng = np.random.default_rng(7)
    x = tf.constant(rng.standard_normal([2, 9, 8, 6]).astype(np.float32))
    f = _kaiser_like(12, rng)
    res = {}
    for impl in ("ref", "custom"):
        with tf.GradientTape() as t2:
            t2.watch(x)
            with tf.GradientTape() as t1:
                t1.watch(x)
                y = upfirdn2d(x, f, up=2, down=2, padding=[5, 4, 6, 3], impl=impl)
                loss = tf.reduce_sum(tf.sin(y) * y)
            g = t1.gradient(loss, x)
            pen = tf.reduce_sum(g * g)
        res[impl] = t2.gradient(pen, x).numpy()
    parity.assert_close(res["custom"], res["ref"], atol=_tol(res["ref"], 1e-5), name="custom_vs_ref/upfirdn2d/2nd")


BIAS_ACT_CASES = [
    # (shape, axis, act, alpha, gain, clamp)
    ((2, 5, 6, 33), -1, "lrelu", 0.2, np.sqrt(2), None),
    ((3, 4, 7, 3), 1, "lrelu", 0.1, 1.3, 0.7),
    ((4, 9), 1, "linear", None, 1.0, 0.5),
    ((2, 3, 5, 8), 3, "relu", None, np.sqrt(2), None),
    ((2, 3, 5, 8), 3, "tanh", None, 1.0, None),
    ((2, 3, 5, 8), 2, "sigmoid", None, 1.0, None),
    ((2, 3, 5, 8), 3, "elu", None, 1.0, 0.9),
    ((2, 3, 5, 8), 3, "selu", None, 1.0, None),
    ((2, 3, 5, 8), 3, "softplus", None, 1.0, None),
    ((2, 3, 5, 8), 0, "swish", None, np.sqrt(2), None),
]


@pytest.mark.parametrize("case", range(len(BIAS_ACT_CASES)))
def test_bias_act_vs_ref_with_second_order(case):
    _need_lib()
    shape, axis, act, alpha, gain, clamp = BIAS_ACT_CASES[case]
    rng = np.random.default_rng(case)
    x = tf.constant((1.5 * rng.standard_normal(shape)).astype(np.float32))
    b = tf.constant(rng.standard_normal([shape[axis]]).astype(np.float32))
    gy = tf.constant(rng.standard_normal(shape).astype(np.float32))
    res = {}
    for impl in ("ref", "custom"):
        with tf.GradientTape() as t2:
            t2.watch([x, b])
            with tf.GradientTape() as t1:
                t1.watch([x, b])
                y = bias_act(x, b, axis=axis, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
                loss = tf.reduce_sum(y * gy)
            dx, db = t1.gradient(loss, [x, b])
            pen = tf.reduce_sum(dx * dx * x) + tf.reduce_sum(db)  # R1-like: depends on dx through x
        ddx, ddb = t2.gradient(pen, [x, b], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        res[impl] = [v.numpy() for v in (y, dx, db, ddx, ddb)]
    for name, c, r in zip(("y", "dx", "db", "ddx", "ddb"), res["custom"], res["ref"]):
        parity.assert_close(c, r, atol=_tol(r, 1e-5), name=f"custom_vs_ref/bias_act/{act}/{name}")


FLRELU_CASES = [
    # (N, H, W, C, fu, fd, up, down, padding, gain, slope, clamp, flip, bias)
    (1, 11, 13, 3, (12,), (12,), 2, 2, [9, 8, 9, 8], np.sqrt(2), 0.2, None, False, True),   # odd sizes, batch 1
    (2, 14, 13, 37, (24,), (12,), 4, 2, [-2, -5, -2, -5], np.sqrt(2), 0.2, 0.4, False, True),  # up4, clamp hit
    (1, 10, 8, 20, (12,), (12,), 2, 4, [7, 8, 6, 9], 1.3, 0.1, None, False, True),     # up2/down4 (backward shape)
    (2, 8, 8, 5, (12,), (12, 12), 2, 2, [11, 10, 11, 10], np.sqrt(2), 0.2, 0.6, False, True),  # 2-D fd (config R)
    (1, 7, 9, 6, (5, 6), (8,), 2, 2, [3, 2, 1, 4], 0.9, 0.05, None, True, False),       # 2-D fu, flip, no bias
    (2, 6, 7, 130, None, None, 1, 1, [0, 0, 0, 0], 1.0, 1.0, 0.3, False, True),        # ToRGB-like, many channels
    (1, 12, 10, 9, (24,), (24,), 4, 4, [20, 21, 19, 22], np.sqrt(2), 0.2, None, False, True),  # up4/down4
    (1, 9, 11, 4, None, (12,), 1, 2, [5, 4, 6, 5], 1.1, 0.25, 1.0, False, True),       # fu identity
]


@pytest.mark.parametrize("case", range(len(FLRELU_CASES)))
def test_filtered_lrelu_vs_ref(case):
    _need_lib()
    n, h, w, c, fus, fds, up, down, pad, gain, slope, clamp, flip, has_b = FLRELU_CASES[case]
    rng = np.random.default_rng(10 + case)
    x = tf.constant(rng.standard_normal([n, h, w, c]).astype(np.float32))
    b = tf.constant(rng.standard_normal([c]).astype(np.float32)) if has_b else None
    mk = lambda s: None if s is None else (_kaiser_like(s[0], rng) if len(s) == 1 else
                                          (rng.standard_normal(s) / np.prod(s) + 1.0 / np.prod(s)).astype(np.float32))
    fu, fd = mk(fus), mk(fds)
    res = {}
    for impl in ("ref", "custom"):
        fn = lambda x_, b_=None: filtered_lrelu(x_, fu, fd, b_, up=up, down=down, padding=pad, gain=gain, slope=slope,
                                                clamp=clamp, flip_filter=flip, impl=impl)
        y0 = fn(x, b)
        gy = tf.constant(np.random.default_rng(99).standard_normal(y0.shape).astype(np.float32))
        y, grads = _grad(fn, [x] + ([b] if has_b else []), gy)
        res[impl] = [y.numpy()] + [g.numpy() for g in grads]
    if clamp is not None:  # the case must actually exercise the clamp
        unclamped = filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=pad, gain=gain, slope=slope, clamp=None,
                                   flip_filter=flip, impl="ref").numpy()
        assert np.abs(unclamped - res["ref"][0]).max() > 1e-3, "test case should hit the clamp"
    for name, cval, rval in zip(("y", "dx", "db"), res["custom"], res["ref"]):
        parity.assert_close(cval, rval, atol=_tol(rval, 5e-6), name=f"custom_vs_ref/filtered_lrelu/{case}/{name}")


def test_filtered_lrelu_second_order():
    """Grad of grad (the backward op's adjoint reads the same code) equals the reference's."""
    _need_lib()
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal([1, 9, 10, 6]).astype(np.float32))
    fu, fd = _kaiser_like(12, rng), _kaiser_like(12, rng)
    w = tf.constant(rng.standard_normal([1, 9, 10, 6]).astype(np.float32))
    res = {}
    for impl in ("ref", "custom"):
        with tf.GradientTape() as t2:
            t2.watch(w)
            with tf.GradientTape() as t1:
                t1.watch(x)
                y = filtered_lrelu(x * w, fu, fd, up=2, down=2, padding=[9, 8, 9, 8], clamp=0.5, impl=impl)
                loss = tf.reduce_sum(y * y)
            g = t1.gradient(loss, x)
            pen = tf.reduce_sum(g * tf.cos(x))
        res[impl] = t2.gradient(pen, w).numpy()
    parity.assert_close(res["custom"], res["ref"], atol=_tol(res["ref"], 2e-5), name="custom_vs_ref/flrelu/2nd")


def test_filtered_lrelu_code_matches_reference_intermediate():
    """The stored 2-bit code equals sign/clamp of the reference's high-rate intermediate (docs/ALGORITHM.md §1.4)."""
    _need_lib()
    rng = np.random.default_rng(5)
    c = 6
    x = tf.constant(rng.standard_normal([2, 10, 9, c]).astype(np.float32))
    b = rng.standard_normal([c]).astype(np.float32)
    fu, fd = _kaiser_like(12, rng), _kaiser_like(12, rng)
    gain, slope, clamp, pad = 1.4, 0.2, 0.5, [9, 8, 7, 10]
    lib = _custom_ops._require()
    _, code = lib.afgan_filtered_lrelu(x, fu, fd, b, upx=2, upy=2, downx=2, downy=2, px0=pad[0], px1=pad[1],
                                       py0=pad[2], py1=pad[3], gain=gain, slope=slope, clamp=clamp, flip_filter=False)
    code = code.numpy()
    t = upfirdn2d(x + b, fu, up=2, padding=pad, gain=4, impl="ref").numpy() * gain
    hs, ws = code.shape[1], code.shape[2]
    assert code.shape == (2, hs, ws, (c + 3) // 4)
    t = t[:, :hs, :ws]
    v = np.where(t < 0, t * slope, t)
    expect = np.where(np.abs(v) > clamp, 2, np.where(t < 0, 1, 0))
    got = np.stack([(code[..., ch // 4] >> (2 * (ch % 4))) & 3 for ch in range(c)], axis=-1)
    # values within float rounding of the thresholds may legitimately differ
    near = (np.abs(t) < 1e-5) | (np.abs(np.abs(v) - clamp) < 1e-5)
    assert np.all((got == expect) | near), f"{np.sum((got != expect) & ~near)} code mismatches"
    assert set(np.unique(got)) == {0, 1, 2}


def test_backward_keeps_no_high_rate_tensor():
    """What the tape keeps for the backward is x, y and a uint8 code 16x smaller than the fp32 intermediate."""
    _need_lib()
    x = tf.random.normal([1, 38, 38, 16])
    f = _kaiser_like(12, np.random.default_rng(0))
    lib = _custom_ops._require()
    y, code = lib.afgan_filtered_lrelu(x, f, f, tf.zeros([16]), upx=2, upy=2, downx=2, downy=2, px0=9, px1=8, py0=9,
                                       py1=8, gain=1.4, slope=0.2, clamp=256.0, flip_filter=False)
    assert code.dtype == tf.uint8
    high_rate_fp32_bytes = 82 * 82 * 16 * 4
    assert code.shape == (1, 82, 82, 4) and code.numpy().nbytes * 16 == high_rate_fp32_bytes


# ------------------------------------------------------------------------------------------------ graph / XLA / loader
def test_tf_function_and_xla_fallback():
    _need_lib()
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal([1, 10, 10, 4]).astype(np.float32))
    f = _kaiser_like(12, rng)
    fn = lambda x_: filtered_lrelu(x_, f, f, up=2, down=2, padding=[9, 8, 9, 8], impl="auto")
    ref = filtered_lrelu(x, f, f, up=2, down=2, padding=[9, 8, 9, 8], impl="ref").numpy()
    graph = tf.function(fn)
    assert any(op.type == "AfganFilteredLrelu" for op in graph.get_concrete_function(x).graph.get_operations())
    parity.assert_close(graph(x), ref, atol=_tol(ref), name="custom/tf.function")
    xla = tf.function(fn, jit_compile=True)
    assert not any(op.type.startswith("Afgan") for op in xla.get_concrete_function(x).graph.get_operations())
    parity.assert_close(xla(x), ref, atol=_tol(ref, 1e-5), name="custom/xla_fallback")
    with pytest.raises(RuntimeError, match="jit_compile"):
        tf.function(lambda x_: filtered_lrelu(x_, f, f, up=2, down=2, padding=[9, 8, 9, 8], impl="custom"),
                    jit_compile=True)(x)


def test_clear_errors():
    _need_lib()
    lib = _custom_ops._require()
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="f must be 1-D"):
        lib.afgan_upfirdn2d(tf.zeros([1, 4, 4, 1]), tf.zeros([2, 2, 2]), upx=1, upy=1, downx=1, downy=1, px0=0, px1=0,
                            py0=0, py1=0, flip_filter=False, gain=1.0)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="b must be"):
        lib.afgan_filtered_lrelu(tf.zeros([1, 8, 8, 3]), tf.ones([1]), tf.ones([1]), tf.zeros([4]), upx=1, upy=1,
                                 downx=1, downy=1, px0=0, px1=0, py0=0, py1=0, gain=1.0, slope=0.2, clamp=-1.0,
                                 flip_filter=False)


def _run_py(code, env_extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    env.pop("AFGAN_TF_FORCE_REF", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


LOADER_PROBE = """
    import warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as w:
        import afgan_tf.ops._custom_ops as co
        import numpy as np
        from afgan_tf.ops.upfirdn2d import upfirdn2d
        y1 = upfirdn2d(np.ones([1, 4, 4, 1], np.float32), [1., 2., 1.], up=2)   # auto -> falls back
        y2 = upfirdn2d(np.ones([1, 4, 4, 1], np.float32), [1., 2., 1.], up=2)
        msgs = [str(m.message) for m in w if "compiled ops unavailable" in str(m.message)]
    print("AVAILABLE", co.is_available("upfirdn2d"), "WARNINGS", len(msgs), "SHAPE", tuple(y1.shape))
    print("ERROR", co.load_error())
"""


def test_missing_library_warns_once_and_falls_back(tmp_path):
    r = _run_py(LOADER_PROBE, {"AFGAN_TF_OP_LIBRARY": str(tmp_path / "nope.so")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "AVAILABLE False WARNINGS 1 SHAPE (1, 6, 6, 1)" in r.stdout, r.stdout
    assert "does not exist" in r.stdout


def test_wrong_library_warns_once_and_falls_back(tmp_path):
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"not an ELF file")
    r = _run_py(LOADER_PROBE, {"AFGAN_TF_OP_LIBRARY": str(bad)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "AVAILABLE False WARNINGS 1" in r.stdout, r.stdout
    assert "failed to load" in r.stdout


def test_stale_library_detected(tmp_path):
    """A library built from other sources than the checkout's custom_ops/ is rejected with one warning."""
    _need_lib()
    src = os.path.join(tmp_path, "custom_ops")
    os.makedirs(src)
    with open(os.path.join(src, "x.h"), "w") as fh:
        fh.write("// different sources\n")
    probe = LOADER_PROBE.replace("import afgan_tf.ops._custom_ops as co",
                                 f"import afgan_tf.ops._custom_ops as co; co._SRC_DIR = {src!r}")
    r = _run_py(probe, {"AFGAN_TF_OP_LIBRARY": _custom_ops.library_path()})
    assert r.returncode == 0, r.stderr[-2000:]
    if "AVAILABLE True" in r.stdout:
        pytest.skip("library built without a source hash (manual build)")
    assert "AVAILABLE False WARNINGS 1" in r.stdout and "stale" in r.stdout, r.stdout


# ------------------------------------------------------------------------------------------------ GPU (CUDA kernels)
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", [0, 1, 3, 5])
def test_gpu_filtered_lrelu_matches_cpu(case, dtype):
    """CUDA kernels (generic path) vs the CPU kernels, forward and backward; float16 within half precision."""
    _need_lib()
    n, h, w, c, fus, fds, up, down, pad, gain, slope, clamp, flip, has_b = FLRELU_CASES[case]
    rng = np.random.default_rng(50 + case)
    x = rng.standard_normal([n, h, w, c]).astype(np.float32)
    b = rng.standard_normal([c]).astype(np.float32) if has_b else None
    fu = None if fus is None else _kaiser_like(fus[0], rng) if len(fus) == 1 else np.full(fus, 1 / np.prod(fus), np.float32)
    fd = None if fds is None else _kaiser_like(fds[0], rng) if len(fds) == 1 else np.full(fds, 1 / np.prod(fds), np.float32)
    res = {}
    for dev, dt in (("/CPU:0", "float32"), ("/GPU:0", dtype)):
        with tf.device(dev):
            xt = tf.constant(x.astype(dt))
            bt = None if b is None else tf.constant(b.astype(dt))
            fn = lambda x_, b_=None: filtered_lrelu(x_, fu, fd, b_, up=up, down=down, padding=pad, gain=gain,
                                                    slope=slope, clamp=clamp, flip_filter=flip, impl="custom")
            y0 = fn(xt, bt)
            gy = tf.cast(tf.constant(np.random.default_rng(9).standard_normal(y0.shape).astype(np.float32)), dt)
            y, grads = _grad(fn, [xt] + ([bt] if bt is not None else []), gy)
            res[dev] = [tf.cast(v, tf.float32).numpy() for v in [y] + list(grads)]
    rel = 2e-6 if dtype == "float32" else 3e-3
    for name, g, cpu in zip(("y", "dx", "db"), res["/GPU:0"], res["/CPU:0"]):
        parity.assert_close(g, cpu, atol=_tol(cpu, rel * 4), name=f"gpu/{dtype}/filtered_lrelu/{case}/{name}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_upfirdn2d_and_bias_act_match_cpu(dtype):
    _need_lib()
    rng = np.random.default_rng(2)
    x = rng.standard_normal([2, 9, 11, 6]).astype(np.float32)
    f = _kaiser_like(12, rng)
    b = rng.standard_normal([6]).astype(np.float32)
    res = {}
    for dev, dt in (("/CPU:0", "float32"), ("/GPU:0", dtype)):
        with tf.device(dev):
            xt = tf.constant(x.astype(dt))
            y1 = upfirdn2d(xt, f, up=2, down=1, padding=[6, 5, 6, 5], gain=4, impl="custom")
            y2 = bias_act(xt, tf.constant(b.astype(dt)), axis=-1, act="lrelu", clamp=0.8, impl="custom")
            res[dev] = [tf.cast(v, tf.float32).numpy() for v in (y1, y2)]
    rel = 2e-6 if dtype == "float32" else 3e-3
    for g, cpu in zip(res["/GPU:0"], res["/CPU:0"]):
        parity.assert_close(g, cpu, atol=_tol(cpu, rel * 4), name=f"gpu/{dtype}/upfirdn2d_bias_act")


def test_auto_uses_compiled_bias_act_on_cpu(monkeypatch):
    """impl="auto" picks the compiled kernels on CPU (bias_act included since its CPU kernel beats the reference);
    an op listed in AUTO_PREFERS_REF_ON_CPU goes to the reference on GPU-less machines unless impl="custom"."""
    from afgan_tf import device
    from afgan_tf.ops import _common
    _need_lib()
    for op in ("bias_act", "filtered_lrelu", "upfirdn2d"):
        assert _common.resolve_impl("auto", op) == "custom"
    monkeypatch.setattr(_common, "AUTO_PREFERS_REF_ON_CPU", frozenset({"bias_act"}))
    monkeypatch.setattr(device, "_gpu", [False])
    assert _common.resolve_impl("auto", "bias_act") == "ref"
    assert _common.resolve_impl("custom", "bias_act") == "custom"
    assert _common.resolve_impl("auto", "upfirdn2d") == "custom"


# ------------------------------------------------------------------------------------------------ CPU ISA dispatch
ISA_LEVELS = ("v2", "v3", "v4")


def test_isa_forced_level_is_chosen():
    """build_info() reports the compiled / supported / chosen levels; AFGAN_TF_OPS_ISA (when set) is honoured."""
    _need_lib()
    info = _custom_ops.build_info()
    assert info["loaded"], info
    supported = info["supported"].split(",")
    assert info["chosen"] in supported, info
    forced = os.environ.get("AFGAN_TF_OPS_ISA")
    if forced:
        assert info["chosen"] == forced, info
    elif info["compiled"] != "generic":
        assert info["chosen"] == supported[-1], info  # the best level this CPU runs


@pytest.mark.parametrize("level", ISA_LEVELS)
def test_isa_level_matches_reference(level):
    """Each compiled level this CPU runs, forced with AFGAN_TF_OPS_ISA, passes the kernel-vs-reference tests of
    this file (filtered_lrelu forward/backward/second order/code, all channel-block widths and filter forms) in
    a fresh process (the level is chosen once per process). Levels the CPU cannot run are skipped."""
    _need_lib()
    info = _custom_ops.build_info()
    if level not in info["compiled"].split(","):
        pytest.skip(f"{level} not compiled into this library ({info['compiled']})")
    if level not in info["supported"].split(","):
        pytest.skip(f"this CPU does not run {level} (it runs {info['supported']})")
    env = dict(os.environ, AFGAN_TF_OPS_ISA=level, TF_CPP_MIN_LOG_LEVEL="3", AFGAN_TF_OP_LIBRARY=_custom_ops.library_path())
    env.pop("AFGAN_TF_FORCE_REF", None)
    sel = "filtered_lrelu_vs_ref or filtered_lrelu_second_order or code_matches or isa_forced_level"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "tests", "test_custom_ops.py"), "-k", sel],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, f"AFGAN_TF_OPS_ISA={level}:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    assert " passed" in r.stdout and "failed" not in r.stdout, r.stdout[-2000:]


def test_forcing_an_unsupported_level_is_one_clear_error():
    _need_lib()
    info = _custom_ops.build_info()
    missing = [lv for lv in ISA_LEVELS if lv not in (info["supported"] or "").split(",")]
    probe = ("import afgan_tf.ops._custom_ops as co; co.is_available('upfirdn2d'); "
             "print('ERROR', co.load_error())")
    want = missing[0] if missing else "v9"
    r = _run_py(probe, {"AFGAN_TF_OPS_ISA": want, "AFGAN_TF_OP_LIBRARY": _custom_ops.library_path(),
                        "AFGAN_TF_QUIET_OPS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"AFGAN_TF_OPS_ISA={want}" in r.stdout and ("cannot run" in r.stdout or "not one of" in r.stdout), r.stdout


def test_only_the_isa_objects_use_wide_vectors():
    """Portability of the one library: no function outside the v3/v4 kernel namespaces contains an AVX (ymm) or
    AVX-512 (zmm) instruction, so a v2-only CPU never executes one before or outside the dispatch (the linker
    could otherwise keep a v3/v4 copy of a shared inline function); and the v4 kernels do use zmm registers."""
    _need_lib()
    import re
    import shutil
    if not shutil.which("objdump"):
        pytest.skip("objdump not installed")
    info = _custom_ops.build_info()
    if "v3" not in info["compiled"].split(","):
        pytest.skip(f"no x86-64 ISA levels in this library ({info['compiled']})")
    r = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", _custom_ops.library_path()],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1000:]
    bad, wide = {}, {"isa_v3": 0, "isa_v4": 0}
    cur = ""
    for line in r.stdout.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            cur = m.group(1)
            continue
        if "ymm" in line or "zmm" in line:
            ns = "isa_v4" if "afgan_flrelu::isa_v4" in cur else "isa_v3" if "afgan_flrelu::isa_v3" in cur else None
            if ns is None:
                bad[cur] = bad.get(cur, 0) + 1
            elif "zmm" in line and ns == "isa_v3":
                bad[cur] = bad.get(cur, 0) + 1
            else:
                wide[ns] += 1
    assert not bad, f"wide-vector instructions outside the ISA kernels: {list(bad)[:5]}"
    assert wide["isa_v3"] > 0 and ("v4" not in info["compiled"] or wide["isa_v4"] > 0), wide


def test_float64_runs_the_reference_even_with_impl_custom():
    """The kernels compute in float32: float64 input goes to the reference (full precision) for every impl."""
    from afgan_tf.ops import _common
    assert _common.resolve_impl("custom", "filtered_lrelu", tf.float64) == "ref"
    x = tf.constant(np.random.default_rng(0).standard_normal([1, 6, 7, 3]), tf.float64)
    y = upfirdn2d(x, [1., 3., 3., 1.], up=2, impl="custom")
    r = upfirdn2d(x, [1., 3., 3., 1.], up=2, impl="ref")
    assert y.dtype == tf.float64 and np.array_equal(y.numpy(), r.numpy())


def test_ops_package_import_graph_has_no_cycle():
    """issue 14: the loader is a leaf (imports no op module), op modules import no other module's private helper,
    and the device probe lives in afgan_tf/device.py only."""
    import ast
    ops_dir = os.path.join(ROOT, "afgan_tf", "ops")
    for name in sorted(os.listdir(ops_dir)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(ops_dir, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                mod = node.module or ""
                names = [a.name for a in node.names]
                if name == "_custom_ops.py":
                    assert mod == "" and names == ["device"] and node.level == 2, (name, mod, names)
                if mod not in ("", "_common", "_custom_ops"):
                    private = [n for n in names if n.startswith("_")]
                    assert not private, f"{name} imports private helpers {private} from {mod}"
    probes = subprocess.run(["grep", "-rln", "list_physical_devices", os.path.join(ROOT, "afgan_tf", "ops")],
                            capture_output=True, text=True).stdout.split()
    assert probes == [], probes
