"""Filter design and synthesis schedule (afgan_tf.filters) vs scipy, the reference taps (docs/ALGORITHM.md §11), independently
derived schedule tables (tests/fixtures/schedule_tables.md), the parity files' layer_info and the phase/centring
property (docs/ALGORITHM.md §1.1)."""
import math
import re

import numpy as np
import pytest
import scipy.signal

import parity
from afgan_tf import filters
from afgan_tf.filters import design_lowpass_filter, kaiser_atten, kaiser_beta, synthesis_schedule

SCHEDULE_TABLES = "schedule_tables.md"  # tests/fixtures: 11 configurations, see tests/fixtures/README.md


# ----------------------------------------------------------------------------------------------------------------
# Kaiser formulas and filter taps

def test_kaiser_reference_values():
    # docs/ALGORITHM.md §11: n=12, Δf=0.75 -> A = 67.17295 dB, beta = 6.443719
    a = kaiser_atten(12, 0.75)
    assert abs(a - 67.17295) < 1e-5
    assert abs(kaiser_beta(a) - 6.443719) < 1e-6


@pytest.mark.parametrize("n", [4, 12, 24, 37])
def test_kaiser_matches_scipy(n):
    for width in np.linspace(0.01, 1.5, 31):
        a = kaiser_atten(n, width)
        assert abs(a - scipy.signal.kaiser_atten(n, width)) < 1e-9
        assert abs(kaiser_beta(a) - scipy.signal.kaiser_beta(a)) < 1e-9
    # the three branches of kaiser_beta
    for a in [10.0, 21.0, 30.0, 50.0, 80.0]:
        assert abs(kaiser_beta(a) - scipy.signal.kaiser_beta(a)) < 1e-12


def test_kaiser_window_matches_numpy():
    for n, beta in [(12, 6.44), (24, 2.4), (7, 0.0), (1, 3.0)]:
        np.testing.assert_allclose(filters.kaiser_window(n, beta), np.kaiser(n, beta), rtol=1e-12, atol=1e-15)


SPEC_L0_UP = [0.0007919, 0.01001832, 0.03894952, 0.09241279, 0.15652562, 0.20130185, 0.20130185, 0.15652562,
              0.09241279, 0.03894952, 0.01001832, 0.0007919]
SPEC_T256_L3_UP_HALF = [-0.00163828, -0.00305529, -0.00371516, -0.00214536, 0.00331233, 0.01398208, 0.03028362,
                        0.05131237, 0.0747529, 0.09721614, 0.1149508, 0.12474386]
SPEC_T256_L13_DOWN = [0.02337425, 0.0344493, -0.0508807, -0.07861523, 0.13961044, 0.43206194, 0.43206194,
                      0.13961044, -0.07861523, -0.0508807, 0.0344493, 0.02337425]
SPEC_R256_L0_ROW2 = [4.02779e-05, 4.61646e-04, 1.69414e-03, 3.87986e-03, 6.43651e-03, 8.19805e-03, 8.19805e-03,
                     6.43651e-03, 3.87986e-03, 1.69414e-03, 4.61646e-04, 4.02779e-05]


def test_reference_taps_from_spec():
    f = design_lowpass_filter(12, 2, 12, 32)
    assert f.dtype == np.float32 and f.shape == (12,)
    np.testing.assert_allclose(f, SPEC_L0_UP, atol=1e-8)
    f = design_lowpass_filter(24, 4, 8, 64)
    np.testing.assert_allclose(f[:12], SPEC_T256_L3_UP_HALF, atol=1e-8)
    np.testing.assert_array_equal(f[12:], f[:12][::-1])
    f = design_lowpass_filter(12, 128, 2 * 128 * (2 ** 0.3 - 1), 512)
    np.testing.assert_allclose(f, SPEC_T256_L13_DOWN, atol=1e-8)
    f = design_lowpass_filter(12, 2, 12, 32, radial=True)
    assert f.shape == (12, 12) and f.dtype == np.float32
    assert abs(f[0, 0] - 8.412097e-07) < 1e-12
    assert abs(f[5, 5] - 0.03875489) < 1e-8 and abs(f[5, 6] - 0.03875489) < 1e-8
    np.testing.assert_allclose(f[2], SPEC_R256_L0_ROW2, rtol=2e-5, atol=0)
    assert abs(float(f.astype(np.float64).sum()) - 1) < 1e-6


def test_separable_matches_firwin():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.choice([2, 6, 12, 24, 48, 13]))
        fs = float(rng.choice([16, 32, 64, 512, 2048]))
        cutoff = float(rng.uniform(0.02, 0.48) * fs)
        width = float(rng.uniform(0.01, 0.9) * fs / 2)
        ours = design_lowpass_filter(n, cutoff, width, fs)
        ref = scipy.signal.firwin(numtaps=n, cutoff=cutoff, width=width, fs=fs)
        np.testing.assert_allclose(ours, ref, atol=1e-7, rtol=1e-6, err_msg=f"n={n} fc={cutoff} w={width} fs={fs}")


def test_radial_properties():
    # symmetric under x<->y and mirroring, unit DC gain, and its frequency response is (nearly) rotation invariant:
    # |H| sampled on a circle inside the passband / on one in the stopband varies much less than a square passband.
    f = design_lowpass_filter(12, 2, 12, 32, radial=True).astype(np.float64)
    np.testing.assert_array_equal(f, f.T)
    np.testing.assert_array_equal(f, f[::-1, ::-1])
    assert abs(f.sum() - 1) < 1e-6
    # a sharp filter (narrow transition band) shows the disc vs square passband clearly
    f = design_lowpass_filter(24, 4, 4, 32, radial=True).astype(np.float64)
    sep = design_lowpass_filter(24, 4, 4, 32).astype(np.float64)
    sep2 = np.outer(sep, sep)

    def response(h, fx, fy):
        m = (np.arange(24) - 11.5) / 32
        return np.abs(np.sum(h * np.exp(-2j * np.pi * (fy * m[:, None] + fx * m[None, :]))))

    ang = np.linspace(0, np.pi / 2, 19)
    rad_r = [response(f, 4 * np.cos(a), 4 * np.sin(a)) for a in ang]
    sep_r = [response(sep2, 4 * np.cos(a), 4 * np.sin(a)) for a in ang]
    assert np.ptp(rad_r) < 0.05 * np.ptp(sep_r) and np.ptp(rad_r) < 0.02


def test_design_edge_cases():
    assert design_lowpass_filter(1, 2, 12, 32) is None
    assert design_lowpass_filter(1, 2, 12, 32, radial=True) is None
    with pytest.raises(ValueError, match="numtaps"):
        design_lowpass_filter(0, 2, 12, 32)
    with pytest.raises(ValueError, match="cutoff"):
        design_lowpass_filter(12, 20, 12, 32)
    with pytest.raises(ValueError, match="width"):
        design_lowpass_filter(12, 2, 0, 32)
    with pytest.raises(ValueError, match="fs"):
        design_lowpass_filter(12, 2, 12, 0)
    # odd radial filter: centre tap is the finite limit, unit sum
    f = design_lowpass_filter(5, 2, 12, 32, radial=True)
    assert np.all(np.isfinite(f)) and abs(float(f.sum()) - 1) < 1e-6


# ----------------------------------------------------------------------------------------------------------------
# Schedule vs the spec's tables

def _fixture_tables():
    """-> {(res, cfg, cbase, cmax): [row dict, ...]} from the schedule tables fixture (fails when it is missing)."""
    with open(parity.fixture_path(SCHEDULE_TABLES)) as fh:
        return _parse_table_text(fh.read())


def _parse_table_text(text):
    out, key = {}, None
    for line in text.splitlines():
        m = re.match(r"#### (\d+)x\d+, stylegan3-(\w), channel_base=(\d+), channel_max=(\d+)", line)
        if m:
            key = (int(m[1]), m[2], int(m[3]), int(m[4]))
            out[key] = []
            continue
        if key and re.match(r"\| \d+ \|", line):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            two = lambda s, sep="→": tuple(int(v) for v in s.split(sep))  # noqa: E731

            def taps(s):
                mm = re.match(r"(\d+)(?:×\d+ jinc)? \(([\d.]+|none)\)", s)
                return int(mm[1]), (None if mm[2] == "none" else float(mm[2])), "jinc" in s
            out[key].append(dict(
                i=int(c[0]), name=c[1].strip("`"), size=two(c[2]), ch=two(c[3]), s=two(c[4]), s_tmp=int(c[5]),
                up=int(c[6]), down=int(c[7]), fc=float(c[8]), ft=float(c[9]), fh=float(c[10]), fcfh=float(c[11]),
                up_taps=taps(c[12]), down_taps=taps(c[13]), pad=two(c[14], ","), fp16=c[15] == "yes",
                crit=c[16] == "yes"))
    return out


def _beta(taps, width, fs):
    return kaiser_beta(kaiser_atten(taps, width / (fs / 2)))


MAIN_CONFIGS = {(256, "t", 32768, 512), (256, "r", 65536, 1024), (512, "t", 32768, 512), (1024, "t", 32768, 512),
                (256, "t", 16384, 512)}
OTHER_CONFIGS = {(64, "t", 32768, 512), (64, "r", 65536, 1024), (128, "t", 32768, 512), (128, "r", 65536, 1024),
                 (512, "r", 65536, 1024), (1024, "r", 65536, 1024)}


def test_schedule_matches_spec_tables():
    tables = _fixture_tables()
    assert set(tables) == MAIN_CONFIGS | OTHER_CONFIGS, sorted(tables)
    _check_tables({k: v for k, v in tables.items() if k in MAIN_CONFIGS})


def test_schedule_matches_spec_script_other_configs():
    """64/128 T and R, 512/1024 R: tables made by the independent re-derivation script (same format)."""
    tables = {k: v for k, v in _fixture_tables().items() if k in OTHER_CONFIGS}
    assert set(tables) == OTHER_CONFIGS
    _check_tables(tables)


def _check_tables(tables):
    for (res, cfg, cbase, cmax), rows in tables.items():
        r_cfg = cfg == "r"
        sch = synthesis_schedule(res, cbase, cmax, conv_kernel=1 if r_cfg else 3, use_radial_filters=r_cfg)
        assert len(sch) == len(rows) == 15
        for L, row in zip(sch, rows):
            where = f"{res}{cfg} cbase {cbase} {row['name']}"
            assert L.index == row["i"] and L.name == row["name"], where
            assert (L.in_size, L.out_size) == row["size"], where
            assert (L.in_channels, L.out_channels) == row["ch"], where
            assert (L.in_sampling_rate, L.out_sampling_rate) == row["s"], where
            assert L.tmp_sampling_rate == row["s_tmp"] and (L.up, L.down) == (row["up"], row["down"]), where
            assert abs(L.out_cutoff - row["fc"]) < 5e-5 and abs(L.out_stopband - row["ft"]) < 5e-5, where
            assert abs(L.out_half_width - row["fh"]) < 5e-5, where
            assert abs(L.out_cutoff + L.out_half_width - row["fcfh"]) < 5e-5, where
            assert L.up_taps == row["up_taps"][0] and L.down_taps == row["down_taps"][0], where
            assert L.down_radial == row["down_taps"][2], where
            if L.up_taps > 1:
                assert abs(_beta(L.up_taps, 2 * L.in_half_width, L.tmp_sampling_rate) - row["up_taps"][1]) < 5e-4
            if L.down_taps > 1:
                assert abs(_beta(L.down_taps, 2 * L.out_half_width, L.tmp_sampling_rate)
                           - row["down_taps"][1]) < 5e-4, where
            assert L.padding == (row["pad"][0], row["pad"][1], row["pad"][0], row["pad"][1]), where
            assert L.use_fp16 == row["fp16"] and L.is_critically_sampled == row["crit"], where
            assert L.is_torgb == (L.index == 14) and L.conv_kernel == (1 if L.is_torgb or r_cfg else 3)


def test_schedule_names_from_spec_text():
    # docs/ALGORITHM.md §3.5.3 (names listed in the text; R@1024 and R@256 cbase 16384 have no full table)
    r1024 = [L.name for L in synthesis_schedule(1024, 65536, 1024, conv_kernel=1, use_radial_filters=True)]
    assert r1024[:7] == [f"L{i}_{s}_1024" for i, s in enumerate([36, 36, 52, 52, 84, 148, 148])]
    assert r1024[7:] == ["L7_276_645", "L8_276_406", "L9_532_256", "L10_1044_161", "L11_1044_102", "L12_1044_64",
                         "L13_1024_64", "L14_1024_3"]
    r256 = [L.name for L in synthesis_schedule(256, 32768, 1024, conv_kernel=1, use_radial_filters=True)]
    assert r256[7:] == ["L7_148_724", "L8_148_512", "L9_148_362", "L10_276_256", "L11_276_181", "L12_276_128",
                        "L13_256_128", "L14_256_3"]
    r256 = synthesis_schedule(256, 65536, 1024, conv_kernel=1, use_radial_filters=True)
    assert [L.padding[:2] for L in r256][12:] == [(11, 10), (-9, -10), (0, 0)]


@pytest.mark.parametrize("name", ["g_t64.npz", "g_r64.npz"])
def test_schedule_matches_parity_layer_info(name):
    d = parity.load(name)
    kw = parity.meta(d, "meta/init_kwargs")
    info = parity.meta(d, "meta/layer_info")
    sch = synthesis_schedule(kw["img_resolution"], kw["channel_base"], kw["channel_max"],
                             conv_kernel=kw["conv_kernel"], use_radial_filters=kw["use_radial_filters"],
                             num_fp16_res=kw["num_fp16_res"], img_channels=kw["img_channels"])
    inp = filters.input_spec(sch)
    assert inp["channels"] == info["input"]["channels"] and [inp["size"]] * 2 == info["input"]["size"]
    assert inp["sampling_rate"] == info["input"]["sampling_rate"] and inp["bandwidth"] == info["input"]["bandwidth"]
    for L, ref in zip(sch, info["layers"], strict=True):
        assert L.name == ref["name"]
        assert list(L.padding) == ref["padding"], L.name
        assert (L.up, L.down, L.up_taps, L.down_taps) == (ref["up_factor"], ref["down_factor"], ref["up_taps"],
                                                          ref["down_taps"]), L.name
        for a in ["in_cutoff", "out_cutoff", "in_half_width", "out_half_width", "in_sampling_rate",
                  "out_sampling_rate", "tmp_sampling_rate"]:
            assert abs(getattr(L, a) - ref[a]) < 1e-12, (L.name, a)
        assert (L.in_channels, L.out_channels) == (ref["in_channels"], ref["out_channels"])
        assert [L.in_size] * 2 == ref["in_size"] and [L.out_size] * 2 == ref["out_size"]
        assert L.down_radial == ref["down_radial"] and L.use_fp16 == ref["use_fp16_flag"]
        assert L.is_critically_sampled == ref["is_critically_sampled"] and L.is_torgb == ref["is_torgb"]
        # the filters the original computed are in the file: ours must equal them
        for which, f in [("up_filter", L.up_filter()), ("down_filter", L.down_filter())]:
            key = f"param/synthesis.{L.name}.{which}"
            if f is None:
                assert key not in d.files
            else:
                assert f.shape == d[key].shape, key
                assert np.max(np.abs(f - d[key])) <= 1e-6, key


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="img_resolution"):
        synthesis_schedule(100, 32768, 512)
    with pytest.raises(ValueError, match="num_critical"):
        synthesis_schedule(256, 32768, 512, num_layers=2, num_critical=2)
    with pytest.raises(ValueError, match="conv_kernel"):
        synthesis_schedule(256, 32768, 512, conv_kernel=0)


# ----------------------------------------------------------------------------------------------------------------
# Shapes and centring (1-D numpy model of the layer's upfirdn chain, independent of the TF ops)

def _upfirdn1d(x, f, up, down, p0, p1, gain):
    u = np.zeros(len(x) * up)
    u[::up] = x
    u = np.concatenate([np.zeros(max(p0, 0)), u[max(-p0, 0):]])
    u = np.concatenate([u[:len(u) + min(p1, 0)], np.zeros(max(p1, 0))])
    return np.convolve(u, f, mode="valid")[::down] * gain


def _grid(n, s):
    return (np.arange(n) + 0.5 - n / 2) / s


@pytest.mark.parametrize("res,cfg", [(64, "t"), (128, "t"), (128, "r"), (256, "t"), (256, "r"), (1024, "t")])
def test_layer_chain_keeps_grid_centred(res, cfg):
    """A cosine through each layer's up-filter/down-filter chain (as filtered_lrelu applies them, without the
    nonlinearity) comes out at the right length and centred on the output grid (fit A cos + B sin: |B/A| ~ 0)."""
    sch = synthesis_schedule(res, 32768, 512, conv_kernel=1 if cfg == "r" else 3, use_radial_filters=cfg == "r")
    for L in sch[:-1]:
        n_in = L.in_size + L.conv_kernel - 1  # after the "full" modulated conv
        fu = L.up_filter()
        fd = L.down_filter()
        fd = fd.sum(axis=0) if fd.ndim == 2 else fd  # radial: the separable marginal has the same centre
        freq, phase = 0.3 * L.in_cutoff, 0.123
        x = np.cos(2 * np.pi * (freq * _grid(n_in, L.in_sampling_rate) + phase))
        y = _upfirdn1d(x, fu.astype(np.float64), L.up, 1, L.padding[0], L.padding[1], L.up)
        y = _upfirdn1d(y, fd.astype(np.float64), 1, L.down, 0, 0, 1)
        assert len(y) == L.out_size, L.name
        # output size formula of filtered_lrelu (docs/ALGORITHM.md §1.4)
        assert L.out_size == (n_in * L.up + L.padding[0] + L.padding[1] - (L.up_taps - 1) - (L.down_taps - 1)
                              + L.down - 1) // L.down
        g = _grid(L.out_size, L.out_sampling_rate)
        m = slice(15, -15)
        basis = np.stack([np.cos(2 * np.pi * (freq * g + phase)), np.sin(2 * np.pi * (freq * g + phase))], 1)[m]
        (a, b), *_ = np.linalg.lstsq(basis, y[m], rcond=None)
        assert a > 0.5 and abs(b / a) < 1e-6, (L.name, a, b)
        # a deliberately mis-centred padding (shift by one high-rate sample) is detected by the same fit
        y2 = _upfirdn1d(x, fu.astype(np.float64), L.up, 1, L.padding[0] + 1, L.padding[1] - 1, L.up)
        y2 = _upfirdn1d(y2, fd.astype(np.float64), 1, L.down, 0, 0, 1)
        (a2, b2), *_ = np.linalg.lstsq(basis, y2[m], rcond=None)
        assert abs(b2 / a2) > 1e-3, L.name


def test_layer_chain_centred_through_tf_ops():
    """Same property through afgan_tf.ops.filtered_lrelu (2-D, slope 1 = linear) for the T and R 64x64 layers."""
    ops = pytest.importorskip("afgan_tf.ops.filtered_lrelu", reason="filtered_lrelu op not available yet")
    for cfg in "tr":
        sch = synthesis_schedule(64, 1024, 64, conv_kernel=1 if cfg == "r" else 3, use_radial_filters=cfg == "r")
        for L in sch[:-1]:
            n_in = L.in_size + L.conv_kernel - 1
            freq, phase = 0.3 * L.in_cutoff, 0.123
            gi = _grid(n_in, L.in_sampling_rate)
            # diagonal plane wave, so the (possibly radial) 2-D down-filter is exercised
            x = np.cos(2 * np.pi * (freq * (gi[None, :] + gi[:, None]) / math.sqrt(2) + phase))
            x = x[None, :, :, None].astype(np.float32)  # [1, H, W, 1]
            y = ops.filtered_lrelu(x, L.up_filter(), L.down_filter(), up=L.up, down=L.down, padding=list(L.padding),
                                   gain=1.0, slope=1.0, impl="ref")
            y = np.asarray(y)[0, :, :, 0].astype(np.float64)
            assert y.shape == (L.out_size, L.out_size), L.name
            g = _grid(L.out_size, L.out_sampling_rate)
            arg = 2 * np.pi * (freq * (g[None, :] + g[:, None]) / math.sqrt(2) + phase)
            m = (slice(15, -15), slice(15, -15))
            basis = np.stack([np.cos(arg)[m].ravel(), np.sin(arg)[m].ravel()], 1)
            (a, b), *_ = np.linalg.lstsq(basis, y[m].ravel(), rcond=None)
            assert a > 0.5 and abs(b / a) < 1e-5, (cfg, L.name, a, b)
