"""The embedded synthetic dataset `segjax_shapes`: textured scenes that prepare offline in seconds.

Each scene is a textured, noisy background with objects of five classes drawn in random order (later objects
occlude earlier ones). Colours of every class (background included) come from one shared distribution, so colour
alone never gives the class; shape, size and texture do:

    0 background  low-frequency colour field plus pixel noise (covers well over half of the pixels)
    1 disc        large ellipses, flat fill
    2 box         large rotated rectangles, striped texture
    3 triangle    large triangles, checkerboard texture
    4 wire        thin curves 2-3 px wide (boundaries and thin structures are what coarse decoders lose)
    5 speck       small discs 3-7 px across (small objects vanish at stride 32)

Every example is a pure function of (seed, split, index), so the dataset is identical on every machine.
About 75% of the pixels are background; wires and specks are about 2% each.

Measured difficulty (v1.1.0, 64 px, the quickstart recipe with cross-entropy only: batch 16, AdamW 3e-3
warmup-cosine, 600 steps, validation mIoU; `segjax-train --config=configs/quickstart.py --config.loss.dice=0
--config.optimizer.learning_rate=3e-3 --config.model.name=NAME`):
    fcn32s 0.149 (background only, almost no boundary: boundary F1 0.03)   fcn8s 0.515
    unet   0.793 (0.518 at step 200, 0.746 at step 400; boundary F1 0.875)
The coarse decoder is far behind the fine ones, as in the FCN paper's 32s -> 8s table. The quickstart
itself adds a Dice term (thin wires, tiny specks) and reaches 0.88 with the U-Net (docs/training.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

CLASS_NAMES = ("background", "disc", "box", "triangle", "wire", "speck")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("train", "validation", "test")
# Default number of examples per split and resolution; the 64 px config prepares in a few seconds.
DEFAULT_SIZES = {64: (1600, 200, 200), 128: (800, 100, 100)}
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
_MIN_CONTRAST = 90.0  # minimal RGB distance between an object's colour and the background's mean colour


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(20.0, 235.0, size=3)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour from the shared distribution, redrawn until it stands out from the background."""
    for _ in range(100):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - background) >= _MIN_CONTRAST:
            return colour
    return 255.0 - background  # unreachable in practice; keeps the function total


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A (size, size) field in [-1, 1] that varies over about size / cells pixels (bilinear upsampled noise)."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size, dtype=np.float64)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _rotated(xx, yy, cx, cy, angle):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


def _segment_distance(xx, yy, points: np.ndarray) -> np.ndarray:
    """Distance from every pixel centre to a polyline given as (K, 2) points (x, y)."""
    best = np.full(xx.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / max(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
        best = np.minimum(best, np.hypot(xx - (x0 + t * vx), yy - (y0 + t * vy)))
    return best


def _shape_mask(kind: int, rng: np.random.Generator, xx, yy, size: int) -> np.ndarray:
    """Boolean mask of one object of class `kind` at a random place, scale `size / 64`."""
    s = size / 64.0
    cx, cy = rng.uniform(0, size, size=2)
    angle = rng.uniform(0, np.pi)
    if kind == 1:  # disc: ellipse with radii 5-14 px at 64 px
        a, b = rng.uniform(5, 14, size=2) * s
        u, v = _rotated(xx, yy, cx, cy, angle)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == 2:  # box: rectangle with sides 8-24 px
        w, h = rng.uniform(8, 24, size=2) * s
        u, v = _rotated(xx, yy, cx, cy, angle)
        return (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)
    if kind == 3:  # triangle with circumradius 7-16 px
        r = rng.uniform(7, 16) * s
        angles = angle + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, size=3)
        px, py = cx + r * np.cos(angles), cy + r * np.sin(angles)
        inside = np.ones(xx.shape, bool)
        sign = np.sign((px[1] - px[0]) * (py[2] - py[0]) - (py[1] - py[0]) * (px[2] - px[0]))
        for i in range(3):
            j = (i + 1) % 3
            cross = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
            inside &= sign * cross >= 0
        return inside
    if kind == 4:  # wire: a smooth curve 2-3 px wide (sometimes 1 px thinner near the ends of diagonals)
        width = rng.choice([2.0, 3.0])
        length = rng.uniform(25, 60) * s
        p0 = np.array([cx, cy])
        p2 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
        bend = rng.uniform(-0.35, 0.35) * length
        p1 = (p0 + p2) / 2 + bend * np.array([-np.sin(angle), np.cos(angle)])
        t = np.linspace(0.0, 1.0, 9)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        size_ = xx.shape[0]
        x0, y0 = np.clip(np.floor(curve.min(0) - width).astype(int), 0, size_)
        x1, y1 = np.clip(np.ceil(curve.max(0) + width).astype(int), 0, size_)
        mask = np.zeros(xx.shape, bool)  # only the curve's bounding box needs distances
        mask[y0:y1, x0:x1] = _segment_distance(xx[y0:y1, x0:x1], yy[y0:y1, x0:x1], curve) <= width / 2
        return mask
    if kind == 5:  # speck: a small disc 3-7 px across, independent of the resolution
        radius = rng.uniform(1.5, 3.5)
        return np.hypot(xx - cx, yy - cy) <= radius
    raise ValueError(f"unknown object class {kind}")


def _texture(kind: int, rng: np.random.Generator, xx, yy) -> np.ndarray:
    """Per-pixel brightness offset (+-45 or 0) that characterises the class's surface."""
    if kind == 2:  # stripes, period 4-6 px, random orientation
        period = rng.uniform(4, 6)
        u, _ = _rotated(xx, yy, 0.0, 0.0, rng.uniform(0, np.pi))
        return 45.0 * np.sign(np.sin((2 * np.pi / period) * u))
    if kind == 3:  # checkerboard, cells 2-3 px
        cell = rng.choice([2, 3])
        ox, oy = rng.integers(0, cell, size=2)
        return 45.0 * (2.0 * (((xx.astype(int) + ox) // cell + (yy.astype(int) + oy) // cell) % 2) - 1.0)
    return np.zeros(xx.shape, np.float32)


def generate_scene(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image uint8 (size, size, 3), label uint8 (size, size)) for one example; pure in its arguments."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index, size])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    background = _random_colour(rng)
    field = _smooth_noise(rng, size, int(rng.integers(2, 5)))
    image = (background[None, None, :] + 20.0 * field[..., None] * rng.uniform(-1, 1, size=3)).astype(np.float32)
    label = np.zeros((size, size), np.uint8)
    objects = (
        [1] * int(rng.integers(1, 3))
        + [2] * int(rng.integers(1, 3))
        + [3] * int(rng.integers(1, 3))
        + [4] * int(rng.integers(1, 3))
        + [5] * int(rng.integers(2, 6))
    )
    rng.shuffle(objects)  # random drawing order: later objects occlude earlier ones
    for kind in objects:
        mask = _shape_mask(kind, rng, xx, yy, size)
        colour = _contrasting_colour(rng, background)
        surface = colour.astype(np.float32) + _texture(kind, rng, xx[mask], yy[mask])[:, None]
        image[mask] = surface
        label[mask] = kind
    image += 6.0 * rng.standard_normal(size=image.shape, dtype=np.float32)  # sensor noise everywhere
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """One resolution of the embedded dataset; the split sizes may be shrunk (tests) via `shapes_config`."""

    resolution: int = 64
    num_train: int = 1600
    num_validation: int = 200
    num_test: int = 200
    seed: int = 0


def shapes_config(
    resolution: int = 64,
    num_train: int | None = None,
    num_validation: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> ShapesConfig:
    """The builder config for a resolution; non-default sizes or seeds get their own name (own cache folder)."""
    if resolution not in DEFAULT_SIZES:
        raise ValueError(
            f"segjax_shapes resolution {resolution!r} is not available; choose one of {sorted(DEFAULT_SIZES)}"
        )
    defaults = DEFAULT_SIZES[resolution]
    sizes = tuple(
        d if n is None else int(n) for n, d in zip((num_train, num_validation, num_test), defaults, strict=True)
    )
    if min(sizes) < 1:
        raise ValueError(f"segjax_shapes split sizes must be positive, got {sizes}")
    name = str(resolution)
    if sizes != defaults or seed != 0:
        name += f"_n{sizes[0]}-{sizes[1]}-{sizes[2]}_s{seed}"
    return ShapesConfig(
        name=name,
        description=f"{resolution}x{resolution} scenes, split sizes {sizes}",
        resolution=resolution,
        num_train=sizes[0],
        num_validation=sizes[1],
        num_test=sizes[2],
        seed=seed,
    )


class SegjaxShapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the embedded dataset (`segjax_shapes/64`, `segjax_shapes/128`)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Less noise, more contrast, 1-2 of each large shape."}
    BUILDER_CONFIGS = [shapes_config(64), shapes_config(128)]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 derives this through `importlib_resources`, which is not installed on Python >= 3.9.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        # Raw bytes: TFDS would otherwise store uint8 pixels as int64 lists (several times slower).
        raw = tfds.features.Encoding.BYTES
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(r, r, 3), dtype=np.uint8, encoding=raw),
                    "label": tfds.features.Tensor(shape=(r, r), dtype=np.uint8, encoding=raw),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        c = self.builder_config
        sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, num_examples: int):
        c = self.builder_config
        for index in range(num_examples):
            image, label = generate_scene(c.seed, split, index, c.resolution)
            yield index, {"image": image, "label": label}
