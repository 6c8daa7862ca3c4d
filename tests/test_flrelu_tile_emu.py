"""The fused, tiled CUDA filtered_lrelu algorithm (custom_ops/filtered_lrelu_tile.h), run on the CPU.

The CUDA kernel (filtered_lrelu_gpu.cu.cc) and the test ops ``AfganFilteredLreluTileEmu`` /
``AfganFilteredLreluGradTileEmu`` (filtered_lrelu_emu_op.cc) execute the same phase functions: the emulator
loops over thread blocks, phases and thread indices sequentially, with a NaN-filled host buffer as shared
memory. These tests check that algorithm against the pure-TF reference op, the parity files of the original,
and the CPU kernel (the 2-bit code must be the same), for forward, backward and the backward's adjoint.
"""

import numpy as np
import pytest
import tensorflow as tf

import parity
from afgan_tf.ops import _custom_ops
from afgan_tf.ops.filtered_lrelu import filtered_lrelu
from afgan_tf.ops.upfirdn2d import upfirdn2d


def _lib():
    parity.need_op_library("filtered_lrelu")
    return _custom_ops._require()


def _xy(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _attrs(up, down, pad, gain, slope, flip):
    (upx, upy), (downx, downy) = _xy(up), _xy(down)
    return dict(upx=upx, upy=upy, downx=downx, downy=downy, px0=pad[0], px1=pad[1], py0=pad[2], py1=pad[3],
                gain=float(gain), slope=float(slope), flip_filter=bool(flip))


def _f(f):
    return tf.ones([1], tf.float32) if f is None else tf.constant(np.asarray(f, np.float32))


def emu_forward(x, fu, fd, b, up, down, pad, gain, slope, clamp, flip, **tiling):
    x = tf.convert_to_tensor(x)
    b = tf.zeros([0], x.dtype) if b is None else tf.cast(b, x.dtype)
    return _lib().afgan_filtered_lrelu_tile_emu(x, _f(fu), _f(fd), b, clamp=-1.0 if clamp is None else float(clamp),
                                                **_attrs(up, down, pad, gain, slope, flip), **tiling)


def emu_grad(dy, fu, fd, code, x_shape, up, down, pad, gain, slope, flip, adjoint=False, **tiling):
    return _lib().afgan_filtered_lrelu_grad_tile_emu(dy, _f(fu), _f(fd), code, tf.constant(x_shape, tf.int32),
                                                     adjoint=adjoint, **_attrs(up, down, pad, gain, slope, flip),
                                                     **tiling)


def _tol(ref, rel=5e-6, floor=1e-7):
    return rel * float(np.abs(ref).max()) + floor


def _kaiser_like(n, rng):
    f = np.sinc((np.arange(n) - (n - 1) / 2) / 2) * np.kaiser(n, 6.0)
    return (f / f.sum() + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _unpack(code, c):
    return np.stack([(code[..., ch // 4] >> (2 * (ch % 4))) & 3 for ch in range(c)], axis=-1)


CASES = [
    # (N, H, W, C, fu, fd, up, down, padding, gain, slope, clamp, flip, bias)
    (1, 11, 13, 3, (12,), (12,), 2, 2, [9, 8, 9, 8], np.sqrt(2), 0.2, None, False, True),   # odd sizes, batch 1
    (2, 14, 13, 37, (24,), (12,), 4, 2, [-2, -5, -2, -5], np.sqrt(2), 0.2, 0.4, False, True),  # up4, neg. pad, clamp
    (1, 10, 8, 20, (12,), (12,), 2, 4, [7, 8, 6, 9], 1.3, 0.1, None, False, True),     # up2/down4 (backward shape)
    (2, 8, 8, 5, (12,), (12, 12), 2, 2, [11, 10, 11, 10], np.sqrt(2), 0.2, 0.6, False, True),  # 2-D fd (config R)
    (1, 7, 9, 6, (5, 6), (8,), 2, 2, [3, 2, 1, 4], 0.9, 0.05, None, True, False),       # 2-D fu, flip, no bias
    (2, 6, 7, 130, None, None, 1, 1, [0, 0, 0, 0], 1.0, 1.0, 0.3, False, True),        # ToRGB-like, many channels
    (1, 12, 10, 9, (24,), (24,), 4, 4, [20, 21, 19, 22], np.sqrt(2), 0.2, None, False, True),  # up4/down4
    (1, 9, 11, 4, None, (12,), 1, 2, [5, 4, 6, 5], 1.1, 0.25, 1.0, False, True),       # fu identity, down only
    (1, 13, 12, 7, (12,), (6,), [2, 1], [1, 2], [6, 5, 5, 4], 1.2, 0.2, 0.8, False, True),  # per-axis factors
    (1, 5, 6, 8, (4, 4), (4, 4), 2, 2, [2, 1, 1, 2], 1.0, 0.3, None, False, True),     # 2-D fu and fd
]


def _case_data(case, seed):
    n, h, w, c, fus, fds, up, down, pad, gain, slope, clamp, flip, has_b = CASES[case]
    rng = np.random.default_rng(seed + case)
    x = rng.standard_normal([n, h, w, c]).astype(np.float32)
    b = rng.standard_normal([c]).astype(np.float32) if has_b else None
    mk = lambda s: None if s is None else (_kaiser_like(s[0], rng) if len(s) == 1 else
                                          (rng.standard_normal(s) / np.prod(s) + 1.0 / np.prod(s)).astype(np.float32))
    kw = dict(up=up, down=down, pad=pad, gain=gain, slope=slope, flip=flip)
    return x, b, mk(fus), mk(fds), clamp, kw


def _ref_fwd_bwd(x, b, fu, fd, clamp, kw, gy):
    xt = tf.constant(x)
    inputs = [xt] + ([tf.constant(b)] if b is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = filtered_lrelu(inputs[0], fu, fd, inputs[1] if b is not None else None, up=kw["up"], down=kw["down"],
                           padding=kw["pad"], gain=kw["gain"], slope=kw["slope"], clamp=clamp,
                           flip_filter=kw["flip"], impl="ref")
        loss = tf.reduce_sum(y * gy)
    return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, inputs)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_tile_emulator_vs_reference(case):
    """Forward y, gradient dx (and db = sum dx) of the tiled algorithm equal the reference op's."""
    x, b, fu, fd, clamp, kw = _case_data(case, 10)
    y, code = emu_forward(x, fu, fd, b, clamp=clamp, **kw)
    gy = np.random.default_rng(99).standard_normal(y.shape).astype(np.float32)
    ref = _ref_fwd_bwd(x, b, fu, fd, clamp, kw, gy)
    dx = emu_grad(tf.constant(gy), fu, fd, code, list(x.shape), **kw).numpy()
    got = [y.numpy(), dx] + ([dx.sum(axis=(0, 1, 2))] if b is not None else [])
    for name, g, r in zip(("y", "dx", "db"), got, ref):
        parity.assert_close(g, r, atol=_tol(r), name=f"tile_emu_vs_ref/{case}/{name}")
    if clamp is not None:  # the case must exercise the clamp code
        assert np.any(_unpack(code.numpy(), x.shape[-1]) == 2)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_tile_emulator_code_equals_cpu_kernel(case):
    """The 2-bit code written by the tiles equals the CPU kernel's (up to float rounding at the thresholds)."""
    lib = _lib()
    x, b, fu, fd, clamp, kw = _case_data(case, 20)
    _, code_e = emu_forward(x, fu, fd, b, clamp=clamp, **kw)
    bb = tf.zeros([0]) if b is None else tf.constant(b)
    _, code_c = lib.afgan_filtered_lrelu(tf.constant(x), _f(fu), _f(fd), bb, clamp=-1.0 if clamp is None else float(clamp),
                                         **_attrs(kw["up"], kw["down"], kw["pad"], kw["gain"], kw["slope"], kw["flip"]))
    code_e, code_c = code_e.numpy(), code_c.numpy()
    assert code_e.shape == code_c.shape
    c = x.shape[-1]
    ge, gc = _unpack(code_e, c), _unpack(code_c, c)
    # high-rate intermediate of the reference, to excuse samples within rounding of a threshold
    t = upfirdn2d(tf.constant(x) + (0 if b is None else b), fu, up=kw["up"], padding=kw["pad"],
                  gain=int(np.prod(_xy(kw["up"]))), flip_filter=kw["flip"], impl="ref").numpy() * kw["gain"]
    t = t[:, :code_e.shape[1], :code_e.shape[2]]
    v = np.where(t < 0, t * kw["slope"], t)
    near = (np.abs(t) < 1e-5) | ((np.abs(np.abs(v) - clamp) < 1e-5) if clamp is not None else False)
    bad = (ge != gc) & ~near
    assert not bad.any(), f"{bad.sum()} code mismatches of {bad.size}"
    assert np.mean(ge == gc) > 0.999
    # the unused bits of the last byte stay 0
    if c % 4:
        assert np.all(code_e[..., -1] >> (2 * (c % 4)) == 0)


def _random_config(rng):
    """A random valid configuration (per-axis factors 1/2/4, filter sizes, signed paddings, separable / 2-D)."""
    while True:
        up, down = [int(v) for v in rng.choice([1, 2, 4], 2)], [int(v) for v in rng.choice([1, 2, 4], 2)]
        sep_u, sep_d = rng.random() < 0.7, rng.random() < 0.7
        fu_s = (int(rng.integers(1, 17)),) if sep_u else tuple(int(v) for v in rng.integers(1, 9, 2))
        fd_s = (int(rng.integers(1, 13)),) if sep_d else tuple(int(v) for v in rng.integers(1, 9, 2))
        fuw, fuh = (fu_s[0], fu_s[0]) if sep_u else (fu_s[1], fu_s[0])
        fdw, fdh = (fd_s[0], fd_s[0]) if sep_d else (fd_s[1], fd_s[0])
        h, w, c = int(rng.integers(2, 11)), int(rng.integers(2, 11)), int(rng.integers(1, 23))
        pad = [int(v) for v in rng.integers(-3, 14, 4)]
        oh = (h * up[1] + pad[2] + pad[3] - (fuh - 1) - (fdh - 1) + down[1] - 1) // down[1]
        ow = (w * up[0] + pad[0] + pad[1] - (fuw - 1) - (fdw - 1) + down[0] - 1) // down[0]
        hi_h, hi_w = h * up[1] + pad[2] + pad[3] - fuh + 1, w * up[0] + pad[0] + pad[1] - fuw + 1
        if oh >= 1 and ow >= 1 and hi_h >= fdh and hi_w >= fdw:
            mk = lambda s: (rng.standard_normal(s) * 0.3 + 1.0 / np.prod(s)).astype(np.float32)
            return dict(shape=[int(rng.integers(1, 3)), h, w, c], fu=mk(fu_s), fd=mk(fd_s), up=up, down=down, pad=pad,
                        gain=float(rng.uniform(0.5, 2)), slope=float(rng.uniform(0, 0.5)),
                        clamp=None if rng.random() < 0.5 else float(rng.uniform(0.2, 1.0)), flip=bool(rng.random() < 0.5))


@pytest.mark.parametrize("seed", range(12))
def test_tile_emulator_random_configs_vs_cpu_kernel(seed):
    """Random configurations and random tilings: y, code, dx and the gradient's adjoint equal the CPU kernel's
    (an independent design: precomputed tap tables, full-width row tiles)."""
    lib = _lib()
    rng = np.random.default_rng(1000 + seed)
    cfg = _random_config(rng)
    x = tf.constant(rng.standard_normal(cfg["shape"]).astype(np.float32))
    b = tf.constant(rng.standard_normal(cfg["shape"][-1]).astype(np.float32))
    kw = dict(up=cfg["up"], down=cfg["down"], pad=cfg["pad"], gain=cfg["gain"], slope=cfg["slope"], flip=cfg["flip"])
    a = _attrs(**kw)
    clamp = -1.0 if cfg["clamp"] is None else cfg["clamp"]
    tiling = dict(tile_h=int(rng.integers(1, 9)), tile_w=int(rng.integers(1, 9)), cb=int(rng.choice([4, 8, 16])),
                  threads=int(rng.choice([1, 32, 256])), smem_kb=1 << 20)
    y_c, code_c = lib.afgan_filtered_lrelu(x, cfg["fu"], cfg["fd"], b, clamp=clamp, **a)
    y_e, code_e = emu_forward(x, cfg["fu"], cfg["fd"], b, clamp=cfg["clamp"], **kw, **tiling)
    parity.assert_close(y_e, y_c, atol=_tol(y_c.numpy()), name=f"tile_emu_random/{seed}/y")
    # Codes are compared where the down filter reads; the tiles store 0 elsewhere (the CPU kernel, whose row
    # tiles cover contiguous ranges, also fills unread samples between read ones when fd < down).
    code_e, code_c = code_e.numpy(), code_c.numpy()
    fd_h, fd_w = (cfg["fd"].shape * 2) if cfg["fd"].ndim == 1 else cfg["fd"].shape
    read = lambda n_hi, n_out, d, f: np.array([any(0 <= j - o * d < f for o in range(n_out)) for j in range(n_hi)])
    mask = (read(code_e.shape[1], y_c.shape[1], cfg["down"][1], fd_h)[:, None]
            & read(code_e.shape[2], y_c.shape[2], cfg["down"][0], fd_w)[None, :])
    assert np.mean(code_e[:, mask] == code_c[:, mask]) > 0.999, cfg
    assert not code_e[:, ~mask].any()
    gy = tf.constant(rng.standard_normal(y_c.shape).astype(np.float32))
    dx_c = lib.afgan_filtered_lrelu_grad(gy, cfg["fu"], cfg["fd"], code_c, tf.shape(x), adjoint=False, **a)
    dx_e = emu_grad(gy, cfg["fu"], cfg["fd"], code_c, cfg["shape"], **kw, **tiling)
    parity.assert_close(dx_e, dx_c, atol=_tol(dx_c.numpy()), name=f"tile_emu_random/{seed}/dx")
    u = tf.constant(rng.standard_normal(cfg["shape"]).astype(np.float32))  # second order: the adjoint
    au_c = lib.afgan_filtered_lrelu_grad(u, cfg["fu"], cfg["fd"], code_c, tf.shape(x), adjoint=True, **a)
    au_e = emu_grad(u, cfg["fu"], cfg["fd"], code_c, cfg["shape"], adjoint=True, **kw, **tiling)
    parity.assert_close(au_e, au_c, atol=_tol(au_c.numpy()), name=f"tile_emu_random/{seed}/adjoint")


def test_tile_emulator_independent_of_tiling_and_threads():
    """Tile size, channel block, thread count and thread order change the work split, never a bit of the results
    (a result depending on the thread order would reveal a dependency between threads of one phase)."""
    x, b, fu, fd, clamp, kw = _case_data(1, 30)  # up4 / down2, clamp, 37 channels
    base_y, base_code = emu_forward(x, fu, fd, b, clamp=clamp, **kw)
    gy = tf.constant(np.random.default_rng(1).standard_normal(base_y.shape).astype(np.float32))
    base_dx = emu_grad(gy, fu, fd, base_code, list(x.shape), **kw)
    for tiling in (dict(tile_h=1, tile_w=1, cb=4), dict(tile_h=3, tile_w=5, cb=8, threads=7),
                   dict(tile_h=7, tile_w=2, cb=16, threads=1), dict(tile_h=40, tile_w=40, cb=64),
                   dict(reverse_threads=True), dict(tile_h=5, tile_w=3, threads=33, reverse_threads=True)):
        tiling["smem_kb"] = 1 << 20  # the emulator has no shared-memory limit
        y, code = emu_forward(x, fu, fd, b, clamp=clamp, **kw, **tiling)
        np.testing.assert_array_equal(y.numpy(), base_y.numpy(), err_msg=str(tiling))
        np.testing.assert_array_equal(code.numpy(), base_code.numpy(), err_msg=str(tiling))
        dx = emu_grad(gy, fu, fd, base_code, list(x.shape), **kw, **tiling)
        np.testing.assert_array_equal(dx.numpy(), base_dx.numpy(), err_msg=str(tiling))


@pytest.mark.parametrize("case", [0, 3, 4])  # separable / 2-D fd / 2-D fu
def test_tile_emulator_detects_a_missing_phase(case):
    """The harness can fail: leaving out a phase makes its readers see the NaN-filled shared memory."""
    x, b, fu, fd, clamp, kw = _case_data(case, 70)
    ok, _ = emu_forward(x, fu, fd, b, clamp=clamp, **kw)
    assert np.all(np.isfinite(ok.numpy()))
    sep_a, sep_b = fu is None or np.ndim(fu) == 1, fd is None or np.ndim(fd) == 1
    phases = [0, 1, 3] + ([2] if sep_a else []) + ([4] if sep_b else [])
    for phase in phases:
        y, _ = emu_forward(x, fu, fd, b, clamp=clamp, skip_phase=phase, **kw)
        assert np.isnan(y.numpy()).any(), f"skipping phase {phase} went unnoticed"


def test_tile_emulator_adjoint_of_gradient_matches_cpu_kernel():
    """The backward's adjoint (second order) run by the tiles equals the CPU kernel's and is the adjoint."""
    lib = _lib()
    x, b, fu, fd, clamp, kw = _case_data(0, 40)
    a = _attrs(kw["up"], kw["down"], kw["pad"], kw["gain"], kw["slope"], kw["flip"])
    y, code = lib.afgan_filtered_lrelu(tf.constant(x), _f(fu), _f(fd), tf.constant(b), clamp=0.5, **a)
    rng = np.random.default_rng(2)
    u = tf.constant(rng.standard_normal(x.shape).astype(np.float32))
    v = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
    au = emu_grad(u, fu, fd, code, list(x.shape), adjoint=True, **kw)
    au_cpu = lib.afgan_filtered_lrelu_grad(u, _f(fu), _f(fd), code, tf.constant(list(x.shape)), adjoint=True, **a)
    parity.assert_close(au, au_cpu, atol=_tol(au_cpu.numpy()), name="tile_emu/adjoint_vs_cpu")
    gv = emu_grad(v, fu, fd, code, list(x.shape), **kw)
    # <A u, v> == <u, A^T v>
    lhs, rhs = float(tf.reduce_sum(au * v)), float(tf.reduce_sum(u * gv))
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs)), (lhs, rhs)


@pytest.mark.parametrize("case", parity.case_names("ops_filtered_lrelu.npz"))
def test_tile_emulator_parity(case):
    """Every case of the original's parity file: y, dx, db from the tiled algorithm."""
    z = parity.load("ops_filtered_lrelu.npz")
    p = parity.meta(z, case + "/params")
    x = parity.nchw_to_nhwc(z[case + "/x"]).astype(np.float32)
    fu = z[case + "/fu"] if case + "/fu" in z else None
    fd = z[case + "/fd"] if case + "/fd" in z else None
    b = z[case + "/b"] if case + "/b" in z else None
    pad = p["padding"]
    pad = [pad] * 4 if isinstance(pad, int) else ([pad[0], pad[0], pad[1], pad[1]] if len(pad) == 2 else list(pad))
    kw = dict(up=p["up"], down=p["down"], pad=pad, gain=p["gain"], slope=p["slope"], flip=p["flip_filter"])
    y, code = emu_forward(x, fu, fd, b, clamp=p["clamp"], **kw)
    ref_y = parity.nchw_to_nhwc(z[case + "/y"])
    parity.assert_close(y, ref_y, atol=_tol(ref_y, 2e-6), name=f"tile_emu/parity/{case}/y")
    gy = tf.constant(parity.nchw_to_nhwc(z[case + "/gy"]).astype(np.float32))
    dx = emu_grad(gy, fu, fd, code, list(x.shape), **kw).numpy()
    ref_dx = parity.nchw_to_nhwc(z[case + "/dx"])
    parity.assert_close(dx, ref_dx, atol=_tol(ref_dx, 4e-6), name=f"tile_emu/parity/{case}/dx")
    if b is not None:
        parity.assert_close(dx.sum(axis=(0, 1, 2)), z[case + "/db"], atol=_tol(z[case + "/db"], 1e-5),
                            name=f"tile_emu/parity/{case}/db")


def test_tile_emulator_float16_io():
    """float16 inputs/outputs (the GPU kernel's half path: fp32 in shared memory) within half precision."""
    x, b, fu, fd, clamp, kw = _case_data(0, 50)
    y32, _ = emu_forward(x, fu, fd, b, clamp=clamp, **kw)
    y16, code16 = emu_forward(tf.constant(x.astype(np.float16)), fu, fd, b, clamp=clamp, **kw)
    assert y16.dtype == tf.float16
    parity.assert_close(tf.cast(y16, tf.float32), y32, atol=_tol(y32.numpy(), 4e-3), name="tile_emu/fp16/y")
    gy = np.random.default_rng(3).standard_normal(y32.shape).astype(np.float32)
    dx16 = emu_grad(tf.constant(gy.astype(np.float16)), fu, fd, code16, list(x.shape), **kw)
    dx32 = emu_grad(tf.constant(gy), fu, fd, code16, list(x.shape), **kw)
    assert dx16.dtype == tf.float16
    parity.assert_close(tf.cast(dx16, tf.float32), dx32, atol=_tol(dx32.numpy(), 4e-3), name="tile_emu/fp16/dx")


SG3_LAYERS = [
    # (x shape, fu shape, fd shape, up, down, padding): StyleGAN3 layer kinds at 256x256 (docs/ALGORITHM.md §3.5)
    ([1, 38, 38, 512], (12,), (12,), 2, 2, [9, 8, 9, 8]),              # T, same-rate layer
    ([1, 36, 36, 512], (24,), (12,), 4, 2, [21, 20, 21, 20]),          # T, rate-doubling layer
    ([1, 148, 148, 64], (12,), (12,), 2, 2, [9, 8, 9, 8]),             # T, last layers (many pixels)
    ([1, 38, 38, 1024], (12,), (12, 12), 2, 2, [9, 8, 9, 8]),          # R, 2-D down filter
    ([1, 36, 36, 1024], (24,), (12, 12), 4, 2, [21, 20, 21, 20]),      # R, rate-doubling
    ([1, 256, 256, 32], (1,), (1,), 1, 1, [0, 0, 0, 0]),               # ToRGB (identity filters)
]


def plan(x_shape, fu_shape, fd_shape, up, down, pad, **kw):
    a = _attrs(up, down, pad, 1.0, 0.2, False)
    return _lib().afgan_filtered_lrelu_tile_plan(tf.constant(x_shape, tf.int32), tf.ones(fu_shape), tf.ones(fd_shape),
                                                 **a, **kw).numpy()


@pytest.mark.parametrize("layer", range(len(SG3_LAYERS)))
def test_stylegan3_layers_take_the_tiled_gpu_path(layer):
    """Every StyleGAN3 layer kind (forward and gradient) fits the GPU's default 48 kB with tiles of >= 4x4."""
    p = plan(*SG3_LAYERS[layer])
    for row, what in zip(p, ("forward", "gradient")):
        fits, th, tw, cb, smem, blocks = row
        assert fits == 1 and th >= 4 and tw >= 4 and cb % 4 == 0, (what, row)
        assert smem <= 48 * 1024 and blocks >= 1, (what, row)


def test_tile_plan_falls_back_for_huge_filters_and_honours_the_budget():
    p = plan([1, 64, 64, 8], (200,), (200,), 4, 4, [200, 200, 200, 200])
    assert (p[:, 0] == 0).all()
    big = plan([1, 38, 38, 512], (12,), (12,), 2, 2, [9, 8, 9, 8], smem_kb=96)
    small = plan([1, 38, 38, 512], (12,), (12,), 2, 2, [9, 8, 9, 8])
    assert (big[:, 4] <= 96 * 1024).all() and (big[:, 1] * big[:, 2] * big[:, 3] >= small[:, 1] * small[:, 2] * small[:, 3]).all()


def test_tile_emulator_no_tile_fits_and_bad_attrs():
    """A configuration no tile fits (the GPU op then takes its generic path) and bad tiling attrs fail clearly."""
    f = np.full([200], 1 / 200, np.float32)
    x = np.zeros([1, 8, 8, 4], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no tile fits in 48 kB.*generic path"):
        emu_forward(x, f, f, None, up=4, down=4, pad=[200, 200, 200, 200], gain=1.0, slope=0.2, clamp=None, flip=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="cb must be a multiple of 4"):
        emu_forward(x, None, None, None, up=1, down=1, pad=[0, 0, 0, 0], gain=1.0, slope=0.2, clamp=None, flip=False,
                    cb=6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="code has shape"):
        emu_grad(tf.zeros([1, 8, 8, 4]), None, None, tf.zeros([1, 8, 8, 2], tf.uint8), [1, 8, 8, 4], up=1, down=1,
                 pad=[0, 0, 0, 0], gain=1.0, slope=0.2, flip=False)


# ------------------------------------------------------------------------------------------------ GPU (CUDA)
@pytest.mark.gpu
@pytest.mark.parametrize("case", [0, 1, 3, 5, 9])
def test_gpu_tiled_kernel_matches_emulator(case):
    """The CUDA kernel runs the same phases as the emulator: same y, code and dx up to float rounding."""
    lib = _lib()
    x, b, fu, fd, clamp, kw = _case_data(case, 60)
    a = _attrs(kw["up"], kw["down"], kw["pad"], kw["gain"], kw["slope"], kw["flip"])
    y_e, code_e = emu_forward(x, fu, fd, b, clamp=clamp, **kw)
    with tf.device("/GPU:0"):
        bb = tf.zeros([0]) if b is None else tf.constant(b)
        y_g, code_g = lib.afgan_filtered_lrelu(tf.constant(x), _f(fu), _f(fd), bb,
                                               clamp=-1.0 if clamp is None else float(clamp), **a)
        gy = tf.constant(np.random.default_rng(4).standard_normal(y_e.shape).astype(np.float32))
        dx_g = lib.afgan_filtered_lrelu_grad(gy, _f(fu), _f(fd), code_e, tf.constant(list(x.shape)), adjoint=False, **a)
    parity.assert_close(y_g, y_e, atol=_tol(y_e.numpy(), 2e-6), name=f"gpu_tiled_vs_emu/{case}/y")
    assert np.mean(code_g.numpy() == code_e.numpy()) > 0.999
    dx_e = emu_grad(gy, fu, fd, code_e, list(x.shape), **kw)
    parity.assert_close(dx_g, dx_e, atol=_tol(dx_e.numpy(), 2e-6), name=f"gpu_tiled_vs_emu/{case}/dx")


@pytest.mark.gpu
def test_gpu_generic_fallback_for_huge_filters():
    """Filters too large for any tile run the generic CUDA path; it still equals the CPU kernel."""
    lib = _lib()
    rng = np.random.default_rng(7)
    f = _kaiser_like(48, rng)
    x = rng.standard_normal([1, 9, 8, 5]).astype(np.float32)
    a = _attrs(1, 1, [30, 30, 30, 30], 1.0, 0.2, False)
    res = {}
    for dev in ("/CPU:0", "/GPU:0"):
        with tf.device(dev):
            res[dev] = [t.numpy() for t in lib.afgan_filtered_lrelu(tf.constant(x), f, f, tf.zeros([0]), clamp=-1.0, **a)]
    parity.assert_close(res["/GPU:0"][0], res["/CPU:0"][0], atol=_tol(res["/CPU:0"][0], 4e-6), name="gpu_generic/y")
