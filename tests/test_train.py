"""segjax.train end to end on tiny configs: what a run writes, one step per model family, interrupted-then-resumed ==
uninterrupted, shared compilations, starting from weights or another run, non-finite loss and Ctrl-C handling."""

import json
import logging
import os

import flax
import jax
import ml_collections
import numpy as np
import pytest

from segjax import checkpoint as checkpoint_lib
from segjax import config as config_lib
from segjax import data as data_lib
from segjax import run as run_lib
from segjax import train
from segjax.files import read_metrics
from segjax.models import pretrained
from segjax.task import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _final_state(workdir, config):
    task = Task(config, workdir)
    checkpoints = task.checkpointer(read_only=True)
    state, meta = checkpoints.restore(checkpoints.latest_step(), task.abstract_state())
    checkpoints.close()
    return state, meta


def test_run_writes_config_metrics_tensorboard_and_checkpoints(trained_run):
    workdir, config, scores = trained_run
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f) == json.loads(json.dumps(config.to_dict(), default=str))
    records = read_metrics(workdir)
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4]
    validation = [r for r in records if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [4]
    assert validation[0]["mean_iou"] == pytest.approx(scores["mean_iou"])
    per_class = [validation[0][f"iou/{name}"] for name in data_lib.CLASS_NAMES]
    np.testing.assert_allclose(np.array(per_class, float), scores["per_class_iou"])  # None (absent class) is NaN
    assert 0 <= scores["mean_iou"] <= 1 and np.isfinite(scores["boundary_f1"])
    # Every validation pixel counted once at its own resolution (eval.mode whole), padding excluded.
    assert scores["confusion_matrix"].sum() == 6 * 64 * 64  # every pixel of the 64 px masks, though crops are 32
    assert os.listdir(os.path.join(workdir, "tb"))
    assert checkpoint_lib.Checkpointer(workdir, read_only=True).all_steps() == [2, 4]


@pytest.mark.parametrize("run", ["trained_run", "trained_ema_run"])
def test_interrupted_then_resumed_run_equals_uninterrupted(run, request, tmp_path):
    """Also with a moving average of the weights (optimizer.ema_decay), which the checkpoints keep."""
    workdir_a, config, scores_a = request.getfixturevalue(run)
    workdir_b = str(tmp_path / "resumed")
    # Crash after step 3: the checkpoint of step 2 exists, step 3 is lost and must be redone identically
    # (dropout keys from the saved RNG, the data loader restarting at batch 2).
    train.train_and_evaluate(config, workdir_b, max_steps_this_run=3)
    assert checkpoint_lib.Checkpointer(workdir_b, read_only=True).all_steps() == [2]
    scores_b = train.train_and_evaluate(config, workdir_b)
    state_a, _ = _final_state(workdir_a, config)
    state_b, _ = _final_state(workdir_b, config)
    assert int(state_a.step) == int(state_b.step) == 4
    assert bool(state_a.ema) == bool(state_b.ema) == bool(config.optimizer.get("ema_decay"))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        (state_a.params, state_a.batch_stats, state_a.opt_state, state_a.rng, state_a.ema),
        (state_b.params, state_b.batch_stats, state_b.opt_state, state_b.rng, state_b.ema),
    )

    def loss(w):
        return [r["loss"] for r in read_metrics(w) if r["split"] == "train" and r["step"] == 4]

    np.testing.assert_allclose(loss(workdir_b)[-1], loss(workdir_a)[-1], rtol=1e-5)
    np.testing.assert_array_equal(scores_b["confusion_matrix"], scores_a["confusion_matrix"])


def test_runs_that_differ_only_in_their_seed_reuse_the_compiled_programs(trained_run, tiny_config, tmp_path):
    """The fixture's run compiled the steps of this config; another seed compiles nothing (XLA backend compiles)."""
    _, config, _ = trained_run
    compiles = []

    def count(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        other = ml_collections.ConfigDict(config.to_dict())
        other.seed = 7
        scores = train.train_and_evaluate(other, str(tmp_path / "seed7"))
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert compiles == [] and 0 <= scores["mean_iou"] <= 1


def test_a_bad_model_or_loss_setting_is_refused_before_the_workdir_is_written(tiny_config, tmp_path):
    for key, value, message in [
        ("model.upsample.method", "bogus", "Unknown upsampling method 'bogus'"),
        ("loss.class_weighting", "median", "loss.class_weighting='median' is not valid"),
        ("schedule.warmup_steps", 10, "warmup_steps=10 must be >= 0 and smaller than num_train_steps=4"),
    ]:
        config = tiny_config()
        config_lib.set_value(config, key, value)
        with pytest.raises(ValueError, match=message):
            train.train_and_evaluate(config, str(tmp_path / "run"))
        assert not (tmp_path / "run").exists()


PRETRAINED = os.path.join(REPO, "tests", "fixtures", "pretrained")


def pretrained_config(tiny_config, weights: str):
    """SegNet with VGG16-BN's layout at 1/16 width (the committed fixture's), starting from `weights`."""
    config = tiny_config("segnet.py")
    config.model.update(preset="paper", depth=None, norm="batch", encoder_weights=os.path.join(PRETRAINED, weights))
    return config


def test_a_run_starts_from_the_encoder_weights_file(tiny_config, tmp_path, caplog):
    config = pretrained_config(tiny_config, "vgg16_bn_tiny.safetensors")
    task = Task(config, str(tmp_path))
    with caplog.at_level(logging.INFO, logger="segjax.run"):
        state = task.fresh_state(run_lib.initial_weights(task))
    assert "encoder weights from" in caplog.text and "its tensors not used: classifier.0.weight" in caplog.text
    tensors = pretrained.read_safetensors(os.path.join(PRETRAINED, "vgg16_bn_tiny.safetensors"))
    np.testing.assert_array_equal(
        state.params["encoder"]["block3"]["conv2"]["kernel"], tensors["features.20.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        state.batch_stats["encoder"]["block1"]["norm0"]["var"], tensors["features.1.running_var"]
    )
    config.model.encoder_weights = None  # the decoder is what the same seed gives without the file
    fresh = Task(config, str(tmp_path)).fresh_state()
    jax.tree.map(np.testing.assert_array_equal, state.params["classifier"], fresh.params["classifier"])
    assert not np.array_equal(
        state.params["encoder"]["block1"]["conv0"]["kernel"], fresh.params["encoder"]["block1"]["conv0"]["kernel"]
    )


def test_a_weights_file_that_does_not_fit_stops_the_run_before_anything_is_written(tiny_config, tmp_path):
    config = pretrained_config(tiny_config, "resnet50_tiny.safetensors")
    with pytest.raises(ValueError, match=r"does not fit the configured encoder \(vgg, norm 'batch', base_width 4\)"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_run_starts_from_another_runs_checkpoint(trained_run, tiny_config, tmp_path, caplog):
    """model.init_from copies what has the same name and shape (here: all but the transposed convolutions, which the
    bilinear decoder lacks; it has 1x1 projections instead); the rest, the step and the optimizer state are fresh."""
    source, source_config, _ = trained_run
    trained, _ = _final_state(source, source_config)
    config = tiny_config()
    config.model.upsample.method = "bilinear"
    config.seed = 7
    fresh = Task(config, str(tmp_path)).fresh_state()
    config.model.init_from = source
    task = Task(config, str(tmp_path))
    with caplog.at_level(logging.INFO, logger="segjax.run"):
        state = task.fresh_state(run_lib.initial_weights(task))
    assert f"weights of the run {source} (step 4)" in caplog.text
    assert "its tensors not used: params/up1/upsample/bias, params/up1/upsample/kernel" in caplog.text
    assert "freshly initialised: up1/project/bias, up1/project/kernel, up2/project/bias" in caplog.text
    assert int(state.step) == 0
    flat, want, init = (
        {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(s.params).items()} for s in (state, trained, fresh)
    )
    for name, value in flat.items():
        np.testing.assert_array_equal(value, want[name] if "project" not in name else init[name], err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, state.batch_stats, trained.batch_stats)
    jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh.opt_state)

    train.train_and_evaluate(config, str(tmp_path / "run"))  # trains from there for its own steps
    after, _ = _final_state(str(tmp_path / "run"), config)
    start = state.params["encoder"]["block1"]["conv0"]["kernel"]
    assert int(after.step) == config.num_train_steps
    assert not np.array_equal(after.params["encoder"]["block1"]["conv0"]["kernel"], start)


def test_an_init_from_that_does_not_fit_stops_the_run_before_anything_is_written(trained_run, tiny_config, tmp_path):
    source, _, _ = trained_run
    config = tiny_config()
    config.model.base_width = 8  # every shape differs
    config.model.init_from = source
    with pytest.raises(ValueError, match=r"model.init_from .* \(step 4\) does not hold the configured encoder: 30 "):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    config.model.init_from = str(tmp_path)
    with pytest.raises(ValueError, match="has no checkpoints/ folder"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    config.model.encoder_weights = os.path.join(PRETRAINED, "vgg16_bn_tiny.safetensors")
    with pytest.raises(ValueError, match="are both set"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    config = tiny_config()  # the same config as the runs above: their compiled step is reused
    real_make_loader = data_lib.make_loader

    def corrupting_loader(*args, **kwargs):  # labels out of range from the 3rd batch on -> NaN loss (segjax.losses)
        for index, batch in enumerate(real_make_loader(*args, **kwargs), start=kwargs.get("start_step", 0)):
            if kwargs.get("train") and index == 2:
                batch = dict(batch, label=np.full_like(batch["label"], 99))
            yield batch

    monkeypatch.setattr(train.data_lib, "make_loader", corrupting_loader)
    with pytest.raises(train.NonFiniteLossError, match=r"at step 3\b.*last good checkpoint is step 2"):
        train.train_and_evaluate(config, str(tmp_path))
    assert checkpoint_lib.Checkpointer(str(tmp_path), read_only=True).all_steps() == [2]


@pytest.mark.parametrize("interrupt_at, saved", [(1, [1]), (3, [2, 3])])  # before / after the first checkpoint
def test_ctrl_c_saves_the_last_finished_step(tiny_config, tmp_path, monkeypatch, interrupt_at, saved):
    config = tiny_config()  # the same config as the runs above: their compiled step is reused
    real_make_loader = data_lib.make_loader

    def interrupted_loader(*args, **kwargs):  # Ctrl-C while a training batch is being read
        for index, batch in enumerate(real_make_loader(*args, **kwargs), start=kwargs.get("start_step", 0)):
            if kwargs.get("train") and index == interrupt_at:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(train.data_lib, "make_loader", interrupted_loader)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, str(tmp_path))
    assert checkpoint_lib.Checkpointer(str(tmp_path), read_only=True).all_steps() == saved


@pytest.mark.parametrize(
    "file_name,arg,compute_dtype,parallelism",
    [
        ("fcn.py", "8s", "float32", "sharded"),
        ("segnet.py", None, "float32", "sharded"),
        ("deconvnet.py", None, "float32", "sharded"),
        ("unet.py", "small", "bfloat16", "pmap"),
    ],
)
def test_one_training_step_per_model_family(tiny_config, file_name, arg, compute_dtype, parallelism):
    """U-Net is covered by the runs above (float32, sharded); one step of the other families from their own
    configs, and U-Net with bfloat16 activations under the pmap wrapper (parameters stay float32)."""
    config = tiny_config(file_name, arg)
    config.compute_dtype = compute_dtype
    config.parallelism, config.num_devices = parallelism, 2
    task = Task(config)
    info, dp = task.info, task.layout
    state = task.fresh_state()
    # Class weights as the family config asks (SegNet: median frequency, counted over the training split).
    loss = task.loss_with_class_weights()
    assert isinstance(loss.class_weighting, tuple) == (config.loss.class_weighting == "median_frequency")
    step = task.train_step(loss)
    batch = next(data_lib.make_loader(config.data, global_batch_size=2, train=True, seed=0))
    new_state, metrics = step(dp.replicate(state), dp.shard_batch(batch))
    new_state, metrics = dp.unreplicate(new_state), dp.unreplicate(metrics)
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert int(new_state.step) == 1
    assert metrics["confusion"].sum() == np.sum(batch["label"] != info.ignore_index)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), state.params, new_state.params)
    assert any(jax.tree.leaves(changed))
    assert {leaf.dtype for leaf in jax.tree.leaves(new_state.params)} == {np.dtype("float32")}
