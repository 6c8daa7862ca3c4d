"""Train StyleGAN3 (or continue a run) on one device, several GPUs/CPUs (MirroredStrategy) or several machines
(MultiWorkerMirroredStrategy via TF_CONFIG).

  python tools/train.py --outdir=training-runs --cfg=stylegan3-t --data=DATASET --batch=32 --gamma=8.2 --mirror=1
  python tools/train.py --preset=cpu-tiny --kimg=2                # embedded sample photos, small nets, on a CPU
  python tools/train.py --outdir=training-runs/00003-stylegan3-t-...  # continue that run from its last checkpoint
  python tools/train.py --flagfile=run.flags -n                    # print the resolved options (dry run)

Resume order (afgan_tf.training.session.prepare): --resume=RUN_DIR|CKPT (full state), --resume=PKL|NPZ (weights
only, like the original), --outdir pointing at a run directory (continue it in place), else a new numbered run
directory. SIGTERM / SIGINT finish
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


def fail(msg, code=1):
    print(f"Error: {msg}", file=sys.stderr)
    return code


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    return run(FLAGS)


def run(fv):
    """The whole program for parsed flags ``fv``: flags -> plan (resume order + config) -> train; returns the exit
    status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    from afgan_tf.training import session
    from flags.train_flags import flag_values

    values, given = flag_values(fv)
    try:
        plan = session.prepare(values, given)           # strategy, resume order, TrainConfig, run directory
        if values["dry_run"]:
            print(json.dumps(plan.config.to_json(), indent=2, sort_keys=True))
            print(f"Resume: {plan.resume!r}")
            print("Dry run; exiting.")
            return 0
        status = session.train(plan)
    except session.TrainError as e:
        return fail(e, e.code)
    if status["interrupted"]:
        print(f"Interrupted ({status['interrupted']}) at kimg {status['kimg']:.3f}; continue with: "
              f"python tools/train.py --outdir={plan.run_dir}")
    else:
        print(f"Done. Run directory: {plan.run_dir}")
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
