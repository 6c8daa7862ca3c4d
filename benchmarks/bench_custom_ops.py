"""Benchmark: compiled filtered_lrelu (custom_ops/) vs our pure-TF reference op vs the original implementation.

Case: x [4, 38, 38, 512] NHWC, up 2 / down 2, 12-tap separable filters, padding [9, 8, 9, 8], gain sqrt(2),
slope 0.2, clamp 256 — the StyleGAN3-T 256x256 L-layer shape (original case ``flrelu_x38_fwdbwd`` in
../shared/parity/official_cpu_timings.json, median measured there on this machine kind).
Forward+backward = y, then d sum(y * gy) / d(x, b). Prints medians, ratios vs the reference and the original,
and the peak memory (TF allocator peak on /CPU:0, and process peak RSS per implementation measured in its own
subprocess).

    .venv/bin/python benchmarks/bench_custom_ops.py [--reps 7] [--threads 2]
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing
TIMINGS = os.path.join(HERE, "..", "..", "shared", "parity", "official_cpu_timings.json")


def run_one(impl, reps, threads, shape, mode):
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from afgan_tf.ops.filtered_lrelu import filtered_lrelu
    from afgan_tf.ops import _custom_ops
    if impl == "custom" and not _custom_ops.is_available("filtered_lrelu"):
        return {"error": _custom_ops.load_error()}
    n, h, w, c = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    b = tf.constant(rng.standard_normal([c]).astype(np.float32))
    taps = np.sinc((np.arange(12) - 5.5) / 2) * np.kaiser(12, 4.0)
    f = (taps / taps.sum()).astype(np.float32)
    kw = dict(up=2, down=2, padding=[9, 8, 9, 8], gain=np.sqrt(2), slope=0.2, clamp=256, impl=impl)
    y0 = filtered_lrelu(x, f, f, b, **kw)
    gy = tf.constant(rng.standard_normal(y0.shape).astype(np.float32))

    @tf.function
    def fwd(x, b):
        return filtered_lrelu(x, f, f, b, **kw)

    @tf.function
    def fwdbwd(x, b):
        with tf.GradientTape() as t:
            t.watch([x, b])
            y = filtered_lrelu(x, f, f, b, **kw)
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
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "times_s": times,
            "cpu_median_s": float(np.median(cpu)), "loadavg": os.getloadavg()[0],
            "tf_peak_mib": peak, "peak_rss_mib": rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["fwdbwd", "fwd"], default="fwdbwd")
    ap.add_argument("--shape", default="4,38,38,512")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    shape = [int(v) for v in a.shape.split(",")]
    if a.child:
        print("RESULT " + json.dumps(run_one(a.child, a.reps, a.threads, shape, a.mode)))
        return
    res = {}
    for impl in ("ref", "custom"):  # each in its own process: clean peak RSS
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", impl, "--reps", str(a.reps),
                            "--threads", str(a.threads), "--mode", a.mode, "--shape", a.shape],
                           capture_output=True, text=True, env=env)
        line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
        res[impl] = json.loads(line[-1][7:]) if line else {"error": r.stderr[-1500:]}
    orig = None
    if os.path.exists(TIMINGS):
        case = "flrelu_x38_fwdbwd" if a.mode == "fwdbwd" else "flrelu_x38_fwd"
        c = json.load(open(TIMINGS))["cases"].get(case, {})
        if shape == [4, 38, 38, 512] and "median_s" in c:
            orig = {"case": case, "median_s": c["median_s"], "peak_rss_mib": c.get("peak_rss_during_bench_mib")}
    print(f"filtered_lrelu {a.mode}, x {shape} NHWC, up2/down2, 12-tap, pad [9,8,9,8], {a.threads} threads, "
          f"{a.reps} reps")
    for impl in ("ref", "custom"):
        r = res[impl]
        if "error" in r:
            print(f"  {impl:8s} ERROR {r['error']}")
            continue
        print(f"  {impl:8s} median {r['median_s']:.4f} s  min {r['min_s']:.4f} s  CPU time/call {r['cpu_median_s']:.4f} s"
              f"  TF peak {r['tf_peak_mib'] or 0:.0f} MiB  process peak RSS {r['peak_rss_mib']:.0f} MiB"
              f"  (load avg {r['loadavg']:.1f})")
    if orig:
        print(f"  original median {orig['median_s']:.4f} s (official_cpu_timings.json {orig['case']}), peak RSS "
              f"{orig['peak_rss_mib']:.0f} MiB")
    if "median_s" in res["custom"] and "median_s" in res["ref"]:
        c, r = res["custom"], res["ref"]
        print(f"  speed-up custom vs ref:      {r['median_s'] / c['median_s']:.2f}x wall, "
              f"{r['cpu_median_s'] / c['cpu_median_s']:.2f}x CPU time")
        if orig:
            print(f"  speed-up custom vs original: {orig['median_s'] / c['median_s']:.2f}x wall (original: 2 threads at "
                  f"~96% utilisation, i.e. ~{2 * 0.96 * orig['median_s']:.2f} s CPU -> "
                  f"{2 * 0.96 * orig['median_s'] / c['cpu_median_s']:.2f}x CPU time)")
        if c["tf_peak_mib"] and r["tf_peak_mib"]:
            print(f"  TF peak memory custom / ref: {c['tf_peak_mib'] / r['tf_peak_mib']:.3f}")
        print(f"  peak RSS custom / ref:       {c['peak_rss_mib'] / r['peak_rss_mib']:.3f}")
    print("JSON " + json.dumps({"results": res, "original": orig}))


if __name__ == "__main__":
    main()
