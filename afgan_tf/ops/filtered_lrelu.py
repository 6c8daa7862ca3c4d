"""The alias-free nonlinearity ``filtered_lrelu`` (docs/ALGORITHM.md §1.4), NHWC.

Reference = the composition of the original (each step an op of this package):
  1. ``t = x + b`` (per-channel bias, before upsampling);
  2. ``t = upfirdn2d(t, fu, up=up, padding=padding, gain=upx*upy, flip_filter)`` (zero-stuff, pad, filter);
  3. ``t = gain * lrelu(t, slope)``;
  4. ``t = clip(t, -clamp, clamp)`` when ``clamp`` is given;
  5. ``y = upfirdn2d(t, fd, down=down, flip_filter)`` (valid filter with unit gain, keep every down-th sample).

Output size per axis: ``(n * up + p0 + p1 - (Fu - 1) - (Fd - 1) + (down - 1)) // down``.
Gradients (any order) by autodiff of the composition; the compiled kernel (``impl="custom"``) keeps a compact
sign/clamp code instead of the high-rate intermediate.
"""
import math

import numpy as np
import tensorflow as tf

from . import _common, _custom_ops, _selfcheck
from .bias_act import bias_act
from .upfirdn2d import upfirdn2d


def output_size(n, up, down, p0, p1, fu_taps, fd_taps, axis="x"):
    """Per-axis output size; raises a ValueError naming the axis when the padding empties the output."""
    tmp = n * up + p0 + p1 - fu_taps + 1           # samples of the high-rate intermediate
    out = (n * up + p0 + p1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down
    if tmp < 1 or tmp < fd_taps or out < 1:
        raise ValueError(f"filtered_lrelu: padding empties the output along {axis}: {n} samples * up {up} + "
                         f"padding ({p0}, {p1}) leaves {tmp} high-rate samples for fu ({fu_taps} taps) then fd "
                         f"({fd_taps} taps)")
    return out


def _parse_args(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, op="filtered_lrelu"):
    """Validates the arguments; returns (x, fu, fd, b, canonical tuple)."""
    x = _common.prepare_x(x, op)
    fu = _common.filter_tensor(fu, "fu")
    fd = _common.filter_tensor(fd, "fd")
    upx, upy = _common.parse_scaling(up, "up")
    downx, downy = _common.parse_scaling(down, "down")
    px0, px1, py0, py1 = _common.parse_padding(padding)
    fu_w, fu_h = _common.filter_size(fu, "fu")
    fd_w, fd_h = _common.filter_size(fd, "fd")
    gain = float(gain)
    slope = float(slope)
    if not gain > 0:
        raise ValueError(f"{op}: gain must be > 0, got {gain}")
    if clamp is not None:
        clamp = float(clamp)
        if not clamp >= 0:
            raise ValueError(f"{op}: clamp must be None or >= 0, got {clamp}")
    c = x.shape[3]
    if b is not None:
        if isinstance(b, (tf.Tensor, tf.Variable)) or hasattr(b, "value"):
            b = tf.convert_to_tensor(b)
        else:
            b = tf.convert_to_tensor(np.asarray(b), dtype=x.dtype)     # numpy / list -> dtype of x directly
        _common.check_float(b, name=f"{op}: b")
        if b.shape.rank != 1 or (b.shape[0] is not None and b.shape[0] != c):
            raise ValueError(f"{op}: b must have shape [{c}] (channels of x {x.shape}), got {b.shape}")
    if x.shape[1] is not None:
        output_size(int(x.shape[1]), upy, downy, py0, py1, fu_h, fd_h, "y (height)")
    if x.shape[2] is not None:
        output_size(int(x.shape[2]), upx, downx, px0, px1, fu_w, fd_w, "x (width)")
    canon = (upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, bool(flip_filter))
    return x, fu, fd, b, canon


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2, clamp=None,
                   flip_filter=False, impl="auto"):
    """Bias, upsample (``fu``), leaky ReLU with gain and clamp, downsample (``fd``).

    Args:
        x: float tensor ``[N, H, W, C]``.
        fu: up-filter: None (identity), 1-D separable or 2-D ``[fh, fw]``, float32.
        fd: down-filter, same forms.
        b: None or bias ``[C]``.
        up: int or ``[x, y]`` upsampling factor; down: int or ``[x, y]`` downsampling factor.
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]`` in up-sampled pixels (negative crops).
        gain: gain after the lrelu (default sqrt(2)).
        slope: negative slope of the lrelu (default 0.2).
        clamp: None or a value >= 0 to clip the high-rate signal to.
        flip_filter: False = convolution, True = correlation (both filters).
        impl: "auto", "ref" or "custom".

    Returns:
        ``[N, out_h, out_w, C]`` in the dtype of x.
    """
    x, fu, fd, b, canon = _parse_args(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
    upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip_filter = canon
    if _common.resolve_impl(impl, "filtered_lrelu", x.dtype) == "custom" and _selfcheck.passes(
            "filtered_lrelu", x, fu, fd, b, *canon):
        return _custom_ops.filtered_lrelu(x, fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope,
                                          clamp, flip_filter)
    return _filtered_lrelu_ref(x, fu, fd, b, *canon)


def _filtered_lrelu_ref(x, fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip_filter):
    """Reference composition on canonical arguments (x [N, H, W, C])."""
    if b is not None:
        x = bias_act(x, b, impl="ref")                                              # [N, H, W, C]
    x = upfirdn2d(x, fu, up=[upx, upy], padding=[px0, px1, py0, py1], gain=upx * upy, flip_filter=flip_filter,
                  impl="ref")                                                       # [N, Ht, Wt, C] high rate
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp, impl="ref")  # [N, Ht, Wt, C]
    x = upfirdn2d(x, fd, down=[downx, downy], flip_filter=flip_filter, impl="ref")  # [N, Ho, Wo, C]
    return x


# ----------------------------------------------------------------------------------------------------------------
# Memory-lean variant: same forward, custom gradient that keeps only an int8 code per high-rate sample.

def _adjoint_pad(n, up, down, p0, taps, out):
    """Padding (before, after) of the upfirdn2d that computes the gradient of a pass (docs/ALGORITHM.md §1.2)."""
    return taps - p0 - 1, n * up - out * down + p0 - up + 1


def filtered_lrelu_lowmem(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                          clamp=None, flip_filter=False):
    """``filtered_lrelu`` (reference path) whose backward pass keeps an int8 code instead of the float
    high-rate intermediate (the docs/ALGORITHM.md §1.4 recipe).

    Forward: identical to the reference composition. Saved for the backward pass: one int8 per high-rate sample
    (0 = positive, 1 = negative -> slope, 2 = clamped -> zero gradient). Backward: the adjoint of the down pass
    (an ``upfirdn2d`` with up/down swapped, the filter flipped and the padding of docs/ALGORITHM.md §1.2), times
    ``gain`` / ``gain * slope`` / 0 from the code, then the adjoint of the up pass; ``db`` = sum of ``dx``.
    The backward is built from ``upfirdn2d`` calls, so it is differentiable again (the second derivative through
    the piecewise-linear lrelu/clamp is zero almost everywhere, exactly as for autodiff). Same arguments as
    ``filtered_lrelu`` (without ``impl``).
    """
    x, fu, fd, b, canon = _parse_args(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter,
                                      op="filtered_lrelu_lowmem")
    upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip = canon
    fu_w, fu_h = _common.filter_size(fu, "fu")
    fd_w, fd_h = _common.filter_size(fd, "fd")
    if x.shape[1] is None or x.shape[2] is None:
        raise ValueError(f"filtered_lrelu_lowmem needs static H and W, got x shape {x.shape}")
    h, w = int(x.shape[1]), int(x.shape[2])
    ht, wt = h * upy + py0 + py1 - fu_h + 1, w * upx + px0 + px1 - fu_w + 1          # high-rate size
    ho, wo = (ht - fd_h) // downy + 1, (wt - fd_w) // downx + 1                    # output size
    # Gradient paddings: adjoint of the down pass (input ht x wt) and of the up pass (input h x w).
    dpx = _adjoint_pad(wt, 1, downx, 0, fd_w, wo)
    dpy = _adjoint_pad(ht, 1, downy, 0, fd_h, ho)
    upx_pad = _adjoint_pad(w, upx, 1, px0, fu_w, wt)
    upy_pad = _adjoint_pad(h, upy, 1, py0, fu_h, ht)
    has_b = b is not None

    def forward(xx, bb):
        t = xx if bb is None else bias_act(xx, bb, impl="ref")                     # [N, H, W, C]
        t = upfirdn2d(t, fu, up=[upx, upy], padding=[px0, px1, py0, py1], gain=upx * upy, flip_filter=flip,
                      impl="ref")                                                   # [N, Ht, Wt, C]
        neg = tf.logical_not(t > 0)
        v = tf.where(neg, t * tf.constant(slope, t.dtype), t) * tf.constant(gain, t.dtype)
        code = tf.cast(neg, tf.int8)                                                # 1 = negative branch
        if clamp is not None:
            c = tf.constant(clamp, t.dtype)
            outside = tf.logical_or(v > c, v < -c)
            v = tf.clip_by_value(v, -c, c)
            code = tf.where(outside, tf.constant(2, tf.int8), code)               # 2 = clamped
        y = upfirdn2d(v, fd, down=[downx, downy], flip_filter=flip, impl="ref")    # [N, Ho, Wo, C]
        return y, code

    def backward(dy, code, dtype):
        dt = upfirdn2d(dy, fd, up=[downx, downy], padding=[dpx[0], dpx[1], dpy[0], dpy[1]],
                       flip_filter=not flip, impl="ref")                            # [N, Ht, Wt, C]
        factor = tf.gather(tf.constant([gain, gain * slope, 0.0], dtype), tf.cast(code, tf.int32))
        dt = dt * factor
        dx = upfirdn2d(dt, fu, down=[upx, upy], padding=[upx_pad[0], upx_pad[1], upy_pad[0], upy_pad[1]],
                       gain=upx * upy, flip_filter=not flip, impl="ref")            # [N, H, W, C]
        return dx

    if has_b:
        @tf.custom_gradient
        def op(xx, bb):
            y, code = forward(xx, bb)

            def grad(dy):
                dx = backward(dy, code, xx.dtype)
                return dx, tf.cast(tf.reduce_sum(dx, axis=[0, 1, 2]), bb.dtype)
            return y, grad
        return op(x, tf.cast(b, x.dtype) if b.dtype != x.dtype else b)

    @tf.custom_gradient
    def op_nb(xx):
        y, code = forward(xx, None)
        return y, lambda dy: backward(dy, code, xx.dtype)
    return op_nb(x)
