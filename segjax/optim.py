"""Optimizers and learning-rate schedules (optax), built from frozen, hashable specs of the config.

`OptimizerSpec.from_config(config.optimizer)` chooses the update rule and `ScheduleSpec.from_config(config)` the
learning-rate curve (it needs `num_train_steps`); both are validated when made and documented key by key in
docs/config_reference.md. The specs, not the config, travel into the training step, so equal settings give equal
(hashable) steps that share one compilation. Weight decay never applies to biases or normalisation scales/offsets
(any parameter with fewer than two dimensions), as is standard for convolutional networks. `lr_multipliers` scales
the learning rate of the parameters whose path matches a pattern (DeepLab's and FCN's 10x rate for the new head).
`ema_decay` keeps an exponential moving average of the weights for validation and inference (`segjax.steps`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from ml_collections import config_dict

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "poly", "warmup_cosine")


def _check_choice(kind: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {kind} {value!r}; valid choices: {', '.join(valid)}.")


def _fields_of(cls, section, where: str) -> dict:
    """The keys of a config section that are fields of `cls`; an unknown key is an error naming the valid ones."""
    given = dict(section.items())
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"Unknown {where} key(s) {unknown}; valid keys: {valid}.")
    return given


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """config.optimizer: the update rule and its hyperparameters (see docs/config_reference.md)."""

    name: str = "adamw"
    learning_rate: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    b1: float = 0.9  # adam/adamw
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4  # never applied to biases and norm parameters
    grad_clip_norm: float | None = None  # clip by global norm; None or 0: off
    frozen: str | None = None  # regex on parameter paths ('upscore' ...): those get no updates (learning rate 0)
    # ((regex, factor), ...) or {regex: factor}: the learning rate of matching parameters times factor (the first
    # pattern that matches decides); optional in a config (see default_optimizer_config)
    lr_multipliers: tuple[tuple[str, float], ...] = ()
    # decay of the exponential moving average of the weights that validation and inference use (segjax.steps
    # `ema_update`); 0: none. Optional in a config, absent means 0 (see default_optimizer_config)
    ema_decay: float = 0.0

    def __post_init__(self):
        _check_choice("optimizer", self.name, OPTIMIZERS)
        object.__setattr__(self, "lr_multipliers", _multiplier_pairs(self.lr_multipliers))
        object.__setattr__(self, "ema_decay", _ema_decay(self.ema_decay))
        if self.frozen is not None:
            try:
                re.compile(self.frozen)
            except (re.error, TypeError) as e:
                raise ValueError(f"optimizer.frozen={self.frozen!r} is not a regular expression: {e}.") from None
        if not float(self.learning_rate) > 0:
            raise ValueError(f"optimizer.learning_rate={self.learning_rate} must be positive.")
        if float(self.weight_decay or 0.0) < 0:
            raise ValueError(f"optimizer.weight_decay={self.weight_decay} must be >= 0.")
        for name in ("learning_rate", "momentum", "b1", "b2", "eps"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "weight_decay", float(self.weight_decay or 0.0))
        object.__setattr__(self, "nesterov", bool(self.nesterov))
        object.__setattr__(self, "grad_clip_norm", float(self.grad_clip_norm) if self.grad_clip_norm else None)

    @classmethod
    def from_config(cls, optimizer_config) -> OptimizerSpec:
        return cls(**_fields_of(cls, optimizer_config, "optimizer"))

    @property
    def names_parameters(self) -> bool:
        """Whether a pattern (frozen, lr_multipliers) must be checked against the model's parameter names."""
        return self.frozen is not None or bool(self.lr_multipliers)


def _ema_decay(value) -> float:
    """optimizer.ema_decay as a float in [0, 1) (None: 0, off); ValueError naming the value and the range."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(
            f"optimizer.ema_decay={value!r} must be a number with 0 <= decay < 1 (0: no moving average; 0.999 "
            "averages over about the last 1000 steps)."
        )
    return float(value)


def _multiplier_pairs(value) -> tuple[tuple[str, float], ...]:
    """optimizer.lr_multipliers as ((pattern, factor), ...): from a mapping or pairs (a config's JSON round trip
    makes lists); ValueError naming a bad pattern or factor."""
    items = value.items() if hasattr(value, "items") else value
    try:
        pairs = tuple((pattern, factor) for pattern, factor in (items or ()))
    except (TypeError, ValueError):
        raise ValueError(
            f"optimizer.lr_multipliers={value!r} must be {{pattern: factor}} or ((pattern, factor), ...)."
        ) from None
    checked = []
    for pattern, factor in pairs:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ValueError(f"optimizer.lr_multipliers: {pattern!r} is not a regular expression: {e}.") from None
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ValueError(
                f"optimizer.lr_multipliers: the factor of {pattern!r} must be a positive number, got {factor!r} "
                "(optimizer.frozen stops parameters altogether)."
            )
        checked.append((pattern, float(factor)))
    return tuple(checked)


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """config.schedule plus config.num_train_steps: the learning-rate curve over the run."""

    num_train_steps: int
    name: str = "warmup_cosine"
    warmup_steps: int = 100  # linear warmup from learning_rate / warmup_steps
    poly_power: float = 0.9  # 'poly': lr * (1 - t/T)^power
    end_learning_rate_factor: float = 0.0  # final lr = factor * learning_rate ('poly', 'warmup_cosine')

    def __post_init__(self):
        _check_choice("schedule", self.name, SCHEDULES)
        warmup = int(self.warmup_steps)
        if warmup < 0 or warmup >= max(self.num_train_steps, 1):
            raise ValueError(
                f"schedule.warmup_steps={warmup} must be >= 0 and smaller than num_train_steps={self.num_train_steps}."
            )
        object.__setattr__(self, "warmup_steps", warmup)
        object.__setattr__(self, "poly_power", float(self.poly_power))
        object.__setattr__(self, "end_learning_rate_factor", float(self.end_learning_rate_factor))

    @classmethod
    def from_config(cls, config) -> ScheduleSpec:
        """From a whole config: its `schedule` section and `num_train_steps`."""
        return cls(num_train_steps=int(config.num_train_steps), **_fields_of(cls, config.schedule, "schedule"))


def create_schedule(spec: ScheduleSpec, learning_rate: float) -> optax.Schedule:
    """Learning rate as a function of the step: optional linear warmup, then the named decay.

    Warmup rises linearly from lr / warmup_steps (update 0) to lr (update warmup_steps).

    'constant': flat after warmup. 'poly': lr * (1 - t/T)^power down to end_learning_rate_factor * lr (FCN/DeepLab).
    'warmup_cosine': cosine from lr to end_learning_rate_factor * lr.
    """
    warmup = spec.warmup_steps
    end_value = learning_rate * spec.end_learning_rate_factor
    decay_steps = max(spec.num_train_steps - warmup, 1)
    if spec.name == "constant":
        main = optax.constant_schedule(learning_rate)
    elif spec.name == "poly":
        main = optax.polynomial_schedule(
            init_value=learning_rate, end_value=end_value, power=spec.poly_power, transition_steps=decay_steps
        )
    else:
        main = optax.cosine_decay_schedule(
            init_value=learning_rate, decay_steps=decay_steps, alpha=spec.end_learning_rate_factor
        )
    if warmup == 0:
        return main
    # Starts at lr / warmup_steps rather than 0, so that the very first update is not a no-op.
    ramp = optax.linear_schedule(learning_rate / warmup, learning_rate, warmup)
    return optax.join_schedules([ramp, main], boundaries=[warmup])


def decay_mask(params: Any) -> Any:
    """True for the parameters weight decay applies to: kernels (ndim >= 2), not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def path_name(path) -> str:
    """A parameter's tree path as 'encoder/block1/conv0/kernel' (the names optimizer.frozen matches)."""
    return "/".join(str(getattr(k, "key", k)) for k in path)


def frozen_labels(pattern: str):
    """params -> 'frozen' / 'trainable' per parameter (optax.multi_transform labels) for `pattern`; a pattern that
    matches no parameter is an error that shows some names."""

    def labels(params):
        names = jax.tree_util.tree_map_with_path(lambda path, _: path_name(path), params)
        label = jax.tree.map(lambda name: "frozen" if re.search(pattern, name) else "trainable", names)
        if "frozen" not in jax.tree.leaves(label):
            examples = ", ".join(jax.tree.leaves(names)[:3])
            raise ValueError(f"optimizer.frozen={pattern!r} matches no parameter; names look like {examples}, ...")
        return label

    return labels


def learning_rate_factors(pairs: tuple[tuple[str, float], ...], params: Any) -> Any:
    """params -> the learning-rate factor of each parameter: that of the first pattern of `pairs` its path matches,
    else 1. A pattern that matches no parameter is an error naming it (a typo would silently change nothing)."""
    names = jax.tree_util.tree_map_with_path(lambda path, _: path_name(path), params)
    leaves = jax.tree.leaves(names)
    for pattern, _ in pairs:
        if not any(re.search(pattern, name) for name in leaves):
            examples = ", ".join(leaves[:3])
            raise ValueError(
                f"optimizer.lr_multipliers: {pattern!r} matches no parameter; names look like {examples}, ..."
            )

    def factor(name):
        return next((f for pattern, f in pairs if re.search(pattern, name)), 1.0)

    return jax.tree.map(factor, names)


def scale_by_lr_multipliers(pairs: tuple[tuple[str, float], ...]) -> optax.GradientTransformation:
    """Multiplies each update by its parameter's `learning_rate_factors` (the last step of the chain, so for SGD a
    matched parameter moves exactly factor times as far as it would unmatched); checks the patterns in `init`."""

    def init(params):
        learning_rate_factors(pairs, params)
        return optax.EmptyState()

    def update(updates, state, params=None):
        factors = learning_rate_factors(pairs, updates)
        return jax.tree.map(lambda u, f: u if f == 1.0 else u * jnp.asarray(f, u.dtype), updates, factors), state

    return optax.GradientTransformation(init, update)


def create_optimizer(
    spec: OptimizerSpec, schedule_spec: ScheduleSpec
) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """Returns (optax transformation, learning-rate schedule) for the specs.

    Gradient clipping by global norm comes first (grad_clip_norm, None = off). For 'sgd' and 'adam', weight_decay is
    an L2 term added to the gradient (coupled, as in the FCN/SegNet papers); for 'adamw' it is decoupled
    (Loshchilov & Hutter). Parameters whose path matches `frozen` get no updates at all (FCN's released networks
    keep their bilinear deconvolutions so: learning rate 0). `lr_multipliers` scales the final updates (the learning
    rate, and with it the coupled decay, as Caffe's lr_mult does).
    """
    schedule = create_schedule(schedule_spec, spec.learning_rate)
    parts = []
    if spec.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(spec.grad_clip_norm))
    if spec.name in ("sgd", "adam") and spec.weight_decay > 0:
        parts.append(optax.add_decayed_weights(spec.weight_decay, mask=decay_mask))
    if spec.name == "sgd":
        parts.append(optax.sgd(schedule, momentum=spec.momentum or None, nesterov=spec.nesterov))
    elif spec.name == "adam":
        parts.append(optax.adam(schedule, b1=spec.b1, b2=spec.b2, eps=spec.eps))
    else:
        parts.append(
            optax.adamw(schedule, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay, mask=decay_mask)
        )
    tx = optax.chain(*parts)
    if spec.frozen is not None:
        tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, frozen_labels(spec.frozen))
    if spec.lr_multipliers:
        tx = optax.chain(tx, scale_by_lr_multipliers(spec.lr_multipliers))
    return tx, schedule


def default_optimizer_config() -> ml_collections.ConfigDict:
    """The `optimizer` config section: the fields of `OptimizerSpec` with its defaults, but for the optional
    `lr_multipliers` and `ema_decay` (left out so that the configs of runs made before they existed, and their
    hashes, stay as they were; a config file adds them, as configs/deeplab.py does, or the command line)."""
    values = dataclasses.asdict(OptimizerSpec())
    del values["lr_multipliers"], values["ema_decay"]
    values["grad_clip_norm"] = config_dict.placeholder(float)
    values["frozen"] = config_dict.placeholder(str)
    return ml_collections.ConfigDict(values)


def default_schedule_config() -> ml_collections.ConfigDict:
    """The `schedule` config section: the fields of `ScheduleSpec` with its defaults (num_train_steps is top-level)."""
    values = {f.name: f.default for f in dataclasses.fields(ScheduleSpec) if f.name != "num_train_steps"}
    return ml_collections.ConfigDict(values)
