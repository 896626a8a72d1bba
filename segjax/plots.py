"""What evaluation shows a person: the per-class table, the confusion matrix, image/ground-truth/prediction grids,
and the one class palette every figure and mask of segjax uses.

Imports no JAX: report writers use it too.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
from matplotlib.figure import Figure

from segjax.files import write_atomic

IGNORE_COLOUR = (255, 255, 255)  # ignored pixels are drawn white

# Cityscapes' 19 evaluation classes in trainId order (cityscapesScripts labels.py).
CITYSCAPES_COLOURS = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
# CamVid's 11 classes (segjax.data.catalog.CAMVID_GROUPS), each in the official colour of its namesake 32-class
# label (label_colors.txt).
CAMVID_COLOURS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (0, 0, 192),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
# Distinct colours for the first classes of any other dataset (the embedded dataset's figures).
FIRST_COLOURS = (
    (40, 40, 40),
    (230, 80, 60),
    (60, 160, 230),
    (250, 200, 50),
    (120, 220, 110),
    (200, 90, 220),
    (240, 140, 40),
    (90, 90, 200),
    (160, 240, 240),
    (250, 250, 250),
)


def voc_colours(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map (VOCdevkit's labelcolormap.m): the bits of the class index spread over the high
    bits of R, G and B. Its 256 colours are distinct; class 0 (background) is black."""
    out = np.zeros((n, 3), np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[index] = (r, g, b)
    return out


def palette(num_classes: int, dataset: str | None = None) -> np.ndarray:
    """(num_classes, 3) uint8 class colours: VOC's, Cityscapes' or CamVid's standard colours when `dataset` names one,
    else 10 hand-picked distinct colours followed by VOC's map (no colour repeats below 256 classes)."""
    name = (dataset or "").lower()
    for key, colours in (("cityscapes", CITYSCAPES_COLOURS), ("camvid", CAMVID_COLOURS)):
        if key in name and num_classes <= len(colours):
            return np.array(colours[:num_classes], np.uint8)
    if "voc" in name:
        return voc_colours(max(num_classes, 1))[:num_classes]
    first = np.array(FIRST_COLOURS, np.uint8)
    used = {tuple(c) for c in FIRST_COLOURS}
    rest = [c for c in voc_colours(256 + len(FIRST_COLOURS)) if tuple(c) not in used]
    return np.concatenate([first, np.array(rest, np.uint8)])[:num_classes]


def colourise(labels: np.ndarray, colours: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 by `colours` (see `palette`); `ignore_index` white."""
    labels = np.asarray(labels).astype(np.int64)
    out = colours[np.clip(labels, 0, len(colours) - 1)]
    out[labels == ignore_index] = IGNORE_COLOUR
    return out


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


def per_class_table(scores: dict, class_names) -> str:
    """Text table: one row per class (IoU, accuracy, boundary F1), then the means."""
    names = list(class_names) if class_names else [str(i) for i in range(len(scores["per_class_iou"]))]
    width = max(8, max(len(n) for n in names))

    def fmt(v):
        return "   -  " if v is None or not math.isfinite(v) else f"{100 * v:6.2f}"

    rows = [f"{'class':<{width}}    IoU    Acc     BF1"]
    bf1 = scores.get("per_class_boundary_f1", [float("nan")] * len(names))
    for i, name in enumerate(names):
        rows.append(
            f"{name:<{width}} {fmt(scores['per_class_iou'][i])} {fmt(scores['per_class_accuracy'][i])} {fmt(bf1[i])}"
        )
    rows.append("")
    for key in (
        "mean_iou",
        "pixel_accuracy",
        "mean_pixel_accuracy",
        "frequency_weighted_iou",
        "mean_dice",
        "boundary_f1",
    ):
        if key in scores:
            rows.append(f"{key:<24} {fmt(scores[key])}")
    return "\n".join(rows)


def plot_confusion(confusion: np.ndarray, class_names, path: str) -> None:
    """Row-normalised confusion matrix (rows: ground truth) as a PNG."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    n = len(confusion)
    fig = Figure(figsize=(1 + 0.6 * n, 1 + 0.6 * n))
    ax = fig.subplots()
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{normalised[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black",
                )
    save_figure(fig, path)


def plot_examples(examples: dict, colours: np.ndarray, ignore_index: int, path: str) -> None:
    """Rows of (image, ground truth, prediction) as a PNG, classes coloured by `colours` (`palette`); images
    rescaled to [0, 1] for display."""
    n = len(examples["image"])
    fig = Figure(figsize=(6, 2 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        image = examples["image"][i]
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        panels = (
            image,
            colourise(examples["label"][i], colours, ignore_index),
            colourise(examples["prediction"][i], colours, ignore_index),
        )
        for ax, panel, title in zip(axes[i], panels, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title)
    save_figure(fig, path)
