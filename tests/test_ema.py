"""optimizer.ema_decay: the moving average of the weights against a plain numpy reference, its place in the
checkpoint (absent without it), validation and segjax-eval using it and saying so, and the optional, checked key.
The exact resume of a run with it is tested in tests/test_train.py."""

import logging

import flax
import jax
import numpy as np
import pytest

from segjax import config as config_lib
from segjax import losses, models, optim, run, steps, train
from segjax.evaluate import evaluate_checkpoint, evaluate_split
from segjax.task import Task

NUM_CLASSES = 3


def test_the_moving_average_equals_a_numpy_reference_over_a_few_steps():
    """ema_0 = the initial variables, ema_t = d * ema_(t-1) + (1 - d) * variables_t after each update, batch-norm
    statistics included."""
    decay = 0.75
    model = models.create_model(dict(name="unet", base_width=2, depth=1, norm="batch", dropout=0.0), NUM_CLASSES)
    optimizer = optim.OptimizerSpec(name="sgd", learning_rate=0.1, momentum=0.9, ema_decay=decay)
    schedule = optim.ScheduleSpec(10, name="constant", warmup_steps=0)
    tx, _ = optim.create_optimizer(optimizer, schedule)
    state = steps.create_train_state(model, tx, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32), ema=True)
    step = jax.jit(steps.TrainStep(model, losses.LossSpec(), optimizer, schedule, NUM_CLASSES, ignore_index=255))

    def variables(s):
        return jax.device_get({"params": s.params, "batch_stats": s.batch_stats})

    reference = variables(state)
    assert set(state.ema) == {"params", "batch_stats"}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ema), reference)
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = {
            "image": rng.normal(size=(4, 8, 8, 3)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, size=(4, 8, 8)).astype(np.int32),
        }
        state, _ = step(state, batch)
        now = variables(state)
        reference = jax.tree.map(lambda e, x: decay * np.float64(e) + (1 - decay) * np.float64(x), reference, now)
        jax.tree.map(
            lambda e, r: np.testing.assert_allclose(e, r, rtol=1e-6, atol=1e-7), jax.device_get(state.ema), reference
        )
    moved = max(jax.tree.leaves(jax.tree.map(lambda e, x: float(np.abs(e - x).max()), jax.device_get(state.ema), now)))
    assert moved > 1e-3  # the average lags the trained weights
    assert steps.inference_variables(state) is state.ema


def test_a_checkpoint_holds_the_average_only_when_the_run_keeps_one(trained_run, trained_ema_run):
    """Without ema_decay the saved state is what segjax saved before EMA existed (old checkpoints restore)."""
    for (workdir, _, _), expected in ((trained_run, False), (trained_ema_run, True)):
        task, state, _ = run.restore(workdir)
        assert ("ema" in flax.serialization.to_state_dict(state)) is expected
        assert bool(state.ema) is expected
    assert set(state.ema) == set(steps.inference_variables(state)) == {"params", "batch_stats"}
    assert (
        max(jax.tree.leaves(jax.tree.map(lambda e, p: float(np.abs(e - p).max()), state.ema["params"], state.params)))
        > 0
    )


def test_validation_and_segjax_eval_use_the_average_and_say_so(trained_ema_run, capsys, caplog, tmp_path):
    workdir, config, scores = trained_ema_run
    decay = config.optimizer.ema_decay
    report = evaluate_checkpoint(workdir, write=False)
    out = capsys.readouterr().out
    assert report["weights"] == "ema" and f"checkpoint step 4, EMA weights (optimizer.ema_decay={decay:g})" in out
    np.testing.assert_array_equal(report["scores"]["confusion_matrix"], scores["confusion_matrix"])  # validation's
    # Those are the scores of a state whose trained weights are the average.
    task, state, _ = run.restore(workdir)
    swapped = state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"], ema={})
    by_hand = evaluate_split(task, task.layout.replicate(swapped), task.info.eval_split)
    np.testing.assert_array_equal(by_hand["confusion_matrix"], scores["confusion_matrix"])
    # Training says so when it starts (one step of the same config: nothing new to compile).
    with caplog.at_level(logging.INFO, logger="segjax.train"):
        train.train_and_evaluate(config, str(tmp_path / "one_step"), max_steps_this_run=1)
    assert f"Validation uses the EMA weights (optimizer.ema_decay={decay:g})" in caplog.text


def test_a_run_started_from_an_ema_run_starts_from_its_average(trained_ema_run, tiny_config, tmp_path, caplog):
    """model.init_from copies the weights the source run evaluates with: its moving average, not its last step."""
    source, _, _ = trained_ema_run
    _, trained, _ = run.restore(source)
    config = tiny_config(model__init_from=source)
    task = Task(config, str(tmp_path))
    with caplog.at_level(logging.INFO, logger="segjax.run"):
        state = task.fresh_state(run.initial_weights(task))
    assert f"weights of the run {source} (step 4, EMA weights)" in caplog.text
    jax.tree.map(
        np.testing.assert_array_equal,
        (state.params, state.batch_stats),
        (trained.ema["params"], trained.ema["batch_stats"]),
    )


@pytest.mark.parametrize("value", [1.0, -0.1, True, "0.9", 2])
def test_ema_decay_outside_0_to_1_is_refused_naming_the_key(value):
    with pytest.raises(ValueError, match=r"optimizer.ema_decay=.* must be a number with 0 <= decay < 1"):
        optim.OptimizerSpec(ema_decay=value)


def test_ema_decay_is_optional_and_the_command_line_may_add_it(tiny_config):
    """Not a default key (the configs of earlier runs and their hashes stay as they were); absent or 0 is off."""
    assert "ema_decay" not in optim.default_optimizer_config()
    config = tiny_config()
    assert "ema_decay" not in config.optimizer
    assert optim.OptimizerSpec.from_config(config.optimizer).ema_decay == 0.0
    config_lib.override(config, "optimizer.ema_decay", "0.999")
    assert config.optimizer.ema_decay == 0.999
    assert optim.OptimizerSpec.from_config(config.optimizer).ema_decay == 0.999
    config_lib.override(config, "optimizer.ema_decay", "0")
    assert optim.OptimizerSpec.from_config(config.optimizer).ema_decay == 0.0
    with pytest.raises(config_lib.ConfigError, match="takes a value of type float"):
        config_lib.override(config, "optimizer.ema_decay", "high")
    with pytest.raises(config_lib.ConfigError, match="has no key 'optimizer.ema'"):
        config_lib.override(config, "optimizer.ema", "0.9")
