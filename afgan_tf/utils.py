"""Small helpers shared across the package: the one atomic file writer and the one time formatter."""
import contextlib
import json
import os
import tempfile

import numpy as np

__all__ = ["atomic_path", "write_atomic", "write_json_atomic", "replace_dir_atomic", "format_time"]


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Context manager for writers that need a file name (PIL by extension, Keras ``save_weights``, ffmpeg, matplotlib).

    Yields a temp path next to ``path`` (``.<name>.XXXX<suffix>``; the folder is created if needed); on a clean exit
    the temp file gets the usual permissions (``0o666 & ~umask``; ``mkstemp`` creates 0600) and is renamed onto
    ``path`` with ``os.replace``, so a reader sees the old file or the complete new one, never a part. On an exception
    the temp file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(path, data, suffix=".tmp"):
    """Write ``data`` to ``path`` atomically (``atomic_path``: temp file in the same folder, fsync, ``os.replace``).

    ``data``: bytes, str (UTF-8), or a callable ``fh -> None`` that writes into a binary file object (e.g.
    ``PIL.Image.save`` or ``np.savez``). Returns ``path``.
    """
    with atomic_path(path, suffix) as tmp:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else bytes(data))
            fh.flush()
            os.fsync(fh.fileno())
    return path


def replace_dir_atomic(src, dest):
    """Move the finished folder ``src`` onto ``dest`` (same file system), replacing whatever ``dest`` holds.

    An existing ``dest`` is first renamed aside (``<dest>.old-XXXXXXXX``), ``src`` is renamed onto ``dest``, then the
    old copy is deleted: ``dest`` is never a half-written folder, and if the second rename fails the old one is put
    back. Returns ``dest``.
    """
    import shutil
    import uuid
    dest = os.fspath(dest).rstrip("/") or "/"
    trash = None
    if os.path.lexists(dest):
        trash = f"{dest}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dest, trash)
    try:
        os.rename(src, dest)
    except BaseException:
        if trash is not None:
            os.rename(trash, dest)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return dest


def write_json_atomic(path, obj, indent=2):
    """``obj`` as JSON (sorted keys) to ``path``, atomically."""
    write_atomic(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def read_json_object(path, name=None, missing="no such file"):
    """The JSON object (dict) in ``path``; one-line errors that start with ``name`` (default: the path):
    ``FileNotFoundError`` ("<name>: <missing>"), ``ValueError`` for invalid JSON or a top level that is no object."""
    name = name or path
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: {missing}") from None
    except ValueError as e:
        raise ValueError(f"{name}: invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: expected a JSON object, got {type(obj).__name__}")
    return obj


def format_time(seconds):
    """``42s``, ``3m 05s``, ``2h 07m 09s``, ``1d 03h 07m`` (the original's ``dnnlib.util.format_time`` layout, used in
    the training tick line and the metric records' ``total_time_str``)."""
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"
