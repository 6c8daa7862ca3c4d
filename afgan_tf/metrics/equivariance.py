"""Equivariance metrics EQ-T, EQ-T_frac and EQ-R (docs/ALGORITHM.md §7.5, paper App. E).

Each metric compares, as a PSNR over valid pixels, a transformed *reference* (the untransformed output ``orig``
resampled by the transform) with the output of the synthesis network whose input layer was given the transform
through ``G.synthesis.input.transform``::

    PSNR = 20·log10(2) − 10·log10(MSE),    MSE = Σ (ref − img)²·mask / Σ mask      (mask counted per channel)

* ``"int"``  — integer translation: ``orig`` shifted by ``round(t·res)`` pixels, zero fill; mask = shifted region.
* ``"frac"`` — fractional translation: separable, normalised Lanczos-3 resampling; mask = all 6 taps inside.
* ``"rot"``  — rotation: reference = ``orig`` upsampled ×4 with the band-limiting rotation filter (47×47) and
  bilinearly sampled at the rotated grid; comparison = ``img`` filtered with the 11×11 pseudo-rotation filter;
  mask = product of both validity masks.

Public API: :func:`eq_psnr` (per-sample values for given or drawn transforms, optional global sums),
:func:`eq_metric` (the official 50k-style global metric) and the resampling helpers used by both.
All images are NHWC float32.
"""
import math
import weakref

import numpy as np
import tensorflow as tf

KINDS = ("int", "frac", "rot")
PSNR_CONST = 20.0 * math.log10(2.0)  # I_max = 2 (images live in [-1, 1])


# ----------------------------------------------------------------------------------------------------------------
# Small numeric helpers.

def _sinc(x):
    """Normalised sinc sin(πx)/(πx) (numpy, float64)."""
    return np.sinc(np.asarray(x, dtype=np.float64))


def _lanczos_window(x, a):
    """sinc(|x|/a) inside |x| < a, else 0."""
    x = np.abs(np.asarray(x, dtype=np.float64)) / a
    return np.where(x < 1, np.sinc(x), 0.0)


def rotation_matrix(angle):
    """3×3 float64 matrix [[cos a, sin a, 0], [−sin a, cos a, 0], [0, 0, 1]] (the original's convention)."""
    c, s = math.cos(float(angle)), math.sin(float(angle))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def translation_transform(tx, ty):
    """Input transform (inverse mapping) that moves the output content by (+tx, +ty) canvas units."""
    m = np.eye(3, dtype=np.float64)
    m[0, 2] = -float(tx)
    m[1, 2] = -float(ty)
    return m


def rotation_transform(angle):
    """Input transform that rotates the output content by ``angle`` radians: rotation_matrix(−angle)."""
    return rotation_matrix(-float(angle))


def _check_images(x, name="x"):
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4:
        raise ValueError(f"{name} must be NHWC [N, H, W, C], got shape {x.shape}")
    if not x.dtype.is_floating:
        raise TypeError(f"{name} must be floating point, got {x.dtype.name}")
    return tf.cast(x, tf.float32)


# ----------------------------------------------------------------------------------------------------------------
# EQ-T: integer translation.

def integer_offset(t, size):
    """Pixel offset used for a translation of ``t`` image sizes on a ``size``-pixel axis (float32 round-half-even)."""
    return int(np.round(np.float32(t) * np.float32(size)))


def apply_integer_translation(x, tx, ty):
    """Shifts NHWC images by round(tx·W), round(ty·H) pixels (content moves right/down), zero fill.

    Returns ``(ref, mask)``, both ``[N, H, W, C]``; mask is 1 exactly on pixels that received a shifted value.
    """
    x = _check_images(x)
    _, H, W, _ = x.shape
    ix, iy = integer_offset(tx, W), integer_offset(ty, H)
    ref = tf.zeros_like(x)
    mask = np.zeros([1, H, W, 1], np.float32)
    if abs(ix) < W and abs(iy) < H:
        # destination [max(i,0), n + min(i,0)), source shifted by −i.             # [N, h, w, C]
        src = x[:, max(-iy, 0):H + min(-iy, 0), max(-ix, 0):W + min(-ix, 0), :]
        ref = tf.pad(src, [[0, 0], [max(iy, 0), max(-iy, 0)], [max(ix, 0), max(-ix, 0)], [0, 0]])
        mask[:, max(iy, 0):H + min(iy, 0), max(ix, 0):W + min(ix, 0), :] = 1
    mask = tf.broadcast_to(tf.constant(mask), tf.shape(x))
    return ref, mask


# ----------------------------------------------------------------------------------------------------------------
# EQ-T_frac: fractional translation (Lanczos-3).

def lanczos_shift_taps(t, size, a=3):
    """(i, weights) for a shift of τ = t·size pixels: i = floor(τ), taps m ∈ {−(a−1) … a}, normalised Lanczos."""
    tau = np.float32(t) * np.float32(size)
    i = int(np.floor(tau))
    phi = float(tau - np.float32(i))
    m = np.arange(2 * a, dtype=np.float64) - (a - 1)
    w = _sinc(m - phi) * _sinc((m - phi) / a)
    return i, w / w.sum()


def _shift_axis(x, i, w, a, axis):
    """ref[p] = Σ_m w_m · x[p − i − m] along ``axis`` (1 = H, 2 = W), zero outside the image."""
    n = x.shape[axis]
    b = a - 1
    # Pad so that index q of xp holds x[q − P0]; x[p − i − m] = xp[p − i − m + P0].
    P0 = max(i + a, 0)
    P1 = max(b - i, 0)
    pads = [[0, 0]] * 4
    pads[axis] = [P0, P1]
    xp = tf.pad(x, pads)
    out = 0.0
    for k, wm in enumerate(w):
        m = k - b
        start = -i - m + P0
        sl = [slice(None)] * 4
        sl[axis] = slice(start, start + n)
        out = out + float(wm) * xp[tuple(sl)]
    return out


def apply_fractional_translation(x, tx, ty, a=3):
    """Lanczos-``a`` fractional shift of NHWC images by (tx·W, ty·H) pixels (docs/ALGORITHM.md §7.5, EQ-T_frac).

    Steps: τ = t·n, i = floor(τ), φ = τ − i; 2a taps m ∈ {−(a−1)…a} with weights L(m − φ)/Σ, L(x) = sinc(x)·sinc(x/a);
    applied along x then y with zero fill; values outside the region the original writes are zero.
    Returns ``(ref, mask)`` ``[N, H, W, C]``; mask = pixels whose taps all lie inside: [max(i+a, 0), n + min(i−a+1, 0)).
    """
    x = _check_images(x)
    _, H, W, _ = x.shape
    b = a - 1
    ix, wx = lanczos_shift_taps(tx, W, a)
    iy, wy = lanczos_shift_taps(ty, H, a)
    ref = _shift_axis(x, ix, wx, a, axis=2)                                          # [N, H, W, C]
    ref = _shift_axis(ref, iy, wy, a, axis=1)                                        # [N, H, W, C]
    # The original writes only the region [max(i−b, 0), n + min(i+a, 0)) and leaves zeros elsewhere.
    region = np.zeros([1, H, W, 1], np.float32)
    zx0, zx1, zy0, zy1 = max(ix - b, 0), W + min(ix + a, 0), max(iy - b, 0), H + min(iy + a, 0)
    if zx0 < zx1 and zy0 < zy1:
        region[:, zy0:zy1, zx0:zx1, :] = 1
    ref = ref * tf.constant(region)
    mask = np.zeros([1, H, W, 1], np.float32)
    mx0, mx1, my0, my1 = max(ix + a, 0), W + min(ix - b, 0), max(iy + a, 0), H + min(iy - b, 0)
    if mx0 < mx1 and my0 < my1:
        mask[:, my0:my1, mx0:mx1, :] = 1
    return ref, tf.broadcast_to(tf.constant(mask), tf.shape(x))


# ----------------------------------------------------------------------------------------------------------------
# EQ-R: band-limited rotation.

def construct_affine_bandlimit_filter(mat, a=3, amax=16, aflt=64, up=4, cutoff_in=1, cutoff_out=1):
    """2-D FIR filter band-limiting to the intersection of the input and the ``mat``-transformed spectrum (§7.5).

    Args:
      mat: 2×2 (or 3×3; the 2×2 block is used) matrix M; the output grid is (x_o, y_o) = M·(x_i, y_i).
      a: Lanczos window half width. amax: kernel half width in input samples. aflt: half width of the design grid.
      up: upsampling factor (number of polyphase components per axis). cutoff_in/out: sinc cutoffs.
    Steps: 1. fine tap grid τ_k = (k+1)/up − aflt (L = 2·aflt·up − 1 taps), rolled so τ = 0 is at index 0;
    2. f = circular conv of sinc(x_i)sinc(y_i) with sinc(x_o)sinc(y_o); 3. same for the Lanczos windows, multiply;
    4. centre, crop to (2·amax·up − 1)², normalise each of the up² polyphase components to sum 1/up².
    Returns a float64 numpy array ``[2·amax·up − 1, 2·amax·up − 1]``.
    """
    if not a <= amax < aflt:
        raise ValueError(f"need a <= amax < aflt, got a={a}, amax={amax}, aflt={aflt}")
    M = np.asarray(mat, dtype=np.float64)[:2, :2]
    L = aflt * up * 2 - 1
    taps = (np.arange(L, dtype=np.float64) + 1) / up - aflt
    taps = np.roll(taps, 1 - aflt * up)                                             # τ = 0 at index 0
    yi, xi = np.meshgrid(taps, taps, indexing="ij")                                  # rows = y, cols = x
    xo = M[0, 0] * xi + M[0, 1] * yi
    yo = M[1, 0] * xi + M[1, 1] * yi
    fi = _sinc(xi * cutoff_in) * _sinc(yi * cutoff_in)
    fo = _sinc(xo * cutoff_out) * _sinc(yo * cutoff_out)
    f = np.real(np.fft.ifft2(np.fft.fft2(fi) * np.fft.fft2(fo)))
    wi = _lanczos_window(xi, a) * _lanczos_window(yi, a)
    wo = _lanczos_window(xo, a) * _lanczos_window(yo, a)
    w = np.real(np.fft.ifft2(np.fft.fft2(wi) * np.fft.fft2(wo)))
    f = f * w
    c = (aflt - amax) * up
    f = np.roll(f, (aflt * up - 1, aflt * up - 1), axis=(0, 1))[c:-c, c:-c]          # [2·amax·up − 1]²
    f = np.pad(f, [[0, 1], [0, 1]]).reshape(amax * 2, up, amax * 2, up)
    f = f / f.sum(axis=(0, 2), keepdims=True) / (up ** 2)
    return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1]


def _per_channel(x):
    """[N, H, W, C] -> [N·C, H, W, 1]."""
    N, H, W, C = x.shape
    return tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, H, W, 1])


def _from_per_channel(y, N, C):
    """[N·C, H, W, 1] -> [N, H, W, C]."""
    _, H, W, _ = y.shape
    return tf.transpose(tf.reshape(y, [N, C, H, W]), [0, 2, 3, 1])


def upsample2d_polyphase(x, f, up, padding):
    """upfirdn2d(x, f, up=up, padding=...) with the upsample2d padding rule and gain up² (true convolution).

    Output per axis: n·up + 2·padding. Computed as up² small convolutions at the input rate (polyphase identity)
    followed by depth_to_space, which is ~up² times cheaper than filtering the zero-stuffed image.
    x: [N, H, W, C]; f: 2-D square numpy filter [F, F].
    """
    x = _check_images(x)
    N, H, W, C = x.shape
    f = np.asarray(f, dtype=np.float64)
    F = f.shape[0]
    p0 = padding + (F + up - 1) // 2
    p1 = padding + (F - up) // 2
    ff = f[::-1, ::-1] * (up * up)                     # convolution = correlation with the flipped filter; gain
    # out[j] = Σ_k ff[up·k − j + p0] x[k]; j = up·q + r, k = q + d  ->  tap ff[up·d − r + p0].
    dmin = min(-((p0 - r) // up) for r in range(up))  # ceil((r − p0)/up)
    dmax = max((F - 1 + r - p0) // up for r in range(up))
    D = dmax - dmin + 1
    ker = np.zeros([D, D, 1, up * up], np.float64)
    for ry in range(up):
        for rx in range(up):
            for dy in range(dmin, dmax + 1):
                ty = up * dy - ry + p0
                if not 0 <= ty < F:
                    continue
                for dx in range(dmin, dmax + 1):
                    tx = up * dx - rx + p0
                    if 0 <= tx < F:
                        ker[dy - dmin, dx - dmin, 0, ry * up + rx] = ff[ty, tx]
    outs = []
    for n in (H, W):
        Lout = n * up + p0 + p1 - F + 1
        Q = -(-Lout // up)
        outs.append((Lout, Q))
    (Ly, Qy), (Lx, Qx) = outs
    xc = _per_channel(x)                                                            # [N·C, H, W, 1]
    # Need x[q + d] for q ∈ [0, Q), d ∈ [dmin, dmax].
    xc = tf.pad(xc, [[0, 0], [max(-dmin, 0), max(Qy - 1 + dmax - (H - 1), 0)],
                     [max(-dmin, 0), max(Qx - 1 + dmax - (W - 1), 0)], [0, 0]])
    xc = xc[:, max(dmin, 0):, max(dmin, 0):, :]
    y = tf.nn.conv2d(xc, tf.constant(ker, tf.float32), strides=1, padding="VALID")  # [N·C, ≥Qy, ≥Qx, up²]
    y = y[:, :Qy, :Qx, :]
    y = tf.nn.depth_to_space(y, up)[:, :Ly, :Lx, :]                                # [N·C, Ly, Lx, 1]
    return _from_per_channel(y, N, C)


def filter2d_same(x, f):
    """Same-size 2-D convolution with zero padding (pads F//2 before, (F−1)//2 after) — upfirdn2d's filter2d."""
    x = _check_images(x)
    N, H, W, C = x.shape
    f = np.asarray(f, dtype=np.float64)
    F0, F1 = f.shape
    xc = _per_channel(x)
    xc = tf.pad(xc, [[0, 0], [F0 // 2, (F0 - 1) // 2], [F1 // 2, (F1 - 1) // 2], [0, 0]])
    ker = tf.constant(f[::-1, ::-1, None, None], tf.float32)
    return _from_per_channel(tf.nn.conv2d(xc, ker, strides=1, padding="VALID"), N, C)


def _affine_sample_coords(theta, H, W, Hin, Win):
    """affine_grid(align_corners=False) + grid_sample's unnormalisation -> input pixel coords (ix, iy) [H, W]."""
    xn = (2.0 * np.arange(W) + 1.0) / W - 1.0
    yn = (2.0 * np.arange(H) + 1.0) / H - 1.0
    gy, gx = np.meshgrid(yn, xn, indexing="ij")
    th = np.asarray(theta, np.float32).astype(np.float64)
    sx = th[0, 0] * gx + th[0, 1] * gy + th[0, 2]
    sy = th[1, 0] * gx + th[1, 1] * gy + th[1, 2]
    ix = ((sx + 1.0) * Win - 1.0) / 2.0
    iy = ((sy + 1.0) * Hin - 1.0) / 2.0
    return ix, iy


def _sample_bilinear(y, ix, iy):
    """Bilinear sampling of y [N, Hin, Win, C] at pixel coords (ix, iy) [H, W], zero outside."""
    N, Hin, Win, C = y.shape
    H, W = ix.shape
    x0 = np.floor(ix)
    y0 = np.floor(iy)
    fx = (ix - x0).astype(np.float32)
    fy = (iy - y0).astype(np.float32)
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    flat = tf.reshape(y, [N, Hin * Win, C])
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xx, yy = x0 + dx, y0 + dy
            valid = (xx >= 0) & (xx < Win) & (yy >= 0) & (yy < Hin)
            idx = np.where(valid, yy * Win + xx, 0).reshape(-1)
            wgt = (wx * wy * valid).astype(np.float32).reshape(1, H * W, 1)
            out = out + tf.gather(flat, idx, axis=1) * wgt
    return tf.reshape(out, [N, H, W, C])


def _sample_nearest_mask(valid_in, ix, iy):
    """Nearest (round-half-even) sampling of a 2-D numpy mask [Hin, Win] at (ix, iy), zero outside -> [H, W]."""
    Hin, Win = valid_in.shape
    xx = np.rint(ix).astype(np.int64)
    yy = np.rint(iy).astype(np.int64)
    ok = (xx >= 0) & (xx < Win) & (yy >= 0) & (yy < Hin)
    out = np.zeros(ix.shape, np.float32)
    out[ok] = valid_in[yy[ok], xx[ok]]
    return out


def apply_affine_transformation(x, mat, up=4, **filter_kwargs):
    """High-quality resampling of NHWC images by the 3×3 ``mat`` (sampling matrix, normalised coordinates).

    Steps: band-limit filter f for ``mat`` (:func:`construct_affine_bandlimit_filter`), p = F//2;
    y = upsample2d(x, f, up, padding=p)  [N, up·H + 2p, up·W + 2p, C]; θ = inverse(mat), translation ×2, plus
    1/(up·n) (half-sample phase of the even upsampler), rows scaled by n / (n + 2p/up); bilinear sampling of y
    (align_corners=False, zeros) on the H×W grid. Mask: ones on y except a border of 2p + 1, nearest-sampled.
    Returns ``(z, mask)``, both ``[N, H, W, C]``.
    """
    x = _check_images(x)
    N, H, W, C = x.shape
    mat = np.asarray(mat, dtype=np.float64)
    f = construct_affine_bandlimit_filter(mat, up=up, **filter_kwargs)
    p = f.shape[0] // 2
    theta = np.linalg.inv(mat.astype(np.float32).astype(np.float64))
    theta[:2, 2] *= 2
    theta[0, 2] += 1 / up / W
    theta[1, 2] += 1 / up / H
    theta[0, :] *= W / (W + p / up * 2)
    theta[1, :] *= H / (H + p / up * 2)
    y = upsample2d_polyphase(x, f, up=up, padding=p)                                # [N, Hin, Win, C]
    Hin, Win = y.shape[1], y.shape[2]
    ix, iy = _affine_sample_coords(theta[:2, :3], H, W, Hin, Win)
    z = _sample_bilinear(y, ix, iy)                                                 # [N, H, W, C]
    c = p * 2 + 1
    m_in = np.zeros([Hin, Win], np.float32)
    m_in[c:-c, c:-c] = 1
    m = _sample_nearest_mask(m_in, ix, iy)                                          # [H, W]
    return z, tf.broadcast_to(tf.constant(m[None, :, :, None]), tf.shape(x))


def apply_fractional_rotation(x, angle, a=3, **filter_kwargs):
    """Reference rotation R_α (47×47 filter at up = 4, bilinear resampling) and its mask."""
    return apply_affine_transformation(x, rotation_matrix(angle), a=a, amax=a * 2, **filter_kwargs)


def apply_fractional_pseudo_rotation(x, angle, a=3, **filter_kwargs):
    """Pseudo rotation R*_α: filter with the band-limit filter of Rot(−α) at up = 1 (11×11), no resampling."""
    x = _check_images(x)
    f = construct_affine_bandlimit_filter(rotation_matrix(-angle), a=a, amax=a * 2, up=1, **filter_kwargs)
    y = filter2d_same(x, f)
    c = f.shape[0] // 2
    _, H, W, _ = x.shape
    m = np.zeros([1, H, W, 1], np.float32)
    m[:, c:-c, c:-c, :] = 1
    return y, tf.broadcast_to(tf.constant(m), tf.shape(x))


# ----------------------------------------------------------------------------------------------------------------
# Generator plumbing.

def _read_transform(var):
    if hasattr(var, "numpy"):
        return np.array(var.numpy(), dtype=np.float64)
    return np.array(var, dtype=np.float64)


def _assign_transform(var, m):
    var.assign(np.asarray(m, dtype=np.float32))


def _input_transform_var(G):
    try:
        return G.synthesis.input.transform
    except AttributeError as e:
        raise ValueError("G has no synthesis.input.transform: equivariance metrics need a StyleGAN3 generator "
                         "or a StyleGAN2 one with input_type='fourier' (transformable input layer)") from e


# As the original: const noise (StyleGAN2 noise inputs are then the same in both images; StyleGAN3 ignores it), fp32.
_SYNTHESIS_KWARGS = dict(noise_mode="const", force_fp32=True)

_COMPILED = weakref.WeakKeyDictionary()  # G -> compiled synthesis (traced once per generator)


class _Runner:
    """Calls mapping/synthesis of G (synthesis compiled with tf.function, cached per generator)."""

    def __init__(self, G, compile=True):
        self.G = G
        if not compile:
            self.synthesis = lambda ws: G.synthesis(ws, **_SYNTHESIS_KWARGS)
            return
        try:
            fn = _COMPILED.get(G)
        except TypeError:  # not weak-referenceable
            fn = None
        if fn is None:
            try:
                ref = weakref.ref(G)                     # no strong reference from the cached value to its key
            except TypeError:
                ref = lambda: G                          # noqa: E731
            fn = tf.function(lambda ws: ref().synthesis(ws, **_SYNTHESIS_KWARGS), reduce_retracing=True)
            try:
                _COMPILED[G] = fn
            except TypeError:
                pass
        self.synthesis = fn

    def mapping(self, z, c):
        return self.G.mapping(tf.convert_to_tensor(z, tf.float32), tf.convert_to_tensor(c, tf.float32),
                              truncation_psi=1)


def _labels(G, n, c):
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    if c is None:
        if c_dim > 0:
            raise ValueError(f"G is conditional (c_dim={c_dim}): pass labels c [N, {c_dim}]")
        return np.zeros([n, 0], np.float32)
    c = np.asarray(c, np.float32)
    if c.shape != (n, c_dim):
        raise ValueError(f"c must have shape [N, c_dim] = [{n}, {c_dim}], got {c.shape}")
    return c


def _compare(kind, orig, img, param):
    """(ref, cmp, mask) for one transform; param = (tx, ty) or angle."""
    if kind == "int":
        ref, mask = apply_integer_translation(orig, param[0], param[1])
        return ref, img, mask
    if kind == "frac":
        ref, mask = apply_fractional_translation(orig, param[0], param[1])
        return ref, img, mask
    ref, ref_mask = apply_fractional_rotation(orig, param)
    pseudo, pseudo_mask = apply_fractional_pseudo_rotation(img, param)
    return ref, pseudo, ref_mask * pseudo_mask


def _transform_for(kind, param):
    if kind in ("int", "frac"):
        return translation_transform(param[0], param[1])
    return rotation_transform(param)


def draw_transform(kind, rng, img_resolution, translate_max=0.125, rotate_max=1.0):
    """Draws one transform like the original: t ~ U(−1/8, 1/8)² (rounded to the pixel grid for "int"),
    α ~ U(−π, π) for "rot". Returns (tx, ty) or α."""
    if kind in ("int", "frac"):
        t = (rng.rand(2) * 2 - 1) * translate_max
        if kind == "int":
            t = np.round(t * img_resolution) / img_resolution
        return (float(t[0]), float(t[1]))
    if kind == "rot":
        return float((rng.rand() * 2 - 1) * (rotate_max * np.pi))
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _eq_batch(runner, G, tvar, ws, kind, param):
    """Per-sample (S1, S2) for one batch sharing one transform."""
    _assign_transform(tvar, np.eye(3))
    orig = runner.synthesis(ws)                                                    # [n, R, R, C]
    _assign_transform(tvar, _transform_for(kind, param))
    img = runner.synthesis(ws)                                                     # [n, R, R, C]
    ref, cmp, mask = _compare(kind, tf.cast(orig, tf.float32), tf.cast(img, tf.float32), param)
    d = (ref.numpy().astype(np.float64) - cmp.numpy().astype(np.float64)) ** 2
    m = mask.numpy().astype(np.float64)
    return (d * m).sum(axis=(1, 2, 3)), m.sum(axis=(1, 2, 3))


def psnr_from_sums(s1, s2):
    """PSNR (dB) = 20·log10 2 − 10·log10(S1/S2); inf for S1 = 0, nan when S2 = 0."""
    s1 = np.asarray(s1, np.float64)
    s2 = np.asarray(s2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return PSNR_CONST - 10.0 * np.log10(s1 / s2)


def eq_psnr(G, z, kind, translate=None, angle=None, batch_size=4, c=None, seed=0, return_sums=False,
            compile=True):
    """Per-sample equivariance PSNR (dB) of generator ``G`` for latents ``z`` (docs/ALGORITHM.md §7.5).

    Args:
      G: generator with ``mapping``, ``synthesis`` and ``synthesis.input.transform`` (3×3 variable).
      z: ``[N, z_dim]`` latents. c: ``[N, c_dim]`` labels (None for unconditional G).
      kind: "int" (EQ-T), "frac" (EQ-T_frac) or "rot" (EQ-R).
      translate: ``[N, 2]`` translations (fraction of image size, x then y) for "int"/"frac"; for "int" they are
        snapped to the pixel grid first, t <- round(t·res)/res, as the original does with its drawn t.
      angle: ``[N]`` rotation angles in radians for "rot".
      When translate/angle is None, one transform per batch of ``batch_size`` is drawn like the original
      (:func:`draw_transform`, numpy RandomState(seed)).
      return_sums: also return per-sample S1 = Σ(ref − img)²·mask and S2 = Σ mask (float64) so the global
        metric 20·log10 2 − 10·log10(ΣS1/ΣS2) can be formed.
    Returns numpy ``[N]`` PSNR per sample (or ``(psnr, s1, s2)``). ``G.synthesis.input.transform`` is restored.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    z = np.asarray(z, np.float32)
    z_dim = int(G.z_dim)
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ValueError(f"z must have shape [N, z_dim={z_dim}], got {z.shape}")
    N = z.shape[0]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    c = _labels(G, N, c)
    res = int(G.img_resolution)
    params = None
    if kind in ("int", "frac"):
        if angle is not None:
            raise ValueError(f"angle is only used with kind='rot', got kind={kind!r}")
        if translate is not None:
            translate = np.asarray(translate, np.float64)
            if translate.shape != (N, 2):
                raise ValueError(f"translate must have shape [N, 2] = [{N}, 2], got {translate.shape}")
            if kind == "int":
                # the original snaps the translation to the pixel grid before using it (idempotent on snapped t)
                t32 = translate.astype(np.float32)
                translate = (np.round(t32 * np.float32(res)) / np.float32(res)).astype(np.float64)
            params = [(float(a), float(b)) for a, b in translate]
    else:
        if translate is not None:
            raise ValueError("translate is only used with kind='int' or 'frac'")
        if angle is not None:
            angle = np.asarray(angle, np.float64)
            if angle.shape != (N,):
                raise ValueError(f"angle must have shape [N] = [{N}], got {angle.shape}")
            params = [float(a) for a in angle]
    if params is None:
        rng = np.random.RandomState(seed)
        params = []
        for b0 in range(0, N, batch_size):
            p = draw_transform(kind, rng, res)
            params += [p] * min(batch_size, N - b0)

    tvar = _input_transform_var(G)
    saved = _read_transform(tvar)
    runner = _Runner(G, compile=compile)
    s1 = np.zeros([N], np.float64)
    s2 = np.zeros([N], np.float64)
    try:
        for b0 in range(0, N, batch_size):
            b1 = min(b0 + batch_size, N)
            ws = runner.mapping(z[b0:b1], c[b0:b1])
            # Group consecutive samples sharing a transform into one synthesis call.
            i = b0
            while i < b1:
                j = i + 1
                while j < b1 and params[j] == params[i]:
                    j += 1
                a1, a2 = _eq_batch(runner, G, tvar, ws[i - b0:j - b0], kind, params[i])
                s1[i:j] = a1
                s2[i:j] = a2
                i = j
    finally:
        _assign_transform(tvar, saved)
    psnr = psnr_from_sums(s1, s2)
    return (psnr, s1, s2) if return_sums else psnr


METRIC_KINDS = {"eqt50k_int": "int", "eqt50k_frac": "frac", "eqr50k": "rot"}


def eq_metric(G, kind, num_samples=50000, batch_size=4, seed=0, c_sampler=None, progress=None, compile=True):
    """The official global metric: fresh z per batch, one drawn transform per batch, PSNR of ΣS1/ΣS2.

    Args:
      kind: "int" | "frac" | "rot" (or a metric name eqt50k_int / eqt50k_frac / eqr50k).
      c_sampler: callable(rng, n) -> labels [n, c_dim] for conditional G (the original draws dataset labels).
      progress: optional callable(done, total) called after each batch.
    Returns dict(psnr=global dB, per_sample_mean=mean of per-sample dB, num_samples, kind, seed).
    """
    kind = METRIC_KINDS.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or {tuple(METRIC_KINDS)}, got {kind!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.RandomState(seed)
    res = int(G.img_resolution)
    tvar = _input_transform_var(G)
    saved = _read_transform(tvar)
    runner = _Runner(G, compile=compile)
    S1 = S2 = 0.0
    per = []
    done = 0
    try:
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            z = rng.randn(n, int(G.z_dim)).astype(np.float32)
            c = c_sampler(rng, n) if c_sampler is not None else _labels(G, n, None)
            p = draw_transform(kind, rng, res)
            ws = runner.mapping(z, c)
            a1, a2 = _eq_batch(runner, G, tvar, ws, kind, p)
            S1 += a1.sum()
            S2 += a2.sum()
            per.append(psnr_from_sums(a1, a2))
            done += n
            if progress is not None:
                progress(done, num_samples)
    finally:
        _assign_transform(tvar, saved)
    per = np.concatenate(per)
    return dict(psnr=float(psnr_from_sums(S1, S2)), per_sample_mean=float(np.mean(per)), num_samples=done,
                kind=kind, seed=seed, s1=float(S1), s2=float(S2))
