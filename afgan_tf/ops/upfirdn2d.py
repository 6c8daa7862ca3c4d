"""Upsample, pad, FIR-filter and downsample (``upfirdn2d``) for NHWC tensors, plus its wrappers (docs/ALGORITHM.md §1.2).

Public functions: ``setup_filter``, ``upfirdn2d``, ``filter2d``, ``upsample2d``, ``downsample2d``.

Reference algorithm (per channel, per axis, in this order):
  1. zero-stuffing: sample ``i`` goes to ``i * up``, the ``up - 1`` following entries are zero;
  2. pad / crop with zeros (``padding`` is measured in the up-sampled domain, negative = crop);
  3. FIR filter in "valid" mode: a true convolution unless ``flip_filter`` (then a correlation);
     a 1-D filter is applied along x then along y, a 2-D ``[fh, fw]`` filter as one 2-D pass;
  4. decimation: keep every ``down``-th sample starting at 0 (done by the stride of the last conv);
  5. gain: 2-D filters are scaled by ``gain``, each pass of a separable filter by ``sqrt(gain)``.
A separable filter runs steps 1-4 along x first (on the un-stuffed rows), then along y: the axes commute and
the x pass does not waste work on the all-zero rows of the y zero-stuffing. A 1-D pass that upsamples without
decimating uses the polyphase form (``up`` short correlations of the un-stuffed input, interleaved), which
skips the products with the stuffed zeros (``up`` times fewer multiply-adds, same result up to rounding).

Output size per axis: ``(n * up + p0 + p1 - F) // down + 1``.

The filter passes are depthwise convolutions (``tf.nn.depthwise_conv2d``) over NHWC data, so the op runs eagerly,
in ``tf.function`` and under ``jit_compile=True``, and it is differentiable to any order by plain autodiff.

Dtypes: float32 / float64 are computed in their own dtype. float16 / bfloat16 inputs are **computed in float32
and the result is cast back** to the input dtype (accuracy of an fp32 accumulator; the filters stay fp32).
"""
import numpy as np
import tensorflow as tf

from . import _common, _custom_ops, _selfcheck

_LOW_PRECISION = (tf.float16, tf.bfloat16)


# ----------------------------------------------------------------------------------------------------------------
# Filters

def setup_filter(f, normalize=True, flip_filter=False, gain=1, separable=None):
    """Turns a list / array / scalar into a float32 filter tensor usable by ``upfirdn2d``.

    Args:
        f: None (identity), a scalar, a 1-D list/array of taps or a 2-D ``[fh, fw]`` array.
        normalize: scale the filter to unit sum (of the 2-D filter, or of the 1-D taps when kept separable).
        flip_filter: flip the filter (reverse every axis).
        gain: overall gain; the filter is multiplied by ``gain ** (ndim / 2)``.
        separable: keep a 1-D filter separable. Default (None): separable only if 1-D with >= 8 taps;
            shorter 1-D filters become the 2-D outer product ``f f^T``.

    Returns:
        float32 ``tf.Tensor`` of rank 1 (separable) or 2 (``[fh, fw]``).
    """
    if f is None:
        f = 1
    if isinstance(f, (tf.Tensor, tf.Variable)):
        f = f.numpy()
    f = np.asarray(f, dtype=np.float64)
    if f.ndim not in (0, 1, 2):
        raise ValueError(f"setup_filter: f must be a scalar, 1-D or 2-D, got shape {f.shape}")
    if f.size == 0:
        raise ValueError("setup_filter: f must have at least one tap")
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = f.ndim == 1 and f.size >= 8
    if f.ndim == 1 and not separable:
        f = np.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"setup_filter: separable={separable} does not fit a filter of shape {f.shape}")
    if normalize:
        s = f.sum()
        if s == 0:
            raise ValueError("setup_filter: cannot normalize a filter whose taps sum to zero")
        f = f / s
    if flip_filter:
        f = f[::-1] if f.ndim == 1 else f[::-1, ::-1]
    f = f * (gain ** (f.ndim / 2))
    return tf.constant(np.ascontiguousarray(f), dtype=tf.float32)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (all NHWC)

def _zero_stuff(x, upx, upy):
    """[N, H, W, C] -> [N, H*upy, W*upx, C] with input sample i at index i*up (zeros after each sample)."""
    if upx == 1 and upy == 1:
        return x
    n, h, w, c = _common.dims(x)
    x = tf.reshape(x, [n, h, 1, w, 1, c])                                       # [N, H, 1, W, 1, C]
    x = tf.pad(x, [[0, 0], [0, 0], [0, upy - 1], [0, 0], [0, upx - 1], [0, 0]])  # [N, H, upy, W, upx, C]
    return tf.reshape(x, [n, h * upy, w * upx, c])                              # [N, H*upy, W*upx, C]


def _pad_crop(x, px0, px1, py0, py1):
    """Zero-pads (positive) or crops (negative) the H/W axes of [N, H, W, C]."""
    if max(px0, px1, py0, py1) > 0:
        x = tf.pad(x, [[0, 0], [max(py0, 0), max(py1, 0)], [max(px0, 0), max(px1, 0)], [0, 0]])
    if min(px0, px1, py0, py1) < 0:
        x = _common.crop(x, max(-py0, 0), max(-py1, 0), max(-px0, 0), max(-px1, 0))
    return x


def _depthwise(x, k2d, sy, sx):
    """Valid-mode correlation of every channel of [N, H, W, C] with k2d [kh, kw]; strides (sy, sx).

    Depthwise kernels of some devices/dtypes only accept equal strides, so 1-D passes with a stride run on a view
    with a singleton spatial axis (equal strides then select the same samples), and a 2-D pass with unequal
    strides decimates the remaining axis by slicing.
    """
    n, h, w, c = _common.dims(x)
    kh, kw = k2d.shape
    if sy == sx:
        k = tf.tile(k2d[:, :, None, None], [1, 1, c, 1])                        # [kh, kw, C, 1]
        return tf.nn.depthwise_conv2d(x, k, strides=[1, sy, sx, 1], padding="VALID")
    if not ((kh == 1 and sy == 1) or (kw == 1 and sx == 1)):
        # 2-D filter with unequal strides (rare): full-rate conv, then decimate by slicing
        k = tf.tile(k2d[:, :, None, None], [1, 1, c, 1])                        # [kh, kw, C, 1]
        return tf.nn.depthwise_conv2d(x, k, strides=[1, 1, 1, 1], padding="VALID")[:, ::sy, ::sx, :]
    if kh == 1 and sy == 1:  # pass along x with stride sx: rows become batch entries
        k = tf.tile(k2d[:, :, None, None], [1, 1, c, 1])                        # [1, kw, C, 1]
        y = tf.reshape(x, [n * h, 1, w, c])                                      # [N*H, 1, W, C]
        y = tf.nn.depthwise_conv2d(y, k, strides=[1, sx, sx, 1], padding="VALID")
        return tf.reshape(y, [n, h, (w - kw) // sx + 1, c])                      # [N, H, Wo, C]
    # pass along y with stride sy (sx == 1): columns x channels become channels
    k = tf.tile(k2d[:, :, None, None], [1, 1, w * c, 1])                        # [kh, 1, W*C, 1]
    y = tf.reshape(x, [n, h, 1, w * c])                                          # [N, H, 1, W*C]
    y = tf.nn.depthwise_conv2d(y, k, strides=[1, sy, sy, 1], padding="VALID")
    return tf.reshape(y, [n, (h - kh) // sy + 1, w, c])                          # [N, Ho, W, C]


def _upsample_1d_polyphase(x, g, up, p0, p1, axis):
    """One separable pass with zero-stuffing ``up`` (> 1), padding (p0, p1) and valid correlation with ``g``
    (already reversed / scaled), no decimation, along ``axis`` (2 = x, 1 = y) of [N, H, W, C].

    Polyphase form: output m = q * up + r only sees input samples through the taps g[t * up + p0 - r], so each
    phase r is a short correlation of the un-stuffed input with those taps; the phases are then interleaved.
    Equal to stuffing + padding + correlating (it skips the products with the stuffed zeros).
    """
    taps = int(g.shape[0])
    n = x.shape[axis]
    m_out = n * up + p0 + p1 - taps + 1                          # output length of the pass
    t0 = -((p0) // up)                                           # ceil(-p0 / up)
    t1 = (taps - 1 + up - 1 - p0) // up
    length = t1 - t0 + 1
    q = -(-m_out // up)                                          # ceil(m_out / up) outputs per phase
    idx = np.array([[(t0 + j) * up + p0 - r for j in range(length)] for r in range(up)])
    idx = np.where((idx >= 0) & (idx < taps), idx, taps)         # out of range -> the appended zero tap
    phases = tf.gather(tf.concat([g, tf.zeros([1], g.dtype)], 0), idx)   # [up, length]
    # Input window: xp[q + j] = x[q + t0 + j] for q < Q, j < length (zero outside the input).
    lo, hi = max(0, -t0), max(0, q + t1 - n)
    start = max(0, t0)
    if axis == 2:
        xp = _pad_crop(x, lo, hi, 0, 0)
        xp = _common.crop(xp, 0, 0, start, int(xp.shape[2]) - (start + q + length - 1))       # [N, H, Q+L-1, C]
        ys = [_depthwise(xp, phases[r][None, :], 1, 1) for r in range(up)]              # up x [N, H, Q, C]
        y = tf.stack(ys, axis=3)                                                        # [N, H, Q, up, C]
        nn, h, _, _, c = _common.dims(y)
        return _common.crop(tf.reshape(y, [nn, h, q * up, c]), 0, 0, 0, q * up - m_out)        # [N, H, M, C]
    xp = _pad_crop(x, 0, 0, lo, hi)
    xp = _common.crop(xp, start, int(xp.shape[1]) - (start + q + length - 1), 0, 0)            # [N, Q+L-1, W, C]
    ys = [_depthwise(xp, phases[r][:, None], 1, 1) for r in range(up)]                  # up x [N, Q, W, C]
    y = tf.stack(ys, axis=2)                                                            # [N, Q, up, W, C]
    nn, _, _, w, c = _common.dims(y)
    return _common.crop(tf.reshape(y, [nn, q * up, w, c]), 0, q * up - m_out, 0, 0)            # [N, M, W, C]


def _out_size(n, up, p0, p1, taps, down, axis, op="upfirdn2d"):
    padded = n * up + p0 + p1
    if padded < taps:
        raise ValueError(f"{op}: padding empties the output along {axis}: {n} samples * up {up} + padding "
                         f"({p0}, {p1}) = {padded} < {taps} filter taps")
    return (padded - taps) // down + 1


def _upfirdn2d_ref(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    """Reference implementation on canonical arguments. x [N, H, W, C] float tensor, f None / float32 tensor."""
    in_dtype = x.dtype
    cdtype = tf.float32 if in_dtype in _LOW_PRECISION else in_dtype
    x = tf.cast(x, cdtype)

    if f is not None and f.shape.rank == 1:
        # Separable filter: steps 1-5 along x on the H input rows, then along y (the two axes commute; doing x
        # first on the un-stuffed rows skips the all-zero rows the y-stuffing would add).
        f = tf.cast(f, cdtype)
        if not flip_filter:
            f = f[::-1]                           # true convolution == correlation with the reversed filter
        f = f * tf.constant(np.sqrt(gain), cdtype)
        if upx > 1 and downx == 1 and x.shape[2] is not None:
            x = _upsample_1d_polyphase(x, f, upx, px0, px1, axis=2)             # [N, H, Wo, C]
        else:
            x = _pad_crop(_zero_stuff(x, upx, 1), px0, px1, 0, 0)               # [N, H, Wp, C]
            x = _depthwise(x, f[None, :], 1, downx)                              # [N, H, Wo, C]
        if upy > 1 and downy == 1 and x.shape[1] is not None:
            x = _upsample_1d_polyphase(x, f, upy, py0, py1, axis=1)             # [N, Ho, Wo, C]
        else:
            x = _pad_crop(_zero_stuff(x, 1, upy), 0, 0, py0, py1)               # [N, Hp, Wo, C]
            x = _depthwise(x, f[:, None], downy, 1)                              # [N, Ho, Wo, C]
        return tf.cast(x, in_dtype)

    # 1. Zero-stuffing and 2. pad / crop.
    x = _zero_stuff(x, upx, upy)                                                 # [N, H*upy, W*upx, C]
    x = _pad_crop(x, px0, px1, py0, py1)                                         # [N, Hp, Wp, C]

    # 3. FIR filter (valid) + 4. decimation through the conv strides + 5. gain.
    if f is None:
        x = x[:, ::downy, ::downx, :]                                            # [N, Ho, Wo, C]
        if gain != 1:
            x = x * tf.constant(gain, cdtype)
    else:
        f = tf.cast(f, cdtype)
        if not flip_filter:
            f = f[::-1, ::-1]
        f = f * tf.constant(gain, cdtype)
        x = _depthwise(x, f, downy, downx)                                       # [N, Ho, Wo, C]
    return tf.cast(x, in_dtype)


# ----------------------------------------------------------------------------------------------------------------
# Public ops

def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Pad, upsample, filter and downsample a batch of NHWC images (docs/ALGORITHM.md §1.2).

    Args:
        x: float tensor / array ``[N, H, W, C]``.
        f: FIR filter: None (identity), 1-D ``[taps]`` (separable, x then y) or 2-D ``[fh, fw]``; float32.
        up: int or ``[x, y]`` zero-stuffing factor (>= 1).
        down: int or ``[x, y]`` decimation factor (>= 1).
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]`` in up-sampled pixels; negative crops.
        flip_filter: False = convolution (filter reversed), True = correlation.
        gain: overall gain of the filter.
        impl: "auto", "ref" or "custom" (compiled kernel, see ``_custom_ops``).

    Returns:
        ``[N, (H*upy + py0 + py1 - fh) // downy + 1, (W*upx + px0 + px1 - fw) // downx + 1, C]``, dtype of x.
    """
    x = _common.prepare_x(x, "upfirdn2d")
    f = _common.filter_tensor(f)
    upx, upy = _common.parse_scaling(up, "up")
    downx, downy = _common.parse_scaling(down, "down")
    px0, px1, py0, py1 = _common.parse_padding(padding)
    fw, fh = _common.filter_size(f)
    gain = float(gain)
    if x.shape[1] is not None:
        _out_size(int(x.shape[1]), upy, py0, py1, fh, downy, "y (height)")
    if x.shape[2] is not None:
        _out_size(int(x.shape[2]), upx, px0, px1, fw, downx, "x (width)")
    if _common.resolve_impl(impl, "upfirdn2d", x.dtype) == "custom" and _selfcheck.passes(
            "upfirdn2d", x, f, upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), gain):
        return _custom_ops.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), gain)
    return _upfirdn2d_ref(x, f, upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), gain)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Same-size FIR filtering: pads ``(p + fw // 2, p + (fw - 1) // 2)`` (likewise in y) then ``upfirdn2d``."""
    f = _common.filter_tensor(f)
    px0, px1, py0, py1 = _common.parse_padding(padding)
    fw, fh = _common.filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Upsampling by ``up`` with FIR ``f``: output ``n * up`` (+ padding), gain ``gain * upx * upy``."""
    f = _common.filter_tensor(f)
    upx, upy = _common.parse_scaling(up, "up")
    px0, px1, py0, py1 = _common.parse_padding(padding)
    fw, fh = _common.filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=[upx, upy], padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="auto"):
    """Downsampling by ``down`` with FIR ``f``: output ``n / down`` (+ padding)."""
    f = _common.filter_tensor(f)
    downx, downy = _common.parse_scaling(down, "down")
    px0, px1, py0, py1 = _common.parse_padding(padding)
    fw, fh = _common.filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=[downx, downy], padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
