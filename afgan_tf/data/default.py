"""Embedded default dataset: unaligned crops of real photographs shipped inside installed wheels.

Photos (no download): faces — scikit-image ``astronaut.png``, ``camera.png`` (cameraman) and matplotlib's
``grace_hopper.jpg``; other photos — scikit-image ``chelsea``, ``coffee``, ``rocket``, ``motorcycle_left``,
``hubble_deep_field`` (+ scikit-learn's ``china.jpg`` / ``flower.jpg`` when installed).

Steps (``default_dataset``):
  1. locate each face with skimage's LBP cascade (``lbpcascade_frontalface_opencv.xml``; the largest
     detection; a fixed box when detection fails) → FFHQ-U-like centre/side (:func:`ffhqu.box_params`);
  2. half of the images: FFHQ-U crops of the faces (random shift σ = 0.2·q, retries, no padding);
     the other half: random squares (side 35–100 % of the shorter side) from the other photos;
  3. every crop is resampled with the FFHQ code (:func:`ffhqu.crop_square_pil`) and written with the same
     atomic :class:`tfrecord.DatasetWriter`, cached under ``$AFGAN_TF_CACHE`` or ``~/.cache/afgan_tf``.
Seeded: the same arguments give the same dataset.
"""
import concurrent.futures
import os
import sys
import time

import numpy as np
import PIL.Image

from . import ffhqu, tfrecord
from .images import encode_png

CACHE_ENV = "AFGAN_TF_CACHE"
VERSION = 1
# (file, fallback face box [x0, y0, x1, y1] used when the cascade finds nothing)
FACE_PHOTOS = {
    "astronaut": ("skimage", "astronaut.png", (187, 62, 284, 159)),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg", (168, 113, 373, 318)),
    "camera": ("skimage", "camera.png", (207, 124, 263, 180)),
}
OTHER_PHOTOS = [("skimage", "chelsea.png"), ("skimage", "coffee.png"), ("skimage", "rocket.jpg"),
                ("skimage", "motorcycle_left.png"), ("skimage", "hubble_deep_field.jpg"),
                ("sklearn", "china.jpg"), ("sklearn", "flower.jpg")]


def cache_dir(cache_dir=None):
    return os.path.abspath(cache_dir or os.environ.get(CACHE_ENV) or
                           os.path.join(os.path.expanduser("~"), ".cache", "afgan_tf"))


def _photo_path(pkg, name):
    if pkg == "skimage":
        import skimage
        return os.path.join(os.path.dirname(skimage.__file__), "data", name)
    if pkg == "matplotlib":
        import matplotlib
        return os.path.join(matplotlib.get_data_path(), "sample_data", name)
    if pkg == "sklearn":
        try:
            import sklearn
        except ImportError:
            return None
        return os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", name)
    raise ValueError(pkg)


def _load_rgb(path):
    with PIL.Image.open(path) as im:
        return im.convert("RGB")


def detect_face(img, fallback):
    """Largest LBP-cascade detection in a PIL RGB image → ``[x0, y0, x1, y1]`` (``fallback`` when none)."""
    try:
        from skimage import data
        from skimage.feature import Cascade
        det = Cascade(data.lbp_frontal_face_cascade_filename())
        found = det.detect_multi_scale(img=np.asarray(img), scale_factor=1.2, step_ratio=1, min_size=(40, 40),
                                       max_size=(400, 400))
    except Exception:  # pragma: no cover - detector unavailable
        found = []
    if not found:
        return tuple(float(v) for v in fallback), False
    d = max(found, key=lambda f: f["width"] * f["height"])
    return (float(d["c"]), float(d["r"]), float(d["c"] + d["width"]), float(d["r"] + d["height"])), True


def load_photos():
    """→ (faces: list of (name, PIL image, face box, detected?), others: list of (name, PIL image))."""
    faces, others = [], []
    for name, (pkg, fname, fallback) in FACE_PHOTOS.items():
        path = _photo_path(pkg, fname)
        if path is None or not os.path.isfile(path):
            continue
        img = _load_rgb(path)
        box, detected = detect_face(img, fallback)
        faces.append((name, img, box, detected))
    for pkg, fname in OTHER_PHOTOS:
        path = _photo_path(pkg, fname)
        if path is None or not os.path.isfile(path):
            continue
        others.append((os.path.splitext(fname)[0], _load_rgb(path)))
    if not faces or not others:
        raise RuntimeError("default dataset: the sample photos of scikit-image / matplotlib were not found")
    return faces, others


def default_dataset(resolution=64, num_images=2048, cache_dir=None, seed=0, shards=2, verbose=True):
    """Path of the embedded default dataset (our TFRecord format), building and caching it on first use.

    Args:
      resolution: power-of-two output side.
      num_images: number of crops (half faces, half other photos).
      cache_dir: where datasets are cached (default ``$AFGAN_TF_CACHE`` or ``~/.cache/afgan_tf``).
      seed: RNG seed of the crops.
      shards: number of TFRecord files.
      verbose: print where the dataset is.
    """
    resolution, num_images = int(resolution), int(num_images)
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    root = globals()["cache_dir"](cache_dir)
    dest = os.path.join(root, f"default-{resolution}x{resolution}-n{num_images}-s{seed}-v{VERSION}")
    if tfrecord.is_tfrecord_dataset(dest):
        if verbose:
            print(f"afgan_tf: default dataset ({num_images} images, {resolution}x{resolution}) at {dest}",
                  flush=True)
        return dest
    t0 = time.time()
    faces, others = load_photos()
    rng = np.random.RandomState(seed)
    meta = dict(source="embedded sample photos (scikit-image, matplotlib, scikit-learn)",
                source_kind="default", transform="ffhqu-face-crops+random-crops", ffhqu=True,
                random_shift=ffhqu.DEFAULT_SHIFT, seed=int(seed),
                photos=dict(faces=[dict(name=n, box=list(b), detected=d) for n, _, b, d in faces],
                            others=[n for n, _ in others]))
    plans = []  # (name, image, centre, side): all random draws happen here, in order
    for i in range(num_images):
        if i % 2 == 0:
            name, img, box, _ = faces[(i // 2) % len(faces)]
            c0, q = ffhqu.box_params(box)
            q = min(q, min(img.size) - 4.0)
            c, _ = ffhqu.random_shift_crop(c0, q, img.size[0], img.size[1], rng)
        else:
            name, img = others[(i // 2) % len(others)]
            q = float(rng.uniform(0.35, 1.0) * (min(img.size) - 2))
            c = np.array([rng.uniform(q / 2 + 1, img.size[0] - q / 2 - 1),
                          rng.uniform(q / 2 + 1, img.size[1] - q / 2 - 1)])
        plans.append((f"{name}/{i:05d}", img, c, q))
    cache = {}
    for _, img, _, q in plans:  # pre-shrink serially (the cache is not shared between threads while filling)
        shrink = int(np.floor(q / resolution * 0.5))
        if shrink > 1 and (id(img), shrink) not in cache:
            ffhqu.crop_square_pil(img, (img.size[0] / 2, img.size[1] / 2), 2 * shrink * resolution, resolution,
                                  shrink_cache=cache)
    def make(p):
        crop = ffhqu.crop_square_pil(p[1], p[2], p[3], resolution, shrink_cache=cache)
        return crop, encode_png(crop)

    def write():
        with tfrecord.DatasetWriter(dest, resolution, 3, 0, shards, "png", False, meta) as w, \
                concurrent.futures.ThreadPoolExecutor(2) as pool:
            for (name, _, _, _), (crop, png) in zip(plans, pool.map(make, plans)):
                w.add(crop, None, name, png=png)

    tfrecord.write_unless_done(dest, write)
    if verbose:
        print(f"afgan_tf: built default dataset ({num_images} images, {resolution}x{resolution}, "
              f"{time.time() - t0:.1f} s) at {dest}", file=sys.stdout, flush=True)
    return dest
