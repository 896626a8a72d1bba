"""segjax.ops.conv_transpose against jax.lax.conv_transpose: forward and both gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segjax.ops import conv_transpose

DN = ("NHWC", "HWIO", "NHWC")


def _reference(x, kernel, stride, padding):
    return lax.conv_transpose(x, kernel, stride, padding, dimension_numbers=DN)


def _ours(x, kernel, stride, padding):
    return conv_transpose(x, kernel, stride, padding)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _value_and_grads(fn, x, kernel, cotangent, stride, padding):
    y, vjp = jax.vjp(lambda x, k: fn(x, k, stride, padding), x, kernel)
    return (y,) + vjp(cotangent)


def _check(x_shape, kernel_shape, stride, padding, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    stride = tuple(stride)
    y_ref = jax.eval_shape(functools.partial(_reference, stride=stride, padding=padding), x, kernel)
    cotangent = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
    ref = _value_and_grads(_reference, x, kernel, cotangent, stride, padding)
    ours = _value_and_grads(_ours, x, kernel, cotangent, stride, padding)
    for name, a, b in zip(("output", "d/dx", "d/dkernel"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_matches_lax_all_kernel_sizes(padding, stride):
    # Odd, non-square input; every square kernel size 1..5 at this stride.
    for k in range(1, 6):
        _check((2, 5, 4, 3), (k, k, 3, 2), (stride, stride), padding, seed=k)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 1), (0, 3))])
def test_non_square_kernel_and_stride(padding):
    _check((1, 3, 6, 2), (2, 5, 2, 3), (3, 2), padding)
    _check((2, 4, 3, 1), (4, 1, 1, 2), (1, 3), padding, seed=1)


def test_bfloat16_runs_and_is_close():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 4, 4, 2)), jnp.bfloat16)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.bfloat16)
    y = conv_transpose(x, k, 2)
    assert y.dtype == jnp.bfloat16
    ref = _reference(x.astype(jnp.float32), k.astype(jnp.float32), (2, 2), "SAME")
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=0.05, atol=0.1)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(padding="FULL"), "padding"),
        (dict(stride=0), "stride"),
        (dict(kernel=jnp.zeros((2, 2, 5, 1))), "input channels"),
    ],
)
def test_errors_name_the_bad_value(bad, match):
    args = dict(x=jnp.zeros((1, 3, 3, 2)), kernel=jnp.zeros((2, 2, 2, 1)), stride=2, padding="SAME")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        conv_transpose(**args)
