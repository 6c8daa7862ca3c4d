"""The training config: one typed dataclass, presets, validation and the run directory (docs/ALGORITHM.md §5.7,
§5.8).

:class:`TrainConfig` holds everything a run needs: network kwargs in the original's form (``G_kwargs`` /
``D_kwargs``), class names, optimiser, loss, augmentation, EMA and bookkeeping settings. It is built from the
command-line values in one place, :func:`resolve_options` (after :func:`apply_preset`), and stored in the run
directory as ``training_options.json`` (:meth:`TrainConfig.to_json` / :meth:`TrainConfig.from_json`: the keys are
the field names; a key of an older run that is missing takes the field's default, an unknown key is an error).
A new hyper-parameter is one field here plus one flag in ``flags/train_flags.py``. Errors are raised as
``OptionError`` with a message that names the flag (or the file).
"""
import dataclasses
import json
import os
import re
from typing import Optional

from ..configs import CONFIGS
AUG_MODES = ("noaug", "ada", "fixed")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")

# Names accepted by the original's --metrics (docs/ALGORITHM.md §7); 'none' disables metrics.
METRIC_NAMES = (
    "fid50k_full", "kid50k_full", "pr50k3_full", "ppl2_wend", "eqt50k_int", "eqt50k_frac", "eqr50k",
    "fid50k", "kid50k", "pr50k3", "is50k", "ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend",
    "shapes_valid",  # afgan_tf.metrics.shapes (ours)
)

# Small presets for training on a CPU: they only fill in flags the user did not set explicitly.
CPU_PRESETS = {
    "none": {},
    # ~30k-parameter G at 32x32: a few seconds per kimg on 2 cores; for tests and the main-job demo.
    "cpu-tiny": dict(res=32, batch=8, cbase=1024, cmax=32, map_depth=2, mbstd_group=4, gamma=0.05,
                     tick=0.4, snap=5),
    # a bit more capacity; still minutes per kimg on a laptop CPU.
    "cpu-small": dict(res=32, batch=16, cbase=2048, cmax=64, map_depth=2, mbstd_group=4, gamma=0.1,
                      tick=1, snap=5),
    # The convergence benchmark's setting (docs/convergence.md): config b at 16x16 on the procedural shapes
    # dataset with its exact quality metric; ~10 sec/kimg on 2 idle cores.
    "cpu-shapes": dict(cfg="stylegan2-fourier", data="shapes:16384:16", metrics="shapes_valid", res=16, batch=32,
                       cbase=2048, cmax=32, map_depth=2, mbstd_group=4, gamma=0.1, glr=0.0025, dlr=0.0025,
                       aug="noaug", tick=4, snap=1),
}

# Per-config defaults from the original train.py (docs/ALGORITHM.md §5.8 table).
CONFIG_DEFAULTS = {
    "stylegan3-t": dict(glr=0.0025, map_depth=2, style_mixing_prob=0.0, pl_weight=0.0, G_reg_interval=None),
    "stylegan3-r": dict(glr=0.0025, map_depth=2, style_mixing_prob=0.0, pl_weight=0.0, G_reg_interval=None),
    "stylegan2": dict(glr=0.002, map_depth=8, style_mixing_prob=0.9, pl_weight=2.0, G_reg_interval=4),
}
CONFIG_DEFAULTS["stylegan2-fourier"] = CONFIG_DEFAULTS["stylegan2"]  # StyleGAN2 with Fourier-feature input


class OptionError(ValueError):
    """A training option is invalid; the message names the flag."""


def _opt_kwargs(lr):
    return dict(learning_rate=lr, beta_1=0.0, beta_2=0.99, epsilon=1e-8)


@dataclasses.dataclass
class TrainConfig:
    """The resolved training config; the field names are the keys of ``training_options.json``.

    Defaults are those of ``--cfg=stylegan3-t`` with the flags' defaults; a run directory written by an older
    version that lacks a key gets the default here.
    """
    cfg: str = "stylegan3-t"
    preset: str = "none"
    data: Optional[str] = None                 # absolute dataset path
    dataset_name: str = "default"
    dataset_size: Optional[int] = None
    res: int = 64
    outdir: str = "training-runs"
    cond: bool = False
    mirror: bool = False
    # batch: global, per chunk (batch_gpu), per replica; accumulation = per_replica_batch / batch_gpu
    batch_size: int = 32
    batch_gpu: int = 32
    num_replicas: int = 1
    num_workers: int = 1
    per_replica_batch: int = 32
    num_accumulation: int = 1
    # networks and loss: kwargs and classes by dotted name (a new loss or network = a config change)
    G_kwargs: dict = dataclasses.field(default_factory=dict)
    D_kwargs: dict = dataclasses.field(default_factory=dict)
    G_class: Optional[str] = None              # None: the generator of ``cfg`` (runs older than the field)
    D_class: str = "afgan_tf.networks.discriminator.Discriminator"
    loss_class: str = "afgan_tf.training.loss.StyleGAN2Loss"
    G_opt_kwargs: dict = dataclasses.field(default_factory=lambda: _opt_kwargs(0.0025))
    D_opt_kwargs: dict = dataclasses.field(default_factory=lambda: _opt_kwargs(0.002))
    glr: float = 0.0025
    dlr: float = 0.002
    G_reg_interval: Optional[int] = None
    D_reg_interval: int = 16
    loss_kwargs: dict = dataclasses.field(default_factory=lambda: dict(
        r1_gamma=1.0, style_mixing_prob=0.0, pl_weight=0.0, pl_batch_shrink=2, pl_decay=0.01, blur_init_sigma=0,
        blur_fade_kimg=0))
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = 0.05
    # augmentation
    aug: str = "ada"
    augment_p: float = 0.0
    ada_target: Optional[float] = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500
    # duration and bookkeeping
    total_kimg: float = 25000.0
    kimg_per_tick: float = 4.0
    network_snapshot_ticks: int = 50
    image_snapshot_ticks: int = 50
    random_seed: int = 0
    metrics: list = dataclasses.field(default_factory=list)
    fp32: bool = False
    mixed_precision: bool = False
    desc: Optional[str] = None
    resume: Optional[str] = None
    # dynamic loss scaling of every phase whenever float16 layers are in use (training/loss_scale.py)
    loss_scaling: bool = False
    loss_scale_kwargs: dict = dataclasses.field(default_factory=lambda: dict(initial_scale=2.0 ** 15,
                                                                              growth_interval=2000))
    deterministic: bool = False
    strategy: str = "default"                  # the strategy's name (distribute.strategy_name)
    ckpt_ticks: int = 1
    ckpt_keep: int = 3

    def __post_init__(self):
        if self.G_class is None:
            from afgan_tf.networks import presets
            self.G_class = _class_name(presets.generator_class(self.cfg))

    @classmethod
    def field_names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    def to_json(self):
        """The ``training_options.json`` dict (JSON-serialisable, a deep copy)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d, source="training_options.json"):
        """The config of a ``training_options.json`` dict: missing keys take their defaults; unknown keys are
        one ``OptionError`` naming ``source`` and the keys."""
        if not isinstance(d, dict):
            raise OptionError(f"{source}: expected a JSON object, got {type(d).__name__}")
        unknown = sorted(k for k in d if k not in cls.field_names())
        if unknown:
            raise OptionError(f"{source}: unknown training option(s) {', '.join(unknown)} (written by another "
                              f"version of afgan-tf?)")
        return cls(**d)

    @classmethod
    def load(cls, run_dir):
        """The config stored in ``run_dir/training_options.json``."""
        path = os.path.join(run_dir, "training_options.json")
        try:
            with open(path) as fh:
                d = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not a training run directory (training_options.json missing)") \
                from None
        except (ValueError, UnicodeDecodeError) as e:
            raise OptionError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json(d, source=path)

    def save(self, run_dir):
        """Write ``run_dir/training_options.json`` (atomic)."""
        from afgan_tf.utils import write_json_atomic
        write_json_atomic(os.path.join(run_dir, "training_options.json"), self.to_json())


def apply_preset(values, given=()):
    """Fill the flag values (dict, underscored flag names) that a ``--preset`` sets and that were not ``given``
    on the command line; with a preset, ``cfg`` defaults to stylegan3-t. Returns ``values`` (changed in place)."""
    preset = values.get("preset") or "none"
    if preset not in CPU_PRESETS:
        raise OptionError(f"--preset: unknown preset {preset!r}; expected one of {', '.join(CPU_PRESETS)}")
    for key, value in CPU_PRESETS[preset].items():
        if key not in given:
            values[key] = value
    if preset != "none" and values.get("cfg") is None:
        values["cfg"] = "stylegan3-t"
    return values


def network_kwargs(cfg, batch, cbase, cmax, map_depth, mbstd_group, freezed, fp32, img_resolution,
                   img_channels, c_dim):
    """The original train.py's ``G_kwargs`` / ``D_kwargs`` for ``cfg`` (from ``afgan_tf.networks.presets``)."""
    if cfg not in CONFIGS:
        raise OptionError(f"--cfg: unknown config {cfg!r}; expected one of {', '.join(CONFIGS)}")
    from afgan_tf.networks import presets
    try:
        G = presets.generator_kwargs(cfg, img_resolution, img_channels=img_channels, c_dim=c_dim, cbase=cbase,
                                     cmax=cmax, map_depth=map_depth, batch=batch, fp32=fp32)
        D = presets.discriminator_kwargs(cfg, img_resolution, img_channels=img_channels, c_dim=c_dim, cbase=cbase,
                                         cmax=cmax, mbstd_group=mbstd_group, freezed=freezed, fp32=fp32)
    except ValueError as e:
        raise OptionError(f"network options: {e}") from None
    return G, D


def resolve_options(*, cfg, batch, gamma, data=None, outdir="training-runs", batch_gpu=None, mirror=False,
                    aug="ada", target=0.6, p=0.2, kimg=25000.0, tick=4.0, snap=50, seed=0, cbase=32768,
                    cmax=512, map_depth=None, mbstd_group=4, glr=None, dlr=0.002, freezed=0, resume=None,
                    metrics="none", fp32=False, desc=None, num_replicas=1, num_workers=1, deterministic=False,
                    res=64, cond=False, preset="none", img_resolution=None, img_channels=3, c_dim=0,
                    dataset_name="default", dataset_size=None, mixed_precision=False, strategy="default",
                    ckpt_ticks=1, ckpt_keep=3, **fields):
    """Validate the command-line values (keyword = the flag's name, underscored) and return the
    :class:`TrainConfig`.

    ``num_replicas`` is the strategy's ``num_replicas_in_sync`` (all workers); ``img_resolution`` /
    ``img_channels`` / ``c_dim`` / ``dataset_name`` come from the dataset; ``strategy`` is the strategy's name.
    Any other keyword must be a :class:`TrainConfig` field and is stored as given (a new hyper-parameter: a field
    and a flag of the same name, nothing here).
    """
    unknown = sorted(k for k in fields if k not in TrainConfig.field_names())
    if unknown:
        raise OptionError(f"unknown training option(s) {', '.join(unknown)}")
    if cfg not in CONFIGS:
        raise OptionError(f"--cfg: unknown config {cfg!r}; expected one of {', '.join(CONFIGS)}")
    if aug not in AUG_MODES:
        raise OptionError(f"--aug: unknown mode {aug!r}; expected one of {', '.join(AUG_MODES)}")
    if batch is None or int(batch) < 1:
        raise OptionError(f"--batch: must be a positive integer, got {batch!r}")
    batch = int(batch)
    if num_replicas < 1:
        raise OptionError(f"number of replicas must be >= 1, got {num_replicas}")
    if batch % num_replicas != 0:
        raise OptionError(f"--batch={batch} is not divisible by the number of replicas ({num_replicas}); "
                          f"use a multiple of {num_replicas}")
    per_replica = batch // num_replicas
    batch_gpu = per_replica if not batch_gpu else int(batch_gpu)
    if batch_gpu < 1 or per_replica % batch_gpu != 0:
        raise OptionError(f"--batch-gpu={batch_gpu} must divide the per-replica batch "
                          f"(--batch={batch} / {num_replicas} replicas = {per_replica})")
    if mbstd_group is not None and mbstd_group > 0 and batch_gpu < mbstd_group:
        raise OptionError(f"--batch-gpu={batch_gpu} is smaller than --mbstd-group={mbstd_group}; "
                          f"the minibatch-stddev layer needs at least one full group per chunk")
    if mbstd_group is not None and mbstd_group > 0 and batch_gpu % mbstd_group != 0:
        raise OptionError(f"--batch-gpu={batch_gpu} is not a multiple of --mbstd-group={mbstd_group}")
    if gamma is None or gamma < 0:
        raise OptionError(f"--gamma: must be >= 0, got {gamma!r}")
    if kimg is None or kimg <= 0:
        raise OptionError(f"--kimg: must be > 0, got {kimg!r}")
    if tick is None or tick <= 0:
        raise OptionError(f"--tick: must be > 0, got {tick!r}")
    if snap is None or int(snap) < 1:
        raise OptionError(f"--snap: must be >= 1, got {snap!r}")
    if not 0 <= p:
        raise OptionError(f"--p: must be >= 0, got {p}")
    if not 0 <= target <= 1:
        raise OptionError(f"--target: must be in [0, 1], got {target}")
    if freezed < 0:
        raise OptionError(f"--freezed: must be >= 0, got {freezed}")
    if cbase < 1 or cmax < 1:
        raise OptionError(f"--cbase/--cmax must be positive, got {cbase}/{cmax}")
    metric_list = _parse_metrics(metrics)
    if desc is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]*", desc):
        raise OptionError(f"--desc: only letters, digits and _.+- are allowed in a directory name, got {desc!r}")

    from afgan_tf.networks import presets
    d = CONFIG_DEFAULTS[cfg]
    map_depth = d["map_depth"] if map_depth is None else int(map_depth)
    glr = d["glr"] if glr is None else float(glr)
    img_resolution = int(img_resolution if img_resolution is not None else res)
    G_kwargs, D_kwargs = network_kwargs(cfg, batch, cbase, cmax, map_depth, mbstd_group, freezed,
                                        fp32, img_resolution, img_channels, c_dim)
    D_reg_interval = 16
    G_reg_interval = d["G_reg_interval"]
    from afgan_tf.training.loss import lazy_adam_params   # the original's mb_ratio = interval / (interval + 1)
    g_lr, (g_b1, g_b2) = lazy_adam_params(glr, (0.0, 0.99), G_reg_interval)
    d_lr, (d_b1, d_b2) = lazy_adam_params(dlr, (0.0, 0.99), D_reg_interval)
    config = TrainConfig(
        cfg=cfg, preset=preset, data=data, dataset_name=dataset_name, dataset_size=dataset_size,
        res=int(res), outdir=outdir, cond=bool(cond), mirror=bool(mirror),
        batch_size=batch, batch_gpu=batch_gpu, num_replicas=int(num_replicas), num_workers=int(num_workers),
        per_replica_batch=per_replica, num_accumulation=per_replica // batch_gpu,
        G_kwargs=G_kwargs, D_kwargs=D_kwargs,
        # the classes to build, by name as the original stores them (a new loss or network = a config change)
        G_class=_class_name(presets.generator_class(cfg)), D_class="afgan_tf.networks.discriminator.Discriminator",
        loss_class="afgan_tf.training.loss.StyleGAN2Loss",
        G_opt_kwargs=dict(learning_rate=g_lr, beta_1=g_b1, beta_2=g_b2, epsilon=1e-8),
        D_opt_kwargs=dict(learning_rate=d_lr, beta_1=d_b1, beta_2=d_b2, epsilon=1e-8),
        glr=glr, dlr=float(dlr), G_reg_interval=G_reg_interval, D_reg_interval=D_reg_interval,
        loss_kwargs=dict(r1_gamma=float(gamma), style_mixing_prob=d["style_mixing_prob"],
                         pl_weight=d["pl_weight"], pl_batch_shrink=2, pl_decay=0.01,
                         blur_init_sigma=10 if cfg == "stylegan3-r" else 0,
                         blur_fade_kimg=batch * 200 / 32 if cfg == "stylegan3-r" else 0),
        ema_kimg=batch * 10 / 32, ema_rampup=0.05,
        aug=aug, augment_p=float(p) if aug == "fixed" else 0.0, ada_target=float(target) if aug == "ada" else None,
        ada_interval=4, ada_kimg=500,
        total_kimg=float(kimg), kimg_per_tick=float(tick), network_snapshot_ticks=int(snap),
        image_snapshot_ticks=int(snap), random_seed=int(seed), metrics=metric_list, fp32=bool(fp32),
        mixed_precision=bool(mixed_precision and not fp32), desc=desc, resume=resume,
        loss_scaling=bool(mixed_precision and not fp32),
        loss_scale_kwargs=dict(initial_scale=2.0 ** 15, growth_interval=2000),
        deterministic=bool(deterministic), strategy=str(strategy), ckpt_ticks=int(ckpt_ticks),
        ckpt_keep=int(ckpt_keep),
    )
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def _class_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def construct_class(class_name, *args, **kwargs):
    """``module.Class(*args, **kwargs)`` for a dotted class name from the config (``G_class``, ``D_class``,
    ``loss_class``)."""
    import importlib
    module, _, name = str(class_name).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise OptionError(f"class {class_name!r} named in the training options cannot be imported ({e})") from None
    return cls(*args, **kwargs)


def _parse_metrics(metrics):
    if metrics is None:
        return []
    if isinstance(metrics, str):
        items = [m.strip() for m in metrics.split(",") if m.strip()]
    else:
        items = list(metrics)
    if items in ([], ["none"]):
        return []
    bad = [m for m in items if m not in METRIC_NAMES]
    if bad:
        raise OptionError(f"--metrics: unknown metric(s) {', '.join(bad)}; valid: none, {', '.join(METRIC_NAMES)}")
    return items


def apply_resume_settings(config, weights_only):
    """Like the original for --resume=PKL: ADA speed 100 kimg, no EMA ramp-up, no blur (docs/ALGORITHM.md §5.7)."""
    if weights_only:
        config.ada_kimg = 100
        config.ema_rampup = None
        config.loss_kwargs["blur_init_sigma"] = 0
        config.loss_kwargs["blur_fade_kimg"] = 0
    return config


RUN_DIR_RE = re.compile(r"^(\d{5})-")


def run_dir_name(config, run_id):
    """``<5-digit id>-<cfg>-<data>-gpus<N>-batch<B>-gamma<g>[-desc]`` (docs/ALGORITHM.md §5.7)."""
    gamma = config.loss_kwargs["r1_gamma"]
    name = (f"{run_id:05d}-{config.cfg}-{config.dataset_name}-gpus{config.num_replicas}-"
            f"batch{config.batch_size}-gamma{gamma:g}")
    if config.desc:
        name += f"-{config.desc}"
    return name


def next_run_dir(outdir, config):
    """Pick the next free run id inside ``outdir`` (not created here)."""
    ids = []
    if os.path.isdir(outdir):
        for n in os.listdir(outdir):
            m = RUN_DIR_RE.match(n)
            if m and os.path.isdir(os.path.join(outdir, n)):
                ids.append(int(m.group(1)))
    run_id = max(ids, default=-1) + 1
    return os.path.join(outdir, run_dir_name(config, run_id))


def is_run_dir(path):
    """A directory written by this trainer (has training_options.json)."""
    return os.path.isfile(os.path.join(path, "training_options.json"))
