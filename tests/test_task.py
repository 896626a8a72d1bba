"""segjax.task.Task: the config's sections become frozen specs once (DataSpec, ModelSpec, EvalSpec) and are passed
whole; a bad section is one clear ValueError before anything is written; the model is plain (the train step binds
the data-parallel axis); equal tasks share their wrapped, compiled steps."""

import dataclasses
import os

import jax
import pytest

from segjax import data as data_lib
from segjax import models, steps
from segjax.config import default_eval_config
from segjax.evaluate import evaluate_split
from segjax.task import Task


def test_specs_are_frozen_hashable_and_equal_for_equal_configs(tiny_task, tiny_config):
    task = tiny_task
    assert isinstance(task.data, data_lib.DataSpec)
    assert isinstance(task.model_spec, models.ModelSpec)
    assert isinstance(task.eval, steps.EvalSpec)
    other = Task(tiny_config(seed=3))  # another seed: the same sections
    for spec, twin in [(task.data, other.data), (task.model_spec, other.model_spec), (task.eval, other.eval)]:
        assert spec == twin and hash(spec) == hash(twin)
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "x"  # noqa: B010 - frozen, whatever the field
    # Every None became the dataset's or the preset's choice.
    assert task.data.crop_size == (32, 32) and task.data.scale_range == (1.0, 1.0)
    assert task.model_spec.depth == 2 and task.model_spec.convs == (2, 2) and task.model_spec.dropout == 0.5
    assert task.eval.inference == steps.InferenceSpec("whole", (32, 32), (21, 21))


def test_each_section_is_read_once(tiny_config, monkeypatch):
    """Building a Task and evaluating a split reads the data, model and eval sections once each."""
    calls = {"data": 0, "model": 0, "eval": 0}

    def counting(cls, name):
        original = cls.from_config.__func__

        def from_config(klass, *args, **kwargs):
            calls[name] += 1
            return original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_config", classmethod(from_config))

    counting(data_lib.DataSpec, "data")
    counting(models.ModelSpec, "model")
    counting(steps.EvalSpec, "eval")
    task = Task(tiny_config(eval__max_batches=1))
    evaluate_split(task, task.layout.replicate(task.fresh_state()), task.info.eval_split)
    assert calls == {"data": 1, "model": 1, "eval": 1}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"eval__mode": "tiled"}, "eval.mode='tiled' is not one of whole, slide, resize"),
        ({"eval__mode": "slide", "eval__window": 8, "eval__stride": 9}, "must not exceed eval.window"),
        ({"eval__mode": "slide", "eval__window": "big"}, r"config.eval.window='big'"),
        ({"eval__max_batches": 0}, r"config.eval.max_batches=0 must be a positive integer"),
        ({"eval__max_buckets": 0}, r"config.eval.max_buckets=0 must be a positive integer"),
        ({"eval__boundary_tolerance": -1}, r"config.eval.boundary_tolerance=-1 must be a non-negative integer"),
        ({"eval__num_images_to_plot": -2}, r"config.eval.num_images_to_plot=-2 must be a non-negative integer"),
        ({"model__norm": "layer"}, r"model unet: Unknown norm 'layer'; valid: none, batch, group"),
        ({"model__dropout": 1.5}, r"model unet: dropout must be a rate in \[0, 1\)"),
        ({"data__scale_range": (2.0, 1.0)}, "scale_range must be"),
    ],
)
def test_a_bad_section_is_one_clear_error_before_anything_is_written(tiny_config, tmp_path, overrides, match):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        Task(tiny_config(**overrides), str(workdir))
    assert not os.path.exists(workdir)


def test_fcn_depth_and_norm_are_checked_in_one_place():
    """The model classes no longer check FCN's depth or the norm themselves: ModelSpec does, once."""
    with pytest.raises(ValueError, match="depth is fixed at 5"):
        models.ModelSpec.from_config({"name": "fcn8s", "depth": 4})
    spec = models.ModelSpec.from_config({"name": "fcn8s"})
    with pytest.raises(ValueError, match="depth is fixed at 5"):
        dataclasses.replace(spec, depth=4)  # constructing a spec directly runs the same check
    with pytest.raises(ValueError, match="Unknown norm 'layer'"):
        dataclasses.replace(spec, norm=models.layers.NormFactory("layer"))


def test_eval_spec_defaults_window_to_the_crop():
    section = default_eval_config()
    section.mode = "slide"
    spec = steps.EvalSpec.from_config(section, (48, 30))
    assert spec.inference.window == (48, 30) and spec.inference.stride == (32, 20)
    section.window, section.stride = 16, (8, 4)
    assert steps.EvalSpec.from_config(section, (48, 30)).inference.window == (16, 16)


def test_the_model_is_plain_and_the_train_step_binds_the_axis(tiny_task):
    model = tiny_task.model
    assert model.norm.kind == "batch" and model.norm.axis_name is None
    bound = models.with_axis_name(model, "batch")
    assert bound.norm.axis_name == "batch" and model.norm.axis_name is None  # a copy; the task's model is unchanged
    assert models.with_axis_name(model, None) is model
    # The same parameters and statistics, by name and shape: checkpoints of either restore into the other.
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jax.numpy.float32)
    plain = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    synced = jax.eval_shape(lambda x: bound.init(jax.random.key(0), x), x)
    assert jax.tree.structure(plain) == jax.tree.structure(synced)
    assert jax.tree.map(lambda a: a.shape, plain) == jax.tree.map(lambda a: a.shape, synced)


def test_equal_tasks_share_their_wrapped_steps(tiny_task, tiny_config):
    """Steps hold the plain model and the specs: a task that differs only in its seed, or in settings of the
    evaluation loop alone, gets the very same wrapped (compiled) functions."""
    other = Task(tiny_config(seed=11, eval__max_batches=2, eval__num_images_to_plot=0))
    assert other.train_step() is tiny_task.train_step()
    assert other.eval_step(1) is tiny_task.eval_step(1)
    assert other.predict_step() is tiny_task.predict_step()
    flipped = Task(tiny_config(eval__flip=True))
    assert flipped.predict_step() is not tiny_task.predict_step()
