"""Hostile network pickles made on the fly (no binaries in the repository), for tests/test_hostile_pickle.py.

* :func:`dumps` assembles a protocol-3 pickle from plain values and :class:`Call` nodes (a global called
  with arguments), so tests can name any global (``torch._utils._rebuild_tensor_v2``, ``os.system``) without
  importing torch; :func:`legacy_storage_bytes` / :func:`zip_storage_bytes` write the two byte formats of
  ``torch.storage._load_from_bytes`` with any claimed element count; :func:`tensor` a tensor view of a storage;
  :func:`persistent` an original network object.
* :func:`run_limited` runs Python code in a subprocess under an address-space cap.
"""
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------------------------------------
# Pickles.

class Call:
    """``module.name(*args)`` in a pickle (GLOBAL + args tuple + REDUCE)."""

    def __init__(self, module, name, *args):
        self.module, self.name, self.args = module, name, args


class Global:
    """A global (GLOBAL opcode) not called: e.g. the storage type ``torch.FloatStorage``."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class PersId:
    """A persistent id (BINPERSID) whose value is ``value``."""

    def __init__(self, value):
        self.value = value


class Raw:
    """Pickle opcodes inserted verbatim."""

    def __init__(self, data):
        self.data = data


def _emit(obj, out):
    if isinstance(obj, Raw):
        out += obj.data
    elif isinstance(obj, Call):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
        _emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, Global):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, PersId):
        _emit(obj.value, out)
        out += b"Q"
    elif isinstance(obj, tuple):
        out += b"("
        for v in obj:
            _emit(v, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for v in obj:
            _emit(v, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for k, v in obj.items():
            _emit(k, out)
            _emit(v, out)
        out += b"u"
    else:  # primitives via the stdlib (protocol 3: no frames; memo puts are harmless)
        out += pickle.dumps(obj, protocol=3)[2:-1]


def dumps(obj):
    """A protocol-3 pickle of ``obj`` (plain values, tuples/lists/dicts, :class:`Call`, :class:`PersId`)."""
    out = bytearray(b"\x80\x03")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # deeply nested test objects
    try:
        _emit(obj, out)
    finally:
        sys.setrecursionlimit(limit)
    return bytes(out + b".")


def nested_lists(depth):
    """A pickle of ``depth`` nested lists, written iteratively (no recursion in the test either)."""
    return b"\x80\x03" + b"](" * depth + b"e" * depth + b"."


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy_storage_bytes(array, stype="FloatStorage", claimed=None):
    """torch.save's legacy bytes of one storage holding ``array`` (flat); ``claimed``: element count written in
    the header (default: the real one)."""
    a = np.ascontiguousarray(array).reshape(-1)
    n = a.size if claimed is None else int(claimed)
    parts = [pickle.dumps(_LEGACY_MAGIC, 2), pickle.dumps(1001, 2),
             pickle.dumps(dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4)), 2),
             dumps(PersId(("storage", Global("torch", stype), "0", "cpu", n))), pickle.dumps(["0"], 2),
             struct.pack("<q", n), a.tobytes()]
    return b"".join(parts)


def zip_storage_bytes(array, stype="FloatStorage", claimed=None, compress=False, raw=None):
    """torch.save's zip bytes of one storage; ``raw``: the stored data bytes instead of ``array``'s;
    ``compress``: deflate the data entry (torch never does; a zip bomb does)."""
    a = np.ascontiguousarray(array).reshape(-1)
    n = a.size if claimed is None else int(claimed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", dumps(PersId(("storage", Global("torch", stype), "0", "cpu", n))))
        z.writestr("archive/data/0", a.tobytes() if raw is None else raw)
    return buf.getvalue()


def tensor(storage_bytes, size, stride=None, offset=0):
    """``torch._utils._rebuild_tensor_v2(_load_from_bytes(storage_bytes), offset, size, stride, ...)``."""
    if stride is None:
        stride, acc = [], 1
        for s in reversed(size):
            stride.insert(0, acc)
            acc *= s
    return Call("torch._utils", "_rebuild_tensor_v2", Call("torch.storage", "_load_from_bytes", storage_bytes),
                offset, tuple(size), tuple(stride), False, Call("collections", "OrderedDict"))


def persistent(class_name, params=None, modules=None, init_kwargs=None, init_args=()):
    """An original persistent network object (``_reconstruct_persistent_obj(meta)``) with these contents."""
    state = {"_parameters": Call("collections", "OrderedDict", list((params or {}).items())),
             "_buffers": Call("collections", "OrderedDict"),
             "_modules": Call("collections", "OrderedDict", list((modules or {}).items())),
             "_init_args": tuple(init_args), "_init_kwargs": Call("dnnlib.util", "EasyDict", init_kwargs or {})}
    meta = dict(type="class", version=6, module_src="class SynthesisInput: pass\n", class_name=class_name,
                state=state)
    return Call("torch_utils.persistence", "_reconstruct_persistent_obj", meta)


def run_limited(code, mem_mib, timeout=120):
    """Runs ``code`` in a fresh Python (repo on sys.path) whose address space is capped at the size it has after
    its imports plus ``mem_mib`` MiB. The code runs after ``import numpy`` and ``from afgan_tf import
    pickle_reader``; returns the CompletedProcess."""
    prelude = (
        "import os, resource, sys\n"
        "import numpy as np\n"
        "from afgan_tf import pickle_reader\n"
        "vm = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
        f"cap = vm + {int(mem_mib)} * 2**20\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n")
    env = dict(os.environ, PYTHONPATH=REPO, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
