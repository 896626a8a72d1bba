"""The per-device steps: one training update, the evaluation statistics and the predictions of a batch.

Each sees one device's slice of the global batch and talks to the other devices only through collectives over
`axis_name` (`psum` of gradients, losses and metric statistics; the train step binds the same axis to the model's
batch norm, `segjax.models.with_axis_name`, so its statistics are those of the global batch; inference uses the
running averages and needs no axis; it uses the moving average of the weights where the state keeps one,
`inference_variables`). They are frozen, hashable dataclasses built from specs and a plain model, not
configs: equal settings give equal steps, which `segjax.parallel.DataParallel.wrap` compiles once. With
`axis_name=None` the same steps run on one device under plain `jit`; wrapped or not they give the same numbers (up
to float summation order) because `segjax.losses.compute_loss` returns per-device shares of the global loss.
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
from segjax import models as models_lib
from segjax import optim
from segjax.data.transforms import as_size


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue: saved whole in checkpoints."""

    step: jax.Array  # int32 scalar: number of updates applied so far
    params: Any
    batch_stats: Any  # {} for models without batch norm
    opt_state: Any
    rng: jax.Array  # uint32[2] base key; per-step keys are derived from (rng, step), so resuming is exact
    # optimizer.ema_decay: the moving average of the variables, {'params': ..., 'batch_stats': ...} (batch_stats
    # only with batch norm; see `ema_update`); {} without one, and then absent from the checkpoint
    ema: Any = flax.struct.field(default_factory=dict)


def _state_dict(state: TrainState) -> dict:
    """A TrainState as a checkpoint holds it: its fields, but 'ema' only where there is a moving average, so that a
    run without one saves what segjax saved before EMA existed (and restores those checkpoints)."""
    out = {
        field.name: flax.serialization.to_state_dict(getattr(state, field.name)) for field in dataclasses.fields(state)
    }
    if not state.ema:
        del out["ema"]
    return out


def _from_state_dict(target: TrainState, values: dict) -> TrainState:
    """The inverse of `_state_dict`, shaped like `target` ('ema' stays {} where `values` has none)."""
    restored = {
        field.name: flax.serialization.from_state_dict(getattr(target, field.name), values[field.name], name=field.name)
        for field in dataclasses.fields(target)
        if field.name in values
    }
    return target.replace(**restored)


flax.serialization.register_serialization_state(TrainState, _state_dict, _from_state_dict, override=True)


def create_train_state(
    model, tx: optax.GradientTransformation, rng: jax.Array, sample_images, *, ema: bool = False
) -> TrainState:
    """Initialises parameters from `sample_images` (any batch, only its shape matters) and the optimizer state; with
    `ema`, the moving average starts as a copy of the initial variables."""
    init_rng, state_rng = jax.random.split(rng)
    variables = _jitted_init(model)(init_rng, jnp.asarray(sample_images))
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params), rng=state_rng
    )
    return restart_ema(state) if ema else state


def restart_ema(state: TrainState) -> TrainState:
    """`state` with its moving average set to a copy of its variables (a fresh state, after weights were loaded)."""
    return state.replace(ema=jax.tree.map(lambda x: x.copy(), _variables(state)))  # numpy stays numpy


def ema_update(ema: dict, variables: dict, decay: float) -> dict:
    """One step of the moving average: decay * ema + (1 - decay) * variables, leaf by leaf (optax's
    incremental_update), after each optimizer update, starting from the initial variables (no bias correction).

    Batch-norm statistics are averaged too, with the same decay, not copied from the live model (timm's ModelEmaV2
    averages its buffers so): the averaged weights are evaluated with statistics averaged over the same steps,
    which describe the averaged network's activations better than the last model's statistics do."""
    return optax.incremental_update(variables, ema, 1.0 - decay)


def inference_variables(state: TrainState) -> dict:
    """The variables evaluation and prediction apply: the moving average where the state keeps one (optimizer.
    ema_decay), else the trained ones. Every inference path (validation, segjax-eval, segjax-predict,
    segjax-export) goes through here."""
    return state.ema if state.ema else _variables(state)


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

    model: Any  # a plain flax linen Module (hashable); the step binds `axis_name` to its batch norm
    loss: losses_lib.LossSpec  # class weights resolved (`LossSpec.with_class_weights`)
    optimizer: optim.OptimizerSpec
    schedule: optim.ScheduleSpec
    num_classes: int
    ignore_index: int

    def __call__(self, state: TrainState, batch: dict, *, axis_name: str | None = None) -> tuple[TrainState, dict]:
        tx, _ = optim.create_optimizer(self.optimizer, self.schedule)
        model = models_lib.with_axis_name(self.model, axis_name)  # batch norm averages over the devices' batch
        step_rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
        images, labels = batch["image"], batch["label"]

        def loss_fn(params):
            variables = _variables(state.replace(params=params))
            logits, new_variables = model.apply(
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
        if self.optimizer.ema_decay:
            new_state = new_state.replace(ema=ema_update(state.ema, _variables(new_state), self.optimizer.ema_decay))
        confusion = metrics_lib.confusion_matrix(
            labels, jnp.argmax(logits, axis=-1), self.num_classes, ignore_index=self.ignore_index
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "confusion": _psum(confusion, axis_name)}
        return new_state, metrics


INFERENCE_MODES = ("whole", "slide", "resize")


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    """How class scores are predicted for an evaluation batch (mmsegmentation's test modes); frozen, hashable.

    mode 'whole': the network on the whole (padded) image. 'slide': windows of `window` (h, w) every `stride`
    (h, w) over the image (mmsegmentation's grid: the last window of a row or column ends at the border), the
    overlapping logits averaged. 'resize': the loader fitted the image into data.eval_size; predicted whole (quick
    looks; the masks were shrunk, so not comparable with papers). `scales` (test-time multi-scale: the image resized
    by each factor, bilinear, the probabilities resized back) and `flip` (the mirror image too) average softmax
    probabilities; with neither, the logits themselves are returned.
    """

    mode: str = "whole"
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self):
        if self.mode not in INFERENCE_MODES:
            raise ValueError(f"eval.mode={self.mode!r} is not one of {', '.join(INFERENCE_MODES)}.")
        if self.mode == "slide":
            for name in ("window", "stride"):
                value = getattr(self, name)
                if value is None or len(value) != 2 or min(value) < 1:
                    raise ValueError(f"eval.{name}={value!r}: sliding windows need a (height, width) of positive ints.")
            if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
                raise ValueError(
                    f"eval.stride={self.stride} must not exceed eval.window={self.window}: no pixel left out."
                )
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"eval.scales={self.scales!r} must be positive factors, e.g. (0.75, 1.0, 1.25).")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "flip", bool(self.flip))

    @property
    def averages(self) -> bool:
        return self.scales != (1.0,) or self.flip


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """The `eval` section of a config, read once (by `segjax.task.Task`) and validated here: how class scores are
    predicted (`inference`, all the eval and predict steps take, so settings of the loop alone share their
    compilation) and how evaluation runs over a split: `boundary_tolerance` of boundary F1 in pixels (None:
    SegNet's 0.75% of the image diagonal), at most `max_batches` batches (None: all), at most `max_buckets` canvas
    sizes (`segjax.data.size_buckets`), `num_images_to_plot` examples in segjax-eval's figure."""

    inference: InferenceSpec = InferenceSpec()
    boundary_tolerance: int | None = None
    max_batches: int | None = None
    max_buckets: int = 8
    num_images_to_plot: int = 8

    def __post_init__(self):
        for key, allow_none in (("max_batches", True), ("max_buckets", False)):
            value = getattr(self, key)
            if not (value is None and allow_none) and not _is_int(value, 1):
                raise ValueError(f"config.eval.{key}={value!r} must be a positive integer.")
        tolerance = self.boundary_tolerance
        if tolerance is not None and not _is_int(tolerance, 0):
            raise ValueError(
                f"config.eval.boundary_tolerance={tolerance!r} must be a non-negative integer (pixels) "
                "or None (SegNet's 0.75% of the image diagonal)."
            )
        if not _is_int(self.num_images_to_plot, 0):
            raise ValueError(
                f"config.eval.num_images_to_plot={self.num_images_to_plot!r} must be a non-negative integer."
            )

    @classmethod
    def from_config(cls, section, crop_size: tuple[int, int]) -> EvalSpec:
        """The spec of an eval section (`segjax.config.default_eval_config`); a sliding window defaults to the
        training crop `crop_size`, its stride to 2/3 of the window."""
        window, stride = section.window, section.stride
        try:
            window = crop_size if window is None else as_size(window)
            stride = tuple(max(1, 2 * s // 3) for s in window) if stride is None else as_size(stride)
        except ValueError:
            raise ValueError(
                f"config.eval.window={section.window!r} / eval.stride={section.stride!r}: sliding windows need a "
                "(height, width) or an int of positive pixels (None: the training crop, 2/3 of the window)."
            ) from None
        inference = InferenceSpec(section.mode, window, stride, tuple(section.scales), section.flip)
        return cls(
            inference, section.boundary_tolerance, section.max_batches, section.max_buckets, section.num_images_to_plot
        )


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def predict_scores(model, variables, images, spec: InferenceSpec):
    """Class scores (N, H, W, C) of `images` by `spec`: logits, or averaged probabilities with test-time
    augmentation (their argmax is the prediction either way)."""
    if not spec.averages:
        return _predict(model, variables, images, spec)
    n, h, w, _ = images.shape
    total = 0.0
    for scale in spec.scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = images if size == (h, w) else _resize(images, size)
        for flip in (False, True) if spec.flip else (False,):
            x = scaled[:, :, ::-1] if flip else scaled
            probs = jax.nn.softmax(_predict(model, variables, x, spec).astype(jnp.float32), axis=-1)
            probs = probs[:, :, ::-1] if flip else probs
            total = total + (probs if size == (h, w) else _resize(probs, (h, w)))
    return total / (len(spec.scales) * (2 if spec.flip else 1))


def _resize(x, size):
    """Bilinear resize of (N, H, W, C) to `size`, without antialiasing (as OpenCV, mmsegmentation's resize)."""
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear", antialias=False)


def _predict(model, variables, images, spec: InferenceSpec):
    if spec.mode != "slide":
        return model.apply(variables, images, train=False).astype(jnp.float32)
    n, h, w, _ = images.shape
    (wh, ww), (sh, sw) = spec.window, spec.stride
    if h < wh or w < ww:  # a small image: one window over it, padded as the network pads
        return model.apply(variables, images, train=False).astype(jnp.float32)
    starts = [
        (min(i * sh, h - wh), min(j * sw, w - ww))
        for i in range((h - wh + sh - 1) // sh + 1)
        for j in range((w - ww + sw - 1) // sw + 1)
    ]
    windows = jnp.concatenate([images[:, y : y + wh, x : x + ww] for y, x in starts])
    logits = model.apply(variables, windows, train=False).astype(jnp.float32)
    total = jnp.zeros((n, h, w, logits.shape[-1]), jnp.float32)
    count = jnp.zeros((1, h, w, 1), jnp.float32)
    for k, (y, x) in enumerate(starts):
        total = total.at[:, y : y + wh, x : x + ww].add(logits[k * n : (k + 1) * n])
        count = count.at[:, y : y + wh, x : x + ww].add(1.0)
    return total / count


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
    inference: InferenceSpec = InferenceSpec()

    def __call__(self, state: TrainState, batch: dict, *, axis_name: str | None = None) -> dict:
        variables = inference_variables(state)
        predictions = jnp.argmax(predict_scores(self.model, variables, batch["image"], self.inference), -1)
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
    inference: InferenceSpec = InferenceSpec()

    def __call__(self, state: TrainState, batch: dict, *, axis_name: str | None = None) -> jax.Array:
        scores = predict_scores(self.model, inference_variables(state), batch["image"], self.inference)
        return jnp.argmax(scores, axis=-1).astype(jnp.int32)
