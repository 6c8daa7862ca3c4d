"""Shared helpers of tests/test_shapes*.py: reference renderings and generator stand-ins for the shapes metric."""
import numpy as np

from afgan_tf.data import shapes as sd


def point_supersampled_coverage(params, resolution, n=64):
    """Coverage by plain point sampling (n x n points per pixel, inside test only) — independent of the
    renderer's analytic / ramp formulas. → [N, R, R]."""
    R = int(resolution)
    sub = (np.arange(R)[:, None] + (np.arange(n) + 0.5) / n).reshape(-1)  # [R*n]
    out = []
    for k, cx, cy, s in zip(params["kind"], params["cx"], params["cy"], params["size"]):
        if k == 1:
            h = s * R * sd.SQUARE_HALF
            inside = (np.abs(sub - cy)[:, None] <= h) & (np.abs(sub - cx)[None, :] <= h)
        else:
            inside = (sub - cy)[:, None] ** 2 + (sub - cx)[None, :] ** 2 <= (s * R) ** 2
        out.append(inside.reshape(R, n, R, n).mean(axis=(1, 3)))
    return np.stack(out)


def gaussian_blobs(count, resolution, seed):
    """Images with a Gaussian blob (same colours / centres / sizes as the shapes) instead of a hard shape."""
    p = sd.sample_params(count, resolution, seed)
    R = resolution
    yy, xx = np.mgrid[0:R, 0:R] + 0.5
    sig = p["size"][:, None, None] * R / 1.2
    a = np.exp(-((xx - p["cx"][:, None, None]) ** 2 + (yy - p["cy"][:, None, None]) ** 2) / (2 * sig ** 2))
    img = p["bg"][:, None, None] + (p["fg"] - p["bg"])[:, None, None] * a[..., None]
    return np.rint(img * 255).astype(np.uint8)


class ShapesOracleG:
    """A 'generator' that draws true dataset images (params from a seed made of z): the best possible G."""

    def __init__(self, resolution, z_dim=4):
        self.img_resolution, self.img_channels, self.z_dim, self.c_dim = int(resolution), 3, int(z_dim), 0

    def _images(self, z):
        seed = int(np.abs(z[0, 0]) * 1e6) % (2 ** 31)
        img = sd.render(sd.sample_params(len(z), self.img_resolution, seed), self.img_resolution)
        return img.astype(np.float32) / 127.5 - 1.0

    def __call__(self, z, c=None, truncation_psi=1, **kwargs):
        import tensorflow as tf  # called inside tf.function like a real G
        return tf.numpy_function(self._images, [z], tf.float32)
