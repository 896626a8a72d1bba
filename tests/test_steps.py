"""segjax.steps: the train step of a plain segjax network (batch norm, no axis of its own) gives the same numbers
under plain jit and wrapped over 2 devices, where it binds the data-parallel axis to the batch norm itself."""

import jax
import numpy as np

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
