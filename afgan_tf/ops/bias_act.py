"""Fused bias + activation + gain + clamp (``bias_act``, docs/ALGORITHM.md §1.3).

``y = clamp(gain * act(x + b), -clamp, +clamp)`` with ``b`` broadcast along ``axis`` (NHWC channels: -1).

Steps of the reference: 1. add the bias along ``axis``; 2. activation; 3. multiply by ``gain``; 4. clip to
``[-clamp, clamp]`` (gradient zero where the value lies outside the clamp range, pass-through inside and on the
boundary, as the original's reference path). Gradients of any order come from autodiff of standard TF ops
(relu / lrelu use their native gradients: slope 1 for ``v > 0``, ``alpha`` otherwise, exactly 0 counts as
negative, like the original). The computation runs in the input dtype.
"""
import collections
import math

import numpy as np
import tensorflow as tf

from . import _common, _custom_ops, _selfcheck

Activation = collections.namedtuple("Activation", ["func", "def_alpha", "def_gain", "has_alpha"])


def _linear(x, alpha):
    return x


def _lrelu(x, alpha):
    if x.dtype == tf.float64:  # the op's alpha attribute is float32; keep float64 exact
        return tf.where(x > 0, x, x * tf.constant(alpha, tf.float64))
    return tf.nn.leaky_relu(x, alpha=alpha)


def _swish(x, alpha):
    return x * tf.sigmoid(x)


#: name -> (function(x, alpha), default alpha, default gain, uses alpha)
ACTIVATIONS = {
    "linear": Activation(_linear, 0.0, 1.0, False),
    "relu": Activation(lambda x, a: tf.nn.relu(x), 0.0, math.sqrt(2), False),
    "lrelu": Activation(_lrelu, 0.2, math.sqrt(2), True),
    "tanh": Activation(lambda x, a: tf.tanh(x), 0.0, 1.0, False),
    "sigmoid": Activation(lambda x, a: tf.sigmoid(x), 0.0, 1.0, False),
    "elu": Activation(lambda x, a: tf.nn.elu(x), 0.0, 1.0, False),
    "selu": Activation(lambda x, a: tf.nn.selu(x), 0.0, 1.0, False),
    "softplus": Activation(lambda x, a: tf.nn.softplus(x), 0.0, 1.0, False),
    "swish": Activation(_swish, 0.0, math.sqrt(2), False),
}


def resolve_args(act="linear", alpha=None, gain=None, clamp=None):
    """Validates and resolves (act, alpha, gain, clamp) -> (Activation, alpha float, gain float, clamp float/None)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation act={act!r}; expected one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    if clamp is not None:
        clamp = float(clamp)
        if not clamp >= 0:
            raise ValueError(f"bias_act: clamp must be None or >= 0, got {clamp}")
    return spec, alpha, gain, clamp


def _bias_act_ref(x, b, axis, spec, alpha, gain, clamp):
    dtype = x.dtype
    if b is not None:
        shape = [1] * x.shape.rank
        shape[axis] = -1
        x = x + tf.reshape(tf.cast(b, dtype), shape)                            # bias along `axis`
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * tf.constant(gain, dtype)
    if clamp is not None:
        c = tf.constant(clamp, dtype)
        x = tf.clip_by_value(x, -c, c)
    return x


def bias_act(x, b=None, axis=-1, act="linear", alpha=None, gain=None, clamp=None, impl="auto"):
    """Adds a bias, applies an activation, multiplies by a gain and clamps.

    Args:
        x: float tensor of any rank >= 1 (NHWC ``[N, H, W, C]`` or ``[N, C]`` in the networks).
        b: None or a 1-D bias whose length equals ``x.shape[axis]``.
        axis: axis of ``x`` the bias runs along (default -1, the NHWC channel axis). The original's NCHW
            ``dim=1`` is ``axis=-1`` here; its ``dim=2`` (height) is ``axis=1`` after the NCHW -> NHWC transpose.
        act: one of ``ACTIVATIONS`` (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish).
        alpha: lrelu slope (default 0.2); ignored by the other activations.
        gain: output gain (default: the activation's, e.g. sqrt(2) for lrelu/relu/swish, 1 otherwise).
        clamp: None or a value >= 0: clip the output to [-clamp, clamp].
        impl: "auto", "ref" or "custom".

    Returns:
        tensor with the shape and dtype of ``x``.
    """
    x = _common.to_tensor(x, name="x")
    _common.check_float(x, name="bias_act: x")
    rank = x.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"bias_act: x must have a known rank >= 1, got shape {x.shape}")
    if not -rank <= int(axis) < rank:
        raise ValueError(f"bias_act: axis={axis} is out of range for x of rank {rank}")
    axis = int(axis) % rank
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if b is not None:
        if isinstance(b, (tf.Tensor, tf.Variable)) or hasattr(b, "value"):
            b = tf.convert_to_tensor(b)
        else:
            b = np.asarray(b)
            if b.dtype.kind != "f":
                raise TypeError(f"bias_act: b must be floating-point, got dtype {b.dtype}")
            b = tf.convert_to_tensor(b, dtype=x.dtype)               # numpy / list -> dtype of x directly
        _common.check_float(b, name="bias_act: b")
        b = tf.cast(b, x.dtype)                                       # the bias follows the dtype of x
        if b.shape.rank != 1:
            raise ValueError(f"bias_act: b must be 1-D, got shape {b.shape}")
        if b.shape[0] is not None and x.shape[axis] is not None and b.shape[0] != x.shape[axis]:
            raise ValueError(f"bias_act: b has {b.shape[0]} entries but x.shape[{axis}] = {x.shape[axis]} "
                             f"(x shape {x.shape})")
    if _common.resolve_impl(impl, "bias_act", x.dtype) == "custom" and _selfcheck.passes(
            "bias_act", x, b, axis, act, alpha, gain, clamp):
        return _custom_ops.bias_act(x, b, axis, act, alpha, gain, clamp)
    return _bias_act_ref(x, b, axis, spec, alpha, gain, clamp)
