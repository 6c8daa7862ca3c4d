"""Interrupted runs end exactly like a straight run (deterministic mode, stand-in networks, subprocesses).

12 iterations of batch 8, a tick every 3 iterations (tick 0 closes after the first iteration, then steps 4, 7, 10,
12), a snapshot every 2 ticks, a checkpoint every tick. Straight run vs
* SIGTERM at step 1 (first iteration, closes tick 0), step 3 (middle of a tick), step 7 (closes a tick) and
  step 12 (the last iteration), resuming after each; then the final snapshot deleted and the finished run resumed;
* SIGKILL after tick 1's stats line (before its checkpoint), after step 7's iteration (before its tick's stats),
  and inside the write of checkpoint 10 (leaves ``ckpt-10_temp``), resuming after each.
Each ends with the same snapshots (names and every array), the same stats.jsonl lines (ticks, kimg, losses, p: no
duplicates, no gaps), the same final checkpoint (every tensor) and no ``*_temp`` folder.
"""
import os
import subprocess
import sys

import numpy as np

from helpers_train import assert_same_run, run_files

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STUBS = os.path.join(HERE, "test_train_stubs.py")
N = 12
COMMON = ["--snapshots", "--tick=0.024"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT]))
    env.pop("TF_CONFIG", None)
    return env


def _run(run_dir, *args, expect=0):
    r = subprocess.run([sys.executable, STUBS, run_dir, "default", "1", str(N), *COMMON, *args], env=_env(),
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == expect, (r.returncode, out[-3000:])
    assert "Traceback" not in out, out[-3000:]
    return r.stdout


def _straight(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("straight"))
    _run(d)
    return d


_STRAIGHT = {}


def straight_files(tmp_path_factory):
    if "files" not in _STRAIGHT:
        _STRAIGHT["files"] = run_files(_straight(tmp_path_factory))
    return _STRAIGHT["files"]


def test_sigterm_at_every_position_of_a_tick(tmp_path, tmp_path_factory):
    d = str(tmp_path / "run")
    out = _run(d, "--sigterm-at=1")
    assert "interrupted by SIGTERM" in out
    for k, nxt in ((1, 3), (3, 7), (7, 12)):
        out = _run(d, "--resume", f"--sigterm-at={nxt}")
        assert f"Resumed from checkpoint {os.path.join(d, 'checkpoints', f'ckpt-{k}')}: step {k}" in out, out[-2000:]
    assert "Training done" in out                 # SIGTERM in the last iteration: the run still ends normally
    ref = straight_files(tmp_path_factory)
    assert_same_run(ref, run_files(d))
    w = np.load(os.path.join(d, "final-0.npz"))
    assert int(w["__step"]) == N and float(w["__p"]) > 0
    # a finished run resumed writes what its end should have written (here: the deleted final snapshot)
    final = os.path.join(d, "network-snapshot-000000.npz")
    assert sorted(ref["snapshots"]) == ["network-snapshot-000000.npz", "network-snapshot-img000008.npz",
                                        "network-snapshot-img000056.npz", "network-snapshot-img000096.npz"]
    os.remove(final)
    out = _run(d, "--resume")
    assert "Wrote the final snapshot" in out and "Training done" in out
    assert_same_run(ref, run_files(d))


def test_sigkill_around_stats_and_during_checkpoint_write(tmp_path, tmp_path_factory):
    d = str(tmp_path / "run")
    _run(d, "--kill-at=stats:4", expect=-9)               # tick 1's stats line written, its checkpoint not
    assert os.path.exists(os.path.join(d, "checkpoints", "ckpt-1.index"))
    assert not os.path.exists(os.path.join(d, "checkpoints", "ckpt-4.index"))
    out = _run(d, "--resume", "--sigkill-at=7", expect=-9)  # iteration 7 done, tick 2's stats not yet written
    assert "Dropped 1 log line(s)" in out
    out = _run(d, "--resume", "--kill-in-ckpt=10", expect=-9)
    assert os.path.isdir(os.path.join(d, "checkpoints", "ckpt-10_temp"))
    out = _run(d, "--resume")
    assert "ckpt-10_temp (a checkpoint write that did not finish)" in out
    assert f"Resumed from checkpoint {os.path.join(d, 'checkpoints', 'ckpt-7')}" in out
    assert_same_run(straight_files(tmp_path_factory), run_files(d))


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
