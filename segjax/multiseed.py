"""Several seeds of one run as one program: `train_seeds(configs, workdirs)`, for accelerators.

Each seed's run is what `segjax.train.train_and_evaluate(config, workdir)` does with that seed's config: the same
fresh state (`Task.fresh_state`, seeded by its seed) or the same resumed checkpoint, the same data order (its own
loader, seeded by its seed), the same per-step keys (from its own state's RNG) and the same records in its own
workdir (config.json, metrics.jsonl, TensorBoard, checkpoints and their validation scores), so that the sweep's
report and segjax-eval read it as a sequential run. Only the training step differs: one program applies the step
of every seed at once (`SeedsStep`: `jax.vmap` over the seeds inside the data-parallel wrapping), so an accelerator
runs K small models as one wide one. The numbers equal K sequential runs up to float32 summation order
(tests/test_multiseed.py). Validation runs seed by seed with the sequential runs' compiled evaluation step.

Off by default (the sweep runner's --seeds-per-program 1): on CPU, XLA lowers the vmapped convolutions to grouped
convolutions, which ran 2.3x slower than the same seeds one after another on an Intel Xeon (issue 25).
A seed whose loss becomes non-finite stops the whole program (each seed keeps its last finite checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from segjax import checkpoint as checkpoint_lib
from segjax import data as data_lib
from segjax import run as run_lib
from segjax import steps
from segjax.files import as_path
from segjax.logging_utils import Progress
from segjax.task import Task
from segjax.train import Interrupted, RunRecords, StopSignals, train_batch

log = logging.getLogger("segjax.multiseed")

SEED_AXIS = 1  # of a program's batch arrays (B, K, ...): axis 0 stays the examples the data-parallel layout splits


@dataclasses.dataclass(frozen=True)
class SeedsStep:
    """`step` (a `steps.TrainStep`) applied to K seeds at once: every leaf of the state stacked along a leading
    seed axis, every batch array (B, K, ...). Frozen and hashable like the step it wraps, so equal programs share
    their compilation (`DataParallel.wrap`); each seed's update sees only its own state and examples, and the
    collectives over `axis_name` stay per seed."""

    step: Any

    def __call__(self, state, batch: dict, *, axis_name: str | None = None):
        return jax.vmap(functools.partial(self.step, axis_name=axis_name), in_axes=(0, SEED_AXIS))(state, batch)


def stack(trees: Sequence) -> Any:
    """Host pytrees of equal structure -> one with a leading seed axis."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *trees)


def unstack(tree, index: int) -> Any:
    """Seed `index` of a stacked host pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def check_seeds(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> None:
    """ValueError naming the fix unless the configs can share one program: one or more, in one process, equal but
    for distinct seeds, in distinct workdirs, and not started from other runs (model.init_from)."""
    if not configs or len(configs) != len(workdirs):
        raise ValueError(f"{len(configs)} configs for {len(workdirs)} workdirs: pass one workdir per seed.")
    if jax.process_count() > 1:
        raise ValueError(
            f"Several seeds in one program run in one process; this run has {jax.process_count()} processes: train "
            "the seeds one by one (--seeds-per-program 1)."
        )
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"The seeds of one program must differ, got {seeds}.")
    if len({os.path.abspath(w) for w in workdirs}) != len(workdirs):
        raise ValueError(f"The seeds of one program need one workdir each, got {list(workdirs)}.")
    first = _without_seed(configs[0])
    for config in configs[1:]:
        changed = run_lib.diff(first, _without_seed(config))
        if changed:
            raise ValueError(
                f"The runs of one program may differ only in their seed; seed {config.seed} also changes "
                f"{'; '.join(changed)}: train different arms in different programs."
            )
    if configs[0].model.get("init_from"):
        raise ValueError(
            f"model.init_from={configs[0].model.init_from!r}: a run that starts from another run's weights is trained "
            "one seed at a time (--seeds-per-program 1)."
        )


def _without_seed(config: ml_collections.ConfigDict) -> dict:
    values = config.to_dict()
    values.pop("seed", None)
    return values


def resume_step(workdir: str | os.PathLike) -> int:
    """The step a training in `workdir` resumes from: its latest checkpoint's, 0 without one."""
    if not as_path(checkpoint_lib.checkpoint_dir(str(workdir))).is_dir():
        return 0
    reader = checkpoint_lib.Checkpointer(str(workdir), read_only=True)
    try:
        return reader.latest_step() or 0
    finally:
        reader.close()


def train_seeds(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> list[dict]:
    """Trains (or resumes) the runs of `configs` (equal but for their seed; `check_seeds`) in `workdirs` as one
    program; returns each run's last validation scores, as `train_and_evaluate` would. Every run must resume
    from the same step (a fresh start, or checkpoints saved by the same program)."""
    check_seeds(configs, workdirs)
    workdirs = [run_lib.check_workdir(w) for w in workdirs]
    starts = [resume_step(w) for w in workdirs]
    if len(set(starts)) > 1:
        raise ValueError(
            f"The runs of one program must resume from the same step; their checkpoints are at steps {starts} "
            f"({', '.join(workdirs)}): train them one by one (--seeds-per-program 1)."
        )
    tasks = [Task(c, w) for c, w in zip(configs, workdirs, strict=True)]  # every refusal before anything is written
    task, config = tasks[0], configs[0]
    dp = task.layout
    dp.check_batch_size(config.batch_size, "batch_size")
    loss_spec = task.loss_with_class_weights()  # counts of every training pixel: the same for every seed
    with contextlib.ExitStack() as closing:  # every run opened is closed (its pending saves done, its lock released)
        opened = []  # (checkpoints, host state, scores) of each run
        for t in tasks:
            checkpoints, host_state, scores = run_lib.start_training(t, primary=True)
            closing.callback(checkpoints.close)
            closing.callback(checkpoints.wait)  # first: callbacks run last in, first out
            opened.append((checkpoints, host_state, scores))
        return _train(tasks, opened, loss_spec, closing)


def _train(tasks: list[Task], opened: list, loss_spec, closing: contextlib.ExitStack) -> list[dict]:
    """The loop of `train_seeds` over the opened runs [(checkpoints, host state, scores)]."""
    task, config, dp = tasks[0], tasks[0].config, tasks[0].layout
    start_step, num_steps = int(opened[0][1].step), config.num_train_steps
    if start_step >= num_steps:
        log.info("Step %d >= num_train_steps=%d: nothing to train.", start_step, num_steps)
        return [scores or {} for _, _, scores in opened]
    if any(int(s.step) != start_step for _, s, _ in opened):
        raise ValueError(
            f"The runs of one program resumed from different steps ({[int(s.step) for _, s, _ in opened]}; a damaged "
            "checkpoint was passed over): train them one by one (--seeds-per-program 1)."
        )
    seeds = [t.config.seed for t in tasks]
    log.info(
        "Seeds %s of one run in one program (%s); global batch %d per seed; steps %d -> %d",
        seeds,
        task.info.name,
        config.batch_size,
        start_step,
        num_steps,
    )
    if jax.default_backend() == "cpu":
        log.warning(
            "Several seeds in one program on CPU: XLA runs the vmapped convolutions as grouped convolutions, measured "
            "2.3x slower than the seeds one after another (issue 25)."
        )
    step = steps.TrainStep(task.model, loss_spec, task.optimizer, task.schedule, task.num_classes, task.ignore_index)
    program = dp.wrap(SeedsStep(step), returns_state=True, donate_state=True)
    state = dp.replicate(stack([s for _, s, _ in opened]))
    loaders = [
        data_lib.make_loader(
            t.data,
            t.info.train_split,
            global_batch_size=config.batch_size,
            train=True,
            seed=t.config.seed,
            start_step=start_step,
        )
        for t in tasks
    ]
    # images/s: each seed's (the program handles len(seeds) times as many)
    progress = Progress(start_step, num_steps, config.batch_size, enabled=config.progress_bar)
    closing.callback(progress.close)
    records = []
    for t, (checkpoints, _, scores) in zip(tasks, opened, strict=True):
        records.append(RunRecords(t, checkpoints, progress, primary=True, label=f"seed {t.config.seed}: "))
        records[-1].scores = scores
        closing.callback(records[-1].writer.close)
    pending = []  # (step, device metrics stacked over the seeds) not yet fetched and checked
    with StopSignals() as stops:
        for step in range(start_step + 1, num_steps + 1):
            batches = [train_batch(next(loader)) for loader in loaders]
            batch = {key: np.stack([b[key] for b in batches], axis=SEED_AXIS) for key in batches[0]}
            state, metrics = program(state, dp.shard_batch(batch))
            pending.append((step, metrics))
            last = step == num_steps
            validate_now = step % config.eval_every_steps == 0 or last
            signum = stops.received()
            save_now = validate_now or step % config.checkpoint_every_steps == 0 or bool(signum)
            if not (step % config.log_every_steps == 0 or save_now):
                continue

            fetched = [(s, dp.unreplicate(m)) for s, m in pending]
            pending = []
            per_seed = [[(s, unstack(m, k)) for s, m in fetched] for k in range(len(seeds))]
            losses = [r.check(f) for r, f in zip(records, per_seed, strict=True)]  # all checked before a write
            images_per_second = progress.update(step, loss=float(np.mean(losses)))
            for r, f, loss in zip(records, per_seed, losses, strict=True):
                r.write_train(step, f, loss, images_per_second)
            if save_now:
                host = dp.unreplicate(state)
                for k, r in enumerate(records):
                    if validate_now:
                        r.validate(step, dp.replicate(unstack(host, k)))
                    r.save(step, unstack(host, k), r.scores if validate_now else None)
            for r in records:
                r.flush()
            progress.reset_clock()
            if signum and not last:
                raise Interrupted(
                    signum,
                    f"Stopped by {signal.Signals(signum).name} after step {step}, saved as a checkpoint of each "
                    f"seed ({', '.join(t.workdir for t in tasks)}); run the same command to resume.",
                )
    return [r.scores or {} for r in records]
