"""Mixed precision and gradient handling of the training loop: float16 layers + dynamic loss scaling (forced on CPU
with ``layers.force_fp16``), the loss-scale logic against plain float32 training, checkpointing of the scale, and the
sanitising of non-finite gradients after the cross-replica reduction (MirroredStrategy over 2 logical CPUs, in a
subprocess)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import test_train_stubs as stubs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _np(v):
    return tf.convert_to_tensor(v).numpy()


def _opts(loss_scaling, **ls_kwargs):
    o = stubs.make_opts(batch=8, steps=8, aug="noaug")
    o.loss_scaling = loss_scaling
    o.loss_scale_kwargs = dict(dict(initial_scale=2.0 ** 15, growth_interval=2000), **ls_kwargs)
    return o


def _copy_weights(src, dst):
    for a, b in ((src.G, dst.G), (src.D, dst.D), (src.G_ema, dst.G_ema)):
        for va, vb in zip(a.weights, b.weights):
            vb.assign(_np(va))


@pytest.fixture(scope="module")
def tf_default():
    return tf.distribute.get_strategy()


# -- the loss-scale logic on the stand-in networks (float32, so the scaled run must equal the plain one) ----------

def test_loss_scaled_gradients_equal_float32_gradients(tf_default):
    """With beta1 = 0, Adam's first moment after the first update is the applied gradient: the unscaled gradient of
    the loss-scaled run equals the float32 gradient (the scale is a power of two: exactly)."""
    plain = stubs.make_trainer(_opts(False), tf_default, log=lambda *a: None)
    scaled = stubs.make_trainer(_opts(True), tf_default, log=lambda *a: None)
    assert not plain.loss_scales and sorted(scaled.loss_scales) == ["Dmain", "Dreg", "Gmain"]
    _copy_weights(plain, scaled)
    for t in (plain, scaled):
        t.make_iterator()
        t.train_iteration()
    for opt_a, opt_b in ((plain.G_opt, scaled.G_opt), (plain.D_opt, scaled.D_opt)):
        for ma, mb in zip(opt_a.m, opt_b.m):
            np.testing.assert_allclose(_np(mb), _np(ma), rtol=1e-6, atol=1e-12)
            assert np.abs(_np(ma)).max() > 0
    for va, vb in zip(plain.G.weights + plain.D.weights, scaled.G.weights + scaled.D.weights):
        np.testing.assert_allclose(_np(vb), _np(va), rtol=1e-6, atol=1e-7)
    assert float(scaled.loss_scales["Gmain"].scale.numpy()) == 2.0 ** 15


def test_overflow_skips_the_update_and_halves_the_scale_then_growth(tf_default):
    t = stubs.make_trainer(_opts(True, growth_interval=2), tf_default, log=lambda *a: None)
    t.make_iterator()
    reals, labels = next(t.iterator)
    ls = t.loss_scales["Gmain"]
    # Overflow: D's output weights scaled up so that G's gradients (~1e35) are finite unscaled but overflow float32
    # once multiplied by the loss scale 2**15.
    out_w = t.D.out.kernel
    w_keep = _np(out_w)
    out_w.assign(np.sign(w_keep) * 1e35 + w_keep)
    g0 = [_np(v) for v in t.G.trainable_variables]
    m0 = [_np(m) for m in t.G_opt.m]
    it0 = [int(c.numpy()) for c in t.G_opt.t]
    t.steps["Gmain"](reals, labels, tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    for a, v in zip(g0, t.G.trainable_variables):
        np.testing.assert_array_equal(_np(v), a)                        # weights untouched
    for a, m in zip(m0, t.G_opt.m):
        np.testing.assert_array_equal(_np(m), a)                        # Adam state untouched
    assert [int(c.numpy()) for c in t.G_opt.t] == it0
    assert float(ls.scale.numpy()) == 2.0 ** 14 and int(ls.skipped.numpy()) == 1
    assert int(ls.good_steps.numpy()) == 0
    out_w.assign(w_keep)
    # finite steps: applied; after growth_interval = 2 of them the scale doubles
    ls.scale.assign(2.0 ** 10)
    t.steps["Gmain"](reals, labels, tf.constant(1, tf.int64), tf.constant(8, tf.int64))
    assert [int(c.numpy()) for c in t.G_opt.t] == [c + 1 for c in it0]
    assert float(ls.scale.numpy()) == 2.0 ** 10 and int(ls.good_steps.numpy()) == 1
    assert any(np.abs(_np(v) - a).max() > 0 for a, v in zip(g0, t.G.trainable_variables))
    t.steps["Gmain"](reals, labels, tf.constant(2, tf.int64), tf.constant(16, tf.int64))
    assert float(ls.scale.numpy()) == 2.0 ** 11 and int(ls.good_steps.numpy()) == 0
    assert int(ls.skipped.numpy()) == 1


def test_loss_scale_unit():
    from afgan_tf.training.loss_scale import LossScale, all_finite
    ls = LossScale(initial_scale=8.0, growth_interval=3, min_scale=2.0, max_scale=16.0)
    seq = []
    for finite in (True, True, True, True, True, True, False, False, False, True):
        ls.update(finite)
        seq.append(float(ls.scale.numpy()))
    assert seq == [8, 8, 16, 16, 16, 16, 8, 4, 2, 2]      # grows after 3 finite steps, capped, halves, floored
    assert int(ls.skipped.numpy()) == 3
    assert ls.unscale([tf.constant([4.0, 6.0]), None])[0].numpy().tolist() == [2.0, 3.0]
    assert bool(all_finite([tf.constant([1.0]), None])) and not bool(all_finite([tf.constant([1.0, np.inf])]))
    assert not bool(all_finite([tf.constant([np.nan], tf.float16)]))
    with pytest.raises(ValueError, match="growth_interval"):
        LossScale(growth_interval=0)
    with pytest.raises(ValueError, match="min_scale"):
        LossScale(initial_scale=1.0, min_scale=2.0)


def test_loss_scale_is_checkpointed(tmp_path, tf_default):
    from afgan_tf.training.checkpoint import TrainCheckpoint, verify_checkpoint
    t = stubs.make_trainer(_opts(True), tf_default, log=lambda *a: None)
    ls = t.loss_scales["Dmain"]
    ls.scale.assign(512.0)
    ls.good_steps.assign(7)
    ls.skipped.assign(3)
    ck = TrainCheckpoint(str(tmp_path / "ck"), **t.checkpoint_objects())
    path = ck.save(1)
    verify_checkpoint(path, expected_keys=("loss_scale_Gmain/", "loss_scale_Dmain/", "loss_scale_Dreg/", "ada/"))
    t2 = stubs.make_trainer(_opts(True), tf_default, log=lambda *a: None)
    TrainCheckpoint(str(tmp_path / "ck2"), **t2.checkpoint_objects()).restore(path)
    ls2 = t2.loss_scales["Dmain"]
    assert (float(ls2.scale.numpy()), int(ls2.good_steps.numpy()), int(ls2.skipped.numpy())) == (512.0, 7, 3)
    assert float(t2.loss_scales["Gmain"].scale.numpy()) == 2.0 ** 15


# -- float16 layers of the real networks, forced on CPU -------------------------------------------------------------

RES16 = 16


def _fp16_opts():
    o = _opts(True)
    o.G_kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES16, img_channels=3, channel_base=128,
                         channel_max=16, num_fp16_res=4, conv_clamp=256, mapping_kwargs=dict(num_layers=2))
    o.D_kwargs = dict(c_dim=0, img_resolution=RES16, img_channels=3, channel_base=64, channel_max=16,
                         num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=2))
    return o


def test_fp16_layers_train_with_loss_scaling(tf_default):
    """A tiny StyleGAN3 G and D with float16 layers (forced without a GPU) train 3 iterations with loss scaling:
    losses finite, weights move, the float16 layers really output float16."""
    from afgan_tf.networks import layers
    from afgan_tf.training.trainer import Trainer
    from helpers_train import array_dataset_fn
    imgs = (np.random.RandomState(0).rand(16, RES16, RES16, 3) * 255).astype(np.uint8)
    layers.force_fp16(True)
    try:
        t = Trainer(_fp16_opts(), tf_default, dataset_fn=array_dataset_fn(imgs), log=lambda *a: None).build()
        g0 = [_np(v) for v in t.G.trainable_variables]
        d0 = [_np(v) for v in t.D.trainable_variables]
        t.make_iterator()
        for _ in range(3):
            res = t.train_iteration()
            for phase in res.values():
                for k, v in phase.items():
                    assert np.all(np.isfinite(v)), k
        # the layers flagged use_fp16 compute in float16
        x = tf.constant(imgs[:2].astype(np.float32) / 127.5 - 1)
        logits, blocks = t.D(x, return_blocks=True)
        assert logits.dtype == tf.float32 and blocks[f"b{RES16}"].dtype == tf.float16
        syn = [l for l in t.G.synthesis._flatten_layers() if getattr(l, "use_fp16", False)]
        assert syn and all(l.compute_dtype_for() == tf.float16 for l in syn)
        lay = syn[1]
        h = tf.random.normal([2, lay.in_size[1], lay.in_size[0], lay.in_channels])
        y = lay(h, tf.random.normal([2, lay.w_dim]))
        assert y.dtype == tf.float16 and lay(h, tf.random.normal([2, lay.w_dim]), force_fp32=True).dtype == tf.float32
        img = t.G(tf.random.normal([2, 8]))
        assert img.dtype == tf.float32 and np.all(np.isfinite(img.numpy()))
    finally:
        layers.force_fp16(None)
    assert sum(int(ls.skipped.numpy()) for ls in t.loss_scales.values()) <= 1
    assert all(float(ls.scale.numpy()) >= 2.0 ** 14 for ls in t.loss_scales.values())
    assert any(np.abs(_np(v) - a).max() > 0 for a, v in zip(g0, t.G.trainable_variables))
    assert any(np.abs(_np(v) - a).max() > 0 for a, v in zip(d0, t.D.trainable_variables))
    assert layers.fp16_enabled() == layers.gpu_available()   # the switch is off again


# -- sanitising after the reduction (2 replicas, one with non-finite gradients) ------------------------------------

def test_nonfinite_gradient_on_one_replica_is_sanitised_after_the_reduction():
    code = "import test_train_stubs as s; s.check_sanitise_after_reduction()"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT]))
    env.pop("TF_CONFIG", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "SANITISE-OK" in r.stdout and "SKIP-OK" in r.stdout, r.stdout[-2000:]
