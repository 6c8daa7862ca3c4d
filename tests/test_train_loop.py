"""Training loop: options/validation, phase schedule, stats, NaN stop, checkpoint contents (in-process, stand-in nets)."""
import json
import math
import os

import numpy as np
import pytest

import test_train_stubs as stubs
from afgan_tf.training import checkpoint, options, session, stats


# -- options ------------------------------------------------------------------------------------------------------

def test_lazy_adam_and_defaults():
    o = options.resolve_options(cfg="stylegan3-t", batch=32, gamma=2.0)
    r = 16 / 17
    assert o.D_opt_kwargs["learning_rate"] == pytest.approx(0.002 * r)          # 0.0018824
    assert o.D_opt_kwargs["beta_2"] == pytest.approx(0.99 ** r)                 # 0.990585
    assert o.D_opt_kwargs["beta_1"] == 0 and o.D_opt_kwargs["epsilon"] == 1e-8
    assert o.G_opt_kwargs == dict(learning_rate=0.0025, beta_1=0.0, beta_2=0.99, epsilon=1e-8)
    assert o.ema_kimg == pytest.approx(10.0) and o.ema_rampup == 0.05
    assert o.G_kwargs["magnitude_ema_beta"] == pytest.approx(0.5 ** (32 / 20000))
    o2 = options.resolve_options(cfg="stylegan2", batch=32, gamma=2.0)
    assert o2.G_opt_kwargs["learning_rate"] == pytest.approx(0.002 * 4 / 5)      # G lazy PL correction
    r_opts = options.resolve_options(cfg="stylegan3-r", batch=64, gamma=2.0, cbase=16384, cmax=256)
    assert r_opts.G_kwargs["channel_base"] == 32768 and r_opts.G_kwargs["conv_kernel"] == 1
    assert r_opts.loss_kwargs["blur_fade_kimg"] == pytest.approx(400.0)
    # The same kwargs as the networks' presets (one source of truth for the original's train.py).
    from afgan_tf.networks import presets
    assert r_opts.G_kwargs == presets.generator_kwargs("stylegan3-r", 64, cbase=16384, cmax=256, batch=64)
    assert r_opts.D_kwargs == presets.discriminator_kwargs("stylegan3-r", 64, cbase=16384, cmax=256)


@pytest.mark.parametrize("kwargs, words", [
    (dict(batch=30, num_replicas=4), ["--batch=30", "not divisible", "4"]),
    (dict(batch=32, batch_gpu=2, mbstd_group=4), ["--batch-gpu=2", "smaller than --mbstd-group=4"]),
    (dict(batch=32, batch_gpu=5), ["--batch-gpu=5", "must divide"]),
    (dict(batch=32, cfg="stylegan4"), ["--cfg", "stylegan4"]),
    (dict(batch=32, aug="sometimes"), ["--aug", "sometimes"]),
    (dict(batch=32, metrics="fid50k_full,fid1"), ["--metrics", "fid1"]),
    (dict(batch=32, kimg=0), ["--kimg"]),
    (dict(batch=32, desc="a b/c"), ["--desc"]),
])
def test_option_errors(kwargs, words):
    kw = dict(cfg="stylegan3-t", gamma=1.0)
    kw.update(kwargs)
    with pytest.raises(options.OptionError) as e:
        options.resolve_options(**kw)
    for w in words:
        assert w in str(e.value)


def test_run_dir_naming_and_resume_order(tmp_path):
    o = options.resolve_options(cfg="stylegan3-t", batch=16, gamma=0.5, num_replicas=2, desc="x", dataset_name="ds")
    d0 = options.next_run_dir(str(tmp_path), o)
    assert os.path.basename(d0) == "00000-stylegan3-t-ds-gpus2-batch16-gamma0.5-x"
    os.makedirs(d0)
    os.makedirs(tmp_path / "00007-other")
    assert os.path.basename(options.next_run_dir(str(tmp_path), o)).startswith("00008-")
    # fresh / in-place / weights / errors
    assert session.resume_source(None, str(tmp_path)).kind == "fresh"
    o.save(d0)
    spec = session.resume_source(None, d0)
    assert spec.kind == "inplace" and spec.path is None
    npz = tmp_path / "net.npz"
    npz.write_bytes(b"x")
    assert session.resume_source(str(npz), d0).kind == "weights"
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        session.resume_source(d0, None)
    with pytest.raises(FileNotFoundError, match="missing.pkl: file not found"):
        session.resume_source(str(tmp_path / "missing.pkl"), None)


# -- stats helpers ------------------------------------------------------------------------------------------------

def test_collector_matches_numpy_and_grid():
    rng = np.random.RandomState(0)
    a, b = rng.randn(7), rng.randn(5)
    c = stats.Collector()
    c.add_values("x", a)
    c.add("x", len(b), b.sum(), np.square(b).sum())
    d = c.as_dict()["x"]
    both = np.concatenate([a, b])
    assert d["num"] == 12 and d["mean"] == pytest.approx(both.mean()) and d["std"] == pytest.approx(both.std())
    assert stats.grid_size(64) == (32, 32) and stats.grid_size(1024) == (7, 4)
    assert stats.grid_size(64, max_images=64)[0] * stats.grid_size(64, max_images=64)[1] <= 64
    imgs = rng.uniform(-1, 1, [6, 4, 5, 3]).astype(np.float32)
    g = stats.images_to_grid(imgs, 3, 2)
    assert g.shape == (8, 15, 3)
    np.testing.assert_array_equal(g[4:8, 5:10], np.rint((imgs[4] + 1) * 127.5).clip(0, 255).astype(np.uint8))


# -- the loop ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf_default():
    import tensorflow as tf
    return tf.distribute.get_strategy()


def test_phase_schedule_ema_and_ada(tf_default):
    import tensorflow as tf
    o = stubs.make_opts(batch=8, steps=20, aug="ada")
    o.ada_kimg, o.ada_target = 0.1, -2.0      # p rises by 8*4/100 = 0.32 every 4 iterations
    t = stubs.make_trainer(o, tf_default, log=lambda *a: None)
    g0 = [tf.convert_to_tensor(v).numpy() for v in t.G.trainable_variables]
    t.make_iterator()
    seen, ps = [], []
    for i in range(17):
        before = [tf.convert_to_tensor(v).numpy() for v in t.G_ema.trainable_variables]
        res = t.train_iteration()
        seen.append(sorted(res))
        ps.append(t.augment_p)
        if i == 0:
            # cur_nimg = 0 with ramp-up: beta = 0, G_ema == G after the first step.
            for ve, v in zip(t.G_ema.trainable_variables, t.G.trainable_variables):
                np.testing.assert_array_equal(tf.convert_to_tensor(ve).numpy(), tf.convert_to_tensor(v).numpy())
        if i == 5:
            beta = 0.5 ** (8 / max(min(10 / 32 * 8 * 1000, 5 * 8 * 0.05), 1e-8))
            for ve, v, b in zip(t.G_ema.trainable_variables, t.G.trainable_variables, before):
                want = tf.convert_to_tensor(v).numpy() + beta * (b - tf.convert_to_tensor(v).numpy())
                np.testing.assert_allclose(tf.convert_to_tensor(ve).numpy(), want, rtol=1e-6, atol=1e-7)
    with_reg = [i for i, k in enumerate(seen) if "Dreg" in k]
    assert with_reg == [0, 16]
    assert all({"Gmain", "Dmain"} <= set(k) and len(k) in (2, 3) for k in seen)
    np.testing.assert_allclose(ps, [0.32 * ((i + 1) // 4) for i in range(17)], rtol=1e-6)
    assert t.step == 17 and t.cur_nimg == 17 * 8
    assert any(np.abs(tf.convert_to_tensor(v).numpy() - a).max() > 1e-4 for v, a in zip(t.G.trainable_variables, g0))


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, tf_default):
    import tensorflow as tf
    o = stubs.make_opts(batch=8, steps=12, aug="noaug")
    t = stubs.make_trainer(o, tf_default, log=lambda *a: None)
    orig = t.train_iteration

    def poisoned(*a, **k):
        if t.step == 5:
            t.G.trainable_variables[0].assign(tf.fill(t.G.trainable_variables[0].shape, float("nan")))
        return orig(*a, **k)
    t.train_iteration = poisoned
    lines = []
    t.log = lines.append
    status = stubs_run(t, tmp_path)
    assert status["error"] and "non-finite" in status["error"] and "step 5" in status["error"]
    assert any("last good checkpoint is kept" in l for l in lines)
    assert status["checkpoint"].endswith("ckpt-5")
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-5")
    # the kept checkpoint holds finite weights and the state of step 5
    r = tf.train.load_checkpoint(status["checkpoint"])
    names = r.get_variable_to_shape_map()
    for n in names:
        v = r.get_tensor(n)
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            assert np.all(np.isfinite(v)), n
    step_key = [n for n in names if n.startswith("step/")][0]
    assert int(r.get_tensor(step_key)) == 5
    # the stats file of the ticks before the NaN exists and is valid JSON lines
    recs = [json.loads(l) for l in open(tmp_path / "stats.jsonl")]
    assert recs and all(math.isfinite(r["Loss/G/loss"]["mean"]) for r in recs)
    assert {"Loss/scores/real", "Loss/signs/real", "Loss/D/loss", "Loss/r1_penalty", "Loss/D/reg",
            "Progress/kimg", "Timing/sec_per_kimg", "Timing/Gmain", "Resources/cpu_mem_gb"} <= set(recs[0])


def stubs_run(trainer, run_dir):
    from afgan_tf.training.run import run_training
    return run_training(trainer, str(run_dir), tensorboard=False, progress=False)


def test_default_generator_follows_cfg():
    """--cfg=stylegan2 builds the StyleGAN2 generator, the StyleGAN3 configs the StyleGAN3 one (by the class name the
    options store, as the original's ``class_name``)."""
    from afgan_tf.networks import Generator
    from afgan_tf.networks import stylegan2
    from afgan_tf.networks.presets import generator_kwargs
    from afgan_tf.training.trainer import default_generator
    from afgan_tf.training.options import TrainConfig, resolve_options
    o2 = resolve_options(cfg="stylegan2", batch=4, gamma=1.0)
    assert o2.G_class == "afgan_tf.networks.stylegan2.Generator"
    G2 = default_generator(o2)(generator_kwargs("stylegan2", 16, cbase=64, cmax=8))
    assert isinstance(G2, stylegan2.Generator)
    o3 = resolve_options(cfg="stylegan3-t", batch=4, gamma=1.0)
    assert o3.G_class == "afgan_tf.networks.generator.Generator"
    old = TrainConfig.from_json(dict(cfg="stylegan2"))            # options written before G_class existed
    assert default_generator(old)(generator_kwargs("stylegan2", 16, cbase=64, cmax=8)).__class__ is stylegan2.Generator
    G3 = default_generator(o3)(generator_kwargs("stylegan3-t", 16, cbase=64, cmax=8))
    assert isinstance(G3, Generator) and not isinstance(G3, stylegan2.Generator)
