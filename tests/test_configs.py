"""Configs: every family file builds a valid config and model; command-line overrides parse, typos and wrong types
are errors before anything runs; optimizer/schedule choices behave as documented."""

import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

from segjax import config_utils, experiment, optim
from segjax.config_utils import load_sibling
from segjax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = [
    ("default.py", None),
    ("quickstart.py", None),
    ("unet.py", "small"),
    ("unet.py", "paper"),
    ("fcn.py", "32s"),
    ("fcn.py", "16s"),
    ("fcn.py", "8s"),
    ("segnet.py", None),
    ("deconvnet.py", None),
    ("pets_unet.py", None),
]


def _config(file_name, arg=None):
    module = load_sibling(os.path.join(REPO, "configs", file_name), file_name[:-3])
    return module.get_config(arg) if arg is not None else module.get_config()


@pytest.mark.parametrize("file_name,arg", FAMILIES)
def test_family_configs_are_valid(file_name, arg):
    config = _config(file_name, arg)
    config_utils.validate(config)
    experiment.build_optimizer(config)
    model = create_model(config.model, 6)
    if arg in ("32s", "16s", "8s"):
        assert config.model.name == f"fcn{arg}"
    assert model is not None
    # The default config lists every key the families use: no family adds a key of its own.
    assert set(_flat(config.to_dict())) == set(_flat(_config("default.py").to_dict()))


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="variant '4s' is not one of"):
        _config("fcn.py", "4s")


def _parse(*overrides):
    argv = ["prog", f"--config={os.path.join(REPO, 'configs', 'unet.py')}:small", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def test_command_line_overrides():
    config = _parse(
        "--config.model.upsample.method=resize_conv",
        "--config.seed=3",
        "--config.model.base_width=8",
        "--config.data.data_dir=/tmp/somewhere",
        "--config.optimizer.grad_clip_norm=1",
        "--config.data.crop_size=(48, 64)",
    )
    assert config.model.upsample.method == "resize_conv" and config.seed == 3
    assert config.model.base_width == 8 and config.data.data_dir == "/tmp/somewhere"
    assert config.optimizer.grad_clip_norm == 1.0 and tuple(config.data.crop_size) == (48, 64)
    assert config.model.name == "unet"


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.model.upsampel.method=nearest", 'Did you mean "upsample"'),
        ("--config.seed=three", "three"),
        ("--config.model.base_width=wide", "wide"),
        ("--config.batch_size=1.5", "1.5"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_parse_time(override, message):
    with pytest.raises((flags.Error, KeyError)) as error:
        _parse(override)
    assert message in str(error.value)


def test_train_cli_rejects_a_typo_before_writing_anything(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "segjax.train",
            "--config=configs/quickstart.py",
            f"--workdir={workdir}",
            "--config.optimizer.learnig_rate=0.1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "learnig_rate" in result.stderr
    assert not workdir.exists()


def test_validation_errors_name_the_key():
    config = _config("default.py")
    config.parallelism = "dp"
    with pytest.raises(ValueError, match="config.parallelism='dp'.*pmap, sharded"):
        config_utils.validate(config)
    config = _config("default.py")
    config.batch_size = 0
    with pytest.raises(ValueError, match="config.batch_size=0 must be a positive integer"):
        config_utils.validate(config)
    config = _config("default.py")
    config.optimizer.name = "lamb"
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'; valid choices: sgd, adam, adamw"):
        experiment.build_optimizer(config)


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


def test_optimizer_and_schedule_specs_are_frozen_hashable_and_validated():
    config = _config("unet.py", "small")
    optimizer, schedule = experiment.optimizer_specs(config)
    assert (optimizer, schedule) == experiment.optimizer_specs(_config("unet.py", "small"))
    assert hash(optimizer) == hash(optim.OptimizerSpec.from_config(config.optimizer))
    assert optimizer.grad_clip_norm is None and schedule.num_train_steps == config.num_train_steps
    config.optimizer.grad_clip_norm = 0.0  # 0 is off, the same spec as None
    assert optim.OptimizerSpec.from_config(config.optimizer) == optimizer
    with pytest.raises(ValueError, match="learning_rate=-1.0 must be positive"):
        optim.OptimizerSpec(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"Unknown schedule key\(s\) \['warmup'\]"):
        optim.ScheduleSpec.from_config(ml_collections.ConfigDict({"num_train_steps": 5, "schedule": {"warmup": 1}}))


def test_resume_sees_no_change_in_tuples_after_the_json_round_trip(tmp_path):
    config = load_sibling(os.path.join(REPO, "configs", "quickstart.py"), "quickstart").get_config()
    config_utils.save_config(config, str(tmp_path))
    assert config_utils.changes_since_start(config, str(tmp_path)) == []
    config.seed = 3
    config.data.crop_size = (48, 48)
    assert config_utils.changes_since_start(config, str(tmp_path)) == [
        "data.crop_size: None -> [48, 48]",
        "seed: 0 -> 3",
    ]
