"""The input pipeline: a TFDS data source read through grain, with paired transforms.

Every random choice is a pure function of (seed, position in the stream): grain shuffles each epoch with
`seed + epoch` and seeds the augmentation of the element at global position i from (seed, i). So batch k of
`make_loader(..., start_step=s)` is batch s + k of an uninterrupted loader, whatever the number of worker threads
or processes, and the per-process shards of global batch k, concatenated in process order, are exactly that global
batch (so a multi-process run puts the same examples on the same devices as one process).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_dict

from segjax.data import catalog, shapes, transforms
from segjax.data import folder as folder_lib
from segjax.logging_utils import without_log_messages


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults of every data key; `name='embedded'` trains offline on `segjax_shapes/64`."""
    c = ml_collections.ConfigDict()
    # 'embedded' (= segjax_shapes/<embedded.resolution>), 'segjax_shapes/64', 'segjax_shapes/128', 'folder',
    # or a catalog dataset: 'oxford_iiit_pet', 'cityscapes', 'scene_parse150' (see segjax/data/catalog.py).
    c.name = "embedded"
    # Typed placeholders (None until set): None means the dataset's own choice.
    c.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None: ~/tensorflow_datasets or $TFDS_DATA_DIR
    c.download = False  # catalog datasets: let TFDS download and prepare them if missing (needs segjax[tf])
    c.train_split = config_dict.placeholder(str)  # e.g. 'train'
    c.eval_split = config_dict.placeholder(str)  # e.g. 'validation' ('test' where TFDS has no validation)
    c.crop_size = config_dict.placeholder(object)  # training crop, int or (h, w); embedded: its resolution
    c.eval_size = config_dict.placeholder(object)  # fixed evaluation size (pad / downscale to fit); None: crop_size
    # Random rescale (low, high) before cropping; None: (1, 1) for embedded, else (0.5, 2.0); (1.0, 1.0) disables.
    c.scale_range = config_dict.placeholder(tuple)
    c.hflip = True
    c.mean = transforms.IMAGENET_MEAN
    c.std = transforms.IMAGENET_STD
    c.ignore_index = 255
    c.reduce_zero_label = config_dict.placeholder(
        bool
    )  # None = the dataset's convention (True for scene_parse150); folder: False
    c.num_workers = 2  # grain reader threads (each builds whole batches)
    c.worker_processes = 0  # >0: additionally run the pipeline in that many processes (grain mp_prefetch)
    c.prefetch_batches = 8  # batches buffered ahead of the consumer
    c.embedded = ml_collections.ConfigDict({"resolution": 64, "seed": 0})
    for split in ("train", "validation", "test"):  # examples of each split; None: the generator's default
        c.embedded[f"num_{split}"] = config_dict.placeholder(int)
    c.folder = ml_collections.ConfigDict(dict(root="", num_classes=0, class_names=()))
    # Optional: `photometric` (see photometric_config) is left out of the defaults, so that the configs of runs made
    # before it existed, and their hashes, stay as they were; absent means off.
    return c


def photometric_config(enabled: bool = False) -> ml_collections.ConfigDict:
    """The optional `data.photometric` section: mmsegmentation's PhotoMetricDistortion settings (its defaults) and
    whether training applies it. A config file adds it (configs/deeplab.py does); then the command line can switch it
    (--config.data.photometric.enabled=True) or change a setting."""
    values = dataclasses.asdict(transforms.PhotometricDistortion())
    return ml_collections.ConfigDict({"enabled": enabled, **values})


def _photometric(section) -> transforms.PhotometricDistortion | None:
    """The distortion of a `data.photometric` section, or None where it is absent or not enabled."""
    if section is None:
        return None
    values = section.to_dict() if isinstance(section, ml_collections.ConfigDict) else dict(section)
    valid = photometric_config().to_dict()
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"Unknown data.photometric keys {unknown}; valid: {sorted(valid)}.")
    values = {**valid, **values}
    enabled = values.pop("enabled")
    if not isinstance(enabled, bool):
        raise ValueError(f"data.photometric.enabled must be True or False, got {enabled!r}.")
    distortion = transforms.PhotometricDistortion(**values)  # validated even while off: a typo fails now
    return distortion if enabled else None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    ignore_index: int
    class_names: tuple[str, ...]
    num_examples: dict[str, int]
    train_split: str
    eval_split: str
    crop_size: tuple[int, int]  # training batches are (B, *crop_size, 3)
    eval_size: tuple[int, int]  # evaluation batches are (B, *eval_size, 3)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The data section of a config, read once (by `segjax.task.Task`) and validated: the dataset (its TFDS builder,
    prepared for segjax's own datasets), splits, label lookup table, sizes, augmentation, normalisation and reader
    settings, every None replaced by the dataset's own choice. Frozen and hashable (the builder and the catalog
    entry, which follow from the rest, are left out of comparisons); the loader functions take it whole."""

    name: str  # as in the config: 'embedded', 'folder', 'segjax_shapes/64', a catalog name
    data_dir: str | None
    train_split: str
    eval_split: str
    lut: tuple[int, ...]  # raw mask value (0..255) -> class index or ignore_index
    ignore_index: int
    crop_size: tuple[int, int]  # training batches are (B, *crop_size, 3)
    eval_size: tuple[int, int]  # evaluation batches in 'resize' mode are (B, *eval_size, 3)
    scale_range: tuple[float, float]
    hflip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_workers: int
    prefetch_batches: int
    worker_processes: int
    dataset: catalog.DatasetSpec = dataclasses.field(compare=False)
    builder: Any = dataclasses.field(compare=False, repr=False)
    photometric: transforms.PhotometricDistortion | None = None  # colour augmentation in training (None: off)

    def __post_init__(self):
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")

    @property
    def tfds_name(self) -> str:
        return self.dataset.tfds_name

    @classmethod
    def from_config(cls, section) -> DataSpec:
        """The spec of a data section (`default_data_config`; keys it leaves out take the defaults); prepares the
        embedded or folder dataset if needed. ValueError naming a bad value and the fix."""
        c = _with_defaults(section, default_data_config())
        name, data_dir, ignore_index = c.name, c.data_dir, int(c.ignore_index)
        if name == "embedded" or name.startswith("segjax_shapes"):
            e = c.embedded
            resolution = int(name.split("/")[1]) if "/" in name else int(e.resolution)
            config = shapes.shapes_config(resolution, e.num_train, e.num_validation, e.num_test, int(e.seed))
            registered = {b.name for b in shapes.SegjaxShapes.BUILDER_CONFIGS}  # TFDS wants their names, not copies
            with without_log_messages("Using custom data configuration"):  # segjax's own builder configs
                builder = shapes.SegjaxShapes(
                    config=config.name if config.name in registered else config,
                    data_dir=data_dir,
                    file_format="array_record",
                )
            folder_lib.prepare_once(builder)  # seconds, offline; a no-op once prepared
            dataset = catalog.DatasetSpec(
                tfds_name=f"segjax_shapes/{config.name}",
                image_key="image",
                label_key="label",
                class_names=shapes.CLASS_NAMES,
                crop_size=(resolution, resolution),
                scale_range=(1.0, 1.0),
            )
        elif name == "folder":
            f = c.folder
            num_classes = int(f.num_classes)
            config = folder_lib.folder_config(f.root, num_classes, ignore_index, bool(c.reduce_zero_label))
            builder = folder_lib.prepared_builder(config, data_dir)  # follows the folder; raises listing bad files
            class_names = tuple(f.class_names) or tuple(f"class_{i}" for i in range(num_classes))
            if len(class_names) != num_classes:
                raise ValueError(
                    f"data_config.folder.class_names has {len(class_names)} names but num_classes is {num_classes}"
                )
            splits = folder_lib.find_splits(config.root)
            dataset = catalog.DatasetSpec(
                tfds_name=f"segjax_folder/{config.name}",
                image_key="image",
                label_key="label",
                class_names=class_names,
                eval_split="validation" if "validation" in splits else "train",
            )
        else:
            dataset = catalog.get_spec(name)
            builder = tfds.builder(dataset.tfds_name, data_dir=data_dir, file_format="array_record")
            if c.download and not builder.is_prepared():
                _require_tensorflow(dataset.tfds_name)
                builder.download_and_prepare()
        reduce_zero_label = dataset.reduce_zero_label if c.reduce_zero_label is None else c.reduce_zero_label
        lut = catalog.label_lut(dataset.num_classes, ignore_index, dataset.label_map, bool(reduce_zero_label))
        crop_size = transforms.as_size(dataset.crop_size if c.crop_size is None else c.crop_size)
        return cls(
            name=name,
            data_dir=data_dir,
            train_split=c.train_split or dataset.train_split,
            eval_split=c.eval_split or dataset.eval_split,
            lut=tuple(int(v) for v in lut),
            ignore_index=ignore_index,
            crop_size=crop_size,
            eval_size=crop_size if c.eval_size is None else transforms.as_size(c.eval_size),
            scale_range=tuple(float(v) for v in (dataset.scale_range if c.scale_range is None else c.scale_range)),
            hflip=bool(c.hflip),
            mean=tuple(float(v) for v in c.mean),
            std=tuple(float(v) for v in c.std),
            num_workers=int(c.num_workers),
            prefetch_batches=int(c.prefetch_batches),
            worker_processes=int(c.worker_processes),
            dataset=dataset,
            builder=builder,
            photometric=_photometric(c.get("photometric")),
        )

    def eval_transform(self, canvas: tuple[int, int] | None) -> transforms.EvalTransform:
        """How an evaluation image is prepared: normalised, then padded with zeros to `canvas` at its own size (the
        label with ignore_index), or with canvas=None fitted into eval_size. segjax-predict prepares images so too."""
        if canvas is None:
            return transforms.EvalTransform(self.eval_size, self.mean, self.std, self.ignore_index)
        return transforms.EvalTransform(transforms.as_size(canvas), self.mean, self.std, self.ignore_index, fit=False)


def _with_defaults(section, defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`section` (ConfigDict or dict) over `defaults`: the keys it leaves out take the default values."""
    values = section.to_dict() if isinstance(section, ml_collections.ConfigDict) else dict(section)
    merged = defaults.to_dict()
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return ml_collections.ConfigDict(merged)


def as_spec(data) -> DataSpec:
    """A DataSpec as it is, or a data config section read into one (callers that hold only a config)."""
    return data if isinstance(data, DataSpec) else DataSpec.from_config(data)


def _require_tensorflow(name: str) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            f"Preparing the TFDS dataset {name!r} needs TensorFlow, which is not installed. Install the extra: "
            "pip install 'segjax[tf]', or prepare the dataset on another machine with "
            f"`tfds build {name}` and point data_config.data_dir at its data_dir."
        )
    if importlib.util.find_spec("importlib_resources") is None:
        # TFDS 4.9.10 imports this backport lazily while preparing; the standard library module is equivalent.
        sys.modules["importlib_resources"] = importlib.resources


def _data_source(r: DataSpec, split: str):
    try:
        return r.builder.as_data_source(split=split)
    except (AssertionError, FileNotFoundError, ValueError, KeyError) as e:
        available = list(getattr(r.builder.info, "splits", {}) or [])
        raise ValueError(
            f"cannot read split {split!r} of {r.tfds_name!r} from data_dir {r.builder.data_dir!r} "
            f"(available splits: {available or 'none prepared'}). For a catalog dataset, prepare it first "
            "(set data_config.download=True; this needs segjax[tf]) or point data_config.data_dir at a prepared "
            f"copy. Cause: {e}"
        ) from e


def get_dataset_info(data) -> DatasetInfo:
    """Name, classes, ignore_index and split sizes of a DataSpec (or a data config section)."""
    r = as_spec(data)
    num_examples = {s: len(_data_source(r, s)) for s in dict.fromkeys((r.train_split, r.eval_split))}
    return DatasetInfo(
        name=r.tfds_name,
        num_classes=r.dataset.num_classes,
        ignore_index=r.ignore_index,
        class_names=tuple(r.dataset.class_names),
        num_examples=num_examples,
        train_split=r.train_split,
        eval_split=r.eval_split,
        crop_size=r.crop_size,
        eval_size=r.eval_size,
    )


@dataclasses.dataclass(frozen=True)
class _Decode:
    """TFDS example -> {'image': uint8 (H, W, 3), 'label': uint8 (H, W) classes or ignore_index}."""

    image_key: str
    label_key: str
    label_channel: int
    lut: np.ndarray

    def __call__(self, example: dict) -> dict:
        image = np.asarray(example[self.image_key])
        label = np.asarray(example[self.label_key])
        if label.ndim == 3:
            label = label[..., self.label_channel]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"image {image.shape} and mask {label.shape} ({self.image_key!r}, {self.label_key!r}) differ in size"
            )
        return {"image": image.astype(np.uint8, copy=False), "label": self.lut[label.astype(np.uint8)]}


# A training loader keeps the decoded examples it has read while they take at most this many bytes: every later
# epoch then neither reads nor decodes them again (reading and decoding were 70% of the loader's time on the 64 px
# shapes, whose 1600 decoded training examples take 25 MiB).
DECODED_CACHE_BYTES = 256 * 2**20


@dataclasses.dataclass(eq=False)
class _DecodedOnce:
    """`source`'s examples, decoded; each kept (read-only, so no transform can change it for later epochs) after
    its first read while the kept ones take at most `capacity` bytes. The same examples as decoding every read."""

    source: Any
    decode: Any
    capacity: int
    _kept: dict = dataclasses.field(default_factory=dict)
    _kept_bytes: int = 0

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        example = self._kept.get(index)
        if example is not None:
            return example
        example = self.decode(self.source[index])
        size = sum(v.nbytes for v in example.values())
        if self._kept_bytes + size <= self.capacity:  # two reader threads may overshoot by an example each
            for v in example.values():
                v.flags.writeable = False
            self._kept[index] = example
            self._kept_bytes += size
        return example


@dataclasses.dataclass(frozen=True)
class _Select:
    """Index i -> example indices[i] of `source` (a subset of a split, in the given order)."""

    source: Any
    indices: tuple[int, ...]

    def __call__(self, index: int):
        return self.source[self.indices[index]]


@dataclasses.dataclass(frozen=True)
class _PadToFullBatches:
    """Index i < n -> example i with valid=True; i >= n -> a copy of example 0, all labels ignored, valid=False."""

    examples: Any  # grain.MapDataset of evaluated examples
    num_examples: int
    ignore_index: int

    def __call__(self, index: int) -> dict:
        if index < self.num_examples:
            return dict(self.examples[index], valid=np.bool_(True))
        example = self.examples[0]
        return {
            "image": example["image"],
            "label": np.full_like(example["label"], self.ignore_index),
            "valid": np.bool_(False),
        }


@dataclasses.dataclass(frozen=True)
class _ProcessShare:
    """Local example m of process p -> example (m // b) * b * P + p * b + m % b of the global stream (b examples
    per process, P processes): every global batch is cut into contiguous blocks, block p for process p."""

    examples: Any
    process_index: int
    process_count: int
    batch: int

    def __call__(self, m: int) -> dict:
        b = self.batch
        return self.examples[(m // b) * b * self.process_count + self.process_index * b + m % b]


def _process_share(ds, process_index: int, process_count: int, batch: int):
    """This process's examples of `ds`, in order: concatenated in process order, the processes' batches are the
    global batch exactly as one process would read it (so a run gives the same numbers on any number of
    processes: the same examples land on the same devices)."""
    if process_count == 1:
        return ds
    return grain.MapDataset.range(len(ds) // process_count).map(_ProcessShare(ds, process_index, process_count, batch))


def _process(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # pylint: disable=import-outside-toplevel

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, process_count={process_count})")
    return process_index, process_count


_IMAGE_SIZES: dict[tuple, np.ndarray] = {}


def image_sizes(data, split: str) -> np.ndarray:
    """(n, 2) int array: (height, width) of every image of a split of a DataSpec (or a data config section), in
    order; read once per process (a decoding pass), remembered."""
    r = as_spec(data)
    key = (r.tfds_name, str(r.builder.data_dir), split)
    if key not in _IMAGE_SIZES:
        source = _data_source(r, split)
        sizes = [np.asarray(source[i][r.dataset.image_key]).shape[:2] for i in range(len(source))]
        _IMAGE_SIZES[key] = np.array(sizes, np.int64).reshape(-1, 2)
    return _IMAGE_SIZES[key]


def size_buckets(sizes, multiple: int, max_buckets: int, minimum=(1, 1)) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Groups images by the canvas each is padded to for evaluation: [(canvas (h, w), example indices), ...].

    Each size (at least `minimum`) is rounded up to a multiple of a granule, itself a multiple of `multiple` (the
    network's stride), and capped at the largest size so rounded. The granule starts at `multiple` (every image
    padded only to the stride: exact whole-image inference) and doubles until at most `max_buckets` canvases remain:
    one compilation per canvas, and no image padded by a granule or more. Canvases are listed largest first."""
    if max_buckets < 1:
        raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
    sizes = np.maximum(np.asarray(sizes, np.int64).reshape(-1, 2), np.asarray(minimum, np.int64))
    largest = -(-sizes.max(0) // multiple) * multiple
    granule = multiple
    while True:
        canvases = np.minimum(-(-sizes // granule) * granule, largest)
        unique = np.unique(canvases, axis=0)
        if len(unique) <= max_buckets:
            break
        granule *= 2
    unique = sorted((tuple(int(v) for v in c) for c in unique), key=lambda c: (-c[0] * c[1], c))
    return [(c, np.flatnonzero((canvases == c).all(1))) for c in unique]


def make_loader(
    data,
    split: str | None = None,
    *,
    global_batch_size: int,
    train: bool,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    canvas: tuple[int, int] | None = None,
    examples: Sequence[int] | None = None,
) -> Iterator[dict]:
    """Iterator of numpy batches for this process: {'image': float32 (B, H, W, 3), 'label': int32 (B, H, W)}.

    data: the run's DataSpec (`Task.data`), or a data config section, read into one.
    split=None picks the config's train_split (train=True) or eval_split (train=False).
    train=True: infinite, reshuffled every epoch from `seed`, augmented; starts at batch `start_step`.
    train=False: one pass over every example exactly once, no augmentation; the last batch is padded to full size
    and a 'valid' (B,) bool marks the real examples. Every image is padded to `canvas` (bottom/right, the labels
    with ignore_index) at its own resolution, or, with canvas=None, fitted into data.eval_size (downscaled).
    `examples` (evaluation only): the indices of the split's examples to read, in order (a `size_buckets` bucket);
    None: all of them.
    B = global_batch_size // process_count; process p holds examples p*B .. (p+1)*B - 1 of each global batch, so the
    processes' batches, in process order, are the global batch in order.
    """
    process_index, process_count = _process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of process_count {process_count}"
        )
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if not 0 <= seed < 2**32 - 2**20:
        raise ValueError(f"seed must lie in [0, 2**32 - 2**20) (grain derives per-epoch seeds), got {seed}")
    r = as_spec(data)
    split = split or (r.train_split if train else r.eval_split)
    source = _data_source(r, split)
    batch = global_batch_size // process_count
    decode = _Decode(r.dataset.image_key, r.dataset.label_key, r.dataset.label_channel, np.asarray(r.lut, np.uint8))
    if train:
        augment = transforms.TrainTransform(
            r.crop_size, r.scale_range, r.hflip, r.mean, r.std, r.ignore_index, r.photometric
        )
        ds = grain.MapDataset.source(_DecodedOnce(source, decode, DECODED_CACHE_BYTES))
        ds = ds.shuffle(seed=seed).repeat(None).random_map(augment, seed=seed)
        ds = _process_share(ds, process_index, process_count, batch).batch(batch, drop_remainder=True)
        ds = ds[start_step:]
    else:
        if start_step:
            raise ValueError("start_step applies to training loaders only; evaluation always makes one full pass")
        evaluate = r.eval_transform(canvas)
        ds = grain.MapDataset.source(source)
        if examples is not None:
            chosen = np.asarray(examples, np.int64)
            if chosen.size and (chosen.min() < 0 or chosen.max() >= len(ds)):
                raise ValueError(f"examples must index the {len(ds)} examples of split {split!r}")
            ds = grain.MapDataset.range(len(chosen)).map(_Select(ds, tuple(int(i) for i in chosen)))
        evaluated = ds.map(decode).map(evaluate)
        n = len(evaluated)
        total = math.ceil(n / global_batch_size) * global_batch_size
        ds = grain.MapDataset.range(total).map(_PadToFullBatches(evaluated, n, r.ignore_index))
        ds = _process_share(ds, process_index, process_count, batch).batch(batch, drop_remainder=True)
    options = grain.ReadOptions(num_threads=max(r.num_workers, 0), prefetch_buffer_size=max(r.prefetch_batches, 1))
    it_ds = ds.to_iter_dataset(options)
    processes = r.worker_processes
    if processes > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use the defaults
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=processes))
    return iter(it_ds)
