"""``build_dataset``: source images → validated, transformed (or FFHQ-U cropped) → our TFRecord dataset.

Steps:
  1. enumerate the source (folder / zip / original dataset with labels, or FFHQ in-the-wild + json);
  2. per image (in a small thread pool, in order): decode + validate (:func:`images.decode_image`: the header's pixel
     count against ``max_pixels`` before decoding, CMYK and 16-bit photos converted and counted), then either the
     §6.5 transform + Lanczos resize, or (``ffhqu``) the §6.1 crop whose random shift was drawn in order in the
     main thread from ``RandomState(seed)`` after the original's dummy ``normal(0, 1, (num_entries, 2))`` draw;
  3. bad files (incl. broken symlinks / symlink loops, named as such) are skipped with a logged reason
     (``strict`` → raise :class:`BuildError` at the first one);
  4. images go to a :class:`tfrecord.DatasetWriter` (atomic); a progress line reports images/s.
"""
import collections
import concurrent.futures
import os
import sys
import time

import numpy as np

from . import ffhqu as ffhqu_mod
from . import shapes
from .images import (DEFAULT_MAX_PIXELS, BadImageError, apply_transform, decode_image, encode_png, is_power_of_two,
                     open_image, parse_resolution)
from .sources import ImageFolder, ffhq_items
from .tfrecord import DatasetWriter, check_dest


class BuildError(RuntimeError):
    pass


class _Skip(Exception):
    def __init__(self, name, reason):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def _reason_key(reason):
    return reason.split(" (")[0]


class Progress:
    """A one-line progress report (done/total, images/s, skipped) to a stream, at most every ``interval`` s."""

    def __init__(self, total, stream=sys.stderr, interval=1.0, enabled=True):
        self.total, self.stream, self.interval, self.enabled = total, stream, interval, enabled
        self.t0 = time.time()
        self.last = 0.0
        self.open_line = False

    def clear(self):
        """Ends an unfinished progress line so a log message starts on its own line."""
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False

    def update(self, done, written, skipped, force=False):
        now = time.time()
        if not self.enabled or (not force and now - self.last < self.interval):
            return
        self.last = now
        rate = written / max(now - self.t0, 1e-9)
        tot = f"/{self.total}" if self.total else ""
        self.stream.write(f"\r{done}{tot} files, {written} written, {skipped} skipped, {rate:.1f} images/s")
        self.open_line = True
        if force:
            self.clear()
        self.stream.flush()


def build_dataset(source, dest, resolution=None, transform=None, channels=3, max_images=None, ffhq_json=None,
                  ffhqu=False, random_shift=ffhqu_mod.DEFAULT_SHIFT, seed=ffhqu_mod.FFHQ_SEED, shards=1,
                  strict=False, overwrite=False, encoding="png", min_size=16, workers=2, log=None, progress=True,
                  max_pixels=DEFAULT_MAX_PIXELS):
    """Builds a dataset at ``dest``; returns ``dict(written, skipped=[(name, reason)], reasons, converted, seconds,
    meta)`` (``converted``: {"CMYK->RGB": n, "16->8 bit": m} of the images written).

    Args mirror the tool's flags (see ``flags/dataset_flags.py``). ``log``: callable for messages (default
    stderr). ``ffhqu`` requires ``ffhq_json``; crops are produced directly at ``resolution``.
    """
    user_log = log or (lambda m: print(m, file=sys.stderr))
    if shapes.parse_spec(source) is not None and not os.path.exists(source):  # procedural "shapes:N:RES[:SEED]"
        return shapes.build_from_spec(source, dest, resolution=resolution, shards=shards, overwrite=overwrite,
                                      encoding=encoding, log=user_log)
    prog = None

    def log(m):
        if prog is not None:
            prog.clear()
        user_log(m)
    t0 = time.time()
    size = parse_resolution(resolution)
    if size is not None:
        w, h = size
        if not is_power_of_two(w):
            raise ValueError(f"--resolution width must be a power of two, got {w}")
        if transform != "center-crop-wide" and w != h:
            raise ValueError(f"--resolution must be square (WxW) unless --transform=center-crop-wide, got {w}x{h}")
        if h > w:
            raise ValueError(f"--resolution height {h} must be <= width {w}")
    if transform not in (None, "center-crop", "center-crop-wide"):
        raise ValueError(f"--transform must be center-crop or center-crop-wide, got {transform!r}")
    if transform is not None and size is None:
        raise ValueError(f"--transform={transform} requires --resolution")
    if channels not in (1, 3):
        raise ValueError(f"--channels must be 1 or 3, got {channels}")
    if ffhqu and ffhq_json is None:
        raise ValueError("--ffhqu needs --ffhq-json=<ffhq-dataset-v2.json> (the landmarks)")
    if ffhqu and size is None:
        raise ValueError("--ffhqu requires --resolution")
    if ffhqu and transform is not None:
        raise ValueError("--ffhqu and --transform are exclusive (FFHQ-U is its own crop)")
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {max_images}")
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {max_pixels}")
    check_dest(os.path.abspath(dest), overwrite)

    # 1. enumerate the source
    rng = None
    if ffhq_json is not None:
        if not os.path.isdir(source):
            raise FileNotFoundError(f"--source {source}: must be the in-the-wild images folder with --ffhq-json")
        num_entries, entries = ffhq_items(source, ffhq_json)
        items = [dict(name=e["name"], path=e["path"], landmarks=e["landmarks"], label=None) for e in entries]
        label_dim = 0
        source_kind = "ffhq-in-the-wild"
        if ffhqu:
            rng = np.random.RandomState(seed)
            rng.normal(0, 1, (num_entries, 2))  # the original's dummy draw before the per-image draws
        folder = None
    else:
        folder = ImageFolder(source)
        labels = folder.labels() if folder.raw_labels is not None else None
        label_dim = int(labels.shape[1]) if labels is not None else 0
        items = [dict(name=n, path=folder.file_path(n), label=(labels[i] if labels is not None else None))
                 for i, n in enumerate(folder.names)]
        source_kind = "zip" if folder.kind == "zip" else "folder"
        image_set = set(folder.names)
        non_images = [n for n in folder.all_names if n not in image_set and n != "dataset.json"]
    if not items:
        raise BuildError(f"--source {source}: no images found")

    skipped = []
    converted = collections.Counter()
    state = dict(writer=None, res=size[0] if size else None)

    def skip(name, reason):
        if strict:
            raise BuildError(f"{name}: {reason} (--strict)")
        skipped.append((name, reason))
        log(f"skipped {name}: {reason}")

    # a file larger than this cannot be an image within max_pixels (16-bit RGBA, uncompressed, + metadata)
    max_file_bytes = None if max_pixels is None else 8 * int(max_pixels) + (16 << 20)

    def read(item):
        if folder is not None and folder.kind == "zip":
            return folder.read_bytes(item["name"], max_bytes=max_file_bytes)
        return item["path"]

    # 2. per-image work (runs in the pool; pure function of the item and the pre-drawn crop centre)
    def work(item, center):
        name = item["name"]
        try:
            a, conversion = decode_image(read(item), channels=channels, name=name, min_size=min_size,
                                         max_pixels=max_pixels)
        except BadImageError as e:
            raise _Skip(name, e.reason) from None
        except OSError as e:
            raise _Skip(name, f"unreadable file ({e})") from None
        if ffhqu:
            c, q = center
            out = ffhqu_mod.crop_square_pil(a, c, q, size[0])
            return out, (encode_png(out) if encoding == "png" else None), conversion
        out = apply_transform(a, transform, *(size or (None, None)))
        if out is None:
            raise _Skip(name, f"dropped by --transform={transform} (image {a.shape[1]}x{a.shape[0]} too small)")
        if out.shape[0] != out.shape[1]:
            raise _Skip(name, f"not square ({out.shape[1]}x{out.shape[0]}); use --transform=center-crop")
        if not is_power_of_two(out.shape[0]):
            raise _Skip(name, f"side {out.shape[0]} is not a power of two; pass --resolution")
        return out, (encode_png(out) if encoding == "png" else None), conversion  # PNG encoding: in the pool

    def plan(item):
        """Main-thread, in-order step: the FFHQ-U random shift (needs only the image size)."""
        if item.get("path") is None and folder is None:
            raise _Skip(item["name"], "file listed in --ffhq-json not found under --source")
        if not ffhqu:
            return None
        try:
            with open_image(item["path"], item["name"], max_pixels) as img:
                width, height = img.size
        except BadImageError as e:
            raise _Skip(item["name"], e.reason) from None
        c0, q = ffhqu_mod.landmark_crop_params(item["landmarks"])
        try:
            c, _ = ffhqu_mod.random_shift_crop(c0, q, width, height, rng, random_shift)
        except ffhqu_mod.CropError as e:
            raise _Skip(item["name"], str(e)) from None
        return c, q

    meta = dict(source=os.path.abspath(source), source_kind=source_kind, transform=transform,
                ffhqu=bool(ffhqu), random_shift=float(random_shift) if ffhqu else None,
                seed=int(seed) if ffhqu else None, ffhq_json=os.path.abspath(ffhq_json) if ffhq_json else None,
                min_size=int(min_size), max_pixels=None if max_pixels is None else int(max_pixels),
                tool="afgan-tf dataset_tool")

    def emit(item, img, png):
        if state["writer"] is None:
            res = img.shape[0]
            state["res"] = res
            state["writer"] = DatasetWriter(dest, res, channels, label_dim, shards, encoding, overwrite, meta)
            state["writer"].__enter__()
        if img.shape[0] != state["res"]:
            skip(item["name"], f"size {img.shape[1]}x{img.shape[0]} differs from the first image's "
                               f"{state['res']}x{state['res']}; pass --resolution")
            return False
        state["writer"].add(img, item["label"], item["name"], png=png)
        return True

    prog = Progress(len(items), enabled=progress)
    if folder is not None:
        for n in non_images:
            skip(n, "not an image (unknown file extension)")
    done = 0
    limit = max_images or float("inf")
    pool = concurrent.futures.ThreadPoolExecutor(max(1, int(workers)))
    pending = collections.deque()
    try:
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 4 * max(1, int(workers)) and \
                    (state["writer"].count if state["writer"] else 0) + len(pending) < limit:
                item = next(it, None)
                if item is None:
                    exhausted = True
                    break
                try:
                    center = plan(item)
                except _Skip as s:
                    done += 1
                    skip(s.name, s.reason)
                    continue
                pending.append((item, pool.submit(work, item, center)))
            if not pending:
                break
            item, fut = pending.popleft()
            done += 1
            try:
                img, png, conversion = fut.result()
            except _Skip as s:
                skip(s.name, s.reason)
            else:
                if (state["writer"].count if state["writer"] else 0) < limit:
                    if emit(item, img, png) and conversion:
                        converted[conversion] += 1
            prog.update(done, state["writer"].count if state["writer"] else 0, len(skipped))
        if state["writer"] is None:
            raise BuildError(f"--source {source}: no usable images ({len(skipped)} skipped)")
        meta = state["writer"].commit()
    except BaseException:
        for _, f in pending:
            f.cancel()
        if state["writer"] is not None:
            state["writer"].abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    written = meta["count"]
    prog.update(done, written, len(skipped), force=True)
    reasons = collections.Counter(_reason_key(r) for _, r in skipped)
    secs = time.time() - t0
    log(f"wrote {written} images ({meta['resolution']}x{meta['resolution']}x{meta['channels']}, "
        f"{len(meta['shards'])} shard(s)) to {os.path.abspath(dest)} in {secs:.1f} s; skipped {len(skipped)}"
        + (": " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common()) if skipped else "")
        + (f"; converted {sum(converted.values())} (" + ", ".join(f"{k} x{v}" for k, v in sorted(converted.items()))
           + ")" if converted else ""))
    return dict(written=written, skipped=skipped, reasons=dict(reasons), converted=dict(converted), seconds=secs,
                meta=meta)
