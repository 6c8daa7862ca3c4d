"""StyleGAN2/3 training loss (the original's ``StyleGAN2Loss``; docs/ALGORITHM.md §5.1-5.2).

Phases (each a pure function of its inputs returning loss values, gradients and statistics, so a
``tf.function`` / ``strategy.run`` step can call it):

* ``Gmain``: ``mean softplus(-D(G(z)))`` (non-saturating logistic), G forward without EMA updates.
* ``Dmain``: ``mean softplus(D(G(z))) + mean softplus(-D(x))``; the fake-image G forward runs with
  ``update_emas=True`` (updates ``w_avg`` / ``magnitude_ema``); no gradient flows into G.
* ``Dreg`` (lazy R1): ``gain * (gamma / 2) * mean_n ||d sum D(x) / d x_n||^2`` through blur + augmentation, real
  logits recomputed; ``gain`` = the regularisation interval (16).
* ``Greg`` (path length; off for StyleGAN3): ``gain * pl_weight * mean (|J^T y| - pl_mean)^2`` on ``batch //
  pl_batch_shrink`` samples with ``y ~ N(0, 1) / sqrt(H * W)``; ``pl_mean`` is an EMA (decay 0.01) in a variable.

``D(.)`` always means "blur (config R, early training) -> ADA augmentation -> discriminator".
Style mixing (probability ``style_mixing_prob``, 0 for StyleGAN3): one cutoff ``k ~ U{1..num_ws-1}`` per call;
with that probability ``ws[:, k:]`` come from the mapping of fresh latents.

Helpers: ``lazy_adam_params`` (the lazy-regularisation optimiser correction) and ``sanitize_gradients``
(NaN -> 0, +inf -> 1e5, -inf -> -1e5).
"""
import math

import tensorflow as tf

from .blur import DInputBlur
from afgan_tf.networks.layers import tf_variables


# ----------------------------------------------------------------------------------------------------------------
# Helpers.

def lazy_adam_params(lr, betas, interval):
    """Optimiser correction for a regulariser run every ``interval`` minibatches (docs/ALGORITHM.md §5.2).

    ``r = interval / (interval + 1)``; returns ``(lr * r, (beta1 ** r, beta2 ** r))``. ``interval`` None/0 means
    no lazy regularisation: the arguments are returned unchanged.
    """
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2:
        raise ValueError(f"lazy_adam_params: betas must be (beta1, beta2), got {betas}")
    if interval is None or interval == 0:
        return float(lr), betas
    if interval < 0:
        raise ValueError(f"lazy_adam_params: interval must be >= 0, got {interval}")
    r = interval / (interval + 1)
    return float(lr) * r, tuple(b ** r for b in betas)


def sanitize_gradients(grads):
    """Replaces non-finite gradient entries: NaN -> 0, +inf -> 1e5, -inf -> -1e5 (finite values unchanged).

    Accepts a list of tensors / ``tf.IndexedSlices`` / None (kept as None).
    """
    def fix(g):
        if g is None:
            return None
        if isinstance(g, tf.IndexedSlices):
            return tf.IndexedSlices(fix(g.values), g.indices, g.dense_shape)
        g = tf.where(tf.math.is_nan(g), tf.zeros_like(g), g)
        big = tf.cast(1e5, g.dtype)
        g = tf.where(tf.equal(g, tf.cast(math.inf, g.dtype)), big * tf.ones_like(g), g)
        g = tf.where(tf.equal(g, tf.cast(-math.inf, g.dtype)), -big * tf.ones_like(g), g)
        return g
    return [fix(g) for g in grads]


def r1_penalty(D_fn, real_img, real_c=None):
    """R1 building block: returns ``(logits [N, 1], penalty [N])`` with ``penalty_n = ||d sum(logits) / d x_n||^2``.

    ``D_fn(img, c)`` is the full D input chain (blur, augmentation, D). The penalty is differentiable w.r.t. D's
    variables (second-order autodiff): call it inside an outer ``GradientTape``.
    """
    real_img = tf.convert_to_tensor(real_img)
    with tf.GradientTape() as tape:
        tape.watch(real_img)
        logits = D_fn(real_img, real_c)                                  # [N, 1]
        total = tf.reduce_sum(logits)
    g = tape.gradient(total, real_img)                                   # [N, H, W, C]
    if g is None:
        raise ValueError("r1_penalty: D's output does not depend on its input image (no gradient)")
    penalty = tf.reduce_sum(tf.square(g), axis=tf.range(1, tf.rank(g)))  # [N]
    return logits, penalty


def _check_images(x, name):
    if x.shape.rank != 4:
        raise ValueError(f"{name} must be NHWC [N, H, W, C], got shape {x.shape}")
    if not x.dtype.is_floating:
        raise TypeError(f"{name} must be floating point, got {x.dtype.name}")


# ----------------------------------------------------------------------------------------------------------------


class StyleGAN2Loss(tf.Module):
    """Loss phases of StyleGAN2/3 training.

    Args:
      G: generator with ``G.mapping(z, c, update_emas=...) -> ws [N, num_ws, w_dim]`` and
         ``G.synthesis(ws, update_emas=...) -> img [N, H, W, C]`` and ``trainable_variables``.
      D: discriminator ``D(img, c) -> logits [N, 1]`` with ``trainable_variables``.
      augment_pipe: callable ``pipe(img) -> img`` (ADA) or None.
      r1_gamma: R1 weight gamma.
      style_mixing_prob: style mixing probability (0 for StyleGAN3, 0.9 for StyleGAN2).
      pl_weight, pl_batch_shrink, pl_decay, pl_no_weight_grad: path-length regulariser (off: pl_weight = 0).
      blur_init_sigma, blur_fade_kimg: config-R D-input blur schedule (0 = off).
      seed / rng: randomness for style mixing and path-length noise (``tf.random.Generator``).
    ``pl_mean`` is a non-trainable variable of this module (checkpoint it with the loss object).
    """

    def __init__(self, G, D, augment_pipe=None, r1_gamma=10.0, style_mixing_prob=0.0, pl_weight=0.0,
                 pl_batch_shrink=2, pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0.0,
                 blur_fade_kimg=0.0, seed=None, rng=None, name="stylegan2_loss"):
        super().__init__(name=name)
        if r1_gamma < 0:
            raise ValueError(f"StyleGAN2Loss: r1_gamma must be >= 0, got {r1_gamma}")
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f"StyleGAN2Loss: style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        if pl_batch_shrink < 1:
            raise ValueError(f"StyleGAN2Loss: pl_batch_shrink must be >= 1, got {pl_batch_shrink}")
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_no_weight_grad = bool(pl_no_weight_grad)
        self.blur = DInputBlur(blur_init_sigma, blur_fade_kimg)
        self.pl_mean = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="pl_mean")
        if rng is None:
            rng = tf.random.Generator.from_seed(seed) if seed is not None else tf.random.Generator.from_non_deterministic_state()
        self.rng = rng

    # -- forward chains -------------------------------------------------------------------------------------------
    def run_G(self, z, c, update_emas=False):
        """Mapping (+ style mixing) + synthesis. Returns ``(img [N, H, W, C], ws [N, num_ws, w_dim])``."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            num_ws = ws.shape[1]
            if num_ws is None or num_ws < 2:
                raise ValueError(f"style mixing needs num_ws >= 2, got ws shape {ws.shape}")
            cutoff = self.rng.uniform([], minval=1, maxval=num_ws, dtype=tf.int32)   # U{1..num_ws-1}
            mix = self.rng.uniform([]) < self.style_mixing_prob
            cutoff = tf.where(mix, cutoff, num_ws)
            z2 = self.rng.normal(tf.shape(z), dtype=z.dtype)
            ws2 = self.G.mapping(z2, c, update_emas=False)
            keep = tf.range(num_ws) < cutoff                                          # [num_ws]
            ws = tf.where(keep[tf.newaxis, :, tf.newaxis], ws, ws2)
        img = self.G.synthesis(ws, update_emas=update_emas)
        return img, ws

    def run_D(self, img, c, cur_nimg=0, update_emas=False):
        """Blur (config R) -> augmentation -> D. Returns logits ``[N, 1]``."""
        img = self.blur(img, cur_nimg)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)   # D has no EMA state (update_emas kept for interface parity)

    # -- phases ---------------------------------------------------------------------------------------------------
    def gmain_loss(self, gen_z, gen_c, cur_nimg=0):
        """Returns ``(loss scalar, stats)``; loss = mean softplus(-D(G(z)))."""
        gen_img, _ = self.run_G(gen_z, gen_c)
        gen_logits = self.run_D(gen_img, gen_c, cur_nimg)
        loss = tf.reduce_mean(tf.nn.softplus(-gen_logits))
        return loss, {"Loss/scores/fake": gen_logits, "Loss/signs/fake": tf.sign(gen_logits), "Loss/G/loss": loss}

    def dmain_loss(self, real_img, real_c, gen_z, gen_c, cur_nimg=0):
        """Returns ``(loss scalar, stats)``; loss = mean softplus(D(G(z))) + mean softplus(-D(x))."""
        real_img = tf.convert_to_tensor(real_img)
        _check_images(real_img, "real_img")
        gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
        gen_img = tf.stop_gradient(gen_img)
        gen_logits = self.run_D(gen_img, gen_c, cur_nimg, update_emas=True)
        real_logits = self.run_D(real_img, real_c, cur_nimg)
        loss_gen = tf.reduce_mean(tf.nn.softplus(gen_logits))
        loss_real = tf.reduce_mean(tf.nn.softplus(-real_logits))
        loss = loss_gen + loss_real
        return loss, {"Loss/scores/fake": gen_logits, "Loss/signs/fake": tf.sign(gen_logits),
                      "Loss/scores/real": real_logits, "Loss/signs/real": tf.sign(real_logits),
                      "Loss/D/loss": loss, "real_logits": real_logits}

    def dreg_loss(self, real_img, real_c, cur_nimg=0, gain=16.0):
        """Returns ``(gain * (gamma / 2) * mean R1, stats)`` (must run inside an outer tape for D gradients)."""
        real_img = tf.convert_to_tensor(real_img)
        _check_images(real_img, "real_img")
        real_logits, penalty = r1_penalty(lambda x, c: self.run_D(x, c, cur_nimg), real_img, real_c)
        loss_r1 = penalty * (self.r1_gamma / 2)                              # [N]
        loss = tf.reduce_mean(loss_r1) * gain
        return loss, {"Loss/r1_penalty": penalty, "Loss/D/reg": loss_r1, "Loss/scores/real": real_logits,
                      "Loss/signs/real": tf.sign(real_logits), "real_logits": real_logits}

    def greg_loss(self, gen_z, gen_c, gain=4.0):
        """Path-length regularisation; updates ``pl_mean``. Returns ``(gain * mean(pl_weight * penalty), stats)``."""
        if self.pl_weight == 0:
            raise ValueError("greg_loss: pl_weight is 0 (path-length regularisation is off for this config)")
        n = gen_z.shape[0]
        if n is None:
            n = tf.shape(gen_z)[0]
            bs = tf.maximum(n // self.pl_batch_shrink, 1)
        else:
            bs = max(n // self.pl_batch_shrink, 1)
        z = gen_z[:bs]
        c = gen_c[:bs] if gen_c is not None else None
        with tf.GradientTape() as tape:
            ws = self.G.mapping(z, c)
            if self.style_mixing_prob > 0:
                # Same mixing rule as run_G, applied on the watched ws.
                num_ws = ws.shape[1]
                cutoff = self.rng.uniform([], minval=1, maxval=num_ws, dtype=tf.int32)
                cutoff = tf.where(self.rng.uniform([]) < self.style_mixing_prob, cutoff, num_ws)
                ws2 = self.G.mapping(self.rng.normal(tf.shape(z), dtype=z.dtype), c)
                keep = tf.range(num_ws) < cutoff
                ws = tf.where(keep[tf.newaxis, :, tf.newaxis], ws, ws2)
            tape.watch(ws)
            img = self.G.synthesis(ws)                                       # [n, H, W, C]
            hw = tf.cast(tf.shape(img)[1] * tf.shape(img)[2], img.dtype)
            noise = self.rng.normal(tf.shape(img), dtype=img.dtype) / tf.sqrt(hw)
            out = tf.reduce_sum(img * noise)
        pl_grads = tape.gradient(out, ws)                                     # [n, num_ws, w_dim]
        pl_lengths = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(pl_grads), axis=2), axis=1))  # [n]
        old_mean = tf.cast(self.pl_mean, pl_lengths.dtype)
        # As the original: the lerp'ed mean keeps its gradient in the penalty; only the stored copy is detached.
        pl_mean = old_mean + self.pl_decay * (tf.reduce_mean(pl_lengths) - old_mean)
        self.pl_mean.assign(tf.cast(tf.stop_gradient(pl_mean), self.pl_mean.dtype))
        penalty = tf.square(pl_lengths - pl_mean)                             # [n]
        loss = tf.reduce_mean(penalty * self.pl_weight) * gain
        return loss, {"Loss/pl_penalty": penalty, "Loss/G/reg": penalty * self.pl_weight}

    # -- loss + gradients -----------------------------------------------------------------------------------------
    def gmain_grads(self, gen_z, gen_c, cur_nimg=0, variables=None, gain=1.0):
        """Returns ``(loss, grads for variables (default G.trainable_variables), stats)``."""
        variables = tf_variables(variables if variables is not None else self.G.trainable_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss, stats = self.gmain_loss(gen_z, gen_c, cur_nimg)
            scaled = loss * gain
        return loss, tape.gradient(scaled, variables), stats

    def dmain_grads(self, real_img, real_c, gen_z, gen_c, cur_nimg=0, variables=None, gain=1.0):
        """Returns ``(loss, grads for variables (default D.trainable_variables), stats)``."""
        variables = tf_variables(variables if variables is not None else self.D.trainable_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss, stats = self.dmain_loss(real_img, real_c, gen_z, gen_c, cur_nimg)
            scaled = loss * gain
        return loss, tape.gradient(scaled, variables), stats

    def dreg_grads(self, real_img, real_c, cur_nimg=0, gain=16.0, variables=None):
        """Lazy R1. Returns ``(loss incl. gain, grads for variables (default D.trainable_variables), stats)``."""
        variables = tf_variables(variables if variables is not None else self.D.trainable_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss, stats = self.dreg_loss(real_img, real_c, cur_nimg, gain)
        return loss, tape.gradient(loss, variables), stats

    def greg_grads(self, gen_z, gen_c, gain=4.0, variables=None):
        """Path-length regularisation. Returns ``(loss incl. gain, grads, stats)``."""
        variables = tf_variables(variables if variables is not None else self.G.trainable_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss, stats = self.greg_loss(gen_z, gen_c, gain)
        return loss, tape.gradient(loss, variables), stats


def phase_schedule(batch_idx, reg_interval=16):
    """True when the lazy regulariser runs at ``batch_idx`` (``batch_idx % interval == 0``, incl. the first)."""
    if reg_interval is None or reg_interval == 0:
        return False
    if tf.is_tensor(batch_idx):
        return tf.equal(tf.math.floormod(batch_idx, reg_interval), 0)
    return batch_idx % reg_interval == 0
