"""afgan-tf: StyleGAN3 (Alias-Free GAN, Karras et al. 2021) natively in TensorFlow 2 / Keras 3. Layout NHWC."""
__version__ = "0.1.0"
