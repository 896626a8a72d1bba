"""segjax-prepare: a dataset's official download, extracted, turned into segjax's folder layout.

    segjax-prepare {voc, voc_aug, ade20k, camvid, cityscapes} SOURCE DEST [--splits DIR] [--workers N]

DEST gets `{train,validation}/{images,masks}` (and `test/` for CamVid when its split list has one), the layout of
segjax/data/folder.py: one single-channel PNG mask of class indices per image, with the image's stem, 255 = ignore.
Images are copied unchanged. `DEST/dataset.json` (DATASET_FILE) records the dataset's name, class names, ignore
index, palette, split sizes and how the masks were made, for reports and `segjax-predict`. docs/datasets.md says
what SOURCE must hold for each dataset.

Nothing half-done is left behind: SOURCE's layout, split lists and every listed file are checked before anything is
written (a missing one is named in one message); the conversion writes into a temporary sibling of DEST, renamed to
DEST only when complete, and removed if anything fails (a mask with an unexpected value, an interruption). An
existing non-empty DEST is refused: no user file is overwritten.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from segjax import cli
from segjax.data import catalog
from segjax.files import write_json
from segjax.plots import palette

PROG = "segjax-prepare"
DATASET_FILE = "dataset.json"
IGNORE_INDEX = 255
DOCS = "see docs/datasets.md"


class PrepareError(ValueError):
    """A SOURCE, DEST or split list segjax-prepare cannot use; the message names the path and the fix."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """One image and its annotation in SOURCE; `convert` reads the annotation as a (H, W) uint8 mask of classes."""

    split: str  # 'train', 'validation' or 'test'
    stem: str
    image: str
    annotation: str
    convert: Callable[[str], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a conversion will do, known (and checked) before the first write."""

    name: str
    description: str
    class_names: tuple[str, ...]
    colours: np.ndarray  # (num_classes, 3) uint8
    masks: str  # how the masks were made (recorded in dataset.json)
    pairs: tuple[Pair, ...]


# --------------------------------------------------------------------------------------------------------------
# Checks of SOURCE


def _require(path: str, what: str) -> str:
    """`path` if it exists, else a PrepareError naming it and what it should be."""
    if not os.path.exists(path):
        raise PrepareError(f"{path} does not exist: SOURCE must hold {what} ({DOCS})")
    return path


def _inner(source: str, candidates: Sequence[str], marker: str, what: str) -> str:
    """The folder of SOURCE that holds `marker`: SOURCE/<candidate> for the first candidate that does, or SOURCE
    itself (the user gave the inner folder)."""
    _require(source, what)
    for folder in [os.path.join(source, c) for c in candidates] + [source]:
        if os.path.exists(os.path.join(folder, marker)):
            return folder
    raise PrepareError(f"{os.path.join(source, candidates[0])} does not exist: SOURCE must hold {what} ({DOCS})")


def _read_list(path: str, what: str) -> list[str]:
    """Stems of a split list: the first word of each line, without folders and suffix (so `name`, `name.png` and
    SegNet's `/SegNet/CamVid/train/name.png /SegNet/CamVid/trainannot/name.png` all give `name`)."""
    with open(_require(path, what)) as f:
        words = [line.split()[0] for line in f if line.strip()]
    stems = [os.path.splitext(os.path.basename(w))[0] for w in words]
    if not stems:
        raise PrepareError(f"{path} lists no images: it should name one image per line ({DOCS})")
    return list(dict.fromkeys(stems))  # first occurrence, order kept


def _check_files(pairs: Sequence[Pair], lists: str) -> tuple[Pair, ...]:
    """All pairs, or a PrepareError naming the first missing file and how many are missing, or the first image that
    two splits share (it would be trained on and evaluated on)."""
    split_of = {}
    for pair in pairs:
        if split_of.setdefault(pair.stem, pair.split) != pair.split:
            raise PrepareError(
                f"{pair.stem} is in two splits ({split_of[pair.stem]} and {pair.split}) of {lists}: the split lists "
                "must not overlap"
            )
    missing = [p for pair in pairs for p in (pair.image, pair.annotation) if not os.path.exists(p)]
    if missing:
        raise PrepareError(
            f"{missing[0]} does not exist ({len(missing)} of the files named by {lists} are missing): SOURCE is "
            f"incomplete: extract the whole archive ({DOCS})"
        )
    return tuple(pairs)


# --------------------------------------------------------------------------------------------------------------
# Reading annotations


def _indices(path: str, modes=("L", "P")) -> np.ndarray:
    """A one-channel (or palette) PNG as its raw values (a palette PNG gives its palette indices)."""
    with Image.open(path) as image:
        if image.mode not in modes:
            raise PrepareError(
                f"{path} has mode {image.mode}, expected {' or '.join(modes)} (one channel of label values, or "
                "palette indices): use the annotation files of the official archive"
            )
        return np.asarray(image)


def _check_values(path: str, mask: np.ndarray, num_classes: int, note: str) -> np.ndarray:
    bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
    if bad.size:
        raise PrepareError(f"{path} holds values {bad.tolist()[:10]}, {note}")
    return mask.astype(np.uint8)


def voc_mask(path: str) -> np.ndarray:
    """VOC's SegmentationClass PNG: palette index = class (0..20), 255 = the 'difficult' boundary, kept as ignore."""
    return _check_values(path, _indices(path), len(catalog.VOC_CLASSES), "which are neither a VOC class nor 255")


def sbd_mask(path: str) -> np.ndarray:
    """SBD's `cls/<id>.mat`: struct GTcls, field Segmentation, classes 0..20 (SBD has no boundary label)."""
    try:
        segmentation = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except (KeyError, AttributeError, ValueError, OSError) as e:
        raise PrepareError(f"{path} is not an SBD cls file (struct GTcls with field Segmentation): {e}") from None
    mask = np.asarray(segmentation)
    return _check_values(path, mask, len(catalog.VOC_CLASSES), "which are neither a VOC class nor 255")


ADE20K_LUT = catalog.label_lut(len(catalog.ADE20K_CLASSES), IGNORE_INDEX, reduce_zero_label=True)


def ade20k_mask(path: str) -> np.ndarray:
    """ADEChallengeData2016 annotation: 0 ('other') -> ignore, v -> v - 1 for the 150 classes."""
    raw = _indices(path, ("L",))
    if raw.max(initial=0) > len(catalog.ADE20K_CLASSES):
        raise PrepareError(f"{path} holds values above 150: not an ADE20K-150 (SceneParsing) annotation")
    return ADE20K_LUT[raw]


CITYSCAPES_LUT = catalog.label_lut(len(catalog.CITYSCAPES_CLASSES), IGNORE_INDEX, catalog.CITYSCAPES_TRAIN_IDS)


def cityscapes_mask(path: str) -> np.ndarray:
    """gtFine labelIds -> the 19 trainIds; every other label (void, and classes not evaluated) -> ignore."""
    return CITYSCAPES_LUT[_indices(path, ("L", "P"))]


@dataclasses.dataclass(frozen=True)
class CamvidColours:
    """CamVid's RGB colour masks -> the 11 classes, from the colour table of SOURCE's label_colors.txt."""

    path: str  # label_colors.txt, named in errors
    classes: dict  # 0xRRGGBB -> class index or IGNORE_INDEX

    @classmethod
    def read(cls, path: str) -> CamvidColours:
        group = {name: i for i, names in enumerate(catalog.CAMVID_GROUPS.values()) for name in names}
        group.update(dict.fromkeys(catalog.CAMVID_VOID, IGNORE_INDEX))
        classes, unknown = {}, []
        with open(path) as f:
            for line in f:
                words = line.split()
                if not words:
                    continue
                try:
                    r, g, b, name = int(words[0]), int(words[1]), int(words[2]), words[3]
                except (ValueError, IndexError):
                    raise PrepareError(f"{path}: line {line.strip()!r} is not 'R G B Name'") from None
                if name not in group:
                    unknown.append(name)
                classes[(r << 16) | (g << 8) | b] = group.get(name, IGNORE_INDEX)
        if unknown:
            raise PrepareError(f"{path} names labels {unknown} that are not among CamVid's 32: not CamVid's file")
        return cls(path, classes)

    def __call__(self, path: str) -> np.ndarray:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB")).astype(np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        values, inverse = np.unique(codes, return_inverse=True)
        unknown = [f"#{v:06x}" for v in values if int(v) not in self.classes]
        if unknown:
            raise PrepareError(f"{path} holds colours {unknown[:5]} that {self.path} does not list")
        return np.array([self.classes[int(v)] for v in values], np.uint8)[inverse.reshape(codes.shape)]


# --------------------------------------------------------------------------------------------------------------
# The datasets: SOURCE -> Plan (checks only, nothing is read beyond the lists)

VOC_WHAT = "VOC 2012's VOCdevkit/VOC2012/ (VOCtrainval_11-May-2012.tar, extracted)"
SBD_WHAT = "SBD's benchmark_RELEASE/dataset/ (benchmark.tgz, extracted) beside VOCdevkit/"


def _voc_root(source: str) -> str:
    return _inner(source, ("VOCdevkit/VOC2012", "VOC2012"), "JPEGImages", VOC_WHAT)


def _voc_pair(voc: str, split: str, stem: str) -> Pair:
    image = os.path.join(voc, "JPEGImages", stem + ".jpg")
    return Pair(split, stem, image, os.path.join(voc, "SegmentationClass", stem + ".png"), voc_mask)


def _voc_lists(voc: str) -> tuple[list[str], list[str]]:
    _require(os.path.join(voc, "SegmentationClass"), VOC_WHAT)
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    return _read_list(os.path.join(lists, "train.txt"), VOC_WHAT), _read_list(os.path.join(lists, "val.txt"), VOC_WHAT)


def plan_voc(source: str, splits: str | None) -> Plan:
    voc = _voc_root(source)
    train, val = _voc_lists(voc)
    pairs = [_voc_pair(voc, "train", s) for s in train] + [_voc_pair(voc, "validation", s) for s in val]
    return Plan(
        "voc",
        "PASCAL VOC 2012 segmentation (train 1464, val 1449)",
        catalog.VOC_CLASSES,
        palette(len(catalog.VOC_CLASSES), "voc"),
        "SegmentationClass palette indices = classes; 255 (object boundaries, 'difficult') = ignore",
        _check_files(pairs, os.path.join(voc, "ImageSets", "Segmentation")),
    )


def plan_voc_aug(source: str, splits: str | None) -> Plan:
    """train_aug: SBD train + SBD val + VOC train, less VOC val (10582 images); validation: VOC val (1449). Masks
    come from VOC's SegmentationClass where VOC annotated the image (finer, with boundaries), else from SBD."""
    voc = _voc_root(source)
    sbd = _require(os.path.join(source, "benchmark_RELEASE", "dataset"), SBD_WHAT)
    _require(os.path.join(sbd, "cls"), SBD_WHAT)
    voc_train, voc_val = _voc_lists(voc)
    sbd_ids = _read_list(os.path.join(sbd, "train.txt"), SBD_WHAT) + _read_list(os.path.join(sbd, "val.txt"), SBD_WHAT)
    train = sorted(set(voc_train + sbd_ids) - set(voc_val))
    voc_annotated = set(voc_train)  # VOC's own masks (finer, with boundaries) where it has them, else SBD's
    pairs = [
        _voc_pair(voc, "train", s)
        if s in voc_annotated
        else dataclasses.replace(
            _voc_pair(voc, "train", s), annotation=os.path.join(sbd, "cls", s + ".mat"), convert=sbd_mask
        )
        for s in train
    ]
    pairs += [_voc_pair(voc, "validation", s) for s in voc_val]
    return Plan(
        "voc_aug",
        "PASCAL VOC 2012 with SBD's extra annotations (train_aug 10582, val 1449)",
        catalog.VOC_CLASSES,
        palette(len(catalog.VOC_CLASSES), "voc"),
        "VOC SegmentationClass palette indices where VOC annotated the image (255 boundaries = ignore), else SBD "
        "cls/*.mat GTcls.Segmentation (classes 0..20)",
        _check_files(pairs, f"{os.path.join(voc, 'ImageSets', 'Segmentation')} and {sbd}"),
    )


ADE_WHAT = "ADEChallengeData2016/ with images/ and annotations/ (ADEChallengeData2016.zip, extracted)"


def plan_ade20k(source: str, splits: str | None) -> Plan:
    root = _inner(source, ("ADEChallengeData2016",), "images", ADE_WHAT)
    pairs = []
    for theirs, ours in (("training", "train"), ("validation", "validation")):
        images = _require(os.path.join(root, "images", theirs), ADE_WHAT)
        annotations = _require(os.path.join(root, "annotations", theirs), ADE_WHAT)
        stems = sorted(os.path.splitext(f)[0] for f in os.listdir(images) if f.lower().endswith(".jpg"))
        if not stems:
            raise PrepareError(f"{images} holds no .jpg images: SOURCE must hold {ADE_WHAT} ({DOCS})")
        pairs += [
            Pair(ours, s, os.path.join(images, s + ".jpg"), os.path.join(annotations, s + ".png"), ade20k_mask)
            for s in stems
        ]
    return Plan(
        "ade20k",
        "ADE20K SceneParsing, 150 classes (train 20210, validation 2000)",
        catalog.ADE20K_CLASSES,
        palette(len(catalog.ADE20K_CLASSES), "ade20k"),
        "annotation 0 ('other') = ignore, value v = class v - 1 (reduce_zero_label applied)",
        _check_files(pairs, f"{os.path.join(root, 'images')} (every image needs its annotation)"),
    )


CAMVID_WHAT = "CamVid's 701_StillsRaw_full/, LabeledApproved_full/ and label_colors.txt"


def plan_camvid(source: str, splits: str | None) -> Plan:
    images = _require(os.path.join(source, "701_StillsRaw_full"), CAMVID_WHAT)
    labels = _require(os.path.join(source, "LabeledApproved_full"), CAMVID_WHAT)
    colours = CamvidColours.read(_require(os.path.join(source, "label_colors.txt"), CAMVID_WHAT))
    if splits is None:
        raise PrepareError(
            "camvid needs --splits DIR, a folder with train.txt and val.txt (optionally test.txt) naming one image "
            f"per line: CamVid's archive has no split lists (SegNet's: 367 / 101 / 233 images; {DOCS})"
        )
    what = "train.txt and val.txt (optionally test.txt), one image per line"
    lists = {"train": "train.txt", "validation": "val.txt"}
    if os.path.exists(os.path.join(splits, "test.txt")):
        lists["test"] = "test.txt"
    pairs = []
    for split, name in lists.items():
        path = os.path.join(splits, name)
        if not os.path.exists(path):
            raise PrepareError(f"{path} does not exist: --splits must be a folder with {what} ({DOCS})")
        pairs += [
            Pair(split, s, os.path.join(images, s + ".png"), os.path.join(labels, s + "_L.png"), colours)
            for s in _read_list(path, what)
        ]
    return Plan(
        "camvid",
        "CamVid, 11 classes (Sturgess et al. 2009 / SegNet), at the official 960x720",
        catalog.CAMVID_CLASSES,
        palette(len(catalog.CAMVID_CLASSES), "camvid"),
        "LabeledApproved_full colours (label_colors.txt) -> 11 classes by catalog.CAMVID_GROUPS; Void = ignore",
        _check_files(pairs, splits),
    )


CITYSCAPES_WHAT = "Cityscapes' leftImg8bit/ and gtFine/ (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)"


def plan_cityscapes(source: str, splits: str | None) -> Plan:
    pairs = []
    for theirs, ours in (("train", "train"), ("val", "validation")):
        images = _require(os.path.join(source, "leftImg8bit", theirs), CITYSCAPES_WHAT)
        labels = _require(os.path.join(source, "gtFine", theirs), CITYSCAPES_WHAT)
        found = 0
        for city in sorted(os.listdir(images)):
            if not os.path.isdir(os.path.join(images, city)):
                continue
            for f in sorted(os.listdir(os.path.join(images, city))):
                if f.endswith("_leftImg8bit.png"):
                    stem = f[: -len("_leftImg8bit.png")]
                    label = os.path.join(labels, city, stem + "_gtFine_labelIds.png")
                    pairs.append(Pair(ours, stem, os.path.join(images, city, f), label, cityscapes_mask))
                    found += 1
        if not found:
            raise PrepareError(f"{images} holds no <city>/*_leftImg8bit.png: SOURCE must hold {CITYSCAPES_WHAT}")
    return Plan(
        "cityscapes",
        "Cityscapes fine annotations, 19 classes (train 2975, val 500)",
        catalog.CITYSCAPES_CLASSES,
        palette(len(catalog.CITYSCAPES_CLASSES), "cityscapes"),
        "gtFine labelIds -> the 19 trainIds (catalog.CITYSCAPES_TRAIN_IDS); every other label = ignore",
        _check_files(pairs, f"{os.path.join(source, 'leftImg8bit')} (every image needs its gtFine labelIds)"),
    )


DATASETS: dict[str, Callable[[str, str | None], Plan]] = {
    "voc": plan_voc,
    "voc_aug": plan_voc_aug,
    "ade20k": plan_ade20k,
    "camvid": plan_camvid,
    "cityscapes": plan_cityscapes,
}


# --------------------------------------------------------------------------------------------------------------
# Writing


def write_pair(pair: Pair, root: str) -> None:
    """The pair's converted mask and a copy of its image under `root/<split>/`; the sizes must agree."""
    mask = pair.convert(pair.annotation)
    with Image.open(pair.image) as image:
        size = image.size[::-1]
    if mask.shape != size:
        raise PrepareError(
            f"{pair.annotation} is {mask.shape[0]}x{mask.shape[1]} but its image {pair.image} is "
            f"{size[0]}x{size[1]} (H x W): the files do not belong together"
        )
    suffix = os.path.splitext(pair.image)[1].lower()
    shutil.copyfile(pair.image, os.path.join(root, pair.split, "images", pair.stem + suffix))
    Image.fromarray(mask).save(os.path.join(root, pair.split, "masks", pair.stem + ".png"))


def check_dest(dest: str) -> str:
    """DEST as an absolute path, or a PrepareError when it holds anything (nothing is overwritten)."""
    dest = os.path.abspath(os.path.expanduser(dest))
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise PrepareError(f"DEST {dest} already exists and is not empty: give a new folder (nothing is overwritten)")
    return dest


def prepare(dataset: str, source: str, dest: str, splits: str | None = None, workers: int = 4) -> dict:
    """Converts SOURCE into DEST (see the module docstring); returns what it wrote into DEST/dataset.json."""
    if dataset not in DATASETS:
        raise PrepareError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if splits is not None and dataset != "camvid":
        raise PrepareError(f"--splits is for camvid only ({dataset} has its own split lists); drop it")
    dest = check_dest(dest)
    plan = DATASETS[dataset](os.path.abspath(os.path.expanduser(source)), splits)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.partial-")
    try:
        split_sizes = {}
        for pair in plan.pairs:
            split_sizes[pair.split] = split_sizes.get(pair.split, 0) + 1
        for split in split_sizes:
            os.makedirs(os.path.join(tmp, split, "images"))
            os.makedirs(os.path.join(tmp, split, "masks"))
        pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))  # PIL and zlib release the GIL
        try:
            done = pool.map(lambda pair: write_pair(pair, tmp), plan.pairs)
            for _ in tqdm(done, total=len(plan.pairs), desc=f"{PROG} {dataset}", unit="image", disable=None):
                pass
        finally:  # on a failure: nothing more starts, and nothing writes into tmp once it is removed
            pool.shutdown(wait=True, cancel_futures=True)
        record = {
            "name": plan.name,
            "description": plan.description,
            "num_classes": len(plan.class_names),
            "class_names": list(plan.class_names),
            "ignore_index": IGNORE_INDEX,
            "palette": plan.colours.tolist(),
            "splits": split_sizes,
            "masks": plan.masks,
            "source": os.path.abspath(source),
        }
        write_json(os.path.join(tmp, DATASET_FILE), record)
        os.replace(tmp, dest)  # an empty DEST is replaced whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.ArgumentParser(
        prog=PROG,
        description="Turn a dataset's official archive, extracted into SOURCE, into segjax's folder layout in DEST "
        f"(DEST/{{train,validation}}/{{images,masks}} and DEST/{DATASET_FILE}); {DOCS}.",
    )
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("source", help="the folder the official archive(s) were extracted into")
    parser.add_argument("dest", help="a new (or empty) folder for the result")
    parser.add_argument("--splits", help="camvid only: a folder with train.txt, val.txt (and test.txt) split lists")
    parser.add_argument("--workers", type=int, default=4, help="threads converting images (default 4)")
    args = parser.parse_args(argv)
    try:
        record = prepare(args.dataset, args.source, args.dest, args.splits, args.workers)
    except PrepareError as e:
        cli.fail(PROG, str(e))
    sizes = ", ".join(f"{split} {n}" for split, n in record["splits"].items())
    print(f"{args.dest}: {record['description']}; wrote {sizes}; classes and palette in {DATASET_FILE}")


if __name__ == "__main__":
    main()
