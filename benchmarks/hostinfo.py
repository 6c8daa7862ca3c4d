"""Shared by the benchmarks: the host line (CPU model, ISA flags, op-library ISA levels) and the same-host
baseline of the original implementation.

The baseline is the JSON written by ``../shared/bench/official_timings.py`` on THIS host in the same sitting
(``--original PATH``); its cases are ``flrelu_fwdbwd``, ``g64_fwd_b1``, ``g64_fwdbwd_b4``, ``g256_fwd_b1`` with
``seconds`` (median) and ``peak_rss_gib``. ``benchmarks/baselines/official_cpu_timings.json`` was measured on
another host: it is printed as context only, never used for a ratio.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
STORED = os.path.join(HERE, "baselines", "official_cpu_timings.json")  # another host: context only


def host_line():
    """'host CPU: <model> [avx avx2 ...]; op library ISA compiled ..., chosen ...' (imports TensorFlow)."""
    from afgan_tf.ops import _custom_ops
    return _custom_ops.build_info_line()


def load_original(path):
    """Reads a same-host official_timings.py JSON; returns (cases dict, host dict) or ({}, None) without a path.
    Exits with one line when the file is missing or malformed, or was measured on another CPU model."""
    if not path:
        return {}, None
    try:
        with open(path) as fh:
            d = json.load(fh)
        cases, host = d["cases"], d.get("host", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--original {path}: not a readable official_timings.py JSON ({type(e).__name__}: {e})")
    from afgan_tf.ops._custom_ops import cpu_model
    model, _ = cpu_model()
    if host.get("cpu") and host["cpu"] != model:
        raise SystemExit(f"--original {path}: measured on {host['cpu']!r}, this host is {model!r}; time the original "
                         "here (../shared/bench/README.md)")
    return {k: v for k, v in cases.items() if isinstance(v, dict) and "seconds" in v}, host


def original_line(cases, path):
    if not cases:
        return (f"original: no same-host baseline (pass --original=JSON from ../shared/bench/official_timings.py; "
                f"the stored {os.path.relpath(STORED)} is from another host and not used for ratios)")
    return "original (same host, %s): %s" % (path, ", ".join(f"{k} {v['seconds']:.3f} s" for k, v in cases.items()))
