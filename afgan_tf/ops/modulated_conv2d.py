"""Modulated convolution, StyleGAN3 variant (docs/ALGORITHM.md §1.6), NHWC, weight ``[kh, kw, in, out]``, styles ``[N, in]``.

Steps (both forms):
  1. if ``demodulate``: pre-normalise ``w`` per output channel by its RMS and ``s`` by the RMS over the *whole
     batch* (numerical range only; both cancel under demodulation apart from the 1e-8);
  2. modulate ``W'[n, o, i] = w[o, i] * s[n, i]``;
  3. if ``demodulate``: ``W'[n, o] *= rsqrt(sum_{i, u, v} W'[n, o, i, u, v]^2 + 1e-8)``;
  4. if ``input_gain`` (scalar, ``[in]`` or ``[N, in]``): ``W'[n, o, i] *= input_gain[n, i]`` (after demodulation);
  5. per-sample correlation with zero padding ``padding`` on every side.

``modulated_conv2d`` computes this as "scale activations, one shared conv, scale outputs":
``y[n, o] = d[n, o] * conv(x[n] * s[n] * g[n], w)[o]`` with the demodulation coefficients ``d``. No per-sample
weights are built, so it is one ordinary conv (fast, XLA-friendly). ``modulated_conv2d_grouped`` is the literal
per-sample weight + grouped conv form (used to prove the equivalence in the tests).
"""
import numpy as np
import tensorflow as tf

from . import _common


def _prepare(x, w, s, padding, input_gain, op):
    x = _common.to_tensor(x, name="x")
    _common.check_float(x, name=f"{op}: x")
    _common.check_rank(x, 4, name=f"{op}: x")
    w = _common.to_tensor(w, name="w")
    _common.check_float(w, name=f"{op}: w")
    _common.check_rank(w, 4, name=f"{op}: w", layout="[kh, kw, in, out]")
    s = _common.to_tensor(s, name="s")
    _common.check_float(s, name=f"{op}: s")
    _common.check_rank(s, 2, name=f"{op}: s", layout="[N, in]")
    in_ch = int(w.shape[2])
    if x.shape[3] != in_ch or s.shape[1] != in_ch:
        raise ValueError(f"{op}: channel mismatch: x {x.shape} (last axis), w {w.shape} (axis 2) and s {s.shape} "
                         f"(axis 1) must all have `in` channels")
    if x.shape[0] is not None and s.shape[0] is not None and x.shape[0] != s.shape[0]:
        raise ValueError(f"{op}: batch of x {x.shape} and s {s.shape} differ")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"{op}: padding must be an int >= 0, got {padding!r}")
    g = None
    if input_gain is not None:
        g = input_gain
        if not isinstance(g, (tf.Tensor, tf.Variable)) and not hasattr(g, "value"):
            g = np.asarray(g, np.float64 if x.dtype == tf.float64 else np.float32)   # keep float64 exact
        g = tf.convert_to_tensor(g)
        _common.check_float(g, name=f"{op}: input_gain")
        if g.shape.rank not in (0, 1, 2) or (g.shape.rank >= 1 and g.shape[-1] not in (in_ch, None)):
            raise ValueError(f"{op}: input_gain must be a scalar, [in] or [N, in] with in={in_ch}, got {g.shape}")
        if g.shape.rank == 2 and g.shape[0] is not None and s.shape[0] is not None and g.shape[0] != s.shape[0]:
            raise ValueError(f"{op}: input_gain {g.shape} does not match the batch of s {s.shape}")
    # Weights and styles are handled in float32 (the original builds the weights in fp32), float64 for float64 x.
    wdt = tf.float64 if x.dtype == tf.float64 else tf.float32
    return x, tf.cast(w, wdt), tf.cast(s, wdt), None if g is None else tf.cast(g, wdt)


def _prenormalize(w, s):
    w = w * tf.math.rsqrt(tf.reduce_mean(tf.square(w), axis=[0, 1, 2], keepdims=True))    # per out channel
    s = s * tf.math.rsqrt(tf.reduce_mean(tf.square(s)))                                  # one batch scalar
    return w, s


def _pad(x, p):
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]) if p else x


def modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None):
    """Modulated conv as activation scaling + one shared conv + output scaling.

    Args:
        x: ``[N, H, W, in]`` activations.
        w: ``[kh, kw, in, out]`` base weight.
        s: ``[N, in]`` styles.
        demodulate: apply the weight (pre-)normalisation and demodulation.
        padding: zero padding on every side (int >= 0); ``kh - 1`` gives the "full" conv of the synthesis layers.
        input_gain: None, scalar, ``[in]`` or ``[N, in]`` gain applied to the weights after demodulation.

    Returns:
        ``[N, H + 2p - kh + 1, W + 2p - kw + 1, out]`` in the dtype of x.
    """
    x, w, s, g = _prepare(x, w, s, padding, input_gain, "modulated_conv2d")
    if demodulate:
        w, s = _prenormalize(w, s)
        # d[n, o] = rsqrt(sum_{i,u,v} (w[u, v, i, o] s[n, i])^2 + 1e-8) = rsqrt(s^2 @ sum_{u,v} w^2 + 1e-8)
        dcoefs = tf.math.rsqrt(tf.matmul(tf.square(s), tf.reduce_sum(tf.square(w), axis=[0, 1])) + 1e-8)  # [N, out]
    scale = s if g is None else s * g                                                     # [N, in]
    y = x * tf.cast(scale[:, None, None, :], x.dtype)                                      # [N, H, W, in]
    y = tf.nn.conv2d(_pad(y, padding), tf.cast(w, x.dtype), strides=1, padding="VALID")  # [N, H', W', out]
    if demodulate:
        y = y * tf.cast(dcoefs[:, None, None, :], x.dtype)
    return y


def modulated_conv2d_grouped(x, w, s, demodulate=True, padding=0, input_gain=None):
    """Literal form: per-sample modulated weights and one grouped convolution (groups = N). Same arguments."""
    x, w, s, g = _prepare(x, w, s, padding, input_gain, "modulated_conv2d_grouped")
    if x.shape[0] is None:
        raise ValueError("modulated_conv2d_grouped needs a static batch size")
    n, h, wd, cin = [int(d) for d in x.shape]
    kh, kw, _, cout = [int(d) for d in w.shape]
    if demodulate:
        w, s = _prenormalize(w, s)
    wn = w[None] * s[:, None, None, :, None]                                              # [N, kh, kw, in, out]
    if demodulate:
        d = tf.math.rsqrt(tf.reduce_sum(tf.square(wn), axis=[1, 2, 3], keepdims=True) + 1e-8)  # [N, 1, 1, 1, out]
        wn = wn * d
    if g is not None:
        gb = tf.broadcast_to(g, [n, cin]) if g.shape.rank < 2 else g                      # [N, in]
        wn = wn * gb[:, None, None, :, None]
    # Grouped conv: x -> [1, H, W, N*in]; weights [kh, kw, in, N*out] (group n uses channels n*in.. / n*out..).
    xg = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, wd, n * cin])                   # [1, H, W, N*in]
    wg = tf.reshape(tf.transpose(wn, [1, 2, 3, 0, 4]), [kh, kw, cin, n * cout])           # [kh, kw, in, N*out]
    y = tf.nn.conv2d(_pad(xg, padding), tf.cast(wg, x.dtype), strides=1, padding="VALID")  # [1, H', W', N*out]
    ho, wo = int(y.shape[1]), int(y.shape[2])
    return tf.transpose(tf.reshape(y, [ho, wo, n, cout]), [2, 0, 1, 3])                  # [N, H', W', out]
