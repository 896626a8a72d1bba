"""segjax.steps: the train step of a plain segjax network (batch norm, no axis of its own) gives the same numbers
under plain jit and wrapped over 2 devices, where it binds the data-parallel axis to the batch norm itself; the
inference modes (sliding windows, test-time flips and scales) of `InferenceSpec`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from segjax import losses, models, optim, parallel, steps

NUM_CLASSES = 3


def _batches():
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.normal(size=(4, 8, 8, 3)).astype(np.float32) * 2 + 1,
            "label": rng.integers(0, NUM_CLASSES, size=(4, 8, 8)).astype(np.int32),
        }
        for _ in range(2)
    ]


def test_train_step_with_and_without_the_axis_gives_the_same_numbers():
    model = models.create_model(dict(name="unet", base_width=2, depth=1, norm="batch", dropout=0.0), NUM_CLASSES)
    assert model.norm.axis_name is None
    optimizer = optim.OptimizerSpec(name="sgd", learning_rate=0.1, momentum=0.9)
    schedule = optim.ScheduleSpec(10, name="poly", warmup_steps=1)
    tx, _ = optim.create_optimizer(optimizer, schedule)
    state = steps.create_train_state(model, tx, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
    step = steps.TrainStep(model, losses.LossSpec(), optimizer, schedule, NUM_CLASSES, ignore_index=255)

    single, history = state, []
    jitted = jax.jit(step)
    for batch in _batches():
        single, metrics = jitted(single, batch)
        history.append(jax.device_get(metrics))

    dp = parallel.DataParallel("sharded", num_devices=2)
    wrapped, wrapped_history = dp.replicate(state), []
    fn = dp.wrap(step, returns_state=True)
    for batch in _batches():
        wrapped, metrics = fn(wrapped, dp.shard_batch(batch))
        wrapped_history.append(dp.unreplicate(metrics))
    wrapped = dp.unreplicate(wrapped)

    np.testing.assert_allclose([m["loss"] for m in wrapped_history], [m["loss"] for m in history], rtol=1e-5)
    for a, b in zip(history, wrapped_history, strict=True):
        np.testing.assert_array_equal(a["confusion"], b["confusion"])
    # Batch statistics of the global batch (not of each device's half), and the same parameters after two updates.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
        (single.params, single.batch_stats),
        (wrapped.params, wrapped.batch_stats),
    )
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), state.batch_stats, wrapped.batch_stats
    )
    assert min(jax.tree.leaves(moved)) > 1e-4  # the statistics were updated, so they were compared for real


# --- inference modes ---------------------------------------------------------------------------------------------


class PixelNet(nn.Module):
    """A 1x1 convolution: no spatial context, so no border effects, and it commutes with flips."""

    num_classes: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Conv(self.num_classes, (1, 1))(x)


def _pixel_net(seed=0):
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 37, 53, 3)), jnp.float32)
    model = PixelNet()
    return model, model.init(jax.random.key(seed), x), x


def test_sliding_windows_equal_whole_image_inference_without_border_effects():
    model, variables, x = _pixel_net()
    whole = steps.predict_scores(model, variables, x, steps.InferenceSpec("whole"))
    for window, stride in [((16, 16), (10, 10)), ((37, 20), (37, 7)), ((8, 53), (5, 53))]:
        slide = steps.predict_scores(model, variables, x, steps.InferenceSpec("slide", window, stride))
        np.testing.assert_allclose(slide, whole, rtol=1e-5, atol=1e-5, err_msg=str(window))


def test_flip_tta_of_a_flip_symmetric_model_changes_nothing():
    model, variables, x = _pixel_net(1)
    plain = jax.nn.softmax(steps.predict_scores(model, variables, x, steps.InferenceSpec("whole")), -1)
    flipped = steps.predict_scores(model, variables, x, steps.InferenceSpec("whole", flip=True))
    np.testing.assert_allclose(flipped, plain, rtol=1e-5, atol=1e-6)
    # Scale 1 alone is no augmentation; scales average probabilities resized back to the image.
    multi = steps.predict_scores(model, variables, x, steps.InferenceSpec("whole", scales=(0.5, 1.0, 1.5)))
    assert multi.shape == plain.shape and np.allclose(np.asarray(multi).sum(-1), 1.0, atol=1e-5)


def test_slide_averages_overlaps_and_ends_windows_at_the_border():
    """A model that reports each window's origin: the average over windows follows mmsegmentation's grid."""

    class Ones(nn.Module):
        stride: int = 1

        @nn.compact
        def __call__(self, x, train: bool = False):
            return jnp.ones(x.shape[:3] + (1,))

    x = jnp.zeros((1, 10, 7, 3))
    spec = steps.InferenceSpec("slide", (6, 4), (3, 3))
    out = np.asarray(steps.predict_scores(Ones(), {}, x, spec))
    np.testing.assert_allclose(out, 1.0)  # every pixel covered, the overlaps averaged (not summed)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mode="tiled"), "eval.mode='tiled'"),
        (dict(mode="slide", window=(8, 8), stride=(9, 4)), "must not exceed"),
        (dict(mode="slide", window=None, stride=(4, 4)), "eval.window=None"),
        (dict(scales=(1.0, -0.5)), "positive factors"),
    ],
)
def test_inference_spec_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        steps.InferenceSpec(**kwargs)
