"""Real TFDS segmentation datasets: where the image and the mask live in each example, and the label map.

A label map turns the raw mask values stored by TFDS into training classes `0 .. num_classes - 1` or
`ignore_index`. Raw values a map does not list are void and become `ignore_index` (the Cityscapes convention).
`reduce_zero_label` is applied to the raw values first, exactly as mmsegmentation defines it: 0 (the "other"
class of ADE20K) becomes ignore, every other value v becomes v - 1, and 255 stays ignore.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

VOID = -1  # placeholder in label maps for "ignore_index, whatever value the config chooses"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one TFDS dataset feeds the pipeline."""

    tfds_name: str
    image_key: str
    label_key: str
    class_names: tuple[str, ...]
    label_map: Mapping[int, int] | None = None  # raw value -> class or VOID; None = identity on 0..C-1
    reduce_zero_label: bool = False
    label_channel: int = 0  # which channel of a multi-channel mask holds the class
    train_split: str = "train"
    eval_split: str = "validation"
    crop_size: tuple[int, int] = (512, 512)
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescale for training (mmsegmentation's default)
    note: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# Cityscapes labelIds -> the 19 evaluation trainIds (cityscapesScripts labels.py); everything else is void.
CITYSCAPES_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# PASCAL VOC 2012's 20 object classes and background, in its palette-index order (VOCdevkit's VOCinit.m).
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# ADE20K SceneParsing's 150 classes (ADEChallengeData2016 objectInfo150.txt, first name of each; mmsegmentation's
# order): annotation value v is class v - 1, value 0 ("other") is unlabelled.
ADE20K_CLASSES = tuple(
    """wall|building|sky|floor|tree|ceiling|road|bed|windowpane|grass|cabinet|sidewalk|person|earth|door|table|
    mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|field|armchair|seat|fence|desk|
    rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|signboard|chest of drawers|counter|sand|sink|
    skyscraper|fireplace|refrigerator|grandstand|path|stairs|runway|case|pool table|pillow|screen door|stairway|river|
    bridge|bookcase|blind|coffee table|toilet|flower|book|hill|bench|countertop|stove|palm|kitchen island|computer|
    swivel chair|boat|bar|arcade machine|hovel|bus|towel|light|truck|tower|chandelier|awning|streetlight|booth|
    television receiver|airplane|dirt track|apparel|pole|land|bannister|escalator|ottoman|bottle|buffet|poster|stage|
    van|ship|fountain|conveyer belt|canopy|washer|plaything|swimming pool|stool|barrel|basket|waterfall|tent|bag|
    minibike|cradle|oven|ball|food|step|tank|trade name|microwave|pot|animal|bicycle|lake|dishwasher|screen|blanket|
    sculpture|hood|sconce|vase|traffic light|tray|ashcan|fan|pier|crt screen|plate|monitor|bulletin board|shower|
    radiator|glass|clock|flag""".replace("\n", "")
    .replace("    ", "")
    .split("|")
)

# CamVid's 11-class protocol (Sturgess et al., BMVC 2009; the classes SegNet reports): each of the 11 classes with the
# official 32-class names it groups (names as in CamVid's label_colors.txt). "Void" is ignored.
CAMVID_GROUPS = {
    "Sky": ("Sky",),
    "Building": ("Building", "Wall", "Tunnel", "Archway", "Bridge"),
    "Pole": ("Column_Pole", "TrafficCone"),
    "Road": ("Road", "LaneMkgsDriv", "LaneMkgsNonDriv"),
    "Sidewalk": ("Sidewalk", "ParkingBlock", "RoadShoulder"),
    "Tree": ("Tree", "VegetationMisc"),
    "SignSymbol": ("SignSymbol", "Misc_Text", "TrafficLight"),
    "Fence": ("Fence",),
    "Car": ("Car", "SUVPickupTruck", "Truck_Bus", "Train", "OtherMoving"),
    "Pedestrian": ("Pedestrian", "Child", "CartLuggagePram", "Animal"),
    "Bicyclist": ("Bicyclist", "MotorcycleScooter"),
}
CAMVID_CLASSES = tuple(CAMVID_GROUPS)
CAMVID_VOID = ("Void",)
CATALOG: dict[str, DatasetSpec] = {
    # Trimaps: 1 = pet, 2 = background, 3 = border ("not classified"), which is ignored as in the paper's
    # evaluation. TFDS has only train and test splits.
    "oxford_iiit_pet": DatasetSpec(
        tfds_name="oxford_iiit_pet",
        image_key="image",
        label_key="segmentation_mask",
        class_names=("background", "pet"),
        label_map={1: 1, 2: 0, 3: VOID},
        eval_split="test",
        crop_size=(256, 256),
    ),
    # Manual download (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip); masks hold labelIds.
    "cityscapes": DatasetSpec(
        tfds_name="cityscapes/semantic_segmentation",
        image_key="image_left",
        label_key="segmentation_label",
        class_names=CITYSCAPES_CLASSES,
        label_map=CITYSCAPES_TRAIN_IDS,
        crop_size=(512, 1024),
    ),
    # MIT Scene Parsing (ADE20K) as TFDS 4.9.10 builds it: the builder stores ChallengeData2017's
    # `annotations_instance` PNGs, whose R channel is one of the 100 instance ("thing") categories, 0 = no
    # instance (stuff and unlabelled; ignored via reduce_zero_label). This is NOT the 150-class semantic
    # benchmark: for that, use the folder builder on ADEChallengeData2016 (`annotations/` as masks,
    # folder.num_classes=150, reduce_zero_label=True). TFDS names the validation images "test".
    "scene_parse150": DatasetSpec(
        tfds_name="scene_parse150",
        image_key="image",
        label_key="annotation",
        class_names=tuple(f"ade_instance_category_{i}" for i in range(1, 101)),
        reduce_zero_label=True,
        eval_split="test",
        crop_size=(512, 512),
        note="100 ADE20K instance categories (R channel of annotations_instance), not the 150 semantic classes",
    ),
}
# TFDS 4.9.10 provides VOC 2007/2012 only as detection datasets (no segmentation masks), so VOC is absent.


def label_lut(
    num_classes: int, ignore_index: int, label_map: Mapping[int, int] | None = None, reduce_zero_label: bool = False
) -> np.ndarray:
    """A (256,) uint8 lookup table raw mask value -> class index or `ignore_index`."""
    if not 0 <= ignore_index <= 255:
        raise ValueError(f"ignore_index must be in [0, 255] (labels are stored as uint8), got {ignore_index}")
    if ignore_index < num_classes:
        raise ValueError(
            f"ignore_index {ignore_index} collides with a class index (num_classes={num_classes});"
            " choose a value >= num_classes, e.g. 255"
        )
    raw = np.arange(256)
    if reduce_zero_label:  # mmsegmentation: 0 -> 255, v -> v - 1, then 254 (was 255) -> 255
        raw = np.where(raw == 0, 255, raw - 1)
        raw = np.where(raw == 254, 255, raw)
    lut = np.full(256, ignore_index, np.uint8)
    for value in range(256):
        r = int(raw[value])
        if label_map is None:
            cls = r if r < num_classes else VOID
        else:
            cls = label_map.get(r, VOID)
        if cls != VOID:
            if not 0 <= cls < num_classes:
                raise ValueError(f"label map sends raw value {r} to class {cls}, outside 0..{num_classes - 1}")
            lut[value] = cls
    return lut


def get_spec(name: str) -> DatasetSpec:
    if name not in CATALOG:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: 'embedded', 'segjax_shapes/64', "
            f"'segjax_shapes/128', 'folder', {', '.join(repr(k) for k in sorted(CATALOG))}"
        )
    return CATALOG[name]
