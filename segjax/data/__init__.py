"""Datasets and the input pipeline: the embedded synthetic dataset, real TFDS datasets, your own folders.

    data = DataSpec.from_config(config.data)  # the section read once (segjax.task.Task does this)
    info = get_dataset_info(data)
    batches = make_loader(data, global_batch_size=16, train=True, seed=0)

Importing this package registers the TFDS builders `segjax_shapes` and `segjax_folder`.
"""

from segjax.data.catalog import CATALOG, DatasetSpec, label_lut
from segjax.data.folder import SegjaxFolder, check_folder, folder_config
from segjax.data.pipeline import (
    DatasetInfo,
    DataSpec,
    default_data_config,
    get_dataset_info,
    image_sizes,
    make_loader,
    size_buckets,
)
from segjax.data.shapes import CLASS_NAMES, SegjaxShapes, generate_scene, shapes_config
from segjax.data.transforms import as_size

__all__ = [
    "CATALOG",
    "CLASS_NAMES",
    "DataSpec",
    "DatasetInfo",
    "DatasetSpec",
    "SegjaxFolder",
    "SegjaxShapes",
    "as_size",
    "check_folder",
    "default_data_config",
    "folder_config",
    "generate_scene",
    "get_dataset_info",
    "image_sizes",
    "size_buckets",
    "label_lut",
    "make_loader",
    "shapes_config",
]
