"""FFHQ-U unaligned crops (docs/ALGORITHM.md §6.1): landmarks → axis-aligned square with a seeded random shift.

Pure numpy geometry (used by the dataset tool and the embedded default dataset):
  1. ``landmark_crop_params(lm)``: 68 dlib landmarks → centre ``c0`` and crop side ``q``
     (eyes 36–41 / 42–47, mouth corners 48 / 54; ``h = max(2|eye_to_eye|, 1.8|eye_to_mouth|)``,
     ``c0 = eye_avg + 0.1·eye_to_mouth``, ``q = 2h``; axis aligned, no rotation, no random scale).
  2. ``random_shift_crop(c0, q, width, height, rng)``: ``c = c0 + q·shift·N(0, 1)²``; the integer bounding box
     ``floor(c - q/2) .. ceil(c + q/2)`` must satisfy ``x0 >= 0, y0 >= 0, x1 < width, y1 < height``; otherwise a
     new offset is drawn (up to ``max_retries``). No padding: a crop that never fits raises :class:`CropError`.
  3. ``crop_square_pil(img, c, q, out_size)``: FFHQ resampling — integer pre-shrink (Lanczos) when
     ``q/out_size·0.5 >= 2``, crop with border, PIL QUAD+bilinear warp to ``4·out_size`` (corners +0.5), Lanczos
     down to ``out_size``.
Coordinates are pixel indices (dlib convention: pixel ``i`` covers ``[i, i+1)``; so +0.5 = its centre).

TensorFlow (for on-the-fly cropping in a tf.data map): ``ffhqu_crop_tf(image, landmarks, resolution, seed)``
draws the shift with stateless RNG (retries in a ``tf.while_loop``) and resamples with
``tf.image.crop_and_resize`` (bilinear, 4× supersampled) + ``tf.image.resize(lanczos3, antialias)``.
Same geometry as the numpy path; resampling kernels differ slightly from PIL's (a few 8-bit levels).
"""
import numpy as np
import PIL.Image
import tensorflow as tf

FFHQ_SEED = 12345
DEFAULT_SHIFT = 0.2
MAX_RETRIES = 1000


class CropError(ValueError):
    """No crop inside the image was found (the original script aborts; we skip the image)."""


def _check_landmarks(lm):
    lm = np.asarray(lm, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] != 68 or lm.shape[1] < 2:
        raise ValueError(f"landmarks must have shape [68, 2] (dlib 68-point layout), got {lm.shape}")
    if not np.all(np.isfinite(lm[:, :2])):
        raise ValueError("landmarks contain non-finite values")
    return lm[:, :2]


def landmark_crop_params(lm):
    """68 landmarks ``[68, 2]`` (x, y) → ``(c0 [2], q)``: unshifted centre and crop side (docs/ALGORITHM.md §6.1 steps 1–2)."""
    lm = _check_landmarks(lm)
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = 0.5 * (eye_left + eye_right)
    eye_to_eye = eye_right - eye_left
    mouth_avg = 0.5 * (lm[48] + lm[54])
    eye_to_mouth = mouth_avg - eye_avg
    half = max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    c0 = eye_avg + 0.1 * eye_to_mouth
    return c0, 2.0 * half


def box_params(face_box, scale=1.8, down=0.05):
    """Axis-aligned face box ``[x0, y0, x1, y1]`` (e.g. a detector's) → ``(c0, q)`` comparable to the landmark
    version: side ``q = scale·max(box w, box h)``, centre moved down by ``down·q`` (used for the default dataset)."""
    x0, y0, x1, y1 = [float(v) for v in face_box]
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"face box must be [x0, y0, x1, y1] with x1 > x0, y1 > y0, got {face_box}")
    q = scale * max(x1 - x0, y1 - y0)
    c0 = np.array([0.5 * (x0 + x1), 0.5 * (y0 + y1) + down * q])
    return c0, q


def square_bbox(c, q):
    """Integer bounding box ``(x0, y0, x1, y1)`` of the square of side ``q`` centred at ``c``."""
    return (int(np.floor(c[0] - 0.5 * q)), int(np.floor(c[1] - 0.5 * q)),
            int(np.ceil(c[0] + 0.5 * q)), int(np.ceil(c[1] + 0.5 * q)))


def box_inside(box, width, height):
    x0, y0, x1, y1 = box
    return x0 >= 0 and y0 >= 0 and x1 < width and y1 < height


def random_shift_crop(c0, q, width, height, rng, random_shift=DEFAULT_SHIFT, retry_crops=True,
                      max_retries=MAX_RETRIES):
    """Seeded random translation with retries (docs/ALGORITHM.md §6.1 step 3) → ``(c [2], attempts)``.

    ``rng`` is a ``numpy.random.RandomState`` (the original's legacy stream); each attempt draws
    ``rng.normal(0, 1, 2)``. ``random_shift == 0`` draws nothing. Raises :class:`CropError` when no attempt fits.
    """
    c0 = np.asarray(c0, dtype=np.float64)
    if not (q > 0):
        raise ValueError(f"crop side q must be > 0, got {q}")
    attempts = 0
    tries = (max_retries if retry_crops else 1) if random_shift != 0 else 1
    for _ in range(tries):
        attempts += 1
        c = c0 + q * random_shift * rng.normal(0, 1, c0.shape) if random_shift != 0 else c0.copy()
        if box_inside(square_bbox(c, q), width, height):
            return c, attempts
    raise CropError(f"no crop of side {q:.1f} around ({c0[0]:.1f}, {c0[1]:.1f}) fits inside the "
                    f"{width}x{height} image after {attempts} attempt(s) (no padding)")


def crop_square_pil(img, c, q, out_size, supersample=4, shrink_cache=None):
    """FFHQ resampling of the axis-aligned square (centre ``c``, side ``q``) → uint8 ``[out, out, C]``.

    ``img``: PIL image or uint8 ``[H, W, C]``. Steps: integer pre-shrink by ``floor(q/out·0.5)`` (Lanczos) when
    >= 2; crop to the square's box + border ``max(rint(0.1q), 3)`` (clipped); QUAD/bilinear warp of the corners
    (+0.5) to ``supersample·out``; Lanczos to ``out``. ``shrink_cache``: optional dict reusing the shrunk photo
    across many crops of the same PIL image.
    """
    from .images import from_pil, to_pil
    if not isinstance(img, PIL.Image.Image):
        img = to_pil(np.asarray(img))
    c = np.asarray(c, dtype=np.float64)
    half = 0.5 * q
    # quad corners (x, y): upper-left, lower-left, lower-right, upper-right
    quad = np.array([c + [-half, -half], c + [-half, half], c + [half, half], c + [half, -half]])
    transform_size = int(supersample * out_size)
    shrink = int(np.floor(q / out_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
        key = (id(img), shrink)
        if shrink_cache is not None and key in shrink_cache:
            img = shrink_cache[key]
        else:
            small = img.resize(rsize, PIL.Image.LANCZOS)
            if shrink_cache is not None:
                shrink_cache[key] = small
            img = small
        quad /= shrink
        q = q / shrink
    border = max(int(np.rint(q * 0.1)), 3)
    box = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
           int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    box = (max(box[0] - border, 0), max(box[1] - border, 0),
           min(box[2] + border, img.size[0]), min(box[3] + border, img.size[1]))
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        quad -= box[0:2]
    img = img.transform((transform_size, transform_size), PIL.Image.QUAD, (quad + 0.5).flatten().tolist(),
                        PIL.Image.BILINEAR)
    if transform_size != out_size:
        img = img.resize((out_size, out_size), PIL.Image.LANCZOS)
    return from_pil(img)


def ffhqu_crop(img, landmarks, out_size, rng, random_shift=DEFAULT_SHIFT, retry_crops=True,
               max_retries=MAX_RETRIES):
    """One FFHQ-U crop: landmarks → shifted square → resampled uint8 ``[out, out, C]``; returns (crop, info)."""
    a = img if isinstance(img, PIL.Image.Image) else None
    width, height = (a.size if a is not None else (np.asarray(img).shape[1], np.asarray(img).shape[0]))
    c0, q = landmark_crop_params(landmarks)
    c, attempts = random_shift_crop(c0, q, width, height, rng, random_shift, retry_crops, max_retries)
    crop = crop_square_pil(img, c, q, out_size)
    return crop, dict(center=c.tolist(), size=float(q), attempts=attempts, box=square_bbox(c, q))


# ------------------------------------------------------------------------------------------------ TensorFlow


def landmark_crop_params_tf(landmarks):
    """tf version of :func:`landmark_crop_params`: ``[68, 2]`` → ``(c0 [2] float32, q scalar float32)``."""
    lm = tf.cast(tf.convert_to_tensor(landmarks), tf.float32)[:, :2]  # [68, 2]
    eye_left = tf.reduce_mean(lm[36:42], axis=0)
    eye_right = tf.reduce_mean(lm[42:48], axis=0)
    eye_avg = 0.5 * (eye_left + eye_right)
    mouth_avg = 0.5 * (lm[48] + lm[54])
    eye_to_mouth = mouth_avg - eye_avg
    half = tf.maximum(2.0 * tf.norm(eye_right - eye_left), 1.8 * tf.norm(eye_to_mouth))
    return eye_avg + 0.1 * eye_to_mouth, 2.0 * half


def random_shift_crop_tf(c0, q, width, height, seed, random_shift=DEFAULT_SHIFT, max_retries=MAX_RETRIES):
    """Stateless-RNG version of :func:`random_shift_crop` → ``(c [2], ok bool)``.

    Attempt ``i`` draws ``stateless_normal([2], fold_in(seed, i))``. When no attempt fits (``ok`` False), the
    centre is clamped so the box fits if possible (a tf.data map cannot skip an element).
    """
    c0 = tf.cast(c0, tf.float32)
    q = tf.cast(q, tf.float32)
    w = tf.cast(width, tf.float32)
    h = tf.cast(height, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)

    def fits(c):
        x0 = tf.floor(c[0] - 0.5 * q)
        y0 = tf.floor(c[1] - 0.5 * q)
        x1 = tf.math.ceil(c[0] + 0.5 * q)
        y1 = tf.math.ceil(c[1] + 0.5 * q)
        return (x0 >= 0) & (y0 >= 0) & (x1 < w) & (y1 < h)

    def draw(i):
        n = tf.random.stateless_normal([2], seed=tf.random.experimental.stateless_fold_in(seed, i))
        return c0 + q * random_shift * n

    def cond(i, c, ok):
        return tf.logical_and(i < max_retries, tf.logical_not(ok))

    def body(i, c, ok):
        c = draw(i)
        return i + 1, c, fits(c)

    if random_shift == 0:
        c, ok = c0, fits(c0)
    else:
        _, c, ok = tf.while_loop(cond, body, (tf.constant(0, tf.int64), c0, tf.constant(False)))
    lo = tf.stack([0.5 * q, 0.5 * q]) + 1.0
    hi = tf.stack([w, h]) - 0.5 * q - 2.0
    clamped = tf.clip_by_value(c, lo, tf.maximum(lo, hi))
    return tf.where(ok, c, clamped), ok


def crop_square_tf(image, center, q, out_size, supersample=4):
    """Resamples the axis-aligned square (``center`` [2] (x, y) in pixel indices, side ``q``) of ``image``
    ``[H, W, C]`` → float32 ``[out, out, C]`` (input value units).

    Steps: Lanczos pre-shrink by ``floor(q/out·0.5)`` when >= 2 (coordinates / shrink, as in the original);
    bilinear ``crop_and_resize`` at sample ``(c - q/2) + (j + 0.5)·q/S`` for ``S = supersample·out``;
    antialiased Lanczos3 to ``out``.
    """
    image = tf.convert_to_tensor(image)
    x = tf.cast(image, tf.float32)  # [H, W, C]
    center = tf.cast(center, tf.float32)
    q = tf.cast(q, tf.float32)
    shrink = tf.floor(q / out_size * 0.5)

    def do_shrink():
        shape = tf.cast(tf.shape(x)[:2], tf.float32)
        size = tf.cast(tf.round(shape / shrink), tf.int32)
        return tf.image.resize(x, size, method="lanczos3", antialias=True), center / shrink, q / shrink

    def no_shrink():
        return x, center, q

    x, center, q = tf.cond(shrink > 1, do_shrink, no_shrink)
    x = tf.ensure_shape(x, [None, None, image.shape[-1]])
    size = int(supersample * out_size)
    hw = tf.cast(tf.shape(x)[:2], tf.float32) - 1.0  # [2] (H-1, W-1)
    step = q / size
    first = center - 0.5 * q + 0.5 * step  # (x, y)
    last = center + 0.5 * q - 0.5 * step
    boxes = tf.stack([first[1] / hw[0], first[0] / hw[1], last[1] / hw[0], last[0] / hw[1]])[None]  # [1, 4]
    y = tf.image.crop_and_resize(x[None], boxes, tf.zeros([1], tf.int32), [size, size], method="bilinear")
    if size != out_size:
        y = tf.image.resize(y, [out_size, out_size], method="lanczos3", antialias=True)
    if image.dtype == tf.uint8:
        y = tf.clip_by_value(y, 0.0, 255.0)  # Lanczos ringing stays inside the uint8 range, as PIL's output
    return y[0]  # [out, out, C]


def ffhqu_crop_tf(image, landmarks, resolution, seed, random_shift=DEFAULT_SHIFT, max_retries=MAX_RETRIES,
                  return_center=False):
    """tf.data map function: image ``[H, W, C]`` (uint8 or float) + landmarks ``[68, 2]`` → random unaligned crop
    float32 ``[resolution, resolution, C]`` in the input's value units (uint8 input → floats clipped to 0..255).

    ``seed``: int64 ``[2]`` stateless seed (e.g. from ``tf.data.Dataset.random`` or the element index); the same
    seed gives the same crop. ``return_center=True`` also returns ``(center [2], q, ok)``.

    Example::

        ds = ds.map(lambda img, lm, i: ffhqu_crop_tf(img, lm, 256, tf.stack([seed, i])))
    """
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and image.shape.rank != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    lm = tf.convert_to_tensor(landmarks)
    if lm.shape.rank is not None and (lm.shape.rank != 2 or (lm.shape[0] is not None and lm.shape[0] != 68)):
        raise ValueError(f"landmarks must be [68, 2], got shape {lm.shape}")
    c0, q = landmark_crop_params_tf(lm)
    shape = tf.shape(image)
    c, ok = random_shift_crop_tf(c0, q, shape[1], shape[0], seed, random_shift, max_retries)
    out = crop_square_tf(image, c, q, int(resolution))
    if return_center:
        return out, (c, q, ok)
    return out
