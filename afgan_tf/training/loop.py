"""The StyleGAN3 training loop on tf.distribute (spec §5.1-§5.7).

One iteration (``Trainer.train_iteration``):
  1. fetch one real batch from the distributed tf.data iterator (shared by all phases);
  2. ``Gmain``: non-saturating loss ``softplus(-D(G(z)))`` -> G's Adam;
  3. ``Dmain``: ``softplus(D(G(z)))`` (G run with ``update_emas=True``) + ``softplus(-D(x))`` -> D's Adam;
  4. ``Dreg`` (every ``D_reg_interval = 16`` iterations, the first included): lazy R1
     ``(gamma/2)·|dD(x)/dx|²`` times the interval -> the same D Adam (its lr/beta2 carry the r = 16/17 correction);
  5. G_ema update (ramp-up), ``cur_nimg += batch``; every 4 iterations the ADA p update from the sign of D's real
     logits (all replicas, Dmain and Dreg).

Each phase is one ``tf.function`` running ``strategy.run`` over the replicas. Inside a replica the per-replica batch
is split into ``batch_gpu`` chunks (gradient accumulation). Each chunk's loss is ``sum(per-sample loss)/global_batch``
(times the lazy gain), so the gradients, summed over chunks and all-reduced (SUM) across replicas by the Keras 3
optimiser, are the global-batch mean, independent of the number of replicas and of ``batch_gpu``. (The original sums
chunk means and averages over GPUs: the same direction, a different overall scale, which Adam ignores up to eps.)
The loop all-reduces the accumulated gradients itself and then sanitises non-finite entries (NaN -> 0,
±inf -> ±1e5; spec §5.1: after the reduction); the optimisers apply them without reducing again. With mixed precision
(float16 layers, GPU) every phase has a dynamic loss scale (``loss_scale.py``): the loss is multiplied by it, the
reduced gradients are divided by it, and a step whose reduced gradients are not all finite is skipped (weights and
Adam state untouched) while the scale halves. A non-finite *loss* stops training with an error and the last good
checkpoint is kept. The ADA p update is ``augment.AdaController`` (its statistics and counter are checkpointed).

Random numbers (z, label permutations) are stateless functions of ``(seed, step, phase)`` over the *global* batch, of
which each replica takes its slice: a run is reproducible across strategies and across resume. The data order is a
function of ``(seed, step)``: the dataset is rebuilt on resume and the consumed batches skipped (``make_dataset``
skips them before decoding).

:func:`run_training` adds the bookkeeping of spec §5.7: run directory, log, stats.jsonl, TensorBoard, ticks,
image grids, snapshots, checkpoints, SIGTERM/SIGINT handling.
"""
import copy
import json
import math
import os
import signal
import sys
import time

import numpy as np
import tensorflow as tf

from afgan_tf.training import stats as stats_lib
from afgan_tf.training.augment import AdaController
from afgan_tf.training.ema import ema_beta
from afgan_tf.training.loss import StyleGAN2Loss, sanitize_gradients
from afgan_tf.training.loss_scale import LossScale, all_finite
from afgan_tf.training.checkpoint import CKPT_DIR, ResumeError, TrainCheckpoint, verify_checkpoint
from afgan_tf.training.options import write_json_atomic

PHASE_SEEDS = dict(Gmain=1, Dmain=2, Dreg=3, Greg=4)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; training stopped."""


# ----------------------------------------------------------------------------------------------------------------
# Small building blocks (the loss, blur, EMA and ADA maths live in loss.py / blur.py / ema.py / augment.py).


def _replica_slice(t, per_replica):
    """The current replica's rows of a global-batch tensor."""
    ctx = tf.distribute.get_replica_context()
    rid = ctx.replica_id_in_sync_group if ctx is not None else 0
    start = tf.cast(rid, tf.int32) * per_replica
    return t[start:start + per_replica]


def _stat(values):
    """Per-sample values -> [num, sum, sum of squares] (float32)."""
    v = tf.reshape(tf.cast(values, tf.float32), [-1])
    return tf.stack([tf.cast(tf.size(v), tf.float32), tf.reduce_sum(v), tf.reduce_sum(tf.square(v))])


def _preload_custom_ops():
    """Load the compiled op library eagerly: a first load inside a tf.function trace fails and would leave the
    whole run on the slower reference ops."""
    try:
        from afgan_tf.ops import _custom_ops
        _custom_ops.load_error()
    except ImportError:
        pass


def _tf_var(v):
    """The tf.Variable behind a Keras 3 Variable (the variable itself otherwise)."""
    from afgan_tf.networks.layers import tf_variable
    return tf_variable(v)


_ADAM_CLASS = None


def _pre_reduced_adam(**kwargs):
    """A Keras Adam that applies the gradients it is given as they are.

    Keras 3's TF optimisers all-reduce (SUM) the gradients when called in a replica context; the loop has already
    reduced (and sanitised / unscaled) them, so that second reduction is switched off.
    """
    global _ADAM_CLASS
    if _ADAM_CLASS is None:
        import keras
        if not hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients"):
            raise RuntimeError(f"keras {keras.__version__}: Adam has no _all_reduce_sum_gradients; the training loop "
                               f"reduces gradients itself and needs to switch the optimiser's reduction off")

        class PreReducedAdam(keras.optimizers.Adam):
            def _all_reduce_sum_gradients(self, grads_and_vars):
                return list(grads_and_vars)

        _ADAM_CLASS = PreReducedAdam
    return _ADAM_CLASS(**kwargs)


def _accumulate(acc, grads):
    if acc is None:
        return list(grads)
    return [a if g is None else (g if a is None else a + g) for a, g in zip(acc, grads)]


# ----------------------------------------------------------------------------------------------------------------
# The trainer.


class Trainer:
    """Networks, optimisers, phase steps and loop state for one training run.

    Args:
      opts: resolved option dict (``options.resolve_options``).
      strategy: a ``tf.distribute.Strategy``.
      make_generator / make_discriminator: ``kwargs -> Keras model`` (default: ``afgan_tf.networks``).
      make_augment_pipe: ``opts -> augment pipe or None`` (default: ``afgan_tf.training.augment`` when
        ``opts['aug'] != 'noaug'``); the pipe is called as ``pipe(images)`` and has a ``p`` variable.
      dataset_fn: ``(input_context, per_replica_batch, seed, skip_batches) -> tf.data.Dataset`` of
        ``(images float32 NHWC in [-1, 1], labels [N, c_dim])``.
      log: print-like function.
    """

    def __init__(self, opts, strategy, *, dataset_fn, make_generator=None, make_discriminator=None,
                 make_augment_pipe=None, log=print):
        self.opts = opts
        self.strategy = strategy
        self.dataset_fn = dataset_fn
        self.make_generator = make_generator or _default_generator
        self.make_discriminator = make_discriminator or _default_discriminator
        self.make_augment_pipe = make_augment_pipe or _default_augment_pipe
        self.log = log
        self.batch_size = opts["batch_size"]
        self.batch_gpu = opts["batch_gpu"]
        self.per_replica = opts["per_replica_batch"]
        self.num_chunks = opts["num_accumulation"]
        self.c_dim = opts["G_kwargs"].get("c_dim", 0)
        self.r1_gamma = opts["loss_kwargs"]["r1_gamma"]
        self.D_reg_interval = opts["D_reg_interval"]
        if strategy.num_replicas_in_sync * self.per_replica != self.batch_size:
            raise ValueError(f"batch {self.batch_size} != replicas {strategy.num_replicas_in_sync} × per-replica "
                             f"batch {self.per_replica}; resolve the options with the strategy's replica count")
        self.G_reg_interval = opts.get("G_reg_interval") if opts["loss_kwargs"].get("pl_weight", 0) else None
        # Loop state (Python mirror of the checkpointed variables).
        self.step = 0
        self.cur_nimg = 0
        self.cur_tick = 0
        self.tick_start_nimg = 0
        self._built = False

    # -- construction -------------------------------------------------------------------------------------------

    def build(self):
        """Create networks, optimisers, state variables and compile the phase steps (inside strategy.scope())."""
        o = self.opts
        import keras
        _preload_custom_ops()
        # Seeded initialisation: identical start on every worker and in every process of a resumed run.
        keras.utils.set_random_seed(o["random_seed"])
        with self.strategy.scope():
            self.G = self.make_generator(copy.deepcopy(o["G_kwargs"]))
            self.D = self.make_discriminator(copy.deepcopy(o["D_kwargs"]))
            self.G_ema = self.make_generator(copy.deepcopy(o["G_kwargs"]))
            self._check_pair(self.G, self.G_ema)
            for ve, v in zip(self.G_ema.weights, self.G.weights):
                ve.assign(v)
            self.augment_pipe = self.make_augment_pipe(o) if o["aug"] != "noaug" else None
            if self.augment_pipe is not None and o["aug"] == "fixed":
                self.augment_pipe.p.assign(o["augment_p"])
            lk = o["loss_kwargs"]
            self.loss = StyleGAN2Loss(self.G, self.D, self.augment_pipe, r1_gamma=lk["r1_gamma"],
                                      style_mixing_prob=lk["style_mixing_prob"], pl_weight=lk["pl_weight"],
                                      pl_batch_shrink=lk["pl_batch_shrink"], pl_decay=lk["pl_decay"],
                                      blur_init_sigma=lk["blur_init_sigma"], blur_fade_kimg=lk["blur_fade_kimg"],
                                      seed=o["random_seed"] + 2)
            self.G_opt = _pre_reduced_adam(**o["G_opt_kwargs"], name="G_opt")
            self.D_opt = _pre_reduced_adam(**o["D_opt_kwargs"], name="D_opt")
            self.G_opt.build(self.G.trainable_variables)
            self.D_opt.build(self.D.trainable_variables)
            i64 = dict(dtype=tf.int64, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.state = dict(
                step=tf.Variable(0, name="step", **i64), cur_nimg=tf.Variable(0, name="cur_nimg", **i64),
                cur_tick=tf.Variable(0, name="cur_tick", **i64),
                tick_start_nimg=tf.Variable(0, name="tick_start_nimg", **i64),
                seed=tf.Variable(o["random_seed"], name="seed", **i64),
                batch_size=tf.Variable(self.batch_size, name="batch_size", **i64),
            )
            # ADA: p from the sign of D's real logits (Dmain and Dreg, all replicas), every ada_interval iterations.
            ada_mode = o["aug"] if self.augment_pipe is not None else "noaug"
            self.ada = AdaController(None if self.augment_pipe is None else self.augment_pipe.p,
                                     target=o["ada_target"] if o["ada_target"] is not None else 0.6,
                                     interval=o["ada_interval"], kimg=o["ada_kimg"], batch=self.batch_size,
                                     mode=ada_mode, name="ada")
            # Dynamic loss scaling (mixed precision only), one scale per phase.
            self.loss_scales = {}
            if o.get("loss_scaling"):
                for phase in ("Gmain", "Dmain", "Dreg") + (("Greg",) if self.G_reg_interval else ()):
                    self.loss_scales[phase] = LossScale(**o.get("loss_scale_kwargs", {}), name=f"loss_scale_{phase}")
        self._g_vars = self.G.trainable_variables
        self._d_vars = self.D.trainable_variables
        # The loss module's tapes watch the backing tf.Variables (tape.watch refuses Keras 3 Variable wrappers).
        self._g_tf = [_tf_var(v) for v in self._g_vars]
        self._d_tf = [_tf_var(v) for v in self._d_vars]
        if not self._g_vars or not self._d_vars:
            raise ValueError("G and D must have trainable variables")
        self._ema_pairs = list(zip(self.G_ema.trainable_variables, self.G.trainable_variables))
        self._buf_pairs = list(zip(self.G_ema.non_trainable_variables, self.G.non_trainable_variables))
        if self.loss_scales:
            self.log(f"Mixed precision: float16 layers, dynamic loss scaling of {', '.join(self.loss_scales)} "
                     f"(initial scale {float(next(iter(self.loss_scales.values())).scale.numpy()):g})")
        self._compile_steps()
        self._built = True
        return self

    @staticmethod
    def _check_pair(G, G_ema):
        a, b = G.weights, G_ema.weights
        if len(a) != len(b) or any(tuple(x.shape) != tuple(y.shape) for x, y in zip(a, b)):
            raise ValueError("G_ema does not have the same variables as G (the generator factory must be "
                             "deterministic in its variable layout)")

    def _compile_steps(self):
        s = self.strategy
        red = tf.distribute.ReduceOp.SUM

        def reduce_stats(per_replica):
            return {k: s.reduce(red, v, axis=None) for k, v in per_replica.items()}

        @tf.function
        def g_step(reals, labels, step, cur_nimg):
            return reduce_stats(s.run(self._g_main, args=(reals, labels, step, cur_nimg)))

        @tf.function
        def d_step(reals, labels, step, cur_nimg):
            return reduce_stats(s.run(self._d_main, args=(reals, labels, step, cur_nimg)))

        @tf.function
        def dreg_step(reals, labels, step, cur_nimg):
            return reduce_stats(s.run(self._d_reg, args=(reals, labels, step, cur_nimg)))

        @tf.function
        def greg_step(reals, labels, step, cur_nimg):
            return reduce_stats(s.run(self._g_reg, args=(reals, labels, step, cur_nimg)))

        @tf.function
        def ema_step(beta):
            beta = tf.cast(beta, tf.float32)
            for pe, p in self._ema_pairs:
                pv = tf.convert_to_tensor(p)
                pe.assign(pv + (tf.convert_to_tensor(pe) - pv) * tf.cast(beta, pv.dtype))
            for be, b in self._buf_pairs:
                be.assign(tf.convert_to_tensor(b))

        self.g_step, self.d_step, self.dreg_step, self.ema_step = g_step, d_step, dreg_step, ema_step
        self.greg_step = greg_step

    # -- per-replica phase functions -----------------------------------------------------------------------------

    def _noise(self, step, phase):
        """Global-batch z for (seed, step, phase), this replica's slice, split into chunks."""
        seed = tf.stack([tf.cast(self.opts["random_seed"], tf.int64), tf.cast(step, tf.int64) * 8 + phase])
        z = tf.random.stateless_normal([self.batch_size, self.G.z_dim], seed=seed)  # [B, z_dim]
        z = _replica_slice(z, self.per_replica)                                     # [b, z_dim]
        return [z[i * self.batch_gpu:(i + 1) * self.batch_gpu] for i in range(self.num_chunks)]

    def _gen_labels(self, labels, step, phase):
        """Labels for generated images: a stateless random permutation of the real labels (None if c_dim = 0)."""
        if not self.c_dim:
            return [None] * self.num_chunks
        seed = tf.stack([tf.cast(self.opts["random_seed"], tf.int64), tf.cast(step, tf.int64) * 8 + phase + 4])
        perm = tf.argsort(tf.random.stateless_uniform([self.per_replica], seed=seed))
        c = tf.gather(tf.cast(labels, tf.float32), perm)
        return [c[i * self.batch_gpu:(i + 1) * self.batch_gpu] for i in range(self.num_chunks)]

    def _chunks(self, t):
        if t is None:
            return [None] * self.num_chunks
        return [t[i * self.batch_gpu:(i + 1) * self.batch_gpu] for i in range(self.num_chunks)]

    def _gain(self, phase, gain):
        """The loss gain of a phase, times its loss scale under mixed precision (a tensor then)."""
        ls = self.loss_scales.get(phase)
        return gain if ls is None else ls.value() * gain

    def _apply(self, phase, opt, grads, variables):
        """Replica context: all-reduce (SUM) the accumulated gradients, then [loss scaling: check, unscale] sanitise
        (NaN -> 0, ±inf -> ±1e5) and apply (the optimiser does not reduce again)."""
        # Variables without a gradient in this phase (e.g. D's output bias under R1) are skipped, like torch's Adam.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
        ctx = tf.distribute.get_replica_context()
        if self.strategy.num_replicas_in_sync > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        ls = self.loss_scales.get(phase)
        if ls is None:
            opt.apply_gradients(zip(sanitize_gradients(grads), variables))
            return
        finite = all_finite(grads)                       # the same on every replica: the gradients are reduced
        grads = sanitize_gradients(ls.unscale(grads))    # (a no-op when finite; otherwise the step is skipped)

        def merged(strategy, finite, grads):
            # The skip is a cond in cross-replica context around a per-replica apply (a cond whose branch calls
            # merge_call, as apply_gradients does, is not allowed in replica context).
            finite = strategy.experimental_local_results(finite)[0]

            def apply_fn():
                strategy.extended.call_for_each_replica(
                    lambda g: opt.apply_gradients(zip(g, variables)), args=(grads,))
                return tf.constant(True)

            tf.cond(finite, apply_fn, lambda: tf.constant(False))
            ls.update(finite)

        ctx.merge_call(merged, args=(finite, grads))

    # Each chunk's gradient is that of sum(per-sample loss) / global batch: the loss module returns gradients of
    # ``mean_chunk(loss) * gain``, so gain = chunk / global batch (times the lazy interval for regularisers).

    def _g_main(self, reals, labels, step, cur_nimg):
        zs = self._noise(step, PHASE_SEEDS["Gmain"])
        cs = self._gen_labels(labels, step, PHASE_SEEDS["Gmain"])
        grads, logits_all = None, []
        for z, c in zip(zs, cs):
            _, g, st = self.loss.gmain_grads(z, c, cur_nimg, self._g_tf,
                                             gain=self._gain("Gmain", self.batch_gpu / self.batch_size))
            grads = _accumulate(grads, g)
            logits_all.append(tf.cast(st["Loss/scores/fake"], tf.float32))
        self._apply("Gmain", self.G_opt, grads, self._g_vars)
        logits = tf.concat(logits_all, 0)                                                 # [b, 1]
        return {"Loss/scores/fake": _stat(logits), "Loss/signs/fake": _stat(tf.sign(logits)),
                "Loss/G/loss": _stat(tf.nn.softplus(-logits))}

    def _d_main(self, reals, labels, step, cur_nimg):
        zs = self._noise(step, PHASE_SEEDS["Dmain"])
        cs = self._gen_labels(labels, step, PHASE_SEEDS["Dmain"])
        xs, rcs = self._chunks(reals), self._chunks(labels if self.c_dim else None)
        grads, fake, real = None, [], []
        for z, c, x, rc in zip(zs, cs, xs, rcs):
            _, g, st = self.loss.dmain_grads(x, rc, z, c, cur_nimg, self._d_tf,
                                             gain=self._gain("Dmain", self.batch_gpu / self.batch_size))
            grads = _accumulate(grads, g)
            fake.append(tf.cast(st["Loss/scores/fake"], tf.float32))
            real.append(tf.cast(st["Loss/scores/real"], tf.float32))
        self._apply("Dmain", self.D_opt, grads, self._d_vars)
        lf, lr = tf.concat(fake, 0), tf.concat(real, 0)                                   # [b, 1]
        self.ada.accumulate(lr)
        return {"Loss/scores/fake": _stat(lf), "Loss/signs/fake": _stat(tf.sign(lf)),
                "Loss/scores/real": _stat(lr), "Loss/signs/real": _stat(tf.sign(lr)),
                "Loss/D/loss": _stat(tf.nn.softplus(lf) + tf.nn.softplus(-lr))}

    def _d_reg(self, reals, labels, step, cur_nimg):
        xs, rcs = self._chunks(reals), self._chunks(labels if self.c_dim else None)
        gain = self._gain("Dreg", self.D_reg_interval * self.batch_gpu / self.batch_size)
        grads, real, pen, reg = None, [], [], []
        for x, rc in zip(xs, rcs):
            _, g, st = self.loss.dreg_grads(x, rc, cur_nimg, gain=gain, variables=self._d_tf)
            grads = _accumulate(grads, g)
            real.append(tf.cast(st["Loss/scores/real"], tf.float32))
            pen.append(tf.cast(st["Loss/r1_penalty"], tf.float32))
            reg.append(tf.cast(st["Loss/D/reg"], tf.float32))
        self._apply("Dreg", self.D_opt, grads, self._d_vars)
        lr = tf.concat(real, 0)
        self.ada.accumulate(lr)
        return {"Loss/scores/real": _stat(lr), "Loss/signs/real": _stat(tf.sign(lr)),
                "Loss/r1_penalty": _stat(tf.concat(pen, 0)), "Loss/D/reg": _stat(tf.concat(reg, 0))}

    def _g_reg(self, reals, labels, step, cur_nimg):
        """Path-length regularisation (stylegan2 config only; off for StyleGAN3)."""
        zs = self._noise(step, PHASE_SEEDS["Greg"])
        cs = self._gen_labels(labels, step, PHASE_SEEDS["Greg"])
        gain = self._gain("Greg", self.G_reg_interval * self.batch_gpu / self.batch_size)
        grads, pen, reg = None, [], []
        for z, c in zip(zs, cs):
            _, g, st = self.loss.greg_grads(z, c, gain=gain, variables=self._g_tf)
            grads = _accumulate(grads, g)
            pen.append(tf.cast(st["Loss/pl_penalty"], tf.float32))
            reg.append(tf.cast(st["Loss/G/reg"], tf.float32))
        self._apply("Greg", self.G_opt, grads, self._g_vars)
        return {"Loss/pl_penalty": _stat(tf.concat(pen, 0)), "Loss/G/reg": _stat(tf.concat(reg, 0))}

    # -- data ----------------------------------------------------------------------------------------------------

    def make_iterator(self):
        """Distributed iterator positioned at ``self.step`` (the data order is a function of seed and step)."""
        start_step = self.step
        seed = self.opts["random_seed"]
        B = self.batch_size

        def ds_fn(ctx):
            per = ctx.get_per_replica_batch_size(B)
            skip = start_step * ctx.num_replicas_in_sync // ctx.num_input_pipelines
            return self.dataset_fn(ctx, per, seed, skip)

        self.dataset = self.strategy.distribute_datasets_from_function(ds_fn)
        self.iterator = iter(self.dataset)
        return self.iterator

    # -- one iteration --------------------------------------------------------------------------------------------

    def train_iteration(self, collector=None, timings=None):
        """Run Gmain, Dmain, [Dreg], EMA, bookkeeping and ADA; returns the phase stats as Python floats."""
        if not self._built:
            raise RuntimeError("call build() first")
        o = self.opts
        t0 = time.perf_counter()
        reals, labels = next(self.iterator)
        step = tf.constant(self.step, tf.int64)
        nimg = tf.constant(self.cur_nimg, tf.int64)
        phases = [("Gmain", self.g_step)]
        if self.G_reg_interval and self.step % self.G_reg_interval == 0:
            phases.append(("Greg", self.greg_step))
        phases.append(("Dmain", self.d_step))
        if self.step % self.D_reg_interval == 0 and self.r1_gamma > 0:
            phases.append(("Dreg", self.dreg_step))
        results = {}
        for name, fn in phases:
            t = time.perf_counter()
            res = {k: v.numpy() for k, v in fn(reals, labels, step, nimg).items()}
            dt = time.perf_counter() - t
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + dt
            bad = [k for k, v in res.items() if not np.all(np.isfinite(v))]
            if bad:
                raise NonFiniteLossError(
                    f"non-finite value in {', '.join(bad)} during phase {name} at step {self.step} "
                    f"(kimg {self.cur_nimg / 1000:.3f}); training stopped")
            if collector is not None:
                for k, (n, s_, sq) in res.items():
                    collector.add(k, n, s_, sq)
            results[name] = res
        t = time.perf_counter()
        beta = ema_beta(self.cur_nimg, self.batch_size, o["ema_kimg"], o["ema_rampup"])
        self.ema_step(tf.constant(beta, tf.float32))
        if timings is not None:
            timings["ema"] = timings.get("ema", 0.0) + time.perf_counter() - t
        self.cur_nimg += self.batch_size
        self.step += 1
        self.ada.step()  # counts the iteration; adjusts p every ada_interval-th (mode 'ada')
        if collector is not None:
            for phase, ls in self.loss_scales.items():
                collector.set(f"Progress/loss_scale/{phase}", float(ls.scale.numpy()))
                collector.set(f"Progress/skipped_steps/{phase}", int(ls.skipped.numpy()))
        if timings is not None:
            timings["iteration"] = timings.get("iteration", 0.0) + time.perf_counter() - t0
        return results

    @property
    def augment_p(self):
        if self.augment_pipe is None:
            return 0.0
        return float(tf.convert_to_tensor(self.augment_pipe.p).numpy())

    # -- state <-> checkpoint --------------------------------------------------------------------------------------

    def checkpoint_objects(self):
        objs = dict(G=self.G, D=self.D, G_ema=self.G_ema, G_opt=self.G_opt, D_opt=self.D_opt, **self.state)
        objs["pl_mean"] = self.loss.pl_mean
        objs["loss_rng"] = self.loss.rng
        objs["ada"] = self.ada
        for phase, ls in self.loss_scales.items():
            objs[f"loss_scale_{phase}"] = ls
        if self.augment_pipe is not None:
            objs["augment_p"] = self.augment_pipe.p
            if isinstance(getattr(self.augment_pipe, "rng", None), tf.random.Generator):
                objs["augment_rng"] = self.augment_pipe.rng
        return objs

    def push_state(self):
        """Python loop state -> checkpointed variables."""
        st = self.state
        st["step"].assign(self.step)
        st["cur_nimg"].assign(self.cur_nimg)
        st["cur_tick"].assign(self.cur_tick)
        st["tick_start_nimg"].assign(self.tick_start_nimg)

    def pull_state(self):
        """Checkpointed variables -> Python loop state (after a restore)."""
        st = self.state
        if int(st["seed"].numpy()) != self.opts["random_seed"]:
            raise ValueError(f"checkpoint was written with --seed={int(st['seed'].numpy())}, the options say "
                             f"{self.opts['random_seed']}")
        if int(st["batch_size"].numpy()) != self.batch_size:
            raise ValueError(f"checkpoint was written with --batch={int(st['batch_size'].numpy())}, the options say "
                             f"{self.batch_size}; the data order and EMA would not continue exactly")
        self.step = int(st["step"].numpy())
        self.cur_nimg = int(st["cur_nimg"].numpy())
        self.cur_tick = int(st["cur_tick"].numpy())
        self.tick_start_nimg = int(st["tick_start_nimg"].numpy())

    def load_weights(self, path):
        """``--resume=PKL|NPZ``: copy G, D, G_ema weights (buffers included) from a network file."""
        from afgan_tf import convert
        nets = convert.load_network(path)
        copied = []
        for key, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            src = nets.get(key) if isinstance(nets, dict) else None
            if src is None:
                continue
            sd = src.original_state_dict() if hasattr(src, "original_state_dict") else src
            net.load_original_state_dict(sd, strict=False)
            copied.append(key)
        if not copied:
            raise ValueError(f"--resume={path}: the file holds none of G, D, G_ema")
        return copied

    def generate_grid(self, z, c=None, batch=None):
        """G_ema images for a fixed latent grid (numpy, [N, R, R, C])."""
        batch = batch or self.batch_gpu
        if not hasattr(self, "_gen_fn"):
            self._gen_fn = tf.function(lambda z, c: self.G_ema(z, c))
        out = []
        for i in range(0, len(z), batch):
            zc = tf.constant(z[i:i + batch], tf.float32)
            cc = None if c is None else tf.constant(c[i:i + batch], tf.float32)
            out.append(self._gen_fn(zc, cc).numpy())
        return np.concatenate(out, 0)


# ----------------------------------------------------------------------------------------------------------------
# Defaults wired to the rest of the package.


def _default_generator(kwargs):
    """StyleGAN3 generator, or the StyleGAN2 one for --cfg=stylegan2 (recognised by its kwargs, which
    ``networks.presets.generator_kwargs`` gives the original's ``fused_modconv_default``)."""
    if "fused_modconv_default" in kwargs or "architecture" in kwargs:
        from afgan_tf.networks.stylegan2 import Generator
    else:
        from afgan_tf.networks import Generator
    return Generator(**kwargs)


def _default_discriminator(kwargs):
    from afgan_tf.networks.discriminator import Discriminator
    return Discriminator(**kwargs)


def _default_augment_pipe(opts):
    from afgan_tf.training import augment
    return augment.AugmentPipe(p=0.0, seed=opts["random_seed"] + 1, **augment.BGC)


def array_dataset_fn(images, labels=None, mirror=False, shuffle=True):
    """dataset_fn over in-memory images (uint8 or float in [-1, 1], NHWC) — small datasets and tests.

    The order is a function of the seed only: a seeded shuffle per epoch over the (optionally x-flipped) set,
    sharded across input pipelines, batched, with the first ``skip_batches`` batches skipped.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 127.5 - 1
    images = images.astype(np.float32)
    if labels is None:
        labels = np.zeros([len(images), 0], np.float32)
    labels = np.asarray(labels, np.float32)
    if mirror:
        images = np.concatenate([images, images[:, :, ::-1]], 0)
        labels = np.concatenate([labels, labels], 0)

    def fn(ctx, per_replica_batch, seed, skip_batches):
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
        if ctx.num_input_pipelines > 1:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        ds = ds.batch(per_replica_batch, drop_remainder=True)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return ds.prefetch(2)

    return fn


# ----------------------------------------------------------------------------------------------------------------
# The full run with bookkeeping.


class _StopRequest:
    """SIGTERM/SIGINT -> finish the current iteration, save a checkpoint, exit."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum

    def restore(self):
        for sig, h in self._old.items():
            signal.signal(sig, h)


def run_training(trainer, run_dir, *, resume=None, is_chief=True, ckpt_ticks=1, ckpt_keep=3,
                 max_grid_images=64, snapshot_fn=None, metrics_fn=None, real_grid=None, tensorboard=True,
                 stop_after_steps=None, progress=None):
    """Train until ``total_kimg`` with the bookkeeping of spec §5.7; returns a status dict.

    Args:
      trainer: a built :class:`Trainer`.
      run_dir: the run directory (created by the caller with training_options.json).
      resume: ``checkpoint.ResumeSpec`` or None.
      is_chief: only the chief writes logs, grids and snapshots; every worker writes checkpoints (non-chief ones
        into a private temp directory, as MultiWorkerMirroredStrategy requires).
      ckpt_ticks: save a checkpoint every this many ticks (and at the end / on SIGTERM).
      snapshot_fn: ``(path, trainer) -> None`` writes ``network-snapshot-*.npz`` (None: skipped).
      metrics_fn: ``(name, trainer, run_dir) -> dict`` for each name in ``opts['metrics']``.
      real_grid: ``(images, labels)`` of the real grid for ``reals.png`` (None: skipped).
      stop_after_steps: stop (with a checkpoint) after this many iterations of this process (testing).
      progress: draw a progress bar (default: when stdout is a terminal).
    """
    o = trainer.opts
    strategy = trainer.strategy
    log = trainer.log
    if progress is None:
        progress = sys.stdout.isatty()
    ckpt_dir = os.path.join(run_dir, CKPT_DIR)
    if not is_chief:
        import tempfile
        ckpt_dir = tempfile.mkdtemp(prefix="afgan-ckpt-worker-")
    ckpt = TrainCheckpoint(ckpt_dir, max_to_keep=ckpt_keep, **trainer.checkpoint_objects())

    # Resume.
    weights_only = False
    if resume is not None and resume.kind in ("full", "inplace") and resume.path:
        ckpt.restore(resume.path)
        trainer.pull_state()
        log(f"Resumed from checkpoint {resume.path}: step {trainer.step}, kimg {trainer.cur_nimg / 1000:.3f}, "
            f"augment p {trainer.augment_p:.4f}")
    elif resume is not None and resume.kind == "weights":
        try:
            copied = trainer.load_weights(resume.path)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise ResumeError(f"--resume={resume.path}: {e}") from e
        weights_only = True
        log(f"Loaded weights of {', '.join(copied)} from {resume.path} (optimisers, kimg and p start fresh)")

    writer = stats_lib.StatsWriter(run_dir, tensorboard=tensorboard) if is_chief else None
    gw, gh = stats_lib.grid_size(o["G_kwargs"]["img_resolution"], max_images=max_grid_images)
    grid_rng = np.random.RandomState(o["random_seed"] + 123)
    grid_z = grid_rng.randn(gw * gh, trainer.G.z_dim).astype(np.float32)
    grid_c = None
    if trainer.c_dim and real_grid is not None and real_grid[1] is not None:
        grid_c = np.resize(np.asarray(real_grid[1], np.float32), [gw * gh, trainer.c_dim])
    if is_chief and trainer.step == 0:
        if real_grid is not None:
            imgs = np.asarray(real_grid[0])
            imgs = np.resize(imgs, [gw * gh] + list(imgs.shape[1:]))
            stats_lib.save_image_grid(imgs, os.path.join(run_dir, "reals.png"), gw, gh,
                                      drange=(0, 255) if imgs.dtype == np.uint8 else (-1, 1))
        grid = stats_lib.save_image_grid(trainer.generate_grid(grid_z, grid_c), os.path.join(run_dir, "fakes_init.png"),
                                         gw, gh)
        writer.image("Images/fakes", grid, 0)

    trainer.make_iterator()
    stop = _StopRequest().install()
    total_nimg = int(round(o["total_kimg"] * 1000))
    tick_nimg = o["kimg_per_tick"] * 1000
    start_time = time.time()
    tick_start_time = start_time
    maintenance_time = 0.0
    collector = stats_lib.Collector()
    timings = {}
    steps_this_process = 0
    status = dict(done=False, interrupted=None, step=None, kimg=None, error=None)
    start_nimg = trainer.cur_nimg
    tick_nimg_start_proc = trainer.cur_nimg
    last_ckpt = ckpt.latest
    any_stop = _make_agree_fn(strategy)
    log(f"Training for {o['total_kimg']:g} kimg (batch {o['batch_size']}, {strategy.num_replicas_in_sync} "
        f"replica(s), batch_gpu {o['batch_gpu']}) ...")

    def save_ckpt(reason):
        nonlocal last_ckpt
        trainer.push_state()
        path = ckpt.save(trainer.step)
        if is_chief:
            verify_checkpoint(path)
            log(f"Saved checkpoint {path} ({reason})")
        last_ckpt = path
        return path

    try:
        done = trainer.cur_nimg >= total_nimg
        while not done:
            trainer.train_iteration(collector, timings)
            steps_this_process += 1
            done = trainer.cur_nimg >= total_nimg
            if progress and is_chief:
                bar = stats_lib.progress_bar(trainer.cur_nimg - trainer.tick_start_nimg, tick_nimg,
                                             prefix=f"tick {trainer.cur_tick} ")
                sys.__stdout__.write("\r" + bar)
                sys.__stdout__.flush()
            want_stop = stop.signum is not None or (stop_after_steps is not None
                                                   and steps_this_process >= stop_after_steps)
            if any_stop(want_stop):
                status["interrupted"] = signal.Signals(stop.signum).name if stop.signum else "stop_after_steps"
                save_ckpt(f"interrupted by {status['interrupted']}")
                break
            if (not done) and trainer.cur_tick != 0 and trainer.cur_nimg < trainer.tick_start_nimg + tick_nimg:
                continue
            # ---- tick end ----
            if progress and is_chief:
                sys.__stdout__.write("\r" + " " * 60 + "\r")
            tick_end_time = time.time()
            tick_sec = tick_end_time - tick_start_time
            tick_kimg = (trainer.cur_nimg - trainer.tick_start_nimg) / 1000
            total_sec = tick_end_time - start_time
            sec_per_kimg = tick_sec / max(tick_kimg, 1e-8)
            proc_kimg = (trainer.cur_nimg - start_nimg) / 1000
            eta = (total_nimg - trainer.cur_nimg) / 1000 * (total_sec / max(proc_kimg, 1e-8)) if proc_kimg else -1
            cpu_gb, _ = stats_lib.memory_gb()
            gpu_gb = stats_lib.gpu_memory_gb()
            p = trainer.augment_p
            line = stats_lib.tick_line(trainer.cur_tick, trainer.cur_nimg / 1000, total_sec, tick_sec, sec_per_kimg,
                                       tick_kimg * 1000 / max(tick_sec, 1e-8), maintenance_time, cpu_gb, gpu_gb, p,
                                       eta)
            if is_chief:
                log(line)
            for name in ("Gmain", "Dmain", "Dreg", "ema"):
                if name in timings:
                    collector.set(f"Timing/{name}", timings[name])
            collector.set("Progress/tick", trainer.cur_tick)
            collector.set("Progress/kimg", trainer.cur_nimg / 1000)
            collector.set("Progress/augment", p)
            collector.set("Timing/total_sec", total_sec)
            collector.set("Timing/sec_per_tick", tick_sec)
            collector.set("Timing/sec_per_kimg", sec_per_kimg)
            collector.set("Timing/maintenance_sec", maintenance_time)
            collector.set("Timing/total_hours", total_sec / 3600)
            collector.set("Timing/total_days", total_sec / 86400)
            collector.set("Resources/cpu_mem_gb", cpu_gb)
            if not math.isnan(gpu_gb):
                collector.set("Resources/peak_gpu_mem_gb", gpu_gb)
            maint_start = time.time()
            snap = done or trainer.cur_tick % o["network_snapshot_ticks"] == 0
            kimg_i = trainer.cur_nimg // 1000
            if is_chief and (done or trainer.cur_tick % o["image_snapshot_ticks"] == 0):
                grid = stats_lib.save_image_grid(trainer.generate_grid(grid_z, grid_c),
                                                 os.path.join(run_dir, f"fakes{kimg_i:06d}.png"), gw, gh)
                writer.image("Images/fakes", grid, trainer.cur_nimg / 1000)
            if is_chief and snap and snapshot_fn is not None:
                snapshot_fn(os.path.join(run_dir, f"network-snapshot-{kimg_i:06d}.npz"), trainer)
            if is_chief and snap and o["metrics"]:  # metrics are not collective: the chief computes them on G_ema
                for name in o["metrics"]:
                    if metrics_fn is None:
                        raise RuntimeError("--metrics given but no metric implementation is available")
                    result = metrics_fn(name, trainer, run_dir)
                    if result is not None:
                        rec = dict(result, snapshot_kimg=trainer.cur_nimg / 1000)
                        with open(os.path.join(run_dir, f"metric-{name}.jsonl"), "a") as fh:
                            fh.write(json.dumps(rec) + "\n")
                        for k, v in (result.get("results") or {}).items():
                            writer.scalar(f"Metrics/{k}", v, trainer.cur_nimg / 1000)
            if is_chief:
                writer.write(collector.as_dict(), trainer.cur_nimg / 1000)
            collector.reset()
            timings.clear()
            trainer.cur_tick += 1
            trainer.tick_start_nimg = trainer.cur_nimg
            if done or snap or (ckpt_ticks and trainer.cur_tick % ckpt_ticks == 0):
                save_ckpt("end of training" if done else f"tick {trainer.cur_tick - 1}")
            maintenance_time = time.time() - maint_start
            tick_start_time = time.time()
        status["done"] = done and status["interrupted"] is None
    except NonFiniteLossError as e:
        status["error"] = str(e)
        log(f"ERROR: {e}. The last good checkpoint is kept: {last_ckpt or '(none written yet)'}")
    finally:
        stop.restore()
        if writer is not None:
            writer.close()
    status.update(step=trainer.step, kimg=trainer.cur_nimg / 1000, checkpoint=last_ckpt,
                  augment_p=trainer.augment_p)
    if status["done"] and is_chief:
        log(f"Training done: {status['kimg']:.3f} kimg, {trainer.step} iterations, last checkpoint {last_ckpt}")
    return status


def _make_agree_fn(strategy):
    """``flag -> any(flag over all workers)``; a collective only for multi-worker runs."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return lambda flag: bool(flag)

    @tf.function
    def agree(flag):
        per_replica = strategy.run(lambda f: tf.identity(f) * 1.0, args=(flag,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda flag: bool(agree(tf.constant(1.0 if flag else 0.0)).numpy() > 0)
