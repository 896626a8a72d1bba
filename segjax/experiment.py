"""The pieces of a run built from its config, shared by training and evaluation: model, optimizer, fresh state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from segjax import models as models_lib
from segjax import optim, parallel

_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compute_dtype(config) -> jnp.dtype:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]


def build_model(config, num_classes: int):
    """The model of the config, with batch norm synchronised over the data-parallel axis."""
    return models_lib.create_model(config.model, num_classes, axis_name=parallel.AXIS, dtype=compute_dtype(config))


def build_optimizer(config):
    """(optax transformation, learning-rate schedule) of config.optimizer / config.schedule."""
    return optim.create_optimizer(config.optimizer, config.schedule, config.num_train_steps)


def initial_state(config, info, model, tx) -> parallel.TrainState:
    """A fresh TrainState on the host (numpy), seeded by config.seed; `info` is the dataset's DatasetInfo.

    Built by one program compiled without XLA's backend optimisations: on CPU, optimising the random
    initialisers and the optimizer's init takes far longer than running them (a tiny U-Net: ~40 s vs ~3 s to
    compile), and the unoptimised program is what every run, resumed or not, starts from.
    """
    sample = np.zeros((1, *info.crop_size, 3), np.float32)  # the parameters do not depend on the image size
    key = jax.random.PRNGKey(config.seed)
    make = jax.jit(lambda rng: parallel.create_train_state(model, tx, rng, sample))
    return jax.device_get(make.lower(key).compile(compiler_options=_FAST_COMPILE)(key))


def abstract_state(config, info, model, tx) -> parallel.TrainState:
    """Zeros shaped like a fresh TrainState, without running or compiling the initialisers: a restore target."""
    shapes = jax.eval_shape(
        lambda: parallel.create_train_state(
            model, tx, jax.random.PRNGKey(config.seed), jnp.zeros((1, *info.crop_size, 3), jnp.float32)
        )
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def checkpoint_meta(config, num_classes: int) -> dict:
    """What a checkpoint records about its run besides the state (checked by segjax-eval)."""
    return {"num_classes": int(num_classes), "model": config.model.to_dict(), "dataset": config.data.name}
