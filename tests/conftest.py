"""Test setup: several simulated CPU devices (set before jax is imported), and the fixtures tests share:

- `tiny_config(file_name="unet.py", arg=None, **overrides)`: a family config from configs/ shrunk to run in
  seconds (`TINY`: 32x32 crops of a few embedded images, 4-wide nets, 4 steps), on this session's `data_dir`;
  `tiny_overrides(model)`: the same as {dotted key: value};
- `tiny_task`: the `Task` of `tiny_config()`; `trained_run`: that config trained to the end in a workdir;
  `trained_ema_run`: the same with a moving average of the weights (optimizer.ema_decay);
- `folder_dataset()`: a new `FolderDataset`, which writes image/mask folders with random block labels;
- `voc_archive(root, with_sbd=False)`: a tiny fake VOC 2012 (+ SBD) archive, as segjax-prepare reads it.
"""

import dataclasses
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from segjax import cli  # noqa: E402

cli.use_fast_cpu_kernels()  # as the commands do, before the first JAX computation

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.io  # noqa: E402
from PIL import Image  # noqa: E402

from segjax import config as config_lib  # noqa: E402
from segjax import train  # noqa: E402
from segjax.data import default_data_config  # noqa: E402
from segjax.plots import voc_colours  # noqa: E402
from segjax.task import Task  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What shrinks any family config to a run of seconds (num_validation 6 is not a multiple of eval_batch_size 4: it
# exercises the padding of the last batch).
TINY = {
    "data.embedded.num_train": 16,
    "data.embedded.num_validation": 6,
    "data.embedded.num_test": 4,
    "data.crop_size": 32,
    "data.eval_size": 32,
    "data.num_workers": 1,
    "data.prefetch_batches": 2,
    "model.base_width": 4,
    "batch_size": 4,
    "eval_batch_size": 4,
    "num_train_steps": 4,
    "schedule.warmup_steps": 1,
    "log_every_steps": 2,
    "eval_every_steps": 4,
    "checkpoint_every_steps": 2,
    "progress_bar": False,
    "eval.num_images_to_plot": 2,
}
TINY_DEPTH = 2  # of the networks whose depth is free (FCN's is fixed at 5)


def tiny_values(data_dir, model: str = "unet") -> dict:
    """TINY for `model` on `data_dir`, as {dotted key: value}."""
    values = {"data.data_dir": str(data_dir), **TINY}
    if model in ("unet", "segnet", "deconvnet"):
        values["model.depth"] = TINY_DEPTH
    return values


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One TFDS folder per test session: the embedded dataset is prepared once."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_overrides(data_dir):
    """tiny_overrides(model="unet") -> TINY for that model on this session's data_dir, {dotted key: value}."""
    return lambda model="unet": tiny_values(data_dir, model)


@pytest.fixture(scope="session")
def tiny_config(data_dir):
    """tiny_config(file_name="unet.py", arg=None, **overrides) -> a new tiny config; overrides use `__` for dots
    (`model__norm="none"`)."""

    def make(file_name: str = "unet.py", arg: str | None = None, **overrides):
        path = os.path.join(REPO, "configs", file_name)
        config = config_lib.load_config_file(f"{path}:{arg}" if arg else path)
        values = tiny_values(data_dir, config.model.name)
        values.update({key.replace("__", "."): value for key, value in overrides.items()})
        for key, value in values.items():
            config_lib.set_value(config, key, value)
        return config

    return make


@pytest.fixture(scope="session")
def tiny_task(tiny_config):
    return Task(tiny_config())


@pytest.fixture(scope="session")
def trained_run(tiny_config, tmp_path_factory):
    """(workdir, config, final scores) of `tiny_config()` trained to the end (4 steps, checkpoints at 2 and 4)."""
    workdir = str(tmp_path_factory.mktemp("run") / "trained")
    config = tiny_config()
    return workdir, config, train.train_and_evaluate(config, workdir)


EMA_DECAY = 0.5  # the moving average of `trained_ema_run`: far from the trained weights after its 4 steps


@pytest.fixture(scope="session")
def trained_ema_run(tiny_config, tmp_path_factory):
    """(workdir, config, final scores) of `trained_run`'s config with optimizer.ema_decay=EMA_DECAY, trained to the
    end."""
    workdir = str(tmp_path_factory.mktemp("run") / "trained_ema")
    config = tiny_config(optimizer__ema_decay=EMA_DECAY)
    return workdir, config, train.train_and_evaluate(config, workdir)


# --- folder datasets ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FolderDataset:
    """Writes `<root>/data/<split>/{images,masks}` pairs; `config` is the data section that reads them (3 classes:
    void, red, green; each image is its label's colour)."""

    root: str
    palette = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10]], np.uint8)

    @property
    def config(self):
        c = default_data_config()
        c.name = "folder"
        c.data_dir = os.path.join(self.root, "tfds")
        c.folder.root = os.path.join(self.root, "data")
        c.folder.num_classes = 3
        c.folder.class_names = ("void", "red", "green")
        return c

    def write_pair(self, split, name, label, *, image=None, suffix=".png", mask_mode="L"):
        folder = os.path.join(self.root, "data", split)
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        os.makedirs(os.path.join(folder, "masks"), exist_ok=True)
        image = self.palette[np.minimum(label, 2)] if image is None else image
        Image.fromarray(image).save(os.path.join(folder, "images", name + suffix))
        mask = Image.fromarray(label.astype(np.uint8))
        if mask_mode in ("P", "RGB"):
            mask = mask.convert(mask_mode)
        mask.save(os.path.join(folder, "masks", name + ".png"))

    @staticmethod
    def random_label(rng, h, w):
        """Labels 0-2 in 4x4 blocks, the first 3 pixels ignored (255)."""
        label = np.kron(rng.integers(0, 3, size=(-(-h // 4), -(-w // 4))), np.ones((4, 4), int))[:h, :w]
        label[0, :3] = 255
        return label.astype(np.uint8)

    def write_random(self, split: str, sizes, seed: int = 0, prefix: str = "x"):
        """One random pair per (h, w) of `sizes`, named <prefix><i>."""
        rng = np.random.default_rng(seed)
        for i, (h, w) in enumerate(sizes):
            self.write_pair(split, f"{prefix}{i}", self.random_label(rng, h, w))


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory):
    """folder_dataset(root=None) -> a FolderDataset in `root` (default: a new temporary folder)."""
    return lambda root=None: FolderDataset(str(root or tmp_path_factory.mktemp("folder")))


# --- fake dataset archives (segjax-prepare's input) ----------------------------------------------------------

H, W = 6, 8


def write_image(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_png(path, array, mode=None):
    """A PNG of `array`; mode 'P' as VOC stores masks: palette indices (the classes) with VOC's colour map."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    array = np.asarray(array, np.uint8)
    if mode == "P":
        image = Image.frombytes("P", array.shape[::-1], array.tobytes())
        image.putpalette(voc_colours().ravel().tolist())
    else:
        image = Image.fromarray(array)
    image.save(path)


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def labels(seed, values):
    """(H, W) labels drawn from `values`."""
    return np.random.default_rng(seed).choice(np.asarray(values), size=(H, W)).astype(np.uint8)


def voc_archive(root, with_sbd=False):
    """VOCdevkit/VOC2012 with train {a, b}, val {c}, an image outside the lists (d) and, for SBD, e and f; SBD's
    benchmark_RELEASE/dataset with train {e, a}, val {f, c}. Returns name -> expected mask."""
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    expected = {}
    for i, stem in enumerate(["a", "b", "c", "d", "e", "f"]):
        write_image(os.path.join(voc, "JPEGImages", stem + ".jpg"), i)
    for i, stem in enumerate(["a", "b", "c", "d"]):
        mask = labels(i, [0, 1, 15, 20, 255])  # background, aeroplane, person, tvmonitor, boundary
        write_png(os.path.join(voc, "SegmentationClass", stem + ".png"), mask, "P")
        expected[stem] = mask
    write_lines(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), ["a", "b"])
    write_lines(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), ["c"])
    if with_sbd:
        sbd = os.path.join(root, "benchmark_RELEASE", "dataset")
        for i, stem in enumerate(["a", "c", "e", "f"]):
            segmentation = labels(10 + i, [0, 3, 7, 12])  # background, bird, car, dog: no boundary label in SBD
            gt = {"Segmentation": segmentation, "Boundaries": np.zeros((20, 1), object), "CategoriesPresent": [3]}
            os.makedirs(os.path.join(sbd, "cls"), exist_ok=True)
            scipy.io.savemat(os.path.join(sbd, "cls", stem + ".mat"), {"GTcls": gt})
            expected.setdefault(stem, segmentation)  # VOC's own annotation wins where there is one
        write_lines(os.path.join(sbd, "train.txt"), ["e", "a"])
        write_lines(os.path.join(sbd, "val.txt"), ["f", "c"])
    return expected
