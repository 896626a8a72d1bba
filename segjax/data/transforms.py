"""Paired image/label transforms on numpy arrays (host side, inside the grain pipeline).

Images are uint8 (H, W, 3) until `normalize`; labels are uint8 (H, W) class indices with `ignore_index` for
pixels that carry no label. Every geometric transform moves image and label together; labels are always
resampled with nearest neighbour (an interpolated class index is meaningless) and padded with `ignore_index`,
so padding never counts in the loss or the metrics.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

# ImageNet statistics in [0, 1] units: the convention of the pretrained encoders the papers start from.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_size(size) -> tuple[int, int]:
    """(height, width) from an int or a pair; raises on anything else."""
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"a size must be a positive int or a (height, width) pair of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def resize(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resizes to (height, width): bilinear for the image, nearest neighbour for the label."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image, label
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST))
    return image, label


def pad_to(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int], ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pads bottom and right up to at least `size`: image with 0, label with `ignore_index`."""
    h, w = image.shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image, label


def crop(
    image: np.ndarray, label: np.ndarray, top: int, left: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    return image[top : top + h, left : left + w], label[top : top + h, left : left + w]


def hflip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return image[:, ::-1], label[:, ::-1]


def fit_within(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Downscales (keeping the aspect ratio) only if the image is larger than `size`; never upscales."""
    h, w = image.shape[:2]
    scale = min(size[0] / h, size[1] / w, 1.0)
    if scale == 1.0:
        return image, label
    return resize(image, label, (max(1, round(h * scale)), max(1, round(w * scale))))


def normalize(image: np.ndarray, mean, std) -> np.ndarray:
    """uint8 -> float32 (x / 255 - mean) / std per channel."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return (image.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """Random scale, pad, random crop and horizontal flip, then normalisation (the mmsegmentation recipe)."""

    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    hflip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        image, label = example["image"], example["label"]
        lo, hi = self.scale_range
        if (lo, hi) != (1.0, 1.0):
            s = rng.uniform(lo, hi)
            h, w = image.shape[:2]
            image, label = resize(image, label, (max(1, round(h * s)), max(1, round(w * s))))
        image, label = pad_to(image, label, self.crop_size, self.ignore_index)
        h, w = image.shape[:2]
        top = int(rng.integers(0, h - self.crop_size[0] + 1))
        left = int(rng.integers(0, w - self.crop_size[1] + 1))
        image, label = crop(image, label, top, left, self.crop_size)
        if self.hflip and rng.random() < 0.5:
            image, label = hflip(image, label)
        return {"image": normalize(image, self.mean, self.std), "label": label.astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """No augmentation: with `fit`, fit into `eval_size` (downscaling large images only); normalise; pad to it with
    zeros after normalisation, as the networks pad inputs to their stride (the label with ignore_index, so padding
    counts nowhere). Without `fit` an image keeps every pixel at its size."""

    eval_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int
    fit: bool = True

    def __call__(self, example: dict) -> dict:
        image, label = example["image"], example["label"]
        if self.fit:
            image, label = fit_within(image, label, self.eval_size)
        elif image.shape[0] > self.eval_size[0] or image.shape[1] > self.eval_size[1]:
            raise ValueError(f"an image of {image.shape[:2]} does not fit the evaluation canvas {self.eval_size}")
        image, label = pad_to(normalize(image, self.mean, self.std), label, self.eval_size, self.ignore_index)
        return {"image": image, "label": label.astype(np.int32)}
