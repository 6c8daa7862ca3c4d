"""Input-pipeline throughput: ``make_dataset`` (256×256, mirroring, shuffling) vs a plain Python decode loop.

  python benchmarks/bench_data.py [--num=512] [--res=256] [--batch=32] [--batches=60]

Creates a synthetic photo-like dataset in a temp dir in two encodings (PNG, raw) plus the original's folder
format, and reports images/s of each pipeline and the ratio against the baseline measured in the same run: a
Python loop that reads the same TFRecords, parses each Example, decodes the PNG with PIL, mirrors every
second image and converts to float32 in [-1, 1]. The last lines compare with the data rate the fastest
training configuration of docs/ALGORITHM.md §8.6 consumes (FFHQ-U 256², StyleGAN2, 8×A100: 2.19 s/kimg).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import tensorflow as tf  # noqa: E402

from afgan_tf.data import DatasetWriter, make_dataset  # noqa: E402
from afgan_tf.data.images import decode_png  # noqa: E402


def photo_like(rng, res):
    """Smooth random content with some detail: upsampled noise at a few scales (PNG compresses it ~like a photo)."""
    out = np.zeros([res, res, 3], np.float32)
    for s, w in ((8, 60.0), (32, 30.0), (res, 8.0)):
        small = rng.rand(s, s, 3).astype(np.float32)
        out += w * np.asarray(PIL.Image.fromarray((small * 255).astype(np.uint8)).resize((res, res),
                                                                                           PIL.Image.BICUBIC)) / 255
    return np.clip(out * 2.2, 0, 255).astype(np.uint8)


def python_loop(path, n_images):
    """Baseline: Python reads the records, PIL decodes, numpy flips/normalises, one image at a time."""
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".tfrecord"))
    t0 = time.perf_counter()
    done = 0
    while done < n_images:
        for rec in tf.data.TFRecordDataset(files).as_numpy_iterator():
            ex = tf.train.Example.FromString(rec)
            img = decode_png(ex.features.feature["image"].bytes_list.value[0])
            if done % 2:
                img = img[:, ::-1]
            x = img.astype(np.float32) / 127.5 - 1.0  # noqa: F841
            done += 1
            if done >= n_images:
                break
    return done / (time.perf_counter() - t0)


def pipeline_rate(path, batch, batches, **kw):
    ds = make_dataset(path, batch_size=batch, mirror=True, seed=0, **kw)
    it = iter(ds)
    for _ in range(5):  # warm-up: tracing, buffers, autotune
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
    x.numpy()
    return batches * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=512)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=60)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_data_")
    try:
        rng = np.random.RandomState(0)
        t0 = time.perf_counter()
        imgs = [photo_like(rng, a.res) for _ in range(64)]
        paths = {}
        for enc in ("png", "raw"):
            p = paths[enc] = os.path.join(tmp, enc)
            with DatasetWriter(p, a.res, 3, 0, 4, enc) as w:
                for i in range(a.num):
                    w.add(np.roll(imgs[i % 64], i, axis=1))
        folder = paths["folder"] = os.path.join(tmp, "folder")
        for i in range(a.num):
            d = os.path.join(folder, f"{i // 1000:05d}")
            os.makedirs(d, exist_ok=True)
            PIL.Image.fromarray(np.roll(imgs[i % 64], i, axis=1)).save(os.path.join(d, f"img{i:08d}.png"),
                                                                       compress_level=1)
        size = sum(os.path.getsize(os.path.join(paths["png"], f)) for f in os.listdir(paths["png"]))
        print(f"synthetic dataset: {a.num} images {a.res}x{a.res}x3, PNG {size / a.num / 1024:.0f} KiB/image, "
              f"built in {time.perf_counter() - t0:.1f} s; cores: {os.cpu_count()}")
        n_base = min(a.num, a.batch * a.batches // 2)
        base = python_loop(paths["png"], n_base)
        print(f"baseline  python loop (TFRecord + PIL PNG decode + flip + float): {base:8.1f} images/s  (1.00x)")
        rates = {}
        for name, p, kw in (("tf.data TFRecord png  (mirror, shuffle)", paths["png"], {}),
                            ("tf.data TFRecord raw  (mirror, shuffle)", paths["raw"], {}),
                            ("tf.data original folder png (mirror)   ", paths["folder"], {})):
            r = rates[name] = pipeline_rate(p, a.batch, a.batches, **kw)
            print(f"{name}: {r:8.1f} images/s  ({r / base:.2f}x)")
        need = 1000 / 2.19
        best = max(rates.values())
        worst = min(rates.values())
        print(f"training consumption, fastest spec config (FFHQ-U 256² SG2, 8xA100, 2.19 s/kimg): {need:.0f} images/s;"
              f" our pipelines give {worst:.0f}-{best:.0f} images/s on this machine "
              f"({worst / need:.1f}-{best / need:.1f}x that rate)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
