"""Flags of ``tools/train.py``: the original train.py's flags (same names, dashed spellings, same defaults where
they make sense on any machine) plus ours (strategy, presets, checkpoints). ``--flagfile=FILE`` comes with absl."""
from absl import flags

from afgan_tf.training.options import AUG_MODES, CONFIGS, CPU_PRESETS, STRATEGIES


def flag_values(flag_values):
    """``(values, given)``: every flag's value by underscored name (``batch_gpu``), and the names given explicitly
    on the command line or in a --flagfile (a --preset fills only the others: ``options.apply_preset``)."""
    values, given = {}, set()
    for name in flag_values:
        key = name.replace("-", "_")
        values[key] = flag_values[name].value
        if flag_values[name].present:
            given.add(key)
    return values, given


def define_flags(flag_values=flags.FLAGS):
    """Defines the training flags on ``flag_values``."""
    fv = flag_values
    # --- the original's flags -----------------------------------------------------------------------------------
    flags.DEFINE_string("outdir", "training-runs", "Where to make the numbered run directory; if it IS a run "
                        "directory (has training_options.json), that run continues from its latest checkpoint.",
                        flag_values=fv)
    flags.DEFINE_enum("cfg", None, list(CONFIGS), "Base configuration (required unless --preset gives one).",
                      flag_values=fv)
    flags.DEFINE_string("data", None, "Training data: our TFRecord dataset dir, or the original's folder/zip. "
                        "Default: the embedded sample-photo dataset at --res (built and cached on first use).",
                        flag_values=fv)
    flags.DEFINE_integer("gpus", None, "Accepted for the original's command lines: must equal the number of "
                         "replicas the strategy uses (checked).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch", None, "Total batch size over all replicas (required unless --preset).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_float("gamma", None, "R1 regularisation weight (required unless --preset).", lower_bound=0,
                       flag_values=fv)
    flags.DEFINE_boolean("cond", False, "Train a conditional model (labels from dataset.json).", flag_values=fv)
    flags.DEFINE_boolean("mirror", False, "Enable dataset x-flips.", flag_values=fv)
    flags.DEFINE_enum("aug", "ada", list(AUG_MODES), "Augmentation mode.", flag_values=fv)
    flags.DEFINE_string("resume", None, "Resume from: a run directory / checkpoints dir / checkpoint prefix "
                        "(full state: kimg, ADA p, EMA and optimisers continue), or a network .pkl/.npz "
                        "(weights only, like the original).", flag_values=fv)
    flags.DEFINE_integer("freezed", 0, "Freeze-D: number of D layers to freeze.", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("p", 0.2, "Augmentation probability for --aug=fixed.", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("target", 0.6, "ADA target value for --aug=ada.", lower_bound=0, upper_bound=1,
                       flag_values=fv)
    flags.DEFINE_integer("batch-gpu", None, "Samples per chunk on one replica (gradient accumulation); default "
                         "batch / replicas.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("cbase", 32768, "Capacity multiplier.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("cmax", 512, "Max. feature maps.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("glr", None, "G learning rate (default 0.0025 for stylegan3, 0.002 for stylegan2).",
                       lower_bound=0, flag_values=fv)
    flags.DEFINE_float("dlr", 0.002, "D learning rate.", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("map-depth", None, "Mapping network depth (default 2 for stylegan3, 8 for stylegan2).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("mbstd-group", 4, "Minibatch std group size.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("desc", None, "String to include in the run directory name.", flag_values=fv)
    flags.DEFINE_string("metrics", "none", "Quality metrics, comma-separated or 'none' (the original's default "
                        "fid50k_full needs Inception weights: --inception).", flag_values=fv)
    flags.DEFINE_float("kimg", 25000, "Total training duration in thousands of images.", flag_values=fv)
    flags.DEFINE_float("tick", 4, "How often to print progress, in kimg.", flag_values=fv)
    flags.DEFINE_integer("snap", 50, "How often to save snapshots (images, network .npz, metrics), in ticks.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", lower_bound=0, flag_values=fv)
    flags.DEFINE_boolean("fp32", False, "Disable mixed precision (num_fp16_res=0, conv_clamp=None).",
                         flag_values=fv)
    flags.DEFINE_boolean("nobench", False, "Accepted for compatibility (cuDNN benchmarking has no TF switch).",
                         flag_values=fv)
    flags.DEFINE_integer("workers", 3, "Accepted for compatibility (tf.data decodes with AUTOTUNE parallelism).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("dry-run", False, "Print the resolved training options and exit.", short_name="n",
                         flag_values=fv)
    # --- ours ---------------------------------------------------------------------------------------------------
    flags.DEFINE_enum("strategy", "auto", list(STRATEGIES), "tf.distribute strategy: default (one device), "
                      "mirrored (all local GPUs or --cpu-replicas logical CPUs), multiworker (TF_CONFIG), auto.",
                      flag_values=fv)
    flags.DEFINE_integer("cpu-replicas", 0, "With --strategy=mirrored on a CPU-only machine: split the CPU into "
                         "this many logical devices (for testing the multi-replica path).", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_boolean("deterministic", False, "Deterministic ops (tf.config.experimental."
                         "enable_op_determinism): bit-identical runs and resumes, somewhat slower.", flag_values=fv)
    flags.DEFINE_enum("preset", "none", list(CPU_PRESETS), "Small settings for CPU training (fill in --res, "
                      "--batch, --cbase, --cmax, --gamma, --tick, --snap, ... unless given explicitly; "
                      "--cfg defaults to stylegan3-t).", flag_values=fv)
    flags.DEFINE_integer("res", 64, "Resolution of the embedded default dataset (when --data is not given).",
                         lower_bound=4, flag_values=fv)
    flags.DEFINE_integer("ckpt-ticks", 1, "Save a training checkpoint every this many ticks (also at every "
                         "snapshot, at the end and on SIGTERM/SIGINT).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("ckpt-keep", 3, "Number of training checkpoints kept.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("inception", None, "Inception weights for FID/KID metrics (see docs of calc_metrics).",
                        flag_values=fv)
    flags.DEFINE_integer("grid-max", 64, "At most this many images in the fakes*.png grids (the original's grid "
                         "has up to 32x32).", lower_bound=1, flag_values=fv)
