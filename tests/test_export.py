"""segjax-export: the deserialized function (symbolic batch, height and width) predicts what segjax-predict predicts,
with the weights inference uses (the moving average where the run keeps one); user errors write nothing."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from segjax import export, predict, steps
from segjax import run as run_lib
from segjax.task import Task

# Stride 4 (the tiny U-Net, depth 2): (37, 29) is padded to (40, 32) inside the function; (32, 48) needs no padding.
BATCHES = {(37, 29): 3, (32, 48): 1}


def _export(workdir, out, *args):
    export.main([f"--workdir={workdir}", f"--out={out}", *(args or ["--platforms=cpu"])])
    with open(os.path.join(out, export.PREPROCESSING_FILE)) as f:
        record = json.load(f)
    with open(os.path.join(out, export.MODEL_FILE), "rb") as f:
        return jax.export.deserialize(bytearray(f.read())), record


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """{(h, w): paths of BATCHES[(h, w)] noise images of that size}."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = {}
    for (h, w), n in BATCHES.items():
        out[(h, w)] = []
        for i in range(n):
            path = folder / f"{h}x{w}_{i}.png"
            Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
            out[(h, w)].append(str(path))
    return out


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    workdir, _, _ = trained_run
    return _export(workdir, tmp_path_factory.mktemp("export") / "model")


def _normalised(paths, record) -> np.ndarray:
    """The images as preprocessing.json tells a consumer to prepare them: (N, H, W, 3) float32."""
    mean, std = (np.asarray(record["input"][key], np.float32) for key in ("mean", "std"))
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return (rgb.astype(np.float32) * np.float32(1 / 255) - mean) / std


def _reference_logits(workdir, variables_of, images):
    """Logits of a plain model.apply on `images` zero-padded to the stride, cropped back."""
    task, state, _ = run_lib.restore(workdir)
    n, h, w, _ = images.shape
    s = task.model.stride
    padded = np.zeros((n, -(-h // s) * s, -(-w // s) * s, 3), np.float32)
    padded[:, :h, :w] = images
    return np.asarray(task.model.apply(variables_of(state), padded, train=False))[:, :h, :w]


def test_exported_function_predicts_what_segjax_predict_writes(trained_run, exported, images, tmp_path):
    workdir, config, _ = trained_run
    function, record = exported
    assert [str(d) for d in function.in_avals[0].shape] == ["batch", "height", "width", "3"]
    assert record["stride"] == 4 and record["num_classes"] == len(record["class_names"]) == len(record["palette"])
    assert record["source"]["step"] == config.num_train_steps and record["source"]["weights"] == "trained"
    assert record["platforms"] == ["cpu"]
    paths = [p for group in images.values() for p in group]
    predict.predict_files(workdir, paths, str(tmp_path / "masks"))
    for (h, w), group in images.items():
        x = _normalised(group, record)
        logits = np.asarray(function.call(x))
        assert logits.shape == (len(group), h, w, record["num_classes"]) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, _reference_logits(workdir, steps.inference_variables, x), atol=1e-5)
        for path, mask in zip(group, logits.argmax(-1), strict=True):
            stem = os.path.splitext(os.path.basename(path))[0]
            with Image.open(tmp_path / "masks" / f"{stem}.png") as written:
                np.testing.assert_array_equal(mask, np.asarray(written), err_msg=stem)


def test_a_batch_gives_the_logits_of_one_image_at_a_time(exported, images):
    function, record = exported
    x = _normalised(images[(37, 29)], record)
    together = np.asarray(function.call(x))
    for i in range(len(x)):
        np.testing.assert_allclose(np.asarray(function.call(x[i : i + 1]))[0], together[i], atol=1e-5)


def test_ema_run_exports_its_moving_average(trained_ema_run, images, tmp_path):
    workdir, _, _ = trained_ema_run
    function, record = _export(workdir, tmp_path / "model")
    assert record["source"]["weights"] == "ema"
    x = _normalised(images[(32, 48)], record)
    logits = np.asarray(function.call(x))
    np.testing.assert_allclose(logits, _reference_logits(workdir, steps.inference_variables, x), atol=1e-5)
    trained = _reference_logits(workdir, _trained_variables, x)
    assert np.abs(logits - trained).max() > 1e-3  # the average, not the last step's weights


def _trained_variables(state) -> dict:
    return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}


def test_step_picks_the_checkpoint_as_predict_does(trained_run, tmp_path):
    workdir, _, _ = trained_run
    _, record = _export(workdir, tmp_path / "model", "--step=2")  # for the default platforms
    assert record["source"]["step"] == 2 and record["platforms"] == ["cpu", "cuda"]


def _user_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        export.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("segjax-export: error: ") and len(err.splitlines()) == 1, err
    return err


def test_user_errors_write_nothing(trained_run, tmp_path, capsys):
    workdir, _, _ = trained_run
    before = sorted(os.listdir(workdir))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    (tmp_path / "a_file").write_text("mine")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    with open(os.path.join(workdir, run_lib.CONFIG_FILE)) as f:
        (untrained / run_lib.CONFIG_FILE).write_text(f.read())
    cases = [
        ([f"--workdir={tmp_path / 'nope'}", f"--out={tmp_path / 'o'}"], "does not exist"),
        ([f"--workdir={untrained}", f"--out={tmp_path / 'o'}"], "No checkpoint"),
        ([f"--workdir={workdir}", f"--out={full}"], "not empty"),
        ([f"--workdir={workdir}", f"--out={tmp_path / 'a_file'}"], "is a file"),
        ([f"--workdir={workdir}", f"--out={workdir}"], "inside the run's workdir"),
        ([f"--workdir={workdir}", f"--out={workdir}/export"], "inside the run's workdir"),
        ([f"--workdir={workdir}", f"--out={tmp_path / 'o'}", "--step=3"], "No checkpoint for step 3"),
        ([f"--workdir={workdir}", f"--out={tmp_path / 'o'}", "--platforms=cpu,gpu"], "unknown gpu"),
    ]
    for argv, message in cases:
        assert message in _user_error(argv, capsys), argv
    assert sorted(os.listdir(tmp_path)) == ["a_file", "full", "untrained"]
    assert os.listdir(full) == ["keep.txt"] and os.listdir(untrained) == [run_lib.CONFIG_FILE]
    assert sorted(os.listdir(workdir)) == before


@pytest.mark.parametrize("family", ["segnet.py", "deconvnet.py"])
def test_unpooling_networks_export_for_any_size(tiny_config, family):
    """SegNet's and DeconvNet's unpooling takes the pooled map's size, symbolic in an export."""
    task = Task(tiny_config(family))
    variables = steps.inference_variables(task.fresh_state())
    function = export.export_inference(task.model, variables, task.model.stride, ("cpu",))
    x = np.random.default_rng(1).normal(size=(2, 37, 29, 3)).astype(np.float32)
    padded = np.zeros((2, 40, 32, 3), np.float32)
    padded[:, :37, :29] = x
    expected = np.asarray(task.model.apply(variables, padded, train=False))[:, :37, :29]
    np.testing.assert_allclose(np.asarray(function.call(x)), expected, atol=1e-5)


class _NeedsConcreteSize(nn.Module):
    """A network with an operation that needs a concrete image size (numpy on the input's shape)."""

    @nn.compact
    def __call__(self, x, train=False):
        return x * np.ones(x.shape[1:], np.float32)


def test_a_network_that_needs_concrete_sizes_is_refused_in_one_line():
    with pytest.raises(run_lib.RunError, match="cannot be exported for any image size yet") as raised:
        export.export_inference(_NeedsConcreteSize(), {}, 4, ("cpu",))
    assert len(str(raised.value).splitlines()) == 1
