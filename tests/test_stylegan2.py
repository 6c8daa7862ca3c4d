"""StyleGAN2 generator (afgan_tf.networks.stylegan2): parity with the original (g_sg2_64.npz), state dict,
noise modes, config, fp16 path, and the path-length regulariser of afgan_tf.training.loss against an independent
forward-mode computation."""
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from afgan_tf.networks import layers as net_layers
from afgan_tf.networks import stylegan2
from afgan_tf.networks.generator import StateDictError
from afgan_tf.networks.stylegan2 import Generator

from parity import assert_close, load, meta, nchw_to_nhwc

FILE = "g_sg2_64.npz"
ATOL_WS = 1e-5
ATOL_IMG = 2e-5     # |img| <= 5.3; the official float32 output itself is within 4.1e-6 of a float64 re-derivation


@pytest.fixture(scope="module")
def npz():
    return load(FILE)


@pytest.fixture(scope="module")
def g64(npz):
    G = Generator(**meta(npz, "meta/init_kwargs"))
    sd = {k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")}
    G.load_original_state_dict(sd)
    return G


def _sd(npz):
    return {k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")}


# -- parity -------------------------------------------------------------------------------------------------------

def test_parameters_load_and_round_trip(npz, g64):
    sd = _sd(npz)
    ours = g64.original_state_dict()
    assert list(ours) == list(sd), "entry names / order differ from the original state_dict"
    for k, v in sd.items():
        assert ours[k].shape == v.shape, k
        np.testing.assert_array_equal(ours[k], v, err_msg=k)
    assert g64.num_ws == meta(npz, "meta/block_info")["num_ws"] == 10
    assert [b.name for b in g64.synthesis.blocks] == meta(npz, "meta/info")["block_names"]


def test_block_constants(npz, g64):
    for info, block in zip(meta(npz, "meta/block_info")["blocks"], g64.synthesis.blocks):
        assert block.name == info["name"]
        assert (block.in_channels, block.out_channels) == (info["in_channels"], info["out_channels"])
        assert (block.num_conv, block.num_torgb, block.is_last) == (info["num_conv"], info["num_torgb"],
                                                                     info["is_last"])
        assert block.use_fp16 == info["use_fp16_flag"]
        assert block.torgb.weight_gain == pytest.approx(info["torgb_weight_gain"])
        assert block.conv1.act_gain == pytest.approx(info["act_gain"])


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_ws(npz, g64, psi):
    ws = g64.mapping(npz["in/z"], None, truncation_psi=psi)
    assert_close(ws.numpy(), npz[f"out/ws_psi{psi}"], ATOL_WS, name=f"sg2 ws psi{psi}")


def test_mapping_layers(npz, g64):
    from afgan_tf.networks.layers import _normalize_2nd_moment
    x = _normalize_2nd_moment(tf.constant(npz["in/z"]))
    for i, fc in enumerate(g64.mapping.fcs):
        x = fc(x)
        assert_close(x.numpy(), npz[f"mapping/fc{i}"], ATOL_WS, name=f"sg2 mapping fc{i}")


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_image_const_noise(npz, g64, psi):
    img = g64(npz["in/z"], None, truncation_psi=psi, noise_mode="const")
    assert img.dtype == tf.float32
    assert_close(img.numpy(), nchw_to_nhwc(npz[f"out/img_psi{psi}"]), ATOL_IMG, name=f"sg2 img psi{psi} const")


def test_image_no_noise(npz, g64):
    ws = npz["out/ws_psi1.0"]
    img = g64.synthesis(ws, noise_mode="none")
    assert_close(img.numpy(), nchw_to_nhwc(npz["out/img_psi1.0_noise_none"]), ATOL_IMG, name="sg2 img noise none")


def test_every_block_end_to_end(npz, g64):
    idx = [int(i) for i in npz["layers/batch_indices"]]
    outs = g64.synthesis.run(npz["out/ws_psi1.0"][idx], noise_mode="const")
    for (x, img), block in zip(outs, g64.synthesis.blocks):
        assert_close(x.numpy(), nchw_to_nhwc(npz[f"layers/{block.name}/x"]), ATOL_IMG, name=f"sg2 {block.name} x")
        assert_close(img.numpy(), nchw_to_nhwc(npz[f"layers/{block.name}/img"]), ATOL_IMG,
                     name=f"sg2 {block.name} img")


def test_every_block_and_layer_from_reference_inputs(npz, g64):
    """Each block (and its conv0 / torgb) fed with the original's outputs of the previous block."""
    idx = [int(i) for i in npz["layers/batch_indices"]]
    ws = npz["out/ws_psi1.0"][idx]
    syn = g64.synthesis
    x_prev = img_prev = None
    for block, bws in zip(syn.blocks, syn.block_ws(tf.constant(ws))):
        name = block.name
        x, img = block(x_prev, img_prev, bws, noise_mode="const")
        assert_close(x.numpy(), nchw_to_nhwc(npz[f"layers/{name}/x"]), ATOL_IMG, name=f"sg2 {name} x (ref input)")
        assert_close(img.numpy(), nchw_to_nhwc(npz[f"layers/{name}/img"]), ATOL_IMG,
                     name=f"sg2 {name} img (ref input)")
        if x_prev is not None:
            c0 = block.conv0(x_prev, bws[:, 0], noise_mode="const")
            assert_close(c0.numpy(), nchw_to_nhwc(npz[f"layers/{name}/conv0"]), ATOL_IMG, name=f"sg2 {name} conv0")
        rgb = block.torgb(nchw_to_nhwc(npz[f"layers/{name}/x"]), bws[:, -1])
        assert_close(rgb.numpy(), nchw_to_nhwc(npz[f"layers/{name}/torgb"]), ATOL_IMG, name=f"sg2 {name} torgb")
        x_prev = nchw_to_nhwc(npz[f"layers/{name}/x"])
        img_prev = nchw_to_nhwc(npz[f"layers/{name}/img"])


def test_style_mixing(npz, g64):
    info = meta(npz, "meta/info")["style_mixing"]
    k = int(npz["mix/crossover"])
    assert info["crossover"] == k
    ws1 = g64.mapping(npz["in/z"], None)
    ws2 = g64.mapping(npz["mix/z2"], None)
    assert_close(ws2.numpy(), npz["mix/ws2"], ATOL_WS, name="sg2 mix ws2")
    ws = tf.concat([ws1[:, :k], ws2[:, k:]], axis=1)
    assert_close(ws.numpy(), npz["mix/ws"], ATOL_WS, name="sg2 mix ws")
    img = g64.synthesis(ws, noise_mode=info["noise_mode"])
    assert_close(img.numpy(), nchw_to_nhwc(npz["mix/img"]), ATOL_IMG, name="sg2 mix img")


# -- state dict / kwargs refusals -----------------------------------------------------------------------------------

def test_state_dict_refusals(npz):
    G = Generator(**meta(npz, "meta/init_kwargs"))
    sd = _sd(npz)
    before = G.original_state_dict()
    bad = dict(sd, **{"synthesis.b8.conv9.weight": np.zeros(3, np.float32)})
    with pytest.raises(StateDictError, match="synthesis.b8.conv9.weight"):
        G.load_original_state_dict(bad)
    bad = {k: v for k, v in sd.items() if k != "synthesis.b16.conv1.noise_const"}
    with pytest.raises(StateDictError, match="synthesis.b16.conv1.noise_const"):
        G.load_original_state_dict(bad)
    bad = dict(sd, **{"synthesis.b4.const": np.zeros((64, 4, 5), np.float32)})
    with pytest.raises(StateDictError, match=r"synthesis.b4.const.*\(64, 4, 5\)"):
        G.load_original_state_dict(bad)
    f = sd["synthesis.b32.conv0.resample_filter"].copy()
    f[0, 0] += 0.01
    with pytest.raises(StateDictError, match="synthesis.b32.conv0.resample_filter"):
        G.load_original_state_dict(dict(sd, **{"synthesis.b32.conv0.resample_filter": f}))
    w = sd["synthesis.b8.torgb.weight"].copy()
    w[0, 0, 0, 0] = np.nan
    with pytest.raises(StateDictError, match="synthesis.b8.torgb.weight"):
        G.load_original_state_dict(dict(sd, **{"synthesis.b8.torgb.weight": w}))
    # nothing was assigned by the refused loads (validation before assignment)
    for k, v in G.original_state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # non-strict: unknown ignored, the rest loaded
    loaded = G.load_original_state_dict(dict(sd, extra=np.zeros(1)), strict=False)
    assert "extra" not in loaded and len(loaded) == sum(1 for k in sd if not k.endswith("resample_filter"))


def test_constructor_refusals(npz):
    kw = meta(npz, "meta/init_kwargs")
    with pytest.raises(TypeError, match="bogus"):
        Generator(**kw, bogus=1)
    with pytest.raises(TypeError, match="depth"):
        Generator(**dict(kw, mapping_kwargs={"depth": 8}))
    with pytest.raises(ValueError, match="architecture"):
        Generator(**dict(kw, architecture="unet"))
    with pytest.raises(ValueError, match="img_resolution"):
        Generator(**dict(kw, img_resolution=48))


def test_call_refusals(g64):
    with pytest.raises(ValueError, match="noise_mode"):
        g64.synthesis(tf.zeros([1, 10, 64]), noise_mode="fixed")
    with pytest.raises(ValueError, match=r"ws must have shape \[N, 10, 64\]"):
        g64.synthesis(tf.zeros([1, 9, 64]))
    with pytest.raises(ValueError, match="z must have shape"):
        g64(tf.zeros([1, 63]))


# -- small networks: noise modes, architectures, config, fp16 -----------------------------------------------------

def _tiny(**kw):
    keras.utils.set_random_seed(3)
    args = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                conv_clamp=256, mapping_kwargs=dict(num_layers=2))
    args.update(kw)
    G = Generator(**args)
    rng = np.random.RandomState(4)
    for v in G.trainable_variables:     # move everything away from its init (noise strengths, biases != 0)
        a = v.numpy()
        v.assign((a * (1 + 0.1 * rng.randn(*a.shape)) + 0.2 * rng.randn(*a.shape)).astype(np.float32))
    return G


def test_noise_modes():
    G = _tiny()
    ws = G.mapping(np.random.RandomState(0).randn(2, 8).astype(np.float32), None)
    a, b = G.synthesis(ws).numpy(), G.synthesis(ws).numpy()            # default 'random'
    assert np.abs(a - b).max() > 1e-3, "random noise must differ between calls"
    c1, c2 = G.synthesis(ws, noise_mode="const").numpy(), G.synthesis(ws, noise_mode="const").numpy()
    np.testing.assert_array_equal(c1, c2)
    none = G.synthesis(ws, noise_mode="none").numpy()
    assert np.abs(c1 - none).max() > 1e-3
    for blk in G.synthesis.blocks:                                     # zero strength: every mode equals 'none'
        for layer in (getattr(blk, "conv0", None), blk.conv1):
            if layer is not None:
                layer.noise_strength.assign(0.0)
    np.testing.assert_allclose(G.synthesis(ws).numpy(), none_zero := G.synthesis(ws, noise_mode="none").numpy())
    np.testing.assert_allclose(G.synthesis(ws, noise_mode="const").numpy(), none_zero)


def test_use_noise_false_has_no_noise_entries():
    G = _tiny(use_noise=False)
    assert not [k for k in G.original_state_dict() if "noise" in k]


@pytest.mark.parametrize("arch", ["orig", "resnet"])
def test_other_architectures(arch):
    G = _tiny(architecture=arch)
    sd = G.original_state_dict()
    assert G.num_ws == 4
    assert ("synthesis.b4.torgb.weight" in sd) is False
    assert "synthesis.b8.torgb.weight" in sd
    assert ("synthesis.b8.skip.weight" in sd) is (arch == "resnet")
    ws = G.mapping(np.random.RandomState(1).randn(2, 8).astype(np.float32), None)
    outs = G.synthesis.run(ws, noise_mode="const")
    assert outs[0][1] is None                                          # no image from b4
    b8 = G.synthesis.b8
    x = outs[0][0]
    bws = G.synthesis.block_ws(ws)[1]
    # independent recombination of the block from its layers
    y = b8.conv1(b8.conv0(x, bws[:, 0], noise_mode="const"), bws[:, 1], noise_mode="const",
                 gain=math.sqrt(0.5) if arch == "resnet" else 1.0)
    if arch == "resnet":
        y = y + b8.skip(x, gain=math.sqrt(0.5))
    np.testing.assert_allclose(outs[1][0].numpy(), y.numpy(), atol=1e-5)
    np.testing.assert_allclose(outs[1][1].numpy(), b8.torgb(y, bws[:, 2]).numpy(), atol=1e-5)
    G2 = Generator(**G.init_kwargs)
    G2.load_original_state_dict(sd)
    np.testing.assert_allclose(G2.synthesis(ws, noise_mode="const").numpy(), outs[-1][1].numpy(), atol=1e-6)


def test_config_and_keras_save(tmp_path):
    G = _tiny()
    assert G.snapshot_class == "stylegan2.Generator"
    G2 = Generator.from_config(json.loads(json.dumps(G.get_config())))
    assert G2.init_kwargs == G.init_kwargs and G2.num_ws == G.num_ws
    path = str(tmp_path / "g.keras")
    G.save(path)
    G3 = keras.saving.load_model(path)
    assert type(G3) is Generator
    z = np.random.RandomState(2).randn(2, 8).astype(np.float32)
    np.testing.assert_array_equal(G3(z, noise_mode="const").numpy(), G(z, noise_mode="const").numpy())
    assert not hasattr(G.synthesis, "input"), "StyleGAN2 has no synthesis.input (tools check hasattr)"


def test_fp16_blocks_when_gpu(monkeypatch):
    """The float16 path (GPU only) exercised on CPU by pretending a GPU is present."""
    G = _tiny(num_fp16_res=1)
    assert [b.use_fp16 for b in G.synthesis.blocks] == [False, True]
    ws = G.mapping(np.random.RandomState(5).randn(2, 8).astype(np.float32), None)
    ref = G.synthesis(ws, noise_mode="const").numpy()
    monkeypatch.setattr(net_layers, "gpu_available", lambda: True)
    outs = G.synthesis.run(ws, noise_mode="const")
    assert outs[1][0].dtype == tf.float16 and outs[1][1].dtype == tf.float32 and outs[0][0].dtype == tf.float32
    img = outs[-1][1].numpy()
    assert np.abs(img - ref).max() < 2e-2 * max(1.0, np.abs(ref).max())
    np.testing.assert_allclose(G.synthesis(ws, noise_mode="const", force_fp32=True).numpy(), ref, atol=1e-6)


def test_modulated_conv_matches_grouped_numpy():
    """modulated_conv2d_sg2 (scale-activations form, up=1) vs a literal per-sample weight numpy conv."""
    rng = np.random.RandomState(7)
    x = rng.randn(2, 5, 5, 3).astype(np.float32)
    w = rng.randn(3, 3, 3, 4).astype(np.float32)
    s = rng.randn(2, 3).astype(np.float32)
    y = stylegan2.modulated_conv2d_sg2(tf.constant(x), w, s, padding=1).numpy()
    xp = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    for n in range(2):
        wm = w.astype(np.float64) * s[n][None, None, :, None]
        wm = wm / np.sqrt((wm ** 2).sum(axis=(0, 1, 2), keepdims=True) + 1e-8)
        ref = np.zeros((5, 5, 4))
        for i in range(5):
            for j in range(5):
                ref[i, j] = np.einsum("uvc,uvco->o", xp[n, i:i + 3, j:j + 3], wm)
        np.testing.assert_allclose(y[n], ref, atol=1e-5)


# -- path-length regularisation (afgan_tf.training.loss) -------------------------------------------------------------

class _ConstNoiseG:
    """G view whose synthesis uses noise_mode='const' (deterministic), for the loss helper."""

    def __init__(self, G):
        self.G, self.mapping = G, G.mapping
        self.trainable_variables = G.trainable_variables

    def synthesis(self, ws, **kw):
        return self.G.synthesis(ws, noise_mode="const", **kw)


def _pl_independent(G, z, y, m0, decay, weight, gain, grad_through_mean=True):
    """The original's formula, with J_w^T y from forward-mode JVPs (one per ws coordinate):
    L_n = sqrt(mean_k sum_j (J^T y)_{n,k,j}^2), m = m0 + decay (mean_n L_n - m0),
    loss = gain * mean_n weight (L_n - m)^2. ``grad_through_mean``: m carries the gradient of mean L (torch's
    ``pl_mean.lerp(...)`` is not detached in the original; only the buffer copy is)."""
    ws = G.mapping(z, None)                                            # [n, num_ws, w_dim]
    n, k, d = ws.shape
    # one batched pass: sample i repeated k*d times, copy j carrying the tangent e_j (samples are independent)
    wsr = tf.repeat(ws, k * d, axis=0)                                 # [n*k*d, num_ws, w_dim]
    tangent = tf.tile(tf.reshape(tf.eye(k * d), [k * d, k, d]), [n, 1, 1])
    with tf.autodiff.ForwardAccumulator(wsr, tangent) as acc:
        img = G.synthesis(wsr, noise_mode="const")                     # [n*k*d, H, W, C]
    yr = tf.repeat(tf.convert_to_tensor(y), k * d, axis=0)
    cols = tf.reduce_sum(acc.jvp(img) * yr, axis=[1, 2, 3])            # [n*k*d] = (J^T y)_{n, j}
    jty = tf.reshape(cols, [n, k, d])
    lengths = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(jty), axis=2), axis=1))
    m = m0 + decay * (tf.reduce_mean(lengths) - m0)
    if not grad_through_mean:
        m = tf.stop_gradient(m)
    return gain * tf.reduce_mean(weight * tf.square(lengths - m)), m, lengths


def _pl_setup(decay, m0, monkeypatch, **g_kwargs):
    from afgan_tf.training.loss import StyleGAN2Loss
    monkeypatch.setenv("AFGAN_TF_FORCE_REF", "1")                     # forward-mode through the reference ops
    G = _tiny(**g_kwargs)
    gz = np.random.RandomState(11).randn(5, 8).astype(np.float32)     # batch 5, shrink 2 -> 2 samples
    loss_obj = StyleGAN2Loss(_ConstNoiseG(G), None, pl_weight=2.0, pl_batch_shrink=2, pl_decay=decay,
                             rng=tf.random.Generator.from_seed(123))
    loss_obj.pl_mean.assign(m0)
    y = tf.random.Generator.from_seed(123).normal([2, 8, 8, 3]) / 8.0  # the same draw: N(0,1)/sqrt(H*W)
    return G, gz, loss_obj, y


@pytest.mark.parametrize("decay,m0", [(0.01, 0.0), (0.5, 0.3)])
def test_path_length_value(decay, m0, monkeypatch):
    G, gz, loss_obj, y = _pl_setup(decay, m0, monkeypatch)
    loss, stats = loss_obj.greg_loss(tf.constant(gz), None, gain=4.0)
    ref, m, lengths = _pl_independent(G, tf.constant(gz[:2]), y, m0, decay, 2.0, 4.0)
    assert float(ref) > 1e-4
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-4)
    np.testing.assert_allclose(float(loss_obj.pl_mean.numpy()), float(m), rtol=1e-5)
    np.testing.assert_allclose(stats["Loss/pl_penalty"].numpy(), np.square(lengths - m), rtol=1e-4, atol=1e-8)


def _flat(grads, variables):
    return np.concatenate([np.zeros(int(np.prod(v.shape))) if g is None else np.ravel(np.asarray(g))
                           for g, v in zip(grads, variables)])


def _pl_grads(decay, m0, monkeypatch):
    """(loss helper's gradient, independent gradient (original semantics), same with pl_mean stopped, G, f)."""
    # smooth activation: the path length contains lrelu' (a step), so finite differences need a smooth network
    G, gz, loss_obj, y = _pl_setup(decay, m0, monkeypatch, activation="swish")
    variables = list(G.trainable_variables)
    tf_vars = [v.value for v in variables]
    _, grads, _ = loss_obj.greg_grads(tf.constant(gz), None, gain=4.0, variables=tf_vars)
    z = tf.constant(gz[:2])
    refs = []
    for through in (True, False):
        with tf.GradientTape() as tape:
            ref, _, _ = _pl_independent(G, z, y, m0, decay, 2.0, 4.0, grad_through_mean=through)
        refs.append(tape.gradient(ref, tf_vars))
    fn = tf.function(lambda: _pl_independent(G, z, y, m0, decay, 2.0, 4.0)[0])
    return grads, refs[0], refs[1], variables, lambda: float(fn())


@pytest.mark.parametrize("decay,m0", [(0.01, 0.0), (0.5, 0.3)])
def test_path_length_gradient(decay, m0, monkeypatch):
    """Gradient w.r.t. every G parameter: the loss helper (reverse over reverse) vs the independent computation
    (reverse over forward) with the original's semantics (the gradient flows through the lerp'ed pl_mean; only
    the stored copy is detached — with decay 0.5 this matters); the independent gradient is itself checked by
    central finite differences along one random direction per variable."""
    got, ref_orig, _, variables, f = _pl_grads(decay, m0, monkeypatch)
    g, r = _flat(got, variables), _flat(ref_orig, variables)
    assert np.abs(r).max() > 0
    err = np.abs(g - r).max() / np.abs(r).max()
    assert err < 1e-3, f"path-length gradient differs from the independent computation by {err:.3g} (relative)"
    rng = np.random.RandomState(9)
    checked = 0
    for v, gr in zip(variables, ref_orig):
        o = v.numpy()
        dv = np.asarray(rng.randn(*v.shape), np.float32)
        eps = 1e-3 * max(1.0, float(np.abs(o).max()))
        v.assign(o + eps * dv)
        fp = f()
        v.assign(o - eps * dv)
        fm = f()
        v.assign(o)
        fd = (fp - fm) / (2 * eps)
        ad = 0.0 if gr is None else float(np.sum(np.asarray(gr) * dv))
        assert abs(ad - fd) <= 2e-2 * max(abs(fd), 1e-1), f"{v.path}: autodiff {ad:.6g} vs finite diff. {fd:.6g}"
        checked += 1
    assert checked == len(variables)


def test_eq_metrics_refuse_stylegan2():
    from afgan_tf.metrics.equivariance import eq_psnr
    G = _tiny()
    with pytest.raises(ValueError, match="synthesis.input.transform"):
        eq_psnr(G, np.zeros([2, 8], np.float32), "int")


def test_graph_and_xla_match_eager():
    G = _tiny()
    z = np.random.RandomState(6).randn(2, 8).astype(np.float32)
    ref = G(z, truncation_psi=0.5, noise_mode="const").numpy()
    for jit in (False, True):
        f = tf.function(lambda zz: G(zz, truncation_psi=0.5, noise_mode="const"), jit_compile=jit)
        np.testing.assert_allclose(f(tf.constant(z)).numpy(), ref, atol=1e-5, err_msg=f"jit_compile={jit}")


def test_conditional_generator():
    G = _tiny(c_dim=3)
    assert "mapping.embed.weight" in G.original_state_dict()
    z = np.random.RandomState(8).randn(2, 8).astype(np.float32)
    c = np.eye(3, dtype=np.float32)[[0, 2]]
    a = G(z, c, noise_mode="const").numpy()
    b = G(z, c[::-1], noise_mode="const").numpy()
    assert a.shape == (2, 8, 8, 3) and np.abs(a - b).max() > 1e-4
    with pytest.raises(ValueError, match="c is required"):
        G(z, noise_mode="const")


# -- config b: Fourier-feature input (input_type='fourier') ------------------------------------------------------

def _tiny_fourier(**kw):
    return _tiny(input_type="fourier", **kw)


def test_fourier_input_construction_config_and_state_dict(tmp_path):
    G, G0 = _tiny_fourier(), _tiny()
    assert G.num_ws == G0.num_ws == 4                                  # call convention unchanged
    assert "input_type" not in G0.init_kwargs and G.init_kwargs["input_type"] == "fourier"
    assert hasattr(G.synthesis, "input") and not hasattr(G0.synthesis, "input")
    inp = G.synthesis.input
    assert (inp.size, inp.sampling_rate, inp.bandwidth, inp.channels) == ([4, 4], 4.0, 2.0, 8)
    f = inp.freqs.numpy()
    assert np.all(np.hypot(f[:, 0], f[:, 1]) < 2.0)                   # inside the band of the 4x4 grid
    sd = G.original_state_dict()
    assert "synthesis.b4.const" not in sd and "synthesis.b4.const" in G0.original_state_dict()
    assert [k for k in sd if k.startswith("synthesis.input.")] == [
        "synthesis.input.weight", "synthesis.input.transform", "synthesis.input.freqs", "synthesis.input.phases",
        "synthesis.input.affine.weight", "synthesis.input.affine.bias"]
    trainable = {id(v) for v in G.trainable_variables}
    assert id(inp.weight) in trainable                                 # the 1x1 feature mix is learned
    assert not any(id(v) in trainable for v in inp.affine.weights)     # config b: not w-transformed
    z = np.random.RandomState(2).randn(3, 8).astype(np.float32)
    ref = G(z, noise_mode="const").numpy()
    assert ref.shape == (3, 8, 8, 3) and np.all(np.isfinite(ref))
    # rebuild from init_kwargs + original state dict (other seed: freqs / phases / weights must come from sd)
    keras.utils.set_random_seed(11)
    np.random.seed(11)
    G2 = Generator(**json.loads(json.dumps(G.init_kwargs)))
    assert np.abs(G2.synthesis.input.freqs.numpy() - f).max() > 1e-3
    G2.load_original_state_dict(sd)
    np.testing.assert_array_equal(G2(z, noise_mode="const").numpy(), ref)
    G3 = Generator.from_config(json.loads(json.dumps(G.get_config())))
    assert G3.synthesis.input_type == "fourier" and G3.init_kwargs == G.init_kwargs
    path = str(tmp_path / "g.keras")
    G.save(path)
    G4 = keras.saving.load_model(path)
    np.testing.assert_array_equal(G4(z, noise_mode="const").numpy(), ref)
    with pytest.raises(ValueError, match="input_type"):
        _tiny(input_type="fourrier")
    with pytest.raises(ValueError, match="input_type='const'"):
        G0.synthesis(G0.mapping(z, None), transform=np.eye(3, dtype=np.float32))


def _fourier_numpy(inp, T):
    """Independent evaluation of the config-b input: features sin(2π(f·(A p + v) + φ)) at the 4x4 sample centres
    (A, v = rotation / translation part of the user transform T; no w-transform), mixed by weight / sqrt(C)."""
    f = inp.freqs.numpy().astype(np.float64)                           # [C, 2]
    ph = inp.phases.numpy().astype(np.float64)                         # [C]
    W = inp.weight.numpy().astype(np.float64) / math.sqrt(inp.channels)
    T = np.asarray(T, np.float64)
    g = (np.arange(4) + 0.5 - 2) / 4.0                                 # ±0.375, ±0.125 canvas units
    py, px = np.meshgrid(g, g, indexing="ij")                          # rows = y, columns = x
    q = np.einsum("ab,hwb->hwa", T[:2, :2], np.stack([px, py], -1)) + T[:2, 2]   # [4, 4, 2]
    feats = np.sin(2 * np.pi * (np.einsum("hwa,ca->hwc", q, f) + ph))  # [4, 4, C]
    return feats @ W


@pytest.mark.parametrize("tx,ty,deg", [(0.0, 0.0, 0.0), (0.13, -0.07, 0.0), (-0.2, 0.05, 37.0)])
def test_fourier_input_matches_numpy_formula(tx, ty, deg):
    from afgan_tf import cli as tu
    G = _tiny_fourier()
    T = tu.user_transform((tx, ty), deg)
    expect = _fourier_numpy(G.synthesis.input, T)
    got = G.synthesis.fourier_features(2, transform=T.astype(np.float32)).numpy()
    assert got.shape == (2, 4, 4, 8)
    np.testing.assert_allclose(got[0], expect, atol=2e-5)
    np.testing.assert_allclose(got[1], expect, atol=2e-5)
    G.synthesis.input.transform.assign(T.astype(np.float32))           # the buffer the metrics / tools set
    np.testing.assert_allclose(G.synthesis.fourier_features(1).numpy()[0], expect, atol=2e-5)
    # the network really starts from these features: b4 computed from them by hand == run()'s first block
    ws = G.mapping(np.random.RandomState(5).randn(1, 8).astype(np.float32), None)
    b4 = G.synthesis.b4
    x, img = b4(tf.constant(expect[None], tf.float32), None, G.synthesis.block_ws(ws)[0], noise_mode="const")
    x_run, img_run = G.synthesis.run(ws, noise_mode="const")[0]
    np.testing.assert_allclose(x_run.numpy(), x.numpy(), atol=2e-5)
    np.testing.assert_allclose(img_run.numpy(), img.numpy(), atol=2e-5)


def test_fourier_input_translation_by_one_sample_shifts_features():
    """transform[0, 2] = −1/4 (one input sample at 4 samples / unit) moves the features one column right, and
    transform[1, 2] = +1/4 one row up; ws does not change the features (fixed, not w-transformed)."""
    G = _tiny_fourier()
    syn = G.synthesis
    f0 = syn.fourier_features(1).numpy()[0]
    T = np.eye(3, dtype=np.float32)
    T[0, 2], T[1, 2] = -0.25, 0.25
    f1 = syn.fourier_features(1, transform=T).numpy()[0]
    np.testing.assert_allclose(f1[:-1, 1:], f0[1:, :-1], atol=2e-5)
    assert np.abs(f1 - f0).max() > 0.1
    # no dependence on w: _tiny() perturbed every trainable variable, the frozen affine still maps any w to the
    # identity transform (zero weight, bias (1, 0, 0, 0))
    w = tf.constant(np.random.RandomState(0).randn(2, 8), tf.float32)
    np.testing.assert_array_equal(syn.input.affine(w).numpy(), [[1, 0, 0, 0]] * 2)


def test_fourier_gradients_finite():
    """Gradients w.r.t. ws (path-length regulariser) and all trainable variables exist and are finite
    (the input's band edge b = s0/2 has no roll-off division)."""
    G = _tiny_fourier()
    z = np.random.RandomState(7).randn(2, 8).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        ws = G.mapping(z, None)
        tape.watch(ws)
        img = G.synthesis(ws, noise_mode="random")
        loss = tf.reduce_sum(img * tf.constant(np.random.RandomState(8).randn(*img.shape), tf.float32))
    grads = tape.gradient(loss, [ws] + G.trainable_variables)
    assert all(g is not None for g in grads)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    gi = tape.gradient(loss, G.synthesis.input.weight)
    assert np.abs(gi.numpy()).max() > 0


def _eq_nets(res=16):
    from afgan_tf.networks import presets
    nets = {}
    for cfg in ("stylegan2-fourier", "stylegan3-t"):
        keras.utils.set_random_seed(0)
        nets[cfg] = presets.generator_class(cfg)(**presets.generator_kwargs(cfg, res, cbase=512, cmax=16,
                                                                              fp32=True))
    return nets


def test_eq_metrics_stylegan2_fourier_vs_stylegan3_t():
    """EQ-T of config b is measurable (finite) and far below StyleGAN3-T's for random nets with the same seeds and
    translations; an identity transform scores inf (the metric uses const noise, so orig == img)."""
    from afgan_tf.metrics.equivariance import eq_psnr, psnr_from_sums
    nets = _eq_nets(16)
    assert isinstance(nets["stylegan2-fourier"], Generator)
    z = np.random.RandomState(1).randn(4, 512).astype(np.float32)
    t = np.array([[2 / 16, 0.0], [-1 / 16, 2 / 16], [0.0, -2 / 16], [1 / 16, 1 / 16]])
    out = {}
    for cfg, G in nets.items():
        _, s1, s2 = eq_psnr(G, z, "int", translate=t, return_sums=True)
        out[cfg] = float(psnr_from_sums(s1.sum(), s2.sum()))
        np.testing.assert_array_equal(G.synthesis.input.transform.numpy(), np.eye(3))   # restored
    assert np.isfinite(out["stylegan2-fourier"]) and 5 < out["stylegan2-fourier"] < 40, out
    assert out["stylegan3-t"] > out["stylegan2-fourier"] + 25, out
    same = eq_psnr(nets["stylegan2-fourier"], z[:2], "int", translate=np.zeros([2, 2]))
    assert np.all(np.isinf(same)), same


def test_export_translate_stylegan2_fourier(tmp_path):
    """The SavedModel's per-image translate / rotate reach the config-b input (same as setting the buffer)."""
    from afgan_tf import export
    from afgan_tf import cli as tu
    G = _tiny_fourier()
    path = export.export_generator(G, str(tmp_path / "sg2f"), max_batch=4)
    sig = tf.saved_model.load(path).signatures["serving_default"]
    z = np.random.RandomState(3).randn(2, 8).astype(np.float32)
    out = sig(z=tf.constant(z), truncation_psi=tf.constant([1.0]), translate=tf.constant([[0.1, -0.05]]),
              rotate=tf.constant([0.5]))["images_float"].numpy()
    tu.set_input_transform(G, tu.user_transform((0.1, -0.05), 0.5 * 180 / math.pi))
    ref = G.synthesis(G.mapping(z, None), noise_mode="const").numpy()
    G.synthesis.input.transform.assign(np.eye(3, dtype=np.float32))
    np.testing.assert_allclose(out, ref, atol=2e-5)
    plain = G.synthesis(G.mapping(z, None), noise_mode="const").numpy()
    assert np.abs(out - plain).max() > 1e-2


def test_eq_compare_tool(tmp_path):
    """tools/eq_compare.py: config a is n/a (no input transform), config b gets the same numbers as eq_metric
    with the same seed; JSON / Markdown / picture written."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import eq_compare
    from afgan_tf.metrics.equivariance import eq_metric
    rec = eq_compare.run(str(tmp_path), res=16, cbase=256, cmax=8, cfgs=["stylegan2", "stylegan2-fourier"],
                         num=4, seed=2, num_avg=2, frames=3, log=lambda *a: None)
    a, b = rec["results"]
    assert a["eqt50k_int"] is a["eqr50k"] is a["eqt50k_frac"] is None and a["snr"]["eqr50k"] is None
    G = eq_compare.build_random("stylegan2-fourier", 16, 256, 8, net_seed=0)
    for name in ("eqt50k_frac", "eqr50k"):
        direct = eq_metric(G, name, num_samples=4, batch_size=4, seed=2)["psnr"]
        assert np.isfinite(b[name]) and abs(b[name] - direct) < 1e-6, (name, b[name], direct)
    assert abs(b["snr"]["eqr50k"] - (b["eqr50k"] + 20 * np.log10(b["rms"] / 2))) < 1e-9
    md = (tmp_path / "eq_compare.md").read_text()
    assert "| StyleGAN2 (config a, const input) |" in md and "n/a" in md and f"{b['eqr50k']:.2f}" in md
    assert json.loads((tmp_path / "eq_compare.json").read_text())["results"][1]["eqr50k"] == b["eqr50k"]
    from PIL import Image
    assert Image.open(tmp_path / "eq_compare.png").size[0] > 0


def test_fourier_snapshot_round_trip(tmp_path):
    """Our .npz snapshot (training checkpoints, tools) rebuilds the config-b generator with its Fourier input."""
    from afgan_tf.convert import load_network, save_network_snapshot
    G = _tiny_fourier()
    path = save_network_snapshot(str(tmp_path / "snap.npz"), {"G_ema": G})
    G2 = load_network(path)["G_ema"]
    assert isinstance(G2, Generator) and G2.synthesis.input_type == "fourier"
    z = np.random.RandomState(9).randn(2, 8).astype(np.float32)
    np.testing.assert_array_equal(G2(z, noise_mode="const").numpy(), G(z, noise_mode="const").numpy())
