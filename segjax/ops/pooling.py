"""Max pooling that also returns where each maximum came from, and the unpooling that puts values back.

Indices follow PyTorch's `max_pool2d(return_indices=True)`: int32, the flat index h * W + w of the
maximum inside its (n, c) plane of the input; the first maximum in row-major window order wins ties
(NaN is not propagated: comparisons are strict `>`).

Why not `nn.max_pool`: its gradient is XLA's select-and-scatter, which is slow on CPU, and it gives no
indices. Here non-overlapping pooling (window == stride, the SegNet case) is a reshape plus s*s
elementwise comparisons, and its gradient is a one-hot select reshaped back: no scatter anywhere.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from segjax.ops._checks import nhwc, pair


def _cell_max(x6, sh: int, sw: int):
    """Running max over the cells of x6 (N, Ho, sh, Wo, sw, C): (values, position a*sw + b)."""
    best = x6[:, :, 0, :, 0, :]
    arg = jnp.zeros(best.shape, jnp.int32)
    for a in range(sh):
        for b in range(sw):
            if a == 0 and b == 0:
                continue
            v = x6[:, :, a, :, b, :]
            better = v > best
            best = jnp.where(better, v, best)
            arg = jnp.where(better, jnp.int32(a * sw + b), arg)
    return best, arg


def _one_hot_cells(values, code, sh: int, sw: int, row_step: int):
    """(N, Ho, Wo, C) values placed at position (a, b) of their sh x sw cell, zeros elsewhere, where
    `code` == a * row_step + b: (N, Ho * sh, Wo * sw, C)."""
    n, ho, wo, c = values.shape
    zero = jnp.zeros((), values.dtype)
    cells = [jnp.where(code == a * row_step + b, values, zero) for a in range(sh) for b in range(sw)]
    y = jnp.stack(cells, axis=3).reshape(n, ho, wo, sh, sw, c)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, ho * sh, wo * sw, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pool_cells(x, sh: int, sw: int):
    """Max over non-overlapping sh x sw cells of x (H, W multiples of the cell): (values, arg in cell)."""
    n, h, w, c = x.shape
    return _cell_max(x.reshape(n, h // sh, sh, w // sw, sw, c), sh, sw)


def _pool_cells_fwd(x, sh, sw):
    values, arg = _pool_cells(x, sh, sw)
    return (values, arg), arg


def _pool_cells_bwd(sh, sw, arg, cotangents):
    g_values, _ = cotangents
    return (_one_hot_cells(g_values, arg, sh, sw, sw),)


_pool_cells.defvjp(_pool_cells_fwd, _pool_cells_bwd)


def max_pool_with_indices(x, window=2, stride=None):
    """Max pooling (VALID: odd sizes are floored) that also returns the argmax indices.

    Args:
      x: (N, H, W, C).
      window: int or (height, width) of the pooling window.
      stride: int or pair; defaults to `window` (non-overlapping pooling).
    Returns:
      values (N, Ho, Wo, C) with Ho = (H - window) // stride + 1, and int32 indices of the same shape:
      flat h * W + w position of each maximum in the input plane. The gradient reaches exactly one input
      per window (the first maximum).
    """
    nhwc(x)
    kh, kw = pair(window, "window")
    sh, sw = pair(window if stride is None else stride, "stride")
    n, h, w, c = x.shape
    if h < kh or w < kw:
        raise ValueError(f"max_pool_with_indices: input {h}x{w} is smaller than the window {kh}x{kw}.")
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    rows = jnp.arange(ho, dtype=jnp.int32)[:, None] * sh
    cols = jnp.arange(wo, dtype=jnp.int32)[None, :] * sw
    origin = (rows * w + cols)[None, :, :, None]  # flat index of each window's top-left input pixel
    if (kh, kw) == (sh, sw):
        values, arg = _pool_cells(x[:, : ho * sh, : wo * sw, :], sh, sw)
        a, b = jnp.divmod(arg, jnp.int32(sw))
        return values, origin + a * w + b
    # Overlapping or gapped windows: running max over the kh*kw strided views of x.
    best = arg = None
    for a in range(kh):
        for b in range(kw):
            v = lax.slice(x, (0, a, b, 0), (n, a + (ho - 1) * sh + 1, b + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
            if best is None:
                best, arg = v, jnp.zeros(v.shape, jnp.int32)
            else:
                better = v > best
                best = jnp.where(better, v, best)
                arg = jnp.where(better, jnp.int32(a * w + b), arg)
    return best, origin + arg


def _unpool_scatter(values, indices, out_h: int, out_w: int):
    """General max unpooling: scatter each value to its flat index (duplicates: one of the equal values)."""
    n, _, _, c = values.shape
    flat = indices.reshape(n, -1, c)
    out = jnp.zeros((n, out_h * out_w, c), values.dtype)
    batch = jnp.arange(n)[:, None, None]
    chan = jnp.arange(c)[None, None, :]
    out = out.at[batch, flat, chan].set(values.reshape(n, -1, c), mode="drop")
    return out.reshape(n, out_h, out_w, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _unpool_cells(values, local, out_h: int, out_w: int):
    """Max unpooling when every index lies in its own cell: `local` is its offset a * out_w + b from the
    cell's top-left pixel. A one-hot select per cell position, then a reshape back to (N, H, W, C)."""
    _, ho, wo, _ = values.shape
    sh, sw = out_h // ho, out_w // wo
    y = _one_hot_cells(values, local, sh, sw, out_w)
    return jnp.pad(y, ((0, 0), (0, out_h - ho * sh), (0, out_w - wo * sw), (0, 0)))


def _unpool_cells_fwd(values, local, out_h, out_w):
    return _unpool_cells(values, local, out_h, out_w), local


def _unpool_cells_bwd(out_h, out_w, local, g):
    """Each value's gradient is g at the pixel it was written to: strided views of g, one per cell
    position, selected by `local` (the transpose XLA derives from the forward's stack is slower)."""
    n, ho, wo, c = local.shape
    sh, sw = out_h // ho, out_w // wo
    g6 = g[:, : ho * sh, : wo * sw, :].reshape(n, ho, sh, wo, sw, c)
    dv = jnp.zeros(local.shape, g.dtype)
    for a in range(sh):
        for b in range(sw):
            dv = jnp.where(local == a * out_w + b, g6[:, :, a, :, b, :], dv)
    return dv, None


_unpool_cells.defvjp(_unpool_cells_fwd, _unpool_cells_bwd)


def max_unpool(values, indices, output_size, assume_in_cell: bool = False):
    """Zeros of spatial size `output_size` with `values` written at the flat `indices` (SegNet's decoder).

    Args:
      values: (N, Ho, Wo, C), e.g. the pooled (and processed) features.
      indices: int (N, Ho, Wo, C) flat h * W + w positions in the (H, W) output plane, as returned by
        `max_pool_with_indices` on the encoder feature map of size (H, W).
      output_size: (H, W) of the output, typically the encoder map's size (odd sizes work: the rows and
        columns that pooling floored away stay zero).
      assume_in_cell: skip the run-time check below and take the fast path. Only for indices of
        non-overlapping `max_pool_with_indices` of a map of size `output_size` (as inside segjax's
        networks): other indices would be written to wrong pixels. Saves the scatter fallback, whose
        compilation is slow (SegNet's training step compiled about 3 s faster without it on CPU).
    Returns:
      (N, H, W, C); differentiable in `values`.

    Fast path: when every index lies inside its own cell of size (H // Ho) x (W // Wo) (always the case for
    indices from non-overlapping pooling) the output is a one-hot select and a reshape; otherwise (checked at
    run time with `lax.cond`) a scatter. Out-of-range indices are dropped.
    """
    nhwc(values, "values")
    if indices.shape != values.shape:
        raise ValueError(
            f"max_unpool: indices shape {tuple(indices.shape)} must equal values shape {tuple(values.shape)}."
        )
    out_h, out_w = pair(tuple(output_size), "output_size")
    _, ho, wo, _ = values.shape
    if ho > out_h or wo > out_w:
        raise ValueError(f"max_unpool: output_size {(out_h, out_w)} is smaller than the pooled size {(ho, wo)}.")
    indices = indices.astype(jnp.int32)
    sh, sw = out_h // ho, out_w // wo
    # Offset of each index from the top-left pixel of its own cell; inside the cell it is one of
    # a * out_w + b (a < sh, b < sw). Compared, not divided: integer division is slow on CPU.
    rows = jnp.arange(ho, dtype=jnp.int32)[None, :, None, None] * (sh * out_w)
    cols = jnp.arange(wo, dtype=jnp.int32)[None, None, :, None] * sw
    local = indices - rows - cols

    if assume_in_cell:
        return _unpool_cells(values, local, out_h, out_w)
    in_cell = functools.reduce(jnp.logical_or, [local == a * out_w + b for a in range(sh) for b in range(sw)])
    return lax.cond(
        jnp.all(in_cell),
        lambda v: _unpool_cells(v, local, out_h, out_w),
        lambda v: _unpool_scatter(v, indices, out_h, out_w),
        values,
    )
