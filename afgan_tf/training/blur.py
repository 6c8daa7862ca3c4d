"""Blur of the discriminator's inputs (config R, early training; docs/ALGORITHM.md §5.5).

At image count ``cur_nimg`` the blur width is ``sigma = init_sigma * max(1 - cur_nimg / (fade_kimg * 1000), 0)``
and, when ``floor(3 * sigma) > 0``, every image entering D is filtered separably with the 1-D kernel
``k[j] ∝ 2^(-(j / sigma)^2)``, ``|j| <= floor(3 * sigma)``, normalised to unit sum, with zero-padded "same"-size
filtering (the original's ``filter2d``). ``sigma`` is the half-width at half maximum, not the standard deviation
(std ≈ 0.849·sigma; 61 taps and std 8.474 px at sigma = 10).

Graph-friendly form: ``cur_nimg`` may be a tensor inside ``tf.function``, so the kernel always has the static
maximum length ``2 * floor(3 * max_sigma) + 1`` and the taps outside ``|j| <= floor(3 * sigma)`` are zero. Zero taps
with zero padding give exactly the result of the shorter kernel. When ``floor(3 * sigma) == 0`` the filtering is
skipped (``tf.cond``), so the images pass through unchanged.
"""
import math

import numpy as np
import tensorflow as tf


def blur_sigma(cur_nimg, init_sigma=10.0, fade_kimg=200.0):
    """Blur sigma at ``cur_nimg`` (Python number -> float, tensor -> float32 tensor). 0 when blur is off."""
    if init_sigma <= 0 or fade_kimg is None or fade_kimg <= 0:
        return 0.0 if not tf.is_tensor(cur_nimg) else tf.zeros([], tf.float32)
    if tf.is_tensor(cur_nimg):
        t = tf.cast(cur_nimg, tf.float32) / float(fade_kimg * 1e3)
        return tf.maximum(1.0 - t, 0.0) * float(init_sigma)
    return max(1.0 - float(cur_nimg) / (fade_kimg * 1e3), 0.0) * float(init_sigma)


def blur_size(sigma):
    """Half-length ``floor(3 * sigma)`` of the kernel (int or int32 tensor)."""
    if tf.is_tensor(sigma):
        return tf.cast(tf.floor(3.0 * tf.cast(sigma, tf.float32)), tf.int32)
    return int(math.floor(3.0 * sigma))


def blur_kernel(sigma, max_sigma=None):
    """1-D blur kernel, normalised to unit sum.

    sigma: float or scalar tensor. max_sigma: if given, the kernel has the fixed length
    ``2 * floor(3 * max_sigma) + 1`` (taps beyond ``floor(3 * sigma)`` are zero), which keeps graph shapes static.
    Returns a float32 tensor ``[taps]`` (a 1-tap ``[1.]`` when ``floor(3 * sigma) == 0``).
    """
    if max_sigma is None:
        if tf.is_tensor(sigma):
            raise ValueError("blur_kernel: max_sigma is required when sigma is a tensor (static kernel length)")
        max_sigma = sigma
    half = blur_size(float(max_sigma))
    if half < 0:
        raise ValueError(f"blur_kernel: max_sigma must be >= 0, got {max_sigma}")
    sigma = tf.cast(sigma, tf.float32)
    size = blur_size(sigma)
    j = tf.range(-half, half + 1, dtype=tf.float32)                        # [taps]
    inside = tf.abs(j) <= tf.cast(size, tf.float32)
    safe_sigma = tf.maximum(sigma, 1e-8)
    f = tf.where(inside, tf.pow(2.0, -tf.square(j / safe_sigma)), tf.zeros_like(j))
    f = tf.where(size > 0, f, tf.cast(tf.equal(j, 0.0), tf.float32))     # delta when no blur
    return f / tf.reduce_sum(f)


def _filter_same(x, f):
    """Separable same-size filtering with zero padding. x: [N, H, W, C], f: [taps] (odd, symmetric)."""
    taps = int(f.shape[0])
    c = tf.shape(x)[3]
    fx = tf.tile(tf.reshape(tf.cast(f, x.dtype), [1, taps, 1, 1]), [1, 1, c, 1])   # [1, taps, C, 1]
    fy = tf.tile(tf.reshape(tf.cast(f, x.dtype), [taps, 1, 1, 1]), [1, 1, c, 1])   # [taps, 1, C, 1]
    x = tf.nn.depthwise_conv2d(x, fx, strides=[1, 1, 1, 1], padding="SAME")        # [N, H, W, C]
    x = tf.nn.depthwise_conv2d(x, fy, strides=[1, 1, 1, 1], padding="SAME")        # [N, H, W, C]
    return x


@tf.autograph.experimental.do_not_convert
def blur_images(images, sigma, max_sigma=None):
    """Blurs NHWC ``images`` with the kernel of ``sigma`` (no-op when ``floor(3 * sigma) == 0``).

    Steps: build the (fixed-length) kernel; filter along x then y with zero padding; skip when sigma is too small.
    images: [N, H, W, C] float. sigma: float or scalar tensor; max_sigma: static upper bound (needed for tensors).
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"blur_images: images must be [N, H, W, C], got shape {images.shape}")
    if not images.dtype.is_floating:
        raise TypeError(f"blur_images: images must be floating point, got {images.dtype.name}")
    if not tf.is_tensor(sigma):
        if blur_size(float(sigma)) <= 0:
            return images
        return _filter_same(images, blur_kernel(float(sigma)))
    if max_sigma is None:
        raise ValueError("blur_images: max_sigma is required when sigma is a tensor")
    if blur_size(float(max_sigma)) <= 0:
        return images
    f = blur_kernel(sigma, max_sigma)
    return tf.cond(blur_size(sigma) > 0, lambda: _filter_same(images, f), lambda: tf.identity(images))


class DInputBlur:
    """Schedule + filter of the config-R D-input blur.

    Args:
      init_sigma: sigma at cur_nimg = 0 (10 for stylegan3-r, 0 = off; the original disables it on resume).
      fade_kimg: thousands of images over which sigma falls linearly to 0 (``batch * 200 / 32``).
    Call ``blur(images, cur_nimg)``; ``cur_nimg`` may be a Python number or a tensor.
    """

    def __init__(self, init_sigma=0.0, fade_kimg=200.0):
        if init_sigma < 0:
            raise ValueError(f"DInputBlur: init_sigma must be >= 0, got {init_sigma}")
        if init_sigma > 0 and (fade_kimg is None or fade_kimg <= 0):
            raise ValueError(f"DInputBlur: fade_kimg must be > 0 when init_sigma > 0, got {fade_kimg}")
        self.init_sigma = float(init_sigma)
        self.fade_kimg = float(fade_kimg) if fade_kimg else 0.0

    @property
    def enabled(self):
        return self.init_sigma > 0 and self.fade_kimg > 0

    def sigma(self, cur_nimg):
        return blur_sigma(cur_nimg, self.init_sigma, self.fade_kimg)

    def __call__(self, images, cur_nimg):
        if not self.enabled:
            return images
        return blur_images(images, self.sigma(cur_nimg), max_sigma=self.init_sigma)

    def get_config(self):
        return dict(init_sigma=self.init_sigma, fade_kimg=self.fade_kimg)


def kernel_std(f):
    """Empirical standard deviation (in taps) of a 1-D kernel (numpy helper for checks)."""
    f = np.asarray(f, np.float64)
    j = np.arange(f.size) - (f.size - 1) / 2
    f = f / f.sum()
    return float(np.sqrt(np.sum(f * j * j) - np.sum(f * j) ** 2))
