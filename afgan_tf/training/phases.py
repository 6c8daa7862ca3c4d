"""The phase table of a training iteration and the small per-replica helpers of a phase step.

Each row of :data:`PHASES` says which network a phase trains, whether it is a lazy regulariser (gain = its
interval, the main phase's optimiser), what it consumes, how the loss object computes its loss and gradients
(``StyleGAN2Loss.{gmain,dmain,dreg,greg}_grads``; a loss class named by ``loss_class`` in the options must offer
the same methods) and its per-sample statistics for stats.jsonl. ``Trainer`` compiles one step per row.
"""
from typing import Callable, NamedTuple

import tensorflow as tf

PHASE_SEEDS = dict(Gmain=1, Dmain=2, Dreg=3, Greg=4)


class Phase(NamedTuple):
    """One row of the phase table."""
    net: str                 # 'G' or 'D'
    reg: bool                # lazy regulariser: gain = interval, optimiser shared with the main phase
    uses_z: bool
    uses_reals: bool
    grads: Callable          # (loss, x, rc, z, c, cur_nimg, variables, gain) -> (loss, grads, stats)
    per_sample: Callable     # stats -> {name: per-sample tensor}
    loss_has_gain: bool      # the loss returned by ``grads`` includes the gain


def _sp(x):
    return tf.nn.softplus(tf.cast(x, tf.float32))


PHASES = {
    "Gmain": Phase("G", False, True, False,
                   lambda L, x, rc, z, c, n, vs, gain: L.gmain_grads(z, c, n, vs, gain=gain),
                   lambda st: {"Loss/scores/fake": st["Loss/scores/fake"],
                               "Loss/G/loss": _sp(-tf.cast(st["Loss/scores/fake"], tf.float32))}, False),
    "Greg": Phase("G", True, True, False,
                  lambda L, x, rc, z, c, n, vs, gain: L.greg_grads(z, c, gain=gain, variables=vs),
                  lambda st: {"Loss/pl_penalty": st["Loss/pl_penalty"], "Loss/G/reg": st["Loss/G/reg"]}, True),
    "Dmain": Phase("D", False, True, True,
                   lambda L, x, rc, z, c, n, vs, gain: L.dmain_grads(x, rc, z, c, n, vs, gain=gain),
                   lambda st: {"Loss/scores/fake": st["Loss/scores/fake"], "Loss/scores/real": st["Loss/scores/real"],
                               "Loss/D/loss": _sp(st["Loss/scores/fake"]) + _sp(-tf.cast(st["Loss/scores/real"],
                                                                                          tf.float32))}, False),
    "Dreg": Phase("D", True, False, True,
                  lambda L, x, rc, z, c, n, vs, gain: L.dreg_grads(x, rc, n, gain=gain, variables=vs),
                  lambda st: {"Loss/scores/real": st["Loss/scores/real"], "Loss/r1_penalty": st["Loss/r1_penalty"],
                              "Loss/D/reg": st["Loss/D/reg"]}, True),
}


def replica_slice(t, per_replica):
    """The current replica's rows of a global-batch tensor."""
    ctx = tf.distribute.get_replica_context()
    rid = ctx.replica_id_in_sync_group if ctx is not None else 0
    start = tf.cast(rid, tf.int32) * per_replica
    return t[start:start + per_replica]


def stat(values):
    """Per-sample values -> [num, sum, sum of squares] (float32)."""
    v = tf.reshape(tf.cast(values, tf.float32), [-1])
    return tf.stack([tf.cast(tf.size(v), tf.float32), tf.reduce_sum(v), tf.reduce_sum(tf.square(v))])


def per_sample_stats(values):
    """``{name: per-sample tensor}`` -> ``{name: stat}``, plus ``Loss/signs/*`` for every ``Loss/scores/*``."""
    out = {}
    for k, v in values.items():
        out[k] = stat(v)
        if k.startswith("Loss/scores/"):
            out["Loss/signs/" + k.rsplit("/", 1)[1]] = stat(tf.sign(v))
    return out


def accumulate(acc, grads):
    """Sums chunk gradients (None = no gradient; kept None only if no chunk has one)."""
    if acc is None:
        return list(grads)
    return [a if g is None else (g if a is None else a + g) for a, g in zip(acc, grads)]
