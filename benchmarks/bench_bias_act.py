"""Benchmark: compiled bias_act (custom_ops/bias_act_op.cc) vs the pure-TF reference, on CPU.

Shapes are the ones the networks use (batch 4, NHWC, bias over the last axis):

* generator: lrelu + gain sqrt(2) + clamp 256 on [4, 36, 36, 512] (StyleGAN2-style layer at 32/36 px) and
  [4, 128, 128, 128]; linear + clamp 256 on the ToRGB output [4, 256, 256, 3]; linear on [4, 36, 36, 512];
* discriminator at 64 and 256: lrelu (gain sqrt(2), clamp 256) on [4, 64, 64, 512] and [4, 256, 256, 128];
* mapping / affine layers: rank-2 [4, 512] lrelu and [4, 512] linear.

Forward = y; forward+backward = y, then d sum(y * gy) / d(x, b) (first order). Each case runs in a
``tf.function``; medians over ``--reps`` timed calls after a warm-up, both implementations in the same run,
interleaved, so the ratio (compiled / reference; < 1 means the compiled kernel is faster) is comparable.

    .venv/bin/python benchmarks/bench_bias_act.py [--reps 15] [--threads 2] [--case NAME|all] [--json FILE]
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing
sys.path.insert(0, HERE)
import hostinfo  # noqa: E402

# name: (x shape, act, gain, clamp)
CASES = {
    "g36_lrelu_clamp": ([4, 36, 36, 512], "lrelu", math.sqrt(2), 256.0),
    "g36_linear": ([4, 36, 36, 512], "linear", 1.0, None),
    "g128_lrelu_clamp": ([4, 128, 128, 128], "lrelu", math.sqrt(2), 256.0),
    "g256_torgb_linear_clamp": ([4, 256, 256, 3], "linear", 1.0, 256.0),
    "d64_lrelu": ([4, 64, 64, 512], "lrelu", math.sqrt(2), 256.0),
    "d256_lrelu": ([4, 256, 256, 128], "lrelu", math.sqrt(2), 256.0),
    "map_lrelu": ([4, 512], "lrelu", math.sqrt(2), None),
    "map_linear": ([4, 512], "linear", 1.0, None),
}


def _median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", default="all", help="one of %s or 'all'" % ", ".join(CASES))
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    print(hostinfo.host_line())
    if args.case != "all" and args.case not in CASES:
        ap.error(f"--case must be 'all' or one of {sorted(CASES)}, got {args.case!r}")

    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from afgan_tf.ops import _custom_ops
    from afgan_tf.ops.bias_act import bias_act
    if not _custom_ops.is_available("bias_act"):
        sys.exit(f"compiled op library not available: {_custom_ops.load_error()}")

    names = list(CASES) if args.case == "all" else [args.case]
    rows = []
    print(f"bias_act CPU, {args.threads} threads, median of {args.reps} (ms); ratio = custom / ref")
    print(f"{'case':26s} {'shape':20s} {'mode':7s} {'ref':>9s} {'custom':>9s} {'ratio':>6s}")
    for name in names:
        shape, act, gain, clamp = CASES[name]
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal(shape).astype(np.float32) * 3)
        b = tf.Variable(rng.standard_normal(shape[-1]).astype(np.float32))
        gy = tf.constant(rng.standard_normal(shape).astype(np.float32))
        fns = {}
        for impl in ("ref", "custom"):
            def fwd(x, impl=impl):
                return bias_act(x, b, act=act, gain=gain, clamp=clamp, impl=impl)

            def fwdbwd(x, impl=impl):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = bias_act(x, b, act=act, gain=gain, clamp=clamp, impl=impl)
                    loss = tf.reduce_sum(y * gy)
                dx, db = tape.gradient(loss, [x, b])
                return y, dx, db
            fns[impl] = {"fwd": tf.function(fwd), "fwd+bwd": tf.function(fwdbwd)}
        for mode in ("fwd", "fwd+bwd"):
            times = {"ref": [], "custom": []}
            ref_out = tf.nest.flatten(fns["ref"][mode](x))
            cus_out = tf.nest.flatten(fns["custom"][mode](x))
            for r, c in zip(ref_out, cus_out):
                np.testing.assert_allclose(c.numpy(), r.numpy(), rtol=1e-5, atol=1e-4 * max(1.0, float(np.abs(r).max())))
            for _ in range(args.reps):
                for impl in times:
                    t0 = time.perf_counter()
                    out = fns[impl][mode](x)
                    for t in tf.nest.flatten(out):
                        t.numpy()  # CPU: zero-copy; waits for the result
                    times[impl].append((time.perf_counter() - t0) * 1e3)
            mr, mc = _median(times["ref"]), _median(times["custom"])
            rows.append({"case": name, "shape": shape, "act": act, "mode": mode, "ref_ms": mr, "custom_ms": mc,
                         "ratio": mc / mr})
            print(f"{name:26s} {str(shape):20s} {mode:7s} {mr:9.3f} {mc:9.3f} {mc / mr:6.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "reps": args.reps, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
