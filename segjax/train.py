"""Training: `train_and_evaluate(config, workdir)` and the `segjax-train` command line.

  segjax-train --config=configs/unet.py:small --workdir=runs/unet --config.model.upsample.method=resize_conv

Read top to bottom: dataset info -> model and optimizer -> state (fresh, or restored from the workdir's latest
checkpoint) -> data from the restored step -> loop (step, log, validate, checkpoint) -> final validation.
Running again with the same workdir resumes and ends with the same numbers as an uninterrupted run: the state
holds the RNG, per-step keys are derived from (rng, step), and the data loader restarts at the restored step.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import jax
import ml_collections
import numpy as np

from segjax import checkpoint as checkpoint_lib
from segjax import cli, config_utils, optim, parallel
from segjax import data as data_lib
from segjax import losses as losses_lib
from segjax import metrics as metrics_lib
from segjax.evaluate import evaluate_split
from segjax.experiment import (
    abstract_state,
    build_model,
    checkpoint_meta,
    initial_state,
    loss_spec,
    optimizer_specs,
)
from segjax.logging_utils import MetricWriter, Progress, per_class_scalars, quiet_libraries

log = logging.getLogger("segjax.train")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


def with_class_weights(spec: losses_lib.LossSpec, config, info) -> losses_lib.LossSpec:
    """`spec` with its class weights fixed; 'median_frequency' counts the pixels of the training split."""
    num_classes, ignore_index = info.num_classes, info.ignore_index
    if spec.class_weighting != "median_frequency":
        return spec.with_class_weights(losses_lib.resolve_class_weights(spec, num_classes))
    counts = np.zeros(num_classes, np.int64)
    image_counts = np.zeros(num_classes, np.int64)
    statistics = jax.jit(
        functools.partial(losses_lib.class_pixel_statistics, num_classes=num_classes, ignore_index=ignore_index)
    )
    loader = data_lib.make_loader(
        config.data, info.train_split, global_batch_size=config.eval_batch_size, train=False, seed=config.seed
    )
    for batch in loader:
        labels = np.where(batch["valid"][:, None, None], batch["label"], ignore_index)
        c, i = statistics(labels)
        counts += np.asarray(c, np.int64)
        image_counts += np.asarray(i, np.int64)
    weights = losses_lib.resolve_class_weights(spec, num_classes, counts, image_counts)
    log.info("Median-frequency class weights: %s", np.round(weights, 3).tolist())
    return spec.with_class_weights(weights)


def _train_batch(batch: dict) -> dict:
    return {"image": batch["image"], "label": batch["label"]}


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, max_steps_this_run: int | None = None
) -> dict:
    """Trains (or resumes) the run in `workdir` to config.num_train_steps; returns the last validation scores.

    max_steps_this_run: stop after this many steps of this invocation without a final save, as a crash would
    (tests and preemption drills); the next call resumes from the latest checkpoint.
    """
    # Everything a bad config breaks is checked before anything is written to the workdir.
    config_utils.validate(config)
    optimizer, schedule_spec = optimizer_specs(config)
    loss = loss_spec(config)
    info = data_lib.get_dataset_info(config.data)
    num_classes, ignore_index = info.num_classes, info.ignore_index
    dp = parallel.data_parallel(config.parallelism, config.num_devices)
    dp.check_batch_size(config.batch_size, "batch_size")
    dp.check_batch_size(config.eval_batch_size, "eval_batch_size")
    model = build_model(config, num_classes)
    schedule = optim.create_schedule(schedule_spec, optimizer.learning_rate)

    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    previous = os.path.join(workdir, config_utils.CONFIG_FILE)
    if os.path.exists(previous):
        changed = config_utils.changes_since_start(config, workdir)
        if changed:
            log.warning("The config differs from the one this workdir was started with:\n  %s", "\n  ".join(changed))
    config_utils.save_config(config, workdir)

    # State: fresh or restored.
    checkpoints = checkpoint_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
    last_saved = checkpoints.latest_step()
    scores = None
    if last_saved is None:
        host_state = initial_state(config, info, model)
    else:
        host_state, meta = checkpoints.restore(last_saved, abstract_state(config, info, model))
        scores = meta.get("scores")
        log.info("Resuming from the checkpoint of step %d in %s", last_saved, checkpoints.directory)
    start_step = int(host_state.step)
    num_steps = config.num_train_steps
    if start_step >= num_steps:
        log.info("Step %d >= num_train_steps=%d: nothing to train.", start_step, num_steps)
        checkpoints.close()
        return scores or {}

    log.info(
        "%s: %d classes; %d devices (%s); global batch %d; steps %d -> %d",
        info.name,
        num_classes,
        dp.num_devices,
        dp.parallelism,
        config.batch_size,
        start_step,
        num_steps,
    )
    step = parallel.TrainStep(
        model, with_class_weights(loss, config, info), optimizer, schedule_spec, num_classes, ignore_index
    )
    train_step = dp.wrap(step, returns_state=True, donate_state=True)  # equal steps of earlier runs: compiled once
    state = dp.replicate(host_state)
    loader = data_lib.make_loader(
        config.data,
        info.train_split,
        global_batch_size=config.batch_size,
        train=True,
        seed=config.seed,
        start_step=start_step,
    )

    writer = MetricWriter(workdir)
    progress = Progress(start_step, num_steps, config.batch_size, enabled=config.progress_bar)
    meta = checkpoint_meta(config, num_classes)
    pending = []  # (step, device metrics) not yet fetched and checked
    train_confusion = np.zeros((num_classes, num_classes), np.int64)
    steps_this_run = 0
    try:
        for step in range(start_step + 1, num_steps + 1):  # `step` = number of updates once this one is applied
            state, metrics = train_step(state, dp.shard_batch(_train_batch(next(loader))))
            pending.append((step, metrics))
            steps_this_run += 1
            last = step == num_steps
            validate_now = step % config.eval_every_steps == 0 or last
            save_now = validate_now or step % config.checkpoint_every_steps == 0
            stop_now = max_steps_this_run is not None and steps_this_run >= max_steps_this_run
            if not (step % config.log_every_steps == 0 or save_now or stop_now):
                continue

            # Fetch the metrics of the steps since the last check; stop before saving a non-finite state.
            fetched = [(s, dp.unreplicate(m)) for s, m in pending]
            pending = []
            for s, m in fetched:
                if not np.isfinite(m["loss"]):
                    raise NonFiniteLossError(
                        f"The training loss became {float(m['loss'])} at step {s}. Training stopped; the last good "
                        f"checkpoint is step {last_saved} in {checkpoints.directory} (nothing after it was saved). "
                        "Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or check the labels "
                        f"(values must be < {num_classes} or the ignore index {ignore_index})."
                    )
                train_confusion += m["confusion"]
            loss = float(np.mean([m["loss"] for _, m in fetched]))
            images_per_s = progress.update(step, loss=loss)
            train_scores = metrics_lib.compute_scores(train_confusion)
            writer.write(
                step,
                "train",
                {
                    "loss": loss,
                    "grad_norm": float(fetched[-1][1]["grad_norm"]),
                    "learning_rate": float(schedule(step - 1)),
                    "images_per_second": images_per_s,
                    "mean_iou": train_scores["mean_iou"],
                    "pixel_accuracy": train_scores["pixel_accuracy"],
                },
            )
            train_confusion[:] = 0

            if validate_now:
                scores = evaluate_split(
                    dp, model, state, config, info.eval_split, num_classes=num_classes, ignore_index=ignore_index
                )
                writer.write(step, info.eval_split, {**scores, **per_class_scalars(scores, info.class_names)})
                progress.write(
                    f"step {step}: {info.eval_split} mIoU {scores['mean_iou']:.4f}, "
                    f"pixel accuracy {scores['pixel_accuracy']:.4f}, boundary F1 {scores['boundary_f1']:.4f}"
                )
            if save_now:
                checkpoints.save(step, dp.unreplicate(state), meta, scores if validate_now else None)
                last_saved = step
            writer.flush()
            progress.reset_clock()
            if stop_now and not last:
                log.info("Stopping after %d steps of this run (max_steps_this_run).", steps_this_run)
                break
    except KeyboardInterrupt:
        # Ctrl-C: keep the work done so far, unless a loss not yet checked is non-finite; a restart resumes here.
        done = int(dp.unreplicate(state.step))
        finite = all(np.isfinite(dp.unreplicate(m["loss"])) for _, m in pending)
        if done > (last_saved or 0) and finite:
            checkpoints.save(done, dp.unreplicate(state), meta, None)
            last_saved = done
        log.warning(
            "Interrupted. Latest checkpoint: %s in %s; run the same command to resume.",
            "none" if last_saved is None else f"step {last_saved}",
            checkpoints.directory,
        )
        raise
    finally:
        progress.close()
        writer.close()
        checkpoints.wait()
        checkpoints.close()
    return scores or {}


def main(argv=None):
    """Entry point of `segjax-train`: --config=FILE[:ARG] --workdir=DIR [--config.KEY=VALUE ...]."""
    parser = cli.ArgumentParser(prog="segjax-train", description="Train (or resume) a segjax run.")
    parser.add_argument("--config", required=True, help=cli.CONFIG_HELP)
    parser.add_argument("--workdir", required=True, help="directory for checkpoints, logs and the resolved config")
    args, config = config_utils.parse_with_config(parser, argv)
    quiet_libraries()
    try:
        scores = train_and_evaluate(config, args.workdir)
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    except NonFiniteLossError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    if scores:
        print(f"final validation mIoU {scores['mean_iou']:.4f}")


if __name__ == "__main__":
    main()
