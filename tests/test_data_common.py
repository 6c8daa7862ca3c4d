"""Image validation and conversion: bad files refused with a reason, modes converted (palette, gray, CMYK, 16-bit)."""
import io

import numpy as np
import PIL.Image
import pytest

from afgan_tf.data import images
from helpers_data import png_header_only, smooth_image, write_bad_files, write_convertible_files


def test_load_image_rejects_bad_files(tmp_path):
    rng = np.random.RandomState(0)
    bad = write_bad_files(str(tmp_path), rng)
    for name, reason in bad.items():
        with pytest.raises(images.BadImageError) as e:
            images.load_image(str(tmp_path / name), min_size=16)
        assert e.value.reason.startswith(reason if isinstance(reason, tuple) else (reason,)), (name, e.value.reason)
        assert "\n" not in e.value.reason and len(e.value.reason) < 300


def test_bomb_limit_is_checked_from_the_header_and_settable():
    """The pixel limit is ours (no warning state): a header over it is refused before decoding; the limit moves."""
    bomb = png_header_only(30000, 30000)  # 900 MP claimed in 60 bytes
    with pytest.raises(images.BadImageError, match="30000x30000 = 900000000 pixels, over the limit of 200000000"):
        images.open_image(bomb, "bomb.png")
    with pytest.raises(images.BadImageError, match="over the limit of 1000"):
        images.load_image(images.encode_png(np.zeros([40, 40, 3], np.uint8)), max_pixels=1000)
    assert images.load_image(images.encode_png(np.zeros([40, 40, 3], np.uint8)), max_pixels=1600).shape == (40, 40, 3)
    # over the old PIL warning threshold (89 MP) but under ours: only the header is read, and no warning is raised
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with images.open_image(png_header_only(12000, 10000), "big.png") as im:
            assert im.size == (12000, 10000)
    assert images.DEFAULT_MAX_PIXELS >= 100_000_000  # a real 100-MP photo is accepted


def test_cmyk_and_16_bit_photos_converted(tmp_path):
    """CMYK -> RGB (PIL's integer formula, reference in numpy) and 16 -> 8 bit rounded (round(v / 257), exact);
    palette and animated GIF (first frame) read as before; the conversion is reported."""
    files = write_convertible_files(str(tmp_path), np.random.RandomState(3))
    for name, (conv, ref) in files.items():
        a, got_conv = images.decode_image(str(tmp_path / name), name=name)
        assert got_conv == conv, name
        assert a.dtype == np.uint8 and a.shape == ref.shape, name
        np.testing.assert_array_equal(a, ref, err_msg=name)
        g = images.load_image((tmp_path / name).read_bytes(), channels=1)
        np.testing.assert_array_equal(g[:, :, 0], np.asarray(PIL.Image.fromarray(ref).convert("L")), err_msg=name)


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
