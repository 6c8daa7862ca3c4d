"""Benchmark: our Discriminator at 256x256 (default capacity: channel_base 32768, channel_max 512), batch 4,
against the original implementation's CPU timings (``D_256_fwd_b4`` / ``D_256_fwdbwd_b4`` in
benchmarks/baselines/official_cpu_timings.json, measured on another host of this machine kind with 2 threads: context only).

Cases (same definitions as the original's):
  fwd     logits = D(img)                                   (no gradient)
  fwdbwd  loss = softplus(-logits).mean(); grads wrt all D params (the image does not need a gradient)
Variants measured in this run: ``graph`` (tf.function, ops impl="auto") — the baseline — and ``xla``
(tf.function(jit_compile=True); the ops fall back to their pure-TF paths inside XLA).
Prints medians, the ratio ours / original (lower is better) and xla / graph.

    .venv/bin/python benchmarks/bench_discriminator.py [--reps 5] [--threads 2] [--res 256] [--no-xla]
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import hostinfo  # noqa: E402

TIMINGS = hostinfo.STORED  # measured on another host: context only


def _official(case):
    try:
        with open(TIMINGS) as fh:
            return json.load(fh)["cases"][case]
    except (OSError, KeyError, ValueError):
        return None


def _time(fn, reps):
    """-> (median wall s, min wall s, median process CPU s) after one warm-up call."""
    fn()  # warm-up (tracing / compilation)
    wall, cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--no-xla", action="store_true")
    args = ap.parse_args()
    print(hostinfo.host_line())

    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    from afgan_tf.networks.discriminator import Discriminator

    off_fwd = _official(f"D_{args.res}_fwd_b{args.batch}")
    off_bwd = _official(f"D_{args.res}_fwdbwd_b{args.batch}")
    kw = (off_fwd or {}).get("init_kwargs") or dict(c_dim=0, img_resolution=args.res, img_channels=3,
                                                    architecture="resnet", channel_base=32768, channel_max=512,
                                                    num_fp16_res=4, conv_clamp=256,
                                                    block_kwargs={"freeze_layers": 0}, mapping_kwargs={},
                                                    epilogue_kwargs={"mbstd_group_size": 4})
    keras.utils.set_random_seed(0)
    D = Discriminator(**kw)
    n_params = int(sum(int(np.prod(v.shape)) for v in D.trainable_weights))
    img = tf.constant(np.random.default_rng(0).standard_normal([args.batch, args.res, args.res, 3]).astype(np.float32))
    variables = D.trainable_variables

    def make(jit):
        @tf.function(jit_compile=jit)
        def fwd(x):
            return D(x)

        @tf.function(jit_compile=jit)
        def fwdbwd(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.nn.softplus(-D(x)))
            return tape.gradient(loss, variables)
        return fwd, fwdbwd

    print(f"Discriminator {args.res}x{args.res}, batch {args.batch}, {n_params:,} params "
          f"(original: {(off_fwd or {}).get('num_params', '?'):,}), threads {args.threads}, reps {args.reps}")
    variants = [("graph", False)] + ([] if args.no_xla else [("xla", True)])
    results = {}
    for name, jit in variants:
        fwd, fwdbwd = make(jit)
        try:
            results[(name, "fwd")] = _time(lambda: fwd(img).numpy(), args.reps)
            results[(name, "fwdbwd")] = _time(lambda: [g.numpy() for g in fwdbwd(img)], args.reps)
        except Exception as e:  # e.g. XLA unavailable
            print(f"  {name}: failed ({type(e).__name__}: {str(e)[:200]})")
    # Wall-clock ratios are only meaningful on an otherwise idle machine; the CPU-time ratio compares process CPU
    # seconds with the original's (median wall x its measured CPU utilisation x threads) and is robust to other load.
    print(f"{'case':8s} {'variant':6s} {'median s':>9s} {'min s':>8s} {'cpu s':>8s} {'orig med s':>11s} "
          f"{'orig cpu s':>11s} {'wall ours/orig':>15s} {'cpu ours/orig':>14s} {'vs graph':>9s}")
    for case, off in (("fwd", off_fwd), ("fwdbwd", off_bwd)):
        base = results.get(("graph", case))
        for name, _ in variants:
            r = results.get((name, case))
            if r is None:
                continue
            om = off["median_s"] if off else float("nan")
            util = statistics.median(off.get("cpu_utilization") or [1.0]) if off else float("nan")
            ocpu = om * util * (off.get("threads", args.threads) if off else args.threads)
            print(f"{case:8s} {name:6s} {r[0]:9.3f} {r[1]:8.3f} {r[2]:8.3f} {om:11.3f} {ocpu:11.3f} "
                  f"{r[0] / om:15.2f} {r[2] / ocpu:14.2f} {(r[0] / base[0]) if base else float('nan'):9.2f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
