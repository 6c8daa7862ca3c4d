"""Flags of ``tools/dataset_tool.py`` (docs/ALGORITHM.md §6.5, §6.1). Dashed spellings (``--ffhq-json``) are accepted by the
tool, which maps them to these underscore names before parsing."""
from absl import flags

TRANSFORMS = ["center-crop", "center-crop-wide"]


def define_flags(flag_values=flags.FLAGS):
    """Defines the dataset tool's flags on ``flag_values``."""
    fv = flag_values
    flags.DEFINE_string("source", None, "Input: a folder of images (recursive), a zip of images, a dataset of the "
                        "original's format (folder/zip with dataset.json labels), or the FFHQ in-the-wild folder "
                        "(with --ffhq_json).", flag_values=fv)
    flags.DEFINE_string("dest", None, "Output dataset directory (sharded TFRecords + dataset.json). Must not "
                        "exist (or be empty) unless --overwrite.", flag_values=fv)
    flags.DEFINE_string("resolution", None, "Output resolution: N (NxN, a power of two) or WxH for "
                        "--transform=center-crop-wide. Default: the images' own (square, power-of-two) size.",
                        flag_values=fv)
    flags.DEFINE_enum("transform", None, TRANSFORMS, "Crop before the Lanczos resize (needs --resolution).",
                      flag_values=fv)
    flags.DEFINE_enum("channels", "3", ["1", "3"], "3 = RGB, 1 = grayscale.", flag_values=fv)
    flags.DEFINE_integer("max_images", None, "Stop after writing this many images.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("ffhq_json", None, "ffhq-dataset-v2.json (landmarks of the in-the-wild images); "
                        "--source is then the in-the-wild images folder.", flag_values=fv)
    flags.DEFINE_bool("ffhqu", False, "FFHQ-U unaligned crops (docs/ALGORITHM.md §6.1): axis aligned, random shift, no padding, "
                      "retried crops; needs --ffhq_json and --resolution.", flag_values=fv)
    flags.DEFINE_float("random_shift", 0.2, "FFHQ-U random shift, as a fraction of the crop side (std).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("seed", 12345, "FFHQ-U RNG seed (numpy RandomState; the original's value is 12345).",
                         flag_values=fv)
    flags.DEFINE_integer("shards", 1, "Number of .tfrecord files (use a multiple of the number of workers).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("encoding", "png", ["png", "raw"], "Image bytes in the records: png (lossless, compact) "
                      "or raw uint8 (fastest to read).", flag_values=fv)
    flags.DEFINE_integer("min_size", 16, "Skip images whose width or height is below this (tiny).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("max_pixels", 200_000_000, "Skip images whose header claims more pixels than this "
                         "(decompression bombs; checked before decoding). A 100-MP photo passes the default.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("workers", 2, "Decode/resize threads.", lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("strict", False, "Fail at the first bad file instead of skipping it.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing dataset at --dest (after the new one is complete).",
                      flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress line with images/s.", flag_values=fv)
    flags.mark_flags_as_required(["source", "dest"], flag_values=fv)
