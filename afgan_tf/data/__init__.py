"""Datasets: our TFRecord format (atomic writer), the original's zip/folder format, the tf.data pipeline,
FFHQ-U unaligned crops (numpy + tf.data map) and the embedded default dataset. See docs/data.md."""
from .build import BuildError, build_dataset
from .default import default_dataset
from .ffhqu import (CropError, box_params, crop_square_pil, crop_square_tf, ffhqu_crop, ffhqu_crop_tf,
                    landmark_crop_params, random_shift_crop, square_bbox)
from .images import BadImageError, apply_transform, lanczos_resize, load_image
from .pipeline import dataset_info, make_dataset
from .sources import ImageFolder
from .tfrecord import DatasetWriter, read_metadata

__all__ = ["BuildError", "build_dataset", "default_dataset", "CropError", "box_params", "crop_square_pil",
           "crop_square_tf", "ffhqu_crop", "ffhqu_crop_tf", "landmark_crop_params", "random_shift_crop",
           "square_bbox", "BadImageError", "apply_transform", "lanczos_resize", "load_image", "dataset_info",
           "make_dataset", "ImageFolder", "DatasetWriter", "read_metadata"]
