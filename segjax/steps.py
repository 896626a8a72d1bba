"""The per-device steps: one training update, the evaluation statistics and the predictions of a batch.

Each sees one device's slice of the global batch and talks to the other devices only through collectives over
`axis_name` (`psum` of gradients, losses and metric statistics; batch norm averages its statistics over the same
axis inside the model). They are frozen, hashable dataclasses built from specs, not configs: equal settings give
equal steps, which `segjax.parallel.DataParallel.wrap` compiles once. With `axis_name=None` the same steps run on
one device under plain `jit`; wrapped or not they give the same numbers (up to float summation order) because
`segjax.losses.compute_loss` returns per-device shares of the global loss.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from segjax import losses as losses_lib
from segjax import metrics as metrics_lib
from segjax import optim


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue: saved whole in checkpoints."""

    step: jax.Array  # int32 scalar: number of updates applied so far
    params: Any
    batch_stats: Any  # {} for models without batch norm
    opt_state: Any
    rng: jax.Array  # uint32[2] base key; per-step keys are derived from (rng, step), so resuming is exact


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array, sample_images) -> TrainState:
    """Initialises parameters from `sample_images` (any batch, only its shape matters) and the optimizer state."""
    init_rng, state_rng = jax.random.split(rng)
    variables = _jitted_init(model)(init_rng, jnp.asarray(sample_images))
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params), rng=state_rng
    )


@functools.lru_cache(maxsize=8)
def _jitted_init(model):
    """model.init in inference mode, compiled once per (equal) model."""
    return jax.jit(functools.partial(model.init, train=False))


def _psum(tree, axis_name):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def _variables(state: TrainState) -> dict:
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


def _ignore_invalid(labels, valid, ignore_index):
    """Labels of padding examples (valid=False) become ignore_index, so they count nowhere."""
    if valid is None:
        return labels
    return jnp.where(valid[:, None, None], labels, ignore_index)


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """One update on this device's slice of the batch; gradients and statistics summed over `axis_name`.

    Frozen and hashable, built from specs rather than the config: two runs with equal settings (differing only in
    their seed, say) build equal steps, which `DataParallel.wrap` compiles once. Calling it returns the new state
    and metrics for the global batch: `loss`, `grad_norm`, `confusion` (C, C) int32.
    """

    model: Any  # a flax linen Module (hashable)
    loss: losses_lib.LossSpec  # class weights resolved (`LossSpec.with_class_weights`)
    optimizer: optim.OptimizerSpec
    schedule: optim.ScheduleSpec
    num_classes: int
    ignore_index: int

    def __call__(self, state: TrainState, batch: dict, *, axis_name: str | None = None) -> tuple[TrainState, dict]:
        tx, _ = optim.create_optimizer(self.optimizer, self.schedule)
        step_rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
        images, labels = batch["image"], batch["label"]

        def loss_fn(params):
            variables = _variables(state.replace(params=params))
            logits, new_variables = self.model.apply(
                variables, images, train=True, rngs={"dropout": step_rng}, mutable=["batch_stats"]
            )
            loss = losses_lib.compute_loss(
                logits.astype(jnp.float32), labels, self.loss, ignore_index=self.ignore_index, axis_name=axis_name
            )
            return loss, (logits, new_variables)

        (loss, (logits, new_variables)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        # Per-device losses/gradients are shares of the global ones (see segjax.losses): their sum is the global value.
        loss, grads = _psum((loss, grads), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            batch_stats=new_variables.get("batch_stats", state.batch_stats),
        )
        confusion = metrics_lib.confusion_matrix(
            labels, jnp.argmax(logits, axis=-1), self.num_classes, ignore_index=self.ignore_index
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "confusion": _psum(confusion, axis_name)}
        return new_state, metrics


@dataclasses.dataclass(frozen=True)
class EvalStep:
    """Metric statistics of one batch (padding examples excluded), summed over `axis_name`; hashable.

    Returns `confusion` (C, C) int32, plus the boundary-F1 statistics of segjax.metrics when `boundary_tolerance`
    is set.
    """

    model: Any
    num_classes: int
    ignore_index: int
    boundary_tolerance: int | None = None

    def __call__(self, state: TrainState, batch: dict, *, axis_name: str | None = None) -> dict:
        logits = self.model.apply(_variables(state), batch["image"], train=False)
        predictions = jnp.argmax(logits, axis=-1)
        labels = _ignore_invalid(batch["label"], batch.get("valid"), self.ignore_index)
        stats = {
            "confusion": metrics_lib.confusion_matrix(
                labels, predictions, self.num_classes, ignore_index=self.ignore_index
            )
        }
        if self.boundary_tolerance is not None:
            stats["boundary"] = metrics_lib.boundary_statistics(
                labels, predictions, self.num_classes, tolerance=self.boundary_tolerance, ignore_index=self.ignore_index
            )
        return _psum(stats, axis_name)


@dataclasses.dataclass(frozen=True)
class PredictStep:
    """Per-pixel class predictions (N, H, W) int32 for this device's examples; hashable."""

    model: Any

    def __call__(self, state: TrainState, batch: dict, *, axis_name: str | None = None) -> jax.Array:
        logits = self.model.apply(_variables(state), batch["image"], train=False)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
