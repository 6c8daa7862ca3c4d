"""Low-level ops (NHWC): upfirdn2d and wrappers, bias_act, filtered_lrelu, conv2d_resample, modulated_conv2d.

Every op takes ``impl="auto" | "ref" | "custom"`` where it has a compiled counterpart (see ``_common.resolve_impl``).
``build_info()`` reports the compiled op library and its CPU ISA levels (compiled / supported / chosen).
"""
from .upfirdn2d import setup_filter, upfirdn2d, filter2d, upsample2d, downsample2d
from .bias_act import ACTIVATIONS, bias_act
from .filtered_lrelu import filtered_lrelu, filtered_lrelu_lowmem
from .conv2d_resample import conv2d_resample
from .modulated_conv2d import modulated_conv2d, modulated_conv2d_grouped
from ._custom_ops import build_info

__all__ = ["setup_filter", "upfirdn2d", "filter2d", "upsample2d", "downsample2d", "ACTIVATIONS", "bias_act",
           "filtered_lrelu", "filtered_lrelu_lowmem", "conv2d_resample", "modulated_conv2d", "modulated_conv2d_grouped",
           "build_info"]
