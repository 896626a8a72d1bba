"""segjax.evaluate: evaluate_split against numbers derived by hand (scenic's fixed-logits trainer test): a fake model
whose logits are fixed (class = column % 3, whatever the image) runs through the real evaluation path (folder dataset,
loader, size buckets, padded batches, the wrapped eval step over 2 devices) on two tiny labelled images. Every labelled
pixel counts once at its own resolution on mixed-size images, in every mode. segjax-eval's reports on a trained run, and
its user errors (nothing written, exit status 2)."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from segjax import data as data_lib
from segjax import evaluate
from segjax import run as run_lib
from segjax.config import load_config_file
from segjax.evaluate import evaluate_split
from segjax.task import Task

NUM_CLASSES = 3
IGNORE = 255
# Two validation masks of odd sizes (each its own canvas and batch, padded with an invalid copy).
LABELS = [
    np.array([[0, 1, 2], [0, 1, 1]], np.uint8),
    np.array([[2, 2, 0, IGNORE]], np.uint8),
]
# Predictions are the column index mod 3: image 1 [[0, 1, 2], [0, 1, 2]], image 2 [[0, 1, 2, 0]]. Counting
# (truth, prediction) pairs, the ignored pixel left out:
#   image 1: (0,0) (0,0) (1,1) (1,1) (2,2) (1,2);   image 2: (2,0) (2,1) (0,2)
CONFUSION = np.array(
    [
        [2, 0, 1],
        [0, 2, 1],
        [1, 1, 1],
    ]
)
# IoU = TP / (row + column - TP): 2 / 4, 2 / 4, 1 / 5; every class has a non-empty union.
IOU = [0.5, 0.5, 0.2]


class ColumnClassifier(nn.Module):
    """Fixed logits: a one-hot of column % 3 at every pixel, whatever the image. One unused parameter (a TrainState
    needs parameters); stride 1 (each image on a canvas of its own size)."""

    stride: int = 1

    @nn.compact
    def __call__(self, images, train: bool = False):
        self.param("unused", nn.initializers.zeros_init(), ())
        n, h, w, _ = images.shape
        logits = jax.nn.one_hot(jnp.arange(w) % NUM_CLASSES, NUM_CLASSES)
        return jnp.broadcast_to(logits, (n, h, w, NUM_CLASSES))


@pytest.fixture(scope="module")
def task(tiny_config, folder_dataset):
    dataset = folder_dataset()
    dataset.write_random("train", [(8, 8)])
    for i, label in enumerate(LABELS):
        dataset.write_pair("validation", f"v{i}", label)
    config = tiny_config()
    config.data = dataset.config
    config.data.crop_size = 8
    config.num_devices = 2
    config.eval_batch_size = 2
    task = Task(config)
    task.model = ColumnClassifier()  # the fake model, in the real evaluation path
    return task


def test_fixed_logits_give_the_hand_derived_confusion_and_scores(task):
    assert [c for c, _ in task.eval_buckets("validation")] == [(2, 3), (1, 4)]
    scores = evaluate_split(task, task.layout.replicate(task.fresh_state()), "validation")
    np.testing.assert_array_equal(scores["confusion_matrix"], CONFUSION)
    np.testing.assert_allclose(scores["per_class_iou"], IOU)
    assert scores["mean_iou"] == pytest.approx(0.4)  # (0.5 + 0.5 + 0.2) / 3
    assert scores["pixel_accuracy"] == pytest.approx(5 / 9)


def test_max_batches_stops_after_the_first_canvas(task, monkeypatch):
    """eval.max_batches=1: only the first canvas's batch (image 1) is scored."""
    monkeypatch.setattr(task, "eval", dataclasses.replace(task.eval, max_batches=1))
    scores = evaluate_split(task, task.layout.replicate(task.fresh_state()), "validation")
    np.testing.assert_array_equal(scores["confusion_matrix"], [[2, 0, 0], [0, 2, 1], [0, 0, 1]])


# --- the benchmarks' protocol on mixed-size images ------------------------------------------------------------

SIZES = [(100, 140), (90, 77), (64, 200)]  # the mixed-size validation images
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mixed_size_task(folder_dataset):
    ds = folder_dataset()
    ds.write_random("train", [(80, 96)] * 4, seed=5, prefix="t")
    ds.write_random("validation", SIZES, seed=6, prefix="v")
    config = load_config_file("configs/unet.py")
    config.data = ds.config
    config.data.crop_size = 64
    config.data.num_workers = 1
    config.model.base_width, config.model.depth = 4, 2
    config.batch_size = config.eval_batch_size = 2
    config.num_devices = 2
    return config


@pytest.mark.parametrize(
    "mode,extra",
    [("whole", {}), ("slide", {"window": 48, "stride": 32}), ("whole", {"flip": True, "scales": (0.75, 1.0)})],
)
def test_every_labelled_pixel_counts_once_at_its_own_resolution(mixed_size_task, mode, extra):
    config = mixed_size_task.copy_and_resolve_references()
    config.eval.mode = mode
    for key, value in extra.items():
        config.eval[key] = value
    task = Task(config)
    # Each image in its own bucket, padded only to the stride (4): (90, 77) -> (92, 80); the largest first.
    sizes = data_lib.image_sizes(config.data, "validation")
    assert sorted(map(tuple, sizes.tolist())) == sorted(SIZES)
    buckets = [(canvas, [tuple(sizes[i]) for i in indices]) for canvas, indices in task.eval_buckets("validation")]
    assert buckets == [((100, 140), [(100, 140)]), ((64, 200), [(64, 200)]), ((92, 80), [(90, 77)])]
    scores = evaluate_split(task, task.layout.replicate(task.fresh_state()), "validation")
    labelled = 0
    for h, w in SIZES:
        labelled += h * w - 3  # random_label ignores 3 pixels of each mask
    assert int(scores["confusion_matrix"].sum()) == labelled


def test_resize_mode_scores_shrunken_masks(mixed_size_task):
    """The old behaviour, kept for quick looks: the masks are fitted into the training crop, so fewer pixels."""
    config = mixed_size_task.copy_and_resolve_references()
    config.eval.mode = "resize"
    task = Task(config)
    assert task.eval_buckets("validation") == [(None, None)]
    scores = evaluate_split(task, task.layout.replicate(task.fresh_state()), "validation")
    assert 0 < int(scores["confusion_matrix"].sum()) < sum(h * w for h, w in SIZES) // 2


def test_buckets_evaluate_each_image_as_if_alone(mixed_size_task):
    """Whole-image inference of every image on its own (padded to the stride, nothing stacked), computed here one
    image at a time, gives the confusion matrix of the bucketed evaluation."""
    config = mixed_size_task.copy_and_resolve_references()
    task = Task(config)
    state = task.fresh_state()
    scores = evaluate_split(task, task.layout.replicate(state), "validation")
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    expected = np.zeros((task.num_classes,) * 2, np.int64)
    for index, (h, w) in enumerate(data_lib.image_sizes(config.data, "validation")):
        (batch,) = data_lib.make_loader(
            config.data, "validation", global_batch_size=1, train=False, seed=0, canvas=(h, w), examples=[index]
        )
        logits = task.model.apply(variables, batch["image"], train=False)  # the model pads to its stride itself
        predicted, label = np.asarray(logits.argmax(-1))[0], batch["label"][0]
        keep = label != task.ignore_index
        np.add.at(expected, (label[keep], predicted[keep]), 1)
    np.testing.assert_array_equal(scores["confusion_matrix"], expected)


# --- segjax-eval on a trained run: reports, and user errors that write nothing (exit status 2) -----------------


def test_evaluate_checkpoint_writes_reports(trained_run):
    workdir, config, scores = trained_run
    report = evaluate.evaluate_checkpoint(workdir, "best", verbose=False)
    assert report["checkpoint_step"] == 4 and report["split"] == "validation"
    assert report["path"] == os.path.join(workdir, "eval", "validation-step4.json")
    with open(report["path"]) as f:
        written = json.load(f)
    assert written["scores"]["mean_iou"] == pytest.approx(scores["mean_iou"])  # same numbers as in training
    assert len(written["scores"]["per_class_iou"]) == 6 and written["config_summary"]["model"]["name"] == "unet"
    names = sorted(os.listdir(os.path.join(workdir, "eval")))
    assert names == ["validation-step4-confusion.png", "validation-step4-examples.png", "validation-step4.json"]
    table = evaluate.per_class_table(written["scores"], written["class_names"])
    assert table.splitlines()[1].startswith("background") and "mean_iou" in table


def test_eval_command_prints_no_library_warnings(trained_run, capsys, caplog):
    workdir, _, scores = trained_run
    with caplog.at_level(logging.WARNING):
        evaluate.main([f"--workdir={workdir}", "--step=latest", "--config.eval.num_images_to_plot=0"])
    out = capsys.readouterr()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "WARNING" not in out.err and f"{100 * scores['mean_iou']:.2f}" in out.out


def _eval_error(workdir, step="latest", config=None, match=""):
    before = _listing(workdir)
    with pytest.raises(run_lib.RunError, match=match):
        evaluate.evaluate_checkpoint(workdir, step, config=config, verbose=False)
    assert _listing(workdir) == before, "a failed segjax-eval must not write anything"


def _listing(workdir):
    if not os.path.exists(workdir):
        return None
    return sorted(os.path.relpath(os.path.join(d, f), workdir) for d, _, files in os.walk(workdir) for f in files)


def test_evaluate_user_errors_write_nothing(trained_run, tmp_path):
    workdir, config, _ = trained_run
    _eval_error(str(tmp_path / "missing"), match="does not exist")
    (tmp_path / "empty").mkdir()
    _eval_error(str(tmp_path / "empty"), match="not a segjax-train workdir")
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text(json.dumps(config.to_dict()))
    _eval_error(str(tmp_path / "untrained"), match="No checkpoint found")
    _eval_error(workdir, step="3", match=r"No checkpoint for step 3 .*available steps: \[2, 4\]")
    _eval_error(workdir, step="last", match="not 'latest', 'best' or an integer")
    wider = config.copy_and_resolve_references()
    wider.model.base_width = 8
    _eval_error(workdir, config=wider, match=r"changes the model .*model.base_width: 4 -> 8")
    smoother = config.copy_and_resolve_references()  # same parameter shapes, another function: refused too
    smoother.model.upsample.method, smoother.model.upsample.resize = "resize_conv", "bilinear"
    _eval_error(workdir, config=smoother, match=r"model.upsample.method: None -> 'resize_conv'")


def test_evaluate_num_classes_mismatch_is_reported(trained_run, tmp_path, monkeypatch):
    workdir, config, _ = trained_run
    real = data_lib.get_dataset_info

    def seven_classes(data_config):  # the config's dataset has another number of classes than the checkpoint
        info = real(data_config)
        return info.__class__(**{**info.__dict__, "num_classes": 7, "class_names": info.class_names + ("x",)})

    monkeypatch.setattr(evaluate.data_lib, "get_dataset_info", seven_classes)
    _eval_error(workdir, match="trained with num_classes=6 but the config's dataset .* has 7 classes")


def test_eval_cli_exit_code_2_and_config_override_errors(tmp_path):
    missing = str(tmp_path / "nope")
    result = subprocess.run(
        [sys.executable, "-m", "segjax.evaluate", f"--workdir={missing}"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and not os.path.exists(missing)
