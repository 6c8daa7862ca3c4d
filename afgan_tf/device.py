"""The one device probe of afgan-tf: does TensorFlow see a GPU?

Everything that decides by device (the ops' ``impl="auto"`` choice, the float16 compute dtype of the compiled
ops, the networks' fp16 layers) asks ``has_gpu()``; the answer is computed once per process
(``tf.config.list_physical_devices`` initialises the devices, so it is not repeated on hot paths).
"""
import threading

import tensorflow as tf

_lock = threading.Lock()
_gpu = []


def physical_devices(device_type):
    """``tf.config.list_physical_devices(device_type)`` ("CPU" or "GPU"): the one place that asks TensorFlow."""
    return tf.config.list_physical_devices(device_type)


def has_gpu():
    """True when TensorFlow sees at least one GPU (cached after the first call)."""
    if not _gpu:
        with _lock:
            if not _gpu:
                _gpu.append(bool(physical_devices("GPU")))
    return _gpu[0]
