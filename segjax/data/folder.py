"""A TFDS builder for your own data: folders of images and class-index PNG masks.

Layout (one folder per split; `train` is required, `validation` and `test` are optional):

    root/train/images/<name>.png|.jpg|.jpeg     root/train/masks/<name>.png
    root/validation/images/...                  root/validation/masks/...

A mask is a single-channel (or palette) PNG whose pixel values are class indices 0 .. num_classes - 1, or
`ignore_index` for unlabelled pixels (with reduce_zero_label, as ADE20K stores them: 0 = unlabelled and
1 .. num_classes the classes). Every pair is checked before anything is written; all problems (missing
mask or image, size mismatch, multi-channel mask, a value that is neither a class nor `ignore_index`) are
reported together with the file names in one ValueError. Nothing is skipped or clipped silently.

The prepared copy follows its folder: `prepared_builder` records a fingerprint of the folder (relative file names,
sizes, modification times) with the copy, compares it on every use (file metadata only, no pixels read) and
prepares the copy again, with the validation above, when the folder changed. The old copy is kept until the new
one is complete, so a folder that became invalid leaves the last good copy in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from segjax.logging_utils import without_log_messages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "validation", "test")
FINGERPRINT_FILE = "segjax_folder_fingerprint.json"
_MAX_REPORTED = 30

log = logging.getLogger("segjax.data")


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
    root: str = ""
    num_classes: int = 0
    ignore_index: int = 255
    reduce_zero_label: bool = False


def folder_config(
    root: str, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False
) -> FolderConfig:
    """Builder config for a folder; the name hashes its arguments, so each folder gets its own cache."""
    if not root:
        raise ValueError("data_config.folder.root is empty: set it to the folder holding train/images and train/masks")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise ValueError(f"data_config.folder.root {root!r} is not a directory")
    if num_classes < 1:
        raise ValueError(f"data_config.folder.num_classes must be >= 1, got {num_classes}")
    if not (num_classes <= ignore_index <= 255):
        raise ValueError(f"ignore_index {ignore_index} must lie in [num_classes, 255] = [{num_classes}, 255]")
    digest = hashlib.sha1(f"{root}|{num_classes}|{ignore_index}|{reduce_zero_label}".encode()).hexdigest()[:12]
    return FolderConfig(
        name=f"{os.path.basename(root) or 'root'}_{digest}",
        root=root,
        num_classes=num_classes,
        ignore_index=ignore_index,
        reduce_zero_label=bool(reduce_zero_label),
        description=f"images and masks under {root}",
    )


def find_splits(root: str) -> list[str]:
    return [s for s in SPLITS if os.path.isdir(os.path.join(root, s, "images"))]


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _load_mask(path: str) -> np.ndarray:
    with Image.open(path) as mask:
        if mask.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"mode {mask.mode} (a mask must be one channel of class indices, or a palette PNG)")
        return np.asarray(mask)


def check_split(root: str, split: str, num_classes: int, ignore_index: int) -> tuple[list, list[str]]:
    """Returns ([(name, image_path, mask_path)], [problem descriptions]) for one split."""
    image_dir = os.path.join(root, split, "images")
    mask_dir = os.path.join(root, split, "masks")
    images = {
        os.path.splitext(f)[0]: f
        for f in sorted(os.listdir(image_dir))
        if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
    }
    masks = (
        {os.path.splitext(f)[0]: f for f in sorted(os.listdir(mask_dir)) if f.lower().endswith(".png")}
        if os.path.isdir(mask_dir)
        else {}
    )
    problems, pairs = [], []
    for name in sorted(set(masks) - set(images)):
        problems.append(f"{os.path.join(mask_dir, masks[name])}: mask without an image in {image_dir}")
    for name, image_file in images.items():
        image_path = os.path.join(image_dir, image_file)
        if name not in masks:
            problems.append(f"{image_path}: no mask {os.path.join(mask_dir, name + '.png')}")
            continue
        mask_path = os.path.join(mask_dir, masks[name])
        try:
            mask = _load_mask(mask_path)  # decoded whole: a file cut short fails here, by name, not in training
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            problems.append(f"{mask_path}: unreadable mask: {e}")
            continue
        try:
            with Image.open(image_path) as image:
                image.load()  # decoded whole, not only the header
                size = image.size[::-1]
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            problems.append(f"{image_path}: unreadable image: {e}")
            continue
        if mask.shape != size:
            problems.append(f"{mask_path}: mask size {mask.shape} (H, W) differs from image {image_path} {size}")
            continue
        values = np.unique(mask)
        bad = values[(values >= num_classes) & (values != ignore_index)]
        if bad.size:
            problems.append(
                f"{mask_path}: values {bad.tolist()[:10]} are neither a class (0..{num_classes - 1}) "
                f"nor ignore_index {ignore_index}"
            )
            continue
        pairs.append((name, image_path, mask_path))
    if not images:
        problems.append(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return pairs, problems


def check_folder(root: str, num_classes: int, ignore_index: int) -> dict[str, list]:
    """Checks every split of the folder; raises one ValueError listing every bad file."""
    splits = find_splits(root)
    if "train" not in splits:
        raise ValueError(f"{root!r} has no train/images folder; expected root/train/images and root/train/masks")
    pairs, problems = {}, []
    for split in splits:
        pairs[split], split_problems = check_split(root, split, num_classes, ignore_index)
        problems += split_problems
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(
            f"{len(problems)} bad image/mask pair(s) in {root}:\n  {shown}{more}\n"
            "Fix or remove these files; nothing was written."
        )
    return pairs


class SegjaxFolder(tfds.core.GeneratorBasedBuilder):
    """Images and masks from a user's folder; create with `SegjaxFolder(config=folder_config(...))`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 derives this through `importlib_resources`, which is not installed on Python >= 3.9.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        c = self.builder_config
        pairs = check_folder(c.root, c.num_classes + int(c.reduce_zero_label), c.ignore_index)
        return {split: self._generate_examples(items) for split, items in pairs.items()}

    def _generate_examples(self, items):
        for name, image_path, mask_path in items:
            with Image.open(image_path) as image:
                # Original bytes when already RGB (no re-encoding of JPEGs); otherwise converted to RGB PNG.
                if image.mode == "RGB" and image.format in ("PNG", "JPEG"):
                    image_bytes = epath.Path(image_path).read_bytes()
                else:
                    image_bytes = _png_bytes(np.asarray(image.convert("RGB")))
            mask = _load_mask(mask_path).astype(np.uint8)[..., None]
            yield name, {"image": image_bytes, "label": _png_bytes(mask[..., 0]), "file_name": name}


# --------------------------------------------------------------------------------------------------------------
# The prepared copy follows its folder


def fingerprint(root: str) -> dict[str, list]:
    """'split/name' -> [[relative path, size, mtime_ns], ...] of the pair's image and mask files (stat only)."""
    pairs: dict[str, list] = {}
    for split in find_splits(root):
        for kind, suffixes in (("images", IMAGE_SUFFIXES), ("masks", (".png",))):
            folder = os.path.join(root, split, kind)
            if not os.path.isdir(folder):
                continue
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                stem, suffix = os.path.splitext(entry.name)
                if entry.is_file() and suffix.lower() in suffixes:
                    stat = entry.stat()
                    pairs.setdefault(f"{split}/{stem}", []).append(
                        [f"{split}/{kind}/{entry.name}", stat.st_size, stat.st_mtime_ns]
                    )
    return pairs


def describe_changes(old: dict, new: dict) -> str:
    """'N added, M removed, K changed' pairs between two fingerprints."""
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(old[k] != new[k] for k in old.keys() & new.keys())
    return f"{added} added, {removed} removed, {changed} changed"


def prepare_once(builder) -> None:
    """download_and_prepare of segjax's own builders (folders, the embedded dataset), tolerating another process
    that finishes the same preparation first."""
    try:
        builder.download_and_prepare()
    except FileExistsError:  # TFDS renames its temporary folder at the end; a concurrent twin got there first
        if not builder.is_prepared():
            raise


def prepared_builder(config: FolderConfig, data_dir: str | None) -> SegjaxFolder:
    """The builder of `config`'s folder, prepared from the folder as it is now (see the module docstring)."""

    def make() -> SegjaxFolder:
        with without_log_messages("Using custom data configuration"):  # every folder has its own builder config
            return SegjaxFolder(config=config, data_dir=data_dir, file_format="array_record")

    current = fingerprint(config.root)
    builder = make()
    path = epath.Path(builder.data_dir)
    recorded_file = path / FINGERPRINT_FILE
    recorded = json.loads(recorded_file.read_text()) if builder.is_prepared() and recorded_file.exists() else None
    if recorded == current:
        return builder
    if recorded is not None:
        log.info(
            "The folder %s changed since it was prepared (pairs: %s); preparing it again.",
            config.root,
            describe_changes(recorded, current),
        )
    elif builder.is_prepared():
        log.info("The prepared copy of %s records no fingerprint of its folder; preparing it again.", config.root)
    else:
        log.info("Preparing the folder %s (%d image/mask pairs).", config.root, len(current))
    stale = path.parent / f".{path.name}.stale"
    if path.exists():
        if stale.exists():
            shutil.rmtree(stale)
        path.rename(stale)  # kept until the new copy is complete
        builder = make()
    try:
        prepare_once(builder)
    except BaseException:
        if stale.exists() and not path.exists():
            stale.rename(path)  # the folder is invalid now: the last good copy stays
        raise
    tmp = path / f".{FINGERPRINT_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(current))
    tmp.replace(recorded_file)
    if stale.exists():
        shutil.rmtree(stale)
    return builder
