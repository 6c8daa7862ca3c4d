"""Safe pickle reader: genuine torch-made pickles of fake persistent objects, and malicious pickles.

``make_fake_network_pkl`` (also used by test_convert.py) builds a pickle shaped like an original snapshot: the
networks are torch ``nn.Module`` objects whose reduce calls ``torch_utils.persistence._reconstruct_persistent_obj``
with a meta dict carrying ``module_src`` that would create a marker file if it were ever executed.
"""
import collections
import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest

from afgan_tf import pickle_reader as pr

torch = pytest.importorskip("torch")

_BUFFER_NAMES = ("resample_filter", "magnitude_ema", "up_filter", "down_filter", "w_avg", "freqs", "phases",
                 "transform", "p")


def _install_fake_original_modules():
    """Registers modules named like the original's (torch_utils.persistence, dnnlib.util) in sys.modules."""
    if "torch_utils.persistence" in sys.modules and hasattr(sys.modules["torch_utils.persistence"], "_fake"):
        return sys.modules["torch_utils.persistence"], sys.modules["dnnlib.util"]
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")
    pers._fake = True

    def _reconstruct_persistent_obj(meta):  # what the original does: exec the embedded source
        mod = types.ModuleType("_imported_module_fake")
        exec(meta["module_src"], mod.__dict__)  # noqa: S102 - this is the behaviour the reader must avoid
        raise RuntimeError("fake original reconstruct hook was called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu.persistence = pers
    dn = types.ModuleType("dnnlib")
    dnu = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        def __getattr__(self, k):
            return self[k]

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    dnu.EasyDict = EasyDict
    dn.util = dnu
    dn.EasyDict = EasyDict
    sys.modules.update({"torch_utils": tu, "torch_utils.persistence": pers, "dnnlib": dn, "dnnlib.util": dnu})
    return pers, dnu


class FakePersistent(torch.nn.Module):
    """nn.Module that pickles like the original's persistent classes."""

    module_src = ""

    def __init__(self, class_name, init_kwargs=None):
        super().__init__()
        self._orig_class_name = class_name
        self._init_args = ()
        self._init_kwargs = init_kwargs or {}

    def __reduce__(self):
        pers, _ = _install_fake_original_modules()
        state = dict(self.__dict__)
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self._orig_class_name,
                    state=state)
        return (pers._reconstruct_persistent_obj, (meta,))


def marker_src(marker_path, class_name="Generator"):
    """Module source that creates ``marker_path`` when executed; mimics the defining module of ``class_name``."""
    body = ("class SynthesisInput: pass\nclass Generator: pass\n" if class_name == "Generator" else
            "class DiscriminatorEpilogue: pass\nclass SynthesisBlock: pass\nclass Discriminator: pass\n")
    return f"import pathlib\npathlib.Path({str(marker_path)!r}).write_text('executed')\n{body}"


def build_fake_network(state_dict, class_name, init_kwargs, module_src, child_class=None):
    """Nested FakePersistent modules holding ``state_dict`` (dotted names; buffers by name)."""
    root = FakePersistent(class_name, init_kwargs)
    root.module_src = module_src
    for name, value in state_dict.items():
        parts = name.split(".")
        mod = root
        for p in parts[:-1]:
            if p not in mod._modules:
                child = FakePersistent(child_class or p)
                child.module_src = module_src
                mod.add_module(p, child)
            mod = mod._modules[p]
        t = torch.from_numpy(np.array(value, order="C", copy=True))  # (ascontiguousarray would make 0-d 1-d)
        if parts[-1] in _BUFFER_NAMES:
            mod.register_buffer(parts[-1], t)
        else:
            mod.register_parameter(parts[-1], torch.nn.Parameter(t, requires_grad=False))
    return root


def make_fake_network_pkl(path, nets, marker_path, training_set_kwargs=None, protocol=4):
    """Writes a fake original snapshot: nets = {"G": (class_name, init_kwargs, state_dict), ...}."""
    _, dnu = _install_fake_original_modules()
    data = {}
    for key, (class_name, init_kwargs, sd) in nets.items():
        kw = dnu.EasyDict({k: (dnu.EasyDict(v) if isinstance(v, dict) else v) for k, v in init_kwargs.items()})
        data[key] = build_fake_network(sd, class_name, kw, marker_src(marker_path, class_name)) if sd is not None else None
    data.setdefault("augment_pipe", None)
    data["training_set_kwargs"] = dnu.EasyDict(training_set_kwargs) if training_set_kwargs is not None else None
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=protocol)
    return path


# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_tensor_kinds_roundtrip(protocol):
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    tensors = {
        "f32": torch.nn.Parameter(torch.from_numpy(rng.standard_normal((3, 5, 2)).astype(np.float32))),
        "f16": torch.from_numpy(rng.standard_normal(7).astype(np.float16)),
        "f64": torch.from_numpy(rng.standard_normal((2, 2))),
        "i64": torch.arange(5),
        "scalar": torch.tensor(1.25),
        "transposed": base.t(),
        "slice_view": base[1:, 2:5],  # offset into a shared storage, non-contiguous
        "strided": base[::2, ::3],
        "empty": torch.zeros(0, 3),
        "bf16": torch.tensor([1.5, -2.0, 3.0], dtype=torch.bfloat16),
    }
    out = pr.loads_pickle(pickle.dumps(tensors, protocol=protocol))
    for k, t in tensors.items():
        ref = t.detach().float().numpy() if k == "bf16" else t.detach().numpy()
        assert isinstance(out[k], np.ndarray), k
        assert out[k].shape == ref.shape, k
        assert out[k].dtype == ref.dtype, (k, out[k].dtype, ref.dtype)
        np.testing.assert_array_equal(out[k], ref, err_msg=k)
    assert out["scalar"].shape == ()


def test_zip_storage_bytes():
    buf = io.BytesIO()
    torch.save(torch.arange(6, dtype=torch.float32)._typed_storage(), buf)  # new zip format
    assert buf.getvalue()[:2] == b"PK"
    np.testing.assert_array_equal(pr._load_from_bytes(buf.getvalue()).array, np.arange(6, dtype=np.float32))


def test_persistent_network_read_without_exec(tmp_path):
    marker = tmp_path / "EXECUTED"
    sd = {
        "b8.conv0.weight": np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b8.conv0.bias": np.arange(4, dtype=np.float32),
        "b8.conv0.resample_filter": np.full((4, 4), 1 / 16, np.float32),
        "b4.out.weight": np.ones((1, 4), np.float32),
        "mag.magnitude_ema": np.array(0.7, np.float32),
    }
    kw = dict(c_dim=0, img_resolution=8, mapping_kwargs={"num_layers": 2})
    ap_sd = {"p": np.array(0.25, np.float32), "Hz_geom": np.linspace(-1, 1, 12).astype(np.float32)}
    path = make_fake_network_pkl(tmp_path / "snap.pkl", {"G": ("Generator", kw, sd), "D": ("Discriminator", kw, sd),
                                                          "G_ema": ("Generator", kw, sd),
                                                          "augment_pipe": ("AugmentPipe", {"xflip": 1}, ap_sd)},
                                 marker, training_set_kwargs={"path": "x.zip", "resolution": 8})
    # Sanity: the real (unsafe) pickle.load would run module_src.
    with pytest.raises(RuntimeError, match="fake original reconstruct"):
        with open(path, "rb") as fh:
            pickle.load(fh)
    assert marker.exists()
    marker.unlink()

    info = pr.read_network_pkl(str(path))
    assert not marker.exists(), "embedded module_src was executed"
    for key in ("G", "D", "G_ema"):
        net = info[key]
        assert set(net["state_dict"]) == set(sd)
        for name, ref in sd.items():
            np.testing.assert_array_equal(net["state_dict"][name], ref)
            assert net["state_dict"][name].dtype == ref.dtype
        assert net["init_kwargs"] == kw and type(net["init_kwargs"]["mapping_kwargs"]) is dict
    assert info["G"]["module"] == "training.networks_stylegan3"
    assert info["D"]["module"] == "training.networks_stylegan2"
    assert info["G"]["class_name"] == "Generator" and info["D"]["class_name"] == "Discriminator"
    assert info["training_set_kwargs"] == {"path": "x.zip", "resolution": 8}
    ap = info["augment_pipe"]
    assert ap["class_name"] == "AugmentPipe" and ap["init_kwargs"] == {"xflip": 1}
    assert ap["state_dict"]["p"].shape == () and float(ap["state_dict"]["p"]) == 0.25
    np.testing.assert_array_equal(ap["state_dict"]["Hz_geom"], ap_sd["Hz_geom"])


def test_non_persistent_buffers_skipped(tmp_path):
    _install_fake_original_modules()
    m = FakePersistent("Thing")
    m.register_buffer("kept", torch.ones(2))
    m.register_buffer("dropped", torch.ones(3), persistent=False)
    m.register_parameter("none_param", None)
    rec = pr.loads_pickle(pickle.dumps(m))
    sd = pr.network_info(rec)["state_dict"]
    assert list(sd) == ["kept"]


class _Evil:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen", "raw_os_system",
                                  "nested_in_state"])
def test_malicious_pickles_refused(tmp_path, kind):
    marker = tmp_path / "PWNED"
    cmd = f"touch {marker}"
    pycode = f"open({str(marker)!r}, 'w').write('x')"
    if kind == "os.system":
        data, forbidden = pickle.dumps(_Evil(os.system, (cmd,))), os.system.__module__ + ".system"
    elif kind == "builtins.exec":
        data, forbidden = pickle.dumps(_Evil(exec, (pycode,))), "builtins.exec"
    elif kind == "builtins.eval":
        data, forbidden = pickle.dumps(_Evil(eval, (pycode,))), "builtins.eval"
    elif kind == "subprocess.Popen":
        data, forbidden = pickle.dumps(_Evil(subprocess.Popen, (["touch", str(marker)],))), "subprocess.Popen"
    elif kind == "raw_os_system":  # hand-written protocol-0 pickle naming os.system directly
        data, forbidden = b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.", "os.system"
    else:  # a malicious entry hidden in a network's state next to real tensors
        _install_fake_original_modules()
        m = FakePersistent("Generator")
        m.register_buffer("w_avg", torch.zeros(3))
        m.payload = _Evil(os.system, (cmd,))
        data, forbidden = pickle.dumps({"G": m}), os.system.__module__ + ".system"
    p = tmp_path / "evil.pkl"
    p.write_bytes(data)
    with pytest.raises(pickle.UnpicklingError, match=f"forbidden global '{forbidden}'"):
        pr.read_network_pkl(str(p))
    with pytest.raises(pickle.UnpicklingError, match="forbidden global"):
        pr.loads_pickle(data)
    assert not marker.exists()


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "trunc.pkl"
    p.write_bytes(pickle.dumps({"G": 1})[:-3])
    with pytest.raises(pickle.UnpicklingError, match="trunc.pkl"):
        pr.read_network_pkl(str(p))
    q = tmp_path / "notnets.pkl"
    q.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="notnets.pkl.*no G / D / G_ema"):
        pr.read_network_pkl(str(q))
