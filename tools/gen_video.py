"""Latent-interpolation video (mp4 grid) of a trained network (docs/ALGORITHM.md §9.2).

  python tools/gen_video.py --network=NET --seeds=0-31 --grid=4x2 --output=lerp.mp4 [--num-keyframes=4]
      [--w-frames=120] [--trunc=1] [--shuffle-seed=0] [--fps=60]

Seeds are tiled (and optionally shuffled) into num_keyframes·W·H slots; each grid cell interpolates its keyframe
ws = mapping(z, c, ψ) with a cubic spline over the keyframe index, made periodic by tiling the keyframes 5×;
frame f sits at f / w_frames; num_keyframes·w_frames frames; H.264 via imageio's bundled ffmpeg.
Exit status 0 ok, 1 error.
"""
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
    flags.DEFINE_string("network", None, "network: .npz/.pkl file, random:<cfg>:<res>[:seed] or toy[:k=v,...]")
    flags.DEFINE_string("seeds", None, "keyframe seeds, e.g. 0-31")
    flags.DEFINE_integer("shuffle_seed", None, "shuffle the seed slots with this random seed")
    flags.DEFINE_string("grid", "1x1", "grid WxH")
    flags.DEFINE_integer("num_keyframes", None, "keyframes per cell (default: #seeds / (W·H))")
    flags.DEFINE_integer("w_frames", 120, "frames between keyframes")
    flags.DEFINE_float("trunc", 1.0, "truncation psi")
    flags.DEFINE_integer("class", None, "class label (conditional networks)")
    flags.DEFINE_integer("fps", 60, "frames per second")
    flags.DEFINE_string("output", None, "output .mp4")



def interpolation_ws(G, seeds, grid=(1, 1), num_keyframes=None, shuffle_seed=None, trunc=1.0, class_idx=None):
    """Keyframe ws [gh, gw, num_keyframes, num_ws, w_dim] for the seed slots (tiled / shuffled)."""
    import scipy.interpolate  # noqa: F401  (checked early)
    gw, gh = grid
    if num_keyframes is None:
        if len(seeds) % (gw * gh) != 0:
            raise ValueError(f"number of seeds ({len(seeds)}) must be divisible by the grid size W·H = {gw * gh}"
                             f" (or give --num-keyframes)")
        num_keyframes = len(seeds) // (gw * gh)
    if num_keyframes < 1:
        raise ValueError(f"--num-keyframes must be >= 1, got {num_keyframes}")
    slots = np.array([seeds[i % len(seeds)] for i in range(num_keyframes * gw * gh)], np.int64)
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(slots)
    z = np.concatenate([tu.z_from_seed(int(s), int(G.z_dim)) for s in slots], 0)
    c = tu.labels_for(G, len(slots), class_idx)
    import tensorflow as tf
    ws = G.mapping(tf.constant(z), tf.constant(c), truncation_psi=trunc)
    ws = ws.numpy() if hasattr(ws, "numpy") else np.asarray(ws)
    return ws.reshape([gh, gw, num_keyframes] + list(ws.shape[1:]))


def video_frames(G, kws, w_frames=120):
    """Generator of uint8 frames [gh·R, gw·R, C] interpolating keyframe ws kws [gh, gw, K, num_ws, w_dim]."""
    import scipy.interpolate
    import tensorflow as tf
    gh, gw, K = kws.shape[:3]
    if w_frames < 1:
        raise ValueError(f"--w-frames must be >= 1, got {w_frames}")
    interps = []
    for yi in range(gh):
        row = []
        for xi in range(gw):
            x = np.arange(-K * 2, K * 3)
            y = np.tile(kws[yi, xi], [5, 1, 1])
            kind = "cubic" if len(x) >= 4 else "linear"
            row.append(scipy.interpolate.interp1d(x, y, kind=kind, axis=0))
        interps.append(row)
    syn = tf.function(lambda w: G.synthesis(w, noise_mode="const"))
    for f in range(K * w_frames):
        ws = np.stack([interps[yi][xi](f / w_frames) for yi in range(gh) for xi in range(gw)], 0)
        img = syn(tf.constant(ws, tf.float32))
        img = tu.to_uint8(img.numpy() if hasattr(img, "numpy") else img)
        yield tu.make_grid(img, gw, gh)


def make_video(network, seeds, output, grid="1x1", num_keyframes=None, w_frames=120, trunc=1.0, shuffle_seed=None,
               class_idx=None, fps=60, log=print):
    """Library entry: writes the mp4; returns (path, number of frames)."""
    G = network if not isinstance(network, str) else tu.load_generator(network)
    seeds = tu.parse_range(seeds) if not isinstance(seeds, (list, tuple)) else list(seeds)
    gw_gh = tu.parse_grid(grid) if isinstance(grid, str) else tuple(grid)
    kws = interpolation_ws(G, seeds, gw_gh, num_keyframes, shuffle_seed, trunc, class_idx)
    n = kws.shape[2] * w_frames
    count = [0]

    def frames():
        for fr in video_frames(G, kws, w_frames):
            count[0] += 1
            if count[0] % 10 == 0 or count[0] == n:
                log(f"frame {count[0]}/{n}")
            yield fr

    tu.write_video(frames(), output, fps=fps)
    return output, count[0]


def main(argv):
    def body():
        path, n = make_video(FLAGS.network, FLAGS.seeds, FLAGS.output, grid=FLAGS.grid,
                             num_keyframes=FLAGS.num_keyframes, w_frames=FLAGS.w_frames, trunc=FLAGS.trunc,
                             shuffle_seed=FLAGS.shuffle_seed, class_idx=FLAGS["class"].value, fps=FLAGS.fps)
        print(f"{n} frames written to {os.path.abspath(path)}")
    return tu.tool_main(argv, FLAGS, ("network", "seeds", "output"), body)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=tu.normalise_argv(sys.argv))
