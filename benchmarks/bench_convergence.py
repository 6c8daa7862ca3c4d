"""Convergence benchmark: how fast does training learn the procedural ``shapes`` dataset on this host?

  nice -n 5 python benchmarks/bench_convergence.py --out=/tmp/conv --minutes=60
  python benchmarks/bench_convergence.py --out=/tmp/conv --kimg=20 --tick=2          # a quick look

Steps:
  1. print the host (CPU model, ISA flags, cores, load average);
  2. run ``tools/train.py`` as a subprocess with explicit flags (the CPU setting below, ``--data=shapes:N:RES``,
     ``--metrics=shapes_valid --snap=1``: the shapes metric of afgan_tf/metrics/shapes.py on G_ema at every tick);
  3. follow the run's ``metric-shapes_valid.jsonl``; stop the run with SIGTERM (it saves a checkpoint and exits)
     when the wall-clock budget ``--minutes`` is spent, or let it end at ``--kimg``;
  4. write ``curve.json`` (per tick: kimg, seconds since the launch, valid fraction, sliced-Wasserstein distance,
     KS max, EQ-T, median relative residual) and ``curve.png`` (``--replot`` redraws it from curve.json); copy the fakes grids to ``fakes/``; print the kimg and minutes at which the
     valid fraction first reached 50 % and 90 %.
Seconds are wall clock since the subprocess started (start-up, graph tracing and the metric evaluations
included), so they depend on the machine's load — printed next to them.
"""
import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The CPU setting tuned for this benchmark (all passed to tools/train.py explicitly).
CPU_SETTING = dict(cfg="stylegan2-fourier", res=16, count=16384, batch=32, gamma=0.1, cbase=2048, cmax=32, map_depth=2,
                   mbstd_group=4, glr=0.0025, dlr=0.0025, aug="noaug", tick=4.0)
THRESHOLDS = (0.5, 0.9)


def host_info():
    """CPU model, ISA flags of interest, cores and load average of this host."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return dict(cpu=model, isa=isa, cores=os.cpu_count(), load=list(os.getloadavg()))


def read_jsonl(path):
    out = []
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:  # a line being written
                        pass
    return out


def first_reach(curve, level):
    """(kimg, minutes) of the first point with valid >= level, or None."""
    for p in curve:
        if p["valid"] >= level:
            return p["kimg"], p["seconds"] / 60
    return None


def plot_curve(curve, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    kimg = [p["kimg"] for p in curve]
    ax[0].plot(kimg, [100 * p["valid"] for p in curve], "o-", ms=3)
    for t in THRESHOLDS:
        ax[0].axhline(100 * t, color="gray", lw=0.6, ls="--")
    ax[0].set_xlabel("kimg")
    ax[0].set_ylabel("valid images (%)")
    ax[0].set_ylim(-2, 102)
    ax[1].plot(kimg, [p["swd"] for p in curve], "o-", ms=3, color="C1")
    ax[1].set_xlabel("kimg")
    ax[1].set_ylabel("sliced Wasserstein (attributes)")
    ax[1].set_yscale("log")
    rho = [(p["kimg"], p["median_rho"]) for p in curve if p.get("median_rho") is not None]
    if rho:
        ax[2].plot(*zip(*rho), "o-", ms=3, color="C2")
        ax[2].axhline(0.15, color="gray", lw=0.6, ls="--")
    ax[2].set_xlabel("kimg")
    ax[2].set_ylabel("median relative residual of the fit")
    ax[2].set_yscale("log")
    if curve:
        ax[0].set_title(f"{curve[-1]['seconds'] / 60:.0f} min wall clock for {curve[-1]['kimg']:.0f} kimg",
                        fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (training run, curve.json/png, fakes/)")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget (SIGTERM to the run after)")
    ap.add_argument("--kimg", type=float, default=10000.0, help="training length limit")
    ap.add_argument("--num", type=int, default=256, help="generated images per metric evaluation")
    ap.add_argument("--seed", type=int, default=0)
    for k, v in CPU_SETTING.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    ap.add_argument("--replot", action="store_true", help="only redraw curve.png from --out's curve.json")
    a = ap.parse_args(argv)
    if a.replot:
        with open(os.path.join(a.out, "curve.json")) as fh:
            summary = json.load(fh)
        st, host = summary["settings"], summary["host"]
        load = host.get("load_during_run", {}).get("mean", host["load"][0])
        plot_curve(summary["curve"], os.path.join(a.out, "curve.png"),
                   f"{st['cfg']} {st['res']}x{st['res']} on {st['data']}, batch {st['batch']}; {host['cpu']} "
                   f"(load avg {load:.1f} on {host['cores']} cores)")
        return 0
    if a.minutes <= 0 or a.kimg <= 0:
        raise SystemExit("Error: --minutes and --kimg must be > 0")
    os.makedirs(a.out, exist_ok=True)
    host = host_info()
    print(f"host: {host['cpu']}, ISA {' '.join(host['isa'])}, {host['cores']} cores, "
          f"load avg {' '.join(f'{x:.2f}' for x in host['load'])}", flush=True)
    data = f"shapes:{a.count}:{a.res}"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), f"--outdir={os.path.join(a.out, 'runs')}",
           f"--cfg={a.cfg}", f"--data={data}", f"--batch={a.batch}", f"--gamma={a.gamma}", f"--cbase={a.cbase}",
           f"--cmax={a.cmax}", f"--map-depth={a.map_depth}", f"--mbstd-group={a.mbstd_group}", f"--glr={a.glr}",
           f"--dlr={a.dlr}", f"--aug={a.aug}", f"--kimg={a.kimg}", f"--tick={a.tick}", "--snap=1",
           "--metrics=shapes_valid", f"--seed={a.seed}", "--grid-max=64"]
    print("run: " + " ".join(cmd), flush=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    log = open(os.path.join(a.out, "train.log"), "a")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    settings = dict(vars(a), data=data)
    curve, run_dir, stopped = [], None, False
    loads = []

    def collect():
        nonlocal run_dir
        if run_dir is None:
            dirs = sorted(glob.glob(os.path.join(a.out, "runs", "*")))
            run_dir = dirs[-1] if dirs else None
        if run_dir is None:
            return
        recs = read_jsonl(os.path.join(run_dir, "metric-shapes_valid.jsonl"))
        for r in recs[len(curve):]:
            res = r["results"]
            curve.append(dict(kimg=float(r.get("snapshot_kimg", 0.0)), seconds=float(r["timestamp"] - t0),
                              valid=float(res["shapes_valid"]), swd=float(res["shapes_swd"]),
                              ks_max=float(res["shapes_ks_max"]), w1_mean=float(res["shapes_w1_mean"]),
                              eqt=res.get("shapes_eqt"), median_rho=r.get("shapes_median_rho"),
                              load1=os.getloadavg()[0]))
            p = curve[-1]
            print(f"kimg {p['kimg']:7.1f}  {p['seconds'] / 60:6.1f} min  valid {100 * p['valid']:5.1f} %  "
                  f"swd {p['swd']:.3f}  ks_max {p['ks_max']:.3f}  load {p['load1']:.1f}", flush=True)
        write_json(os.path.join(a.out, "curve.json"), dict(host=host, settings=settings, run_dir=run_dir,
                                                           curve=curve))

    try:
        while proc.poll() is None:
            time.sleep(5)
            loads.append(os.getloadavg()[0])
            collect()
            if not stopped and time.time() - t0 > a.minutes * 60:
                print(f"budget of {a.minutes} min spent: stopping the run (SIGTERM)", flush=True)
                proc.send_signal(signal.SIGTERM)
                stopped = True
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    finally:
        log.close()
    collect()
    if run_dir is None:
        raise SystemExit(f"Error: the training run did not start (see {os.path.join(a.out, 'train.log')})")
    os.makedirs(os.path.join(a.out, "fakes"), exist_ok=True)
    fakes = sorted(glob.glob(os.path.join(run_dir, "fakes*.png")))
    for f in fakes + glob.glob(os.path.join(run_dir, "reals.png")):
        shutil.copy(f, os.path.join(a.out, "fakes", os.path.basename(f)))
    host["load_during_run"] = dict(mean=sum(loads) / max(len(loads), 1), max=max(loads, default=0.0))
    summary = dict(host=host, settings=settings, run_dir=run_dir, curve=curve, exit_status=proc.returncode,
                   wall_minutes=(time.time() - t0) / 60)
    for t in THRESHOLDS:
        summary[f"reach_{int(100 * t)}"] = first_reach(curve, t)
    write_json(os.path.join(a.out, "curve.json"), summary)
    if curve:
        plot_curve(curve, os.path.join(a.out, "curve.png"),
                   f"{a.cfg} {a.res}x{a.res} on {data}, batch {a.batch}; {host['cpu']} "
                   f"(load avg {summary['host']['load_during_run']['mean']:.1f} on {host['cores']} cores)")
    print(f"host: {host['cpu']}, ISA {' '.join(host['isa'])}, {host['cores']} cores; load avg during the run "
          f"{host['load_during_run']['mean']:.1f} (max {host['load_during_run']['max']:.1f})")
    for t in THRESHOLDS:
        r = summary[f"reach_{int(100 * t)}"]
        print(f"{int(100 * t)} % valid: " + (f"at {r[0]:.1f} kimg, {r[1]:.1f} min" if r else "not reached"))
    if curve:
        best = max(curve, key=lambda p: p["valid"])
        print(f"last: {curve[-1]['kimg']:.1f} kimg, {curve[-1]['seconds'] / 60:.1f} min, valid "
              f"{100 * curve[-1]['valid']:.1f} %, swd {curve[-1]['swd']:.3f}; best valid {100 * best['valid']:.1f} % "
              f"at {best['kimg']:.1f} kimg")
    print(f"fakes grids: {os.path.join(a.out, 'fakes')} ({len(fakes)}); curve: {os.path.join(a.out, 'curve.png')}")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
