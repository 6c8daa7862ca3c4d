"""Texture-sticking views (paper Fig. 1) for one network or two side by side (e.g. StyleGAN3 vs a baseline).

  python tools/texture_sticking.py --network=A.pkl [--network=B.pkl] --outdir=out [--seed=0] [--seed2=1]
      [--num-avg=64] [--radius=0.3] [--frames=96] [--shift=0.25] [--column=-1] [--fps=30] [--no-video]

Writes (each image: one panel per network, left to right, labelled by order of --network):
* ``averaged.png`` — average of --num-avg images from a small latent neighbourhood z0 + radius·ε of the central
  latent of --seed, next to a 2× zoomed centre crop. An equivariant generator gives a uniformly blurry average;
  texture glued to pixel coordinates stays sharp.
* ``streak.png`` — a latent interpolation (seed → seed2, --frames steps, plus a slow sub-pixel translation of
  --shift pixels per frame through the input transform where the network has one); the same short vertical
  column of pixels (--column, default the centre) is cut from every frame and the columns are placed side by
  side: horizontal streaks reveal sticking. Upscaled 4× (nearest) for viewing.
* ``sticking.mp4`` + ``still.png`` — the same sequence as a video, and 4 evenly spaced frames as a still.
Exit status 0 ok, 1 error.
"""
import math
import os
import sys

import numpy as np
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from afgan_tf import cli as tu  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's absl flags (only when run as a script, so the tools can be imported together)."""
    flags.DEFINE_multi_string("network", None, "network(s): file, random:<cfg>:<res>[:seed] or toy[:k=v,...]; "
                              "give twice for a side-by-side comparison")
    flags.DEFINE_string("outdir", None, "output folder")
    flags.DEFINE_integer("seed", 0, "central / start latent seed")
    flags.DEFINE_integer("seed2", 1, "end latent seed of the interpolation")
    flags.DEFINE_integer("num_avg", 64, "images averaged in the latent neighbourhood")
    flags.DEFINE_float("radius", 0.3, "std of the latent neighbourhood (z units)")
    flags.DEFINE_integer("frames", 96, "frames of the interpolation / translation sequence")
    flags.DEFINE_float("shift", 0.25, "sub-pixel translation per frame (pixels)")
    flags.DEFINE_integer("column", -1, "pixel column cut for the streak image (-1 = centre)")
    flags.DEFINE_integer("fps", 30, "video frames per second")
    flags.DEFINE_boolean("video", True, "write sticking.mp4")
    flags.DEFINE_float("trunc", 1.0, "truncation psi")
    flags.DEFINE_integer("batch", 8, "generator batch size")



def _gen(G, z, trunc, batch):
    c = tu.labels_for(G, 1, 0 if int(getattr(G, "c_dim", 0) or 0) else None)
    out = []
    for i in range(0, len(z), batch):
        zz = z[i:i + batch]
        out.append(tu.generate(G, zz, np.repeat(c, len(zz), 0), trunc))
    return np.concatenate(out, 0)


def averaged_view(G, seed=0, num=64, radius=0.3, trunc=1.0, batch=8):
    """(average uint8 [R, R, C], 2× zoomed centre crop uint8 [R, R, C])."""
    rng = np.random.RandomState(seed)
    z0 = rng.randn(1, int(G.z_dim)).astype(np.float32)
    z = (z0 + radius * rng.randn(num, int(G.z_dim))).astype(np.float32)
    avg = _gen(G, z, trunc, batch).mean(0)                                          # [R, R, C]
    R = avg.shape[0]
    crop = avg[R // 4:R // 4 + R // 2, R // 4:R // 4 + R // 2]
    crop = np.repeat(np.repeat(crop, 2, 0), 2, 1)
    return tu.to_uint8(avg), tu.to_uint8(crop)


def sequence(G, seed=0, seed2=1, frames=96, shift=0.25, trunc=1.0):
    """Frames [T, R, R, C] (uint8) of a latent interpolation with a slow sub-pixel translation."""
    import tensorflow as tf
    za = tu.z_from_seed(seed, int(G.z_dim))
    zb = tu.z_from_seed(seed2, int(G.z_dim))
    c = tu.labels_for(G, 2, 0 if int(getattr(G, "c_dim", 0) or 0) else None)
    ws = G.mapping(tf.constant(np.concatenate([za, zb])), tf.constant(c), truncation_psi=trunc)
    ws = ws.numpy() if hasattr(ws, "numpy") else np.asarray(ws)
    R = int(G.img_resolution)
    movable = tu.has_input_transform(G)
    saved = G.synthesis.input.transform.numpy() if movable else None
    out = []
    try:
        for f in range(frames):
            t = 0.5 - 0.5 * math.cos(math.pi * f / max(frames - 1, 1))              # smooth 0 -> 1
            w = ws[0] + (ws[1] - ws[0]) * t
            if movable:
                tu.set_input_transform(G, tu.user_transform((f * shift / R, 0.0), 0.0))
            img = G.synthesis(tf.constant(w[None], tf.float32), noise_mode="const")
            out.append(tu.to_uint8(img.numpy() if hasattr(img, "numpy") else img)[0])
    finally:
        if movable:
            tu.set_input_transform(G, saved)
    return np.stack(out)


def streak_image(frames, column=-1, scale=4):
    """Column slices of each frame side by side: [rows, T, C] -> upscaled (nearest)."""
    T, R, _, C = frames.shape
    col = R // 2 if column < 0 else column
    if not 0 <= col < R:
        raise ValueError(f"--column must be in 0..{R - 1}, got {column}")
    rows = slice(R // 4, R // 4 + R // 2)
    img = frames[:, rows, col, :].transpose(1, 0, 2)                               # [R/2, T, C]
    return np.repeat(np.repeat(img, scale, 0), scale, 1)


def _side_by_side(panels, gap=4):
    H = max(p.shape[0] for p in panels)
    C = max(p.shape[2] for p in panels)
    out = []
    for i, p in enumerate(panels):
        if p.shape[2] != C:
            p = np.repeat(p, C, 2)
        if p.shape[0] != H:
            pad = np.zeros([H - p.shape[0], p.shape[1], C], p.dtype)
            p = np.concatenate([p, pad], 0)
        out.append(p)
        if i < len(panels) - 1:
            out.append(np.full([H, gap, C], 255, np.uint8))
    return np.concatenate(out, 1)


def _fit(img, size):
    """Nearest-resize uint8 [H, W, C] so that H == size (for panels of networks of different resolutions)."""
    if img.shape[0] == size:
        return img
    k = size / img.shape[0]
    yi = np.minimum((np.arange(size) / k).astype(int), img.shape[0] - 1)
    xi = np.minimum((np.arange(int(round(img.shape[1] * k))) / k).astype(int), img.shape[1] - 1)
    return img[yi][:, xi]


def texture_sticking(networks, outdir, seed=0, seed2=1, num_avg=64, radius=0.3, frames=96, shift=0.25, column=-1,
                     fps=30, video=True, trunc=1.0, batch=8, log=print):
    """Library entry: writes averaged.png, streak.png, still.png (+ sticking.mp4); returns the paths."""
    if not networks or len(networks) > 2:
        raise ValueError(f"give one or two networks, got {len(networks or [])}")
    Gs = [n if not isinstance(n, str) else tu.load_generator(n) for n in networks]
    size = max(int(G.img_resolution) for G in Gs)
    avg_panels, streaks, seqs = [], [], []
    for i, G in enumerate(Gs):
        log(f"network {i + 1}/{len(Gs)}: averaging {num_avg} images ...")
        avg, crop = averaged_view(G, seed, num_avg, radius, trunc, batch)
        avg_panels.append(_side_by_side([_fit(avg, size), _fit(crop, size)], gap=2))
        log(f"network {i + 1}/{len(Gs)}: rendering {frames} frames ...")
        seq = sequence(G, seed, seed2, frames, shift, trunc)
        seqs.append(np.stack([_fit(f, size) for f in seq]))
        streaks.append(streak_image(seqs[-1], column if column < 0 else int(column * size / G.img_resolution)))
    paths = {}
    paths["averaged"] = os.path.join(outdir, "averaged.png")
    tu.save_image(_side_by_side(avg_panels, gap=8), paths["averaged"])
    paths["streak"] = os.path.join(outdir, "streak.png")
    tu.save_image(_side_by_side(streaks, gap=8), paths["streak"])
    T = frames
    pick = sorted({int(round(k * (T - 1) / 3)) for k in range(4)})
    rows = [_side_by_side([s[k] for k in pick], gap=2) for s in seqs]
    gap_row = np.full([4, rows[0].shape[1], rows[0].shape[2]], 255, np.uint8)
    still = rows[0] if len(rows) == 1 else np.concatenate([rows[0], gap_row, rows[1]], 0)
    paths["still"] = os.path.join(outdir, "still.png")
    tu.save_image(still, paths["still"])
    if video:
        paths["video"] = os.path.join(outdir, "sticking.mp4")

        def frames_iter():
            for f in range(T):
                fr = _side_by_side([s[f] for s in seqs], gap=8)
                # H.264 (yuv420p) needs even sizes
                h, w = fr.shape[0] - fr.shape[0] % 2, fr.shape[1] - fr.shape[1] % 2
                yield fr[:h, :w]

        tu.write_video(frames_iter(), paths["video"], fps=fps)
    return paths


def main(argv):
    def body():
        paths = texture_sticking(FLAGS.network, FLAGS.outdir, FLAGS.seed, FLAGS.seed2, FLAGS.num_avg, FLAGS.radius,
                                 FLAGS.frames, FLAGS.shift, FLAGS.column, FLAGS.fps, FLAGS.video, FLAGS.trunc,
                                 FLAGS.batch)
        for k, p in paths.items():
            print(f"{k}: {p}")
    return tu.tool_main(argv, FLAGS, ("network", "outdir"), body)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=tu.normalise_argv(sys.argv))
