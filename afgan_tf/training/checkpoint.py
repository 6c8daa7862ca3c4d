"""Training checkpoints: the full training state with ``tf.train.CheckpointManager``.

A checkpoint holds G, D, G_ema, both optimisers (Adam slots and iteration counters), the augmentation pipe
(its ``p``), and the loop state variables (step, cur_nimg, tick, tick_start_nimg, ADA accumulators, pl_mean,
seed). The random numbers of the loop are stateless functions of ``(seed, step, phase)``, so ``(seed, step)``
is the complete RNG state; the data order is a function of ``(seed, step)`` as well (see ``trainer.py`` and
``distribute.per_replica_slices``).

Atomicity: TensorFlow writes the checkpoint's data and index files under temporary names and renames them when
complete, and ``CheckpointManager`` then updates the ``checkpoint`` state file with an atomic write. A process
killed during a save therefore leaves the state file pointing at the previous, complete checkpoint.
:func:`verify_checkpoint` reads a checkpoint's index back to check it is loadable.

The resume order (which source a run starts from) is decided in one place, ``session.prepare``.
"""
import os

import tensorflow as tf

CKPT_DIR = "checkpoints"


class ResumeError(ValueError):
    """The resume source cannot be loaded into the current run (message names the file and the problem)."""


class ResumeSpec:
    """What to resume from: ``kind`` in {'fresh', 'full', 'weights', 'inplace'}."""

    def __init__(self, kind, path=None, run_dir=None):
        self.kind, self.path, self.run_dir = kind, path, run_dir

    def __repr__(self):
        return f"ResumeSpec(kind={self.kind!r}, path={self.path!r}, run_dir={self.run_dir!r})"


def latest_checkpoint(path):
    """Latest checkpoint prefix for a run dir, a checkpoints dir or a prefix; ``None`` if there is none."""
    if path is None:
        return None
    if os.path.isdir(path):
        for d in (os.path.join(path, CKPT_DIR), path):
            if os.path.isdir(d):
                p = tf.train.latest_checkpoint(d)
                if p:
                    return p
        return None
    if os.path.exists(path + ".index"):
        return path
    return None


def verify_checkpoint(prefix, expected_keys=()):
    """Read ``prefix`` back; raise ``ValueError`` naming the file if it is unreadable or lacks a key."""
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # the TF error text names the file
        raise ValueError(f"checkpoint {prefix} is not readable: {e}") from None
    names = set(reader.get_variable_to_shape_map())
    missing = [k for k in expected_keys if not any(n.startswith(k) for n in names)]
    if missing:
        raise ValueError(f"checkpoint {prefix} lacks entries {missing}")
    return names


class TrainCheckpoint:
    """``tf.train.Checkpoint`` of the training objects + a ``CheckpointManager`` in ``<run_dir>/checkpoints``.

    Args:
      directory: where the checkpoint files go (for non-chief workers of a multi-worker run, a private temp dir).
      max_to_keep: number of checkpoints kept.
      **objects: trackables (Keras models, optimisers, tf.Variables, ...).
    """

    def __init__(self, directory, max_to_keep=3, **objects):
        self.objects = {k: v for k, v in objects.items() if v is not None}
        self.ckpt = tf.train.Checkpoint(**self.objects)
        self.directory = directory
        self.manager = tf.train.CheckpointManager(self.ckpt, directory, max_to_keep=max_to_keep,
                                                  checkpoint_name="ckpt")

    def save(self, step):
        """Save (atomic); returns the prefix written."""
        return self.manager.save(checkpoint_number=int(step))

    def restore(self, prefix):
        """Restore everything from ``prefix``; errors name the checkpoint and what did not match."""
        try:
            status = self.ckpt.restore(prefix)
        except (ValueError, tf.errors.OpError) as e:
            raise ResumeError(f"checkpoint {prefix} cannot be restored into this run (different network "
                              f"configuration?): {str(e)[:500]}") from None
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            missing = self.missing_objects(prefix)
            if missing:
                raise ResumeError(f"checkpoint {prefix} has no entry for {', '.join(missing)} (written by an older "
                                  f"afgan-tf, or by a run with other options, e.g. mixed precision / augmentation "
                                  f"on or off)") from None
            raise ResumeError(f"checkpoint {prefix} does not match the current training objects (different "
                             f"network configuration?): {str(e)[:500]}") from None
        return status

    def missing_objects(self, prefix):
        """Names of this run's top-level training objects that the checkpoint ``prefix`` holds nothing for."""
        roots = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(prefix)}
        return sorted(k for k in self.objects if k not in roots)

    @property
    def latest(self):
        return self.manager.latest_checkpoint
