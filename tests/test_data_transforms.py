"""The photometric distortion against a plain reference written as mmsegmentation's PhotoMetricDistortion is (its
order, formulas and draws; HSV by the textbook formulas per pixel in exact rationals, in OpenCV's 8-bit units), its
determinism per generator, and its validation."""

import colorsys
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from segjax.data import transforms


class MMSegRandom:
    """mmsegmentation's `from numpy import random` calls, answered by a numpy Generator (randint's high exclusive)."""

    def __init__(self, rng):
        self.rng = rng

    def randint(self, low, high=None):
        return int(self.rng.integers(low, high) if high is not None else self.rng.integers(low))

    def uniform(self, low, high):
        return float(self.rng.uniform(low, high))


def convert(img, alpha=1.0, beta=0.0):
    img = img.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(img, 0, 255).astype(np.uint8)


def nearest(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def to_hsv(img):
    """Textbook RGB -> HSV per pixel in exact rationals, in OpenCV's 8-bit units (H in degrees / 2)."""
    out = np.zeros_like(img)
    for index in np.ndindex(img.shape[:2]):
        r, g, b = (int(c) for c in img[index])
        v, diff = max(r, g, b), max(r, g, b) - min(r, g, b)
        if diff == 0:
            h = Fraction(0)
        elif v == r:
            h = Fraction(60 * (g - b), diff)
        elif v == g:
            h = 120 + Fraction(60 * (b - r), diff)
        else:
            h = 240 + Fraction(60 * (r - g), diff)
        s = Fraction(255 * diff, v) if v else Fraction(0)
        out[index] = (nearest(h / 2) % 180, nearest(s), v)
    return out


def to_rgb(hsv):
    """Textbook HSV -> RGB per pixel in exact rationals (60-degree sectors), rounded."""
    out = np.zeros_like(hsv)
    for index in np.ndindex(hsv.shape[:2]):
        h, s, v = Fraction(int(hsv[index][0]) * 2, 60), Fraction(int(hsv[index][1]), 255), int(hsv[index][2])
        sector, f = math.floor(h) % 6, h - math.floor(h)
        p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
        rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector]
        out[index] = [nearest(Fraction(c)) for c in rgb]
    return out


def reference(img, random, brightness_delta=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue_delta=18):
    """mmsegmentation 0.x PhotoMetricDistortion.__call__, line for line."""

    def contrast_step(img):
        if random.randint(2):
            return convert(img, alpha=random.uniform(*contrast))
        return img

    if random.randint(2):
        img = convert(img, beta=random.uniform(-brightness_delta, brightness_delta))
    mode = random.randint(2)
    if mode == 1:
        img = contrast_step(img)
    if random.randint(2):
        img = to_hsv(img)
        img[:, :, 1] = convert(img[:, :, 1], alpha=random.uniform(*saturation))
        img = to_rgb(img)
    if random.randint(2):
        img = to_hsv(img)
        img[:, :, 0] = (img[:, :, 0].astype(int) + random.randint(-hue_delta, hue_delta)) % 180
        img = to_rgb(img)
    if mode == 0:
        img = contrast_step(img)
    return img


def test_photometric_distortion_equals_mmsegmentations_formulas():
    """Over 64 seeds (every branch, both places of the contrast step): exactly the reference's image."""
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image[0, :3] = [[0, 0, 0], [255, 255, 255], [90, 90, 90]]  # grey pixels: no hue, no saturation
    distort = transforms.PhotometricDistortion()
    for seed in range(64):
        ours = distort(image, np.random.default_rng(seed))
        assert ours.dtype == np.uint8 and ours.shape == image.shape
        np.testing.assert_array_equal(ours, reference(image, MMSegRandom(np.random.default_rng(seed))), err_msg=seed)


def test_hsv_conventions_and_round_trip():
    """Exactly the reference's 8-bit HSV, within one unit of the standard library's colorsys, and back to RGB within
    what 8-bit H and S lose."""
    image = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    hsv = transforms.rgb_to_hsv(image)
    np.testing.assert_array_equal(hsv, to_hsv(image))
    np.testing.assert_array_equal(transforms.hsv_to_rgb(hsv), to_rgb(hsv))
    np.testing.assert_array_equal(hsv[..., 2], image.max(-1))
    for index in np.ndindex(image.shape[:2]):
        h, s, _ = colorsys.rgb_to_hsv(*(image[index] / 255.0))
        assert (
            abs((int(hsv[index][0]) - h * 180 + 90) % 180 - 90) <= 0.5 + 1e-9
            and abs(hsv[index][1] - s * 255) <= 0.5 + 1e-9
        )
    assert np.abs(transforms.hsv_to_rgb(hsv).astype(int) - image).max() <= 3


def test_photometric_distortion_is_a_function_of_its_generator():
    image = np.random.default_rng(2).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    distort = transforms.PhotometricDistortion()
    runs = [distort(image, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    assert any(not np.array_equal(runs[0], distort(image, np.random.default_rng(s))) for s in range(8, 12))
    assert hash(distort) == hash(transforms.PhotometricDistortion(32, [0.5, 1.5], (0.5, 1.5), 18))


def test_train_transform_applies_it_after_the_geometry():
    """The photometric draws follow the crop and flip: turning it on moves no label."""
    rng = np.random.default_rng(3)
    example = {"image": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "label": rng.integers(0, 5, (20, 24))}
    example["label"] = example["label"].astype(np.uint8)
    plain = transforms.TrainTransform((16, 16), (0.75, 1.5), True, (0.5,) * 3, (0.25,) * 3, 255)
    distorted = dataclasses.replace(plain, photometric=transforms.PhotometricDistortion())
    changed = 0
    for seed in range(4):
        a, b = plain(example, np.random.default_rng(seed)), distorted(example, np.random.default_rng(seed))
        np.testing.assert_array_equal(a["label"], b["label"])
        changed += not np.array_equal(a["image"], b["image"])
    assert changed


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(contrast_range=(1.5, 0.5)), r"contrast_range=\(1.5, 0.5\) must be \(low, high\)"),
        (dict(saturation_range=(0.5,)), r"saturation_range=\(0.5,\) must be"),
        (dict(brightness_delta=300), r"brightness_delta=300 must lie in \[0, 255\]"),
        (dict(hue_delta=0), r"hue_delta=0 must be an int in \[1, 90\]"),
        (dict(hue_delta=2.5), r"hue_delta=2.5 must be an int"),
    ],
)
def test_photometric_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        transforms.PhotometricDistortion(**kwargs)
