"""Shared helpers of the data tests (synthetic images, bad files, FFHQ-style inputs) + image validation tests."""
import io
import json
import os

import numpy as np
import PIL.Image
import pytest

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
    """Writes one of each kind of bad file; returns {name: expected reason prefix}."""
    os.makedirs(folder, exist_ok=True)
    good = images.encode_png(smooth_image(rng, 40, 40))
    bad = {}
    with open(os.path.join(folder, "corrupt.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    bad["corrupt.png"] = ("not an image", "corrupt")
    with open(os.path.join(folder, "truncated.png"), "wb") as fh:
        fh.write(good[: len(good) // 2])
    bad["truncated.png"] = "truncated or corrupt"
    PIL.Image.new("CMYK", (40, 40), (10, 20, 30, 40)).save(os.path.join(folder, "cmyk.jpg"))
    bad["cmyk.jpg"] = "CMYK"
    PIL.Image.fromarray((rng.rand(40, 40) * 65535).astype(np.uint16)).save(os.path.join(folder, "gray16.png"))
    bad["gray16.png"] = "16/32-bit"
    PIL.Image.fromarray(smooth_image(rng, 6, 6)).save(os.path.join(folder, "tiny.png"))
    bad["tiny.png"] = "tiny"
    with open(os.path.join(folder, "readme.txt"), "w") as fh:
        fh.write("not an image")
    bad["readme.txt"] = "not an image"
    with open(os.path.join(folder, "fake.jpg"), "w") as fh:
        fh.write("text pretending to be a jpeg")
    bad["fake.jpg"] = "not an image"
    return bad


def rgb48_png(rng, h=40, w=40):
    """A 16-bit-per-channel RGB PNG (PIL reads it as 8-bit RGB silently), written by hand with zlib."""
    import struct
    import zlib
    a = (rng.rand(h, w, 3) * 65535).astype(">u2")
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


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


# ------------------------------------------------------------------------------------------------ tests


def test_load_image_rejects_bad_files(tmp_path):
    rng = np.random.RandomState(0)
    bad = write_bad_files(str(tmp_path), rng)
    for name, reason in bad.items():
        with pytest.raises(images.BadImageError) as e:
            images.load_image(str(tmp_path / name), min_size=16)
        assert e.value.reason.startswith(reason if isinstance(reason, tuple) else (reason,)), (name, e.value.reason)
    with pytest.raises(images.BadImageError, match="16/32-bit"):
        images.load_image(rgb48_png(rng), name="rgb48.png")


def test_load_image_converts_modes():
    rng = np.random.RandomState(1)
    rgb = smooth_image(rng, 20, 30)
    gray = np.asarray(PIL.Image.fromarray(rgb).convert("L"))
    assert np.array_equal(images.load_image(images.encode_png(rgb)), rgb)
    assert np.array_equal(images.load_image(images.encode_png(rgb), channels=1)[:, :, 0], gray)
    g = images.load_image(images.encode_png(gray[:, :, None]))  # gray file read as RGB: replicated channels
    assert g.shape == (20, 30, 3) and np.array_equal(g[:, :, 0], gray) and np.array_equal(g[:, :, 2], gray)
    buf = io.BytesIO()
    PIL.Image.fromarray(rgb).convert("P").save(buf, format="PNG")
    pal = PIL.Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    assert np.array_equal(images.load_image(buf.getvalue()), np.asarray(pal))
    with pytest.raises(ValueError, match="channels"):
        images.load_image(images.encode_png(rgb), channels=2)


def test_transforms_match_spec_geometry():
    rng = np.random.RandomState(2)
    a = smooth_image(rng, 50, 80)  # h=50, w=80
    ref = np.asarray(PIL.Image.fromarray(a[:, 15:65]).resize((32, 32), PIL.Image.LANCZOS))
    assert np.array_equal(images.apply_transform(a, "center-crop", 32, 32), ref)
    # center-crop-wide: band of round(W*h/w) rows, Lanczos to WxH, letterboxed into WxW
    out = images.apply_transform(a, "center-crop-wide", 64, 32)
    ch = int(round(64 * 50 / 80))  # 40
    band = a[(50 - ch) // 2:(50 + ch) // 2]
    ref = np.asarray(PIL.Image.fromarray(band).resize((64, 32), PIL.Image.LANCZOS))
    assert out.shape == (64, 64, 3) and np.array_equal(out[16:48], ref)
    assert not out[:16].any() and not out[48:].any()
    assert images.apply_transform(a, "center-crop-wide", 128, 64) is None  # narrower than W: dropped
    ref = np.asarray(PIL.Image.fromarray(a).resize((16, 16), PIL.Image.LANCZOS))
    assert np.array_equal(images.apply_transform(a, None, 16, 16), ref)
    with pytest.raises(ValueError, match="resolution"):
        images.apply_transform(a, "center-crop", None, None)
    assert images.parse_resolution("512x384") == (512, 384) and images.parse_resolution(64) == (64, 64)
    with pytest.raises(ValueError, match="--resolution"):
        images.parse_resolution("abc")
