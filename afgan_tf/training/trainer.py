"""One StyleGAN training iteration on tf.distribute (the original's ``training_loop`` inner loop).

``Trainer.train_iteration``:
  1. fetch one real batch from the distributed tf.data iterator (shared by all phases);
  2. run the phases of :data:`PHASES` due at this step (``Gmain``, ``Greg`` every ``G_reg_interval`` when the path
     length is on, ``Dmain``, ``Dreg`` every ``D_reg_interval`` incl. the first, R1 on) — each one compiled
     ``tf.function`` running ``strategy.run`` over the replicas;
  3. G_ema update (``ema.EmaUpdater``, beta in float64), ``cur_nimg += batch``, ADA (``augment.AdaController``).

Inside a phase (per replica): the per-replica batch is split into ``batch_gpu`` chunks; each chunk's gradient is that
of ``mean_chunk(loss) * gain`` (gain 1, or the interval for a lazy regulariser) and the chunks' gradients are
summed; the sums are all-reduced (SUM) and divided by the replica count — the original's scale (sum of chunk means,
averaged over GPUs); then non-finite entries are sanitised (NaN -> 0, ±inf -> ±1e5) and the optimiser
(``optim.TorchAdam``: torch's Adam) applies them. With mixed precision each phase has a dynamic loss scale
(``loss_scale.py``) and a step with non-finite reduced gradients is skipped.

Random numbers (z, label permutations) are stateless functions of ``(seed, step, phase)`` over the *global* batch,
of which each replica takes its slice, so a run does not depend on the replica count.

The seam (for debugging and parity checks): ``latents(step, phase) -> (z, c)`` replaces the generated latents of the
global batch, and ``observer(record)`` receives after each phase the loss, the per-sample values and the reduced
gradients given to the optimiser (:meth:`Trainer.train_iteration`). Without an observer the compiled steps return
only the tick statistics.
"""
import copy
import time
import numpy as np
import tensorflow as tf

from afgan_tf.training.augment import AdaController
from afgan_tf.training.distribute import per_replica_slices
from afgan_tf.training.ema import EmaUpdater
from afgan_tf.training.loss import phase_schedule, sanitize_gradients
from afgan_tf.training.loss_scale import LossScale, all_finite
from afgan_tf.networks.layers import tf_variable
from afgan_tf.training.optim import make_optimizer
from afgan_tf.training.options import construct_class
from afgan_tf.training.phases import PHASE_SEEDS, PHASES, accumulate, per_sample_stats, replica_slice
from afgan_tf.training.trainer_state import TrainerState


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/Inf; training stopped."""


def _preload_custom_ops():
    """Load the compiled op library eagerly: a first load inside a tf.function trace fails and would leave the
    whole run on the slower reference ops."""
    try:
        from afgan_tf.ops import _custom_ops
        _custom_ops.load_error()
    except ImportError:
        pass


def _local(strategy, x):
    """A per-replica value -> list of numpy arrays, one per replica of this worker."""
    return [t.numpy() for t in strategy.experimental_local_results(x)]


class Trainer(TrainerState):
    """Networks, optimisers, phase steps and loop state for one training run.

    Args:
      config: the :class:`~afgan_tf.training.options.TrainConfig`.
      strategy: a ``tf.distribute.Strategy``.
      dataset_fn: ``(global_batch, seed, skip_batches) -> tf.data.Dataset`` of global batches
        ``(images float32 NHWC in [-1, 1] [global_batch, ...], labels [global_batch, c_dim])``, its order a function
        of the seed, the first ``skip_batches`` batches skipped; the trainer slices it per replica.
      make_generator / make_discriminator: ``kwargs -> Keras model`` (default: ``afgan_tf.networks``).
      make_augment_pipe: ``config -> augment pipe or None`` (default: ``afgan_tf.training.augment``).
      latents: optional ``(step, phase) -> (z [batch, z_dim], c [batch, c_dim] or None)`` for the global batch
        (the seam; default: stateless normal z of ``(seed, step, phase)``, c a permutation of the real labels).
      observer: optional ``record -> None`` called after each phase (see :meth:`train_iteration`).
      log: print-like function.
    """

    def __init__(self, config, strategy, *, dataset_fn, make_generator=None, make_discriminator=None,
                 make_augment_pipe=None, latents=None, observer=None, log=print):
        self.config = config
        self.strategy = strategy
        self.dataset_fn = dataset_fn
        self.make_generator = make_generator or default_generator(config)
        self.make_discriminator = make_discriminator or default_discriminator(config)
        self.make_augment_pipe = make_augment_pipe or _default_augment_pipe
        self.latents = latents
        self.observer = observer
        self.log = log
        self.batch_size = config.batch_size
        self.batch_gpu = config.batch_gpu
        self.per_replica = config.per_replica_batch
        self.num_chunks = config.num_accumulation
        self.c_dim = config.G_kwargs.get("c_dim", 0)
        self.r1_gamma = config.loss_kwargs["r1_gamma"]
        self.D_reg_interval = config.D_reg_interval
        if strategy.num_replicas_in_sync * self.per_replica != self.batch_size:
            raise ValueError(f"batch {self.batch_size} != replicas {strategy.num_replicas_in_sync} × per-replica "
                             f"batch {self.per_replica}; resolve the options with the strategy's replica count")
        self.G_reg_interval = config.G_reg_interval if config.loss_kwargs.get("pl_weight", 0) else None
        self.step = 0
        self.cur_nimg = 0
        self.cur_tick = 0
        self.tick_start_nimg = 0
        self._built = False

    # -- construction -------------------------------------------------------------------------------------------

    def build(self):
        """Create networks, optimisers, state variables and compile the phase steps (inside strategy.scope())."""
        o = self.config
        import keras
        _preload_custom_ops()
        keras.utils.set_random_seed(o.random_seed)   # identical start on every worker and after a restart
        with self.strategy.scope():
            self.G = self.make_generator(copy.deepcopy(o.G_kwargs))
            self.D = self.make_discriminator(copy.deepcopy(o.D_kwargs))
            self.G_ema = self.make_generator(copy.deepcopy(o.G_kwargs))
            self.ema = EmaUpdater(self.G_ema, self.G, self.batch_size, o.ema_kimg, o.ema_rampup)
            for ve, v, _ in self.ema.pairs:
                ve.assign(v)
            self.augment_pipe = self.make_augment_pipe(o) if o.aug != "noaug" else None
            if self.augment_pipe is not None and o.aug == "fixed":
                self.augment_pipe.p.assign(o.augment_p)
            lk = dict(o.loss_kwargs)
            self.loss = construct_class(o.loss_class, self.G, self.D,
                                        self.augment_pipe, **lk, seed=o.random_seed + 2)
            self._vars = dict(G=self.G.trainable_variables, D=self.D.trainable_variables)
            if not self._vars["G"] or not self._vars["D"]:
                raise ValueError("G and D must have trainable variables")
            self.G_opt = make_optimizer(self._vars["G"], **o.G_opt_kwargs, name="G_opt")
            self.D_opt = make_optimizer(self._vars["D"], **o.D_opt_kwargs, name="D_opt")
            i64 = dict(dtype=tf.int64, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.state = dict(
                step=tf.Variable(0, name="step", **i64), cur_nimg=tf.Variable(0, name="cur_nimg", **i64),
                cur_tick=tf.Variable(0, name="cur_tick", **i64),
                tick_start_nimg=tf.Variable(0, name="tick_start_nimg", **i64),
                seed=tf.Variable(o.random_seed, name="seed", **i64),
                batch_size=tf.Variable(self.batch_size, name="batch_size", **i64),
            )
            ada_mode = o.aug if self.augment_pipe is not None else "noaug"
            self.ada = AdaController(None if self.augment_pipe is None else self.augment_pipe.p,
                                     target=o.ada_target if o.ada_target is not None else 0.6,
                                     interval=o.ada_interval, kimg=o.ada_kimg, batch=self.batch_size,
                                     mode=ada_mode, name="ada")
            self.loss_scales = {}
            if o.loss_scaling:
                for phase in ("Gmain", "Dmain", "Dreg") + (("Greg",) if self.G_reg_interval else ()):
                    self.loss_scales[phase] = LossScale(**o.loss_scale_kwargs, name=f"loss_scale_{phase}")
        self._opt = dict(G=self.G_opt, D=self.D_opt)
        # The loss module's tapes watch the backing tf.Variables (tape.watch refuses Keras 3 Variable wrappers).
        self._watch = {k: [tf_variable(v) for v in vs] for k, vs in self._vars.items()}
        self._interval = dict(Gmain=None, Dmain=None, Greg=self.G_reg_interval, Dreg=self.D_reg_interval)
        if self.loss_scales:
            self.log(f"Mixed precision: float16 layers, dynamic loss scaling of {', '.join(self.loss_scales)} "
                     f"(initial scale {float(next(iter(self.loss_scales.values())).scale.numpy()):g})")
        self._obs_index = {}
        self.steps = {name: self._compile(name) for name in PHASES}
        self.ema_step = tf.function(self.ema.apply_beta)
        self._built = True
        return self

    def _compile(self, phase):
        s = self.strategy
        observe = self.observer is not None

        @tf.function
        def step_fn(reals, labels, step, cur_nimg, z=None, c=None):
            out = s.run(self._replica_phase, args=(phase, reals, labels, step, cur_nimg, z, c, observe))
            res = dict(stats={k: s.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out["stats"].items()})
            if observe:
                res["obs"] = out["obs"]
            return res

        return step_fn

    # -- per-replica phase --------------------------------------------------------------------------------------

    def _inputs(self, phase, reals, labels, step, z, c):
        """This replica's chunks of (reals, real labels, z, generated-image labels)."""
        spec, nc, bg = PHASES[phase], self.num_chunks, self.batch_gpu

        def chunks(t):
            return [None] * nc if t is None else [t[i * bg:(i + 1) * bg] for i in range(nc)]

        xs = chunks(reals if spec.uses_reals else None)
        rcs = chunks(labels if spec.uses_reals and self.c_dim else None)
        zs = cs = [None] * nc
        if spec.uses_z:
            if z is None:
                seed = tf.stack([tf.cast(self.config.random_seed, tf.int64),
                                 tf.cast(step, tf.int64) * 8 + PHASE_SEEDS[phase]])
                z = tf.random.stateless_normal([self.batch_size, self.G.z_dim], seed=seed)     # [B, z_dim]
            zs = chunks(replica_slice(tf.cast(z, tf.float32), self.per_replica))
            if c is not None:
                cs = chunks(replica_slice(tf.cast(c, tf.float32), self.per_replica))
            elif self.c_dim:   # a stateless random permutation of the real labels
                seed = tf.stack([tf.cast(self.config.random_seed, tf.int64),
                                 tf.cast(step, tf.int64) * 8 + PHASE_SEEDS[phase] + 4])
                perm = tf.argsort(tf.random.stateless_uniform([self.per_replica], seed=seed))
                cs = chunks(tf.gather(tf.cast(labels, tf.float32), perm))
        return xs, rcs, zs, cs

    def _replica_phase(self, phase, reals, labels, step, cur_nimg, z, c, observe):
        spec = PHASES[phase]
        gain = float(self._interval[phase]) if spec.reg else 1.0
        ls = self.loss_scales.get(phase)
        scaled_gain = gain if ls is None else ls.value() * gain
        grads, losses, values = None, [], {}
        for x, rc, zc, cc in zip(*self._inputs(phase, reals, labels, step, z, c)):
            loss, g, st = spec.grads(self.loss, x, rc, zc, cc, cur_nimg, self._watch[spec.net], scaled_gain)
            grads = accumulate(grads, g)
            loss = tf.cast(loss, tf.float32)
            losses.append(loss / ls.value() if ls is not None and spec.loss_has_gain else
                          (loss if spec.loss_has_gain else loss * gain))
            for k, v in spec.per_sample(st).items():
                values.setdefault(k, []).append(tf.cast(v, tf.float32))
        final = self._apply(phase, self._opt[spec.net], grads, self._vars[spec.net])
        values = {k: tf.concat(v, 0) for k, v in values.items()}
        if "Loss/scores/real" in values:
            self.ada.accumulate(values["Loss/scores/real"])
        out = dict(stats=per_sample_stats(values))
        if observe:
            self._obs_index[phase] = [i for i, g in enumerate(final) if g is not None]
            out["obs"] = dict(loss=tf.add_n(losses), values=values, grads=[g for g in final if g is not None])
        return out

    def _apply(self, phase, opt, grads, variables):
        """Replica context: all-reduce (SUM) the accumulated gradients and divide by the replica count (the
        original's scale), [loss scaling: check, unscale], sanitise, apply. Returns the applied gradients
        (None where a variable had none: it is skipped, like torch's Adam skips ``grad is None``)."""
        idx = [i for i, g in enumerate(grads) if g is not None]
        gs, vs = [grads[i] for i in idx], [variables[i] for i in idx]
        ctx = tf.distribute.get_replica_context()
        n = self.strategy.num_replicas_in_sync
        if n > 1:
            gs = ctx.all_reduce(tf.distribute.ReduceOp.SUM, gs)
            gs = [g / tf.cast(n, g.dtype) for g in gs]
        ls = self.loss_scales.get(phase)
        if ls is None:
            gs = sanitize_gradients(gs)
            opt.apply(gs, vs)
        else:
            finite = all_finite(gs)                       # the same on every replica: the gradients are reduced
            gs = sanitize_gradients(ls.unscale(gs))       # (a no-op when finite; otherwise the step is skipped)

            def merged(strategy, finite, gs_):
                # The skip is a cond in cross-replica context (a cond whose branch calls merge_call is not allowed
                # in replica context).
                finite = strategy.experimental_local_results(finite)[0]

                def apply_fn():
                    opt.apply(gs_, vs)
                    return tf.constant(True)

                tf.cond(finite, apply_fn, lambda: tf.constant(False))
                ls.update(finite)

            ctx.merge_call(merged, args=(finite, gs))
        out = [None] * len(grads)
        for i, g in zip(idx, gs):
            out[i] = g
        return out

    # -- data ----------------------------------------------------------------------------------------------------

    def make_iterator(self):
        """Distributed iterator positioned at ``self.step``: the global stream of ``dataset_fn`` (a function of seed
        and step) with the first ``step`` global batches skipped, sliced per replica
        (``distribute.per_replica_slices``: the same order for every strategy and worker count)."""
        start_step, seed, B = self.step, self.config.random_seed, self.batch_size

        def ds_fn(ctx):
            return per_replica_slices(self.dataset_fn(B, seed, start_step), ctx, B)

        self.dataset = self.strategy.distribute_datasets_from_function(ds_fn)
        self.iterator = iter(self.dataset)
        return self.iterator

    # -- one iteration --------------------------------------------------------------------------------------------

    def due_phases(self, step):
        """Names of the phases run at ``step`` (the original's order)."""
        out = ["Gmain"]
        if self.G_reg_interval and phase_schedule(step, self.G_reg_interval):
            out.append("Greg")
        out.append("Dmain")
        if self.r1_gamma > 0 and phase_schedule(step, self.D_reg_interval):
            out.append("Dreg")
        return out

    def train_iteration(self, collector=None, timings=None):
        """Run the due phases, EMA, bookkeeping and ADA; returns ``{phase: {stat: [num, sum, sumsq]}}``.

        With an ``observer``, after each phase it is called with a record: ``step``, ``phase``, ``loss`` (the
        objective whose gradients were applied: the sum over chunks of ``mean_chunk(loss) * gain``, averaged over
        replicas), ``values`` (per-sample ``{name: array}`` of this worker's replicas, in global-batch order),
        ``grads`` (the reduced, sanitised gradients given to the optimiser, one per variable, None where the
        variable had none) and ``variables`` (the optimiser's variables, same order); the weights are already
        updated when it is called.
        """
        if not self._built:
            raise RuntimeError("call build() first")
        t0 = time.perf_counter()
        reals, labels = next(self.iterator)
        step = tf.constant(self.step, tf.int64)
        nimg = tf.constant(self.cur_nimg, tf.int64)
        results = {}
        for name in self.due_phases(self.step):
            z = c = None
            if self.latents is not None and PHASES[name].uses_z:
                z, c = self.latents(self.step, name)
                z = tf.constant(np.asarray(z, np.float32))
                c = None if c is None else tf.constant(np.asarray(c, np.float32))
            t = time.perf_counter()
            out = self.steps[name](reals, labels, step, nimg, z, c)
            res = {k: v.numpy() for k, v in out["stats"].items()}
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
            bad = [k for k, v in res.items() if not np.all(np.isfinite(v))]
            if bad:
                raise NonFiniteLossError(
                    f"non-finite value in {', '.join(bad)} during phase {name} at step {self.step} "
                    f"(kimg {self.cur_nimg / 1000:.3f}); training stopped")
            if collector is not None:
                for k, (n, s_, sq) in res.items():
                    collector.add(k, n, s_, sq)
            results[name] = res
            if self.observer is not None:
                self.observer(self._record(name, out["obs"]))
        t = time.perf_counter()
        self.ema_step(tf.constant(self.ema.beta(self.cur_nimg), tf.float32))
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

    def _record(self, phase, obs):
        net = PHASES[phase].net
        grads = [None] * len(self._vars[net])
        for i, g in zip(self._obs_index[phase], obs["grads"]):
            grads[i] = _local(self.strategy, g)[0]
        return dict(step=self.step, phase=phase, loss=float(np.mean(_local(self.strategy, obs["loss"]))),
                    values={k: np.concatenate(_local(self.strategy, v), 0) for k, v in obs["values"].items()},
                    grads=grads, variables=list(self._vars[net]))

    @property
    def augment_p(self):
        if self.augment_pipe is None:
            return 0.0
        return float(tf.convert_to_tensor(self.augment_pipe.p).numpy())

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


def default_generator(config):
    """``kwargs -> generator`` of the class the config names (``G_class``; runs older than the field: the
    generator of ``cfg``, filled in by ``TrainConfig``)."""
    return lambda kwargs: construct_class(config.G_class, **kwargs)


def default_discriminator(config):
    """``kwargs -> discriminator`` of the class the config names (``D_class``)."""
    return lambda kwargs: construct_class(config.D_class, **kwargs)


def _default_augment_pipe(config):
    from afgan_tf.training import augment
    return augment.AugmentPipe(p=0.0, seed=config.random_seed + 1, **augment.BGC)
