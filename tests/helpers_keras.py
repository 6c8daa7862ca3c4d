"""The shared Keras layer test: :func:`run_layer_test` checks that a layer or network behaves as a Keras 3 object
(in the spirit of keras-hub's ``TestCase.run_layer_test``):

1. registration: ``keras.saving.get_registered_object("afgan_tf>Name")`` is the class;
2. ``build()``: variables exist only after it (networks build themselves in their constructor); trainable and
   non-trainable counts and the variables' names (last path component, in order) are as expected;
3. the call gives the expected NHWC (or [N, ...]) output shape, float32;
4. config round trip: ``get_config`` is JSON-serialisable and ``from_config(get_config())`` gives the same config;
   built under the same random seed it starts with the same variables (so the config holds everything that
   determines the initial state), and with the weights copied over the outputs are identical;
5. serialisation: ``serialize_keras_object`` / ``deserialize_keras_object`` rebuilds the same class and config;
6. ``.keras`` files (networks, i.e. ``keras.Model`` s): ``model.save`` + ``keras.saving.load_model`` give
   identical outputs;
7. float16: with ``force_fp16(True)`` (the networks' mixed-precision switch: the layers flagged ``use_fp16``
   compute in float16, as the original does on a GPU) the output has the expected dtype and stays within
   ``fp16_tol`` of the float32 result. (The layers choose their compute dtype per layer like the original; Keras
   dtype policies are not used.)
"""
import json
import os

import keras
import numpy as np
import tensorflow as tf

from afgan_tf.networks import layers as _layers


def _short(v):
    return v.path.split("/")[-1]


def _np(x):
    if isinstance(x, (tuple, list)):
        return [_np(a) for a in x]
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    return None if x is None else np.asarray(x)


def _assert_same(a, b, what):
    if isinstance(a, list):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{what}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _assert_same(a[k], b[k], f"{what}[{k}]")
    elif a is None:
        assert b is None, what
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


SEED = 7


def make_built(make):
    """``make()`` under ``SEED``, built."""
    keras.utils.set_random_seed(SEED)
    layer = make()
    if not layer.built:
        layer.build()
    return layer


def copy_weights(src, dst):
    """Copies every variable of ``src`` into ``dst`` (same architecture: same order and shapes)."""
    sv, dv = src.weights, dst.weights
    assert [tuple(v.shape) for v in sv] == [tuple(v.shape) for v in dv], "architectures differ"
    for a, b in zip(sv, dv):
        b.assign(a)


def run_layer_test(make, call, expected_output_shape, expected_trainable, expected_non_trainable,
                   expected_names=None, fp16_dtype=None, fp16_tol=None, tmp_path=None):
    """Runs the shared Keras checks on ``make()`` (a fresh layer / network) called as ``call(layer)``.

    Args:
      make: builds a fresh instance (called after ``keras.utils.set_random_seed(SEED)``).
      call: ``layer -> output`` (a tensor, or a tuple whose first tensor is checked for shape / dtype).
      expected_output_shape: shape of that tensor. expected_trainable / expected_non_trainable: variable counts.
      expected_names: the variables' short names in ``layer.weights`` order (None = not checked).
      fp16_dtype: expected output dtype under ``force_fp16(True)`` (None = the float16 check is skipped: the layer
        has no float16 path); fp16_tol: max |fp16 − fp32| allowed.
      tmp_path: a folder for the ``.keras`` round trip (networks only).
    Returns the layer (built).
    """
    keras.utils.set_random_seed(SEED)
    layer = make()
    cls = type(layer)
    assert keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls, \
        f"{cls.__name__} is not registered"
    assert keras.saving.get_registered_name(cls).startswith("afgan_tf>"), keras.saving.get_registered_name(cls)
    if not isinstance(layer, keras.Model):
        assert not layer.built and not layer.weights, f"{cls.__name__}: variables before build()"
        layer.build()
    assert layer.built
    n_tr, n_ntr = len(layer.trainable_weights), len(layer.non_trainable_weights)
    assert (n_tr, n_ntr) == (expected_trainable, expected_non_trainable), \
        f"{cls.__name__}: {n_tr} trainable / {n_ntr} non-trainable variables, expected " \
        f"{expected_trainable} / {expected_non_trainable}"
    if expected_names is not None:
        assert [_short(v) for v in layer.weights] == list(expected_names), [_short(v) for v in layer.weights]

    out = call(layer)
    y = _first(out)
    assert tuple(y.shape) == tuple(expected_output_shape), (tuple(y.shape), expected_output_shape)
    assert y.dtype == tf.float32, y.dtype
    ref = _np(out)

    # config round trip + identical outputs with the same weights
    cfg = layer.get_config()
    cfg_json = json.loads(json.dumps(cfg))
    keras.utils.set_random_seed(SEED)
    clone = cls.from_config(cfg_json)
    assert clone.get_config() == cfg, (clone.get_config(), cfg)
    if not clone.built:
        clone.build()
    fresh = make_built(make)
    _assert_same([np.asarray(v) for v in clone.weights], [np.asarray(v) for v in fresh.weights],
                 f"{cls.__name__} from_config: initial variables")
    copy_weights(layer, clone)
    _assert_same(_np(call(clone)), ref, f"{cls.__name__} from_config")

    # Keras serialisation (registered name -> same class and config)
    ser = keras.saving.serialize_keras_object(layer)
    again = keras.saving.deserialize_keras_object(json.loads(json.dumps(ser)))
    assert type(again) is cls and again.get_config() == cfg

    # .keras file round trip (networks)
    if isinstance(layer, keras.Model):
        assert tmp_path is not None, "networks need tmp_path for the .keras round trip"
        path = os.path.join(str(tmp_path), f"{cls.__name__}.keras")
        layer.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is cls
        _assert_same(_np(call(loaded)), ref, f"{cls.__name__} .keras")

    # float16 (the networks' mixed-precision path)
    if fp16_dtype is not None:
        _layers.force_fp16(True)
        try:
            y16 = _first(call(layer))
        finally:
            _layers.force_fp16(None)
        assert y16.dtype == fp16_dtype, (y16.dtype, fp16_dtype)
        err = float(np.max(np.abs(np.asarray(tf.cast(y16, tf.float32)) - np.asarray(y))))
        assert np.isfinite(err) and err <= fp16_tol, (cls.__name__, err, fp16_tol)
    return layer
