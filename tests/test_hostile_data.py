"""Hostile / careless dataset input (issue 15): original-format --data folders validated before training, and the
dataset tool's command line (one Error line, documented exit codes). Files are made on the fly (helpers_data)."""
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest

from afgan_tf.data import dataset_info, make_dataset, pipeline
from helpers_data import png_header_only, save, smooth_image, write_bad_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "dataset_tool.py")


def _folder(path, n=4, res=16, seed=0):
    rng = np.random.RandomState(seed)
    imgs = [smooth_image(rng, res, res) for _ in range(n)]
    for i, a in enumerate(imgs):
        save(a, os.path.join(path, f"img{i:03d}.png"))
    return imgs


def _zip(folder, dest):
    with zipfile.ZipFile(dest, "w") as z:
        for n in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, n), n)
    return dest


def test_original_dataset_every_header_validated_with_names(tmp_path):
    """A bad or differently sized image anywhere in the folder / zip is reported by name before training starts
    (it used to surface mid-training as a wall of tracebacks): one ValueError naming the files and the count."""
    src = str(tmp_path / "orig")
    _folder(src, n=6)
    save(smooth_image(np.random.RandomState(1), 32, 32), os.path.join(src, "zz_big.png"))      # other size, last
    save(smooth_image(np.random.RandomState(2), 16, 24), os.path.join(src, "zz_wide.png"))     # not square
    with open(os.path.join(src, "zz_text.png"), "w") as fh:
        fh.write("not an image")
    with open(os.path.join(src, "zz_bomb.png"), "wb") as fh:
        fh.write(png_header_only(30000, 30000))
    for path in (src, _zip(src, str(tmp_path / "orig.zip"))):
        with pytest.raises(ValueError) as ei:
            dataset_info(path)
        msg = str(ei.value)
        assert "\n" not in msg and "4 of 10 images cannot be used" in msg, msg
        for part in ("zz_big.png (32x32 differs from 16x16 (img000.png))", "zz_wide.png (not square (24x16))",
                     "zz_text.png (not an image", "zz_bomb.png (decompression bomb?"):
            assert part in msg, (part, msg)
        with pytest.raises(ValueError, match="cannot be used"):
            make_dataset(path, batch_size=2)
    os.symlink("gone.png", os.path.join(src, "zz_link.png"))
    with pytest.raises(ValueError, match="zz_link.png \\(broken symlink"):
        dataset_info(src)


def test_more_than_five_bad_files_are_counted(tmp_path):
    src = str(tmp_path / "orig")
    _folder(src, n=2)
    bad = write_bad_files(src, np.random.RandomState(3))
    from afgan_tf.data.images import is_image_name
    bad_images = [n for n in bad if is_image_name(n)]  # (readme.txt is not listed as an image at all)
    with pytest.raises(ValueError) as ei:
        dataset_info(src)
    msg = str(ei.value)
    assert f"{len(bad_images)} of {len(bad_images) + 2} images cannot be used" in msg
    assert f"and {len(bad_images) - 5} more" in msg and "bomb.gif (decompression bomb?" in msg


def test_validation_reads_headers_only_and_a_good_folder_reads_back(tmp_path, monkeypatch):
    src = str(tmp_path / "orig")
    imgs = _folder(src, n=5, seed=4)
    pipeline._VALIDATED.clear()

    def no_decode(self, *a, **k):
        raise AssertionError("dataset_info decoded pixel data")
    monkeypatch.setattr(PIL.Image.Image, "load", no_decode)
    info = dataset_info(src)
    assert (info["resolution"], info["channels"], info["count"]) == (16, 3, 5)
    monkeypatch.undo()
    x = np.concatenate([b[0].numpy() for b in make_dataset(src, batch_size=5, shuffle=False, repeat=False)])
    np.testing.assert_array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), np.stack(imgs))


def _tool(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=600, env=env,
                          cwd=cwd or ROOT)


_TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|To enable the following instructions)")


def _one_error_line(r):
    """Exit 1 and exactly one ``Error:`` line, the last on stderr (TensorFlow's C++ start-up log lines and the
    tool's own "skipped <file>: <reason>" log lines aside)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not _TF_NOISE.match(ln)]
    errors = [ln for ln in lines if not ln.startswith("skipped ")]
    assert r.returncode == 1 and len(errors) == 1 and lines[-1].startswith("Error: "), (r.returncode,
                                                                                        r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_dataset_tool_cli_errors_are_one_line(tmp_path):
    src = str(tmp_path / "src")
    _folder(src, n=2)
    with open(os.path.join(src, "bomb.png"), "wb") as fh:
        fh.write(png_header_only(30000, 30000))
    line = _one_error_line(_tool(f"--source={src}", f"--dest={tmp_path / 'ds'}", "--strict", "--noprogress"))
    assert "bomb.png: decompression bomb?" in line and "(--strict)" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_error_line(_tool(f"--source={src}", f"--dest={blocker / 'ds'}", "--noprogress"))
    assert str(blocker) in line
    # the bomb is skipped without --strict; the limit is settable (a lower one skips the good images too)
    r = _tool(f"--source={src}", f"--dest={tmp_path / 'ds3'}", "--noprogress")
    assert r.returncode == 0 and "2 images written" in r.stdout and "1 skipped" in r.stdout, r.stderr[-2000:]
    line = _one_error_line(_tool(f"--source={src}", f"--dest={tmp_path / 'ds4'}", "--noprogress",
                                 "--max-pixels=100"))
    assert "no usable images (3 skipped)" in line


def test_original_folder_16_bit_and_cmyk_read_like_the_tool(tmp_path):
    """An original-format folder with 48-bit / 16-bit PNGs (TF PNG path) and one with a CMYK JPEG (PIL path) read
    back as load_image converts them: 16 -> 8 bit rounded (not truncated), CMYK -> RGB."""
    from afgan_tf.data import images
    from helpers_data import png16
    rng = np.random.RandomState(5)
    png_dir = tmp_path / "png"
    png_dir.mkdir()
    refs = []
    for i in range(3):
        a = (rng.rand(16, 16, 3) * 65535).astype(np.uint16) if i != 1 else smooth_image(rng, 16, 16)
        data = png16(a) if a.dtype == np.uint16 else images.encode_png(a)
        (png_dir / f"{i}.png").write_bytes(data)
        refs.append(np.rint(a / 257).astype(np.uint8) if a.dtype == np.uint16 else a)
    x = np.concatenate([b[0].numpy() for b in make_dataset(str(png_dir), batch_size=3, shuffle=False,
                                                           repeat=False)])
    np.testing.assert_array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), np.stack(refs))
    from helpers_data import cmyk_jpeg, cmyk_to_rgb
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cm = cmyk_jpeg(rng.randint(0, 256, (16, 16, 4)))
    (mixed / "a.jpg").write_bytes(cm)
    (mixed / "b.png").write_bytes(png16((rng.rand(16, 16, 3) * 65535).astype(np.uint16)))
    want = [cmyk_to_rgb(np.asarray(PIL.Image.open(str(mixed / "a.jpg")))),
            images.load_image(str(mixed / "b.png"))]
    x = np.concatenate([b[0].numpy() for b in make_dataset(str(mixed), batch_size=2, shuffle=False, repeat=False)])
    np.testing.assert_array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), np.stack(want))


def test_zip_source_entry_bomb_refused_before_inflating(tmp_path, monkeypatch):
    """A zip source entry that would inflate beyond what an image within --max-pixels can hold is skipped by its
    header size, never inflated."""
    from afgan_tf.data import build_dataset
    src = str(tmp_path / "src")
    _folder(src, n=2)
    zpath = str(tmp_path / "src.zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for n in sorted(os.listdir(src)):
            z.write(os.path.join(src, n), n)
        z.writestr("zbomb.png", b"\0" * (17 << 20))  # 17 MiB of zeros: ~17 KB compressed
    real_read = zipfile.ZipFile.read

    def read(self, name, pwd=None):
        assert name != "zbomb.png", "the bomb entry was inflated"
        return real_read(self, name, pwd)
    monkeypatch.setattr(zipfile.ZipFile, "read", read)
    res = build_dataset(zpath, str(tmp_path / "ds"), max_pixels=256, progress=False, log=lambda m: None)
    assert res["written"] == 2 and dict(res["skipped"])["zbomb.png"].startswith("zip entry inflates to 17825792")


@pytest.mark.parametrize("edit, words", [
    (lambda m: {**m, "format_version": "1"}, "'format_version' must be an integer"),
    (lambda m: {**m, "resolution": "16"}, "'resolution' must be an integer >= 1"),
    (lambda m: {**m, "count": -1}, "'count' must be an integer >= 0"),
    (lambda m: {k: v for k, v in m.items() if k != "label_dim"}, "'label_dim' must be an integer"),
    (lambda m: {**m, "shards": "data.tfrecord"}, "'shards' must be a list"),
    (lambda m: {**m, "shards": [{"file": "x"}]}, "'shards' must be a list"),
    (lambda m: {**m, "shards": [{**m["shards"][0], "file": "../../etc/passwd"}]}, "not a name inside"),
    (lambda m: {**m, "count": m["count"] + 1}, "the shards hold 8 images but 'count' is 9"),
])
def test_our_dataset_metadata_is_validated_in_one_line(tmp_path, edit, words):
    """A hand-edited or hostile dataset.json of our format: one ValueError naming the file and the field (was a
    KeyError / TypeError / AttributeError traceback for most of these)."""
    import json
    from afgan_tf.data import dataset_info, shapes, tfrecord
    dest = str(tmp_path / "ds")
    shapes.write_dataset(dest, 8, 16)
    meta_path = os.path.join(dest, tfrecord.META_NAME)
    meta = json.load(open(meta_path))
    assert dataset_info(dest)["count"] == 8                          # the untouched file reads back
    with open(meta_path, "w") as fh:
        json.dump(edit(meta), fh)
    with pytest.raises(ValueError) as ei:
        dataset_info(dest)
    msg = str(ei.value)
    assert words in msg and meta_path in msg and "\n" not in msg, msg


def test_json_inputs_are_objects_or_one_line_errors(tmp_path):
    """utils.read_json_object: the one reader of our JSON inputs (dataset metadata, --ffhq-json)."""
    from afgan_tf import utils
    from afgan_tf.data import sources
    p = tmp_path / "x.json"
    for text, words in (("[1, 2]", "expected a JSON object, got list"), ("{bad", "invalid JSON"),
                        ("3", "expected a JSON object, got int")):
        p.write_text(text)
        with pytest.raises(ValueError, match=f"^--ffhq-json {p}: {words}"):
            sources.ffhq_items(str(tmp_path), str(p))
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'none.json'}: no such file$"):
        utils.read_json_object(str(tmp_path / "none.json"))
    p.write_text('{"a": [1]}')
    assert utils.read_json_object(str(p)) == {"a": [1]}
