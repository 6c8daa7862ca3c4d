"""The network configurations ``--cfg`` accepts (TensorFlow-free, so flag parsers can import it).

``stylegan3-t`` / ``stylegan3-r``: the paper's configs T and R; ``stylegan2``: the baseline; ``stylegan2-fourier``
(ours): the paper's config b, StyleGAN2 with the Fourier-feature input (docs/stylegan2.md).
"""
CONFIGS = ("stylegan3-t", "stylegan3-r", "stylegan2", "stylegan2-fourier")
STYLEGAN2_CONFIGS = ("stylegan2", "stylegan2-fourier")
