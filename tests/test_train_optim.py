"""The training step equals the original's: torch's Adam (against ``torch.optim.Adam`` itself and a numpy
transcription), the original's gradient scale under accumulation and over replicas, and the public seam
(``latents`` / ``observer``) on a small StyleGAN3-T + D for two iterations (Gmain, Dmain, Dreg with the lazy gain),
with the D-input blur on and off, with ``batch_gpu`` < batch and with 2 replicas."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch

import test_train_stubs as stubs
from helpers_train import AdamFollower, np_adam_step, ulps, values
from afgan_tf.training.loss import lazy_adam_params
from afgan_tf.training.optim import TorchAdam, make_optimizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LAZY_LR, LAZY_BETAS = lazy_adam_params(0.002, (0.0, 0.99), 16)


def _grad_sequence(shapes, steps, seed=0):
    """Gradients per step; variable 1 has none in steps 2 and 3, variable 2 is zero in steps 1 and 4; mixed scales
    (1e-6 .. 1e2) so that epsilon matters for some entries."""
    rng = np.random.RandomState(seed)
    seq = []
    for s in range(steps):
        gs = []
        for i, shp in enumerate(shapes):
            scale = 10.0 ** rng.uniform(-6, 2, shp)
            g = np.asarray(rng.randn(*shp) * scale, np.float32)
            if i == 1 and s in (2, 3):
                g = None
            elif i == 2 and s in (1, 4):
                g = np.zeros(shp, np.float32)
            gs.append(g)
        seq.append(gs)
    return seq


@pytest.mark.parametrize("lr, betas", [(0.0025, (0.0, 0.99)), (LAZY_LR, LAZY_BETAS), (0.01, (0.9, 0.999))])
def test_torch_adam_equals_torch_optim_adam(lr, betas):
    shapes = [(3, 4), (5,), (2, 3, 2), ()]
    rng = np.random.RandomState(1)
    init = [np.asarray(rng.randn(*s), np.float32) for s in shapes]
    tvars = [tf.Variable(p) for p in init]
    opt = TorchAdam(tvars, learning_rate=lr, beta_1=betas[0], beta_2=betas[1], epsilon=1e-8)
    step = tf.function(lambda gs: opt.apply(gs))
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    topt = torch.optim.Adam(tp, lr=lr, betas=betas, eps=1e-8, foreach=False)
    tp2 = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    topt2 = torch.optim.Adam(tp2, lr=lr, betas=betas, eps=1e-8)            # torch's default path
    ref = [p.copy() for p in init]
    st = [dict(m=np.zeros_like(p), v=np.zeros_like(p), t=0) for p in init]
    worst_rel = worst_ulp = worst_torch_ulp = 0.0
    for s, gs in enumerate(_grad_sequence(shapes, 7)):
        step([None if g is None else tf.constant(g) for g in gs])
        for ps, o in ((tp, topt), (tp2, topt2)):
            for p, g in zip(ps, gs):
                p.grad = None if g is None else torch.from_numpy(g.copy())
            o.step()
        for i, g in enumerate(gs):
            if g is not None:
                ref[i] = np_adam_step(ref[i], g, st[i], lr, betas[0], betas[1], 1e-8)
        for i, v in enumerate(tvars):
            ours = v.numpy()
            for p in (tp[i], tp2[i]):
                t = p.detach().numpy()
                worst_rel = max(worst_rel, float(np.max(np.abs(ours.astype(np.float64) - t) /
                                                         np.maximum(np.abs(t), 1e-30))))
                worst_torch_ulp = max(worst_torch_ulp, ulps(ours, t))
            worst_ulp = max(worst_ulp, ulps(ours, ref[i]))
        # step counters: one per variable, as torch's state['step']
        assert [int(t.numpy()) for t in opt.t] == [int(topt.state[p]["step"]) for p in tp]
    print(f"lr {lr}, betas {betas}: max difference to torch.optim.Adam {worst_rel:.2g} relative "
          f"({worst_torch_ulp:.1f} ulp), to the numpy transcription {worst_ulp:.1f} ulp")
    assert [int(t.numpy()) for t in opt.t] == [7, 5, 7, 7]
    assert worst_torch_ulp <= 2
    if betas[0] == 0:          # the training configs (beta1 = 0): m = g exactly, no lerp rounding
        assert worst_rel <= 1e-7
    assert worst_ulp <= 2
    for i, p in enumerate(tp):      # the moments, incl. those of the variable with zero-gradient steps
        np.testing.assert_allclose(opt.m[i].numpy(), topt.state[p]["exp_avg"].numpy(), rtol=1e-6, atol=0)
        np.testing.assert_allclose(opt.v[i].numpy(), topt.state[p]["exp_avg_sq"].numpy(), rtol=1e-6, atol=0)


def test_keras_adam_would_differ():
    """The reason for TorchAdam: Keras' Adam adds epsilon before the bias correction (effective eps/sqrt(1-b2^t)),
    which moves tiny-gradient entries measurably differently from torch."""
    import keras
    g = np.array([1e-9, 1e-8, 1e-7, 1.0], np.float32)
    v = keras.Variable(np.zeros(4, np.float32))
    keras.optimizers.Adam(learning_rate=0.0025, beta_1=0.0, beta_2=0.99, epsilon=1e-8).apply([g], [v])
    p = torch.zeros(4, requires_grad=True)
    o = torch.optim.Adam([p], lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    p.grad = torch.from_numpy(g)
    o.step()
    tv = tf.Variable(np.zeros(4, np.float32))
    TorchAdam([tv], 0.0025, 0.0, 0.99, 1e-8).apply([tf.constant(g)])
    np.testing.assert_allclose(tv.numpy(), p.detach().numpy(), rtol=1e-7)
    assert np.abs(np.asarray(v) - p.detach().numpy())[:2].max() > 1e-4


def test_torch_adam_checkpoint_resumes_exactly(tmp_path):
    shapes = [(4,), (2, 2), (3,)]
    init = [np.full(s, 0.5, np.float32) for s in shapes]
    seq = _grad_sequence(shapes, 6, seed=3)

    def run(steps, restore=None, save=None):
        vs = [tf.Variable(p) for p in init]
        opt = make_optimizer(vs, LAZY_LR, beta_1=LAZY_BETAS[0], beta_2=LAZY_BETAS[1])
        ck = tf.train.Checkpoint(opt=opt, vs=vs)
        if restore:
            ck.restore(restore).assert_consumed()
        for gs in steps:
            opt.apply([None if g is None else tf.constant(g) for g in gs])
        path = ck.save(save) if save else None
        return [v.numpy() for v in vs], opt, path

    straight, _, _ = run(seq)
    _, opt_a, path = run(seq[:3], save=str(tmp_path / "ck"))
    assert [int(t.numpy()) for t in opt_a.t] == [3, 2, 3]
    resumed, opt_b, _ = run(seq[3:], restore=path)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    assert [int(t.numpy()) for t in opt_b.t] == [6, 4, 6]


# -- the gradient scale of the original ------------------------------------------------------------------------------

def _latents(batch, z_dim, c_dim=0):
    def fn(step, phase):
        rng = np.random.RandomState(1000 + 10 * step + ["Gmain", "Dmain", "Greg"].index(phase))
        return rng.randn(batch, z_dim).astype(np.float32), None
    return fn


def test_accumulation_scale_is_sum_of_chunk_means(tf_default):
    """batch_gpu = batch / 2 (2 chunks): the reduced gradient is the sum of the two chunk means (the original),
    i.e. twice the global-mean gradient of batch_gpu = batch, from the same weights and latents; and the latent
    seam really drives the step (Gmain's logits = D(G(z)) of the given z)."""
    recs = {}
    for bg in (8, 4):
        o = stubs.make_opts(batch=8, batch_gpu=bg, steps=2, aug="noaug")
        o.D_kwargs = dict(o.D_kwargs)
        got = []
        t = stubs.make_trainer(o, tf_default, log=lambda *a: None, latents=_latents(8, stubs.ZDIM),
                               observer=got.append)
        if bg == 8:
            w0 = {k: values(getattr(t, k).weights) for k in ("G", "D", "G_ema")}
            z0 = _latents(8, stubs.ZDIM)(0, "Gmain")[0]
            want_logits = t.D(t.G(tf.constant(z0))).numpy()
        else:
            for k in ("G", "D", "G_ema"):
                for v, a in zip(getattr(t, k).weights, w0[k]):
                    v.assign(a)
        t.make_iterator()
        t.train_iteration()
        recs[bg] = got
    a, b = recs[8], recs[4]
    assert [r["phase"] for r in a] == [r["phase"] for r in b] == ["Gmain", "Dmain", "Dreg"]
    np.testing.assert_allclose(a[0]["values"]["Loss/scores/fake"], want_logits, rtol=1e-5, atol=1e-6)
    for ra, rb in zip(a[:1], b[:1]):         # Gmain: same weights, same z -> exactly a factor 2 (up to rounding)
        for ga, gb in zip(ra["grads"], rb["grads"]):
            np.testing.assert_allclose(gb, 2 * ga, rtol=1e-5, atol=1e-5 * np.abs(ga).max())
        assert rb["loss"] == pytest.approx(2 * ra["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def tf_default():
    return tf.distribute.get_strategy()


# -- two iterations of a small StyleGAN3-T + D through the seam --------------------------------------------------------

def test_two_iterations_stylegan3_t_blur_off_and_on(tf_default):
    for blur in (False, True):
        out = helpers_train_two_iterations(tf_default, batch=4, batch_gpu=4, blur=blur)
        print(out)


def test_two_iterations_with_accumulation(tf_default):
    print(helpers_train_two_iterations(tf_default, batch=4, batch_gpu=2, blur=False))


def test_two_iterations_two_replicas():
    code = ("import test_train_optim as t; from afgan_tf.training import distribute; "
            "s = distribute.make_strategy('mirrored', cpu_replicas=2); "
            "print(t.helpers_train_two_iterations(s, batch=4, batch_gpu=2, blur=True))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT]))
    env.pop("TF_CONFIG", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "TWO-ITERATIONS-OK" in r.stdout, r.stdout[-2000:]
    print(r.stdout.strip().splitlines()[-1])


def helpers_train_two_iterations(strategy, batch, batch_gpu, blur):
    """Build a tiny StyleGAN3-T + D (16x16), run two iterations with given latents and an AdamFollower observer;
    assert every parameter after every phase equals torch's Adam fed with the reported gradients."""
    from afgan_tf.training.options import resolve_options
    from afgan_tf.training.trainer import Trainer
    from helpers_train import array_dataset_fn
    res = 16
    o = resolve_options(cfg="stylegan3-r" if blur else "stylegan3-t", batch=batch, batch_gpu=batch_gpu, gamma=2.0,
                        num_replicas=strategy.num_replicas_in_sync, kimg=1, aug="noaug", mbstd_group=2,
                        img_resolution=res, img_channels=3, dataset_name="t", cbase=128, cmax=16, map_depth=1,
                        fp32=True)
    o.cfg = "stylegan3-t"                     # the T generator/D in both cases; the blur comes from loss_kwargs
    o.G_kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=res, img_channels=3, channel_base=128,
                         channel_max=16, mapping_kwargs=dict(num_layers=1))
    o.D_kwargs = dict(c_dim=0, img_resolution=res, img_channels=3, channel_base=64, channel_max=16,
                         epilogue_kwargs=dict(mbstd_group_size=2))
    assert (o.loss_kwargs["blur_init_sigma"] > 0) == blur
    imgs = (np.random.RandomState(0).rand(16, res, res, 3) * 255).astype(np.uint8)
    holder = {}
    t = Trainer(o, strategy, dataset_fn=array_dataset_fn(imgs), latents=_latents(batch, 8),
                observer=lambda rec: holder["f"](rec), log=lambda *a: None).build()
    follower = holder["f"] = AdamFollower(t)
    t.make_iterator()
    for _ in range(2):
        t.train_iteration()
    phases = [(r["step"], r["phase"]) for r in follower.records]
    assert phases == [(0, "Gmain"), (0, "Dmain"), (0, "Dreg"), (1, "Gmain"), (1, "Dmain")], phases
    # 2 ulps; with several devices Grappler's arithmetic optimiser reorders the update's float ops (measured 4 ulps,
    # 0 with tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False}))
    assert follower.worst_np <= (2 if strategy.num_replicas_in_sync == 1 else 4), follower.worst_np
    # torch's vectorised CPU kernels round some intermediate differently (measured up to 4 ulps of the parameter)
    assert follower.worst_torch <= 4, follower.worst_torch
    for r in follower.records:
        assert np.isfinite(r["loss"]) and r["values"]
        assert all(len(v) == batch for v in r["values"].values())      # all replicas are local here
    dreg = follower.records[2]
    assert dreg["values"]["Loss/r1_penalty"].shape == (batch,)
    # the Dreg objective carries the lazy gain: loss = 16 * gamma/2 * mean(penalty) (one chunk per replica here
    # or the sum of the chunk means)
    chunks = batch // batch_gpu // strategy.num_replicas_in_sync
    pen = dreg["values"]["Loss/r1_penalty"]
    want = 16 * 1.0 * np.mean(pen) * chunks
    assert dreg["loss"] == pytest.approx(want, rel=1e-5)
    return (f"TWO-ITERATIONS-OK replicas {strategy.num_replicas_in_sync} batch_gpu {batch_gpu} blur {blur}: "
            f"worst {follower.worst_np:.1f} ulp vs numpy, {follower.worst_torch:.1f} ulp vs torch.optim.Adam; "
            f"Dreg: {dreg['none']} variables without gradient, {dreg['zero']} with zero gradient")
