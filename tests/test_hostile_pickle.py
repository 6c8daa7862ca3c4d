"""Hostile network files: the pickle reader's and convert.load_network's limits (issue 15).

Every file is crafted on the fly with tests/helpers_pickle.py (no torch needed). Each case must end in one
ValueError-type error naming the file and the limit — never a MemoryError, RecursionError or a multi-GB allocation.
"""
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import helpers_pickle as H
from afgan_tf import convert
from afgan_tf import pickle_reader as pr

TOOL = os.path.join(H.REPO, "tools", "convert_pkl.py")
F32 = np.float32


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _net_file(tmp_path, name, G):
    return _write(tmp_path, name, H.dumps({"G": G, "D": None, "G_ema": None}))


def _stride0():
    return H.tensor(H.legacy_storage_bytes(np.zeros(1, F32)), (2 ** 14, 2 ** 14), (0, 0))


HOSTILE = {
    # the cases
    "stride0_view": (lambda: H.dumps(_stride0()), "claims 268435456 elements but its storage holds 1"),
    "storage_count_unbacked": (lambda: H.dumps(H.tensor(H.legacy_storage_bytes(np.zeros(4, F32), claimed=2 ** 40),
                                                        (4,))), "claims 1099511627776 elements"),
    "zip_bomb": (lambda: H.dumps(H.tensor(H.zip_storage_bytes(np.zeros(1 << 22, F32), compress=True), (1 << 22,))),
                 "inflates .* over max_inflation=16"),
    # more of the kind
    "zip_count_unbacked": (lambda: H.dumps(H.tensor(H.zip_storage_bytes(np.zeros(4, F32), claimed=2 ** 31), (4,))),
                           "truncated storage data"),
    "view_past_storage": (lambda: H.dumps(H.tensor(H.legacy_storage_bytes(np.zeros(8, F32)), (4,), (1,), 6)),
                          "exceeds its storage"),
    "negative_size": (lambda: H.dumps(H.tensor(H.legacy_storage_bytes(np.zeros(8, F32)), (-4, -2), (1, 1))),
                      "negative size"),
    "size_not_int": (lambda: H.dumps(H.tensor(H.legacy_storage_bytes(np.zeros(8, F32)), ("a",), (1,))),
                     "must be integers"),
    "numpy_claimed_shape": (lambda: pickle.dumps(np.zeros(3), protocol=2).replace(b"K\x03\x85", b"J\x00\x00\x00\x40\x85"),
                            "corrupt or truncated"),
    "numpy_object_dtype": (lambda: pickle.dumps(np.array([1, None], dtype=object), protocol=2),
                           "forbidden global|not allowed"),
    "storage_not_bytes": (lambda: H.dumps(H.Call("torch.storage", "_load_from_bytes", 5)), "expected bytes"),
    "storage_garbage": (lambda: H.dumps(H.Call("torch.storage", "_load_from_bytes", b"PK\x03\x04garbage")),
                        "corrupt"),
    "deep_nesting": (lambda: H.nested_lists(200_000), None),
    "truncated": (lambda: H.dumps({"G": [1, 2, 3]})[:-4], "truncated"),
    "empty_file": (lambda: b"", "corrupt or truncated"),
    "not_a_pickle": (lambda: b"\x80\x04hello world, not a pickle", "corrupt|Memo|opcode"),
    # length fields claiming far more than the file holds (12-byte files): refused before any allocation
    "huge_frame": (lambda: b"\x80\x04\x95" + (2 ** 62).to_bytes(8, "little") + b".",
                   "asks for 4611686018427387904 bytes at offset 11 but the file has 12 bytes"),
    "huge_binbytes8": (lambda: b"\x80\x04\x8e" + (2 ** 62).to_bytes(8, "little") + b".",
                       "asks for 4611686018427387904 bytes .* the file has 12 bytes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_pickle_refused(tmp_path, case):
    make, pattern = HOSTILE[case]
    path = _write(tmp_path, f"{case}.pkl", make())
    with pytest.raises((ValueError, pickle.UnpicklingError)) as ei:
        pr.read_network_pkl(path)
    msg = str(ei.value)
    assert f"{case}.pkl" in msg, msg
    if pattern:
        assert re.search(pattern, msg), msg
    assert "\n" not in msg and len(msg) < 600


def test_limit_errors_are_value_errors(tmp_path):
    """The limits raise PickleLimitError: both a ValueError (the issue) and an UnpicklingError (old callers)."""
    path = _write(tmp_path, "s0.pkl", H.dumps({"G": _stride0()}))
    with pytest.raises(ValueError, match="s0.pkl: tensor rebuild") as ei:
        convert.load_network(path)
    assert isinstance(ei.value, pr.PickleLimitError) and isinstance(ei.value, pickle.UnpicklingError)


def test_total_bytes_and_inflation_limits(tmp_path):
    a = np.arange(1 << 16, dtype=F32)  # 256 KiB
    ok = H.dumps({"t": H.tensor(H.legacy_storage_bytes(a), (256, 256))})
    np.testing.assert_array_equal(pr.loads_pickle(ok)["t"], a.reshape(256, 256))
    # total decoded bytes: storage (256 KiB) + tensor copy (256 KiB) > 300 KiB
    with pytest.raises(pr.PickleLimitError, match="over the reader's limit of 307200 bytes \\(max_bytes=307200"):
        pr.loads_pickle(ok, limits=pr.Limits(max_bytes=300 << 10))
    # one storage rebuilt as many full tensors (memo reuse): each copy is charged -> inflation limit
    st = H.Call("torch.storage", "_load_from_bytes", H.legacy_storage_bytes(np.zeros(1 << 18, F32)))  # 1 MiB
    body = bytearray(b"\x80\x03](")
    H._emit(st, body)
    body += b"q\x010"  # memoise the storage, pop it
    for _ in range(40):
        H._emit(H.Call("torch._utils", "_rebuild_tensor_v2", H.Raw(b"h\x01"), 0, (1 << 18,), (1,), False), body)
    body += b"e."
    with pytest.raises(pr.PickleLimitError, match="max_inflation=16 x file size"):
        pr.loads_pickle(bytes(body))
    assert len(pr.loads_pickle(bytes(body), limits=pr.Limits(max_inflation=64))) == 40  # settable
    with pytest.raises(ValueError, match="must be >= 1"):
        pr.Limits(max_bytes=0)


@pytest.mark.parametrize("where", ["top", "init_kwargs", "modules", "key_repr"])
def test_deep_nesting_is_a_clear_error(tmp_path, where):
    depth = 200_000
    if where == "top":
        data = b"\x80\x03}(X\x01\x00\x00\x00G" + H.nested_lists(depth)[2:-1] + b"u."
    elif where == "init_kwargs":
        deep = H.Raw(H.nested_lists(depth)[2:-1])
        data = H.dumps({"G": H.persistent("Generator", init_kwargs={"mapping_kwargs": deep})})
    elif where == "modules":
        node = H.persistent("Leaf")
        for _ in range(120):  # > max_depth=100 sub-module levels
            node = H.persistent("Generator", modules={"m": node})
        data = H.dumps({"G": node})
    else:  # a 200k-deep tuple as a dict key (hashed while unpickling, printed in the "no G / D" message)
        data = b"\x80\x03}(" + b"(" * depth + b")" + b"t" * depth + b"K\x01u."
    path = _write(tmp_path, "deep.pkl", data)
    with pytest.raises(ValueError, match="deep.pkl: ?.*(max_depth|nesting|expected a persistent|no G)"):
        convert.load_network(path)


def _generator(**kw):
    base = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                channel_base=256, channel_max=8, num_layers=3)
    base.update(kw)
    freqs = H.tensor(H.legacy_storage_bytes(np.zeros(16, F32)), (8, 2))
    return H.persistent("Generator", modules={"synthesis": H.persistent("SynthesisNetwork", modules={
        "input": H.persistent("SynthesisInput", params={"freqs": freqs})})}, init_kwargs=base)


@pytest.mark.parametrize("kw,pattern", [
    (dict(z_dim=10 ** 7), "z_dim=10000000 is outside the sane range \\[0, 4096\\]"),
    (dict(w_dim=-1), "w_dim=-1 is outside"),
    (dict(img_resolution=2 ** 20), "img_resolution=1048576 is outside"),
    (dict(channel_max="many"), "channel_max='many' must be an integer"),
    (dict(mapping_kwargs={"num_layers": 10 ** 6}), "mapping_kwargs.num_layers=1000000 is outside"),
    (dict(num_layers=1000), "num_layers=1000 is outside"),
    (dict(magnitude_ema_beta=float("nan")), "magnitude_ema_beta=nan is not finite"),
])
def test_network_kwargs_bounded_before_building(tmp_path, kw, pattern):
    path = _net_file(tmp_path, "kw.pkl", _generator(**kw))
    with pytest.raises(ValueError, match=f"kw.pkl: G: generator: constructor kwarg {pattern}"):
        convert.load_network(path)


def test_npz_limits(tmp_path):
    # a deflated entry that inflates 1000x
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, np.zeros(1 << 22, np.uint8))
        z.writestr("G/x.npy", buf.getvalue())
    with pytest.raises(ValueError, match="bomb.npz: entry G/x.npy inflates .* over max_inflation=16"):
        convert.load_network(str(p))
    # a .npy header claiming a shape its bytes do not hold
    q = tmp_path / "claim.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros(4, F32))
    data = buf.getvalue().replace(b"(4,)", b"(4000000000,)".ljust(4))
    hdr_len = int.from_bytes(buf.getvalue()[8:10], "little")
    body = data[10:]
    body = body[:body.index(b"\n") + 1]
    fixed = data[:8] + len(body).to_bytes(2, "little") + body + buf.getvalue()[10 + hdr_len:]
    with zipfile.ZipFile(q, "w") as z:
        z.writestr("G/x.npy", fixed)
    with pytest.raises(ValueError, match="claim.npz: entry G/x.npy claims shape \\(4000000000,\\)"):
        convert.load_network(str(q))
    # bad kwargs in our own snapshot format are refused as well
    r = tmp_path / "kw.npz"
    import json
    np.savez(r, **{"meta/format": np.array(json.dumps(convert.SNAPSHOT_FORMAT)),
                   "meta/G": np.array(json.dumps({"class": "stylegan3.Generator", "init_kwargs": dict(
                       z_dim=10 ** 7, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)})),
                   "G/synthesis.input.freqs": np.zeros((8, 2), F32)})
    with pytest.raises(ValueError, match="kw.npz: G: generator: constructor kwarg z_dim=10000000"):
        convert.load_network(str(r))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=H.REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=H.REPO)


def test_convert_pkl_cli_one_line(tmp_path):
    """tools/convert_pkl.py: exit 1 and one ``Error:`` line naming the file and the limit; flags set the limits."""
    cases = {
        "s0.pkl": (H.dumps({"G": _stride0()}), "s0.pkl: tensor rebuild"),
        "kw.pkl": (H.dumps({"G": _generator(z_dim=10 ** 7)}), "kw.pkl: G: generator: constructor kwarg z_dim"),
        "deep.pkl": (H.nested_lists(200_000), "deep.pkl"),
        "evil.pkl": (b"cos\nsystem\n(S'true'\ntR.", "forbidden global 'os.system'"),
    }
    for name, (data, expect) in cases.items():
        path = _write(tmp_path, name, data)
        r = _cli(f"--source={path}", f"--dest={tmp_path / 'out'}")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and expect in lines[0], \
            (name, r.returncode, r.stderr[-3000:])
    assert not (tmp_path / "out").exists()  # nothing created for a refused file
    big = _write(tmp_path, "big.pkl", H.dumps({"t": H.tensor(H.legacy_storage_bytes(np.zeros(1 << 16, F32)),
                                                            (1 << 16,))}))
    r = _cli(f"--source={big}", f"--dest={tmp_path / 'out'}", "--max-gib=0.0001")  # dashed flag accepted
    assert r.returncode == 1 and "over the reader's limit of 107374 bytes (max_bytes=107374" in r.stderr, r.stderr


def test_peak_memory_is_a_small_multiple_of_the_file(tmp_path):
    """Under an address-space cap of (imports + 6 x a 24 MiB file), the real file loads and every hostile file ends
    in the limit's error (the unbounded reader needed 1-4 GiB for these, or died with MemoryError)."""
    n = 6 << 20  # 24 MiB of float32
    good = _write(tmp_path, "good.pkl", H.dumps({"t": H.tensor(H.legacy_storage_bytes(np.ones(n, F32)), (n,))}))
    hostile = {
        "s0.pkl": H.dumps({"G": _stride0()}),
        "zip.pkl": H.dumps({"G": H.tensor(H.zip_storage_bytes(np.zeros(1 << 26, F32), compress=True),
                                          (1 << 26,))}),
        "claim.pkl": H.dumps({"G": H.tensor(H.legacy_storage_bytes(np.zeros(4, F32), claimed=1 << 33), (4,))}),
        "deep.pkl": H.nested_lists(200_000),
    }
    paths = {k: _write(tmp_path, k, v) for k, v in hostile.items()}
    code = (f"t = pickle_reader.read_network_pkl if False else pickle_reader.load_pickle({good!r})['t']\n"
            f"assert t.shape == ({n},) and float(t.sum()) == {n}, t.shape\n"
            "print('good ok')\n"
            f"for p in {list(paths.values())!r}:\n"
            "    try:\n"
            "        pickle_reader.read_network_pkl(p)\n"
            "    except ValueError as e:\n"
            "        print('refused', type(e).__name__, str(e)[:160])\n")
    r = H.run_limited(code, mem_mib=6 * 24)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("refused") == len(hostile) and "good ok" in r.stdout, r.stdout
    assert "MemoryError" not in r.stdout + r.stderr
