"""Every layer and network of afgan_tf.networks passes the shared Keras layer test (tests/helpers_keras.py:
registration, build(), variable counts and names, NHWC output shape, config round trip, serialisation, .keras files
for the networks, the float16 path), and a generator saved as .keras gives the same images in a fresh process."""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from afgan_tf import filters
from afgan_tf.networks import Discriminator, Generator, StyleGAN2Generator
from afgan_tf.networks import stylegan2 as sg2
from afgan_tf.networks.discriminator import (Conv2dLayer, DiscriminatorBlock, DiscriminatorEpilogue,
                                             DiscriminatorMapping, MinibatchStdLayer)
from afgan_tf.networks.layers import (FullyConnectedLayer, MappingNetwork, SynthesisInput, SynthesisLayer,
                                      SynthesisNetwork)
from helpers_keras import run_layer_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP16_TOL = 0.05   # float16 vs float32 through a few layers with O(1) activations


def _rand(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------- StyleGAN3 G parts

def test_fully_connected_layer():
    run_layer_test((lambda: FullyConnectedLayer(6, 4, activation="lrelu", bias_init=0.5)),
                   lambda l: l(_rand(3, 6)), (3, 4), 2, 0, ["weight", "bias"])


def test_mapping_network():
    z, c = _rand(3, 8), np.eye(3, dtype=np.float32)
    run_layer_test((lambda: MappingNetwork(z_dim=8, c_dim=3, w_dim=8, num_ws=5, num_layers=2)),
                   lambda l: l(z, c, truncation_psi=0.7), (3, 5, 8), 6, 1,
                   ["w_avg"] + ["weight", "bias"] * 3)


def test_synthesis_input():
    run_layer_test((lambda: SynthesisInput(w_dim=8, channels=6, size=12, sampling_rate=8, bandwidth=2)),
                   lambda l: l(_rand(2, 8)), (2, 12, 12, 6), 3, 3,
                   ["weight", "transform", "freqs", "phases", "weight", "bias"])


def _schedule():
    return filters.synthesis_schedule(16, 64, 16)


@pytest.mark.parametrize("index", [0, 3, 14])   # same-rate, rate-doubling, ToRGB
def test_synthesis_layer(index):
    L = _schedule()[index]
    kw = dict(w_dim=8, is_torgb=L.is_torgb, is_critically_sampled=L.is_critically_sampled, use_fp16=True,
              in_channels=L.in_channels, out_channels=L.out_channels, in_size=L.in_size, out_size=L.out_size,
              in_sampling_rate=L.in_sampling_rate, out_sampling_rate=L.out_sampling_rate, in_cutoff=L.in_cutoff,
              out_cutoff=L.out_cutoff, in_half_width=L.in_half_width, out_half_width=L.out_half_width, name=L.name)
    x, w = _rand(2, L.in_size, L.in_size, L.in_channels), _rand(2, 8, seed=1)
    run_layer_test((lambda: SynthesisLayer(**kw)), lambda l: l(x, w),
                   (2, L.out_size, L.out_size, L.out_channels), 4, 1,
                   ["weight", "bias", "magnitude_ema", "weight", "bias"], fp16_dtype=tf.float16, fp16_tol=FP16_TOL)


def test_synthesis_network():
    ws = _rand(2, 16, 8)
    run_layer_test((lambda: SynthesisNetwork(w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                                                    channel_max=8)),
                   lambda l: l(ws), (2, 16, 16, 3), 3 + 15 * 4, 3 + 15, fp16_dtype=tf.float32, fp16_tol=FP16_TOL)


def test_generator(tmp_path):
    z = _rand(2, 8)
    G = run_layer_test((lambda: Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                                                 channel_base=64, channel_max=8)),
                       lambda l: l(z, truncation_psi=0.8), (2, 16, 16, 3), 3 + 15 * 4 + 2 * 2, 3 + 15 + 1,
                       fp16_dtype=tf.float32, fp16_tol=FP16_TOL, tmp_path=tmp_path)
    # the original's attribute names survive
    assert G.synthesis.input.transform.shape == (3, 3) and G.mapping.fc1.weight.shape == (8, 8)
    assert G.synthesis.L0_36_8 is G.synthesis["L0_36_8"]


# ---------------------------------------------------------------------------------------------- discriminator

def test_conv2d_layer():
    run_layer_test((lambda: Conv2dLayer(4, 6, 3, activation="lrelu", down=2, conv_clamp=256)),
                   lambda l: l(_rand(2, 8, 8, 4)), (2, 4, 4, 6), 2, 0, ["weight", "bias"])


def test_minibatch_std_layer():
    run_layer_test(lambda: MinibatchStdLayer(group_size=2), lambda l: l(_rand(4, 4, 4, 5)), (4, 4, 4, 6), 0, 0, [])


def test_discriminator_block():
    img = _rand(2, 8, 8, 3)
    run_layer_test((lambda: DiscriminatorBlock(0, 4, 8, resolution=8, img_channels=3, first_layer_idx=0,
                                                      use_fp16=True, conv_clamp=256, name="b8")),
                   lambda l: l(None, img), (2, 4, 4, 8), 7, 0, ["weight", "bias"] * 3 + ["weight"],
                   fp16_dtype=tf.float16, fp16_tol=FP16_TOL)


def test_discriminator_epilogue():
    run_layer_test((lambda: DiscriminatorEpilogue(8, cmap_dim=0, resolution=4, img_channels=3,
                                                         mbstd_group_size=2)),
                   lambda l: l(_rand(2, 4, 4, 8), None), (2, 1), 6, 0, ["weight", "bias"] * 3)


def test_discriminator_mapping():
    run_layer_test((lambda: DiscriminatorMapping(c_dim=3, w_dim=8, num_layers=2)),
                   lambda l: l(np.eye(3, dtype=np.float32)[:2]), (2, 8), 6, 0, ["weight", "bias"] * 3)


def test_discriminator(tmp_path):
    img = _rand(2, 16, 16, 3)
    run_layer_test((lambda: Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64,
                                                 channel_max=8, epilogue_kwargs=dict(mbstd_group_size=2))),
                   lambda l: l(img), (2, 1), 7 + 5 + 6, 0, fp16_dtype=tf.float32, fp16_tol=FP16_TOL,
                   tmp_path=tmp_path)


def test_discriminator_conditional_frozen(tmp_path):
    img, c = _rand(2, 16, 16, 3), np.eye(3, dtype=np.float32)[:2]
    run_layer_test((lambda: Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=64,
                                                 channel_max=8, block_kwargs=dict(freeze_layers=2),
                                                 mapping_kwargs=dict(num_layers=2),
                                                 epilogue_kwargs=dict(mbstd_group_size=2))),
                   lambda l: l(img, c), (2, 1), 18 + 6 - 4, 4, tmp_path=tmp_path)


# ---------------------------------------------------------------------------------------------- StyleGAN2 G parts

def test_sg2_synthesis_layer():
    x, w = _rand(2, 4, 4, 4), _rand(2, 8, seed=1)
    run_layer_test((lambda: sg2.SynthesisLayer(4, 6, w_dim=8, resolution=8, up=2, conv_clamp=256)),
                   lambda l: l(x, w, noise_mode="const"), (2, 8, 8, 6), 5, 1,
                   ["weight", "bias", "noise_strength", "noise_const", "weight", "bias"])


def test_sg2_torgb_layer():
    run_layer_test((lambda: sg2.ToRGBLayer(6, 3, w_dim=8)), lambda l: l(_rand(2, 8, 8, 6), _rand(2, 8)),
                   (2, 8, 8, 3), 4, 0, ["weight", "bias", "weight", "bias"])


def test_sg2_synthesis_block():
    x, img, ws = _rand(2, 4, 4, 4), _rand(2, 4, 4, 3, seed=1), _rand(2, 3, 8, seed=2)
    run_layer_test((lambda: sg2.SynthesisBlock(4, 6, w_dim=8, resolution=8, img_channels=3, is_last=True,
                                                      use_fp16=True)),
                   lambda l: l(x, img, ws, noise_mode="const"), (2, 8, 8, 6), 14, 2,
                   fp16_dtype=tf.float16, fp16_tol=FP16_TOL)


@pytest.mark.parametrize("input_type", ["const", "fourier"])
def test_sg2_synthesis_network(input_type):
    make = (lambda: sg2.SynthesisNetwork(w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                                                channel_max=8, input_type=input_type))
    num_ws = make().num_ws
    # b4: const (or the Fourier input's weight) + conv1 (5) + torgb (4); b8, b16: conv0, conv1 (5 each) + torgb (4)
    fourier = input_type == "fourier"
    tr = 1 + 9 + 2 * 14
    ntr = 5 + (5 if fourier else 0)   # noise_const per conv; fourier: transform, freqs, phases + frozen affine
    run_layer_test(make, lambda l: l(_rand(2, num_ws, 8), noise_mode="const"), (2, 16, 16, 3), tr, ntr,
                   fp16_dtype=tf.float32, fp16_tol=FP16_TOL)


def test_sg2_generator(tmp_path):
    run_layer_test((lambda: StyleGAN2Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                                                      channel_base=64, channel_max=8,
                                                      mapping_kwargs=dict(num_layers=2))),
                   lambda l: l(_rand(2, 8), noise_mode="const"), (2, 16, 16, 3), 1 + 9 + 2 * 14 + 4, 5 + 1,
                   tmp_path=tmp_path)


# ---------------------------------------------------------------------------------------------- fresh process

def test_generator_keras_file_same_images_in_fresh_process(tmp_path):
    """A generator saved as .keras and loaded back in a new Python process renders bit-identical images."""
    keras.utils.set_random_seed(3)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                  magnitude_ema_beta=0.9)
    z = _rand(3, 8, seed=5)
    G(z, update_emas=True)          # move w_avg / magnitude_ema away from their initial values
    G.synthesis.input.transform.assign(np.array([[1, 0, 0.05], [0, 1, -0.03], [0, 0, 1]], np.float32))
    ref = G(z, truncation_psi=0.7).numpy()
    path, out = tmp_path / "g.keras", tmp_path / "img.npy"
    G.save(str(path))
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import afgan_tf.networks  # registers the classes
        G = keras.saving.load_model({str(path)!r})
        z = np.load({str(tmp_path / 'z.npy')!r})
        np.save({str(out)!r}, G(z, truncation_psi=0.7).numpy())
    """)
    np.save(tmp_path / "z.npy", z)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([ROOT] + sys.path))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_array_equal(np.load(out), ref)


# ---------------------------------------------------------------------------------------------- global Keras policy

@pytest.fixture
def mixed_float16_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("make_g", [
    lambda: Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8),
    lambda: StyleGAN2Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64,
                               channel_max=8, mapping_kwargs=dict(num_layers=2))], ids=["stylegan3", "stylegan2"])
def test_networks_ignore_a_global_mixed_precision_policy(make_g, mixed_float16_policy):
    """Under keras.mixed_precision's ``mixed_float16`` global policy the networks keep their own precision: float32
    variables and the very same outputs as under the default policy (it used to fail in the input layer's matmul)."""
    z = _rand(2, 8)
    G = make_g()
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    img = G(z, noise_mode="const") if isinstance(G, StyleGAN2Generator) else G(z)
    logits = D(img)
    assert img.dtype == tf.float32 and logits.dtype == tf.float32
    assert {v.dtype for v in G.weights + D.weights} == {"float32"}
    assert {l.dtype_policy.name for l in G._flatten_layers()} == {"float32"}
    keras.mixed_precision.set_global_policy("float32")
    G2, D2 = make_g(), Discriminator(**D.get_config())
    img2 = G2(z, noise_mode="const") if isinstance(G2, StyleGAN2Generator) else G2(z)
    D2(img2)
    for a, b in zip(G2.weights + D2.weights, G.weights + D.weights):
        a.assign(b)
    img2 = G2(z, noise_mode="const") if isinstance(G2, StyleGAN2Generator) else G2(z)
    np.testing.assert_array_equal(img2.numpy(), img.numpy())
    np.testing.assert_array_equal(D2(img2).numpy(), logits.numpy())
