"""Discriminator: parity with the original (d_64.npz), minibatch-stddev grouping, freeze-D, conditioning,
tf.function + second-order gradients, state_dict round trips and errors."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from parity import assert_close, load, meta, nchw_to_nhwc

from afgan_tf.networks.discriminator import Discriminator, MinibatchStdLayer, StateDictError


def _d64():
    d = load("d_64.npz")
    kw = meta(d, "meta/init_kwargs")
    sd = {k[len("param/"):]: d[k] for k in d.files if k.startswith("param/")}
    return d, kw, sd


@pytest.fixture(scope="module")
def d64():
    d, kw, sd = _d64()
    D = Discriminator(**kw)
    D.load_original_state_dict(sd)
    return d, kw, sd, D


def test_parity_d64_logits_blocks_grad(d64):
    d, kw, sd, D = d64
    img = tf.constant(nchw_to_nhwc(d["in/img"]))
    with tf.GradientTape() as tape:
        tape.watch(img)
        logits, blocks = D(img, c=d["in/c"], return_blocks=True)
        total = tf.reduce_sum(logits)
    grad = tape.gradient(total, img)
    assert logits.shape == (4, 1) and logits.dtype == tf.float32
    assert_close(logits, d["out/logits"], atol=2e-5, name="d_64 logits")
    for r in (64, 32, 16, 8):
        ref = nchw_to_nhwc(d[f"blocks/b{r}"])
        assert_close(blocks[f"b{r}"], ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), name=f"d_64 blocks/b{r}")
    gref = nchw_to_nhwc(d["out/grad_img_of_logits_sum"])
    assert_close(grad, gref, atol=1e-5 * float(np.abs(gref).max()), name="d_64 grad_img_of_logits_sum")


def test_state_dict_roundtrip_names_order_and_filters(d64):
    d, kw, sd, D = d64
    out = D.original_state_dict()
    assert list(out) == list(sd), "names / order differ from the original state_dict"
    for k, v in sd.items():
        assert out[k].shape == v.shape, k
        np.testing.assert_array_equal(out[k], v, err_msg=k)  # exact (includes the NCHW-flatten permutation)
    # our designed resample_filter equals the file's [1,3,3,1] outer product
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    np.testing.assert_allclose(out["b64.resample_filter"], f, atol=1e-7)


def test_fc_flatten_permutation_is_nchw(d64):
    """b4.fc must see the conv output in NCHW flatten order: compare the epilogue with a numpy computation."""
    d, kw, sd, D = d64
    x = tf.random.stateless_normal([4, 4, 4, 64], seed=[1, 2])  # conv output [N, 4, 4, C]
    y = D.b4.fc(tf.reshape(x, [4, -1])).numpy()
    w = sd["b4.fc.weight"] / np.sqrt(1024.0)  # [out, C*16], NCHW flatten
    pre = np.transpose(x.numpy(), (0, 3, 1, 2)).reshape(4, -1) @ w.T + sd["b4.fc.bias"]
    ref = np.where(pre >= 0, pre, 0.2 * pre) * np.sqrt(2)
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


def _mbstd_numpy(x, group):
    """Independent reference: sample n is in group n mod (N/G); stats over its G members."""
    n = x.shape[0]
    g = min(group, n)
    m = n // g
    out = np.empty((n,) + x.shape[1:3] + (1,), np.float64)
    for j in range(m):
        members = [j + k * m for k in range(g)]
        xs = x[members].astype(np.float64)
        std = np.sqrt(xs.var(axis=0) + 1e-8)  # biased variance over members
        out[members] = std.mean()
    return np.concatenate([x, out.astype(np.float32)], axis=-1)


def test_minibatch_std_grouping_numpy_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 5, 6)).astype(np.float32) * rng.uniform(0.5, 2.0, (8, 1, 1, 1)).astype(np.float32)
    y = MinibatchStdLayer(4, 1)(tf.constant(x)).numpy()
    np.testing.assert_allclose(y, _mbstd_numpy(x, 4), rtol=1e-5, atol=1e-6)
    # the groups for N=8, G=4 are {0,2,4,6} and {1,3,5,7}
    stat = y[:, 0, 0, -1]
    assert np.allclose(stat[[0, 2, 4, 6]], stat[0]) and np.allclose(stat[[1, 3, 5, 7]], stat[1])
    assert not np.isclose(stat[0], stat[1])
    x2 = x.copy()
    x2[0] *= 3.0
    stat2 = MinibatchStdLayer(4, 1)(tf.constant(x2)).numpy()[:, 0, 0, -1]
    assert np.allclose(stat2[[1, 3, 5, 7]], stat[[1, 3, 5, 7]]) and not np.isclose(stat2[2], stat[2])
    # N smaller than the group size: one group of N; num_channels=2 splits channels into 2 statistics
    x3 = rng.standard_normal((2, 4, 4, 6)).astype(np.float32)
    y3 = MinibatchStdLayer(4, 2)(tf.constant(x3)).numpy()
    for f in range(2):
        ref = np.sqrt(x3[..., f * 3:(f + 1) * 3].astype(np.float64).var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y3[:, :, :, 6 + f], ref, rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="divisible"):
        MinibatchStdLayer(4, 1)(tf.constant(rng.standard_normal((6, 2, 2, 3)).astype(np.float32)))


_SMALL = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
              epilogue_kwargs={"mbstd_group_size": 2})


@pytest.mark.parametrize("freeze", [0, 1, 3, 5])
def test_freeze_layers(freeze):
    D = Discriminator(**dict(_SMALL, block_kwargs={"freeze_layers": freeze}))
    order = []  # layer numbering of the original: fromrgb, conv0, conv1, skip per block
    for b in D.blocks:
        order += [layer for layer in (b.fromrgb, b.conv0, b.conv1, b.skip) if layer is not None]
    assert len(order) == D.num_layers == 7
    trainable_ids = {id(v) for v in D.trainable_weights}
    for i, layer in enumerate(order):
        vs = layer.weights
        assert vs
        for v in vs:
            assert (id(v) in trainable_ids) == (i >= freeze), (i, layer.name, v.path)
    # the epilogue is never frozen
    assert all(id(v) in trainable_ids for v in D.b4.weights)
    n_frozen = sum(len(layer.weights) for layer in order[:freeze])
    assert len(D.non_trainable_weights) == n_frozen
    # frozen layers still load / export under the same names
    sd = D.original_state_dict()
    D2 = Discriminator(**dict(_SMALL, block_kwargs={"freeze_layers": freeze}))
    D2.load_original_state_dict(sd)
    x = tf.random.stateless_normal([2, 16, 16, 3], seed=[0, 1])
    np.testing.assert_array_equal(D(x).numpy(), D2(x).numpy())


def test_conditional_discriminator():
    D = Discriminator(**dict(_SMALL, c_dim=5, mapping_kwargs={"num_layers": 3}))
    sd = D.original_state_dict()
    names = list(sd)
    assert sd["mapping.embed.weight"].shape == (16, 5) and sd["b4.out.weight"].shape == (16, 16)
    assert [n for n in names if n.startswith("mapping.fc")][-1] == "mapping.fc2.bias"
    assert names.index("mapping.embed.weight") > names.index("b8.skip.weight")
    assert names.index("mapping.fc2.bias") < names.index("b4.conv.weight")
    x = tf.random.stateless_normal([4, 16, 16, 3], seed=[3, 4])
    c1 = tf.one_hot([0, 1, 2, 3], 5)
    c2 = tf.one_hot([4, 4, 4, 4], 5)
    l1, l2 = D(x, c1), D(x, c2)
    assert l1.shape == (4, 1) and np.all(np.isfinite(l1.numpy()))
    assert not np.allclose(l1.numpy(), l2.numpy())
    # numpy reference of the projection: logits = sum(out * cmap) / sqrt(cmap_dim)
    cmap = D.mapping(c1).numpy()
    with pytest.raises(ValueError, match="c is None"):
        D(x)
    default = Discriminator(**dict(_SMALL, c_dim=5))
    assert len(default.mapping.fcs) == 8 and default.cmap_dim == 16
    assert cmap.shape == (4, 16)


def test_tf_function_and_second_order_gradient():
    keras.utils.set_random_seed(1)
    D = Discriminator(**_SMALL)
    x = tf.random.stateless_normal([4, 16, 16, 3], seed=[5, 6])
    # r1 = |d sum(D) / d img|^2 is exactly quadratic in the last (linear) layer's weight -- no lrelu mask depends on
    # it -- so a central difference is exact up to rounding, yet d r1 / d w needs the backward pass of every layer
    # to be differentiated again (double backprop through convs, resampling, lrelu, clamp, mbstd).
    var = D.b4.out.weight

    def r1_and_grad(img):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(img)
                total = tf.reduce_sum(D(img))
            g = inner.gradient(total, img)
            r1 = tf.reduce_sum(tf.square(g))
        return r1, outer.gradient(r1, var)

    r1_e, g_e = r1_and_grad(x)
    r1_f, g_f = tf.function(r1_and_grad)(x)
    assert g_e is not None and np.all(np.isfinite(g_e.numpy())) and np.abs(g_e.numpy()).max() > 0
    np.testing.assert_allclose(r1_f.numpy(), r1_e.numpy(), rtol=1e-5)
    np.testing.assert_allclose(g_f.numpy(), g_e.numpy(), rtol=1e-3, atol=1e-6 * np.abs(g_e.numpy()).max())
    # directional finite difference of r1 wrt the variable (central, float32)
    d = tf.random.stateless_normal(var.shape, seed=[7, 8])
    d = d / tf.norm(d)
    w0 = tf.identity(var)
    eps = 0.1 * float(tf.norm(w0))
    var.assign(w0 + eps * d)
    rp = r1_and_grad(x)[0].numpy()
    var.assign(w0 - eps * d)
    rm = r1_and_grad(x)[0].numpy()
    var.assign(w0)
    fd = (rp - rm) / (2 * eps)
    an = float(tf.reduce_sum(g_e * d))
    assert abs(fd - an) <= 1e-3 * float(tf.norm(g_e)), (fd, an)


@pytest.mark.parametrize("arch", ["orig", "skip"])
def test_other_architectures_run_and_roundtrip(arch):
    kw = dict(_SMALL, architecture=arch)
    D = Discriminator(**kw)
    sd = D.original_state_dict()
    if arch == "skip":
        assert "b8.fromrgb.weight" in sd and "b4.fromrgb.weight" in sd
    assert not any(".skip." in k for k in sd)
    rng = np.random.default_rng(0)
    sd2 = {k: (v if k.endswith("resample_filter") else rng.standard_normal(v.shape).astype(np.float32))
           for k, v in sd.items()}
    D2 = Discriminator(**kw)
    D2.load_original_state_dict(sd2)
    out = D2.original_state_dict()
    for k in sd2:
        np.testing.assert_array_equal(out[k], sd2[k], err_msg=k)
    y = D2(tf.random.stateless_normal([2, 16, 16, 3], seed=[9, 9]))
    assert y.shape == (2, 1) and np.all(np.isfinite(y.numpy()))


def test_errors():
    with pytest.raises(TypeError, match="bogus"):
        Discriminator(**dict(_SMALL, bogus=1))
    with pytest.raises(TypeError, match="freeze"):
        Discriminator(**dict(_SMALL, block_kwargs={"freezee": 1}))
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(**dict(_SMALL, img_resolution=24))
    D = Discriminator(**_SMALL)
    with pytest.raises(ValueError, match=r"\[N, 16, 16, 3\]"):
        D(tf.zeros([2, 3, 16, 16]))
    sd = D.original_state_dict()
    bad = dict(sd)
    bad["b4.fc.weight"] = bad["b4.fc.weight"][:, :-1]
    with pytest.raises(ValueError, match="b4.fc.weight"):
        D.load_original_state_dict(bad)
    bad = dict(sd)
    del bad["b16.conv1.bias"]
    with pytest.raises(StateDictError, match="b16.conv1.bias"):
        D.load_original_state_dict(bad)
    bad = dict(sd, **{"b4.extra.weight": np.zeros(1, np.float32)})
    with pytest.raises(StateDictError, match="b4.extra.weight"):
        D.load_original_state_dict(bad)
    bad = dict(sd)
    bad["b8.conv0.resample_filter"] = np.full((4, 4), 1 / 16, np.float32)
    with pytest.raises(ValueError, match="b8.conv0.resample_filter"):
        D.load_original_state_dict(bad)
    # non-strict: missing entries are left alone, unknown ones ignored
    part = {"b4.out.bias": np.array([3.0], np.float32), "unknown.x": np.zeros(2)}
    D.load_original_state_dict(part, strict=False)
    assert D.original_state_dict()["b4.out.bias"][0] == 3.0


def test_preset_kwargs_and_configs():
    from afgan_tf.networks import presets
    kw = presets.discriminator_kwargs("stylegan3-r", 32, cbase=512, cmax=32, freezed=2)
    D = Discriminator(**kw)
    assert D.init_kwargs == {**kw, "cmap_dim": None}
    assert len(D.non_trainable_weights) == 2 + 2  # fromrgb (w, b) + conv0 (w, b) of b32
    D2 = Discriminator.from_config(D.get_config())
    assert list(D2.original_state_dict()) == list(D.original_state_dict())
    blk = D.blocks[0]
    assert type(blk).from_config(blk.get_config()).get_config() == blk.get_config()
    ep = D.b4
    assert type(ep).from_config(ep.get_config()).get_config() == ep.get_config()
    Dn = Discriminator(**dict(kw, channel_base=np.int64(512)))  # numpy scalars are normalised
    assert type(Dn.init_kwargs["channel_base"]) is int


def test_fp16_blocks_when_gpu(d64, monkeypatch):
    """The fp16 path (used only with a GPU) is exercised on CPU by pretending a GPU is present."""
    from afgan_tf.networks import layers
    d, kw, sd, D = d64
    img = tf.constant(nchw_to_nhwc(d["in/img"]))
    ref = D(img).numpy()
    assert [b.use_fp16 for b in D.blocks] == [True, True, True, True]  # 64..8 with num_fp16_res=4
    monkeypatch.setattr(layers, "gpu_available", lambda: True)
    assert D.blocks[0].compute_dtype_for() == tf.float16
    logits, blocks = D(img, return_blocks=True)
    assert logits.dtype == tf.float32 and blocks["b64"].dtype == tf.float16
    err = np.abs(logits.numpy() - ref).max()
    assert 0 < err < 2e-2 * np.abs(ref).max(), err  # float16 rounding, not a different network
    np.testing.assert_array_equal(D(img, force_fp32=True).numpy(), ref)


def test_tf_train_checkpoint_saves_and_restores_every_variable(tmp_path):
    """tf.train.Checkpoint (used by training) must hold every D variable, incl. blocks and the mapping."""
    import tensorflow as tf
    from afgan_tf.networks.discriminator import Discriminator
    kw = dict(c_dim=3, img_resolution=16, img_channels=3, channel_base=64, channel_max=16,
              mapping_kwargs=dict(num_layers=2))
    tf.keras.utils.set_random_seed(11)
    D = Discriminator(**kw)
    path = tf.train.Checkpoint(D=D).save(str(tmp_path / "ckpt"))
    saved = {name for name, _ in tf.train.list_variables(path)
             if name.startswith("D/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")}
    assert len(saved) == len(D.variables), (len(saved), len(D.variables))
    tf.keras.utils.set_random_seed(12)
    D2 = Discriminator(**kw)
    tf.train.Checkpoint(D=D2).restore(path).assert_existing_objects_matched()
    for a, b in zip(D.variables, D2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
