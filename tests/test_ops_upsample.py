"""The Upsample module: every method by name, shapes, parameter counts, output_size, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import (
    METHODS,
    Upsample,
    UpsampleSpec,
    bilinear_upsample,
    conv_transpose,
    has_params,
    max_pool_with_indices,
    max_unpool,
    nearest_upsample,
    needs_indices,
)

X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6, 4)), jnp.float32)

# method -> expected parameter count for 4 -> 3 channels at factor 2 (defaults).
PARAM_COUNTS = {
    "nearest": 0,
    "bilinear": 0,
    "bed_of_nails": 0,
    "max_unpool": 0,
    "transposed": 2 * 2 * 4 * 3 + 3,
    "resize_conv": 3 * 3 * 4 * 3 + 3,
    "pixel_shuffle": 3 * 3 * 4 * 12 + 12,
}


def _run(module, x, **kwargs):
    variables = module.init(jax.random.key(0), x, **kwargs)
    return variables, module.apply(variables, x, **kwargs)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_shapes_params_and_gradient(method):
    assert set(PARAM_COUNTS) == set(METHODS)
    features = 3 if has_params(method) else None
    kwargs = {}
    x = X
    if needs_indices(method):
        x, kwargs["indices"] = max_pool_with_indices(jnp.tile(X, (1, 2, 2, 1)))  # (2, 5, 6, 4)
    module = Upsample(UpsampleSpec(method), factor=2, features=features)
    variables = jax.jit(module.init)(jax.random.key(0), x, **kwargs)
    assert sum(p.size for p in jax.tree.leaves(variables)) == PARAM_COUNTS[method]

    @jax.jit
    def outputs(variables, x, kwargs):
        y = module.apply(variables, x, **kwargs)
        # Cropping to an odd size (the decoder side of an odd encoder map).
        y_odd = module.apply(variables, x, output_size=(9, 11), **kwargs)
        grads = jax.grad(lambda v, x: jnp.sum(module.apply(v, x, **kwargs) ** 2), (0, 1))(variables, x)
        return y, y_odd, grads

    y, y_odd, (grad_vars, grad_x) = outputs(variables, x, kwargs)
    assert y.shape == (2, 10, 12, features or 4)
    assert y_odd.shape == (2, 9, 11, features or 4)
    if not needs_indices(method):  # max_unpool reads indices in the output_size plane: not a crop
        np.testing.assert_array_equal(y_odd, y[:, :9, :11])
    assert float(jnp.abs(grad_x).sum()) > 0
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grad_vars))


def test_fixed_methods_equal_the_ops():
    _, y = _run(Upsample(UpsampleSpec("bilinear"), factor=3), X)
    np.testing.assert_array_equal(y, bilinear_upsample(X, 3))
    values, indices = max_pool_with_indices(X)  # from a 5x6 map: output_size restores the odd size
    _, y = _run(Upsample(UpsampleSpec("max_unpool")), values, indices=indices, output_size=(5, 6))
    np.testing.assert_array_equal(y, max_unpool(values, indices, (5, 6)))


def test_transposed_uses_conv_transpose_and_bilinear_init():
    module = Upsample(UpsampleSpec("transposed", init="bilinear"), factor=2, features=4)
    variables, y = _run(module, X)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (4, 4, 4, 4)  # FCN's size 2*factor for the bilinear init
    np.testing.assert_allclose(y, conv_transpose(X, kernel, 2), rtol=1e-6)
    np.testing.assert_allclose(y[:, 2:-2, 2:-2], bilinear_upsample(X, 2)[:, 2:-2, 2:-2], atol=1e-5)


@pytest.mark.parametrize("resize", ["nearest", "bilinear"])
def test_delta_resize_conv_starts_as_the_resize_of_channel_group_means(resize):
    """init='delta': the convolution's centre tap averages each group of input channels (4 -> 2: groups of 2), so at
    initialisation resize-then-convolve is the resize of the group means (exactly, at every pixel and border)."""
    module = Upsample(UpsampleSpec("resize_conv", kernel_size=3, init="delta", resize=resize), factor=3, features=2)
    _, y = _run(module, X)
    means = X.reshape(*X.shape[:3], 2, 2).mean(-1)
    np.testing.assert_allclose(
        y, (nearest_upsample if resize == "nearest" else bilinear_upsample)(means, 3), rtol=1e-6, atol=1e-6
    )


def test_icnr_pixel_shuffle_has_no_checkerboard_at_init():
    module = Upsample(UpsampleSpec("pixel_shuffle", init="icnr"), factor=2, features=3)
    _, y = _run(module, X)
    np.testing.assert_array_equal(y[:, 0::2, 0::2], y[:, 1::2, 1::2])


@pytest.mark.parametrize(
    "spec, module, call, match",
    [
        (dict(method="deconv"), {}, {}, "Unknown upsampling method"),
        (dict(method="transposed", kernel_size=0), {}, {}, "kernel_size must be a positive int"),
        (dict(method="resize_conv", init="icnr"), {}, {}, "init='icnr' is not valid"),
        (dict(method="resize_conv", resize="cubic"), {}, {}, "resize"),
        (dict(method="resize_conv", init="delta"), dict(features=3), {}, "must be a multiple of features"),
        (dict(method="transposed"), {}, {}, "needs `features`"),
        (dict(method="nearest"), dict(features=7), {}, "keeps the channel count"),
        (dict(method="transposed", init="bilinear"), dict(features=3), {}, "must be a multiple of features"),
        (dict(method="max_unpool"), {}, {}, "indices"),
        (dict(method="nearest"), {}, dict(output_size=(11, 12)), "only cropping"),
    ],
)
def test_errors_list_what_is_valid(spec, module, call, match):
    """The spec refuses a bad operator when it is made; the module refuses what depends on its input."""
    with pytest.raises(ValueError, match=match):
        Upsample(UpsampleSpec(**spec), **module).init(jax.random.key(0), X, **call)
