"""ADA: adaptive discriminator augmentation (the 'bgc' pipeline) and the p controller (docs/ALGORITHM.md §5.4).

``AugmentPipe`` applies, per sample and independently with probability ``multiplier * p``, the geometric
augmentations x-flip, rotate90, integer translation, isotropic scale, (pre/post) rotation, anisotropic scale and
fractional translation, then the colour augmentations brightness, contrast, luma flip, hue rotation and saturation.
NHWC images in ``[-1, 1]``; 3-channel (RGB) or 1-channel images.

Geometric execution (once any sample drew a non-identity geometric transform; otherwise it is skipped, which the
original does not do, but the original is an identity to ~1e-5 there):
  1. build per sample the inverse matrix ``G_inv`` (output pixel -> input pixel, pixel units, centred origin);
  2. padding: transform the 4 image corners, take the batch-wide maximum extent per side, add ``2 * Hz_pad``
     (``Hz_pad = 3``), clamp to ``[0, size - 1]``, round up -> ``(mx0, my0, mx1, my1)``; reflect-pad by it;
  3. 2x upsample with the 12-tap sym6 wavelet low-pass (``upsample2d``), adapt ``G_inv`` to the upsampled grid;
  4. bilinear resampling (``align_corners=False``, zero padding) on an output canvas of
     ``2 (H + 2 Hz_pad) x 2 (W + 2 Hz_pad)``, built from ``gather`` + arithmetic (linear in the image, weights
     independent of it, so differentiable to any order: R1 differentiates through it);
  5. 2x downsample with sym6 (``flip_filter=True``, padding ``-2 Hz_pad``) back to ``H x W``.
Padding modes (``static_shapes``): False (default) pads by exactly the batch's margins like the original, so the
intermediate shapes vary per batch (fine in ``tf.function``; not XLA). True executes step 2 inside a fixed buffer
reflect-padded by the maximum ``size - 1`` per side, with everything outside the batch's margins zeroed (before
upsampling) and treated as outside the image (during sampling): the same numbers, every shape static (XLA friendly),
but ~1.3-1.8x slower on CPU (the buffer is ``3 size - 2`` per axis; its peak size equals the original's worst case).

Colour execution: a per-sample 4x4 matrix ``C``; ``rgb <- C[:3, :3] rgb + C[:3, 3]`` (grayscale: rows averaged).

``p`` is a non-trainable float32 ``tf.Variable`` (checkpointed, assignable inside compiled steps). Randomness comes
from a ``tf.random.Generator`` (``seed`` or ``rng`` argument) whose state is checkpointed with the module.

``AdaController`` implements the p heuristic: accumulate ``sign(D(real))``; every ``interval`` iterations
``p <- max(p + sign(r_t - target) * batch * interval / (kimg * 1000), 0)``.
"""
import math

import numpy as np
import tensorflow as tf

from afgan_tf.ops import downsample2d as _downsample2d, upsample2d as _upsample2d

# Our functions use no tensor-dependent Python control flow; skipping autograph conversion keeps tracing fast
# (autograph would otherwise recurse into every helper and op module).
_no_autograph = tf.autograph.experimental.do_not_convert

# Daubechies symlet-6 low-pass decomposition filter (12 taps, orthonormal: sum = sqrt(2), sum of squares = 1).
# Verified in tests/test_augment.py by orthogonality (sum_k h[k] h[k + 2m] = delta_m), 6 vanishing moments of the
# matching high-pass and by re-deriving it via spectral factorisation with the least-asymmetric root choice.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

# The original's 'bgc' configuration: probability multipliers (all 1) and magnitudes.
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
DEFAULT_MAGNITUDES = dict(xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
                          brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0)
GEOM_KEYS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR_KEYS = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def sym6_filter():
    """The 12-tap sym6 low-pass normalised to unit sum (the original's ``Hz_geom``), float64 numpy."""
    h = np.asarray(SYM6, np.float64)
    return h / h.sum()


# ----------------------------------------------------------------------------------------------------------------
# Batched homogeneous matrices ([N] tensors -> [N, 3, 3] / [N, 4, 4]).

def _mat(rows):
    return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)


def translate2d(tx, ty):
    o, z = tf.ones_like(tx), tf.zeros_like(tx)
    return _mat([[o, z, tx], [z, o, ty], [z, z, o]])


def scale2d(sx, sy):
    o, z = tf.ones_like(sx), tf.zeros_like(sx)
    return _mat([[sx, z, z], [z, sy, z], [z, z, o]])


def rotate2d(theta):
    o, z = tf.ones_like(theta), tf.zeros_like(theta)
    c, s = tf.cos(theta), tf.sin(theta)
    return _mat([[c, -s, z], [s, c, z], [z, z, o]])


def translate3d(tx, ty, tz):
    o, z = tf.ones_like(tx), tf.zeros_like(tx)
    return _mat([[o, z, z, tx], [z, o, z, ty], [z, z, o, tz], [z, z, z, o]])


def scale3d(sx, sy, sz):
    o, z = tf.ones_like(sx), tf.zeros_like(sx)
    return _mat([[sx, z, z, z], [z, sy, z, z], [z, z, sz, z], [z, z, z, o]])


def rotate3d(v, theta):
    """Rotation by ``theta`` [N] about the unit axis ``v`` (3 floats), Rodrigues' formula."""
    vx, vy, vz = (float(a) for a in v[:3])
    o, z = tf.ones_like(theta), tf.zeros_like(theta)
    s, c = tf.sin(theta), tf.cos(theta)
    cc = 1 - c
    return _mat([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, z],
                 [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, z],
                 [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, z],
                 [z, z, z, o]])


def _batch_eye(n, k, dtype=tf.float32):
    return tf.tile(tf.eye(k, dtype=dtype)[tf.newaxis], [n, 1, 1])


# ----------------------------------------------------------------------------------------------------------------
# Geometric execution.

def _pad_margins(G_inv, H, W, hz_pad):
    """Dynamic reflect-padding amounts (mx0, my0, mx1, my1) as int32 [4] (docs/ALGORITHM.md §5.4, step 2)."""
    cx, cy = (W - 1) / 2, (H - 1) / 2
    cp = tf.constant([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], G_inv.dtype)   # [4, 3]
    cp = tf.einsum("nij,kj->nik", G_inv, cp)                                                  # [N, 3, 4]
    xy = tf.reshape(tf.transpose(cp[:, :2, :], [1, 0, 2]), [2, -1])                           # [2, N*4]
    margin = tf.reduce_max(tf.concat([-xy, xy], axis=0), axis=1)                               # [4] x0 y0 x1 y1
    margin = margin + tf.constant([2 * hz_pad - cx, 2 * hz_pad - cy] * 2, G_inv.dtype)
    margin = tf.minimum(tf.maximum(margin, 0.0), tf.constant([W - 1, H - 1] * 2, G_inv.dtype))
    return tf.cast(tf.math.ceil(margin), tf.int32)


def _bilinear_sample(img, ux, uy, lo_x, hi_x, lo_y, hi_y):
    """Bilinear lookup with zero outside ``[lo, hi]`` (inclusive pixel index ranges).

    img: [N, Hu, Wu, C]; ux, uy: [N, Ho, Wo] float64 pixel coordinates (pixel centres at integers).
    Returns [N, Ho, Wo, C]. Linear in ``img``; the weights do not depend on ``img``.
    """
    shape = tf.shape(img)
    n, hu, wu = shape[0], shape[1], shape[2]
    c = img.shape[3]
    x0 = tf.floor(ux)
    y0 = tf.floor(uy)
    fx = tf.cast(ux - x0, img.dtype)[..., tf.newaxis]                     # [N, Ho, Wo, 1]
    fy = tf.cast(uy - y0, img.dtype)[..., tf.newaxis]
    x0 = tf.cast(x0, tf.int32)
    y0 = tf.cast(y0, tf.int32)
    flat = tf.reshape(img, [-1, c])                                       # [N*Hu*Wu, C]
    base = (tf.range(n) * hu * wu)[:, tf.newaxis, tf.newaxis]             # [N, 1, 1]

    def tap(xi, yi, w):
        valid = (xi >= lo_x) & (xi <= hi_x) & (yi >= lo_y) & (yi <= hi_y)
        idx = base + tf.clip_by_value(yi, 0, hu - 1) * wu + tf.clip_by_value(xi, 0, wu - 1)
        vals = tf.gather(flat, idx)                                       # [N, Ho, Wo, C]
        return vals * (w * tf.cast(valid, img.dtype)[..., tf.newaxis])

    return (tap(x0, y0, (1 - fx) * (1 - fy)) + tap(x0 + 1, y0, fx * (1 - fy)) +
            tap(x0, y0 + 1, (1 - fx) * fy) + tap(x0 + 1, y0 + 1, fx * fy))


@_no_autograph
def apply_geometric(images, G_inv, impl="auto", static_shapes=False):
    """Runs the geometric chain (steps 2-5 of the module docstring) for given inverse matrices.

    images: [N, H, W, C] float; G_inv: [N, 3, 3] (output pixel -> input pixel, centred pixel units).
    static_shapes: True = fixed ``3 size - 2`` reflect-padded buffer masked to the dynamic margins (every shape
      static; XLA friendly); False = pad by exactly the dynamic margins like the original (intermediate shapes
      vary per batch; less work when the margins are small). Both give the same numbers.
    Returns [N, H, W, C]. Always executes (no identity shortcut).
    """
    images = tf.convert_to_tensor(images)
    _, H, W, C = images.shape
    if H is None or W is None or C is None:
        raise ValueError(f"apply_geometric: H, W and C must be static, got shape {images.shape}")
    hz = sym6_filter()
    hz_pad = hz.size // 4                                                  # 3
    G_inv = tf.cast(G_inv, tf.float64)                                     # float64 coordinates: exact grid hits
    m = _pad_margins(G_inv, H, W, hz_pad)                                  # [4] int32: mx0 my0 mx1 my1
    mx0, my0, mx1, my1 = m[0], m[1], m[2], m[3]

    if static_shapes:
        # Reflect-pad by the maximum (size - 1); zero everything outside the dynamic margins. The buffer is
        # centred on the image, so no origin shift is needed.
        buf = tf.pad(images, [[0, 0], [H - 1, H - 1], [W - 1, W - 1], [0, 0]], mode="REFLECT")  # [N, 3H-2, 3W-2, C]
        jx = tf.range(3 * W - 2) - (W - 1)                                 # original column index of buffer col
        jy = tf.range(3 * H - 2) - (H - 1)
        mask_x = tf.cast((jx >= -mx0) & (jx <= W - 1 + mx1), images.dtype)
        mask_y = tf.cast((jy >= -my0) & (jy <= H - 1 + my1), images.dtype)
        buf = buf * (mask_y[:, tf.newaxis] * mask_x[tf.newaxis, :])[tf.newaxis, :, :, tf.newaxis]
        Hu = tf.constant(2.0 * (3 * H - 2), tf.float64)
        Wu = tf.constant(2.0 * (3 * W - 2), tf.float64)
        # The dynamically padded, upsampled image occupies these buffer index ranges; outside reads zero.
        lo_x, hi_x = 2 * (W - 1 - mx0), 2 * (2 * W - 2 + mx1) + 1
        lo_y, hi_y = 2 * (H - 1 - my0), 2 * (2 * H - 2 + my1) + 1
    else:
        buf = tf.pad(images, [[0, 0], [my0, my1], [mx0, mx1], [0, 0]], mode="REFLECT")  # [N, H+my0+my1, ...]
        shift = tf.cast(tf.stack([mx0 - mx1, my0 - my1]), tf.float64) / 2
        G_inv = translate2d(shift[0:1], shift[1:2]) @ G_inv                # origin of the padded image
        Hu = tf.cast(2 * (H + my0 + my1), tf.float64)
        Wu = tf.cast(2 * (W + mx0 + mx1), tf.float64)
        lo_x, hi_x = 0, 2 * (W + mx0 + mx1) - 1
        lo_y, hi_y = 0, 2 * (H + my0 + my1) - 1

    # 2x upsample. The compiled op's gradient needs static sizes, so the dynamic mode uses the reference op
    # for this one call unless "custom" is explicitly requested.
    up_impl = impl if static_shapes or impl != "auto" else "ref"
    up = _upsample2d(buf, tf.constant(hz, tf.float32), up=2, impl=up_impl)   # [N, Hu, Wu, C]
    S = np.diag([2.0, 2.0, 1.0])
    T = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    G_inv = tf.constant(S) @ G_inv @ tf.constant(np.linalg.inv(S))
    G_inv = tf.constant(T) @ G_inv @ tf.constant(np.linalg.inv(T))

    # Bilinear resampling onto the output canvas (align_corners=False, zero padding).
    Ho, Wo = 2 * (H + 2 * hz_pad), 2 * (W + 2 * hz_pad)
    one = tf.ones([1], tf.float64)
    G_inv = scale2d(2.0 / Wu * one, 2.0 / Hu * one) @ G_inv @ tf.constant(np.diag([Wo / 2, Ho / 2, 1.0]))
    gx = (2 * np.arange(Wo, dtype=np.float64) + 1) / Wo - 1
    gy = (2 * np.arange(Ho, dtype=np.float64) + 1) / Ho - 1
    gxx, gyy = np.meshgrid(gx, gy)                                         # [Ho, Wo]
    grid = tf.constant(np.stack([gxx, gyy, np.ones_like(gxx)], axis=-1))  # [Ho, Wo, 3]
    sx = tf.einsum("nj,hwj->nhw", G_inv[:, 0, :], grid)                   # [N, Ho, Wo] normalised
    sy = tf.einsum("nj,hwj->nhw", G_inv[:, 1, :], grid)
    ux = ((sx + 1) * Wu - 1) / 2                                           # input pixel coordinates
    uy = ((sy + 1) * Hu - 1) / 2
    canvas = _bilinear_sample(up, ux, uy, lo_x, hi_x, lo_y, hi_y)         # [N, Ho, Wo, C]

    # 2x downsample and crop back to H x W.
    return _downsample2d(canvas, tf.constant(hz, tf.float32), down=2, padding=-2 * hz_pad,
                         flip_filter=True, impl=impl)                      # [N, H, W, C]


@_no_autograph
def apply_color(images, C_mat):
    """``rgb <- C[:3, :3] rgb + C[:3, 3]`` per pixel; grayscale uses the mean of the three rows.

    images: [N, H, W, 3 or 1]; C_mat: [N, 4, 4].
    """
    images = tf.convert_to_tensor(images)
    ch = images.shape[3]
    C_mat = tf.cast(C_mat, images.dtype)
    if ch == 3:
        out = tf.einsum("nij,nhwj->nhwi", C_mat[:, :3, :3], images)       # [N, H, W, 3]
        return out + C_mat[:, tf.newaxis, tf.newaxis, :3, 3]
    if ch == 1:
        row = tf.reduce_mean(C_mat[:, :3, :], axis=1)                      # [N, 4]
        gain = tf.reduce_sum(row[:, :3], axis=1)                           # [N]
        return images * gain[:, None, None, None] + row[:, None, None, 3:4]
    raise ValueError(f"AugmentPipe: images must have 3 (RGB) or 1 (L) channels, got {ch}")


# ----------------------------------------------------------------------------------------------------------------

class AugmentPipe(tf.Module):
    """The ADA augmentation pipeline ('bgc' by default).

    Args:
      p: initial augmentation probability (stored in the non-trainable float32 variable ``self.p``).
      xflip, rotate90, xint, scale, rotate, aniso, xfrac, brightness, contrast, lumaflip, hue, saturation:
        probability multipliers (default 1 each = the original's 'bgc'; 0 disables an augmentation).
      xint_max, scale_std, rotate_max, aniso_std, xfrac_std, brightness_std, contrast_std, hue_max,
        saturation_std: magnitudes (the original's defaults).
      seed: seed of the internal ``tf.random.Generator``; rng: use this generator instead.
      impl: implementation of the up/down-sampling ops ("auto", "ref", "custom").
      static_shapes: geometric padding mode (see module docstring): False (default) = exactly the batch's margins
        like the original (less work on average), True = fixed-size buffer (static shapes, XLA friendly).
    Call ``pipe(images)`` with NHWC images in ``[-1, 1]``.
    """

    def __init__(self, p=0.0, xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                 brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1,
                 xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
                 brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0,
                 seed=None, rng=None, impl="auto", static_shapes=False, name="augment_pipe"):
        super().__init__(name=name)
        self.multipliers = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate,
                                aniso=aniso, xfrac=xfrac, brightness=brightness, contrast=contrast,
                                lumaflip=lumaflip, hue=hue, saturation=saturation)
        self.magnitudes = dict(xint_max=xint_max, scale_std=scale_std, rotate_max=rotate_max,
                               aniso_std=aniso_std, xfrac_std=xfrac_std, brightness_std=brightness_std,
                               contrast_std=contrast_std, hue_max=hue_max, saturation_std=saturation_std)
        for k, v in {**self.multipliers, **self.magnitudes}.items():
            if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise ValueError(f"AugmentPipe: {k} must be a finite number >= 0, got {v!r}")
        self.multipliers = {k: float(v) for k, v in self.multipliers.items()}
        self.magnitudes = {k: float(v) for k, v in self.magnitudes.items()}
        self.impl = impl
        self.static_shapes = bool(static_shapes)
        self.seed = seed
        self.p = tf.Variable(float(p), trainable=False, dtype=tf.float32, name="p")
        if rng is None:
            rng = tf.random.Generator.from_seed(seed) if seed is not None else \
                tf.random.Generator.from_non_deterministic_state()
        self.rng = rng

    def get_config(self):
        return dict(p=float(self.p.numpy()) if tf.executing_eagerly() else None, **self.multipliers,
                    **self.magnitudes, seed=self.seed, impl=self.impl,
                    static_shapes=self.static_shapes)

    @property
    def has_geometric(self):
        return any(self.multipliers[k] > 0 for k in GEOM_KEYS)

    @property
    def has_color(self):
        return any(self.multipliers[k] > 0 for k in COLOR_KEYS)

    # -- parameter sampling ---------------------------------------------------------------------------------------
    @_no_autograph
    def sample_params(self, batch_size, height, width, channels, return_draws=False):
        """Draws the per-sample matrices. Returns ``(G_inv [N, 3, 3], C [N, 4, 4])`` (+ the raw draws dict).

        The draws dict holds, per augmentation, the sampled value already replaced by the identity value where
        the Bernoulli test failed (e.g. ``draws['xflip']`` in {0, 1}, ``draws['rotate_pre']`` in radians).
        """
        n = batch_size
        m, g = self.multipliers, self.magnitudes
        p = tf.cast(tf.convert_to_tensor(self.p), tf.float32)
        rng = self.rng
        W, H = float(width), float(height)
        draws = {}

        def bern(mult, shape=None):
            return rng.uniform([n] if shape is None else shape) < mult * p

        G_inv = _batch_eye(n, 3)
        if m["xflip"] > 0:
            i = tf.floor(rng.uniform([n]) * 2)
            i = tf.where(bern(m["xflip"]), i, tf.zeros_like(i))
            draws["xflip"] = i
            G_inv = G_inv @ scale2d(1 - 2 * i, tf.ones_like(i))
        if m["rotate90"] > 0:
            i = tf.floor(rng.uniform([n]) * 4)
            i = tf.where(bern(m["rotate90"]), i, tf.zeros_like(i))
            draws["rotate90"] = i
            G_inv = G_inv @ rotate2d(i * (math.pi / 2))
        if m["xint"] > 0:
            t = (rng.uniform([n, 2]) * 2 - 1) * g["xint_max"]
            t = tf.where(bern(m["xint"], [n, 1]), t, tf.zeros_like(t))
            tx, ty = tf.round(t[:, 0] * W), tf.round(t[:, 1] * H)
            draws["xint"] = tf.stack([tx, ty], axis=1)
            G_inv = G_inv @ translate2d(-tx, -ty)
        if m["scale"] > 0:
            s = tf.pow(2.0, rng.normal([n]) * g["scale_std"])
            s = tf.where(bern(m["scale"]), s, tf.ones_like(s))
            draws["scale"] = s
            G_inv = G_inv @ scale2d(1 / s, 1 / s)
        p_rot = 1 - tf.sqrt(tf.clip_by_value(1 - m["rotate"] * p, 0.0, 1.0))

        def random_rotation(key):   # drawn twice: before and after the anisotropic scaling
            th = (rng.uniform([n]) * 2 - 1) * math.pi * g["rotate_max"]
            th = tf.where(rng.uniform([n]) < p_rot, th, tf.zeros_like(th))
            draws[key] = th
            return rotate2d(th)

        if m["rotate"] > 0:
            G_inv = G_inv @ random_rotation("rotate_pre")
        if m["aniso"] > 0:
            s = tf.pow(2.0, rng.normal([n]) * g["aniso_std"])
            s = tf.where(bern(m["aniso"]), s, tf.ones_like(s))
            draws["aniso"] = s
            G_inv = G_inv @ scale2d(1 / s, s)
        if m["rotate"] > 0:
            G_inv = G_inv @ random_rotation("rotate_post")
        if m["xfrac"] > 0:
            t = rng.normal([n, 2]) * g["xfrac_std"]
            t = tf.where(bern(m["xfrac"], [n, 1]), t, tf.zeros_like(t))
            draws["xfrac"] = t
            G_inv = G_inv @ translate2d(-t[:, 0] * W, -t[:, 1] * H)

        C = _batch_eye(n, 4)
        v = np.array([1, 1, 1, 0], np.float64) / math.sqrt(3)
        vv = tf.constant(np.outer(v, v), tf.float32)
        I4 = tf.eye(4)
        if m["brightness"] > 0:
            b = rng.normal([n]) * g["brightness_std"]
            b = tf.where(bern(m["brightness"]), b, tf.zeros_like(b))
            draws["brightness"] = b
            C = translate3d(b, b, b) @ C
        if m["contrast"] > 0:
            c = tf.pow(2.0, rng.normal([n]) * g["contrast_std"])
            c = tf.where(bern(m["contrast"]), c, tf.ones_like(c))
            draws["contrast"] = c
            C = scale3d(c, c, c) @ C
        if m["lumaflip"] > 0:
            i = tf.floor(rng.uniform([n]) * 2)
            i = tf.where(bern(m["lumaflip"]), i, tf.zeros_like(i))
            draws["lumaflip"] = i
            C = (I4[tf.newaxis] - 2 * vv[tf.newaxis] * i[:, None, None]) @ C
        if m["hue"] > 0 and channels > 1:
            th = (rng.uniform([n]) * 2 - 1) * math.pi * g["hue_max"]
            th = tf.where(bern(m["hue"]), th, tf.zeros_like(th))
            draws["hue"] = th
            C = rotate3d(v, th) @ C
        if m["saturation"] > 0 and channels > 1:
            s = tf.pow(2.0, rng.normal([n]) * g["saturation_std"])
            s = tf.where(bern(m["saturation"]), s, tf.ones_like(s))
            draws["saturation"] = s
            C = (vv[tf.newaxis] + (I4 - vv)[tf.newaxis] * s[:, None, None]) @ C
        if return_draws:
            return G_inv, C, draws
        return G_inv, C

    # -- execution ------------------------------------------------------------------------------------------------
    @_no_autograph
    def __call__(self, images):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError(f"AugmentPipe: images must be NHWC [N, H, W, C], got shape {images.shape}")
        if not images.dtype.is_floating:
            raise TypeError(f"AugmentPipe: images must be floating point, got {images.dtype.name}")
        _, H, W, ch = images.shape
        if H is None or W is None or ch is None:
            raise ValueError(f"AugmentPipe: H, W and C must be static, got shape {images.shape}")
        if ch not in (1, 3):
            raise ValueError(f"AugmentPipe: images must have 3 (RGB) or 1 (L) channels, got {ch}")
        n = tf.shape(images)[0]
        G_inv, C = self.sample_params(n, H, W, ch)
        if self.has_geometric:
            is_identity = tf.reduce_all(tf.equal(G_inv, tf.eye(3)[tf.newaxis]))
            images = tf.cond(is_identity, lambda: tf.identity(images),
                             lambda: apply_geometric(images, G_inv, impl=self.impl,
                                                             static_shapes=self.static_shapes))
        if self.has_color:
            images = apply_color(images, C)
        return images


# ----------------------------------------------------------------------------------------------------------------

def _sync_on_read_var(initial, dtype, name):
    return tf.Variable(initial, trainable=False, dtype=dtype, name=name,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.SUM)


class AdaController(tf.Module):
    """Adjusts the augmentation probability ``p`` from the sign of D's outputs on real images.

    Args:
      p: the ``tf.Variable`` to adjust (e.g. ``AugmentPipe.p``) or an ``AugmentPipe``; None for mode 'noaug'.
      target: target ``r_t = E[sign(D(real))]`` (0.6).
      interval: iterations between adjustments (4).
      kimg: images (in thousands) for p to move by 1 (500; 100 when resuming).
      batch: global batch size.
      mode: 'ada' (adjust), 'fixed' (p constant) or 'noaug' (no augmentation, p unused).
    Usage per iteration: ``accumulate(real_logits)`` for every real-logit batch (replica context is fine: the
    accumulators are sync-on-read sums), then ``step()`` once per iteration in cross-replica context; ``step``
    counts iterations and calls ``update()`` every ``interval``-th one. All state lives in variables.
    """

    MODES = ("ada", "fixed", "noaug")

    def __init__(self, p, target=0.6, interval=4, kimg=500, batch=32, mode="ada", name="ada_controller"):
        super().__init__(name=name)
        if mode not in self.MODES:
            raise ValueError(f"AdaController: mode must be one of {self.MODES}, got {mode!r}")
        if isinstance(p, AugmentPipe):
            p = p.p
        if mode != "noaug" and p is None:
            raise ValueError(f"AdaController: mode {mode!r} needs the p variable (or the AugmentPipe)")
        if int(interval) < 1:
            raise ValueError(f"AdaController: interval must be >= 1, got {interval}")
        if kimg <= 0:
            raise ValueError(f"AdaController: kimg must be > 0, got {kimg}")
        if int(batch) < 1:
            raise ValueError(f"AdaController: batch must be >= 1, got {batch}")
        self.mode = mode
        self.p = p
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.batch = int(batch)
        self.sign_sum = _sync_on_read_var(0.0, tf.float32, "sign_sum")
        self.sign_count = _sync_on_read_var(0.0, tf.float32, "sign_count")
        self.num_iters = tf.Variable(0, trainable=False, dtype=tf.int64, name="num_iters")

    @property
    def adjust_step(self):
        """``batch * interval / (kimg * 1000)``: the amount p moves per adjustment."""
        return self.batch * self.interval / (self.kimg * 1000)

    @_no_autograph
    def accumulate(self, real_logits):
        """Adds ``sign(real_logits)`` to the running statistics (no-op unless mode 'ada')."""
        if self.mode != "ada":
            return
        x = tf.cast(tf.convert_to_tensor(real_logits), tf.float32)
        self.sign_sum.assign_add(tf.reduce_sum(tf.sign(x)))
        self.sign_count.assign_add(tf.cast(tf.size(x), tf.float32))

    @_no_autograph
    def rt(self):
        """Current ``r_t`` estimate (mean sign since the last adjustment; 0 when nothing was accumulated)."""
        return tf.math.divide_no_nan(tf.convert_to_tensor(self.sign_sum), tf.convert_to_tensor(self.sign_count))

    @_no_autograph
    def update(self):
        """Adjusts p now from the accumulated signs and resets the statistics. Returns the new p (or None)."""
        if self.mode != "ada":
            return None if self.p is None else tf.convert_to_tensor(self.p)
        count = tf.convert_to_tensor(self.sign_count)
        rt = self.rt()
        adjust = tf.sign(rt - self.target) * self.adjust_step
        adjust = tf.where(count > 0, adjust, 0.0)                           # nothing seen -> no change
        self.p.assign(tf.maximum(self.p + adjust, 0.0))
        self.sign_sum.assign(0.0)
        self.sign_count.assign(0.0)
        return tf.convert_to_tensor(self.p)

    @_no_autograph
    def step(self):
        """Counts one training iteration; every ``interval``-th call runs :meth:`update`. Returns p (or None)."""
        self.num_iters.assign_add(1)
        if self.mode != "ada":
            return None if self.p is None else tf.convert_to_tensor(self.p)
        due = tf.equal(tf.math.floormod(self.num_iters, self.interval), 0)
        if tf.executing_eagerly():
            return self.update() if bool(due) else tf.convert_to_tensor(self.p)
        return tf.cond(due, self.update, lambda: tf.convert_to_tensor(self.p))


def make_augment(aug="ada", p=0.2, target=0.6, interval=4, kimg=500, batch=32, seed=None, impl="auto", **pipe_kwargs):
    """The original's ``--aug`` modes: returns ``(pipe or None, controller)``.

    'ada': pipe with p = 0 and an adjusting controller; 'fixed': pipe with constant ``p``; 'noaug': no pipe.
    """
    if aug not in AdaController.MODES:
        raise ValueError(f"--aug must be one of {AdaController.MODES}, got {aug!r}")
    if aug == "noaug":
        return None, AdaController(None, target, interval, kimg, batch, mode="noaug")
    pipe = AugmentPipe(p=0.0 if aug == "ada" else p, seed=seed, impl=impl, **pipe_kwargs)
    return pipe, AdaController(pipe, target, interval, kimg, batch, mode=aug)
