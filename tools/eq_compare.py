"""EQ-T / EQ-T_frac / EQ-R of StyleGAN2 (config a and the paper's config b, Fourier input), StyleGAN3-T and
StyleGAN3-R side by side, with the texture-sticking views of the same networks (issue 8, paper Fig. 3 / Fig. 1).

  python tools/eq_compare.py --outdir=out [--res=64] [--cbase=2048] [--cmax=64] [--num=64] [--seed=0]
      [--net_seed=0] [--cfgs=stylegan2,stylegan2-fourier,stylegan3-t,stylegan3-r] [--network=LABEL=SPEC ...]
      [--num_avg=32] [--frames=48]

Default networks: random-weight generators of the train.py presets (``afgan_tf.networks.presets``) at --res with
channel_base / channel_max = --cbase / --cmax, float32, each built after ``keras.utils.set_random_seed(net_seed)``.
--network=LABEL=SPEC adds / replaces networks by any tool spec (``.npz`` / ``.pkl`` file, ``random:<cfg>:<res>``,
``toy``), e.g. trained snapshots. Every network gets the same metric protocol (``eq_metric``: the original's
eqt50k_int / eqt50k_frac / eqr50k with --num samples, batch 4, fresh z per batch, one transform per batch, from
``numpy.RandomState(--seed)``, so all networks see the same latents and transforms). A network without
``synthesis.input.transform`` (plain StyleGAN2, config a) is reported as n/a, as the paper's "–".

Writes ``eq_compare.json`` (all numbers + settings), ``eq_compare.md`` (the table) and ``eq_compare.png``: one row
per network: the average of --num_avg images from a small latent neighbourhood (+ 2× centre crop) and the
streak image of a --frames latent interpolation with a slow sub-pixel translation through the input transform
where there is one (``tools/texture_sticking.py``'s views), each row's float output mapped linearly per channel so
that the 1st..99th percentile of that network's frames fill 0..255 (random networks have very different output scales).
The table also gives each network's output RMS and the EQ numbers as SNR = PSNR + 20·log10(RMS / 2) (the PSNR's
peak is fixed at 2, so it rewards faint outputs). Exit status 0 ok, 1 error.
"""
import json
import os
import sys
import time

import numpy as np
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from afgan_tf import cli as tu  # noqa: E402
from afgan_tf.utils import write_atomic  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_CFGS = ("stylegan2", "stylegan2-fourier", "stylegan3-t", "stylegan3-r")
LABELS = {"stylegan2": "StyleGAN2 (config a, const input)", "stylegan2-fourier": "StyleGAN2 (config b, Fourier input)",
          "stylegan3-t": "StyleGAN3-T", "stylegan3-r": "StyleGAN3-R"}
KINDS = (("eqt50k_int", "EQ-T"), ("eqt50k_frac", "EQ-T_frac"), ("eqr50k", "EQ-R"))


def define_flags():
    """Defines this tool's absl flags (only when run as a script, so the tools can be imported together)."""
    flags.DEFINE_string("outdir", None, "output folder (eq_compare.json / .md / .png)")
    flags.DEFINE_integer("res", 64, "resolution of the random networks")
    flags.DEFINE_integer("cbase", 2048, "channel_base of the random networks (StyleGAN3-R doubles it, as train.py)")
    flags.DEFINE_integer("cmax", 64, "channel_max of the random networks (StyleGAN3-R doubles it, as train.py)")
    flags.DEFINE_list("cfgs", list(DEFAULT_CFGS), "presets of the random networks (empty: only --network)")
    flags.DEFINE_integer("net_seed", 0, "keras / numpy seed used to build each random network")
    flags.DEFINE_multi_string("network", [], "extra network LABEL=SPEC (file, random:<cfg>:<res>[:seed], toy)")
    flags.DEFINE_integer("num", 64, "samples per metric (the original: 50000)")
    flags.DEFINE_integer("seed", 0, "seed of latents and transforms (same for every network)")
    flags.DEFINE_integer("batch", 4, "metric batch size (one transform per batch; the original: 4)")
    flags.DEFINE_integer("num_avg", 32, "images averaged for the texture-sticking view (0: no picture)")
    flags.DEFINE_integer("frames", 48, "frames of the streak view")


def build_random(cfg, res, cbase, cmax, net_seed=0):
    """Random-weight generator of preset ``cfg`` (float32 kwargs), reproducible from ``net_seed``."""
    import keras
    from afgan_tf.networks import presets
    keras.utils.set_random_seed(int(net_seed))      # also seeds numpy (Fourier frequencies / phases)
    kw = presets.generator_kwargs(cfg, int(res), cbase=int(cbase), cmax=int(cmax), fp32=True)
    return presets.generator_class(cfg)(**kw)


def _num_params(G):
    return int(sum(int(np.prod(v.shape)) for v in getattr(G, "trainable_variables", [])))


def output_rms(G, num=16, seed=0, batch=8):
    """RMS of G's output over ``num`` images (z ~ N(0, I) from RandomState(seed), psi 1, const noise)."""
    z = np.random.RandomState(seed).randn(num, int(G.z_dim)).astype(np.float32)
    c = tu.labels_for(G, 1, 0 if int(getattr(G, "c_dim", 0) or 0) else None)
    sq = [np.square(tu.generate(G, z[i:i + batch], np.repeat(c, len(z[i:i + batch]), 0)).astype(np.float64)).mean()
          for i in range(0, num, batch)]
    return float(np.sqrt(np.mean(sq)))


def measure(G, num=64, seed=0, batch=4, log=print, label=""):
    """{metric name: PSNR dB or None (no input transform)} + seconds per metric."""
    from afgan_tf.metrics.equivariance import eq_metric
    out, secs = {}, {}
    for name, short in KINDS:
        if not tu.has_input_transform(G):
            out[name] = None
            continue
        t0 = time.time()
        r = eq_metric(G, name, num_samples=num, batch_size=batch, seed=seed)
        secs[name] = round(time.time() - t0, 2)
        out[name] = r["psnr"]
        log(f"{label}: {short} = {r['psnr']:.2f} dB ({secs[name]} s)")
    return out, secs


def _fmt(v):
    if v is None:
        return "n/a"
    return "inf" if np.isinf(v) else f"{v:.2f}"


def snr(psnr, rms):
    """PSNR (peak 2) re-expressed relative to the output RMS: SNR = PSNR + 20·log10(rms / 2) (dB)."""
    return None if psnr is None else float(psnr + 20 * np.log10(rms / 2))


def markdown_table(rows):
    """rows: [{label, params, rms, eqt50k_int, eqt50k_frac, eqr50k}] -> Markdown table text (PSNR, then SNR)."""
    lines = ["| network | parameters | output RMS | EQ-T | EQ-T_frac | EQ-R | EQ-T as SNR | EQ-T_frac as SNR | "
             "EQ-R as SNR |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['params']:,} | {r['rms']:.3f} | "
                     + " | ".join(_fmt(r[n]) for n, _ in KINDS) + " | "
                     + " | ".join(_fmt(snr(r[n], r['rms'])) for n, _ in KINDS) + " |")
    return "\n".join(lines) + "\n"


def _label_strip(text, width, height=14):
    """A white strip with ``text`` (PIL's default bitmap font) as uint8 [height, width, 3]."""
    from PIL import Image, ImageDraw
    im = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(im).text((2, 1), text, fill=(0, 0, 0))
    return np.asarray(im, np.uint8)


def _float_views(G, seed=0, num_avg=32, frames=48, shift=0.25, batch=8):
    """Float versions of texture_sticking's views: (average [R, R, C], frames [T, R, R, C]) of G's raw output."""
    import math
    import tensorflow as tf
    rng = np.random.RandomState(seed)
    z0 = rng.randn(1, int(G.z_dim)).astype(np.float32)
    z = (z0 + 0.3 * rng.randn(num_avg, int(G.z_dim))).astype(np.float32)
    c = tu.labels_for(G, 1, 0 if int(getattr(G, "c_dim", 0) or 0) else None)
    avg = np.concatenate([tu.generate(G, z[i:i + batch], np.repeat(c, len(z[i:i + batch]), 0))
                          for i in range(0, num_avg, batch)]).mean(0)
    za, zb = tu.z_from_seed(seed, int(G.z_dim)), tu.z_from_seed(seed + 1, int(G.z_dim))
    ws = np.asarray(G.mapping(tf.constant(np.concatenate([za, zb])), tf.constant(np.repeat(c, 2, 0))))
    R = int(G.img_resolution)
    movable = tu.has_input_transform(G)
    saved = G.synthesis.input.transform.numpy() if movable else None
    seq = []
    try:
        for f in range(frames):
            t = 0.5 - 0.5 * math.cos(math.pi * f / max(frames - 1, 1))
            if movable:
                tu.set_input_transform(G, tu.user_transform((f * shift / R, 0.0), 0.0))
            w = ws[0] + (ws[1] - ws[0]) * t
            seq.append(np.asarray(G.synthesis(tf.constant(w[None], tf.float32), noise_mode="const"))[0])
    finally:
        if movable:
            tu.set_input_transform(G, saved)
    return avg, np.stack(seq)


def picture(nets, num_avg=32, frames=48, seed=0, log=print):
    """uint8 picture: one row per (label, G): averaged view | 2x centre crop | streak image (the float output of
    each network linearly mapped per channel so its frames' 1st..99th percentile fill 0..255)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import texture_sticking as ts
    size = max(int(G.img_resolution) for _, G in nets) * 2
    rows = []
    for label, G in nets:
        log(f"{label}: texture-sticking views ...")
        avg, seq = _float_views(G, seed=seed, num_avg=num_avg, frames=frames)
        lo, hi = np.percentile(seq.reshape(-1, seq.shape[-1]), [1, 99], axis=0)     # per channel [C] each

        def u8(x):
            return np.clip((x - lo) * (255.0 / np.maximum(hi - lo, 1e-8)), 0, 255).astype(np.uint8)

        R = avg.shape[0]
        crop = u8(avg[R // 4:R // 4 + R // 2, R // 4:R // 4 + R // 2])
        streak = ts.streak_image(u8(seq), scale=1)                                   # [R/2, T, C]
        row = ts._side_by_side([ts._fit(u8(avg), size), ts._fit(crop, size), ts._fit(streak, size)], gap=4)
        rows.append(np.concatenate([_label_strip(label, row.shape[1]), row], 0))
    W = max(r.shape[1] for r in rows)
    rows = [np.concatenate([r, np.full([r.shape[0], W - r.shape[1], 3], 255, np.uint8)], 1) for r in rows]
    gap = np.full([6, W, 3], 255, np.uint8)
    out = []
    for i, r in enumerate(rows):
        out += [r] + ([gap] if i < len(rows) - 1 else [])
    return np.concatenate(out, 0)


def run(outdir, res=64, cbase=2048, cmax=64, cfgs=DEFAULT_CFGS, net_seed=0, networks=(), num=64, seed=0, batch=4,
        num_avg=32, frames=48, log=print):
    """Library entry: measures every network, writes eq_compare.{json,md,png}; returns the JSON record."""
    nets = []
    for cfg in cfgs:
        from afgan_tf.networks import presets
        if cfg not in presets.CONFIGS:
            raise ValueError(f"--cfgs: unknown preset {cfg!r}; expected some of {', '.join(presets.CONFIGS)}")
        nets.append((LABELS.get(cfg, cfg), cfg, build_random(cfg, res, cbase, cmax, net_seed)))
    for item in networks:
        label, eq, spec = item.partition("=")
        if not eq or not label or not spec:
            raise ValueError(f"--network must be LABEL=SPEC, got {item!r}")
        nets.append((label, spec, tu.load_generator(spec)))
    if not nets:
        raise ValueError("no networks: give --cfgs and/or --network")
    rows = []
    for label, spec, G in nets:
        vals, secs = measure(G, num=num, seed=seed, batch=batch, log=log, label=label)
        rms = output_rms(G, seed=seed)
        rows.append(dict(label=label, spec=spec, params=_num_params(G), img_resolution=int(G.img_resolution),
                         seconds=secs, init_kwargs=getattr(G, "init_kwargs", None), rms=rms, **vals,
                         snr={n: snr(vals[n], rms) for n, _ in KINDS}))
    record = dict(settings=dict(res=res, cbase=cbase, cmax=cmax, net_seed=net_seed, num=num, seed=seed, batch=batch,
                                weights="random (no training)" if not networks else "see spec",
                                protocol="eq_metric: eqt50k_int / eqt50k_frac / eqr50k with num samples"),
                  results=rows)
    os.makedirs(outdir, exist_ok=True)
    write_atomic(os.path.join(outdir, "eq_compare.json"), json.dumps(record, indent=1, default=float) + "\n")
    table = markdown_table(rows)
    md = (f"EQ metrics (dB), {num} samples each (seed {seed}, batch {batch}), same latents and transforms for every "
          f"network; PSNR with peak 2 as the paper, then re-expressed as SNR = PSNR + 20·log10(RMS / 2).\n\n"
          + table)
    write_atomic(os.path.join(outdir, "eq_compare.md"), md)
    print(table, end="")
    if num_avg > 0:
        tu.save_image(picture([(lbl, G) for lbl, _, G in nets], num_avg, frames, seed, log),
                      os.path.join(outdir, "eq_compare.png"))
    return record


def main(argv):
    def body():
        run(FLAGS.outdir, FLAGS.res, FLAGS.cbase, FLAGS.cmax, [c for c in FLAGS.cfgs if c], FLAGS.net_seed,
            FLAGS.network, FLAGS.num, FLAGS.seed, FLAGS.batch, FLAGS.num_avg, FLAGS.frames)
    return tu.tool_main(argv, FLAGS, ("outdir",), body)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=tu.normalise_argv(sys.argv))
