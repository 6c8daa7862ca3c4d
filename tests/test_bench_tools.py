"""The benchmarks' own accounting: convolution FLOPs counted from a traced graph (bench_generator --profile)."""
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import bench_generator  # noqa: E402


def test_conv_gflop_counts_forward_and_both_backward_convs():
    x = tf.zeros([2, 9, 7, 5])
    w = tf.Variable(tf.zeros([3, 3, 5, 4]))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.conv2d(x, w, strides=1, padding="VALID")       # [2, 7, 5, 4]
            loss = tf.reduce_sum(y ** 2)
        return tape.gradient(loss, [x, w])

    graph = step.get_concrete_function(x).graph
    forward = 2 * (2 * 7 * 5 * 4) * (3 * 3 * 5)                      # 2 flops per multiply-add
    assert np.isclose(bench_generator.conv_gflop(graph) * 1e9, 3 * forward)   # fwd + dx + dw


def test_profile_line_names_the_convolution_share_and_rate():
    line = bench_generator.profile_line(dict(ops_ms={"Conv2D": 900.0, "Mul": 80.0, "Pad": 20.0, "Tiny": 1.0},
                                             conv_gflop=90.0))
    assert "convolutions 900 ms (90 %, 90.0 GFLOP at 100 GFLOP/s)" in line
    assert "Mul 80 ms" in line and "Tiny" not in line
