"""Safe, torch-free reader for the original's network pickles (``network-snapshot-*.pkl``, spec §3.8).

An original snapshot is a plain pickle of ``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}``. Every
network is a "persistent" object: its pickle calls ``torch_utils.persistence._reconstruct_persistent_obj(meta)``,
which would *execute* ``meta["module_src"]`` (arbitrary code). This module never executes anything from the file:

1. A restricted ``pickle.Unpickler`` resolves globals only from an explicit allow-list (``_ALLOWED``); every other
   global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises ``pickle.UnpicklingError`` naming it,
   before anything is called.
2. ``_reconstruct_persistent_obj`` becomes :class:`PersistentRecord` (class name + pickled state, source kept as
   inert text); ``dnnlib.EasyDict`` becomes a dict; ``collections.OrderedDict``/``set``/numpy arrays are rebuilt.
3. Tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` become numpy rebuilders. Their storages are
   pickled by torch as ``torch.storage._load_from_bytes(<bytes of torch.save(storage, legacy format)>)``; we parse
   that byte format ourselves (magic, protocol, sys-info pickles, a one-element pickle whose persistent id names
   the storage type, the key list, then per key an int64 element count + raw little-endian data). The zip format
   (``data.pkl`` + ``data/<key>``) is also accepted.
4. :func:`read_network_pkl` walks ``_parameters`` / ``_buffers`` / ``_modules`` to dotted ``state_dict`` names
   (non-persistent buffers skipped, like ``Module.state_dict``).

No torch import is needed (or done).
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["PersistentRecord", "SafeUnpickler", "load_pickle", "loads_pickle", "read_network_pkl", "network_info"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
NETWORK_KEYS = ("G", "D", "G_ema")


# --------------------------------------------------------------------------------------------------------------------
# Records that replace the original's objects.

class PersistentRecord:
    """Stand-in for one persistent network object: ``class_name``, ``state`` (its ``__dict__``), ``version`` and the
    embedded ``module_src`` (kept as text only; never executed)."""

    def __init__(self, meta):
        if not isinstance(meta, dict):
            raise pickle.UnpicklingError(f"persistent object meta must be a dict, got {type(meta).__name__}")
        if meta.get("type", "class") != "class":
            raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
        self.class_name = meta.get("class_name")
        self.version = meta.get("version")
        self.module_src = meta.get("module_src") or ""
        self.state = meta.get("state") or {}
        if not isinstance(self.state, dict):
            raise pickle.UnpicklingError(f"persistent object {self.class_name!r}: state must be a dict, "
                                         f"got {type(self.state).__name__}")

    @property
    def module(self):
        """Best guess of the defining module (from the source text only), or None."""
        src = self.module_src
        if "class SynthesisInput" in src:
            return "training.networks_stylegan3"
        if "class DiscriminatorEpilogue" in src or "class SynthesisBlock" in src:
            return "training.networks_stylegan2"
        if "class AugmentPipe" in src:
            return "training.augment"
        return None

    def __repr__(self):
        return f"PersistentRecord({self.class_name!r}, module={self.module!r})"


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


class _TypeMarker:
    """Stand-in for a torch class that only appears as an argument (``Parameter``, ``Tensor``, storage types)."""

    def __init__(self, name, dtype=None):
        self.name = name
        self.dtype = dtype

    def __repr__(self):
        return f"<{self.name}>"

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"refusing to call {self.name} while unpickling")


class _Storage:
    """A storage rebuilt from bytes: flat numpy array of its dtype."""

    def __init__(self, array):
        self.array = array


# --------------------------------------------------------------------------------------------------------------------
# torch storages / tensors -> numpy.

def _bf16_to_f32(raw):
    u16 = np.frombuffer(raw, dtype="<u2")
    return (u16.astype(np.uint32) << 16).view(np.float32)


_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "BFloat16Storage": "bfloat16", "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
    "UntypedStorage": "u1",
}
_TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                 "float", "double", "half", "long", "int", "short", "complex64", "complex128")


def _dtype_itemsize(dt):
    return 2 if dt == "bfloat16" else np.dtype(dt).itemsize


def _array_from_raw(raw, dt, numel, what):
    size = numel * _dtype_itemsize(dt)
    if len(raw) < size:
        raise pickle.UnpicklingError(f"{what}: truncated storage data ({len(raw)} bytes, need {size})")
    raw = bytes(raw[:size])
    if dt == "bfloat16":
        return _bf16_to_f32(raw)
    return np.frombuffer(raw, dtype=np.dtype(dt)).astype(np.dtype(dt).newbyteorder("="), copy=True)


class _StorageUnpickler(pickle.Unpickler):
    """Unpickler for the small pickles inside torch's storage bytes: only storage-type globals are allowed."""

    def __init__(self, f, on_storage):
        super().__init__(f)
        self._on_storage = on_storage

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _TypeMarker(f"torch.{name}", _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TypeMarker(f"torch.{name}", _torch_dtype_np(name))
        raise pickle.UnpicklingError(f"forbidden global '{module}.{name}' inside a torch storage record")

    def persistent_load(self, pid):
        return self._on_storage(pid)


def _torch_dtype_np(name):
    return {"float32": "<f4", "float": "<f4", "float64": "<f8", "double": "<f8", "float16": "<f2", "half": "<f2",
            "bfloat16": "bfloat16", "int64": "<i8", "long": "<i8", "int32": "<i4", "int": "<i4", "int16": "<i2",
            "short": "<i2", "int8": "i1", "uint8": "u1", "bool": "?", "complex64": "<c8",
            "complex128": "<c16"}[name]


def _parse_storage_pid(pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise pickle.UnpicklingError(f"unexpected persistent id in torch storage bytes: {pid!r:.200}")
    stype, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
    dt = stype.dtype if isinstance(stype, _TypeMarker) else None
    if dt is None:
        raise pickle.UnpicklingError(f"unknown storage type {stype!r} in torch storage bytes")
    view = pid[5] if len(pid) > 5 else None
    return dt, key, numel, view


def _load_storage_legacy(b):
    f = io.BytesIO(b)
    restricted = lambda: _StorageUnpickler(f, lambda pid: (_ for _ in ()).throw(
        pickle.UnpicklingError("unexpected persistent id in torch storage header")))
    magic = restricted().load()
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("torch storage bytes: bad magic number (not a torch.save legacy stream)")
    restricted().load()  # protocol version
    sys_info = restricted().load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("torch storage bytes: big-endian data is not supported")
    pids = {}

    def on_storage(pid):
        dt, key, numel, view = _parse_storage_pid(pid)
        if view is not None:
            raise pickle.UnpicklingError("torch storage bytes: storage views are not supported")
        pids[key] = (dt, numel)
        return key

    root_key = _StorageUnpickler(f, on_storage).load()
    keys = restricted().load()
    arrays = {}
    for key in keys:
        hdr = f.read(8)
        if len(hdr) != 8:
            raise pickle.UnpicklingError("torch storage bytes: truncated (missing element count)")
        count = struct.unpack("<q", hdr)[0]
        dt, numel = pids.get(str(key), ("u1", count))
        raw = f.read(count * _dtype_itemsize(dt))
        arrays[str(key)] = _array_from_raw(raw, dt, count, f"storage {key}")
    if not isinstance(root_key, str) or root_key not in arrays:
        raise pickle.UnpicklingError("torch storage bytes: the pickled object is not a single storage")
    return arrays[root_key]


def _load_storage_zip(b):
    with zipfile.ZipFile(io.BytesIO(b)) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise pickle.UnpicklingError("torch storage bytes (zip): no data.pkl")
        prefix = pkl[0][: -len("data.pkl")]

        def on_storage(pid):
            dt, key, numel, _view = _parse_storage_pid(pid)
            raw = z.read(f"{prefix}data/{key}")
            return _array_from_raw(raw, dt, numel, f"storage {key}")

        obj = _StorageUnpickler(io.BytesIO(z.read(pkl[0])), on_storage).load()
    if not isinstance(obj, np.ndarray):
        raise pickle.UnpicklingError("torch storage bytes (zip): the pickled object is not a single storage")
    return obj


def _load_from_bytes(b):
    """Replacement for ``torch.storage._load_from_bytes``: torch.save bytes of one storage -> :class:`_Storage`."""
    if isinstance(b, str):
        b = b.encode("latin1")
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"torch storage: expected bytes, got {type(b).__name__}")
    arr = _load_storage_zip(b) if bytes(b[:2]) == b"PK" else _load_storage_legacy(bytes(b))
    return _Storage(arr)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Replacement for ``torch._utils._rebuild_tensor(_v2)``: numpy array (copy) of the strided view."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuild: expected a storage, got {type(storage).__name__}")
    flat = storage.array
    size, stride, off = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor rebuild: size {size} and stride {stride} differ in rank")
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=flat.dtype)
    last = off + sum((n - 1) * st for n, st in zip(size, stride))
    if off < 0 or any(st < 0 for st in stride) or last >= flat.size:
        raise pickle.UnpicklingError(f"tensor rebuild: view (offset {off}, size {size}, stride {stride}) exceeds "
                                     f"its storage of {flat.size} elements")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[off:], shape=size, strides=tuple(st * item for st in stride),
                                           writeable=False)
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise pickle.UnpicklingError(f"tensor rebuild via {func!r} is not allowed")
    return func(*args)


def _codecs_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as used by protocol-2 pickles of bytes (latin1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed on str with latin1, got {encoding!r}")
    return text.encode("latin1")


def _np_reconstruct(subtype, shape, dtype):
    if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)):
        raise pickle.UnpicklingError(f"numpy reconstruct of {subtype!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_frombuffer(buf, dtype, shape, order="C"):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy frombuffer of dtype {dtype!r} is not allowed")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy(order=order)


def _np_dtype(*args):
    return np.dtype(*args)


def _set(*args):
    return set(*args)


def _frozenset(*args):
    return frozenset(*args)


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("__builtin__", "set"): _set,
    ("_codecs", "encode"): _codecs_encode,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
    ("torch._tensor", "Tensor"): _TypeMarker("torch.Tensor"),
    ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_mod, "scalar")] = _np_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _np_frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _np_dtype
for _n in _TORCH_DTYPES:
    _ALLOWED[("torch", _n)] = _TypeMarker(f"torch.{_n}", _torch_dtype_np(_n))


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see module docstring)."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            pass
        raise pickle.UnpicklingError(f"refusing to load forbidden global '{module}.{name}' (not in the allow-list "
                                     f"of afgan_tf.pickle_reader; the file may contain code)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.100} (not a plain pickle)")


def loads_pickle(data):
    """Safely unpickles ``data`` (bytes) with :class:`SafeUnpickler`."""
    return SafeUnpickler(io.BytesIO(data)).load()


def load_pickle(path_or_file):
    """Safely unpickles a file path or binary file object; errors name the file."""
    if hasattr(path_or_file, "read"):
        return SafeUnpickler(path_or_file).load()
    try:
        with open(path_or_file, "rb") as fh:
            return SafeUnpickler(fh).load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path_or_file}: {e}") from None
    except (EOFError, ValueError, struct.error) as e:
        raise pickle.UnpicklingError(f"{path_or_file}: corrupt or truncated pickle ({e})") from None


# --------------------------------------------------------------------------------------------------------------------
# Network records -> plain dicts.

def _plain(obj):
    """EasyDict/OrderedDict/tuple trees -> plain dict/list trees (for init kwargs)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if isinstance(obj, list) else tuple(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _state_dict(rec, prefix, out, path):
    st = rec.state
    for key in ("_parameters", "_buffers", "_modules"):
        if key in st and not isinstance(st[key], dict):
            raise ValueError(f"{path}: state entry {key} is {type(st[key]).__name__}, expected a dict")
    non_persistent = set(st.get("_non_persistent_buffers_set") or ())
    for name, val in (st.get("_parameters") or {}).items():
        if val is not None:
            out[prefix + name] = _as_array(val, path + "." + name)
    for name, val in (st.get("_buffers") or {}).items():
        if val is not None and name not in non_persistent:
            out[prefix + name] = _as_array(val, path + "." + name)
    for name, child in (st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise ValueError(f"{path}.{name}: sub-module of type {type(child).__name__} is not a persistent network "
                             f"object")
        _state_dict(child, prefix + name + ".", out, path + "." + name)


def _as_array(val, name):
    if not isinstance(val, np.ndarray):
        raise ValueError(f"{name}: expected a tensor, got {type(val).__name__}")
    return val


def network_info(rec, name="network"):
    """PersistentRecord -> ``{"class_name", "module", "init_args", "init_kwargs", "state_dict"}``."""
    if not isinstance(rec, PersistentRecord):
        raise ValueError(f"{name}: expected a persistent network object, got {type(rec).__name__}")
    sd = {}
    _state_dict(rec, "", sd, name)
    return {
        "class_name": rec.class_name,
        "module": rec.module,
        "init_args": list(_plain(rec.state.get("_init_args", ()) or ())),
        "init_kwargs": _plain(dict(rec.state.get("_init_kwargs", {}) or {})),
        "state_dict": sd,
    }


def read_network_pkl(path_or_file):
    """Reads an original ``network-snapshot-*.pkl`` without executing its code.

    Returns ``{"G", "D", "G_ema"}`` (each :func:`network_info` or None when absent), ``"augment_pipe"`` (info or
    None), ``"training_set_kwargs"`` (dict or None) and ``"extra"`` (any other top-level entries, raw)."""
    name = getattr(path_or_file, "name", path_or_file)
    data = load_pickle(path_or_file)
    if isinstance(data, tuple) and len(data) == 3:
        raise ValueError(f"{name}: looks like an old TensorFlow StyleGAN2 pickle (3-tuple); not supported")
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a dict of networks, got {type(data).__name__}")
    if not any(k in data for k in NETWORK_KEYS):
        raise ValueError(f"{name}: no G / D / G_ema entry (keys: {sorted(map(str, data))})")
    out = {}
    for k in NETWORK_KEYS:
        out[k] = network_info(data[k], f"{name}:{k}") if data.get(k) is not None else None
    ap = data.get("augment_pipe")
    out["augment_pipe"] = network_info(ap, f"{name}:augment_pipe") if isinstance(ap, PersistentRecord) else None
    tsk = data.get("training_set_kwargs")
    out["training_set_kwargs"] = _plain(dict(tsk)) if isinstance(tsk, dict) else None
    out["extra"] = {k: v for k, v in data.items() if k not in NETWORK_KEYS + ("augment_pipe", "training_set_kwargs")}
    return out
