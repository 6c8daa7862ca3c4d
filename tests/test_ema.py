"""G_ema update maths (docs/ALGORITHM.md §5.3, §11) and the training blocks under tf.distribute (MirroredStrategy)."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from afgan_tf.training.ema import EmaUpdater, ema_beta, ema_kimg_for_batch, pair_variables, update_ema


class Buffered(keras.layers.Layer):
    """Dense layer with a non-trainable buffer (like ``w_avg`` / ``magnitude_ema``) updated in call()."""

    def __init__(self, units=3, **kw):
        super().__init__(**kw)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal",
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        self.w_avg = self.add_weight(shape=(self.units,), initializer="zeros", trainable=False, name="w_avg")

    def call(self, x):
        y = x @ self.kernel + self.bias
        self.w_avg.assign(0.9 * self.w_avg + 0.1 * tf.reduce_mean(y, axis=0))
        return y


def _model(units=3, seed=0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,)), Buffered(units), keras.layers.Dense(2)])
    return m


# ---------------------------------------------------------------------------------------------------------------

def test_beta_values_spec():
    assert ema_kimg_for_batch(32) == 10.0 and ema_kimg_for_batch(64) == 20.0
    assert abs(ema_beta(10 ** 9, 32) - 0.9977844) < 5e-8                   # steady state, batch 32 (docs/ALGORITHM.md §11)
    assert abs(ema_beta(10 ** 9, 64) - 0.5 ** (64 / 20000)) < 1e-15
    assert ema_beta(0, 32) == 0.0                                          # first step copies G
    # Ramp-up: ema_nimg = min(10000, cur_nimg * 0.05).
    assert abs(ema_beta(100_000, 32) - 0.5 ** (32 / 5000)) < 1e-15
    assert abs(ema_beta(200_000, 32) - 0.5 ** (32 / 10000)) < 1e-15
    assert abs(ema_beta(0, 32, ema_rampup=None) - 0.9977844) < 5e-8      # resume: no ramp-up
    t = ema_beta(tf.constant(100_000, tf.int64), 32)
    assert abs(float(t) - 0.5 ** (32 / 5000)) < 1e-6
    with pytest.raises(ValueError, match="batch"):
        ema_beta(0, 0)


def test_update_lerps_trainables_and_copies_buffers():
    G, G_ema = _model(seed=0), _model(seed=1)
    G(np.ones((2, 4), np.float32))                                          # moves G's w_avg buffer
    before = [v.numpy().copy() for v in G_ema.variables]
    src = [v.numpy().copy() for v in G.variables]
    ema = EmaUpdater(G_ema, G, batch=32)
    beta = ema.update(100_000)
    assert abs(beta - 0.5 ** (32 / 5000)) < 1e-15
    for v, b, s in zip(G_ema.variables, before, src):
        if v.trainable:
            np.testing.assert_allclose(v.numpy(), s + beta * (b - s), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(v.numpy(), s)
    assert any(not v.trainable and np.abs(v.numpy()).max() > 0 for v in G_ema.variables)
    # First step (cur_nimg = 0, ramp-up on): exact copy.
    update_ema(G_ema, G, 0, 32)
    for v, s in zip(G_ema.variables, src):
        np.testing.assert_array_equal(v.numpy(), s)


def test_update_in_tf_function_with_tensor_count():
    G, G_ema = _model(seed=0), _model(seed=1)
    ema = EmaUpdater(G_ema, G, batch=8, ema_kimg=1.0)
    before = [v.numpy().copy() for v in G_ema.trainable_variables]
    step = tf.function(lambda n: ema.update(n))
    beta = float(step(tf.constant(10 ** 6, tf.int64)))
    assert abs(beta - 0.5 ** (8 / 1000)) < 1e-6
    for v, b, s in zip(G_ema.trainable_variables, before, G.trainable_variables):
        np.testing.assert_allclose(v.numpy(), s.numpy() + beta * (b - s.numpy()), rtol=1e-5, atol=1e-6)


def test_structure_mismatch_errors():
    with pytest.raises(ValueError, match="shape"):
        pair_variables(_model(units=3), _model(units=5))
    other = keras.Sequential([keras.Input((4,)), Buffered(3)])
    with pytest.raises(ValueError, match="structure"):
        EmaUpdater(other, _model(), batch=32)
    a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.LayerNormalization(center=False)])
    with pytest.raises(ValueError, match="EMA"):
        pair_variables(a, b)


# ---------------------------------------------------------------------------------------------------------------
# tf.distribute: EMA (replica and cross-replica context), augmentation and the ADA controller.

_MIRRORED_SCRIPT = r"""
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from afgan_tf.training.augment import AugmentPipe, AdaController
from afgan_tf.training.ema import EmaUpdater
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def model(seed):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    return m
with strategy.scope():
    G, G_ema = model(0), model(1)
    pipe = AugmentPipe(p=1.0, seed=3)
    ctl = AdaController(pipe, interval=1, kimg=1, batch=4)
    ema = EmaUpdater(G_ema, G, batch=4, ema_kimg=0.01)
e0 = [v.numpy().copy() for v in G_ema.variables]
g0 = [v.numpy().copy() for v in G.variables]
imgs = np.random.RandomState(0).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(imgs).batch(4))

@tf.function
def step(x, n):
    def replica_fn(x):
        y = pipe(x)
        ctl.accumulate(tf.ones([tf.shape(x)[0], 1]))
        ema.update(n)                                  # replica context -> merge_call
        return y
    y = strategy.run(replica_fn, args=(x,))
    return y, ctl.step()

for x in ds:
    y, p = step(x, tf.constant(10 ** 6, tf.int64))
outs = strategy.experimental_local_results(y)
assert all(o.shape == (2, 8, 8, 3) for o in outs), [o.shape for o in outs]
assert abs(float(p) - (1.0 + 4 / 1000)) < 1e-6, float(p)
beta = 0.5 ** (4 / 10)
for v, a, b in zip(G_ema.variables, e0, g0):
    want = b + beta * (a - b) if v.trainable else b
    for loc in strategy.experimental_local_results(v.value if hasattr(v, "value") else v):
        assert np.allclose(loc.numpy(), want, atol=1e-6), v.path
# Cross-replica context (outside strategy.run) inside a tf.function.
tf.function(lambda: ema.update(tf.constant(0, tf.int64)))()
for v, b in zip(G_ema.variables, g0):
    for loc in strategy.experimental_local_results(v.value if hasattr(v, "value") else v):
        assert np.allclose(loc.numpy(), b), v.path
print("OK", float(p))
"""


def test_blocks_under_mirrored_strategy():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True, text=True, env=env,
                       timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr[-3000:]
