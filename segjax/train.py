"""Training: `train_and_evaluate(config, workdir)` and the `segjax-train` command line.

  segjax-train --config=configs/unet.py:small --workdir=runs/unet --config.model.upsample.method=resize_conv

Read top to bottom: the task (dataset, model, specs, layout) -> state (fresh, or restored from the workdir's latest
checkpoint) -> data from the restored step -> loop (step, log, validate, checkpoint) -> final validation.
In a multi-process run (segjax.distributed) every process runs this loop on its share of each global batch and
takes part in every checkpoint; process 0 alone writes the config copy, metrics, TensorBoard and progress.
Running again with the same workdir resumes and ends with the same numbers as an uninterrupted run: the state
holds the RNG, per-step keys are derived from (rng, step), and the data loader restarts at the restored step.
SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C) finish the current step, save a checkpoint, flush the metrics
and exit with status 143 / 130 and a message; no checkpoint holding a non-finite value is ever written.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import jax
import ml_collections
import numpy as np

from segjax import checkpoint as checkpoint_lib
from segjax import cli, distributed
from segjax import config as config_lib
from segjax import data as data_lib
from segjax import metrics as metrics_lib
from segjax import run as run_lib
from segjax.distributed import is_primary
from segjax.evaluate import evaluate_split
from segjax.logging_utils import MetricWriter, Progress, per_class_scalars, quiet_libraries
from segjax.task import Task

log = logging.getLogger("segjax.train")


class NonFiniteLossError(FloatingPointError):
    """The training loss or state became NaN or infinite; the message names the step and the last good checkpoint."""


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the run after a checkpoint was saved; `exit_status` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopSignals:
    """Within the block, SIGTERM and SIGINT set `signum` instead of ending the process, so the loop can finish its
    step and save; a second signal acts as usual (the handlers before the block are back after the first one).
    Installs nothing outside the main thread (Python delivers signals there only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        self._restore()

    def _restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()

    def received(self) -> int:
        """The signal number any process received (0: none); every process of a run must stop at the same step,
        since saving a checkpoint is collective (so in a multi-process run this is a collective: call it at the
        same steps on every process)."""
        if jax.process_count() == 1:
            return self.signum
        counts = distributed.sum_over_processes(np.array([self.signum == s for s in self.SIGNALS], np.int32))
        return next((int(s) for s, n in zip(self.SIGNALS, counts, strict=True) if n), 0)


def train_batch(batch: dict) -> dict:
    """What the train step takes of a loader batch."""
    return {"image": batch["image"], "label": batch["label"]}


class RunRecords:
    """What one run writes while it trains: its train and validation records (metrics.jsonl, TensorBoard), its
    checkpoints and its progress messages. Kept apart from the loop so that a program that trains several seeds at
    once (`segjax.multiseed`) writes each seed's workdir as that seed's own training would.

    `checkpoints` is the run's open Checkpointer (`segjax.run.start_training`); `label` prefixes the progress
    messages ('seed 3: ', where one bar shows several runs)."""

    def __init__(self, task: Task, checkpoints, progress: Progress, *, primary: bool, label: str = ""):
        self.task, self.checkpoints, self.progress, self.label = task, checkpoints, progress, label
        self.writer = MetricWriter(task.workdir, enabled=primary)
        self.primary = primary
        self.last_saved = checkpoints.latest_step()
        self.scores = None
        self._meta = task.checkpoint_meta()
        self._schedule = task.learning_rate()
        self._confusion = np.zeros((task.num_classes, task.num_classes), np.int64)

    def check(self, fetched: list) -> float:
        """The mean loss of the fetched (step, host metrics) since the last check, their confusion counted; a
        NonFiniteLossError (before anything of them is written) if a loss is not finite."""
        for s, m in fetched:
            if not np.isfinite(m["loss"]):
                raise NonFiniteLossError(
                    f"The training loss became {float(m['loss'])} at step {s}. Training stopped; the last good "
                    f"checkpoint is step {self.last_saved} in {self.checkpoints.directory} (nothing after it was "
                    "saved). Lower optimizer.learning_rate, set optimizer.grad_clip_norm, or check the labels "
                    f"(values must be < {self.task.num_classes} or the ignore index {self.task.ignore_index})."
                )
            self._confusion += m["confusion"]
        return float(np.mean([m["loss"] for _, m in fetched]))

    def write_train(self, step: int, fetched: list, loss: float, images_per_second: float) -> None:
        """The train record of `step`: `loss` (`check`), the last step's gradient norm, the scores of the
        predictions since the last record."""
        scores = metrics_lib.compute_scores(self._confusion)
        self.writer.write(
            step,
            "train",
            {
                "loss": loss,
                "grad_norm": float(fetched[-1][1]["grad_norm"]),
                "learning_rate": float(self._schedule(step - 1)),
                "images_per_second": images_per_second,
                "mean_iou": scores["mean_iou"],
                "pixel_accuracy": scores["pixel_accuracy"],
            },
        )
        self._confusion[:] = 0

    def validate(self, step: int, state) -> dict:
        """Scores of `state` (laid out by the task's layout) on the evaluation split, written and shown."""
        task, info = self.task, self.task.info
        self.scores = evaluate_split(task, state, info.eval_split)
        self.writer.write(step, info.eval_split, {**self.scores, **per_class_scalars(self.scores, info.class_names)})
        if self.primary:
            s = self.scores
            self.progress.write(
                f"{self.label}step {step}: {info.eval_split} mIoU {s['mean_iou']:.4f}, "
                f"pixel accuracy {s['pixel_accuracy']:.4f}, boundary F1 {s['boundary_f1']:.4f}"
                + (f" ({task.inference_weights})" if task.optimizer.ema_decay else "")
            )
        return self.scores

    def save(self, step: int, host_state, scores: dict | None) -> None:
        """A checkpoint of `step`, unless the state is non-finite: then the run stops with the last finite one."""
        try:
            self.checkpoints.save(step, host_state, self._meta, scores)
        except checkpoint_lib.NonFiniteStateError as e:
            raise NonFiniteLossError(
                f"{e}. Training stopped; the last finite checkpoint is step {self.last_saved} in "
                f"{self.checkpoints.directory} (nothing non-finite was saved). Lower optimizer.learning_rate or set "
                "optimizer.grad_clip_norm."
            ) from None
        self.last_saved = step

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Closes the writer and the checkpoints (after the pending saves)."""
        try:
            self.writer.close()
        finally:
            self.checkpoints.wait()
            self.checkpoints.close()


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, max_steps_this_run: int | None = None
) -> dict:
    """Trains (or resumes) the run in `workdir` to config.num_train_steps; returns the last validation scores.

    max_steps_this_run: stop after this many steps of this invocation without a final save, as a crash would
    (tests and preemption drills); the next call resumes from the latest checkpoint.
    """
    workdir = run_lib.check_workdir(workdir)  # not empty (the current folder), not a file
    task = Task(config, workdir)  # checks everything a bad config breaks before anything is written
    info, dp, num_classes = task.info, task.layout, task.num_classes
    dp.check_batch_size(config.batch_size, "batch_size")
    primary = is_primary()  # process 0 writes the config, logs, metrics and progress; every process checkpoints
    loss_spec = task.loss_with_class_weights()  # a bad class weighting is refused before anything is written
    checkpoints, host_state, scores = run_lib.start_training(task, primary=primary)
    if not primary:
        print(
            f"segjax-train: process {jax.process_index()} of {jax.process_count()} joined; process 0 writes the "
            "logs, metrics and reports.",
            file=sys.stderr,
        )
    start_step = int(host_state.step)
    num_steps = config.num_train_steps
    if start_step >= num_steps:
        log.info("Step %d >= num_train_steps=%d: nothing to train.", start_step, num_steps)
        checkpoints.close()
        return scores or {}

    log.info(
        "%s: %d classes; %d devices of %d process(es) (%s); global batch %d; steps %d -> %d",
        info.name,
        num_classes,
        dp.num_devices,
        jax.process_count(),
        dp.parallelism,
        config.batch_size,
        start_step,
        num_steps,
    )
    if task.optimizer.ema_decay:
        log.info("Validation uses the %s, as segjax-eval will.", task.inference_weights)
    train_step = task.train_step(loss_spec)  # equal steps of earlier runs: compiled once
    state = dp.replicate(host_state)
    loader = data_lib.make_loader(
        task.data,
        info.train_split,
        global_batch_size=config.batch_size,
        train=True,
        seed=config.seed,
        start_step=start_step,
    )

    progress = Progress(start_step, num_steps, config.batch_size, enabled=config.progress_bar and primary)
    records = RunRecords(task, checkpoints, progress, primary=primary)
    records.scores = scores
    pending = []  # (step, device metrics) not yet fetched and checked
    steps_this_run = 0

    stops = StopSignals()
    try:
        with stops:
            for step in range(start_step + 1, num_steps + 1):  # `step` = number of updates once this one is applied
                state, metrics = train_step(state, dp.shard_batch(train_batch(next(loader))))
                pending.append((step, metrics))
                steps_this_run += 1
                last = step == num_steps
                validate_now = step % config.eval_every_steps == 0 or last
                save_now = validate_now or step % config.checkpoint_every_steps == 0
                stop_now = max_steps_this_run is not None and steps_this_run >= max_steps_this_run
                check_now = step % config.log_every_steps == 0 or save_now or stop_now
                # One process looks at its flag every step; processes agree (a collective) at check steps only.
                signum = stops.received() if check_now or jax.process_count() == 1 else 0
                save_now = save_now or bool(signum)
                if not (check_now or signum):
                    continue

                # Fetch the metrics of the steps since the last check; stop before saving a non-finite state.
                fetched = [(s, dp.unreplicate(m)) for s, m in pending]
                pending = []
                loss = records.check(fetched)
                records.write_train(step, fetched, loss, progress.update(step, loss=loss))
                if validate_now:
                    records.validate(step, state)
                if save_now:
                    records.save(step, dp.unreplicate(state), records.scores if validate_now else None)
                records.flush()
                progress.reset_clock()
                if signum and not last:
                    raise Interrupted(
                        signum,
                        f"Stopped by {signal.Signals(signum).name} after step {step}, saved as a checkpoint in "
                        f"{checkpoints.directory}; run the same command to resume.",
                    )
                if stop_now and not last:
                    log.info("Stopping after %d steps of this run (max_steps_this_run).", steps_this_run)
                    break
    except KeyboardInterrupt:
        # Ctrl-C outside the signal handling (another thread's loop, a test): keep the work done so far unless a
        # loss not yet checked is non-finite (a non-finite state is refused by `save`); a restart resumes here.
        done = int(dp.unreplicate(state.step))
        finite = all(np.isfinite(dp.unreplicate(m["loss"])) for _, m in pending)
        if done > (records.last_saved or 0) and finite:
            records.save(done, dp.unreplicate(state), None)
        log.warning(
            "Interrupted. Latest checkpoint: %s in %s; run the same command to resume.",
            "none" if records.last_saved is None else f"step {records.last_saved}",
            checkpoints.directory,
        )
        raise
    finally:
        progress.close()
        records.close()
    return records.scores or {}


def main(argv=None):
    """Entry point of `segjax-train`: --config=FILE[:ARG] --workdir=DIR [--config.KEY=VALUE ...]."""
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = cli.ArgumentParser(prog="segjax-train", description="Train (or resume) a segjax run.")
    parser.add_argument("--config", required=True, help=cli.CONFIG_HELP)
    parser.add_argument("--workdir", required=True, help="directory for checkpoints, logs and the resolved config")
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        help="stop after this many steps of this invocation, without a final save, as a preemption would "
        "(drills and tests); the same command resumes from the latest checkpoint",
    )
    args, config = config_lib.parse_with_config(parser, argv)
    quiet_libraries()
    try:
        distributed.initialize()  # joins a multi-process run when the environment describes one
        scores = train_and_evaluate(config, args.workdir, max_steps_this_run=args.stop_after_steps)
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    except NonFiniteLossError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        sys.exit(e.exit_status)
    except KeyboardInterrupt:
        print(
            f"{parser.prog}: interrupted; run the same command to resume from the latest checkpoint.", file=sys.stderr
        )
        sys.exit(130)
    if scores and is_primary():
        print(f"final validation mIoU {scores['mean_iou']:.4f}")


if __name__ == "__main__":
    main()
