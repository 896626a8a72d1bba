"""The pieces of a run built from its config, shared by training and evaluation: model, specs, fresh state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from segjax import losses as losses_lib
from segjax import models as models_lib
from segjax import optim, parallel

# Run-once programs (the initial state) skip XLA's backend optimisations: on CPU, optimising the random
# initialisers and the optimizer's init takes far longer than running them (a tiny U-Net: ~40 s vs ~3 s to compile).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compute_dtype(config) -> jnp.dtype:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]


def build_model(config, num_classes: int):
    """The model of the config, with batch norm synchronised over the data-parallel axis."""
    return models_lib.create_model(config.model, num_classes, axis_name=parallel.AXIS, dtype=compute_dtype(config))


def optimizer_specs(config) -> tuple[optim.OptimizerSpec, optim.ScheduleSpec]:
    """The frozen specs of config.optimizer and config.schedule (validated; a ValueError names a bad key)."""
    return optim.OptimizerSpec.from_config(config.optimizer), optim.ScheduleSpec.from_config(config)


def loss_spec(config) -> losses_lib.LossSpec:
    """The frozen spec of config.loss (validated; class weights still to be resolved for 'median_frequency')."""
    return losses_lib.LossSpec.from_config(config.loss)


def initial_state(config, info, model) -> parallel.TrainState:
    """A fresh TrainState on the host (numpy), seeded by config.seed; `info` is the dataset's DatasetInfo.

    Built by one program compiled without XLA's backend optimisations, shared by every run whose model and
    optimizer are equal (only the seed is an argument); the unoptimised program is what every run starts from.
    """
    optimizer, schedule = optimizer_specs(config)
    key = jax.random.PRNGKey(config.seed)
    return jax.device_get(_fresh_state(model, optimizer, schedule, tuple(info.crop_size), key))


def _create_state(model, optimizer, schedule, crop_size, rng):
    tx, _ = optim.create_optimizer(optimizer, schedule)
    sample = jnp.zeros((1, *crop_size, 3), jnp.float32)  # the parameters do not depend on the image size
    return parallel.create_train_state(model, tx, rng, sample)


_fresh_state = jax.jit(_create_state, static_argnums=(0, 1, 2, 3), compiler_options=_FAST_COMPILE)


def abstract_state(config, info, model) -> parallel.TrainState:
    """Zeros shaped like a fresh TrainState, without running or compiling the initialisers: a restore target."""
    optimizer, schedule = optimizer_specs(config)
    shapes = jax.eval_shape(
        functools.partial(_create_state, model, optimizer, schedule, tuple(info.crop_size)),
        jax.random.PRNGKey(config.seed),
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def checkpoint_meta(config, num_classes: int) -> dict:
    """What a checkpoint records about its run besides the state (checked by segjax-eval)."""
    return {"num_classes": int(num_classes), "model": config.model.to_dict(), "dataset": config.data.name}
