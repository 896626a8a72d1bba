"""Checkpoints of a training run: an orbax CheckpointManager under `<workdir>/checkpoints`.

Each checkpoint holds two items: 'state' (the whole TrainState: step, params, batch statistics, optimizer state,
RNG, and with optimizer.ema_decay the moving average of the weights) and 'meta' (JSON: the step, num_classes, the
model config and the validation scores when there were any).
Kept: the last `keep` checkpoints plus the best one by validation mean IoU. Evaluation opens the same directory
read-only, which is safe while a training run is still writing to it (orbax only publishes finished steps).
No checkpoint holds a non-finite value: `save` refuses such a state (`all_finite`), so every kept checkpoint, the
best one included, is one a run can resume from and rotation can never leave only broken ones.
The directory may be on any backend orbax writes to (a local folder, gs://: orbax takes epath paths and writes the
arrays with tensorstore, whose drivers are the local file system and GCS; another epath scheme is refused by orbax).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from segjax.files import absolute, as_path, jsonable
from segjax.logging_utils import without_log_messages

BEST_METRIC = "mean_iou"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(absolute(workdir), "checkpoints")


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the config (user-fixable)."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read (cut short, missing metadata): the message names step and folder;
    `step` and `cause` ('<folder>: what is wrong') are kept for callers that fall back to an earlier step."""

    def __init__(self, message: str, step: int, cause: str):
        super().__init__(message)
        self.step, self.cause = step, cause


class CheckpointGoneError(CheckpointError):
    """A checkpoint removed while it was read (rotation by a running training): reading again picks another."""


class NonFiniteStateError(FloatingPointError):
    """A state with a NaN or an infinity was about to be saved (nothing was written)."""


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(tree) -> bool:
    """Whether every floating-point value of `tree` is finite: one fused reduction, compiled once per tree
    structure (a run checks the same structure at every save)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return not leaves or bool(_all_finite(leaves))


def non_finite_paths(tree, limit: int = 3) -> list[str]:
    """The first `limit` 'a/b/c' paths of `tree` that hold a non-finite value (for messages; slow, numpy)."""
    bad = []
    for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            bad.append("/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path))
    return sorted(bad)[:limit]


class Checkpointer:
    """Saves/restores TrainStates (host copies) with their metadata; tracks the best step by validation mIoU."""

    def __init__(self, workdir: str, *, keep: int = 3, read_only: bool = False):
        if keep < 1:
            raise ValueError(f"keep_checkpoints={keep} must be at least 1.")
        self.directory = checkpoint_dir(workdir)
        self.lock = None  # the workdir's lock (segjax.run.WorkdirLock) of a training run: released by `close`
        if read_only:
            options = ocp.CheckpointManagerOptions(
                read_only=True,
                save_interval_steps=0,  # what read_only implies; orbax warns when it has to set these itself
                create=False,
                best_fn=_best_metric,
                best_mode="max",
                enable_async_checkpointing=False,
            )
        else:
            policy = ocm.AnyPreservationPolicy(
                [
                    ocm.LatestN(n=keep),
                    ocm.BestN(get_metric_fn=_best_metric, reverse=False, n=1, keep_checkpoints_without_metrics=False),
                ]
            )
            options = ocp.CheckpointManagerOptions(
                preservation_policy=policy, best_fn=_best_metric, best_mode="max", create=True
            )
        with without_log_messages("Given directory is read only"):
            self._manager = self._listing(
                lambda: ocp.CheckpointManager(self.directory, options=options, handler_registry=_handler_registry())
            )

    # --- queries --------------------------------------------------------------------------------------------------
    def _listing(self, list_steps, attempts: int = 5):
        """list_steps() (an orbax call that lists the steps on disk), tried again when a training's rotation removed
        a step between orbax's listing and its reading of that step's timestamp (FileNotFoundError)."""
        for _ in range(attempts - 1):
            try:
                return list_steps()
            except FileNotFoundError:
                pass
        try:
            return list_steps()
        except FileNotFoundError:
            raise CheckpointError(
                f"The checkpoints in {self.directory} changed {attempts} times while they were listed; try again, "
                "or wait for the training to finish."
            ) from None

    def _reload(self) -> None:
        self._listing(self._manager.reload)

    def all_steps(self) -> list[int]:
        self._reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        self._reload()
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """Step with the highest validation mIoU among kept checkpoints (None if none was saved with scores)."""
        self._reload()
        steps_with_scores = [s for s in self._manager.all_steps() if self._manager.metrics(s) is not None]
        if not steps_with_scores:
            return None
        return self._manager.best_step()

    def resolve_step(self, step: str | int) -> int:
        """'latest' | 'best' | N -> an existing step, or CheckpointError naming what exists."""
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"No checkpoint found in {self.directory}; train first (segjax-train).")
        if step == "latest":
            return steps[-1]
        if step == "best":
            best = self.best_step()
            if best is None:
                raise CheckpointError(
                    f"No checkpoint in {self.directory} has validation scores, so there is no "
                    f"'best'; use --step=latest or one of {steps}."
                )
            return best
        try:
            value = int(step)
        except (TypeError, ValueError):
            raise CheckpointError(f"step={step!r} is not 'latest', 'best' or an integer.") from None
        if value not in steps:
            raise CheckpointError(f"No checkpoint for step {value} in {self.directory}; available steps: {steps}.")
        return value

    # --- save / restore -------------------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict, scores: dict | None = None) -> None:
        """Saves a host copy of `state` (asynchronously); `scores` (with 'mean_iou') make it eligible as best.
        NonFiniteStateError, nothing written, if the state holds a NaN or an infinity."""
        state_dict = flax.serialization.to_state_dict(state)
        if not all_finite(state_dict):
            raise NonFiniteStateError(
                f"The state of step {step} holds non-finite values ({', '.join(non_finite_paths(state_dict))})"
            )
        metrics = None if scores is None else {BEST_METRIC: float(scores[BEST_METRIC])}
        meta = dict(meta, step=int(step), scores=jsonable(scores))
        # A periodic checkpoint has no scores by design: orbax's notice about the missing metric says nothing.
        with without_log_messages("Requested `tracked_metric`; did not provide metrics"):
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state_dict),
                    meta=ocp.args.JsonSave(jsonable(meta)),
                ),
                metrics=metrics,
                force=True,
            )

    def restore_meta(self, step: int) -> dict:
        with self._reading(step, "meta"):
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict):
            raise self._damaged(step, "meta", "its metadata is not a JSON object")
        return meta

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restores (state shaped like `target`, meta); CheckpointError if the shapes do not match the config,
        DamagedCheckpointError / CheckpointGoneError if its files are damaged / were removed meanwhile."""
        meta = self.restore_meta(step)
        target_dict = flax.serialization.to_state_dict(jax.device_get(target))
        with self._reading(step, "state"):
            saved = self._manager.item_metadata(step)["state"]
        if not saved:
            raise self._damaged(step, "state", "state/_METADATA is missing or empty")
        _check_compatible(saved, target_dict, self.directory, step)
        with self._reading(step, "state"):
            args = ocp.args.Composite(state=ocp.args.StandardRestore(target_dict))
            restored = self._manager.restore(step, args=args)["state"]
        return flax.serialization.from_state_dict(target, restored), meta

    def restore_variables(self, step: int) -> tuple[dict, bool]:
        """The 'params' and 'batch_stats' inference applies (steps.inference_variables: the moving average where the
        run keeps one) as numpy trees, read without a target (any model's), and whether they are the average."""
        with self._reading(step, "state"):
            state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        source = state.get("ema") or state
        return {collection: source.get(collection) or {} for collection in ("params", "batch_stats")}, "ema" in state

    @contextlib.contextmanager
    def _reading(self, step: int, item: str):
        """Turns what orbax / tensorstore raise while reading `item` of `step` into one of our errors: the step was
        removed meanwhile (rotation by a running training) or its files are damaged."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as e:  # orbax and tensorstore raise many kinds (ValueError, FileNotFoundError, ...)
            if not (as_path(self.directory) / str(step)).is_dir():
                raise CheckpointGoneError(
                    f"The checkpoint of step {step} in {self.directory} was removed while it was read (a running "
                    "training rotates its checkpoints); run the command again."
                ) from None
            raise self._damaged(step, item, " ".join(str(e).split())[:300]) from None

    def _damaged(self, step: int, item: str, cause: str) -> DamagedCheckpointError:
        folder = os.path.join(self.directory, str(step), item)
        return DamagedCheckpointError(
            f"The checkpoint of step {step} is damaged ({folder}: {cause}); pick another --step (steps: "
            f"{self.all_steps()}), or remove {os.path.dirname(folder)} (--step=latest and a resume fall back to the "
            "step before by themselves).",
            step,
            f"{folder}: {cause}",
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """The two items of a checkpoint and their handlers, for saving and restoring."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, handler, save, restore in (
        ("state", ocp.StandardCheckpointHandler(), ocp.args.StandardSave, ocp.args.StandardRestore),
        ("meta", ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore),
    ):
        registry.add(item, save, handler)
        registry.add(item, restore, handler)
    return registry


def _best_metric(metrics: dict) -> float:
    return float(metrics[BEST_METRIC])


def _shapes(tree) -> dict:
    flat = flax.traverse_util.flatten_dict(tree, sep="/") if isinstance(tree, dict) else {}
    return {k: tuple(getattr(v, "shape", ())) for k, v in flat.items()}


def _check_compatible(saved_metadata, target: dict, directory: str, step: int) -> None:
    """Raises CheckpointError listing the first mismatching parameters (e.g. another num_classes or model)."""
    saved = _shapes(_as_dict(saved_metadata))
    wanted = _shapes(target)
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    changed = sorted(
        (k for k in set(saved) & set(wanted) if saved[k] != wanted[k]), key=lambda k: (not k.startswith("params"), k)
    )
    if not (missing or extra or changed):
        return
    lines = [
        f"The checkpoint {directory} step {step} does not match the model built from the config "
        f"(different model, num_classes or widths?)."
    ]
    for key in changed[:5]:
        lines.append(f"  {key}: checkpoint {saved[key]} vs config {wanted[key]}")
    if missing:
        lines.append(f"  missing in checkpoint: {', '.join(missing[:5])}")
    if extra:
        lines.append(f"  not in the config's model: {', '.join(extra[:5])}")
    if any(k.startswith("ema/") for k in missing + extra):
        lines.append("  (ema/: the moving average of the weights, kept with optimizer.ema_decay set, and only then)")
    lines.append("Use the config the run was trained with (the workdir's config.json).")
    raise CheckpointError("\n".join(lines))


def _as_dict(tree):
    if isinstance(tree, dict):
        return {k: _as_dict(v) for k, v in tree.items()}
    if hasattr(tree, "items"):
        return {k: _as_dict(v) for k, v in tree.items()}
    return tree
