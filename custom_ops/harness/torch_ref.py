"""PyTorch's equivalent of each case's op (the reference composition, no fused kernel), for scale.

    python custom_ops/harness/torch_ref.py CASES_DIR OUT_JSON [--device cuda] [--budget-s 60] [--check]

upfirdn2d = zero-stuffing + padding (negative = crop) + a depthwise conv2d + striding; bias_act = add,
activation, gain, clamp; filtered_lrelu = bias_act -> upfirdn2d(fu, up) -> gain * leaky ReLU -> clamp ->
upfirdn2d(fd, down). Times (ms per call, CUDA-synchronised, mean of the case's "repeat" calls after a warm-up)
the forward and forward+backward of every case whose inputs are given or generated (torch.rand, same shapes)
until --budget-s is spent. With --check, cases with expected outputs are also compared (forward only,
tolerances as compare.py), which tests this composition itself (on the CPU in tests/test_gpu_harness.py).
Writes {"stage": "torch", "status", "summary", "device", "cases": {name: {forward_ms, fwd_bwd_ms, err}}}.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

ACTS = ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]


def upfirdn2d(torch, x, f, up, down, pad, flip, gain):
    """x [N, C, H, W]; f 1-D (separable) or 2-D [fh, fw]; pad (x0, x1, y0, y1)."""
    F = torch.nn.functional
    N, C, H, W = x.shape
    upx, upy = up
    if upx > 1 or upy > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(N, C, H * upy, W * upx)
    x = F.pad(x, [pad[0], pad[1], pad[2], pad[3]])
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    if not flip:
        f2 = f2.flip([0, 1])
    w = (f2 * gain).to(x.dtype)[None, None].repeat(C, 1, 1, 1)
    x = F.conv2d(x, w, groups=C)
    return x[:, :, ::down[1], ::down[0]]


def act_fn(torch, name, z, alpha):
    F = torch.nn.functional
    return {"linear": lambda: z, "relu": lambda: F.relu(z), "lrelu": lambda: F.leaky_relu(z, alpha),
            "tanh": lambda: torch.tanh(z), "sigmoid": lambda: torch.sigmoid(z), "elu": lambda: F.elu(z),
            "selu": lambda: F.selu(z), "softplus": lambda: F.softplus(z), "swish": lambda: z * torch.sigmoid(z)}[name]()


def _inputs(torch, case_dir, p, dev, dtype):
    def get(name):
        if "gen_" + name in p:
            return torch.rand(p["gen_" + name], device=dev, dtype=dtype) * 2 - 1
        path = os.path.join(case_dir, name + ".npy")
        if not os.path.exists(path):
            return None
        a = np.load(path)
        return torch.from_numpy(a.astype(np.float32)).to(dev, torch.float32 if name in ("f", "fu", "fd") else dtype)
    return get


def build(torch, case_dir, p, dev):
    """Returns (fn(x) -> y, x, dy) with NCHW tensors and the NHWC->NCHW transposes outside the timing."""
    dtype = torch.float16 if p.get("dtype") == "float16" else torch.float32
    get = _inputs(torch, case_dir, p, dev, dtype)
    nchw = lambda t: None if t is None else (t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t)
    x = nchw(get("x"))
    op = p["op"]
    if op == "upfirdn2d":
        f = get("f").float()
        fn = lambda x: upfirdn2d(torch, x, f, (p["upx"], p["upy"]), (p["downx"], p["downy"]),
                                 (p["px0"], p["px1"], p["py0"], p["py1"]), p["flip"], p["gain"])
    elif op == "bias_act":
        b = get("b")
        axis = p.get("axis", 1)
        act = ACTS[p["act"]]
        x = get("x")  # any rank, axis given in the case's layout

        def fn(x):
            z = x if b is None else x + b.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
            y = act_fn(torch, act, z, p["alpha"]) * p["gain"]
            return y.clamp(-p["clamp"], p["clamp"]) if p["clamp"] >= 0 else y
    else:
        fu, fd, b = get("fu").float(), get("fd").float(), get("b")
        up, down = (p["upx"], p["upy"]), (p["downx"], p["downy"])

        def fn(x):
            if b is not None:
                x = x + b.reshape(1, -1, 1, 1)
            x = upfirdn2d(torch, x, fu, up, (1, 1), (p["px0"], p["px1"], p["py0"], p["py1"]), p["flip"],
                          up[0] * up[1])
            x = torch.nn.functional.leaky_relu(x, p["slope"]) * p["gain"]
            if p["clamp"] >= 0:
                x = x.clamp(-p["clamp"], p["clamp"])
            return upfirdn2d(torch, x, fd, (1, 1), down, (0, 0, 0, 0), p["flip"], 1.0)
    return fn, x


def time_ms(torch, fn, repeat, dev):
    fn()
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / repeat


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases")
    ap.add_argument("out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--check", action="store_true", help="compare the forward with the expected outputs")
    ap.add_argument("--only-timing", action="store_true", help="only the timing cases (generated inputs)")
    a = ap.parse_args(argv)
    res = dict(stage="torch", status="fail", summary="", device=a.device, cases={})
    t_start = time.time()
    try:
        import torch
        if a.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("torch has no CUDA device")
        res["device"] = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu"
        if not a.device.startswith("cuda"):
            torch.set_num_threads(1)  # small cases: threads only contend
        names = sorted(d for d in os.listdir(a.cases) if os.path.exists(os.path.join(a.cases, d, "case.json")))
        done = bad = 0
        for n in names:
            if time.time() - t_start > a.budget_s:
                res["summary"] = f"budget of {a.budget_s:.0f} s spent after {done} cases; "
                break
            d = os.path.join(a.cases, n)
            with open(os.path.join(d, "case.json")) as fh:
                p = json.load(fh)
            timing = any(k.startswith("gen_") for k in p)
            if a.only_timing and not timing:
                continue
            rec = {}
            try:
                fn, x = build(torch, d, p, a.device)
                with torch.no_grad():
                    rec["forward_ms"] = time_ms(torch, lambda: fn(x), p.get("repeat", 3), a.device)
                xg = x.detach().clone().requires_grad_(True)
                y = fn(xg)
                dy = torch.ones_like(y)
                rec["fwd_bwd_ms"] = time_ms(torch, lambda: torch.autograd.grad(fn(xg), xg, dy)[0],
                                            p.get("repeat", 3), a.device)
                ef = os.path.join(d, "expected_y.npy")
                if a.check and os.path.exists(ef):
                    ref = np.load(ef)
                    with torch.no_grad():
                        got = fn(x).float()
                    got = got.permute(0, 2, 3, 1) if got.ndim == 4 and p["op"] != "bias_act" else got
                    got = got.cpu().numpy()
                    rec["err"] = float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
                    tol = 4e-3 if p.get("dtype") == "float16" else 2e-5
                    if not rec["err"] <= tol:
                        bad += 1
                        rec["note"] = f"forward differs from the expected output ({rec['err']:.3g} > {tol})"
            except Exception as e:  # one case must not stop the stage
                rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                bad += 1
            res["cases"][n] = rec
            done += 1
        res["status"] = "ok" if bad == 0 else "fail"
        res["summary"] += f"{done} cases timed on {res['device']}, {bad} with errors"
    except Exception as e:
        res["summary"] = f"not run: {type(e).__name__}: {e}"
        res["status"] = "skipped"
    with open(a.out + ".tmp", "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(a.out + ".tmp", a.out)
    print(f"torch_ref: {res['status']}: {res['summary']}")
    return 0 if res["status"] in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
