"""FID and KID (docs/ALGORITHM.md §7.1, §7.2): feature extractors, streaming statistics, cached dataset statistics.

* Feature extractors map uint8-valued NHWC images to feature vectors ``[N, D]``:
  :class:`InceptionGraphDef` loads the standard FID Inception network from the original TF graph
  ``classify_image_graph_def.pb`` (inception-2015-12-05; fed at ``ExpandDims:0`` with float images in [0, 255],
  the graph resizes to 299×299 with TF1's legacy bilinear alignment itself; ``pool_3:0`` read as 2048-d features);
  :class:`KerasFeatureExtractor` wraps any Keras model (legacy-aligned resize + ``(x − 128)/128`` in front).
  No file is ever downloaded.
* :class:`FeatureStats` accumulates float64 mean and biased covariance in chunks (optionally keeping the raw
  features for KID) and saves/loads atomically.
* :func:`frechet_distance`, :func:`kernel_inception_distance` implement the formulas; :func:`dataset_stats` caches
  dataset statistics on disk under a key = content hash of the dataset + fingerprint of the detector.
* Generated images are quantised like saved images before feature extraction (:func:`quantize_images`).
"""
import hashlib
import io
import json
import os
import warnings
import zipfile

import numpy as np
import scipy.linalg
import tensorflow as tf

from ..utils import write_atomic

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------------------------
# Image preprocessing.

def quantize_images(img):
    """Float images in [−1, 1] -> uint8 exactly like saved images: trunc(clip(img·127.5 + 128, 0, 255))."""
    x = np.asarray(img, dtype=np.float32) * np.float32(127.5) + np.float32(128)
    return np.clip(x, 0, 255).astype(np.uint8)


def legacy_resize_bilinear(x, size):
    """TF1 ``resize_bilinear(align_corners=False, half_pixel_centers=False)``: output pixel j samples input
    coordinate j·n_in/n_out, border clamped. x: ``[N, H, W, C]`` float; size: (h, w)."""
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    return tf.raw_ops.ResizeBilinear(images=x, size=tf.constant(list(size), tf.int32), align_corners=False,
                                     half_pixel_centers=False)


def _to_rgb_u8(images, name="images"):
    """uint8 (or uint8-valued float) NHWC with 1 or 3 channels -> float32 NHWC RGB in [0, 255]."""
    a = np.asarray(images)
    if a.ndim != 4:
        raise ValueError(f"{name} must be NHWC [N, H, W, C], got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] != 3:
        raise ValueError(f"{name} must have 1 or 3 channels, got {a.shape[-1]}")
    return a.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Feature extractors.

def _sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


class FeatureExtractor:
    """Base: ``extractor(images_u8 [N, H, W, C]) -> float64 [N, dim]``; ``fingerprint`` identifies it for caching."""

    name = "features"
    dim = None
    fingerprint = ""

    def __init__(self, batch_size=64):
        self.batch_size = int(batch_size)

    def _features(self, x):  # x: float32 [n, H, W, 3] in [0, 255]
        raise NotImplementedError

    def __call__(self, images):
        x = _to_rgb_u8(images)
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            f = np.asarray(self._features(x[i:i + self.batch_size]), dtype=np.float64)
            out.append(f.reshape(f.shape[0], -1))
        feats = np.concatenate(out, 0) if out else np.zeros([0, self.dim or 0])
        if self.dim is None:
            self.dim = feats.shape[1]
        return feats


class KerasFeatureExtractor(FeatureExtractor):
    """Wraps a Keras model / callable: legacy-aligned resize to ``resize`` (None = keep), ``(x − 128)/128``, model,
    flatten. Args: model; name (cache key part; give a different name per weights); resize (h, w) or None."""

    def __init__(self, model, name="keras", resize=None, batch_size=64, fingerprint=None):
        super().__init__(batch_size)
        self.model = model
        self.name = name
        self.resize = resize
        self.fingerprint = fingerprint or f"keras:{name}:{resize}"
        self._fn = tf.function(self._run, reduce_retracing=True)

    def _run(self, x):
        if self.resize is not None:
            x = legacy_resize_bilinear(x, self.resize)
        x = (x - 128.0) / 128.0
        return self.model(x)

    def _features(self, x):
        return self._fn(tf.constant(x)).numpy()


class InceptionGraphDef(FeatureExtractor):
    """The standard FID Inception network from a frozen TF GraphDef (``classify_image_graph_def.pb``).

    Args:
      path: the .pb file (inception-2015-12-05; not downloaded — the user provides it).
      input_name: tensor fed with float32 NHWC images in [0, 255] (default ``ExpandDims:0``: the graph then does
        the 299×299 legacy bilinear resize and the (x − 128)/128 normalisation itself).
      output_name: feature tensor (default ``pool_3:0``, ``[N, 1, 1, 2048]``), flattened.
    """

    def __init__(self, path, input_name="ExpandDims:0", output_name="pool_3:0", batch_size=32):
        super().__init__(batch_size)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception graph file not found: {path} (give the path of "
                                    f"classify_image_graph_def.pb from inception-2015-12-05.tgz)")
        graph_def = tf.compat.v1.GraphDef()
        try:
            with open(path, "rb") as fh:
                graph_def.ParseFromString(fh.read())
        except Exception as e:
            raise ValueError(f"{path} is not a TensorFlow GraphDef (.pb): {e}") from e
        names = {n.name for n in graph_def.node}
        for t in (input_name, output_name):
            if t.split(":")[0] not in names:
                raise ValueError(f"{path} has no node {t.split(':')[0]!r} (needed for tensor {t!r})")
        self.path = path
        self.name = "inception_graphdef"
        self.fingerprint = f"graphdef:{_sha256_file(path)}:{input_name}:{output_name}"

        def _import(x):
            (out,) = tf.compat.v1.import_graph_def(graph_def, input_map={input_name: x},
                                                   return_elements=[output_name], name="")
            return out

        spec = tf.TensorSpec([None, None, None, 3], tf.float32)
        wrapped = tf.compat.v1.wrap_function(_import, [spec])
        self._fn = wrapped.prune(feeds=wrapped.inputs[0], fetches=wrapped.outputs[0])

    def _features(self, x):
        return self._fn(tf.constant(x)).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Statistics.

class FeatureStats:
    """Streaming float64 statistics of feature vectors.

    Args: capture_mean_cov (accumulate Σx and Σxxᵀ), capture_all (keep raw features, for KID),
    max_items (stop accepting after this many; None = unlimited).
    """

    def __init__(self, capture_mean_cov=True, capture_all=False, max_items=None):
        self.capture_mean_cov = capture_mean_cov
        self.capture_all = capture_all
        self.max_items = max_items
        self.num_items = 0
        self.dim = None
        self.raw_mean = None
        self.raw_cov = None
        self.all = []

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x, chunk=1024):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        if self.dim is None:
            self.dim = x.shape[1]
            if self.capture_mean_cov:
                self.raw_mean = np.zeros([self.dim], np.float64)
                self.raw_cov = np.zeros([self.dim, self.dim], np.float64)
        elif x.shape[1] != self.dim:
            raise ValueError(f"feature size changed from {self.dim} to {x.shape[1]}")
        if self.capture_mean_cov:
            for i in range(0, x.shape[0], chunk):
                c = x[i:i + chunk]
                self.raw_mean += c.sum(0)
                self.raw_cov += c.T @ c
        if self.capture_all:
            self.all.append(x.astype(np.float32))
        self.num_items += x.shape[0]

    def get_mean_cov(self):
        if not self.capture_mean_cov:
            raise ValueError("these statistics were collected without capture_mean_cov")
        if self.num_items == 0:
            raise ValueError("no features were accumulated")
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)                  # biased covariance
        return mean, cov

    def get_all(self):
        if not self.capture_all:
            raise ValueError("these statistics were collected without capture_all")
        return np.concatenate(self.all, 0) if self.all else np.zeros([0, self.dim or 0], np.float32)

    def save(self, path):
        arrays = dict(num_items=np.int64(self.num_items), dim=np.int64(self.dim or 0),
                      flags=np.array([self.capture_mean_cov, self.capture_all]))
        if self.capture_mean_cov and self.raw_mean is not None:
            arrays.update(raw_mean=self.raw_mean, raw_cov=self.raw_cov)
        if self.capture_all:
            arrays["all"] = self.get_all()
        write_atomic(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as d:
            flags = d["flags"]
            s = cls(capture_mean_cov=bool(flags[0]), capture_all=bool(flags[1]))
            s.num_items = int(d["num_items"])
            s.dim = int(d["dim"]) or None
            if "raw_mean" in d:
                s.raw_mean, s.raw_cov = d["raw_mean"], d["raw_cov"]
            if "all" in d:
                s.all = [d["all"]]
        return s


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2·sqrtm(Σ1Σ2)), real part of scipy.linalg.sqrtm.

    If sqrtm is not finite, its relative residual ‖X² − A‖_F/‖A‖_F exceeds 1e−3 or its imaginary part exceeds 1e−3
    (near-singular covariances, e.g. far fewer samples than dimensions), ``eps``·I is added to both covariances and a warning says so.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2

    def _sqrt(a):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = scipy.linalg.sqrtm(a)
        if isinstance(x, tuple):
            x = x[0]
        norm = np.linalg.norm(a, "fro")
        ok = np.all(np.isfinite(x)) and (norm == 0 or np.linalg.norm(x @ x - a, "fro") / norm < 1e-3)
        if ok and np.iscomplexobj(x):
            ok = np.abs(x.imag).max() < 1e-3                       # large imaginary part: rounding on a singular A
        return x, ok

    covmean, ok = _sqrt(s1 @ s2)
    if not ok:
        warnings.warn(f"frechet_distance: sqrtm(Σ1Σ2) is inaccurate (near-singular covariances); adding "
                      f"{eps:g}·I to both covariances")
        off = np.eye(s1.shape[0]) * eps
        covmean, _ = _sqrt((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kernel_inception_distance(real, gen, num_subsets=100, max_subset_size=1000, seed=None):
    """KID: mean over subsets of the unbiased MMD² with the cubic kernel k(a, b) = (aᵀb/d + 1)³.

    m = min(n_real, n_gen, max_subset_size); per subset (drawn without replacement)
    t += (ΣK_xx + ΣK_yy − diagonals)/(m − 1) − 2·ΣK_xy/m; KID = t / (num_subsets·m).
    """
    real = np.asarray(real, np.float64)
    gen = np.asarray(gen, np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f"features must be [N, D] with equal D, got {real.shape} and {gen.shape}")
    n = real.shape[1]
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {real.shape[0]} and {gen.shape[0]}")
    rng = np.random.RandomState(seed) if not isinstance(seed, np.random.RandomState) else seed
    t = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


# ----------------------------------------------------------------------------------------------------------------
# Datasets and caching.

def _list_images(path):
    """Sorted list of image entries of a folder (recursive) or a zip: [(name, opener)]."""
    if os.path.isdir(path):
        files = []
        for root, _dirs, names in os.walk(path):
            for n in names:
                if n.lower().endswith(IMAGE_EXTS):
                    full = os.path.join(root, n)
                    files.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
        files.sort()
        return [(rel, (lambda f=full: open(f, "rb"))) for rel, full in files]
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        names = sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_EXTS))
        return [(n, (lambda n=n: io.BytesIO(zf.read(n)))) for n in names]
    raise ValueError(f"dataset {path!r} must be an image folder or a zip of images")


def _is_tfrecord(path):
    try:
        from afgan_tf.data import tfrecord
    except ImportError:  # pragma: no cover
        return False
    return tfrecord.is_tfrecord_dataset(path)


def dataset_content_hash(path):
    """sha256 over the sorted image names and their bytes (image folder or zip; for our TFRecord dataset folders
    every file of the folder)."""
    h = hashlib.sha256()
    if _is_tfrecord(path):
        entries = sorted((n, (lambda f=os.path.join(path, n): open(f, "rb"))) for n in os.listdir(path)
                         if os.path.isfile(os.path.join(path, n)))
    else:
        entries = _list_images(path)
    if not entries:
        raise ValueError(f"dataset {path!r} contains no images ({', '.join(IMAGE_EXTS)})")
    for name, opener in entries:
        h.update(name.encode() + b"\0")
        with opener() as fh:
            for b in iter(lambda: fh.read(1 << 20), b""):
                h.update(b)
    return h.hexdigest()


def iterate_dataset(path, batch_size=64, resolution=None, max_items=None):
    """Yields uint8 NHWC RGB batches of the dataset's images (grayscale repeated to 3 channels, no resizing).
    ``resolution`` (if given) is checked, not enforced by resampling. Reads image folders, zips and our TFRecord
    datasets (``afgan_tf.data``; no x-flip)."""
    from PIL import Image
    if _is_tfrecord(path):
        from afgan_tf.data.pipeline import make_dataset
        ds = make_dataset(path, batch_size=batch_size, shuffle=False, repeat=False, drop_remainder=False)
        seen = 0
        for img, _ in ds:
            x = np.rint((img.numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
            if max_items is not None:
                x = x[:max_items - seen]
            if resolution is not None and x.shape[1:3] != (resolution, resolution):
                raise ValueError(f"{path}: images are {x.shape[2]}x{x.shape[1]}, expected {resolution}x{resolution}")
            if x.shape[-1] == 1:
                x = np.repeat(x, 3, -1)
            seen += x.shape[0]
            if x.shape[0]:
                yield x
            if max_items is not None and seen >= max_items:
                return
        return
    entries = _list_images(path)
    if max_items is not None:
        entries = entries[:max_items]
    batch = []
    for name, opener in entries:
        with opener() as fh:
            im = np.asarray(Image.open(fh).convert("RGB"))
        if resolution is not None and im.shape[:2] != (resolution, resolution):
            raise ValueError(f"{path}:{name} is {im.shape[1]}x{im.shape[0]}, expected {resolution}x{resolution}")
        batch.append(im)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _cache_path(cache_dir, key_obj):
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()
    return os.path.join(cache_dir, f"stats-{key[:32]}.npz")


def dataset_stats(path, extractor, cache_dir=None, capture_all=False, max_items=None, batch_size=64,
                  resolution=None, progress=None, return_cache_status=False):
    """Feature statistics of a dataset, cached on disk by (content hash of the dataset, detector fingerprint,
    options). Returns FeatureStats (or (stats, "hit" | "miss" | "nocache"))."""
    status = "nocache"
    cache_file = None
    if cache_dir is not None:
        key = dict(data=dataset_content_hash(path), detector=extractor.fingerprint, capture_all=capture_all,
                   max_items=max_items)
        cache_file = _cache_path(cache_dir, key)
        if os.path.isfile(cache_file):
            s = FeatureStats.load(cache_file)
            return (s, "hit") if return_cache_status else s
        status = "miss"
    stats = FeatureStats(capture_mean_cov=True, capture_all=capture_all, max_items=max_items)
    for batch in iterate_dataset(path, batch_size=batch_size, resolution=resolution, max_items=max_items):
        stats.append(extractor(batch))
        if progress is not None:
            progress(stats.num_items, max_items)
    if stats.num_items == 0:
        raise ValueError(f"dataset {path!r} yielded no images")
    if cache_file is not None:
        stats.save(cache_file)
    return (stats, status) if return_cache_status else stats


def generator_stats(G, extractor, num_gen=50000, batch_size=16, seed=0, capture_all=False, c_sampler=None,
                    truncation_psi=1, progress=None):
    """Feature statistics of ``num_gen`` images of G (z ~ N(0, I), seeded), quantised to uint8 first."""
    rng = np.random.RandomState(seed)
    stats = FeatureStats(capture_mean_cov=True, capture_all=capture_all, max_items=num_gen)
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    gen = tf.function(lambda z, c: G(z, c, truncation_psi=truncation_psi), reduce_retracing=True)
    while not stats.is_full():
        n = min(batch_size, num_gen - stats.num_items)
        z = rng.randn(n, int(G.z_dim)).astype(np.float32)
        if c_sampler is not None:
            c = c_sampler(rng, n)
        elif c_dim > 0:
            c = np.eye(c_dim, dtype=np.float32)[rng.randint(c_dim, size=n)]
        else:
            c = np.zeros([n, 0], np.float32)
        img = gen(tf.constant(z), tf.constant(c, tf.float32))
        img = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
        stats.append(extractor(quantize_images(img)))
        if progress is not None:
            progress(stats.num_items, num_gen)
    return stats


def fid_from_stats(real, gen):
    mu_r, s_r = real.get_mean_cov()
    mu_g, s_g = gen.get_mean_cov()
    return frechet_distance(mu_g, s_g, mu_r, s_r)
