"""The embedded dataset: determinism, class balance, thin and small structures, colour not giving the class."""

import numpy as np
import pytest
from scipy import ndimage

from segjax.data import shapes

NUM_SCENES = 120


@pytest.fixture(scope="module")
def scenes():
    pairs = [shapes.generate_scene(0, "train", i, 64) for i in range(NUM_SCENES)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_generation_is_a_pure_function_of_seed_split_index():
    a_img, a_lab = shapes.generate_scene(3, "validation", 7, 64)
    b_img, b_lab = shapes.generate_scene(3, "validation", 7, 64)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    for other in [(4, "validation", 7), (3, "train", 7), (3, "validation", 8)]:
        assert not np.array_equal(shapes.generate_scene(*other, 64)[1], a_lab), other
    image, label = shapes.generate_scene(0, "test", 0, 128)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert label.shape == (128, 128) and label.dtype == np.uint8


def test_class_histogram_background_dominates_and_every_class_appears(scenes):
    _, labels = scenes
    freq = np.bincount(labels.ravel(), minlength=shapes.NUM_CLASSES) / labels.size
    assert freq.size == shapes.NUM_CLASSES >= 6
    assert 0.6 < freq[0] < 0.95, freq  # strong imbalance: background well over half
    assert np.all(freq[1:] > 0.005), freq
    # Every image has background, some wire and some speck pixels (unless fully occluded, which is rare).
    per_image = np.stack([np.bincount(lab.ravel(), minlength=shapes.NUM_CLASSES) for lab in labels])
    assert np.all(per_image[:, 0] > 0.5 * 64 * 64)
    assert np.mean(per_image[:, 4] > 0) > 0.9 and np.mean(per_image[:, 5] > 0) > 0.9


def test_wires_are_thin(scenes):
    _, labels = scenes
    wire = labels == 4
    # A 2-3 px wide curve never contains a 4x4 block; only crossings of two wires may.
    blocks = ndimage.binary_erosion(wire, structure=np.ones((1, 4, 4), bool))
    assert blocks.sum() < 0.02 * wire.sum()
    # ... but it is at least 2 px wide almost everywhere: most wire pixels have a wire neighbour across the
    # curve, i.e. the curve survives erosion by a 2x2 block.
    thick2 = ndimage.binary_erosion(wire, structure=np.ones((1, 2, 2), bool))
    assert thick2.sum() > 0.25 * wire.sum()


def test_specks_are_small(scenes):
    _, labels = scenes
    extents = []
    for label in labels:
        components, n = ndimage.label(label == 5)
        for sl in ndimage.find_objects(components):
            extents.append(max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
    extents = np.array(extents)
    assert extents.size > 2 * NUM_SCENES
    assert np.mean(extents < 8) > 0.95 and extents.max() <= 14  # two touching specks at most


def test_colour_alone_does_not_give_the_class(scenes):
    images, labels = scenes
    half = NUM_SCENES // 2

    def bins(x):
        q = (x // 32).astype(int)
        return q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]

    fg = labels[:half] > 0
    counts = np.zeros((512, shapes.NUM_CLASSES))
    np.add.at(counts, (bins(images[:half])[fg], labels[:half][fg]), 1)
    test_fg = labels[half:] > 0
    predicted = counts.argmax(1)[bins(images[half:])[test_fg]]
    colour_accuracy = np.mean(predicted == labels[half:][test_fg])
    majority = np.bincount(labels[half:][test_fg]).max() / test_fg.sum()
    # The best colour -> class lookup on held-out foreground does no better than always guessing the
    # most frequent object class.
    assert colour_accuracy < majority + 0.03, (colour_accuracy, majority)


def test_builder_prepares_offline_and_stores_the_generated_scenes(tmp_path):
    config = shapes.shapes_config(64, num_train=6, num_validation=3, num_test=2, seed=1)
    assert config.name != "64"  # non-default sizes never share the default's cache folder
    builder = shapes.SegjaxShapes(config=config, data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    sources = builder.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 6, "validation": 3, "test": 2}
    stored = sorted(sources["validation"][i]["label"].tobytes() for i in range(3))
    expected = sorted(shapes.generate_scene(1, "validation", i, 64)[1].tobytes() for i in range(3))
    assert stored == expected


def test_bad_resolution_is_reported():
    with pytest.raises(ValueError, match="resolution 100 .* 128"):
        shapes.shapes_config(100)
