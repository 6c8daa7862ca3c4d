"""Convert an original StyleGAN3 network pickle to afgan-tf formats (no code from the pickle is executed).

  python tools/convert_pkl.py --source=network-snapshot-000000.pkl --dest=DIR [--max-gib=4] [--max-inflation=16]

Writes (each file atomically: temp file + rename):
  DIR/network-snapshot.npz         our network snapshot (G, D, G_ema; original names/layout; load with
                                   ``afgan_tf.convert.load_network``)
  DIR/G_ema.weights.h5             Keras-format weights of G_ema (``G.load_weights`` after building
                                   ``Generator(**init_kwargs)``)
  DIR/G_ema.init_kwargs.json       {"class": ..., "init_kwargs": ...} for that rebuild
and prints a summary.

Untrusted files are read under limits (``afgan_tf.pickle_reader.Limits``; see docs/convert.md): no code from the
file runs, at most --max-gib GiB and --max-inflation times the file's size are decoded, a tensor may not claim more
elements than its storage holds, and the networks' constructor kwargs must be within ``afgan_tf.convert.KWARG_BOUNDS``.

Exit status: 0 ok; 1 bad input or a broken limit (one ``Error: ...`` line naming the file / flag / limit on
stderr), a missing or unknown flag, or stray arguments.
"""
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from afgan_tf.utils import atomic_path, write_atomic  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("source", None, "original network pickle (.pkl) or our .npz snapshot")
    flags.DEFINE_string("dest", None, "output directory (created if needed)")
    flags.DEFINE_boolean("weights_h5", True, "also write G_ema.weights.h5 + G_ema.init_kwargs.json")
    flags.DEFINE_float("max_gib", 4.0, "most GiB decoded from --source (storages + tensors)", lower_bound=1e-6)
    flags.DEFINE_float("max_inflation", 16.0, "most bytes decoded per byte of --source (files under 1 MiB count "
                       "as 1 MiB) and per compressed byte of a zip entry", lower_bound=1.0)


def _count(net):
    import numpy as np
    return int(sum(int(np.prod(v.shape)) for v in net.weights))


def convert(source, dest, weights_h5=True, out=print, limits=None):
    """Library entry of the CLI. Returns {name: written path}. ``limits``: ``pickle_reader.Limits``."""
    from afgan_tf import convert as conv
    if not os.path.isfile(source):
        raise FileNotFoundError(f"--source: {source} does not exist")
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise ValueError(f"--dest: {dest} exists and is not a directory")
    nets = conv.load_network(source, limits=limits)
    os.makedirs(dest, exist_ok=True)
    present = {k: nets[k] for k in ("G", "D", "G_ema") if nets.get(k) is not None}
    if not present:
        raise ValueError(f"--source: {source} holds none of G, D, G_ema")
    extra = dict(source=os.path.abspath(source))
    if nets.get("training_set_kwargs") is not None:
        extra["training_set_kwargs"] = nets["training_set_kwargs"]
    if nets.get("augment_pipe") is not None:
        ap = nets["augment_pipe"]
        extra["augment_pipe"] = dict(class_name=ap.get("class_name"), init_kwargs=ap.get("init_kwargs"))
    written = {}
    written["snapshot"] = conv.save_network_snapshot(os.path.join(dest, "network-snapshot.npz"), present, extra)
    G = present.get("G_ema")
    if weights_h5 and G is not None:
        h5 = os.path.join(dest, "G_ema.weights.h5")
        with atomic_path(h5, suffix=".weights.h5") as tmp:  # Keras wants the .weights.h5 ending
            G.save_weights(tmp)
        written["weights_h5"] = h5
        js = os.path.join(dest, "G_ema.init_kwargs.json")
        text = json.dumps({"class": conv.network_class_name(G), "init_kwargs": G.init_kwargs}, indent=2)
        write_atomic(js, text)
        written["init_kwargs"] = js
    out(f"Source: {source}")
    for k, net in present.items():
        kw = net.init_kwargs
        out(f"  {k:6s} {conv.network_class_name(net):24s} {kw.get('img_resolution')}x{kw.get('img_resolution')} "
            f"c_dim={kw.get('c_dim')} params+buffers={_count(net):,}")
    if nets.get("augment_pipe") is not None:
        out(f"  augment_pipe: {nets['augment_pipe'].get('class_name')} (kept as info in meta/extra only)")
    for k, p in written.items():
        out(f"Wrote {k}: {p}")
    return written


def main(argv):
    from afgan_tf import cli
    from afgan_tf.pickle_reader import Limits

    def body():
        limits = Limits(max_bytes=int(FLAGS.max_gib * (1 << 30)), max_inflation=FLAGS.max_inflation)
        try:
            convert(FLAGS.source, FLAGS.dest, weights_h5=FLAGS.weights_h5, limits=limits)
        except (TypeError, KeyError, NotImplementedError) as e:  # a pickle of the wrong shape
            raise ValueError(f"{FLAGS.source}: {e.args[0] if e.args else e}") from None
    return cli.tool_main(argv, FLAGS, ("source", "dest"), body)


if __name__ == "__main__":
    from afgan_tf.cli import normalise_argv  # --max-gib -> --max_gib
    define_flags()
    app.run(main, argv=normalise_argv(sys.argv))
