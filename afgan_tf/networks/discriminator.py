"""StyleGAN2 discriminator (used unchanged by StyleGAN3; docs/ALGORITHM.md §4), NHWC, Keras 3.

Layers (one per concept):
* :class:`Conv2dLayer` — equalised-lr conv (weight × 1/sqrt(in·k²)), optional [1,3,3,1] down/up-sampling through
  ``conv2d_resample``, then ``bias_act`` with gain ``def_gain·g`` and clamp ``conv_clamp·g``.
* :class:`MinibatchStdLayer` — strided group statistics (sample n belongs to group ``n mod (N/G)``).
* :class:`DiscriminatorBlock` — fromrgb (first block / 'skip'), conv0, conv1 (down 2), resnet skip (down 2, gain √½).
* :class:`DiscriminatorEpilogue` — mbstd → conv 3×3 → flatten (NHWC; the fc kernel is permuted on load/export so
  it matches the original's NCHW flatten) → fc → out (→ projection on the label embedding when conditional).
* :class:`DiscriminatorMapping` — label embedding for conditional D (StyleGAN2 mapping network with z_dim=0).
* :class:`Discriminator` — the model; ``D(img [N, R, R, C], c [N, c_dim]) → logits [N, 1]``.

Variables hold the *raw* stored parameters (same parametrisation as the original, so Adam behaves the same) in
TF layout: conv ``[kh, kw, in, out]``, fc ``[in, out]``. ``original_state_dict`` / ``load_original_state_dict``
convert to / from the original's names and layouts (conv ``[out, in, kh, kw]``, fc ``[out, in]``).
Mixed precision as the original: blocks at resolution >= max(2^(log2 R + 1 - num_fp16_res), 8) compute in
float16 when a GPU is present (``force_fp32=True`` disables it); the epilogue and all CPU runs are float32.
"""
import json

import numpy as np
import tensorflow as tf
import keras

from afgan_tf.ops.bias_act import ACTIVATIONS, bias_act
from afgan_tf.ops.conv2d_resample import conv2d_resample
from afgan_tf.ops.upfirdn2d import setup_filter, downsample2d
from afgan_tf.networks import layers as _layers
from afgan_tf.networks.layers import (FC, CONV, BUFFER, FILTER, FullyConnectedLayer, NetworkConfig, OriginalEntry,
                                      _check_kwargs, _normalize_2nd_moment, build_sublayers, check_build_shape,
                                      register)
from afgan_tf.networks.generator import StateDictError, load_original_state_dict

__all__ = ["StateDictError", "Conv2dLayer", "FullyConnectedLayer", "MinibatchStdLayer", "DiscriminatorBlock", "DiscriminatorEpilogue",
           "DiscriminatorMapping", "Discriminator"]

_SQRT_HALF = float(np.sqrt(0.5))


def _json_scalar(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, np.ndarray)):
        return list(np.asarray(o).tolist())
    raise TypeError(f"value {o!r} of type {type(o).__name__} is not JSON-serialisable")


def _act_gain(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    return float(ACTIVATIONS[activation].def_gain)


class _NCHWFlattenFC(OriginalEntry):
    """b4.fc weight: ours ``[(h, w, c), out]`` (NHWC flatten) <-> original ``[out, (c, h, w)]`` (NCHW flatten)."""
    __slots__ = ("channels", "res")

    def __init__(self, name, target, channels, res):
        super().__init__(name, FC, target)
        self.channels, self.res = int(channels), int(res)

    def to_original(self):
        v = np.asarray(keras.ops.convert_to_numpy(self.target))  # [r*r*c, o]
        c, r, o = self.channels, self.res, v.shape[1]
        return np.ascontiguousarray(v.reshape(r, r, c, o).transpose(3, 2, 0, 1).reshape(o, c * r * r))

    def from_original(self, a):
        a = np.asarray(a, dtype=np.float32)  # [o, c*r*r]
        c, r, o = self.channels, self.res, a.shape[0]
        return np.ascontiguousarray(a.reshape(o, c, r, r).transpose(2, 3, 1, 0).reshape(r * r * c, o))


# ----------------------------------------------------------------------------------------------------------------

@register
class Conv2dLayer(keras.layers.Layer):
    """Equalised-lr conv used by D (docs/ALGORITHM.md §1.7).

    Args:
        in_channels, out_channels, kernel_size: conv shape (padding ``kernel_size // 2``).
        bias: add a bias. activation: ``bias_act`` activation. up, down: resampling factor (1 or 2).
        resample_filter: FIR taps for resampling (default [1,3,3,1]). conv_clamp: clamp after the activation.
        trainable: False for frozen layers (freeze-D).
    Call ``layer(x, gain=1)``: ``x [N, H, W, in] -> [N, H*up/down, W*up/down, out]``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, trainable=True, **kwargs):
        kwargs.setdefault("autocast", False)  # compute in the dtype of x (float16 blocks on GPU)
        super().__init__(trainable=trainable, **kwargs)
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.activation = activation
        self.act_gain = _act_gain(activation)
        self.up, self.down = int(up), int(down)
        self.conv_clamp = conv_clamp
        self.resample_filter_taps = [float(t) for t in resample_filter]
        self.resample_filter = setup_filter(self.resample_filter_taps)  # [4, 4] normalised
        self.padding = self.kernel_size // 2
        self.weight_gain = 1.0 / np.sqrt(self.in_channels * self.kernel_size ** 2)
        self.use_bias = bool(bias)
        self.weight = self.bias = None

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.in_channels,))
        k = self.kernel_size
        self.weight = self.add_weight(name="weight", shape=(k, k, self.in_channels, self.out_channels),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0), trainable=self.trainable)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.out_channels,), initializer="zeros",
                                        trainable=self.trainable)

    def call(self, x, gain=1.0):  # [N, H, W, in]
        w = tf.cast(self.weight * self.weight_gain, x.dtype)  # [k, k, in, out]; scaled in fp32 like the original
        x = conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
                            flip_weight=(self.up == 1))  # [N, H', W', out]
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = tf.cast(self.bias, x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def original_entries(self, prefix):
        out = [OriginalEntry(prefix + "weight", CONV, self.weight)]
        if self.bias is not None:
            out.append(OriginalEntry(prefix + "bias", BUFFER, self.bias))
        out.append(OriginalEntry(prefix + "resample_filter", FILTER, self.resample_filter.numpy()))
        return out

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                   bias=self.use_bias, activation=self.activation, up=self.up, down=self.down,
                   resample_filter=self.resample_filter_taps, conv_clamp=self.conv_clamp)
        return cfg


@register
class MinibatchStdLayer(keras.layers.Layer):
    """Minibatch standard deviation (docs/ALGORITHM.md §4), NHWC.

    Args:
        group_size: G (effective ``min(G, N)``; None = whole batch). N must be divisible by it.
        num_channels: F, number of statistics feature maps appended.
    The batch is viewed as ``[G, N/G, ...]`` (member-major), so sample n belongs to group ``n mod (N/G)``.
    ``x [N, H, W, C] -> [N, H, W, C + F]``.
    """

    def __init__(self, group_size, num_channels=1, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.group_size = None if group_size is None else int(group_size)
        self.num_channels = int(num_channels)

    def build(self, input_shape=None):  # no variables
        if input_shape is not None and input_shape[-1] is not None and int(input_shape[-1]) % self.num_channels:
            raise ValueError(f"{self.name}: channels {input_shape[-1]} not divisible by num_channels "
                             f"{self.num_channels}")

    def call(self, x):
        shape = tf.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        c = x.shape[-1]
        f = self.num_channels
        if c % f:
            raise ValueError(f"MinibatchStdLayer: channels {c} not divisible by num_channels {f}")
        g = n if self.group_size is None else tf.minimum(self.group_size, n)
        tf.debugging.assert_equal(n % g, 0, message="MinibatchStdLayer: batch size must be divisible by the "
                                                    "group size min(mbstd_group_size, N)")
        y = tf.reshape(x, [g, -1, h, w, f, c // f])  # [G, n, H, W, F, c]
        y = y - tf.reduce_mean(y, axis=0)  # [G, n, H, W, F, c]
        y = tf.reduce_mean(tf.square(y), axis=0)  # [n, H, W, F, c]
        y = tf.sqrt(y + 1e-8)
        y = tf.reduce_mean(y, axis=[1, 2, 4])  # [n, F]
        y = tf.reshape(y, [-1, 1, 1, f])  # [n, 1, 1, F]
        y = tf.tile(y, [g, h, w, 1])  # [N, H, W, F]   (sample i gets group i mod n)
        return tf.concat([x, tf.cast(y, x.dtype)], axis=-1)  # [N, H, W, C + F]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(group_size=self.group_size, num_channels=self.num_channels)
        return cfg


@register
class DiscriminatorBlock(keras.layers.Layer):
    """One D block at resolution ``res``: ``x [N, res, res, in] (+ img) -> [N, res/2, res/2, out]``.

    Args:
        in_channels (0 for the first block), tmp_channels, out_channels, resolution, img_channels,
        first_layer_idx (global index of this block's first layer, for freeze_layers),
        architecture ('orig' | 'skip' | 'resnet'), activation, resample_filter, conv_clamp,
        use_fp16 (float16 compute when a GPU is present), fp16_channels_last (accepted; no effect in NHWC),
        freeze_layers (layers with global index < freeze_layers are non-trainable).
    Layer order (numbering for freeze): fromrgb, conv0, conv1, skip.
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture="resnet", activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        self.in_channels, self.tmp_channels, self.out_channels = int(in_channels), int(tmp_channels), int(out_channels)
        self.resolution, self.img_channels = int(resolution), int(img_channels)
        self.first_layer_idx, self.architecture = int(first_layer_idx), architecture
        self.use_fp16 = bool(use_fp16)
        self._config = dict(in_channels=self.in_channels, tmp_channels=self.tmp_channels,
                            out_channels=self.out_channels, resolution=self.resolution,
                            img_channels=self.img_channels, first_layer_idx=self.first_layer_idx,
                            architecture=architecture, activation=activation,
                            resample_filter=[float(t) for t in resample_filter], conv_clamp=conv_clamp,
                            use_fp16=self.use_fp16, fp16_channels_last=bool(fp16_channels_last),
                            freeze_layers=int(freeze_layers))
        self.resample_filter = setup_filter(list(resample_filter))
        self.num_layers = 0

        def trainable_next():
            idx = self.first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        common = dict(activation=activation, resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.fromrgb = None
        if self.in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(self.img_channels, self.tmp_channels, 1, trainable=trainable_next(),
                                       name="fromrgb", **common)
        self.conv0 = Conv2dLayer(self.tmp_channels, self.tmp_channels, 3, trainable=trainable_next(), name="conv0",
                                 **common)
        self.conv1 = Conv2dLayer(self.tmp_channels, self.out_channels, 3, down=2, trainable=trainable_next(),
                                 name="conv1", **common)
        self.skip = None
        if architecture == "resnet":
            self.skip = Conv2dLayer(self.tmp_channels, self.out_channels, 1, bias=False, down=2,
                                    trainable=trainable_next(), resample_filter=resample_filter, name="skip")

    def build(self, input_shape=None):
        build_sublayers(self.fromrgb, self.conv0, self.conv1, self.skip)

    def compute_dtype_for(self, force_fp32=False):
        """float16 for the top ``num_fp16_res`` resolutions when a GPU is present (as the original), else float32."""
        return tf.float16 if (self.use_fp16 and not force_fp32 and _layers.fp16_enabled()) else tf.float32

    def call(self, x, img, force_fp32=False):
        dtype = self.compute_dtype_for(force_fp32)
        if x is not None:
            x = tf.cast(x, dtype)
        if img is not None:
            img = tf.cast(img, dtype)
        if self.fromrgb is not None:
            y = self.fromrgb(img)  # [N, res, res, tmp]
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=_SQRT_HALF)  # [N, res/2, res/2, out]
            x = self.conv0(x)  # [N, res, res, tmp]
            x = self.conv1(x, gain=_SQRT_HALF)  # [N, res/2, res/2, out]
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def get_config(self):
        cfg = super().get_config()
        cfg.update(self._config)
        return cfg

    def original_entries(self, prefix):
        out = [OriginalEntry(prefix + "resample_filter", FILTER, self.resample_filter.numpy())]
        for name in ("fromrgb", "conv0", "conv1", "skip"):
            layer = getattr(self, name)
            if layer is not None:
                out += layer.original_entries(f"{prefix}{name}.")
        return out


@register
class DiscriminatorEpilogue(keras.layers.Layer):
    """Final D block at resolution 4: ``x [N, 4, 4, C] -> logits [N, 1]`` (or projected onto ``cmap``).

    Args:
        in_channels, cmap_dim (0 = unconditional), resolution (4), img_channels, architecture,
        mbstd_group_size (4), mbstd_num_channels (1; 0 disables), activation, conv_clamp.
    """

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet", mbstd_group_size=4,
                 mbstd_num_channels=1, activation="lrelu", conv_clamp=None, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.cmap_dim, self.resolution = int(in_channels), int(cmap_dim), int(resolution)
        self.img_channels, self.architecture = int(img_channels), architecture
        self._config = dict(in_channels=self.in_channels, cmap_dim=self.cmap_dim, resolution=self.resolution,
                            img_channels=self.img_channels, architecture=architecture,
                            mbstd_group_size=mbstd_group_size, mbstd_num_channels=int(mbstd_num_channels),
                            activation=activation, conv_clamp=conv_clamp)
        self.fromrgb = (Conv2dLayer(self.img_channels, self.in_channels, 1, activation=activation, name="fromrgb")
                        if architecture == "skip" else None)
        self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels, name="mbstd")
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(self.in_channels + int(mbstd_num_channels), self.in_channels, 3,
                                activation=activation, conv_clamp=conv_clamp, name="conv")
        self.fc = FullyConnectedLayer(self.in_channels * self.resolution ** 2, self.in_channels,
                                      activation=activation, name="fc")
        self.out = FullyConnectedLayer(self.in_channels, 1 if self.cmap_dim == 0 else self.cmap_dim, name="out")

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.resolution, self.resolution, self.in_channels))
        build_sublayers(self.fromrgb, self.conv, self.fc, self.out)

    def call(self, x, img, cmap=None):  # x [N, 4, 4, C]; always float32
        x = tf.cast(x, tf.float32)
        img = tf.cast(img, tf.float32) if img is not None else None
        if self.fromrgb is not None:
            x = x + self.fromrgb(img)
        if self.mbstd is not None:
            x = self.mbstd(x)  # [N, 4, 4, C + F]
        x = self.conv(x)  # [N, 4, 4, C]
        x = tf.reshape(x, [-1, self.resolution * self.resolution * self.in_channels])  # NHWC flatten [N, 16 C]
        x = self.fc(x)  # [N, C]
        x = self.out(x)  # [N, 1] or [N, cmap_dim]
        if self.cmap_dim > 0:
            x = tf.reduce_sum(x * cmap, axis=1, keepdims=True) * (1.0 / np.sqrt(self.cmap_dim))  # [N, 1]
        return x

    def get_config(self):
        cfg = super().get_config()
        cfg.update(self._config)
        return cfg

    def original_entries(self, prefix):
        out = []
        if self.fromrgb is not None:
            out += self.fromrgb.original_entries(prefix + "fromrgb.")
        out += self.conv.original_entries(prefix + "conv.")
        fc = self.fc.original_entries(prefix + "fc.")
        fc[0] = _NCHWFlattenFC(fc[0].name, fc[0].target, self.in_channels, self.resolution)  # NCHW flatten order
        out += fc
        out += self.out.original_entries(prefix + "out.")
        return out


def _normalize_2nd_moment(x, eps=1e-8):
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True) + eps)


@register
class DiscriminatorMapping(keras.layers.Layer):
    """Label embedding of the conditional D: the StyleGAN2 mapping network with ``z_dim=0`` (docs/ALGORITHM.md §4).

    Args: c_dim, w_dim (= cmap_dim), num_layers (8), embed_features (w_dim), layer_features (w_dim),
    activation ('lrelu'), lr_multiplier (0.01), w_avg_beta (ignored: D has no w_avg).
    ``c [N, c_dim] -> cmap [N, w_dim]``: embed → 2nd-moment normalise → ``num_layers`` FC.
    """

    def __init__(self, c_dim, w_dim, num_layers=8, embed_features=None, layer_features=None, activation="lrelu",
                 lr_multiplier=0.01, w_avg_beta=None, **kwargs):
        super().__init__(**kwargs)
        self.c_dim, self.w_dim, self.num_layers = int(c_dim), int(w_dim), int(num_layers)
        self._config = dict(c_dim=self.c_dim, w_dim=self.w_dim, num_layers=self.num_layers,
                            embed_features=embed_features, layer_features=layer_features, activation=activation,
                            lr_multiplier=float(lr_multiplier), w_avg_beta=w_avg_beta)
        embed_features = self.w_dim if embed_features is None else int(embed_features)
        layer_features = self.w_dim if layer_features is None else int(layer_features)
        self.embed = FullyConnectedLayer(self.c_dim, embed_features, name="embed")
        feats = [embed_features] + [layer_features] * (self.num_layers - 1) + [self.w_dim]
        self.fcs = [FullyConnectedLayer(feats[i], feats[i + 1], activation=activation, lr_multiplier=lr_multiplier,
                                        name=f"fc{i}") for i in range(self.num_layers)]
        for i, fc in enumerate(self.fcs):  # attributes named like the original's: tf.train.Checkpoint follows them
            setattr(self, f"fc{i}", fc)

    def build(self, input_shape=None):
        check_build_shape(self, input_shape, (self.c_dim,))
        build_sublayers(self.embed, *self.fcs)

    def call(self, c):  # [N, c_dim]
        x = _normalize_2nd_moment(self.embed(tf.cast(c, tf.float32)))  # [N, embed]
        for fc in self.fcs:
            x = fc(x)
        return x  # [N, w_dim]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(self._config)
        return cfg

    def original_entries(self, prefix):
        out = self.embed.original_entries(prefix + "embed.")
        for i, fc in enumerate(self.fcs):
            out += fc.original_entries(f"{prefix}fc{i}.")
        return out


_D_KWARGS = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
             "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")
_BLOCK_KWARGS = ("activation", "resample_filter", "fp16_channels_last", "freeze_layers")
_EPILOGUE_KWARGS = ("mbstd_group_size", "mbstd_num_channels", "activation")
_MAPPING_KWARGS = ("num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta")


@register
class Discriminator(NetworkConfig, keras.Model):
    """StyleGAN2 residual discriminator with the original's constructor kwargs (docs/ALGORITHM.md §4).

    Args:
        c_dim: label size (0 = unconditional). img_resolution: power of two >= 4. img_channels.
        architecture: 'resnet' (default, used by train.py), 'skip' or 'orig'.
        channel_base, channel_max: ``ch(r) = min(channel_base // r, channel_max)``.
        num_fp16_res: number of top resolutions computed in float16 when a GPU is present.
        conv_clamp: clamp of conv outputs (None = off). cmap_dim: label embedding size (default ch(4)).
        block_kwargs: activation, resample_filter, fp16_channels_last, freeze_layers.
        mapping_kwargs: see :class:`DiscriminatorMapping`. epilogue_kwargs: mbstd_group_size, mbstd_num_channels,
        activation.
    Call: ``D(img [N, R, R, img_channels], c=None [N, c_dim], force_fp32=False) -> logits [N, 1]`` (float32).
    With a GPU, blocks at the top ``num_fp16_res`` resolutions compute in float16 (unless ``force_fp32``);
    the epilogue and everything on CPU run in float32.
    """
    snapshot_class = "stylegan2.Discriminator"  # the class name in our snapshots (afgan_tf.convert)

    def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=4, conv_clamp=256, cmap_dim=None, block_kwargs=None,
                 mapping_kwargs=None, epilogue_kwargs=None, name="discriminator", **kwargs):
        _check_kwargs(kwargs, _D_KWARGS, "Discriminator")
        super().__init__(name=name)
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        _check_kwargs(block_kwargs, _BLOCK_KWARGS, "Discriminator block_kwargs")
        _check_kwargs(mapping_kwargs, _MAPPING_KWARGS, "Discriminator mapping_kwargs")
        _check_kwargs(epilogue_kwargs, _EPILOGUE_KWARGS, "Discriminator epilogue_kwargs")
        res = int(img_resolution)
        if res < 4 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        kw = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                  architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                  num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                  block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs)
        try:  # plain JSON types (numpy scalars -> Python), so snapshots can store them
            self._init_kwargs_json = json.dumps(kw, default=_json_scalar)
        except TypeError as e:
            raise TypeError(f"Discriminator: constructor kwargs must be JSON-serialisable: {e}") from None
        self.c_dim, self.img_resolution, self.img_channels = int(c_dim), res, int(img_channels)
        self.architecture = architecture
        log2 = int(np.log2(res))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        ch = {r: min(int(channel_base) // r, int(channel_max)) for r in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - int(num_fp16_res)), 8)
        if cmap_dim is None:
            cmap_dim = ch[4]
        if self.c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = int(cmap_dim)
        common = dict(img_channels=self.img_channels, architecture=architecture, conv_clamp=conv_clamp)
        self.blocks = []
        cur_layer_idx = 0
        for r in self.block_resolutions:
            in_ch = ch[r] if r < res else 0
            block = DiscriminatorBlock(in_ch, ch[r], ch[r // 2], resolution=r, first_layer_idx=cur_layer_idx,
                                       use_fp16=(r >= fp16_resolution), name=f"b{r}", **block_kwargs, **common)
            cur_layer_idx += block.num_layers
            self.blocks.append(block)
            setattr(self, f"b{r}", block)  # attribute named like the original's: tf.train.Checkpoint follows it
        self.num_layers = cur_layer_idx
        self.mapping = (DiscriminatorMapping(self.c_dim, self.cmap_dim, name="mapping", **mapping_kwargs)
                        if self.c_dim > 0 else None)
        self.b4 = DiscriminatorEpilogue(ch[4], cmap_dim=self.cmap_dim, resolution=4, name="b4",
                                        **epilogue_kwargs, **common)
        self.build()

    def build(self, input_shape=None):
        """Creates every variable (blocks, mapping, epilogue: the original's state_dict order)."""
        check_build_shape(self, input_shape, (self.img_resolution, self.img_resolution, self.img_channels))
        build_sublayers(*self.blocks, self.mapping, self.b4)

    def call(self, img, c=None, return_blocks=False, force_fp32=False):
        img = tf.convert_to_tensor(img)
        if img.dtype != tf.float32:
            img = tf.cast(img, tf.float32)
        if img.shape.rank != 4 or (img.shape[1] is not None and img.shape[1] != self.img_resolution) or \
                (img.shape[2] is not None and img.shape[2] != self.img_resolution) or \
                img.shape[3] != self.img_channels:
            raise ValueError(f"Discriminator: img must be [N, {self.img_resolution}, {self.img_resolution}, "
                             f"{self.img_channels}] (NHWC), got shape {img.shape}")
        x = None
        blocks = {}
        for block in self.blocks:
            x, img = block(x, img, force_fp32=force_fp32)  # [N, r/2, r/2, ch]
            blocks[block.name] = x
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"Discriminator: conditional (c_dim={self.c_dim}) but c is None")
            c = tf.convert_to_tensor(c, tf.float32)
            if c.shape.rank != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"Discriminator: c must be [N, {self.c_dim}], got shape {c.shape}")
            cmap = self.mapping(c)  # [N, cmap_dim]
        logits = self.b4(x, img, cmap)  # [N, 1]
        return (logits, blocks) if return_blocks else logits

    # ------------------------------------------------------------------------------------------------------------
    def original_entries(self):
        """List of :class:`OriginalEntry` in the original's state_dict order."""
        out = []
        for block in self.blocks:
            out += block.original_entries(block.name + ".")
        if self.mapping is not None:
            out += self.mapping.original_entries("mapping.")
        out += self.b4.original_entries("b4.")
        return out

    def original_state_dict(self):
        """``{original name: numpy array in the original layout}`` in the original's order."""
        return {e.name: e.to_original() for e in self.original_entries()}

    def load_original_state_dict(self, sd, strict=True):
        """Loads the original's state_dict (name -> array, original layout; numpy or torch values).

        Errors (``StateDictError``) name the entry: unknown or missing names (``strict``), wrong shapes,
        ``resample_filter`` buffers differing from ours by > 1e-6. Nothing is assigned unless all entries are valid.
        """
        return load_original_state_dict(self.original_entries(), sd, strict=strict, owner="Discriminator")
