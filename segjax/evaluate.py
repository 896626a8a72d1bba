"""Evaluation: `evaluate_split` (used by training for validation) and the `segjax-eval` command line.

  segjax-eval --workdir=runs/quickstart [--step=latest|best|N] [--split=test]

Restores a checkpoint of the run read-only (safe while training still writes to the workdir), evaluates one split
with the moving average of the weights where the run kept one (optimizer.ema_decay; the output says which weights)
(over every process of a multi-process run, with the scores of one process; process 0 prints and writes),
prints a per-class table and writes, atomically, into <workdir>/eval/:
  <split>-step<N>.json            all scores, per-class lists, the checkpoint step and a config summary
  <split>-step<N>-confusion.png   the row-normalised confusion matrix
  <split>-step<N>-examples.png    images, ground truth and predictions side by side
User errors (no workdir, no checkpoint, a step that does not exist, a config that does not match the checkpoint)
print one clear message and exit with status 2 without writing anything.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

from segjax import cli, distributed
from segjax import config as config_lib
from segjax import data as data_lib
from segjax import metrics as metrics_lib
from segjax import run as run_lib
from segjax.distributed import is_primary
from segjax.files import absolute, as_path, jsonable, write_json
from segjax.logging_utils import quiet_libraries
from segjax.plots import palette, per_class_table, plot_confusion, plot_examples


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
    config, dp, max_batches = task.config, task.layout, task.eval.max_batches
    totals, examples, batches = None, [], 0
    for canvas, indices in task.eval_buckets(split):  # one compiled step per canvas
        if max_batches is not None and batches >= max_batches:
            break
        loader = data_lib.make_loader(
            task.data,
            split,
            global_batch_size=config.eval_batch_size,
            train=False,
            seed=config.seed,
            canvas=canvas,
            examples=indices,
        )
        step_fn = None
        for batch in loader:
            if max_batches is not None and batches >= max_batches:
                break
            batches += 1
            batch = _eval_batch(batch)
            if step_fn is None:  # the boundary tolerance may depend on the (fixed) evaluation image size
                tolerance = task.eval.boundary_tolerance
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
# segjax-eval
# --------------------------------------------------------------------------------------------------------------


def evaluate_checkpoint(
    workdir: str, step="latest", split: str | None = None, config=None, *, write: bool = True, verbose: bool = True
) -> dict:
    """Evaluates a checkpoint of the run in `workdir`; returns the report dict (also written as JSON when `write`).

    config: the run's config (default: <workdir>/config.json); see `segjax.run.restore`.
    """
    workdir = absolute(workdir)
    task, state, resolved = run_lib.restore(workdir, step, config)
    config, info = task.config, task.info
    split = split or info.eval_split
    splits = list(getattr(task.data.builder.info, "splits", None) or info.num_examples)  # all, not only train/eval
    if split not in splits:
        raise run_lib.RunError(f"Split {split!r} does not exist in {info.name}; available: {sorted(splits)}.")
    num_plot = task.eval.num_images_to_plot
    result = evaluate_split(task, task.layout.replicate(state), split, collect_examples=num_plot)
    scores, examples = result if num_plot else (result, None)
    report = {
        "workdir": workdir,
        "split": split,
        "checkpoint_step": resolved,
        "weights": "ema" if task.optimizer.ema_decay else "trained",  # steps.inference_variables
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
        print(f"{info.name} / {split}, checkpoint step {resolved}, {task.inference_weights}")
        print(per_class_table(scores, info.class_names))
    if write and primary:
        out_dir = os.path.join(workdir, "eval")
        as_path(out_dir).mkdir(parents=True, exist_ok=True)
        stem = os.path.join(out_dir, f"{split}-step{resolved}")
        plot_confusion(scores["confusion_matrix"], info.class_names, stem + "-confusion.png")
        if examples is not None and len(examples["image"]):
            plot_examples(examples, palette(info.num_classes, info.name), info.ignore_index, stem + "-examples.png")
        write_json(stem + ".json", report, indent=2)
        report["path"] = stem + ".json"
        if verbose:
            print(f"wrote {stem}.json")
    return report


def main(argv=None):
    """Entry point of `segjax-eval`: --workdir=DIR [--step=latest|best|N] [--split=S] [--config=FILE[:ARG]]
    [--config.KEY=VALUE ...] (overrides apply to --config, or to the workdir's config.json without it)."""
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = cli.ArgumentParser(prog="segjax-eval", description="Evaluate a checkpoint of a segjax-train run.")
    parser.add_argument("--workdir", required=True, help="workdir of a segjax-train run")
    parser.add_argument("--step", default="latest", help="checkpoint: latest, best (validation mIoU) or a step")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the config's data.eval_split)")
    parser.add_argument("--config", default=None, help="a config replacing the workdir's (must build the same model)")
    args, config = config_lib.parse_with_config(
        parser, argv, base_config=lambda args: run_lib.stored_config(args.workdir)
    )
    quiet_libraries()
    try:
        distributed.initialize()  # joins a multi-process run when the environment describes one
        evaluate_checkpoint(args.workdir, args.step, args.split, config)
    except ValueError as e:
        cli.fail(parser.prog, str(e))


if __name__ == "__main__":
    main()
