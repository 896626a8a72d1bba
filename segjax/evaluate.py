"""Evaluation: `evaluate_split` (used by training for validation) and the `segjax-eval` command line.

  segjax-eval --workdir=runs/quickstart [--step=latest|best|N] [--split=test]

Restores a checkpoint of the run read-only (safe while training still writes to the workdir), evaluates one split
(over every process of a multi-process run, with the scores of one process; process 0 prints and writes),
prints a per-class table and writes, atomically, into <workdir>/eval/:
  <split>-step<N>.json            all scores, per-class lists, the checkpoint step and a config summary
  <split>-step<N>-confusion.png   the row-normalised confusion matrix
  <split>-step<N>-examples.png    images, ground truth and predictions side by side
User errors (no workdir, no checkpoint, a step that does not exist, a config that does not match the checkpoint)
print one clear message and exit with status 2 without writing anything.
"""

from __future__ import annotations

import math
import os
import sys

import jax
import matplotlib
import ml_collections
import numpy as np
from matplotlib.figure import Figure
from ml_collections import config_dict

from segjax import checkpoint as checkpoint_lib
from segjax import cli, config_utils, distributed, optim
from segjax import data as data_lib
from segjax import losses as losses_lib
from segjax import metrics as metrics_lib
from segjax import models as models_lib
from segjax.distributed import is_primary
from segjax.logging_utils import jsonable, quiet_libraries, save_figure, write_json
from segjax.task import Task


def _eval_batch(batch: dict) -> dict:
    """image/label/valid of a loader batch; 'valid' added (all True) if the loader left it out."""
    out = {"image": batch["image"], "label": batch["label"]}
    out["valid"] = batch["valid"] if "valid" in batch else np.ones(len(batch["image"]), bool)
    return out


def evaluate_split(task, state, split: str, *, collect_examples: int = 0):
    """Scores of `state` on a whole split: compute_scores of the summed confusion matrix plus boundary F1.

    `task` is the run's `segjax.task.Task`; `state` is laid out by its layout (replicated). Every process of a
    multi-process run evaluates its share of each batch; the statistics are summed over all devices, so every
    process gets the scores of the whole split. With collect_examples > 0, also returns (scores, examples) where
    examples holds the first images, labels and predictions (numpy) of this process's share, for plotting.
    """
    config, dp = task.config, task.layout
    totals, examples, batches = None, [], 0
    for canvas, indices in task.eval_buckets(split):  # one compiled step per canvas
        if config.eval.max_batches is not None and batches >= config.eval.max_batches:
            break
        loader = data_lib.make_loader(
            config.data,
            split,
            global_batch_size=config.eval_batch_size,
            train=False,
            seed=config.seed,
            canvas=canvas,
            examples=indices,
        )
        step_fn = None
        for batch in loader:
            if config.eval.max_batches is not None and batches >= config.eval.max_batches:
                break
            batches += 1
            batch = _eval_batch(batch)
            if step_fn is None:  # the boundary tolerance may depend on the (fixed) evaluation image size
                tolerance = config.eval.boundary_tolerance
                if tolerance is None:
                    tolerance = metrics_lib.segnet_boundary_tolerance(*batch["label"].shape[1:3])
                step_fn = task.eval_step(int(tolerance))
            sharded = dp.shard_batch(batch)
            stats = step_fn(state, sharded)
            totals = stats if totals is None else jax.tree.map(lambda a, b: a + b, totals, stats)
            # Examples to plot: from the first canvas only (one shape).
            if sum(len(e["image"]) for e in examples) < collect_examples and (
                not examples or examples[0]["image"].shape[1:] == batch["image"].shape[1:]
            ):
                predictions = dp.local_examples(task.predict_step()(state, sharded))
                keep = batch["valid"]
                examples.append(
                    {"image": batch["image"][keep], "label": batch["label"][keep], "prediction": predictions[keep]}
                )
    if totals is None:
        raise ValueError(f"The {split!r} split produced no evaluation batches; check data.eval_split / --split.")
    totals = dp.unreplicate(totals)
    scores = metrics_lib.compute_scores(totals["confusion"])
    scores.update(metrics_lib.boundary_scores(totals["boundary"]))
    scores["confusion_matrix"] = np.asarray(totals["confusion"])
    if not collect_examples:
        return scores
    merged = {k: np.concatenate([e[k] for e in examples])[:collect_examples] for k in ("image", "label", "prediction")}
    return scores, merged


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------


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


def _colour_labels(labels: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    cmap = matplotlib.colormaps["tab20"]
    palette = np.array([cmap(i % 20)[:3] for i in range(num_classes)])
    out = palette[np.clip(labels, 0, num_classes - 1)]
    out[labels == ignore_index] = 1.0  # ignored pixels white
    return out


def plot_examples(examples: dict, num_classes: int, ignore_index: int, path: str) -> None:
    """Rows of (image, ground truth, prediction) as a PNG; images rescaled to [0, 1] for display."""
    n = len(examples["image"])
    fig = Figure(figsize=(6, 2 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        image = examples["image"][i]
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        panels = (
            image,
            _colour_labels(examples["label"][i], num_classes, ignore_index),
            _colour_labels(examples["prediction"][i], num_classes, ignore_index),
        )
        for ax, panel, title in zip(axes[i], panels, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------------
# segjax-eval
# --------------------------------------------------------------------------------------------------------------


class EvalError(ValueError):
    """A user error of segjax-eval: reported in one message, exit status 2, nothing written."""


def default_eval_config() -> ml_collections.ConfigDict:
    """The `eval` config section with its defaults (documented in docs/config_reference.md)."""
    return ml_collections.ConfigDict(
        {
            "boundary_tolerance": config_dict.placeholder(int),  # pixels; None: SegNet's 0.75% of the diagonal
            "max_batches": config_dict.placeholder(int),  # None: the whole split
            "num_images_to_plot": 8,  # segjax-eval's image / ground truth / prediction grid
            # Every labelled pixel at the mask's own resolution ('whole', 'slide'); 'resize' fits images into
            # data.eval_size first (quick looks, not comparable with papers). See segjax.steps.InferenceSpec.
            "mode": "whole",
            "window": config_dict.placeholder(object),  # 'slide': int or (h, w); None: the training crop
            "stride": config_dict.placeholder(object),  # 'slide': int or (h, w); None: 2/3 of the window
            "scales": (1.0,),  # test-time multi-scale factors (probabilities averaged)
            "flip": False,  # test-time horizontal flip (probabilities averaged)
            # 'whole' / 'slide': images are padded to their own size rounded up to the stride, grouped by that size;
            # at most this many groups (one compilation each), coarser padding beyond it (segjax.data.size_buckets)
            "max_buckets": 8,
        }
    )


def section_defaults() -> dict:
    """The config sections whose defaults segjax defines, by name: a stored config from an older segjax gets the
    keys added since with these values."""
    return {
        "data": data_lib.default_data_config(),
        "model": models_lib.default_model_config(),
        "loss": losses_lib.default_loss_config(),
        "optimizer": optim.default_optimizer_config(),
        "schedule": optim.default_schedule_config(),
        "eval": default_eval_config(),
    }


def run_config(workdir: str):
    """The resolved config the run in `workdir` was trained with; EvalError if it is not a segjax-train workdir."""
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise EvalError(f"Workdir {workdir} does not exist; pass the --workdir of a segjax-train run.")
    try:
        return config_utils.with_defaults(config_utils.load_config(workdir), section_defaults())
    except FileNotFoundError:
        raise EvalError(f"{workdir} has no {config_utils.CONFIG_FILE}: it is not a segjax-train workdir.") from None


def restore_run(workdir: str, step="latest", config=None):
    """(task, host state, checkpoint step) of a checkpoint of the run in `workdir`, restored read-only.

    config: the run's config (default: <workdir>/config.json); another one may change how the data is read and
    evaluated, not the model (checked against what the checkpoint recorded: keys and, on restore, shapes).
    Every user error is an EvalError naming the fix.
    """
    workdir = os.path.abspath(workdir)
    stored = run_config(workdir)  # also checks that workdir is a segjax-train workdir
    config = stored if config is None else config
    if not os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
        raise EvalError(f"No checkpoint found in {workdir} (no checkpoints/ folder); train first (segjax-train).")
    task = Task(config, workdir)
    checkpoints = task.checkpointer(read_only=True)
    try:
        resolved = checkpoints.resolve_step(step)
        meta = checkpoints.restore_meta(resolved)
        if meta.get("num_classes") != task.num_classes:
            raise EvalError(
                f"The checkpoint of step {resolved} was trained with num_classes={meta.get('num_classes')}"
                f" but the config's dataset {config.data.name!r} has {task.num_classes} classes; use "
                "the config the run was trained with (its workdir's config.json)."
            )
        trained = meta.get("model") or {}
        known = set(config_utils.flat_keys(trained, "model."))  # keys newer than the checkpoint keep their default
        now = jsonable(config.model.to_dict())
        changed = [c for c in config_utils.diff(trained, now, "model.") if c.split(":")[0] in known]
        if changed:
            raise EvalError(
                f"The config changes the model the checkpoint of step {resolved} was trained as ({'; '.join(changed)})"
                ": evaluation cannot change the model; drop those overrides (eval.*, data.* and the like are fine)."
            )
        state, _ = checkpoints.restore(resolved, task.abstract_state())
    except checkpoint_lib.CheckpointError as e:
        raise EvalError(str(e)) from None
    finally:
        checkpoints.close()
    return task, state, resolved


def evaluate_checkpoint(
    workdir: str, step="latest", split: str | None = None, config=None, *, write: bool = True, verbose: bool = True
) -> dict:
    """Evaluates a checkpoint of the run in `workdir`; returns the report dict (also written as JSON when `write`).

    config: the run's config (default: <workdir>/config.json); see `restore_run`.
    """
    workdir = os.path.abspath(workdir)
    task, state, resolved = restore_run(workdir, step, config)
    config, info = task.config, task.info
    split = split or info.eval_split
    if split not in info.num_examples:
        raise EvalError(f"Split {split!r} does not exist in {info.name}; available: {sorted(info.num_examples)}.")
    num_plot = int(config.eval.num_images_to_plot)
    result = evaluate_split(task, task.layout.replicate(state), split, collect_examples=num_plot)
    scores, examples = result if num_plot else (result, None)
    report = {
        "workdir": workdir,
        "split": split,
        "checkpoint_step": resolved,
        "dataset": info.name,
        "class_names": list(info.class_names or []),
        "num_classes": info.num_classes,
        "config_summary": {
            "model": config.model.to_dict(),
            "data": config.data.to_dict(),
            "num_train_steps": config.num_train_steps,
            "seed": config.seed,
        },
        "scores": jsonable(scores),
    }
    primary = is_primary()  # in a multi-process run, process 0 prints and writes the report
    if not primary:
        print(
            f"segjax-eval: process {jax.process_index()} of {jax.process_count()}: process 0 writes the report.",
            file=sys.stderr,
        )
    if verbose and primary:
        print(f"{info.name} / {split}, checkpoint step {resolved}")
        print(per_class_table(scores, info.class_names))
    if write and primary:
        out_dir = os.path.join(workdir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        stem = os.path.join(out_dir, f"{split}-step{resolved}")
        plot_confusion(scores["confusion_matrix"], info.class_names, stem + "-confusion.png")
        if examples is not None and len(examples["image"]):
            plot_examples(examples, info.num_classes, info.ignore_index, stem + "-examples.png")
        write_json(stem + ".json", report, indent=2)
        report["path"] = stem + ".json"
        if verbose:
            print(f"wrote {stem}.json")
    return report


def main(argv=None):
    """Entry point of `segjax-eval`: --workdir=DIR [--step=latest|best|N] [--split=S] [--config=FILE[:ARG]]
    [--config.KEY=VALUE ...] (overrides apply to --config, or to the workdir's config.json without it)."""
    parser = cli.ArgumentParser(prog="segjax-eval", description="Evaluate a checkpoint of a segjax-train run.")
    parser.add_argument("--workdir", required=True, help="workdir of a segjax-train run")
    parser.add_argument("--step", default="latest", help="checkpoint: latest, best (validation mIoU) or a step")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the config's data.eval_split)")
    parser.add_argument("--config", default=None, help="a config replacing the workdir's (must build the same model)")
    args, config = config_utils.parse_with_config(parser, argv, base_config=lambda args: run_config(args.workdir))
    quiet_libraries()
    try:
        distributed.initialize()  # joins a multi-process run when the environment describes one
        evaluate_checkpoint(args.workdir, args.step, args.split, config)
    except ValueError as e:
        cli.fail(parser.prog, str(e))


if __name__ == "__main__":
    main()
