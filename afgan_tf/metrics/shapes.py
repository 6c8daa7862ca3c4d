"""Exact quality metrics for the ``shapes`` dataset (``afgan_tf.data.shapes``): fit the shape model to every image.

Fit (:func:`fit_shapes`, vectorised over the batch, numpy only):
  1. image → float64 in [0, 1]; background guess = per-channel median of the 1-px border;
  2. initial geometry from moments of the soft mask ``w = |x - bg| / max|x - bg|``: centre = weighted centroid,
     equivalent radius = ``sqrt(Σw / π)``;
  3. for each kind (disk, square): Levenberg–Marquardt on the geometry (cx, cy, equivalent radius in pixels)
     with the colours eliminated (variable projection): for a coverage map ``a`` (the dataset's own renderer,
     :func:`afgan_tf.data.shapes.coverage`) the best ``bg, fg`` per channel are the closed-form linear
     regression ``x ≈ bg + (fg − bg)·a``; the Jacobian is a forward difference of that projected residual;
     per-image damping, a step is kept only when it lowers the image's residual;
  4. the kind with the lower residual wins; ``rms`` = RMS residual over pixels and channels (in [0, 1] units).
Validity (:class:`ShapesReference`, calibrated on real images): an image is explained by the model when
  * its relative residual ``rho = rms / signal_rms`` (signal = the image's deviation from its own mean colour)
    is at most ``tau = max(ALPHA, 4 × 99th percentile of the real images' rho)``: the model leaves at most
    ALPHA² = 2.25 % of the image's signal energy unexplained. Real uint8 images have rho <= ~0.006 (rounding
    only), so ``tau`` = ALPHA unless the real data are noisier; for scale, a Gaussian blur of sigma 0.5 / 0.75 /
    1 px on the edges gives rho ≈ 0.07 / 0.14 / 0.19 and a Gaussian blob instead of a shape rho ≈ 0.4;
  * the fitted attributes are those of a possible image: size within the real range widened by 25 %, colours in
    [-0.05, 1.05], contrast |fg − bg| >= half the real minimum, the shape's centre inside the image.
Distance (:func:`attribute_distance`) between the fitted attributes of generated and real images
(bg RGB, fg RGB, cx/R, cy/R, size, kind): per-attribute 1-D Wasserstein-1 and Kolmogorov–Smirnov statistic
(scipy), and a sliced Wasserstein-1 over all ten attributes standardised by the real std (seeded directions).
Metric ``shapes_valid`` (:func:`shapes_metric`): ``shapes_valid`` (fraction), ``shapes_swd`` (sliced W1),
``shapes_w1_mean``, ``shapes_ks_max`` and ``shapes_eqt`` (EQ-T, integer translations, PSNR dB, from
:func:`afgan_tf.metrics.equivariance.eq_metric` on a few samples).
"""
import numpy as np
import scipy.stats

from afgan_tf.data import shapes as shapes_data

ALPHA = 0.15
ATTRS = ("bg_r", "bg_g", "bg_b", "fg_r", "fg_g", "fg_b", "cx", "cy", "size", "kind")
NUM_REAL = 512
NUM_GEN = 256
NUM_EQ = 64
SWD_DIRS = 256


def to_unit(images):
    """uint8 [0, 255] or float [-1, 1] (the networks' range) NHWC → float64 [0, 1] (floats are quantised to
    uint8 levels first, like the generated images the other metrics see)."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    return np.clip(np.rint((x.astype(np.float64) + 1.0) * 127.5), 0, 255) / 255.0


def _project(a, x):
    """Closed-form colours for coverage ``a [N, P]`` and pixels ``x [N, P, 3]`` → (residual [N, P, 3], bg, fg)."""
    ma = a.mean(1, keepdims=True)  # [N, 1]
    da = a - ma
    va = (da * da).mean(1)  # [N]
    mx = x.mean(1)  # [N, 3]
    cov = (da[:, :, None] * (x - mx[:, None, :])).mean(1)  # [N, 3]
    u = np.where(va[:, None] > 1e-12, cov / np.maximum(va[:, None], 1e-12), 0.0)  # fg - bg
    bg = mx - u * ma
    r = x - bg[:, None, :] - u[:, None, :] * a[:, :, None]
    return r, bg, bg + u


def _residual(kind, theta, x, R, grad=False):
    """Projected residual [N, P, 3] (+ bg, fg) of geometry theta [N, 3]; with ``grad`` also its Jacobian
    [N, P, 3 channels, 3 params] (Kaufman's variable-projection approximation: ``-(fg - bg)`` times the coverage
    derivative with its component in span{1, coverage} removed)."""
    n = len(theta)
    cov = shapes_data.coverage(np.full(n, kind), theta[:, 0], theta[:, 1], theta[:, 2] / R, R, grad=grad)
    a = (cov[0] if grad else cov).reshape(n, -1)
    r, bg, fg = _project(a, x)
    if not grad:
        return r, bg, fg
    da = cov[1].reshape(n, -1, 3)  # [N, P, 3]
    basis = np.stack([np.ones_like(a), a], -1)  # [N, P, 2]
    G = np.einsum("npi,npj->nij", basis, basis) + 1e-12 * np.eye(2)
    c = np.linalg.solve(G, np.einsum("npi,npk->nik", basis, da))  # [N, 2, 3]
    da_perp = da - np.einsum("npi,nik->npk", basis, c)
    J = -(fg - bg)[:, None, :, None] * da_perp[:, :, None, :]  # [N, P, 3, 3]
    return r, bg, fg, J


def _initial_guess(x, R):
    """Steps 1.-2.: (cx, cy, equivalent radius in px) [N, 3] from the border median and mask moments."""
    border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)  # [N, 4R-4, 3]
    bg = np.median(border, axis=1)  # [N, 3]
    d = np.linalg.norm(x - bg[:, None, None, :], axis=-1)  # [N, R, R]
    w = d / np.maximum(d.max(axis=(1, 2), keepdims=True), 1e-6)
    m = np.maximum(w.sum(axis=(1, 2)), 1e-6)
    c = np.arange(R) + 0.5
    cx = (w.sum(1) * c).sum(1) / m
    cy = (w.sum(2) * c).sum(1) / m
    req = np.sqrt(m / np.pi)
    return np.stack([cx, cy, np.clip(req, 1.0, R / 2)], 1)


def _fit_kind(kind, x, R, theta0, iters, tol=1e-10):
    """Step 3 for one kind: LM on theta [N, 3] (cx, cy, radius px) → (theta, bg, fg, cost)."""
    n = len(theta0)
    theta = theta0.copy()
    r, bg, fg, J = _residual(kind, theta, x, R, grad=True)
    cost = (r * r).reshape(n, -1).sum(1)
    lam = np.full(n, 1e-3)
    lo, hi = np.array([0.0, 0.0, 0.5]), np.array([R, R, R / 2.0])
    active = np.ones(n, bool)
    for _ in range(iters):
        idx = np.nonzero(active)[0]
        if len(idx) == 0:
            break
        Ja = J[idx].reshape(len(idx), -1, 3)
        JtJ = np.einsum("npi,npj->nij", Ja, Ja)
        g = np.einsum("npi,np->ni", Ja, r[idx].reshape(len(idx), -1))
        diag = np.maximum(np.diagonal(JtJ, axis1=1, axis2=2), 1e-9)
        A = JtJ + lam[idx, None, None] * (np.eye(3)[None] * diag[:, :, None])
        step = -np.linalg.solve(A, g[:, :, None])[:, :, 0]
        t_new = np.clip(theta[idx] + step, lo, hi)
        r_new, bg_new, fg_new, J_new = _residual(kind, t_new, x[idx], R, grad=True)
        cost_new = (r_new * r_new).reshape(len(idx), -1).sum(1)
        ok = cost_new < cost[idx]
        gain = np.where(ok, cost[idx] - cost_new, 0.0)
        k = idx[ok]
        theta[k], r[k], bg[k], fg[k], J[k], cost[k] = t_new[ok], r_new[ok], bg_new[ok], fg_new[ok], J_new[ok], \
            cost_new[ok]
        lam[idx] = np.where(ok, lam[idx] / 3.0, lam[idx] * 4.0)
        # converged: an accepted step gained (almost) nothing, or the damping blew up
        active[idx] = ~((ok & (gain <= tol * (1 + cost[idx]) * r[0].size)) | (lam[idx] > 1e8))
    return theta, bg, fg, cost


def fit_shapes(images, iters=15, chunk=128):
    """Least-squares fit of the shape model to each image (steps 1.-4. of the module docstring).

    Args: images: ``[N, R, R, 3]`` uint8 or float in [-1, 1]. Returns dict of arrays ``kind [N]`` (0 disk,
    1 square), ``size`` (equivalent radius / R), ``cx, cy`` (pixels), ``bg, fg [N, 3]``, ``rms [N]``."""
    x = to_unit(images)
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[3] != 3:
        raise ValueError(f"fit_shapes: expected images [N, R, R, 3], got shape {list(x.shape)}")
    n, R = x.shape[0], x.shape[1]
    out = dict(kind=np.zeros(n, np.int64), size=np.zeros(n), cx=np.zeros(n), cy=np.zeros(n),
               bg=np.zeros([n, 3]), fg=np.zeros([n, 3]), rms=np.zeros(n))
    for s in range(0, n, chunk):
        xc = x[s:s + chunk]
        m = len(xc)
        xf = xc.reshape(m, -1, 3)
        theta0 = _initial_guess(xc, R)
        best = None
        for kind in (0, 1):
            theta, bg, fg, cost = _fit_kind(kind, xf, R, theta0, iters)
            if best is None:
                best = [np.zeros(m, np.int64), theta, bg, fg, cost]
            else:
                b = cost < best[4]
                best[0][b] = kind
                for i, v in enumerate((theta, bg, fg, cost), 1):
                    best[i][b] = v[b]
        kind, theta, bg, fg, cost = best
        sl = slice(s, s + m)
        out["kind"][sl], out["cx"][sl], out["cy"][sl], out["size"][sl] = kind, theta[:, 0], theta[:, 1], \
            theta[:, 2] / R
        out["bg"][sl], out["fg"][sl], out["rms"][sl] = bg, fg, np.sqrt(cost / xf[0].size)
    return out


def attributes(fit, resolution):
    """Fitted attributes as a ``[N, 10]`` matrix in the order of ``ATTRS`` (centre as a fraction of R)."""
    R = float(resolution)
    return np.concatenate([fit["bg"], fit["fg"], (fit["cx"] / R)[:, None], (fit["cy"] / R)[:, None],
                           fit["size"][:, None], fit["kind"][:, None].astype(np.float64)], 1)


def signal_rms(images):
    """RMS deviation of each image from its mean colour (in [0, 1] units) → [N]."""
    x = to_unit(images)
    return np.sqrt(((x - x.mean(axis=(1, 2), keepdims=True)) ** 2).mean(axis=(1, 2, 3)))


def attribute_distance(gen_attrs, real_attrs, num_dirs=SWD_DIRS, seed=0):
    """Per-attribute W1 and KS, sliced W1 over all (attributes standardised by the real std) →
    dict(w1={attr: value}, ks={attr: value}, swd, w1_mean, ks_max)."""
    g, r = np.asarray(gen_attrs, np.float64), np.asarray(real_attrs, np.float64)
    w1 = {a: float(scipy.stats.wasserstein_distance(g[:, i], r[:, i])) for i, a in enumerate(ATTRS)}
    ks = {a: float(scipy.stats.ks_2samp(g[:, i], r[:, i]).statistic) for i, a in enumerate(ATTRS)}
    scale = np.maximum(r.std(0), 1e-6)
    dirs = np.random.RandomState(seed).randn(num_dirs, r.shape[1])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pg, pr = (g / scale) @ dirs.T, (r / scale) @ dirs.T  # [N, dirs]
    swd = float(np.mean([scipy.stats.wasserstein_distance(pg[:, k], pr[:, k]) for k in range(num_dirs)]))
    return dict(w1=w1, ks=ks, swd=swd, w1_mean=float(np.mean(list(w1.values()))),
                ks_max=float(max(ks.values())))


class ShapesReference:
    """Real-image calibration: the fitted real attributes, the residual threshold ``tau`` and the attribute
    ranges of a possible image (see the module docstring)."""

    def __init__(self, real_images, alpha=ALPHA):
        x = np.asarray(real_images)
        self.resolution = x.shape[1]
        self.fit = fit_shapes(x)
        self.attrs = attributes(self.fit, self.resolution)
        rho = self.fit["rms"] / np.maximum(signal_rms(x), 1e-9)
        self.tau = float(max(alpha, 4 * np.percentile(rho, 99)))
        self.size_range = (float(self.fit["size"].min()) / 1.25, float(self.fit["size"].max()) * 1.25)
        self.min_contrast = 0.5 * float(np.linalg.norm(self.fit["fg"] - self.fit["bg"], axis=1).min())
        self.real_rho = rho
        self.real_valid = self.valid(self.fit, x)

    def valid(self, fit, images):
        """Boolean [N]: the model explains the image (relative residual and attribute checks)."""
        R = self.resolution
        rho = fit["rms"] / np.maximum(signal_rms(images), 1e-9)
        contrast = np.linalg.norm(fit["fg"] - fit["bg"], axis=1)
        colours_ok = np.all((fit["bg"] > -0.05) & (fit["bg"] < 1.05) & (fit["fg"] > -0.05) & (fit["fg"] < 1.05),
                            axis=1)
        return ((rho <= self.tau) & (fit["size"] >= self.size_range[0]) & (fit["size"] <= self.size_range[1])
                & colours_ok & (contrast >= self.min_contrast) & (fit["cx"] > 0) & (fit["cx"] < R)
                & (fit["cy"] > 0) & (fit["cy"] < R))

    def evaluate(self, images):
        """Fits ``images`` → dict(valid fraction, distance dict (all images), fit, valid mask, median rho)."""
        fit = fit_shapes(images)
        ok = self.valid(fit, images)
        dist = attribute_distance(attributes(fit, self.resolution), self.attrs)
        rho = fit["rms"] / np.maximum(signal_rms(images), 1e-9)
        return dict(valid=float(ok.mean()), distance=dist, fit=fit, valid_mask=ok, median_rho=float(np.median(rho)))


_REFERENCES = {}


def load_reference(dataset, num_real=NUM_REAL):
    """Cached :class:`ShapesReference` of the first ``num_real`` images of a dataset (any path or shapes spec)."""
    from afgan_tf.data.pipeline import dataset_info, make_dataset
    info = dataset_info(dataset)
    key = (info["path"], int(num_real))
    if key not in _REFERENCES:
        imgs = []
        for x, _ in make_dataset(dataset, batch_size=256, shuffle=False, repeat=False, drop_remainder=False):
            imgs.append(x.numpy())
            if sum(len(i) for i in imgs) >= num_real:
                break
        _REFERENCES[key] = ShapesReference(np.concatenate(imgs, 0)[:num_real])
    return _REFERENCES[key]


def generate_images(G, num, seed=0, batch_size=32, c_sampler=None):
    """``num`` images of G (z ~ N(0, I) seeded, no truncation) as float32 [-1, 1] NHWC."""
    import tensorflow as tf
    rng = np.random.RandomState(seed)
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    gen = tf.function(lambda z, c: G(z, c, truncation_psi=1), reduce_retracing=True)
    out = []
    done = 0
    while done < num:
        n = min(batch_size, num - done)
        z = rng.randn(n, int(G.z_dim)).astype(np.float32)
        c = c_sampler(rng, n) if c_sampler is not None else np.zeros([n, c_dim], np.float32)
        img = gen(tf.constant(z), tf.constant(c, tf.float32))
        out.append(img.numpy() if hasattr(img, "numpy") else np.asarray(img))
        done += n
    return np.concatenate(out, 0)


def shapes_metric(G, dataset, num=NUM_GEN, num_real=NUM_REAL, num_eq=NUM_EQ, seed=0, c_sampler=None,
                  progress=None):
    """The ``shapes_valid`` metric of generator G against ``dataset`` → dict(results={...}, extra={...})."""
    from . import equivariance as eq
    ref = load_reference(dataset, num_real)
    if int(G.img_resolution) != ref.resolution:
        raise ValueError(f"shapes_valid: G makes {G.img_resolution}x{G.img_resolution} images, the dataset "
                         f"{dataset} is {ref.resolution}x{ref.resolution}")
    imgs = generate_images(G, int(num), seed=seed, c_sampler=c_sampler)
    ev = ref.evaluate(imgs)
    if progress is not None:
        progress(int(num), int(num))
    results = dict(shapes_valid=ev["valid"], shapes_swd=ev["distance"]["swd"],
                   shapes_w1_mean=ev["distance"]["w1_mean"], shapes_ks_max=ev["distance"]["ks_max"])
    if num_eq and hasattr(getattr(G, "synthesis", None), "input"):  # EQ-T needs the input layer's transform
        results["shapes_eqt"] = float(eq.eq_metric(G, "int", num_samples=int(num_eq), batch_size=4, seed=seed,
                                                   c_sampler=c_sampler)["psnr"])
    extra = dict(shapes_w1=ev["distance"]["w1"], shapes_ks=ev["distance"]["ks"], shapes_tau=ref.tau,
                 shapes_median_rho=ev["median_rho"], shapes_real_valid=float(ref.real_valid.mean()),
                 num_real=int(len(ref.attrs)))
    return dict(results=results, extra=extra)
