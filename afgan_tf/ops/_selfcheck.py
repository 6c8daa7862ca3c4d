"""Runtime self-check of the compiled GPU kernels (issue 17).

Where TensorFlow runs the compiled ops on a GPU, the first use of each kernel configuration (op, dtype and
the attributes that select the kernel's code path: factors, padding, filter shapes, activation, clamp, ...)
is checked once against the reference op on a small input:

  1. build a small input of that configuration (deterministic random x, filters and bias of the same shapes;
     6 channels, so the last channel quad is partial);
  2. run the compiled op on the GPU and the reference op (``impl="ref"``) on the CPU: forward and gradient
     w.r.t. x (the backward kernels are separate GPU kernels);
  3. compare: max |custom - ref| / max(1, max |ref|) <= 1e-4 (float32) / 2e-2 (float16), all finite.

On a mismatch (or an exception) ONE warning names the op and the configuration, and that configuration uses
the reference op from then on (``passes`` returns False); other configurations are unaffected. Before the
first check the library's CUDA build info (CUDA version, SASS / PTX architectures, embedded by setup.py)
is compared with the driver (``cuDriverGetVersion``) and the GPU's compute capability: a driver older than
the CUDA major version the kernels were built with, or a GPU with neither SASS nor a usable PTX, gives one
warning and every configuration falls back to the reference.

``AFGAN_TF_GPU_SELFCHECK=0`` disables both checks. Without a GPU nothing is checked (the CPU kernels have
their own tests); tests enable the check on the CPU with ``_enable_for_tests`` and inject a faulty kernel.
The op modules call ``passes(op, x, *canonical_args)`` right after ``resolve_impl`` chose "custom".
"""
import ctypes
import math
import os
import threading
import warnings

import numpy as np
import tensorflow as tf

ENV = "AFGAN_TF_GPU_SELFCHECK"
TOL = {tf.float32: 1e-4, tf.float16: 2e-2}
_lock = threading.RLock()
_results = {}  # config key -> bool
_state = {"device": None, "tested": None, "driver_ok": None}
# op -> compiled-op callable (canonical args of afgan_tf.ops._custom_ops); tests replace entries.
CUSTOM = {}


def enabled():
    """True when the self-check applies: not disabled by the env var, and a GPU runs the compiled ops."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _state["tested"] is not None:
        return True
    from afgan_tf import device
    return device.has_gpu()


def _device():
    return _state["tested"] or "/GPU:0"


def _enable_for_tests(device="/CPU:0", reset=True):
    """Runs the self-check on `device` (tests on machines without a GPU); reset forgets earlier results."""
    with _lock:
        _state["tested"] = device
        _state["driver_ok"] = True if device else None
        if reset:
            _results.clear()
        if not device:
            _state["tested"] = None


def _custom(op):
    if op in CUSTOM:
        return CUSTOM[op]
    from . import _custom_ops
    return getattr(_custom_ops, op)


# ------------------------------------------------------------------------------------------------ build / driver
def cuda_build_info(path=None):
    """The op library's CUDA build info: dict(cuda='12.5', sass=[70, ...], ptx=90), or None (CPU-only build,
    or a build that did not record it). Read from the library's exported string ``afgan_cuda_build_info``."""
    from . import _custom_ops
    path = path or _custom_ops.library_path()
    if not path or not os.path.exists(path):
        return None
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
    except OSError:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            return None
    try:
        raw = ctypes.cast(ctypes.addressof(ctypes.c_char.in_dll(lib, "afgan_cuda_build_info")), ctypes.c_char_p).value
    except ValueError:
        return None
    return parse_build_info(raw.decode())


def parse_build_info(s):
    """'cuda=12.5;sass=70,75;ptx=90' -> dict(cuda='12.5', sass=[70, 75], ptx=90)."""
    d = dict(kv.split("=", 1) for kv in s.split(";") if "=" in kv)
    return dict(cuda=d.get("cuda", ""), sass=[int(a) for a in d.get("sass", "").split(",") if a],
                ptx=int(d["ptx"]) if d.get("ptx") else None)


def driver_cuda_version():
    """The driver's CUDA version as (major, minor), or None without a driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
            return None
        return v.value // 1000, (v.value % 1000) // 10
    except OSError:
        return None


def driver_problem(info, driver, cc):
    """Why the kernels of build `info` cannot run with driver CUDA version `driver` ((major, minor)) on a GPU of
    compute capability `cc` (e.g. 86), or None when they can. Missing facts are not held against the build."""
    if not info or not info.get("cuda"):
        return None
    built = tuple(int(p) for p in info["cuda"].split(".")[:2])
    if driver is not None and driver[0] < built[0]:
        return (f"the NVIDIA driver supports CUDA {driver[0]}.{driver[1]} but the kernels were built with CUDA "
                f"{info['cuda']} (needs a driver for CUDA {built[0]}.x)")
    if cc is not None and cc not in info["sass"]:
        if info["ptx"] is None or cc < info["ptx"]:
            return (f"the GPU (sm_{cc}) has no kernel image in the library (SASS for "
                    f"{', '.join('sm_%d' % a for a in info['sass'])}, PTX for {info['ptx']})")
        if driver is not None and driver < built:
            return (f"the GPU (sm_{cc}) needs the PTX of CUDA {info['cuda']} compiled by the driver, which supports "
                    f"only CUDA {driver[0]}.{driver[1]}")
    return None


def _gpu_cc():
    try:
        from afgan_tf import device
        gpus = device.physical_devices("GPU")
        if not gpus:
            return None
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
        return cc[0] * 10 + cc[1] if cc else None
    except Exception:
        return None


def driver_ok():
    """Checks the build against the driver once; warns and returns False when the kernels cannot run."""
    if _state["driver_ok"] is None:
        problem = None
        try:
            problem = driver_problem(cuda_build_info(), driver_cuda_version(), _gpu_cc())
        except Exception:  # never fail an op because a probe failed
            problem = None
        if problem:
            warnings.warn(f"afgan_tf: compiled GPU kernels unusable: {problem}; every op uses the reference "
                          f"implementation on the GPU (rebuild the op library for this machine, or set {ENV}=0 to "
                          "skip this check)", RuntimeWarning, stacklevel=4)
        _state["driver_ok"] = problem is None
    return _state["driver_ok"]


# ------------------------------------------------------------------------------------------------ check
def _filter_like(f, rng):
    if f is None:
        return None
    shape = [int(d) for d in f.shape]
    v = rng.random(shape).astype(np.float32) + 0.1
    return tf.constant(v / v.sum())


def _small_extent(n_out_min, up, down, p0, p1, fu, fd, big=64):
    for n in range(1, big):
        if (n * up + p0 + p1 - (fu - 1) - (fd - 1) + down - 1) // down >= n_out_min:
            return n
    return big


def _taps(f, axis):
    if f is None:
        return 1
    return int(f.shape[0]) if f.shape.rank == 1 else int(f.shape[1 - axis])


def _config(op, x, args):
    """(key, description, small-input builder, reference fn) for one call of `op`."""
    dt = x.dtype
    rng = np.random.default_rng(17)
    if op == "filtered_lrelu":
        fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip = args
        fu = None if fu is None else tf.convert_to_tensor(fu)
        fd = None if fd is None else tf.convert_to_tensor(fd)
        shp = lambda f: None if f is None else tuple(int(d) for d in f.shape)
        key = (op, dt.name, shp(fu), shp(fd), b is not None, upx, upy, downx, downy, px0, px1, py0, py1,
               float(gain), float(slope), clamp, bool(flip))
        desc = (f"{dt.name}, fu {shp(fu)}, fd {shp(fd)}, up ({upx}, {upy}), down ({downx}, {downy}), "
                f"padding ({px0}, {px1}, {py0}, {py1}), gain {gain:g}, slope {slope:g}, clamp {clamp}, flip {flip}")

        def build():
            H = _small_extent(3, upy, downy, py0, py1, _taps(fu, 1), _taps(fd, 1))
            W = _small_extent(4, upx, downx, px0, px1, _taps(fu, 0), _taps(fd, 0))
            xs = tf.constant(rng.standard_normal([1, H, W, 6]) * 2, dt)
            bs = None if b is None else tf.constant(rng.standard_normal([6]) * 0.5, dt)
            return xs, (_filter_like(fu, rng), _filter_like(fd, rng), bs, upx, upy, downx, downy, px0, px1, py0,
                        py1, gain, slope, clamp, flip)

        def ref(xs, a):
            from .filtered_lrelu import filtered_lrelu
            fu_, fd_, b_, ux, uy, dx, dy, x0, x1, y0, y1, g, sl, cl, fl = a
            return filtered_lrelu(xs, fu_, fd_, b_, up=[ux, uy], down=[dx, dy], padding=[x0, x1, y0, y1], gain=g,
                                  slope=sl, clamp=cl, flip_filter=fl, impl="ref")
    elif op == "upfirdn2d":
        f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain = args
        f = None if f is None else tf.convert_to_tensor(f)
        fs = None if f is None else tuple(int(d) for d in f.shape)
        key = (op, dt.name, fs, upx, upy, downx, downy, px0, px1, py0, py1, bool(flip), float(gain))
        desc = (f"{dt.name}, f {fs}, up ({upx}, {upy}), down ({downx}, {downy}), padding ({px0}, {px1}, {py0}, "
                f"{py1}), flip {flip}, gain {gain:g}")

        def build():
            H = _small_extent(3, upy, downy, py0, py1, _taps(f, 1), 1)
            W = _small_extent(4, upx, downx, px0, px1, _taps(f, 0), 1)
            xs = tf.constant(rng.standard_normal([1, H, W, 6]), dt)
            return xs, (_filter_like(f, rng), upx, upy, downx, downy, px0, px1, py0, py1, flip, gain)

        def ref(xs, a):
            from .upfirdn2d import upfirdn2d
            f_, ux, uy, dx, dy, x0, x1, y0, y1, fl, g = a
            return upfirdn2d(xs, f_, up=[ux, uy], down=[dx, dy], padding=[x0, x1, y0, y1], flip_filter=fl, gain=g,
                             impl="ref")
    elif op == "bias_act":
        b, axis, act, alpha, gain, clamp = args
        rank = x.shape.rank
        ax = int(axis) % rank if rank else 0
        key = (op, dt.name, rank, ax, b is not None, act, alpha, float(gain), clamp)
        desc = f"{dt.name}, rank {rank}, axis {ax}, bias {b is not None}, act {act}, alpha {alpha}, gain {gain:g}, clamp {clamp}"

        def build():
            shape = [2] * rank
            shape[ax] = 6
            xs = tf.constant(rng.standard_normal(shape) * 2, dt)
            bs = None if b is None else tf.constant(rng.standard_normal([6]), dt)
            return xs, (bs, ax, act, alpha, gain, clamp)

        def ref(xs, a):
            from .bias_act import bias_act
            bs, ax_, act_, alpha_, gain_, clamp_ = a
            return bias_act(xs, bs, axis=ax_, act=act_, alpha=alpha_, gain=gain_, clamp=clamp_, impl="ref")
    else:
        raise ValueError(f"self-check: unknown op {op!r}")
    return key, desc, build, ref


def _rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return math.inf
    if not np.all(np.isfinite(got)):
        return math.inf
    return float(np.max(np.abs(got - ref))) / max(1.0, float(np.max(np.abs(ref)))) if ref.size else 0.0


def _run(fn, xs, a):
    """Forward and the gradient w.r.t. x for a fixed random output gradient."""
    with tf.GradientTape() as t:
        t.watch(xs)
        y = fn(xs, a)
    g = tf.constant(np.random.default_rng(3).standard_normal(y.shape), y.dtype)
    return y.numpy().astype(np.float32), t.gradient(y, xs, output_gradients=g).numpy().astype(np.float32)


def _check(op, key, desc, build, ref):
    try:
        with tf.device("/CPU:0"):
            xs, a = build()
            ref_y, ref_dx = _run(ref, xs, a)
        with tf.device(_device()):
            custom = _custom(op)
            got_y, got_dx = _run(lambda xx, aa: custom(xx, *aa), tf.identity(xs), a)
        tol = TOL.get(xs.dtype, 1e-4)
        ey, edx = _rel_err(got_y, ref_y), _rel_err(got_dx, ref_dx)
        if ey <= tol and edx <= tol:
            return True, None
        return False, f"max relative error forward {ey:.3g}, gradient {edx:.3g} > {tol:g}"
    except Exception as e:  # a kernel that fails to run is a failed check
        return False, f"{type(e).__name__}: {str(e).strip()[:200]}"


def passes(op, x, *args):
    """True when the compiled kernel may run this configuration of `op` (first use: checked, see the module
    docstring). args: the canonical arguments of ``afgan_tf.ops._custom_ops.<op>`` after x."""
    if not enabled():
        return True
    with _lock:
        if not driver_ok():
            return False
        x = tf.convert_to_tensor(x)
        key, desc, build, ref = _config(op, x, args)
        if key not in _results:
            # In a thread of its own: eager there even while a tf.function is traced here, and with no gradient
            # tape of the caller recording (or paused, as tf.init_scope would leave ours).
            out = []
            t = threading.Thread(target=lambda: out.append(_check(op, key, desc, build, ref)), daemon=True)
            t.start()
            t.join()
            ok, why = out[0] if out else (False, "the check did not finish")
            if not ok:
                warnings.warn(f"afgan_tf: the compiled GPU kernel of {op} failed its self-check for configuration "
                              f"[{desc}]: {why}; this configuration uses the reference op from now on "
                              f"({ENV}=0 disables the check)", RuntimeWarning, stacklevel=3)
            _results[key] = ok
        return _results[key]
