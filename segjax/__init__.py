"""segjax: semantic segmentation in JAX/Flax, built around a library of upsampling operators."""

__version__ = "0.1.0"
