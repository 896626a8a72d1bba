"""Segmentation losses: weighted cross-entropy, soft Dice and focal loss, combined by weights from a config.

Data parallelism: with ``axis_name`` (inside pmap / shard_map over that axis) every loss returns a per-device
value whose SUM over the devices equals the loss of the global batch, and whose gradients summed over the
devices equal the gradient of the global loss. So a step that psums (not pmeans) the per-device gradients gets
exactly the single-device gradient of the whole batch, whatever the split of ignored pixels or classes across
devices. Cross-entropy and focal divide by the psum'd, stop_gradient'd sum of pixel weights; Dice uses global
intersection / sum statistics, linearised around their stop_gradient'd global values (see `_dice_loss`).

Labels equal to ``ignore_index`` do not contribute. A label outside ``[0, C)`` that is not ``ignore_index`` is
a data bug: the loss becomes NaN (so a non-finite-loss check stops training) rather than silently dropping or
misreading the pixel; `segjax.metrics.check_labels` names the bad values on the host.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

__all__ = [
    "LossSpec",
    "default_loss_config",
    "compute_loss",
    "loss_terms",
    "cross_entropy_loss",
    "focal_loss",
    "dice_loss",
    "median_frequency_weights",
    "class_pixel_statistics",
    "resolve_class_weights",
]

LOSS_NAMES = ("cross_entropy", "dice", "focal")
CLASS_WEIGHTINGS = ("none", "median_frequency")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The loss of a run: weights of each loss in the total and their options; frozen and hashable.

    Parsed once on the host from the `loss` config section (`LossSpec.from_config`) and passed whole to
    `compute_loss`, so a traced step reads plain Python floats and nothing is parsed inside it.

    cross_entropy / dice / focal: weight of that loss in the sum (0 disables it).
    focal_gamma: focusing parameter gamma of the focal loss (Lin et al. use 2; 0 gives cross-entropy).
    dice_smooth: epsilon added to the numerator and denominator of each class's Dice ratio.
    class_weighting: 'none', 'median_frequency' (SegNet; weights computed from the training set's class pixel
      counts by `median_frequency_weights`, then fixed with `with_class_weights`), or one weight per class: a
      tuple, or a comma-separated string such as '0.5,1,2' (what `--config.loss.class_weighting=` accepts).
    """

    cross_entropy: float = 1.0
    dice: float = 0.0
    focal: float = 0.0
    focal_gamma: float = 2.0
    dice_smooth: float = 1.0
    class_weighting: str | tuple[float, ...] = "none"

    def __post_init__(self):
        for name in LOSS_NAMES:
            weight = getattr(self, name)
            if not _is_real(weight) or not np.isfinite(weight) or weight < 0:
                raise ValueError(f"loss.{name}={weight!r} must be a finite weight >= 0.")
        if not any(self.weights.values()):
            raise ValueError(
                f"All loss weights are 0 ({self.weights}); give at least one of {LOSS_NAMES} a weight > 0."
            )
        if not _is_real(self.focal_gamma) or not self.focal_gamma >= 0:
            raise ValueError(f"loss.focal_gamma={self.focal_gamma!r} must be a number >= 0 (2.0 in Lin et al.).")
        if not _is_real(self.dice_smooth) or not self.dice_smooth > 0:
            raise ValueError(f"loss.dice_smooth={self.dice_smooth!r} must be a number > 0 (e.g. 1.0).")
        for name in (*LOSS_NAMES, "focal_gamma", "dice_smooth"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "class_weighting", _parse_class_weighting(self.class_weighting))

    @classmethod
    def from_config(cls, loss_config) -> LossSpec:
        """The spec of a `loss` config section (ConfigDict or dict; missing keys take the defaults)."""
        if isinstance(loss_config, cls):
            return loss_config
        if not isinstance(loss_config, Mapping | ml_collections.ConfigDict):
            raise ValueError(f"loss_config must be a ConfigDict or dict, got {type(loss_config).__name__}.")
        given = dict(loss_config.items())
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ValueError(f"Unknown loss config key(s) {unknown}; valid keys: {valid}.")
        return cls(**given)

    @property
    def weights(self) -> dict[str, float]:
        """Loss name -> weight in the total."""
        return {name: getattr(self, name) for name in LOSS_NAMES}

    def with_class_weights(self, class_weights) -> LossSpec:
        """This spec with class_weighting fixed to explicit per-class weights (None: unchanged)."""
        if class_weights is None:
            return self
        return dataclasses.replace(self, class_weighting=tuple(float(w) for w in np.asarray(class_weights).ravel()))


def default_loss_config() -> ml_collections.ConfigDict:
    """The `loss` config section: the fields of `LossSpec` with its defaults."""
    return ml_collections.ConfigDict(dataclasses.asdict(LossSpec()))


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_class_weighting(value):
    if isinstance(value, str):
        text = value.strip()
        if text in CLASS_WEIGHTINGS:
            return text
        try:
            return tuple(float(part) for part in text.split(","))
        except ValueError:
            pass
    elif isinstance(value, Sequence) or isinstance(value, np.ndarray):
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            pass
    raise ValueError(
        f"loss.class_weighting={value!r} is not valid: use one of {CLASS_WEIGHTINGS} or one weight "
        "per class as a comma-separated string such as '0.5,1,2' (or a list)."
    )


def _check_weight_vector(weights, num_classes: int, what: str) -> np.ndarray:
    weights = np.asarray(weights, np.float64)
    if weights.shape != (num_classes,):
        raise ValueError(f"{what} must have one weight per class, shape ({num_classes},), got shape {weights.shape}.")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
        raise ValueError(f"{what} must be finite, >= 0 and not all 0, got {weights.tolist()}.")
    return weights


def median_frequency_weights(class_pixel_counts, image_pixel_counts=None) -> np.ndarray:
    """SegNet's median frequency balancing (Eigen & Fergus): weight_c = median(freq) / freq_c.

    freq_c = class_pixel_counts[c] / image_pixel_counts[c], where image_pixel_counts[c] is the number of
    (non-ignored) pixels in the images that contain class c (`class_pixel_statistics` computes both, summed over
    the training set). Without image_pixel_counts the denominator is the total pixel count of all classes (plain
    frequency). The median is over the classes that occur; classes that never occur get weight 1 (they never
    meet a label, so the weight only matters for Dice). Returns float64 (C,).
    """
    counts = np.asarray(class_pixel_counts, np.float64)
    if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0) or not np.any(counts > 0):
        raise ValueError(
            "class_pixel_counts must be a 1-D array of non-negative counts, not all 0; got "
            f"{np.asarray(class_pixel_counts).tolist()}."
        )
    if image_pixel_counts is None:
        totals = np.full_like(counts, counts.sum())
    else:
        totals = np.asarray(image_pixel_counts, np.float64)
        if totals.shape != counts.shape or np.any(totals < counts):
            raise ValueError(
                f"image_pixel_counts {totals.tolist()} must have the shape of class_pixel_counts "
                f"{counts.shape} and be >= them (pixels of the images that contain each class)."
            )
    present = counts > 0
    frequency = np.divide(counts, totals, out=np.zeros_like(counts), where=present)
    median = np.median(frequency[present])
    return np.divide(median, frequency, out=np.ones_like(counts), where=present)


def class_pixel_statistics(labels, num_classes: int, ignore_index: int = 255):
    """Per-batch inputs of `median_frequency_weights`, jit-able: (class_pixel_counts, image_pixel_counts).

    class_pixel_counts[c]: pixels labelled c; image_pixel_counts[c]: non-ignored pixels of the images that
    contain c. Both int32 (C,) for one batch; sum batches on the host in int64 (a dataset overflows int32).
    """
    labels = jnp.asarray(labels).astype(jnp.int32)
    n = labels.shape[0]
    in_range = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    image = jnp.arange(n, dtype=jnp.int32).reshape((n,) + (1,) * (labels.ndim - 1))
    bucket = jnp.where(in_range, image * num_classes + labels, n * num_classes).reshape(-1)
    per_image = jax.ops.segment_sum(jnp.ones_like(bucket), bucket, num_segments=n * num_classes + 1)
    per_image = per_image[:-1].reshape(n, num_classes)
    valid_pixels = per_image.sum(1, keepdims=True)
    return per_image.sum(0), jnp.where(per_image > 0, valid_pixels, 0).sum(0)


def resolve_class_weights(spec: LossSpec, num_classes: int, class_pixel_counts=None, image_pixel_counts=None):
    """The class weights `spec.class_weighting` asks for: None, or a float32 (C,) numpy array.

    'median_frequency' needs the training set's class_pixel_counts (and image_pixel_counts), see
    `median_frequency_weights`.
    """
    weighting = spec.class_weighting
    if weighting == "none":
        return None
    if weighting == "median_frequency":
        if class_pixel_counts is None:
            raise ValueError(
                "loss.class_weighting='median_frequency' needs the training set's class pixel counts: "
                "pass class_pixel_counts (and image_pixel_counts) from class_pixel_statistics."
            )
        weights = median_frequency_weights(class_pixel_counts, image_pixel_counts)
    else:
        weights = weighting
    return _check_weight_vector(weights, num_classes, "loss.class_weighting").astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# The losses. Each returns the per-device share of the global loss when axis_name is given.
# --------------------------------------------------------------------------------------------------------------


def _global_sum(x, axis_name):
    """Sum of a statistic over the devices of axis_name, as a constant (stop_gradient)."""
    x = jax.lax.stop_gradient(x)
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def _prepare(logits, labels, ignore_index):
    """float32 logits, labels safe to index with, the valid mask, and whether any label is out of range."""
    logits = jnp.asarray(logits)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # bf16 -> f32; f64 stays (tests)
    labels = jnp.asarray(labels).astype(jnp.int32)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {logits.shape} must be labels {labels.shape} plus a class axis.")
    num_classes = logits.shape[-1]
    not_ignored = labels != ignore_index
    in_range = (labels >= 0) & (labels < num_classes)
    valid = not_ignored & in_range
    return logits, jnp.where(valid, labels, 0), valid, jnp.any(not_ignored & ~in_range)


def _poison(loss, bad_labels):
    return jnp.where(bad_labels, jnp.nan, loss)


def _pixel_weights(safe_labels, valid, class_weights):
    weights = valid.astype(jnp.float32)
    if class_weights is not None:
        weights = weights * jnp.asarray(class_weights)[safe_labels]
    return weights


def _weighted_mean(per_pixel, pixel_weights, axis_name):
    """sum(w * x) / sum(w), with the denominator summed over the global batch and held constant."""
    normaliser = _global_sum(pixel_weights.sum(), axis_name)
    return (pixel_weights * per_pixel).sum() / jnp.where(normaliser > 0, normaliser, 1.0)


def _nll(logits, safe_labels):
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]


def cross_entropy_loss(logits, labels, *, ignore_index=255, class_weights=None, axis_name=None):
    """Weighted cross-entropy: sum_p w[y_p] * -log softmax(logits_p)[y_p] / sum_p w[y_p] over valid pixels.

    The same normalisation as PyTorch's CrossEntropyLoss(weight, ignore_index) with reduction='mean'.
    """
    logits, safe_labels, valid, bad = _prepare(logits, labels, ignore_index)
    weights = _pixel_weights(safe_labels, valid, class_weights)
    return _poison(_weighted_mean(_nll(logits, safe_labels), weights, axis_name), bad)


def focal_loss(logits, labels, *, gamma=2.0, ignore_index=255, class_weights=None, axis_name=None):
    """Focal loss (Lin et al. 2017): sum_p w[y_p] * -(1 - p_t)^gamma log p_t / sum_p w[y_p] over valid pixels.

    The class weights play the role of alpha_t; normalised like cross-entropy, so gamma=0 gives cross-entropy.
    """
    logits, safe_labels, valid, bad = _prepare(logits, labels, ignore_index)
    weights = _pixel_weights(safe_labels, valid, class_weights)
    nll = _nll(logits, safe_labels)
    if gamma == 0:
        modulator = 1.0
    else:
        one_minus_p = -jnp.expm1(-nll)  # accurate near p_t = 1; exactly 0 when p_t rounds to 1
        positive = one_minus_p > 0
        # Double where: d/dx x**gamma is infinite at 0 for gamma < 1; keep NaN out of the gradient.
        modulator = jnp.where(positive, jnp.where(positive, one_minus_p, 1.0) ** gamma, 0.0)
    return _poison(_weighted_mean(modulator * nll, weights, axis_name), bad)


def _dice_from_statistics(intersection, total, class_weights, smooth):
    """1 - weighted mean over classes of (2 I_c + eps) / (S_c + eps)."""
    dice = (2.0 * intersection + smooth) / (total + smooth)
    if class_weights is None:
        return 1.0 - dice.mean()
    class_weights = jnp.asarray(class_weights, jnp.float32)
    return 1.0 - (class_weights * dice).sum() / jnp.maximum(class_weights.sum(), 1e-12)


def dice_loss(logits, labels, *, smooth=1.0, ignore_index=255, class_weights=None, axis_name=None):
    """Soft multi-class Dice loss on softmax probabilities, over the valid pixels of the (global) batch.

    Per class c: I_c = sum_p prob_pc * [y_p = c], S_c = sum_p prob_pc + sum_p [y_p = c] (valid pixels only);
    loss = 1 - sum_c w_c (2 I_c + smooth) / (S_c + smooth) / sum_c w_c (w = 1 without class weights). All
    classes count, so a class absent from the batch is pushed to probability 0.

    With axis_name, I and S are summed over the devices. The loss is not a sum over pixels, so each device
    returns f(I, S) / n_devices (a constant) plus the first-order term grad f(I, S) . (local I, S - their
    stop_gradient): its value is f / n_devices, it sums to f, and its gradient summed over devices is exactly
    grad f . d(I, S) = the gradient of the global loss.
    """
    logits, safe_labels, valid, bad = _prepare(logits, labels, ignore_index)
    num_classes = logits.shape[-1]
    mask = valid[..., None].astype(logits.dtype)
    probs = jax.nn.softmax(logits, axis=-1) * mask
    targets = jax.nn.one_hot(safe_labels, num_classes, dtype=logits.dtype) * mask
    reduce_axes = tuple(range(probs.ndim - 1))
    intersection = (probs * targets).sum(reduce_axes)
    total = probs.sum(reduce_axes) + targets.sum(reduce_axes)

    def loss_of(stats):
        return _dice_from_statistics(stats[0], stats[1], class_weights, smooth)

    if axis_name is None:
        return _poison(loss_of((intersection, total)), bad)
    local = (intersection, total)
    global_stats = jax.tree.map(lambda s: _global_sum(s, axis_name), local)
    value, slope = jax.value_and_grad(loss_of)(global_stats)
    value, slope = jax.lax.stop_gradient((value, slope))
    devices = jax.lax.psum(1.0, axis_name)
    linear = sum(jnp.vdot(g, s - jax.lax.stop_gradient(s)) for g, s in zip(slope, local, strict=True))
    return _poison(value / devices + linear, bad)


def _resolve_weights_for_loss(spec: LossSpec, class_weights, num_classes):
    if class_weights is not None:
        if isinstance(class_weights, jax.Array):  # possibly traced: only the shape can be checked
            if class_weights.shape != (num_classes,):
                raise ValueError(f"class_weights must have shape ({num_classes},), got {class_weights.shape}.")
            return class_weights
        return jnp.asarray(_check_weight_vector(class_weights, num_classes, "class_weights"), jnp.float32)
    if spec.class_weighting == "none":
        return None
    if spec.class_weighting == "median_frequency":
        raise ValueError(
            "loss.class_weighting='median_frequency' needs class weights: compute them once with "
            "resolve_class_weights(spec, num_classes, class_pixel_counts, image_pixel_counts) and pass "
            "spec.with_class_weights(weights) (or class_weights=...) to compute_loss."
        )
    return jnp.asarray(_check_weight_vector(spec.class_weighting, num_classes, "loss.class_weighting"), jnp.float32)


def loss_terms(logits, labels, spec: LossSpec, *, ignore_index=255, class_weights=None, axis_name=None) -> dict:
    """The unweighted losses that `spec` enables (weight > 0), by name; see `compute_loss`."""
    weights = _resolve_weights_for_loss(_as_spec(spec), class_weights, jnp.shape(logits)[-1])
    common = dict(ignore_index=ignore_index, class_weights=weights, axis_name=axis_name)
    terms = {}
    if spec.cross_entropy:
        terms["cross_entropy"] = cross_entropy_loss(logits, labels, **common)
    if spec.dice:
        terms["dice"] = dice_loss(logits, labels, smooth=spec.dice_smooth, **common)
    if spec.focal:
        terms["focal"] = focal_loss(logits, labels, gamma=spec.focal_gamma, **common)
    return terms


def compute_loss(logits, labels, spec: LossSpec, *, ignore_index=255, class_weights=None, axis_name=None):
    """Weighted sum of the losses of `spec`: cross_entropy * CE + dice * Dice + focal * Focal.

    Args:
      logits: float (N, H, W, C). labels: int (N, H, W), `ignore_index` where not evaluated.
      spec: the LossSpec (`LossSpec.from_config(config.loss)`).
      class_weights: float (C,) weights of the classes; overrides spec.class_weighting (which must be resolved to
        weights, `resolve_class_weights` and `with_class_weights`, when it is 'median_frequency').
      axis_name: inside pmap / shard_map, the axis the global batch is split over. The returned per-device value
        sums over that axis to the global-batch loss, and so do its gradients (psum them, do not pmean them).

    Returns a float32 scalar; NaN if a label is outside [0, C) and not ignore_index.
    """
    terms = loss_terms(
        logits, labels, spec, ignore_index=ignore_index, class_weights=class_weights, axis_name=axis_name
    )
    return sum(spec.weights[name] * value for name, value in terms.items())


def _as_spec(spec) -> LossSpec:
    if not isinstance(spec, LossSpec):
        raise TypeError(f"Expected a LossSpec (LossSpec.from_config(config.loss)), got {type(spec).__name__}.")
    return spec
