"""Train StyleGAN3 (or continue a run) on one device, several GPUs/CPUs (MirroredStrategy) or several machines
(MultiWorkerMirroredStrategy via TF_CONFIG).

  python tools/train.py --outdir=training-runs --cfg=stylegan3-t --data=DATASET --batch=32 --gamma=8.2 --mirror=1
  python tools/train.py --preset=cpu-tiny --kimg=2                # embedded sample photos, small nets, on a CPU
  python tools/train.py --outdir=training-runs/00003-stylegan3-t-...  # continue that run from its last checkpoint
  python tools/train.py --flagfile=run.flags -n                    # print the resolved options (dry run)

Resume order: --resume=RUN_DIR|CKPT (full state), --resume=PKL|NPZ (weights only, like the original), --outdir
pointing at a run directory (continue it in place), else a new numbered run directory. SIGTERM / SIGINT finish
the current iteration, save a checkpoint and exit with status 0. Exit status: 0 done or interrupted cleanly,
1 error (message on stderr; a NaN/Inf loss keeps the last good checkpoint; a corrupt --resume file), 2 bad
flags (unknown or out-of-range values, an --outdir that cannot hold a run directory). A start that fails leaves no
numbered run directory.
"""
import json
import os
import sys

from absl import app
from absl import flags as absl_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FLAGS = absl_flags.FLAGS


def apply_preset(fv):
    """--preset fills in flags that were not given explicitly."""
    from afgan_tf.training.options import CPU_PRESETS
    from flags.train_flags import PRESET_FLAGS
    preset = CPU_PRESETS[fv["preset"].value]
    for name in PRESET_FLAGS:
        key = name.replace("-", "_")
        if key in preset and not fv[name].present:
            fv[name].value = preset[key]
    if fv["preset"].value != "none" and fv["cfg"].value is None:
        fv["cfg"].value = "stylegan3-t"


def fail(msg, code=1):
    print(f"Error: {msg}", file=sys.stderr)
    return code


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run(FLAGS)


def run(fv):
    """The whole program for parsed flags ``fv``; returns the exit status."""
    def flag(name):
        return fv[name].value

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    from afgan_tf.training import checkpoint, distribute, options
    from afgan_tf.training.options import OptionError

    # 1. Flags (+ preset) -------------------------------------------------------------------------------------------
    apply_preset(fv)
    for req in ("cfg", "batch", "gamma"):
        if flag(req) is None and not (fv["outdir"].present and options.is_run_dir(flag("outdir"))):
            return fail(f"--{req} is required (or use --preset=cpu-tiny)", 2)

    # 2. Strategy (before TensorFlow creates any tensor: logical CPU devices) ------------------------------------
    try:
        strategy = distribute.make_strategy(flag("strategy"), flag("cpu-replicas"))
    except OptionError as e:
        return fail(e, 2)
    import tensorflow as tf
    if flag("deterministic"):
        tf.config.experimental.enable_op_determinism()
    task_id, num_workers, is_chief = distribute.worker_info(strategy)
    replicas = strategy.num_replicas_in_sync
    if flag("gpus") is not None and flag("gpus") != replicas:
        return fail(f"--gpus={flag('gpus')} but the strategy ({distribute.strategy_name(strategy)}) has {replicas} "
                    f"replica(s); drop --gpus or choose --strategy/--cpu-replicas accordingly", 2)

    # 3. Resume mode and options --------------------------------------------------------------------------------------
    try:
        spec = checkpoint.resolve_resume(flag("resume"), flag("outdir"))
    except FileNotFoundError as e:
        return fail(e, 2)
    if spec.kind == "weights":   # read (and check) the network file before anything is built or written
        import pickle
        import zipfile
        from afgan_tf import convert
        try:
            spec.networks = convert.load_network(spec.path)
        except (ValueError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
            return fail(f"--resume={spec.path}: {e}")
        except MemoryError:   # e.g. a pickle frame claiming more bytes than the machine has
            return fail(f"--resume={spec.path}: the file claims more memory than is available (corrupt or hostile)")
    from afgan_tf import data as data_lib
    from afgan_tf.networks.layers import fp16_enabled
    if spec.kind == "inplace":
        opts = options.load_options(spec.run_dir)
        for name, key in (("kimg", "total_kimg"), ("tick", "kimg_per_tick"), ("snap", "network_snapshot_ticks")):
            if fv[name].present:
                opts[key] = flag(name)
        if opts["num_replicas"] != replicas:
            return fail(f"{spec.run_dir} was trained with {opts['num_replicas']} replica(s), this process has "
                        f"{replicas}; the global batch must stay {opts['batch_size']} (use the same replica count)")
        data_path = opts["data"]
    else:
        try:
            data_path = flag("data") or data_lib.default_dataset(resolution=flag("res"), verbose=is_chief)
            info = data_lib.dataset_info(data_path)
        except (FileNotFoundError, ValueError) as e:
            return fail(f"--data: {e}", 2)
        if flag("cond") and info["c_dim"] == 0:
            return fail(f"--cond: the dataset {data_path} has no labels", 2)
        name = os.path.basename(os.path.normpath(data_path)) if flag("data") else f"default{info['resolution']}"
        name = "".join(ch if ch.isalnum() or ch in "_.+" else "-" for ch in os.path.splitext(name)[0])
        try:
            opts = options.resolve_options(
                cfg=flag("cfg"), batch=flag("batch"), gamma=flag("gamma"), data=os.path.abspath(data_path),
                outdir=flag("outdir"), batch_gpu=flag("batch-gpu"), mirror=flag("mirror"), aug=flag("aug"),
                target=flag("target"), p=flag("p"), kimg=flag("kimg"), tick=flag("tick"), snap=flag("snap"),
                seed=flag("seed"), cbase=flag("cbase"), cmax=flag("cmax"), map_depth=flag("map-depth"),
                mbstd_group=flag("mbstd-group"), glr=flag("glr"), dlr=flag("dlr"), freezed=flag("freezed"),
                resume=flag("resume"), metrics=flag("metrics"), fp32=flag("fp32"), desc=flag("desc"),
                num_replicas=replicas, num_workers=num_workers, deterministic=flag("deterministic"),
                res=flag("res"), cond=flag("cond"), preset=flag("preset"), img_resolution=info["resolution"],
                img_channels=info["channels"], c_dim=info["c_dim"] if flag("cond") else 0, dataset_name=name,
                dataset_size=info["count"], mixed_precision=fp16_enabled())  # GPU or AFGAN_TF_FORCE_FP16=1
        except OptionError as e:
            return fail(e, 2)
        options.apply_resume_settings(opts, weights_only=spec.kind == "weights")
    opts["strategy"] = distribute.strategy_name(strategy)
    opts["ckpt_ticks"], opts["ckpt_keep"] = flag("ckpt-ticks"), flag("ckpt-keep")

    # 4. Dry run --------------------------------------------------------------------------------------------------------
    if flag("dry-run"):
        print(json.dumps(opts, indent=2, sort_keys=True))
        print(f"Resume: {spec!r}")
        print("Dry run; exiting.")
        return 0

    # 5. Run directory, trainer, training (afgan_tf.training.session) ----------------------------------------------------
    from afgan_tf.training.session import TrainError, train
    if spec.kind != "inplace":
        try:                      # --outdir must be a directory we can create and write to
            os.makedirs(flag("outdir"), exist_ok=True)
            if not os.access(flag("outdir"), os.W_OK | os.X_OK):
                raise PermissionError("not writable")
        except OSError as e:
            return fail(f"--outdir={flag('outdir')}: cannot create a run directory there ({e.strerror or e})", 2)
    run_dir = spec.run_dir if spec.kind == "inplace" else options.next_run_dir(flag("outdir"), opts)
    created = is_chief and not os.path.exists(run_dir)
    ok = False
    try:
        status = train(opts, strategy, spec, run_dir, is_chief=is_chief, grid_max=flag("grid-max"),
                       inception=flag("inception"),
                       describe=f"Strategy: {opts['strategy']} ({replicas} replica(s), worker {task_id} of "
                                f"{num_workers}); data: {data_path}; resume: {spec.kind}"
                                f"{' from ' + str(spec.path) if spec.path else ''}")
        ok = True
    except TrainError as e:
        return fail(e)
    finally:
        # a start that failed before the first checkpoint leaves no numbered run directory behind
        if created and not ok and checkpoint.latest_checkpoint(run_dir) is None and os.path.isdir(run_dir):
            import shutil
            shutil.rmtree(run_dir, ignore_errors=True)
    if status["interrupted"]:
        print(f"Interrupted ({status['interrupted']}) at kimg {status['kimg']:.3f}; continue with: "
              f"python tools/train.py --outdir={run_dir}")
    else:
        print(f"Done. Run directory: {run_dir}")
    return 0


def parse_flags(argv):
    """absl's parser, but a bad flag is one line and exit status 2 (as documented), not absl's status 1."""
    try:
        return FLAGS(argv)
    except absl_flags.Error as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from flags import train_flags
    train_flags.define_flags(FLAGS)
    app.run(main, flags_parser=parse_flags)
