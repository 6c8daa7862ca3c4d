"""Benchmark: equivariance-metric throughput (samples/s) for the 256×256 StyleGAN3-T generator on this CPU.

Builds G with the train.py preset (``stylegan3-t``, 256², default capacity, random weights — speed does not depend
on the weights) and measures in the same run:
* baseline: ``G.synthesis`` on a batch (the metric needs two synthesis calls per batch: orig and transformed);
* ``eqt50k_int``, ``eqt50k_frac``, ``eqr50k`` throughput via ``eq_metric`` on ``--samples`` samples;
* the resampling cost alone (reference + mask, and for EQ-R the 47×47 ×4 upsampling + bilinear sampling and the
  11×11 pseudo rotation) on a batch of generated images.
Printed ratios: metric throughput / ideal throughput of two synthesis calls per batch (1.0 = zero overhead), and
the original implementation's implied EQ throughput from ``benchmarks/baselines/official_cpu_timings.json`` (another host: context only)
(G_t256_fwd_b4, reference ops, same machine kind: 4 samples per 2 forward calls) vs ours.

Usage:
    python benchmarks/bench_metrics.py --quick       # batch 1, one sample per metric (~ a few minutes)
    python benchmarks/bench_metrics.py --samples 8 --batch 4
    python benchmarks/bench_metrics.py --res 64      # smaller generator for a fast look
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostinfo  # noqa: E402

OFFICIAL = hostinfo.STORED  # measured on another host: context only
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 1, 1 sample per metric")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--cfg", default="stylegan3-t")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--kinds", default="int,frac,rot")
    args = ap.parse_args()
    print(hostinfo.host_line())
    if args.quick:
        args.samples, args.batch = 1, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from afgan_tf.metrics import equivariance as eq
    from afgan_tf.networks import Generator
    from afgan_tf.networks.presets import generator_kwargs

    tf.random.set_seed(0)
    G = Generator(**generator_kwargs(args.cfg, args.res))
    print(f"generator {args.cfg} {args.res}x{args.res}, batch {args.batch}, {args.samples} samples per metric, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} intra-op threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings scale with other load)")
    rng = np.random.RandomState(0)
    z = rng.randn(args.batch, G.z_dim).astype(np.float32)
    ws = G.mapping(tf.constant(z), tf.zeros([args.batch, 0]))
    syn = tf.function(lambda w: G.synthesis(w))
    t = time.time()
    img = syn(ws)
    t_first = time.time() - t
    t = time.time()
    img = syn(ws)
    t_syn = time.time() - t
    ideal = args.batch / (2 * t_syn)
    print(f"baseline synthesis: first call {t_first:.2f} s (tracing), batch {args.batch}: {t_syn:.2f} s "
          f"-> ideal EQ throughput (2 calls per batch) {ideal:.4f} samples/s")

    # resampling cost alone
    x = tf.constant(img.numpy())
    for kind, fn in (("int", lambda: eq.apply_integer_translation(x, 3 / args.res, -5 / args.res)),
                     ("frac", lambda: eq.apply_fractional_translation(x, 0.0371, -0.0912)),
                     ("rot", lambda: (eq.apply_fractional_rotation(x, 0.7),
                                      eq.apply_fractional_pseudo_rotation(x, 0.7)))):
        fn()
        t = time.time()
        fn()
        dt = time.time() - t
        print(f"  resampling only [{kind}]: {dt * 1000:.1f} ms per batch of {args.batch} "
              f"({dt / (2 * t_syn) * 100:.2f}% of the two synthesis calls)")

    official = None
    if os.path.isfile(OFFICIAL) and args.res == 256 and args.cfg == "stylegan3-t":
        with open(OFFICIAL) as fh:
            case = json.load(fh)["cases"].get("G_t256_fwd_b4") or {}
        if case.get("median_s"):
            official = 4 / (2 * case["median_s"])
    rows = []
    for kind in args.kinds.split(","):
        name = {"int": "eqt50k_int", "frac": "eqt50k_frac", "rot": "eqr50k"}[kind]
        t = time.time()
        res = eq.eq_metric(G, kind, num_samples=args.samples, batch_size=args.batch, seed=0)
        dt = time.time() - t
        sps = args.samples / dt
        rows.append((name, sps, res["psnr"]))
        line = (f"{name:12s} {sps:.4f} samples/s  ({dt:.1f} s, PSNR {res['psnr']:.2f} dB)  "
                f"ours/ideal {sps / ideal:.3f}")
        if official:
            line += f"  ours/original {sps / official:.2f}x"
        print(line, flush=True)
    if official:
        print(f"original (reference ops, G_t256_fwd_b4 median from the timing file): {official:.4f} samples/s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("50k-sample estimate: " + ", ".join(f"{n} {50000 / s / 3600:.1f} h" for n, s, _ in rows))


if __name__ == "__main__":
    main()
