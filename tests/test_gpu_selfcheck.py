"""Runtime self-check of the compiled GPU kernels (afgan_tf/ops/_selfcheck.py), tested on the CPU.

The "GPU kernel" is the CPU emulator of the tiled CUDA filtered_lrelu (the same phase functions, both
directions) put in place of the compiled op; a fault is injected by leaving out one of its phases (the
emulator's shared memory is NaN-filled, so the output is wrong). The first use of a configuration must
detect it, warn once naming the op and the configuration, and from then on that configuration computes with
the reference op; a correct kernel passes silently; other configurations are checked separately;
AFGAN_TF_GPU_SELFCHECK=0 disables the check; a driver older than the build's CUDA falls back everywhere.
"""
import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.ops import _custom_ops, _selfcheck
from afgan_tf.ops.bias_act import bias_act
from afgan_tf.ops.filtered_lrelu import filtered_lrelu
from afgan_tf.ops.upfirdn2d import upfirdn2d


def emulated_filtered_lrelu(fault_forward=-1, fault_backward=-1, calls=None):
    """A differentiable filtered_lrelu (canonical args of _custom_ops.filtered_lrelu) run by the tile emulator;
    fault_*: the phase the emulator leaves out (-1: none)."""
    lib = _custom_ops._require()

    def fn(x, fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip):
        if calls is not None:
            calls.append(1)
        a = dict(upx=upx, upy=upy, downx=downx, downy=downy, px0=px0, px1=px1, py0=py0, py1=py1, gain=float(gain),
                 slope=float(slope), flip_filter=bool(flip))
        f = lambda t: tf.ones([1], tf.float32) if t is None else tf.cast(t, tf.float32)
        bb = tf.zeros([0], x.dtype) if b is None else tf.cast(b, x.dtype)

        @tf.custom_gradient
        def run(x):
            y, code = lib.afgan_filtered_lrelu_tile_emu(x, f(fu), f(fd), bb, clamp=-1.0 if clamp is None else clamp,
                                                        skip_phase=fault_forward, **a)

            def grad(dy):
                return lib.afgan_filtered_lrelu_grad_tile_emu(dy, f(fu), f(fd), code, tf.shape(x, out_type=tf.int32),
                                                              skip_phase=fault_backward, **a)
            return y, grad
        return run(x)
    return fn


@pytest.fixture
def selfcheck(monkeypatch):
    parity.need_op_library("filtered_lrelu")
    monkeypatch.delenv(_selfcheck.ENV, raising=False)
    _selfcheck._enable_for_tests("/CPU:0")
    yield
    _selfcheck._enable_for_tests(None)


def _layer(seed=0, padding=(9, 8, 9, 8)):
    rng = np.random.default_rng(seed)
    k = (np.sinc((np.arange(12) - 5.5) / 2) * np.kaiser(12, 6.0)).astype(np.float32)
    x = tf.constant(rng.standard_normal([2, 11, 10, 7]).astype(np.float32))
    b = tf.constant(rng.standard_normal([7]).astype(np.float32))
    return x, dict(fu=k / k.sum(), fd=k / k.sum(), b=b, up=2, down=2, padding=list(padding), gain=math.sqrt(2),
                   slope=0.2, clamp=1.5)


def _grad(x, kw, impl):
    with tf.GradientTape() as t:
        t.watch(x)
        y = filtered_lrelu(x, impl=impl, **kw)
    return y, t.gradient(y, x, output_gradients=tf.ones_like(y))


def test_correct_kernel_passes_silently_and_is_used(selfcheck, monkeypatch):
    calls = []
    monkeypatch.setattr(_custom_ops, "filtered_lrelu", emulated_filtered_lrelu(calls=calls))
    x, kw = _layer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, dx = _grad(x, kw, "custom")
        y2, _ = _grad(x, kw, "custom")
    assert len(calls) == 3  # one self-check run, then the two calls of the op itself
    assert list(_selfcheck._results.values()) == [True]
    y_ref, dx_ref = _grad(x, kw, "ref")
    parity.assert_close(y, y_ref, atol=1e-5, name="selfcheck/emulated_y")
    parity.assert_close(dx, dx_ref, atol=1e-5, name="selfcheck/emulated_dx")


@pytest.mark.parametrize("fault", ["forward", "backward"])
def test_faulty_kernel_warns_once_and_falls_back_to_the_reference(selfcheck, monkeypatch, fault):
    calls = []
    kernel = emulated_filtered_lrelu(fault_forward=3 if fault == "forward" else -1,
                                     fault_backward=1 if fault == "backward" else -1, calls=calls)
    monkeypatch.setattr(_custom_ops, "filtered_lrelu", kernel)
    x, kw = _layer()
    with pytest.warns(RuntimeWarning) as rec:
        y, dx = _grad(x, kw, "custom")
    msgs = [str(w.message) for w in rec if "self-check" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "filtered_lrelu" in msgs[0] and "up (2, 2)" in msgs[0] and "padding (9, 8, 9, 8)" in msgs[0]
    assert "reference op" in msgs[0]
    y_ref, dx_ref = _grad(x, kw, "ref")
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())  # the reference computed it
    np.testing.assert_array_equal(dx.numpy(), dx_ref.numpy())
    assert len(calls) == 1  # only the self-check ran the faulty kernel
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same configuration
        filtered_lrelu(x, impl="custom", **kw)
    assert len(calls) == 1
    # Another configuration is checked on its own (and fails on its own).
    x2, kw2 = _layer(padding=(10, 9, 10, 9))
    with pytest.warns(RuntimeWarning, match="padding \\(10, 9, 10, 9\\)"):
        filtered_lrelu(x2, impl="custom", **kw2)
    assert sorted(_selfcheck._results.values()) == [False, False]


def test_faulty_kernel_inside_tf_function(selfcheck, monkeypatch):
    monkeypatch.setattr(_custom_ops, "filtered_lrelu", emulated_filtered_lrelu(fault_forward=3))
    x, kw = _layer()
    fn = tf.function(lambda x: filtered_lrelu(x, impl="custom", **kw))
    with pytest.warns(RuntimeWarning, match="self-check"):
        y = fn(x)
    np.testing.assert_array_equal(y.numpy(), filtered_lrelu(x, impl="ref", **kw).numpy())


def test_env_var_disables_the_check(selfcheck, monkeypatch):
    monkeypatch.setenv(_selfcheck.ENV, "0")
    monkeypatch.setattr(_custom_ops, "filtered_lrelu", emulated_filtered_lrelu(fault_forward=3))
    x, kw = _layer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = filtered_lrelu(x, impl="custom", **kw)
    assert np.isnan(y.numpy()).any()  # the faulty kernel ran unchecked
    assert not _selfcheck._results


def test_upfirdn2d_and_bias_act_checks(selfcheck, monkeypatch):
    """The real compiled CPU kernels pass; a kernel off by 1% fails and falls back."""
    parity.need_op_library("upfirdn2d")
    x = tf.constant(np.random.default_rng(1).standard_normal([1, 9, 8, 5]).astype(np.float32))
    f = [1.0, 3.0, 3.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        upfirdn2d(x, f, down=2, padding=1, impl="custom")
        bias_act(x, tf.ones([5]), act="swish", clamp=2.0, impl="custom")
    assert list(_selfcheck._results.values()) == [True, True]
    real = _custom_ops.bias_act
    monkeypatch.setattr(_custom_ops, "bias_act", lambda x, *a: real(x, *a) * 1.01)
    with pytest.warns(RuntimeWarning, match="bias_act failed its self-check .*act tanh"):
        y = bias_act(x, tf.ones([5]), act="tanh", impl="custom")
    np.testing.assert_array_equal(y.numpy(), bias_act(x, tf.ones([5]), act="tanh", impl="ref").numpy())


def test_driver_problem_rules():
    info = _selfcheck.parse_build_info("cuda=12.5;sass=70,75,80,86,89,90;ptx=90")
    assert info == dict(cuda="12.5", sass=[70, 75, 80, 86, 89, 90], ptx=90)
    assert "built with CUDA 12.5" in _selfcheck.driver_problem(info, (11, 8), 80)
    assert _selfcheck.driver_problem(info, (12, 2), 86) is None  # minor-version compatibility, SASS present
    assert _selfcheck.driver_problem(info, (13, 0), 90) is None
    assert "no kernel image" in _selfcheck.driver_problem(info, (12, 5), 61)
    assert "PTX" in _selfcheck.driver_problem(info, (12, 2), 100)  # PTX JIT needs the full version
    assert _selfcheck.driver_problem(info, (12, 8), 100) is None
    assert _selfcheck.driver_problem(None, (11, 0), 80) is None  # no CUDA kernels in the library
    assert _selfcheck.driver_problem(info, None, None) is None


def test_old_driver_falls_back_everywhere(selfcheck, monkeypatch):
    calls = []
    monkeypatch.setattr(_custom_ops, "filtered_lrelu", emulated_filtered_lrelu(calls=calls))
    monkeypatch.setattr(_selfcheck, "cuda_build_info", lambda: _selfcheck.parse_build_info("cuda=12.5;sass=80;ptx=80"))
    monkeypatch.setattr(_selfcheck, "driver_cuda_version", lambda: (11, 4))
    _selfcheck._state["driver_ok"] = None
    x, kw = _layer()
    with pytest.warns(RuntimeWarning, match="compiled GPU kernels unusable: the NVIDIA driver supports CUDA 11.4"):
        y = filtered_lrelu(x, impl="custom", **kw)
    np.testing.assert_array_equal(y.numpy(), filtered_lrelu(x, impl="ref", **kw).numpy())
    assert not calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bias_act(x, act="lrelu", impl="custom")  # falls back silently after the one warning


def test_cuda_build_info_of_this_library():
    """The library built here records its CUDA build (or, built without CUDA, has none)."""
    parity.need_op_library("filtered_lrelu")
    info = _selfcheck.cuda_build_info()
    if info is not None:
        assert info["cuda"].count(".") >= 1 and info["sass"] and all(a >= 50 for a in info["sass"])
