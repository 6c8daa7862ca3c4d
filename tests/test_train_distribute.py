"""tf.distribute: MirroredStrategy over 2 logical CPUs == default strategy; 2-process MultiWorkerMirroredStrategy.

Both run in subprocesses (logical devices and TF_CONFIG must be set before TensorFlow starts).
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STUBS = os.path.join(HERE, "test_train_stubs.py")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT]))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _values(out, key):
    return [l.split(None, 1)[1] for l in out.splitlines() if l.startswith(key + " ")]


def test_mirrored_two_cpus_equals_default():
    code = "import test_train_stubs as s; s.compare_strategies(steps=6, batch=8)"
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    maxdiff = float(_values(r.stdout, "MAXDIFF")[0])
    change = float(_values(r.stdout, "MAXCHANGE")[0])
    assert _values(r.stdout, "REPLICAS")[0] == "1 2"
    assert _values(r.stdout, "FIRSTBATCH")[0] == "8 8 True"     # the same global batch, sliced per replica
    pa, pb = map(float, _values(r.stdout, "P")[0].split())
    print(f"mirrored vs default: max |dw| = {maxdiff:.3g} (weights moved by up to {change:.3g}); p = {pa}, {pb}")
    assert change > 1e-2                 # training really moved the weights
    assert maxdiff < 1e-5                # measured 2e-7 (float summation order only)
    assert pa == pb and pa > 0           # ADA p from the real-logit signs of both replicas


def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_agree(tmp_path):
    """2 MultiWorkerMirroredStrategy workers (global batch 8) vs one process (default strategy, batch 8): the same
    first global batch (each worker holds its replica's rows), weights after 8 iterations within summation-order
    noise, the workers bit-identical, and no worker temp directory left behind."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    run_dir, single = str(tmp_path / "run"), str(tmp_path / "single")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, STUBS, run_dir, "multiworker", "1", "8", "--dump-first-batch"],
                                      env=_env(TF_CONFIG=tf_config, TMPDIR=str(tmp)), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
        assert p.returncode == 0, out[-3000:]
    r = subprocess.run([sys.executable, STUBS, single, "default", "1", "8", "--dump-first-batch"], env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    w0 = np.load(os.path.join(run_dir, "final-0.npz"))
    w1 = np.load(os.path.join(run_dir, "final-1.npz"))
    ws = np.load(os.path.join(single, "final-0.npz"))
    assert int(w0["__step"]) == int(w1["__step"]) == int(ws["__step"]) == 8
    assert int(w0["__nimg"]) == 64                     # global batch 8 = 2 workers x 4
    assert float(w0["__p"]) == float(w1["__p"]) == float(ws["__p"]) > 0
    maxdiff = max(float(np.abs(w0[k] - w1[k]).max()) for k in w0.files)
    assert maxdiff == 0.0, maxdiff
    first = np.concatenate([np.load(os.path.join(run_dir, f"first-batch-{i}.npy")) for i in range(2)], 0)
    np.testing.assert_array_equal(first, np.load(os.path.join(single, "first-batch-0.npy")))
    vs_single = max(float(np.abs(w0[k] - ws[k]).max()) for k in w0.files)
    change = max(float(np.abs(ws[k]).max()) for k in ws.files if not k.startswith("__"))
    print(f"multiworker vs one process after 8 iterations: max |dw| = {vs_single:.3g}")
    assert vs_single < 1e-5, vs_single               # float summation order only
    assert change > 0
    # only the chief wrote the run directory's checkpoints and logs; no worker temp directory remains
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", "checkpoint"))
    assert "2 replica(s)" in outs[0]
    assert not [n for n in os.listdir(tmp) if n.startswith("afgan-ckpt-worker-")], os.listdir(tmp)
