"""Tiny stand-in networks and a script entry point for the training-loop tests (no tests in this module).

The stand-ins follow the network contract of docs/DESIGN.md (``G(z, c, update_emas=...)`` -> NHWC images,
``D(img, c)`` -> ``[N, 1]`` logits, attributes ``z_dim``, ``c_dim``, ``img_resolution``, ``img_channels``) and G has
a ``w_avg``-like buffer updated in the D phase (``update_emas=True``), so the loop's buffer handling is exercised.

Run as a script (used by the subprocess tests):
  python tests/test_train_stubs.py RUN_DIR STRATEGY REPLICAS STEPS [--resume] [--batch-gpu=N] [--nan-at=STEP]
      [--stop-at=STEP] [--sigterm-at=STEP] [--sigkill-at=STEP] [--kill-at=stats|checkpoint|saved:STEP] [--kill-in-ckpt=STEP]
      [--snapshots] [--dump-first-batch] [--aug=ada|noaug] [--batch=B] [--tick=KIMG]
It trains the stand-ins on a small synthetic dataset with the real loop and writes ``final.npz`` (all G, D, G_ema
weights + step, kimg, p) into RUN_DIR when it finishes or is interrupted.
"""
import os
import sys

import numpy as np

RES, CH, ZDIM = 8, 3, 16


def make_networks():
    import keras
    import tensorflow as tf

    class StubGenerator(keras.Model):
        def __init__(self, z_dim=ZDIM, w_dim=ZDIM, c_dim=0, img_resolution=RES, img_channels=CH, **kwargs):
            super().__init__()
            self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
            self.img_resolution, self.img_channels = img_resolution, img_channels
            self.num_ws = 1
            self.init_kwargs = dict(z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, img_resolution=img_resolution,
                                    img_channels=img_channels, **kwargs)
            self.map = keras.layers.Dense(w_dim, activation="tanh", name="map")
            self.map.build((None, z_dim))
            self.syn = keras.layers.Dense(img_resolution * img_resolution * img_channels, name="syn")
            self.syn.build((None, w_dim))
            self.w_avg = keras.Variable(np.zeros([w_dim], np.float32), trainable=False, name="w_avg",
                                        aggregation="mean")

        def mapping(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
            w = self.map(z)                                                      # [N, w_dim]
            if update_emas:
                self.w_avg.assign(tf.reduce_mean(w, 0) + (self.w_avg - tf.reduce_mean(w, 0)) * 0.9)
            return (w - 0.1 * self.w_avg)[:, None, :]                            # [N, num_ws=1, w_dim]

        def synthesis(self, ws, update_emas=False):
            x = self.syn(ws[:, 0])                                               # [N, R*R*C]
            return tf.tanh(tf.reshape(x, [-1, self.img_resolution, self.img_resolution, self.img_channels]))

        def call(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
            return self.synthesis(self.mapping(z, c, update_emas=update_emas), update_emas=update_emas)

    class StubDiscriminator(keras.Model):
        def __init__(self, c_dim=0, img_resolution=RES, img_channels=CH, **kwargs):
            super().__init__()
            self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
            self.init_kwargs = dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                    **kwargs)
            self.conv = keras.layers.Conv2D(8, 3, padding="same", activation="softplus", name="conv")
            self.conv.build((None, img_resolution, img_resolution, img_channels))
            self.out = keras.layers.Dense(1, name="out")
            self.out.build((None, img_resolution * img_resolution * 8))

        def call(self, img, c=None):
            x = self.conv(img)                                                   # [N, R, R, 8]
            return self.out(tf.reshape(x, [tf.shape(x)[0], -1]))                 # [N, 1]

    return StubGenerator, StubDiscriminator


class StubAugment:
    """A differentiable stand-in augmentation with a ``p`` variable: brightness shift ``p·0.1`` (deterministic)."""

    def __init__(self):
        import tensorflow as tf
        self.p = tf.Variable(0.0, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                             name="augment_p")

    def __call__(self, img):
        return img + 0.1 * self.p


def dataset_images(n=64, seed=0):
    """Deterministic smooth synthetic images [n, RES, RES, CH] uint8."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:RES, 0:RES] / (RES - 1)
    imgs = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        base = np.stack([a * xx + b * yy, b * xx - c * yy, c * xx + a * yy], -1)
        imgs.append(np.clip((base * 0.5 + 0.5) * 255, 0, 255))
    return np.asarray(imgs, np.uint8)


def make_opts(batch=8, batch_gpu=None, replicas=1, kimg=None, steps=8, aug="noaug", seed=0, tick=None, gamma=0.5):
    from afgan_tf.training.options import resolve_options
    kimg = kimg if kimg is not None else steps * batch / 1000
    o = resolve_options(cfg="stylegan3-t", batch=batch, batch_gpu=batch_gpu, gamma=gamma, num_replicas=replicas,
                        kimg=kimg, tick=tick if tick is not None else 2 * batch / 1000, snap=2, seed=seed, aug=aug,
                        mbstd_group=2, img_resolution=RES, img_channels=CH, dataset_name="stub", cbase=64, cmax=8,
                        deterministic=True)
    o.G_kwargs = dict(z_dim=ZDIM, w_dim=ZDIM, c_dim=0, img_resolution=RES, img_channels=CH)
    o.D_kwargs = dict(c_dim=0, img_resolution=RES, img_channels=CH)
    return o


def make_trainer(opts, strategy, log=print, **kwargs):
    from afgan_tf.training.trainer import Trainer
    from helpers_train import array_dataset_fn
    G, D = make_networks()
    return Trainer(opts, strategy, dataset_fn=array_dataset_fn(dataset_images(), mirror=False),
                   make_generator=lambda kw: G(**kw), make_discriminator=lambda kw: D(**kw),
                   make_augment_pipe=lambda o: StubAugment(), log=log, **kwargs).build()


def weights_of(trainer):
    import tensorflow as tf
    out = {}
    for key, net in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema)):
        for i, v in enumerate(net.weights):
            out[f"{key}/{i}"] = tf.convert_to_tensor(v).numpy()
    return out


def snapshot_fn(path, trainer):
    """Network snapshot of the stand-ins: every weight of G, D, G_ema (+ step), atomically."""
    from afgan_tf.utils import write_atomic
    w = weights_of(trainer)
    w["__nimg"] = np.array(trainer.cur_nimg)
    write_atomic(path, lambda fh: np.savez(fh, **w))
    # tiny runs never reach 1 kimg, so every snapshot has the index 000000: keep each one under its image count too
    write_atomic(os.path.join(os.path.dirname(path), f"network-snapshot-img{trainer.cur_nimg:06d}.npz"),
                 lambda fh: np.savez(fh, **w))


def main(argv):
    run_dir, strategy_kind, replicas, steps = argv[1], argv[2], int(argv[3]), int(argv[4])
    extra = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1") for a in argv[5:])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import signal
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from afgan_tf.training import checkpoint, distribute, session
    from afgan_tf.training.run import run_training
    strategy = distribute.make_strategy(strategy_kind, cpu_replicas=replicas if strategy_kind == "mirrored" else 0)
    task_id, num_workers, is_chief = distribute.worker_info(strategy)
    batch = int(extra.get("batch", 8))
    opts = make_opts(batch=batch, batch_gpu=int(extra["batch-gpu"]) if "batch-gpu" in extra else None,
                     replicas=strategy.num_replicas_in_sync, steps=steps, aug=extra.get("aug", "ada"),
                     tick=float(extra["tick"]) if "tick" in extra else None)
    opts.ada_kimg = 0.1  # large p steps so that p visibly moves in a few iterations
    opts.ada_target = float(extra.get("ada-target", -2.0))  # below any sign mean: p rises every 4 steps
    trainer = make_trainer(opts, strategy)
    os.makedirs(run_dir, exist_ok=True)
    if "dump-first-batch" in extra:    # this worker's replicas' rows of the first global batch
        first = next(trainer.make_iterator())[0]
        np.save(os.path.join(run_dir, f"first-batch-{task_id}.npy"),
                np.concatenate([x.numpy() for x in strategy.experimental_local_results(first)], 0))
    orig = trainer.train_iteration

    def wrapped(*a, **k):
        if "nan-at" in extra and trainer.step == int(extra["nan-at"]):
            trainer.G.weights[0].assign(tf.fill(trainer.G.weights[0].shape, np.float32("nan")))
        out = orig(*a, **k)
        if "sigterm-at" in extra and trainer.step == int(extra["sigterm-at"]):
            os.kill(os.getpid(), signal.SIGTERM)            # a real signal, in the iteration reaching this step
        if "sigkill-at" in extra and trainer.step == int(extra["sigkill-at"]):
            os.kill(os.getpid(), signal.SIGKILL)            # after the iteration, before its tick-end work
        return out
    trainer.train_iteration = wrapped

    def hook(event, tr):                                      # --kill-at=EVENT:STEP -> SIGKILL there
        if "kill-at" in extra and extra["kill-at"] == f"{event}:{tr.step}":
            os.kill(os.getpid(), signal.SIGKILL)
    if "kill-in-ckpt" in extra:                               # SIGKILL inside the checkpoint write of that step
        from tensorflow.python.checkpoint import functional_saver
        merge = functional_saver.gen_io_ops.merge_v2_checkpoints

        def killing_merge(prefixes, prefix, *a, **k):
            if f"ckpt-{extra['kill-in-ckpt']}" in str(prefix.numpy() if hasattr(prefix, "numpy") else prefix):
                os.kill(os.getpid(), signal.SIGKILL)
            return merge(prefixes, prefix, *a, **k)
        functional_saver.gen_io_ops.merge_v2_checkpoints = killing_merge
    resume = session.resume_source(run_dir if "resume" in extra else None, None)
    status = run_training(trainer, run_dir, resume=resume, is_chief=is_chief, tensorboard=False,
                          stop_at_step=int(extra["stop-at"]) if "stop-at" in extra else None, progress=False,
                          snapshot_fn=snapshot_fn if "snapshots" in extra else None, event_hook=hook)
    w = weights_of(trainer)
    w["__step"] = np.array(trainer.step)
    w["__nimg"] = np.array(trainer.cur_nimg)
    w["__p"] = np.array(trainer.augment_p)
    np.savez(os.path.join(run_dir, f"final-{task_id}.npz"), **w)
    print("STATUS", status, flush=True)
    return 0 if status["error"] is None else 3


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main(sys.argv))


def compare_strategies(steps=6, batch=8):
    """Train the stand-ins ``steps`` iterations with the default strategy (batch_gpu = batch) and with
    MirroredStrategy over 2 logical CPUs (batch_gpu = batch/2), from the same initial weights; print the largest
    weight difference as ``MAXDIFF <value>`` and the largest change from the start as ``MAXCHANGE <value>``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from afgan_tf.training import distribute
    mirrored = distribute.make_strategy("mirrored", cpu_replicas=2)
    default = distribute.make_strategy("default")
    oa = make_opts(batch=batch, replicas=1, steps=steps, aug="ada")
    ob = make_opts(batch=batch, batch_gpu=batch // 2, replicas=2, steps=steps, aug="ada")
    for o in (oa, ob):
        o.ada_kimg, o.ada_target = 0.1, -2.0
    ta = make_trainer(oa, default, log=lambda *a: None)
    w0 = weights_of(ta)
    tb = make_trainer(ob, mirrored, log=lambda *a: None)
    for net_a, net_b in ((ta.G, tb.G), (ta.D, tb.D), (ta.G_ema, tb.G_ema)):
        for va, vb in zip(net_a.weights, net_b.weights):
            vb.assign(tf.convert_to_tensor(va))
    firsts = []
    for t in (ta, tb):
        first = next(t.make_iterator())[0]
        firsts.append(np.concatenate([x.numpy() for x in t.strategy.experimental_local_results(first)], 0))
        t.make_iterator()
        for _ in range(steps):
            t.train_iteration()
    print("FIRSTBATCH", firsts[0].shape[0], firsts[1].shape[0], bool(np.array_equal(firsts[0], firsts[1])))
    wa, wb = weights_of(ta), weights_of(tb)
    print("MAXDIFF", max(float(np.abs(wa[k] - wb[k]).max()) for k in wa))
    print("MAXCHANGE", max(float(np.abs(wa[k] - w0[k]).max()) for k in wa))
    print("P", ta.augment_p, tb.augment_p)
    print("REPLICAS", ta.strategy.num_replicas_in_sync, tb.strategy.num_replicas_in_sync)


def check_sanitise_after_reduction():
    """MirroredStrategy over 2 logical CPUs: replica 0's gradient of D's conv bias holds +inf, NaN, -inf; replica 1's
    is finite. The loop reduces first (sum / 2, the original's mean over GPUs), then sanitises: the applied gradient
    (= Adam's first moment, beta1 = 0) is [1e5, 0, -1e5, mean, ...]. With loss scaling the same gradients skip the step on both replicas."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from afgan_tf.training import distribute
    strategy = distribute.make_strategy("mirrored", cpu_replicas=2)
    inf, nan = np.float32("inf"), np.float32("nan")
    r0 = np.array([inf, nan, -inf, 1.0, 0.5, 0, 0, 0], np.float32)
    r1 = np.array([2.0, 5.0, 3.0, 1.0, 0.25, 0, 0, 0], np.float32)
    for loss_scaling in (False, True):
        opts = make_opts(batch=8, batch_gpu=4, replicas=2, steps=4, aug="noaug")
        opts.loss_scaling = loss_scaling
        opts.loss_scale_kwargs = dict(initial_scale=4.0, growth_interval=2000)
        t = make_trainer(opts, strategy, log=lambda *a: None)
        bias = [i for i, v in enumerate(t._vars["D"]) if tuple(v.shape) == (8,)]
        assert len(bias) == 1, [tuple(v.shape) for v in t._vars["D"]]
        bi = bias[0]
        before = [[x.numpy() for x in strategy.experimental_local_results(tf.convert_to_tensor(v))]
                  for v in t._vars["D"]]

        @tf.function
        def step():
            def fn():
                rid = tf.distribute.get_replica_context().replica_id_in_sync_group
                g_bias = tf.where(tf.equal(rid, 0), tf.constant(r0), tf.constant(r1))
                grads = [g_bias if i == bi else tf.zeros(v.shape, v.dtype) for i, v in enumerate(t._vars["D"])]
                t._apply("Dmain", t.D_opt, grads, t._vars["D"])
            strategy.run(fn)
        step()
        m = t.D_opt.m[bi]
        ms = [x.numpy() for x in strategy.experimental_local_results(m)]
        if not loss_scaling:
            want = np.array([1e5, 0, -1e5, 1.0, 0.375, 0, 0, 0], np.float32)
            for mv in ms:
                np.testing.assert_array_equal(mv, want)
            print("SANITISE-OK", ms[0].tolist(), flush=True)
        else:
            for mv in ms:
                np.testing.assert_array_equal(mv, np.zeros(8, np.float32))
            for v, b in zip(t._vars["D"], before):
                for x, y in zip(strategy.experimental_local_results(v), b):
                    np.testing.assert_array_equal(tf.convert_to_tensor(x).numpy(), y)
            ls = t.loss_scales["Dmain"]
            assert float(ls.scale.numpy()) == 2.0 and int(ls.skipped.numpy()) == 1, (ls.scale, ls.skipped)
            assert all(int(c.numpy()) == 0 for c in t.D_opt.t)
            print("SKIP-OK", flush=True)
