"""Loader and Python wrappers of the compiled op library (custom_ops/, issue 9).

Contract used by the op modules (canonical, already-parsed arguments; x is NHWC):
  upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
  bias_act(x, b, axis, act, alpha, gain, clamp)            # alpha/gain resolved floats, clamp float or None
  filtered_lrelu(x, fu, fd, b, upx, upy, downx, downy, px0, px1, py0, py1, gain, slope, clamp, flip_filter)
Filters are float32 tensors (1-D separable or 2-D [fh, fw]; identity passed as None).
"""


def is_available(op_name):
    """True when the compiled library loaded and provides ``op_name``."""
    return False


def load_error():
    return "the compiled op library has not been built (see custom_ops/)"


def in_xla_context():
    return False
