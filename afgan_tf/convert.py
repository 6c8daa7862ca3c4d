"""Converters: the original's state dicts / pickles -> our Keras networks, and our own network snapshot format.

Stable interface (called by tools and outside checks):

* ``generator_from_state_dict(state_dict, init_kwargs)`` — StyleGAN3 ``Generator`` (tells StyleGAN3 and StyleGAN2
  generators apart by their keys: ``synthesis.input.*`` (StyleGAN3) vs ``synthesis.b4.*`` (StyleGAN2)).
* ``discriminator_from_state_dict(state_dict, init_kwargs)`` — ``Discriminator``.
* ``load_network_pkl(path)`` — an original ``network-snapshot-*.pkl`` read with the safe reader
  (:mod:`afgan_tf.pickle_reader`, no code from the file is executed) → ``{"G", "D", "G_ema", "augment_pipe",
  "training_set_kwargs", "extra"}``; networks are our Keras models, ``augment_pipe`` stays raw info.
* ``save_network_snapshot(path, nets, extra=None)`` — ONE ``.npz`` written atomically (temp file + rename) with
  ``<net>/<original name>`` arrays in the original layout, JSON ``meta/<net>`` = ``{"class", "init_kwargs"}``,
  ``meta/extra`` and ``meta/format``. Loads with ``np.load(path, allow_pickle=False)``.
* ``load_network(path, which=None)`` — our ``.npz`` snapshot or an original ``.pkl`` → same dict as
  ``load_network_pkl``.

Errors name the file, the network and the entry. Untrusted files: the pickle reader's byte limits
(:class:`afgan_tf.pickle_reader.Limits`, passed as ``limits``) also cover the ``.npz`` entries (an entry may not
inflate more than ``max_inflation`` times or claim more elements than its bytes hold, all entries together at most
``max_bytes``), and every network's constructor kwargs are checked against ``KWARG_BOUNDS`` before anything is
built, so a small file cannot make us build a multi-GB network. All of these raise ``ValueError`` naming the file
and the limit.
"""
import json
import os

import numpy as np

from . import pickle_reader
from .utils import write_atomic

__all__ = ["generator_from_state_dict", "discriminator_from_state_dict", "network_from_state_dict",
           "load_network_pkl", "save_network_snapshot", "load_network", "network_class_name", "SNAPSHOT_FORMAT",
           "NETWORK_CLASSES", "KWARG_BOUNDS", "check_network_kwargs"]

SNAPSHOT_FORMAT = {"format": "afgan-tf network snapshot", "version": 1}
NETWORK_CLASSES = ("stylegan3.Generator", "stylegan2.Generator", "stylegan2.Discriminator")
_NET_KEYS = ("G", "D", "G_ema")

# Positional constructor arguments of the original classes (``_init_args`` of a pickle), in signature order.
_POSITIONAL = {
    "Generator": ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"),
    "Discriminator": ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                      "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"),
}


# Sane ranges of the constructor kwargs (at any nesting level: mapping_kwargs, block_kwargs, ...), checked before a
# network is built. Generous: several times the largest published configuration (z/w 512, channel_max 1024,
# channel_base 65536, 1024 px, 14 synthesis layers, 8 mapping layers). None is allowed where the original allows it.
KWARG_BOUNDS = {
    "z_dim": (0, 4096), "c_dim": (0, 10000), "w_dim": (1, 4096), "img_resolution": (4, 4096),
    "img_channels": (1, 4), "channel_base": (1, 1 << 18), "channel_max": (1, 4096), "num_layers": (0, 64),
    "num_critical": (0, 16), "num_fp16_res": (0, 16), "cmap_dim": (0, 4096), "embed_features": (0, 4096),
    "layer_features": (0, 4096), "margin_size": (0, 1024), "conv_kernel": (1, 15), "filter_size": (1, 64),
    "mbstd_group_size": (0, 1024), "mbstd_num_channels": (0, 64), "freeze_layers": (0, 64),
}


def check_network_kwargs(kwargs, context):
    """Raises ValueError naming ``context`` and the bound when a kwarg of ``KWARG_BOUNDS`` (at any nesting level)
    is not an integer within its range, or a float kwarg is not finite."""
    stack = [("", kwargs, 0)]
    while stack:
        prefix, obj, depth = stack.pop()
        if depth > 8:
            raise ValueError(f"{context}: constructor kwargs nested deeper than 8 levels")
        if not isinstance(obj, dict):
            continue
        for k, v in obj.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                stack.append((name + ".", v, depth + 1))
                continue
            if isinstance(v, float) and not np.isfinite(v):
                raise ValueError(f"{context}: constructor kwarg {name}={v!r} is not finite")
            if k not in KWARG_BOUNDS or v is None:
                continue
            lo, hi = KWARG_BOUNDS[k]
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{context}: constructor kwarg {name}={v!r:.60} must be an integer in [{lo}, {hi}]")
            if not lo <= int(v) <= hi:
                raise ValueError(f"{context}: constructor kwarg {name}={int(v)} is outside the sane range "
                                 f"[{lo}, {hi}] (afgan_tf.convert.KWARG_BOUNDS); refusing to build the network")


def _generator_cfg(state_dict):
    """The preset family of a generator state dict (``networks.presets``): 'stylegan2' (``synthesis.b4.*`` keys) or
    'stylegan3-t' (``synthesis.input.*``; -T and -R share the class). A foreign pickle names no config."""
    keys = list(state_dict)
    if any(k.startswith("synthesis.b4.") for k in keys):   # first: StyleGAN2 with input_type='fourier' has both
        return "stylegan2"
    if any(k.startswith("synthesis.input.") for k in keys):
        return "stylegan3-t"
    raise ValueError("generator state_dict has neither synthesis.input.* (StyleGAN3) nor synthesis.b4.* "
                     f"(StyleGAN2) entries; first keys: {keys[:5]}")


def _to_arrays(state_dict):
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):  # torch tensor
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out


def generator_from_state_dict(state_dict, init_kwargs):
    """Builds our generator with the original's ``init_kwargs`` and loads ``state_dict`` (strict).

    StyleGAN3 (``synthesis.input.*`` keys) and StyleGAN2 (``synthesis.b4.*`` keys) generators; raises
    ``StateDictError`` naming the entry for unknown / missing / mis-shaped entries."""
    check_network_kwargs(dict(init_kwargs), "generator")  # before importing the networks (and TensorFlow)
    from .networks.presets import generator_class
    G = generator_class(_generator_cfg(state_dict))(**dict(init_kwargs))
    G.load_original_state_dict(_to_arrays(state_dict), strict=True)
    return G


def discriminator_from_state_dict(state_dict, init_kwargs):
    """Builds our ``Discriminator(**init_kwargs)`` and loads ``state_dict`` (strict; errors name the entry)."""
    from .networks.discriminator import Discriminator
    check_network_kwargs(dict(init_kwargs), "discriminator")
    D = Discriminator(**dict(init_kwargs))
    D.load_original_state_dict(_to_arrays(state_dict), strict=True)
    return D


def network_from_state_dict(class_name, state_dict, init_kwargs):
    """Dispatch on our snapshot class names (``NETWORK_CLASSES``)."""
    if class_name in ("stylegan3.Generator", "stylegan2.Generator"):
        kind = _generator_cfg(state_dict).split("-")[0] + ".Generator"  # 'stylegan3-t' -> 'stylegan3.Generator'
        if kind != class_name:
            raise ValueError(f"network class {class_name!r} does not match its state_dict (looks like {kind})")
        return generator_from_state_dict(state_dict, init_kwargs)
    if class_name == "stylegan2.Discriminator":
        return discriminator_from_state_dict(state_dict, init_kwargs)
    raise ValueError(f"unknown network class {class_name!r}; expected one of {NETWORK_CLASSES}")


def network_class_name(net):
    """Our snapshot class name of a network object."""
    name = getattr(net, "snapshot_class", None)  # a class attribute of each of our network classes
    if name in NETWORK_CLASSES:
        return name
    raise TypeError(f"cannot save a network of type {type(net).__name__} (no snapshot_class attribute)")


def _with_context(fn, context):
    """Runs fn(); re-raises errors of the same type with ``context`` prepended."""
    try:
        return fn()
    except (ValueError, TypeError, KeyError, NotImplementedError) as e:
        msg = e.args[0] if e.args else str(e)
        try:
            err = type(e)(f"{context}: {msg}")
        except Exception:  # exotic constructor
            raise e
        raise err from e


# --------------------------------------------------------------------------------------------------------------------
# Original pickles.

def _kwargs_from_info(info, context):
    kwargs = dict(info.get("init_kwargs") or {})
    args = list(info.get("init_args") or [])
    if args:
        names = _POSITIONAL.get(info.get("class_name"))
        if names is None or len(args) > len(names):
            raise ValueError(f"{context}: cannot map {len(args)} positional constructor argument(s) of class "
                             f"{info.get('class_name')!r}")
        for n, v in zip(names, args):
            if n in kwargs:
                raise ValueError(f"{context}: constructor argument {n!r} given positionally and by keyword")
            kwargs[n] = v
    return kwargs


def _net_from_info(info, context):
    cls, module = info.get("class_name"), info.get("module")
    sd = info["state_dict"]
    kwargs = _kwargs_from_info(info, context)
    if cls == "Discriminator":  # StyleGAN3 uses the StyleGAN2 discriminator (training.networks_stylegan2)
        return _with_context(lambda: discriminator_from_state_dict(sd, kwargs), context)
    if cls == "Generator":
        return _with_context(lambda: generator_from_state_dict(sd, kwargs), context)
    raise ValueError(f"{context}: unsupported network class {cls!r} (module {module!r})")


def load_network_pkl(path, which=None, limits=None):
    """Original snapshot pickle → ``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs", "extra"}``.

    ``which``: iterable of network keys to build (default all present); the others are None.
    ``augment_pipe`` is the raw info dict (class_name, init_kwargs, state_dict) or None. ``limits``: the reader's
    :class:`afgan_tf.pickle_reader.Limits` (default ``DEFAULT_LIMITS``)."""
    info = pickle_reader.read_network_pkl(path, limits)
    out = {}
    for key in _NET_KEYS:
        if info[key] is None or (which is not None and key not in which):
            out[key] = None
            continue
        out[key] = _net_from_info(info[key], f"{path}: {key}")
    out["augment_pipe"] = info["augment_pipe"]
    out["training_set_kwargs"] = info["training_set_kwargs"]
    out["extra"] = info["extra"]
    return out


# --------------------------------------------------------------------------------------------------------------------
# Our snapshot format.

def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"value of type {type(o).__name__} is not JSON serialisable")


def save_network_snapshot(path, nets, extra=None):
    """Writes ``nets`` ({key: network or None}) and ``extra`` (JSON-serialisable dict) to ONE ``.npz`` atomically.

    Arrays: ``<key>/<original name>`` (original layout); JSON: ``meta/<key>`` = {"class", "init_kwargs"},
    ``meta/extra``, ``meta/format``. Returns ``path``."""
    if not isinstance(nets, dict) or not nets:
        raise ValueError("save_network_snapshot: nets must be a non-empty dict {name: network}")
    arrays = {}
    for key, net in nets.items():
        if net is None:
            continue
        if not isinstance(key, str) or not key or "/" in key or key == "meta":
            raise ValueError(f"save_network_snapshot: invalid network key {key!r}")
        cls = network_class_name(net)
        init_kwargs = net.init_kwargs
        arrays[f"meta/{key}"] = np.array(json.dumps({"class": cls, "init_kwargs": init_kwargs},
                                                    default=_json_default))
        for name, a in net.original_state_dict().items():
            arrays[f"{key}/{name}"] = np.array(a, order="C")  # (np.ascontiguousarray turns 0-d into 1-d)
    arrays["meta/extra"] = np.array(json.dumps(extra or {}, default=_json_default))
    arrays["meta/format"] = np.array(json.dumps(SNAPSHOT_FORMAT))
    return write_atomic(path, lambda fh: np.savez(fh, **arrays))


def _is_pickle(path):
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == b"PK":  # zip = .npz
        return False
    return head[:1] == b"\x80" or path.lower().endswith(".pkl")


def _check_npz(z, path, limits):
    """Byte limits of an ``.npz`` before any entry is read: inflation per entry, header shape backed by the entry's
    bytes, total bytes."""
    limits = limits or pickle_reader.DEFAULT_LIMITS
    total = 0
    for zi in z.zip.infolist():
        if zi.file_size > max(zi.compress_size, 1) * limits.max_inflation:
            raise ValueError(f"{path}: entry {zi.filename} inflates {zi.compress_size} -> {zi.file_size} bytes, over "
                             f"max_inflation={limits.max_inflation:g} (afgan_tf.pickle_reader.Limits)")
        total += zi.file_size
        if total > limits.max_bytes:
            raise ValueError(f"{path}: entries hold more than max_bytes={limits.max_bytes} bytes "
                             f"(afgan_tf.pickle_reader.Limits)")
        if not zi.filename.endswith(".npy"):
            continue
        with z.zip.open(zi) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read_header(fh)
            if dtype.hasobject:
                raise ValueError(f"{path}: entry {zi.filename} holds Python objects (not allowed)")
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if need > zi.file_size - fh.tell():
                raise ValueError(f"{path}: entry {zi.filename} claims shape {shape} ({need} bytes) but holds "
                                 f"{zi.file_size - fh.tell()} bytes")


def load_network(path, which=None, limits=None):
    """Our ``.npz`` snapshot or an original ``.pkl`` → ``{"G", "D", "G_ema", ..., "augment_pipe",
    "training_set_kwargs", "extra"}`` (absent networks are None). ``which``: keys to build (default all).
    ``limits``: :class:`afgan_tf.pickle_reader.Limits` for untrusted files (default ``DEFAULT_LIMITS``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"network file {path} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"network file {path} is a directory")
    if _is_pickle(path):
        return load_network_pkl(path, which=which, limits=limits)
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "zip"):
            raise ValueError("a single .npy array, not an .npz archive")
        _check_npz(z, path, limits)
    except ValueError as e:
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: neither an original network pickle nor an afgan-tf .npz snapshot ({e})") from None
    except Exception as e:
        raise ValueError(f"{path}: neither an original network pickle nor an afgan-tf .npz snapshot ({e})") from None
    with z:
        files = list(z.files)
        if "meta/format" not in files:
            raise ValueError(f"{path}: not an afgan-tf network snapshot (no meta/format entry)")
        fmt = json.loads(str(z["meta/format"]))
        if fmt.get("format") != SNAPSHOT_FORMAT["format"] or int(fmt.get("version", 0)) > SNAPSHOT_FORMAT["version"]:
            raise ValueError(f"{path}: unsupported snapshot format {fmt}")
        extra = json.loads(str(z["meta/extra"])) if "meta/extra" in files else {}
        keys = [f[len("meta/"):] for f in files if f.startswith("meta/") and f not in ("meta/extra", "meta/format")]
        out = {k: None for k in _NET_KEYS}
        for key in keys:
            if which is not None and key not in which:
                continue
            meta = json.loads(str(z[f"meta/{key}"]))
            prefix = key + "/"
            sd = {f[len(prefix):]: z[f] for f in files if f.startswith(prefix)}
            out[key] = _with_context(lambda: network_from_state_dict(meta.get("class"), sd, meta.get("init_kwargs")),
                                     f"{path}: {key}")
    out.setdefault("augment_pipe", None)
    out["training_set_kwargs"] = extra.get("training_set_kwargs")
    out["extra"] = extra
    return out
