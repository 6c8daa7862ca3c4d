"""A training run from the command-line values: ``prepare(values)`` (strategy, resume order, config, run
directory) then ``train(plan)``.

``prepare`` is the one place that decides how a run starts (the resume order, see its docstring) and builds the
:class:`~afgan_tf.training.options.TrainConfig`; ``train`` builds what the run needs from the config itself — the
data stream (``data.make_dataset`` of ``config.data``, the global stream the trainer slices per replica), the
network-snapshot writer, the metrics hook, the real-image grid — then the
:class:`~afgan_tf.training.trainer.Trainer`, and runs :func:`~afgan_tf.training.run.run_training` with the run
directory's ``training_options.json`` and ``log.txt``. ``tools/train.py`` is flags -> ``prepare`` -> ``train``.
"""
import dataclasses
import os
import shutil
from typing import Any, Optional

from afgan_tf.training import checkpoint, options, stats
from afgan_tf.training.checkpoint import ResumeError, ResumeSpec, latest_checkpoint
from afgan_tf.training.options import OptionError, TrainConfig
from afgan_tf.training.run import run_training
from afgan_tf.training.trainer import Trainer


class TrainError(RuntimeError):
    """The run could not start or stopped with an error (message for the user; ``code``: the exit status, 2 for
    bad flags, 1 otherwise)."""

    def __init__(self, message, code=1):
        super().__init__(str(message))
        self.code = code


@dataclasses.dataclass
class Plan:
    """What :func:`prepare` decided: the config, the resume source, the run directory and the strategy."""
    config: TrainConfig
    resume: ResumeSpec
    run_dir: str
    strategy: Any
    is_chief: bool = True
    describe: str = ""
    grid_max: int = 64
    inception: Optional[str] = None


def resume_source(resume, outdir):
    """The resume source of ``--resume`` / ``--outdir`` as a :class:`ResumeSpec` (steps 1-4 of :func:`prepare`'s
    order); ``FileNotFoundError`` names the flag."""
    if resume:
        low = resume.lower()
        if low.endswith(".pkl") or low.endswith(".npz"):
            if low.startswith(("http://", "https://")):
                raise FileNotFoundError(f"--resume={resume}: URLs are not downloaded (offline); "
                                        f"pass a local file")
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"--resume={resume}: file not found")
            return ResumeSpec("weights", path=resume)
        ckpt = latest_checkpoint(resume)
        if ckpt is None:
            if os.path.exists(resume):
                raise FileNotFoundError(f"--resume={resume}: no checkpoint found there (expected a run directory "
                                        f"with {checkpoint.CKPT_DIR}/, a checkpoints directory, a prefix like "
                                        f"ckpt-3, or a .pkl/.npz network file)")
            raise FileNotFoundError(f"--resume={resume}: no such file or directory")
        return ResumeSpec("full", path=ckpt)
    if outdir and options.is_run_dir(outdir):
        return ResumeSpec("inplace", path=latest_checkpoint(outdir), run_dir=outdir)
    return ResumeSpec("fresh")


# flags an in-place continuation may change (flag -> config field); every other value comes from the run's config
INPLACE_OVERRIDES = (("kimg", "total_kimg"), ("tick", "kimg_per_tick"), ("snap", "network_snapshot_ticks"))


def prepare(values, given=()):
    """Decide how the run starts and build its config from the command-line values.

    ``values``: the flag values by underscored name (``flags/train_flags.flag_values``); ``given``: the names given
    explicitly (a ``--preset`` fills only the others). Returns a :class:`Plan`; raises :class:`TrainError` (code 2:
    bad flags, 1: an unreadable resume file) before anything is written.

    Resume order (the first that applies):
      1. ``--resume=PATH`` with PATH a run directory, a ``checkpoints/`` directory or a checkpoint prefix
         (``.../ckpt-12``): a new numbered run directory, the full state restored (kimg, ADA p, EMA, optimisers
         continue exactly); the config comes from the flags;
      2. ``--resume=FILE.pkl|FILE.npz``: weights only (G, D, G_ema), like the original's ``--resume`` (ADA speed
         100 kimg, no EMA ramp-up, no blur); the file is read and checked here;
      3. no ``--resume`` and ``--outdir`` is an existing run directory: continue it in place from its latest
         checkpoint (from scratch in place if it has none yet) with the run's ``training_options.json``; only
         ``--kimg``, ``--tick``, ``--snap``, ``--ckpt-ticks``, ``--ckpt-keep`` may change, the replica count may not;
      4. otherwise a fresh run in a new numbered directory under ``--outdir``.
    """
    from afgan_tf.training import distribute
    values = options.apply_preset(dict(values), given)
    outdir = values.get("outdir") or "training-runs"
    for req in ("cfg", "batch", "gamma"):      # not needed to continue a run in place (step 3)
        if values.get(req) is None and (values.get("resume") or not options.is_run_dir(outdir)):
            raise TrainError(f"--{req} is required (or use --preset=cpu-tiny)", 2)

    # the strategy before TensorFlow creates any tensor (logical CPU devices)
    try:
        strategy = distribute.make_strategy(values.get("strategy", "auto"), values.get("cpu_replicas", 0))
    except OptionError as e:
        raise TrainError(e, 2) from None
    import tensorflow as tf
    if values.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    task_id, num_workers, is_chief = distribute.worker_info(strategy)
    replicas = strategy.num_replicas_in_sync
    strategy_name = distribute.strategy_name(strategy)
    if values.get("gpus") is not None and values["gpus"] != replicas:
        raise TrainError(f"--gpus={values['gpus']} but the strategy ({strategy_name}) has {replicas} replica(s); "
                         f"drop --gpus or choose --strategy/--cpu-replicas accordingly", 2)
    try:
        spec = resume_source(values.get("resume"), outdir)
    except FileNotFoundError as e:
        raise TrainError(e, 2) from None

    if spec.kind == "weights":   # read (and check) the network file before anything is built or written
        spec.networks = _load_weights(spec.path)
    if spec.kind == "inplace":
        try:
            config = TrainConfig.load(spec.run_dir)
        except OptionError as e:
            raise TrainError(e, 2) from None
        for flag, field in INPLACE_OVERRIDES:
            if flag in given:
                setattr(config, field, values[flag])
        if config.num_replicas != replicas:
            raise TrainError(f"{spec.run_dir} was trained with {config.num_replicas} replica(s), this process has "
                             f"{replicas}; the global batch must stay {config.batch_size} (use the same replica "
                             f"count)")
        config.strategy = strategy_name
        config.ckpt_ticks, config.ckpt_keep = values.get("ckpt_ticks", 1), values.get("ckpt_keep", 3)
        run_dir = spec.run_dir
    else:
        config = _fresh_config(values, replicas, num_workers, strategy_name, is_chief)
        options.apply_resume_settings(config, weights_only=spec.kind == "weights")
        run_dir = options.next_run_dir(outdir, config)
    describe = (f"Strategy: {strategy_name} ({replicas} replica(s), worker {task_id} of {num_workers}); "
                f"data: {config.data}; resume: {spec.kind}{' from ' + str(spec.path) if spec.path else ''}")
    return Plan(config, spec, run_dir, strategy, is_chief=is_chief, describe=describe,
                grid_max=values.get("grid_max", 64), inception=values.get("inception"))


def _load_weights(path):
    import pickle
    import zipfile
    from afgan_tf import convert
    try:
        return convert.load_network(path)
    except (ValueError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
        raise TrainError(f"--resume={path}: {e}") from None
    except MemoryError:   # e.g. a pickle frame claiming more bytes than the machine has
        raise TrainError(f"--resume={path}: the file claims more memory than is available (corrupt or "
                         f"hostile)") from None


def _fresh_config(values, replicas, num_workers, strategy_name, is_chief):
    """The config of a new run: the flag values + the dataset's facts + the strategy (options.resolve_options)."""
    import inspect
    from afgan_tf import data as data_lib
    from afgan_tf.networks.layers import fp16_enabled
    data = values.get("data")
    try:
        data_path = data or data_lib.default_dataset(resolution=values.get("res", 64), verbose=is_chief)
        info = data_lib.dataset_info(data_path)
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(f"--data: {e}", 2) from None
    cond = bool(values.get("cond"))
    if cond and info["c_dim"] == 0:
        raise TrainError(f"--cond: the dataset {data_path} has no labels", 2)
    name = os.path.basename(os.path.normpath(data_path)) if data else f"default{info['resolution']}"
    name = "".join(ch if ch.isalnum() or ch in "_.+" else "-" for ch in os.path.splitext(name)[0])
    # the flags resolve_options takes by name, and those named like a config field (stored as given)
    params = inspect.signature(options.resolve_options).parameters.values()
    names = {p.name for p in params if p.kind == p.KEYWORD_ONLY} | TrainConfig.field_names()
    kw = {k: v for k, v in values.items() if k in names}
    kw.update(data=os.path.abspath(data_path), num_replicas=replicas, num_workers=num_workers,
              img_resolution=info["resolution"], img_channels=info["channels"], c_dim=info["c_dim"] if cond else 0,
              dataset_name=name, dataset_size=info["count"], strategy=strategy_name,
              mixed_precision=fp16_enabled())                      # GPU or AFGAN_TF_FORCE_FP16=1
    try:
        return options.resolve_options(**kw)
    except OptionError as e:
        raise TrainError(e, 2) from None


def make_hooks(config, inception=None):
    """``(dataset_fn, snapshot_fn, metrics_fn)`` for the config's dataset (metrics_fn None without --metrics)."""
    from afgan_tf import data as data_lib
    data_path = config.data

    def dataset_fn(global_batch, seed, skip_batches):   # the global stream; the trainer slices it per replica
        return data_lib.make_dataset(data_path, batch_size=global_batch, mirror=config.mirror, shuffle=True,
                                     repeat=True, seed=seed, use_labels=config.cond,
                                     skip=skip_batches)  # skips before decoding

    def snapshot_fn(path, tr):
        from afgan_tf import convert
        convert.save_network_snapshot(path, dict(G=tr.G, D=tr.D, G_ema=tr.G_ema),
                                      extra=dict(training_set_kwargs=dict(path=data_path, mirror=config.mirror),
                                                 cur_nimg=tr.cur_nimg, augment_p=tr.augment_p, cfg=config.cfg))

    metrics_fn = None
    if config.metrics:
        from afgan_tf.metrics import metric_main
        metrics_fn = metric_main.make_training_metrics_fn(data_path, inception=inception, seed=config.random_seed)
    return dataset_fn, snapshot_fn, metrics_fn


def train(plan):
    """Train (or continue) the run of a :func:`prepare` plan; returns the status dict of ``run_training``.

    Raises :class:`TrainError` when ``--outdir`` cannot hold a run directory (code 2), the networks cannot be
    built, the resume source does not fit, or a loss became non-finite (the last good checkpoint is kept). A
    start that fails before the first checkpoint leaves no numbered run directory behind.
    """
    config, run_dir = plan.config, plan.run_dir
    if plan.resume.kind != "inplace":
        try:                      # --outdir must be a directory we can create and write to
            os.makedirs(config.outdir, exist_ok=True)
            if not os.access(config.outdir, os.W_OK | os.X_OK):
                raise PermissionError("not writable")
        except OSError as e:
            raise TrainError(f"--outdir={config.outdir}: cannot create a run directory there "
                             f"({e.strerror or e})", 2) from None
    created = plan.is_chief and not os.path.exists(run_dir)
    ok = False
    try:
        status = _train(plan)
        ok = True
        return status
    finally:
        if created and not ok and latest_checkpoint(run_dir) is None and os.path.isdir(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)


def _train(plan):
    import tensorflow as tf
    from afgan_tf import data as data_lib
    config, run_dir, grid_max = plan.config, plan.run_dir, plan.grid_max
    logger = None
    if plan.is_chief:
        os.makedirs(run_dir, exist_ok=True)
        config.save(run_dir)
        logger = stats.Logger(os.path.join(run_dir, "log.txt"))
    try:
        if plan.is_chief:
            print(f"Run directory: {run_dir}")
        if plan.describe:
            print(plan.describe)
        dataset_fn, snapshot_fn, metrics_fn = make_hooks(config, plan.inception)
        try:
            trainer = Trainer(config, plan.strategy, dataset_fn=dataset_fn).build()
        except (ValueError, TypeError) as e:
            raise TrainError(f"building the networks: {e}") from None
        n_g = sum(int(tf.size(v)) for v in trainer.G.trainable_variables)
        n_d = sum(int(tf.size(v)) for v in trainer.D.trainable_variables)
        print(f"G: {n_g:,} trainable parameters; D: {n_d:,}")
        gw, gh = stats.grid_size(config.G_kwargs["img_resolution"], max_images=grid_max)
        reals = next(iter(data_lib.make_dataset(config.data, batch_size=gw * gh, shuffle=False, repeat=True,
                                                use_labels=config.cond)))
        try:
            status = run_training(trainer, run_dir, resume=plan.resume, is_chief=plan.is_chief,
                                  ckpt_ticks=config.ckpt_ticks, ckpt_keep=config.ckpt_keep, max_grid_images=grid_max,
                                  snapshot_fn=snapshot_fn, metrics_fn=metrics_fn,
                                  real_grid=(reals[0].numpy(), reals[1].numpy()))
        except ResumeError as e:
            raise TrainError(str(e)) from None
        if status["error"]:
            raise TrainError(status["error"])
        return status
    finally:
        if logger is not None:
            logger.close()
