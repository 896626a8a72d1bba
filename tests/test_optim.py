"""segjax.optim: schedules follow their formulas; weight decay, clipping and frozen parameters behave as documented;
the specs are frozen, hashable and validated."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax import optim
from segjax.task import Task


def _schedule(name, warmup=10, steps=100, lr=1.0, end=0.0, power=0.9):
    spec = optim.ScheduleSpec(steps, name=name, warmup_steps=warmup, poly_power=power, end_learning_rate_factor=end)
    return optim.create_schedule(spec, lr)


def test_schedules_follow_their_formulas():
    poly = _schedule("poly")
    assert float(poly(0)) == pytest.approx(0.1) and float(poly(10)) == pytest.approx(1.0)
    assert float(poly(55)) == pytest.approx((1 - 45 / 90) ** 0.9, rel=1e-5)
    assert float(poly(100)) == pytest.approx(0.0, abs=1e-7)
    cosine = _schedule("warmup_cosine", end=0.1)
    assert float(cosine(5)) == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert float(cosine(55)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)
    assert float(cosine(100)) == pytest.approx(0.1, rel=1e-5)
    assert float(_schedule("constant", warmup=0)(77)) == 1.0
    with pytest.raises(ValueError, match="warmup_steps=100 must be >= 0 and smaller than num_train_steps=100"):
        _schedule("poly", warmup=100)


CONSTANT = optim.ScheduleSpec(10, name="constant", warmup_steps=0)


def test_weight_decay_skips_biases_and_norm_scales():
    params = {
        "conv": {"kernel": np.ones((3, 3, 2, 2), np.float32), "bias": np.ones(2, np.float32)},
        "norm": {"scale": np.ones(2, np.float32)},
    }
    zero = jax.tree.map(np.zeros_like, params)
    for name in ("sgd", "adam", "adamw"):
        spec = optim.OptimizerSpec(name=name, learning_rate=0.1, momentum=0.0, weight_decay=0.5)
        tx, _ = optim.create_optimizer(spec, CONSTANT)
        updates, _ = tx.update(zero, tx.init(params), params)  # zero gradient: only weight decay moves anything
        assert np.all(np.asarray(updates["conv"]["kernel"]) < 0), name
        assert np.all(np.asarray(updates["conv"]["bias"]) == 0) and np.all(np.asarray(updates["norm"]["scale"]) == 0)


def test_gradient_clipping():
    spec = optim.OptimizerSpec(name="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=1.0)
    tx, _ = optim.create_optimizer(spec, CONSTANT)
    params = {"w": np.zeros(2, np.float32)}
    updates, _ = tx.update({"w": np.array([3.0, 4.0], np.float32)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0)


def test_optimizer_and_schedule_specs_are_frozen_hashable_and_validated(tiny_config):
    config = tiny_config("unet.py", "small")
    optimizer, schedule = optim.OptimizerSpec.from_config(config.optimizer), optim.ScheduleSpec.from_config(config)
    again = tiny_config("unet.py", "small")
    assert (optimizer, schedule) == (
        optim.OptimizerSpec.from_config(again.optimizer),
        optim.ScheduleSpec.from_config(again),
    )
    assert hash(optimizer) == hash(optim.OptimizerSpec.from_config(config.optimizer))
    assert optimizer.grad_clip_norm is None and schedule.num_train_steps == config.num_train_steps
    config.optimizer.grad_clip_norm = 0.0  # 0 is off, the same spec as None
    assert optim.OptimizerSpec.from_config(config.optimizer) == optimizer
    with pytest.raises(ValueError, match="learning_rate=-1.0 must be positive"):
        optim.OptimizerSpec(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"Unknown schedule key\(s\) \['warmup'\]"):
        optim.ScheduleSpec.from_config(ml_collections.ConfigDict({"num_train_steps": 5, "schedule": {"warmup": 1}}))


def test_frozen_parameters_get_no_update_and_no_decay():
    """optimizer.frozen: FCN's fixed bilinear deconvolutions. Matching parameters stay exactly as they were under
    SGD with momentum and coupled weight decay; the others move; a bad or unmatched pattern is refused by name."""
    params = {
        "upscore_final": {"upsample": {"kernel": jnp.full((3, 3), 2.0)}},
        "score_fr": {"kernel": jnp.full((3, 3), 2.0), "bias": jnp.ones(3)},
    }
    spec = optim.OptimizerSpec(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.1, frozen="upscore")
    tx, _ = optim.create_optimizer(spec, CONSTANT)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["upscore_final"]["upsample"]["kernel"], 2.0)
    # Unfrozen: lr * (grad + decay * w) each step, with momentum (sgd's trace: m = g + 0.9 m).
    assert float(params["score_fr"]["kernel"][0, 0]) < 2.0 - 0.1 * 3
    with pytest.raises(ValueError, match=r"optimizer.frozen='\(' is not a regular expression"):
        optim.OptimizerSpec(frozen="(")
    unmatched, _ = optim.create_optimizer(optim.OptimizerSpec(frozen="decoder"), CONSTANT)
    with pytest.raises(ValueError, match=r"matches no parameter; names look like score_fr/bias"):
        unmatched.init(params)


def test_lr_multipliers_scale_the_update_exactly():
    """optimizer.lr_multipliers: with the same parameters and gradients, a matched parameter's update is exactly k
    times an unmatched one's, every step (SGD with momentum and coupled decay; Adam likewise); the first matching
    pattern decides; with frozen parameters they stay frozen. Unmatched or bad patterns and factors are refused."""
    params = {name: {"kernel": jnp.full((3, 3), 2.0), "bias": jnp.ones(3)} for name in ("encoder", "head", "aux")}
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), params)
    for name in ("sgd", "adam"):
        spec = optim.OptimizerSpec(
            name=name, learning_rate=0.1, weight_decay=0.1, lr_multipliers={"^head/": 10.0, "^(head|aux)/": 3.0}
        )
        assert spec.lr_multipliers == (("^head/", 10.0), ("^(head|aux)/", 3.0))  # a mapping becomes hashable pairs
        tx, _ = optim.create_optimizer(spec, CONSTANT)
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
            for key in ("kernel", "bias"):
                encoder = np.asarray(updates["encoder"][key])
                assert np.any(encoder != 0)
                np.testing.assert_array_equal(updates["head"][key], encoder * np.float32(10.0))
                np.testing.assert_array_equal(updates["aux"][key], encoder * np.float32(3.0))
    both = optim.OptimizerSpec(name="sgd", frozen="^aux/", lr_multipliers=(("^head/", 10.0),))
    tx, _ = optim.create_optimizer(both, CONSTANT)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["aux"]["kernel"], 0.0)
    np.testing.assert_array_equal(updates["head"]["kernel"], updates["encoder"]["kernel"] * np.float32(10.0))
    unmatched, _ = optim.create_optimizer(optim.OptimizerSpec(lr_multipliers=(("^decoder/", 10.0),)), CONSTANT)
    with pytest.raises(
        ValueError, match=r"lr_multipliers: '\^decoder/' matches no parameter; names look like aux/bias"
    ):
        unmatched.init(params)
    with pytest.raises(ValueError, match=r"lr_multipliers: '\(' is not a regular expression"):
        optim.OptimizerSpec(lr_multipliers={"(": 2.0})
    with pytest.raises(ValueError, match=r"the factor of '\^head/' must be a positive number, got 0"):
        optim.OptimizerSpec(lr_multipliers={"^head/": 0})
    with pytest.raises(ValueError, match=r"must be \{pattern: factor\} or \(\(pattern, factor\), ...\)"):
        optim.OptimizerSpec(lr_multipliers="^head/")


def test_lr_multipliers_is_optional_in_a_config_and_survives_the_json_round_trip(tiny_config):
    """Left out of the defaults (old runs' configs and hashes unchanged): absent means none. configs/deeplab.py sets
    it; its stored JSON form (lists) reads back to the same spec."""
    assert "lr_multipliers" not in optim.default_optimizer_config()
    assert optim.OptimizerSpec.from_config(tiny_config("unet.py").optimizer).lr_multipliers == ()
    config = tiny_config("deeplab.py", "preset=paper")
    spec = optim.OptimizerSpec.from_config(config.optimizer)
    assert spec.lr_multipliers == (("^head/", 10.0),) and spec.names_parameters
    stored = ml_collections.ConfigDict(json.loads(json.dumps(config.optimizer.to_dict())))
    assert optim.OptimizerSpec.from_config(stored) == spec


def test_a_multiplier_that_matches_nothing_fails_when_the_task_is_made(tiny_config):
    """Task checks the patterns against the model's parameter names (shapes only) before anything is written."""
    config = tiny_config("deeplab.py", "v3", optimizer__lr_multipliers=(("^decoder/", 10.0),))
    with pytest.raises(ValueError, match=r"'\^decoder/' matches no parameter; names look like encoder/"):
        Task(config)
    assert Task(
        tiny_config("deeplab.py", "v3", optimizer__lr_multipliers=(("^head/", 10.0),))
    ).optimizer.names_parameters
