"""Benchmark of the ops at the shapes of the 256x256 StyleGAN3-T generator (docs/ALGORITHM.md §3.5.1) and its discriminator.

Every case runs in its own subprocess (so the peak RSS is per case): one warm-up call (includes tracing), then
timed calls; prints min / median time, images/s (batch / min time) and peak RSS (``ru_maxrss``) above the
post-setup RSS. For each case the reference (``impl="ref"``) is the baseline measured in the same run; the
compiled ops (``impl="custom"``, when the library is available) are printed as a speed-up over it. Where the
original's CPU timings (``benchmarks/baselines/official_cpu_timings.json``, another host: context only) have a matching case, the ratio
"original time / our time" is printed too (> 1 = we are faster).

Usage:
    python benchmarks/bench_ops.py            # all cases (a few minutes on 2 cores)
    python benchmarks/bench_ops.py --quick    # small subset, fewer repetitions
    python benchmarks/bench_ops.py --cases flrelu_L1_x38 --mode jit --impls ref
    python benchmarks/bench_ops.py --cases flrelu_L3_up4 --impls ref,lowmem --directions fwdbwd   # memory
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's afgan_tf
sys.path.insert(0, HERE)
import hostinfo  # noqa: E402

OFFICIAL = hostinfo.STORED  # measured on another host: context only

# name: (op, kwargs describing the shapes, official case names for fwd / fwdbwd or None)
CASES = {
    # L1 of T@256: conv output 38x38x512 -> up2 / down2, 12-tap filters, padding (9, 8) -> 36x36.
    "flrelu_L1_x38": ("filtered_lrelu", dict(x=[4, 38, 38, 512], fu=12, fd=12, up=2, down=2, pad=[9, 8, 9, 8]),
                      ("flrelu_x38_fwd", "flrelu_x38_fwdbwd")),
    "flrelu_x36": ("filtered_lrelu", dict(x=[4, 36, 36, 512], fu=12, fd=12, up=2, down=2, pad=[9, 8, 9, 8]),
                   ("flrelu_x36_fwd", "flrelu_x36_fwdbwd")),
    # L3 (36 -> 52, up4 / down2, 24-tap up filter, padding (-6, -9)).
    "flrelu_L3_up4": ("filtered_lrelu", dict(x=[4, 38, 38, 512], fu=24, fd=12, up=4, down=2, pad=[-6, -9, -6, -9]),
                      None),
    # L5 (52 -> 84, up4 / down2).
    "flrelu_L5_up4": ("filtered_lrelu", dict(x=[4, 54, 54, 512], fu=24, fd=12, up=4, down=2, pad=[-6, -9, -6, -9]),
                      None),
    # L12 (276 -> 276, 128 channels, up2 / down2) and L13 (276 -> 256, critically sampled, crop).
    "flrelu_L12_x278": ("filtered_lrelu", dict(x=[4, 278, 278, 128], fu=12, fd=12, up=2, down=2,
                                               pad=[9, 8, 9, 8]), None),
    "flrelu_L13_x278": ("filtered_lrelu", dict(x=[4, 278, 278, 128], fu=12, fd=12, up=2, down=2,
                                               pad=[-11, -12, -11, -12]), None),
    # L10 (148 -> 276, 256 channels, up4 / down2).
    "flrelu_L10_up4": ("filtered_lrelu", dict(x=[4, 150, 150, 256], fu=24, fd=12, up=4, down=2,
                                              pad=[-6, -9, -6, -9]), None),
    # bias_act: FC layer and a conv activation map (lrelu, clamp 256).
    "bias_act_x36": ("bias_act", dict(x=[4, 36, 36, 512], act="lrelu", clamp=256.0), None),
    "bias_act_fc": ("bias_act", dict(x=[4, 512], act="lrelu", clamp=None), None),
    # upfirdn2d: the up / down halves of L1, and D's [1,3,3,1] downsampling at 256.
    "upfirdn2d_up2_x38": ("upfirdn2d", dict(x=[4, 38, 38, 512], f=12, up=2, down=1, pad=[9, 8, 9, 8]), None),
    "upfirdn2d_down2_x93": ("upfirdn2d", dict(x=[4, 93, 93, 512], f=12, up=1, down=2, pad=0), None),
    "upfirdn2d_D_down2_x256": ("upfirdn2d", dict(x=[4, 256, 256, 128], f=4, f2d=True, up=1, down=2,
                                                 pad=[1, 1, 1, 1]), None),
    # conv ops: D conv1 at 256 (3x3, 128 -> 256, down 2) and the modulated conv of L1 (3x3 512 -> 512, full).
    "conv2d_resample_D_b256": ("conv2d_resample", dict(x=[4, 256, 256, 128], k=3, cout=256, down=2, pad=1), None),
    "modconv_L1_x36": ("modulated_conv2d", dict(x=[4, 36, 36, 512], k=3, cout=512, pad=2), None),
}
QUICK = ["flrelu_L1_x38", "flrelu_L3_up4", "bias_act_x36", "upfirdn2d_up2_x38", "modconv_L1_x36"]


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(name, impl, mode, direction, reps, budget_s):
    """Runs inside the child process; returns a dict."""
    import numpy as np
    import tensorflow as tf
    from afgan_tf import ops
    from afgan_tf.ops import _custom_ops

    op, a, _ = CASES[name]
    if impl == "lowmem" and op != "filtered_lrelu":
        return dict(skipped="lowmem exists for filtered_lrelu only")
    if impl == "custom" and op not in ("filtered_lrelu", "bias_act", "upfirdn2d"):
        return dict(skipped="no compiled kernel for this op")
    if impl == "custom" and not _custom_ops.is_available(op):
        return dict(skipped=f"compiled op unavailable: {_custom_ops.load_error()}")
    if impl == "custom" and mode == "jit":
        return dict(skipped="custom ops have no XLA kernel")
    rng = np.random.default_rng(0)
    randn = lambda shape: rng.standard_normal(shape, dtype=np.float32)  # no float64 temporaries (peak RSS)
    x = tf.constant(randn(a["x"]))
    extra = []  # tensors we differentiate w.r.t. besides x
    if op == "filtered_lrelu":
        fu = np.hanning(a["fu"] + 2)[1:-1].astype(np.float32); fu /= fu.sum()
        fd = np.hanning(a["fd"] + 2)[1:-1].astype(np.float32); fd /= fd.sum()
        b = tf.constant(rng.standard_normal([a["x"][-1]]).astype(np.float32) * 0.1)
        extra = [b]
        if impl == "lowmem":   # reference forward, custom gradient keeping an int8 code
            fn = lambda x_, b_: ops.filtered_lrelu_lowmem(x_, fu, fd, b_, up=a["up"], down=a["down"],
                                                          padding=a["pad"], clamp=256.0)
        else:
            fn = lambda x_, b_: ops.filtered_lrelu(x_, fu, fd, b_, up=a["up"], down=a["down"], padding=a["pad"],
                                                   clamp=256.0, impl=impl)
    elif op == "bias_act":
        b = tf.constant(rng.standard_normal([a["x"][-1]]).astype(np.float32))
        extra = [b]
        fn = lambda x_, b_: ops.bias_act(x_, b_, act=a["act"], clamp=a["clamp"], impl=impl)
    elif op == "upfirdn2d":
        f = np.hanning(a["f"] + 2)[1:-1].astype(np.float32)
        f = np.outer(f, f) if a.get("f2d") else f
        f = f / f.sum()
        fn = lambda x_: ops.upfirdn2d(x_, f, up=a["up"], down=a["down"], padding=a["pad"], impl=impl)
    elif op == "conv2d_resample":
        w = tf.constant(rng.standard_normal([a["k"], a["k"], a["x"][-1], a["cout"]]).astype(np.float32) * 0.05)
        extra = [w]
        f = ops.setup_filter([1, 3, 3, 1])
        fn = lambda x_, w_: ops.conv2d_resample(x_, w_, f, down=a["down"], padding=a["pad"])
    elif op == "modulated_conv2d":
        w = tf.constant(rng.standard_normal([a["k"], a["k"], a["x"][-1], a["cout"]]).astype(np.float32))
        s = tf.constant(rng.standard_normal([a["x"][0], a["x"][-1]]).astype(np.float32) + 1)
        extra = [s]
        fn = lambda x_, s_: ops.modulated_conv2d(x_, w, s_, padding=a["pad"], input_gain=0.9)
    else:
        raise ValueError(op)
    args = [x] + extra
    # Output shape by tracing only (running the op here would raise the peak RSS before the baseline is taken).
    out_shape = tf.function(fn).get_concrete_function(*[tf.TensorSpec.from_tensor(t) for t in args]).output_shapes
    gy = tf.constant(randn(out_shape.as_list()))

    def fwd(*t):
        return fn(*t)

    def fwdbwd(*t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(fn(*t) * gy)
        return tape.gradient(loss, t)

    body = fwd if direction == "fwd" else fwdbwd
    if mode != "eager":
        body = tf.function(body, jit_compile=(mode == "jit"))
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    out = body(*args)
    _ = [o.numpy() for o in tf.nest.flatten(out)]
    warm = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < reps and (time.perf_counter() - start < budget_s or len(times) < 2):
        t0 = time.perf_counter()
        out = body(*args)
        _ = [o.numpy() for o in tf.nest.flatten(out)]
        times.append(time.perf_counter() - t0)
    times.sort()
    return dict(warmup_s=warm, min_s=times[0], median_s=times[len(times) // 2], reps=len(times),
                batch=a["x"][0], rss_setup_mib=rss0, peak_rss_mib=_rss_mib())


def _child(args):
    res = run_case(args.child, args.impl, args.mode, args.direction, args.reps, args.budget)
    print("RESULT " + json.dumps(res))


def _spawn(name, impl, mode, direction, reps, budget):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--impl", impl, "--mode", mode,
           "--direction", direction, "--reps", str(reps), "--budget", str(budget)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return dict(error=(p.stderr.strip().splitlines() or ["?"])[-1][:200])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset and fewer repetitions")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: all / quick subset)")
    ap.add_argument("--mode", default="function", choices=["eager", "function", "jit"])
    ap.add_argument("--impls", default="ref,custom", help="comma-separated impls among ref, custom, lowmem "
                    "(filtered_lrelu_lowmem); the first is the baseline")
    ap.add_argument("--directions", default="fwd,fwdbwd")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed calls per case")
    ap.add_argument("--json", default=None, help="also write all results to this file (atomically)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="ref", help=argparse.SUPPRESS)
    ap.add_argument("--direction", default="fwd", help=argparse.SUPPRESS)
    args = ap.parse_args()
    print(hostinfo.host_line())
    if args.reps is None:
        args.reps = 3 if args.quick else 10
    if args.budget is None:
        args.budget = 5.0 if args.quick else 20.0
    if args.child:
        return _child(args)

    names = args.cases.split(",") if args.cases else (QUICK if args.quick else list(CASES))
    for n in names:
        if n not in CASES:
            raise SystemExit(f"unknown case {n!r}; known: {', '.join(CASES)}")
    official = {}
    if os.path.exists(OFFICIAL):
        with open(OFFICIAL) as fh:
            official = json.load(fh).get("cases", {})
    impls = args.impls.split(",")
    print(f"mode={args.mode} reps<={args.reps} budget={args.budget}s; baseline impl={impls[0]}; "
          f"'orig/ours' = original CPU time / our time (> 1: faster than the original)")
    hdr = f"{'case':26s} {'dir':7s} {'impl':7s} {'min ms':>9s} {'med ms':>9s} {'img/s':>8s} {'peak MiB':>9s} " \
          f"{'vs base':>8s} {'orig/ours':>9s}"
    print(hdr)
    print("-" * len(hdr))
    results = []
    for n in names:
        op, a, off = CASES[n]
        for d in args.directions.split(","):
            base = None
            for impl in impls:
                r = _spawn(n, impl, args.mode, d, args.reps, args.budget)
                r.update(case=n, op=op, direction=d, impl=impl, mode=args.mode, shape=a["x"])
                results.append(r)
                if "min_s" not in r:
                    print(f"{n:26s} {d:7s} {impl:7s} {r.get('skipped') or 'ERROR: ' + r.get('error', '?')}")
                    continue
                if base is None:
                    base = r["min_s"]
                ratio = base / r["min_s"]
                orig = ""
                if off is not None:
                    oc = official.get(off[0] if d == "fwd" else off[1], {})
                    if oc.get("min_s"):
                        orig = f"{oc['min_s'] / r['min_s']:9.2f}"
                        r["official_min_s"] = oc["min_s"]
                print(f"{n:26s} {d:7s} {impl:7s} {r['min_s'] * 1e3:9.1f} {r['median_s'] * 1e3:9.1f} "
                      f"{r['batch'] / r['min_s']:8.1f} {r['peak_rss_mib'] - r['rss_setup_mib']:9.0f} "
                      f"{ratio:8.2f}x {orig:>9s}", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(results, fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
