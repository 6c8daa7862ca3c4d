"""Dynamic loss scaling for the float16 layers (mixed precision on GPU).

The networks compute their top ``num_fp16_res`` resolutions in float16 when a GPU is present (docs/ALGORITHM.md §3.6, §5.1). Small
gradients of float16 activations underflow, so with mixed precision each training phase multiplies its loss by a
scale ``S`` (gradients are then ``S`` times too large), and after the cross-replica reduction:

* if every gradient entry is finite: the gradients are divided by ``S`` and applied; after ``growth_interval``
  consecutive finite steps ``S`` doubles (at most ``max_scale``);
* otherwise the update is skipped (weights and optimiser state untouched) and ``S`` halves (at least
  ``min_scale``).

The decision is taken on the *reduced* gradients, so every replica (and worker) takes the same one. The state
(``scale``, ``good_steps``, ``skipped``) lives in variables and is checkpointed with the run, so a resumed run
continues with the same scale.

Keras 3 has ``keras.optimizers.LossScaleOptimizer``, but it checks finiteness on the gradients it is given in the
first replica only, before the inner optimiser's all-reduce; in our loop (per-replica gradient accumulation, the
reduction done by the loop) one replica's overflow would not skip the others' update. Hence this small module.

The defaults follow the usual dynamic loss scale (initial ``2**15``, growth every 2000 finite steps, factor 2).
"""
import tensorflow as tf

__all__ = ["LossScale", "all_finite"]


def all_finite(grads):
    """Scalar bool tensor: every entry of every gradient (None skipped) is finite."""
    flags = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
    if not flags:
        return tf.constant(True)
    return tf.reduce_all(tf.stack(flags))


class LossScale(tf.Module):
    """Dynamic loss scale of one training phase.

    Args:
      initial_scale: starting scale (2**15).
      growth_interval: number of consecutive finite steps after which the scale is multiplied by ``factor`` (2000).
      factor: growth / backoff factor (2).
      min_scale, max_scale: bounds of the scale (1, 2**24).
      name: module name (also the checkpoint key prefix of its variables).

    Use: multiply the loss (or its gain) by :attr:`scale`; after reducing the gradients call
    :meth:`unscale` and :meth:`update` with :func:`all_finite` of the reduced gradients (in cross-replica or
    default context; see ``Trainer._apply``).
    """

    def __init__(self, initial_scale=2.0 ** 15, growth_interval=2000, factor=2.0, min_scale=1.0, max_scale=2.0 ** 24,
                 name="loss_scale"):
        super().__init__(name=name)
        if not initial_scale > 0:
            raise ValueError(f"LossScale: initial_scale must be > 0, got {initial_scale}")
        if int(growth_interval) < 1:
            raise ValueError(f"LossScale: growth_interval must be >= 1, got {growth_interval}")
        if not factor > 1:
            raise ValueError(f"LossScale: factor must be > 1, got {factor}")
        if not 0 < min_scale <= initial_scale <= max_scale:
            raise ValueError(f"LossScale: need 0 < min_scale <= initial_scale <= max_scale, got {min_scale}, "
                             f"{initial_scale}, {max_scale}")
        self.growth_interval = int(growth_interval)
        self.factor = float(factor)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        kw = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.scale = tf.Variable(float(initial_scale), dtype=tf.float32, name="scale", **kw)
        self.good_steps = tf.Variable(0, dtype=tf.int64, name="good_steps", **kw)
        self.skipped = tf.Variable(0, dtype=tf.int64, name="skipped", **kw)

    def get_config(self):
        return dict(growth_interval=self.growth_interval, factor=self.factor, min_scale=self.min_scale,
                    max_scale=self.max_scale)

    def value(self):
        """The current scale as a float32 tensor."""
        return tf.convert_to_tensor(self.scale)

    def unscale(self, grads):
        """``g / scale`` (float32 division; exact for finite ``g`` since the scale is a power of two by default)."""
        s = self.value()
        return [None if g is None else g / tf.cast(s, g.dtype) for g in grads]

    def update(self, finite):
        """Advance the state after one step whose reduced gradients were ``finite`` (scalar bool)."""
        finite = tf.convert_to_tensor(finite, tf.bool)
        s = self.value()
        good = tf.convert_to_tensor(self.good_steps) + 1
        grow = tf.logical_and(finite, good >= self.growth_interval)
        new_scale = tf.where(finite, tf.where(grow, tf.minimum(s * self.factor, self.max_scale), s),
                             tf.maximum(s / self.factor, self.min_scale))
        self.scale.assign(new_scale)
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), good, tf.zeros_like(good)))
        self.skipped.assign_add(tf.where(finite, tf.constant(0, tf.int64), tf.constant(1, tf.int64)))
        return new_scale
