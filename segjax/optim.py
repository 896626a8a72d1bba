"""Optimizers and learning-rate schedules built from the config (optax).

`config.optimizer` chooses the update rule, `config.schedule` the learning-rate curve; both are documented key by
key in docs/config_reference.md. Weight decay never applies to biases or normalisation scales/offsets (any
parameter with fewer than two dimensions), as is standard for convolutional networks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "poly", "warmup_cosine")


def _check_choice(kind: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {kind} {value!r}; valid choices: {', '.join(valid)}.")


def create_schedule(schedule_config, learning_rate: float, num_train_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step: optional linear warmup, then the named decay.

    Warmup rises linearly from lr / warmup_steps (update 0) to lr (update warmup_steps).

    'constant': flat after warmup. 'poly': lr * (1 - t/T)^power down to end_learning_rate_factor * lr (FCN/DeepLab).
    'warmup_cosine': cosine from lr to end_learning_rate_factor * lr.
    """
    name = schedule_config.name
    _check_choice("schedule", name, SCHEDULES)
    warmup = int(schedule_config.warmup_steps)
    if warmup < 0 or warmup >= max(num_train_steps, 1):
        raise ValueError(
            f"schedule.warmup_steps={warmup} must be >= 0 and smaller than num_train_steps={num_train_steps}."
        )
    end_value = learning_rate * float(schedule_config.end_learning_rate_factor)
    decay_steps = max(num_train_steps - warmup, 1)
    if name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif name == "poly":
        main = optax.polynomial_schedule(
            init_value=learning_rate,
            end_value=end_value,
            power=float(schedule_config.poly_power),
            transition_steps=decay_steps,
        )
    else:
        main = optax.cosine_decay_schedule(
            init_value=learning_rate, decay_steps=decay_steps, alpha=float(schedule_config.end_learning_rate_factor)
        )
    if warmup == 0:
        return main
    # Starts at lr / warmup_steps rather than 0, so that the very first update is not a no-op.
    ramp = optax.linear_schedule(learning_rate / warmup, learning_rate, warmup)
    return optax.join_schedules([ramp, main], boundaries=[warmup])


def decay_mask(params: Any) -> Any:
    """True for the parameters weight decay applies to: kernels (ndim >= 2), not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def create_optimizer(
    optimizer_config, schedule_config, num_train_steps: int
) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """Returns (optax transformation, learning-rate schedule) for the config.

    Gradient clipping by global norm comes first (config.optimizer.grad_clip_norm, None or 0 = off). For 'sgd' and
    'adam', weight_decay is an L2 term added to the gradient (coupled, as in the FCN/SegNet papers); for 'adamw' it
    is decoupled (Loshchilov & Hutter).
    """
    name = optimizer_config.name
    _check_choice("optimizer", name, OPTIMIZERS)
    learning_rate = float(optimizer_config.learning_rate)
    if learning_rate <= 0:
        raise ValueError(f"optimizer.learning_rate={learning_rate} must be positive.")
    schedule = create_schedule(schedule_config, learning_rate, num_train_steps)
    weight_decay = float(optimizer_config.weight_decay or 0.0)
    parts = []
    clip = optimizer_config.grad_clip_norm
    if clip:
        parts.append(optax.clip_by_global_norm(float(clip)))
    if name in ("sgd", "adam") and weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    if name == "sgd":
        momentum = float(optimizer_config.momentum)
        parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=bool(optimizer_config.nesterov)))
    elif name == "adam":
        parts.append(optax.adam(schedule, b1=optimizer_config.b1, b2=optimizer_config.b2, eps=optimizer_config.eps))
    else:
        parts.append(
            optax.adamw(
                schedule,
                b1=optimizer_config.b1,
                b2=optimizer_config.b2,
                eps=optimizer_config.eps,
                weight_decay=weight_decay,
                mask=decay_mask,
            )
        )
    return optax.chain(*parts), schedule
