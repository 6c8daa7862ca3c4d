"""Keras 3 building blocks of the StyleGAN3 generator (docs/ALGORITHM.md §1.7, §3.2-§3.5). Layout NHWC.

* ``FullyConnectedLayer`` — equalised-learning-rate dense layer (StyleGAN3 variant with ``weight_init``).
* ``MappingNetwork`` — z (+ c) -> w, ``w_avg`` tracking and truncation, broadcast to ``[N, num_ws, w_dim]``.
* ``SynthesisInput`` — transformed Fourier features (the 3x3 user ``transform`` is a non-trainable variable).
* ``SynthesisLayer`` — modulated conv + filtered leaky ReLU (or ToRGB), magnitude EMA normalisation.
* ``SynthesisNetwork`` — the 15-layer schedule of ``afgan_tf.filters.synthesis_schedule``; output x ``output_scale``.

Keras conventions: every layer is registered (``keras.saving.register_keras_serializable``, package
``afgan_tf``) and round-trips through ``get_config`` / ``from_config``; sub-layers are created in ``__init__`` and
variables in ``build()``. All shapes follow from the constructor arguments, so ``build()`` needs no input shape (one
given is checked); the networks (``Generator``, ``Discriminator``) call ``self.build()`` at the end of their
constructor, so that original weights, checkpoints and EMA copies can be loaded right after construction (see
``original_entries`` / ``afgan_tf.networks.generator.Generator.load_original_state_dict``). Sub-layers are plain
attributes named like the original's modules (``fc0``, ``L0_36_512``, ``b64``...): users and the converter reach them
by those names, and ``tf.train.Checkpoint`` paths are built from them.
Variables are stored in TF layout: dense ``[in, out]``, conv ``[kh, kw, in, out]``; buffers as in the original.
"""
import functools
import inspect
import json
import math

import keras
import numpy as np
import tensorflow as tf

from .. import filters as _filters

__all__ = ["FullyConnectedLayer", "MappingNetwork", "SynthesisInput", "SynthesisLayer", "SynthesisNetwork",
           "OriginalEntry", "gpu_available", "fp16_enabled", "force_fp16", "register", "check_build_shape",
           "build_sublayers", "NetworkConfig", "tf_variable", "tf_variables"]

# Kinds of original state_dict entries and their layout conversion (original <-> ours).
FC = "fc"          # original [out, in]        <-> ours [in, out]
CONV = "conv"      # original [out, in, kh, kw] <-> ours [kh, kw, in, out]
BUFFER = "buffer"  # verbatim (non-trainable variable)
FILTER = "filter"  # designed by us (numpy constant); the file's copy must match within 1e-6


class OriginalEntry:
    """One entry of the original state_dict: ``name``, ``kind`` (fc/conv/buffer/filter), ``target`` (a Keras
    variable, or the numpy filter for kind "filter")."""
    __slots__ = ("name", "kind", "target")

    def __init__(self, name, kind, target):
        self.name, self.kind, self.target = name, kind, target

    @property
    def shape(self):
        """Shape in the original layout."""
        s = tuple(int(d) for d in self.target.shape)
        if self.kind == FC:
            return s[::-1]
        if self.kind == CONV:
            return (s[3], s[2], s[0], s[1])
        return s

    def to_original(self):
        """Our value -> numpy array in the original layout."""
        if self.kind == FILTER:
            return np.array(self.target, dtype=np.float32)
        v = np.asarray(keras.ops.convert_to_numpy(self.target))
        if self.kind == FC:
            return np.ascontiguousarray(v.T)
        if self.kind == CONV:
            return np.ascontiguousarray(np.transpose(v, (3, 2, 0, 1)))
        return np.array(v)

    def from_original(self, a):
        """Numpy array in the original layout -> our layout (float32)."""
        a = np.asarray(a, dtype=np.float32)
        if self.kind == FC:
            return np.ascontiguousarray(a.T)
        if self.kind == CONV:
            return np.ascontiguousarray(np.transpose(a, (2, 3, 1, 0)))
        return a


def gpu_available():
    """True when TensorFlow sees a GPU (fp16 layers are only used then): ``afgan_tf.device.has_gpu``."""
    from afgan_tf import device
    return device.has_gpu()


_FORCE_FP16 = None


def force_fp16(enabled=True):
    """Override the float16 decision of the ``use_fp16`` layers (G and D): True = float16 even without a GPU
    (to exercise mixed precision on CPU), False = never, None = back to the default (env / GPU). Decided at trace
    time: call it before the networks run (or trace)."""
    global _FORCE_FP16
    _FORCE_FP16 = None if enabled is None else bool(enabled)


def fp16_enabled():
    """True when layers flagged ``use_fp16`` compute in float16: with a GPU (as the original), or when forced by
    :func:`force_fp16` or the environment variable ``AFGAN_TF_FORCE_FP16=1`` (CPU testing)."""
    if _FORCE_FP16 is not None:
        return _FORCE_FP16
    import os
    if os.environ.get("AFGAN_TF_FORCE_FP16", "0") not in ("", "0"):
        return True
    return gpu_available()


def _const_init(value):
    value = np.asarray(value, dtype=np.float32)

    def init(shape, dtype=None):
        return tf.constant(np.broadcast_to(value, tuple(shape)), dtype=dtype or "float32")
    return init


def register(cls=None, name=None):
    """``keras.saving.register_keras_serializable`` with this package's namespace (``afgan_tf>Name``).

    Also pins the layer's Keras dtype policy to float32 unless a ``dtype`` is passed: the networks define their own
    precision (float32 weights and math, float16 only in the layers the original runs in fp16, docs/ALGORITHM.md
    §3.6), so a global ``keras.mixed_precision`` policy such as ``mixed_float16`` must not recast them (it made the
    input layer's matmuls mix float16 and float32 and fail)."""
    def wrap(c):
        init = c.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if kwargs.get("dtype") is None and self.dtype_policy.name != "float32":
                self.dtype_policy = "float32"

        __init__.__signature__ = inspect.signature(init)      # Keras reads the constructor's arguments from it
        c.__init__ = __init__
        return keras.saving.register_keras_serializable(package="afgan_tf", name=name or c.__name__)(c)
    return wrap(cls) if cls is not None else wrap


def check_build_shape(layer, input_shape, expect):
    """``build(input_shape)`` helper: the variables' shapes come from the constructor, so a given input shape must
    agree with ``expect`` (a tuple of the trailing dimensions; None entries are not checked)."""
    if input_shape is None or not isinstance(input_shape, (tuple, list)) or not input_shape or \
            isinstance(input_shape[0], (tuple, list)):
        return
    tail = tuple(input_shape)[-len(expect):]
    if len(input_shape) < len(expect) or any(e is not None and a is not None and int(a) != e
                                             for a, e in zip(tail, expect)):
        raise ValueError(f"{layer.name}: input shape {tuple(input_shape)} does not match the layer "
                         f"(expected [..., {', '.join('?' if e is None else str(e) for e in expect)}])")


def build_sublayers(*layers):
    """Builds the given sub-layers (None entries skipped) in order; their variables are created in ``build()``."""
    for layer in layers:
        if layer is not None and not layer.built:
            layer.build()


class NetworkConfig:
    """``init_kwargs`` / ``get_config`` / ``from_config`` shared by the networks (Generator, StyleGAN2 Generator,
    Discriminator): the constructor kwargs are kept as JSON (``_init_kwargs_json``, set by the constructor), so
    ``init_kwargs`` is always a fresh dict of plain JSON types and ``type(net)(**net.init_kwargs)`` rebuilds the
    architecture."""
    _init_kwargs_json = None

    @property
    def init_kwargs(self):
        """The constructor kwargs (a fresh dict; ``type(net)(**net.init_kwargs)`` rebuilds the architecture)."""
        return json.loads(self._init_kwargs_json)

    def get_config(self):
        return self.init_kwargs

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def tf_variable(v):
    """The ``tf.Variable`` behind a Keras 3 variable (a ``tf.Variable`` is returned as it is). The one way to reach
    the backing variables, e.g. for ``tf.GradientTape.watch`` (which rejects Keras variables) or raw TF ops."""
    if isinstance(v, tf.Variable):
        return v
    inner = getattr(v, "value", None)
    if isinstance(inner, tf.Variable):
        return inner
    raise TypeError(f"tf_variable: expected a Keras or TF variable, got {type(v).__name__}")


def tf_variables(variables):
    """``[tf_variable(v) for v in variables]``."""
    return [tf_variable(v) for v in variables]


def _check_kwargs(kwargs, allowed, owner):
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{owner}: unknown keyword argument(s) {unknown}; accepted: {sorted(allowed)}")


def check_ws(ws, num_ws, w_dim):
    """ws as float32 ``[N, num_ws, w_dim]`` (the synthesis networks' input), or a ValueError naming the shape."""
    ws = tf.cast(tf.convert_to_tensor(ws), tf.float32)
    if ws.shape.rank != 3 or (ws.shape[1] is not None and ws.shape[1] != num_ws) or \
            (ws.shape[2] is not None and ws.shape[2] != w_dim):
        raise ValueError(f"ws must have shape [N, {num_ws}, {w_dim}], got {ws.shape}")
    return ws


def _normalize_2nd_moment(x, eps=1e-8):
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True) + eps)


def _bias_act(*args, **kwargs):
    from ..ops.bias_act import bias_act
    return bias_act(*args, **kwargs)


def _filtered_lrelu(*args, **kwargs):
    from ..ops.filtered_lrelu import filtered_lrelu
    return filtered_lrelu(*args, **kwargs)


def _modulated_conv2d(*args, **kwargs):
    from ..ops.modulated_conv2d import modulated_conv2d
    return modulated_conv2d(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------

@register
class FullyConnectedLayer(keras.layers.Layer):
    """Equalised-learning-rate dense layer (docs/ALGORITHM.md §1.7, StyleGAN3 variant).

    Args:
      in_features, out_features: sizes. activation: a ``bias_act`` activation name ("linear", "lrelu", ...).
      bias: whether to use a bias. lr_multiplier: learning-rate multiplier (stored params are scaled by 1/lr_mul).
      weight_init: std of the effective initial weight times sqrt(in_features) (0 = zero weight).
      bias_init: initial effective bias, scalar or ``[out_features]``.
    Stored weight ``[in, out] ~ N(0, 1) * weight_init / lr_mul``; effective ``weight * lr_mul / sqrt(in)``;
    effective bias ``bias * lr_mul``; ``y = act(x @ W + b)`` via ``bias_act``.
    """

    def __init__(self, in_features, out_features, activation="linear", bias=True, lr_multiplier=1.0, weight_init=1.0,
                 bias_init=0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = activation
        self.use_bias = bool(bias)
        self.lr_multiplier = float(lr_multiplier)
        self.weight_init = float(weight_init)
        self.bias_init = np.asarray(bias_init, dtype=np.float64).tolist()
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"{self.name}: in_features/out_features must be >= 1, got {in_features}, {out_features}")
        self.weight_gain = self.lr_multiplier / math.sqrt(self.in_features)
        self.bias_gain = self.lr_multiplier
        self.weight = self.bias = None

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.in_features,))
        w_std = self.weight_init / self.lr_multiplier
        w_init = keras.initializers.RandomNormal(0.0, w_std) if w_std != 0 else keras.initializers.Zeros()
        self.weight = self.add_weight(shape=(self.in_features, self.out_features), initializer=w_init, name="weight",
                                      trainable=self.trainable)
        if self.use_bias:
            b0 = np.broadcast_to(np.asarray(self.bias_init, dtype=np.float64), [self.out_features]) / self.lr_multiplier
            self.bias = self.add_weight(shape=(self.out_features,), initializer=_const_init(b0), name="bias",
                                        trainable=self.trainable)

    def call(self, x):
        x = tf.convert_to_tensor(x)
        w = tf.cast(self.weight * self.weight_gain, x.dtype)  # [in, out]
        b = None if self.bias is None else tf.cast(self.bias * self.bias_gain, x.dtype)  # [out]
        if self.activation == "linear" and b is not None:
            return tf.matmul(x, w) + b
        return _bias_act(tf.matmul(x, w), b, act=self.activation)

    def original_entries(self, prefix):
        out = [OriginalEntry(prefix + "weight", FC, self.weight)]
        if self.bias is not None:
            out.append(OriginalEntry(prefix + "bias", BUFFER, self.bias))
        return out

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_features=self.in_features, out_features=self.out_features, activation=self.activation,
                   bias=self.use_bias, lr_multiplier=self.lr_multiplier, weight_init=self.weight_init,
                   bias_init=self.bias_init)
        return cfg


# ----------------------------------------------------------------------------------------------------------------

@register
class MappingNetwork(keras.layers.Layer):
    """Mapping network (docs/ALGORITHM.md §3.2): normalise z, embed + normalise c, ``num_layers`` lrelu FC layers, ``w_avg``.

    Args:
      z_dim, c_dim, w_dim: latent, label, intermediate latent sizes (z_dim or c_dim may be 0, not both).
      num_ws: number of w copies in the output ``[N, num_ws, w_dim]``.
      num_layers: FC layers (2 for StyleGAN3). lr_multiplier: of the FC layers (0.01).
      w_avg_beta: decay of the tracked mean of w (0.998), updated when ``update_emas``.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998, **kwargs):
        super().__init__(**kwargs)
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.num_ws, self.num_layers = int(num_ws), int(num_layers)
        self.lr_multiplier, self.w_avg_beta = float(lr_multiplier), float(w_avg_beta)
        if self.z_dim < 0 or self.c_dim < 0 or self.z_dim + self.c_dim == 0:
            raise ValueError(f"MappingNetwork: need z_dim > 0 or c_dim > 0, got z_dim={z_dim}, c_dim={c_dim}")
        if self.num_layers < 1:
            raise ValueError(f"MappingNetwork: num_layers must be >= 1, got {num_layers}")
        self.embed = FullyConnectedLayer(self.c_dim, self.w_dim, name="embed") if self.c_dim > 0 else None
        features = [self.z_dim + (self.w_dim if self.c_dim > 0 else 0)] + [self.w_dim] * self.num_layers
        # Sub-layers are attributes named like the original's (fc0, fc1, ...): tf.train.Checkpoint follows
        # attributes, not Keras-wrapped lists.
        for i in range(self.num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                                        lr_multiplier=self.lr_multiplier, name=f"fc{i}"))
        self.w_avg = None

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.z_dim,) if self.z_dim > 0 else (self.c_dim,))
        build_sublayers(self.embed, *self.fcs)
        self.w_avg = self.add_weight(shape=(self.w_dim,), initializer="zeros", trainable=False, aggregation="mean",
                                     name="w_avg")

    @property
    def fcs(self):
        """The FC layers fc0, fc1, ... in order."""
        return [getattr(self, f"fc{i}") for i in range(self.num_layers)]

    def call(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = None
        if self.z_dim > 0:
            z = tf.cast(tf.convert_to_tensor(z), tf.float32)
            if z.shape.rank != 2 or (z.shape[1] is not None and z.shape[1] != self.z_dim):
                raise ValueError(f"z must have shape [N, {self.z_dim}], got {z.shape}")
            x = _normalize_2nd_moment(z)  # [N, z_dim]
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"c is required: the network is conditional (c_dim={self.c_dim})")
            c = tf.cast(tf.convert_to_tensor(c), tf.float32)
            if c.shape.rank != 2 or (c.shape[1] is not None and c.shape[1] != self.c_dim):
                raise ValueError(f"c must have shape [N, {self.c_dim}], got {c.shape}")
            y = _normalize_2nd_moment(self.embed(c))  # [N, w_dim]
            x = y if x is None else tf.concat([x, y], axis=1)
        for fc in self.fcs:
            x = fc(x)  # [N, w_dim]
        if update_emas:
            mean = tf.reduce_mean(tf.stop_gradient(x), axis=0)
            self.w_avg.assign(mean + self.w_avg_beta * (self.w_avg - mean))
        x = tf.tile(x[:, None, :], [1, self.num_ws, 1])  # [N, num_ws, w_dim]
        psi_is_one = isinstance(truncation_psi, (int, float)) and truncation_psi == 1
        if not psi_is_one:
            w_avg = tf.convert_to_tensor(self.w_avg)
            psi = tf.cast(truncation_psi, tf.float32)
            trunc = w_avg + psi * (x - w_avg)
            if truncation_cutoff is None:
                x = trunc
            else:
                cutoff = int(truncation_cutoff)
                x = tf.concat([trunc[:, :cutoff], x[:, cutoff:]], axis=1)
        return x

    def original_entries(self, prefix):
        out = [OriginalEntry(prefix + "w_avg", BUFFER, self.w_avg)]
        if self.embed is not None:
            out += self.embed.original_entries(prefix + "embed.")
        for i, fc in enumerate(self.fcs):
            out += fc.original_entries(prefix + f"fc{i}.")
        return out

    def get_config(self):
        cfg = super().get_config()
        cfg.update(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                   num_layers=self.num_layers, lr_multiplier=self.lr_multiplier, w_avg_beta=self.w_avg_beta)
        return cfg


# ----------------------------------------------------------------------------------------------------------------

@register
class SynthesisInput(keras.layers.Layer):
    """Transformed Fourier features (docs/ALGORITHM.md §3.3).

    Args:
      w_dim: size of w. channels: number of features C0. size: output size (int or [W, H]).
      sampling_rate: samples per canvas unit s0. bandwidth: radius b of the frequency disc.
    Variables: ``freqs [C0, 2]`` / ``phases [C0]`` (non-trainable, random draws from numpy's global RNG, so
    ``keras.utils.set_random_seed`` fixes them), ``weight [C0_in, C0_out]``, ``affine`` (zero weight, bias
    (1, 0, 0, 0)), ``transform [3, 3]`` (non-trainable, identity; the user's inverse transform).
    """

    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth, **kwargs):
        super().__init__(**kwargs)
        self.w_dim, self.channels = int(w_dim), int(channels)
        size = [int(size)] * 2 if np.ndim(size) == 0 else [int(v) for v in size]
        if len(size) != 2:
            raise ValueError(f"SynthesisInput: size must be an int or [W, H], got {size}")
        self.size = size
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        # The random Fourier features are drawn here (numpy's global RNG, in the original's order); the variables
        # holding them are created in build().
        freqs = np.random.randn(self.channels, 2)
        radii = np.sqrt(np.sum(np.square(freqs), axis=1, keepdims=True))
        self._freqs_init = freqs / (radii * np.exp(np.square(radii)) ** 0.25) * self.bandwidth
        self._phases_init = np.random.rand(self.channels) - 0.5
        self.affine = FullyConnectedLayer(self.w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0], name="affine")
        self.weight = self.transform = self.freqs = self.phases = None

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.w_dim,))
        build_sublayers(self.affine)
        self.weight = self.add_weight(shape=(self.channels, self.channels),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0), name="weight",
                                      trainable=self.trainable)
        self.transform = self.add_weight(shape=(3, 3), initializer=_const_init(np.eye(3)), trainable=False,
                                         name="transform")
        self.freqs = self.add_weight(shape=(self.channels, 2), initializer=_const_init(self._freqs_init),
                                     trainable=False, name="freqs")
        self.phases = self.add_weight(shape=(self.channels,), initializer=_const_init(self._phases_init),
                                      trainable=False, name="phases")

    def call(self, w, transform=None):
        """w ``[N, w_dim]`` -> features ``[N, H, W, C0]`` (float32).

        ``transform``: optional user transform overriding the ``transform`` variable for this call, ``[3, 3]``
        or per sample ``[N, 3, 3]`` (used by the SavedModel export for per-image translation/rotation)."""
        w = tf.cast(tf.convert_to_tensor(w), tf.float32)
        t = self.affine(w)  # [N, 4] = (r_c, r_s, t_x, t_y)
        t = t / tf.norm(t[:, :2], axis=1, keepdims=True)
        rc, rs, tx, ty = tf.unstack(t, axis=1)  # [N] each
        zero, one = tf.zeros_like(rc), tf.ones_like(rc)
        m_r = tf.stack([tf.stack([rc, -rs, zero], -1), tf.stack([rs, rc, zero], -1),
                        tf.stack([zero, zero, one], -1)], 1)  # [N, 3, 3]
        m_t = tf.stack([tf.stack([one, zero, -tx], -1), tf.stack([zero, one, -ty], -1),
                        tf.stack([zero, zero, one], -1)], 1)  # [N, 3, 3]
        if transform is None:
            transform = tf.convert_to_tensor(self.transform)  # [3, 3]
        transform = tf.cast(tf.convert_to_tensor(transform), tf.float32)
        if transform.shape.rank == 2:
            transform = transform[None]  # [1, 3, 3]
        trf = tf.matmul(tf.matmul(m_r, m_t), tf.broadcast_to(transform, tf.shape(m_r)))  # [N, 3, 3]
        freqs = tf.convert_to_tensor(self.freqs)[None]  # [1, C, 2]
        phases = tf.convert_to_tensor(self.phases)[None] + tf.squeeze(
            tf.matmul(tf.broadcast_to(freqs, [tf.shape(w)[0], self.channels, 2]), trf[:, :2, 2:]), 2)  # [N, C]
        freqs = tf.matmul(tf.broadcast_to(freqs, [tf.shape(w)[0], self.channels, 2]), trf[:, :2, :2])  # [N, C, 2]
        if self.sampling_rate / 2 > self.bandwidth:
            amplitudes = tf.clip_by_value(
                1 - (tf.norm(freqs, axis=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth), 0, 1)
        else:  # no roll-off band (b = s0/2, e.g. the StyleGAN2 config-b input): the limit, a hard cut at b
            amplitudes = tf.cast(tf.norm(freqs, axis=2) <= self.bandwidth * (1 + 1e-6), tf.float32)  # [N, C]
        sw, sh = self.size
        gx = tf.constant((np.arange(sw) + 0.5 - sw / 2) / self.sampling_rate, tf.float32)  # [W]
        gy = tf.constant((np.arange(sh) + 0.5 - sh / 2) / self.sampling_rate, tf.float32)  # [H]
        x = (gx[None, None, :, None] * freqs[:, None, None, :, 0]
             + gy[None, :, None, None] * freqs[:, None, None, :, 1])  # [N, H, W, C]
        x = x + phases[:, None, None, :]
        x = tf.sin(x * (np.pi * 2))
        x = x * amplitudes[:, None, None, :]
        weight = self.weight * (1 / math.sqrt(self.channels))  # [C_in, C_out]
        n = tf.shape(x)[0]
        x = tf.reshape(tf.matmul(tf.reshape(x, [-1, self.channels]), weight), [n, sh, sw, self.channels])
        return x  # [N, H, W, C]

    def original_entries(self, prefix):
        return [OriginalEntry(prefix + "weight", FC, self.weight),
                OriginalEntry(prefix + "transform", BUFFER, self.transform),
                OriginalEntry(prefix + "freqs", BUFFER, self.freqs),
                OriginalEntry(prefix + "phases", BUFFER, self.phases)] + self.affine.original_entries(prefix + "affine.")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(w_dim=self.w_dim, channels=self.channels, size=list(self.size), sampling_rate=self.sampling_rate,
                   bandwidth=self.bandwidth)
        return cfg


# ----------------------------------------------------------------------------------------------------------------

@register
class SynthesisLayer(keras.layers.Layer):
    """One synthesis layer (docs/ALGORITHM.md §3.4): affine -> modulated conv (input gain = magnitude_ema^-1/2) ->
    filtered_lrelu with the designed up/down filters; ToRGB variant (1x1, no demodulation, linear, no filters).

    Args (the original's): w_dim; is_torgb; is_critically_sampled; use_fp16 (used only with a GPU);
      in_channels, out_channels; in_size, out_size (int or [W, H], square only); in_sampling_rate,
      out_sampling_rate; in_cutoff, out_cutoff; in_half_width, out_half_width; conv_kernel (3; ToRGB uses 1);
      filter_size (6); lrelu_upsampling (2); use_radial_filters (False); conv_clamp (256 or None);
      magnitude_ema_beta (0.999).
    Variables: ``weight [k, k, in, out]``, ``bias [out]``, ``magnitude_ema []`` (non-trainable), ``affine``.
    ``up_filter`` / ``down_filter`` are float32 numpy constants (or None).
    """

    def __init__(self, w_dim, is_torgb, is_critically_sampled, use_fp16, in_channels, out_channels, in_size,
                 out_size, in_sampling_rate, out_sampling_rate, in_cutoff, out_cutoff, in_half_width, out_half_width,
                 conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False, conv_clamp=256,
                 magnitude_ema_beta=0.999, **kwargs):
        super().__init__(**kwargs)
        self.w_dim = int(w_dim)
        self.is_torgb = bool(is_torgb)
        self.is_critically_sampled = bool(is_critically_sampled)
        self.use_fp16 = bool(use_fp16)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        sizes = []
        for nm, v in (("in_size", in_size), ("out_size", out_size)):
            v = [int(v)] * 2 if np.ndim(v) == 0 else [int(a) for a in v]
            if len(v) != 2 or v[0] != v[1]:
                raise ValueError(f"SynthesisLayer {self.name}: {nm} must be square, got {v}")
            sizes.append(v)
        self.in_size, self.out_size = sizes
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.in_cutoff, self.out_cutoff = float(in_cutoff), float(out_cutoff)
        self.in_half_width, self.out_half_width = float(in_half_width), float(out_half_width)
        self.filter_size, self.lrelu_upsampling = int(filter_size), int(lrelu_upsampling)
        self.use_radial_filters = bool(use_radial_filters)
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = float(magnitude_ema_beta)
        g = _filters.layer_geometry(self.is_torgb, in_sampling_rate, out_sampling_rate, self.in_size[0],
                                    self.out_size[0], conv_kernel, self.filter_size, self.lrelu_upsampling,
                                    name=f"SynthesisLayer {self.name}")
        self.conv_kernel = g["conv_kernel"]
        self.tmp_sampling_rate = g["tmp_sampling_rate"]
        self.up_factor, self.down_factor = g["up"], g["down"]
        self.up_taps, self.down_taps = g["up_taps"], g["down_taps"]
        self.padding = list(g["padding"])
        self.up_filter = _filters.design_lowpass_filter(self.up_taps, self.in_cutoff, self.in_half_width * 2,
                                                        self.tmp_sampling_rate)
        self.down_radial = self.use_radial_filters and not self.is_critically_sampled
        self.down_filter = _filters.design_lowpass_filter(self.down_taps, self.out_cutoff, self.out_half_width * 2,
                                                          self.tmp_sampling_rate, radial=self.down_radial)
        self._conv_kernel_arg = int(conv_kernel)

        self.affine = FullyConnectedLayer(self.w_dim, self.in_channels, bias_init=1, name="affine")
        self.weight = self.bias = self.magnitude_ema = None

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.in_size[1], self.in_size[0], self.in_channels))
        build_sublayers(self.affine)
        k = self.conv_kernel
        self.weight = self.add_weight(shape=(k, k, self.in_channels, self.out_channels),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0), name="weight",
                                      trainable=self.trainable)
        self.bias = self.add_weight(shape=(self.out_channels,), initializer="zeros", name="bias",
                                    trainable=self.trainable)
        self.magnitude_ema = self.add_weight(shape=(), initializer="ones", trainable=False, aggregation="mean",
                                             name="magnitude_ema")

    def compute_dtype_for(self, force_fp32=False):
        return tf.float16 if (self.use_fp16 and not force_fp32 and fp16_enabled()) else tf.float32

    def call(self, x, w, update_emas=False, force_fp32=False):
        """x ``[N, in_size, in_size, in_channels]``, w ``[N, w_dim]`` -> ``[N, out_size, out_size, out_channels]``."""
        x = tf.convert_to_tensor(x)
        expect = (self.in_size[1], self.in_size[0], self.in_channels)
        if x.shape.rank != 4 or any(a is not None and a != b for a, b in zip(x.shape[1:], expect)):
            raise ValueError(f"{self.name}: x must have shape [N, {expect[0]}, {expect[1]}, {expect[2]}], "
                             f"got {x.shape}")
        if update_emas:
            mag = tf.reduce_mean(tf.square(tf.cast(tf.stop_gradient(x), tf.float32)))
            self.magnitude_ema.assign(mag + self.magnitude_ema_beta * (self.magnitude_ema - mag))
        input_gain = tf.math.rsqrt(tf.convert_to_tensor(self.magnitude_ema))

        styles = self.affine(tf.cast(w, tf.float32))  # [N, in]
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))

        dtype = self.compute_dtype_for(force_fp32)
        x = _modulated_conv2d(tf.cast(x, dtype), self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=input_gain)  # [N, in+k-1, in+k-1, out]
        gain = 1 if self.is_torgb else math.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        x = _filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=tf.cast(self.bias, x.dtype),
                           up=self.up_factor, down=self.down_factor, padding=self.padding, gain=gain, slope=slope,
                           clamp=self.conv_clamp)  # [N, out_size, out_size, out]
        return x

    def original_entries(self, prefix):
        out = [OriginalEntry(prefix + "weight", CONV, self.weight),
               OriginalEntry(prefix + "bias", BUFFER, self.bias),
               OriginalEntry(prefix + "magnitude_ema", BUFFER, self.magnitude_ema)]
        if self.up_filter is not None:
            out.append(OriginalEntry(prefix + "up_filter", FILTER, self.up_filter))
        if self.down_filter is not None:
            out.append(OriginalEntry(prefix + "down_filter", FILTER, self.down_filter))
        return out + self.affine.original_entries(prefix + "affine.")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(w_dim=self.w_dim, is_torgb=self.is_torgb, is_critically_sampled=self.is_critically_sampled,
                   use_fp16=self.use_fp16, in_channels=self.in_channels, out_channels=self.out_channels,
                   in_size=list(self.in_size), out_size=list(self.out_size), in_sampling_rate=self.in_sampling_rate,
                   out_sampling_rate=self.out_sampling_rate, in_cutoff=self.in_cutoff, out_cutoff=self.out_cutoff,
                   in_half_width=self.in_half_width, out_half_width=self.out_half_width,
                   conv_kernel=self._conv_kernel_arg, filter_size=self.filter_size,
                   lrelu_upsampling=self.lrelu_upsampling, use_radial_filters=self.use_radial_filters,
                   conv_clamp=self.conv_clamp, magnitude_ema_beta=self.magnitude_ema_beta)
        return cfg


# ----------------------------------------------------------------------------------------------------------------

SYNTHESIS_LAYER_KWARGS = ("conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters", "conv_clamp",
                          "magnitude_ema_beta")


@register
class SynthesisNetwork(keras.layers.Layer):
    """Synthesis network (docs/ALGORITHM.md §3.5): ``SynthesisInput`` + layers ``L{i}_{size}_{ch}`` (i = 0..num_layers) from
    ``afgan_tf.filters.synthesis_schedule``; output = last layer x ``output_scale``, float32 NHWC.

    Args (the original's): w_dim, img_resolution, img_channels, channel_base (32768), channel_max (512),
      num_layers (14), num_critical (2), first_cutoff (2), first_stopband (2**2.1), last_stopband_rel (2**0.3),
      margin_size (10), output_scale (0.25), num_fp16_res (4), and per-layer kwargs conv_kernel, filter_size,
      lrelu_upsampling, use_radial_filters, conv_clamp, magnitude_ema_beta.
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_layers=14,
                 num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10,
                 output_scale=0.25, num_fp16_res=4, name="synthesis", **layer_kwargs):
        _check_kwargs(layer_kwargs, SYNTHESIS_LAYER_KWARGS, "SynthesisNetwork")
        super().__init__(name=name)
        self.w_dim, self.img_resolution, self.img_channels = int(w_dim), int(img_resolution), int(img_channels)
        self.num_layers, self.num_critical = int(num_layers), int(num_critical)
        self.channel_base, self.channel_max = channel_base, channel_max
        self.first_cutoff, self.first_stopband = first_cutoff, first_stopband
        self.last_stopband_rel, self.margin_size = last_stopband_rel, margin_size
        self.output_scale, self.num_fp16_res = float(output_scale), int(num_fp16_res)
        self.layer_kwargs = dict(layer_kwargs)
        self.num_ws = self.num_layers + 2
        sk = {k: layer_kwargs[k] for k in ("conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters")
              if k in layer_kwargs}
        self.schedule = tuple(_filters.synthesis_schedule(
            self.img_resolution, channel_base, channel_max, num_layers=self.num_layers,
            num_critical=self.num_critical, first_cutoff=first_cutoff, first_stopband=first_stopband,
            last_stopband_rel=last_stopband_rel, margin_size=margin_size, num_fp16_res=self.num_fp16_res,
            img_channels=self.img_channels, **sk))
        inp = _filters.input_spec(self.schedule)
        self.input_layer = SynthesisInput(self.w_dim, inp["channels"], inp["size"], inp["sampling_rate"],
                                          inp["bandwidth"], name="input")
        names = []
        for L in self.schedule:
            layer = SynthesisLayer(
                w_dim=self.w_dim, is_torgb=L.is_torgb, is_critically_sampled=L.is_critically_sampled,
                use_fp16=L.use_fp16, in_channels=L.in_channels, out_channels=L.out_channels, in_size=L.in_size,
                out_size=L.out_size, in_sampling_rate=L.in_sampling_rate, out_sampling_rate=L.out_sampling_rate,
                in_cutoff=L.in_cutoff, out_cutoff=L.out_cutoff, in_half_width=L.in_half_width,
                out_half_width=L.out_half_width, name=L.name, **layer_kwargs)
            # attributes named like the original's modules (L0_36_512, ...): G.synthesis.L0_36_512 works as in the
            # original, and tf.train.Checkpoint follows attributes (not Keras-wrapped lists)
            setattr(self, L.name, layer)
            names.append(L.name)
        self._layer_names = tuple(names)

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.num_ws, self.w_dim))
        build_sublayers(self.input_layer, *self.synthesis_layers)

    @property
    def layer_names(self):
        """Original names of the layers, e.g. ['L0_36_512', ..., 'L14_256_3']."""
        return list(self._layer_names)

    @property
    def synthesis_layers(self):
        """The SynthesisLayers L0 ... L{num_layers} in order."""
        return [getattr(self, n) for n in self._layer_names]

    @property
    def input(self):
        """The ``SynthesisInput`` layer (``G.synthesis.input.transform`` is the user transform)."""
        return self.input_layer

    def __getitem__(self, name):
        """Layer by its original name, e.g. ``G.synthesis['L3_36_64']``."""
        if name in self._layer_names:
            return getattr(self, name)
        raise KeyError(f"no synthesis layer named {name!r}; layers: {self.layer_names}")

    def call(self, ws, update_emas=False, force_fp32=False, transform=None, **unused):
        """ws ``[N, num_ws, w_dim]`` -> image ``[N, R, R, img_channels]`` float32.
        ``transform`` (optional ``[3, 3]`` / ``[N, 3, 3]``) overrides ``input.transform`` for this call.
        Extra kwargs of the original (``noise_mode``) are accepted and ignored."""
        _check_kwargs(unused, ("noise_mode",), "SynthesisNetwork.call")
        return self.run(ws, update_emas=update_emas, force_fp32=force_fp32, transform=transform)[-1]

    def run(self, ws, update_emas=False, force_fp32=False, transform=None):
        """Like ``call`` but returns ``[input_out, L0_out, ..., L{N}_out, image]`` (NHWC, for tests/debugging)."""
        ws = check_ws(ws, self.num_ws, self.w_dim)  # [N, num_ws, w_dim] float32
        outs = [self.input_layer(ws[:, 0], transform=transform)]
        x = outs[0]
        for i, layer in enumerate(self.synthesis_layers):
            x = layer(x, ws[:, i + 1], update_emas=update_emas, force_fp32=force_fp32)
            outs.append(x)
        outs.append(tf.cast(x * self.output_scale, tf.float32))
        return outs

    def original_entries(self, prefix):
        out = self.input_layer.original_entries(prefix + "input.")
        for n, layer in zip(self.layer_names, self.synthesis_layers):
            out += layer.original_entries(prefix + n + ".")
        return out

    def get_config(self):
        cfg = dict(name=self.name, w_dim=self.w_dim, img_resolution=self.img_resolution,
                   img_channels=self.img_channels, channel_base=self.channel_base, channel_max=self.channel_max,
                   num_layers=self.num_layers, num_critical=self.num_critical, first_cutoff=self.first_cutoff,
                   first_stopband=self.first_stopband, last_stopband_rel=self.last_stopband_rel,
                   margin_size=self.margin_size, output_scale=self.output_scale, num_fp16_res=self.num_fp16_res)
        cfg.update(self.layer_kwargs)
        return cfg
