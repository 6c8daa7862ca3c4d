"""Argument handling shared by every op.

* converts numpy / Python inputs to tensors,
* parses the original's int / ``[x, y]`` / ``[x0, x1, y0, y1]`` forms of ``up``, ``down`` and ``padding``,
* validates x and filters (``prepare_x``, ``filter_tensor``) and holds the small NHWC shape helpers used by
  several ops (``dims``, ``crop``),
* chooses the implementation (``impl="auto" | "ref" | "custom"``).

Import graph (a tree, no cycle): the op modules import ``_common``; ``_common`` imports the loader
``_custom_ops`` (a leaf: it imports no op module) and ``afgan_tf.device`` (the one device probe).

Set the environment variable ``AFGAN_TF_FORCE_REF=1`` to force the pure-TF reference path everywhere
(``impl="auto"`` and ``impl="custom"`` then both run the reference).
"""
import os

import numpy as np
import tensorflow as tf

from .. import device
from . import _custom_ops

FORCE_REF_ENV = "AFGAN_TF_FORCE_REF"
IMPLS = ("auto", "ref", "custom")


def to_tensor(x, name="x", dtype=None):
    """numpy array / list / tensor -> tf.Tensor (float32 for numpy float64 unless dtype is given)."""
    if isinstance(x, (tf.Tensor, tf.Variable)) or hasattr(x, "value") and isinstance(getattr(x, "value"), tf.Variable):
        t = tf.convert_to_tensor(x)
    else:
        a = np.asarray(x)
        if dtype is None and a.dtype == np.float64:
            dtype = tf.float32
        t = tf.convert_to_tensor(a, dtype=dtype)
    if dtype is not None and t.dtype != dtype:
        t = tf.cast(t, dtype)
    return t


def check_float(x, name="x"):
    if not x.dtype.is_floating:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype.name}")


def check_rank(x, rank, name="x", layout="[N, H, W, C]"):
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(f"{name} must have rank {rank} {layout}, got shape {x.shape}")


def parse_scaling(v, name="up"):
    """int or [x, y] -> (sx, sy), both >= 1."""
    if isinstance(v, (int, np.integer)):
        v = [int(v), int(v)]
    v = [int(a) for a in v]
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or [x, y], got {v}")
    if v[0] < 1 or v[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v[0], v[1]


def parse_padding(p, name="padding"):
    """int, [px, py] or [x0, x1, y0, y1] -> (px0, px1, py0, py1). Negative values crop."""
    if isinstance(p, (int, np.integer)):
        p = [int(p), int(p)]
    p = [int(a) for a in p]
    if len(p) == 2:
        px, py = p
        p = [px, px, py, py]
    if len(p) != 4:
        raise ValueError(f"{name} must be an int, [px, py] or [x0, x1, y0, y1], got {p}")
    return tuple(p)


def filter_size(f, name="f"):
    """Filter (None / 1-D separable / 2-D [fh, fw]) -> (fw, fh)."""
    if f is None:
        return 1, 1
    shape = f.shape
    if shape.rank not in (1, 2):
        raise ValueError(f"{name} must be 1-D (separable) or 2-D [fh, fw], got shape {shape}")
    fw = int(shape[-1])
    fh = int(shape[0])
    if fw < 1 or fh < 1:
        raise ValueError(f"{name} must have at least one tap, got shape {shape}")
    return fw, fh


# Ops whose compiled CPU kernel is slower than TF's reference: impl="auto" uses the reference for them on
# machines without a GPU; impl="custom" still runs the compiled kernel. Empty since the bias_act CPU kernel was
# rewritten (per-activation templates, vectorised row loops): it now measures 0.3-1.0x the reference's time on
# the network shapes (benchmarks/bench_bias_act.py, docs/custom_ops.md). Kept as the switch for a future op.
AUTO_PREFERS_REF_ON_CPU = frozenset()


def force_ref():
    return os.environ.get(FORCE_REF_ENV, "0").lower() not in ("", "0", "false", "no")


def resolve_impl(impl, op_name, dtype=None):
    """Returns "ref" or "custom" for the given request.

    "auto": the compiled kernel when the op library loaded, provides ``op_name`` and we are not inside an XLA
    (``jit_compile=True``) function, except for ``AUTO_PREFERS_REF_ON_CPU`` ops on GPU-less machines; otherwise the
    reference. "custom": the compiled kernel or a clear error.
    The env var ``AFGAN_TF_FORCE_REF`` forces "ref". float64 inputs (``dtype``) always run the reference (the
    kernels compute in float32 / float16).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref" or force_ref() or dtype == tf.float64:
        return "ref"
    if impl == "custom":
        if _custom_ops.in_xla_context():
            raise RuntimeError(f"impl='custom' cannot run inside jit_compile=True (XLA); use impl='auto' or 'ref'")
        if not _custom_ops.is_available(op_name):
            raise RuntimeError(f"impl='custom' requested for {op_name} but the compiled op library is not "
                               f"available: {_custom_ops.load_error()}")
        return "custom"
    if op_name in AUTO_PREFERS_REF_ON_CPU and not device.has_gpu():
        return "ref"
    # XLA first: probing (loading) the library inside a jit_compile trace would trace the probe op into XLA.
    if not _custom_ops.in_xla_context() and _custom_ops.is_available(op_name):
        return "custom"
    return "ref"


# ----------------------------------------------------------------------------------------------------------------
# Input checks and NHWC helpers shared by the op modules

def prepare_x(x, op):
    """x -> float tensor of rank 4 [N, H, W, C] with a static channel count (errors name ``op``)."""
    x = to_tensor(x, name="x")
    check_float(x, name=f"{op}: x")
    check_rank(x, 4, name=f"{op}: x")
    if x.shape[3] is None:
        raise ValueError(f"{op}: the channel axis of x must be statically known, got shape {x.shape}")
    return x


def filter_tensor(f, name="f"):
    """None / array / tensor -> None or float32 tensor of rank 1 or 2 (validated)."""
    if f is None:
        return None
    f = to_tensor(f, name=name, dtype=tf.float32)
    filter_size(f, name=name)  # raises on bad rank / empty filter
    return f


def dims(x):
    """Static dims where known, dynamic scalars otherwise."""
    dyn = tf.shape(x)
    return [d if d is not None else dyn[i] for i, d in enumerate(x.shape.as_list())]


def crop(x, y0, y1, x0, x1):
    """Removes y0/y1 rows and x0/x1 columns (all >= 0) of [N, H, W, C] with ``tf.slice`` (its gradient is a pad;
    the gradient of a strided slice is far slower on CPU)."""
    if y0 == y1 == x0 == x1 == 0:
        return x
    _, h, w, _ = dims(x)
    return tf.slice(x, [0, y0, x0, 0], [-1, h - y0 - y1, w - x0 - x1, -1])
