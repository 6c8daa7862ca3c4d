"""Generate images with a trained network (docs/ALGORITHM.md §9.1).

  python tools/gen_images.py --network=NET --seeds=0,1,4-6 --outdir=out [--trunc=0.7] [--class=3]
      [--translate=0.1,-0.05] [--rotate=10] [--grid=3x2]

NET: our .npz snapshot / an original .pkl (G_ema is used), ``random:stylegan3-t:64[:seed]`` or ``toy[:...]``
(see afgan_tf.cli.load_generator). Per seed: z = RandomState(seed).randn(1, z_dim); translate
(canvas units) / rotate (degrees) go through ``synthesis.input.transform`` (inverse matrix, like the original).
Writes ``seed{seed:04d}.png`` (and ``grid.png`` with --grid=WxH). Exit status 0 ok, 1 error.
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from afgan_tf import cli as tu  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Defines this tool's absl flags (only when run as a script, so the tools can be imported together)."""
    flags.DEFINE_string("network", None, "network: .npz/.pkl file, random:<cfg>:<res>[:seed] or toy[:k=v,...]")
    flags.DEFINE_string("seeds", None, "seeds, e.g. 0,1,4-6")
    flags.DEFINE_float("trunc", 1.0, "truncation psi")
    flags.DEFINE_integer("class", None, "class label (conditional networks)")
    flags.DEFINE_string("noise_mode", "const", "accepted for compatibility (StyleGAN3 has no noise inputs)")
    flags.DEFINE_string("translate", "0,0", "translate X,Y in canvas units (image widths)")
    flags.DEFINE_float("rotate", 0.0, "rotation angle in degrees")
    flags.DEFINE_string("outdir", None, "output folder")
    flags.DEFINE_string("grid", None, "also write grid.png with WxH cells (e.g. 4x2)")



def generate_images(network, seeds, outdir, trunc=1.0, class_idx=None, translate=(0.0, 0.0), rotate=0.0,
                    grid=None, log=print):
    """Library entry: writes seed%04d.png per seed (+ grid.png); returns the list of written paths."""
    G = network if not isinstance(network, str) else tu.load_generator(network)
    seeds = tu.parse_range(seeds) if not isinstance(seeds, (list, tuple)) else list(seeds)
    gw_gh = tu.parse_grid(grid) if isinstance(grid, str) else grid
    c = tu.labels_for(G, 1, class_idx, warn=log)
    saved = None
    if tu.has_input_transform(G):
        saved = G.synthesis.input.transform.numpy()
        tu.set_input_transform(G, tu.user_transform(translate, rotate))
    elif tuple(translate) != (0.0, 0.0) or rotate != 0.0:
        raise ValueError("--translate/--rotate need a generator with synthesis.input.transform (StyleGAN3)")
    paths, imgs = [], []
    try:
        for i, seed in enumerate(seeds):
            log(f"Generating image for seed {seed} ({i + 1}/{len(seeds)}) ...")
            img = tu.to_uint8(tu.generate(G, tu.z_from_seed(seed, int(G.z_dim)), c, trunc))[0]
            p = os.path.join(outdir, f"seed{seed:04d}.png")
            tu.save_image(img, p)
            paths.append(p)
            imgs.append(img)
    finally:
        if saved is not None:
            tu.set_input_transform(G, saved)
    if gw_gh is not None:
        p = os.path.join(outdir, "grid.png")
        tu.save_image(tu.make_grid(imgs[:gw_gh[0] * gw_gh[1]], *gw_gh), p)
        paths.append(p)
    return paths


def main(argv):
    def body():
        paths = generate_images(FLAGS.network, FLAGS.seeds, FLAGS.outdir, trunc=FLAGS.trunc,
                                class_idx=FLAGS["class"].value, translate=tu.parse_vec2(FLAGS.translate),
                                rotate=FLAGS.rotate, grid=FLAGS.grid)
        print(f"{len(paths)} files written to {os.path.abspath(FLAGS.outdir)}")
    return tu.tool_main(argv, FLAGS, ("network", "seeds", "outdir"), body)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=tu.normalise_argv(sys.argv))
