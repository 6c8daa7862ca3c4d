"""Compute quality / equivariance metrics of a network (docs/ALGORITHM.md §7, §9.3).

  python tools/calc_metrics.py --network=NET --metrics=eqt50k_int,eqt50k_frac,eqr50k,fid50k_full,kid50k_full \
      --data=DATASET --inception=classify_image_graph_def.pb [--num=N] [--seed=0] [--outdir=DIR]

NET: our .npz snapshot / an original .pkl (G_ema is used), ``random:<cfg>:<res>[:seed]`` or ``toy[:...]``.
--num overrides the 50k generated samples (quick checks; the name keeps its 50k label, the record stores num_gen).
Results go to stdout and are appended to ``metric-<name>.jsonl`` (+ TensorBoard scalars under ``metrics/``)
next to the network when it lives in a run dir (``training_options.json`` present), else in --outdir if given.
Progress (samples/s, ETA) on stdout. FID/KID need the FID Inception graph (--inception); nothing is downloaded.
The training loop calls ``afgan_tf.metrics.metric_main.calc_metric`` / ``make_training_metrics_fn`` directly;
``calc_metric`` is re-exported here. Exit status 0 ok, 1 error.
"""
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from afgan_tf import cli as tu  # noqa: E402
from afgan_tf.metrics.metric_main import METRICS, calc_metric, report_metric  # noqa: E402,F401

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's absl flags (only when run as a script, so the tools can be imported together)."""
    flags.DEFINE_string("network", None, "network: .npz/.pkl file, random:<cfg>:<res>[:seed] or toy[:k=v,...]")
    flags.DEFINE_string("metrics", "fid50k_full", f"comma-separated metric names ({', '.join(METRICS)})")
    flags.DEFINE_string("data", None, "dataset: image folder / zip / TFRecord dataset folder (FID, KID)")
    flags.DEFINE_boolean("mirror", False, "accepted for compatibility; FID/KID never use x-flips (like *_full)")
    flags.DEFINE_string("inception", None, "path of classify_image_graph_def.pb (inception-2015-12-05)")
    flags.DEFINE_integer("num", None, "number of generated samples (default 50000)")
    flags.DEFINE_integer("seed", 0, "random seed of latents / transforms")
    flags.DEFINE_integer("batch", None, "batch size (default 4 for EQ metrics, 16 for FID/KID)")
    flags.DEFINE_string("outdir", None, "where metric-<name>.jsonl goes when the network is not in a run dir")
    flags.DEFINE_string("cache_dir", None, "dataset statistics cache (default ~/.cache/afgan_tf/metrics)")
    flags.DEFINE_integer("gpus", 1, "accepted for compatibility (single process)")
    flags.DEFINE_boolean("verbose", True, "print progress")



def result_dir(network, outdir=None):
    """The run dir containing the network (training_options.json next to it) or ``outdir`` (may be None)."""
    if os.path.isfile(network):
        d = os.path.dirname(os.path.abspath(network))
        if os.path.isfile(os.path.join(d, "training_options.json")):
            return d
    return outdir


def run(network, metrics, data=None, inception=None, num=None, seed=0, batch=None, outdir=None, cache_dir=None,
        verbose=True):
    """Library entry of the CLI: computes every metric, reports it; returns the list of records."""
    names = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("--metrics: no metric given")
    from afgan_tf.metrics.metric_main import _check_name
    for n in names:
        _check_name(n)
    G = tu.load_generator(network)
    rdir = result_dir(network, outdir)
    snap = network if os.path.isfile(network) else None
    records = []
    extractor = None
    for name in names:
        if inception is not None and extractor is None and not name.startswith("eq"):
            from afgan_tf.metrics.fid import InceptionGraphDef
            extractor = InceptionGraphDef(inception)
        rec = calc_metric(name, G, dataset=data, inception=inception, extractor=extractor, num=num, seed=seed,
                          batch_size=batch, cache_dir=cache_dir, snapshot_pkl=snap, verbose=verbose)
        print(json.dumps(rec), flush=True)
        if rdir is not None:
            report_metric(rec, rdir)
        records.append(rec)
    return records


def main(argv):
    def body():
        run(FLAGS.network, FLAGS.metrics, data=FLAGS.data, inception=FLAGS.inception, num=FLAGS.num,
            seed=FLAGS.seed, batch=FLAGS.batch, outdir=FLAGS.outdir, cache_dir=FLAGS.cache_dir,
            verbose=FLAGS.verbose)
    return tu.tool_main(argv, FLAGS, ("network",), body)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=tu.normalise_argv(sys.argv))
