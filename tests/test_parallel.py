"""pmap == sharded == one device: the same losses, metrics and parameters after a few steps (4 simulated CPUs)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from segjax import losses, optim, parallel, steps

NUM_CLASSES = 3


class TinyNet(nn.Module):
    """Conv + synchronised batch norm + dropout-free head: enough to exercise every collective."""

    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(6, (3, 3), use_bias=False)(x)  # a bias before batch norm would get no gradient
        x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name, momentum=0.5)(x)
        return nn.Conv(NUM_CLASSES, (1, 1))(nn.relu(x))


def _optimizer():
    opt = optim.OptimizerSpec(
        **dict(
            name="sgd",
            learning_rate=0.2,
            momentum=0.9,
            nesterov=False,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=1e-3,
            grad_clip_norm=5.0,
        )
    )
    sched = optim.ScheduleSpec(10, name="poly", warmup_steps=1, poly_power=0.9, end_learning_rate_factor=0.0)
    return opt, sched


def _batches():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(3):
        labels = rng.integers(0, NUM_CLASSES, size=(8, 7, 9)).astype(np.int32)
        labels[:3, :4] = 255  # ignored pixels unevenly spread over the devices
        out.append({"image": rng.normal(size=(8, 7, 9, 3)).astype(np.float32), "label": labels})
    return out


def _run(mode):
    optimizer, schedule = _optimizer()
    loss = losses.LossSpec(dice=0.5)  # a loss with global statistics, not only a per-pixel mean
    model = TinyNet(None if mode == "single" else parallel.AXIS)
    tx, _ = optim.create_optimizer(optimizer, schedule)
    state = steps.create_train_state(model, tx, jax.random.PRNGKey(0), np.zeros((1, 7, 9, 3), np.float32))
    train_step = steps.TrainStep(model, loss, optimizer, schedule, NUM_CLASSES, ignore_index=255)
    eval_step = steps.EvalStep(model, NUM_CLASSES, ignore_index=255, boundary_tolerance=1)
    batches = _batches()
    eval_batch = dict(batches[0], valid=np.array([True] * 6 + [False] * 2))
    history = []
    if mode == "single":
        step = jax.jit(train_step)
        for batch in batches:
            state, metrics = step(state, batch)
            history.append(jax.device_get(metrics))
        stats = jax.jit(eval_step)(state, eval_batch)
        return history, jax.device_get(state), jax.device_get(stats)
    dp = parallel.DataParallel(mode)
    step = dp.wrap(train_step, returns_state=True, donate_state=True)
    state = dp.replicate(state)
    for batch in batches:
        state, metrics = step(state, dp.shard_batch(batch))
        history.append(dp.unreplicate(metrics))
    stats = dp.wrap(eval_step)(state, dp.shard_batch(eval_batch))
    return history, dp.unreplicate(state), dp.unreplicate(stats)


@pytest.fixture(scope="module")
def runs():
    assert jax.local_device_count() == 4, "tests/conftest.py should simulate 4 CPU devices"
    return {mode: _run(mode) for mode in ("single", "pmap", "sharded")}


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_losses_and_metrics_match_single_device(runs, mode):
    single, other = runs["single"][0], runs[mode][0]
    np.testing.assert_allclose([m["loss"] for m in other], [m["loss"] for m in single], rtol=1e-5)
    np.testing.assert_allclose([m["grad_norm"] for m in other], [m["grad_norm"] for m in single], rtol=1e-4)
    for a, b in zip(single, other, strict=True):
        np.testing.assert_array_equal(a["confusion"], b["confusion"])
    # The confusion matrix counts every non-ignored pixel of the global batch once.
    assert single[0]["confusion"].sum() == 8 * 7 * 9 - 3 * 4 * 9


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_parameters_and_batch_stats_match_single_device(runs, mode):
    single, other = runs["single"][1], runs[mode][1]
    assert int(other.step) == int(single.step) == 3
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
        (single.params, single.batch_stats, single.opt_state),
        (other.params, other.batch_stats, other.opt_state),
    )
    # Training moved the parameters (a no-op step would also "match").
    tx, _ = optim.create_optimizer(*_optimizer())
    fresh = steps.create_train_state(TinyNet(), tx, jax.random.PRNGKey(0), np.zeros((1, 7, 9, 3), np.float32))
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), fresh.params, other.params)
    assert min(jax.tree.leaves(moved)) > 1e-4


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_eval_statistics_match_single_device_and_skip_padding(runs, mode):
    single, other = runs["single"][2], runs[mode][2]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), single, other)
    # Padding examples (valid=False) count nowhere: 6 examples' pixels minus the ignored ones.
    assert single["confusion"].sum() == 6 * 7 * 9 - 3 * 4 * 9
    assert int(single["boundary"]["image_count"]) <= 6


def test_batch_not_divisible_by_devices_is_a_clear_error():
    dp = parallel.DataParallel("pmap")
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 devices"):
        dp.check_batch_size(6)
    with pytest.raises(ValueError, match="Unknown parallelism 'spmd'"):
        parallel.DataParallel("spmd")
    with pytest.raises(ValueError, match="num_devices=5"):
        parallel.DataParallel("sharded", num_devices=5)
