"""StyleGAN3 generator (docs/ALGORITHM.md §3.1): ``Generator = MappingNetwork + SynthesisNetwork`` as a Keras 3 model, NHWC.

``Generator(**init_kwargs)`` takes exactly the original's constructor kwargs; ``original_state_dict()`` /
``load_original_state_dict(sd)`` convert from/to the original's parameter names and layouts
(conv ``[O, I, kh, kw]`` <-> ``[kh, kw, I, O]``, dense ``[out, in]`` <-> ``[in, out]``, buffers verbatim,
filters checked against ours).
"""
import json

import keras
import numpy as np

from .layers import (BUFFER, CONV, FC, FILTER, MappingNetwork, NetworkConfig, SYNTHESIS_LAYER_KWARGS,
                     SynthesisNetwork, _check_kwargs, build_sublayers, register)

__all__ = ["Generator", "StateDictError", "load_original_state_dict", "FILTER_TOLERANCE"]

FILTER_TOLERANCE = 1e-6
SYNTHESIS_KWARGS = ("channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
                    "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res") + SYNTHESIS_LAYER_KWARGS
MAPPING_KWARGS = ("num_layers", "lr_multiplier", "w_avg_beta")


class StateDictError(ValueError):
    """A state_dict entry is unknown, missing, mis-shaped, or a filter differs from ours."""


def _to_numpy(v, name):
    if hasattr(v, "detach"):  # torch tensor
        v = v.detach().cpu().numpy()
    try:
        return np.asarray(v)
    except Exception as e:  # pragma: no cover
        raise StateDictError(f"state_dict entry {name!r}: cannot convert value of type {type(v).__name__} to an "
                             f"array ({e})") from None


def load_original_state_dict(entries, sd, strict=True, owner="network"):
    """Loads ``sd`` ({original name: array in the original layout}) into ``entries`` (list of OriginalEntry).

    Everything is validated first (unknown / missing names when ``strict``, shapes always, designed filters within
    ``FILTER_TOLERANCE``), then all variables are assigned. Returns the list of loaded names.
    """
    if not hasattr(sd, "items"):
        raise TypeError(f"{owner}: state_dict must be a mapping of name -> array, got {type(sd).__name__}")
    by_name = {e.name: e for e in entries}
    unknown = [k for k in sd if k not in by_name]
    missing = [k for k in by_name if k not in sd]
    if strict and unknown:
        raise StateDictError(f"{owner}: unknown state_dict entr{'y' if len(unknown) == 1 else 'ies'} "
                             f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    if strict and missing:
        raise StateDictError(f"{owner}: missing state_dict entr{'y' if len(missing) == 1 else 'ies'} "
                             f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    plan = []
    for name, value in sd.items():
        e = by_name.get(name)
        if e is None:
            continue
        a = _to_numpy(value, name)
        if tuple(a.shape) != e.shape:
            raise StateDictError(f"{owner}: state_dict entry {name!r} has shape {tuple(a.shape)}, expected {e.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise StateDictError(f"{owner}: state_dict entry {name!r} has non-numeric dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise StateDictError(f"{owner}: state_dict entry {name!r} contains non-finite values")
        if e.kind == FILTER:
            err = float(np.max(np.abs(a.astype(np.float64) - e.target.astype(np.float64)))) if a.size else 0.0
            if err > FILTER_TOLERANCE:
                raise StateDictError(f"{owner}: state_dict entry {name!r} differs from the filter designed from the "
                                     f"kwargs by {err:.3g} (> {FILTER_TOLERANCE:g}); the file was made with other "
                                     f"filter parameters")
            continue
        plan.append((e, e.from_original(a)))
    for e, v in plan:
        e.target.assign(v)
    return [e.name for e, _ in plan]


class GeneratorBase(NetworkConfig, keras.Model):
    """What the StyleGAN3 and StyleGAN2 generators share: the original's call convention
    (mapping -> synthesis), ``init_kwargs`` / ``get_config`` (:class:`NetworkConfig`) and the original-name state
    dict. Subclasses create ``self.mapping`` / ``self.synthesis`` and ``self._init_kwargs_json`` in ``__init__``,
    end it with ``self.build()`` (variables exist right after construction) and set ``_owner`` (the name used in
    error messages)."""
    _owner = "Generator"

    def build(self, input_shape=None):
        """Creates every variable (synthesis first, then mapping: the original's state_dict order)."""
        build_sublayers(self.synthesis, self.mapping)

    def call(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    # -- original names / layouts ----------------------------------------------------------------------------
    def original_entries(self):
        """OriginalEntry list in the original state_dict order (synthesis, then mapping)."""
        return self.synthesis.original_entries("synthesis.") + self.mapping.original_entries("mapping.")

    def original_variables(self):
        """{original name: Keras variable} (filters, which are constants, excluded)."""
        return {e.name: e.target for e in self.original_entries() if e.kind != FILTER}

    def original_state_dict(self):
        """{original name: numpy array in the original layout}, incl. the designed / resample filters."""
        return {e.name: e.to_original() for e in self.original_entries()}

    def load_original_state_dict(self, sd, strict=True):
        """Loads an original state_dict (numpy / torch values). Errors (``StateDictError``) name the entry:
        unknown or missing names (``strict``), wrong shapes, filters differing from ours by > 1e-6."""
        return load_original_state_dict(self.original_entries(), sd, strict=strict, owner=self._owner)


@register
class Generator(GeneratorBase):
    """StyleGAN3 generator.

    Args (exactly the original's): z_dim, c_dim, w_dim, img_resolution, img_channels,
      mapping_kwargs (num_layers, lr_multiplier, w_avg_beta), and synthesis kwargs: channel_base, channel_max,
      num_layers, num_critical, first_cutoff, first_stopband, last_stopband_rel, margin_size, output_scale,
      num_fp16_res, conv_kernel, filter_size, lrelu_upsampling, use_radial_filters, conv_clamp, magnitude_ema_beta.
    Call: ``G(z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, force_fp32=False)`` ->
    float32 ``[N, R, R, img_channels]``. Random draws at construction (weights, Fourier features) follow
    ``keras.utils.set_random_seed``.
    """
    snapshot_class = "stylegan3.Generator"  # the class name in our snapshots (afgan_tf.convert)

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, **synthesis_kwargs):
        _check_kwargs(synthesis_kwargs, SYNTHESIS_KWARGS, "Generator")
        mapping_kwargs = dict(mapping_kwargs or {})
        _check_kwargs(mapping_kwargs, MAPPING_KWARGS, "Generator mapping_kwargs")
        super().__init__(name="generator")
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        kw = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                  mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        self._init_kwargs_json = json.dumps(kw, default=float)
        self.synthesis = SynthesisNetwork(w_dim=self.w_dim, img_resolution=self.img_resolution,
                                          img_channels=self.img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                                      name="mapping", **mapping_kwargs)
        self.build()


# Keep the kinds importable from here too (used by converters).
LAYOUT_KINDS = dict(fc=FC, conv=CONV, buffer=BUFFER, filter=FILTER)
