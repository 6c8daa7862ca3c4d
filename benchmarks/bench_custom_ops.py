"""Benchmark: compiled filtered_lrelu (custom_ops/) vs our pure-TF reference op vs the original implementation.

Case: x [4, 38, 38, 512] NHWC, up 2 / down 2, 12-tap separable filters, padding [9, 8, 9, 8], gain sqrt(2),
slope 0.2, clamp 256 — the StyleGAN3-T 256x256 L-layer shape (the original's case ``flrelu_fwdbwd`` of
../shared/bench/official_timings.py: pass its JSON, measured on this host in the same sitting, as
``--original``). Prints the host CPU model and ISA flags and the op library's compiled / chosen ISA level
(``AFGAN_TF_OPS_ISA=v2|v3|v4`` forces one).
Forward+backward = y, then d sum(y * gy) / d(x, b). Prints medians, ratios vs the reference and the original,
and the peak memory (TF allocator peak on /CPU:0, and process peak RSS per implementation measured in its own
subprocess).

    .venv/bin/python benchmarks/bench_custom_ops.py [--reps 7] [--threads 2] [--case NAME|all] [--raw]
        [--original /work/orig/official.json]

``--case`` picks another generator layer shape (see CASES; ``all`` runs every case, one line each); the
default case ``t256_l38`` is the one above. Shapes are from ``afgan_tf.filters.synthesis_schedule`` (T/R at
64 and 256, batch 4): the filtered_lrelu input is [N, in_size, in_size, out_channels].
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing
sys.path.insert(0, HERE)
import hostinfo  # noqa: E402


# name: (x shape, up, down, padding, 2-D (radial) down filter)
CASES = {
    "t256_l38": ([4, 38, 38, 512], 2, 2, [9, 8, 9, 8], False),      # issue-9 reference case
    "t64_l0": ([4, 36, 36, 512], 2, 2, [9, 8, 9, 8], False),        # T/R 64 L0-L3
    "t64_l4_up4": ([4, 36, 36, 512], 4, 2, [-6, -9, -6, -9], False),  # T/R 64 L4 (24-tap up filter)
    "t64_l12": ([4, 84, 84, 512], 2, 2, [9, 8, 9, 8], False),       # T 64 L9-L12
    "t64_l13": ([4, 84, 84, 512], 2, 2, [-11, -12, -11, -12], False),  # T 64 L13 (cropping)
    "t256_l10_up4": ([4, 148, 148, 256], 4, 2, [-6, -9, -6, -9], False),  # T 256 L10
    "t256_l11": ([4, 276, 276, 181], 2, 2, [9, 8, 9, 8], False),    # T 256 L11 (partial channel block)
    "t256_l12": ([4, 276, 276, 128], 2, 2, [9, 8, 9, 8], False),    # T 256 L12
    "r64_l9_radial": ([4, 84, 84, 512], 2, 2, [9, 8, 9, 8], True),  # R 64 L9 (12x12 radial down filter)
    "r256_l1_radial": ([4, 36, 36, 1024], 2, 2, [9, 8, 9, 8], True),  # R 256 L0-L2
}


def _filters(up, down, radial):
    import numpy as np

    def sinc(n, fac):
        if n == 1:
            return np.ones([1], np.float32)
        t = np.sinc((np.arange(n) - (n - 1) / 2) / fac) * np.kaiser(n, 4.0)
        return (t / t.sum()).astype(np.float32)
    fu = sinc(6 * up if up > 1 else 1, up)
    if radial:
        from afgan_tf.filters import design_lowpass_filter
        fd = design_lowpass_filter(6 * down, cutoff=1.0, width=1.0, fs=2.0 * down, radial=True)
    else:
        fd = sinc(6 * down if down > 1 else 1, down)
    return fu, fd


def run_one(impl, reps, threads, shape, mode, case="t256_l38"):
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from afgan_tf.ops.filtered_lrelu import filtered_lrelu
    from afgan_tf.ops import _custom_ops
    if impl == "custom" and not _custom_ops.is_available("filtered_lrelu"):
        return {"error": _custom_ops.load_error()}
    _, up, down, pad, radial = CASES[case]
    n, h, w, c = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    b = tf.constant(rng.standard_normal([c]).astype(np.float32))
    fu, fd = _filters(up, down, radial)
    kw = dict(up=up, down=down, padding=pad, gain=np.sqrt(2), slope=0.2, clamp=256, impl=impl)
    import resource
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # TF runtime + inputs, before the op ran
    y0 = filtered_lrelu(x, fu, fd, b, **kw)
    gy = tf.constant(rng.standard_normal(y0.shape).astype(np.float32))

    @tf.function
    def fwd(x, b):
        return filtered_lrelu(x, fu, fd, b, **kw)

    @tf.function
    def fwdbwd(x, b):
        with tf.GradientTape() as t:
            t.watch([x, b])
            y = filtered_lrelu(x, fu, fd, b, **kw)
            loss = tf.reduce_sum(y * gy)
        return t.gradient(loss, [x, b])

    fn = fwdbwd if mode == "fwdbwd" else fwd
    out = fn(x, b)  # warm-up / trace
    [o.numpy() for o in tf.nest.flatten(out)]
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except Exception:
        pass
    times, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(x, b)
        [o.numpy() for o in tf.nest.flatten(out)]
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = None
    try:
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2 ** 20
    except Exception:
        pass
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"isa": _custom_ops.build_info()["chosen"], "median_s": float(np.median(times)), "min_s": float(np.min(times)), "times_s": times,
            "cpu_median_s": float(np.median(cpu)), "loadavg": os.getloadavg()[0],
            "tf_peak_mib": peak, "peak_rss_mib": rss, "op_rss_mib": rss - rss_base}


def run_raw(reps, threads, case):
    """Raw compiled ops (AfganFilteredLrelu / AfganFilteredLreluGrad) called eagerly: median wall and CPU ms."""
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from afgan_tf.ops import _custom_ops
    print(hostinfo.host_line())  # after the thread settings (they must precede TF's initialisation)
    mod = _custom_ops._require()
    shape, up, down, pad, radial = CASES[case]
    fu, fd = _filters(up, down, radial)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    b = tf.constant(rng.standard_normal([shape[3]]).astype(np.float32))
    at = dict(upx=up, upy=up, downx=down, downy=down, px0=pad[0], px1=pad[1], py0=pad[2], py1=pad[3],
              gain=float(np.sqrt(2)), slope=0.2, flip_filter=False)
    y, code = mod.afgan_filtered_lrelu(x, fu, fd, b, clamp=256.0, **at)
    dy = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
    xs = tf.constant(shape, tf.int32)
    fns = {"forward": lambda: mod.afgan_filtered_lrelu(x, fu, fd, b, clamp=256.0, **at)[0],
           "backward": lambda: mod.afgan_filtered_lrelu_grad(dy, fu, fd, code, xs, adjoint=False, **at)}
    for name, f in fns.items():
        f().numpy()
        ts, cs = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            f().numpy()
            ts.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
        print(f"  raw {name:8s} op, {threads} thread(s): median {np.median(ts) * 1e3:.2f} ms wall, "
              f"{np.median(cs) * 1e3:.2f} ms CPU")


def run_case(a, case):
    shape = [int(v) for v in a.shape.split(",")] if a.shape else CASES[case][0]
    res = {}
    for impl in ("ref", "custom"):  # each in its own process: clean peak RSS
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", impl, "--reps", str(a.reps),
                            "--threads", str(a.threads), "--mode", a.mode, "--shape", ",".join(map(str, shape)),
                            "--case", case], capture_output=True, text=True, env=env)
        line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
        res[impl] = json.loads(line[-1][7:]) if line else {"error": r.stderr[-1500:]}
    return shape, res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["fwdbwd", "fwd"], default="fwdbwd")
    ap.add_argument("--case", default="t256_l38", help="one of %s, or all" % ", ".join(CASES))
    ap.add_argument("--shape", default=None, help="override the x shape N,H,W,C of the case")
    ap.add_argument("--raw", action="store_true", help="time only the raw compiled forward and backward ops "
                    "in this process (no reference, no TF glue)")
    ap.add_argument("--original", default=None, help="same-host JSON of ../shared/bench/official_timings.py "
                    "(case flrelu_fwdbwd) for the ratio against the original")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case != "all" and a.case not in CASES:
        ap.error(f"--case must be one of {', '.join(CASES)} or all, got {a.case!r}")
    if not a.child and not a.raw:
        print(hostinfo.host_line())
    if a.raw:
        if a.case == "all":
            ap.error("--raw takes one --case")
        print(f"filtered_lrelu raw ops, case {a.case}: x {CASES[a.case][0]}, {a.reps} reps")
        run_raw(a.reps, a.threads, a.case)
        return
    if a.child:
        shape = [int(v) for v in a.shape.split(",")]
        print("RESULT " + json.dumps(run_one(a.child, a.reps, a.threads, shape, a.mode, a.case)))
        return
    if a.case == "all":
        print(f"filtered_lrelu {a.mode}, {a.threads} threads, {a.reps} reps: median wall (CPU time) per call")
        out = {}
        for case in CASES:
            shape, res = run_case(a, case)
            _, up, down, pad, radial = CASES[case]
            r, c = res["ref"], res["custom"]
            desc = f"x {shape} up{up}/down{down} pad {pad}{' 2-D fd' if radial else ''}"
            if "median_s" in r and "median_s" in c:
                print(f"  {case:16s} {desc:52s} ref {r['median_s']:.4f} s ({r['cpu_median_s']:.4f})  custom "
                      f"{c['median_s']:.4f} s ({c['cpu_median_s']:.4f})  speed-up {r['median_s'] / c['median_s']:.2f}x "
                      f"wall, {r['cpu_median_s'] / c['cpu_median_s']:.2f}x CPU  (load {c['loadavg']:.1f})")
            else:
                print(f"  {case:16s} {desc}: ERROR {r.get('error', '')} {c.get('error', '')}")
            out[case] = res
        print("JSON " + json.dumps(out))
        return
    shape, res = run_case(a, a.case)
    _, up, down, pad, radial = CASES[a.case]
    orig = None
    ocases, _ = hostinfo.load_original(a.original)
    c = ocases.get("flrelu_fwdbwd")
    if c and a.mode == "fwdbwd" and a.case == "t256_l38" and shape == [4, 38, 38, 512]:
        orig = {"case": "flrelu_fwdbwd", "median_s": c["seconds"], "peak_rss_mib": c["peak_rss_gib"] * 1024}
    elif not a.original:
        print(hostinfo.original_line({}, None))
    print(f"filtered_lrelu {a.mode}, case {a.case}: x {shape} NHWC, up{up}/down{down}, pad {pad}"
          f"{', 2-D down filter' if radial else ''}, {a.threads} threads, {a.reps} reps")
    for impl in ("ref", "custom"):
        r = res[impl]
        if "error" in r:
            print(f"  {impl:8s} ERROR {r['error']}")
            continue
        print(f"  {impl:8s} [{r['isa'] if impl == 'custom' else 'stock ops'}] median {r['median_s']:.4f} s  min {r['min_s']:.4f} s  CPU time/call {r['cpu_median_s']:.4f} s"
              f"  TF peak {r['tf_peak_mib'] or 0:.0f} MiB  process peak RSS {r['peak_rss_mib']:.0f} MiB"
              f" (op: +{r['op_rss_mib']:.0f} MiB over the inputs)"
              f"  (load avg {r['loadavg']:.1f})")
    if orig:
        print(f"  original median {orig['median_s']:.4f} s (same host, {a.original}, {orig['case']}), peak RSS "
              f"{orig['peak_rss_mib']:.0f} MiB")
    if "median_s" in res["custom"] and "median_s" in res["ref"]:
        c, r = res["custom"], res["ref"]
        print(f"  speed-up custom vs ref:      {r['median_s'] / c['median_s']:.2f}x wall, "
              f"{r['cpu_median_s'] / c['cpu_median_s']:.2f}x CPU time")
        if orig:
            print(f"  speed-up custom vs original: {orig['median_s'] / c['median_s']:.2f}x wall")
        if c["tf_peak_mib"] and r["tf_peak_mib"]:
            print(f"  TF peak memory custom / ref: {c['tf_peak_mib'] / r['tf_peak_mib']:.3f}")
        print(f"  peak RSS custom / ref:       {c['peak_rss_mib'] / r['peak_rss_mib']:.3f}; memory the op added over "
              f"the runtime + inputs, custom / ref: {c['op_rss_mib'] / max(r['op_rss_mib'], 1e-9):.3f}")
    print("JSON " + json.dumps({"results": res, "original": orig}))


if __name__ == "__main__":
    main()
