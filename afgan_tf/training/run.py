"""The run around the training iterations: ticks, stats.jsonl, TensorBoard, image grids, snapshots, metrics,
checkpoints, resume and SIGTERM/SIGINT (one iteration is ``trainer.Trainer.train_iteration``).

Order of the work, so that an interruption at any point ends like a straight run:
  1. iteration; ``done`` when ``cur_nimg >= total``; a stop request (SIGTERM/SIGINT, agreed by all workers) is
     noted but the iteration's tick-end work still happens;
  2. tick end (after the first iteration, every ``kimg_per_tick``, and at ``done``): stats line, image grid /
     network snapshot / metrics when due (always at ``done``), then ``cur_tick += 1``;
  3. checkpoint when due (every ``ckpt_ticks`` ticks, at snapshots, at ``done``, on a stop request). The checkpoint
     also holds the statistics of the open tick, so a tick interrupted in the middle reports the same means.
  4. on resume (:func:`prepare_run_dir`): stale ``*_temp`` checkpoint folders are removed and ``stats.jsonl`` /
     ``metric-*.jsonl`` are cut back to what the restored checkpoint covers (lines a killed process wrote after
     its last checkpoint are written again by the resumed run, never twice); resuming a finished run runs a tick
     end that is still open and writes a missing final snapshot.
Non-chief workers of a multi-worker run write their (required) checkpoint copies into a private temp directory that
is removed when the run ends, also on an error or a stop request.
"""
import glob
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from afgan_tf.training import stats as stats_lib
from afgan_tf.training.checkpoint import CKPT_DIR, ResumeError, TrainCheckpoint, verify_checkpoint
from afgan_tf.training.trainer import NonFiniteLossError
from afgan_tf.utils import write_atomic

# Collector entries carried over an interruption in the checkpoint (timings and resources are per process).
_CARRIED = ("Loss/", "Progress/loss_scale/", "Progress/skipped_steps/")


class StopRequest:
    """SIGTERM/SIGINT -> finish the current iteration and its tick-end work, save a checkpoint, exit."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum

    def restore(self):
        for sig, h in self._old.items():
            signal.signal(sig, h)


def remove_stale_temp(ckpt_dir):
    """Remove ``*_temp`` folders (a checkpoint write that was killed) and our atomic writers' temp files."""
    removed = []
    for p in glob.glob(os.path.join(glob.escape(ckpt_dir), "*_temp")):
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _cut_jsonl(path, keep):
    """Keep the parseable lines of a JSON-lines file for which ``keep(record)`` is true (atomic rewrite)."""
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:        # a line cut by a kill
                dropped += 1
                continue
            if keep(rec):
                kept.append(json.dumps(rec) + "\n")
            else:
                dropped += 1
    if dropped:
        write_atomic(path, "".join(kept))
    return dropped


def prepare_run_dir(run_dir, cur_tick, cur_nimg):
    """Cut ``stats.jsonl`` to ticks ``< cur_tick`` and ``metric-*.jsonl`` to snapshots at ``<= cur_nimg`` (the state
    of the checkpoint being resumed); returns the number of lines dropped."""
    n = _cut_jsonl(os.path.join(run_dir, "stats.jsonl"),
                   lambda r: r.get("Progress/tick", {}).get("mean", math.inf) < cur_tick)
    for p in glob.glob(os.path.join(glob.escape(run_dir), "metric-*.jsonl")):
        n += _cut_jsonl(p, lambda r: round(r.get("snapshot_kimg", math.inf) * 1000) <= cur_nimg)
    return n


def run_training(trainer, run_dir, *, resume=None, is_chief=True, ckpt_ticks=1, ckpt_keep=3, max_grid_images=64,
                 snapshot_fn=None, metrics_fn=None, real_grid=None, tensorboard=True, stop_at_step=None,
                 progress=None, event_hook=None):
    """Train until ``total_kimg``; returns a status dict (``done``, ``interrupted``, ``error``, ``step``, ``kimg``,
    ``checkpoint``, ``augment_p``).

    Args:
      trainer: a built :class:`~afgan_tf.training.trainer.Trainer`.
      run_dir: the run directory (created by the caller with training_options.json).
      resume: ``checkpoint.ResumeSpec`` or None.
      is_chief: only the chief writes logs, grids, snapshots and the run's checkpoints.
      ckpt_ticks: save a checkpoint every this many ticks (and at snapshots, at the end and on a stop request).
      snapshot_fn: ``(path, trainer) -> None`` writes ``network-snapshot-*.npz`` (None: skipped).
      metrics_fn: ``(name, trainer, run_dir) -> dict`` for each name in ``config.metrics``.
      real_grid: ``(images, labels)`` of the real grid for ``reals.png`` (None: skipped).
      stop_at_step: act as if a stop request arrived in the iteration that reaches this global step.
      progress: draw a progress bar (default: when stdout is a terminal).
      event_hook: ``(event, trainer) -> None`` at 'stats' (after a tick's stats line), 'checkpoint' (before a
        save) and 'saved' (after it) — for tests that kill the process at these points.
    """
    o = trainer.config
    log = trainer.log
    hook = event_hook or (lambda event, tr: None)
    if progress is None:
        progress = sys.stdout.isatty()
    ckpt_dir = os.path.join(run_dir, CKPT_DIR) if is_chief else tempfile.mkdtemp(prefix="afgan-ckpt-worker-")
    writer = None
    stop = StopRequest().install()
    status = dict(done=False, interrupted=None, step=None, kimg=None, error=None, checkpoint=None)
    try:
        for p in remove_stale_temp(ckpt_dir):
            log(f"Removed {p} (a checkpoint write that did not finish)")
        carried = tf.Variable("{}", dtype=tf.string, trainable=False, name="tick_stats")
        ckpt = TrainCheckpoint(ckpt_dir, max_to_keep=ckpt_keep, tick_stats=carried, **trainer.checkpoint_objects())
        collector = stats_lib.Collector()
        if resume is not None and resume.kind in ("full", "inplace") and resume.path:
            ckpt.restore(resume.path)
            trainer.pull_state()
            collector.load(json.loads(carried.numpy().decode()))
            log(f"Resumed from checkpoint {resume.path}: step {trainer.step}, kimg {trainer.cur_nimg / 1000:.3f}, "
                f"augment p {trainer.augment_p:.4f}")
        elif resume is not None and resume.kind == "weights":
            import pickle
            try:
                copied = trainer.load_weights(resume.path, getattr(resume, "networks", None))
            except (ValueError, KeyError, OSError, pickle.UnpicklingError, EOFError) as e:
                raise ResumeError(f"--resume={resume.path}: {e}") from e
            log(f"Loaded weights of {', '.join(copied)} from {resume.path} (optimisers, kimg and p start fresh)")
        if is_chief and trainer.step > 0:
            n = prepare_run_dir(run_dir, trainer.cur_tick, trainer.cur_nimg)
            if n:
                log(f"Dropped {n} log line(s) written after checkpoint {resume.path} (they are written again)")
        writer = stats_lib.StatsWriter(run_dir, tensorboard=tensorboard) if is_chief else None
        run = _Run(trainer, run_dir, is_chief, writer, collector, snapshot_fn, metrics_fn, real_grid,
                   max_grid_images, hook)

        def save_ckpt(reason):
            trainer.push_state()
            carried.assign(json.dumps(collector.state(_CARRIED)))
            hook("checkpoint", trainer)
            path = ckpt.save(trainer.step)
            if is_chief:
                verify_checkpoint(path)
                log(f"Saved checkpoint {path} ({reason})")
            hook("saved", trainer)

        total_nimg = int(round(o.total_kimg * 1000))
        tick_nimg = o.kimg_per_tick * 1000
        done = trainer.cur_nimg >= total_nimg
        if is_chief and trainer.step == 0:
            run.initial_grids()
        if done and trainer.cur_nimg > trainer.tick_start_nimg:      # finished, but its last tick is still open
            run.tick_end(done=True, total_nimg=total_nimg)
            save_ckpt("end of training")
        elif done and is_chief:
            run.final_snapshot_if_missing()
        if not done:
            trainer.make_iterator()
            log(f"Training for {o.total_kimg:g} kimg (batch {o.batch_size}, "
                f"{trainer.strategy.num_replicas_in_sync} replica(s), batch_gpu {o.batch_gpu}) ...")
        any_stop = _make_agree_fn(trainer.strategy)
        timings = run.timings
        while not done:
            trainer.train_iteration(collector, timings)
            done = trainer.cur_nimg >= total_nimg
            if progress and is_chief:
                bar = stats_lib.progress_bar(trainer.cur_nimg - trainer.tick_start_nimg, tick_nimg,
                                             prefix=f"tick {trainer.cur_tick} ")
                sys.__stdout__.write("\r" + bar)
                sys.__stdout__.flush()
            stopping = any_stop(stop.signum is not None or (stop_at_step is not None and trainer.step >= stop_at_step))
            if done or trainer.cur_tick == 0 or trainer.cur_nimg >= trainer.tick_start_nimg + tick_nimg:
                if progress and is_chief:
                    sys.__stdout__.write("\r" + " " * 60 + "\r")
                snap = run.tick_end(done, total_nimg)
                if done or snap or stopping or trainer.cur_tick % ckpt_ticks == 0:
                    save_ckpt("end of training" if done else f"tick {trainer.cur_tick - 1}" if not stopping else
                              f"interrupted by {_stop_name(stop)}")
                run.tick_started()
            elif stopping:
                save_ckpt(f"interrupted by {_stop_name(stop)}")
            if stopping and not done:
                status["interrupted"] = _stop_name(stop)
                break
        status["done"] = done
    except NonFiniteLossError as e:
        status["error"] = str(e)
        log(f"ERROR: {e}. The last good checkpoint is kept: {ckpt.latest or '(none written yet)'}")
    finally:
        stop.restore()
        if writer is not None:
            writer.close()
        if not is_chief:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    status.update(step=trainer.step, kimg=trainer.cur_nimg / 1000, checkpoint=ckpt.latest if is_chief else None,
                  augment_p=trainer.augment_p)
    if status["done"] and is_chief:
        log(f"Training done: {status['kimg']:.3f} kimg, {trainer.step} iterations, last checkpoint {ckpt.latest}")
    return status


def _stop_name(stop):
    return signal.Signals(stop.signum).name if stop.signum else "stop_at_step"


class _Run:
    """The chief's tick-end work: stats line, image grids, snapshots, metrics (and the tick's timers)."""

    def __init__(self, trainer, run_dir, is_chief, writer, collector, snapshot_fn, metrics_fn, real_grid,
                 max_grid_images, hook):
        self.t, self.run_dir, self.is_chief, self.writer = trainer, run_dir, is_chief, writer
        self.collector, self.snapshot_fn, self.metrics_fn, self.real_grid = collector, snapshot_fn, metrics_fn, \
            real_grid
        self.hook = hook
        o = trainer.config
        self.gw, self.gh = stats_lib.grid_size(o.G_kwargs["img_resolution"], max_images=max_grid_images)
        self.grid_z = np.random.RandomState(o.random_seed + 123).randn(self.gw * self.gh,
                                                                          trainer.G.z_dim).astype(np.float32)
        self.grid_c = None
        if trainer.c_dim and real_grid is not None and real_grid[1] is not None:
            self.grid_c = np.resize(np.asarray(real_grid[1], np.float32), [self.gw * self.gh, trainer.c_dim])
        self.timings = {}
        self.start_time = self.tick_start_time = time.time()
        self.start_nimg = trainer.cur_nimg
        self.maintenance_time = 0.0

    def _grid(self, name, kimg):
        grid = stats_lib.save_image_grid(self.t.generate_grid(self.grid_z, self.grid_c),
                                         os.path.join(self.run_dir, name), self.gw, self.gh)
        self.writer.image("Images/fakes", grid, kimg)

    def initial_grids(self):
        if self.real_grid is not None:
            imgs = np.asarray(self.real_grid[0])
            imgs = np.resize(imgs, [self.gw * self.gh] + list(imgs.shape[1:]))
            stats_lib.save_image_grid(imgs, os.path.join(self.run_dir, "reals.png"), self.gw, self.gh,
                                      drange=(0, 255) if imgs.dtype == np.uint8 else (-1, 1))
        self._grid("fakes_init.png", 0)

    def _snapshot_path(self):
        return os.path.join(self.run_dir, f"network-snapshot-{self.t.cur_nimg // 1000:06d}.npz")

    def final_snapshot_if_missing(self):
        """Resume of a finished run: write the final snapshot (and grid) if the end did not get to it."""
        if self.snapshot_fn is not None and not os.path.exists(self._snapshot_path()):
            self._grid(f"fakes{self.t.cur_nimg // 1000:06d}.png", self.t.cur_nimg / 1000)
            self.snapshot_fn(self._snapshot_path(), self.t)
            self.t.log(f"Wrote the final snapshot {self._snapshot_path()}")

    def tick_end(self, done, total_nimg):
        """Stats line, grids / snapshot / metrics when due; closes the tick. Returns whether it was a snapshot."""
        t, o, c = self.t, self.t.config, self.collector
        now = time.time()
        tick_sec = now - self.tick_start_time
        tick_kimg = (t.cur_nimg - t.tick_start_nimg) / 1000
        total_sec = now - self.start_time
        sec_per_kimg = tick_sec / max(tick_kimg, 1e-8)
        proc_kimg = (t.cur_nimg - self.start_nimg) / 1000
        eta = (total_nimg - t.cur_nimg) / 1000 * (total_sec / max(proc_kimg, 1e-8)) if proc_kimg else -1
        cpu_gb, _ = stats_lib.memory_gb()
        gpu_gb = stats_lib.gpu_memory_gb()
        p = t.augment_p
        if self.is_chief:
            t.log(stats_lib.tick_line(t.cur_tick, t.cur_nimg / 1000, total_sec, tick_sec, sec_per_kimg,
                                      tick_kimg * 1000 / max(tick_sec, 1e-8), self.maintenance_time, cpu_gb, gpu_gb,
                                      p, eta))
        for name in ("Gmain", "Greg", "Dmain", "Dreg", "ema"):
            if name in self.timings:
                c.set(f"Timing/{name}", self.timings[name])
        for k, v in (("Progress/tick", t.cur_tick), ("Progress/kimg", t.cur_nimg / 1000), ("Progress/augment", p),
                     ("Timing/total_sec", total_sec), ("Timing/sec_per_tick", tick_sec),
                     ("Timing/sec_per_kimg", sec_per_kimg), ("Timing/maintenance_sec", self.maintenance_time),
                     ("Timing/total_hours", total_sec / 3600), ("Timing/total_days", total_sec / 86400),
                     ("Resources/cpu_mem_gb", cpu_gb)):
            c.set(k, v)
        if not math.isnan(gpu_gb):
            c.set("Resources/peak_gpu_mem_gb", gpu_gb)
        self.maint_start = time.time()
        kimg = t.cur_nimg / 1000
        snap = done or t.cur_tick % o.network_snapshot_ticks == 0
        if self.is_chief:
            self.writer.write(c.as_dict(), kimg)
            self.hook("stats", t)
            if done or t.cur_tick % o.image_snapshot_ticks == 0:
                self._grid(f"fakes{t.cur_nimg // 1000:06d}.png", kimg)
            if snap and self.snapshot_fn is not None:
                self.snapshot_fn(self._snapshot_path(), t)
            if snap and o.metrics:  # metrics are not collective: the chief computes them on G_ema
                if self.metrics_fn is None:
                    raise RuntimeError("--metrics given but no metric implementation is available")
                for name in o.metrics:
                    result = self.metrics_fn(name, t, self.run_dir)
                    if result is not None:
                        with open(os.path.join(self.run_dir, f"metric-{name}.jsonl"), "a") as fh:
                            fh.write(json.dumps(dict(result, snapshot_kimg=kimg)) + "\n")
                        for k, v in (result.get("results") or {}).items():
                            self.writer.scalar(f"Metrics/{k}", v, kimg)
        c.reset()
        self.timings.clear()
        t.cur_tick += 1
        t.tick_start_nimg = t.cur_nimg
        return snap

    def tick_started(self):
        self.maintenance_time = time.time() - self.maint_start
        self.tick_start_time = time.time()


def _make_agree_fn(strategy):
    """``flag -> any(flag over all workers)``; a collective only for multi-worker runs."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return lambda flag: bool(flag)

    @tf.function
    def agree(flag):
        per_replica = strategy.run(lambda f: tf.identity(f) * 1.0, args=(flag,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda flag: bool(agree(tf.constant(1.0 if flag else 0.0)).numpy() > 0)
