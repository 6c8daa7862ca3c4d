"""Choosing the tf.distribute strategy for training.

* ``default``      – one device (the first GPU if any, else the CPU); ``tf.distribute.get_strategy()``.
* ``mirrored``     – ``MirroredStrategy`` over all local GPUs, or over ``cpu_replicas`` logical CPU devices
  (for testing the multi-replica code path on a CPU-only machine).
* ``multiworker``  – ``MultiWorkerMirroredStrategy``; the cluster comes from the ``TF_CONFIG`` environment variable
  (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``).
* ``auto``         – ``multiworker`` if TF_CONFIG lists more than one worker, ``mirrored`` if more than one GPU
  (or ``cpu_replicas > 1``), else ``default``.

Logical CPU devices must be configured before TensorFlow initialises its runtime, so call
:func:`make_strategy` before creating any tensor.
"""
import json
import os

import tensorflow as tf

from afgan_tf import device

from afgan_tf.training.options import STRATEGIES, OptionError


def tf_config():
    """Parsed ``TF_CONFIG`` (or ``{}``); a clear error if it is not valid JSON."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise OptionError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}") from None
    if not isinstance(cfg, dict):
        raise OptionError(f"TF_CONFIG must be a JSON object, got {raw[:200]!r}")
    return cfg


def _num_tf_config_workers(cfg):
    cluster = cfg.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def configure_cpu_replicas(n):
    """Split the physical CPU into ``n`` logical devices (must run before TF's runtime starts)."""
    cpus = device.physical_devices("CPU")
    if not cpus:
        raise RuntimeError("no CPU device found")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        raise RuntimeError(f"--cpu-replicas={n}: TensorFlow was already initialised, logical CPU devices can only "
                           f"be configured at start-up ({e})") from None


def make_strategy(kind="auto", cpu_replicas=0):
    """Return the ``tf.distribute.Strategy`` for ``kind`` (see module docstring)."""
    if kind not in STRATEGIES:
        raise OptionError(f"--strategy: unknown strategy {kind!r}; expected one of {', '.join(STRATEGIES)}")
    if cpu_replicas < 0:
        raise OptionError(f"--cpu-replicas: must be >= 0, got {cpu_replicas}")
    cfg = tf_config()
    gpus = device.physical_devices("GPU")
    if kind == "auto":
        if _num_tf_config_workers(cfg) > 1:
            kind = "multiworker"
        elif len(gpus) > 1 or cpu_replicas > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multiworker":
        if not cfg.get("cluster"):
            raise OptionError("--strategy=multiworker needs the TF_CONFIG environment variable with a 'cluster' "
                              "and a 'task' entry")
        if cpu_replicas > 1:
            raise OptionError("--cpu-replicas cannot be combined with --strategy=multiworker "
                              "(each worker uses its local GPUs or one CPU)")
        comm = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    if kind == "mirrored":
        if gpus and cpu_replicas:
            raise OptionError("--cpu-replicas is for CPU-only machines; GPUs were found (use all local GPUs)")
        if gpus:
            return tf.distribute.MirroredStrategy()
        n = max(cpu_replicas, 1)
        configure_cpu_replicas(n)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:n]
        # Cross-device ops: NCCL is GPU-only; plain reductions on the host are exact and deterministic.
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if cpu_replicas > 1:
        raise OptionError(f"--cpu-replicas={cpu_replicas} needs --strategy=mirrored (or auto)")
    return tf.distribute.get_strategy()


def worker_info(strategy):
    """``(task_id, num_workers, is_chief)`` of this process in ``strategy``'s cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 0, 1, True
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    spec = resolver.cluster_spec().as_dict()
    num_workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    return int(task_id), int(num_workers), bool(is_chief)


def per_replica_slices(ds, ctx, global_batch):
    """Global batches -> this input pipeline's per-replica batches, in replica order.

    Every input pipeline (one per worker) reads the same global stream and keeps the rows of its replicas: replica
    ``r`` (``replica_id_in_sync_group``) gets rows ``[r * per_replica, (r + 1) * per_replica)`` of each global batch.
    So the data order depends only on the seed and the global batch, not on the strategy or the number of workers
    (each worker decodes the whole global batch: the price of that guarantee).
    """
    n = ctx.num_replicas_in_sync
    if n == 1:
        return ds
    if global_batch % n:
        raise ValueError(f"global batch {global_batch} is not divisible by {n} replicas")
    per = global_batch // n
    local = n // ctx.num_input_pipelines
    start = ctx.input_pipeline_id * local * per

    def replica_batches(*xs):   # [B, ...] -> `local` elements [per, ...] (no unbatch: it crashes on [B, 0] labels)
        rows = tf.data.Dataset.range(local)
        return rows.map(lambda j: tuple(x[start + tf.cast(j, tf.int32) * per:start + (tf.cast(j, tf.int32) + 1) * per]
                                        for x in xs))

    out = ds.flat_map(replica_batches)
    # keep the static per-replica shapes (the slices lose the batch dimension's size)
    shapes = [tf.TensorShape([per]).concatenate(spec.shape[1:]) for spec in tf.nest.flatten(ds.element_spec)]
    return out.map(lambda *xs: tuple(tf.ensure_shape(x, shp) for x, shp in zip(xs, shapes)))


def strategy_name(strategy):
    return type(strategy).__name__
