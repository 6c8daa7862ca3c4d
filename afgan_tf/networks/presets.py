"""Network kwargs exactly as the original train.py builds them for ``--cfg`` (docs/ALGORITHM.md §5.8).

``generator_kwargs(cfg, img_resolution, ...)`` / ``discriminator_kwargs(cfg, img_resolution, ...)`` return the
constructor kwargs (the original's ``G_kwargs`` / ``D_kwargs`` plus ``c_dim, img_resolution, img_channels``), so
``Generator(**generator_kwargs('stylegan3-t', 256))`` builds the default StyleGAN3-T at 256x256.
``stylegan2-fourier`` (ours, not in the original train.py) is the paper's config b: the ``stylegan2`` kwargs plus
``input_type='fourier'`` (Fourier-feature input instead of the learned constant; EQ-T / EQ-R become measurable).
``generator_class(cfg)`` returns the class to build (StyleGAN3 ``Generator`` or ``stylegan2.Generator``).
"""

from ..configs import CONFIGS, STYLEGAN2_CONFIGS

__all__ = ["CONFIGS", "STYLEGAN2_CONFIGS", "generator_kwargs", "discriminator_kwargs", "magnitude_ema_beta",
           "generator_class"]


def _check_cfg(cfg):
    if cfg not in CONFIGS:
        raise ValueError(f"cfg must be one of {CONFIGS}, got {cfg!r}")


def _check_common(img_resolution, img_channels, c_dim, cbase, cmax):
    for name, v, lo in (("img_resolution", img_resolution, 4), ("img_channels", img_channels, 1),
                        ("c_dim", c_dim, 0), ("cbase", cbase, 1), ("cmax", cmax, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two, got {img_resolution}")


def generator_class(cfg):
    """The generator class for ``cfg``: ``stylegan2.Generator`` for the StyleGAN2 configs, else ``Generator``."""
    _check_cfg(cfg)
    if cfg in STYLEGAN2_CONFIGS:
        from .stylegan2 import Generator
    else:
        from .generator import Generator
    return Generator


def magnitude_ema_beta(batch):
    """train.py's StyleGAN3 magnitude EMA decay: half-life of 20k images, one update per batch."""
    if not batch > 0:
        raise ValueError(f"batch must be > 0, got {batch!r}")
    return 0.5 ** (batch / (20 * 1e3))


def generator_kwargs(cfg, img_resolution, img_channels=3, c_dim=0, cbase=32768, cmax=512, map_depth=None, batch=32,
                     fp32=False):
    """Generator constructor kwargs for ``cfg`` in {'stylegan3-t', 'stylegan3-r', 'stylegan2', 'stylegan2-fourier'}.

    Common: z_dim = w_dim = 512, mapping depth ``map_depth`` (default 2 for StyleGAN3, 8 for StyleGAN2),
    channel_base/max = cbase/cmax, num_fp16_res 4 and conv_clamp 256 (0 / None with ``fp32``).
    StyleGAN3: magnitude_ema_beta = 0.5 ** (batch / 20000); -R additionally doubles channel_base and channel_max,
    uses conv_kernel 1 and radial filters. stylegan2-fourier: the stylegan2 kwargs + ``input_type='fourier'``.
    """
    _check_cfg(cfg)
    _check_common(img_resolution, img_channels, c_dim, cbase, cmax)
    if map_depth is None:
        map_depth = 8 if cfg in STYLEGAN2_CONFIGS else 2
    if isinstance(map_depth, bool) or not isinstance(map_depth, int) or map_depth < 1:
        raise ValueError(f"map_depth must be an int >= 1, got {map_depth!r}")
    kw = dict(z_dim=512, c_dim=c_dim, w_dim=512, img_resolution=img_resolution, img_channels=img_channels,
              mapping_kwargs=dict(num_layers=map_depth), channel_base=cbase, channel_max=cmax,
              num_fp16_res=0 if fp32 else 4, conv_clamp=None if fp32 else 256)
    if cfg in STYLEGAN2_CONFIGS:
        kw["fused_modconv_default"] = "inference_only"  # as the original's train.py (no numerical effect here)
        if cfg == "stylegan2-fourier":
            kw["input_type"] = "fourier"
    else:
        kw["magnitude_ema_beta"] = magnitude_ema_beta(batch)
    if cfg == "stylegan3-r":
        kw.update(conv_kernel=1, channel_base=cbase * 2, channel_max=cmax * 2, use_radial_filters=True)
    return kw


def discriminator_kwargs(cfg, img_resolution, img_channels=3, c_dim=0, cbase=32768, cmax=512, mbstd_group=4,
                         freezed=0, fp32=False):
    """Discriminator constructor kwargs (the StyleGAN2 residual D for every cfg; capacity not doubled for -R)."""
    _check_cfg(cfg)
    _check_common(img_resolution, img_channels, c_dim, cbase, cmax)
    if isinstance(freezed, bool) or not isinstance(freezed, int) or freezed < 0:
        raise ValueError(f"freezed must be an int >= 0, got {freezed!r}")
    return dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture="resnet",
                channel_base=cbase, channel_max=cmax, num_fp16_res=0 if fp32 else 4,
                conv_clamp=None if fp32 else 256, block_kwargs=dict(freeze_layers=freezed), mapping_kwargs=dict(),
                epilogue_kwargs=dict(mbstd_group_size=mbstd_group))
