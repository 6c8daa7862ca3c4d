"""Benchmark of the StyleGAN3 generator (full default capacity, spec §3.5) on CPU: forward (batch 1, 4) and
forward+backward (batch 1, 4; loss = mean(img^2), gradients wrt all G parameters) at 64/128/256 for T and R.

Every case runs in its own subprocess (so the peak RSS is per case, like the original's timing file): one warm-up
call (includes tf.function tracing), then timed calls until ``--reps`` or the per-case time budget is reached;
prints min / median seconds and the process's peak RSS (and the load average: timings on a shared machine are
noisy). Two implementations are timed in the same run:
``ref`` (``AFGAN_TF_FORCE_REF=1``: pure-TF reference ops, the baseline) and ``auto`` (compiled CPU ops where the
library is available); the "auto/ref" column is the speed-up over that baseline. Where the original's CPU timings
(``../shared/parity/official_cpu_timings.json``, same machine kind, 2 threads, kwargs taken from that file) have a
matching case, "orig/ours" = original min time / our min time (> 1 = we are faster) and the peak-RSS ratio are
printed too.

Usage:
    python benchmarks/bench_generator.py --quick                 # the 64x64 cases, fewer repetitions
    python benchmarks/bench_generator.py                         # everything (long: tens of minutes on 2 cores)
    python benchmarks/bench_generator.py --cases G_t64_fwd_b1,G_r64_fwd_b4 --impls auto --reps 5
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OFFICIAL = os.path.join(ROOT, "..", "shared", "parity", "official_cpu_timings.json")

CFGS = {"t": "stylegan3-t", "r": "stylegan3-r"}
RESOLUTIONS = (64, 128, 256)
MODES = ("fwd_b1", "fwd_b4", "fwdbwd_b1", "fwdbwd_b4")


def all_cases():
    return [f"G_{c}{r}_{m}" for c in CFGS for r in RESOLUTIONS for m in MODES]


def parse_case(name):
    try:
        _, cr, mode, b = name.split("_")
        cfg, res, batch = cr[0], int(cr[1:]), int(b[1:])
        assert cfg in CFGS and mode in ("fwd", "fwdbwd") and batch >= 1
    except Exception:
        raise SystemExit(f"bad case name {name!r}; expected e.g. G_t64_fwd_b1 or G_r256_fwdbwd_b4")
    return cfg, res, mode, batch


def load_official():
    if not os.path.exists(OFFICIAL):
        return {}
    return json.load(open(OFFICIAL)).get("cases", {})


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ child process
def run_case(name, reps, budget_s):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf
    import warnings
    warnings.simplefilter("ignore")
    from afgan_tf.networks import Generator, presets

    cfg, res, mode, batch = parse_case(name)
    off = load_official().get(name) or load_official().get(f"G_{cfg}{res}_fwd_b1") or {}
    kwargs = off.get("init_kwargs") or presets.generator_kwargs(CFGS[cfg], res)
    G = Generator(**kwargs)
    z = tf.constant(np.random.RandomState(0).randn(batch, G.z_dim).astype(np.float32))
    num_params = sum(int(np.prod(v.shape)) for v in G.trainable_variables)

    if mode == "fwd":
        @tf.function
        def step(z):
            return G(z, truncation_psi=1)
    else:
        @tf.function
        def step(z):
            with tf.GradientTape() as tape:
                img = G(z, truncation_psi=1)
                loss = tf.reduce_mean(tf.square(img))
            grads = tape.gradient(loss, G.trainable_variables)
            return loss, tf.add_n([tf.reduce_sum(g) for g in grads])

    rss_setup = rss_mib()
    t0 = time.perf_counter()
    out = step(z)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    warmup = time.perf_counter() - t0
    times = []
    t_start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - t_start + times[-1] < budget_s):
        t0 = time.perf_counter()
        out = step(z)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - t0)
    from afgan_tf.ops import _common
    used = _common.resolve_impl("auto", "filtered_lrelu")  # what the network's ops actually ran
    print(json.dumps(dict(case=name, batch=batch, num_params=num_params, warmup_s=warmup, times_s=times,
                          min_s=min(times), median_s=float(np.median(times)), rss_after_setup_mib=rss_setup,
                          peak_rss_mib=rss_mib(), ops_used=used, loadavg=os.getloadavg())))


# ----------------------------------------------------------------------------------------------- parent process
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=None, help="comma list (default: all, or the 64x64 ones with --quick)")
    ap.add_argument("--impls", default="ref,auto", help="comma list of ref,auto")
    ap.add_argument("--reps", type=int, default=None, help="max timed calls per case (default 5, 2 with --quick)")
    ap.add_argument("--budget", type=float, default=None, help="time budget per case in s (default 120 / 40)")
    ap.add_argument("--quick", action="store_true", help="64x64 cases only, fewer repetitions")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file (atomically)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    budget = args.budget or (40.0 if args.quick else 120.0)
    if args._child:
        run_case(args._child, reps, budget)
        return
    cases = args.cases.split(",") if args.cases else [c for c in all_cases() if not args.quick or "64_" in c]
    for c in cases:
        parse_case(c)
    impls = args.impls.split(",")
    for i in impls:
        if i not in ("ref", "auto"):
            raise SystemExit(f"--impls: unknown impl {i!r} (ref, auto)")
    official = load_official()
    results = []
    hdr = (f"{'case':<20} {'impl':<5} {'min s':>9} {'median s':>9} {'peak MiB':>9} {'auto/ref':>9} "
           f"{'orig s':>9} {'orig/ours':>9} {'RSS o/u':>8}")
    print(hdr)
    print("-" * len(hdr))
    for case in cases:
        base = None
        for impl in impls:
            env = dict(os.environ, AFGAN_TF_FORCE_REF="1" if impl == "ref" else "0", TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, os.path.abspath(__file__), "--_child", case, "--reps", str(reps),
                   "--budget", str(budget)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode != 0 or not lines:
                err = (p.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{case:<20} {impl:<5} FAILED (rc {p.returncode}): {err[:100]}")
                results.append(dict(case=case, impl=impl, error=err, returncode=p.returncode))
                continue
            r = json.loads(lines[-1])
            r["impl"] = impl
            results.append(r)
            if impl == "ref":
                base = r
            compiled = r.get("ops_used") == "custom"
            speedup = f"{base['min_s'] / r['min_s']:9.2f}" if base and compiled else f"{'':>9}"
            label = impl if impl == "ref" or compiled else "auto*"  # * = compiled library unavailable: ran ref
            o = official.get(case, {})
            if o.get("min_s"):
                orig = f"{o['min_s']:9.2f} {o['min_s'] / r['min_s']:9.2f} " \
                       f"{o['peak_rss_process_mib'] / r['peak_rss_mib']:8.2f}"
            elif case in official:
                orig = f"{'failed':>9} {'':>9} {'':>8}"  # the original did not finish this case (e.g. OOM)
            else:
                orig = f"{'n/a':>9} {'':>9} {'':>8}"
            print(f"{case:<20} {label:<5} {r['min_s']:9.3f} {r['median_s']:9.3f} {r['peak_rss_mib']:9.0f} {speedup} "
                  f"{orig}", flush=True)
    print(f"load average at the end: {os.getloadavg()} (2 cores; the original was timed on an idle machine). "
          f"auto* = the compiled op library was unavailable, so that row ran the reference ops too.")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(dict(results=results, official_file=OFFICIAL), fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
