"""segjax-predict writes the masks segjax-eval scores: images whose size is no multiple of the network's stride are
prepared (normalised, then zero-padded) and grouped by canvas as evaluation does, and batching a bucket gives the
masks of one image at a time."""

import os

import numpy as np
import pytest
from PIL import Image

from segjax import data as data_lib
from segjax import predict
from segjax import run as run_lib
from segjax.task import Task

# Stride 4 (depth 2): none of these is a multiple of it in both dimensions but (40, 32); the first four share the
# canvas (40, 32), one batch of eval_batch_size 4.
SIZES = [(37, 29), (38, 30), (39, 31), (40, 32), (45, 70), (64, 33)]


@pytest.fixture(scope="module")
def workdir(tiny_config, folder_dataset, tmp_path_factory):
    """A run whose checkpoint holds freshly initialised weights, on a folder dataset of noise images (so the
    network's predictions vary from pixel to pixel, borders included)."""
    dataset = folder_dataset()
    rng = np.random.default_rng(0)
    dataset.write_random("train", [(32, 32)])
    for i, (h, w) in enumerate(SIZES):
        noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        dataset.write_pair("validation", f"v{i}", dataset.random_label(rng, h, w), image=noise)
    config = tiny_config()
    config.data = dataset.config
    config.data.crop_size = 32
    config.num_devices = 2
    config.eval_batch_size = 4
    workdir = str(tmp_path_factory.mktemp("run"))
    task = Task(config, workdir)
    run_lib.save_config(config, workdir)
    checkpoints = task.checkpointer()
    checkpoints.save(1, task.fresh_state(), task.checkpoint_meta())
    checkpoints.wait()
    checkpoints.close()
    return workdir, os.path.join(dataset.root, "data", "validation", "images")


def _eval_predictions(workdir) -> dict:
    """(h, w) -> the prediction segjax-eval scores for the validation image of that size: the predict step on the
    evaluation loader's batches, bucket by bucket, cropped to the image."""
    task, state, _ = run_lib.restore(workdir)
    state, split = task.layout.replicate(state), task.info.eval_split
    sizes = data_lib.image_sizes(task.data, split)
    out = {}
    for canvas, indices in task.eval_buckets(split):
        loader = data_lib.make_loader(
            task.data,
            split,
            global_batch_size=task.config.eval_batch_size,
            train=False,
            seed=0,
            canvas=canvas,
            examples=indices,
        )
        batches = [task.layout.local_examples(task.predict_step()(state, task.layout.shard_batch(b))) for b in loader]
        for index, mask in zip(indices, np.concatenate(batches), strict=False):  # padding examples left out
            h, w = sizes[index]
            out[(int(h), int(w))] = mask[:h, :w]
    return out


def _masks(folder) -> dict:
    masks = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".png") and not name.endswith("_overlay.png"):
            with Image.open(os.path.join(folder, name)) as mask:
                masks[name] = np.asarray(mask)
    return masks


def test_predict_writes_the_masks_that_evaluation_scores(workdir, tmp_path):
    run, images = workdir
    expected = _eval_predictions(run)
    written = predict.predict_files(run, [images], str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == [f"v{i}.png" for i in range(len(SIZES))]
    masks = _masks(tmp_path / "out")
    for i, (h, w) in enumerate(SIZES):
        mask = masks[f"v{i}.png"]
        assert mask.shape == (h, w)
        np.testing.assert_array_equal(mask, expected[(h, w)], err_msg=f"image {h}x{w}")
    assert len(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) > 1  # not a constant network


def test_batching_a_bucket_gives_the_masks_of_one_image_at_a_time(workdir, tmp_path):
    run, images = workdir
    predict.predict_files(run, [images], str(tmp_path / "together"))
    together = _masks(tmp_path / "together")
    for name in sorted(os.listdir(images)):
        alone = tmp_path / f"alone_{name}"
        predict.predict_files(run, [os.path.join(images, name)], str(alone))
        (mask,) = _masks(alone).values()
        np.testing.assert_array_equal(mask, together[name], err_msg=name)


def test_predict_writes_masks_and_overlays_at_each_images_size(trained_run, tmp_path, capsys):
    workdir, _, _ = trained_run
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (45, 70), "b": (64, 33)}.items():
        Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(images / f"{name}.png")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    predict.main([f"--workdir={workdir}", str(images), f"--out={out}", "--config.eval.flip=True"])
    assert "wrote 2 masks" in capsys.readouterr().out
    for name, (h, w) in {"a": (45, 70), "b": (64, 33)}.items():
        with Image.open(out / f"{name}.png") as mask:
            assert mask.mode == "P" and mask.size == (w, h) and np.asarray(mask).max() < 6
        with Image.open(out / f"{name}_overlay.png") as overlay:
            assert overlay.size == (w, h) and overlay.mode == "RGB"
    for args, message in [
        ([f"--workdir={workdir}", str(tmp_path / "nothing"), f"--out={out}"], "neither an image file nor a folder"),
        (
            [f"--workdir={workdir}", str(out / "a.png"), f"--out={tmp_path / 'o2'}", "--config.model.base_width=8"],
            "changes the model",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            predict.main(args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
