"""Embedded default dataset: real photos from installed wheels, face detection, caching, determinism."""
import os

import numpy as np

from afgan_tf.data import dataset_info, default_dataset, make_dataset
from afgan_tf.data import default as default_mod


def _pixels(path):
    return np.concatenate([x.numpy() for x, _ in make_dataset(path, batch_size=16, shuffle=False, repeat=False)])


def test_faces_are_detected_in_the_bundled_photos():
    faces, others = default_mod.load_photos()
    assert len(faces) >= 2 and len(others) >= 4
    for name, img, box, detected in faces:
        assert detected, f"cascade found no face in {name}"
        fb = default_mod.FACE_PHOTOS[name][2]  # reference box (checked by eye), also the fallback
        ix = max(0, min(box[2], fb[2]) - max(box[0], fb[0])) * max(0, min(box[3], fb[3]) - max(box[1], fb[1]))
        union = (box[2] - box[0]) * (box[3] - box[1]) + (fb[2] - fb[0]) * (fb[3] - fb[1]) - ix
        assert ix / union > 0.5, (name, box, fb)


def test_default_dataset_builds_caches_and_is_deterministic(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(default_mod.CACHE_ENV, str(tmp_path / "cache"))
    path = default_dataset(resolution=32, num_images=40, seed=3)
    assert path.startswith(str(tmp_path / "cache"))
    assert path in capsys.readouterr().out  # prints where it is
    info = dataset_info(path)
    assert (info["resolution"], info["channels"], info["count"], info["c_dim"]) == (32, 3, 40, 0)
    x = _pixels(path)
    assert x.shape == (40, 32, 32, 3) and -1 <= x.min() and x.max() <= 1
    assert np.all(x.reshape(40, -1).std(axis=1) > 0.02)  # real content, no blank crops
    assert len({a.tobytes() for a in x}) == 40  # every crop differs
    names = [s["name"] for s in info["meta"]["photos"]["faces"]]
    assert "astronaut" in names
    # cached: the second call does not rebuild
    mtime = os.path.getmtime(os.path.join(path, "dataset.json"))
    assert default_dataset(resolution=32, num_images=40, seed=3) == path
    assert os.path.getmtime(os.path.join(path, "dataset.json")) == mtime
    # same arguments elsewhere → identical pixels; another seed → other crops
    np.testing.assert_array_equal(_pixels(default_dataset(32, 40, cache_dir=str(tmp_path / "b"), seed=3)), x)
    assert not np.array_equal(_pixels(default_dataset(32, 40, cache_dir=str(tmp_path / "c"), seed=4)), x)


def test_ffhq_like_input_from_real_photos_through_the_tool(tmp_path):
    from afgan_tf.data import build_dataset
    from afgan_tf.data.synthetic import make_ffhq_like
    js = make_ffhq_like(str(tmp_path / "wild"), copies=2, seed=1)
    res = build_dataset(str(tmp_path / "wild" / "in-the-wild-images"), str(tmp_path / "u"), resolution=32,
                        ffhq_json=js, ffhqu=True, progress=False, log=lambda m: None)
    n_faces = len(default_mod.load_photos()[0])
    assert res["written"] == 2 * n_faces and not res["skipped"]
    x = _pixels(str(tmp_path / "u"))
    assert x.shape == (2 * n_faces, 32, 32, 3) and np.all(x.reshape(len(x), -1).std(axis=1) > 0.05)
