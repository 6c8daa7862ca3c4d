"""afgan-tf: StyleGAN3 (Alias-Free GAN) for TensorFlow 2 / Keras 3.

`pip install .` installs the library; the compiled op library (custom_ops/) is built by the build_ext
step (filled in by the compiled-ops work) and is optional at run time: every op has a pure-TF path.
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    with open(os.path.join(HERE, name)) as fh:
        return [l.split("#")[0].strip() for l in fh if l.split("#")[0].strip()]


setup(
    name="afgan-tf",
    version="0.1.0",
    description="StyleGAN3 (Alias-Free GAN) natively in TensorFlow 2 / Keras 3",
    packages=find_packages(include=["afgan_tf", "afgan_tf.*"]),
    python_requires=">=3.10",
    install_requires=read_requirements("requirements.txt"),
    extras_require={"test": read_requirements("requirements-test.txt"), "torch": ["torch==2.13.0"]},
    include_package_data=True,
)
