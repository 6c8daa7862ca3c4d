"""Training-step speed on this machine: sec/kimg of a full iteration (Gmain + Dmain + Dreg every 16 + G_ema) for a
small and the full-size StyleGAN3-T at 64x64, and the time split by phase.

  .venv/bin/python benchmarks/bench_train.py [--configs=small,full] [--res=64] [--batch=8] [--reps=3]
  .venv/bin/python benchmarks/bench_train.py --configs=small,small+ls      # cost of the loss-scaling path (fp32)
  .venv/bin/python benchmarks/bench_train.py --resume-skip=2000 [--batch=32]  # data repositioning on resume
  .venv/bin/python benchmarks/bench_train.py --configs=small --compare=/tmp/old-checkout [--rounds=2]
      # before/after: the same config timed alternately with this tree and another checkout (subprocesses)

A config name with ``+ls`` runs with dynamic loss scaling on (float32 layers: it measures the bookkeeping only).
``--resume-skip=N``: time to the first batch after skipping N batches of the embedded 32x32 dataset, with
``make_dataset(skip=N)`` (no decoding of skipped images) and with ``make_dataset().skip(N)`` (decode, then skip).

Each phase's compiled step (the ones the training loop runs) is timed separately after a warm-up call (tracing);
an iteration costs ``Gmain + Dmain + Dreg/16 + ema``. Synthetic in-memory data, ADA on (p = 0), default strategy.
Printed: per-phase seconds, sec/iteration, sec/kimg, images/s, and ratios against the first config (the
baseline measured in the same run).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("AFGAN_BENCH_ROOT", ROOT))

import numpy as np  # noqa: E402

CONFIGS = {
    "small": dict(cbase=2048, cmax=64, map_depth=2),      # a cpu-preset-sized network
    "full": dict(cbase=32768, cmax=512, map_depth=2),     # the original's stylegan3-t defaults
}


def _dataset_fn(images):
    def fn(*args):   # (global_batch, seed, skip) here; (ctx, per_replica_batch, seed, skip) in older checkouts
        import tensorflow as tf
        batch, seed, skip = args[-3:]
        x = images.astype(np.float32) / 127.5 - 1
        ds = tf.data.Dataset.from_tensor_slices((x, np.zeros([len(x), 0], np.float32)))
        return ds.shuffle(len(x), seed=seed).repeat().batch(batch, drop_remainder=True).skip(skip)
    return fn


def bench(name, res, batch, reps, mbstd):
    import tensorflow as tf
    try:
        from afgan_tf.training.trainer import Trainer
    except ImportError:   # a checkout from before the trainer/run split (for --compare)
        from afgan_tf.training.loop import Trainer
    from afgan_tf.training.options import resolve_options
    c = CONFIGS[name.split("+")[0]]
    opts = resolve_options(cfg="stylegan3-t", batch=batch, gamma=0.5, kimg=1, cbase=c["cbase"], cmax=c["cmax"],
                           map_depth=c["map_depth"], mbstd_group=mbstd, img_resolution=res, img_channels=3,
                           dataset_name="synthetic")
    if isinstance(opts, dict):   # a checkout from before the typed config (for --compare)
        opts["loss_scaling"] = name.endswith("+ls")
    else:
        opts.loss_scaling = name.endswith("+ls")
    rng = np.random.RandomState(0)
    images = rng.randint(0, 255, [max(4 * batch, 32), res, res, 3]).astype(np.uint8)
    t0 = time.perf_counter()
    tr = Trainer(opts, tf.distribute.get_strategy(), dataset_fn=_dataset_fn(images)).build()
    build_s = time.perf_counter() - t0
    n_g = sum(int(np.prod(v.shape)) for v in tr.G.trainable_variables)
    n_d = sum(int(np.prod(v.shape)) for v in tr.D.trainable_variables)
    it = tr.make_iterator()
    reals, labels = next(it)
    step, nimg = tf.constant(0, tf.int64), tf.constant(0, tf.int64)
    steps = getattr(tr, "steps", None) or dict(Gmain=tr.g_step, Dmain=tr.d_step, Dreg=tr.dreg_step)
    fns = {k: steps[k] for k in ("Gmain", "Dmain", "Dreg")}

    def call(fn):
        out = fn(reals, labels, step, nimg)
        return {k: v.numpy() for k, v in out.get("stats", out).items()}

    times, trace = {}, {}
    for ph, fn in fns.items():
        t = time.perf_counter()
        call(fn)
        trace[ph] = time.perf_counter() - t
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            call(fn)
            ts.append(time.perf_counter() - t)
        times[ph] = float(np.median(ts))
    beta = tf.constant(0.99, tf.float32)
    tr.ema_step(beta)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        tr.ema_step(beta)
        ts.append(time.perf_counter() - t)
    times["ema"] = float(np.median(ts))
    it_s = times["Gmain"] + times["Dmain"] + times["Dreg"] / 16 + times["ema"]
    return dict(name=name, params_G=n_g, params_D=n_d, build_s=build_s, trace=trace, times=times,
                sec_per_iter=it_s, sec_per_kimg=it_s / batch * 1000, img_per_s=batch / it_s)


def bench_resume_skip(skip, batch):
    """Seconds to the first batch after ``skip`` batches: skip before decoding vs decode-then-skip."""
    from afgan_tf import data as data_lib
    path = data_lib.default_dataset(resolution=32, verbose=False)
    info = data_lib.dataset_info(path)
    out = {}
    for how in ("make_dataset(skip=N)", "make_dataset().skip(N)"):
        t = time.perf_counter()
        if how.startswith("make_dataset(skip"):
            ds = data_lib.make_dataset(path, batch_size=batch, mirror=True, seed=0, skip=skip)
        else:
            ds = data_lib.make_dataset(path, batch_size=batch, mirror=True, seed=0).skip(skip)
        first = next(iter(ds))[0].numpy()
        out[how] = (time.perf_counter() - t, first)
    (ta, a), (tb, b) = out.values()
    same = np.array_equal(a, b)
    print(f"resume skip of {skip} batches of {batch} ({skip * batch:,} images, {info['count']} in the dataset, "
          f"mirrored): make_dataset(skip=N) {ta:.2f}s, make_dataset().skip(N) {tb:.2f}s (x{tb / ta:.0f}); "
          f"same first batch: {same}")
    if not same:
        raise SystemExit("the two pipelines disagree")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,full")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mbstd", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--resume-skip", type=int, default=0)
    ap.add_argument("--compare", default=None, help="another checkout: time --configs there and here, alternately")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.resume_skip:
        return bench_resume_skip(a.resume_skip, a.batch)
    if a.compare:
        return compare(a)
    names = [n for n in a.configs.split(",") if n]
    bad = [n for n in names if n.split("+")[0] not in CONFIGS or n.split("+")[1:] not in ([], ["ls"])]
    if bad:
        ap.error(f"--configs: unknown {bad}; choose from {list(CONFIGS)}")
    import tensorflow as tf
    print(f"TF {tf.__version__}, CPU threads: {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}, "
          f"{a.res}x{a.res}, batch {a.batch}, median of {a.reps}")
    results = []
    for n in names:
        r = bench(n, a.res, a.batch, a.reps, a.mbstd)
        results.append(r)
        if a.json:
            import json
            print("JSON " + json.dumps(dict(name=n, times=r["times"], sec_per_kimg=r["sec_per_kimg"])))
        t = r["times"]
        print(f"[{n}] G {r['params_G']:,} / D {r['params_D']:,} params; build {r['build_s']:.1f}s; first call "
              f"(trace) " + ", ".join(f"{k} {v:.1f}s" for k, v in r["trace"].items()))
        print(f"[{n}] per phase: Gmain {t['Gmain']:.3f}s  Dmain {t['Dmain']:.3f}s  Dreg {t['Dreg']:.3f}s "
              f"(amortised /16: {t['Dreg'] / 16:.3f}s)  ema {t['ema']:.4f}s")
        share = {k: (t[k] / 16 if k == "Dreg" else t[k]) / r["sec_per_iter"] for k in t}
        print(f"[{n}] split of an iteration: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in share.items()))
        print(f"[{n}] {r['sec_per_iter']:.3f} s/iteration, {r['sec_per_kimg']:.1f} sec/kimg, "
              f"{r['img_per_s']:.1f} images/s")
    base = results[0]
    for r in results[1:]:
        print(f"ratio {r['name']}/{base['name']}: sec/kimg x{r['sec_per_kimg'] / base['sec_per_kimg']:.1f}, "
              f"Gmain x{r['times']['Gmain'] / base['times']['Gmain']:.1f}, "
              f"Dmain x{r['times']['Dmain'] / base['times']['Dmain']:.1f}, "
              f"Dreg x{r['times']['Dreg'] / base['times']['Dreg']:.1f}")


def compare(a):
    """Time the first of --configs with another checkout (``--compare``, "before") and this tree ("after"),
    alternately, each in a fresh subprocess; print per-phase medians and the after/before ratios."""
    import json
    import platform
    import subprocess
    name = a.configs.split(",")[0]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    isa = ",".join(f for f in ("avx2", "avx512f", "fma") if f in flags)
    print(f"CPU: {cpu} ({isa}); config {name}, {a.res}x{a.res}, batch {a.batch}, median of {a.reps} per round, "
          f"{a.rounds} rounds; load avg {os.getloadavg()[0]:.1f}")
    runs = {"before": [], "after": []}
    for _ in range(a.rounds):
        for label, root in (("before", os.path.abspath(a.compare)), ("after", ROOT)):
            cmd = [sys.executable, os.path.abspath(__file__), f"--configs={name}", f"--res={a.res}",
                   f"--batch={a.batch}", f"--reps={a.reps}", f"--mbstd={a.mbstd}", "--json"]
            env = dict(os.environ, PYTHONPATH=root, AFGAN_BENCH_ROOT=root)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
            line = [l for l in out.stdout.splitlines() if l.startswith("JSON ")]
            if out.returncode or not line:
                raise SystemExit(f"{label} ({root}) failed:\n{out.stderr[-2000:]}")
            runs[label].append(json.loads(line[0][5:]))
            print(f"{label}: {runs[label][-1]['sec_per_kimg']:.1f} sec/kimg "
                  + " ".join(f"{k} {v:.3f}s" for k, v in runs[label][-1]["times"].items()), flush=True)
    med = {k: {ph: float(np.median([r["times"][ph] for r in v])) for ph in v[0]["times"]} for k, v in runs.items()}
    spk = {k: float(np.median([r["sec_per_kimg"] for r in v])) for k, v in runs.items()}
    print(f"before {spk['before']:.1f} sec/kimg, after {spk['after']:.1f} sec/kimg: after/before "
          f"x{spk['after'] / spk['before']:.3f}; per phase " +
          ", ".join(f"{ph} x{med['after'][ph] / med['before'][ph]:.3f}" for ph in med["after"]) +
          f"; load avg {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
