"""tf.data input pipeline: ``make_dataset`` and ``dataset_info``.

Reads our TFRecord datasets and the original's format (folder or uncompressed zip of images, optional
``dataset.json`` labels; every image's header is checked up front by :func:`validate_original`). Pipeline steps:
  1. keys in a fixed order: serialized Examples (TFRecord shards interleaved round-robin = write order) or
     image indices (original format);
  2. per-worker sharding with ``input_context`` (whole shard files when their number divides evenly, else
     every ``num_input_pipelines``-th record) — done before any shuffling, so workers get disjoint shares;
  3.-5. passes over the keys (endless with ``repeat``), each shuffled with its own seed (buffer
     ``shuffle_buffer``); with ``mirror`` an epoch is two passes and every image is flipped in exactly one of
     them (a stateless coin per (seed, epoch, image)), so the dataset doubles like the original's ``xflip``
     and the two copies of an image are a pass apart;
  6. parallel decode (PNG via ``tf.io.decode_png`` at 16 bits, rounded to 8 like the PIL path; raw bytes, or PIL in ``tf.numpy_function`` for other
     formats) + x-flip, 7. batch (per-replica size under ``input_context``), uint8 → float32 ``x/127.5 - 1``,
     8. prefetch.
Elements: ``(images [N, R, R, C] float32 in [-1, 1], labels [N, c_dim] float32)`` (``c_dim = 0`` when
``use_labels`` is False or the dataset is unlabelled); unbatched when ``batch_size`` is None.
"""
import os

import numpy as np
import tensorflow as tf

from . import shapes, tfrecord
from .images import DEFAULT_MAX_PIXELS, BadImageError, load_image, open_image
from .sources import ImageFolder

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 4096
SHUFFLE_BUFFER_BYTES = 512 << 20


_VALIDATED = {}  # (path, listing, zip mtime) -> (resolution, channels): one header scan per dataset and process
_BAD_SHOWN = 5


def _header(folder, name, max_pixels):
    """(width, height, mode) from the image's header only (PIL reads no pixel data; a zip entry is streamed)."""
    if folder.kind == "dir":
        with open_image(folder.file_path(name), name, max_pixels) as im:
            return im.size[0], im.size[1], im.mode
    with folder.open(name) as fh, open_image(fh, name, max_pixels) as im:
        return im.size[0], im.size[1], im.mode


def validate_original(folder, max_pixels=DEFAULT_MAX_PIXELS):
    """Header-only check of every image of an original-format folder / zip before training: each must be an image,
    square, of the first good image's size and within ``max_pixels``. Returns ``(resolution, channels)``;
    raises ValueError naming the bad files (the first few) and their count. Cached per listing within a process."""
    key = (folder.path, folder.kind, tuple(folder.names),
           os.stat(folder.path).st_mtime_ns if folder.kind == "zip" else None, max_pixels)
    if key in _VALIDATED:
        return _VALIDATED[key]
    ref, bad = None, []
    for name in folder.names:
        try:
            w, h, mode = _header(folder, name, max_pixels)
        except BadImageError as e:
            bad.append((name, e.reason))
            continue
        except OSError as e:
            bad.append((name, f"unreadable ({e})"))
            continue
        if w != h:
            bad.append((name, f"not square ({w}x{h})"))
        elif ref is None:
            ref = (name, w, 1 if mode in ("L", "1", "I;16", "I;16B", "I;16L", "I") else 3)
        elif w != ref[1]:
            bad.append((name, f"{w}x{h} differs from {ref[1]}x{ref[1]} ({ref[0]})"))
    if bad:
        shown = "; ".join(f"{n} ({r})" for n, r in bad[:_BAD_SHOWN])
        more = f"; and {len(bad) - _BAD_SHOWN} more" if len(bad) > _BAD_SHOWN else ""
        raise ValueError(f"{folder.path}: {len(bad)} of {len(folder.names)} images cannot be used: {shown}{more}. "
                         f"Fix or remove them, or build a dataset with tools/dataset_tool.py (which skips and reports "
                         f"bad files)")
    _VALIDATED[key] = (ref[1], ref[2])  # grayscale stays 1 channel like the original
    return _VALIDATED[key]


def _open_original(path, max_pixels=DEFAULT_MAX_PIXELS):
    folder = ImageFolder(path)
    if not folder.names:
        raise ValueError(f"{path}: no images found (folder or zip of the original dataset format)")
    res, channels = validate_original(folder, max_pixels)
    return folder, int(res), channels


def dataset_info(path):
    """``{"resolution", "channels", "count", "c_dim", "format", "path", ...}`` of a dataset (ours or original).

    An original-format folder / zip is validated here, from the image headers only (:func:`validate_original`), so
    a bad or differently sized image is reported, by name, before training starts."""
    path = os.path.abspath(os.fspath(shapes.resolve(path)))  # "shapes:N:RES" -> its cached materialisation
    if tfrecord.is_tfrecord_dataset(path):
        meta = tfrecord.read_metadata(path)
        return dict(path=path, format="tfrecord", resolution=int(meta["resolution"]),
                    channels=int(meta["channels"]), count=int(meta["count"]), c_dim=int(meta["label_dim"]),
                    num_shards=len(meta["shards"]), encoding=meta.get("encoding", "png"), meta=meta)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: dataset not found")
    folder, res, ch = _open_original(path)
    labels = folder.labels()
    return dict(path=path, format="original-" + folder.kind, resolution=res, channels=ch,
                count=len(folder.names), c_dim=int(labels.shape[1]), num_shards=1, encoding=None)


def _decode_png_rounded(data, ch):
    """PNG → uint8 like :func:`images.load_image`: decoded at 16 bits (an 8-bit PNG gives v·257) and rounded,
    ``round(v / 257)`` — exact for 8-bit files, and 16/48-bit files are rounded instead of truncated (TF's uint8
    decode keeps the high byte)."""
    img = tf.cast(tf.io.decode_png(data, channels=ch, dtype=tf.uint16), tf.int32)
    return tf.cast((2 * img + 257) // 514, tf.uint8)


def _pil_decoder(folder, res, ch):
    def load(i):
        name = folder.names[int(i)]
        a = load_image(folder.read_bytes(name), channels=ch, name=name)
        if a.shape != (res, res, ch):
            raise ValueError(f"{folder.path}/{name}: shape {a.shape} differs from the dataset's {(res, res, ch)}")
        return a

    def decode(i):
        img = tf.numpy_function(load, [i], tf.uint8, stateful=False)
        return tf.ensure_shape(img, [res, res, ch])

    return decode


def make_dataset(path, batch_size=None, mirror=False, shuffle=True, repeat=True, seed=None, input_context=None,
                 num_parallel=AUTOTUNE, prefetch=AUTOTUNE, deterministic=None, use_labels=False,
                 shuffle_buffer=None, drop_remainder=None, skip=0):
    """Builds the training/eval input pipeline of a dataset (see the module docstring for the steps).

    Args:
      path: our TFRecord dataset dir, or the original's folder / zip.
      batch_size: global batch size (divided by the number of replicas when ``input_context`` is given);
        None = unbatched elements.
      mirror: x-flip doubling (each image once as is and once mirrored per epoch).
      shuffle, repeat, seed: seeded shuffling (reshuffled every epoch) and infinite repetition.
      input_context: ``tf.distribute.InputContext`` — this pipeline reads only its worker's share.
      num_parallel, prefetch: decode parallelism and prefetch depth (AUTOTUNE by default).
      deterministic: element order guarantee; default True when ``seed`` is given or ``shuffle`` is False.
      use_labels: return the dataset's labels (``[c_dim]``); else zero-width labels.
      shuffle_buffer: shuffle buffer in elements (default: everything for the original format; for TFRecords
        ``min(elements, 4096)`` records, fewer (>= 256) when that would exceed ~512 MB of encoded images).
      drop_remainder: drop a last partial batch (default: ``repeat``).
      skip: number of leading elements (batches when batched, images otherwise) to leave out; the result equals
        ``make_dataset(...).skip(skip)`` but nothing skipped is decoded: whole passes are skipped at the pass
        counter (their shuffles are never built) and the rest at the record level, before decoding. Used to
        reposition the data on resume.
    """
    path = os.path.abspath(os.fspath(shapes.resolve(path)))  # "shapes:N:RES" -> its cached materialisation
    info = dataset_info(path)
    res, ch, c_dim = info["resolution"], info["channels"], info["c_dim"]
    n_pipe, pipe_id = 1, 0
    if input_context is not None:
        n_pipe, pipe_id = int(input_context.num_input_pipelines), int(input_context.input_pipeline_id)
    if batch_size is not None:
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if input_context is not None:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
    if deterministic is None:
        deterministic = seed is not None or not shuffle
    if drop_remainder is None:
        drop_remainder = bool(repeat)
    out_c = c_dim if use_labels else 0
    skip = int(skip or 0)
    if skip < 0:
        raise ValueError(f"make_dataset: skip must be >= 0, got {skip}")

    # 1.-2. keys in a fixed order, sharded per worker
    if info["format"] == "tfrecord":
        meta = info["meta"]
        files = [os.path.join(path, s["file"]) for s in meta["shards"]]
        count = info["count"]
        if n_pipe > 1 and len(files) % n_pipe == 0:
            files = files[pipe_id::n_pipe]
            per_pipe = sum(s["count"] for s in meta["shards"][pipe_id::n_pipe])
            record_shard = False
        else:
            per_pipe = len(range(pipe_id, count, n_pipe))
            record_shard = n_pipe > 1
        keys = tf.data.Dataset.from_tensor_slices(files)
        if len(files) > 1:
            keys = keys.interleave(tf.data.TFRecordDataset, cycle_length=len(files), block_length=1,
                                   num_parallel_calls=AUTOTUNE, deterministic=True)
        else:
            keys = keys.flat_map(tf.data.TFRecordDataset)
        if record_shard:
            keys = keys.shard(n_pipe, pipe_id)
        tf_decode = tfrecord.make_decoder(meta)

        def decode_key(key):
            img, lab, index = tf_decode(key)
            return img, lab[:out_c], index
        total_bytes = sum(os.path.getsize(f) for f in files)
        avg_bytes = max(total_bytes / max(count if record_shard else per_pipe, 1), 1)
        # elements hold the encoded records: cap the buffer's memory (~SHUFFLE_BUFFER_BYTES) for large images
        default_buffer = int(min(DEFAULT_SHUFFLE_BUFFER, max(256, SHUFFLE_BUFFER_BYTES // avg_bytes)))
    else:
        folder, _, _ = _open_original(path)
        labels = folder.labels().astype(np.float32)[:, :out_c]  # [count, out_c]
        count = len(folder.names)
        idx = np.arange(pipe_id, count, n_pipe, dtype=np.int64)
        per_pipe = len(idx)
        keys = tf.data.Dataset.from_tensor_slices(idx)
        labels_t = tf.constant(labels.reshape(count, out_c))
        if all(n.lower().endswith(".png") for n in folder.names) and folder.kind == "dir":
            paths = tf.constant([folder.file_path(n) for n in folder.names])

            def read_img(i):
                return tf.ensure_shape(_decode_png_rounded(tf.io.read_file(paths[i]), ch), [res, res, ch])
        elif all(n.lower().endswith(".png") for n in folder.names):
            def _read(i):
                return folder.read_bytes(folder.names[int(i)])

            def read_img(i):
                data = tf.numpy_function(_read, [i], tf.string, stateful=False)
                return tf.ensure_shape(_decode_png_rounded(tf.reshape(data, []), ch), [res, res, ch])
        else:
            read_img = _pil_decoder(folder, res, ch)

        def decode_key(i):
            return read_img(i), tf.gather(labels_t, i), i
        default_buffer = per_pipe
    if per_pipe == 0:
        raise ValueError(f"{path}: input pipeline {pipe_id} of {n_pipe} gets no images ({count} in the dataset)")

    # 3.-5. passes over the (sharded) keys, each shuffled with its own seed; an epoch is 2 passes with mirroring
    passes_per_epoch = 2 if mirror else 1
    passes = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(passes_per_epoch)
    buf = max(int(shuffle_buffer or min(default_buffer, per_pipe)), 1)
    flip_seed = int(seed) if seed is not None else int(np.random.randint(0, 2 ** 31 - 1))

    def one_pass(p):
        ds = keys.map(lambda k: (k, p))
        if shuffle:
            pass_seed = None if seed is None else tf.constant(int(seed) * 1000003, tf.int64) + p
            # tf.data derives a shuffle's seeds from (graph seed, op seed), and the graph seed of this function
            # is the global seed (tf.random.set_seed). That made the order depend on the global seed, and a global
            # seed of 0 failed outright (TF compares the tensor op seed with 0 in Python). The pass order must be
            # a function of `seed` only (exact resume), so the shuffle is built without a graph seed:
            # its seeds are then always (DEFAULT_GRAPH_SEED, pass_seed).
            graph = tf.compat.v1.get_default_graph()
            graph_seed, graph.seed = graph.seed, None
            try:
                ds = ds.shuffle(buf, seed=pass_seed, reshuffle_each_iteration=False)
            finally:
                graph.seed = graph_seed
        return ds

    # Skipping: whole passes at the pass counter (each pass is a function of its index only), the rest as keys.
    # (Batches are cut from the continuous key stream, so k batches are exactly k * batch_size keys.)
    skip_passes, skip_keys = divmod(skip * (batch_size if batch_size is not None else 1), per_pipe)
    if skip_passes:
        passes = passes.skip(skip_passes)
    keys = passes.flat_map(one_pass)
    if skip_keys:
        keys = keys.skip(skip_keys)

    def flip_of(index, p):
        """Mirroring: in epoch e = p // 2, image i is flipped in exactly one of the two passes, chosen by a
        stateless coin (seed, e, i) — each image once as is and once mirrored per epoch, a pass apart."""
        if not mirror:
            return tf.constant(False)
        s = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(flip_seed, tf.int64), p // 2]),
                                                     tf.cast(index, tf.int64))
        coin = tf.random.stateless_uniform([], seed=s, minval=0, maxval=2, dtype=tf.int64)
        return tf.not_equal(coin, p % 2)

    # 6. decode + x-flip
    def decode(key, p):
        img, lab, index = decode_key(key)  # [R, R, C] uint8, [out_c], scalar
        img = tf.cond(flip_of(index, p), lambda: tf.reverse(img, axis=[1]), lambda: img)
        return img, lab

    ds = keys.map(decode, num_parallel_calls=num_parallel, deterministic=deterministic)

    # 7. batch + normalise
    def normalise(img, lab):
        return tf.cast(img, tf.float32) / 127.5 - 1.0, tf.cast(lab, tf.float32)

    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(normalise, num_parallel_calls=num_parallel, deterministic=deterministic)
    if prefetch:
        ds = ds.prefetch(prefetch)
    opts = tf.data.Options()
    opts.deterministic = bool(deterministic)
    if input_context is not None:
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(opts)
