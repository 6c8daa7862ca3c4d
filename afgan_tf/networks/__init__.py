"""Keras 3 networks (NHWC): StyleGAN3 generator building blocks, Generator, presets, Discriminator, and the
StyleGAN2 baseline generator (``afgan_tf.networks.stylegan2.Generator``, also as ``StyleGAN2Generator``)."""
from .layers import (FullyConnectedLayer, MappingNetwork, SynthesisInput, SynthesisLayer,  # noqa: F401
                     SynthesisNetwork, tf_variable, tf_variables)
from .generator import Generator, StateDictError  # noqa: F401
from . import presets  # noqa: F401

__all__ = ["FullyConnectedLayer", "MappingNetwork", "SynthesisInput", "SynthesisLayer", "SynthesisNetwork",
           "Generator", "StateDictError", "Discriminator", "StyleGAN2Generator", "presets", "tf_variable", "tf_variables"]


def __getattr__(name):
    # Imported lazily so that a problem in the discriminator module (written separately) cannot make the
    # generator unimportable; the import error surfaces when Discriminator is used.
    if name == "Discriminator":
        from .discriminator import Discriminator
        return Discriminator
    if name == "StyleGAN2Generator":
        from .stylegan2 import Generator as StyleGAN2Generator
        return StyleGAN2Generator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
