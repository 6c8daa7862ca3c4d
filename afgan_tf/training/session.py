"""One training run from resolved options: ``train(opts, strategy, resume, run_dir)``.

Builds what the run needs from the options themselves — the data stream (``data.make_dataset`` of ``opts['data']``,
the global stream the trainer slices per replica), the network-snapshot writer, the metrics hook, the real-image
grid — then the :class:`~afgan_tf.training.trainer.Trainer`, and runs :func:`~afgan_tf.training.run.run_training`
with the run directory's ``training_options.json`` and ``log.txt``. ``tools/train.py`` is flags -> options ->
``train``.
"""
import os

from afgan_tf.training import stats
from afgan_tf.training.checkpoint import ResumeError
from afgan_tf.training.run import run_training
from afgan_tf.training.trainer import Trainer
from afgan_tf.utils import write_json_atomic


class TrainError(RuntimeError):
    """The run could not start or stopped with an error (message for the user)."""


def make_hooks(opts, inception=None):
    """``(dataset_fn, snapshot_fn, metrics_fn)`` for the options' dataset (metrics_fn None without --metrics)."""
    from afgan_tf import data as data_lib
    data_path = opts["data"]

    def dataset_fn(global_batch, seed, skip_batches):   # the global stream; the trainer slices it per replica
        return data_lib.make_dataset(data_path, batch_size=global_batch, mirror=opts["mirror"], shuffle=True,
                                     repeat=True, seed=seed, use_labels=opts["cond"],
                                     skip=skip_batches)  # skips before decoding

    def snapshot_fn(path, tr):
        from afgan_tf import convert
        convert.save_network_snapshot(path, dict(G=tr.G, D=tr.D, G_ema=tr.G_ema),
                                      extra=dict(training_set_kwargs=dict(path=data_path, mirror=opts["mirror"]),
                                                 cur_nimg=tr.cur_nimg, augment_p=tr.augment_p, cfg=opts["cfg"]))

    metrics_fn = None
    if opts["metrics"]:
        from afgan_tf.metrics import metric_main
        metrics_fn = metric_main.make_training_metrics_fn(data_path, inception=inception, seed=opts["random_seed"])
    return dataset_fn, snapshot_fn, metrics_fn


def train(opts, strategy, resume, run_dir, *, is_chief=True, grid_max=64, inception=None, describe=""):
    """Train (or continue) the run in ``run_dir``; returns the status dict of ``run_training``.

    Raises :class:`TrainError` when the networks cannot be built, the resume source does not fit, or a loss
    became non-finite (the last good checkpoint is kept).
    """
    import tensorflow as tf
    from afgan_tf import data as data_lib
    logger = None
    if is_chief:
        os.makedirs(run_dir, exist_ok=True)
        write_json_atomic(os.path.join(run_dir, "training_options.json"), opts)
        logger = stats.Logger(os.path.join(run_dir, "log.txt"))
    try:
        if is_chief:
            print(f"Run directory: {run_dir}")
        if describe:
            print(describe)
        dataset_fn, snapshot_fn, metrics_fn = make_hooks(opts, inception)
        try:
            trainer = Trainer(opts, strategy, dataset_fn=dataset_fn).build()
        except (ValueError, TypeError) as e:
            raise TrainError(f"building the networks: {e}") from None
        n_g = sum(int(tf.size(v)) for v in trainer.G.trainable_variables)
        n_d = sum(int(tf.size(v)) for v in trainer.D.trainable_variables)
        print(f"G: {n_g:,} trainable parameters; D: {n_d:,}")
        gw, gh = stats.grid_size(opts["G_kwargs"]["img_resolution"], max_images=grid_max)
        reals = next(iter(data_lib.make_dataset(opts["data"], batch_size=gw * gh, shuffle=False, repeat=True,
                                                use_labels=opts["cond"])))
        try:
            status = run_training(trainer, run_dir, resume=resume, is_chief=is_chief, ckpt_ticks=opts["ckpt_ticks"],
                                  ckpt_keep=opts["ckpt_keep"], max_grid_images=grid_max, snapshot_fn=snapshot_fn,
                                  metrics_fn=metrics_fn, real_grid=(reals[0].numpy(), reals[1].numpy()))
        except ResumeError as e:
            raise TrainError(str(e)) from None
        if status["error"]:
            raise TrainError(status["error"])
        return status
    finally:
        if logger is not None:
            logger.close()
