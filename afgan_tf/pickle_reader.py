"""Safe, torch-free reader for the original's network pickles (``network-snapshot-*.pkl``, docs/ALGORITHM.md §3.8).

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

5. Limits where bytes are read (:class:`Limits`, all settable; breaking one raises :class:`PickleLimitError`, a
   ``ValueError`` and ``UnpicklingError`` naming the file and the limit): a tensor may claim at most as many
   elements as its storage really holds (a stride-0 view of a huge shape is refused before anything is allocated);
   a storage's element count must be backed by the bytes that follow it; a zip storage may inflate at most
   ``max_inflation`` times; the bytes decoded from one file (storages + tensors) may not exceed
   ``min(max_bytes, max_inflation * max(file size, 1 MiB))``; nesting deeper than ``max_depth`` is refused.
   Peak memory is therefore a small multiple of the file's size (the pickle itself + at most ``max_inflation``
   times its size in arrays).

No torch import is needed (or done).
"""
import collections
import functools
import io
import os
import pickle
import struct
import zipfile

import numpy as np

__all__ = ["PersistentRecord", "SafeUnpickler", "load_pickle", "loads_pickle", "read_network_pkl", "network_info",
           "Limits", "PickleLimitError", "DEFAULT_LIMITS"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
NETWORK_KEYS = ("G", "D", "G_ema")


# --------------------------------------------------------------------------------------------------------------------
# Limits.

class PickleLimitError(pickle.UnpicklingError, ValueError):
    """A file breaks one of the reader's :class:`Limits` (or claims more data than it holds)."""


class Limits:
    """Resource limits of one read (see the module docstring, step 5).

    * ``max_bytes``: total bytes decoded from one file (storage + tensor arrays); default 4 GiB.
    * ``max_inflation``: decoded bytes per byte of the file (and per compressed byte of a zip storage); default 16.
      Files under 1 MiB are treated as 1 MiB here.
    * ``max_depth``: nesting depth of containers / sub-modules; default 100 (real snapshots nest < 10 deep).
    """

    def __init__(self, max_bytes=4 << 30, max_inflation=16, max_depth=100):
        self.max_bytes, self.max_inflation, self.max_depth = int(max_bytes), float(max_inflation), int(max_depth)
        if self.max_bytes < 1 or self.max_inflation < 1 or self.max_depth < 1:
            raise ValueError(f"pickle reader limits must be >= 1 (max_bytes={max_bytes}, "
                             f"max_inflation={max_inflation}, max_depth={max_depth})")

    def __repr__(self):
        return f"Limits(max_bytes={self.max_bytes}, max_inflation={self.max_inflation}, max_depth={self.max_depth})"


DEFAULT_LIMITS = Limits()
_MIN_FILE_BYTES = 1 << 20


class _Budget:
    """Counts the bytes decoded from one file against ``Limits``."""

    def __init__(self, limits, file_bytes):
        self.limits = limits or DEFAULT_LIMITS
        self.file_bytes = int(file_bytes)
        by_ratio = int(self.limits.max_inflation * max(self.file_bytes, _MIN_FILE_BYTES))
        self.cap = min(self.limits.max_bytes, by_ratio)
        self.why = (f"max_bytes={self.limits.max_bytes}" if self.cap == self.limits.max_bytes else
                    f"max_inflation={self.limits.max_inflation:g} x file size {self.file_bytes} bytes")
        self.used = 0

    def charge(self, nbytes, what):
        nbytes = int(nbytes)
        if nbytes < 0 or self.used + nbytes > self.cap:
            raise PickleLimitError(f"{what}: would decode {self.used + nbytes} bytes in all, over the reader's limit "
                                   f"of {self.cap} bytes ({self.why}; see afgan_tf.pickle_reader.Limits)")
        self.used += nbytes


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
    if dt == "bfloat16":
        return _bf16_to_f32(memoryview(raw)[:size])
    return np.frombuffer(raw, dtype=np.dtype(dt), count=numel).astype(np.dtype(dt).newbyteorder("="), copy=True)


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
    stype, key, _location = pid[1], str(pid[2]), pid[3]
    if not isinstance(pid[4], int) or pid[4] < 0:
        raise pickle.UnpicklingError(f"bad storage element count {pid[4]!r:.50} in torch storage bytes")
    numel = int(pid[4])
    dt = stype.dtype if isinstance(stype, _TypeMarker) else None
    if dt is None:
        raise pickle.UnpicklingError(f"unknown storage type {stype!r} in torch storage bytes")
    view = pid[5] if len(pid) > 5 else None
    return dt, key, numel, view


def _load_storage_legacy(b, budget):
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
        nbytes = count * _dtype_itemsize(dt)
        if count < 0 or nbytes > len(b) - f.tell():
            raise PickleLimitError(f"torch storage bytes: storage {key} claims {count} elements ({nbytes} bytes) but "
                                   f"only {len(b) - f.tell()} bytes follow (a storage must hold its data)")
        budget.charge(nbytes, f"storage {key}")
        raw = f.read(nbytes)
        arrays[str(key)] = _array_from_raw(raw, dt, count, f"storage {key}")
    if not isinstance(root_key, str) or root_key not in arrays:
        raise pickle.UnpicklingError("torch storage bytes: the pickled object is not a single storage")
    return arrays[root_key]


def _load_storage_zip(b, budget):
    with zipfile.ZipFile(io.BytesIO(b)) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise pickle.UnpicklingError("torch storage bytes (zip): no data.pkl")
        prefix = pkl[0][: -len("data.pkl")]

        def on_storage(pid):
            dt, key, numel, _view = _parse_storage_pid(pid)
            name = f"{prefix}data/{key}"
            try:
                zi = z.getinfo(name)
            except KeyError:
                raise pickle.UnpicklingError(f"torch storage bytes (zip): no entry {name}") from None
            need = numel * _dtype_itemsize(dt)
            if zi.file_size > max(zi.compress_size, 1) * budget.limits.max_inflation:
                raise PickleLimitError(f"torch storage bytes (zip): entry {name} inflates {zi.compress_size} -> "
                                       f"{zi.file_size} bytes, over max_inflation={budget.limits.max_inflation:g} "
                                       f"(see afgan_tf.pickle_reader.Limits)")
            if zi.file_size < need:
                raise pickle.UnpicklingError(f"storage {key}: truncated storage data ({zi.file_size} bytes, need "
                                             f"{need})")
            budget.charge(zi.file_size, f"storage {key}")
            raw = z.read(name)
            return _array_from_raw(raw, dt, numel, f"storage {key}")

        obj = _StorageUnpickler(io.BytesIO(z.read(pkl[0])), on_storage).load()
    if not isinstance(obj, np.ndarray):
        raise pickle.UnpicklingError("torch storage bytes (zip): the pickled object is not a single storage")
    return obj


def _load_from_bytes(b, budget=None):
    """Replacement for ``torch.storage._load_from_bytes``: torch.save bytes of one storage -> :class:`_Storage`."""
    if isinstance(b, str):
        b = b.encode("latin1")
    if not isinstance(b, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"torch storage: expected bytes, got {type(b).__name__}")
    budget = budget or _Budget(None, len(b))
    try:
        arr = _load_storage_zip(b, budget) if bytes(b[:2]) == b"PK" else _load_storage_legacy(bytes(b), budget)
    except (zipfile.BadZipFile, EOFError, struct.error, ValueError, OverflowError) as e:
        if isinstance(e, pickle.UnpicklingError):
            raise
        raise pickle.UnpicklingError(f"torch storage bytes: corrupt ({e})") from None
    return _Storage(arr)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused, budget=None):
    """Replacement for ``torch._utils._rebuild_tensor(_v2)``: numpy array (copy) of the strided view.

    The view may claim at most as many elements as its storage holds (so a stride-0 view of a huge shape is
    refused), and its copy is charged to the read's byte budget."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"tensor rebuild: expected a storage, got {type(storage).__name__}")
    flat = storage.array
    budget = budget or _Budget(None, flat.nbytes)
    try:
        size, stride, off = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
    except (TypeError, ValueError):
        raise pickle.UnpicklingError(f"tensor rebuild: size/stride/offset must be integers, got {size!r:.80}, "
                                     f"{stride!r:.80}, {storage_offset!r:.40}") from None
    if len(size) != len(stride) or len(size) > 32:
        raise pickle.UnpicklingError(f"tensor rebuild: bad rank (size {size!r:.80}, stride {stride!r:.80})")
    if any(s < 0 for s in size):
        raise pickle.UnpicklingError(f"tensor rebuild: negative size {size}")
    numel = int(np.prod(size, dtype=object)) if size else 1
    if numel > flat.size:
        raise PickleLimitError(f"tensor rebuild: a view of shape {size} claims {numel} elements but its storage "
                               f"holds {flat.size} (a tensor may not claim more elements than its storage backs)")
    budget.charge(numel * flat.itemsize, f"tensor of shape {size}")
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
    if getattr(func, "func", func) not in (_rebuild_tensor, _rebuild_parameter):
        raise pickle.UnpicklingError(f"tensor rebuild via {func!r} is not allowed")
    return func(*args)


def _codecs_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as used by protocol-2 pickles of bytes (latin1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed on str with latin1, got {encoding!r}")
    return text.encode("latin1")


def _np_reconstruct(subtype, shape, dtype):
    """An empty array; the BUILD (``__setstate__``) that follows sets shape and data from bytes the file holds
    (numpy checks that they match), so the claimed ``shape`` here is never allocated."""
    if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)):
        raise pickle.UnpicklingError(f"numpy reconstruct of {subtype!r} is not allowed")
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"numpy array of dtype {dt} is not allowed")
    return np.ndarray.__new__(np.ndarray, (0,), dt)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_frombuffer(buf, dtype, shape, order="C"):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy frombuffer of dtype {dtype!r} is not allowed")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy(order=order)


def _np_dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"numpy dtype {dt} (Python objects) is not allowed")
    return dt


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
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,  # (these two get the read's budget bound)
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
    """``pickle.Unpickler`` that resolves only allow-listed globals (see module docstring); ``limits`` /
    ``file_bytes`` set the read's byte budget (``file_bytes``: the size of the input, for ``max_inflation``)."""

    def __init__(self, file, limits=None, file_bytes=0):
        super().__init__(file)
        self._budget = _Budget(limits, file_bytes)

    def find_class(self, module, name):
        try:
            fn = _ALLOWED[(module, name)]
        except KeyError:
            fn = None
        if fn in (_load_from_bytes, _rebuild_tensor):
            return functools.partial(fn, budget=self._budget)
        if fn is not None:
            return fn
        raise pickle.UnpicklingError(f"refusing to load forbidden global '{module}.{name}' (not in the allow-list "
                                     f"of afgan_tf.pickle_reader; the file may contain code)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.100} (not a plain pickle)")


_TUPLE_OPS = frozenset(("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"))
_PUT_OPS = frozenset(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"))
_GET_OPS = frozenset(("GET", "BINGET", "LONG_BINGET"))


def _check_tuple_depth(fh, max_depth):
    """Scans the opcodes (``pickletools.genops``; nothing is built) and refuses tuples nested deeper than
    ``max_depth``: CPython hashes a tuple (a dict key, a set member) by recursing through its items in C without a
    recursion check, so a 200k-deep tuple key would crash the interpreter during ``load()``. Tracks the tuple depth
    of every stack / memo entry; a malformed stream ends the scan (the real unpickler then reports it)."""
    import pickletools
    stack, marks, memo = [], [], {}
    try:
        for op, arg, _pos in pickletools.genops(fh):
            name = op.name
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name == "STOP":
                break
            before = op.stack_before
            popped = []
            if pickletools.markobject in before:
                m = marks.pop()
                popped, stack[m:] = stack[m:], []
                n_pop = len(before) - 2  # the objects below the mark (the list of APPENDS, the dict of SETITEMS)
            else:
                n_pop = len(before)
            if name in _PUT_OPS:
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                continue
            if n_pop:
                popped += stack[-n_pop:]
                del stack[-n_pop:]
            if name in _GET_OPS:
                stack.append(memo.get(arg, 0))
            elif name == "DUP":
                stack.extend(popped * 2)
            elif name in _TUPLE_OPS:
                depth = 1 + max(popped, default=0)
                if depth > max_depth:
                    raise PickleLimitError(f"tuples nested deeper than max_depth={max_depth} "
                                           f"(see afgan_tf.pickle_reader.Limits)")
                stack.append(depth)
            else:
                stack.extend([0] * len(op.stack_after))
    except (IndexError, ValueError) as e:
        if isinstance(e, PickleLimitError):
            raise
    finally:
        fh.seek(0)


class _BoundedReader:
    """The file as the unpicklers see it: a read of more bytes than remain (a FRAME or BINBYTES8 length field
    claiming exabytes in a 12-byte file) is refused in words before anything is allocated."""

    def __init__(self, fh, file_bytes):
        self._fh, self._size = fh, file_bytes

    def read(self, n=-1):
        if n is not None and n >= 0:
            pos = self._fh.tell()
            if n > self._size - pos:
                raise PickleLimitError(f"corrupt or truncated pickle: a length field asks for {n} bytes at offset {pos}"
                                       f" but the file has {self._size} bytes")
        return self._fh.read(n)

    def readline(self, size=-1):
        return self._fh.readline(size)

    def seek(self, *args):
        return self._fh.seek(*args)

    def tell(self):
        return self._fh.tell()


def _load(fh, limits, file_bytes):
    """One read with the limits; nesting beyond the stack becomes a :class:`PickleLimitError`."""
    limits = limits or DEFAULT_LIMITS
    if file_bytes > 0:
        fh = _BoundedReader(fh, file_bytes)
    try:
        _check_tuple_depth(fh, limits.max_depth)
        return SafeUnpickler(fh, limits, file_bytes).load()
    except RecursionError:
        raise PickleLimitError(f"nesting too deep for the reader (max_depth={limits.max_depth})") from None
    except MemoryError:
        raise PickleLimitError("out of memory while reading (lower afgan_tf.pickle_reader.Limits or free memory)") \
            from None


def loads_pickle(data, limits=None):
    """Safely unpickles ``data`` (bytes) with :class:`SafeUnpickler` under ``limits`` (default ``DEFAULT_LIMITS``)."""
    return _load(io.BytesIO(data), limits, len(data))


def _file_size(fh):
    try:
        return os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        try:
            pos = fh.tell()
            end = fh.seek(0, io.SEEK_END)
            fh.seek(pos)
            return end - pos
        except (AttributeError, OSError, ValueError):
            return 0


def load_pickle(path_or_file, limits=None):
    """Safely unpickles a file path or binary file object under ``limits``; errors name the file."""
    name = getattr(path_or_file, "name", path_or_file)
    try:
        if hasattr(path_or_file, "read"):
            fh = path_or_file
            if not (hasattr(fh, "seekable") and fh.seekable()):
                fh = io.BytesIO(fh.read())
            return _load(fh, limits, _file_size(fh))
        with open(path_or_file, "rb") as fh:
            return _load(fh, limits, _file_size(fh))
    except PickleLimitError as e:
        raise PickleLimitError(f"{name}: {e}") from None
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{name}: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, struct.error, OverflowError) as e:
        raise pickle.UnpicklingError(f"{name}: corrupt or truncated pickle ({type(e).__name__}: {e})"[:500]) from None


# --------------------------------------------------------------------------------------------------------------------
# Network records -> plain dicts.

def _plain(obj, depth=0, max_depth=None):
    """EasyDict/OrderedDict/tuple trees -> plain dict/list trees (for init kwargs)."""
    max_depth = max_depth or DEFAULT_LIMITS.max_depth
    if depth > max_depth:
        raise PickleLimitError(f"nesting deeper than max_depth={max_depth}")
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1, max_depth) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, depth + 1, max_depth) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _state_dict(rec, prefix, out, path, depth=0):
    if depth > DEFAULT_LIMITS.max_depth:
        raise PickleLimitError(f"{path}: sub-modules nested deeper than max_depth={DEFAULT_LIMITS.max_depth}")
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
        _state_dict(child, prefix + name + ".", out, path + "." + name, depth + 1)


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


def read_network_pkl(path_or_file, limits=None):
    """Reads an original ``network-snapshot-*.pkl`` without executing its code, under ``limits``.

    Returns ``{"G", "D", "G_ema"}`` (each :func:`network_info` or None when absent), ``"augment_pipe"`` (info or
    None), ``"training_set_kwargs"`` (dict or None) and ``"extra"`` (any other top-level entries, raw)."""
    name = getattr(path_or_file, "name", path_or_file)
    data = load_pickle(path_or_file, limits)
    try:
        return _read_networks(data, name)
    except RecursionError:
        raise PickleLimitError(f"{name}: nesting too deep for the reader") from None
    except PickleLimitError as e:
        raise PickleLimitError(f"{name}: {e}") from None


def _read_networks(data, name):
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
