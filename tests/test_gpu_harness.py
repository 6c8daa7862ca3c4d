"""The standalone GPU check (issue 17), proven without a GPU.

tools/make_gpu_cases.py writes the CI subset (reference-op expected outputs); the harness's host build (the
same kernel item / phase functions as the CUDA build, in loops) runs every case through
scripts/gpu_check.sh --cpu and the numpy-only comparison passes them all; the comparison fails on a wrong,
missing or non-finite output; PyTorch's reference composition (timed on the GPU for scale) matches the
expected outputs on the CPU; the CUDA build of the harness compiles with nvcc where nvcc exists.
"""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

import helpers_gpu as hg


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_gpu_cases", os.path.join(hg.ROOT, "tools", "make_gpu_cases.py"))
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    d = str(tmp_path_factory.mktemp("gpu") / "cases")
    mk.main(["--out", d, "--small"])
    return d


@pytest.fixture(scope="module")
def cpu_check(cases, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gpu_out"))
    work = str(tmp_path_factory.mktemp("gpu_work"))
    env = dict(os.environ, AFGAN_GPU_CHECK_WORK=work, PYTHON=hg.python())
    r = hg.run(["bash", os.path.join(hg.ROOT, "scripts", "gpu_check.sh"), "--cpu", cases, out], env=env)
    return r, out, work


def test_make_gpu_cases_small_subset(cases):
    names = sorted(os.listdir(cases))
    ops = {}
    total = 0
    for n in names:
        with open(os.path.join(cases, n, "case.json")) as fh:
            p = json.load(fh)
        ops.setdefault(p["op"], []).append(n)
        files = os.listdir(os.path.join(cases, n))
        total += sum(os.path.getsize(os.path.join(cases, n, f)) for f in files)
        assert "expected_y.npy" in files and "expected_dx.npy" in files, n
        x = np.load(os.path.join(cases, n, "x.npy"))
        assert x.dtype == (np.float16 if p["dtype"] == "float16" else np.float32), n
    assert set(ops) == {"upfirdn2d", "bias_act", "filtered_lrelu"}
    assert any(n.startswith("sg3t") for n in names) and any(n.startswith("sg3r") for n in names)
    assert any(n.startswith("odd_") for n in names)
    assert total < 25 * 2 ** 20


def test_harness_cpu_build_passes_every_case(cpu_check, cases):
    r, out, _ = cpu_check
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(out, "report.json")) as fh:
        rep = json.load(fh)
    assert rep["failed"] == 0 and rep["skipped"] == 0
    assert rep["passed"] == len(os.listdir(cases)) > 10
    for c in rep["cases"]:
        assert c["status"] == "pass" and c["max_err"] <= c["tol"], c
        if c["op"] == "filtered_lrelu":  # both paths, all three kernels of each, were compared
            assert {f"{o}_{p}" for o in ("y", "dx", "ju") for p in ("tiled", "generic")} <= set(c["outputs"]), c
    assert "passed" in open(os.path.join(out, "report.txt")).read()


def test_compare_fails_on_wrong_missing_or_nan_outputs(cpu_check, cases, tmp_path):
    _, _, work = cpu_check
    res = str(tmp_path / "results")
    shutil.copytree(os.path.join(work, "results"), res)
    fl = sorted(n for n in os.listdir(cases) if n.startswith("sg3t"))[0]
    ba = "odd_act_tanh"
    up = sorted(n for n in os.listdir(cases) if n.startswith("d"))[0]
    y = np.load(os.path.join(res, fl, "dx_tiled.npy"))
    y.flat[y.size // 2] += np.float32(1e-3) * max(1.0, float(np.abs(y).max()))  # one wrong element
    np.save(os.path.join(res, fl, "dx_tiled.npy"), y)
    d2 = np.load(os.path.join(res, ba, "d2x.npy"))
    d2.flat[0] = np.nan
    np.save(os.path.join(res, ba, "d2x.npy"), d2)
    os.remove(os.path.join(res, up, "dx.npy"))
    out = str(tmp_path / "rep")
    r = hg.run([hg.python(), os.path.join(hg.OPS, "harness", "compare.py"), cases, res, out])
    assert r.returncode == 1
    rep = {c["case"]: c for c in json.load(open(os.path.join(out, "report.json")))["cases"]}
    assert rep[fl]["status"] == "fail" and "dx_tiled" in rep[fl]["note"]
    assert rep[ba]["status"] == "fail" and rep[up]["status"] == "fail" and "missing" in rep[up]["note"]
    assert sum(c["status"] == "fail" for c in rep.values()) == 3


def test_torch_reference_composition_matches_expected(cases, tmp_path):
    pytest.importorskip("torch")
    out = str(tmp_path / "torch.json")
    r = hg.run([hg.python(), os.path.join(hg.OPS, "harness", "torch_ref.py"), cases, out, "--device", "cpu", "--check"])
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.load(open(out))
    assert res["status"] == "ok" and len(res["cases"]) == len(os.listdir(cases))
    assert all("err" in v for v in res["cases"].values())


def test_harness_cuda_build_compiles():
    nvcc = hg.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"afgan_harness_{os.getpid()}")
    r = hg.run([nvcc, "-std=c++17", "--expt-relaxed-constexpr", "-O1", "-gencode", "arch=compute_80,code=sm_80",
                "-I" + hg.OPS, "-x", "cu", *hg.HARNESS_SRCS, "-o", out])
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        assert os.path.getsize(out) > 0
    finally:
        if os.path.exists(out):
            os.remove(out)
