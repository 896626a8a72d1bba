"""Report figures (matplotlib Agg, PNG): mIoU per arm with its seed spread, checkerboard phase maps at
initialisation and after training, sample predictions side by side."""

from __future__ import annotations

import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Class colours for label maps (index 255 = ignore is drawn black).
PALETTE = np.array(
    [
        [40, 40, 40],
        [230, 80, 60],
        [60, 160, 230],
        [250, 200, 50],
        [120, 220, 110],
        [200, 90, 220],
        [240, 140, 40],
        [90, 90, 200],
        [160, 240, 240],
        [250, 250, 250],
    ],
    np.uint8,
)


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) int labels -> (H, W, 3) uint8; classes beyond the palette wrap around, ignore (255) is black."""
    labels = np.asarray(labels).astype(np.int64)
    rgb = PALETTE[labels % len(PALETTE)]
    rgb[labels == 255] = 0
    return rgb


def _models(arms):
    return list(dict.fromkeys(a["model"] for a in arms))


def miou_per_arm(arms, path: pathlib.Path, metric: str = "val_miou", xlabel: str = "validation mIoU") -> None:
    models = _models(arms)
    heights = [sum(a["model"] == m for a in arms) for m in models]
    fig, axes = plt.subplots(
        len(models),
        1,
        figsize=(7, 0.35 * sum(heights) + 1.2 * len(models)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, model in zip(axes[:, 0], models, strict=True):
        members = [a for a in arms if a["model"] == model]
        y = np.arange(len(members))
        means = [a[f"{metric}_mean"] for a in members]
        stds = [0.0 if math.isnan(a[f"{metric}_std"]) else a[f"{metric}_std"] for a in members]
        ax.barh(y, means, xerr=stds, color="#8fb3d9", ecolor="black", capsize=3)
        for i, a in enumerate(members):
            seeds = [m[metric] for m in a["_members"] if m[metric] is not None]
            ax.plot(seeds, [i] * len(seeds), "k.", markersize=4)
        ax.set_yticks(y, [a["label"] for a in members], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{model}: mean ± std over seeds (dots: seeds)", fontsize=9)
        finite = [m for m in means if not math.isnan(m)]
        if finite:
            lo = max(0.0, min(finite) - 3 * max(stds + [0.01]))
            ax.set_xlim(lo, min(1.0, max(finite) + 3 * max(stds + [0.01])))
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def phase_maps(arms, path: pathlib.Path) -> bool:
    """One row per arm, columns (init, trained) per model: the normalised phase means of the most checkerboarded
    probability channel on a constant input (seed 0). Each map has its own colour scale (the patterns differ by
    orders of magnitude); the magnitude is the score above the map."""
    rows = [a for a in arms if a["_members"][0]["_analysis"].get("phase_maps")]
    if not rows:
        return False
    labels = list(dict.fromkeys(a["label"] for a in rows))
    models = _models(rows)
    by_key = {(a["model"], a["label"]): a for a in rows}
    fig, axes = plt.subplots(
        len(labels), 2 * len(models), figsize=(1.3 * 2 * len(models) + 1.5, 1.25 * len(labels)), squeeze=False
    )
    for i, label in enumerate(labels):
        labelled = False
        for j, model in enumerate(models):
            for k, stage in enumerate(("init", "trained")):
                ax = axes[i, 2 * j + k]
                ax.set_xticks([])
                ax.set_yticks([])
                arm = by_key.get((model, label))
                if arm is None:
                    ax.axis("off")
                    continue
                analysis = arm["_members"][0]["_analysis"]
                pattern = np.asarray(analysis["phase_maps"][stage])
                vmax = float(np.abs(pattern).max()) or 1.0
                ax.imshow(pattern, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                score = analysis["checkerboard"][stage]["constant"]
                ax.set_title(f"{model} {stage}\n{score:.4f}" if i == 0 else f"{score:.4f}", fontsize=7)
                if not labelled:
                    ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
                    labelled = True
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def sample_predictions(arms, model: str, path: pathlib.Path, max_samples: int = 3) -> bool:
    """Rows: validation images; columns: image, ground truth, each arm's prediction (seed 0)."""
    members = [a for a in arms if a["model"] == model]
    samples = []
    for a in members:
        file = a["_members"][0]["_workdir"] / "samples.npz"
        if file.exists():
            samples.append((a["label"], np.load(file)))
    if not samples:
        return False
    first = samples[0][1]
    n = min(max_samples, first["image"].shape[0])
    cols = 2 + len(samples)
    fig, axes = plt.subplots(n, cols, figsize=(1.2 * cols, 1.3 * n + 0.4), squeeze=False)
    for i in range(n):
        panels = [("image", first["image"][i]), ("ground truth", colorize(first["label"][i]))]
        panels += [(label, colorize(data["prediction"][i])) for label, data in samples]
        for ax, (title, img) in zip(axes[i], panels, strict=True):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=6, rotation=30, ha="left")
    fig.suptitle(f"{model}: validation predictions (seed 0)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_figures(arms, report_dir: pathlib.Path) -> list[tuple[str, str]]:
    """All figures of the main report; returns (title, file name) of those written."""
    report_dir = pathlib.Path(report_dir)
    made = []
    miou_per_arm(arms, report_dir / "miou_per_arm.png")
    made.append(("Validation mIoU per arm", "miou_per_arm.png"))
    if phase_maps(arms, report_dir / "checkerboard_phase_maps.png"):
        made.append(("Checkerboard phase maps (initialisation vs trained)", "checkerboard_phase_maps.png"))
    for model in _models(arms):
        name = f"sample_predictions_{model}.png"
        if sample_predictions(arms, model, report_dir / name):
            made.append((f"Sample predictions: {model}", name))
    return made
