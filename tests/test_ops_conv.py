"""conv2d_resample and modulated_conv2d: parity, numpy references, gradients, XLA, errors."""

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.ops import conv2d_resample, modulated_conv2d, modulated_conv2d_grouped, setup_filter
from test_ops_upfirdn2d import np_upfirdn2d

FILE = "ops_conv2d_resample.npz"


def _cases():
    return parity.case_names(FILE)


def _w_tf(w_oihw):
    return np.transpose(w_oihw, (2, 3, 1, 0))  # [out, in, kh, kw] -> [kh, kw, in, out]


# ---------------------------------------------------------------------------------------------------------------
# conv2d_resample

@pytest.mark.parametrize("case", _cases())
def test_conv2d_resample_parity(case):
    z = parity.load(FILE)
    p = parity.meta(z, case + "/params")
    x = tf.constant(parity.nchw_to_nhwc(z[case + "/x"]))
    w = tf.constant(_w_tf(z[case + "/w"]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        y = conv2d_resample(x, w, z[case + "/f"], up=p["up"], down=p["down"], padding=p["padding"],
                            groups=p["groups"], flip_weight=p["flip_weight"])
        loss = tf.reduce_sum(y * parity.nchw_to_nhwc(z[case + "/gy"]))
    y64 = parity.nchw_to_nhwc(z[case + "/y_f64"])
    scale = max(1.0, float(np.abs(y64).max()))
    parity.assert_close(y.numpy(), parity.nchw_to_nhwc(z[case + "/y"]), atol=4e-7 * scale,
                        name=f"conv2d_resample/{case}/y")
    err_orig = float(np.abs(z[case + "/y"] - z[case + "/y_f64"]).max())
    parity.assert_close(y.numpy(), y64, atol=2 * err_orig + 1e-7 * scale, name=f"conv2d_resample/{case}/y_vs_f64")
    for key, got, ref in [("dx", tape.gradient(loss, x), parity.nchw_to_nhwc(z[case + "/dx"])),
                          ("dw", tape.gradient(loss, w), _w_tf(z[case + "/dw"]))]:
        # dx / dw are sums over many products: a few float32 ulps of their magnitude.
        parity.assert_close(got.numpy(), ref, atol=1e-6 * max(1.0, float(np.abs(ref).max())),
                            name=f"conv2d_resample/{case}/{key}")


def np_conv_valid(x, w, groups=1, flip_weight=True):
    """Valid correlation (convolution if not flip_weight). x [N, H, W, I], w [kh, kw, I/groups, O]."""
    if not flip_weight:
        w = w[::-1, ::-1]
    kh, kw, gi, o = w.shape
    n, h, wd, i = x.shape
    go = o // groups
    out = np.zeros([n, h - kh + 1, wd - kw + 1, o])
    for g in range(groups):
        xs = x[..., g * gi:(g + 1) * gi]
        for u in range(kh):
            for v in range(kw):
                out[..., g * go:(g + 1) * go] += np.einsum(
                    "nhwi,io->nhwo", xs[:, u:u + out.shape[1], v:v + out.shape[2]], w[u, v, :, g * go:(g + 1) * go])
    return out


def np_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight):
    """The generic definition: upfirdn2d (zero-stuff, pad, FIR gain up^2) -> valid conv -> FIR decimation."""
    fw = 1 if f is None else f.shape[-1]
    fh = 1 if f is None else f.shape[0]
    p = [padding] * 4 if np.isscalar(padding) else list(padding)
    if len(p) == 2:
        p = [p[0], p[0], p[1], p[1]]
    px0, px1, py0, py1 = p
    if up > 1:
        px0 += (fw + up - 1) // 2; px1 += (fw - up) // 2; py0 += (fh + up - 1) // 2; py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2; px1 += (fw - down) // 2; py0 += (fh - down + 1) // 2; py1 += (fh - down) // 2
    t = np_upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    t = np_conv_valid(t, w, groups, flip_weight)
    if down > 1:
        t = np_upfirdn2d(t, f, down=down)
    return t


_CONV_CONFIGS = [
    # k, up, down, padding, groups, flip_weight
    (3, 1, 2, 1, 1, True),        # D conv1 (strided path)
    (1, 1, 2, 0, 1, True),        # D skip (1x1 down path)
    (3, 2, 1, 1, 1, False),       # SG2 up (transposed path)
    (3, 2, 1, 1, 1, True),
    (1, 2, 1, 0, 1, True),        # 1x1 up path
    (3, 2, 2, 1, 2, True),        # up + down, groups
    (3, 1, 1, [2, 0, 1, 1], 2, False),  # generic fallback (asymmetric padding), groups
    (4, 2, 1, [0, 1, 2, 0], 1, True),   # even kernel, asymmetric padding, up
]


@pytest.mark.parametrize("i", range(len(_CONV_CONFIGS)))
def test_conv2d_resample_against_numpy(i):
    k, up, down, pad, groups, flip_w = _CONV_CONFIGS[i]
    rng = np.random.default_rng(20 + i)
    x = rng.standard_normal([2, 8, 9, 4])
    w = rng.standard_normal([k, k + (1 if k == 4 else 0), 4 // groups, 6])
    f = setup_filter([1, 3, 3, 1]).numpy().astype(np.float64)
    y = conv2d_resample(tf.constant(x), tf.constant(w), f.astype(np.float32), up=up, down=down, padding=pad,
                        groups=groups, flip_weight=flip_w)
    ref = np_conv2d_resample(x, w, f, up, down, pad, groups, flip_w)
    parity.assert_close(y.numpy(), ref, atol=1e-11 * max(1, float(np.abs(ref).max())), name=f"conv2d_resample/numpy/{i}")


def _fd(fun, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp = x.copy(); xp[idx] += eps
        xm = x.copy(); xm[idx] -= eps
        g[idx] = (fun(xp) - fun(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("up, down, flip_w", [(1, 2, True), (2, 1, False)])
def test_conv2d_resample_gradients(up, down, flip_w):
    """First-order (x and w) and second-order (gradient-norm, as R1) gradients vs finite differences."""
    rng = np.random.default_rng(30 + up)
    x = rng.standard_normal([1, 4, 4, 2])
    w = rng.standard_normal([3, 3, 2, 2])
    f = setup_filter([1, 3, 3, 1])
    kw = dict(up=up, down=down, padding=1, flip_weight=flip_w)
    gy = rng.standard_normal(conv2d_resample(x, w, f, **kw).shape)
    loss = lambda a, b: float(tf.reduce_sum(conv2d_resample(tf.constant(a), tf.constant(b), f, **kw) * gy))
    xt, wt = tf.constant(x), tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch([xt, wt])
        l = tf.reduce_sum(conv2d_resample(xt, wt, f, **kw) * gy)
    gx, gw = tape.gradient(l, [xt, wt])
    parity.assert_close(gx.numpy(), _fd(lambda a: loss(a, w), x), atol=1e-7, name="conv2d_resample/fd_dx")
    parity.assert_close(gw.numpy(), _fd(lambda b: loss(x, b), w), atol=1e-7, name="conv2d_resample/fd_dw")

    def r1(a):
        at = tf.constant(a)
        with tf.GradientTape() as t2:
            t2.watch(at)
            with tf.GradientTape() as t1:
                t1.watch(at)
                out = tf.reduce_sum(tf.nn.softplus(conv2d_resample(at, wt, f, **kw)))
            g = t1.gradient(out, at)
            n = tf.reduce_sum(g * g)
        return float(n), t2.gradient(n, at)

    _, gg = r1(x)
    fd = _fd(lambda a: r1(a)[0], x)
    # float64 central differences of a gradient norm: ~1e-9 relative accuracy at eps = 1e-6.
    parity.assert_close(gg.numpy(), fd, atol=1e-8 * max(1.0, float(np.abs(fd).max())) + 1e-7,
                        name="conv2d_resample/second_order")


def test_conv2d_resample_jit_matches_eager():
    rng = np.random.default_rng(40)
    x = tf.constant(rng.standard_normal([2, 8, 8, 4]), tf.float32)
    w = tf.constant(rng.standard_normal([3, 3, 4, 5]), tf.float32)
    f = setup_filter([1, 3, 3, 1])
    fn = lambda a: (conv2d_resample(a, w, f, down=2, padding=1), conv2d_resample(a, w, f, up=2, padding=1,
                                                                                  flip_weight=False))
    ref = fn(x)
    out = tf.function(fn, jit_compile=True)(x)
    for a, b in zip(out, ref):
        parity.assert_close(a.numpy(), b.numpy(), atol=1e-6 * float(np.abs(b.numpy()).max()), name="conv2d_resample/jit")


def test_conv2d_resample_errors():
    x = tf.zeros([1, 8, 8, 4])
    w = tf.zeros([3, 3, 4, 6])
    with pytest.raises(ValueError, match="x has 4 channels but w .* expects 8"):
        conv2d_resample(x, tf.zeros([3, 3, 8, 6]))
    with pytest.raises(ValueError, match="not divisible by groups=4"):
        conv2d_resample(x, tf.zeros([3, 3, 1, 6]), groups=4)
    with pytest.raises(ValueError, match="up must be an int >= 1"):
        conv2d_resample(x, w, up=0)
    with pytest.raises(ValueError, match="down must be an int >= 1"):
        conv2d_resample(x, w, down=[2, 2])
    with pytest.raises(ValueError, match="rank 4"):
        conv2d_resample(x, tf.zeros([3, 4, 6]))
    with pytest.raises(TypeError, match="floating"):
        conv2d_resample(tf.zeros([1, 8, 8, 4], tf.int32), w)


# ---------------------------------------------------------------------------------------------------------------
# modulated_conv2d

def np_modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None):
    """Per-sample numpy loop of docs/ALGORITHM.md §1.6 (float64)."""
    x, w, s = [np.asarray(a, np.float64) for a in (x, w, s)]
    n, _, _, cin = x.shape
    if demodulate:
        w = w / np.sqrt(np.mean(w ** 2, axis=(0, 1, 2), keepdims=True))
        s = s / np.sqrt(np.mean(s ** 2))
    g = None if input_gain is None else np.broadcast_to(np.asarray(input_gain, np.float64), [n, cin])
    out = []
    for i in range(n):
        wn = w * s[i][None, None, :, None]
        if demodulate:
            wn = wn / np.sqrt(np.sum(wn ** 2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        if g is not None:
            wn = wn * g[i][None, None, :, None]
        xp = np.pad(x[i:i + 1], [[0, 0], [padding, padding], [padding, padding], [0, 0]])
        out.append(np_conv_valid(xp, wn)[0])
    return np.stack(out)


_GAINS = {
    "none": lambda rng, n, c: None,
    "scalar": lambda rng, n, c: 0.7,
    "per_channel": lambda rng, n, c: rng.uniform(0.5, 2.0, [c]),
    "per_sample": lambda rng, n, c: rng.uniform(0.5, 2.0, [n, c]),
}


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("gain_kind", sorted(_GAINS))
def test_modulated_conv2d_forms_agree(demodulate, gain_kind):
    rng = np.random.default_rng(hash((demodulate, gain_kind)) % 2 ** 32)
    n, cin, cout, k, pad = 3, 5, 4, 3, 2
    x = rng.standard_normal([n, 7, 6, cin])
    w = rng.standard_normal([k, k, cin, cout]) * 3.0   # the pre-normalisation matters for these scales
    s = rng.standard_normal([n, cin]) * 5.0 + 1.0
    g = _GAINS[gain_kind](rng, n, cin)
    ref = np_modulated_conv2d(x, w, s, demodulate, pad, g)
    # float64: both forms equal the numpy loop to rounding.
    for fn in (modulated_conv2d, modulated_conv2d_grouped):
        if fn is modulated_conv2d_grouped:
            continue  # grouped conv has no float64 CPU kernel; checked in float32 below
        y64 = fn(tf.constant(x), tf.constant(w), tf.constant(s), demodulate=demodulate, padding=pad, input_gain=g)
        parity.assert_close(y64.numpy(), ref, atol=1e-10 * float(np.abs(ref).max()), name="modconv/f64_vs_numpy")
    # float32: efficient and grouped forms agree with each other and with the numpy loop.
    x32, w32, s32 = [a.astype(np.float32) for a in (x, w, s)]
    g32 = None if g is None else np.asarray(g, np.float32)
    a = modulated_conv2d(x32, w32, s32, demodulate=demodulate, padding=pad, input_gain=g32).numpy()
    b = modulated_conv2d_grouped(x32, w32, s32, demodulate=demodulate, padding=pad, input_gain=g32).numpy()
    scale = float(np.abs(ref).max())
    parity.assert_close(a, b, atol=2e-6 * scale, name=f"modconv/{demodulate}/{gain_kind}/efficient_vs_grouped")
    parity.assert_close(a, ref, atol=2e-6 * scale, name=f"modconv/{demodulate}/{gain_kind}/efficient_vs_numpy")
    parity.assert_close(b, ref, atol=2e-6 * scale, name=f"modconv/{demodulate}/{gain_kind}/grouped_vs_numpy")


def test_modulated_conv2d_gradient_and_jit():
    rng = np.random.default_rng(50)
    x = rng.standard_normal([2, 4, 4, 3])
    w = rng.standard_normal([3, 3, 3, 2])
    s = rng.standard_normal([2, 3]) + 1
    gy = rng.standard_normal([2, 6, 6, 2])
    loss = lambda a, b: float(tf.reduce_sum(modulated_conv2d(tf.constant(a), tf.constant(w), tf.constant(b),
                                                             padding=2, input_gain=0.8) * gy))
    xt, st = tf.constant(x), tf.constant(s)
    with tf.GradientTape() as tape:
        tape.watch([xt, st])
        l = tf.reduce_sum(modulated_conv2d(xt, tf.constant(w), st, padding=2, input_gain=0.8) * gy)
    gx, gs = tape.gradient(l, [xt, st])
    parity.assert_close(gx.numpy(), _fd(lambda a: loss(a, s), x), atol=1e-7, name="modconv/fd_dx")
    parity.assert_close(gs.numpy(), _fd(lambda b: loss(x, b), s), atol=1e-7, name="modconv/fd_ds")
    x32 = tf.constant(x, tf.float32)
    fn = lambda a: modulated_conv2d(a, w.astype(np.float32), s.astype(np.float32), padding=2)
    ref = fn(x32).numpy()
    parity.assert_close(tf.function(fn, jit_compile=True)(x32).numpy(), ref, atol=1e-6 * float(np.abs(ref).max()),
                        name="modconv/jit")


def test_modulated_conv2d_errors():
    x = tf.zeros([2, 5, 5, 3])
    w = tf.zeros([3, 3, 3, 4])
    s = tf.ones([2, 3])
    with pytest.raises(ValueError, match="channel mismatch"):
        modulated_conv2d(x, tf.zeros([3, 3, 2, 4]), s)
    with pytest.raises(ValueError, match="batch of x"):
        modulated_conv2d(x, w, tf.ones([3, 3]))
    with pytest.raises(ValueError, match="input_gain must be"):
        modulated_conv2d(x, w, s, input_gain=np.ones([4], np.float32))
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        modulated_conv2d(x, w, s, padding=-1)
    with pytest.raises(ValueError, match="rank 2"):
        modulated_conv2d(x, w, tf.ones([2, 3, 1]))


@pytest.mark.parametrize("dtype, tol", [(tf.float16, 4e-3), (tf.bfloat16, 3e-2)])
def test_low_precision_conv_ops(dtype, tol):
    """float16 / bfloat16 activations run and stay close to the float32 result (weights/styles stay float32)."""
    rng = np.random.default_rng(60)
    x = rng.standard_normal([2, 8, 8, 4]).astype(np.float32)
    w = (rng.standard_normal([3, 3, 4, 5]) / 6).astype(np.float32)
    s = (rng.standard_normal([2, 4]) + 1).astype(np.float32)
    f = setup_filter([1, 3, 3, 1])
    pairs = [
        (lambda a: conv2d_resample(a, w, f, down=2, padding=1)),
        (lambda a: conv2d_resample(a, w, f, up=2, padding=1, flip_weight=False)),
        (lambda a: modulated_conv2d(a, w, s, padding=1, input_gain=0.9)),
    ]
    for i, fn in enumerate(pairs):
        ref = fn(tf.constant(x)).numpy()
        y = fn(tf.cast(x, dtype))
        assert y.dtype == dtype
        err = float(np.abs(tf.cast(y, tf.float32).numpy() - ref).max())
        assert err <= tol * 4 * float(np.abs(ref).max()), (i, err)
