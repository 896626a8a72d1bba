"""segjax.evaluate.evaluate_split against numbers derived by hand (scenic's fixed-logits trainer test): a fake model
whose logits are fixed (class = column % 3, whatever the image) runs through the real evaluation path (folder
dataset, loader, size buckets, padded batches, the wrapped eval step over 2 devices) on two tiny labelled images."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

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
