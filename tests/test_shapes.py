"""The procedural shapes dataset (afgan_tf/data/shapes.py) and its exact metric (afgan_tf/metrics/shapes.py)."""
import json
import os

import numpy as np
import pytest

from afgan_tf.data import shapes as sd
from afgan_tf.metrics import shapes as sm
from tests.helpers_shapes import ShapesOracleG, gaussian_blobs, point_supersampled_coverage


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from afgan_tf.data import default
    monkeypatch.setenv(default.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def reference():
    return sm.ShapesReference(sd.generate(256, 24, seed=0)[0])


def test_deterministic_by_seed_and_in_range():
    a, pa = sd.generate(32, 20, seed=3)
    b, _ = sd.generate(32, 20, seed=3)
    c, _ = sd.generate(32, 20, seed=4)
    assert a.shape == (32, 20, 20, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    assert set(np.unique(pa["kind"])) == {0, 1}
    assert np.all((pa["size"] >= sd.SIZE_MIN) & (pa["size"] <= sd.SIZE_MAX))
    assert np.all(np.linalg.norm(pa["fg"] - pa["bg"], axis=1) >= sd.MIN_CONTRAST)
    ext = pa["size"] * 20 * np.where(pa["kind"] == 1, sd.SQUARE_HALF, 1)
    assert np.all((pa["cx"] - ext >= 1 - 1e-9) & (pa["cx"] + ext <= 19 + 1e-9))
    # sub-pixel positions: the fractional parts are spread, not snapped
    assert np.std(pa["cx"] % 1) > 0.2


def test_coverage_matches_point_supersampling():
    p = sd.sample_params(8, 16, seed=1)
    ref = point_supersampled_coverage(p, 16, n=128)
    got = sd.coverage(p["kind"], p["cx"], p["cy"], p["size"], 16)
    sq = p["kind"] == 1
    # 128 x 128 points per pixel: the reference itself is within ~1/128 per edge crossing
    assert np.abs(got[sq] - ref[sq]).max() < 0.02
    assert np.abs(got[~sq] - ref[~sq]).max() < 0.02
    np.testing.assert_allclose(got.sum(axis=(1, 2)), np.pi * (p["size"] * 16) ** 2, rtol=0.01)


def test_coverage_gradient_matches_finite_differences():
    p = sd.sample_params(6, 16, seed=2)
    _, da = sd.coverage(p["kind"], p["cx"], p["cy"], p["size"], 16, grad=True)
    h = 1e-5
    for k, name in enumerate(("cx", "cy", "size")):
        step = h / 16 if name == "size" else h
        q_hi, q_lo = dict(p), dict(p)
        q_hi[name], q_lo[name] = p[name] + step, p[name] - step
        hi = sd.coverage(q_hi["kind"], q_hi["cx"], q_hi["cy"], q_hi["size"], 16)
        lo = sd.coverage(q_lo["kind"], q_lo["cx"], q_lo["cy"], q_lo["size"], 16)
        np.testing.assert_allclose(da[..., k], (hi - lo) / (2 * h), atol=1e-4)


def test_spec_resolves_to_cached_dataset(cache):
    from afgan_tf.data import dataset_info, make_dataset
    assert sd.parse_spec("shapes") == (sd.DEFAULT_COUNT, sd.DEFAULT_RES, 0)
    assert sd.parse_spec("/x/y/shapes:10:16:5") == (10, 16, 5)
    assert sd.parse_spec("not-shapes:1") is None
    with pytest.raises(ValueError, match="resolution must be in"):
        sd.parse_spec("shapes:10:8")
    info = dataset_info("shapes:12:16:7")
    assert (info["count"], info["resolution"], info["channels"], info["format"]) == (12, 16, 3, "tfrecord")
    assert info["path"].startswith(str(cache))
    x = np.concatenate([b.numpy() for b, _ in make_dataset(os.path.abspath("shapes:12:16:7"), batch_size=5,
                                                           shuffle=False, repeat=False, drop_remainder=False)])
    want, _ = sd.generate(12, 16, seed=7)
    np.testing.assert_array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), want)


def test_tf_source_and_dataset_tool_writer(tmp_path):
    from afgan_tf.data import build_dataset, make_dataset
    imgs, params = sd.generate(6, 16, seed=1)
    el = list(sd.shapes_tf_dataset(6, 16, seed=1).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([e[0] for e in el]), imgs)
    np.testing.assert_allclose([e[1]["cx"] for e in el], params["cx"], rtol=1e-6)
    with pytest.raises(ValueError, match="disagrees"):
        build_dataset("shapes:6:16:1", str(tmp_path / "bad"), resolution=32, log=lambda m: None)
    res = build_dataset("shapes:6:16:1", str(tmp_path / "ds"), resolution=16, shards=2, log=lambda m: None)
    assert res["written"] == 6
    meta = json.load(open(tmp_path / "ds" / "dataset.json"))
    assert meta["source_kind"] == "shapes"
    x = np.concatenate([b.numpy() for b, _ in make_dataset(str(tmp_path / "ds"), batch_size=6, shuffle=False,
                                                           repeat=False)])
    np.testing.assert_array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), imgs)


def test_fit_recovers_known_parameters():
    imgs, p = sd.generate(48, 24, seed=11)
    f = sm.fit_shapes(imgs)
    np.testing.assert_array_equal(f["kind"], p["kind"])
    assert np.abs(f["cx"] - p["cx"]).max() < 0.02 and np.abs(f["cy"] - p["cy"]).max() < 0.02  # pixels
    assert np.abs(f["size"] - p["size"]).max() * 24 < 0.02
    assert np.abs(f["bg"] - p["bg"]).max() < 0.01 and np.abs(f["fg"] - p["fg"]).max() < 0.01
    # float input in [-1, 1] gives the same fit
    g = sm.fit_shapes(imgs.astype(np.float32) / 127.5 - 1)
    np.testing.assert_allclose(g["cx"], f["cx"], atol=1e-9)


def test_real_images_valid_and_close(reference):
    assert reference.real_valid.mean() == 1.0
    ev = reference.evaluate(sd.generate(128, 24, seed=1)[0])  # other real images
    assert ev["valid"] == 1.0
    assert ev["distance"]["swd"] < 0.25


def test_noise_and_blobs_invalid(reference):
    noise = np.random.RandomState(0).randint(0, 256, (64, 24, 24, 3)).astype(np.uint8)
    assert reference.evaluate(noise)["valid"] == 0.0
    assert reference.evaluate(gaussian_blobs(64, 24, seed=3))["valid"] == 0.0
    # two shapes in one image: not explained either
    a, _ = sd.generate(64, 24, seed=4)
    b, _ = sd.generate(64, 24, seed=5)
    two = np.where(np.any(b != b[:, :1, :1], axis=-1, keepdims=True), b, a)
    assert reference.evaluate(two)["valid"] < 0.1


def test_biased_set_has_distance(reference):
    real = reference.evaluate(sd.generate(128, 24, seed=1)[0])["distance"]
    p = sd.sample_params(128, 24, seed=1)
    p["kind"][:] = 0  # disks only
    disks = reference.evaluate(sd.render(p, 24))
    assert disks["valid"] == 1.0  # each image is a perfect shape ...
    assert disks["distance"]["ks"]["kind"] > 0.4  # ... but the distribution is wrong
    assert disks["distance"]["swd"] > 2 * real["swd"]
    q = sd.sample_params(128, 24, seed=1)
    q["bg"] = q["bg"] * 0.5  # darker backgrounds
    dark = reference.evaluate(sd.render(q, 24))["distance"]
    assert dark["w1"]["bg_r"] > 0.15 and dark["swd"] > 2 * real["swd"]


def test_metric_registry_and_training_hook(cache, tmp_path):
    from afgan_tf.metrics import metric_main
    from afgan_tf.metrics.toy import ToyGenerator
    from afgan_tf.training.options import _parse_metrics
    assert _parse_metrics("shapes_valid") == ["shapes_valid"]
    rec = metric_main.calc_metric("shapes_valid", ShapesOracleG(16), dataset="shapes:128:16", num=64,
                                  verbose=False)
    assert rec["results"]["shapes_valid"] > 0.95 and rec["results"]["shapes_swd"] < 0.5
    assert "shapes_eqt" not in rec["results"]  # no input transform: no EQ-T

    class Trainer:  # what make_training_metrics_fn reads from the training loop's trainer
        G_ema = ToyGenerator(img_resolution=16, bandwidth=3)
        cur_nimg = 4000

    fn = metric_main.make_training_metrics_fn("shapes:128:16", num=32, verbose=False)
    rec = fn("shapes_valid", Trainer(), str(tmp_path))
    assert rec["results"]["shapes_valid"] == 0.0  # sinusoids are no shapes
    assert rec["results"]["shapes_eqt"] > 40  # the toy generator is translation-equivariant
    path = metric_main.report_metric(rec, str(tmp_path), tensorboard=False)
    assert json.loads(open(path).read())["results"]["shapes_valid"] == 0.0


def test_cached_build_uses_a_complete_dataset_another_process_wrote(tmp_path):
    from afgan_tf.data import tfrecord
    dest = str(tmp_path / "ds")
    sd.write_dataset(dest, 4, 16, seed=1)                       # "another process" finished first
    before = sorted(os.listdir(dest))
    tfrecord.write_unless_done(dest, lambda: sd.write_dataset(dest, 4, 16, seed=2))
    assert sorted(os.listdir(dest)) == before and tfrecord.read_metadata(dest)["count"] == 4
    blocker = str(tmp_path / "file")
    open(blocker, "w").close()                                  # not a dataset: the writer's error stands
    with pytest.raises(FileExistsError):
        tfrecord.write_unless_done(blocker, lambda: sd.write_dataset(blocker, 4, 16))
