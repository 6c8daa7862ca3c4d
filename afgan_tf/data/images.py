"""Image loading, validation and the dataset tool's transforms (docs/ALGORITHM.md §6.5), all with PIL.

* ``open_image(src, name, max_pixels)`` opens a path / bytes / file object lazily (PIL reads only the header) and
  refuses what is not an image and headers claiming more than ``max_pixels`` pixels (a decompression bomb is just a
  crafted header) — before anything is decoded.
* ``decode_image(src, channels, ...)`` → ``(uint8 [H, W, channels], conversion)``: decodes, refusing what we cannot
  use with :class:`BadImageError` (a reason), and converts what is a real photo in another encoding: CMYK → RGB
  (PIL's conversion: ``R = (255 - C)(255 - K) / 255``, rounded), 16-bit samples → 8 bit with rounding
  (``round(v / 257)``; 16-bit grayscale, 32/48/64-bit gray+alpha / RGB / RGBA PNGs). ``conversion`` names what was
  converted (``"CMYK->RGB"``, ``"16->8 bit"``) or is None. ``load_image`` returns the array only.
* ``lanczos_resize`` is PIL's Lanczos (``Image.LANCZOS``) — the resampler of the original tool.
* ``apply_transform(img, transform, width, height)``: ``None`` / ``"center-crop"`` / ``"center-crop-wide"``
  exactly as described in docs/ALGORITHM.md §6.5; returns ``None`` when the original tool would drop the image.
* ``encode_png`` / ``decode_png``: lossless PNG bytes <-> uint8 ``[H, W, C]``.
* ``path_problem(path)``: a broken symlink, a symlink loop, a missing / unreadable / non-regular file, in words.

Decompression bombs: PIL's own check is process-wide state (``Image.MAX_IMAGE_PIXELS``: a warning at 89 MP, an
error at 179 MP) and turning its warning into an error needs ``warnings.catch_warnings``, which is not thread-safe
(the dataset tool decodes in threads). So PIL's check is switched off here (``MAX_IMAGE_PIXELS = None``, set once at
import) and every open goes through :func:`open_image`, which compares the header's pixel count with ``max_pixels``
(default :data:`DEFAULT_MAX_PIXELS`, the dataset tool's ``--max-pixels``) — no warning state is involved.
"""
import errno
import io
import os
import stat
import struct

import numpy as np
import PIL.Image

PIL.Image.init()
PIL.Image.MAX_IMAGE_PIXELS = None  # replaced by open_image's max_pixels check (see the module docstring)
IMAGE_EXTENSIONS = tuple(sorted(ext.lower() for ext in PIL.Image.EXTENSION))
TRANSFORMS = (None, "center-crop", "center-crop-wide")
DEFAULT_MAX_PIXELS = 200_000_000  # a 100-MP camera photo passes; a 30000x30000 (900 MP) header does not
CONVERSIONS = ("CMYK->RGB", "16->8 bit")


class BadImageError(ValueError):
    """A source file that cannot become a training image; ``reason`` says why."""

    def __init__(self, name, reason):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def path_problem(path):
    """None for a readable regular file (symlinks followed), else the problem in words."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop (too many levels of symbolic links)"
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"broken symlink (its target {target} does not exist)"
        if e.errno == errno.ENOENT:
            return "file not found (removed while building?)"
        return f"unreadable file ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a directory, FIFO or device)"
    if not os.access(path, os.R_OK):
        return "unreadable file (permission denied)"
    return None


def _sixteen_bit(img):
    """'gray16' for PIL's 16-bit grayscale modes (read fully), 'png16' for a PNG PIL reduces to 8 bits silently
    (32/48/64-bit LA / RGB / RGBA), 'other16' for other formats it reduces, 'float' for float images, else None."""
    if img.mode.startswith("I;16") or img.mode == "I":
        return "gray16"
    if img.mode == "F":
        return "float"
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else getattr(tile, "args", None)
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return "png16" if img.format == "PNG" else "other16"
    return None


def _round16(a):
    """uint16 → uint8 with rounding: round(v * 255 / 65535) = round(v / 257), halves up."""
    a = np.asarray(a).astype(np.uint32)
    return ((2 * a + 257) // 514).astype(np.uint8)


def _decode_png16(data, name):
    """A 16-bit PNG → PIL image of 8-bit samples (``L``/``LA``/``RGB``/``RGBA``) by rounding (TF's decoder reads the
    full 16 bits; PIL keeps only the high byte)."""
    import tensorflow as tf
    try:
        a = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()  # [H, W, C]
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        raise BadImageError(name, f"truncated or corrupt image data ({str(e).splitlines()[0][:200]})") from None
    a = _round16(a)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    return PIL.Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a, mode)


def open_image(src, name=None, max_pixels=DEFAULT_MAX_PIXELS):
    """Opens (lazily: header only) a path / bytes / file object with PIL; BadImageError when it is not an image or its
    header claims more than ``max_pixels`` pixels (None = no limit)."""
    name = name or (src if isinstance(src, str) else "<bytes>")
    if isinstance(src, (str, os.PathLike)):
        problem = path_problem(src)
        if problem:
            raise BadImageError(name, problem)
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            src = io.BytesIO(bytes(src))
        img = PIL.Image.open(src)
    except PIL.Image.UnidentifiedImageError:
        raise BadImageError(name, "not an image (PIL cannot identify the file)") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError) as e:
        raise BadImageError(name, f"corrupt image header ({type(e).__name__}: {e})"[:300]) from None
    w, h = img.size
    if max_pixels is not None and w * h > int(max_pixels):
        img.close()
        raise BadImageError(name, f"decompression bomb? the header claims {w}x{h} = {w * h} pixels, over the limit of "
                                  f"{int(max_pixels)} (--max-pixels)")
    return img


def _src_bytes(src):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as fh:
            return fh.read()
    src.seek(0)
    return src.read()


def decode_image(src, channels=3, name=None, min_size=1, max_pixels=DEFAULT_MAX_PIXELS):
    """Decodes and validates one image → ``(uint8 numpy [H, W, channels], conversion)``.

    Steps: open with PIL (header only: path problems, not an image, ``max_pixels``); refuse images smaller than
    ``min_size`` on either side and float / 16-bit non-PNG colour images; decode fully (truncated / corrupt data
    raises); convert CMYK → RGB and 16 → 8 bit (rounding) — ``conversion`` says which, else None; then
    palette/alpha/grayscale → ``L`` (channels=1) or ``RGB``.
    """
    name = name or (src if isinstance(src, str) else "<bytes>")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    img = open_image(src, name, max_pixels)
    with img:
        w, h = img.size
        if min(w, h) < max(int(min_size), 1):
            raise BadImageError(name, f"tiny image ({w}x{h} < --min-size={min_size})")
        depth = _sixteen_bit(img)
        if depth == "float":
            raise BadImageError(name, f"floating-point image (mode {img.mode}); only 8/16-bit images are supported")
        if depth == "other16":
            raise BadImageError(name, f"16-bit {img.format} colour image (mode {img.mode}); convert it to a 16-bit PNG "
                                      f"or to 8 bit")
        conversion = None
        try:
            if depth == "png16" and img.mode not in ("I", "I;16", "I;16B", "I;16L"):
                img = _decode_png16(_src_bytes(src), name)
                conversion = "16->8 bit"
            else:
                img.load()
        except BadImageError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError, struct.error) as e:
            raise BadImageError(name, f"truncated or corrupt image data ({type(e).__name__}: {e})"[:300]) from None
        if depth == "gray16":
            a = np.asarray(img)
            if a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() > 65535):
                raise BadImageError(name, f"32-bit integer image (mode {img.mode}); only 8/16-bit images are supported")
            img = PIL.Image.fromarray(_round16(np.clip(a, 0, 65535)), "L")
            conversion = "16->8 bit"
        elif img.mode == "CMYK":
            img = img.convert("RGB")
            conversion = "CMYK->RGB"
        if channels == 1:
            img = img.convert("L")
        else:
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA").convert("RGB")  # drop alpha (as the RGB of the stored pixels)
            img = img.convert("RGB")
        a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return a, conversion  # [H, W, C]


def load_image(src, channels=3, name=None, min_size=1, max_pixels=DEFAULT_MAX_PIXELS):
    """:func:`decode_image` without the conversion note: uint8 numpy ``[H, W, channels]``."""
    return decode_image(src, channels, name, min_size, max_pixels)[0]


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
    """The original tool's transforms (docs/ALGORITHM.md §6.5) on uint8 ``[H, W, C]``; ``None`` = dropped image.

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
