"""StyleGAN3 generator (afgan_tf.networks) vs the original's outputs (g_t64.npz / g_r64.npz), state_dict
conversion and refusals, EMA updates, tf.function / tf.distribute use, translation equivariance, parameter counts
(docs/ALGORITHM.md §3.7) and the train.py presets."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.networks import Generator, StateDictError, presets
from afgan_tf.networks.layers import FullyConnectedLayer, SynthesisLayer

PARITY_FILES = ["g_t64.npz", "g_r64.npz"]
IMG_ATOL = 1e-5     # images: |img| <= ~0.6, reference float32 noise ~1e-6
ACT_ATOL = 1e-4     # deep activations (|x| up to ~8)


def _activation_ref(d, key, ours):
    """(our activations restricted to the channels the fixture keeps, the reference NHWC): the per-layer activations
    in the fixtures hold every s-th channel (``channels/<key>`` lists them, tests/fixtures/README.md)."""
    idx = d["channels/" + key]
    return ours[..., idx], parity.nchw_to_nhwc(d[key])


def _params(d):
    return {k[len("param/"):]: d[k] for k in d.files if k.startswith("param/")}


def _build(d):
    G = Generator(**parity.meta(d, "meta/init_kwargs"))
    G.load_original_state_dict(_params(d))
    return G


@pytest.fixture(scope="module", params=PARITY_FILES)
def loaded(request):
    d = parity.load(request.param)
    G = _build(d)
    outs = [o.numpy() for o in G.synthesis.run(d["out/ws_psi1.0"])]
    return request.param, d, G, outs


# ----------------------------------------------------------------------------------------------------------------
# Parity with the original

def test_mapping_parity(loaded):
    name, d, G, _ = loaded
    for psi in ("1.0", "0.7"):
        ws = G.mapping(d["in/z"], d["in/c"], truncation_psi=float(psi))
        assert ws.shape == (4, G.num_ws, G.w_dim)
        parity.assert_close(ws.numpy(), d[f"out/ws_psi{psi}"], atol=1e-5, rtol=1e-5, name=f"{name} ws_psi{psi}")


def test_synthesis_layers_parity(loaded):
    name, d, G, outs = loaded
    k = d["layers/batch_indices"]
    names = ["input"] + G.synthesis.layer_names
    assert names[1:] == parity.meta(d, "meta/info")["layer_names"]
    for n, o in zip(names, outs):
        got, ref = _activation_ref(d, f"layers/{n}", o[k])
        parity.assert_close(got, ref, atol=ACT_ATOL, name=f"{name} layers/{n}")


def test_images_parity(loaded):
    name, d, G, outs = loaded
    parity.assert_close(outs[-1], parity.nchw_to_nhwc(d["out/img_psi1.0"]), atol=IMG_ATOL, name=f"{name} img_psi1.0")
    img = G(d["in/z"], d["in/c"], truncation_psi=0.7)
    assert img.dtype == tf.float32 and img.shape == (4, 64, 64, 3)
    parity.assert_close(img.numpy(), parity.nchw_to_nhwc(d["out/img_psi0.7"]), atol=IMG_ATOL,
                        name=f"{name} img_psi0.7")


@pytest.mark.parametrize("case", ["transform_rt", "transform_affine"])
def test_transform_parity(loaded, case):
    name, d, G, _ = loaded
    k = d["layers/batch_indices"]
    G.synthesis.input.transform.assign(d[f"{case}/transform"])
    try:
        outs = G.synthesis.run(d["out/ws_psi1.0"])
    finally:
        G.synthesis.input.transform.assign(np.eye(3, dtype=np.float32))
    got, ref = _activation_ref(d, f"{case}/input", outs[0].numpy()[k])
    parity.assert_close(got, ref, atol=ACT_ATOL, name=f"{name} {case}/input")
    parity.assert_close(outs[-1].numpy(), parity.nchw_to_nhwc(d[f"{case}/img"]), atol=IMG_ATOL,
                        name=f"{name} {case}/img")


def test_tf_function_matches_eager(loaded):
    name, d, G, outs = loaded
    f = tf.function(lambda z: G(z, truncation_psi=1))
    img = f(tf.constant(d["in/z"]))
    np.testing.assert_allclose(img.numpy(), outs[-1], atol=2e-6)


# ----------------------------------------------------------------------------------------------------------------
# state_dict conversion

@pytest.mark.parametrize("fname", PARITY_FILES)
def test_state_dict_round_trip(fname):
    d = parity.load(fname)
    sd = _params(d)
    G = _build(d)
    out = G.original_state_dict()
    assert list(out) == list(sd)  # names and original order
    for k, v in sd.items():
        assert out[k].shape == v.shape, k
        if k.endswith("_filter"):
            assert np.max(np.abs(out[k] - v)) <= 1e-6, k
        else:
            np.testing.assert_array_equal(out[k], v, err_msg=k)
    # layouts: conv [O, I, kh, kw] <-> [kh, kw, I, O], FC [out, in] <-> [in, out]
    L0 = G.synthesis.synthesis_layers[0]
    np.testing.assert_array_equal(L0.weight.numpy(), np.transpose(sd[f"synthesis.{L0.name}.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(G.mapping.fcs[0].weight.numpy(), sd["mapping.fc0.weight"].T)
    # a fresh G loaded from our export is identical
    G2 = Generator(**G.init_kwargs)
    G2.load_original_state_dict(out)
    for a, b in zip(G.variables, G2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # original_variables maps every non-filter entry to the variable
    ov = G.original_variables()
    assert set(ov) == {k for k in sd if not k.endswith("_filter")}
    assert ov["synthesis.input.transform"] is G.synthesis.input.transform


def test_load_refusals():
    d = parity.load("g_t64.npz")
    sd = _params(d)
    G = Generator(**parity.meta(d, "meta/init_kwargs"))
    before = {k: v.copy() for k, v in G.original_state_dict().items()}

    bad = dict(sd, **{"synthesis.L3_36_64.extra": np.zeros(3, np.float32)})
    with pytest.raises(StateDictError, match=r"unknown.*synthesis\.L3_36_64\.extra"):
        G.load_original_state_dict(bad)
    bad = {k: v for k, v in sd.items() if k != "mapping.fc1.bias"}
    with pytest.raises(StateDictError, match=r"missing.*mapping\.fc1\.bias"):
        G.load_original_state_dict(bad)
    bad = dict(sd, **{"synthesis.L5_52_64.weight": sd["synthesis.L5_52_64.weight"][:, :-1]})
    with pytest.raises(StateDictError, match=r"synthesis\.L5_52_64\.weight.*shape \(64, 63, 3, 3\).*\(64, 64, 3, 3\)"):
        G.load_original_state_dict(bad)
    bad = dict(sd, **{"synthesis.L2_36_64.down_filter": sd["synthesis.L2_36_64.down_filter"] * 1.01})
    with pytest.raises(StateDictError, match=r"synthesis\.L2_36_64\.down_filter.*differs"):
        G.load_original_state_dict(bad)
    bad = dict(sd, **{"synthesis.L0_36_64.bias": np.full(64, np.nan, np.float32)})
    with pytest.raises(StateDictError, match=r"synthesis\.L0_36_64\.bias.*non-finite"):
        G.load_original_state_dict(bad)
    with pytest.raises(TypeError, match="mapping"):
        G.load_original_state_dict([1, 2])
    # nothing was assigned by the refused loads (validation happens before assignment)
    for k, v in G.original_state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # non-strict: unknown and missing entries are skipped, the rest is loaded
    part = {k: v for k, v in sd.items() if k.startswith("mapping.")}
    part["something.else"] = np.zeros(2)
    loaded_names = G.load_original_state_dict(part, strict=False)
    assert set(loaded_names) == {k for k in sd if k.startswith("mapping.")}
    np.testing.assert_array_equal(G.mapping.w_avg.numpy(), sd["mapping.w_avg"])


def test_checkpoint_and_keras_weights_round_trip(tmp_path):
    """tf.train.Checkpoint (used by the training loop) and Keras save_weights restore every variable."""
    kw = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=8)
    keras.utils.set_random_seed(1)
    G1 = Generator(**kw)
    G1.synthesis.input.transform.assign(np.diag([2.0, 3.0, 1.0]).astype(np.float32))
    G1.mapping.w_avg.assign(np.arange(8, dtype=np.float32))
    path = tf.train.Checkpoint(G=G1).save(str(tmp_path / "ckpt"))
    names = {n for n, _ in tf.train.list_variables(path)}
    assert len([n for n in names if n.startswith("G/")]) == len(G1.variables)
    keras.utils.set_random_seed(2)
    G2 = Generator(**kw)
    tf.train.Checkpoint(G=G2).restore(path).assert_consumed()
    keras.utils.set_random_seed(3)
    G3 = Generator(**kw)
    G1.save_weights(str(tmp_path / "g.weights.h5"))
    G3.load_weights(str(tmp_path / "g.weights.h5"))
    for G in (G2, G3):
        for (n, a), b in zip(G1.original_variables().items(), G.original_variables().values()):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)


def test_constructor_refuses_unknown_kwargs():
    kw = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=8)
    with pytest.raises(TypeError, match="bogus"):
        Generator(**kw, bogus=1)
    with pytest.raises(TypeError, match="depth"):
        Generator(**kw, mapping_kwargs=dict(depth=2))
    G = Generator(**kw, mapping_kwargs=dict(num_layers=1))
    assert G.init_kwargs == dict(kw, mapping_kwargs=dict(num_layers=1))
    G2 = Generator.from_config(G.get_config())
    assert G2.init_kwargs == G.init_kwargs
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 16, 8\]"):
        G.synthesis(np.zeros((2, 15, 8), np.float32))
    with pytest.raises(ValueError, match=r"z must have shape \[N, 8\]"):
        G(np.zeros((2, 7), np.float32))


# ----------------------------------------------------------------------------------------------------------------
# Behaviour on small random networks

def _small(cfg="t", res=32, c_dim=0, **extra):
    keras.utils.set_random_seed(123)
    kw = dict(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=res, img_channels=3, channel_base=1024, channel_max=32,
              mapping_kwargs=dict(num_layers=2), magnitude_ema_beta=0.9, **extra)
    if cfg == "r":
        kw.update(conv_kernel=1, use_radial_filters=True)
    return Generator(**kw)


def test_ema_updates_follow_formulas():
    G = _small()
    z = np.random.RandomState(1).randn(4, 32).astype(np.float32)
    w_avg0 = G.mapping.w_avg.numpy().copy()
    ws = G.mapping(z, update_emas=False)
    np.testing.assert_array_equal(G.mapping.w_avg.numpy(), w_avg0)
    G.mapping(z, update_emas=True)
    expect = 0.998 * w_avg0 + (1 - 0.998) * ws.numpy()[:, 0].mean(0)
    np.testing.assert_allclose(G.mapping.w_avg.numpy(), expect, rtol=1e-5, atol=1e-7)
    # truncation: w_avg + psi (w - w_avg) on the first `cutoff` ws only
    wt = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3).numpy()
    w_avg = G.mapping.w_avg.numpy()
    np.testing.assert_allclose(wt[:, :3], w_avg + 0.5 * (ws.numpy()[:, :3] - w_avg), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wt[:, 3:], ws.numpy()[:, 3:], rtol=1e-6, atol=1e-7)
    # magnitude EMA: beta * ema + (1 - beta) * mean(x^2) of the layer input
    outs = G.synthesis.run(ws)
    L3 = G.synthesis.synthesis_layers[3]
    ema0 = float(L3.magnitude_ema.numpy())
    L3(outs[3], ws[:, 4], update_emas=True)  # (a whole-network update would also change L3's input)
    expect = 0.9 * ema0 + 0.1 * float(np.mean(np.square(outs[3].numpy().astype(np.float64))))
    assert abs(float(L3.magnitude_ema.numpy()) - expect) < 1e-5 * max(1, expect)
    # and the layer divides its input by sqrt(magnitude_ema): scaling x and the EMA together changes nothing
    x, w = outs[3], ws[:, 4]
    y1 = L3(x, w).numpy()
    L3.magnitude_ema.assign(L3.magnitude_ema * 4)
    y2 = L3(x * 2, w).numpy()
    np.testing.assert_allclose(y2, y1, atol=1e-5, rtol=1e-5)


def test_conditional_and_gradients():
    G = _small(c_dim=5, res=16)
    z = np.random.RandomState(2).randn(2, 32).astype(np.float32)
    c = np.eye(5, dtype=np.float32)[[1, 3]]
    with pytest.raises(ValueError, match="c is required"):
        G(z)
    names = list(G.original_state_dict())
    assert names[names.index("mapping.w_avg") + 1:][:3] == ["mapping.embed.weight", "mapping.embed.bias",
                                                             "mapping.fc0.weight"]
    assert G.original_state_dict()["mapping.fc0.weight"].shape == (32, 64)

    @tf.function
    def step(z, c):
        with tf.GradientTape() as tape:
            img = G(z, c, update_emas=True)
            loss = tf.reduce_mean(tf.square(img))
        return loss, tape.gradient(loss, G.trainable_variables)
    loss, grads = step(tf.constant(z), tf.constant(c))
    assert np.isfinite(loss.numpy())
    assert len(grads) == len(G.trainable_variables)
    for v, g in zip(G.trainable_variables, grads):
        assert g is not None, v.path
        assert np.all(np.isfinite(g.numpy())), v.path
    # non-trainable buffers are not in trainable_variables
    trainable_ids = {id(v) for v in G.trainable_variables}
    for name, v in G.original_variables().items():
        is_buffer = name.rsplit(".", 1)[-1] in ("w_avg", "magnitude_ema", "transform", "freqs", "phases")
        assert (id(v) in trainable_ids) != is_buffer, name


def _psnr(a, b):
    return 20 * np.log10(2) - 10 * np.log10(np.mean(np.square(a.astype(np.float64) - b)))


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_translation_equivariance(cfg):
    """Shifting the input transform by k output pixels shifts the image by exactly k pixels: on a random 32x32
    network the overlap matches to PSNR > 60 dB (peak-to-peak 2, as EQ-T; measured 66-74 dB for T, 89-104 dB for R),
    while the opposite shift direction gives < 45 dB (measured 17-33 dB), so a wrong sign or scale is caught."""
    G = _small(cfg)
    z = np.random.RandomState(0).randn(4, 32).astype(np.float32)
    ws = G.mapping(z)
    for _ in range(3):  # settle the magnitude EMAs so activations have a realistic scale
        G.synthesis(ws, update_emas=True)
    img0 = G.synthesis(ws).numpy()
    assert img0.std() > 0.05
    res = G.img_resolution
    for k in (1, 3):
        for axis in (0, 1):  # 0 = x (width), 1 = y (height)
            psnr = {}
            for sign in (1, -1):
                T = np.eye(3, dtype=np.float32)
                T[axis, 2] = -sign * k / res
                G.synthesis.input.transform.assign(T)
                img1 = G.synthesis(ws).numpy()
                G.synthesis.input.transform.assign(np.eye(3, dtype=np.float32))
                a, b = (img1[:, :, k:], img0[:, :, :-k]) if axis == 0 else (img1[:, k:], img0[:, :-k])
                psnr[sign] = _psnr(a, b)
            assert psnr[1] > 60, (cfg, k, axis, psnr)
            assert psnr[-1] < 45, (cfg, k, axis, psnr)


def test_fully_connected_layer():
    keras.utils.set_random_seed(5)
    fc = FullyConnectedLayer(6, 4, activation="lrelu", lr_multiplier=0.1, weight_init=2.0, bias_init=[1, 2, 3, 4])
    assert not fc.built and fc.weight is None  # Keras convention: variables come from build()
    fc.build((None, 6))
    np.testing.assert_allclose(fc.bias.numpy() * 0.1, [1, 2, 3, 4], rtol=1e-6)
    x = np.random.RandomState(3).randn(5, 6).astype(np.float32)
    w = fc.weight.numpy() * 0.1 / np.sqrt(6)
    y = x @ w + np.array([1, 2, 3, 4])
    expect = np.where(y >= 0, y, 0.2 * y) * np.sqrt(2)
    np.testing.assert_allclose(fc(x).numpy(), expect, rtol=1e-5, atol=1e-6)
    cfg = fc.get_config()
    fc2 = FullyConnectedLayer.from_config(cfg)
    fc2.build()
    assert fc2.weight.shape == (6, 4) and cfg["bias_init"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="does not match"):
        FullyConnectedLayer(6, 4).build((None, 5))
    big = FullyConnectedLayer(512, 512, weight_init=1.0, lr_multiplier=0.01)
    big.build()
    assert abs(big.weight.numpy().std() * 0.01 - 1.0) < 0.01  # stored N(0, 1/lr_mul^2)


def test_synthesis_layer_shape_errors_and_config():
    G = _small(res=16)
    L = G.synthesis.synthesis_layers[0]
    with pytest.raises(ValueError, match=L.name):
        L(np.zeros((1, 35, 35, L.in_channels), np.float32), np.zeros((1, 32), np.float32))
    cfg = L.get_config()
    L2 = SynthesisLayer.from_config(cfg)
    assert L2.padding == L.padding and L2.up_taps == L.up_taps
    np.testing.assert_array_equal(L2.up_filter, L.up_filter)
    assert G.synthesis[L.name] is L
    with pytest.raises(KeyError, match="L99"):
        G.synthesis["L99"]


def test_distribute_mirrored_matches_single_device(tmp_path):
    """G built under a MirroredStrategy scope (2 logical CPUs) gives the single-device images; an update_emas step
    in strategy.run updates w_avg/magnitude_ema (mean over replicas). Runs in a subprocess (device setup)."""
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from afgan_tf.networks import Generator
        kw = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256,
                  channel_max=16, magnitude_ema_beta=0.5)
        keras.utils.set_random_seed(7)
        G1 = Generator(**kw)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            G2 = Generator(**kw)
        G2.load_original_state_dict(G1.original_state_dict())
        z = np.random.RandomState(0).randn(4, 16).astype(np.float32)
        print("PLAIN", np.abs(G2(z).numpy() - G1(z).numpy()).max())
        ref = G1(z, update_emas=True).numpy()  # single device, whole batch
        @tf.function
        def run(zz):
            return strategy.run(lambda x: G2(x, update_emas=True), args=(zz,))
        dz = strategy.experimental_distribute_values_from_function(
            lambda ctx: z[2 * ctx.replica_id_in_sync_group:2 * ctx.replica_id_in_sync_group + 2])
        parts = strategy.experimental_local_results(run(dz))
        img = np.concatenate([p.numpy() for p in parts])
        print("STEP", np.abs(img - ref).max())
        ema1 = [v.numpy() for n, v in G1.original_variables().items() if n.endswith(("w_avg", "magnitude_ema"))]
        ema2 = [v.numpy() for n, v in G2.original_variables().items() if n.endswith(("w_avg", "magnitude_ema"))]
        print("EMAS", max(float(np.abs(a - b).max()) for a, b in zip(ema1, ema2)))
        print("MOVED", max(float(np.abs(a - 1).max()) for a in ema1[:-1]))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + sys.path))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    vals = {ln.split()[0]: float(ln.split()[1]) for ln in r.stdout.splitlines() if ln[:1].isupper()}
    assert vals["PLAIN"] < 1e-5, r.stdout   # same weights, no update: identical images
    assert vals["STEP"] < 1e-5, r.stdout    # the updating step per replica == single device on the whole batch
    assert vals["EMAS"] < 1e-5, r.stdout    # replica-mean EMA updates == whole-batch update (equal halves)
    assert vals["MOVED"] > 1e-3, r.stdout   # and the magnitude EMAs did move


# ----------------------------------------------------------------------------------------------------------------
# Full-size networks: parameter counts (docs/ALGORITHM.md §3.7; T@64/T@128 from the original's timing file)

def _count(G):
    return sum(int(np.prod(v.shape)) for v in G.trainable_variables)


@pytest.mark.parametrize("cfg,res,cbase,expect", [("stylegan3-t", 256, 32768, 28472133),
                                                  ("stylegan3-r", 256, 32768, 18816387)])
def test_full_size_parameter_counts(cfg, res, cbase, expect):
    G = Generator(**presets.generator_kwargs(cfg, res, cbase=cbase))
    assert _count(G) == expect
    assert round(_count(G) / 1e6, 3) == {("stylegan3-t", 256): 28.472, ("stylegan3-r", 256): 18.816}[(cfg, res)]
    assert len(G.original_state_dict()) == 114
    assert G.synthesis.layer_names[-1] == f"L14_{res}_3"


@pytest.mark.slow
@pytest.mark.parametrize("cfg,res,cbase,expect_m", [
    ("stylegan3-t", 1024, 32768, 22.313), ("stylegan3-r", 1024, 32768, 15.093), ("stylegan3-t", 512, 32768, 24.874),
    ("stylegan3-r", 512, 32768, 16.666), ("stylegan3-t", 256, 16384, 23.320), ("stylegan3-r", 256, 16384, 15.780)])
def test_full_size_parameter_counts_slow(cfg, res, cbase, expect_m):
    G = Generator(**presets.generator_kwargs(cfg, res, cbase=cbase))
    assert round(_count(G) / 1e6, 3) == expect_m


def test_spec_state_dict_example_t256_cbase16384():
    """docs/ALGORITHM.md §3.7 table: names and shapes of the stylegan3-t 256x256 cbase 16384 generator."""
    G = Generator(**presets.generator_kwargs("stylegan3-t", 256, cbase=16384))
    shapes = {k: v.shape for k, v in G.original_state_dict().items()}
    assert len(shapes) == 114
    assert list(shapes)[:6] == ["synthesis.input.weight", "synthesis.input.transform", "synthesis.input.freqs",
                                "synthesis.input.phases", "synthesis.input.affine.weight",
                                "synthesis.input.affine.bias"]
    expect = {"synthesis.input.weight": (512, 512), "synthesis.input.freqs": (512, 2),
              "synthesis.input.affine.weight": (4, 512), "synthesis.L0_36_512.magnitude_ema": (),
              "synthesis.L3_52_512.up_filter": (24,), "synthesis.L3_52_512.down_filter": (12,),
              "synthesis.L7_148_362.weight": (362, 512, 3, 3), "synthesis.L8_148_256.affine.weight": (362, 512),
              "synthesis.L11_276_91.weight": (91, 128, 3, 3), "synthesis.L14_256_3.weight": (3, 64, 1, 1),
              "synthesis.L14_256_3.affine.weight": (64, 512), "mapping.w_avg": (512,),
              "mapping.fc1.weight": (512, 512)}
    for k, s in expect.items():
        assert shapes[k] == s, k
    assert "synthesis.L14_256_3.up_filter" not in shapes
    assert list(shapes)[-5:] == ["mapping.w_avg", "mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight",
                                 "mapping.fc1.bias"]
    assert round(_count(G) / 1e6, 3) == 23.320


def test_timing_file_parameter_counts():
    """num_params of the original's T@64 / T@128 default-capacity generators (official_cpu_timings.json)."""
    path = parity.fixture_path("official_cpu_timings.json", parity.BASELINES_DIR)
    cases = json.load(open(path))["cases"]
    for case in ("G_t64_fwd_b1", "G_t128_fwd_b1"):
        c = cases[case]
        G = Generator(**c["init_kwargs"])
        assert _count(G) == c["num_params"], case


# ----------------------------------------------------------------------------------------------------------------
# Presets

@pytest.mark.parametrize("fname", PARITY_FILES)
def test_presets_reproduce_parity_kwargs(fname):
    d = parity.load(fname)
    ref = parity.meta(d, "meta/init_kwargs")
    cfg = parity.meta(d, "meta/info")["cfg"]
    kw = presets.generator_kwargs(cfg, 64, cbase=1024, cmax=64, batch=32)
    kw.update(z_dim=ref["z_dim"], w_dim=ref["w_dim"])  # the parity nets use a reduced latent size
    # the parity script spelled out T's defaults (conv_kernel 3, no radial filters); train.py leaves them implicit
    defaults = dict(conv_kernel=3, use_radial_filters=False)
    extra = {k: v for k, v in ref.items() if k not in kw}
    assert all(defaults.get(k, object()) == v for k, v in extra.items()), extra
    assert {k: v for k, v in ref.items() if k in kw} == kw


def test_presets_values():
    t = presets.generator_kwargs("stylegan3-t", 256)
    assert t["channel_base"] == 32768 and t["channel_max"] == 512 and t["mapping_kwargs"] == {"num_layers": 2}
    assert abs(t["magnitude_ema_beta"] - 0.9988916) < 1e-7  # docs/ALGORITHM.md §11 (batch 32)
    assert abs(presets.generator_kwargs("stylegan3-t", 256, batch=64)["magnitude_ema_beta"] - 0.997784) < 1e-6
    r = presets.generator_kwargs("stylegan3-r", 256, fp32=True)
    assert (r["channel_base"], r["channel_max"], r["conv_kernel"], r["use_radial_filters"]) == (65536, 1024, 1, True)
    assert r["num_fp16_res"] == 0 and r["conv_clamp"] is None
    s2 = presets.generator_kwargs("stylegan2", 256)
    assert s2["mapping_kwargs"] == {"num_layers": 8} and "magnitude_ema_beta" not in s2 and "conv_kernel" not in s2
    dr = presets.discriminator_kwargs("stylegan3-r", 256, mbstd_group=8, freezed=2)
    assert dr["channel_base"] == 32768 and dr["channel_max"] == 512  # not doubled for R
    assert dr["epilogue_kwargs"] == {"mbstd_group_size": 8} and dr["block_kwargs"] == {"freeze_layers": 2}
    with pytest.raises(ValueError, match="cfg"):
        presets.generator_kwargs("stylegan3-x", 256)
    with pytest.raises(ValueError, match="img_resolution"):
        presets.generator_kwargs("stylegan3-t", 100)


def test_presets_agree_with_training_options():
    """Cross-check with the training options' independent implementation of train.py's kwargs."""
    options = pytest.importorskip("afgan_tf.training.options")
    for cfg in presets.CONFIGS:
        for fp32 in (False, True):
            depth = 8 if cfg.startswith("stylegan2") else 2
            G, D = options.network_kwargs(cfg, batch=32, cbase=16384, cmax=256, map_depth=depth, mbstd_group=4,
                                          freezed=1, fp32=fp32,
                                          img_resolution=128, img_channels=3, c_dim=2)
            assert presets.generator_kwargs(cfg, 128, c_dim=2, cbase=16384, cmax=256, fp32=fp32) == G, cfg
            assert presets.discriminator_kwargs(cfg, 128, c_dim=2, cbase=16384, cmax=256, freezed=1,
                                                fp32=fp32) == D, cfg
