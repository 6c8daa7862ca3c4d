"""``shapes``: a procedural dataset whose truth is known exactly (one anti-aliased disk or square per image).

Every image (side ``R``, 16 <= R <= 64) shows one shape on a plain background. Per image, drawn in this order
from ``np.random.RandomState(seed)`` (so the same ``(count, resolution, seed)`` always gives the same images):
  1. ``kind``: 0 = disk, 1 = axis-aligned square (probability 1/2 each);
  2. ``size`` = the shape's *equivalent radius* ``sqrt(area / pi)`` as a fraction of R, uniform in
     [SIZE_MIN, SIZE_MAX] (disk radius = size·R, square half-side = size·R·sqrt(pi)/2: both kinds cover the
     same range of areas, so kind cannot be told from the area);
  3. centre ``(cx, cy)`` in pixels (pixel ``(i, j)`` covers ``[j, j+1] x [i, i+1]``), uniform with the whole
     shape at least 1 px inside the image: sub-pixel, continuous positions;
  4. background colour ``bg`` uniform in [0, 1]^3, then shape colour ``fg`` uniform in [0, 1]^3, redrawn until
     ``|fg - bg| >= MIN_CONTRAST`` (Euclidean RGB).
Rendering (:func:`coverage`, the same function the metric fits with, ``afgan_tf.metrics.shapes``):
  * square: the exact area of ``pixel ∩ square`` (the product of the two 1-D interval overlaps — analytic);
  * disk: the mean over an S x S grid of sub-pixels (S = 4) of each sub-pixel's linear edge coverage
    ``clip(0.5 + (r - d)·S, 0, 1)`` (d = distance of the sub-pixel centre from the disk centre): supersampling
    with a signed-distance ramp one sub-pixel wide. Continuous in the parameters (so least squares can fit it)
    and within 1 % of the exact area per pixel (``tests/test_shapes.py`` checks both against 64 x 64
    point supersampling);
  * image = ``bg + (fg - bg)·coverage`` per channel, then ``round(255·image)`` to uint8.

Use as ``--data=shapes`` / ``shapes:N`` / ``shapes:N:RES`` / ``shapes:N:RES:SEED`` wherever a dataset path is
accepted (``afgan_tf.data.make_dataset`` / ``dataset_info``, so ``tools/train.py``, ``tools/calc_metrics.py``):
the spec is materialised once into our TFRecord format under the dataset cache (``$AFGAN_TF_CACHE`` or
``~/.cache/afgan_tf``, like the embedded default dataset) and read from there. ``tools/dataset_tool.py
--source=shapes:N:RES --dest=DIR`` writes it to DIR. :func:`shapes_tf_dataset` is the direct tf.data source
(images + true parameters, nothing written).
"""
import os
import re
import sys
import time

import numpy as np

SIZE_MIN, SIZE_MAX = 0.12, 0.26  # equivalent radius / R
MIN_CONTRAST = 0.35
SUBSAMPLES = 4
DEFAULT_COUNT, DEFAULT_RES, DEFAULT_SEED = 4096, 32, 0
RES_MIN, RES_MAX = 16, 64
VERSION = 1
KINDS = ("disk", "square")
SQUARE_HALF = np.sqrt(np.pi) / 2  # square half-side per unit equivalent radius

_SPEC = re.compile(r"^shapes(?::(\d+))?(?::(\d+))?(?::(\d+))?$")


def parse_spec(spec):
    """``"shapes[:N[:RES[:SEED]]]"`` → ``(count, resolution, seed)``; None when ``spec`` is not such a string.

    Only the base name is looked at (``/some/dir/shapes:64:32`` is a spec too: ``os.path.abspath`` of a spec, as
    stored in training options, must still resolve). Raises ValueError for a spec with bad numbers."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    m = _SPEC.match(os.path.basename(os.fspath(spec)))
    if m is None:
        return None
    count = int(m.group(1)) if m.group(1) else DEFAULT_COUNT
    res = int(m.group(2)) if m.group(2) else DEFAULT_RES
    seed = int(m.group(3)) if m.group(3) else DEFAULT_SEED
    check_args(count, res)
    return count, res, seed


def check_args(count, resolution):
    if not RES_MIN <= int(resolution) <= RES_MAX:
        raise ValueError(f"shapes: resolution must be in [{RES_MIN}, {RES_MAX}], got {resolution}")
    if int(count) < 1:
        raise ValueError(f"shapes: count must be >= 1, got {count}")


def sample_params(count, resolution, seed=0):
    """The true parameters of ``count`` images: dict of arrays ``kind [N] int``, ``size [N]`` (equivalent radius
    / R), ``cx, cy [N]`` (pixels), ``bg, fg [N, 3]`` (in [0, 1]). Steps 1.-4. of the module docstring."""
    check_args(count, resolution)
    n, R = int(count), float(resolution)
    rng = np.random.RandomState(int(seed))
    kind = (rng.uniform(size=n) < 0.5).astype(np.int64)
    size = rng.uniform(SIZE_MIN, SIZE_MAX, size=n)
    extent = size * R * np.where(kind == 1, SQUARE_HALF, 1.0) + 1.0  # half-extent + 1 px margin
    cx = extent + rng.uniform(size=n) * (R - 2 * extent)
    cy = extent + rng.uniform(size=n) * (R - 2 * extent)
    bg = rng.uniform(size=(n, 3))
    fg = rng.uniform(size=(n, 3))
    bad = np.linalg.norm(fg - bg, axis=1) < MIN_CONTRAST
    while bad.any():  # redraw the shape colour of low-contrast images only (deterministic given the seed)
        fg[bad] = rng.uniform(size=(int(bad.sum()), 3))
        bad = np.linalg.norm(fg - bg, axis=1) < MIN_CONTRAST
    return dict(kind=kind, size=size, cx=cx, cy=cy, bg=bg, fg=fg)


def coverage(kind, cx, cy, size, resolution, subsamples=SUBSAMPLES, grad=False):
    """Fraction of each pixel covered by the shape: ``[N, R, R]`` float64 (see the module docstring).

    ``kind, cx, cy, size``: ``[N]`` arrays (size = equivalent radius / R, centre in pixels). ``grad``: also
    return the derivatives ``[N, R, R, 3]`` with respect to (cx, cy, equivalent radius in pixels) — exact where
    the coverage is differentiable (used by the least-squares fit of ``afgan_tf.metrics.shapes``)."""
    R = int(resolution)
    kind = np.asarray(kind).reshape(-1)
    cx, cy, size = (np.asarray(v, np.float64).reshape(-1, 1) for v in (cx, cy, size))  # [N, 1]
    n = kind.shape[0]
    out = np.empty([n, R, R])
    dout = np.zeros([n, R, R, 3]) if grad else None
    edges = np.arange(R, dtype=np.float64)  # pixel left/top edges
    sq = kind == 1
    if sq.any():  # exact: product of the 1-D overlaps of [i, i+1] with [c - h, c + h]
        h = size[sq] * R * SQUARE_HALF

        def overlap(c):  # [n, 1] -> overlap [n, R], d/dc, d/dh
            hi, lo = c + h, c - h
            raw = np.minimum(edges + 1, hi) - np.maximum(edges, lo)  # <= 1 always
            inside = raw > 0
            right, left = inside & (hi < edges + 1), inside & (lo > edges)  # which edge cuts the pixel
            return np.clip(raw, 0, 1), right * 1.0 - left, right * 1.0 + left

        ox, dox_c, dox_h = overlap(cx[sq])
        oy, doy_c, doy_h = overlap(cy[sq])
        out[sq] = oy[:, :, None] * ox[:, None, :]
        if grad:
            dout[sq] = np.stack([oy[:, :, None] * dox_c[:, None, :], doy_c[:, :, None] * ox[:, None, :],
                                 SQUARE_HALF * (doy_h[:, :, None] * ox[:, None, :] + oy[:, :, None] *
                                                dox_h[:, None, :])], -1)
    dk = ~sq
    if dk.any():  # S x S sub-pixels, each with a linear ramp one sub-pixel wide across the edge
        S = int(subsamples)
        sub = (edges[:, None] + (np.arange(S) + 0.5) / S).reshape(-1)  # [R*S] sub-pixel centres
        r = size[dk] * R  # [n, 1]
        ex = sub - cx[dk]  # [n, R*S]
        ey = sub - cy[dk]
        d = np.sqrt(ey[:, :, None] ** 2 + ex[:, None, :] ** 2)  # [n, R*S, R*S]
        raw = 0.5 + (r[:, :, None] - d) * S
        out[dk] = np.clip(raw, 0.0, 1.0).reshape(-1, R, S, R, S).mean(axis=(2, 4))
        if grad:
            ramp = ((raw > 0) & (raw < 1)) * (S / np.maximum(d, 1e-9))  # [n, R*S, R*S]: S / d on the edge
            gx = (ramp * ex[:, None, :]).reshape(-1, R, S, R, S).mean(axis=(2, 4))
            gy = (ramp * ey[:, :, None]).reshape(-1, R, S, R, S).mean(axis=(2, 4))
            gr = (ramp * d).reshape(-1, R, S, R, S).mean(axis=(2, 4))
            dout[dk] = np.stack([gx, gy, gr], -1)
    return (out, dout) if grad else out


def render(params, resolution, quantize=True):
    """Images of ``params`` (as from :func:`sample_params`): uint8 ``[N, R, R, 3]`` (``quantize``) or float64 in
    [0, 1]."""
    a = coverage(params["kind"], params["cx"], params["cy"], params["size"], resolution)[..., None]  # [N,R,R,1]
    bg = np.asarray(params["bg"], np.float64)[:, None, None, :]
    fg = np.asarray(params["fg"], np.float64)[:, None, None, :]
    img = bg + (fg - bg) * a
    if not quantize:
        return img
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def generate(count, resolution, seed=0, chunk=512):
    """``(images uint8 [N, R, R, 3], params)``: the dataset ``shapes:count:resolution:seed``."""
    params = sample_params(count, resolution, seed)
    imgs = np.empty([int(count), int(resolution), int(resolution), 3], np.uint8)
    for s in range(0, int(count), chunk):
        part = {k: v[s:s + chunk] for k, v in params.items()}
        imgs[s:s + chunk] = render(part, resolution)
    return imgs, params


def shapes_tf_dataset(count=DEFAULT_COUNT, resolution=DEFAULT_RES, seed=DEFAULT_SEED):
    """tf.data source of the images and their true parameters: elements ``(image uint8 [R, R, 3], params dict of
    scalars / [3] vectors)`` in index order (batch / shuffle / normalise as needed). Nothing is written."""
    import tensorflow as tf
    imgs, params = generate(count, resolution, seed)
    return tf.data.Dataset.from_tensor_slices((imgs, {k: v.astype(np.float32) if v.dtype == np.float64 else v
                                                      for k, v in params.items()}))


def write_dataset(dest, count, resolution, seed=0, shards=1, encoding="png", overwrite=False):
    """Writes ``shapes:count:resolution:seed`` to ``dest`` in our TFRecord format (atomically); returns the
    writer's metadata. ``dataset.json`` records the generator's settings."""
    from . import tfrecord
    imgs, _ = generate(count, resolution, seed)
    meta = dict(source=f"shapes:{int(count)}:{int(resolution)}:{int(seed)}", source_kind="shapes",
                transform="procedural", seed=int(seed), shapes=dict(version=VERSION, size=[SIZE_MIN, SIZE_MAX],
                                                                   min_contrast=MIN_CONTRAST,
                                                                   subsamples=SUBSAMPLES, kinds=list(KINDS)))
    with tfrecord.DatasetWriter(dest, int(resolution), 3, 0, shards, encoding, overwrite, meta) as w:
        for i, img in enumerate(imgs):
            w.add(img, None, f"shapes/{i:06d}")
    return tfrecord.read_metadata(dest)


def shapes_dataset(count=DEFAULT_COUNT, resolution=DEFAULT_RES, seed=DEFAULT_SEED, cache_dir=None, verbose=False):
    """Path of the cached materialisation of ``shapes:count:resolution:seed`` (built on first use)."""
    from . import tfrecord
    from .default import cache_dir as default_cache_dir
    check_args(count, resolution)
    dest = os.path.join(default_cache_dir(cache_dir),
                        f"shapes-{int(resolution)}x{int(resolution)}-n{int(count)}-s{int(seed)}-v{VERSION}")
    if tfrecord.is_tfrecord_dataset(dest):
        return dest
    t0 = time.time()
    tfrecord.write_unless_done(dest, lambda: write_dataset(dest, count, resolution, seed, shards=2))
    if verbose:
        print(f"afgan_tf: built shapes dataset ({count} images, {resolution}x{resolution}, "
              f"{time.time() - t0:.1f} s) at {dest}", file=sys.stdout, flush=True)
    return dest


def resolve(path):
    """``path`` unchanged unless it is a shapes spec (and no such file exists): then the cached dataset's path."""
    if path is None or os.path.exists(os.fspath(path)):
        return path
    spec = parse_spec(path)
    if spec is None:
        return path
    return shapes_dataset(*spec)


def build_from_spec(spec, dest, resolution=None, shards=1, overwrite=False, encoding="png", log=None):
    """``tools/dataset_tool.py --source=shapes:N:RES[:SEED]``: writes the dataset to ``dest``; returns the
    summary dict of ``afgan_tf.data.build.build_dataset``. ``resolution`` (the tool's --resolution), when given,
    must agree with the spec's."""
    from .tfrecord import check_dest
    count, res, seed = parse_spec(spec)
    if resolution is not None and str(resolution) not in (str(res), f"{res}x{res}"):
        raise ValueError(f"--resolution={resolution} disagrees with --source={spec} ({res}x{res} images)")
    check_dest(os.path.abspath(dest), overwrite)
    t0 = time.time()
    meta = write_dataset(dest, count, res, seed, shards=shards, encoding=encoding, overwrite=overwrite)
    secs = time.time() - t0
    if log is not None:
        log(f"wrote {meta['count']} images ({res}x{res}x3, {len(meta['shards'])} shard(s)) to "
            f"{os.path.abspath(dest)} in {secs:.1f} s; skipped 0")
    return dict(written=meta["count"], skipped=[], reasons={}, seconds=secs, meta=meta)
