"""The folder builder: round trip of images and masks, and every bad pair reported by file name."""

import logging
import os

import numpy as np
import pytest

from segjax.data import check_folder, folder, get_dataset_info, make_loader


def test_folder_round_trip_through_the_pipeline(folder_dataset, tmp_path):
    ds = folder_dataset(tmp_path)
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(5):
        labels[f"a{i}"] = ds.random_label(rng, 20 + i, 30)
        ds.write_pair("train", f"a{i}", labels[f"a{i}"], mask_mode="P" if i == 0 else "L")
    labels["v0"] = ds.random_label(rng, 24, 24)
    ds.write_pair("validation", "v0", labels["v0"])
    # A JPEG image is accepted (its pixels are approximate; the mask stays exact).
    ds.write_pair("validation", "v1", labels["v0"], suffix=".jpg")
    config = ds.config
    config.eval_size = 32
    info = get_dataset_info(config)
    assert info.num_classes == 3 and info.class_names == ("void", "red", "green")
    assert info.num_examples == {"train": 5, "validation": 2}
    batches = list(make_loader(config, global_batch_size=2, train=False, seed=0, process_index=0, process_count=1))
    got = [lab[:24, :24] for b in batches for lab in b["label"][b["valid"]]]
    assert len(got) == 2
    for lab in got:
        np.testing.assert_array_equal(lab, labels["v0"])
    # Training batches come out of the same builder with the configured crop.
    config.crop_size = 16
    batch = next(make_loader(config, global_batch_size=4, train=True, seed=0, process_index=0, process_count=1))
    assert batch["label"].shape == (4, 16, 16) and set(np.unique(batch["label"])) <= {0, 1, 2, 255}


def test_every_bad_pair_is_reported_with_its_file_name(folder_dataset, tmp_path):
    ds = folder_dataset(tmp_path)
    rng = np.random.default_rng(1)
    ds.write_pair("train", "good", ds.random_label(rng, 16, 16))
    ds.write_pair("train", "nomask", ds.random_label(rng, 16, 16))
    os.remove(os.path.join(ds.config.folder.root, "train", "masks", "nomask.png"))
    ds.write_pair("train", "orphan", ds.random_label(rng, 16, 16))
    os.remove(os.path.join(ds.config.folder.root, "train", "images", "orphan.png"))
    ds.write_pair("train", "wrongsize", ds.random_label(rng, 16, 16), image=np.zeros((16, 17, 3), np.uint8))
    bad_values = ds.random_label(rng, 16, 16)
    bad_values[5, 5] = 7
    ds.write_pair("train", "badvalue", bad_values)
    ds.write_pair("validation", "rgbmask", ds.random_label(rng, 16, 16), mask_mode="RGB")
    with pytest.raises(ValueError) as err:
        check_folder(ds.config.folder.root, num_classes=3, ignore_index=255)
    message = str(err.value)
    assert "5 bad image/mask pair(s)" in message
    assert os.path.join("train", "images", "nomask.png") in message and "no mask" in message
    assert os.path.join("train", "masks", "orphan.png") in message and "without an image" in message
    assert "wrongsize.png" in message and "differs" in message
    assert "badvalue.png" in message and "[7]" in message
    assert "rgbmask.png" in message and "mode RGB" in message
    assert "good" not in message
    # The same check guards the pipeline: nothing is prepared from a bad folder.
    config = ds.config
    with pytest.raises(ValueError, match="nomask"):
        get_dataset_info(config)
    assert not any("array_record" in f for _, _, files in os.walk(config.data_dir) for f in files)


def test_folder_config_errors(folder_dataset, tmp_path):
    ds = folder_dataset(tmp_path)
    config = ds.config
    with pytest.raises(ValueError, match="is not a directory"):
        get_dataset_info(config)
    os.makedirs(tmp_path / "data" / "validation" / "images")
    with pytest.raises(ValueError, match="train/images"):
        get_dataset_info(config)
    config.folder.num_classes = 0
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        get_dataset_info(config)


def test_reduce_zero_label_folder_as_ade20k_stores_masks(folder_dataset, tmp_path):
    ds = folder_dataset(tmp_path)
    label = np.array([[0, 1, 2, 3]] * 4, np.uint8)  # 0 = unlabelled, 1..3 = the three classes
    ds.write_pair("train", "x", label)
    config = ds.config
    config.reduce_zero_label = True
    config.eval_size = 4
    batch = next(
        make_loader(config, "train", global_batch_size=1, train=False, seed=0, process_index=0, process_count=1)
    )
    np.testing.assert_array_equal(batch["label"][0], [[255, 0, 1, 2]] * 4)
    config.reduce_zero_label = False  # then 3 is out of range for 3 classes: reported, not clipped
    with pytest.raises(ValueError, match=r"x.png: values \[3\]"):
        get_dataset_info(config)


def test_prepared_copy_follows_its_folder(folder_dataset, tmp_path, caplog, monkeypatch):
    ds = folder_dataset(tmp_path)
    """4 pairs, then 6 more: training sees 10; a bad mask added later is reported by name and the good copy stays."""
    rng = np.random.default_rng(1)
    for i in range(4):
        ds.write_pair("train", f"a{i}", ds.random_label(rng, 16, 16))
    config = ds.config
    config.crop_size = 16
    assert get_dataset_info(config).num_examples["train"] == 4
    for i in range(4, 10):
        ds.write_pair("train", f"a{i}", ds.random_label(rng, 16, 16))
    os.utime(
        os.path.join(ds.config.folder.root, "train", "masks", "a0.png"), ns=(1, 1)
    )  # a changed pair: same size, other mtime
    with caplog.at_level(logging.INFO, logger="segjax.data"):
        info = get_dataset_info(config)
    assert info.num_examples["train"] == 10
    assert "pairs: 6 added, 0 removed, 1 changed" in caplog.text
    batches = make_loader(config, global_batch_size=10, train=True, seed=0, process_index=0, process_count=1)
    assert next(batches)["label"].shape == (10, 16, 16)

    # An unchanged folder is not read again (beyond the file metadata of the fingerprint).
    def no_reading(*args, **kwargs):
        raise AssertionError("the unchanged folder was read again")

    monkeypatch.setattr(folder, "_load_mask", no_reading)
    assert get_dataset_info(config).num_examples["train"] == 10
    monkeypatch.undo()

    bad = ds.random_label(rng, 16, 16)
    bad[3, 3] = 7  # neither a class (0..2) nor the ignore index
    ds.write_pair("train", "zz_bad", bad)
    with pytest.raises(ValueError, match=r"zz_bad.png: values \[7\] are neither a class \(0..2\) nor ignore_index"):
        get_dataset_info(config)
    os.remove(os.path.join(ds.config.folder.root, "train", "images", "zz_bad.png"))
    os.remove(os.path.join(ds.config.folder.root, "train", "masks", "zz_bad.png"))
    # The last good copy stayed in place: back to the 10 pairs it was made from, nothing to prepare.
    monkeypatch.setattr(folder, "_load_mask", no_reading)
    assert get_dataset_info(config).num_examples["train"] == 10


def test_fingerprint_counts_pairs(folder_dataset, tmp_path):
    ds = folder_dataset(tmp_path)
    old = {"train/a": [["train/images/a.png", 1, 1]], "train/b": [["train/images/b.png", 1, 1]]}
    new = {"train/a": [["train/images/a.png", 1, 2]], "train/c": [["train/images/c.png", 1, 1]]}
    assert folder.describe_changes(old, new) == "1 added, 1 removed, 1 changed"
    rng = np.random.default_rng(2)
    ds.write_pair("train", "x", ds.random_label(rng, 8, 8))
    (tmp_path / "data" / "train" / "images" / "notes.txt").write_text("not an image")
    pairs = folder.fingerprint(ds.config.folder.root)
    assert list(pairs) == ["train/x"] and [f[0] for f in pairs["train/x"]] == [
        "train/images/x.png",
        "train/masks/x.png",
    ]
