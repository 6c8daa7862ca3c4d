"""Small helpers shared across the package: the one atomic file writer and the one time formatter."""
import json
import os
import tempfile

import numpy as np

__all__ = ["write_atomic", "write_json_atomic", "format_time"]


def write_atomic(path, data):
    """Write ``data`` to ``path`` atomically: a temp file in the same directory, fsync, ``os.replace``.

    ``data``: bytes, str (UTF-8), or a callable ``fh -> None`` that writes into a binary file object (e.g.
    ``PIL.Image.save`` or ``np.savez``). A reader sees the old file or the complete new one, never a part; the temp
    file is removed if writing fails.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else bytes(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path, obj, indent=2):
    """``obj`` as JSON (sorted keys) to ``path``, atomically."""
    write_atomic(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def format_time(seconds):
    """``42s``, ``3m 05s``, ``2h 07m``, ``1d 03h`` (the original's ``dnnlib.util.format_time`` layout)."""
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"
