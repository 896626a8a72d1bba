"""Measures of upsampling artifacts."""

import jax.numpy as jnp

from segjax.ops._checks import factor_int, nhwc


def checkerboard_score(y, factor: int, border: int = 0):
    """How much the factor x factor output phases of y differ: 0 when all phases agree.

    Crops `border` pixels from each side, then to whole factor x factor cells; phase means
    m[a, b, c] = mean(y[:, a::factor, b::factor, c]); score = mean over c of
    std_ab(m) / sqrt(mean_ab(m**2)) (population std; 0 where the denominator is 0). Scale-free; bed of
    nails on a constant input scores sqrt(1 - 1/factor**2), the maximum for non-negative outputs.
    """
    nhwc(y, "y")
    f = factor_int(factor)
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"checkerboard_score border must be a non-negative int, got {border!r}.")
    n, h, w, c = y.shape
    hh, ww = (h - 2 * border) // f * f, (w - 2 * border) // f * f
    if hh < f or ww < f:
        raise ValueError(f"checkerboard_score: a {h}x{w} map minus a border of {border} leaves no whole {f}x{f} cell.")
    y = y[:, border : border + hh, border : border + ww, :].astype(jnp.float32)
    m = y.reshape(n, hh // f, f, ww // f, f, c).mean(axis=(0, 1, 3))  # (f, f, C)
    std = jnp.std(m, axis=(0, 1))
    rms = jnp.sqrt(jnp.mean(m * m, axis=(0, 1)))
    safe = jnp.where(rms > 0, rms, 1.0)
    return jnp.mean(jnp.where(rms > 0, std / safe, 0.0))
