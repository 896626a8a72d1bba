"""segjax-prepare on tiny fake archives with each dataset's real layout and file formats (palette PNGs for VOC, .mat
files written by scipy for SBD, RGB colour masks for CamVid, labelIds PNGs for Cityscapes): the masks against class
indices stated here by hand, the splits, dataset.json, loading through the folder dataset, and the refusals (one
line, exit status 2, DEST untouched); an interrupted conversion leaves no DEST."""

import json
import os

import numpy as np
import pytest
from conftest import H, W, labels, voc_archive, write_image, write_lines, write_png
from PIL import Image

from segjax.data import catalog, default_data_config, get_dataset_info, prepare


def read_mask(dest, split, stem):
    with Image.open(os.path.join(dest, split, "masks", stem + ".png")) as mask:
        assert mask.mode == "L"
        return np.asarray(mask)


def stems(dest, split):
    return sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(dest, split, "images")))


def loads_as_folder_dataset(dest, tmp_path, sizes):
    """The result through segjax's folder dataset, configured from dataset.json."""
    record = json.loads(open(os.path.join(dest, "dataset.json")).read())
    c = default_data_config()
    c.name = "folder"
    c.data_dir = str(tmp_path / "tfds")
    c.folder.root = dest
    c.folder.num_classes = record["num_classes"]
    c.folder.class_names = tuple(record["class_names"])
    info = get_dataset_info(c)
    assert info.num_examples == sizes and info.class_names == tuple(record["class_names"])
    return record


# --------------------------------------------------------------------------------------------------------------
# Fake archives (VOC's and the writers: tests/conftest.py)


def test_voc(tmp_path, capsys):
    expected = voc_archive(tmp_path / "src")
    dest = str(tmp_path / "voc")
    prepare.main(["voc", str(tmp_path / "src"), dest])
    assert "wrote train 2, validation 1" in capsys.readouterr().out
    assert stems(dest, "train") == ["a", "b"] and stems(dest, "validation") == ["c"]
    for split, stem in [("train", "a"), ("train", "b"), ("validation", "c")]:
        np.testing.assert_array_equal(read_mask(dest, split, stem), expected[stem])
        src = tmp_path / "src" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{stem}.jpg"
        assert open(os.path.join(dest, split, "images", stem + ".jpg"), "rb").read() == src.read_bytes()
    record = loads_as_folder_dataset(dest, tmp_path, {"train": 2, "validation": 1})
    assert record["name"] == "voc" and record["num_classes"] == 21 and record["ignore_index"] == 255
    assert record["class_names"][15] == "person" and record["splits"] == {"train": 2, "validation": 1}
    assert record["palette"][15] == [192, 128, 128]  # VOC's colour of person
    # The inner folder works as SOURCE too.
    prepare.main(["voc", str(tmp_path / "src" / "VOCdevkit" / "VOC2012"), str(tmp_path / "voc2")])
    assert stems(str(tmp_path / "voc2"), "train") == ["a", "b"]


def test_voc_aug(tmp_path):
    expected = voc_archive(tmp_path / "src", with_sbd=True)
    dest = str(tmp_path / "voc_aug")
    prepare.main(["voc_aug", str(tmp_path / "src"), dest])
    # train_aug = SBD train + val + VOC train, less VOC val (c); d is in no list.
    assert stems(dest, "train") == ["a", "b", "e", "f"] and stems(dest, "validation") == ["c"]
    for split, stem in [("train", "a"), ("train", "b"), ("train", "e"), ("train", "f"), ("validation", "c")]:
        np.testing.assert_array_equal(read_mask(dest, split, stem), expected[stem])
    assert 255 in expected["a"] and 255 not in expected["e"]  # a came from VOC's PNG, e from SBD's .mat
    record = loads_as_folder_dataset(dest, tmp_path, {"train": 4, "validation": 1})
    assert record["name"] == "voc_aug" and record["num_classes"] == 21


def ade20k_archive(root):
    ade = os.path.join(root, "ADEChallengeData2016")
    raw = {}
    for split, names in (("training", ["ADE_train_00000001", "ADE_train_00000002"]), ("validation", ["ADE_val_1"])):
        for i, stem in enumerate(names):
            write_image(os.path.join(ade, "images", split, stem + ".jpg"), i)
            raw[stem] = labels(20 + i + len(split), [0, 1, 2, 150])
            write_png(os.path.join(ade, "annotations", split, stem + ".png"), raw[stem])
    return raw


def test_ade20k(tmp_path):
    raw = ade20k_archive(tmp_path / "src")
    dest = str(tmp_path / "ade")
    prepare.main(["ade20k", str(tmp_path / "src"), dest])
    assert stems(dest, "train") == ["ADE_train_00000001", "ADE_train_00000002"]
    assert stems(dest, "validation") == ["ADE_val_1"]
    for split, stem in [("train", "ADE_train_00000001"), ("validation", "ADE_val_1")]:
        want = {0: 255, 1: 0, 2: 1, 150: 149}
        np.testing.assert_array_equal(read_mask(dest, split, stem), np.vectorize(want.get)(raw[stem]))
    record = loads_as_folder_dataset(dest, tmp_path, {"train": 2, "validation": 1})
    assert record["num_classes"] == 150 and record["class_names"][:3] == ["wall", "building", "sky"]
    assert record["class_names"][-1] == "flag" and len(record["palette"]) == 150


# CamVid's label_colors.txt (all 32 labels, its format: "R G B\tName").
CAMVID_LABEL_COLOURS = """64 128 64	Animal
192 0 128	Archway
0 128 192	Bicyclist
0 128 64	Bridge
128 0 0	Building
64 0 128	Car
64 0 192	CartLuggagePram
192 128 64	Child
192 192 128	Column_Pole
64 64 128	Fence
128 0 192	LaneMkgsDriv
192 0 64	LaneMkgsNonDriv
128 128 64	Misc_Text
192 0 192	MotorcycleScooter
128 64 64	OtherMoving
64 192 128	ParkingBlock
64 64 0	Pedestrian
128 64 128	Road
128 128 192	RoadShoulder
0 0 192	Sidewalk
192 128 128	SignSymbol
128 128 128	Sky
64 128 192	SUVPickupTruck
0 0 64	TrafficCone
0 64 64	TrafficLight
192 64 128	Train
128 128 0	Tree
192 128 192	Truck_Bus
64 0 64	Tunnel
192 192 0	VegetationMisc
0 0 0	Void
64 192 0	Wall
"""
# Some labels and the 11-class index each must become (Sky 0, Building 1, Pole 2, Road 3, Sidewalk 4, Tree 5,
# SignSymbol 6, Fence 7, Car 8, Pedestrian 9, Bicyclist 10).
CAMVID_EXPECTED = {
    (64, 192, 0): 1,  # Wall -> Building
    (128, 0, 192): 3,  # LaneMkgsDriv -> Road
    (0, 0, 64): 2,  # TrafficCone -> Pole
    (192, 128, 64): 9,  # Child -> Pedestrian
    (192, 0, 192): 10,  # MotorcycleScooter -> Bicyclist
    (128, 128, 192): 4,  # RoadShoulder -> Sidewalk
    (192, 192, 0): 5,  # VegetationMisc -> Tree
    (0, 64, 64): 6,  # TrafficLight -> SignSymbol
    (192, 64, 128): 8,  # Train -> Car
    (128, 128, 128): 0,  # Sky
    (0, 0, 0): 255,  # Void -> ignore
}


def camvid_archive(root):
    """Four stills with RGB colour masks; split lists in SegNet's form (image and annotation paths per line)."""
    colours = np.array(list(CAMVID_EXPECTED), np.uint8)
    expected = {}
    for i, stem in enumerate(["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000", "0016E5_07959"]):
        write_image(os.path.join(root, "701_StillsRaw_full", stem + ".png"), i)
        index = labels(30 + i, range(len(colours)))
        write_png(os.path.join(root, "LabeledApproved_full", stem + "_L.png"), colours[index])
        expected[stem] = np.array(list(CAMVID_EXPECTED.values()), np.uint8)[index]
    with open(os.path.join(root, "label_colors.txt"), "w") as f:
        f.write(CAMVID_LABEL_COLOURS)
    segnet = "/SegNet/CamVid/{0}/{1}.png /SegNet/CamVid/{0}annot/{1}.png"
    write_lines(
        os.path.join(root, "splits", "train.txt"), [segnet.format("train", "0001TP_006690")] + ["0006R0_f00930"]
    )
    write_lines(os.path.join(root, "splits", "val.txt"), ["Seq05VD_f00000.png"])
    write_lines(os.path.join(root, "splits", "test.txt"), [segnet.format("test", "0016E5_07959")])
    return expected


def test_camvid(tmp_path):
    expected = camvid_archive(str(tmp_path / "src"))
    dest = str(tmp_path / "camvid")
    prepare.main(["camvid", str(tmp_path / "src"), dest, "--splits", str(tmp_path / "src" / "splits")])
    assert stems(dest, "train") == ["0001TP_006690", "0006R0_f00930"]
    assert stems(dest, "validation") == ["Seq05VD_f00000"] and stems(dest, "test") == ["0016E5_07959"]
    for split in ("train", "validation", "test"):
        for stem in stems(dest, split):
            np.testing.assert_array_equal(read_mask(dest, split, stem), expected[stem])
    record = loads_as_folder_dataset(dest, tmp_path, {"train": 2, "validation": 1})
    names = "Sky Building Pole Road Sidewalk Tree SignSymbol Fence Car Pedestrian Bicyclist"
    assert record["class_names"] == names.split()
    assert record["splits"] == {"train": 2, "validation": 1, "test": 1}


def cityscapes_archive(root):
    expected = {}
    for split, city, stem in [
        ("train", "aachen", "aachen_000000_000019"),
        ("train", "bochum", "bochum_000000_000313"),
        ("val", "frankfurt", "frankfurt_000000_000294"),
    ]:
        write_image(os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"), len(expected))
        raw = labels(40 + len(expected), [0, 4, 7, 8, 26, 33])  # unlabeled, static, road, sidewalk, car, bicycle
        write_png(os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png"), raw)
        for other in ("color.png", "instanceIds.png", "polygons.json"):  # the archive's other files: not read
            open(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_{other}"), "w").close()
        expected[stem] = np.vectorize({0: 255, 4: 255, 7: 0, 8: 1, 26: 13, 33: 18}.get)(raw)
    os.makedirs(os.path.join(root, "leftImg8bit", "test", "berlin"))  # test images have no labels: not prepared
    return expected


def test_cityscapes(tmp_path):
    expected = cityscapes_archive(str(tmp_path / "src"))
    dest = str(tmp_path / "cityscapes")
    prepare.main(["cityscapes", str(tmp_path / "src"), dest])
    assert stems(dest, "train") == ["aachen_000000_000019", "bochum_000000_000313"]
    assert stems(dest, "validation") == ["frankfurt_000000_000294"] and not os.path.exists(os.path.join(dest, "test"))
    for split in ("train", "validation"):
        for stem in stems(dest, split):
            np.testing.assert_array_equal(read_mask(dest, split, stem), expected[stem])
    record = loads_as_folder_dataset(dest, tmp_path, {"train": 2, "validation": 1})
    assert record["class_names"] == list(catalog.CITYSCAPES_CLASSES) and record["palette"][0] == [128, 64, 128]


# --------------------------------------------------------------------------------------------------------------
# Refusals and interruptions


def refused(capsys, argv, *needles):
    """Runs segjax-prepare, which must exit with status 2 and one line on stderr holding every needle."""
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("segjax-prepare: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def leftovers(folder):
    return [f for f in os.listdir(folder) if ".partial-" in f]


def test_a_wrong_or_incomplete_source_is_named_and_nothing_is_written(tmp_path, capsys):
    src, dest = tmp_path / "src", str(tmp_path / "out" / "dest")
    voc_archive(src)
    voc = src / "VOCdevkit" / "VOC2012"
    refused(capsys, ["voc", str(tmp_path / "elsewhere"), dest], str(tmp_path / "elsewhere"), "VOCdevkit/VOC2012")
    refused(capsys, ["voc_aug", str(src), dest], str(src / "benchmark_RELEASE" / "dataset"), "SBD")
    os.remove(voc / "JPEGImages" / "b.jpg")
    refused(capsys, ["voc", str(src), dest], str(voc / "JPEGImages" / "b.jpg"), "1 of the files named by")
    os.remove(voc / "ImageSets" / "Segmentation" / "val.txt")
    refused(capsys, ["voc", str(src), dest], str(voc / "ImageSets" / "Segmentation" / "val.txt"))
    refused(capsys, ["ade20k", str(src), dest], str(src / "ADEChallengeData2016"))
    camvid_archive(str(tmp_path / "camvid"))
    refused(capsys, ["camvid", str(tmp_path / "camvid"), dest], "--splits DIR", "train.txt and val.txt")
    splits = str(tmp_path / "camvid" / "splits")
    write_lines(os.path.join(splits, "test.txt"), ["0016E5_07959", "0006R0_f00930"])  # also in train.txt
    refused(capsys, ["camvid", str(tmp_path / "camvid"), dest, "--splits", splits], "0006R0_f00930 is in two splits")
    os.remove(tmp_path / "camvid" / "splits" / "val.txt")
    refused(capsys, ["camvid", str(tmp_path / "camvid"), dest, "--splits", splits], os.path.join(splits, "val.txt"))
    refused(capsys, ["voc", str(src), dest, "--splits", splits], "--splits is for camvid only")
    refused(capsys, ["cityscapes", str(src), dest], str(src / "leftImg8bit" / "train"))
    refused(capsys, ["kitti", str(src), dest], "invalid choice: 'kitti'")
    assert not os.path.exists(tmp_path / "out")


def test_an_existing_dest_is_never_overwritten(tmp_path, capsys):
    voc_archive(tmp_path / "src")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("a user's file")
    refused(capsys, ["voc", str(tmp_path / "src"), str(dest)], f"DEST {dest} already exists and is not empty")
    assert os.listdir(dest) == ["mine.txt"]
    (dest / "mine.txt").unlink()  # an empty folder is fine
    prepare.main(["voc", str(tmp_path / "src"), str(dest)])
    assert sorted(os.listdir(dest)) == ["dataset.json", "train", "validation"]


def test_a_bad_annotation_or_an_interruption_leaves_no_dest(tmp_path, capsys, monkeypatch):
    ade20k_archive(tmp_path / "src")
    bad = tmp_path / "src" / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_1.png"
    write_png(str(bad), np.full((H, W), 151))
    dest = tmp_path / "out" / "ade"
    refused(capsys, ["ade20k", str(tmp_path / "src"), str(dest)], str(bad), "values above 150")
    assert not dest.exists() and leftovers(tmp_path / "out") == []
    write_png(str(bad), np.ones((H, W)))
    real, calls = prepare.write_pair, []

    def interrupted(pair, root):
        calls.append(pair.stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(pair, root)

    monkeypatch.setattr(prepare, "write_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.main(["ade20k", str(tmp_path / "src"), str(dest), "--workers", "1"])
    assert not dest.exists() and leftovers(tmp_path / "out") == []
