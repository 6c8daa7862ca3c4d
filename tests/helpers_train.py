"""Shared helpers of the training tests: a numpy transcription of torch's Adam, an observer that follows a trainer's
parameters with it and with ``torch.optim.Adam`` itself, and the in-memory dataset function."""
import numpy as np

f32 = np.float32


def np_adam_step(p, g, st, lr, beta1, beta2, eps):
    """One ``torch.optim.Adam`` step (single-tensor path, no weight decay / AMSGrad) in numpy float32.

    ``st`` holds ``m``, ``v`` (arrays) and ``t`` (int); updated in place. Returns the new parameter.
    """
    st["t"] += 1
    t = st["t"]
    w = 1.0 - beta1
    m = st["m"]
    m = m + f32(w) * (g - m) if abs(w) < 0.5 else g - (g - m) * f32(1.0 - w)    # exp_avg.lerp_(grad, 1 - beta1)
    v = st["v"] * f32(beta2) + (f32(1.0 - beta2) * g) * g                        # mul_(beta2).addcmul_(g, g, 1-b2)
    bc1 = 1 - beta1 ** t
    bc2 = 1 - beta2 ** t
    step_size = lr / bc1
    denom = np.sqrt(v) / f32(bc2 ** 0.5) + f32(eps)
    st["m"], st["v"] = m.astype(f32), v.astype(f32)
    return (p + (f32(-step_size) * m) / denom).astype(f32)


def ulps(a, b, scale=None):
    """Largest difference of ``a`` and ``b`` in units of float32 spacing at ``max(|b|, |scale|)`` (``scale``: e.g.
    the parameter before an update ``p + delta``, whose rounding is relative to the larger operand)."""
    a, b = np.asarray(a, f32), np.asarray(b, f32)
    mag = np.abs(b) if scale is None else np.maximum(np.abs(b), np.abs(np.asarray(scale, f32)))
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.spacing(np.maximum(mag, f32(1e-30)))))


def values(variables):
    import tensorflow as tf
    return [tf.convert_to_tensor(v).numpy().copy() for v in variables]


class AdamFollower:
    """Trainer observer: after every phase, predicts the updated parameters of the phase's network from the
    parameters before it and the reported gradients, with :func:`np_adam_step` and with ``torch.optim.Adam``
    (``foreach=False``: the original's per-tensor path), and records the worst disagreement with the trainer.

    ``trainer`` must be built; ``nets`` maps a phase to 'G'/'D' (trainer.PHASES).
    """

    def __init__(self, trainer):
        import torch
        from afgan_tf.training.trainer import PHASES
        self.trainer, self.phases = trainer, PHASES
        self.params = {net: values(trainer._vars[net]) for net in ("G", "D")}
        self.kw = {net: dict(getattr(trainer.config, f"{net}_opt_kwargs")) for net in ("G", "D")}
        self.np_state = {net: [dict(m=np.zeros_like(p), v=np.zeros_like(p), t=0) for p in ps]
                         for net, ps in self.params.items()}
        self.torch_params = {net: [torch.tensor(p.copy(), requires_grad=True) for p in ps]
                             for net, ps in self.params.items()}
        self.torch_opt = {}
        for net, ps in self.torch_params.items():
            k = self.kw[net]
            self.torch_opt[net] = torch.optim.Adam(ps, lr=k["learning_rate"], betas=(k["beta_1"], k["beta_2"]),
                                                   eps=k["epsilon"], foreach=False)
        self.worst_np = 0.0      # in float32 ulps of max(|p before|, |p after|)
        self.worst_torch = 0.0   # in float32 ulps
        self.records = []

    def __call__(self, rec):
        import torch
        net = self.phases[rec["phase"]].net
        k = self.kw[net]
        before = self.params[net]
        now = values(rec["variables"])
        assert len(rec["grads"]) == len(now)
        for i, g in enumerate(rec["grads"]):
            if g is None:
                assert np.array_equal(now[i], before[i]), f"{rec['phase']}: variable {i} without gradient moved"
                continue
            want = np_adam_step(before[i], g.astype(f32), self.np_state[net][i], k["learning_rate"], k["beta_1"],
                                k["beta_2"], k["epsilon"])
            self.worst_np = max(self.worst_np, ulps(now[i], want, before[i]))
        with torch.no_grad():
            for p, b, g in zip(self.torch_params[net], before, rec["grads"]):
                p.copy_(torch.from_numpy(b))       # from our parameters (torch keeps its own m, v, step)
                p.grad = None if g is None else torch.from_numpy(np.array(g, f32))
        self.torch_opt[net].step()
        for p, ours, b in zip(self.torch_params[net], now, before):
            self.worst_torch = max(self.worst_torch, ulps(ours, p.detach().numpy(), b))
        # the optimiser's own counters: one per variable, advanced only when the variable had a gradient
        opt = self.trainer._opt[net]
        assert [int(t.numpy()) for t in opt.t] == [s["t"] for s in self.np_state[net]]
        self.params[net] = now
        self.records.append(dict(phase=rec["phase"], step=rec["step"], loss=rec["loss"],
                                 none=sum(g is None for g in rec["grads"]),
                                 zero=sum(g is not None and not np.any(g) for g in rec["grads"]),
                                 grads=rec["grads"], values=rec["values"]))


def array_dataset_fn(images, labels=None, mirror=False, shuffle=True):
    """The trainer's ``dataset_fn(global_batch, seed, skip_batches)`` over in-memory images (uint8 or float in
    [-1, 1], NHWC): a seeded shuffle per epoch over the (optionally x-flipped) set, global batches, the first
    ``skip_batches`` skipped."""
    import tensorflow as tf
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

    def fn(global_batch, seed, skip_batches):
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat().batch(global_batch, drop_remainder=True)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return ds.prefetch(2)

    return fn


def run_files(run_dir):
    """What a run left behind, for comparing an interrupted + resumed run with a straight one: the snapshots
    ``{name: {key: array}}``, the stats lines without timings / resources, the latest checkpoint's tensors
    (without ``save_counter``), and any ``*_temp`` folder."""
    import glob
    import json
    import os
    import tensorflow as tf
    snaps = {}
    for p in sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.npz"))):
        with np.load(p) as z:
            snaps[os.path.basename(p)] = {k: z[k] for k in z.files}
    lines = []
    with open(os.path.join(run_dir, "stats.jsonl")) as fh:
        for line in fh:
            rec = json.loads(line)
            lines.append({k: v for k, v in rec.items() if k.startswith(("Loss/", "Progress/"))})
    prefix = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(prefix)
    ckpt = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if not n.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}
    temps = glob.glob(os.path.join(run_dir, "checkpoints", "*_temp"))
    return dict(snapshots=snaps, stats=lines, ckpt=ckpt, ckpt_name=os.path.basename(prefix), temps=temps)


def assert_same_run(a, b):
    """``run_files`` of two runs are equal: snapshot names and contents, stats lines (ticks, kimg, losses, p),
    the final checkpoint's every tensor; no ``*_temp`` left."""
    assert not a["temps"] and not b["temps"], (a["temps"], b["temps"])
    assert sorted(a["snapshots"]) == sorted(b["snapshots"]), (sorted(a["snapshots"]), sorted(b["snapshots"]))
    for name in a["snapshots"]:
        for k, v in a["snapshots"][name].items():
            np.testing.assert_array_equal(b["snapshots"][name][k], v, err_msg=f"{name}:{k}")
    ticks = lambda s: [(r["Progress/tick"]["mean"], r["Progress/kimg"]["mean"]) for r in s]   # noqa: E731
    assert ticks(a["stats"]) == ticks(b["stats"]), (ticks(a["stats"]), ticks(b["stats"]))
    assert a["stats"] == b["stats"]
    assert a["ckpt_name"] == b["ckpt_name"]
    assert sorted(a["ckpt"]) == sorted(b["ckpt"])
    for n, v in a["ckpt"].items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(b["ckpt"][n], v, err_msg=n)
        else:
            assert b["ckpt"][n] == v, n
