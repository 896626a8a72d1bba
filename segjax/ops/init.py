"""Initialisers for the learned upsamplers: FCN's bilinear transposed-convolution kernel and ICNR for
sub-pixel (pixel shuffle) convolution."""

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from segjax.ops._checks import factor_int


def bilinear_kernel(size: int, channels: int, out_channels: int | None = None, dtype=jnp.float32):
    """FCN's bilinear upsampling kernel, (size, size, channels, out_channels) HWIO.

    f = (size + 1) // 2, centre c = f - 1 for odd size else f - 0.5, weight (1 - |i-c|/f)(1 - |j-c|/f). With
    out_channels = channels (the default) the weights sit on the channel diagonal: each channel is upsampled on
    its own. With channels = g * out_channels (U-Net's up-convolutions halve the channels: g = 2), output
    channel o is the bilinear upsampling of the mean of input channels g*o .. g*o + g - 1 (weight / g on each).
    With size = 2*s - s % 2, stride s and SAME padding, the transposed convolution equals that bilinear
    upsampling away from the borders.
    """
    out_channels = channels if out_channels is None else out_channels
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"bilinear_kernel size must be a positive int, got {size!r}.")
    for name, value in (("channels", channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"bilinear_kernel {name} must be a positive int, got {value!r}.")
    if channels % out_channels:
        raise ValueError(
            f"bilinear_kernel: input channels ({channels}) must be a multiple of the output channels "
            f"({out_channels}): each output averages a group of inputs, then upsamples them bilinearly."
        )
    group = channels // out_channels
    f = (size + 1) // 2
    centre = f - 1 if size % 2 == 1 else f - 0.5
    taps = 1 - np.abs(np.arange(size) - centre) / f
    weights = np.outer(taps, taps) / group
    kernel = np.zeros((size, size, channels, out_channels), np.float32)
    inputs = np.arange(channels)
    kernel[:, :, inputs, inputs // group] = weights[:, :, None]
    return jnp.asarray(kernel, dtype)


def delta_kernel(size: int, channels: int, out_channels: int | None = None, dtype=jnp.float32):
    """A kernel (size, size, channels, out_channels) HWIO whose only non-zero taps are at the centre ((size - 1) // 2,
    the offset-0 tap of a SAME convolution), weight 1/g on output o's group of g = channels / out_channels input
    channels g*o .. g*o + g - 1: the convolution averages each channel group and keeps its position. Resize-then-
    convolve so initialised starts as the resize itself (the structured initialisation of Odena et al.'s
    resize-convolution, as 'bilinear' is the transposed convolution's)."""
    out_channels = channels if out_channels is None else out_channels
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"delta_kernel size must be a positive int, got {size!r}.")
    if channels % out_channels:
        raise ValueError(
            f"delta_kernel: input channels ({channels}) must be a multiple of the output channels ({out_channels})."
        )
    group = channels // out_channels
    kernel = np.zeros((size, size, channels, out_channels), np.float32)
    inputs = np.arange(channels)
    kernel[(size - 1) // 2, (size - 1) // 2, inputs, inputs // group] = 1.0 / group
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
