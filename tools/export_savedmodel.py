"""Export a generator (our snapshot .npz, a training run's checkpoint, or an original .pkl) as a SavedModel.

  python tools/export_savedmodel.py --network=NETWORK --outdir=DIR [--max-batch=64] [--fast] [--overwrite]

The default export uses only stock TF ops: TF Serving and plain `tf.saved_model.load` run it without our
package. `--fast` uses the compiled op library, and the SavedModel then needs `import afgan_tf` to load.
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
flags.DEFINE_integer("max_batch", 64, "Largest batch a request may ask for (validated in the graph).")
flags.DEFINE_bool("fast", False, "Use the compiled ops (the SavedModel then needs our op library).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --outdir.")
flags.mark_flags_as_required(["network", "outdir"])


def main(argv):
    del argv
    import tensorflow as tf  # noqa: F401  (imported after flag parsing for a fast --help)
    from afgan_tf import convert, export
    if not os.path.exists(FLAGS.network):
        raise app.UsageError(f"--network: {FLAGS.network} does not exist")
    if FLAGS.max_batch < 1:
        raise app.UsageError(f"--max_batch must be >= 1, got {FLAGS.max_batch}")
    nets = convert.load_network(FLAGS.network)
    if FLAGS.which not in nets or nets[FLAGS.which] is None:
        raise app.UsageError(f"--which={FLAGS.which}: {FLAGS.network} holds {sorted(k for k in nets if nets[k] is not None)}")
    G = nets[FLAGS.which]
    path = export.export_generator(G, FLAGS.outdir, max_batch=FLAGS.max_batch, fast=FLAGS.fast,
                                   overwrite=FLAGS.overwrite, extra_info=dict(source=os.path.abspath(FLAGS.network),
                                                                              which=FLAGS.which))
    with open(os.path.join(path, "assets.extra", "afgan_tf_export.json")) as fh:
        info = json.load(fh)
    print(f"Exported {FLAGS.which} ({info['img_resolution']}x{info['img_resolution']}, z_dim {info['z_dim']}) "
          f"to {path}")
    print(f"Signatures: {', '.join(info['signatures'])}; needs op library: {info['needs_op_library']}")
    print(f"Inspect:  saved_model_cli show --dir {path} --all")


if __name__ == "__main__":
    app.run(main)
