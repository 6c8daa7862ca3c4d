"""Export of a generator as a SavedModel that stock TensorFlow Serving runs, and as a tf.data source.

Signatures of the SavedModel (all inputs required by TF Serving; "optional" knobs accept an empty tensor
meaning "default"):

* ``serving_default``: ``z [N, z_dim]`` float32, ``c [N, c_dim]`` (conditional networks only),
  ``truncation_psi [P]`` (P = 0 → 1.0, P = 1 → same psi for all, P = N → per image),
  ``translate [T, 2]`` (x, y in image widths; T = 0 → none, T = N → per image),
  ``rotate [R]`` (radians; R = 0 → none, R = N → per image)
  → ``images`` uint8 ``[N, H, W, C]`` and ``images_float`` float32 ``[N, H, W, C]`` (about [-1, 1]).
* ``mapping``: ``z`` (+ ``c``), ``truncation_psi [P]`` → ``ws [N, num_ws, w_dim]``.
* ``synthesis``: ``ws [N, num_ws, w_dim]`` → ``images``, ``images_float``.
* ``seeds``: ``seeds [N]`` int64 (+ ``c``), ``truncation_psi [P]`` → ``images``, ``images_float``, ``z``;
  ``z = tf.random.stateless_normal([z_dim], seed=[seed, 0])`` so a seed gives the same image on any server.

Every signature checks its request in the graph and refuses it with an ``InvalidArgumentError`` whose message names
the input: a wrong rank (a scalar included), a wrong width, a batch of 0 or over ``max_batch``, non-finite values,
a wrong number of psi / translate / rotate entries.

The user transform follows the original's gen_images convention: ``m = [[cos a, sin a, tx], [-sin a, cos a, ty],
[0, 0, 1]]`` and the synthesis input receives ``inv(m)``.

By default the graph uses only stock TF ops (the reference op paths), so ``tensorflow_model_server`` and a
plain ``tf.saved_model.load`` in a process without our package can serve it. ``fast=True`` traces with the
compiled ops: such a SavedModel needs our op library loaded (``import afgan_tf``) and is labelled so in its
``assets.extra/afgan_tf_export.json``.
"""
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from .ops import _common
from .utils import replace_dir_atomic


@contextlib.contextmanager
def _force_reference_ops(enabled):
    """Forces the pure-TF op paths while tracing (stock-op SavedModel)."""
    if not enabled:
        yield
        return
    old = os.environ.get(_common.FORCE_REF_ENV)
    os.environ[_common.FORCE_REF_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ[_common.FORCE_REF_ENV]
        else:
            os.environ[_common.FORCE_REF_ENV] = old


def user_transform(translate, rotate):
    """Per-image inverse user transforms [N, 3, 3] from translate [N, 2] (image widths) and rotate [N] (rad)."""
    translate = tf.convert_to_tensor(translate, tf.float32)  # [N, 2]
    rotate = tf.convert_to_tensor(rotate, tf.float32)  # [N]
    c, s = tf.cos(rotate), tf.sin(rotate)
    zeros, ones = tf.zeros_like(c), tf.ones_like(c)
    m = tf.stack([tf.stack([c, s, translate[:, 0]], -1),
                  tf.stack([-s, c, translate[:, 1]], -1),
                  tf.stack([zeros, zeros, ones], -1)], axis=1)  # [N, 3, 3]
    return tf.linalg.inv(m)


def to_uint8(images):
    """The original's quantisation: trunc(clip(img * 127.5 + 128, 0, 255))."""
    return tf.cast(tf.clip_by_value(images * 127.5 + 128.0, 0.0, 255.0), tf.uint8)


def _after(checks, *tensors):
    """Returns ``tensors`` gated on ``checks`` (assert ops), so later ops only run on validated input."""
    with tf.control_dependencies(checks):
        out = [tf.identity(t) for t in tensors]
    return out[0] if len(out) == 1 else out


def _check_rank(x, rank, message):
    # tf.debugging.assert_rank raises at trace time for known ranks; a runtime Assert works for both.
    return tf.debugging.Assert(tf.equal(tf.rank(x), rank), [tf.constant(message), tf.shape(x)])


def _broadcast_arg(v, n, name, default):
    """[0] -> default for all, [1] -> broadcast, [n] -> as is; anything else is an error naming the input."""
    size = tf.shape(v)[0]
    ok = tf.logical_or(tf.logical_or(tf.equal(size, 0), tf.equal(size, 1)), tf.equal(size, n))
    v = _after([tf.debugging.Assert(ok, [tf.constant(f"{name} must have 0, 1 or N (batch size) entries"),
                                         tf.shape(v), n])], v)
    full_default = tf.fill(tf.concat([[n], tf.shape(v)[1:]], 0), tf.cast(default, v.dtype))
    return tf.cond(tf.equal(size, 0), lambda: full_default,
                   lambda: tf.cond(tf.equal(size, 1), lambda: tf.broadcast_to(v, tf.shape(full_default)),
                                   lambda: v))


class GeneratorServer(tf.Module):
    """The serving functions around a generator ``G`` (tracked so the SavedModel holds its variables).

    Args:
      G: a generator following the afgan_tf contract (``G.mapping``, ``G.synthesis``, ``z_dim`` ...).
      max_batch: largest batch a request may ask for (checked in the graph, so an oversize request fails
        with a clear message instead of running out of memory).
    """

    def __init__(self, G, max_batch=64):
        super().__init__(name="afgan_tf_generator")
        self.G = G
        self.max_batch = int(max_batch)
        self.z_dim = int(G.z_dim)
        self.c_dim = int(G.c_dim)
        self.num_ws = int(G.num_ws)
        self.w_dim = int(G.w_dim)
        # StyleGAN3 has the input transform; StyleGAN2 has none (translate / rotate must then be empty).
        self.has_input_transform = hasattr(G.synthesis, "input") and hasattr(G.synthesis.input, "transform")
        # Explicitly tracked plain tf.Variables: the TF1 loader (TF Serving, saved_model_cli run) needs
        # every variable under a distinct tracked name (TOOLCHAIN.md).
        self.tracked_variables = [getattr(v, "value", v) for v in G.variables]

    # -- input validation (in the graph; each check gates the ops after it) --------------------------------
    def _check_batch(self, x, name, width):
        """x must be [N, width] with 1 <= N <= max_batch and finite values; returns (validated x, N)."""
        x = _after([_check_rank(x, 2, f"{name} must have rank 2 [N, {width}]")], x)
        shape = tf.shape(x)
        x = _after([tf.debugging.Assert(tf.equal(shape[1], width),
                                        [tf.constant(f"{name} must have shape [N, {width}]"), shape])], x)
        n = tf.shape(x)[0]
        x = _after([tf.debugging.Assert(n <= self.max_batch, [tf.constant(
                        f"batch size exceeds the maximum of {self.max_batch} set at export"), n]),
                    tf.debugging.Assert(n > 0, [tf.constant(f"{name} must hold at least one row")])], x)
        x = self._check_finite(x, name)
        return x, tf.shape(x)[0]

    def _check_finite(self, x, name):
        return _after([tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(x)),
                                           [tf.constant(f"{name} must be finite")])], x)

    def _labels(self, c, n):
        if self.c_dim == 0:
            return tf.zeros([n, 0], tf.float32)
        c, nc = self._check_batch(c, "c", self.c_dim)
        return _after([tf.debugging.Assert(tf.equal(nc, n), [tf.constant("c must have as many rows as z")])], c)

    # -- building blocks ----------------------------------------------------------------------------
    def _mapping(self, z, c, truncation_psi):
        z, n = self._check_batch(z, "z", self.z_dim)
        psi = _after([_check_rank(truncation_psi, 1, "truncation_psi must have rank 1 [P]")], truncation_psi)
        psi = self._check_finite(psi, "truncation_psi")
        c = self._labels(c, n)
        psi = tf.reshape(_broadcast_arg(psi, n, "truncation_psi", 1.0), [-1])  # [N]
        # tf.reshape, not tf.ensure_shape: grappler would infer z's shape backwards from ensure_shape and fold
        # the rank check above away.
        z = tf.reshape(z, [-1, self.z_dim])
        ws = self.G.mapping(z, c, truncation_psi=1)  # [N, num_ws, w_dim]
        w_avg = tf.convert_to_tensor(self.G.mapping.w_avg)  # [w_dim]
        return tf.reshape(w_avg + psi[:, None, None] * (ws - w_avg), [-1, self.num_ws, self.w_dim])

    def _synthesis(self, ws, transform=None):
        # noise_mode 'const' (StyleGAN2 has noise inputs; as the original's gen_images), ignored by StyleGAN3.
        if transform is None or not self.has_input_transform:
            img = self.G.synthesis(ws, noise_mode="const")
        else:
            img = self.G.synthesis(ws, transform=transform, noise_mode="const")
        img = tf.cast(img, tf.float32)
        return {"images": to_uint8(img), "images_float": img}

    def _transforms(self, translate, rotate, n):
        translate = _after([_check_rank(translate, 2, "translate must have rank 2 [T, 2]")], translate)
        translate = _after([tf.debugging.Assert(tf.equal(tf.shape(translate)[1], 2), [
            tf.constant("translate must have shape [T, 2]"), tf.shape(translate)])], translate)
        rotate = _after([_check_rank(rotate, 1, "rotate must have rank 1 [R]")], rotate)
        translate = self._check_finite(translate, "translate")
        rotate = self._check_finite(rotate, "rotate")
        if not self.has_input_transform:
            msg = "translate and rotate need a StyleGAN3 generator (this network has no input transform); send []"
            translate, rotate = _after([tf.debugging.Assert(tf.equal(tf.size(translate) + tf.size(rotate), 0),
                                                            [tf.constant(msg)])], translate, rotate)
        t = _broadcast_arg(translate, n, "translate", 0.0)
        r = _broadcast_arg(rotate, n, "rotate", 0.0)
        return user_transform(tf.reshape(t, [-1, 2]), tf.reshape(r, [-1]))

    def seeds_to_z(self, seeds):
        seeds = tf.cast(seeds, tf.int64)
        return tf.map_fn(lambda s: tf.random.stateless_normal([self.z_dim], seed=tf.stack([s, tf.constant(0, tf.int64)])),
                         seeds, fn_output_signature=tf.float32)

    # -- endpoints ----------------------------------------------------------------------------------
    def serve(self, z, c, truncation_psi, translate, rotate):
        ws = self._mapping(z, c, truncation_psi)
        # the batch size from the validated ws, never from the raw z: a scalar z must reach the rank message
        transform = self._transforms(translate, rotate, tf.shape(ws)[0])
        return self._synthesis(ws, transform)

    def mapping(self, z, c, truncation_psi):
        return {"ws": self._mapping(z, c, truncation_psi)}

    def synthesis(self, ws):
        ws = _after([_check_rank(ws, 3, f"ws must have rank 3 [N, {self.num_ws}, {self.w_dim}]")], ws)
        ws = _after([tf.debugging.Assert(tf.reduce_all(tf.equal(tf.shape(ws)[1:], [self.num_ws, self.w_dim])), [
            tf.constant(f"ws must have shape [N, {self.num_ws}, {self.w_dim}]"), tf.shape(ws)])], ws)
        ws = _after([tf.debugging.Assert(tf.shape(ws)[0] <= self.max_batch, [tf.constant(
            f"batch size exceeds the maximum of {self.max_batch} set at export")]),
            tf.debugging.Assert(tf.shape(ws)[0] > 0, [tf.constant("ws must hold at least one row")])], ws)
        ws = self._check_finite(ws, "ws")
        return self._synthesis(tf.reshape(ws, [-1, self.num_ws, self.w_dim]))

    def seeds(self, seeds, c, truncation_psi):
        seeds = _after([_check_rank(seeds, 1, "seeds must have rank 1 [N]")], seeds)
        seeds = _after([tf.debugging.Assert(tf.shape(seeds)[0] <= self.max_batch, [tf.constant(
            f"batch size exceeds the maximum of {self.max_batch} set at export")]),
            tf.debugging.Assert(tf.shape(seeds)[0] > 0, [tf.constant("seeds must hold at least one entry")])], seeds)
        z = self.seeds_to_z(tf.reshape(seeds, [-1]))
        out = self._synthesis(self._mapping(z, c, truncation_psi))
        out["z"] = z
        return out

    def signatures(self):
        """Concrete functions keyed by signature name."""
        f32, i64 = tf.float32, tf.int64
        # Shapes are left open on purpose: rank / width errors then reach the in-graph validation and come
        # back as clear messages (see the module docstring for the expected shapes).
        z = tf.TensorSpec(None, f32, name="z")
        psi = tf.TensorSpec(None, f32, name="truncation_psi")
        translate = tf.TensorSpec(None, f32, name="translate")
        rotate = tf.TensorSpec(None, f32, name="rotate")
        ws = tf.TensorSpec(None, f32, name="ws")
        seeds = tf.TensorSpec(None, i64, name="seeds")
        if self.c_dim > 0:
            c = tf.TensorSpec(None, f32, name="c")
            serve = tf.function(lambda z, c, truncation_psi, translate, rotate:
                                self.serve(z, c, truncation_psi, translate, rotate)).get_concrete_function(
                z, c, psi, translate, rotate)
            mapping = tf.function(lambda z, c, truncation_psi: self.mapping(z, c, truncation_psi)
                                  ).get_concrete_function(z, c, psi)
            seeds_fn = tf.function(lambda seeds, c, truncation_psi: self.seeds(seeds, c, truncation_psi)
                                   ).get_concrete_function(seeds, c, psi)
        else:
            serve = tf.function(lambda z, truncation_psi, translate, rotate:
                                self.serve(z, None, truncation_psi, translate, rotate)).get_concrete_function(
                z, psi, translate, rotate)
            mapping = tf.function(lambda z, truncation_psi: self.mapping(z, None, truncation_psi)
                                  ).get_concrete_function(z, psi)
            seeds_fn = tf.function(lambda seeds, truncation_psi: self.seeds(seeds, None, truncation_psi)
                                   ).get_concrete_function(seeds, psi)
        synthesis = tf.function(lambda ws: self.synthesis(ws)).get_concrete_function(ws)
        return {"serving_default": serve, "mapping": mapping, "synthesis": synthesis, "seeds": seeds_fn}


def export_generator(G, export_dir, max_batch=64, fast=False, overwrite=False, extra_info=None):
    """Writes ``G`` as a SavedModel to ``export_dir`` (atomically: temp dir + rename). Returns the path."""
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir):
        if not overwrite:
            raise FileExistsError(f"export directory {export_dir} already exists (pass overwrite=True / --overwrite)")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        server = GeneratorServer(G, max_batch=max_batch)
        with _force_reference_ops(not fast):
            sigs = server.signatures()
        tf.saved_model.save(server, tmp, signatures=sigs)
        info = dict(format="afgan_tf SavedModel", needs_op_library=bool(fast), max_batch=int(max_batch),
                    z_dim=server.z_dim, c_dim=server.c_dim, w_dim=server.w_dim, num_ws=server.num_ws,
                    img_resolution=int(G.img_resolution), img_channels=int(G.img_channels),
                    init_kwargs=getattr(G, "init_kwargs", None), signatures=sorted(sigs))
        info.update(extra_info or {})
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, "assets.extra", "afgan_tf_export.json"), "w") as fh:
            json.dump(info, fh, indent=2, default=str)
        replace_dir_atomic(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_dir


def generated_dataset(G, seeds, batch_size=8, truncation_psi=1.0, translate=None, rotate=None, c=None):
    """A ``tf.data.Dataset`` of generated images: yields dicts ``{"seed", "z", "image"}`` batched.

    ``seeds``: list/array of int seeds (z from stateless RNG exactly as the ``seeds`` signature, so the same
    seed gives the same image); ``translate [N, 2]`` / ``rotate [N]`` optional per-image transforms.
    Images are float32 NHWC in about [-1, 1].
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    n = len(seeds)
    server = GeneratorServer(G, max_batch=max(batch_size, 1))
    translate = np.zeros([n, 2], np.float32) if translate is None else np.asarray(translate, np.float32)
    rotate = np.zeros([n], np.float32) if rotate is None else np.asarray(rotate, np.float32)
    if translate.shape != (n, 2) or rotate.shape != (n,):
        raise ValueError(f"translate must be [N, 2] and rotate [N] for N={n} seeds, got {translate.shape}, "
                         f"{rotate.shape}")
    c = np.zeros([n, G.c_dim], np.float32) if c is None else np.asarray(c, np.float32)
    ds = tf.data.Dataset.from_tensor_slices(dict(seed=seeds, translate=translate, rotate=rotate, c=c))
    ds = ds.batch(batch_size)
    psi = tf.constant([truncation_psi], tf.float32)

    def gen(b):
        z = server.seeds_to_z(b["seed"])
        ws = server._mapping(z, b["c"] if G.c_dim else None, psi)
        transform = user_transform(b["translate"], b["rotate"])
        out = server._synthesis(ws, transform)
        return dict(seed=b["seed"], z=z, image=out["images_float"])

    return ds.map(gen)
