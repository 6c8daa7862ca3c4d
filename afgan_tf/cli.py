"""The command-line tools' shared helpers: entry point (tool_main, normalise_argv), flag parsing, network loading,
image/video saving, input transforms."""
import math
import os
import re
import sys

import numpy as np

from afgan_tf.utils import atomic_path


def parse_range(s, name="--seeds"):
    """'0,1,4-6' -> [0, 1, 4, 5, 6]."""
    if isinstance(s, (list, tuple)):
        s = ",".join(str(v) for v in s)
    out = []
    for part in str(s).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"{name}: range {part!r} is empty (end < start)")
            out.extend(range(a, b + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"{name}: cannot parse {part!r} (use e.g. 0,1,4-6)")
    if not out:
        raise ValueError(f"{name}: no values given")
    return out


def parse_vec2(s, name="--translate"):
    """'0.1,-0.2' -> (0.1, -0.2)."""
    parts = str(s).split(",")
    if len(parts) != 2:
        raise ValueError(f"{name}: expected two comma-separated numbers, got {s!r}")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"{name}: expected two comma-separated numbers, got {s!r}") from None


def parse_grid(s, name="--grid"):
    """'4x2' -> (4, 2) (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(s))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"{name}: expected WxH with W, H >= 1 (e.g. 4x2), got {s!r}")
    return int(m.group(1)), int(m.group(2))


def to_uint8(img):
    """Float NHWC in [−1, 1] -> uint8 like the original (img·127.5 + 128, clip, truncate)."""
    return np.clip(np.asarray(img, np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)


def make_grid(images, gw, gh):
    """uint8 [N, H, W, C] -> [gh·H, gw·W, C] (row-major; missing cells black)."""
    images = np.asarray(images)
    N, H, W, C = images.shape
    if N > gw * gh:
        raise ValueError(f"{N} images do not fit a {gw}x{gh} grid")
    grid = np.zeros([gh * H, gw * W, C], images.dtype)
    for i in range(N):
        y, x = divmod(i, gw)
        grid[y * H:(y + 1) * H, x * W:(x + 1) * W] = images[i]
    return grid


def save_image(a, path):
    """Writes a uint8 [H, W, C] (C = 1 or 3) image atomically (format from the extension)."""
    from PIL import Image
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    # the temp file keeps path's extension: PIL picks the format by it
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:
        Image.fromarray(a).save(tmp, format=None if not path.lower().endswith(".png") else "PNG")


def write_video(frames, path, fps=30, bitrate="12M"):
    """Writes an iterable of uint8 [H, W, 3] frames as H.264 mp4 (imageio + imageio-ffmpeg's bundled ffmpeg)."""
    import imageio.v2 as imageio

    def write(tmp):
        w = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", bitrate=bitrate,
                               macro_block_size=1)
        try:
            for f in frames:
                f = np.asarray(f)
                if f.ndim == 3 and f.shape[-1] == 1:
                    f = np.repeat(f, 3, -1)
                w.append_data(f)
        finally:
            w.close()

    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:  # ffmpeg picks the container by extension
        write(tmp)


def user_transform(translate=(0.0, 0.0), rotate_deg=0.0):
    """The input transform of gen_images: inverse of [[cos a, sin a, tx], [−sin a, cos a, ty], [0, 0, 1]]."""
    a = rotate_deg / 360.0 * 2 * math.pi
    m = np.array([[math.cos(a), math.sin(a), translate[0]], [-math.sin(a), math.cos(a), translate[1]], [0, 0, 1]],
                 np.float64)
    return np.linalg.inv(m)


def has_input_transform(G):
    return hasattr(getattr(G, "synthesis", None), "input") and hasattr(G.synthesis.input, "transform")


def set_input_transform(G, m):
    if not has_input_transform(G):
        raise ValueError("this generator has no synthesis.input.transform (not a StyleGAN3 generator)")
    G.synthesis.input.transform.assign(np.asarray(m, np.float32))


def labels_for(G, n, class_idx=None, warn=print):
    """[n, c_dim] one-hot labels (zero width for unconditional G)."""
    c_dim = int(getattr(G, "c_dim", 0) or 0)
    if c_dim == 0:
        if class_idx is not None:
            warn("warning: --class is ignored for an unconditional network")
        return np.zeros([n, 0], np.float32)
    if class_idx is None:
        raise ValueError(f"the network is conditional (c_dim={c_dim}): give --class (0..{c_dim - 1})")
    if not 0 <= class_idx < c_dim:
        raise ValueError(f"--class must be in 0..{c_dim - 1}, got {class_idx}")
    c = np.zeros([n, c_dim], np.float32)
    c[:, class_idx] = 1
    return c


def z_from_seed(seed, z_dim):
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


def load_generator(spec):
    """Generator from a network spec.

    * ``toy[:k=v,...]`` — :class:`afgan_tf.metrics.toy.ToyGenerator` (keys res, channels, z_dim, freqs,
      bandwidth, glue, seed), an analytic equivariant (glue=0) or pixel-glued (glue>0) stand-in;
    * ``random:<cfg>:<res>[:<seed>]`` — a randomly initialised afgan_tf Generator of a train.py preset
      (cfg stylegan3-t / stylegan3-r / stylegan2 / stylegan2-fourier; small capacity: cbase 4096, cmax 128);
    * otherwise a file: our ``.npz`` snapshot or an original ``.pkl`` via ``afgan_tf.convert.load_network``
      (G_ema is used).
    """
    spec = str(spec)
    if spec == "toy" or spec.startswith("toy:"):
        from afgan_tf.metrics.toy import ToyGenerator
        kw = {}
        names = dict(res="img_resolution", channels="img_channels", z_dim="z_dim", freqs="num_freqs",
                     bandwidth="bandwidth", glue="glue", seed="seed")
        for item in filter(None, spec[4:].split(",")):
            k, _, v = item.partition("=")
            if k not in names:
                raise ValueError(f"network spec {spec!r}: unknown key {k!r} (allowed: {', '.join(names)})")
            kw[names[k]] = float(v) if k in ("bandwidth", "glue") else int(v)
        return ToyGenerator(**kw)
    if spec.startswith("random:"):
        parts = spec.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"network spec {spec!r}: expected random:<cfg>:<res>[:<seed>]")
        import tensorflow as tf
        from afgan_tf.networks.presets import generator_class, generator_kwargs
        if len(parts) == 4:
            tf.random.set_seed(int(parts[3]))
            np.random.seed(int(parts[3]))
        kw = generator_kwargs(parts[1], int(parts[2]), cbase=4096, cmax=128)
        return generator_class(parts[1])(**kw)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"--network: file not found: {spec}")
    try:
        from afgan_tf.convert import load_network
    except ImportError as e:
        raise RuntimeError(f"cannot load {spec}: afgan_tf.convert.load_network is not available ({e})") from e
    nets = load_network(spec)
    G = nets.get("G_ema")
    if G is None:
        G = nets.get("G")
    if G is None:
        raise ValueError(f"{spec}: contains no generator (G_ema / G)")
    return G


def generate(G, z, c, truncation_psi=1.0):
    """Images of G for latents z [N, z_dim] and labels c -> float32 numpy NHWC."""
    import tensorflow as tf
    img = G(tf.constant(z, tf.float32), tf.constant(c, tf.float32), truncation_psi=truncation_psi,
            noise_mode="const")  # as the original tools (StyleGAN2 noise inputs; ignored by StyleGAN3)
    return img.numpy() if hasattr(img, "numpy") else np.asarray(img)


def normalise_argv(argv):
    """``--foo-bar=x`` -> ``--foo_bar=x`` and ``--no-foo`` -> ``--nofoo`` so the original's dashed flags work."""
    out = []
    for a in argv:
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a[2:].partition("=")
            if name.startswith("no-"):
                name = "no" + name[3:]
            a = "--" + name.replace("-", "_") + eq + val
        out.append(a)
    return out


def _tool_errors():
    import pickle
    # OSError: unreadable / unwritable paths (PermissionError, IsADirectoryError, NotADirectoryError, ...);
    # UnpicklingError: a corrupt or refused network pickle.
    return (ValueError, OSError, RuntimeError, pickle.UnpicklingError)


TOOL_ERRORS = _tool_errors()


def tool_main(argv, flags, required, body):
    """The shared entry of the command-line tools (call it from an absl ``main(argv)``).

    Refuses positional arguments (``absl.app.UsageError``), checks that every flag named in ``required`` was given
    (None or an empty list counts as missing), then runs ``body()``; the errors of bad input (``TOOL_ERRORS``) are
    printed as one ``Error: ...`` line. Returns the exit status (``body()``'s return value, 0 when it returns None;
    1 on an error).
    """
    from absl import app
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    missing = [name for name in required if getattr(flags, name) in (None, [])]
    if missing:
        print(f"Error: {' and '.join('--' + m for m in missing)} {'is' if len(missing) == 1 else 'are'} required",
              file=sys.stderr)
        return 1
    try:
        rc = body()
    except TOOL_ERRORS as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0 if rc is None else rc
