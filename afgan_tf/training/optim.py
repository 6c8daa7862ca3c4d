"""Adam with torch's update rule (``torch.optim.Adam``, no weight decay, no AMSGrad), for tf.distribute.

Steps of :meth:`TorchAdam.apply` for every (gradient, variable) pair whose gradient is not None:
  1. ``t += 1`` — one step counter per variable (a variable skipped in a step keeps its count);
  2. ``m = lerp(m, g, 1 - beta1)``                              (torch: ``exp_avg.lerp_(grad, 1 - beta1)``)
  3. ``v = v * beta2 + ((1 - beta2) * g) * g``                 (``exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)``)
  4. ``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t`` in float64, ``step_size = lr / bc1``;
  5. ``denom = sqrt(v) / sqrt(bc2) + eps``                     (epsilon *after* the bias correction)
  6. ``p = p + (-step_size * m) / denom``                       (``param.addcdiv_(exp_avg, denom, value=-step_size)``)
A variable whose gradient is None is skipped (torch's ``param.grad is None``); a zero gradient is a real step
(``m``, ``v`` decay and ``t`` advances). Scalars are computed in float64 and rounded to float32 once, as torch
does with Python floats; element-wise maths is float32.

Keras' Adam differs in three ways (measured 1.45e-3 apart after one step at lr 0.0025): epsilon before the bias
correction (effective ``eps / sqrt(1 - beta2**t)``), one step counter for the whole optimiser, and zero-gradient
variables are skipped like absent ones.

Distribution: the gradients given to :meth:`apply` are final (already reduced over replicas and sanitised by the
caller), so no reduction happens here. Called in a replica context it switches to the cross-replica context with
``merge_call`` and updates each variable's per-device copies with ``strategy.extended.update``; called in a
cross-replica context it updates directly. The slots (``m``, ``v``, ``t``) are variables created with the
parameters' distribution, tracked by this ``tf.Module`` (checkpoint it: resume continues exactly).
"""
import tensorflow as tf
from afgan_tf.networks.layers import tf_variable

__all__ = ["TorchAdam", "make_optimizer"]


class TorchAdam(tf.Module):
    """torch's Adam over a fixed list of variables.

    Args:
      variables: the trainable variables (Keras 3 variables or tf.Variables), in the order gradients are given.
      learning_rate, beta_1, beta_2, epsilon: torch's ``lr``, ``betas``, ``eps`` (Python floats).
      name: module name (checkpoint key prefix).
    Create it inside ``strategy.scope()`` so that the slots are mirrored like the variables.
    """

    def __init__(self, variables, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, name="adam"):
        super().__init__(name=name)
        if not float(learning_rate) >= 0 or not float(epsilon) >= 0:
            raise ValueError(f"TorchAdam: learning_rate and epsilon must be >= 0, got {learning_rate}, {epsilon}")
        if not (0 <= float(beta_1) < 1 and 0 <= float(beta_2) < 1):
            raise ValueError(f"TorchAdam: betas must be in [0, 1), got ({beta_1}, {beta_2})")
        self.learning_rate, self.beta_1 = float(learning_rate), float(beta_1)
        self.beta_2, self.epsilon = float(beta_2), float(epsilon)
        self._vars = [tf_variable(v) for v in variables]
        if not self._vars:
            raise ValueError("TorchAdam: no variables")
        self._index = {id(v): i for i, v in enumerate(self._vars)}
        with tf.name_scope(name):
            self.m = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"m{i}")
                      for i, v in enumerate(self._vars)]
            self.v = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"v{i}")
                      for i, v in enumerate(self._vars)]
            self.t = [tf.Variable(0, dtype=tf.int64, trainable=False, name=f"t{i}") for i in range(len(self._vars))]

    def get_config(self):
        return dict(learning_rate=self.learning_rate, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)

    def slots(self, variable):
        """``(m, v, t)`` of ``variable`` (a variable given at construction)."""
        i = self._index[id(tf_variable(variable))]
        return self.m[i], self.v[i], self.t[i]

    def apply(self, grads, variables=None):
        """One step with final gradients (None = skipped). ``variables`` defaults to the constructor's list."""
        variables = self._vars if variables is None else [tf_variable(v) for v in variables]
        if len(grads) != len(variables):
            raise ValueError(f"TorchAdam.apply: {len(grads)} gradients for {len(variables)} variables")
        items = [(g, v) + self.slots(v) for g, v in zip(grads, variables) if g is not None]
        if not items:
            return
        if not tf.distribute.has_strategy():
            for it in items:
                self._update(*it)
            return
        if tf.distribute.in_cross_replica_context():
            self._cross_replica_apply(tf.distribute.get_strategy(), items)
            return
        tf.distribute.get_replica_context().merge_call(
            lambda strategy, gs: self._cross_replica_apply(strategy, [(g,) + it[1:] for g, it in zip(gs, items)]),
            args=([it[0] for it in items],))

    def _cross_replica_apply(self, strategy, items):
        for g, var, m, v, t in items:
            strategy.extended.update(var, lambda var_, g_, m_, v_, t_: self._update(g_, var_, m_, v_, t_),
                                     args=(g, m, v, t), group=False)

    def _update(self, g, var, m, v, t):
        dt = var.dtype
        b1, b2 = self.beta_1, self.beta_2
        g = tf.cast(g, dt)
        t.assign_add(1)
        step = tf.cast(tf.convert_to_tensor(t), tf.float64)
        bc1 = 1.0 - tf.pow(tf.constant(b1, tf.float64), step)
        bc2 = 1.0 - tf.pow(tf.constant(b2, tf.float64), step)
        neg_step_size = tf.cast(-(self.learning_rate / bc1), dt)
        bc2_sqrt = tf.cast(tf.sqrt(bc2), dt)
        w = 1.0 - b1                                               # torch's lerp: two forms by the weight's size
        m0 = tf.convert_to_tensor(m)
        if abs(w) < 0.5:
            m_new = m0 + tf.constant(w, dt) * (g - m0)
        else:
            m_new = g - (g - m0) * tf.constant(1.0 - w, dt)
        m.assign(m_new)
        v_new = tf.convert_to_tensor(v) * tf.constant(b2, dt) + (tf.constant(1.0 - b2, dt) * g) * g
        v.assign(v_new)
        denom = tf.sqrt(v_new) / bc2_sqrt + tf.constant(self.epsilon, dt)
        var.assign(tf.convert_to_tensor(var) + (neg_step_size * m_new) / denom)


def make_optimizer(variables, learning_rate, beta_1=0.0, beta_2=0.99, epsilon=1e-8, name="adam"):
    """The training loop's optimiser factory: a :class:`TorchAdam` over ``variables`` (call in strategy scope)."""
    return TorchAdam(variables, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                     name=name)

