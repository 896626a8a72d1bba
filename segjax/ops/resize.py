"""Parameter-free upsampling of NHWC arrays by an integer factor: bed of nails, nearest, bilinear,
pixel shuffle and its inverse. All are reshapes, pads and elementwise sums, so XLA fuses them and their
gradients are the same kind of ops (no gathers or scatters)."""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from segjax.ops._checks import factor_int, nhwc


def bed_of_nails(x, factor: int):
    """Each value at the top-left corner of its factor x factor cell, zeros elsewhere.

    (N, H, W, C) -> (N, factor*H, factor*W, C). One interior pad; its gradient is a strided slice.
    """
    nhwc(x)
    f = factor_int(factor)
    zero = jnp.zeros((), x.dtype)
    return lax.pad(x, zero, ((0, 0, 0), (0, f - 1, f - 1), (0, f - 1, f - 1), (0, 0, 0)))


def nearest_upsample(x, factor: int):
    """Nearest-neighbour upsampling: every value copied into its factor x factor cell."""
    nhwc(x)
    f = factor_int(factor)
    n, h, w, c = x.shape
    y = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, f, w, f, c))
    return y.reshape(n, h * f, w * f, c)


def _phase_weights(f: int):
    """Bilinear weights (previous, centre, next) of input rows for each of the f output phases.

    Half-pixel centres: output row f*q + r samples input coordinate q + (r + 0.5)/f - 0.5.
    """
    weights = []
    for r in range(f):
        offset = (r + 0.5) / f - 0.5
        weights.append((max(-offset, 0.0), 1.0 - abs(offset), max(offset, 0.0)))
    return weights


def _shifted(x, axis: int, offset: int):
    """x[q + offset] along `axis` (offset in {-1, 0, 1}), clamped to the edge row."""
    if offset == 0:
        return x
    n = x.shape[axis]
    if offset < 0:
        parts = [lax.slice_in_dim(x, 0, 1, axis=axis), lax.slice_in_dim(x, 0, n - 1, axis=axis)]
    else:
        parts = [lax.slice_in_dim(x, 1, n, axis=axis), lax.slice_in_dim(x, n - 1, n, axis=axis)]
    return lax.concatenate(parts, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _bilinear_axis(x, f: int, axis: int):
    """Upsamples one spatial axis by f: output row f*q + r = a_r x[q-1] + b_r x[q] + c_r x[q+1]
    (edge-clamped), the phases interleaved by a stack and a reshape."""
    prev, nxt = _shifted(x, axis, -1), _shifted(x, axis, 1)
    phases = []
    for a, b, c in _phase_weights(f):
        y = b * x
        if a:
            y = y + a * prev
        if c:
            y = y + c * nxt
        phases.append(y.astype(x.dtype))
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= f
    return y.reshape(shape)


def _bilinear_axis_fwd(x, f, axis):
    return _bilinear_axis(x, f, axis), None


def _bilinear_axis_bwd(f, axis, _, g):
    """Adjoint: weighted sums of the output phases, the neighbour terms shifted back (edge rows
    keep the clamped contributions). Written out because autodiff's version is slower."""
    shape = list(g.shape)
    n = shape[axis] // f
    g = g.reshape(shape[:axis] + [n, f] + shape[axis + 1 :])
    sums = [None, None, None]  # a, b, c: the phases weighted by their previous / centre / next weight
    for r, weights in enumerate(_phase_weights(f)):
        g_r = lax.index_in_dim(g, r, axis=axis + 1, keepdims=False)
        for j, weight in enumerate(weights):
            if weight:
                term = weight * g_r
                sums[j] = term if sums[j] is None else sums[j] + term
    a, b, c = (jnp.zeros_like(sums[1]) if t is None else t for t in sums)
    zeros = [(0, 0)] * a.ndim

    def pad(x, lo, hi):
        p = list(zeros)
        p[axis] = (lo, hi)
        return jnp.pad(x, p)

    first, rest = lax.slice_in_dim(a, 0, 1, axis=axis), lax.slice_in_dim(a, 1, n, axis=axis)
    head, last = lax.slice_in_dim(c, 0, n - 1, axis=axis), lax.slice_in_dim(c, n - 1, n, axis=axis)
    dx = b + pad(rest, 0, 1) + pad(first, 0, n - 1) + pad(head, 1, 0) + pad(last, n - 1, 0)
    return (dx,)


_bilinear_axis.defvjp(_bilinear_axis_fwd, _bilinear_axis_bwd)


def bilinear_upsample(x, factor: int):
    """Bilinear upsampling with half-pixel centres: PyTorch `interpolate(mode='bilinear',
    align_corners=False, scale_factor=factor)` numbers (border rows clamp to the edge).

    Separable: each output phase is a fixed 2-tap blend of neighbouring rows, then of columns.
    """
    nhwc(x)
    f = factor_int(factor)
    if f == 1:
        return x
    return _bilinear_axis(_bilinear_axis(x, f, 1), f, 2)


def pixel_shuffle(x, factor: int):
    """Depth-to-space with PyTorch's channel order: input channel c*r*r + i*r + j of pixel (h, w) goes to
    output channel c at (h*r + i, w*r + j), r = factor. (N, H, W, C*r*r) -> (N, r*H, r*W, C)."""
    nhwc(x)
    r = factor_int(factor)
    n, h, w, cr = x.shape
    if cr % (r * r):
        raise ValueError(f"pixel_shuffle needs channels divisible by factor**2 = {r * r}, got {cr} channels.")
    c = cr // (r * r)
    y = x.reshape(n, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, h * r, w * r, c)


def pixel_unshuffle(x, factor: int):
    """Space-to-depth, the inverse of `pixel_shuffle` (same channel order).
    (N, r*H, r*W, C) -> (N, H, W, C*r*r)."""
    nhwc(x)
    r = factor_int(factor)
    n, hr, wr, c = x.shape
    if hr % r or wr % r:
        raise ValueError(f"pixel_unshuffle needs height and width divisible by factor={r}, got {hr}x{wr}.")
    h, w = hr // r, wr // r
    y = x.reshape(n, h, r, w, r, c).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, h, w, c * r * r)
