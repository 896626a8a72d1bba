"""Initialisers for the learned upsamplers: FCN's bilinear transposed-convolution kernel and ICNR for
sub-pixel (pixel shuffle) convolution."""

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from segjax.ops._checks import factor_int


def bilinear_kernel(size: int, channels: int, dtype=jnp.float32):
    """FCN's bilinear upsampling kernel, (size, size, channels, channels) HWIO.

    f = (size + 1) // 2, centre c = f - 1 for odd size else f - 0.5, weight (1 - |i-c|/f)(1 - |j-c|/f) on
    the channel diagonal (each channel upsampled on its own). With size = 2*s - s % 2, stride s and SAME
    padding, the transposed convolution equals bilinear upsampling away from the borders.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"bilinear_kernel size must be a positive int, got {size!r}.")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"bilinear_kernel channels must be a positive int, got {channels!r}.")
    f = (size + 1) // 2
    centre = f - 1 if size % 2 == 1 else f - 0.5
    taps = 1 - np.abs(np.arange(size) - centre) / f
    weights = np.outer(taps, taps)
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = weights[:, :, None]
    return jnp.asarray(kernel, dtype)


_LECUN_NORMAL = nn.initializers.lecun_normal()


def icnr_init(base_init=_LECUN_NORMAL, *, factor: int):
    """ICNR (Aitken et al. 2017) initialiser for the convolution in front of `pixel_shuffle(., factor)`.

    Draws one sub-kernel (kh, kw, Cin, Cout / factor**2) from `base_init` and repeats it for the factor**2
    sub-pixel channels in `pixel_shuffle`'s order (channel c*r*r + i*r + j copies sub-kernel channel c), so at
    initialisation conv + pixel_shuffle equals the sub-kernel convolution followed by nearest upsampling:
    no checkerboard at the start of training.
    """
    r2 = factor_int(factor) ** 2

    def init(key, shape, dtype=jnp.float32):
        if shape[-1] % r2:
            raise ValueError(f"icnr_init: output channels {shape[-1]} must be divisible by factor**2 = {r2}.")
        sub = base_init(key, tuple(shape[:-1]) + (shape[-1] // r2,), dtype)
        return jnp.repeat(sub, r2, axis=-1)

    return init
