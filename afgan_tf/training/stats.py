"""Training statistics, logs and image grids (docs/ALGORITHM.md §5.7).

* :class:`Collector` accumulates ``(num, sum, sum of squares)`` per stat name between ticks and turns them into
  ``{name: {num, mean, std}}``;
* :class:`StatsWriter` appends one JSON object per tick to ``stats.jsonl`` and writes each mean to TensorBoard at
  ``step = int(kimg)`` (plus image grids);
* :class:`Logger` tees stdout/stderr into ``log.txt``;
* :func:`tick_line`, :func:`progress_bar`, :func:`memory_gb`, :func:`save_image_grid`, :func:`grid_size`.
"""
import io
import json
import math
import os
import sys
import time

import numpy as np

from afgan_tf.utils import format_time, write_atomic


class Collector:
    """Sums of per-sample values per stat name; ``as_dict()`` gives ``{name: {num, mean, std}}``."""

    def __init__(self):
        self._acc = {}

    def add(self, name, num, total, total_sq):
        a = self._acc.setdefault(name, [0.0, 0.0, 0.0])
        a[0] += float(num)
        a[1] += float(total)
        a[2] += float(total_sq)

    def add_values(self, name, values):
        v = np.asarray(values, np.float64).ravel()
        self.add(name, v.size, v.sum(), np.square(v).sum())

    def set(self, name, value):
        self._acc[name] = [1.0, float(value), float(value) ** 2]

    def as_dict(self):
        out = {}
        for name, (n, s, sq) in sorted(self._acc.items()):
            if n <= 0:
                continue
            mean = s / n
            var = max(sq / n - mean * mean, 0.0)
            out[name] = dict(num=n, mean=mean, std=math.sqrt(var))
        return out

    def mean(self, name, default=float("nan")):
        a = self._acc.get(name)
        return a[1] / a[0] if a and a[0] > 0 else default

    def reset(self):
        self._acc = {}

    def state(self, prefixes=("",)):
        """The sums of the names starting with one of ``prefixes`` (JSON-serialisable; :meth:`load` adds them)."""
        return {k: list(v) for k, v in self._acc.items() if k.startswith(tuple(prefixes))}

    def load(self, state):
        for k, v in state.items():
            self.add(k, *v)


class StatsWriter:
    """``stats.jsonl`` (append, one line per tick) + TensorBoard summaries in ``run_dir``."""

    def __init__(self, run_dir, tensorboard=True):
        self.path = os.path.join(run_dir, "stats.jsonl")
        self._tb = None
        if tensorboard:
            import tensorflow as tf
            self._tb = tf.summary.create_file_writer(run_dir)

    @staticmethod
    def _scalar(tag, value, step):
        import tensorflow as tf
        try:
            tf.summary.scalar(tag, value, step=step)
        except Exception as e:  # TBNotInstalledError: write the same event with the plugin metadata ourselves
            if "ensorBoard" not in str(e) and "ensorboard" not in str(e):
                raise
            from tensorflow.core.framework import summary_pb2
            md = summary_pb2.SummaryMetadata()
            md.plugin_data.plugin_name = "scalars"
            tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=md.SerializeToString())

    @staticmethod
    def _image(tag, grid_uint8, step):
        import tensorflow as tf
        try:
            tf.summary.image(tag, grid_uint8[None], step=step)
        except Exception as e:  # same event as tf.summary.image: [width, height, png] strings, 'images' plugin
            if "ensorBoard" not in str(e) and "ensorboard" not in str(e):
                raise
            from tensorflow.core.framework import summary_pb2
            md = summary_pb2.SummaryMetadata()
            md.plugin_data.plugin_name = "images"
            png = tf.io.encode_png(tf.constant(grid_uint8))
            t = tf.stack([tf.as_string(grid_uint8.shape[1]), tf.as_string(grid_uint8.shape[0]), png])
            tf.summary.write(tag, t, step=step, metadata=md.SerializeToString())

    def write(self, stats, kimg, timestamp=None):
        rec = dict(stats)
        rec["timestamp"] = time.time() if timestamp is None else timestamp
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        if self._tb is not None:
            import tensorflow as tf
            with self._tb.as_default():
                for name, v in stats.items():
                    self._scalar(name, v["mean"], int(kimg))
            self._tb.flush()

    def image(self, name, grid_uint8, kimg):
        if self._tb is not None:
            import tensorflow as tf
            with self._tb.as_default():
                self._image(name, grid_uint8, int(kimg))
            self._tb.flush()

    def scalar(self, name, value, kimg):
        if self._tb is not None:
            import tensorflow as tf
            with self._tb.as_default():
                self._scalar(name, value, int(kimg))
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


class Logger:
    """Copies everything printed to stdout/stderr into ``file_name`` (append)."""

    def __init__(self, file_name):
        self.file = open(file_name, "a")
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(self.stdout, self.file), _Tee(self.stderr, self.file)

    def close(self):
        if self.file is not None:
            sys.stdout, sys.stderr = self.stdout, self.stderr
            self.file.close()
            self.file = None


class _Tee(io.TextIOBase):
    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text):
        self.stream.write(text)
        if not self.file.closed:
            self.file.write(text)
            self.file.flush()
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return getattr(self.stream, "isatty", lambda: False)()

    def fileno(self):
        return self.stream.fileno()


def memory_gb():
    """(current resident memory, peak resident memory) of this process in GB (Linux /proc)."""
    cur = peak = float("nan")
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) / 2 ** 20
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return cur, peak


def gpu_memory_gb():
    """Peak GPU memory of the first GPU in GB (nan without a GPU)."""
    try:
        import tensorflow as tf
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            return float("nan")
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2 ** 30
    except Exception:  # memory info is best-effort
        return float("nan")


def tick_line(tick, kimg, total_sec, sec_per_tick, sec_per_kimg, images_per_sec, maint_sec, cpu_gb, gpu_gb,
              augment_p, eta_sec):
    """One status line per tick (the original's fields plus images/s and ETA)."""
    fields = [f"tick {tick:<5d}", f"kimg {kimg:<8.3f}", f"time {format_time(total_sec):<12s}",
              f"sec/tick {sec_per_tick:<7.1f}", f"sec/kimg {sec_per_kimg:<7.2f}", f"img/s {images_per_sec:<7.1f}",
              f"maintenance {maint_sec:<6.1f}", f"cpumem {cpu_gb:<6.2f}"]
    if not math.isnan(gpu_gb):
        fields.append(f"gpumem {gpu_gb:<6.2f}")
    fields += [f"augment {augment_p:.3f}", f"eta {format_time(eta_sec) if eta_sec >= 0 else '-'}"]
    return " ".join(fields)


def progress_bar(done, total, width=30, prefix=""):
    """``prefix [#####.....]  42.0%`` for the current tick (carriage-return redrawn by the caller)."""
    frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    n = int(round(frac * width))
    return f"{prefix}[{'#' * n}{'.' * (width - n)}] {100 * frac:5.1f}%"


def grid_size(resolution, num_images=None, max_images=None):
    """The original's grid: ``gw = clip(7680 // W, 7, 32)``, ``gh = clip(4320 // H, 4, 32)``; optionally capped."""
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if max_images is not None:
        while gw * gh > max_images and (gw > 1 or gh > 1):
            if gw >= gh and gw > 1:
                gw -= 1
            else:
                gh -= 1
    return gw, gh


def images_to_grid(images, gw, gh, drange=(-1, 1)):
    """``[gw*gh, H, W, C]`` float images in ``drange`` -> uint8 grid ``[gh*H, gw*W, C]`` (C = 1 or 3)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] != gw * gh:
        raise ValueError(f"images must have shape [{gw * gh}, H, W, C], got {images.shape}")
    lo, hi = drange
    x = (images - lo) * (255 / (hi - lo))
    x = np.rint(x).clip(0, 255).astype(np.uint8)
    n, h, w, c = x.shape
    x = x.reshape(gh, gw, h, w, c).transpose(0, 2, 1, 3, 4).reshape(gh * h, gw * w, c)
    return x


def save_image_grid(images, path, gw, gh, drange=(-1, 1)):
    """Write a PNG grid atomically; returns the uint8 grid."""
    import PIL.Image
    grid = images_to_grid(images, gw, gh, drange)
    img = PIL.Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid, "L" if grid.shape[2] == 1 else "RGB")
    write_atomic(path, lambda fh: img.save(fh, format="PNG"))
    return grid
