"""Measurements of a trained network over the whole validation split (issue 14): boundaries, thin structures and
artifacts, what decoders differ in (`split_measurements`), and the helpers the other measurements share
(`validation_batches`, the upsamplers' captured outputs, boundary statistics, the detrended checkerboard score).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from experiments import stats
from segjax import losses, metrics, ops
from segjax.data import make_loader
from segjax.models.layers import ConvBlock

# ----------------------------------------------------------------------------------------------------------------
# Boundaries, thin structures and artifacts over the whole validation split (issue 14)

BF_TOLERANCES = (0, 1, 2)
TRIMAP_WIDTHS = (1, 2, 4, 8)
SHIFTS = tuple(range(1, 8))
SHIFT_MARGIN = 8  # crops of H - 8 px compared at offsets (0, 0) and (s, s)
PHASE_NULL_DRAWS = 10000  # random per-image phase shifts of the phase-error ratio's null reference


def split_measurements(model, variables, config, info) -> dict:
    """What decoders differ in, measured on the whole validation split with the trained network:

    - boundary F1 (SegNet's BF) at tolerances 0, 1 and 2 px; mIoU in trimap bands of 1-8 px around ground-truth
      edges (segjax.metrics.trimap_confusion);
    - the error rate by output phase (row and column mod the network's stride): its max / min over phases, against
      its null reference (experiments.stats.phase_alignment_test: each image's phase grid shifted at random);
    - shift consistency: the share of pixels predicted alike when the input moves by s = 1..7 px diagonally
      (crops realigned), the sub-stride equivariance checkerboarding decoders lack;
    - checkerboard scores (segjax.ops.checkerboard_score, detrended) at factor 2 of every upsampler's output inside
      the network (the features it hands on), and at factors 2 and the stride of the class-centred logits and of
      the gradient of the cross-entropy with respect to the input image; at factor 2 of the gradient with respect to
      each encoder level's output (signed, and its magnitude: Odena et al.'s gradient artifacts from pooling and
      strided operators); beside them the noise floor, the same measure on the class-centred one-hot ground truth.
    """
    num_classes, ignore = info.num_classes, info.ignore_index
    stride = model.stride
    boundary = None
    trimap = np.zeros((len(TRIMAP_WIDTHS), num_classes, num_classes), np.int64)
    phase_errors, phase_pixels = [], []  # per image: (stride, stride) counts
    agree = np.zeros(len(SHIFTS))
    compared = np.zeros(len(SHIFTS))
    ups_all, logits_all, truth_all, grads_all, encoder_grads = [], [], [], [], {}
    for images, labels in validation_batches(config, info):
        logits, ups, grad, encoder_grad = _forward_and_input_gradient(model, variables, images, labels, ignore)
        for name, g in encoder_grad.items():
            encoder_grads.setdefault(name, []).append(np.asarray(g))
        predictions = np.asarray(jnp.argmax(logits, -1))
        boundary = add_boundary_statistics(boundary, labels, predictions, num_classes, ignore)
        trimap += np.asarray(metrics.trimap_confusion(labels, predictions, num_classes, TRIMAP_WIDTHS, ignore))
        phases = jax.vmap(lambda y, p: metrics.phase_error_statistics(y[None], p[None], stride, ignore))(
            labels, predictions
        )
        phase_errors.append(np.asarray(phases["errors"]))
        phase_pixels.append(np.asarray(phases["pixels"]))
        same, total = jax.device_get(_shift_agreements(model, variables, images))
        agree += same
        compared += total
        ups_all.append([np.asarray(u) for u in ups])
        logits_all.append(np.asarray(logits))
        truth_all.append(labels)
        grads_all.append(np.asarray(grad))
    phase_errors, phase_pixels = np.concatenate(phase_errors), np.concatenate(phase_pixels)
    rates = phase_errors.sum(0) / np.maximum(phase_pixels.sum(0), 1)
    alignment = stats.phase_alignment_test(phase_errors, phase_pixels, draws=PHASE_NULL_DRAWS)
    return {
        "boundary_f1": boundary_f1(boundary),
        "trimap_miou": {str(w): metrics.compute_scores(trimap[i])["mean_iou"] for i, w in enumerate(TRIMAP_WIDTHS)},
        "phase_error": {
            "stride": stride,
            "rates": rates.tolist(),
            "max_over_min": float(rates.max() / rates.min()) if rates.min() > 0 else None,
            "null_95": alignment.null_95,  # the ratio's 95th percentile under random per-image phase shifts
            "p_aligned": alignment.p,
        },
        "shift_consistency": {str(s): agree[k] / compared[k] for k, s in enumerate(SHIFTS)},
        "checkerboard": _checkerboards(stride, ups_all, logits_all, truth_all, grads_all, encoder_grads, info),
    }


def _checkerboards(stride: int, ups_all, logits_all, truth_all, grads_all, encoder_grads, info) -> dict:
    """The split's checkerboard scores (see split_measurements) from its batches' upsampler outputs, logits, labels
    and gradients."""
    num_classes, ignore = info.num_classes, info.ignore_index
    features = [np.concatenate(level) for level in zip(*ups_all, strict=True)]
    centred = class_centred(np.concatenate(logits_all))
    truth = np.concatenate(truth_all)
    one_hot = np.where(
        (truth != ignore)[..., None], np.eye(num_classes)[np.where(truth == ignore, 0, truth)], 1 / num_classes
    )
    floor = one_hot - one_hot.mean(-1, keepdims=True)
    grads = np.concatenate(grads_all)
    encoder = {k: np.concatenate(v) for k, v in encoder_grads.items()}
    return {
        "upsamplers": [detrended_score(f, 2) for f in features],  # the deepest first, as the decoder applies them
        "logits_2": detrended_score(centred, 2),
        f"logits_{stride}": detrended_score(centred, stride),
        "floor_2": detrended_score(floor, 2),
        f"floor_{stride}": detrended_score(floor, stride),
        "input_gradient_2": detrended_score(grads, 2),
        f"input_gradient_{stride}": detrended_score(grads, stride),
        # d loss / d each encoder level's output (before pooling), signed and in magnitude; the shallowest first
        "encoder_gradient_2": {k: detrended_score(v, 2) for k, v in encoder.items()},
        "encoder_gradient_magnitude_2": {k: detrended_score(np.abs(v), 2) for k, v in encoder.items()},
    }


def add_boundary_statistics(total, labels, predictions, num_classes: int, ignore_index: int) -> dict:
    """`total` (tolerance -> boundary statistics, or None) plus this batch's, at every tolerance of BF_TOLERANCES."""
    batch = {
        t: jax.device_get(metrics.boundary_statistics(labels, predictions, num_classes, t, ignore_index))
        for t in BF_TOLERANCES
    }
    return batch if total is None else jax.tree.map(np.add, total, batch)


def boundary_f1(total) -> dict[str, float]:
    return {str(t): metrics.boundary_scores(total[t])["boundary_f1"] for t in BF_TOLERANCES}


def is_upsampler_call(module, method_name: str) -> bool:
    return isinstance(module, ops.Upsample) and method_name == "__call__"


def _encoder_block_shapes(model, variables, images) -> dict[str, tuple]:
    """'encoder/block{i}' -> the shape of that encoder level's output (before its pooling), without computing it."""
    shapes = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if _is_encoder_block(context):
            shapes["/".join(context.module.path)] = out.shape
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
    return shapes


def _is_encoder_block(context) -> bool:
    return (
        isinstance(context.module, ConvBlock)
        and context.method_name == "__call__"
        and context.module.path[:1] == ("encoder",)
    )


@functools.partial(jax.jit, static_argnums=(0, 4))
def _forward_and_input_gradient(model, variables, images, labels, ignore_index):
    """(logits, every upsampler's output, d cross-entropy / d images, d cross-entropy / d each encoder level's output)
    of the network in inference mode. The encoder gradients come from zero offsets added to each encoder level's
    output (flax method interception: the model is not changed)."""
    offsets = {k: jnp.zeros(shape) for k, shape in _encoder_block_shapes(model, variables, images).items()}

    def loss(x, offsets):
        def shifted(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            return out + offsets["/".join(context.module.path)] if _is_encoder_block(context) else out

        with nn.intercept_methods(shifted):
            logits, state = model.apply(
                variables, x, train=False, capture_intermediates=is_upsampler_call, mutable=["intermediates"]
            )
        ce = losses.cross_entropy_loss(logits, labels, ignore_index=ignore_index)
        return ce, (logits, upsampler_outputs(state))

    (grad, encoder_grads), (logits, ups) = jax.grad(loss, argnums=(0, 1), has_aux=True)(images, offsets)
    return logits, ups, grad, encoder_grads


@functools.partial(jax.jit, static_argnums=(0,))
def _shift_agreements(model, variables, images):
    """Per shift s of SHIFTS: (pixels predicted alike, pixels compared) for crops at offsets (0, 0) and (s, s),
    realigned. One program for every shift, with the crop at (0, 0) predicted once."""
    size_h, size_w = images.shape[1] - SHIFT_MARGIN, images.shape[2] - SHIFT_MARGIN
    base = model.apply(variables, images[:, :size_h, :size_w], train=False).argmax(-1)
    same, compared = [], []
    for s in SHIFTS:
        moved = model.apply(variables, images[:, s : s + size_h, s : s + size_w], train=False).argmax(-1)
        alike = base[:, s:, s:] == moved[:, : size_h - s, : size_w - s]
        same.append(alike.sum())
        compared.append(alike.size)
    return jnp.stack(same), jnp.asarray(compared)


def upsampler_outputs(state) -> list:
    """The captured outputs of every Upsample call (capture_intermediates=is_upsampler_call), in call order."""
    return [v[0] for path, v in traverse_util.flatten_dict(state["intermediates"]).items() if path[-1] == "__call__"]


def detrended_score(y, factor: int) -> float:
    """The detrended checkerboard score of a whole-split array, border = factor; NaN (not measured) when the map
    is too small to hold a whole cell (FCN-32s's logits on 32 px images)."""
    if min(ops.checkerboard_region(y.shape[1], y.shape[2], factor, border=factor)) < factor:
        return math.nan
    return float(ops.checkerboard_score(jnp.asarray(y, jnp.float32), factor, border=factor))


def class_centred(logits: np.ndarray) -> np.ndarray:
    return logits - logits.mean(-1, keepdims=True)


def validation_batches(config, info):
    """(images, labels) of the real examples of each batch of the validation split, in order, on one process."""
    loader = make_loader(
        config.data,
        info.eval_split,
        global_batch_size=config.eval_batch_size,
        train=False,
        seed=0,
        process_index=0,
        process_count=1,
    )
    for batch in loader:
        keep = np.asarray(batch["valid"])
        if keep.any():
            yield jnp.asarray(batch["image"][keep]), np.asarray(batch["label"][keep])
