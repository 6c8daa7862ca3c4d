r"""Build a training dataset (our sharded TFRecords + dataset.json) from images.

  python tools/dataset_tool.py --source=DIR|ZIP --dest=DIR [--resolution=256] [--transform=center-crop]
      [--channels=3] [--max-images=N] [--shards=4] [--strict] [--overwrite]
  python tools/dataset_tool.py --source=in-the-wild-images --ffhq-json=ffhq-dataset-v2.json --ffhqu \
      --resolution=256 --dest=ffhqu-256 [--random-shift=0.2] [--seed=12345]

Bad files (corrupt, truncated, CMYK, 16-bit, tiny, non-image) are skipped with a reason and counted at the end
(--strict: exit 1 at the first one). The output appears atomically; a killed run leaves only a hidden temp dir
that the next run removes (no resume). Exit status: 0 ok, 1 error (message on stderr).
"""
import os
import sys

from absl import app
from absl import flags as absl_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flags import dataset_flags  # noqa: E402

FLAGS = absl_flags.FLAGS
dataset_flags.define_flags(FLAGS)
absl_flags.adopt_module_key_flags(dataset_flags)  # list them under --help / --helpshort


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from afgan_tf.data.build import BuildError, build_dataset
    try:
        res = build_dataset(FLAGS.source, FLAGS.dest, resolution=FLAGS.resolution, transform=FLAGS.transform,
                            channels=int(FLAGS.channels), max_images=FLAGS.max_images, ffhq_json=FLAGS.ffhq_json,
                            ffhqu=FLAGS.ffhqu, random_shift=FLAGS.random_shift, seed=FLAGS.seed,
                            shards=FLAGS.shards, strict=FLAGS.strict, overwrite=FLAGS.overwrite,
                            encoding=FLAGS.encoding, min_size=FLAGS.min_size, workers=FLAGS.workers,
                            progress=FLAGS.progress)
    except (BuildError, ValueError, FileExistsError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"Error: {msg}", file=sys.stderr)
        return 1
    print(f"{res['written']} images written to {os.path.abspath(FLAGS.dest)}; {len(res['skipped'])} skipped")
    return 0


if __name__ == "__main__":
    from afgan_tf.cli import normalise_argv  # --ffhq-json -> --ffhq_json, --no-foo -> --nofoo
    app.run(main, argv=normalise_argv(sys.argv))
