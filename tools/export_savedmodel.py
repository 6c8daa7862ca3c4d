"""Export a generator (our snapshot .npz, a training run's checkpoint, or an original .pkl) as a SavedModel.

  python tools/export_savedmodel.py --network=NETWORK --outdir=DIR [--which=G_ema] [--max-batch=64] [--fast]
      [--overwrite]

Flags may be spelled with dashes or underscores (--max-batch = --max_batch). The default export uses only stock TF
ops: TF Serving and plain `tf.saved_model.load` run it without our package. `--fast` uses the compiled op library,
and the SavedModel then needs `import afgan_tf` to load. A hostile network file is refused like in
tools/convert_pkl.py (afgan_tf.pickle_reader.Limits, afgan_tf.convert.KWARG_BOUNDS).

Exit status: 0 ok; 1 bad input (one ``Error: ...`` line on stderr naming the file / flag / limit: a missing,
corrupt or refused --network, an unknown --which, an existing --outdir without --overwrite), a missing or unknown
flag, or stray arguments.
"""
import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("network", None, "Network: our snapshot .npz, a run dir / checkpoint, or an original .pkl.")
flags.DEFINE_string("outdir", None, "Destination directory of the SavedModel (must not exist unless --overwrite).")
flags.DEFINE_string("which", "G_ema", "Which generator of the snapshot to export (G_ema or G).")
flags.DEFINE_integer("max_batch", 64, "Largest batch a request may ask for (validated in the graph).", lower_bound=1)
flags.DEFINE_bool("fast", False, "Use the compiled ops (the SavedModel then needs our op library).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --outdir.")


def main(argv):
    from afgan_tf import cli

    def body():
        if not os.path.exists(FLAGS.network):
            raise FileNotFoundError(f"--network: {FLAGS.network} does not exist")
        if FLAGS.which not in ("G_ema", "G"):
            raise ValueError(f"--which must be G_ema or G, got {FLAGS.which!r}")
        import tensorflow as tf  # noqa: F401  (imported after flag parsing for a fast --help)
        from afgan_tf import convert, export
        nets = convert.load_network(FLAGS.network, which=(FLAGS.which,))
        if nets.get(FLAGS.which) is None:
            raise ValueError(f"--which={FLAGS.which}: {FLAGS.network} holds no {FLAGS.which}")
        G = nets[FLAGS.which]
        path = export.export_generator(G, FLAGS.outdir, max_batch=FLAGS.max_batch, fast=FLAGS.fast,
                                       overwrite=FLAGS.overwrite,
                                       extra_info=dict(source=os.path.abspath(FLAGS.network), which=FLAGS.which))
        with open(os.path.join(path, "assets.extra", "afgan_tf_export.json")) as fh:
            info = json.load(fh)
        print(f"Exported {FLAGS.which} ({info['img_resolution']}x{info['img_resolution']}, z_dim {info['z_dim']}) "
              f"to {path}")
        print(f"Signatures: {', '.join(info['signatures'])}; needs op library: {info['needs_op_library']}")
        print(f"Inspect:  saved_model_cli show --dir {path} --all")
    return cli.tool_main(argv, FLAGS, ("network", "outdir"), body)


if __name__ == "__main__":
    from afgan_tf.cli import normalise_argv  # --max-batch -> --max_batch
    app.run(main, argv=normalise_argv(sys.argv))
