"""max_pool_with_indices and max_unpool against plain numpy loops (forward and gradient)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import max_pool_with_indices, max_unpool


def np_max_pool(x, window, stride):
    """Loop reference: values, flat h*W+w indices (first maximum in row-major order wins)."""
    n, h, w, c = x.shape
    ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
    values = np.zeros((n, ho, wo, c), x.dtype)
    indices = np.zeros((n, ho, wo, c), np.int64)
    for b, i, j, ch in np.ndindex(n, ho, wo, c):
        win = x[b, i * stride : i * stride + window, j * stride : j * stride + window, ch]
        pos = int(np.argmax(win))
        values[b, i, j, ch] = win.flat[pos]
        indices[b, i, j, ch] = (i * stride + pos // window) * w + j * stride + pos % window
    return values, indices


def np_unpool(values, indices, out_h, out_w):
    n, ho, wo, c = values.shape
    out = np.zeros((n, out_h * out_w, c), values.dtype)
    for b, i, j, ch in np.ndindex(n, ho, wo, c):
        out[b, indices[b, i, j, ch], ch] = values[b, i, j, ch]
    return out.reshape(n, out_h, out_w, c)


def _tied_input(shape, seed):
    """Small integers: many ties inside windows, so the first-maximum rule is exercised."""
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _pool_value_and_grad(x, cotangent, window, stride):
    (values, indices), vjp = jax.vjp(lambda x: max_pool_with_indices(x, window, stride), x)
    return values, indices, vjp((cotangent, np.zeros(indices.shape, jax.dtypes.float0)))[0]


# (window, stride): SegNet's 2/2, non-overlapping 3/3, overlapping 3/2, stride 1.
@pytest.mark.parametrize("window, stride", [(2, 2), (3, 3), (3, 2), (2, 1)])
def test_max_pool_matches_numpy(window, stride):
    x = _tied_input((2, 7, 9, 3), seed=window * 10 + stride)  # odd sizes: floored like VALID
    values_ref, indices_ref = np_max_pool(x, window, stride)
    cotangent = np.random.default_rng(0).normal(size=values_ref.shape).astype(np.float32)
    values, indices, grad = _pool_value_and_grad(jnp.asarray(x), jnp.asarray(cotangent), window, stride)
    assert indices.dtype == jnp.int32
    np.testing.assert_array_equal(values, values_ref)
    np.testing.assert_array_equal(indices, indices_ref)
    # Gradient: each window's cotangent goes to its first maximum only (accumulating on overlaps).
    grad_ref = np.zeros((2, 7 * 9, 3), np.float32)
    for b, i, j, ch in np.ndindex(*values_ref.shape):
        grad_ref[b, indices_ref[b, i, j, ch], ch] += cotangent[b, i, j, ch]
    np.testing.assert_allclose(grad, grad_ref.reshape(x.shape), rtol=1e-6, atol=1e-6)


def test_max_pool_default_stride_and_rectangular_window():
    x = _tied_input((1, 6, 7, 2), seed=3)
    v, i = max_pool_with_indices(jnp.asarray(x), window=(2, 3))
    assert v.shape == (1, 3, 2, 2)
    # A (2, 3) window with stride (2, 3): compare with numpy per-window argmax.
    for b, r, q, ch in np.ndindex(*v.shape):
        win = x[b, 2 * r : 2 * r + 2, 3 * q : 3 * q + 3, ch]
        pos = int(np.argmax(win))
        assert v[b, r, q, ch] == win.flat[pos]
        assert i[b, r, q, ch] == (2 * r + pos // 3) * 7 + 3 * q + pos % 3


@functools.partial(jax.jit, static_argnums=(2, 4))
def _unpool_value_and_grad(values, indices, output_size, cotangent, assume_in_cell=False):
    y, vjp = jax.vjp(lambda v: max_unpool(v, indices, output_size, assume_in_cell), values)
    return y, vjp(cotangent)[0]


@pytest.mark.parametrize(
    "window, stride, size, assume_in_cell",
    [
        (2, 2, (7, 9), False),  # odd encoder size: the floored last row/column stays zero (fast path)
        (2, 2, (7, 9), True),  # the same without the run-time check
        (2, 2, (8, 6), False),
        (3, 2, (7, 9), False),  # overlapping windows: indices leave their cell -> scatter path
    ],
)
def test_max_unpool_matches_numpy(window, stride, size, assume_in_cell):
    x = _tied_input((2,) + size + (3,), seed=sum(size))
    values, indices = np_max_pool(x, window, stride)
    values = values + np.random.default_rng(1).normal(size=values.shape).astype(np.float32)
    cotangent = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    y, grad = _unpool_value_and_grad(
        jnp.asarray(values), jnp.asarray(indices, jnp.int32), size, jnp.asarray(cotangent), assume_in_cell
    )
    if window == stride:
        np.testing.assert_array_equal(y, np_unpool(values, indices, *size))
        # d/dvalues = the cotangent read back at each index.
        grad_ref = np.take_along_axis(cotangent.reshape(2, -1, 3), indices.reshape(2, -1, 3), axis=1)
        np.testing.assert_allclose(grad, grad_ref.reshape(values.shape))
    else:
        # Overlapping windows can share an index, with different processed values: only check the
        # positions written once, and that every index is written by one of its values.
        flat_idx = indices.reshape(2, -1, 3)
        counts = np.zeros((2, size[0] * size[1], 3), int)
        for b, k, ch in np.ndindex(*flat_idx.shape):
            counts[b, flat_idx[b, k, ch], ch] += 1
        y_flat = np.asarray(y).reshape(2, -1, 3)
        ref_flat = np_unpool(values, indices, *size).reshape(2, -1, 3)
        np.testing.assert_array_equal(y_flat[counts <= 1], ref_flat[counts <= 1])
        vals = values.reshape(2, -1, 3)
        for b, k, ch in zip(*np.nonzero(counts > 1), strict=True):
            assert y_flat[b, k, ch] in vals[b][flat_idx[b, :, ch] == k, ch]
        # Gradient of values whose index is written once: the cotangent at that index.
        unique = np.take_along_axis(counts, flat_idx, axis=1) == 1
        grad_ref = np.take_along_axis(cotangent.reshape(2, -1, 3), flat_idx, axis=1)
        np.testing.assert_allclose(np.asarray(grad).reshape(2, -1, 3)[unique], grad_ref[unique])


def test_pool_then_unpool_round_trip_keeps_maxima():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 9, 7, 4)), jnp.float32)
    values, indices = max_pool_with_indices(x)
    y = jax.jit(max_unpool, static_argnums=2)(values, indices, (9, 7))
    assert y.shape == x.shape
    kept = np.asarray(y) != 0
    np.testing.assert_array_equal(np.asarray(y)[kept], np.asarray(x)[kept])
    assert kept.sum() == values.size
    assert not kept[:, 8, :, :].any() and not kept[:, :, 6, :].any()


def test_errors():
    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="window"):
        max_pool_with_indices(x, window=0)
    with pytest.raises(ValueError, match="smaller than the window"):
        max_pool_with_indices(x, window=5)
    v, i = max_pool_with_indices(x)
    with pytest.raises(ValueError, match="output_size"):
        max_unpool(v, i, (1, 1))
    with pytest.raises(ValueError, match="indices shape"):
        max_unpool(v, i[:, :1], (4, 4))
