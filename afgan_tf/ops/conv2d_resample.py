"""2-D convolution with optional FIR up/downsampling (``conv2d_resample``), NHWC, weight ``[kh, kw, in, out]``.

Used by the discriminator (down path, docs/ALGORITHM.md §4) and the StyleGAN2 generator (up path, ``README_sg2.md``).
Padding is first adjusted for the resampling filter (as the wrappers of ``upfirdn2d`` do), then:
  * 1x1 kernel, down only: FIR-filter + decimate (``upfirdn2d``), then the 1x1 conv;
  * 1x1 kernel, up only: 1x1 conv, then zero-stuff + FIR (gain up^2);
  * down only: FIR with the padding, then a strided valid conv;
  * up (optionally followed by down): transposed strided conv (the weight is spatially flipped only when
    ``flip_weight=True``, i.e. the transposed conv of a correlation), then FIR with gain up^2 and the remaining
    padding, then an optional FIR decimation;
  * neither, symmetric non-negative padding: one plain conv with that padding;
  * otherwise: pad (+ zero-stuff) with ``upfirdn2d``, valid conv, optional FIR decimation.
``flip_weight=True`` = correlation (``tf.nn.conv2d``); False = true convolution (weight flipped).
The filter is only used when resampling. Gradients of any order by autodiff.
"""
import numpy as np
import tensorflow as tf

from . import _common
from .upfirdn2d import upfirdn2d


def _check_int_factor(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"conv2d_resample: {name} must be an int >= 1, got {v!r}")
    v = int(v)
    if v < 1:
        raise ValueError(f"conv2d_resample: {name} must be an int >= 1, got {v}")
    return v


def _conv(x, w, stride=1, padding=(0, 0), groups=1, transpose=False, flip_weight=True):
    """x [N, H, W, Cin], w [kh, kw, Cin/groups, Cout]; padding (py, px) symmetric (cropped for transpose).

    Not transposed: valid correlation of the padded x. Transposed: the adjoint of a stride-`stride` correlation
    with w (each input pixel scatters ``x * w`` into a kh x kw window at ``stride * i``), then ``padding``
    samples are cropped from each side.
    """
    kh, kw = int(w.shape[0]), int(w.shape[1])
    if not flip_weight and (kh > 1 or kw > 1):
        w = w[::-1, ::-1]
    py, px = padding
    if groups > 1:
        xs = tf.split(x, groups, axis=3)
        ws = tf.split(w, groups, axis=3)  # group g: in-channels slice g of x, out-channels slice g of w
        return tf.concat([_conv(a, b, stride, padding, 1, transpose) for a, b in zip(xs, ws)], axis=3)
    if not transpose:
        if py or px:
            x = tf.pad(x, [[0, 0], [py, py], [px, px], [0, 0]])
        return tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding="VALID")    # [N, Ho, Wo, Cout]
    n, h, wd, _ = _common.dims(x)
    cout = int(w.shape[3])
    # x has w.shape[2] channels here (the transposed conv maps "in" -> "out" of the forward layout).
    filt = tf.transpose(w, [0, 1, 3, 2])                                             # [kh, kw, Cout, Cin]
    out_shape = [n, (h - 1) * stride + kh, (wd - 1) * stride + kw, cout]
    if not all(isinstance(d, int) for d in out_shape):
        out_shape = tf.stack(out_shape)
    y = tf.nn.conv2d_transpose(x, filt, out_shape, strides=[1, stride, stride, 1], padding="VALID")
    if py or px:
        y = _common.crop(y, py, py, px, px)
    return y


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Convolution with integrated FIR up/downsampling.

    Args:
        x: float tensor ``[N, H, W, in]``.
        w: weight ``[kh, kw, in / groups, out]``.
        f: resampling FIR filter (None / 1-D separable / 2-D ``[fh, fw]``, float32); only used when resampling.
        up: int upsampling factor; down: int downsampling factor.
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]`` (before the resampling adjustment).
        groups: number of groups of the convolution.
        flip_weight: True = correlation (like ``tf.nn.conv2d``), False = convolution.
        flip_filter: passed to ``upfirdn2d``.

    Returns:
        ``[N, H', W', out]``.
    """
    x = _common.to_tensor(x, name="x")
    _common.check_float(x, name="conv2d_resample: x")
    _common.check_rank(x, 4, name="conv2d_resample: x")
    w = _common.to_tensor(w, name="w")
    _common.check_float(w, name="conv2d_resample: w")
    _common.check_rank(w, 4, name="conv2d_resample: w", layout="[kh, kw, in / groups, out]")
    w = tf.cast(w, x.dtype)
    f = _common.filter_tensor(f)
    up = _check_int_factor(up, "up")
    down = _check_int_factor(down, "down")
    groups = _check_int_factor(groups, "groups")
    kh, kw, w_in, out_ch = [int(d) for d in w.shape]
    in_ch = x.shape[3]
    if in_ch is None or in_ch != w_in * groups:
        raise ValueError(f"conv2d_resample: x has {in_ch} channels but w {list(w.shape)} with groups={groups} "
                         f"expects {w_in * groups}")
    if out_ch % groups:
        raise ValueError(f"conv2d_resample: out channels {out_ch} of w are not divisible by groups={groups}")
    fw, fh = _common.filter_size(f)
    px0, px1, py0, py1 = _common.parse_padding(padding)

    # Adjust the padding for the resampling filter.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, impl="ref")
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up * up, flip_filter=flip_filter, impl="ref")
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl="ref")
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=(pyt, pxt), groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up,
                      flip_filter=flip_filter, impl="ref")
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl="ref")
        return x
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=(py0, px0), groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=pad, gain=up * up, flip_filter=flip_filter, impl="ref")
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl="ref")
    return x
