"""Inputs: the original's dataset format (folder / uncompressed zip + optional ``dataset.json`` labels) and
the FFHQ in-the-wild folder with ``ffhq-dataset-v2.json`` landmarks.

* :class:`ImageFolder`: images of a folder (recursive) or zip, sorted by relative path (``/`` separators);
  labels from ``dataset.json`` (``{"labels": [[relpath, label], ...]}`` or ``null``): integer labels →
  one-hot (dimension = max+1), lists → float32 vectors (docs/ALGORITHM.md §5.6).
* :func:`ffhq_items`: the entries of ``ffhq-dataset-v2.json`` in index order with in-the-wild file + landmarks.
"""
import json
import os
import threading
import zipfile

import numpy as np

from ..utils import read_json_object
from .images import BadImageError, is_image_name

LABELS_NAME = "dataset.json"


def convert_labels(raw, where):
    """List of raw labels (ints or lists) → float32 ``[N, c_dim]`` as the original does."""
    if raw is None or len(raw) == 0:
        return np.zeros([0, 0], np.float32)
    a = np.asarray(raw)
    if a.ndim == 1:
        if not np.issubdtype(a.dtype, np.integer):
            if np.all(np.equal(np.mod(a, 1), 0)):
                a = a.astype(np.int64)
            else:
                raise ValueError(f"{where}: scalar labels must be integers (class indices), got {a.dtype}")
        if a.min() < 0:
            raise ValueError(f"{where}: class labels must be >= 0, got {a.min()}")
        onehot = np.zeros([a.shape[0], int(a.max()) + 1], np.float32)
        onehot[np.arange(a.shape[0]), a] = 1
        return onehot
    if a.ndim == 2:
        return a.astype(np.float32)
    raise ValueError(f"{where}: labels must be ints or flat lists, got an array of shape {a.shape}")


class ImageFolder:
    """The original's ``ImageFolderDataset`` layout: a directory (recursive) or an uncompressed zip."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._local = threading.local()
        if os.path.isdir(self.path):
            self.kind = "dir"
            names = []
            for root, _dirs, files in os.walk(self.path):
                for f in files:
                    rel = os.path.relpath(os.path.join(root, f), self.path).replace(os.sep, "/")
                    names.append(rel)
        elif os.path.isfile(self.path) and zipfile.is_zipfile(self.path):
            self.kind = "zip"
            with zipfile.ZipFile(self.path) as z:
                names = [i.filename for i in z.infolist() if not i.is_dir()]
        elif os.path.isfile(self.path):
            raise ValueError(f"{self.path}: not a directory or a zip file")
        else:
            raise FileNotFoundError(f"{self.path}: no such file or directory")
        self.all_names = sorted(names)
        self.names = [n for n in self.all_names if is_image_name(n)]
        self.raw_labels = self._read_labels(names)

    def _read_labels(self, names):
        if LABELS_NAME not in names:
            return None
        data = self.read_bytes(LABELS_NAME)
        where = f"{self.path}/{LABELS_NAME}"
        try:
            obj = json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise ValueError(f"{where}: invalid JSON ({e})") from None
        labels = obj.get("labels") if isinstance(obj, dict) else None
        if labels is None:
            return None
        if not isinstance(labels, list) or not all(isinstance(e, list) and len(e) == 2 for e in labels):
            raise ValueError(f"{where}: \"labels\" must be null or a list of [relative path, label] pairs")
        return {str(k).replace("\\", "/"): v for k, v in labels}

    def label_for(self, name):
        if self.raw_labels is None:
            return None
        if name not in self.raw_labels:
            raise ValueError(f"{self.path}/{LABELS_NAME}: no label for image {name!r}")
        return self.raw_labels[name]

    def labels(self, names=None):
        """float32 ``[N, c_dim]`` labels for ``names`` (default: all images); ``c_dim = 0`` when unlabelled."""
        names = self.names if names is None else names
        if self.raw_labels is None:
            return np.zeros([len(names), 0], np.float32)
        return convert_labels([self.label_for(n) for n in names], f"{self.path}/{LABELS_NAME}")

    def _zip(self):
        z = getattr(self._local, "zip", None)
        if z is None:
            z = zipfile.ZipFile(self.path)
            self._local.zip = z
        return z

    def file_path(self, name):
        return os.path.join(self.path, *name.split("/")) if self.kind == "dir" else None

    def read_bytes(self, name, max_bytes=None):
        """The bytes of ``name``; a zip entry larger than ``max_bytes`` (None = any) is refused before it is
        inflated (:class:`images.BadImageError`)."""
        if self.kind == "dir":
            with open(self.file_path(name), "rb") as fh:
                return fh.read()
        z = self._zip()
        if max_bytes is not None:
            info = z.getinfo(name)
            if info.file_size > max_bytes:
                raise BadImageError(name, f"zip entry inflates to {info.file_size} bytes, more than an image within "
                                          f"--max-pixels can take ({max_bytes})")
        return z.read(name)

    def open(self, name):
        """A binary file object of ``name`` (a zip entry is streamed, not inflated whole): for header reads."""
        if self.kind == "dir":
            return open(self.file_path(name), "rb")
        return self._zip().open(name)


def find_ffhq_file(source, file_path):
    """Locates an ``in_the_wild.file_path`` (``in-the-wild-images/NNNNN/NNNNN.png``) under ``source``."""
    parts = file_path.replace("\\", "/").split("/")
    for k in range(len(parts)):
        cand = os.path.join(source, *parts[k:])
        if os.path.isfile(cand):
            return cand
    return None


def ffhq_items(source, json_path):
    """``ffhq-dataset-v2.json`` → (number of entries, list of dicts ``name, path, landmarks`` in index order).

    Entries whose file is missing get ``path=None`` (reported by the tool as skipped).
    """
    meta = read_json_object(json_path, f"--ffhq-json {json_path}")   # an object keyed by image index
    items = []
    for key in sorted(meta, key=lambda k: int(k)):
        entry = meta[key]
        try:
            wild = entry["in_the_wild"]
            rel = wild["file_path"]
            lm = np.asarray(wild["face_landmarks"], np.float64)
        except (KeyError, TypeError) as e:
            raise ValueError(f"--ffhq-json {json_path}: entry {key} lacks in_the_wild.file_path/face_landmarks "
                             f"({e})") from None
        items.append(dict(name=rel, path=find_ffhq_file(source, rel), landmarks=lm, key=key))
    return len(meta), items
