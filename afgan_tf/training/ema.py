"""Exponential moving average of the generator weights (``G_ema``; docs/ALGORITHM.md §5.3).

``ema_kimg = batch * 10 / 32``; with ramp-up ``r`` (0.05, off on resume): ``ema_nimg = min(ema_kimg * 1000,
cur_nimg * r)``; ``beta = 0.5 ** (batch / max(ema_nimg, 1e-8))``. Then every trainable weight becomes
``lerp(p, p_ema, beta) = p + beta * (p_ema - p)`` and every non-trainable variable (buffers: ``w_avg``,
``magnitude_ema``, filters, ...) is copied from G. ``cur_nimg`` is the image count *before* the step, so the first
step (cur_nimg = 0 with ramp-up) copies G exactly.

The two models must have identical variable structure: variables are paired by order and each pair must agree in
name (last path component), shape, dtype and trainability, otherwise a ``ValueError`` names the pair.
Works eagerly, in ``tf.function``, and under ``tf.distribute`` (mirrored variables; called in replica context it
switches to cross-replica context with ``merge_call``).
"""
import tensorflow as tf


def ema_kimg_for_batch(batch, ema_kimg=None):
    """The original's default ``ema_kimg = batch * 10 / 32`` (or ``ema_kimg`` when given)."""
    if ema_kimg is not None:
        return float(ema_kimg)
    return float(batch) * 10.0 / 32.0


def ema_beta(cur_nimg, batch, ema_kimg=None, ema_rampup=0.05):
    """EMA coefficient beta (Python float for Python inputs, float32 tensor when cur_nimg is a tensor)."""
    if batch <= 0:
        raise ValueError(f"ema_beta: batch must be > 0, got {batch}")
    ema_nimg_max = ema_kimg_for_batch(batch, ema_kimg) * 1000.0
    if tf.is_tensor(cur_nimg):
        ema_nimg = tf.constant(ema_nimg_max, tf.float32)
        if ema_rampup is not None:
            ema_nimg = tf.minimum(ema_nimg, tf.cast(cur_nimg, tf.float32) * float(ema_rampup))
        return tf.pow(0.5, float(batch) / tf.maximum(ema_nimg, 1e-8))
    ema_nimg = ema_nimg_max
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, float(cur_nimg) * ema_rampup)
    return 0.5 ** (float(batch) / max(ema_nimg, 1e-8))


def _variables(model):
    if hasattr(model, "variables"):
        return list(model.variables)
    raise TypeError(f"expected a Keras model / tf.Module with .variables, got {type(model).__name__}")


def _short_name(v):
    name = getattr(v, "path", None) or v.name
    name = name.split("/")[-1]
    return name.split(":")[0]


def pair_variables(model_ema, model):
    """Returns ``[(v_ema, v, trainable)]`` after checking that both models have the same variable structure."""
    ve, vs = _variables(model_ema), _variables(model)
    if len(ve) != len(vs):
        raise ValueError(f"EMA: models differ in structure: {len(ve)} variables in the EMA model vs {len(vs)} "
                         f"in the source model")
    pairs = []
    for i, (a, b) in enumerate(zip(ve, vs)):
        pa = getattr(a, "path", a.name)
        pb = getattr(b, "path", b.name)
        if _short_name(a) != _short_name(b):
            raise ValueError(f"EMA: variable #{i} differs in name: {pa!r} (EMA) vs {pb!r} (source)")
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"EMA: variable #{i} differs in shape: {pa!r} {tuple(a.shape)} (EMA) vs "
                             f"{pb!r} {tuple(b.shape)} (source)")
        if a.dtype != b.dtype:
            raise ValueError(f"EMA: variable #{i} differs in dtype: {pa!r} {a.dtype} vs {pb!r} {b.dtype}")
        if bool(a.trainable) != bool(b.trainable):
            raise ValueError(f"EMA: variable #{i} differs in trainability: {pa!r} trainable={a.trainable} vs "
                             f"{pb!r} trainable={b.trainable}")
        pairs.append((a, b, bool(b.trainable)))
    return pairs


def _assign_all(pairs, beta):
    ops = []
    for v_ema, v, trainable in pairs:
        src = tf.convert_to_tensor(v)
        if trainable and src.dtype.is_floating:
            b = tf.cast(beta, src.dtype)
            new = src + b * (tf.convert_to_tensor(v_ema) - src)    # lerp(p, p_ema, beta)
        else:
            new = src                                               # buffers are copied
        ops.append(v_ema.assign(new))
    return ops


def _in_replica_context_of_strategy():
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


class EmaUpdater:
    """Updates ``G_ema`` from ``G`` once per training step.

    Args:
      G_ema, G: Keras models (or tf.Modules) with identical variable structure.
      batch: global batch size (images per step, all replicas).
      ema_kimg: half-life in thousands of images; default ``batch * 10 / 32``.
      ema_rampup: ramp-up ratio (0.05; ``None`` = off, as on resume).
    Call ``update(cur_nimg)`` with the image count before the step (Python number or tensor); returns beta.
    """

    def __init__(self, G_ema, G, batch, ema_kimg=None, ema_rampup=0.05):
        if int(batch) <= 0:
            raise ValueError(f"EmaUpdater: batch must be > 0, got {batch}")
        self.batch = int(batch)
        self.ema_kimg = ema_kimg_for_batch(batch, ema_kimg)
        self.ema_rampup = ema_rampup
        self.pairs = pair_variables(G_ema, G)

    def beta(self, cur_nimg):
        return ema_beta(cur_nimg, self.batch, self.ema_kimg, self.ema_rampup)

    def update(self, cur_nimg):
        """One EMA step for the image count ``cur_nimg`` before the step; returns beta."""
        return self.apply_beta(self.beta(cur_nimg))

    @tf.autograph.experimental.do_not_convert
    def apply_beta(self, beta):
        """One EMA step with a given ``beta`` (e.g. computed in Python float64 and passed to a compiled step)."""
        if _in_replica_context_of_strategy():
            def merge_fn(strategy, beta):
                self._cross_replica_update(strategy, beta)
            tf.distribute.get_replica_context().merge_call(merge_fn, args=(beta,))
        elif tf.distribute.has_strategy():
            self._cross_replica_update(tf.distribute.get_strategy(), beta)
        else:
            _assign_all(self.pairs, beta)
        return beta

    def _cross_replica_update(self, strategy, beta):
        beta = strategy.experimental_local_results(beta)[0] if isinstance(beta, tf.distribute.DistributedValues) \
            else beta
        _assign_all(self.pairs, beta)


def update_ema(G_ema, G, cur_nimg, batch, ema_kimg=None, ema_rampup=0.05):
    """One-shot functional form of :class:`EmaUpdater` (pairs variables on every call). Returns beta."""
    return EmaUpdater(G_ema, G, batch, ema_kimg, ema_rampup).update(cur_nimg)
