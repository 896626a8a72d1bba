"""Label maps of the real datasets, and their pipeline paths run offline on `tfds.testing.mock_data`."""

import contextlib
import functools
import importlib.util
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from segjax.data import CATALOG, default_data_config, get_dataset_info, label_lut, make_loader


def test_oxford_pet_trimap_to_classes():
    spec = CATALOG["oxford_iiit_pet"]
    lut = label_lut(spec.num_classes, 255, spec.label_map)
    assert spec.class_names == ("background", "pet")
    assert lut[1] == 1 and lut[2] == 0 and lut[3] == 255  # pet, background, border -> ignore
    assert lut[0] == 255 and lut[4] == 255  # values the trimap never uses are void


def test_cityscapes_label_ids_to_19_train_ids():
    spec = CATALOG["cityscapes"]
    lut = label_lut(spec.num_classes, 255, spec.label_map)
    assert spec.num_classes == 19
    expected = {7: 0, 8: 1, 11: 2, 17: 5, 23: 10, 24: 11, 26: 13, 31: 16, 33: 18}  # road ... bicycle
    for raw, train_id in expected.items():
        assert lut[raw] == train_id
    for void in [0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255]:  # unlabeled, parking, guard rail, ...
        assert lut[void] == 255
    assert sorted(set(lut.tolist()) - {255}) == list(range(19))


def test_reduce_zero_label_as_mmsegmentation():
    lut = label_lut(150, 255, None, reduce_zero_label=True)
    assert lut[0] == 255 and lut[1] == 0 and lut[150] == 149 and lut[255] == 255
    assert lut[151] == 255  # beyond the classes: void
    plain = label_lut(150, 255, None)
    assert plain[0] == 0 and plain[149] == 149 and plain[150] == 255


def test_label_lut_errors():
    with pytest.raises(ValueError, match="collides with a class"):
        label_lut(19, 5)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        label_lut(19, 300)


@contextlib.contextmanager
def mock_tfds(num_examples, max_value):
    """`tfds.testing.mock_data` with consistent random image and mask shapes.

    TFDS 4.9.10's data-source mock draws each unknown dimension independently (an image of 47x39 with a mask
    of 8x16) and ignores `max_value`; we fix unknown dimensions to 10 and draw values below `max_value`.
    """
    original = mocking.RandomFakeGenerator.__init__

    @functools.wraps(original)
    def init(self, features, num_examples, *args, **kwargs):
        kwargs.update(constant_dynamic_shape=True, max_value=max_value)
        original(self, features, num_examples, *args, **kwargs)

    with (
        mock.patch.object(mocking.RandomFakeGenerator, "__init__", init),
        tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE),
    ):
        yield


def raw_examples(name, split, n):
    spec = CATALOG[name]
    source = tfds.builder(spec.tfds_name).as_data_source(split=split)
    return [source[i] for i in range(n)], spec


@pytest.mark.parametrize(
    "name,max_value,eval_size", [("oxford_iiit_pet", 4, 16), ("scene_parse150", 160, 16), ("cityscapes", 34, (16, 32))]
)
def test_real_dataset_paths_on_mock_data(name, max_value, eval_size):
    config = default_data_config()
    config.name = name
    config.crop_size = 8
    config.eval_size = eval_size
    with mock_tfds(num_examples=3, max_value=max_value):
        spec = CATALOG[name]
        info = get_dataset_info(config)
        assert info.num_classes == spec.num_classes and info.ignore_index == 255
        assert info.num_examples[info.eval_split] == 3
        batch = next(make_loader(config, global_batch_size=2, train=True, seed=0, process_index=0, process_count=1))
        assert batch["image"].shape == (2, 8, 8, 3) and batch["label"].dtype == np.int32
        assert set(np.unique(batch["label"])) <= set(range(spec.num_classes)) | {255}
        evals = list(make_loader(config, global_batch_size=2, train=False, seed=0, process_index=0, process_count=1))
        raw, _ = raw_examples(name, info.eval_split, 3)
    lut = label_lut(spec.num_classes, 255, spec.label_map, spec.reduce_zero_label)
    labels = np.concatenate([b["label"] for b in evals])
    assert np.concatenate([b["valid"] for b in evals]).tolist() == [True] * 3 + [False]
    for got, ex in zip(labels[: len(raw)], raw, strict=True):  # the 4th example is padding
        mask = np.asarray(ex[spec.label_key])[..., spec.label_channel]
        if mask.shape[1] > labels.shape[2]:  # cityscapes 1024x2048 is downscaled (nearest) to fit
            assert set(np.unique(got)) <= set(np.unique(lut[mask])) | {255}
        else:  # 10x10 mocks are padded, not resized: exact label map
            h, w = mask.shape
            np.testing.assert_array_equal(got[:h, :w], lut[mask])
            assert np.all(got[h:] == 255) and np.all(got[:, w:] == 255)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_preparing_a_real_dataset_without_tensorflow_says_what_to_install(tmp_path):
    config = default_data_config()
    config.name = "oxford_iiit_pet"
    config.data_dir = str(tmp_path)
    config.download = True
    with pytest.raises(ValueError, match=r"needs TensorFlow.*segjax\[tf\]"):
        get_dataset_info(config)
    config.download = False
    with pytest.raises(ValueError, match="prepare it first"):
        get_dataset_info(config)
