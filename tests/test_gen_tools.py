"""The visual / metric tools write the files they promise with the right sizes and the right content."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from afgan_tf.metrics import fid
from afgan_tf import cli as tu
from afgan_tf.metrics.toy import ToyGenerator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import avg_spectra  # noqa: E402
import calc_metrics  # noqa: E402
import gen_images  # noqa: E402
import gen_video  # noqa: E402
import texture_sticking  # noqa: E402
from test_metrics_fid import write_dataset, write_tiny_pb  # noqa: E402

R = 16


def _png(path):
    return np.asarray(Image.open(path))


def test_parsers():
    assert tu.parse_range("0,1,4-6") == [0, 1, 4, 5, 6]
    assert tu.parse_grid("4x2") == (4, 2)
    assert tu.parse_vec2("0.1,-0.2") == (0.1, -0.2)
    for bad, fn in (("3-1", tu.parse_range), ("a", tu.parse_range), ("4", tu.parse_grid), ("1", tu.parse_vec2)):
        with pytest.raises(ValueError):
            fn(bad)


def test_gen_images_files_translate_and_rotate(tmp_path):
    G = ToyGenerator(R, seed=3)
    paths = gen_images.generate_images(G, "0,2-3", str(tmp_path / "a"), grid="2x2", log=lambda *_: None)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["grid.png", "seed0000.png", "seed0002.png", "seed0003.png"]
    img0 = _png(tmp_path / "a" / "seed0000.png")
    assert img0.shape == (R, R, 3) and img0.dtype == np.uint8
    assert _png(tmp_path / "a" / "grid.png").shape == (2 * R, 2 * R, 3)
    np.testing.assert_array_equal(img0, tu.to_uint8(G(tu.z_from_seed(0, G.z_dim)).numpy())[0])
    # translate by 3 pixels to the right: content moves right (equivariant toy => exact shift up to rounding)
    gen_images.generate_images(G, [0], str(tmp_path / "t"), translate=(3 / R, 0.0), log=lambda *_: None)
    imt = _png(tmp_path / "t" / "seed0000.png").astype(int)
    assert np.abs(imt[:, 3:] - img0[:, :-3].astype(int)).max() <= 1
    assert np.abs(imt - img0.astype(int)).max() > 10
    # rotate by 90 degrees == np.rot90 of the pixel grid
    gen_images.generate_images(G, [0], str(tmp_path / "r"), rotate=90.0, log=lambda *_: None)
    imr = _png(tmp_path / "r" / "seed0000.png").astype(int)
    assert np.abs(imr - np.rot90(img0).astype(int)).max() <= 1
    # the input transform was restored
    np.testing.assert_array_equal(G.synthesis.input.transform.numpy(), np.eye(3, dtype=np.float32))


def test_gen_images_cli_and_errors(tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_images.py"), "--network=toy:res=8",
                        "--seeds=1-2", f"--outdir={out}", "--rotate=10"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["seed0001.png", "seed0002.png"]
    assert _png(out / "seed0001.png").shape == (8, 8, 3)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        gen_images.generate_images(f"{tmp_path}/missing.pkl", "1", str(out))


def test_gen_video_frames_and_keyframes(tmp_path):
    import imageio.v2 as imageio
    G = ToyGenerator(R, seed=4)
    out = str(tmp_path / "v.mp4")
    path, n = gen_video.make_video(G, "0-3", out, grid="2x1", w_frames=3, log=lambda *_: None)
    assert n == 6
    reader = imageio.get_reader(path)
    frames = [f for f in reader]
    assert len(frames) == 6 and frames[0].shape == (R, 2 * R, 3)
    # keyframe positions reproduce the keyframe images exactly (spline passes through its knots)
    kws = gen_video.interpolation_ws(G, [0, 1, 2, 3], (2, 1))
    first = next(gen_video.video_frames(G, kws, 3))
    # slots are laid out [gh, gw, keyframes]: cell 0 starts at seed 0, cell 1 at seed 2
    exp = tu.to_uint8(G(np.concatenate([tu.z_from_seed(0, G.z_dim), tu.z_from_seed(2, G.z_dim)])).numpy())
    assert np.abs(first.astype(int) - tu.make_grid(exp, 2, 1).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="divisible"):
        gen_video.make_video(G, "0-2", out, grid="2x1", w_frames=2, log=lambda *_: None)


def test_texture_sticking_outputs(tmp_path):
    A = ToyGenerator(R, seed=5)
    B = ToyGenerator(R, seed=5, glue=0.4)
    T = 8
    p = texture_sticking.texture_sticking([A, B], str(tmp_path), frames=T, num_avg=6, log=lambda *_: None)
    assert set(p) == {"averaged", "streak", "still", "video"}
    assert _png(p["averaged"]).shape == (R, 2 * (2 * R + 2) + 8, 3)
    assert _png(p["streak"]).shape == (R // 2 * 4, 2 * T * 4 + 8, 3)
    assert _png(p["still"]).shape == (2 * R + 4, 4 * R + 3 * 2, 3)
    assert os.path.getsize(p["video"]) > 0
    # Streak property: a glued pattern is the same in every frame -> the glued network's streak image varies
    # less along time than across rows once the moving content is removed (here: B − A is constant in time).
    seq_a = texture_sticking.sequence(A, frames=T).astype(float)
    seq_b = texture_sticking.sequence(B, frames=T).astype(float)
    diff = seq_b - seq_a
    ok = (seq_a > 0) & (seq_a < 255) & (seq_b > 0) & (seq_b < 255)
    ok = ok & ok[:1]                               # pixels not clipped in this frame nor in frame 0
    assert ok.mean() > 0.5
    assert np.abs(diff - diff[:1])[ok].max() <= 2.0   # glued component does not move (up to uint8 rounding)


def test_avg_spectra_parseval_peak_and_plots(tmp_path):
    data = tmp_path / "cos"
    data.mkdir()
    k = 3
    x = np.arange(R)
    for i in range(3):
        img = np.round(128 + 100 * np.cos(2 * np.pi * k * x / R + i))[None, :].repeat(R, 0)
        Image.fromarray(np.repeat(img[..., None], 3, -1).astype(np.uint8)).save(data / f"{i}.png")
    mean, std = avg_spectra.compute_stats(str(data))
    imgs = np.concatenate(list(fid.iterate_dataset(str(data)))).astype(np.float64)
    assert abs(mean - imgs.mean()) < 1e-9 and abs(std - imgs.std()) < 1e-9
    spec, res = avg_spectra.compute_spectrum(str(data), str(tmp_path / "s.npz"), mean, std, interp=4)
    assert res == R and spec.shape == (4 * R, 4 * R)
    # Parseval: Σ|FFT|² / L² == Σ (windowed whitened pixels)², averaged over images and channels
    from afgan_tf.metrics.spectrum import kaiser_window_2d
    w = kaiser_window_2d(R, 8.0)
    energy = (((imgs - mean) / std * w[None, :, :, None]) ** 2).sum(axis=(1, 2)).mean()
    np.testing.assert_allclose(spec.sum() / (4 * R) ** 2, energy, rtol=1e-10)
    # the peak sits at x-frequency k (bin k·interp), y-frequency 0
    iy, ix = np.unravel_index(np.argmax(spec), spec.shape)
    assert iy == 0 and ix in (k * 4, 4 * R - k * 4)
    with np.load(tmp_path / "s.npz") as d:
        assert int(d["image_size"]) == R
    from afgan_tf.metrics import spectrum as sp
    sp.plot_heatmap(spec, R, str(tmp_path / "h.png"), dpi=50)
    sp.plot_slices([spec, spec * 2], ["a", "b"], R, str(tmp_path / "sl.png"), dpi=50)
    assert _png(tmp_path / "h.png").shape[:2] == (225, 250)
    assert _png(tmp_path / "sl.png").shape[:2] == (200, 500)
    # generator source: seed + i per image
    spec_g, _ = avg_spectra.compute_spectrum(ToyGenerator(R), str(tmp_path / "g.npz"), 128, 60, num=3)
    assert np.all(np.isfinite(spec_g)) and spec_g.shape == (4 * R, 4 * R)


def test_calc_metrics_records_and_consistency(tmp_path):
    data = str(tmp_path / "data")
    write_dataset(data, n=12, res=R)
    pb = write_tiny_pb(str(tmp_path / "classify_image_graph_def.pb"))
    out = str(tmp_path / "out")
    cache = str(tmp_path / "cache")
    recs = calc_metrics.run("toy:res=16,glue=0.2", "eqt50k_frac,fid50k_full,kid50k_full", data=data,
                            inception=pb, num=8, seed=1, outdir=out, cache_dir=cache, verbose=False)
    assert [r["metric"] for r in recs] == ["eqt50k_frac", "fid50k_full", "kid50k_full"]
    for r in recs:
        lines = open(os.path.join(out, f"metric-{r['metric']}.jsonl")).read().strip().split("\n")
        rec = json.loads(lines[-1])
        assert set(rec) >= {"results", "metric", "total_time", "total_time_str", "num_gpus", "snapshot_pkl",
                            "timestamp"}
        assert np.isfinite(rec["results"][r["metric"]])
    assert os.listdir(os.path.join(out, "metrics"))                     # TensorBoard events
    # FID equals the library computation on the same images
    ex = fid.InceptionGraphDef(pb)
    G = tu.load_generator("toy:res=16,glue=0.2")
    real = fid.dataset_stats(data, ex)
    gen = fid.generator_stats(G, ex, num_gen=8, batch_size=16, seed=1)
    np.testing.assert_allclose(recs[1]["results"]["fid50k_full"], fid.fid_from_stats(real, gen), rtol=1e-6)
    # run dir detection
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "training_options.json").write_text("{}")
    (run_dir / "network-snapshot-000100.npz").write_bytes(b"")
    assert calc_metrics.result_dir(str(run_dir / "network-snapshot-000100.npz"), out) == str(run_dir)
    assert calc_metrics.result_dir("toy", out) == out
    with pytest.raises(ValueError, match="unknown metric"):
        calc_metrics.run("toy", "fid1k")
    with pytest.raises(ValueError, match="not implemented"):
        calc_metrics.run("toy", "ppl2_wend")
    with pytest.raises(ValueError, match="--inception"):
        calc_metrics.run("toy:res=16", "fid50k_full", data=data, num=2, verbose=False)


def test_load_generator_from_snapshot(tmp_path):
    try:
        from afgan_tf.convert import save_network_snapshot
        from afgan_tf.networks import Generator
        from parity import load, meta
    except Exception as e:  # pragma: no cover - depends on the converter helper's progress
        pytest.skip(f"converter not available: {e}")
    npz = load("g_t64.npz")
    G = Generator(**meta(npz, "meta/init_kwargs"))
    G.load_original_state_dict({k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")})
    path = save_network_snapshot(str(tmp_path / "network-snapshot-000000.npz"), {"G_ema": G})
    G2 = tu.load_generator(path)
    z = npz["in/z"]
    ws = G2.mapping(z, np.zeros([len(z), 0], np.float32)).numpy()
    np.testing.assert_allclose(ws, npz["out/ws_psi1.0"], atol=1e-4)
    assert tu.has_input_transform(G2)


def test_texture_sticking_stylegan3_vs_stylegan2_side_by_side(tmp_path):
    """Issue 8: the sticking view compares a StyleGAN3 and a StyleGAN2 network (random weights) side by side."""
    from afgan_tf import cli as tu
    G3 = tu.load_generator("random:stylegan3-t:16:1")
    G2 = tu.load_generator("random:stylegan2:16:1")
    assert tu.has_input_transform(G3) and not tu.has_input_transform(G2)
    z = np.random.RandomState(0).randn(1, 512).astype(np.float32)
    c = np.zeros([1, 0], np.float32)
    # const noise: StyleGAN2 images are deterministic through the tools
    np.testing.assert_array_equal(tu.generate(G2, z, c), tu.generate(G2, z, c))
    paths = texture_sticking.texture_sticking([G3, G2], str(tmp_path), frames=4, num_avg=3, video=False,
                                              log=lambda *_: None)
    pngs = [p for p in (paths.values() if isinstance(paths, dict) else paths) if str(p).endswith(".png")]
    assert pngs and all(os.path.getsize(p) > 0 for p in pngs)
    w = Image.open(pngs[0]).size[0]
    assert w > 2 * 16, f"side-by-side panel too narrow: {w}"
