"""Average power spectra of a dataset or a generator (docs/ALGORITHM.md §7.6).

  python tools/avg_spectra.py stats   --source=DATA|NET [--num=N] [--seed=0]
  python tools/avg_spectra.py calc    --source=DATA|NET --dest=X.npz --mean=M --std=S [--num=N] [--seed=0]
                                      [--beta=8] [--interp=4]
  python tools/avg_spectra.py heatmap X.npz [--save=X.png] [--dpi=100] [--smooth=1.25]
  python tools/avg_spectra.py slices  A.npz B.npz ... --save=slices.png [--dpi=100] [--smooth=0]

DATA: image folder / zip / our TFRecord dataset folder. NET: network file or spec (random:..., toy:...);
generated images use seed ``seed + i``, truncation 1, a random one-hot class for conditional networks.
``calc`` saves ``spectrum`` [interp·res, interp·res] (float64) and ``image_size``. Exit status 0 ok, 1 error.
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
    flags.DEFINE_string("source", None, "dataset (folder / zip / TFRecord folder) or network")
    flags.DEFINE_integer("num", None, "number of images (default: whole dataset; required for a network)")
    flags.DEFINE_integer("seed", 0, "random seed (network: image i uses seed + i)")
    flags.DEFINE_string("dest", None, "output .npz (calc)")
    flags.DEFINE_float("mean", None, "dataset mean (uint8 scale), from `stats`")
    flags.DEFINE_float("std", None, "dataset std (uint8 scale), from `stats`")
    flags.DEFINE_float("beta", 8.0, "Kaiser window beta")
    flags.DEFINE_integer("interp", 4, "zero-padding factor")
    flags.DEFINE_string("save", None, "output PNG (heatmap / slices)")
    flags.DEFINE_integer("dpi", 100, "PNG dpi")
    flags.DEFINE_float("smooth", None, "Gaussian smoothing (heatmap default 1.25, slices default 0)")
    flags.DEFINE_integer("batch", 16, "generator batch size")



def _is_dataset(src):
    import zipfile
    return os.path.isdir(src) or (os.path.isfile(src) and zipfile.is_zipfile(src) and not src.endswith(".npz"))


def iterate_source(source, num=None, seed=0, batch=16):
    """Yields uint8 NHWC batches of a dataset or of generated images (image i from seed + i)."""
    if isinstance(source, str) and _is_dataset(source):
        from afgan_tf.metrics.fid import iterate_dataset
        yield from iterate_dataset(source, batch_size=batch, max_items=num)
        return
    G = tu.load_generator(source) if isinstance(source, str) else source
    if num is None:
        raise ValueError("--num is required when --source is a network")
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    for i0 in range(0, num, batch):
        idx = range(i0, min(i0 + batch, num))
        z = np.concatenate([tu.z_from_seed(seed + i, int(G.z_dim)) for i in idx], 0)
        if c_dim:
            c = np.stack([np.eye(c_dim, dtype=np.float32)[np.random.RandomState(seed + i).randint(c_dim)]
                          for i in idx])
        else:
            c = np.zeros([len(idx), 0], np.float32)
        yield tu.to_uint8(tu.generate(G, z, c, 1.0))


def compute_stats(source, num=None, seed=0, batch=16):
    from afgan_tf.metrics.spectrum import MeanStd
    ms = MeanStd()
    for x in iterate_source(source, num, seed, batch):
        ms.append(x)
    return ms.result()


def compute_spectrum(source, dest, mean, std, num=None, seed=0, beta=8.0, interp=4, batch=16):
    from afgan_tf.utils import write_atomic
    from afgan_tf.metrics.spectrum import SpectrumAccumulator
    acc = SpectrumAccumulator(mean, std, beta=beta, interp=interp)
    for x in iterate_source(source, num, seed, batch):
        acc.append(x)
    spec = acc.result()
    write_atomic(dest, lambda fh: np.savez(fh, spectrum=spec, image_size=np.int64(acc.res)))
    return spec, acc.res


def _load_spec(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"spectrum file not found: {path}")
    with np.load(path) as d:
        if "spectrum" not in d or "image_size" not in d:
            raise ValueError(f"{path}: not a spectrum file (needs 'spectrum' and 'image_size'; make it with calc)")
        return d["spectrum"], int(d["image_size"])


def main(argv):
    if len(argv) < 2 or argv[1] not in ("stats", "calc", "heatmap", "slices"):
        print("Error: give a command: stats | calc | heatmap | slices", file=sys.stderr)
        return 1
    cmd, args = argv[1], argv[2:]
    from afgan_tf.metrics import spectrum as sp
    try:
        if cmd in ("stats", "calc"):
            if args:
                raise ValueError(f"unexpected arguments: {args}")
            if FLAGS.source is None:
                raise ValueError("--source is required")
        if cmd == "stats":
            mean, std = compute_stats(FLAGS.source, FLAGS.num, FLAGS.seed, FLAGS.batch)
            print(f"--mean={mean:g} --std={std:g}")
        elif cmd == "calc":
            if FLAGS.dest is None or FLAGS.mean is None or FLAGS.std is None:
                raise ValueError("calc needs --dest, --mean and --std (get mean/std with the stats command)")
            _, res = compute_spectrum(FLAGS.source, FLAGS.dest, FLAGS.mean, FLAGS.std, FLAGS.num, FLAGS.seed,
                                      FLAGS.beta, FLAGS.interp, FLAGS.batch)
            print(f"spectrum of {res}x{res} images saved to {FLAGS.dest}")
        elif cmd == "heatmap":
            if len(args) != 1:
                raise ValueError("heatmap takes exactly one .npz file")
            spec, res = _load_spec(args[0])
            save = FLAGS.save or os.path.splitext(args[0])[0] + ".png"
            sp.plot_heatmap(spec, res, save, dpi=FLAGS.dpi, smooth=1.25 if FLAGS.smooth is None else FLAGS.smooth,
                            title=os.path.basename(args[0]))
            print(f"heatmap saved to {save}")
        else:
            if not args:
                raise ValueError("slices takes one or more .npz files")
            if FLAGS.save is None:
                raise ValueError("slices needs --save=FILE.png")
            loaded = [_load_spec(a) for a in args]
            sizes = {r for _, r in loaded}
            if len(sizes) != 1:
                raise ValueError(f"spectra have different image sizes: {sorted(sizes)}")
            sp.plot_slices([s for s, _ in loaded], [os.path.splitext(os.path.basename(a))[0] for a in args],
                           sizes.pop(), FLAGS.save, dpi=FLAGS.dpi, smooth=FLAGS.smooth or 0.0)
            print(f"slices saved to {FLAGS.save}")
    except tu.TOOL_ERRORS as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=tu.normalise_argv(sys.argv))
