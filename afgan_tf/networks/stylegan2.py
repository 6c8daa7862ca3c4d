"""StyleGAN2 generator (the original's ``training.networks_stylegan2.Generator``; ``README_sg2.md``), Keras 3, NHWC.

``Generator = MappingNetwork (8 layers) + SynthesisNetwork`` of ``SynthesisBlock`` s ``b4 ... b<R>``:

* ``b4``: learned constant ``const`` -> ``conv1`` -> ``torgb``; ``b<r>``: ``conv0`` (up 2) -> ``conv1`` -> ``torgb``.
* ``SynthesisLayer`` (StyleGAN2 modulated conv): style ``s = affine(w)``, modulate + demodulate the 3x3 weight,
  conv (``conv0``: transposed stride-2 conv without weight flip + ``[1,3,3,1]`` FIR, gain 4), per-pixel noise
  (``noise_mode`` 'random' | 'const' | 'none', ``noise_const`` buffer x ``noise_strength``), bias + lrelu x sqrt(2)
  + clamp.
* ``ToRGBLayer``: 1x1 modulated conv without demodulation (style x 1/sqrt(in)), bias, clamp.
* architecture 'skip' (default): ``img = upsample2d(img) + torgb(x)`` in every block; 'orig': ToRGB of the last
  block only; 'resnet': 1x1 up-sampling skip conv, outputs x sqrt(0.5).

Parameter names / layouts of the original: ``original_state_dict()`` / ``load_original_state_dict()``.
float32 on CPU; per-block float16 only with a GPU (``num_fp16_res``, not with ``force_fp32``).
Input of ``b4``: ``input_type='const'`` (default; the original: learned 4x4 constant, no ``synthesis.input``) or
``input_type='fourier'`` (the paper's config b: fixed Fourier features, ``SynthesisInput`` with 4x4 samples at 4 per
canvas unit, bandwidth 2, not w-transformed; ``G.synthesis.input.transform`` is the user transform used by the
equivariance metrics / tools / export). Tools needing the transform must check ``hasattr(G.synthesis, 'input')``.
"""
import json
import math

import keras
import numpy as np
import tensorflow as tf

from ..ops.bias_act import ACTIVATIONS, bias_act
from ..ops.conv2d_resample import conv2d_resample
from ..ops.upfirdn2d import setup_filter, upsample2d
from . import layers as _layers
from .generator import GeneratorBase
from .layers import (BUFFER, CONV, FILTER, FullyConnectedLayer, MappingNetwork, OriginalEntry, SynthesisInput,
                     _check_kwargs, build_sublayers, check_build_shape, register)

__all__ = ["Generator", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer", "NOISE_MODES",
           "INPUT_TYPES", "fourier_input_spec"]

NOISE_MODES = ("random", "const", "none")
INPUT_TYPES = ("const", "fourier")
LAYER_KWARGS = ("kernel_size", "use_noise", "activation")
BLOCK_KWARGS = ("architecture", "resample_filter", "conv_clamp", "fp16_channels_last", "fused_modconv_default") \
    + LAYER_KWARGS
SYNTHESIS_KWARGS = ("channel_base", "channel_max", "num_fp16_res", "input_type") + BLOCK_KWARGS
MAPPING_KWARGS = ("num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta")
ARCHITECTURES = ("orig", "skip", "resnet")


def _act_gain(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    return float(ACTIVATIONS[activation].def_gain)


def _check_noise_mode(noise_mode):
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


def _check_input_type(input_type):
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")


def fourier_input_spec(resolution=4):
    """``SynthesisInput`` geometry of the config-b Fourier input replacing the ``resolution``² constant.

    The constant covers the unit canvas with ``resolution`` samples per axis and no margin, so the features are
    sampled at the same points: ``size = resolution``, ``sampling_rate = resolution`` samples per canvas unit
    (sample centres at (j + 0.5 - r/2) / r, i.e. ±0.375, ±0.125 for r = 4) and ``bandwidth = resolution / 2``
    (frequencies uniform in the disc of radius 2 cycles per canvas unit = the Nyquist limit of the 4x4 grid: the
    paper's "f_c = 2, matching the original 4x4 input resolution"). With b = s0/2 there is no roll-off band, so
    ``SynthesisInput`` keeps every in-band feature at amplitude 1 (translations / rotations keep |f| <= b)."""
    r = int(resolution)
    return dict(size=r, sampling_rate=float(r), bandwidth=r / 2)


class _ConstEntry(OriginalEntry):
    """``const``: original ``[C, H, W]`` <-> ours ``[H, W, C]``."""
    __slots__ = ()

    @property
    def shape(self):
        h, w, c = (int(d) for d in self.target.shape)
        return (c, h, w)

    def to_original(self):
        return np.ascontiguousarray(np.transpose(np.asarray(keras.ops.convert_to_numpy(self.target)), (2, 0, 1)))

    def from_original(self, a):
        return np.ascontiguousarray(np.transpose(np.asarray(a, dtype=np.float32), (1, 2, 0)))


def modulated_conv2d_sg2(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                         flip_weight=True):
    """StyleGAN2 modulated convolution in the "scale activations" form (equal to the original's fused form).

    Steps: (fp16 + demodulate: pre-normalise ``weight`` by 1/sqrt(I k^2)/max|w| per out channel and ``styles`` by
    max|s| per sample) -> demodulation coefficients ``d[n, o] = rsqrt(sum_{i,u,v} (w[u,v,i,o] s[n,i])^2 + 1e-8)``
    -> ``x * s`` -> ``conv2d_resample`` (up, padding, filter) -> ``* d`` -> ``+ noise``.
    x ``[N, H, W, I]`` (float16/32), weight ``[k, k, I, O]`` float32, styles ``[N, I]`` float32,
    noise broadcastable to the output (e.g. ``[N, H', W', 1]``) or None. Returns ``[N, H', W', O]`` in x's dtype.
    """
    dtype = x.dtype
    weight = tf.cast(weight, tf.float32)
    styles = tf.cast(styles, tf.float32)                                              # [N, I]
    if dtype == tf.float16 and demodulate:
        k2i = float(weight.shape[0] * weight.shape[1] * weight.shape[2])
        weight = weight * (1 / math.sqrt(k2i) / tf.reduce_max(tf.abs(weight), axis=[0, 1, 2], keepdims=True))
        styles = styles / tf.reduce_max(tf.abs(styles), axis=1, keepdims=True)
    d = None
    if demodulate:
        wsq = tf.reduce_sum(tf.square(weight), axis=[0, 1])                             # [I, O]
        d = tf.math.rsqrt(tf.matmul(tf.square(styles), wsq) + 1e-8)                     # [N, O]
    x = x * tf.cast(styles, dtype)[:, None, None, :]                                    # [N, H, W, I]
    x = conv2d_resample(x, tf.cast(weight, dtype), f=resample_filter, up=up, padding=padding,
                        flip_weight=flip_weight)                                        # [N, H', W', O]
    if d is not None:
        x = x * tf.cast(d, dtype)[:, None, None, :]
    if noise is not None:
        x = x + tf.cast(noise, dtype)
    return x


def _add_modconv_affine(layer):
    """``__init__`` part of a modulated-conv layer (SynthesisLayer, ToRGBLayer): ``affine`` (w -> styles, bias init 1)
    and ``weight_gain = 1/sqrt(in k^2)``; the variables come from :func:`_build_modconv_params`."""
    layer.weight_gain = 1.0 / math.sqrt(layer.in_channels * layer.kernel_size ** 2)
    layer.affine = FullyConnectedLayer(layer.w_dim, layer.in_channels, bias_init=1, name="affine")
    layer.weight = layer.bias = None


def _build_modconv_params(layer):
    """``build`` part: creates, in the original's order, ``affine``'s variables, ``weight [k, k, in, out] ~ N(0, 1)``
    (scaled at run time by ``weight_gain``) and ``bias`` (0)."""
    build_sublayers(layer.affine)
    k = layer.kernel_size
    layer.weight = layer.add_weight(shape=(k, k, layer.in_channels, layer.out_channels),
                                    initializer=keras.initializers.RandomNormal(0.0, 1.0), name="weight",
                                    trainable=layer.trainable)
    layer.bias = layer.add_weight(shape=(layer.out_channels,), initializer="zeros", name="bias",
                                  trainable=layer.trainable)


@register(name="StyleGAN2SynthesisLayer")
class SynthesisLayer(keras.layers.Layer):
    """StyleGAN2 synthesis layer (``conv0`` / ``conv1``).

    Args (the original's): in_channels, out_channels, w_dim, resolution (output size), kernel_size (3), up (1|2),
      use_noise (True), activation ('lrelu'), resample_filter ([1,3,3,1]), conv_clamp (None or float),
      channels_last (ignored; memory layout only).
    Variables: ``affine`` (bias init 1), ``weight [k, k, in, out] ~ N(0, 1)`` (run-time x 1/sqrt(in k^2)), ``bias``,
    ``noise_const [res, res]`` (non-trainable N(0, 1) draw), ``noise_strength []`` (0).
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.w_dim, self.resolution, self.kernel_size = int(w_dim), int(resolution), int(kernel_size)
        self.up = int(up)
        if self.up not in (1, 2):
            raise ValueError(f"{self.name}: up must be 1 or 2, got {up}")
        self.use_noise, self.activation = bool(use_noise), activation
        self.act_gain = _act_gain(activation)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.channels_last = bool(channels_last)
        self.resample_filter_taps = [float(t) for t in np.ravel(resample_filter)]
        self.resample_filter = setup_filter(self.resample_filter_taps)                 # [4, 4], sum 1
        self.padding = self.kernel_size // 2
        _add_modconv_affine(self)

    def build(self, input_shape=None):
        in_res = self.resolution // self.up
        check_build_shape(self, input_shape, (in_res, in_res, self.in_channels))
        _build_modconv_params(self)
        if self.use_noise:
            self.noise_const = self.add_weight(shape=(self.resolution, self.resolution),
                                               initializer=keras.initializers.RandomNormal(0.0, 1.0),
                                               trainable=False, name="noise_const")
            self.noise_strength = self.add_weight(shape=(), initializer="zeros", name="noise_strength",
                                                  trainable=self.trainable)

    def call(self, x, w, noise_mode="random", gain=1.0):
        """x ``[N, H, W, in]`` (H = resolution / up), w ``[N, w_dim]`` -> ``[N, res, res, out]`` (x's dtype)."""
        _check_noise_mode(noise_mode)
        x = tf.convert_to_tensor(x)
        in_res = self.resolution // self.up
        expect = (in_res, in_res, self.in_channels)
        if x.shape.rank != 4 or any(a is not None and a != b for a, b in zip(x.shape[1:], expect)):
            raise ValueError(f"{self.name}: x must have shape [N, {in_res}, {in_res}, {self.in_channels}], "
                             f"got {x.shape}")
        styles = self.affine(tf.cast(w, tf.float32))                                    # [N, in]
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = tf.random.normal(tf.stack([tf.shape(x)[0], self.resolution, self.resolution, 1])) \
                * self.noise_strength                                                   # [N, res, res, 1]
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength)[None, :, :, None]           # [1, res, res, 1]
        x = modulated_conv2d_sg2(x, self.weight * self.weight_gain, styles, noise=noise, up=self.up,
                                 padding=self.padding, resample_filter=self.resample_filter,
                                 flip_weight=(self.up == 1))                            # [N, res, res, out]
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, tf.cast(self.bias, x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def original_entries(self, prefix):
        out = [OriginalEntry(prefix + "weight", CONV, self.weight)]
        if self.use_noise:
            out += [OriginalEntry(prefix + "noise_strength", BUFFER, self.noise_strength)]
        out += [OriginalEntry(prefix + "bias", BUFFER, self.bias),
                OriginalEntry(prefix + "resample_filter", FILTER, self.resample_filter.numpy())]
        if self.use_noise:
            out += [OriginalEntry(prefix + "noise_const", BUFFER, self.noise_const)]
        return out + self.affine.original_entries(prefix + "affine.")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_channels=self.in_channels, out_channels=self.out_channels, w_dim=self.w_dim,
                   resolution=self.resolution, kernel_size=self.kernel_size, up=self.up, use_noise=self.use_noise,
                   activation=self.activation, resample_filter=self.resample_filter_taps,
                   conv_clamp=self.conv_clamp, channels_last=self.channels_last)
        return cfg


@register(name="StyleGAN2ToRGBLayer")
class ToRGBLayer(keras.layers.Layer):
    """StyleGAN2 ToRGB: modulated 1x1 conv without demodulation (style x 1/sqrt(in k^2)), bias, clamp (linear).

    Args (the original's): in_channels, out_channels, w_dim, kernel_size (1), conv_clamp, channels_last (ignored).
    """

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False,
                 **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.w_dim, self.kernel_size = int(w_dim), int(kernel_size)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.channels_last = bool(channels_last)
        _add_modconv_affine(self)

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.in_channels,))
        _build_modconv_params(self)

    def call(self, x, w):
        """x ``[N, H, W, in]``, w ``[N, w_dim]`` -> ``[N, H, W, out]`` (x's dtype)."""
        styles = self.affine(tf.cast(w, tf.float32)) * self.weight_gain                 # [N, in]
        x = modulated_conv2d_sg2(x, self.weight, styles, demodulate=False,
                                 padding=self.kernel_size // 2)                         # [N, H, W, out]
        return bias_act(x, tf.cast(self.bias, x.dtype), clamp=self.conv_clamp)

    def original_entries(self, prefix):
        return [OriginalEntry(prefix + "weight", CONV, self.weight), OriginalEntry(prefix + "bias", BUFFER, self.bias)] \
            + self.affine.original_entries(prefix + "affine.")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_channels=self.in_channels, out_channels=self.out_channels, w_dim=self.w_dim,
                   kernel_size=self.kernel_size, conv_clamp=self.conv_clamp, channels_last=self.channels_last)
        return cfg


@register(name="StyleGAN2SynthesisBlock")
class SynthesisBlock(keras.layers.Layer):
    """One resolution of the StyleGAN2 synthesis network.

    Args (the original's): in_channels (0 for the first block: learned ``const``), out_channels, w_dim, resolution,
      img_channels, is_last, architecture ('orig' | 'skip' | 'resnet'), resample_filter ([1,3,3,1]), conv_clamp,
      use_fp16 (used only with a GPU), fp16_channels_last (ignored), fused_modconv_default (accepted; the fused and
      non-fused forms are the same function here), layer kwargs (kernel_size, use_noise, activation).
    Call ``block(x, img, ws)`` with ``ws [N, num_conv + num_torgb, w_dim]`` -> ``(x, img)``; img is float32.
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=256, use_fp16=False, fp16_channels_last=False,
                 fused_modconv_default=True, input_type="const", **layer_kwargs):
        _check_kwargs(layer_kwargs, LAYER_KWARGS, "SynthesisBlock")
        _check_input_type(input_type)
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        super().__init__(name=f"b{int(resolution)}", autocast=False)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.w_dim, self.resolution, self.img_channels = int(w_dim), int(resolution), int(img_channels)
        self.is_last, self.architecture = bool(is_last), architecture
        self.use_fp16, self.fp16_channels_last = bool(use_fp16), bool(fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.conv_clamp = conv_clamp
        self.input_type = input_type   # first block only: 'const' (learned) or 'fourier' (x given by the caller)
        self.resample_filter_taps = [float(t) for t in np.ravel(resample_filter)]
        self.resample_filter = setup_filter(self.resample_filter_taps)                 # [4, 4]
        self.layer_kwargs = dict(layer_kwargs)
        self.num_conv = 0
        self.num_torgb = 0
        lk = dict(w_dim=self.w_dim, resolution=self.resolution, resample_filter=self.resample_filter_taps,
                  conv_clamp=conv_clamp, **layer_kwargs)
        if self.in_channels != 0:
            self.conv0 = SynthesisLayer(self.in_channels, self.out_channels, up=2, name="conv0", **lk)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(self.out_channels, self.out_channels, name="conv1", **lk)
        self.num_conv += 1
        if self.is_last or architecture == "skip":
            self.torgb = ToRGBLayer(self.out_channels, self.img_channels, w_dim=self.w_dim, conv_clamp=conv_clamp,
                                    name="torgb")
            self.num_torgb += 1
        if self.in_channels != 0 and architecture == "resnet":
            from .discriminator import Conv2dLayer
            self.skip = Conv2dLayer(self.in_channels, self.out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=self.resample_filter_taps, name="skip")

    def build(self, input_shape=None):
        """Variables in the original's order: ``const`` (first block), conv0, conv1, torgb, skip."""
        if self.in_channels == 0 and self.input_type == "const":
            self.const = self.add_weight(shape=(self.resolution, self.resolution, self.out_channels),
                                         initializer=keras.initializers.RandomNormal(0.0, 1.0), name="const",
                                         trainable=self.trainable)
        build_sublayers(getattr(self, "conv0", None), self.conv1, getattr(self, "torgb", None),
                        getattr(self, "skip", None))

    def compute_dtype_for(self, force_fp32=False):
        return tf.float16 if (self.use_fp16 and not force_fp32 and _layers.fp16_enabled()) else tf.float32

    def call(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode="random", update_emas=False):
        """x ``[N, r/2, r/2, in]`` or None (first block), img ``[N, r/2, r/2, img_channels]`` or None,
        ws ``[N, num_conv + num_torgb, w_dim]`` -> ``(x [N, r, r, out], img [N, r, r, img_channels] float32 | None)``."""
        _check_noise_mode(noise_mode)
        ws = tf.convert_to_tensor(ws)
        n_w = self.num_conv + self.num_torgb
        if ws.shape.rank != 3 or ws.shape[1] != n_w:
            raise ValueError(f"{self.name}: ws must have shape [N, {n_w}, {self.w_dim}], got {ws.shape}")
        dtype = self.compute_dtype_for(force_fp32)
        w_iter = iter(tf.unstack(ws, axis=1))
        if self.in_channels == 0 and self.input_type == "const":
            n = tf.shape(ws)[0]
            x = tf.tile(tf.cast(self.const, dtype)[None], tf.stack([n, 1, 1, 1]))       # [N, 4, 4, out]
            x = tf.ensure_shape(x, [ws.shape[0], self.resolution, self.resolution, self.out_channels])
        else:
            if x is None:
                raise ValueError(f"{self.name}: x is required (in_channels={self.in_channels}, "
                                 f"input_type={self.input_type!r})")
            x = tf.cast(x, dtype)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)                      # [N, r, r, out]
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)                      # [N, r, r, out]
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)                      # [N, r, r, out]
        if img is not None:
            img = upsample2d(tf.cast(img, tf.float32), self.resample_filter)            # [N, r, r, img_channels]
        if self.is_last or self.architecture == "skip":
            y = tf.cast(self.torgb(x, next(w_iter)), tf.float32)                        # [N, r, r, img_channels]
            img = y if img is None else img + y
        return x, img

    def original_entries(self, prefix):
        out = []
        if self.in_channels == 0 and self.input_type == "const":
            out.append(_ConstEntry(prefix + "const", BUFFER, self.const))
        out.append(OriginalEntry(prefix + "resample_filter", FILTER, self.resample_filter.numpy()))
        if self.in_channels != 0:
            out += self.conv0.original_entries(prefix + "conv0.")
        out += self.conv1.original_entries(prefix + "conv1.")
        if self.num_torgb:
            out += self.torgb.original_entries(prefix + "torgb.")
        if hasattr(self, "skip"):
            out += self.skip.original_entries(prefix + "skip.")
        return out

    def get_config(self):
        cfg = dict(in_channels=self.in_channels, out_channels=self.out_channels, w_dim=self.w_dim,
                   resolution=self.resolution, img_channels=self.img_channels, is_last=self.is_last,
                   architecture=self.architecture, resample_filter=self.resample_filter_taps,
                   conv_clamp=self.conv_clamp, use_fp16=self.use_fp16, fp16_channels_last=self.fp16_channels_last,
                   fused_modconv_default=self.fused_modconv_default, input_type=self.input_type)
        cfg.update(self.layer_kwargs)
        return cfg


@register(name="StyleGAN2SynthesisNetwork")
class SynthesisNetwork(keras.layers.Layer):
    """StyleGAN2 synthesis network: blocks ``b4 ... b<img_resolution>``.

    Args (the original's): w_dim, img_resolution (power of 2 >= 4), img_channels, channel_base (32768),
      channel_max (512), num_fp16_res (4: the highest resolutions >= max(2^(log2 R + 1 - num_fp16_res), 8) use fp16
      on a GPU), block kwargs (architecture, resample_filter, conv_clamp, fp16_channels_last, fused_modconv_default,
      kernel_size, use_noise, activation), input_type ('const' | 'fourier', ours: see ``fourier_input_spec``).
    ``num_ws`` = sum of the blocks' convs + 1 (last ToRGB); the ToRGB of block r shares its w with conv0 of 2r.
    With ``input_type='fourier'`` the Fourier features use no w (config b: not w-transformed; the layer's affine is
    frozen at the identity and fed zeros), so ``num_ws`` and the call convention are unchanged.
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=4,
                 input_type="const", name="synthesis", **block_kwargs):
        _check_kwargs(block_kwargs, BLOCK_KWARGS, "stylegan2.SynthesisNetwork")
        _check_input_type(input_type)
        super().__init__(name=name, autocast=False)
        r = int(img_resolution)
        if r < 4 or r & (r - 1):
            raise ValueError(f"img_resolution must be a power of 2 >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = int(w_dim), r, int(img_channels)
        self.channel_base, self.channel_max, self.num_fp16_res = int(channel_base), int(channel_max), int(num_fp16_res)
        self.block_kwargs = dict(block_kwargs)
        self.input_type = input_type
        log2 = int(np.log2(r))
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(self.channel_base // res, self.channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - self.num_fp16_res), 8)
        if self.input_type == "fourier":
            self.input_layer = SynthesisInput(self.w_dim, channels[4], name="input", **fourier_input_spec(4))
            self.input_layer.affine.trainable = False   # config b: fixed features, no learned w-transform
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_ch, channels[res], w_dim=self.w_dim, resolution=res,
                                   img_channels=self.img_channels, is_last=(res == r),
                                   use_fp16=(res >= fp16_resolution),
                                   input_type=(self.input_type if res == 4 else "const"), **block_kwargs)
            self.num_ws += block.num_conv
            if res == r:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)   # attributes named like the original's (checkpoint-visible)

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.num_ws, self.w_dim))
        build_sublayers(getattr(self, "input_layer", None), *self.blocks)

    @property
    def input(self):
        """The Fourier-feature ``SynthesisInput`` (``input_type='fourier'`` only; ``.transform`` is the user
        transform). Raises AttributeError for the learned constant, so ``hasattr(synthesis, 'input')`` is False."""
        if self.input_type != "fourier":
            raise AttributeError("this StyleGAN2 synthesis network has a learned constant input (input_type='const'): "
                                 "no synthesis.input / input.transform; build it with input_type='fourier'")
        return self.input_layer

    @property
    def blocks(self):
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def block_ws(self, ws):
        """Splits ws ``[N, num_ws, w_dim]`` into the per-block slices (w_idx advances by num_conv)."""
        out, w_idx = [], 0
        for block in self.blocks:
            out.append(ws[:, w_idx:w_idx + block.num_conv + block.num_torgb])
            w_idx += block.num_conv
        return out

    def call(self, ws, noise_mode="random", force_fp32=False, fused_modconv=None, update_emas=False, transform=None):
        """ws ``[N, num_ws, w_dim]`` -> image ``[N, R, R, img_channels]`` float32.
        ``transform`` (``input_type='fourier'`` only; ``[3, 3]`` / ``[N, 3, 3]``) overrides ``input.transform``."""
        return self.run(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv,
                        transform=transform)[-1][1]

    def fourier_features(self, n, transform=None):
        """The config-b input ``[n, 4, 4, C]`` (float32) for the current / given user transform."""
        if self.input_type != "fourier":
            raise ValueError("fourier_features: this network has input_type='const' (no Fourier input)")
        return self.input_layer(tf.zeros(tf.stack([n, self.w_dim]), tf.float32), transform=transform)

    def run(self, ws, noise_mode="random", force_fp32=False, fused_modconv=None, transform=None):
        """Like ``call`` but returns ``[(x, img) per block]`` (NHWC; for tests / debugging)."""
        _check_noise_mode(noise_mode)
        ws = _layers.check_ws(ws, self.num_ws, self.w_dim)  # [N, num_ws, w_dim] float32
        x = img = None
        if self.input_type == "fourier":
            x = self.fourier_features(tf.shape(ws)[0], transform=transform)              # [N, 4, 4, C]
        elif transform is not None:
            raise ValueError("transform: this StyleGAN2 network has a learned constant input (input_type='const') "
                             "and cannot be translated / rotated; use input_type='fourier'")
        outs = []
        for block, bws in zip(self.blocks, self.block_ws(ws)):
            x, img = block(x, img, bws, force_fp32=force_fp32, fused_modconv=fused_modconv, noise_mode=noise_mode)
            outs.append((x, img))
        return outs

    def original_entries(self, prefix):
        out = self.input_layer.original_entries(prefix + "input.") if self.input_type == "fourier" else []
        for res, block in zip(self.block_resolutions, self.blocks):
            out += block.original_entries(prefix + f"b{res}.")
        return out

    def get_config(self):
        cfg = dict(name=self.name, w_dim=self.w_dim, img_resolution=self.img_resolution,
                   img_channels=self.img_channels, channel_base=self.channel_base, channel_max=self.channel_max,
                   num_fp16_res=self.num_fp16_res, input_type=self.input_type)
        cfg.update(self.block_kwargs)
        return cfg


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, np.ndarray)):
        return list(np.asarray(o).tolist())
    raise TypeError(f"value {o!r} of type {type(o).__name__} is not JSON-serialisable")


@register(name="StyleGAN2Generator")
class Generator(GeneratorBase):
    """StyleGAN2 generator (snapshot class "stylegan2.Generator").

    Args (exactly the original's): z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs (num_layers
      (8), lr_multiplier, w_avg_beta; embed_features / layer_features must equal w_dim, activation 'lrelu'),
      synthesis kwargs: channel_base, channel_max, num_fp16_res, architecture, resample_filter, conv_clamp,
      fp16_channels_last, fused_modconv_default, kernel_size, use_noise, activation; and ours: input_type
      ('const' default = the original; 'fourier' = the paper's config b, see ``fourier_input_spec``; stored in
      ``init_kwargs`` only when given, so the original's kwargs round-trip unchanged).
    Call: ``G(z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, noise_mode='random',
    force_fp32=False)`` -> float32 ``[N, R, R, img_channels]``.
    """
    snapshot_class = "stylegan2.Generator"
    _owner = "stylegan2.Generator"

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, **synthesis_kwargs):
        _check_kwargs(synthesis_kwargs, SYNTHESIS_KWARGS, "stylegan2.Generator")
        mapping_kwargs = dict(mapping_kwargs or {})
        _check_kwargs(mapping_kwargs, MAPPING_KWARGS, "stylegan2.Generator mapping_kwargs")
        for k in ("embed_features", "layer_features"):
            if mapping_kwargs.get(k) not in (None, w_dim):
                raise NotImplementedError(f"stylegan2.Generator mapping_kwargs {k}={mapping_kwargs[k]} != w_dim "
                                          f"({w_dim}) is not supported")
        if mapping_kwargs.get("activation", "lrelu") != "lrelu":
            raise NotImplementedError(f"stylegan2.Generator mapping_kwargs activation="
                                      f"{mapping_kwargs['activation']!r} is not supported (only 'lrelu')")
        super().__init__(name="generator")
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        kw = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                  mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        self._init_kwargs_json = json.dumps(kw, default=_json_default)
        self.synthesis = SynthesisNetwork(w_dim=self.w_dim, img_resolution=self.img_resolution,
                                          img_channels=self.img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        mk = {k: v for k, v in mapping_kwargs.items() if k in ("num_layers", "lr_multiplier", "w_avg_beta")}
        mk.setdefault("num_layers", 8)
        self.mapping = MappingNetwork(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                                      name="mapping", **mk)
        self.build()


