"""Our dataset format: sharded TFRecords + ``dataset.json``, written atomically.

Layout of a dataset directory::

    <dest>/dataset.json                       metadata (below)
    <dest>/data-00000-of-00004.tfrecord       one tf.train.Example per image, image i in shard i % num_shards

Example features: ``image`` (bytes: PNG, or raw uint8 HWC when ``encoding == "raw"``), ``shape`` (int64 [3] =
H, W, C), ``label`` (float32 list, length ``label_dim``; empty when unlabelled), ``index`` (int64, position in
the dataset), ``name`` (bytes, source-relative name).

``dataset.json``: ``{"format": "afgan-tf-tfrecord", "format_version": 1, "resolution", "channels", "count",
"label_shape", "label_dim", "encoding", "shards": [{"file", "count"}], "source", "transform", "seed", ...}``.

Atomicity: :class:`DatasetWriter` writes into a hidden temp dir ``.<name>.tmp-<pid>-<rand>`` next to the
destination and renames it into place after ``dataset.json`` is written. An exception removes the temp dir; a
killed process leaves only the hidden temp dir, which the next writer for the same destination deletes (resume
is not supported: a rerun starts from scratch). An existing dataset is refused unless ``overwrite=True``.
"""
import json
import os
import shutil
import time
import uuid

import numpy as np
import tensorflow as tf

from ..utils import read_json_object, replace_dir_atomic, write_atomic

FORMAT = "afgan-tf-tfrecord"
FORMAT_VERSION = 1
META_NAME = "dataset.json"
ENCODINGS = ("png", "raw")


def shard_name(i, n):
    return f"data-{i:05d}-of-{n:05d}.tfrecord"


def is_tfrecord_dataset(path):
    meta = os.path.join(path, META_NAME)
    if not (os.path.isdir(path) and os.path.isfile(meta)):
        return False
    try:
        with open(meta) as fh:
            return json.load(fh).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_unless_done(dest, write):
    """Runs ``write()``, which writes the dataset at ``dest`` with a :class:`DatasetWriter`; when another process
    completed ``dest`` first (the writer's ``FileExistsError`` with a complete dataset there), its result is used.
    For cached datasets built on first use by several processes at once."""
    try:
        write()
    except FileExistsError:
        if not is_tfrecord_dataset(dest):
            raise


def _is_int(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _check_metadata(meta, where):
    """The fields readers use, with their types (a hand-edited or hostile file: one ValueError naming the field)."""
    for key, lo in (("resolution", 1), ("channels", 1), ("count", 0), ("label_dim", 0)):
        if not _is_int(meta.get(key), lo):
            raise ValueError(f"{where}: {key!r} must be an integer >= {lo}, got {meta.get(key)!r:.60}")
    if "format_version" in meta and not _is_int(meta["format_version"]):
        raise ValueError(f"{where}: 'format_version' must be an integer >= 0, got {meta['format_version']!r:.60}")
    shards = meta.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and _is_int(e.get("count")) for e in shards):
        raise ValueError(f"{where}: 'shards' must be a list of {{\"file\": name, \"count\": n}} objects")
    for e in shards:
        if os.path.isabs(e["file"]) or ".." in e["file"].replace("\\", "/").split("/"):
            raise ValueError(f"{where}: shard file {e['file']!r:.100} is not a name inside the dataset directory")
    if sum(e["count"] for e in shards) != meta["count"]:
        raise ValueError(f"{where}: the shards hold {sum(e['count'] for e in shards)} images but 'count' is "
                         f"{meta['count']}")


def read_metadata(path):
    meta_path = os.path.join(path, META_NAME)
    meta = read_json_object(meta_path, missing="no dataset metadata (not an afgan-tf dataset directory)")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    _check_metadata(meta, meta_path)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta['format_version']} is newer than supported "
                         f"({FORMAT_VERSION})")
    for s in meta["shards"]:
        f = os.path.join(path, s["file"])
        if not os.path.isfile(f):
            raise FileNotFoundError(f"{f}: shard listed in {meta_path} is missing")
    return meta


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_prefix(dest):
    return "." + os.path.basename(os.path.normpath(dest)) + ".tmp-"


def clean_stale_temps(dest):
    """Removes hidden temp dirs of earlier killed writers for ``dest`` (their pid is gone); returns the list."""
    parent = os.path.dirname(os.path.abspath(dest))
    prefix = temp_prefix(dest)
    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in os.listdir(parent):
        if not name.startswith(prefix):
            continue
        try:
            pid = int(name[len(prefix):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        removed.append(name)
    return removed


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _ints(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(a) for a in v]))


def _floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(a) for a in v]))


def serialize_example(image, label, index, name, encoding="png", png=None):
    """uint8 ``[H, W, C]`` + float label vector → serialized tf.train.Example (``png``: pre-encoded bytes)."""
    from .images import encode_png
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
    if encoding == "png":
        data = png if png is not None else encode_png(image)
    else:
        data = np.ascontiguousarray(image).tobytes()
    feats = {
        "image": _bytes(data),
        "shape": _ints(image.shape),
        "label": _floats(np.asarray(label if label is not None else [], np.float32).reshape(-1)),
        "index": _ints([index]),
        "name": _bytes(str(name).encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


class DatasetWriter:
    """Context manager writing one dataset atomically.

    Args:
      dest: destination directory (must not exist unless ``overwrite``).
      resolution, channels: image shape every ``add`` must match (``[resolution, resolution, channels]``).
      label_dim: length of every label vector (0 = unlabelled).
      num_shards: number of ``.tfrecord`` files (images are assigned round-robin).
      encoding: ``"png"`` (lossless, compact) or ``"raw"`` (uint8 bytes, fastest to decode).
      overwrite: replace an existing dataset at ``dest`` (only after the new one is complete).
      metadata: extra JSON-serialisable entries for ``dataset.json`` (source, transform, seed, ...).
    """

    def __init__(self, dest, resolution, channels, label_dim=0, num_shards=1, encoding="png", overwrite=False,
                 metadata=None):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if int(num_shards) < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.dest = os.path.abspath(dest)
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.label_dim = int(label_dim)
        self.num_shards = int(num_shards)
        self.encoding = encoding
        self.overwrite = bool(overwrite)
        self.metadata = dict(metadata or {})
        self.count = 0
        self.tmp = None
        self._writers = []
        self._counts = [0] * self.num_shards
        check_dest(self.dest, self.overwrite)

    def __enter__(self):
        parent = os.path.dirname(self.dest)
        os.makedirs(parent, exist_ok=True)
        clean_stale_temps(self.dest)
        self.tmp = os.path.join(parent, f"{temp_prefix(self.dest)}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(self.tmp)
        self._writers = [tf.io.TFRecordWriter(os.path.join(self.tmp, shard_name(i, self.num_shards)))
                         for i in range(self.num_shards)]
        return self

    def add(self, image, label=None, name="", png=None):
        """Appends one uint8 ``[R, R, C]`` image (``png``: optional PNG bytes of exactly this image, e.g. encoded
        in a worker thread)."""
        image = np.asarray(image)
        want = (self.resolution, self.resolution, self.channels)
        if image.shape != want or image.dtype != np.uint8:
            raise ValueError(f"{name or 'image'}: expected uint8 {list(want)}, got {image.dtype} {list(image.shape)}")
        label = np.zeros([0], np.float32) if label is None else np.asarray(label, np.float32).reshape(-1)
        if label.shape[0] != self.label_dim:
            raise ValueError(f"{name or 'image'}: label has length {label.shape[0]}, expected {self.label_dim}")
        s = self.count % self.num_shards
        self._writers[s].write(serialize_example(image, label, self.count, name, self.encoding, png))
        self._counts[s] += 1
        self.count += 1

    def _close_writers(self):
        for w in self._writers:
            w.close()
        self._writers = []

    def abort(self):
        self._close_writers()
        if self.tmp and os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def commit(self):
        """Writes dataset.json and moves the dataset into place; returns the metadata."""
        self._close_writers()
        if self.count == 0:
            self.abort()
            raise ValueError(f"{self.dest}: no images were written; refusing to create an empty dataset")
        meta = dict(self.metadata)
        meta.update(format=FORMAT, format_version=FORMAT_VERSION, resolution=self.resolution,
                    channels=self.channels, count=self.count, label_shape=[self.label_dim], label_dim=self.label_dim,
                    encoding=self.encoding, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    shards=[dict(file=shard_name(i, self.num_shards), count=c) for i, c in enumerate(self._counts)])
        write_atomic(os.path.join(self.tmp, META_NAME), json.dumps(meta, indent=1))
        if os.path.isdir(self.dest) and not os.listdir(self.dest):
            os.rmdir(self.dest)
        if os.path.exists(self.dest) and not self.overwrite:
            self.abort()
            raise FileExistsError(f"{self.dest} appeared while writing; not replacing it (use --overwrite)")
        replace_dir_atomic(self.tmp, self.dest)
        self.tmp = None
        return meta

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            return False
        if self.tmp is not None:
            self.commit()
        return False


def check_dest(dest, overwrite):
    """Refuses an existing non-empty destination unless ``overwrite``, and a destination that cannot be created (a
    parent that is a file, or not writable) — before any work is done."""
    parent = os.path.dirname(os.path.abspath(dest))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"--dest {dest}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--dest {dest}: cannot be created, {parent} is not writable")
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise FileExistsError(f"--dest {dest} exists and is not a directory")
        if not os.listdir(dest):
            return
        if not is_tfrecord_dataset(dest):
            raise FileExistsError(f"--dest {dest} is a non-empty directory that is not an afgan-tf dataset; "
                                  f"refusing to write into or replace it (choose another --dest)")
        if not overwrite:
            raise FileExistsError(f"--dest {dest} already holds a complete dataset; pass --overwrite to replace it")


FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "shape": tf.io.FixedLenFeature([3], tf.int64),
    "label": tf.io.VarLenFeature(tf.float32),
    "index": tf.io.FixedLenFeature([], tf.int64),
}


def make_decoder(meta):
    """Serialized Example → (uint8 ``[R, R, C]``, float32 label ``[label_dim]``, int64 index) for the metadata."""
    res, ch, ldim = int(meta["resolution"]), int(meta["channels"]), int(meta["label_dim"])
    encoding = meta.get("encoding", "png")

    def decode(serialized):
        ex = tf.io.parse_single_example(serialized, FEATURES)
        if encoding == "png":
            img = tf.io.decode_png(ex["image"], channels=ch)
        else:
            img = tf.io.decode_raw(ex["image"], tf.uint8)
        img = tf.reshape(img, [res, res, ch])  # [R, R, C]
        label = tf.sparse.to_dense(ex["label"])
        label = tf.reshape(label, [ldim])
        return img, label, ex["index"]

    return decode
