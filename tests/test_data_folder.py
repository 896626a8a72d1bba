"""The folder builder: round trip of images and masks, and every bad pair reported by file name."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from segjax.data import check_folder, default_data_config, folder, get_dataset_info, make_loader

PALETTE = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10]], np.uint8)


def write_pair(root, split, name, label, *, image=None, suffix=".png", mask_mode="L"):
    os.makedirs(os.path.join(root, split, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, split, "masks"), exist_ok=True)
    image = PALETTE[np.minimum(label, 2)] if image is None else image
    Image.fromarray(image).save(os.path.join(root, split, "images", name + suffix))
    mask = Image.fromarray(label.astype(np.uint8))
    if mask_mode == "P":
        mask = mask.convert("P")
    elif mask_mode == "RGB":
        mask = mask.convert("RGB")
    mask.save(os.path.join(root, split, "masks", name + ".png"))


def random_label(rng, h, w):
    label = np.kron(rng.integers(0, 3, size=(-(-h // 4), -(-w // 4))), np.ones((4, 4), int))[:h, :w]
    label[0, :3] = 255  # some ignored pixels
    return label.astype(np.uint8)


def folder_config(root):
    c = default_data_config()
    c.name = "folder"
    c.data_dir = os.path.join(root, "tfds")
    c.folder.root = os.path.join(root, "data")
    c.folder.num_classes = 3
    c.folder.class_names = ("void", "red", "green")
    return c


def test_folder_round_trip_through_the_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    root = str(tmp_path / "data")
    labels = {}
    for i in range(5):
        labels[f"a{i}"] = random_label(rng, 20 + i, 30)
        write_pair(root, "train", f"a{i}", labels[f"a{i}"], mask_mode="P" if i == 0 else "L")
    labels["v0"] = random_label(rng, 24, 24)
    write_pair(root, "validation", "v0", labels["v0"])
    # A JPEG image is accepted (its pixels are approximate; the mask stays exact).
    write_pair(root, "validation", "v1", labels["v0"], suffix=".jpg")
    config = folder_config(str(tmp_path))
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


def test_every_bad_pair_is_reported_with_its_file_name(tmp_path):
    rng = np.random.default_rng(1)
    root = str(tmp_path / "data")
    write_pair(root, "train", "good", random_label(rng, 16, 16))
    write_pair(root, "train", "nomask", random_label(rng, 16, 16))
    os.remove(os.path.join(root, "train", "masks", "nomask.png"))
    write_pair(root, "train", "orphan", random_label(rng, 16, 16))
    os.remove(os.path.join(root, "train", "images", "orphan.png"))
    write_pair(root, "train", "wrongsize", random_label(rng, 16, 16), image=np.zeros((16, 17, 3), np.uint8))
    bad_values = random_label(rng, 16, 16)
    bad_values[5, 5] = 7
    write_pair(root, "train", "badvalue", bad_values)
    write_pair(root, "validation", "rgbmask", random_label(rng, 16, 16), mask_mode="RGB")
    with pytest.raises(ValueError) as err:
        check_folder(root, num_classes=3, ignore_index=255)
    message = str(err.value)
    assert "5 bad image/mask pair(s)" in message
    assert os.path.join("train", "images", "nomask.png") in message and "no mask" in message
    assert os.path.join("train", "masks", "orphan.png") in message and "without an image" in message
    assert "wrongsize.png" in message and "differs" in message
    assert "badvalue.png" in message and "[7]" in message
    assert "rgbmask.png" in message and "mode RGB" in message
    assert "good" not in message
    # The same check guards the pipeline: nothing is prepared from a bad folder.
    config = folder_config(str(tmp_path))
    with pytest.raises(ValueError, match="nomask"):
        get_dataset_info(config)
    assert not any("array_record" in f for _, _, files in os.walk(config.data_dir) for f in files)


def test_folder_config_errors(tmp_path):
    config = folder_config(str(tmp_path))
    with pytest.raises(ValueError, match="is not a directory"):
        get_dataset_info(config)
    os.makedirs(tmp_path / "data" / "validation" / "images")
    with pytest.raises(ValueError, match="train/images"):
        get_dataset_info(config)
    config.folder.num_classes = 0
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        get_dataset_info(config)


def test_reduce_zero_label_folder_as_ade20k_stores_masks(tmp_path):
    root = str(tmp_path / "data")
    label = np.array([[0, 1, 2, 3]] * 4, np.uint8)  # 0 = unlabelled, 1..3 = the three classes
    write_pair(root, "train", "x", label)
    config = folder_config(str(tmp_path))
    config.reduce_zero_label = True
    config.eval_size = 4
    batch = next(
        make_loader(config, "train", global_batch_size=1, train=False, seed=0, process_index=0, process_count=1)
    )
    np.testing.assert_array_equal(batch["label"][0], [[255, 0, 1, 2]] * 4)
    config.reduce_zero_label = False  # then 3 is out of range for 3 classes: reported, not clipped
    with pytest.raises(ValueError, match=r"x.png: values \[3\]"):
        get_dataset_info(config)


def test_prepared_copy_follows_its_folder(tmp_path, caplog, monkeypatch):
    """4 pairs, then 6 more: training sees 10; a bad mask added later is reported by name and the good copy stays."""
    rng = np.random.default_rng(1)
    root = str(tmp_path / "data")
    for i in range(4):
        write_pair(root, "train", f"a{i}", random_label(rng, 16, 16))
    config = folder_config(str(tmp_path))
    config.crop_size = 16
    assert get_dataset_info(config).num_examples["train"] == 4
    for i in range(4, 10):
        write_pair(root, "train", f"a{i}", random_label(rng, 16, 16))
    os.utime(os.path.join(root, "train", "masks", "a0.png"), ns=(1, 1))  # a changed pair: same size, other mtime
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

    bad = random_label(rng, 16, 16)
    bad[3, 3] = 7  # neither a class (0..2) nor the ignore index
    write_pair(root, "train", "zz_bad", bad)
    with pytest.raises(ValueError, match=r"zz_bad.png: values \[7\] are neither a class \(0..2\) nor ignore_index"):
        get_dataset_info(config)
    os.remove(os.path.join(root, "train", "images", "zz_bad.png"))
    os.remove(os.path.join(root, "train", "masks", "zz_bad.png"))
    # The last good copy stayed in place: back to the 10 pairs it was made from, nothing to prepare.
    monkeypatch.setattr(folder, "_load_mask", no_reading)
    assert get_dataset_info(config).num_examples["train"] == 10


def test_fingerprint_counts_pairs(tmp_path):
    old = {"train/a": [["train/images/a.png", 1, 1]], "train/b": [["train/images/b.png", 1, 1]]}
    new = {"train/a": [["train/images/a.png", 1, 2]], "train/c": [["train/images/c.png", 1, 1]]}
    assert folder.describe_changes(old, new) == "1 added, 1 removed, 1 changed"
    rng = np.random.default_rng(2)
    write_pair(str(tmp_path), "train", "x", random_label(rng, 8, 8))
    (tmp_path / "train" / "images" / "notes.txt").write_text("not an image")
    pairs = folder.fingerprint(str(tmp_path))
    assert list(pairs) == ["train/x"] and [f[0] for f in pairs["train/x"]] == [
        "train/images/x.png",
        "train/masks/x.png",
    ]
