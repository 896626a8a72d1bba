"""Report figures as PNGs (matplotlib's object API, no pyplot state): per-arm dots with 95% intervals, the
hypotheses' contrasts, learning curves, mIoU against GFLOPs, checkerboard phase maps and sample predictions.

Axes of absolute scores start at zero; axes of differences show zero (and the equivalence margin).
"""

from __future__ import annotations

import pathlib

import numpy as np
from matplotlib.figure import Figure

from segjax.plots import colourise, palette, save_figure

COLOURS = palette(256)  # class colours of every label map in the reports (segjax's one palette)


def _interval_rows(rows: list[dict], *, color: str):
    """A figure with one line per row, top to bottom: the seeds' values as dots, the mean with its 95% interval.
    rows: [{'label', 'values' (per seed), 'mean', 'ci_low', 'ci_high'}]. Returns (figure, axes, y positions)."""
    fig = Figure(figsize=(7, 0.42 * len(rows) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        ax.plot(row["values"], [yi] * len(row["values"]), "o", color="0.6", markersize=3, zorder=1)
        error = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
        ax.errorbar(row["mean"], yi, xerr=error, fmt="D", color=color, capsize=3, zorder=2)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig, ax, y


def dots_with_intervals(rows: list[dict], path: pathlib.Path, *, title: str, xlabel: str) -> None:
    """Scores per arm (see `_interval_rows`); the x axis starts at 0."""
    fig, ax, _ = _interval_rows(rows, color="C0")
    high = max(max(max(r["values"]), r["ci_high"]) for r in rows)
    ax.set_xlim(0, min(1.0, high * 1.05) if high <= 1 else high * 1.05)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def contrasts(rows: list[dict], path: pathlib.Path, *, title: str, xlabel: str) -> None:
    """Differences (see `_interval_rows`), with zero marked and each row's equivalence margin ('margin') shaded."""
    fig, ax, y = _interval_rows(rows, color="C3")
    for yi, row in zip(y, rows, strict=True):
        if row.get("margin"):
            ax.fill_betweenx([yi - 0.35, yi + 0.35], -row["margin"], row["margin"], color="C2", alpha=0.15, lw=0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def learning_curves(curves: dict[str, tuple[list[int], np.ndarray]], path: pathlib.Path, *, title: str) -> None:
    """Validation mIoU against the step: per arm the mean over seeds (lines) and each seed (faint)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, (label, (steps, values)) in enumerate(curves.items()):
        values = np.atleast_2d(values)
        for seed_values in values:
            ax.plot(steps, seed_values, color=f"C{i % 10}", alpha=0.15, lw=0.8)
        ax.plot(steps, values.mean(0), color=f"C{i % 10}", lw=1.5, label=label)
    ax.set_ylim(0, 1)
    ax.set_xlim(0, None)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation mIoU")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    save_figure(fig, path)


def miou_against_cost(points: list[dict], path: pathlib.Path, *, cost: str, xlabel: str) -> None:
    """Final mIoU (mean and 95% interval) against a cost column per arm; both axes start at zero."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for i, p in enumerate(points):
        ax.errorbar(
            p[cost],
            p["mean"],
            yerr=[[p["mean"] - p["ci_low"]], [p["ci_high"] - p["mean"]]],
            fmt="o",
            color=f"C{i % 10}",
            capsize=3,
        )
        ax.annotate(p["label"], (p[cost], p["mean"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(0, max(p[cost] for p in points) * 1.15)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final validation mIoU")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def phase_maps(arms, path: pathlib.Path) -> bool:
    """Checkerboard phase maps (seed 0) at initialisation and after training, one row per arm, one colour scale
    shared by every map, every row and column labelled."""
    items = [a for a in arms if a["_members"] and a["_members"][0]["_analysis"].get("phase_maps")]
    if not items:
        return False
    maps = [(a, m) for a in items for m in [a["_members"][0]["_analysis"]["phase_maps"]]]
    limit = max(float(np.abs(np.asarray(m[stage])).max()) for _, m in maps for stage in ("init", "trained")) or 1.0
    fig = Figure(figsize=(3.2, 1.4 * len(maps) + 0.6))
    axes = fig.subplots(len(maps), 2, squeeze=False)
    image = None
    for row, (arm, m) in enumerate(maps):
        for col, stage in enumerate(("init", "trained")):
            ax = axes[row, col]
            image = ax.imshow(np.asarray(m[stage]), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            score = arm[f"cb_{stage}_constant_mean"]
            ax.set_title(f"{stage}: {score:.4f}", fontsize=6)
            if col == 0:
                ax.set_ylabel(f"{arm['model']}/{arm['label']}", fontsize=5, rotation=0, ha="right", va="center")
    fig.colorbar(image, ax=axes, shrink=0.6)
    save_figure(fig, path)
    return True


def sample_predictions(arms, model: str, path: pathlib.Path, max_samples: int = 3) -> bool:
    """Image, ground truth and every arm's prediction (seed 0) for the first validation images."""
    samples = []
    for a in arms:
        if a["model"] != model or not a["_members"]:
            continue
        npz = pathlib.Path(a["_members"][0]["_workdir"]) / "samples.npz"
        if npz.exists():
            samples.append((a["label"], dict(np.load(npz))))
    if not samples:
        return False
    first = samples[0][1]
    n = min(max_samples, len(first["image"]))
    cols = 2 + len(samples)
    fig = Figure(figsize=(1.3 * cols, 1.4 * n + 0.4))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        panels = [("image", first["image"][i]), ("ground truth", colourise(first["label"][i], COLOURS))]
        panels += [(label, colourise(data["prediction"][i], COLOURS)) for label, data in samples]
        for ax, (title, img) in zip(axes[i], panels, strict=True):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title.replace("_", "\n", 1), fontsize=6)
    save_figure(fig, path)
    return True


def operator_crops(crops: dict[str, list], path: pathlib.Path) -> None:
    """Channel 0 of each x2 operator on a constant input at initialisation: one 8x8 crop per operator, each on its own
    grey scale (a constant crop mid-grey, not an autoscaled black square)."""
    fig = Figure(figsize=(1.25 * len(crops), 1.6))
    axes = fig.subplots(1, len(crops))
    for ax, (label, crop) in zip(axes, crops.items(), strict=True):
        crop = np.asarray(crop)
        lo, hi = float(crop.min()), float(crop.max())
        if hi - lo < 1e-6 * max(abs(hi), 1.0):
            lo, hi = lo - 1.0, hi + 1.0
        ax.imshow(crop, cmap="gray", interpolation="nearest", vmin=lo, vmax=hi)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label.replace("_", "\n", 1), fontsize=6)
    fig.suptitle("channel 0 of each x2 operator on a constant input at initialisation (8x8 crop)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
