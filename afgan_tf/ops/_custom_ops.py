"""Loader and Python wrappers of the compiled op library (custom_ops/, issue 9).

Contract used by the op modules (canonical, already-parsed arguments; x is NHWC):
  upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
  bias_act(x, b, axis, act, alpha, gain, clamp)            # alpha/gain resolved floats, clamp float or None
  filtered_lrelu(x, fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip_filter)
Filters are float32 tensors (1-D separable or 2-D [fh, fw]; identity passed as None). ``b`` may be None.
``axis`` may be negative. ``alpha`` may be None for activations without one. All three return a tensor of
x's dtype. The kernels are float32 (CPU) / float32+float16 (GPU): float16/bfloat16 without a GPU are computed
in float32 and cast back; float64 is refused (the public ops route it to their reference, see
``_common.resolve_impl``).

This module is a leaf of the ops package: it imports no op module (only TensorFlow and ``afgan_tf.device``).

The library
-----------
* Found at ``$AFGAN_TF_OP_LIBRARY`` if set (e.g. the Bazel output ``bazel-bin/custom_ops/_afgan_tf_ops.so``),
  else ``afgan_tf/_afgan_tf_ops*.so`` (placed there by ``pip install`` / ``setup.py build_ext``).
* Loaded lazily on first use. A missing library, one that fails to load, one built for another op
  interface (ABI version) or from other sources than the checkout's ``custom_ops/`` (stale) gives ONE warning
  and the ops fall back to the pure-TF reference; importing never fails.
* Gradients are registered for every op type: upfirdn2d's gradient is an upfirdn2d (any order);
  bias_act's is ``AfganBiasActGrad`` whose own gradient is registered (second order); filtered_lrelu's
  backward reads the 2-bit sign/clamp code saved by the forward (docs/ALGORITHM.md §1.4) and is itself differentiable.
* Custom ops have no XLA kernels: ``in_xla_context()`` tells ``resolve_impl`` to use the reference inside
  ``jit_compile=True`` functions.
* CPU ISA dispatch (custom_ops/cpu_isa.h): the hot kernels are compiled for x86-64-v2/v3/v4 and the library
  picks the best level the CPU runs; ``AFGAN_TF_OPS_ISA=v2|v3|v4`` forces one (a level this CPU cannot run makes
  the load fail with one line). ``build_info()`` reports the compiled, supported and chosen levels.
"""
import ctypes
import glob
import hashlib
import os
import platform
import threading
import warnings

import tensorflow as tf

from .. import device

OPS_ABI_VERSION = 3  # must equal kOpsAbiVersion in custom_ops/afgan_common.h
LIBRARY_ENV = "AFGAN_TF_OP_LIBRARY"
ISA_ENV = "AFGAN_TF_OPS_ISA"
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # afgan_tf/
_SRC_DIR = os.path.join(os.path.dirname(_PKG_DIR), "custom_ops")
_OP_NAMES = {"upfirdn2d": "afgan_upfirdn2d", "bias_act": "afgan_bias_act", "filtered_lrelu": "afgan_filtered_lrelu"}

_lock = threading.Lock()
_state = {"tried": False, "module": None, "error": None, "path": None, "isa": None}


def source_hash(src_dir=None):
    """sha256 of the concatenated custom_ops/*.h, *.cc (incl. .cu.cc) files in name order; None if absent."""
    src_dir = src_dir or _SRC_DIR
    files = sorted(glob.glob(os.path.join(src_dir, "*.h")) + glob.glob(os.path.join(src_dir, "*.cc")),
                   key=os.path.basename)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def library_path():
    """Path of the library the loader would use (None when there is none)."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return env
    cands = sorted(glob.glob(os.path.join(_PKG_DIR, "_afgan_tf_ops*.so")), key=os.path.getmtime, reverse=True)
    return cands[0] if cands else None


def _try_load():
    path = library_path()
    _state["path"] = path
    if path is None:
        raise RuntimeError("the compiled op library has not been built (no afgan_tf/_afgan_tf_ops*.so; run "
                           "`pip install --no-build-isolation --no-deps -e .` or scripts/build_bazel.sh and set "
                           f"{LIBRARY_ENV})")
    if not os.path.exists(path):
        raise RuntimeError(f"op library {path} (from {LIBRARY_ENV}) does not exist")
    try:
        mod = tf.load_op_library(path)
    except Exception as e:  # wrong architecture / TF version / undefined symbols
        raise RuntimeError(f"op library {path} failed to load ({type(e).__name__}: {str(e).strip()[:300]}); "
                           "rebuild it against the installed TensorFlow") from None
    if not hasattr(mod, "afgan_ops_info"):
        raise RuntimeError(f"{path} is not an afgan-tf op library (no AfganOpsInfo op)")
    with tf.device("/CPU:0"):
        abi, built_hash = mod.afgan_ops_info()
    abi = int(abi.numpy())
    built_hash = built_hash.numpy().decode()
    if abi != OPS_ABI_VERSION:
        raise RuntimeError(f"op library {path} is stale: op ABI version {abi}, this package needs "
                           f"{OPS_ABI_VERSION}; rebuild it")
    cur = source_hash()
    if cur is not None and built_hash != "unknown" and built_hash != cur:
        raise RuntimeError(f"op library {path} is stale: built from other sources than {_SRC_DIR} "
                           f"(hash {built_hash[:12]} != {cur[:12]}); rebuild it")
    for name in _OP_NAMES.values():
        if not hasattr(mod, name):
            raise RuntimeError(f"op library {path} lacks the op {name}; rebuild it")
    isa = _read_isa(path)
    _state["isa"] = isa
    if isa.get("error"):
        raise RuntimeError(f"op library {path}: {isa['error']}")
    return mod


def _read_isa(path):
    """The library's ISA levels (compiled / supported by this CPU / chosen) through its C entry points."""
    try:
        lib = ctypes.CDLL(path)  # already loaded by TF: same handle
        out = {}
        for key in ("compiled", "supported", "chosen", "error"):
            fn = getattr(lib, f"afgan_tf_ops_isa_{key}")
            fn.restype = ctypes.c_char_p
            out[key] = fn().decode()
        return out
    except (OSError, AttributeError) as e:
        return {"compiled": "unknown", "supported": "unknown", "chosen": "unknown",
                "error": f"no ISA dispatch entry points ({e}); rebuild it"}


def cpu_model():
    """The host CPU's model name and its AVX/FMA/BMI flags (benchmarks print them)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = sorted({f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "bmi"))})
                    break
    except OSError:
        pass
    return model, flags


def build_info():
    """dict: ``library`` (path or None), ``loaded`` (bool), ``error`` (load error or None), ISA levels
    ``compiled`` / ``supported`` (by this CPU) / ``chosen`` (e.g. "v2,v3,v4" / "v2,v3" / "v3"), ``forced``
    (the ``AFGAN_TF_OPS_ISA`` value or None), and the host's ``cpu`` model and ``cpu_flags``."""
    mod = _lib()
    isa = _state["isa"] or {}
    model, flags = cpu_model()
    return {"library": _state["path"], "loaded": mod is not None, "error": _state["error"],
            "compiled": isa.get("compiled"), "supported": isa.get("supported"),
            "chosen": isa.get("chosen") if mod is not None else None,
            "forced": os.environ.get(ISA_ENV) or None, "cpu": model, "cpu_flags": flags}


def build_info_line():
    """One line for benchmark headers: host CPU, ISA flags, compiled / chosen op-library levels."""
    i = build_info()
    lib = (f"op library ISA compiled {i['compiled']}, CPU runs {i['supported']}, chosen {i['chosen']}"
           + (f" (forced by {ISA_ENV}={i['forced']})" if i["forced"] else "")) if i["loaded"] else \
        f"op library not loaded ({i['error']})"
    return f"host CPU: {i['cpu']} [{' '.join(i['cpu_flags'])}]; {lib}"


def _lib():
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                try:
                    # init_scope: the probe op runs eagerly even when the first use is inside a tf.function
                    # (or XLA) trace.
                    with tf.init_scope():
                        _state["module"] = _try_load()
                except Exception as e:
                    _state["error"] = str(e)
                    if os.environ.get("AFGAN_TF_QUIET_OPS", "0") in ("", "0"):
                        warnings.warn(f"afgan_tf: compiled ops unavailable, using the pure-TF reference ops: {e}",
                                      RuntimeWarning, stacklevel=3)
                _state["tried"] = True
    return _state["module"]


def _reset_for_tests():
    """Forgets the load attempt (tests switch AFGAN_TF_OP_LIBRARY)."""
    with _lock:
        _state.update(tried=False, module=None, error=None, path=None, isa=None)


def is_available(op_name):
    """True when the compiled library loaded and provides ``op_name``."""
    if op_name not in _OP_NAMES:
        return False
    return _lib() is not None


def load_error():
    _lib()
    return _state["error"] or "no error"


def in_xla_context():
    """True while tracing inside a jit_compile=True function (custom ops have no XLA kernel)."""
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
        if tf.executing_eagerly():
            return False
        return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))
    except Exception:  # pragma: no cover - private API moved
        return False


def _require():
    mod = _lib()
    if mod is None:
        raise RuntimeError(f"compiled op library unavailable: {_state['error']}")
    return mod


def _compute_dtype(x):
    if x.dtype == tf.float32:
        return tf.float32
    if x.dtype == tf.float16:
        return tf.float16 if device.has_gpu() else tf.float32
    if x.dtype == tf.float64:
        raise TypeError("the compiled ops compute in float32/float16; float64 runs the reference (impl='ref')")
    if x.dtype.is_floating:
        return tf.float32
    raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype.name}")


def _filter(f, name, identity_rank):
    if f is None:
        return tf.ones([1] * identity_rank, tf.float32)
    f = tf.convert_to_tensor(f)
    if f.dtype != tf.float32:
        f = tf.cast(f, tf.float32)
    if f.shape.rank not in (1, 2):
        raise ValueError(f"{name} must be 1-D (separable) or 2-D [fh, fw], got shape {f.shape}")
    return f


# ------------------------------------------------------------------------------------------------ upfirdn2d
def upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    """Compiled upfirdn2d (see afgan_tf.ops.upfirdn2d for the semantics). x NHWC."""
    mod = _require()
    x = tf.convert_to_tensor(x)
    dt = _compute_dtype(x)
    xc = tf.cast(x, dt) if dt != x.dtype else x
    y = mod.afgan_upfirdn2d(xc, _filter(f, "f", 2), upx=int(upx), upy=int(upy), downx=int(downx),
                            downy=int(downy), px0=int(px0), px1=int(px1), py0=int(py0), py1=int(py1),
                            flip_filter=bool(flip_filter), gain=float(gain))
    return tf.cast(y, x.dtype) if dt != x.dtype else y


def _static_hw(t, what):
    h, w = t.shape[1], t.shape[2]
    if h is None or w is None:
        raise ValueError(f"the compiled upfirdn2d gradient needs static spatial sizes; {what} has shape {t.shape}")
    return int(h), int(w)


@tf.RegisterGradient("AfganUpfirdn2d")
def _upfirdn2d_grad(op, dy):
    x, f = op.inputs
    a = {k: op.get_attr(k) for k in ("upx", "upy", "downx", "downy", "px0", "px1", "py0", "py1", "flip_filter", "gain")}
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    h, w = _static_hw(x, "x")
    oh, ow = _static_hw(op.outputs[0], "y")
    gpx0 = fw - a["px0"] - 1
    gpx1 = w * a["upx"] - ow * a["downx"] + a["px0"] - a["upx"] + 1
    gpy0 = fh - a["py0"] - 1
    gpy1 = h * a["upy"] - oh * a["downy"] + a["py0"] - a["upy"] + 1
    mod = _require()
    dx = mod.afgan_upfirdn2d(dy, f, upx=a["downx"], upy=a["downy"], downx=a["upx"], downy=a["upy"], px0=gpx0,
                             px1=gpx1, py0=gpy0, py1=gpy1, flip_filter=not a["flip_filter"], gain=a["gain"])
    return [dx, None]


# ------------------------------------------------------------------------------------------------ bias_act
_Y_ONLY = ("linear", "relu", "lrelu")


def bias_act(x, b, axis, act, alpha, gain, clamp):
    """Compiled bias_act (see afgan_tf.ops.bias_act). alpha/gain resolved; clamp float or None."""
    mod = _require()
    x = tf.convert_to_tensor(x)
    dt = _compute_dtype(x)
    xc = tf.cast(x, dt) if dt != x.dtype else x
    rank = xc.shape.rank
    if rank is None:
        raise ValueError("bias_act: x must have a known rank")
    ax = int(axis) + rank if int(axis) < 0 else int(axis)
    if b is None:
        bc = tf.zeros([0], dt)
    else:
        if not 0 <= ax < rank:
            raise ValueError(f"bias_act: axis {axis} out of range for x of rank {rank}")
        bc = tf.cast(tf.convert_to_tensor(b), dt)
    y = mod.afgan_bias_act(xc, bc, act=str(act), alpha=float(alpha or 0.0), gain=float(gain),
                           clamp=-1.0 if clamp is None else float(clamp), axis=max(ax, 0))
    return tf.cast(y, x.dtype) if dt != x.dtype else y


def _ba_attrs(op):
    return {k: op.get_attr(k) for k in ("act", "alpha", "gain", "clamp", "axis")}


def _act_name(a):
    act = a["act"]
    return act.decode() if isinstance(act, bytes) else act


def _reduce_to_bias(d, axis):
    rank = d.shape.rank
    return tf.reduce_sum(d, axis=[i for i in range(rank) if i != axis])


@tf.RegisterGradient("AfganBiasAct")
def _bias_act_grad(op, dy):
    x, b = op.inputs
    y = op.outputs[0]
    a = _ba_attrs(op)
    act = _act_name(a)
    if act == "linear" and a["clamp"] < 0:
        # dy/dx = gain: no kernel call (TF's multiply, or nothing at gain 1); its own gradients are TF's.
        dx = dy if a["gain"] == 1 else dy * tf.constant(a["gain"], dy.dtype)
    else:
        empty = tf.zeros([0], dy.dtype)
        if act in _Y_ONLY:
            xin, bin_, yin = empty, empty, y
        else:
            xin, bin_, yin = x, b, (y if a["clamp"] >= 0 else empty)
        dx = _require().afgan_bias_act_grad(dy, xin, bin_, yin, order=1, **a)
    db = _reduce_to_bias(dx, a["axis"]) if b.shape.num_elements() != 0 else None
    return [dx, db]


@tf.RegisterGradient("AfganBiasActGrad")
def _bias_act_grad_grad(op, g):
    dy, x, b, y = op.inputs
    a = _ba_attrs(op)
    order = op.get_attr("order")
    mod = _require()
    d_dy = mod.afgan_bias_act_grad(g, x, b, y, order=order, **a)
    if _act_name(a) in _Y_ONLY:
        return [d_dy, None, None, None]  # piecewise linear: higher derivatives vanish
    if order >= 2:
        raise NotImplementedError(f"compiled bias_act supports up to second-order gradients (act={_act_name(a)!r}); "
                                  "use impl='ref' for higher orders")
    d_x = mod.afgan_bias_act_grad(g * dy, x, b, y, order=2, **a)
    d_b = _reduce_to_bias(d_x, a["axis"]) if b.shape.num_elements() != 0 else None
    return [d_dy, d_x, d_b, None]


# ------------------------------------------------------------------------------------------------ filtered_lrelu
_FL_ATTRS = ("upx", "upy", "downx", "downy", "px0", "px1", "py0", "py1", "gain", "slope", "flip_filter")


def filtered_lrelu(x, fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip_filter):
    """Compiled fused filtered_lrelu (see afgan_tf.ops.filtered_lrelu). Saves only a 2-bit code for backward."""
    mod = _require()
    x = tf.convert_to_tensor(x)
    dt = _compute_dtype(x)
    xc = tf.cast(x, dt) if dt != x.dtype else x
    bc = tf.zeros([0], dt) if b is None else tf.cast(tf.convert_to_tensor(b), dt)
    y, _ = mod.afgan_filtered_lrelu(xc, _filter(fu, "fu", 1), _filter(fd, "fd", 1), bc, upx=int(upx), upy=int(upy),
                                    downx=int(downx), downy=int(downy), px0=int(px0), px1=int(px1), py0=int(py0),
                                    py1=int(py1), gain=float(gain), slope=float(slope),
                                    clamp=-1.0 if clamp is None else float(clamp), flip_filter=bool(flip_filter))
    return tf.cast(y, x.dtype) if dt != x.dtype else y


@tf.RegisterGradient("AfganFilteredLrelu")
def _filtered_lrelu_grad(op, dy, _dcode):
    x, fu, fd, b = op.inputs
    code = op.outputs[1]
    a = {k: op.get_attr(k) for k in _FL_ATTRS}
    dx = _require().afgan_filtered_lrelu_grad(dy, fu, fd, code, tf.shape(x, out_type=tf.int32), adjoint=False, **a)
    db = tf.reduce_sum(dx, axis=[0, 1, 2]) if b.shape.num_elements() != 0 else None
    return [dx, None, None, db]


@tf.RegisterGradient("AfganFilteredLreluGrad")
def _filtered_lrelu_grad_grad(op, g):
    dy, fu, fd, code, x_shape = op.inputs
    a = {k: op.get_attr(k) for k in _FL_ATTRS}
    adjoint = op.get_attr("adjoint")
    # The grad op is linear in dy (the code is fixed): its adjoint is the same op in the other direction.
    shape = x_shape if not adjoint else tf.shape(dy, out_type=tf.int32)
    d_dy = _require().afgan_filtered_lrelu_grad(g, fu, fd, code, shape, adjoint=not adjoint, **a)
    return [d_dy, None, None, None, None]
