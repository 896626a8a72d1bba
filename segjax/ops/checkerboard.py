"""Measures of upsampling artifacts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops._checks import factor_int, nhwc

_NEGLIGIBLE = 1e-10  # a detrended energy below this share of the map's mean square is float32 rounding


def local_mean_kernel(factor: int) -> np.ndarray:
    """The 1-D kernel of the local mean that `checkerboard_score` removes, centred on a pixel: a box of `factor`
    taps for an odd factor; for an even one, that box convolved with [1/2, 1/2] ([1/2, 1, ..., 1, 1/2] / factor).
    Symmetric with unit sum, so it keeps constants and linear ramps; its frequency response is 0 at every multiple
    of 1/factor except 0, so it keeps nothing of a pattern of period `factor` (whose mean over a period is 0)."""
    f = factor_int(factor)
    if f % 2:
        return np.full(f, 1.0 / f)
    taps = np.ones(f + 1)
    taps[0] = taps[-1] = 0.5
    return taps / f


def checkerboard_region(height: int, width: int, factor: int, border: int = 0, detrend: bool = True) -> tuple:
    """The (height, width) of an HxW map that `checkerboard_score` measures: less the local mean's margin, less
    `border` on each side, cropped to whole factor x factor cells. A side below `factor` leaves nothing to score."""
    f = factor_int(factor)
    margin = len(local_mean_kernel(f)) - 1 if detrend else 0
    return tuple((side - margin - 2 * border) // f * f for side in (height, width))


def checkerboard_score(y, factor: int, border: int = 0, detrend: bool = True):
    """How much of y's spatial variation is a pattern of period `factor`: 0 none, 1 nothing else.

    detrend=True (the default): r = y minus its local mean (separable `local_mean_kernel`, valid region only), so
    constants and linear ramps leave r = 0 and score 0, and a pure period-`factor` pattern passes whole and scores
    1. (Below float32 rounding, 1e-10 of y's mean square, r counts as 0.) After cropping `border` more pixels
    and to whole factor x factor cells, with phase means
    P[a, b, c] = mean(r[:, a::factor, b::factor, c]) over the batch,
        score = sqrt(sum_abc P**2 / factor**2 / mean_pixels(sum_c r**2))  (0 where r is 0 everywhere):
    the share of r's energy in its phase means, pooled over channels. Unchanged when y is scaled or offset.

    detrend=False: the original measure for operators on a constant input (Odena et al.): phase means m of y itself
    and mean over channels of std_ab(m) / sqrt(mean_ab(m**2)); relative to the mean, so bed of nails scores
    sqrt(1 - 1/factor**2).
    """
    nhwc(y, "y")
    f = factor_int(factor)
    if not isinstance(border, int) or border < 0:
        raise ValueError(f"checkerboard_score border must be a non-negative int, got {border!r}.")
    _, h, w, _ = y.shape
    hh, ww = checkerboard_region(h, w, f, border, detrend)
    if hh < f or ww < f:
        raise ValueError(
            f"checkerboard_score: a {h}x{w} map minus a border of {border}"
            + (" (and the local mean's margin)" if detrend else "")
            + f" leaves no whole {f}x{f} cell."
        )
    y = jnp.asarray(y, jnp.float32)
    n, c = y.shape[0], y.shape[-1]
    if detrend:
        magnitude = jnp.mean(y * y)  # what float32 rounding is relative to
        y = _detrended_region(y, f, border, hh, ww)
    else:
        y = y[:, border : border + hh, border : border + ww, :]
    # The reductions stay outside the compiled part: fused into it, they lost 1e-4 of a whole split's score.
    m = y.reshape(n, hh // f, f, ww // f, f, c).mean(axis=(0, 1, 3))  # (f, f, C)
    if detrend:
        phase_energy = jnp.mean(jnp.sum(m * m, axis=-1))
        total_energy = jnp.mean(jnp.sum(y * y, axis=-1))
        # Below float32 rounding (constants, ramps: r is 0 up to rounding), there is no pattern to measure.
        present = total_energy > _NEGLIGIBLE * y.shape[-1] * magnitude
        return jnp.where(present, jnp.sqrt(phase_energy / jnp.where(present, total_energy, 1.0)), 0.0)
    std = jnp.std(m, axis=(0, 1))
    rms = jnp.sqrt(jnp.mean(m * m, axis=(0, 1)))
    safe = jnp.where(rms > 0, rms, 1.0)
    return jnp.mean(jnp.where(rms > 0, std / safe, 0.0))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _detrended_region(y, factor: int, border: int, height: int, width: int):
    """y minus its local mean, cropped to the scored `height` x `width` after `border`, compiled once per shape and
    settings (whole validation splits are scored)."""
    return _minus_local_mean(y, factor)[:, border : border + height, border : border + width, :]


def _minus_local_mean(y, factor: int):
    """y minus its separable local mean, over the valid region (each side loses half the kernel): weighted sums of
    shifted slices, rows then columns, which XLA fuses (on CPU the depthwise convolution they replace was 20-150x
    slower on whole validation splits)."""
    taps = [float(t) for t in local_mean_kernel(factor)]
    half = (len(taps) - 1) // 2
    hh, ww = y.shape[1] - 2 * half, y.shape[2] - 2 * half
    rows = sum(t * y[:, i : i + hh] for i, t in enumerate(taps))
    mean = sum(t * rows[:, :, j : j + ww] for j, t in enumerate(taps))
    return y[:, half : half + hh, half : half + ww] - mean
