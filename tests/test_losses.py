"""segjax.losses against numpy formulas, finite differences, and single device == pmap == shard_map."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from segjax import losses

IGNORE = 255
C = 4


def random_problem(seed, shape=(2, 5, 7)):
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.normal(size=shape + (C,))).astype(np.float32)
    labels = rng.integers(0, C, shape).astype(np.int32)
    labels[rng.random(shape) < 0.2] = IGNORE
    return logits, labels


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_nll_and_weights(logits, labels, class_weights):
    logits = logits.astype(np.float64)
    valid = labels != IGNORE
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(np_log_softmax(logits), safe[..., None], -1)[..., 0]
    weights = valid * (np.ones(C) if class_weights is None else np.asarray(class_weights, np.float64))[safe]
    return nll, weights


WEIGHTS = np.array([0.5, 2.0, 1.0, 3.0], np.float32)


@pytest.mark.parametrize("class_weights", [None, WEIGHTS])
def test_cross_entropy_matches_numpy(class_weights):
    logits, labels = random_problem(0)
    nll, weights = np_nll_and_weights(logits, labels, class_weights)
    expected = (weights * nll).sum() / weights.sum()
    got = losses.cross_entropy_loss(logits, labels, class_weights=class_weights)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The gradient has a closed form: w_y (softmax - onehot) / sum w.
    probs = np.exp(np_log_softmax(logits.astype(np.float64)))
    onehot = np.eye(C)[np.where(labels == IGNORE, 0, labels)]
    expected_grad = weights[..., None] * (probs - onehot) / weights.sum()
    grad = jax.grad(lambda x: losses.cross_entropy_loss(x, labels, class_weights=class_weights))(logits)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


def test_cross_entropy_without_ignore_equals_optax_mean():
    logits, labels = random_problem(1)
    labels = np.where(labels == IGNORE, 1, labels)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(losses.cross_entropy_loss(logits, labels), expected, rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_matches_formula(gamma):
    logits, labels = random_problem(2)
    nll, weights = np_nll_and_weights(logits, labels, WEIGHTS)
    p_t = np.exp(-nll)
    expected = (weights * (1 - p_t) ** gamma * nll).sum() / weights.sum()
    got = losses.focal_loss(logits, labels, gamma=gamma, class_weights=WEIGHTS)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy_and_confident_pixels_have_finite_gradients():
    logits, labels = random_problem(3)
    np.testing.assert_allclose(
        losses.focal_loss(logits, labels, gamma=0.0), losses.cross_entropy_loss(logits, labels), rtol=1e-6
    )
    confident = 60.0 * np.eye(C, dtype=np.float32)[np.where(labels == IGNORE, 0, labels)]  # p_t rounds to 1
    for gamma in (0.5, 1.0, 2.0):
        value, grad = jax.value_and_grad(functools.partial(losses.focal_loss, labels=labels, gamma=gamma))(confident)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), gamma


@pytest.mark.parametrize("class_weights", [None, WEIGHTS])
def test_dice_matches_formula(class_weights):
    logits, labels = random_problem(4)
    valid = (labels != IGNORE)[..., None]
    probs = np.exp(np_log_softmax(logits.astype(np.float64))) * valid
    onehot = np.eye(C)[np.where(labels == IGNORE, 0, labels)] * valid
    axes = (0, 1, 2)
    dice = (2 * (probs * onehot).sum(axes) + 1.0) / (probs.sum(axes) + onehot.sum(axes) + 1.0)
    w = np.ones(C) if class_weights is None else class_weights
    expected = 1 - (w * dice).sum() / w.sum()
    got = losses.dice_loss(logits, labels, smooth=1.0, class_weights=class_weights)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gradients_match_finite_differences_in_float64():
    logits, labels = random_problem(5, shape=(1, 3, 4))
    config = dict(cross_entropy=0.7, dice=1.3, focal=0.4, focal_gamma=1.5, dice_smooth=0.5)
    with jax.enable_x64(True):
        x = jnp.asarray(logits, jnp.float64)

        def f(x):
            return losses.compute_loss(x, labels, losses.LossSpec(**config), class_weights=WEIGHTS)

        grad = np.asarray(jax.jit(jax.grad(f))(x))
        eps = 1e-6
        steps = eps * np.eye(logits.size).reshape((logits.size,) + logits.shape)  # all coordinates at once
        shifted = jax.jit(jax.vmap(f))
        numeric = np.asarray(shifted(x + steps) - shifted(x - steps)).reshape(logits.shape) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)
    assert np.all(grad[labels == IGNORE] == 0)


def test_compute_loss_is_the_weighted_sum_of_its_terms():
    logits, labels = random_problem(6)
    config = losses.LossSpec(dice=0.5, focal=0.25, focal_gamma=2.0)
    terms = losses.loss_terms(logits, labels, config)
    assert set(terms) == {"cross_entropy", "dice", "focal"}
    np.testing.assert_allclose(
        losses.compute_loss(logits, labels, config),
        terms["cross_entropy"] + 0.5 * terms["dice"] + 0.25 * terms["focal"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(terms["dice"], losses.dice_loss(logits, labels), rtol=1e-6)
    np.testing.assert_allclose(terms["focal"], losses.focal_loss(logits, labels, gamma=2.0), rtol=1e-6)
    assert set(losses.loss_terms(logits, labels, losses.LossSpec(cross_entropy=0.0, dice=1.0))) == {"dice"}


def test_out_of_range_label_gives_nan_and_all_ignored_gives_zero():
    logits, labels = random_problem(7)
    bad = labels.copy()
    bad[0, 0, 0] = C
    config = losses.LossSpec(cross_entropy=1.0, dice=1.0, focal=1.0)
    assert np.isnan(losses.compute_loss(logits, bad, config))
    ignored = np.full_like(labels, IGNORE)
    assert losses.cross_entropy_loss(logits, ignored) == 0.0
    assert losses.focal_loss(logits, ignored) == 0.0


def test_class_weighting_from_config():
    logits, labels = random_problem(8)
    spec = losses.LossSpec.from_config
    explicit = losses.compute_loss(logits, labels, spec({"class_weighting": "0.5, 2, 1, 3"}))
    np.testing.assert_allclose(explicit, losses.cross_entropy_loss(logits, labels, class_weights=WEIGHTS), rtol=1e-6)
    np.testing.assert_allclose(
        losses.compute_loss(logits, labels, spec({"class_weighting": [0.5, 2, 1, 3]})), explicit, rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.compute_loss(logits, labels, spec({}), class_weights=np.ones(C)),
        losses.compute_loss(logits, labels, spec(losses.default_loss_config())),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="resolve_class_weights"):
        losses.compute_loss(logits, labels, spec({"class_weighting": "median_frequency"}))
    counts, image_pixels = [10, 0, 30, 60], [100, 0, 100, 60]
    median = spec({"class_weighting": "median_frequency"})
    resolved = losses.resolve_class_weights(median, C, counts, image_pixels)
    np.testing.assert_allclose(resolved, [3.0, 1.0, 1.0, 0.3], rtol=1e-6)
    # Fixed into the spec, the weights are what the loss uses, and the spec stays hashable.
    fixed = median.with_class_weights(resolved)
    assert fixed.class_weighting == tuple(float(w) for w in resolved) and hash(fixed) == hash(spec(fixed))
    np.testing.assert_allclose(
        losses.compute_loss(logits, labels, fixed),
        losses.cross_entropy_loss(logits, labels, class_weights=resolved),
        rtol=1e-6,
    )
    assert losses.resolve_class_weights(losses.LossSpec(), C) is None
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        losses.resolve_class_weights(spec({"class_weighting": "1,2"}), C)


def test_median_frequency_weights_and_class_pixel_statistics():
    # freq = count / pixels of the images containing the class: [0.1, absent, 0.3, 1.0]; median 0.3.
    np.testing.assert_allclose(
        losses.median_frequency_weights([10, 0, 30, 60], [100, 0, 100, 60]), [3.0, 1.0, 1.0, 0.3]
    )
    np.testing.assert_allclose(losses.median_frequency_weights([10, 30, 60]), [3.0, 1.0, 0.5])  # plain frequency
    with pytest.raises(ValueError, match="class_pixel_counts"):
        losses.median_frequency_weights([0, 0])
    labels = np.array([[[0, 0], [1, IGNORE]], [[2, 2], [2, 0]], [[3, 3], [3, 3]]], np.int32)
    class_counts, image_pixels = losses.class_pixel_statistics(labels, C)
    np.testing.assert_array_equal(class_counts, [3, 1, 3, 4])
    np.testing.assert_array_equal(image_pixels, [3 + 4, 3, 4, 4])


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"cross_entropy": -1.0}, "cross_entropy"),
        ({"cross_entropy": 0.0}, "at least one"),
        ({"crossentropy": 1.0}, "Unknown loss config key"),
        ({"focal_gamma": -2.0}, "focal_gamma"),
        ({"class_weighting": "median"}, "class_weighting"),
    ],
)
def test_bad_config_raises_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        losses.LossSpec.from_config(bad)


def test_loss_spec_is_frozen_hashable_and_parsed_once():
    spec = losses.LossSpec.from_config({"dice": 1, "class_weighting": "1, 2"})
    assert spec == losses.LossSpec(dice=1.0, class_weighting=(1.0, 2.0)) and hash(spec) == hash(
        losses.LossSpec(dice=1.0, class_weighting=(1.0, 2.0))
    )
    assert isinstance(spec.dice, float) and spec.weights == {"cross_entropy": 1.0, "dice": 1.0, "focal": 0.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.dice = 2.0
    logits, labels = random_problem(9)
    with pytest.raises(TypeError, match="LossSpec"):
        losses.compute_loss(logits, labels, {"dice": 1.0})


# --------------------------------------------------------------------------------------------------------------
# Data parallelism: per-device values and gradients summed over 4 devices == the loss of the global batch.
# --------------------------------------------------------------------------------------------------------------
DEVICES = 4
FEATURES = 3
PARALLEL_CONFIGS = {
    "cross_entropy": dict(cross_entropy=1.0),
    "dice": dict(cross_entropy=0.0, dice=1.0),
    "focal": dict(cross_entropy=0.0, focal=1.0, focal_gamma=2.0),
    "combined": dict(cross_entropy=1.0, dice=0.5, focal=0.25, focal_gamma=1.5),
}


def parallel_problem():
    """A shared linear head on per-pixel features; ignore pixels and classes spread unevenly over devices."""
    rng = np.random.default_rng(10)
    shape = (2 * DEVICES, 3, 5)
    features = rng.normal(size=shape + (FEATURES,)).astype(np.float32)
    labels = rng.integers(0, C, shape).astype(np.int32)
    labels[0:2] = IGNORE  # device 0 sees only ignored pixels
    labels[2:4] = np.where(labels[2:4] == 3, 1, labels[2:4])  # device 1 never sees class 3
    labels[4:6, :2] = IGNORE
    params = {"w": rng.normal(size=(FEATURES, C)).astype(np.float32), "b": rng.normal(size=C).astype(np.float32)}
    return params, features, labels


def head_loss(params, features, labels, class_weights, config, axis_name):
    logits = features @ params["w"] + params["b"]
    return losses.compute_loss(
        logits, labels, losses.LossSpec.from_config(config), class_weights=class_weights, axis_name=axis_name
    )


def split(x):
    return x.reshape((DEVICES, -1) + x.shape[1:])


@pytest.fixture(scope="module")
def problem():
    return parallel_problem()


@pytest.mark.parametrize("name", sorted(PARALLEL_CONFIGS))
def test_pmap_sum_equals_single_device_value_and_gradients(name, problem):
    assert jax.device_count() >= DEVICES, "tests/conftest.py should simulate 4 CPU devices"
    params, features, labels = problem
    config = PARALLEL_CONFIGS[name]
    single = jax.jit(jax.value_and_grad(functools.partial(head_loss, config=config, axis_name=None), argnums=(0, 1)))
    per_device = jax.pmap(
        jax.value_and_grad(functools.partial(head_loss, config=config, axis_name="batch"), argnums=(0, 1)),
        axis_name="batch",
        in_axes=(None, 0, 0, None),
    )
    for class_weights in (np.ones(C, np.float32), WEIGHTS):
        (value, (param_grad, feature_grad)) = single(params, features, labels, class_weights)
        (values, (param_grads, feature_grads)) = per_device(params, split(features), split(labels), class_weights)
        np.testing.assert_allclose(values.sum(), value, rtol=1e-5, err_msg=name)
        for key in params:
            np.testing.assert_allclose(
                param_grads[key].sum(0), param_grad[key], rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}"
            )
        np.testing.assert_allclose(
            feature_grads.reshape(feature_grad.shape), feature_grad, rtol=1e-4, atol=1e-7, err_msg=name
        )
        assert np.all(np.isfinite(values)) and np.abs(param_grad["w"]).max() > 0


def test_shard_map_gradient_through_replicated_parameters(problem):
    params, features, labels = problem
    config = PARALLEL_CONFIGS["combined"]
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("batch",))

    def sharded_total(params, features, labels):
        per_device = jax.shard_map(
            lambda p, f, y: head_loss(p, f, y, WEIGHTS, config, "batch")[None],
            mesh=mesh,
            in_specs=(P(), P("batch"), P("batch")),
            out_specs=P("batch"),
        )
        return per_device(params, features, labels).sum()

    value, grad = jax.jit(jax.value_and_grad(sharded_total))(params, features, labels)
    expected_value, expected_grad = jax.jit(
        jax.value_and_grad(functools.partial(head_loss, config=config, axis_name=None))
    )(params, features, labels, WEIGHTS)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for key in params:
        np.testing.assert_allclose(grad[key], expected_grad[key], rtol=1e-4, atol=1e-6)


def test_default_loss_config_is_a_config_dict():
    config = losses.default_loss_config()
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.to_dict() == {
        "cross_entropy": 1.0,
        "dice": 0.0,
        "focal": 0.0,
        "focal_gamma": 2.0,
        "dice_smooth": 1.0,
        "class_weighting": "none",
    }
