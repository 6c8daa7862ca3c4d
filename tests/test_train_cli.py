"""tools/train.py: flag validation messages, presets, --flagfile and the dry run (subprocesses, no training)."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")


def _run(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, TRAIN, *args], env=env, capture_output=True, text=True, timeout=600,
                          cwd=cwd)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """An original-format folder dataset of 8 PNGs at 16x16."""
    import numpy as np
    import PIL.Image
    d = tmp_path_factory.mktemp("data") / "imgs"
    d.mkdir()
    rng = np.random.RandomState(0)
    for i in range(8):
        PIL.Image.fromarray(rng.randint(0, 255, [16, 16, 3], np.uint8)).save(d / f"{i:03d}.png")
    return str(d)


def test_dry_run_flagfile_and_presets(tmp_path, tiny_data):
    ff = tmp_path / "run.flags"
    ff.write_text(f"--data={tiny_data}\n--cfg=stylegan3-r\n--batch=8\n--gamma=2\n--mirror=1\n--batch-gpu=4\n"
                  f"--mbstd-group=2\n--cbase=2048\n--cmax=64\n--kimg=3\n--desc=ff\n")
    r = _run(f"--flagfile={ff}", f"--outdir={tmp_path / 'runs'}", "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    from afgan_tf.training.options import TrainConfig
    c = TrainConfig.from_json(json.loads(r.stdout[:r.stdout.rindex("}") + 1]))   # the training_options.json form
    assert c.cfg == "stylegan3-r" and c.mirror is True and c.batch_gpu == 4
    assert c.G_kwargs["channel_base"] == 4096 and c.G_kwargs["img_resolution"] == 16
    assert c.D_kwargs["epilogue_kwargs"]["mbstd_group_size"] == 2
    assert c.loss_kwargs["blur_init_sigma"] == 10 and c.total_kimg == 3
    assert c.dataset_name == "imgs" and c.num_accumulation == 2
    assert "Dry run" in r.stdout and not (tmp_path / "runs").exists()     # nothing written


def _run_inprocess(args, capsys):
    """tools/train.py's run() on a private FlagValues (default strategy; no subprocess)."""
    import importlib.util
    from absl import flags as absl_flags
    from flags import train_flags
    spec = importlib.util.spec_from_file_location("afgan_train_tool", TRAIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fv = absl_flags.FlagValues()
    train_flags.define_flags(fv)
    fv(["train.py"] + list(args))
    rc = mod.run(fv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("args, message", [
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--batch-gpu=2"],
     "--batch-gpu=2 is smaller than --mbstd-group=4"),
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--batch-gpu=3"], "--batch-gpu=3 must divide"),
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--gpus=2"], "--gpus=2 but the strategy"),
    (["--cfg=stylegan3-t", "--batch=8"], "--gamma is required"),
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--data=/nonexistent/dataset"], "--data: "),
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--metrics=fid1k"], "--metrics: unknown metric(s) fid1k"),
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--resume=/nonexistent/run"], "--resume=/nonexistent/run"),
    (["--cfg=stylegan3-t", "--batch=8", "--gamma=1", "--cond"], "--cond: the dataset"),
])
def test_validation_messages(args, message, tiny_data, tmp_path, capsys):
    if not any(a.startswith("--data") for a in args):
        args = args + [f"--data={tiny_data}"]
    rc, out, err = _run_inprocess(args + [f"--outdir={tmp_path}", "-n"], capsys)
    assert rc == 2, out + err
    assert message in err, err
    assert not any(p.name != "run.flags" for p in tmp_path.iterdir())    # nothing written


def test_replicas_must_divide_batch(tmp_path, tiny_data):
    r = _run("--cfg=stylegan3-t", "--batch=6", "--gamma=1", "--mbstd-group=1", "--strategy=mirrored",
             "--cpu-replicas=4", f"--data={tiny_data}", f"--outdir={tmp_path}", "-n")
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    assert "--batch=6 is not divisible by the number of replicas (4)" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_cfg_is_a_flag_error():
    from absl import flags as absl_flags
    from flags import train_flags
    fv = absl_flags.FlagValues()
    train_flags.define_flags(fv)
    with pytest.raises(absl_flags.IllegalFlagValueError, match="stylegan3-t"):
        fv(["train.py", "--cfg=stylegan4"])


@pytest.mark.slow
def test_real_networks_end_to_end(tmp_path, tiny_data):
    """tools/train.py with the real StyleGAN3-T and D (tiny channels) on a 16x16 folder dataset: run files, then an
    in-place continuation and a weights-only resume from the snapshot. Several minutes (tracing)."""
    import glob
    common = ["--cfg=stylegan3-t", "--batch=4", "--gamma=0.1", "--cbase=256", "--cmax=16", "--mbstd-group=2",
              "--tick=0.004", "--snap=1", f"--data={tiny_data}", "--metrics=none"]
    r = _run(*common, "--kimg=0.008", f"--outdir={tmp_path / 'runs'}", "--desc=e2e")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "00000-stylegan3-t-imgs-gpus1-batch4-gamma0.1-e2e"))
    for f in ("training_options.json", "log.txt", "stats.jsonl", "reals.png", "fakes_init.png", "fakes000000.png",
              "network-snapshot-000000.npz", "checkpoints/checkpoint"):
        assert os.path.exists(os.path.join(run_dir, f)), f
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "stats.jsonl"))]
    assert recs[-1]["Progress/kimg"]["mean"] == pytest.approx(0.008)
    assert "tick 0" in open(os.path.join(run_dir, "log.txt")).read()
    r2 = _run(f"--outdir={run_dir}", "--kimg=0.012")
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    assert "Resumed from checkpoint" in r2.stdout and "step 2, kimg 0.008" in r2.stdout
    r3 = _run(*common, "--kimg=0.004", f"--outdir={tmp_path / 'w'}",
              f"--resume={os.path.join(run_dir, 'network-snapshot-000000.npz')}")
    assert r3.returncode == 0, (r3.stdout + r3.stderr)[-3000:]
    assert "Loaded weights of G, D, G_ema" in r3.stdout


# -- bad input: one line, the documented exit status, nothing left behind (issue: hostile / careless input) ----------

@pytest.mark.parametrize("flag, words", [("--gamma=-1", "gamma"), ("--cfg=stylegan4", "stylegan4"),
                                         ("--no-such-flag=1", "no-such-flag")])
def test_bad_flags_exit_2_in_one_line(flag, words, tmp_path):
    r = _run("--cfg=stylegan3-t", "--batch=8", "--gamma=1", flag, f"--outdir={tmp_path}", "-n")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [l for l in r.stderr.splitlines() if l.strip() and "cuInit" not in l and "cuda" not in l.lower()
             and not l.startswith(("WARNING: All log", "I0000", "E0000", "W0000"))]
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("Error:"), lines
    assert "Traceback" not in r.stderr


def _numbered_dirs(d):
    return [n for n in os.listdir(d) if n[:5].isdigit()] if os.path.isdir(d) else []


@pytest.mark.parametrize("content", [b"\x80\x04\x95garbage that is not a pickle", b"",
                                     b"PK\x03\x04 not really a zip"])
def test_corrupt_resume_pickle_is_one_line_exit_1(content, tmp_path, tiny_data, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(content)
    out = tmp_path / "runs"
    rc, o, err = _run_inprocess(["--cfg=stylegan3-t", "--batch=4", "--gamma=1", "--mbstd-group=2", "--cbase=256",
                                 "--cmax=16", f"--data={tiny_data}", f"--outdir={out}", f"--resume={bad}"], capsys)
    assert rc == 1, o + err
    assert "Traceback" not in err and f"--resume={bad}" in err, err
    assert len([l for l in err.splitlines() if l.startswith("Error:")]) == 1, err
    assert _numbered_dirs(out) == []                         # no numbered run directory left behind


@pytest.mark.parametrize("labels, words", [([["000.png", 1]], "no label for image '001.png'"),
                                           ([1, 2, 3], "list of [relative path, label] pairs"),
                                           ({"000.png": 1}, "list of [relative path, label] pairs")])
def test_bad_dataset_labels_are_one_line_exit_2(labels, words, tmp_path, tiny_data, capsys):
    import shutil
    data = tmp_path / "labelled"
    shutil.copytree(tiny_data, data)
    (data / "dataset.json").write_text(json.dumps({"labels": labels}))
    out = tmp_path / "runs"
    rc, o, err = _run_inprocess(["--cfg=stylegan3-t", "--batch=4", "--gamma=1", "--mbstd-group=2", "--cond=1",
                                 f"--data={data}", f"--outdir={out}"], capsys)
    assert rc == 2, o + err
    lines = [l for l in err.splitlines() if l.startswith("Error:")]
    assert len(lines) == 1 and words in lines[0] and "dataset.json" in lines[0] and "Traceback" not in err, err
    assert _numbered_dirs(out) == []


def test_outdir_under_a_regular_file_is_one_line(tmp_path, tiny_data, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    for outdir in (f, f / "runs"):
        rc, o, err = _run_inprocess(["--cfg=stylegan3-t", "--batch=4", "--gamma=1", "--mbstd-group=2",
                                     f"--data={tiny_data}", f"--outdir={outdir}"], capsys)
        assert rc == 2, o + err
        assert f"--outdir={outdir}" in err and "Traceback" not in err, err
    assert f.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_outdir_is_one_line(tmp_path, tiny_data, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, o, err = _run_inprocess(["--cfg=stylegan3-t", "--batch=4", "--gamma=1", "--mbstd-group=2",
                                     f"--data={tiny_data}", f"--outdir={ro / 'runs'}"], capsys)
    finally:
        ro.chmod(0o700)
    assert rc == 2 and "--outdir=" in err and "Traceback" not in err, err


def test_failed_start_removes_the_numbered_run_directory(tmp_path, tiny_data, capsys, monkeypatch):
    """A start that fails after the run directory was made (here: building the networks) removes it again."""
    from afgan_tf.training import trainer as trainer_mod

    def boom(self):
        raise ValueError("no networks today")
    monkeypatch.setattr(trainer_mod.Trainer, "build", boom)
    out = tmp_path / "runs"
    rc, o, err = _run_inprocess(["--cfg=stylegan3-t", "--batch=4", "--gamma=1", "--mbstd-group=2",
                                 f"--data={tiny_data}", f"--outdir={out}"], capsys)
    assert rc == 1 and "building the networks: no networks today" in err, o + err
    assert "Run directory:" in o                              # it had been created ...
    assert _numbered_dirs(out) == []                          # ... and is gone
