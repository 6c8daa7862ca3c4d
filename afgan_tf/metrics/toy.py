"""Small analytic generators implementing the G contract of docs/DESIGN.md (for tests, demos, benchmarks).

:class:`ToyGenerator` evaluates a sum of band-limited sinusoids (frequencies inside a disc of radius ``bandwidth``
cycles per image) at the output pixel centres mapped through ``synthesis.input.transform`` — an exactly
translation- and rotation-equivariant "generator". ``glue > 0`` adds a fixed per-pixel pattern that ignores the
transform, i.e. texture glued to pixel coordinates (a non-equivariant baseline).
"""
import numpy as np
import tensorflow as tf


class _ToyInput:
    def __init__(self):
        self.transform = tf.Variable(np.eye(3, dtype=np.float32), trainable=False, name="transform")


class _ToySynthesis:
    def __init__(self, parent):
        self.input = _ToyInput()
        self._p = parent

    def __call__(self, ws, update_emas=False, **kwargs):
        return self._p._synthesize(tf.convert_to_tensor(ws, tf.float32))


class ToyGenerator:
    """Sum-of-sinusoids generator with the StyleGAN3 G interface.

    Args:
      img_resolution: output size R (R×R). img_channels: output channels.
      z_dim: latent size (w_dim = z_dim, num_ws = 2). num_freqs: number of sinusoids.
      bandwidth: max frequency in cycles per image (keep well below R/2 for a band-limited image).
      glue: amplitude of a fixed pixel pattern added after synthesis (0 = perfectly equivariant).
      c_dim: label size (labels are ignored except for shape checks). seed: numpy seed of the fixed tables.
    """

    def __init__(self, img_resolution=32, img_channels=3, z_dim=8, num_freqs=16, bandwidth=None, glue=0.0,
                 c_dim=0, seed=0):
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.z_dim = self.w_dim = int(z_dim)
        self.c_dim = int(c_dim)
        self.num_ws = 2
        self.glue = float(glue)
        bandwidth = self.img_resolution / 4 if bandwidth is None else float(bandwidth)
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, z_dim=z_dim,
                                num_freqs=num_freqs, bandwidth=bandwidth, glue=glue, c_dim=c_dim, seed=seed)
        rng = np.random.RandomState(seed)
        ang = rng.uniform(0, 2 * np.pi, num_freqs)
        rad = bandwidth * np.sqrt(rng.uniform(0.02, 1.0, num_freqs))
        self.freqs = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1).astype(np.float32)    # [K, 2]
        self.amp_w = (rng.randn(self.z_dim, num_freqs * self.img_channels) / np.sqrt(self.z_dim * num_freqs)
                      ).astype(np.float32)
        self.phase_w = rng.randn(self.z_dim, num_freqs).astype(np.float32)
        R = self.img_resolution
        self.pattern = rng.uniform(-1, 1, [1, R, R, self.img_channels]).astype(np.float32)
        self.synthesis = _ToySynthesis(self)
        self.w_avg = np.zeros([self.w_dim], np.float32)

    def mapping(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        z = tf.convert_to_tensor(z, tf.float32)
        w = z * tf.math.rsqrt(tf.reduce_mean(tf.square(z), axis=1, keepdims=True) + 1e-8)    # [N, w_dim]
        ws = tf.tile(w[:, None, :], [1, self.num_ws, 1])                                    # [N, num_ws, w_dim]
        if truncation_psi != 1:
            n = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            keep = np.arange(self.num_ws) < n
            psi = np.where(keep, float(truncation_psi), 1.0).astype(np.float32)[None, :, None]
            ws = self.w_avg + (ws - self.w_avg) * psi
        return ws

    def _synthesize(self, ws):
        R, C = self.img_resolution, self.img_channels
        K = self.freqs.shape[0]
        w = ws[:, 0]                                                                        # [N, w_dim]
        amp = tf.reshape(tf.matmul(w, self.amp_w), [-1, 1, 1, K, C])                        # [N, 1, 1, K, C]
        phase = tf.reshape(tf.matmul(w, self.phase_w), [-1, 1, 1, K, 1])                    # [N, 1, 1, K, 1]
        T = tf.cast(self.synthesis.input.transform, tf.float32)
        pix = (np.arange(R, dtype=np.float32) + 0.5 - R / 2) / R
        py, px = np.meshgrid(pix, pix, indexing="ij")                                       # [R, R]
        P = tf.constant(np.stack([px, py, np.ones_like(px)], -1).reshape(-1, 3))           # [R·R, 3]
        q = tf.matmul(P, T, transpose_b=True)[:, :2]                                        # [R·R, 2] feature coords
        arg = tf.matmul(q, self.freqs, transpose_b=True)                                   # [R·R, K]
        arg = tf.reshape(arg, [1, R, R, K, 1]) + phase                                      # [N, R, R, K, 1]
        img = tf.reduce_sum(amp * tf.sin(2 * np.pi * arg), axis=3)                          # [N, R, R, C]
        if self.glue:
            img = img + self.glue * self.pattern
        return img

    def __call__(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, **kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws)
