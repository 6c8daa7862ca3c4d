"""tf.data pipeline: bit-exact round trips, the original's zip/folder format, mirroring, sharding, seeding,
atomic writes."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from afgan_tf.data import DatasetWriter, dataset_info, make_dataset, tfrecord
from helpers_data import save, smooth_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, res=16, c=3, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.rand(n, res, res, c) * 256).astype(np.uint8)  # noise: every image unique, all levels used


def _norm(u8):
    return u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _write(path, imgs, labels=None, shards=1, encoding="png"):
    ldim = 0 if labels is None else labels.shape[1]
    with DatasetWriter(path, imgs.shape[1], imgs.shape[3], ldim, shards, encoding) as w:
        for i, a in enumerate(imgs):
            w.add(a, None if labels is None else labels[i], f"img{i}")
    return path


def _collect(ds):
    xs, cs = [], []
    for x, c in ds:
        xs.append(x.numpy())
        cs.append(c.numpy())
    return np.concatenate(xs), np.concatenate(cs)


def _ids(x, imgs):
    """Index of each output image among the (normalised) sources; -1 if none. Flipped copies → -(i+2)."""
    ref = {_norm(a).tobytes(): i for i, a in enumerate(imgs)}
    flip = {_norm(a[:, ::-1]).tobytes(): i for i, a in enumerate(imgs)}
    return [ref.get(a.tobytes(), -(flip[a.tobytes()] + 2) if a.tobytes() in flip else -1) for a in x]


@pytest.mark.parametrize("encoding,shards", [("png", 3), ("raw", 1)])
def test_round_trip_bit_exact(tmp_path, encoding, shards):
    imgs = _images(11)
    labels = np.random.RandomState(1).randn(11, 4).astype(np.float32)
    path = _write(str(tmp_path / "ds"), imgs, labels, shards, encoding)
    info = dataset_info(path)
    assert (info["resolution"], info["channels"], info["count"], info["c_dim"]) == (16, 3, 11, 4)
    x, c = _collect(make_dataset(path, batch_size=4, shuffle=False, repeat=False, use_labels=True))
    assert x.dtype == np.float32 and x.shape == (11, 16, 16, 3)
    np.testing.assert_array_equal(x, _norm(imgs))  # same order as written, bit-exact
    np.testing.assert_array_equal(c, labels)
    assert x.min() == -1.0 and x.max() == 1.0
    x, c = _collect(make_dataset(path, batch_size=4, shuffle=False, repeat=False))
    assert c.shape == (11, 0)
    meta = json.load(open(os.path.join(path, "dataset.json")))
    assert meta["count"] == 11 and sum(s["count"] for s in meta["shards"]) == 11 and len(meta["shards"]) == shards


def test_grayscale_and_unbatched(tmp_path):
    imgs = _images(5, c=1)
    path = _write(str(tmp_path / "g"), imgs)
    ds = make_dataset(path, shuffle=False, repeat=False)
    xs = [x.numpy() for x, _ in ds]
    assert xs[0].shape == (16, 16, 1)
    np.testing.assert_array_equal(np.stack(xs), _norm(imgs))


def _original_folder(root, imgs, labels, ext=".png"):
    names = []
    for i, a in enumerate(imgs):
        name = f"{i // 4:05d}/img{i:08d}{ext}"
        save(a, os.path.join(root, *name.split("/")))
        names.append(name)
    with open(os.path.join(root, "dataset.json"), "w") as fh:
        json.dump({"labels": [[n, int(l)] for n, l in zip(names, labels)]}, fh)
    return names


def _zip_folder(folder, zpath):
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as z:
        for root, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, folder).replace(os.sep, "/"))


def test_original_folder_and_zip_read_identically(tmp_path):
    imgs = _images(9, seed=3)
    labels = np.array([0, 2, 1, 2, 0, 0, 1, 2, 2])
    folder = str(tmp_path / "orig")
    _original_folder(folder, imgs, labels)
    zpath = str(tmp_path / "orig.zip")
    _zip_folder(folder, zpath)
    onehot = np.eye(3, dtype=np.float32)[labels]
    for path, fmt in ((folder, "original-dir"), (zpath, "original-zip")):
        info = dataset_info(path)
        assert (info["format"], info["resolution"], info["channels"], info["count"], info["c_dim"]) == \
            (fmt, 16, 3, 9, 3)
        x, c = _collect(make_dataset(path, batch_size=4, shuffle=False, repeat=False, use_labels=True))
        np.testing.assert_array_equal(x, _norm(imgs))
        np.testing.assert_array_equal(c, onehot)
    # non-PNG files go through PIL (here JPEG: compare with PIL's own decode)
    jfolder = str(tmp_path / "jpg")
    _original_folder(jfolder, imgs[:3], labels[:3], ext=".jpg")
    x, _ = _collect(make_dataset(jfolder, batch_size=2, shuffle=False, repeat=False))
    ref = np.stack([np.asarray(PIL.Image.open(os.path.join(jfolder, "00000", f"img{i:08d}.jpg"))) for i in range(3)])
    np.testing.assert_array_equal(x, _norm(ref))


def test_mirror_doubles_each_image_once_per_epoch(tmp_path):
    imgs = _images(7, seed=4)
    path = _write(str(tmp_path / "m"), imgs, shards=2)
    x, _ = _collect(make_dataset(path, batch_size=3, mirror=True, seed=1, repeat=False))
    ids = _ids(x, imgs)
    assert len(ids) == 14 and -1 not in ids
    assert sorted(i for i in ids if i >= 0) == list(range(7))  # each once as is
    assert sorted(-i - 2 for i in ids if i < 0) == list(range(7))  # each once mirrored
    # the two copies are a pass apart: the first half of the epoch holds every image once, in mixed orientation
    assert sorted(i if i >= 0 else -i - 2 for i in ids[:7]) == list(range(7))
    assert any(i < 0 for i in ids[:7]) and any(i >= 0 for i in ids[:7])
    # with repeat: every epoch (14 elements) is again a full doubled pass, reshuffled
    x, _ = _collect(make_dataset(path, batch_size=7, mirror=True, seed=1).take(4))
    e1, e2 = _ids(x[:14], imgs), _ids(x[14:], imgs)
    assert sorted(e1) == sorted(e2) == sorted(ids) and e1 != e2


def test_seeded_pipeline_is_deterministic(tmp_path):
    imgs = _images(20, seed=5)
    path = _write(str(tmp_path / "d"), imgs, shards=2)

    def run(seed):
        ds = make_dataset(path, batch_size=5, mirror=True, seed=seed, num_parallel=4)
        return np.concatenate([x.numpy() for x, _ in ds.take(10)])

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(_ids(a[:40], imgs)) == sorted(_ids(c[:40], imgs))  # same content per epoch, other order


@pytest.mark.parametrize("kind,shards", [("tfrecord", 4), ("tfrecord", 3), ("original", 1)])
def test_sharding_two_workers_cover_every_image_once(tmp_path, kind, shards):
    imgs = _images(13, seed=6)
    if kind == "tfrecord":
        path = _write(str(tmp_path / "s"), imgs, shards=shards)
    else:
        path = str(tmp_path / "o")
        _original_folder(path, imgs, np.zeros(13, int))
    seen = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)
        ds = make_dataset(path, batch_size=4, input_context=ctx, seed=i, repeat=False, mirror=True)
        sizes = []
        part = []
        for x, _ in ds:
            sizes.append(x.shape[0])
            part += _ids(x.numpy(), imgs)
        assert max(sizes) == 2  # per-replica batch = global 4 / 2 replicas
        seen.append(part)
    assert not set(abs(v) for v in seen[0]) & set(abs(v) for v in seen[1])  # disjoint shares
    allv = seen[0] + seen[1]
    assert sorted(v for v in allv if v >= 0) == list(range(13))
    assert sorted(-v - 2 for v in allv if v < 0) == list(range(13))


def test_mirrored_strategy_distribute_datasets_from_function(tmp_path):
    """2 logical CPUs (configured in a fresh process): the replicas together see every image once per epoch."""
    imgs = _images(16, seed=7)
    path = _write(str(tmp_path / "ms"), imgs, shards=2)
    np.save(str(tmp_path / "imgs.npy"), imgs)
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        sys.path.insert(0, {ROOT!r})
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from afgan_tf.data import make_dataset
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        dist = strategy.distribute_datasets_from_function(
            lambda ctx: make_dataset({path!r}, batch_size=8, input_context=ctx, seed=0, repeat=False))
        out = []
        for x, _ in dist:
            for r in strategy.experimental_local_results(x):
                out.append(r.numpy())
        np.save({str(tmp_path / "out.npy")!r}, np.concatenate(out))
        print("replicas", strategy.num_replicas_in_sync, "batches", len(out), [o.shape[0] for o in out])
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "replicas 2" in r.stdout
    x = np.load(str(tmp_path / "out.npy"))
    assert sorted(_ids(x, imgs)) == list(range(16))


def test_dataset_info_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        dataset_info(str(tmp_path / "missing"))
    path = _write(str(tmp_path / "e"), _images(3))
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(path, batch_size=0)
    os.remove(os.path.join(path, tfrecord.shard_name(0, 1)))
    with pytest.raises(FileNotFoundError, match="shard"):
        dataset_info(path)
    ctx = tf.distribute.InputContext(num_input_pipelines=8, input_pipeline_id=7, num_replicas_in_sync=8)
    path = _write(str(tmp_path / "e2"), _images(3))
    with pytest.raises(ValueError, match="gets no images"):
        make_dataset(path, input_context=ctx)
    with pytest.raises(ValueError, match=r"expected uint8 \[16, 16, 3\]"):
        with DatasetWriter(str(tmp_path / "e3"), 16, 3) as w:
            w.add(np.zeros([8, 8, 3], np.uint8))
    assert not os.path.exists(str(tmp_path / "e3"))


def _temps(parent):
    return [n for n in os.listdir(parent) if ".tmp-" in n]


def test_interrupted_write_leaves_no_dataset(tmp_path):
    dest = str(tmp_path / "x")
    imgs = _images(6)
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(dest, 16, 3, num_shards=2) as w:
            for i, a in enumerate(imgs):
                if i == 3:
                    raise RuntimeError("boom")
                w.add(a)
    assert not os.path.exists(dest) and _temps(str(tmp_path)) == []
    # a killed process (SIGKILL mid-write) leaves only a hidden temp dir, cleaned by the next writer
    script = textwrap.dedent(f"""
        import os, signal, sys, numpy as np
        sys.path.insert(0, {ROOT!r})
        from afgan_tf.data import DatasetWriter
        with DatasetWriter({dest!r}, 16, 3, num_shards=2) as w:
            for i in range(6):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                w.add(np.full([16, 16, 3], i, np.uint8))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    assert not os.path.exists(dest)
    assert len(_temps(str(tmp_path))) == 1 and _temps(str(tmp_path))[0].startswith(".")
    with pytest.raises(FileNotFoundError):
        dataset_info(dest)
    _write(dest, imgs)
    assert _temps(str(tmp_path)) == [] and dataset_info(dest)["count"] == 6


def test_existing_dataset_refused_unless_overwrite(tmp_path):
    dest = str(tmp_path / "o")
    _write(dest, _images(2))
    with pytest.raises(FileExistsError, match="--overwrite"):
        DatasetWriter(dest, 16, 3)
    with DatasetWriter(dest, 16, 3, overwrite=True) as w:
        for a in _images(5, seed=9):
            w.add(a)
    assert dataset_info(dest)["count"] == 5 and _temps(str(tmp_path)) == []
    other = tmp_path / "notadataset"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an afgan-tf dataset"):
        DatasetWriter(str(other), 16, 3, overwrite=True)
    assert (other / "keep.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(str(empty), _images(2))
    assert dataset_info(str(empty))["count"] == 2


# -- skip (resume) and the global TF seed -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tfrecord", "original"])
def test_skip_equals_decode_then_skip(tmp_path, kind):
    """make_dataset(skip=k) == make_dataset().skip(k): within the first pass, across passes (mirrored epochs of
    two passes), batched and unbatched, sharded."""
    imgs = _images(7, seed=8)
    if kind == "tfrecord":
        path = _write(str(tmp_path / "k"), imgs, shards=2)
    else:
        path = str(tmp_path / "o")
        _original_folder(path, imgs, np.zeros(7))
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    for kw, skips in ((dict(batch_size=3), (0, 1, 2, 5, 11)),            # 7 images, 3 per batch: crosses passes
                      (dict(batch_size=None), (3, 7, 16)),               # unbatched: skip counts images
                      (dict(batch_size=4, input_context=ctx), (1, 4))):  # worker 1 of 2 (3 images, 2 per batch)
        for k in skips:
            want = np.stack([x.numpy() for x, _ in make_dataset(path, mirror=True, seed=2, **kw).skip(k).take(6)])
            got = np.stack([x.numpy() for x, _ in make_dataset(path, mirror=True, seed=2, skip=k, **kw).take(6)])
            np.testing.assert_array_equal(got, want, err_msg=f"{kw} skip={k}")
    # without repeat: skipping past the end gives an empty dataset, a partial last batch is kept
    n = len(list(make_dataset(path, batch_size=3, repeat=False, drop_remainder=False, seed=1, skip=1)))
    assert n == 2  # 7 images: batches of 3, 3, 1; one skipped
    assert len(list(make_dataset(path, batch_size=3, repeat=False, seed=1, skip=9))) == 0
    with pytest.raises(ValueError, match="skip"):
        make_dataset(path, skip=-1)


def test_skip_does_not_decode_skipped_images(tmp_path, monkeypatch):
    """Skipped images are never decoded (counted through the PIL decoder of the original format)."""
    from afgan_tf.data import pipeline
    imgs = _images(5, seed=9)
    path = str(tmp_path / "b")
    _original_folder(path, imgs, np.zeros(5), ext=".bmp")
    calls = []
    real_load = pipeline.load_image

    def counting(*a, **k):
        calls.append(1)
        return real_load(*a, **k)
    monkeypatch.setattr(pipeline, "load_image", counting)
    ds = make_dataset(path, batch_size=2, seed=3, skip=40, num_parallel=1, prefetch=0)  # 80 images = 16 passes
    x = np.concatenate([b.numpy() for b, _ in ds.take(2)])
    decoded_skipping = len(calls)
    want = np.concatenate([b.numpy() for b, _ in make_dataset(path, batch_size=2, seed=3, num_parallel=1,
                                                             prefetch=0).skip(40).take(2)])
    np.testing.assert_array_equal(x, want)
    assert len(calls) - decoded_skipping >= 84        # decode-then-skip decoded the 80 skipped images
    assert 4 <= decoded_skipping <= 8, decoded_skipping  # the skipping pipeline only what it returned (+ read-ahead)


def test_global_tf_seed_does_not_change_or_break_the_order(tmp_path):
    """With tf.random.set_seed(s) the pipeline works (s = 0 used to fail) and gives the same order as without."""
    imgs = _images(9, seed=10)
    path = _write(str(tmp_path / "g"), imgs, shards=1)

    def run():
        return np.concatenate([x.numpy() for x, _ in make_dataset(path, batch_size=4, mirror=True, seed=5).take(6)])

    tf.random.set_seed(None)
    ref = run()
    try:
        for s in (0, 123):
            tf.random.set_seed(s)
            np.testing.assert_array_equal(run(), ref, err_msg=f"global seed {s}")
    finally:
        tf.random.set_seed(None)
