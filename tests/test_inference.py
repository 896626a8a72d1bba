"""Evaluation by the benchmarks' protocol: every labelled pixel at the mask's own resolution, sliding windows and
test-time augmentation (segjax.steps.InferenceSpec), on mixed-size images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from segjax import data as data_lib
from segjax import steps
from segjax.config import load_config_file
from segjax.evaluate import evaluate_split
from segjax.task import Task

SIZES = [(100, 140), (90, 77), (64, 200)]  # the mixed-size validation images


class PixelNet(nn.Module):
    """A 1x1 convolution: no spatial context, so no border effects, and it commutes with flips."""

    num_classes: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Conv(self.num_classes, (1, 1))(x)


def _pixel_net(seed=0):
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 37, 53, 3)), jnp.float32)
    model = PixelNet()
    return model, model.init(jax.random.key(seed), x), x


def test_sliding_windows_equal_whole_image_inference_without_border_effects():
    model, variables, x = _pixel_net()
    whole = steps.predict_scores(model, variables, x, steps.InferenceSpec("whole"))
    for window, stride in [((16, 16), (10, 10)), ((37, 20), (37, 7)), ((8, 53), (5, 53))]:
        slide = steps.predict_scores(model, variables, x, steps.InferenceSpec("slide", window, stride))
        np.testing.assert_allclose(slide, whole, rtol=1e-5, atol=1e-5, err_msg=str(window))


def test_flip_tta_of_a_flip_symmetric_model_changes_nothing():
    model, variables, x = _pixel_net(1)
    plain = jax.nn.softmax(steps.predict_scores(model, variables, x, steps.InferenceSpec("whole")), -1)
    flipped = steps.predict_scores(model, variables, x, steps.InferenceSpec("whole", flip=True))
    np.testing.assert_allclose(flipped, plain, rtol=1e-5, atol=1e-6)
    # Scale 1 alone is no augmentation; scales average probabilities resized back to the image.
    multi = steps.predict_scores(model, variables, x, steps.InferenceSpec("whole", scales=(0.5, 1.0, 1.5)))
    assert multi.shape == plain.shape and np.allclose(np.asarray(multi).sum(-1), 1.0, atol=1e-5)


def test_slide_averages_overlaps_and_ends_windows_at_the_border():
    """A model that reports each window's origin: the average over windows follows mmsegmentation's grid."""

    class Ones(nn.Module):
        stride: int = 1

        @nn.compact
        def __call__(self, x, train: bool = False):
            return jnp.ones(x.shape[:3] + (1,))

    x = jnp.zeros((1, 10, 7, 3))
    spec = steps.InferenceSpec("slide", (6, 4), (3, 3))
    out = np.asarray(steps.predict_scores(Ones(), {}, x, spec))
    np.testing.assert_allclose(out, 1.0)  # every pixel covered, the overlaps averaged (not summed)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mode="tiled"), "eval.mode='tiled'"),
        (dict(mode="slide", window=(8, 8), stride=(9, 4)), "must not exceed"),
        (dict(mode="slide", window=None, stride=(4, 4)), "eval.window=None"),
        (dict(scales=(1.0, -0.5)), "positive factors"),
    ],
)
def test_inference_spec_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        steps.InferenceSpec(**kwargs)


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


def test_size_buckets_bound_the_canvases_and_pad_each_image_least():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(20, 300, size=(40, 2)), [[64, 64], [64, 64], [63, 65], [1, 299]]])
    for max_buckets in (1, 2, 5, 8, 200):
        buckets = data_lib.size_buckets(sizes, 32, max_buckets, minimum=(48, 48))
        assert len(buckets) <= max_buckets
        assert sorted(np.concatenate([i for _, i in buckets]).tolist()) == list(range(len(sizes)))  # each once
        for (h, w), indices in buckets:
            assert h % 32 == 0 and w % 32 == 0
            assert (sizes[indices] <= (h, w)).all() and h >= 48 and w >= 48
        if max_buckets == 1:  # one canvas: the largest size rounded up to the stride
            assert buckets[0][0] == (320, 320)
        if max_buckets == 200:  # no coarsening needed: each image only rounded up to the stride
            for (h, w), indices in buckets:
                rounded = -(-np.maximum(sizes[indices], 48) // 32) * 32
                assert (rounded == (h, w)).all()
    with pytest.raises(ValueError, match="max_buckets must be >= 1"):
        data_lib.size_buckets(sizes, 32, 0)
