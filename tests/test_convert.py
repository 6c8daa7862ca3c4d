"""Converter: fake original pickles (built with torch from the parity parameters) -> our networks -> parity outputs;
state_dict refusals; our .npz network snapshots (exact round trip, atomic writes); the convert_pkl CLI."""
import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from parity import assert_close, load, meta, nchw_to_nhwc

from afgan_tf import convert
from afgan_tf.networks.discriminator import Discriminator
from afgan_tf.networks.generator import StateDictError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(npz):
    return {k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")}


@pytest.fixture(scope="module")
def parity():
    g, d = load("g_t64.npz"), load("d_64.npz")
    return dict(g=g, d=d, gsd=_params(g), dsd=_params(d), gkw=meta(g, "meta/init_kwargs"),
                dkw=meta(d, "meta/init_kwargs"))


@pytest.fixture(scope="module")
def fake_pkl(parity, tmp_path_factory):
    pytest.importorskip("torch")
    from test_pickle_reader import make_fake_network_pkl
    tmp = tmp_path_factory.mktemp("pkl")
    marker = tmp / "EXECUTED"
    # G differs from G_ema (mapping bias shifted) so the keys cannot be mixed up unnoticed.
    g_train = dict(parity["gsd"])
    g_train["mapping.fc0.bias"] = g_train["mapping.fc0.bias"] + 1.0
    path = make_fake_network_pkl(tmp / "network-snapshot-000000.pkl",
                                 {"G": ("Generator", parity["gkw"], g_train),
                                  "D": ("Discriminator", parity["dkw"], parity["dsd"]),
                                  "G_ema": ("Generator", parity["gkw"], parity["gsd"])},
                                 marker, training_set_kwargs={"path": "data.zip", "use_labels": False})
    return path, marker


@pytest.fixture(scope="module")
def loaded(fake_pkl):
    path, marker = fake_pkl
    nets = convert.load_network_pkl(str(path))
    assert not marker.exists(), "module_src of the pickle was executed"
    return nets


def test_pickle_to_networks_matches_parity(parity, loaded):
    g, d = parity["g"], parity["d"]
    G, D = loaded["G_ema"], loaded["D"]
    assert isinstance(D, Discriminator)
    img = G(tf.constant(g["in/z"]), tf.constant(g["in/c"]))
    assert_close(img, nchw_to_nhwc(g["out/img_psi1.0"]), atol=1e-5, name="pkl->G_ema img_psi1.0")
    logits = D(tf.constant(nchw_to_nhwc(d["in/img"])))
    assert_close(logits, d["out/logits"], atol=2e-5, name="pkl->D logits")
    np.testing.assert_array_equal(loaded["G"].original_state_dict()["mapping.fc0.bias"],
                                  parity["gsd"]["mapping.fc0.bias"] + 1.0)
    assert loaded["training_set_kwargs"] == {"path": "data.zip", "use_labels": False}
    assert loaded["augment_pipe"] is None
    assert G.init_kwargs["channel_base"] == parity["gkw"]["channel_base"]
    assert D.init_kwargs["channel_base"] == parity["dkw"]["channel_base"]


def test_load_network_dispatches_pkl_and_which(fake_pkl):
    path, _ = fake_pkl
    nets = convert.load_network(str(path), which=("D",))
    assert nets["G"] is None and nets["G_ema"] is None and isinstance(nets["D"], Discriminator)


def test_generator_kinds(parity, tmp_path):
    sg2 = load("g_sg2_64.npz")
    sd2 = _params(sg2)
    assert any(k.startswith("synthesis.b4.") for k in sd2)
    from afgan_tf.networks import stylegan2
    G2 = convert.generator_from_state_dict(sd2, meta(sg2, "meta/init_kwargs"))
    assert isinstance(G2, stylegan2.Generator)
    sd2_back = G2.original_state_dict()
    for k, v in sd2.items():
        np.testing.assert_array_equal(sd2_back[k], v, err_msg=k)
    pytest.importorskip("torch")
    from test_pickle_reader import make_fake_network_pkl
    p = make_fake_network_pkl(tmp_path / "sg2.pkl", {"G_ema": ("Generator", meta(sg2, "meta/init_kwargs"), sd2),
                                                     "D": ("Discriminator", parity["dkw"], parity["dsd"])},
                              tmp_path / "EXECUTED")
    nets = convert.load_network(str(p))
    assert isinstance(nets["G_ema"], stylegan2.Generator) and isinstance(nets["D"], Discriminator)
    ws = nets["G_ema"].mapping(sg2["in/z"], None, truncation_psi=1.0).numpy()
    img = nets["G_ema"].synthesis(ws, noise_mode="const").numpy()
    assert_close(img, nchw_to_nhwc(sg2["out/img_psi1.0"]), atol=1e-5, name="sg2 pickle -> G_ema image")
    snap = tmp_path / "sg2.npz"
    convert.save_network_snapshot(snap, {"G_ema": nets["G_ema"]})
    again = convert.load_network(str(snap))["G_ema"]
    np.testing.assert_array_equal(again.synthesis(ws, noise_mode="const").numpy(), img)
    with pytest.raises(ValueError, match="neither synthesis.input"):
        convert.generator_from_state_dict({"mapping.fc0.weight": np.zeros((2, 2))}, parity["gkw"])
    G = convert.generator_from_state_dict(parity["gsd"], parity["gkw"])
    sd = G.original_state_dict()
    for k, v in parity["gsd"].items():
        np.testing.assert_array_equal(sd[k], v, err_msg=k)


@pytest.mark.parametrize("which", ["D", "G"])
@pytest.mark.parametrize("problem", ["unknown", "missing", "shape"])
def test_refusals_name_the_entry(parity, which, problem):
    sd = dict(parity["dsd"] if which == "D" else parity["gsd"])
    kw = parity["dkw"] if which == "D" else parity["gkw"]
    fn = convert.discriminator_from_state_dict if which == "D" else convert.generator_from_state_dict
    entry = "b16.conv1.weight" if which == "D" else "synthesis.L3_36_64.affine.weight"
    if problem == "unknown":
        entry = entry.replace("weight", "extra_tensor")
        sd[entry] = np.zeros(3, np.float32)
    elif problem == "missing":
        del sd[entry]
    else:
        sd[entry] = sd[entry][..., :-1]
    with pytest.raises(StateDictError, match=entry.replace(".", r"\.")):
        fn(sd, kw)


def test_bad_init_kwargs_named(parity):
    with pytest.raises(TypeError, match="channel_bass"):
        convert.discriminator_from_state_dict(parity["dsd"], dict(parity["dkw"], channel_bass=1))


def test_snapshot_roundtrip_exact(parity, loaded, tmp_path):
    nets = {k: loaded[k] for k in ("G", "D", "G_ema")}
    extra = {"cur_nimg": 1234, "training_set_kwargs": {"path": "x"}, "augment_p": np.float32(0.25)}
    path = convert.save_network_snapshot(str(tmp_path / "snap.npz"), nets, extra)
    z = np.load(path, allow_pickle=False)  # no pickle needed to read it
    m = json.loads(str(z["meta/D"]))
    assert m["class"] == "stylegan2.Discriminator" and m["init_kwargs"] == loaded["D"].init_kwargs
    assert json.loads(str(z["meta/G_ema"]))["class"] == "stylegan3.Generator"
    assert z["D/b4.fc.weight"].shape == (64, 1024)  # original layout
    z.close()
    back = convert.load_network(path)
    assert back["extra"]["cur_nimg"] == 1234 and back["extra"]["augment_p"] == 0.25
    assert back["training_set_kwargs"] == {"path": "x"}
    for key in ("G", "D", "G_ema"):
        a, b = nets[key].original_state_dict(), back[key].original_state_dict()
        assert list(a) == list(b)
        for n in a:
            assert a[n].dtype == b[n].dtype and a[n].shape == b[n].shape, n
            np.testing.assert_array_equal(a[n], b[n], err_msg=f"{key}/{n}")
    x = tf.constant(nchw_to_nhwc(parity["d"]["in/img"]))
    np.testing.assert_array_equal(back["D"](x).numpy(), nets["D"](x).numpy())
    zz = tf.constant(parity["g"]["in/z"][:2])
    np.testing.assert_array_equal(back["G_ema"](zz).numpy(), nets["G_ema"](zz).numpy())
    only = convert.load_network(path, which=("G_ema",))
    assert only["D"] is None and only["G_ema"] is not None


def test_snapshot_interrupted_write_leaves_nothing(parity, tmp_path, monkeypatch):
    D = Discriminator(**parity["dkw"])
    dest = tmp_path / "snap.npz"
    real_savez = np.savez

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        convert.save_network_snapshot(str(dest), {"D": D})
    assert not dest.exists()
    assert os.listdir(tmp_path) == [], "temporary file left behind"
    # an existing snapshot survives a failed overwrite untouched
    monkeypatch.setattr(np, "savez", real_savez)
    convert.save_network_snapshot(str(dest), {"D": D})
    before = dest.read_bytes()
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        convert.save_network_snapshot(str(dest), {"D": D})
    assert dest.read_bytes() == before and os.listdir(tmp_path) == ["snap.npz"]


def test_snapshot_errors_name_file_net_entry(parity, tmp_path):
    D = Discriminator(**parity["dkw"])
    path = convert.save_network_snapshot(str(tmp_path / "s.npz"), {"D": D})
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["D/b8.conv0.weight"] = arrays["D/b8.conv0.weight"][:, :-1]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(StateDictError, match=r"bad\.npz: D: .*b8\.conv0\.weight"):
        convert.load_network(str(bad))
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with pytest.raises(ValueError, match="other.npz: not an afgan-tf network snapshot"):
        convert.load_network(str(other))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        convert.load_network(str(tmp_path / "nope.npz"))
    with pytest.raises(TypeError, match="cannot save a network of type dict"):
        convert.save_network_snapshot(str(tmp_path / "x.npz"), {"D": {"a": 1}})
    with pytest.raises(ValueError, match="invalid network key"):
        convert.save_network_snapshot(str(tmp_path / "x.npz"), {"a/b": D})


def test_malicious_pkl_refused_by_load_network(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pkl"
    p.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="forbidden global 'os.system'"):
        convert.load_network(str(p))
    assert not marker.exists()


def test_convert_pkl_cli(parity, fake_pkl, tmp_path):
    path, marker = fake_pkl
    dest = tmp_path / "out"
    spec = importlib.util.spec_from_file_location("convert_pkl_tool", os.path.join(ROOT, "tools", "convert_pkl.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    lines = []
    written = tool.convert(str(path), str(dest), out=lines.append)  # the CLI's library entry (in-process: fast)
    text = "\n".join(lines)
    assert "stylegan2.Discriminator" in text and "Wrote snapshot" in text and set(written) == {
        "snapshot", "weights_h5", "init_kwargs"}
    assert sorted(os.listdir(dest)) == ["G_ema.init_kwargs.json", "G_ema.weights.h5", "network-snapshot.npz"]
    assert not marker.exists()
    info = json.loads((dest / "G_ema.init_kwargs.json").read_text())
    from afgan_tf.networks.generator import Generator
    G = Generator(**info["init_kwargs"])
    G.load_weights(str(dest / "G_ema.weights.h5"))
    g = parity["g"]
    img = G(tf.constant(g["in/z"]), tf.constant(g["in/c"]))
    assert_close(img, nchw_to_nhwc(g["out/img_psi1.0"]), atol=1e-5, name="convert_pkl weights.h5 img_psi1.0")
    nets = convert.load_network(str(dest / "network-snapshot.npz"))
    assert nets["extra"]["training_set_kwargs"] == {"path": "data.zip", "use_labels": False}
    # the real command line: flags, exit status and message (fails before TensorFlow is imported: fast)
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_pkl.py"),
                          f"--source={tmp_path / 'missing.pkl'}", f"--dest={dest}"], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 1 and "missing.pkl does not exist" in bad.stderr, bad.stderr[-2000:]
    usage = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_pkl.py")], capture_output=True,
                           text=True, timeout=600)
    assert usage.returncode != 0 and "--source and --dest are required" in usage.stderr
