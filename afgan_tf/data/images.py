"""Image loading, validation and the dataset tool's transforms (spec §6.5), all with PIL.

* ``load_image(data_or_path, channels)`` decodes with PIL and rejects files we cannot use, raising
  :class:`BadImageError` with a reason: not an image, corrupt/truncated, CMYK, 16/32-bit, tiny.
* ``lanczos_resize`` is PIL's Lanczos (``Image.LANCZOS``) — the resampler of the original tool.
* ``apply_transform(img, transform, width, height)``: ``None`` / ``"center-crop"`` / ``"center-crop-wide"``
  exactly as described in spec §6.5; returns ``None`` when the original tool would drop the image.
* ``encode_png`` / ``decode_png``: lossless PNG bytes <-> uint8 ``[H, W, C]``.
"""
import io
import os
import warnings

import numpy as np
import PIL.Image

PIL.Image.init()
IMAGE_EXTENSIONS = tuple(sorted(ext.lower() for ext in PIL.Image.EXTENSION))
TRANSFORMS = (None, "center-crop", "center-crop-wide")


class BadImageError(ValueError):
    """A source file that cannot become a training image; ``reason`` says why."""

    def __init__(self, name, reason):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _bit_depth_16(img):
    """True when PIL is silently reducing a 16-bit-per-sample file (e.g. 48-bit RGB PNG) to 8 bits."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return True
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def open_image(src, name=None):
    """Opens (lazily) a path / bytes / file object with PIL; BadImageError when it is not an image."""
    name = name or (src if isinstance(src, str) else "<bytes>")
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            src = io.BytesIO(bytes(src))
        img = PIL.Image.open(src)
    except PIL.Image.UnidentifiedImageError:
        raise BadImageError(name, "not an image (PIL cannot identify the file)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImageError(name, f"corrupt image header ({e})") from None
    return img


def load_image(src, channels=3, name=None, min_size=1):
    """Decodes and validates one image → uint8 numpy ``[H, W, channels]``.

    Steps: open with PIL; refuse CMYK, 16/32-bit and images smaller than ``min_size`` on either side; fully
    decode (truncated / corrupt data raises); convert palette/alpha/grayscale to ``L`` (channels=1) or ``RGB``.
    """
    name = name or (src if isinstance(src, str) else "<bytes>")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    img = open_image(src, name)
    if img.mode == "CMYK":
        raise BadImageError(name, "CMYK image (convert it to RGB first)")
    if _bit_depth_16(img):
        raise BadImageError(name, f"16/32-bit image (mode {img.mode}); only 8-bit images are supported")
    w, h = img.size
    if min(w, h) < max(int(min_size), 1):
        raise BadImageError(name, f"tiny image ({w}x{h} < --min-size={min_size})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            img.load()
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombWarning) as e:
        raise BadImageError(name, f"truncated or corrupt image data ({e})") from None
    if channels == 1:
        img = img.convert("L")
    else:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA").convert("RGB")  # drop alpha (as the RGB of the stored pixels)
        img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return a  # [H, W, C]


def to_pil(a):
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        return PIL.Image.fromarray(a[:, :, 0], "L")
    return PIL.Image.fromarray(a, "RGB")


def from_pil(img):
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def lanczos_resize(a, width, height):
    """PIL Lanczos resize of a uint8 ``[H, W, C]`` array to ``[height, width, C]``."""
    if a.shape[1] == width and a.shape[0] == height:
        return a
    return from_pil(to_pil(a).resize((int(width), int(height)), PIL.Image.LANCZOS))


def parse_resolution(value):
    """``None`` | ``256`` | ``"256"`` | ``"512x384"`` → ``(width, height)`` or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    s = str(value).lower()
    parts = s.split("x")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise ValueError(f"--resolution must be N or WxH (e.g. 256 or 256x256), got {value!r}")


def is_power_of_two(n):
    return n >= 1 and (n & (n - 1)) == 0


def apply_transform(a, transform, width, height):
    """The original tool's transforms (spec §6.5) on uint8 ``[H, W, C]``; ``None`` = dropped image.

    * ``None``: Lanczos resize to ``width x height`` when given, else unchanged.
    * ``"center-crop"``: central square of side ``min(h, w)``, then Lanczos to ``width x height``.
    * ``"center-crop-wide"``: central band of ``round(width·h/w)`` rows, Lanczos to ``width x height``, pasted
      vertically centred into a black ``width x width`` canvas; images narrower than ``width`` or whose band is
      shorter than ``height`` are dropped.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    h, w = a.shape[:2]
    if transform is None:
        if width is None:
            return a
        return lanczos_resize(a, width, height)
    if width is None or height is None:
        raise ValueError(f"--transform={transform} requires --resolution")
    if transform == "center-crop":
        s = min(h, w)
        a = a[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]
        return lanczos_resize(a, width, height)
    # center-crop-wide
    ch = int(np.round(width * h / w))
    if w < width or ch < height:
        return None
    a = a[(h - ch) // 2:(h + ch) // 2]
    a = lanczos_resize(a, width, height)
    canvas = np.zeros([width, width, a.shape[2]], dtype=np.uint8)
    canvas[(width - height) // 2:(width - height) // 2 + height] = a
    return canvas


def encode_png(a, compress_level=1):
    """uint8 ``[H, W, C]`` → PNG bytes (lossless)."""
    buf = io.BytesIO()
    to_pil(a).save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


def decode_png(data):
    return from_pil(PIL.Image.open(io.BytesIO(data)))
