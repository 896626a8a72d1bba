"""The VOC reproduction recipes (configs/deeplab.py:v3plus_voc, configs/fcn.py:8s_voc) end to end on the fake VOC
archive of tests/conftest.py, as docs/datasets.md runs them on the real data: segjax-prepare voc_aug, segjax-train,
segjax-eval. The run overrides sizes, steps and devices only (TINY_RUN); every other key of the recipe (data,
optimizer, schedule, model) is checked in the run's stored config against the setting the recipe cites."""

import json
import math
import os

import pytest
from conftest import REPO, voc_archive

from segjax import evaluate, train
from segjax.data import prepare

FIXTURES = os.path.join(REPO, "tests", "fixtures", "pretrained")

# Tiny sizes: 32 px crops, 2 steps of batch 2 on one device; ResNet-50 and VGG16 at width 4 (1/16 of torchvision's,
# the width of the fixture weights; the depth is the networks' own). FCN keeps its preset fc6/fc7 width, 4096.
TINY_RUN = {
    "data.crop_size": 32,
    "model.base_width": 4,
    "num_devices": 1,
    "batch_size": 2,
    "eval_batch_size": 2,
    "num_train_steps": 2,
    "log_every_steps": 1,
    "eval_every_steps": 2,
    "checkpoint_every_steps": 2,
    "progress_bar": False,
    "data.num_workers": 1,
    "data.prefetch_batches": 2,
    "eval.num_images_to_plot": 1,
}

VOC_DATA = {"data.name": "folder", "data.folder.num_classes": 21, "data.ignore_index": 255, "eval.mode": "whole"}
RECIPES = {
    "deeplab.py:v3plus_voc": {  # Chen et al. 2018, VOC 2012
        **VOC_DATA,
        "model.name": "deeplabv3plus",
        "model.encoder": "resnet50",
        "model.output_stride": 16,
        "model.preset": "paper",
        "data.crop_size": 513,
        "data.scale_range": (0.5, 2.0),
        "data.hflip": True,
        "data.photometric.enabled": False,
        "batch_size": 16,
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.007,
        "optimizer.momentum": 0.9,
        "optimizer.weight_decay": 4e-5,
        "optimizer.lr_multipliers": (),
        "schedule.name": "poly",
        "schedule.poly_power": 0.9,
        "schedule.warmup_steps": 0,
        "num_train_steps": 30_000,
    },
    "fcn.py:8s_voc": {  # fcn.berkeleyvision.org voc-fcn8s-atonce
        **VOC_DATA,
        "model.name": "fcn8s",
        "model.preset": "paper",
        "model.norm": "none",
        "model.dropout": 0.5,
        "data.crop_size": 500,
        "data.scale_range": (1.0, 1.0),
        "data.hflip": False,
        "batch_size": 1,
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 1e-10 * 500 * 375,  # the release's 1e-10 on a summed loss, for a mean loss
        "optimizer.momentum": 0.99,
        "optimizer.weight_decay": 5e-4,
        "optimizer.frozen": "upscore",
        "optimizer.lr_multipliers": (("/bias$", 2.0),),
        "schedule.name": "constant",
        "schedule.warmup_steps": 0,
        "num_train_steps": 300_000,
    },
}
# The DeepLab run starts from the ResNet-50 fixture (torchvision's names, width 4), as the docs' run starts from
# torchvision's file. The VGG16 fixture's fc6 is 16 wide, not the recipe's 4096, so FCN starts from scratch.
WEIGHTS = {"deeplab.py:v3plus_voc": os.path.join(FIXTURES, "resnet50_tiny.safetensors")}


def lookup(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


@pytest.fixture(scope="module")
def prepared_voc(tmp_path_factory):
    """The fake VOC 2012 + SBD archive through `segjax-prepare voc_aug`: train 4 images, validation 1."""
    root = tmp_path_factory.mktemp("voc")
    voc_archive(root / "src", with_sbd=True)
    prepare.main(["voc_aug", str(root / "src"), str(root / "voc_aug")])
    return root


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_from_prepared_voc_to_evaluation(recipe, prepared_voc, capsys):
    workdir = prepared_voc / recipe.replace(":", "_")
    overrides = {
        "data.folder.root": prepared_voc / "voc_aug",
        "data.data_dir": prepared_voc / "tfds",
        **TINY_RUN,
    }
    if recipe in WEIGHTS:
        overrides["model.encoder_weights"] = WEIGHTS[recipe]
    train.main(
        [f"--config={REPO}/configs/{recipe}", f"--workdir={workdir}"]
        + [f"--config.{key}={value}" for key, value in overrides.items()]
    )
    assert "final validation mIoU" in capsys.readouterr().out
    evaluate.main([f"--workdir={workdir}"])
    with open(workdir / "eval" / "validation-step2.json") as f:
        report = json.load(f)
    assert report["num_classes"] == 21 and report["class_names"][15] == "person"
    scores = report["scores"]
    for name in ("mean_iou", "pixel_accuracy", "frequency_weighted_iou"):
        assert math.isfinite(scores[name]), name

    with open(workdir / "config.json") as f:
        stored = json.load(f)
    for key, value in RECIPES[recipe].items():
        if key not in TINY_RUN:
            assert lookup(stored, key) == json.loads(json.dumps(value)), key
    for key, value in TINY_RUN.items():  # what was shrunk, and nothing else
        assert lookup(stored, key) == value, key
