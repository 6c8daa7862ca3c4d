"""Benchmark of the StyleGAN3 generator (full default capacity, docs/ALGORITHM.md §3.5) on CPU: forward (batch 1, 4) and
forward+backward (batch 1, 4; loss = mean(img^2), gradients wrt all G parameters) at 64/128/256 for T and R.

Every case runs in its own subprocess (so the peak RSS is per case, like the original's timing file): one warm-up
call (includes tf.function tracing), then timed calls until ``--reps`` or the per-case time budget is reached;
prints min / median seconds and the process's peak RSS (and the load average: timings on a shared machine are
noisy). Implementations (``--impls``), each timed in the same run:
``ref`` (``AFGAN_TF_FORCE_REF=1``: pure-TF stock ops, the baseline), ``auto`` (compiled CPU ops where the library
is available, at the ISA level it chose; ``AFGAN_TF_OPS_ISA`` forces one), ``xla`` (stock ops under
``tf.function(jit_compile=True)``; measured far slower than plain TF on CPU, see docs/custom_ops.md),
``savedmodel`` (forward cases: the portable SavedModel of ``afgan_tf.export`` — stock ops, the graph TF Serving
runs — exported once, then loaded and called in a clean process that never imports afgan_tf). "x/ref" = ref median / this
median. With ``--original JSON`` (written by ../shared/bench/official_timings.py on THIS host in the same
sitting), "orig/ours" = the original's median / ours for the matching case (g64_fwd_b1, g256_fwd_b1,
g64_fwdbwd_b4). The header prints the host CPU model, ISA flags and the op library's compiled / chosen level.
``--profile`` adds, per case and impl (not savedmodel), where the time of one call goes: the TF profiler's time per op
type and the convolutions' GFLOP and GFLOP/s (on a CPU the 3×3 convolutions dominate the generator from 64² on;
see docs/custom_ops.md "Where the generator's time goes").

Usage:
    python benchmarks/bench_generator.py --quick                 # the 64x64 cases, fewer repetitions
    python benchmarks/bench_generator.py                         # everything (long: tens of minutes on 2 cores)
    python benchmarks/bench_generator.py --cases G_t64_fwd_b1 --impls ref,auto,savedmodel --reps 5 \
        --original /work/orig/official.json
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
sys.path.insert(0, ROOT)  # this checkout's afgan_tf (parent and children)
sys.path.insert(0, HERE)
import hostinfo  # noqa: E402

OFFICIAL = hostinfo.STORED  # another host: only its init kwargs are used (same networks as the original's)
IMPLS = ("ref", "auto", "xla", "savedmodel")
ORIGINAL_CASE = {"G_t64_fwd_b1": "g64_fwd_b1", "G_t256_fwd_b1": "g256_fwd_b1", "G_t64_fwdbwd_b4": "g64_fwdbwd_b4"}

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
def _time_calls(step, z, reps, budget_s):
    import tensorflow as tf
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
    return warmup, times


def export_case(name, export_dir):
    """Exports the case's generator as the portable (stock-op) SavedModel."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import warnings
    warnings.simplefilter("ignore")
    from afgan_tf import export
    G = _make_g(name)[0]
    export.export_generator(G, export_dir, max_batch=8, overwrite=True)


def run_savedmodel(name, export_dir, reps, budget_s):
    """Loads the SavedModel in this clean process (no afgan_tf import) and times serving_default."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    _, _, _, batch = parse_case(name)
    rss_setup = rss_mib()
    m = tf.saved_model.load(export_dir)
    f = m.signatures["serving_default"]
    z = tf.constant(np.random.RandomState(0).randn(batch, 512).astype(np.float32))
    empty = dict(truncation_psi=tf.zeros([0]), translate=tf.zeros([0, 2]), rotate=tf.zeros([0]))
    warmup, times = _time_calls(lambda z: f(z=z, **empty)["images_float"], z, reps, budget_s)
    assert "afgan_tf" not in sys.modules
    print(json.dumps(dict(case=name, batch=batch, warmup_s=warmup, times_s=times, min_s=min(times),
                          median_s=float(np.median(times)), rss_after_setup_mib=rss_setup, peak_rss_mib=rss_mib(),
                          ops_used="ref", isa=None, loadavg=os.getloadavg())))


def _make_g(name):
    import numpy as np
    import tensorflow as tf
    from afgan_tf.networks import Generator, presets
    cfg, res, mode, batch = parse_case(name)
    off = load_official().get(name) or load_official().get(f"G_{cfg}{res}_fwd_b1") or {}
    kwargs = off.get("init_kwargs") or presets.generator_kwargs(CFGS[cfg], res)
    G = Generator(**kwargs)
    z = tf.constant(np.random.RandomState(0).randn(batch, G.z_dim).astype(np.float32))
    return G, z


CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


def conv_gflop(graph):
    """GFLOP (2 per multiply-add) of the convolutions in a traced graph; each backward conv = its forward's."""
    total = 0
    for op in graph.get_operations():
        if op.type not in CONV_OPS:
            continue
        w = op.inputs[1].shape if op.type != "Conv2DBackpropFilter" else None
        out = op.outputs[0].shape if op.type == "Conv2D" else op.inputs[2].shape     # forward output / dy
        if op.type == "Conv2DBackpropFilter":
            w = op.outputs[0].shape
        if not (out.is_fully_defined() and w.is_fully_defined()):
            continue
        total += 2 * out.num_elements() * w[0] * w[1] * w[2]
    return total / 1e9


def profile_ops(call):
    """Runs call() once under the TF profiler; returns {op type: ms} over TF's compute threads (or {} when the
    profiler's trace format is unavailable)."""
    import collections
    import glob
    import tempfile
    import tensorflow as tf
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return {}
    logdir = tempfile.mkdtemp(prefix="bench_generator_prof_")
    tf.profiler.experimental.start(logdir)
    call()
    tf.profiler.experimental.stop()
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    times = collections.Counter()
    if files:
        space = xplane_pb2.XSpace()
        with open(files[0], "rb") as fh:
            space.ParseFromString(fh.read())
        for plane in space.planes:
            names = {k: v.name for k, v in plane.event_metadata.items()}
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                end = -1                           # only top-level events (an op's own ParallelFor etc. nest)
                for ev in sorted(line.events, key=lambda e: e.offset_ps):
                    op = names.get(ev.metadata_id, "?").split(":")[-1]
                    if op in ("Process", "StartRegion", "StopRegion", "Record", "ExecutorDoneCallback"):
                        continue
                    if ev.offset_ps < end:
                        continue
                    end = ev.offset_ps + ev.duration_ps
                    times[op] += ev.duration_ps / 1e9
    import shutil
    shutil.rmtree(logdir, ignore_errors=True)
    return dict(times.most_common())


def run_case(name, reps, budget_s, jit=False, profile=False):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf
    import warnings
    warnings.simplefilter("ignore")

    cfg, res, mode, batch = parse_case(name)
    G, z = _make_g(name)
    num_params = sum(int(np.prod(v.shape)) for v in G.trainable_variables)

    if mode == "fwd":
        @tf.function(jit_compile=jit)
        def step(z):
            return G(z, truncation_psi=1)
    else:
        @tf.function(jit_compile=jit)
        def step(z):
            with tf.GradientTape() as tape:
                img = G(z, truncation_psi=1)
                loss = tf.reduce_mean(tf.square(img))
            grads = tape.gradient(loss, G.trainable_variables)
            return loss, tf.add_n([tf.reduce_sum(g) for g in grads])

    rss_setup = rss_mib()
    warmup, times = _time_calls(step, z, reps, budget_s)
    prof = None
    if profile:
        ops = profile_ops(lambda: tf.nest.map_structure(lambda t: t.numpy(), step(z)))
        prof = dict(ops_ms=ops, conv_gflop=conv_gflop(step.get_concrete_function(z).graph))
    from afgan_tf.ops import _common, build_info
    used = "ref" if jit else _common.resolve_impl("auto", "filtered_lrelu")  # what the network's ops actually ran
    print(json.dumps(dict(case=name, batch=batch, num_params=num_params, warmup_s=warmup, times_s=times,
                          min_s=min(times), median_s=float(np.median(times)), rss_after_setup_mib=rss_setup,
                          peak_rss_mib=rss_mib(), ops_used=used, isa=build_info()["chosen"] if used == "custom" else None,
                          loadavg=os.getloadavg(), profile=prof)))


def profile_line(prof):
    """One line: total profiled op time, the convolutions' share and GFLOP/s, the next biggest op types."""
    ops = prof.get("ops_ms") or {}
    if not ops:
        return "  profile: unavailable (TF profiler trace format not found)"
    total = sum(ops.values())
    conv = sum(v for k, v in ops.items() if k in CONV_OPS)
    rate = prof["conv_gflop"] / (conv / 1e3) if conv else 0.0
    rest = ", ".join(f"{k} {v:.0f} ms" for k, v in ops.items() if k not in CONV_OPS and v >= 0.02 * total)
    return (f"  profile (one call, op time summed over threads {total:.0f} ms): convolutions {conv:.0f} ms "
            f"({100 * conv / total:.0f} %, {prof['conv_gflop']:.1f} GFLOP at {rate:.0f} GFLOP/s); {rest}")


# ----------------------------------------------------------------------------------------------- parent process
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=None, help="comma list (default: all, or the 64x64 ones with --quick)")
    ap.add_argument("--impls", default="ref,auto", help="comma list of " + ",".join(IMPLS))
    ap.add_argument("--original", default=None, help="same-host JSON of ../shared/bench/official_timings.py")
    ap.add_argument("--reps", type=int, default=None, help="max timed calls per case (default 5, 2 with --quick)")
    ap.add_argument("--budget", type=float, default=None, help="time budget per case in s (default 120 / 40)")
    ap.add_argument("--quick", action="store_true", help="64x64 cases only, fewer repetitions")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file (atomically)")
    ap.add_argument("--profile", action="store_true",
                    help="also print where one call's time goes (op types, convolution GFLOP/s)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_mode", default="run", help=argparse.SUPPRESS)
    ap.add_argument("--_dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    budget = args.budget or (40.0 if args.quick else 120.0)
    if args._child:
        if args._mode == "export":
            export_case(args._child, args._dir)
        elif args._mode == "savedmodel":
            run_savedmodel(args._child, args._dir, reps, budget)
        else:
            run_case(args._child, reps, budget, jit=args._mode == "xla", profile=args.profile)
        return
    cases = args.cases.split(",") if args.cases else [c for c in all_cases() if not args.quick or "64_" in c]
    for c in cases:
        parse_case(c)
    impls = args.impls.split(",")
    for i in impls:
        if i not in IMPLS:
            raise SystemExit(f"--impls: unknown impl {i!r} ({', '.join(IMPLS)})")
    original, _ = hostinfo.load_original(args.original)
    print(hostinfo.host_line())
    print(hostinfo.original_line(original, args.original))
    import tempfile
    tmp_root = tempfile.mkdtemp(prefix="bench_generator_")
    results = []
    hdr = (f"{'case':<20} {'impl':<15} {'min s':>9} {'median s':>9} {'peak MiB':>9} {'x/ref':>7} "
           f"{'orig s':>9} {'orig/ours':>9} {'RSS o/u':>8}")
    print(hdr)
    print("-" * len(hdr))
    for case in cases:
        base = None
        for impl in impls:
            env = dict(os.environ, AFGAN_TF_FORCE_REF="0" if impl == "auto" else "1", TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, os.path.abspath(__file__), "--_child", case, "--reps", str(reps),
                   "--budget", str(budget)] + (["--profile"] if args.profile else [])
            if impl == "savedmodel":
                if "fwd_" not in case or "fwdbwd" in case:
                    continue
                d = os.path.join(tmp_root, f"{case}_{impl}")
                e = subprocess.run(cmd + ["--_mode", "export", "--_dir", d],
                                   capture_output=True, text=True, env=env)
                if e.returncode != 0:
                    err = (e.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{case:<20} {impl:<15} EXPORT FAILED: {err[:100]}")
                    continue
                cmd += ["--_mode", "savedmodel", "--_dir", d]
            elif impl == "xla":
                cmd += ["--_mode", "xla"]
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
            speedup = f"{base['median_s'] / r['median_s']:7.2f}" if base and impl != "ref" else f"{'':>7}"
            label = impl if impl != "auto" else (f"auto[{r.get('isa')}]" if compiled else "auto*")  # *: ran ref
            o = original.get(ORIGINAL_CASE.get(case, ""), {})
            if o.get("seconds"):
                orig = f"{o['seconds']:9.2f} {o['seconds'] / r['median_s']:9.2f} " \
                       f"{o['peak_rss_gib'] * 1024 / r['peak_rss_mib']:8.2f}"
            else:
                orig = f"{'n/a':>9} {'':>9} {'':>8}"
            print(f"{case:<20} {label:<15} {r['min_s']:9.3f} {r['median_s']:9.3f} {r['peak_rss_mib']:9.0f} {speedup} "
                  f"{orig}", flush=True)
            if r.get("profile"):
                print(profile_line(r["profile"]), flush=True)
    import shutil
    shutil.rmtree(tmp_root, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()} (2 cores). auto* = the compiled op library was unavailable, "
          f"so that row ran the reference ops too. Ratios use medians.")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(dict(results=results, original_file=args.original, original=original), fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
