"""Compares the harness's outputs with the cases' expected outputs (numpy only: runs where TensorFlow cannot).

    python custom_ops/harness/compare.py CASES_DIR RESULTS_DIR OUT_DIR [--extra JSON]...

Per case and output the error is max |out - expected| / max(1, max |expected|) (a relative error that
becomes absolute for small values). Tolerances: float32 cases 2e-5, float16 cases 4e-3 (half precision
has a relative step of 2^-10 ~ 1e-3; outputs are rounded to half once and inputs are rounded the same way
in the reference). filtered_lrelu outputs are compared for every path the harness ran (y/dx/ju_<path>).
Timing cases (no expected outputs; skipped by the host build) pass when every output is finite and the tiled and generic paths agree
within the same tolerance (relative to the outputs' magnitude). A case the harness could not run fails.
Writes OUT_DIR/report.json and OUT_DIR/report.txt; `--extra` files (JSON objects: stage results such as
the sanitizer or PyTorch timings) are merged into report.json under their "stage" key and summarised in
report.txt. Exit status 0 when every case passed, 1 otherwise.
"""
import argparse
import json
import os
import sys

import numpy as np

TOL = {"float32": 2e-5, "float16": 4e-3}


def _load(path):
    return np.load(path).astype(np.float32)


def compare_case(case_dir, res_dir, harness_ran=True):
    """Returns dict(case, op, dtype, status, max_err, tol, outputs={name: err}, time_ms, note)."""
    name = os.path.basename(case_dir)
    with open(os.path.join(case_dir, "case.json")) as fh:
        params = json.load(fh)
    dtype = params.get("dtype", "float32")
    tol = TOL[dtype]
    rec = dict(case=name, op=params.get("op"), dtype=dtype, tol=tol, outputs={}, time_ms={}, status="fail",
               max_err=None, note="")
    rpath = os.path.join(res_dir, name, "result.json")
    timing = any(k.startswith("gen_") for k in params)
    if not os.path.exists(rpath):
        if timing and harness_ran:  # the run stage's time budget ran out before this timing case
            rec["status"] = "skip"
            rec["note"] = "not reached (time budget)"
        else:
            rec["note"] = "no result (harness did not reach this case)"
        return rec
    with open(rpath) as fh:
        res = json.load(fh)
    rec["time_ms"] = res.get("time_ms", {})
    if res.get("status") == "skipped":
        rec["status"] = "skip"
        rec["note"] = "skipped (timing case; harness --timing / --max-gen-elems)"
        return rec
    if res.get("status") != "ok":
        rec["note"] = "harness error: " + res.get("error", "")
        return rec
    stats = res.get("stats", {})
    expected = sorted(f[len("expected_"):-4] for f in os.listdir(case_dir) if f.startswith("expected_"))
    errs = {}
    problems = []
    if expected:
        paths = params.get("paths", "tiled,generic").split(",") if params.get("op") == "filtered_lrelu" else [""]
        for e in expected:
            ref = _load(os.path.join(case_dir, f"expected_{e}.npy"))
            scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
            for p in paths:
                out_name = f"{e}_{p}" if p else e
                f = os.path.join(res_dir, name, out_name + ".npy")
                if not os.path.exists(f):
                    problems.append(f"{out_name} missing")
                    errs[out_name] = float("inf")
                    continue
                got = _load(f)
                if got.shape != ref.shape:
                    problems.append(f"{out_name} shape {got.shape} != {ref.shape}")
                    errs[out_name] = float("inf")
                    continue
                d = np.abs(got - ref)
                err = float(np.max(d)) / scale if d.size else 0.0
                if not np.all(np.isfinite(got)):
                    err = float("inf")
                errs[out_name] = err
    else:  # timing case: finiteness and agreement of the two paths
        for k, v in stats.items():
            if k.endswith("_finite") and v != 1:
                problems.append(f"{k[:-7]} not finite")
        for k, v in stats.items():
            if k.startswith("paths_maxdiff_"):
                out = k[len("paths_maxdiff_"):]
                mag = max([1.0] + [stats.get(f"{out}_{p}_maxabs", 0.0) for p in ("tiled", "generic")])
                errs["tiled_vs_generic_" + out] = (v / mag) if v >= 0 else float("inf")
        if not errs and not stats:
            problems.append("no outputs")
    rec["outputs"] = errs
    rec["max_err"] = max(errs.values()) if errs else 0.0
    bad = [k for k, v in errs.items() if not v <= tol]
    if bad:
        problems.append("over tolerance: " + ", ".join(f"{k}={errs[k]:.3g}" for k in bad))
    rec["status"] = "pass" if not problems else "fail"
    rec["note"] = "; ".join(problems)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases")
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--extra", action="append", default=[], help="JSON file of another stage (merged)")
    ap.add_argument("--title", default="afgan-tf GPU kernel check")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.cases):
        sys.exit(f"compare: cases directory {a.cases} does not exist")
    names = sorted(d for d in os.listdir(a.cases) if os.path.exists(os.path.join(a.cases, d, "case.json")))
    recs = []
    ran = os.path.isdir(a.results) and any(os.path.exists(os.path.join(a.results, d, "result.json"))
                                           for d in os.listdir(a.results))
    for n in names:
        try:
            recs.append(compare_case(os.path.join(a.cases, n), a.results, harness_ran=ran))
        except Exception as e:  # one broken case must not stop the report
            recs.append(dict(case=n, status="fail", note=f"compare error: {type(e).__name__}: {e}", max_err=None,
                             outputs={}, time_ms={}, dtype="?", op="?", tol=None))
    extras = {}
    for path in a.extra:
        try:
            with open(path) as fh:
                obj = json.load(fh)
            extras[obj.get("stage", os.path.basename(path))] = obj
        except Exception as e:
            extras[os.path.basename(path)] = dict(status="fail", note=f"unreadable: {e}")
    torch_cases = extras.get("torch", {}).get("cases", {})
    for r in recs:  # PyTorch's reference composition on the same shapes, for scale
        if r["case"] in torch_cases:
            r["torch_ms"] = {k: v for k, v in torch_cases[r["case"]].items() if k.endswith("_ms")}
    npass = sum(r["status"] == "pass" for r in recs)
    nskip = sum(r["status"] == "skip" for r in recs)
    report = dict(title=a.title, tolerances=TOL, cases=recs, passed=npass, failed=len(recs) - npass - nskip, skipped=nskip,
                  stages=extras)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "report.json.tmp"), "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    os.replace(os.path.join(a.out, "report.json.tmp"), os.path.join(a.out, "report.json"))
    lines = [a.title, f"tolerance: max|out - expected| / max(1, max|expected|) <= {TOL['float32']} (float32), "
             f"{TOL['float16']} (float16)", ""]
    lines.append(f"{'case':<44} {'op':<15} {'dtype':<8} {'max err':>10}  {'result':<6} {'time (ms/call)'}")
    for r in recs:
        t = ", ".join(f"{k}={v:.4g}" for k, v in r["time_ms"].items())
        if r.get("torch_ms"):
            t += " | torch " + ", ".join(f"{k[:-3]}={v:.4g}" for k, v in r["torch_ms"].items())
        err = "-" if r["max_err"] is None else f"{r['max_err']:.3g}"
        lines.append(f"{r['case']:<44} {r['op'] or '?':<15} {r['dtype']:<8} {err:>10}  {r['status']:<6} {t}")
        if r["note"]:
            lines.append(f"    {r['note']}")
    lines.append("")
    lines.append(f"cases: {npass} passed, {len(recs) - npass - nskip} failed, {nskip} skipped")
    for k, v in extras.items():
        lines.append(f"stage {k}: {v.get('status', '?')} {v.get('summary', v.get('note', ''))}")
    with open(os.path.join(a.out, "report.txt.tmp"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(os.path.join(a.out, "report.txt.tmp"), os.path.join(a.out, "report.txt"))
    print("\n".join(lines[-1 - len(extras):]))
    return 0 if npass + nskip == len(recs) else 1


if __name__ == "__main__":
    sys.exit(main())
