"""Metric registry with the original's names (docs/ALGORITHM.md §7, §9.3): one call computes one metric and returns a record.

``calc_metric(name, G, dataset=..., inception=..., ...)`` -> ``{"results": {name: value}, "metric", "total_time",
"total_time_str", "num_gpus", "snapshot_pkl", "timestamp", ...}``; ``report_metric`` appends it to
``metric-<name>.jsonl`` and writes TensorBoard scalars; ``make_training_metrics_fn`` adapts it to the training
loop's ``metrics_fn(name, trainer, run_dir)`` hook (uses ``trainer.G_ema``).
"""
import json
import os
import sys
import time

import numpy as np

from . import equivariance as eq
from . import fid as fidlib
from . import shapes as shapeslib
from ..utils import format_time

EQ_METRICS = {"eqt50k_int": "int", "eqt50k_frac": "frac", "eqr50k": "rot"}
FID_METRICS = {"fid50k_full": dict(num_gen=50000, max_real=None), "fid50k": dict(num_gen=50000, max_real=50000)}
KID_METRICS = {"kid50k_full": dict(num_gen=50000, max_real=1000000), "kid50k": dict(num_gen=50000, max_real=50000)}
UNSUPPORTED = ("pr50k3_full", "pr50k3", "ppl2_wend", "is50k")
SHAPES_METRICS = ("shapes_valid",)  # afgan_tf.metrics.shapes (on the procedural `shapes` dataset)
METRICS = tuple(EQ_METRICS) + tuple(FID_METRICS) + tuple(KID_METRICS) + SHAPES_METRICS


class Progress:
    """Prints '<label>: done/total (x samples/s, ETA ...)' at most every ``interval`` seconds."""

    def __init__(self, label, stream=None, interval=5.0, verbose=True):
        self.label, self.stream, self.interval, self.verbose = label, stream or sys.stdout, interval, verbose
        self.t0 = time.time()
        self.last = 0.0

    def __call__(self, done, total=None):
        now = time.time()
        final = total is not None and done >= total
        if not self.verbose or (now - self.last < self.interval and not final):
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        msg = f"{self.label}: {done}" + (f"/{total}" if total else "") + f" ({rate:.2f} samples/s"
        if total:
            msg += f", ETA {format_time(max(total - done, 0) / max(rate, 1e-9))}"
        print(msg + ")", file=self.stream, flush=True)


def _check_name(name):
    if name in UNSUPPORTED:
        raise ValueError(f"metric {name!r} is not implemented in afgan-tf (available: {', '.join(METRICS)})")
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r} (available: {', '.join(METRICS)})")


def _label_sampler(G, dataset):
    """Labels for conditional G drawn from the dataset's labels (like the original)."""
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    if c_dim == 0:
        return None
    if dataset is None:
        raise ValueError(f"G is conditional (c_dim={c_dim}): --data is needed to draw labels")
    from afgan_tf.data.pipeline import make_dataset
    labs = [lab.numpy() for _, lab in make_dataset(dataset, batch_size=256, shuffle=False, repeat=False,
                                                   drop_remainder=False, use_labels=True)]
    labs = np.concatenate(labs, 0).astype(np.float32)
    if labs.shape[1] != c_dim:
        raise ValueError(f"dataset {dataset} has label size {labs.shape[1]}, G expects c_dim={c_dim}")
    return lambda rng, n: labs[rng.randint(len(labs), size=n)]


def calc_metric(name, G, dataset=None, inception=None, extractor=None, num=None, seed=0, batch_size=None,
                cache_dir=None, snapshot_pkl=None, verbose=True, stream=None):
    """Computes one metric of generator ``G`` (use G_ema, no truncation) and returns the result record.

    Args:
      name: eqt50k_int | eqt50k_frac | eqr50k | fid50k_full | kid50k_full (| fid50k | kid50k) | shapes_valid
        (results: shapes_valid, shapes_swd, shapes_w1_mean, shapes_ks_max, shapes_eqt; see metrics/shapes.py).
      dataset: image folder / zip / our TFRecord dataset (FID, KID; labels for conditional G).
      inception: path of classify_image_graph_def.pb (FID/KID), or pass ``extractor`` (a FeatureExtractor).
      num: number of generated samples (default 50000 as in the name; shapes_valid: 256).
      seed: seed of latents and transforms. batch_size: default 4 (EQ, as the original) / 16 (FID, KID).
      cache_dir: dataset statistics cache (default ``~/.cache/afgan_tf/metrics``).
    """
    _check_name(name)
    t0 = time.time()
    prog = Progress(name, stream=stream, verbose=verbose)
    num_default = shapeslib.NUM_GEN if name in SHAPES_METRICS else 50000
    n = int(num) if num is not None else num_default
    extra = {}
    results = None
    if name in SHAPES_METRICS:
        if dataset is None:
            raise ValueError(f"{name} needs --data (the shapes dataset the network was trained on)")
        res = shapeslib.shapes_metric(G, dataset, num=n, seed=seed, c_sampler=_label_sampler(G, dataset),
                                      progress=prog)
        results, extra = res["results"], res["extra"]
    elif name in EQ_METRICS:
        res = eq.eq_metric(G, EQ_METRICS[name], num_samples=n, batch_size=batch_size or 4, seed=seed,
                           c_sampler=_label_sampler(G, dataset) if int(getattr(G, "c_dim", 0) or 0) else None,
                           progress=prog)
        value = res["psnr"]
        extra = dict(per_sample_mean_psnr=res["per_sample_mean"])
    else:
        if dataset is None:
            raise ValueError(f"{name} needs --data (the dataset the network was trained on)")
        if extractor is None:
            if inception is None:
                raise ValueError(f"{name} needs --inception=<path to classify_image_graph_def.pb> "
                                 "(inception-2015-12-05; nothing is downloaded)")
            extractor = fidlib.InceptionGraphDef(inception)
        cfg = dict(FID_METRICS.get(name) or KID_METRICS[name])
        kid = name in KID_METRICS
        if cache_dir is None:
            cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "afgan_tf", "metrics")
        real = fidlib.dataset_stats(dataset, extractor, cache_dir=cache_dir, capture_all=kid,
                                    max_items=cfg["max_real"], progress=Progress(f"{name} reals", stream=stream,
                                                                                 verbose=verbose))
        gen = fidlib.generator_stats(G, extractor, num_gen=n, batch_size=batch_size or 16, seed=seed,
                                     capture_all=kid, c_sampler=_label_sampler(G, dataset), progress=prog)
        if kid:
            value = fidlib.kernel_inception_distance(real.get_all(), gen.get_all(), num_subsets=100,
                                                     max_subset_size=1000, seed=seed)
        else:
            value = fidlib.fid_from_stats(real, gen)
        extra = dict(num_real=real.num_items, detector=extractor.fingerprint)
    total = time.time() - t0
    if results is None:
        results = {name: float(value)}
    return dict(results=results, metric=name, total_time=total, total_time_str=format_time(total),
                num_gpus=1, snapshot_pkl=snapshot_pkl, timestamp=time.time(), num_gen=n, seed=seed, **extra)


def _snapshot_kimg(path):
    import re
    m = re.search(r"network-snapshot-(\d+)", os.path.basename(path or ""))
    return int(m.group(1)) if m else 0


def write_scalar(tag, value, step):
    """tf.summary.scalar, or (when the tensorboard package is absent) the same event via tf.summary.write with
    the 'scalars' plugin metadata, so TensorBoard shows it either way. Call inside a writer's as_default()."""
    import tensorflow as tf
    try:
        tf.summary.scalar(tag, value, step=step)
    except Exception as e:  # TBNotInstalledError (tensorboard package missing)
        if "TensorBoard" not in str(e) and "tensorboard" not in str(e):
            raise
        from tensorflow.core.framework import summary_pb2
        md = summary_pb2.SummaryMetadata()
        md.plugin_data.plugin_name = "scalars"
        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=md.SerializeToString())


def report_metric(record, run_dir, tensorboard=True, step=None):
    """Appends the record to ``<run_dir>/metric-<name>.jsonl`` and writes ``Metrics/<key>`` TensorBoard scalars."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, f"metric-{record['metric']}.jsonl")
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    if tensorboard:
        import tensorflow as tf
        step = _snapshot_kimg(record.get("snapshot_pkl")) if step is None else step
        writer = tf.summary.create_file_writer(os.path.join(run_dir, "metrics"))
        with writer.as_default():
            for k, v in record["results"].items():
                write_scalar(f"Metrics/{k}", v, step)
        writer.flush()
        writer.close()
    return path


def make_training_metrics_fn(dataset, inception=None, extractor=None, num=None, seed=0, cache_dir=None,
                             verbose=True):
    """``metrics_fn(name, trainer, run_dir) -> record`` for ``afgan_tf.training.run.run_training`` (computes on
    trainer.G_ema)."""
    state = {}

    def fn(name, trainer, run_dir):
        ex = extractor
        if ex is None and inception is not None and name in tuple(FID_METRICS) + tuple(KID_METRICS):
            ex = state.get("ex")
            if ex is None:
                ex = state["ex"] = fidlib.InceptionGraphDef(inception)
        snap = f"network-snapshot-{trainer.cur_nimg // 1000:06d}.npz"
        return calc_metric(name, trainer.G_ema, dataset=dataset, extractor=ex, num=num, seed=seed,
                           cache_dir=cache_dir, snapshot_pkl=snap, verbose=verbose)

    return fn
