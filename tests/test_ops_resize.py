"""Parameter-free upsamplers against their textbook formulas (numpy), forward and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import bed_of_nails, bilinear_upsample, nearest_upsample, pixel_shuffle, pixel_unshuffle

X = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)


def interp_matrix(n, f):
    """(f*n, n) matrix of PyTorch's bilinear, align_corners=False, scale_factor=f along one axis."""
    a = np.zeros((f * n, n))
    for o in range(f * n):
        src = max((o + 0.5) / f - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n - 1)
        lam = src - i0
        a[o, i0] += 1 - lam
        a[o, i1] += lam
    return a


def _vjp(fn, x, cotangent):
    y, vjp = jax.vjp(fn, jnp.asarray(x))
    return np.asarray(y), np.asarray(vjp(jnp.asarray(cotangent))[0])


@pytest.mark.parametrize("factor, x", [(1, X), (2, X), (3, X), (4, X[:1, :1, :2])])
def test_bilinear_matches_pytorch_formula(factor, x):
    # X[:1, :1, :2] is one row (both neighbours clamp to it) and two columns.
    ah, aw = interp_matrix(x.shape[1], factor), interp_matrix(x.shape[2], factor)
    ref = np.einsum("oh,nhwc,pw->nopc", ah, x, aw)
    cot = np.random.default_rng(factor).normal(size=ref.shape).astype(np.float32)
    y, grad = _vjp(lambda x: bilinear_upsample(x, factor), x, cot)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    np.testing.assert_allclose(grad, np.einsum("oh,nopc,pw->nhwc", ah, cot, aw), atol=1e-4)


def test_bilinear_matches_jax_image_resize():
    y = bilinear_upsample(jnp.asarray(X), 2)
    np.testing.assert_allclose(y, jax.image.resize(X, (2, 10, 14, 3), "bilinear"), atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3])
def test_nearest_and_bed_of_nails(factor):
    cot = np.random.default_rng(0).normal(size=(2, 5 * factor, 7 * factor, 3)).astype(np.float32)
    y, grad = _vjp(lambda x: nearest_upsample(x, factor), X, cot)
    np.testing.assert_array_equal(y, X.repeat(factor, 1).repeat(factor, 2))
    np.testing.assert_allclose(grad, cot.reshape(2, 5, factor, 7, factor, 3).sum((2, 4)), rtol=1e-5, atol=1e-5)

    y, grad = _vjp(lambda x: bed_of_nails(x, factor), X, cot)
    ref = np.zeros_like(cot)
    ref[:, ::factor, ::factor] = X
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(grad, cot[:, ::factor, ::factor])


def test_pixel_shuffle_channel_order_is_pytorch():
    r, c = 2, 3
    x = np.random.default_rng(1).normal(size=(2, 4, 5, c * r * r)).astype(np.float32)
    y = np.asarray(pixel_shuffle(jnp.asarray(x), r))
    assert y.shape == (2, 8, 10, c)
    for n, h, w, ch, i, j in np.ndindex(2, 4, 5, c, r, r):
        assert y[n, h * r + i, w * r + j, ch] == x[n, h, w, ch * r * r + i * r + j]
    np.testing.assert_array_equal(pixel_unshuffle(jnp.asarray(y), r), x)
    # Gradient of a permutation is the inverse permutation.
    _, grad = _vjp(lambda x: pixel_shuffle(x, r), x, y)
    np.testing.assert_array_equal(grad, x)


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="factor"):
        nearest_upsample(jnp.zeros((1, 2, 2, 1)), 0)
    with pytest.raises(ValueError, match="divisible by factor"):
        pixel_shuffle(jnp.zeros((1, 2, 2, 3)), 2)
    with pytest.raises(ValueError, match="divisible by factor"):
        pixel_unshuffle(jnp.zeros((1, 3, 2, 1)), 2)
    with pytest.raises(ValueError, match="NHWC"):
        bilinear_upsample(jnp.zeros((2, 2, 1)), 2)
