"""Data-parallel training and evaluation: one per-device step, wrapped for `pmap` or for `jit` over a device mesh.

The per-device steps (`TrainStep`, `EvalStep`, `PredictStep`: frozen, hashable) see one device's slice of the
global batch and talk to the other devices only through collectives over `AXIS` (`psum` of gradients, losses and
metric statistics; batch norm averages its statistics over the same axis inside the model). `DataParallel` lays out
state and batches and wraps these steps in one of two ways, chosen by `config.parallelism`:

- 'pmap': `jax.pmap` over the local devices; the state is replicated with a leading device axis.
- 'sharded': `jax.jit` of `jax.shard_map` over a 1-D `Mesh`; the state is a replicated `NamedSharding`, batches
  are split along their first dimension with `NamedSharding(mesh, P(AXIS))`.

With `axis_name=None` the same functions run on one device under plain `jit`; all three give the same numbers
(up to float summation order) because `segjax.losses.compute_loss` returns per-device shares of the global loss.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from segjax import losses as losses_lib
from segjax import metrics as metrics_lib
from segjax import optim

AXIS = "batch"
PARALLELISMS = ("pmap", "sharded")
_MAX_WRAPPED = 16  # wrapped (compiled) steps a DataParallel keeps for reuse


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


class DataParallel:
    """Lays out state and batches over the local devices and wraps per-device functions ('pmap' or 'sharded')."""

    def __init__(self, parallelism: str = "pmap", num_devices: int | None = None):
        if parallelism not in PARALLELISMS:
            raise ValueError(f"Unknown parallelism {parallelism!r}; valid choices: {', '.join(PARALLELISMS)}.")
        devices = jax.local_devices()
        if num_devices is not None:
            if not 1 <= num_devices <= len(devices):
                raise ValueError(
                    f"num_devices={num_devices} but {len(devices)} local devices are available; "
                    f"use a value from 1 to {len(devices)} (or None for all)."
                )
            devices = devices[:num_devices]
        self.parallelism = parallelism
        self.devices = devices
        self.num_devices = len(devices)
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._split = NamedSharding(self.mesh, P(AXIS))
        self._wrapped = collections.OrderedDict()  # (fn, options) -> wrapped fn, the most recently used last

    def check_batch_size(self, batch_size: int, what: str = "batch_size") -> None:
        if batch_size % self.num_devices:
            raise ValueError(
                f"{what}={batch_size} is not divisible by the {self.num_devices} devices in use; "
                f"use a multiple of {self.num_devices} or set num_devices."
            )

    # --- layout -------------------------------------------------------------------------------------------------
    def replicate(self, tree):
        """Host (or single-device) pytree -> the layout the wrapped functions take."""
        if self.parallelism == "pmap":
            n = self.num_devices
            stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), tree)
            return jax.device_put(stacked, self._split)
        return jax.device_put(tree, self._replicated)

    def unreplicate(self, tree):
        """Replicated pytree -> one copy on the host (numpy), e.g. for checkpoints and logging."""
        if self.parallelism == "pmap":
            tree = jax.tree.map(lambda x: x[0], tree)
        return jax.device_get(tree)

    def shard_batch(self, batch: dict):
        """Host batch with leading dimension B -> split over the devices (B must divide evenly)."""
        self.check_batch_size(len(next(iter(batch.values()))))
        if self.parallelism == "pmap":
            n = self.num_devices
            batch = jax.tree.map(lambda x: np.reshape(x, (n, x.shape[0] // n) + x.shape[1:]), batch)
        return jax.device_put(batch, self._split)

    def gather_examples(self, tree):
        """Per-example outputs of a `wrap(..., per_example=True)` function -> host arrays with leading dim B."""
        tree = jax.device_get(tree)
        if self.parallelism == "pmap":
            tree = jax.tree.map(lambda x: np.reshape(x, (-1,) + x.shape[2:]), tree)
        return tree

    # --- wrapping -----------------------------------------------------------------------------------------------
    def wrap(
        self, fn: Callable, *, returns_state: bool = False, per_example: bool = False, donate_state: bool = False
    ) -> Callable:
        """Wraps fn(state, batch, axis_name=AXIS) -> outputs for the chosen parallelism.

        Outputs are summed over devices inside fn (replicated), or per example when `per_example` (then only the
        outputs, not a state, are returned). `returns_state`: fn returns (state, outputs); the state stays
        replicated. Wrapping an equal `fn` again (a hashable step such as `TrainStep`) returns the same wrapped
        function, whose compilation is then reused: this is how runs that differ only in their seed share one.
        """
        key = (fn, returns_state, per_example, donate_state)
        if key in self._wrapped:
            self._wrapped.move_to_end(key)
        else:
            self._wrapped[key] = self._wrap(fn, returns_state, per_example, donate_state)
            if len(self._wrapped) > _MAX_WRAPPED:
                self._wrapped.popitem(last=False)
        return self._wrapped[key]

    def _wrap(self, fn: Callable, returns_state: bool, per_example: bool, donate_state: bool) -> Callable:
        fn = functools.partial(fn, axis_name=AXIS)
        donate = (0,) if donate_state else ()
        if self.parallelism == "pmap":
            return jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=donate)
        out = P(AXIS) if per_example else P()
        out_specs = (P(), out) if returns_state else out
        # check_vma=False: with it, JAX would psum the gradients of replicated parameters implicitly (the transpose
        # of its automatic pvary), so the explicit psum in TrainStep would count them num_devices times. Without
        # it shard_map behaves like pmap: every collective is the one written in the per-device function.
        mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=out_specs, check_vma=False)
        return jax.jit(mapped, donate_argnums=donate)


@functools.cache
def data_parallel(parallelism: str = "pmap", num_devices: int | None = None) -> DataParallel:
    """The process's one `DataParallel` for these settings: runs with equal settings share its wrapped steps."""
    return DataParallel(parallelism, num_devices)
