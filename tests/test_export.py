"""SavedModel export: every signature in a clean process (no afgan_tf import, no op library), validation
messages, cross-process determinism of the seeds signature, saved_model_cli run (TF1 loader, as TF Serving),
the README's REST example against the signature, and the tf.data source."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from afgan_tf import export
from afgan_tf.networks import Generator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def small_generator(seed=3, c_dim=0):
    tf.keras.utils.set_random_seed(seed)
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  channel_base=128, channel_max=8, num_layers=4, num_critical=1, margin_size=2, num_fp16_res=0,
                  conv_clamp=256)
    # Move the learned input transform away from identity so the user transform composes with it.
    aff = G.synthesis.input.affine
    for v in aff.weights:
        v.assign(v + 0.05 * tf.random.normal(v.shape, seed=seed))
    G.mapping.w_avg.assign(0.1 * tf.random.normal([8], seed=seed + 1))
    return G


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    G = small_generator()
    path = str(tmp_path_factory.mktemp("export") / "sm")
    export.export_generator(G, path, max_batch=6)
    return G, path


def run_clean(code, *args):
    """Runs code in a fresh interpreter that never imports afgan_tf (and so has no op library)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    prog = "import sys\nsys.path = [p for p in sys.path if 'afgan' not in p and p not in ('', '.')]\n" + code + \
           "\nassert not any(m.startswith('afgan_tf') for m in sys.modules), 'afgan_tf was imported'\n"
    res = subprocess.run([PY, "-c", prog, *args], capture_output=True, text=True, env=env, cwd="/", timeout=600)
    return res


def reference_images(G, z, psi=1.0, transform=None):
    ws = G.mapping(z, None, truncation_psi=psi)
    if transform is None:
        return G.synthesis(ws).numpy()
    return G.synthesis(ws, transform=transform).numpy()


def test_clean_process_all_signatures_match(exported, tmp_path):
    G, path = exported
    rng = np.random.RandomState(0)
    z = rng.randn(3, 8).astype(np.float32)
    ws = G.mapping(z, None).numpy()
    inputs = tmp_path / "in.npz"
    np.savez(inputs, z=z, ws=ws)
    out = tmp_path / "out.npz"
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        path, inp, out = sys.argv[1:4]
        d = np.load(inp)
        m = tf.saved_model.load(path)
        assert sorted(m.signatures) == ['mapping', 'seeds', 'serving_default', 'synthesis'], sorted(m.signatures)
        e = tf.constant([], tf.float32)
        r = {}
        s = m.signatures['serving_default'](z=tf.constant(d['z']), truncation_psi=e,
                                            translate=tf.zeros([0, 2]), rotate=e)
        r['default_u8'] = s['images'].numpy(); r['default_f'] = s['images_float'].numpy()
        s = m.signatures['serving_default'](z=tf.constant(d['z']), truncation_psi=tf.constant([0.5, 0.7, 1.0]),
                                            translate=tf.constant([[0.1, -0.05]]), rotate=tf.constant([0.3]))
        r['knobs_f'] = s['images_float'].numpy()
        r['ws'] = m.signatures['mapping'](z=tf.constant(d['z']), truncation_psi=e)['ws'].numpy()
        r['ws07'] = m.signatures['mapping'](z=tf.constant(d['z']), truncation_psi=tf.constant([0.7]))['ws'].numpy()
        r['synth_f'] = m.signatures['synthesis'](ws=tf.constant(d['ws']))['images_float'].numpy()
        s = m.signatures['seeds'](seeds=tf.constant([5, 7], tf.int64), truncation_psi=e)
        r['seeds_f'] = s['images_float'].numpy(); r['seeds_z'] = s['z'].numpy()
        np.savez(out, **r)
    """)
    res = run_clean(code, path, str(inputs), str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    r = np.load(out)
    ref = reference_images(G, z)
    np.testing.assert_allclose(r["default_f"], ref, atol=2e-5)
    np.testing.assert_array_equal(r["default_u8"], export.to_uint8(tf.constant(r["default_f"])).numpy())
    np.testing.assert_allclose(r["ws"], ws, atol=1e-6)
    np.testing.assert_allclose(r["ws07"], G.mapping(z, None, truncation_psi=0.7).numpy(), atol=1e-6)
    np.testing.assert_allclose(r["synth_f"], ref, atol=2e-5)
    # Per-image psi + one broadcast transform == per-image reference runs.
    for i, psi in enumerate([0.5, 0.7, 1.0]):
        T = export.user_transform([[0.1, -0.05]], [0.3])
        ref_i = reference_images(G, z[i:i + 1], psi=psi, transform=T)
        np.testing.assert_allclose(r["knobs_f"][i:i + 1], ref_i, atol=2e-5)
    # Seeds: stateless normal draws.
    z_seeds = np.stack([tf.random.stateless_normal([8], seed=[s, 0]).numpy() for s in (5, 7)])
    np.testing.assert_allclose(r["seeds_z"], z_seeds, atol=0)
    np.testing.assert_allclose(r["seeds_f"], reference_images(G, z_seeds), atol=2e-5)


def test_translation_knob_shifts_content(exported):
    """An integer-pixel translate through the serving path moves the image by that many pixels (margin aside)."""
    G, _ = exported
    z = np.random.RandomState(1).randn(1, 8).astype(np.float32)
    a = reference_images(G, z, transform=export.user_transform([[0.0, 0.0]], [0.0]))
    b = reference_images(G, z, transform=export.user_transform([[2 / 16, 0.0]], [0.0]))
    np.testing.assert_allclose(a, reference_images(G, z), atol=1e-6)
    # The content moves right by 2 pixels; compare the overlap away from the border.
    diff = np.abs(b[:, 4:-4, 6:-4] - a[:, 4:-4, 4:-6]).max()
    assert diff < 0.2 * np.abs(a).max(), diff


def test_no_custom_ops_in_default_export(exported):
    _, path = exported
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        sm.ParseFromString(fh.read())
    ops = set()
    for mg in sm.meta_graphs:
        ops |= {n.op for n in mg.graph_def.node}
        for f in mg.graph_def.library.function:
            ops |= {n.op for n in f.node_def}
    registered = set(tf.raw_ops.__dict__)
    unknown = {o for o in ops if o not in registered}
    assert not unknown, f"non-stock ops in the SavedModel: {unknown}"
    info = json.load(open(os.path.join(path, "assets.extra", "afgan_tf_export.json")))
    assert info["needs_op_library"] is False and info["max_batch"] == 6


@pytest.mark.parametrize("kind", ["z_dim", "rank", "nan_psi", "batch", "psi_len", "scalar_z", "zero_batch",
                                  "scalar_psi", "translate_rank", "translate_len", "inf_rotate", "vector_z"])
def test_bad_requests_fail_with_message(exported, kind):
    _, path = exported
    m = tf.saved_model.load(path)
    sig = m.signatures["serving_default"]
    e = tf.constant([], tf.float32)
    z, psi, expect = tf.zeros([2, 8]), e, None
    if kind == "z_dim":
        z, expect = tf.zeros([2, 5]), "z must have shape [N, 8]"
    elif kind == "rank":
        z, expect = tf.zeros([2, 8, 1]), "z must have rank 2"
    elif kind == "nan_psi":
        psi, expect = tf.constant([np.nan]), "truncation_psi must be finite"
    elif kind == "batch":
        z, expect = tf.zeros([7, 8]), "exceeds the maximum of 6"
    elif kind == "psi_len":
        psi, expect = tf.constant([0.5, 0.5, 0.5]), "truncation_psi must have 0, 1 or N"
    elif kind == "scalar_z":  # used to fail with "slice index 0 of dimension 0 out of bounds"
        z, expect = tf.constant(0.5), "z must have rank 2"
    elif kind == "vector_z":
        z, expect = tf.zeros([8]), "z must have rank 2"
    elif kind == "zero_batch":
        z, expect = tf.zeros([0, 8]), "z must hold at least one row"
    elif kind == "scalar_psi":
        psi, expect = tf.constant(0.5), "truncation_psi must have rank 1"
    translate, rotate = tf.zeros([0, 2]), e
    if kind == "translate_rank":
        translate, expect = tf.zeros([2]), "translate must have rank 2"
    elif kind == "translate_len":
        translate, expect = tf.zeros([3, 2]), "translate must have 0, 1 or N"
    elif kind == "inf_rotate":
        rotate, expect = tf.constant([np.inf]), "rotate must be finite"
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)) as info:
        sig(z=z, truncation_psi=psi, translate=translate, rotate=rotate)
    assert expect in str(info.value), str(info.value)[-500:]
    assert "out of bounds" not in str(info.value)


@pytest.mark.parametrize("sig_name,kwargs,expect", [
    ("synthesis", dict(ws=np.zeros([0, 0, 8], np.float32)), "ws must have shape"),
    ("synthesis", "zero_ws", "ws must hold at least one row"),
    ("synthesis", dict(ws=np.float32(1.0)), "ws must have rank 3"),
    ("synthesis", "nan_ws", "ws must be finite"),
    ("mapping", dict(z=np.float32(1.0), truncation_psi=np.zeros([0], np.float32)), "z must have rank 2"),
    ("mapping", dict(z=np.zeros([0, 8], np.float32), truncation_psi=np.zeros([0], np.float32)),
     "z must hold at least one row"),
    ("seeds", dict(seeds=np.zeros([0], np.int64), truncation_psi=np.zeros([0], np.float32)),
     "seeds must hold at least one entry"),
    ("seeds", dict(seeds=np.int64(3), truncation_psi=np.zeros([0], np.float32)), "seeds must have rank 1"),
    ("seeds", dict(seeds=np.arange(7, dtype=np.int64), truncation_psi=np.zeros([0], np.float32)),
     "exceeds the maximum of 6"),
])
def test_other_signatures_refuse_bad_requests(exported, sig_name, kwargs, expect):
    """Every signature refuses batch 0 (synthesis used to return an empty result), scalars and wrong shapes."""
    G, path = exported
    sig = tf.saved_model.load(path).signatures[sig_name]
    if kwargs == "zero_ws":
        kwargs = dict(ws=np.zeros([0, G.num_ws, 8], np.float32))
    elif kwargs == "nan_ws":
        kwargs = dict(ws=np.full([1, G.num_ws, 8], np.nan, np.float32))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)) as info:
        sig(**{k: tf.constant(v) for k, v in kwargs.items()})
    assert expect in str(info.value), str(info.value)[-500:]


def test_seeds_deterministic_across_processes(exported, tmp_path):
    _, path = exported
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load(sys.argv[1])
        s = m.signatures['seeds'](seeds=tf.constant([0, 1, 123456789], tf.int64), truncation_psi=tf.constant([0.8]))
        np.save(sys.argv[2], s['images'].numpy())
    """)
    outs = []
    for k in range(2):
        f = str(tmp_path / f"s{k}.npy")
        res = run_clean(code, path, f)
        assert res.returncode == 0, res.stderr[-3000:]
        outs.append(np.load(f))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].dtype == np.uint8 and outs[0].shape == (3, 16, 16, 3)


def test_saved_model_cli_run_tf1_loader(exported, tmp_path):
    """saved_model_cli uses the TF1 session loader, like tensorflow_model_server."""
    G, path = exported
    cli = os.path.join(os.path.dirname(PY), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli not installed next to the interpreter")
    np.save(tmp_path / "seeds.npy", np.array([3, 4], np.int64))
    np.save(tmp_path / "psi.npy", np.array([], np.float32))
    outdir = tmp_path / "cli_out"
    res = subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "seeds",
                          "--inputs", f"seeds={tmp_path / 'seeds.npy'};truncation_psi={tmp_path / 'psi.npy'}",
                          "--outdir", str(outdir)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert res.returncode == 0, res.stderr[-3000:]
    img = np.load(outdir / "images_float.npy")
    z = np.stack([tf.random.stateless_normal([8], seed=[s, 0]).numpy() for s in (3, 4)])
    np.testing.assert_allclose(img, reference_images(G, z), atol=2e-5)


def test_readme_rest_example_matches_signature(exported):
    """The README's TF Serving REST :predict example uses exactly the signature's inputs and outputs."""
    _, path = exported
    text = open(os.path.join(REPO, "README.md")).read()
    m = re.search(r"<!-- rest-request -->\s*```json\s*(.*?)```", text, re.S)
    assert m, "README.md lacks the REST request example block"
    req = json.loads(m.group(1))
    m2 = re.search(r"<!-- rest-response -->\s*```json\s*(.*?)```", text, re.S)
    assert m2, "README.md lacks the REST response example block"
    resp = json.loads(m2.group(1))
    sig = tf.saved_model.load(path).signatures[req.get("signature_name", "serving_default")]
    spec = sig.structured_input_signature[1]
    assert set(req["inputs"]) == set(spec), (set(req["inputs"]), set(spec))
    feed = {k: tf.constant(np.asarray(v, dtype=spec[k].dtype.as_numpy_dtype).reshape(
        [len(v)] + ([] if np.ndim(v) == 1 else list(np.shape(v)[1:])))) for k, v in req["inputs"].items()}
    if "z" in feed and feed["z"].shape[1] != 8:
        feed["z"] = tf.zeros([feed["z"].shape[0], 8])  # the README example shows z_dim of its own network
    out = sig(**feed)
    assert set(resp["outputs"]) <= set(out), (set(resp["outputs"]), set(out))


def test_tf_data_source_shapes_and_determinism():
    G = small_generator()
    ds = export.generated_dataset(G, seeds=[1, 2, 3, 4, 5], batch_size=2, truncation_psi=0.7,
                                  translate=np.zeros([5, 2]), rotate=np.linspace(0, 1, 5))
    batches = list(ds.as_numpy_iterator())
    assert [b["image"].shape for b in batches] == [(2, 16, 16, 3), (2, 16, 16, 3), (1, 16, 16, 3)]
    again = list(export.generated_dataset(G, seeds=[1, 2, 3, 4, 5], batch_size=2, truncation_psi=0.7,
                                          translate=np.zeros([5, 2]), rotate=np.linspace(0, 1, 5)).as_numpy_iterator())
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(np.concatenate([b["seed"] for b in batches]), [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="translate must be"):
        export.generated_dataset(G, seeds=[1, 2], translate=np.zeros([3, 2]))


def test_keras_format_round_trip(tmp_path):
    """Keras users: save/load the generator with Keras' own format."""
    import keras
    G = small_generator(seed=5)
    f = str(tmp_path / "g.keras")
    G.save(f)
    G2 = keras.saving.load_model(f)
    z = np.random.RandomState(2).randn(2, 8).astype(np.float32)
    np.testing.assert_allclose(G2(z).numpy(), G(z).numpy(), atol=1e-6)


def test_stylegan2_export_const_noise_and_no_transform(tmp_path):
    """A StyleGAN2 generator exports too: const noise (deterministic), translate/rotate refused clearly."""
    from afgan_tf.networks import stylegan2
    tf.keras.utils.set_random_seed(4)
    G = stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                            mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8)
    path = export.export_generator(G, str(tmp_path / "sg2"), max_batch=4)
    sig = tf.saved_model.load(path).signatures["serving_default"]
    z = np.random.RandomState(3).randn(2, 8).astype(np.float32)
    e = tf.constant([], tf.float32)
    out = sig(z=tf.constant(z), truncation_psi=e, translate=tf.zeros([0, 2]), rotate=e)["images_float"].numpy()
    ref = G.synthesis(G.mapping(z, None), noise_mode="const").numpy()
    np.testing.assert_allclose(out, ref, atol=2e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="need a StyleGAN3 generator"):
        sig(z=tf.constant(z), truncation_psi=e, translate=tf.constant([[0.1, 0.0]]), rotate=e)


def test_export_tool_flags_match_docstring_and_errors_are_one_line(tmp_path):
    """tools/export_savedmodel.py: the docstring's dashed --max-batch works (absl used to reject it); a hostile
    --network and an existing --outdir end in exit 1 and one Error line."""
    from afgan_tf import convert
    tool = os.path.join(REPO, "tools", "export_savedmodel.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    doc = open(tool).read().split('"""')[1]
    assert "--max-batch=64" in doc and "Exit status" in doc
    snap = convert.save_network_snapshot(str(tmp_path / "g.npz"), {"G_ema": small_generator()})
    out = tmp_path / "sm"
    r = subprocess.run([PY, tool, f"--network={snap}", f"--outdir={out}", "--max-batch=2"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(out / "assets.extra" / "afgan_tf_export.json"))["max_batch"] == 2
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    for args, expect in [((f"--network={evil}", f"--outdir={tmp_path / 'x'}"), "forbidden global 'os.system'"),
                         ((f"--network={snap}", f"--outdir={out}"), "already exists")]:
        r = subprocess.run([PY, tool, *args], capture_output=True, text=True, env=env, timeout=600)
        lines = [ln for ln in r.stderr.splitlines()
                 if ln.strip() and not re.match(r"[IWEF]\d{4} |WARNING: All log|To enable the following", ln)]
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and expect in lines[0], \
            r.stderr[-3000:]
