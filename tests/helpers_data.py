"""Shared helpers of the data tests: synthetic images, bad and hostile files (all made on the fly: a decompression
bomb is just a crafted header), FFHQ-style inputs.

* :func:`smooth_image`, :func:`save`, :func:`write_bad_files`, :func:`fake_landmarks`, :func:`write_ffhq_input`;
* :func:`png_header_only` a PNG whose IHDR claims any size (also :func:`jpeg_with_size`, :func:`gif_header_only`); :func:`png16` 16-bit PNGs of 1-4 channels written by
  hand (PIL writes only 16-bit grayscale); :func:`pil_bytes`; :func:`cmyk_jpeg`; :func:`cmyk_to_rgb` PIL's
  documented integer CMYK conversion, in numpy (the reference).
"""
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL.Image

from afgan_tf.data import images


def smooth_image(rng, h, w, c=3, sigma=3.0):
    """A random, smooth-ish uint8 photo stand-in [h, w, c]."""
    import scipy.ndimage as nd
    a = nd.gaussian_filter(rng.rand(h, w, c) * 255, (sigma, sigma, 0))
    a = (a - a.mean()) * 5 + 127.5
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def save(a, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    images.to_pil(a).save(path)


def write_bad_files(folder, rng):
    """Writes one of each kind of bad file; returns {name: expected reason prefix (or tuple of prefixes)}."""
    os.makedirs(folder, exist_ok=True)
    good = images.encode_png(smooth_image(rng, 40, 40))
    jpeg = pil_bytes(PIL.Image.fromarray(smooth_image(rng, 64, 64)), "JPEG", quality=95)
    files = {
        "corrupt.png": (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, ("not an image", "corrupt")),
        "truncated.png": (good[: len(good) // 2], "truncated or corrupt"),
        "truncated.jpg": (jpeg[: len(jpeg) * 2 // 3], "truncated or corrupt"),
        "empty.png": (b"", "not an image"),
        "text.png": (b"hello, I am a text file named .png\n", "not an image"),
        "readme.txt": (b"not an image", "not an image"),
        "fake.jpg": (b"text pretending to be a jpeg", "not an image"),
        "bomb.png": (png_header_only(30000, 30000), "decompression bomb"),
        "bomb_gray16.png": (png_header_only(20000, 20000, 16, 0), "decompression bomb"),
        "bomb.jpg": (jpeg_with_size(jpeg, 30000, 30000), "decompression bomb"),
        "bomb.gif": (gif_header_only(30000, 30000), "decompression bomb"),
        "float.tif": (pil_bytes(PIL.Image.fromarray(rng.rand(40, 40).astype(np.float32)), "TIFF"),
                      "floating-point image"),
    }
    bad = {}
    for name, (data, reason) in files.items():
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
        bad[name] = reason
    PIL.Image.fromarray(smooth_image(rng, 6, 6)).save(os.path.join(folder, "tiny.png"))
    bad["tiny.png"] = "tiny"
    os.symlink("does-not-exist.png", os.path.join(folder, "broken_link.png"))
    bad["broken_link.png"] = "broken symlink"
    os.symlink("loop_b.png", os.path.join(folder, "loop_a.png"))
    os.symlink("loop_a.png", os.path.join(folder, "loop_b.png"))
    bad["loop_a.png"] = bad["loop_b.png"] = "symlink loop"
    return bad


def write_convertible_files(folder, rng, size=32):
    """Real photos in other encodings; returns {name: (conversion or None, expected uint8 RGB [size, size, 3])}."""
    os.makedirs(folder, exist_ok=True)
    out = {}
    cmyk = rng.randint(0, 256, (size, size, 4)).astype(np.uint8)
    data = cmyk_jpeg(cmyk)
    decoded = np.asarray(PIL.Image.open(io.BytesIO(data)))  # the JPEG's CMYK samples (lossy)
    out["cmyk.jpg"] = (data, "CMYK->RGB", cmyk_to_rgb(decoded))
    rgb48 = (rng.rand(size, size, 3) * 65535).astype(np.uint16)
    out["rgb48.png"] = (png16(rgb48), "16->8 bit", np.rint(rgb48 / 257).astype(np.uint8))
    rgba64 = (rng.rand(size, size, 4) * 65535).astype(np.uint16)
    out["rgba64.png"] = (png16(rgba64), "16->8 bit", np.rint(rgba64[..., :3] / 257).astype(np.uint8))
    gray16 = (rng.rand(size, size) * 65535).astype(np.uint16)
    out["gray16.png"] = (pil_bytes(PIL.Image.fromarray(gray16)), "16->8 bit",
                         np.repeat(np.rint(gray16 / 257).astype(np.uint8)[..., None], 3, 2))
    la32 = (rng.rand(size, size, 2) * 65535).astype(np.uint16)
    out["la32.png"] = (png16(la32), "16->8 bit", np.repeat(np.rint(la32[..., :1] / 257).astype(np.uint8), 3, 2))
    rgb = smooth_image(rng, size, size)
    pal = PIL.Image.fromarray(rgb).convert("P")
    out["palette.png"] = (pil_bytes(pal), None, np.asarray(pal.convert("RGB")))
    frames = [PIL.Image.fromarray(smooth_image(rng, size, size)).convert("P") for _ in range(2)]
    out["anim.gif"] = (pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]), None,
                       np.asarray(PIL.Image.open(io.BytesIO(pil_bytes(frames[0], "GIF"))).convert("RGB")))
    res = {}
    for name, (data, conv, ref) in out.items():
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
        res[name] = (conv, ref)
    return res


def fake_landmarks(eye_l, eye_r, mouth_l, mouth_r, rng=None):
    """68 dlib-layout points with the given eye centres / mouth corners (others near the face)."""
    lm = np.zeros([68, 2])
    centre = (np.asarray(eye_l) + np.asarray(eye_r) + np.asarray(mouth_l) + np.asarray(mouth_r)) / 4
    rng = rng or np.random.RandomState(0)
    lm[:] = centre + rng.randn(68, 2) * 5
    for sl, c in ((slice(36, 42), eye_l), (slice(42, 48), eye_r)):
        ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        lm[sl] = np.asarray(c) + np.stack([np.cos(ang), np.sin(ang)], 1) * 4  # mean = the centre
    lm[48] = mouth_l
    lm[54] = mouth_r
    return lm


def write_ffhq_input(root, rng, n=4, size=(360, 300)):
    """Synthetic in-the-wild folder + ffhq-dataset-v2.json; returns (image dir, json path, [(img, lm)])."""
    wild = os.path.join(root, "in-the-wild-images")
    meta, out = {}, []
    for i in range(n):
        w, h = size
        img = smooth_image(rng, h, w)
        ex = w / 2 + rng.uniform(-20, 20)
        ey = h / 2 + rng.uniform(-20, 10)
        lm = fake_landmarks((ex - 18, ey), (ex + 18, ey + rng.uniform(-3, 3)), (ex - 12, ey + 40), (ex + 12, ey + 41),
                            rng)
        rel = f"in-the-wild-images/{i - i % 1000:05d}/{i:05d}.png"
        save(img, os.path.join(root, rel))
        meta[str(i)] = dict(category="training", metadata=dict(photo_title=f"synthetic {i}"),
                            in_the_wild=dict(file_path=rel, pixel_size=[w, h], face_landmarks=lm.tolist(),
                                             face_rect=[ex - 30, ey - 20, ex + 30, ey + 50]))
        out.append((img, lm))
    js = os.path.join(root, "ffhq-dataset-v2.json")
    with open(js, "w") as fh:
        json.dump(meta, fh)
    return wild, js, out


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width, height, bit_depth=8, color_type=2):
    """A PNG that claims ``width x height`` with a tiny (wrong) IDAT: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        _chunk(b"IEND", b"")


def jpeg_with_size(jpeg, width, height):
    """A real JPEG whose SOF0 header is rewritten to claim ``width x height``."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def gif_header_only(width, height):
    """A GIF whose screen and first frame claim ``width x height`` with a one-code image body."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"," +
            struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;")


def png16(a):
    """A 16-bit PNG of uint16 ``a`` ([H, W] gray, [H, W, 2] gray+alpha, [H, W, 3] 48-bit RGB, [H, W, 4] RGBA)."""
    a = np.asarray(a, np.uint16)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = a.astype(">u2").reshape(h, w * c)
    raw = b"".join(b"\0" + r.tobytes() for r in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def pil_bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def cmyk_jpeg(cmyk, quality=100):
    """A CMYK JPEG of uint8 ``cmyk`` [H, W, 4]."""
    import PIL.Image
    return pil_bytes(PIL.Image.fromarray(np.asarray(cmyk, np.uint8), "CMYK"), "JPEG", quality=quality)


def cmyk_to_rgb(cmyk):
    """PIL's CMYK -> RGB (Convert.c ``cmyk2rgb``): ``nk = 255 - K; R = nk - MULDIV255(C, nk)`` with
    ``MULDIV255(a, b) = ((a*b + 128) + ((a*b + 128) >> 8)) >> 8``, i.e. (255 - C)(255 - K) / 255 rounded."""
    c = np.asarray(cmyk).astype(np.int64)
    nk = 255 - c[..., 3:4]
    t = c[..., :3] * nk + 128
    return (nk - ((t + (t >> 8)) >> 8)).astype(np.uint8)
