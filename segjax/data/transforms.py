"""Paired image/label transforms on numpy arrays (host side, inside the grain pipeline).

Images are uint8 (H, W, 3) until `normalize`; labels are uint8 (H, W) class indices with `ignore_index` for
pixels that carry no label. Every geometric transform moves image and label together; labels are always
resampled with nearest neighbour (an interpolated class index is meaningless) and padded with `ignore_index`,
so padding never counts in the loss or the metrics. `PhotometricDistortion` changes colours only (mmsegmentation's
PhotoMetricDistortion), before normalisation.
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


def _round_half_up(numerator, denominator):
    """round(numerator / denominator), halves up, in exact integer arithmetic (denominator > 0): the same on every
    machine, where float ties would round either way."""
    return (2 * numerator + denominator) // (2 * denominator)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 HSV in OpenCV's 8-bit convention (what mmsegmentation's PhotoMetricDistortion works on):
    H in [0, 180) (degrees / 2), S and V in [0, 255]; the textbook formulas, rounded exactly (halves up)."""
    rgb = image.astype(np.int64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    diff = v - rgb.min(-1)
    d = np.maximum(diff, 1)
    # Half-degrees: 30 (g - b) / diff where red is largest, 60 + 30 (b - r) / diff for green, 120 + ... for blue.
    numerator = np.where(v == r, 30 * (g - b), np.where(v == g, 30 * (b - r) + 60 * d, 30 * (r - g) + 120 * d))
    h = np.where(diff > 0, _round_half_up(numerator, d) % 180, 0)
    s = np.where(v > 0, _round_half_up(255 * diff, np.maximum(v, 1)), 0)
    return np.stack([h, s, v], -1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of `rgb_to_hsv` (OpenCV's 8-bit convention): the textbook sectors of 60 degrees (30 units of H),
    rounded exactly (halves up) to uint8."""
    h, s, v = (hsv[..., i].astype(np.int64) for i in range(3))
    sector, offset = h // 30 % 6, h % 30  # the fraction within the sector is offset / 30
    den = 255 * 30
    p = _round_half_up(v * (255 - s) * 30, den)
    q = _round_half_up(v * (den - s * offset), den)
    t = _round_half_up(v * (den - s * (30 - offset)), den)
    channels = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]  # (r, g, b) by sector
    rgb = np.stack([np.choose(sector, [c[i] for c in channels]) for i in range(3)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _scaled(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmsegmentation's `convert`: float32 values * alpha + beta, clipped to [0, 255], truncated to uint8."""
    return np.clip(values.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class PhotometricDistortion:
    """mmsegmentation's PhotoMetricDistortion on a uint8 RGB image, with its order, formulas and draws: brightness
    (+ U(-brightness_delta, brightness_delta)), then contrast (x U(contrast_range)) either here or last (a coin),
    saturation (S x U(saturation_range) in HSV), hue (H + an integer in [-hue_delta, hue_delta), mod 180); each
    applied when its own coin says so (probability 0.5). Every draw comes from `rng` in that order, so an element's
    colours follow from its own generator (the pipeline's per-element seed: resuming gives the same images).
    Frozen and hashable; the defaults are mmsegmentation's."""

    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __post_init__(self):
        for name in ("contrast_range", "saturation_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0 <= value[0] <= value[1]:
                raise ValueError(f"data.photometric.{name}={value!r} must be (low, high) with 0 <= low <= high.")
            object.__setattr__(self, name, value)
        if not 0 <= float(self.brightness_delta) <= 255:
            raise ValueError(f"data.photometric.brightness_delta={self.brightness_delta!r} must lie in [0, 255].")
        if isinstance(self.hue_delta, bool) or int(self.hue_delta) != self.hue_delta or not 0 < self.hue_delta <= 90:
            raise ValueError(f"data.photometric.hue_delta={self.hue_delta!r} must be an int in [1, 90].")
        object.__setattr__(self, "brightness_delta", float(self.brightness_delta))
        object.__setattr__(self, "hue_delta", int(self.hue_delta))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            image = _scaled(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_last = rng.integers(2) == 0
        if not contrast_last:
            image = self._contrast(image, rng)
        if rng.integers(2):
            hsv = rgb_to_hsv(image)
            hsv[..., 1] = _scaled(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            image = hsv_to_rgb(hsv)
        if rng.integers(2):
            hsv = rgb_to_hsv(image)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + rng.integers(-self.hue_delta, self.hue_delta)) % 180
            image = hsv_to_rgb(hsv)
        if contrast_last:
            image = self._contrast(image, rng)
        return image

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _scaled(image, alpha=rng.uniform(*self.contrast_range)) if rng.integers(2) else image


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """Random scale, pad, random crop and horizontal flip, the `photometric` distortion (None: none), then
    normalisation (the mmsegmentation recipe). The photometric draws follow the geometric ones, so switching it on
    changes no crop or flip."""

    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    hflip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int
    photometric: PhotometricDistortion | None = None

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
        if self.photometric is not None:
            image = self.photometric(np.ascontiguousarray(image), rng)
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
