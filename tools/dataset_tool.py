r"""Build a training dataset (our sharded TFRecords + dataset.json) from images.

  python tools/dataset_tool.py --source=DIR|ZIP --dest=DIR [--resolution=256] [--transform=center-crop]
      [--channels=3] [--max-images=N] [--shards=4] [--strict] [--overwrite] [--max-pixels=200000000]
  python tools/dataset_tool.py --source=in-the-wild-images --ffhq-json=ffhq-dataset-v2.json --ffhqu \
      --resolution=256 --dest=ffhqu-256 [--random-shift=0.2] [--seed=12345]

Bad files (corrupt, truncated, tiny, non-image, a header claiming more than --max-pixels pixels, a broken symlink,
a symlink loop) are skipped with a reason and counted at the end (--strict: exit 1 at the first one). CMYK JPEGs and
16-bit / 48-bit PNGs are converted (CMYK -> RGB; 16 -> 8 bit with rounding), kept and counted. The output appears
atomically; a killed run leaves only a hidden temp dir that the next run removes (no resume).

Exit status: 0 ok; 1 bad input (one ``Error: ...`` line on stderr naming the file / flag / limit: a missing or bad
--source, an existing --dest, no usable image, a bad file under --strict, an unwritable --dest), a missing or
unknown flag, or stray arguments.
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from afgan_tf import cli
    from afgan_tf.data.build import build_dataset

    def body():
        res = build_dataset(FLAGS.source, FLAGS.dest, resolution=FLAGS.resolution, transform=FLAGS.transform,
                            channels=int(FLAGS.channels), max_images=FLAGS.max_images,
                            ffhq_json=FLAGS.ffhq_json, ffhqu=FLAGS.ffhqu, random_shift=FLAGS.random_shift,
                            seed=FLAGS.seed, shards=FLAGS.shards, strict=FLAGS.strict, overwrite=FLAGS.overwrite,
                            encoding=FLAGS.encoding, min_size=FLAGS.min_size, workers=FLAGS.workers,
                            progress=FLAGS.progress, max_pixels=FLAGS.max_pixels)
        conv = sum(res["converted"].values())
        print(f"{res['written']} images written to {os.path.abspath(FLAGS.dest)}; {len(res['skipped'])} skipped"
              + (f"; {conv} converted" if conv else ""))
    return cli.tool_main(argv, FLAGS, ("source", "dest"), body)


if __name__ == "__main__":
    from afgan_tf.cli import normalise_argv  # --ffhq-json -> --ffhq_json, --no-foo -> --nofoo
    app.run(main, argv=normalise_argv(sys.argv))
