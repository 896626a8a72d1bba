"""Measurements of one finished run (what the report tabulates), shared by every study.

`analyze_run(config, workdir)` is called by the sweep runner after `train_and_evaluate` returns. It adds what
training does not measure: parameter count, FLOPs (XLA cost analysis), checkerboard scores of the network at
initialisation and after training, and a few sample predictions for the figures. (The validation curve is in the
run's metrics.jsonl, which the report reads; step times come from experiments/benchmarks/arms.py, not from
training.)

Checkerboard: `segjax.ops.checkerboard_score` of the softmax probabilities with factor CB_FACTOR (4: the phases
of the last two x2 upsampling stages) and border CB_BORDER px (zero padding makes the image border differ from
the interior for every operator). Two inputs: a constant image (every normalised pixel CONSTANT_INPUT, i.e. one
standard deviation above the dataset mean: no content, so any phase difference is an artifact; not zero, because
with zero biases at initialisation an all-zero input gives all-zero features and a trivially flat output) and a
fixed batch of validation images.

Measurements over the whole validation split are in experiments.split; a study's own measurements (not one run's)
are in experiments/measure/.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.split import (
    class_centred,
    detrended_score,
    is_upsampler_call,
    split_measurements,
    upsampler_outputs,
    validation_batches,
)
from segjax import metrics, ops, run
from segjax.data import make_loader
from segjax.summary import count_params
from segjax.task import Task

CB_FACTOR = 4
CB_BORDER = 8
NUM_SAMPLES = 4
CONSTANT_INPUT = 1.0

# ----------------------------------------------------------------------------------------------------------------
# Network-level checkerboard


def phase_means(y: np.ndarray, factor: int, border: int) -> np.ndarray:
    """(factor, factor, C) means of y over each output phase, cropped like segjax.ops.checkerboard_score."""
    y = np.asarray(y, np.float64)
    n, h, w, c = y.shape
    hh, ww = (h - 2 * border) // factor * factor, (w - 2 * border) // factor * factor
    y = y[:, border : border + hh, border : border + ww]
    return y.reshape(n, hh // factor, factor, ww // factor, factor, c).mean(axis=(0, 1, 3))


def phase_map(y: np.ndarray, factor: int, border: int) -> np.ndarray:
    """(factor, factor) normalised phase means (m - mean) / rms of the channel with the largest checkerboard
    score: the pattern the score measures, for the figures."""
    m = phase_means(y, factor, border)
    rms = np.sqrt((m**2).mean(axis=(0, 1)))
    safe = np.where(rms > 0, rms, 1.0)
    per_channel = np.where(rms > 0, m.std(axis=(0, 1)) / safe, 0.0)
    c = int(np.argmax(per_channel))
    return (m[:, :, c] - m[:, :, c].mean()) / safe[c]


def network_checkerboard(apply_fn, variables, images, factor: int = CB_FACTOR, border: int = CB_BORDER):
    """(score, phase map) of the class probabilities of `apply_fn(variables, images)`."""
    probs = probabilities(apply_fn, variables, images)
    return float(original_score(probs, factor, border)), phase_map(np.asarray(probs), factor, border)


@functools.partial(jax.jit, static_argnums=0)
def probabilities(apply_fn, variables, images):
    return jax.nn.softmax(apply_fn(variables, images), axis=-1)


@functools.partial(jax.jit, static_argnums=(1, 2))
def original_score(probs, factor, border):
    return ops.checkerboard_score(probs, factor, border, detrend=False)  # the original measure (issue 14 replaces it)


# ----------------------------------------------------------------------------------------------------------------
# Cost


def forward_gflops(apply_fn, variables, image_shape) -> float | None:
    """GFLOPs of one forward pass on one image: XLA's cost analysis of the lowered program (no compilation)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    try:
        cost = jax.jit(apply_fn).lower(variables, x).cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without cost analysis: the report shows '-'
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"]) / 1e9


# ----------------------------------------------------------------------------------------------------------------
# The run


def analyze_run(config, workdir: str) -> dict[str, Any]:
    """Everything the report needs about one finished run; see the module docstring."""

    workdir = pathlib.Path(workdir)
    task = Task(config, str(workdir))
    info = task.info
    model = task.model  # in inference mode its batch norm uses no data-parallel axis: it works outside a wrapped step
    images, labels = fixed_batch(config, info.eval_split, NUM_SAMPLES)
    init_vars, trained_vars, meta = initial_and_trained_variables(task)
    apply_fn = functools.partial(apply_inference, model)

    result: dict[str, Any] = {
        "params": count_params(init_vars["params"]),
        "gflops": forward_gflops(apply_fn, init_vars, images.shape[1:]),
        "eval_image_size": list(images.shape[1:3]),
        "checkerboard_settings": {
            "factor": CB_FACTOR,
            "border": CB_BORDER,
            "on": "softmax probabilities",
            "constant_input": CONSTANT_INPUT,
        },
    }
    constant = jnp.full_like(images, CONSTANT_INPUT)
    cb, maps = {}, {}
    for stage, variables in (("init", init_vars), ("trained", trained_vars)):
        score_c, map_c = network_checkerboard(apply_fn, variables, constant)
        score_r, _ = network_checkerboard(apply_fn, variables, images)
        cb[stage] = {"constant": score_c, "real": score_r}
        maps[stage] = map_c.tolist()
    result["checkerboard"] = cb
    result["phase_maps"] = maps

    predictions = np.asarray(probabilities(apply_fn, trained_vars, images)).argmax(-1)
    np.savez_compressed(
        workdir / "samples.npz",
        image=display_images(images),
        label=np.asarray(labels).astype(np.uint8),
        prediction=predictions.astype(np.uint8),
    )
    result["steps"] = int(meta["step"])  # the validation curve and its endpoints are read from metrics.jsonl
    result["split"] = split_measurements(model, trained_vars, config, info)
    if config.model.name.startswith("fcn"):
        result["oracle_miou"] = oracle_miou(config, info)
    result["checkerboard_trajectory"] = checkerboard_trajectory(task, model, init_vars, config, info)
    return result


def checkerboard_trajectory(task: Task, model, init_vars, config, info) -> dict[str, list] | None:
    """The detrended checkerboard (factor 2) at the upsamplers' outputs (mean over them) and of the class-centred
    logits, on the whole validation split, at initialisation and at every checkpoint the run kept; None when it kept
    only one (the sweeps' default: keep_checkpoints=1). How the artifacts grow or fade during training."""
    checkpoints = task.checkpointer(read_only=True)
    try:
        steps = checkpoints.all_steps()
        if len(steps) < 2:
            return None
        batches = [images for images, _ in validation_batches(config, info)]
        target = task.abstract_state()
        out = {"steps": [], "upsamplers": [], "logits": []}
        for step in [0, *steps]:
            variables = init_vars if step == 0 else _variables(checkpoints.restore(step, target)[0])
            logits, ups = [], []
            for images in batches:
                y, u = _forward_with_upsamplers(model, variables, images)
                logits.append(np.asarray(y))
                ups.append([np.asarray(v) for v in u])
            out["steps"].append(int(step))
            out["upsamplers"].append(
                float(np.mean([detrended_score(np.concatenate(level), 2) for level in zip(*ups, strict=True)]))
            )
            out["logits"].append(detrended_score(class_centred(np.concatenate(logits)), 2))
    finally:
        checkpoints.close()
    return out


@functools.partial(jax.jit, static_argnums=(0,))
def _forward_with_upsamplers(model, variables, images):
    logits, state = model.apply(
        variables, images, train=False, capture_intermediates=is_upsampler_call, mutable=["intermediates"]
    )
    return logits, upsampler_outputs(state)


# ----------------------------------------------------------------------------------------------------------------
# What a score map of true class shares reaches at a given stride (FCN's reference points)

ORACLE_STRIDES = (32, 16, 8)


def oracle_confusion(labels, stride: int, num_classes: int, ignore_index: int) -> np.ndarray:
    """Confusion matrix (C, C) of the oracle decoder at `stride` on labels (N, H, W): the true labels as class shares
    per stride x stride cell (ignored pixels left out), upsampled bilinearly by `stride` (as FCN's bilinear
    deconvolution does away from the borders), argmax; counted over the labelled pixels. What a score map holding the
    true class shares reaches through a bilinear decoder: a reference for FCN's strides, not an upper bound (scores
    beyond the shares can move a boundary inside a cell)."""
    labels = np.asarray(labels)
    n, h, w = labels.shape
    ph, pw = -h % stride, -w % stride
    padded = np.pad(labels, ((0, 0), (0, ph), (0, pw)), constant_values=ignore_index)
    onehot = (padded[..., None] == np.arange(num_classes)).astype(np.float32)  # ignored pixels: all zero
    hh, ww = padded.shape[1] // stride, padded.shape[2] // stride
    shares = onehot.reshape(n, hh, stride, ww, stride, num_classes).mean((2, 4))
    predicted = np.asarray(ops.bilinear_upsample(jnp.asarray(shares), stride)).argmax(-1)[:, :h, :w]
    keep = labels != ignore_index
    counts = np.bincount(labels[keep] * num_classes + predicted[keep], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def oracle_miou(config, info, strides=ORACLE_STRIDES) -> dict[str, float]:
    """stride -> the oracle decoder's mIoU over the validation split (see oracle_confusion)."""
    totals = {s: np.zeros((info.num_classes,) * 2, np.int64) for s in strides}
    for _, labels in validation_batches(config, info):
        for s in strides:
            totals[s] += oracle_confusion(labels, s, info.num_classes, info.ignore_index)
    return {str(s): float(metrics.compute_scores(c)["mean_iou"]) for s, c in totals.items()}


# ----------------------------------------------------------------------------------------------------------------
# A run's networks: applied in inference mode, restored from its checkpoints, its sample images


def apply_inference(model, variables, images):
    return model.apply(variables, images, train=False)


def fixed_batch(config, split: str, n: int):
    """The first n examples of the evaluation split (no augmentation): the same for every arm."""

    batch = next(
        iter(
            make_loader(config.data, split, global_batch_size=n, train=False, seed=0, process_index=0, process_count=1)
        )
    )
    return jnp.asarray(batch["image"]), np.asarray(batch["label"])


def _variables(state) -> dict:
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return jax.tree_util.tree_map(jnp.asarray, variables)


def initial_and_trained_variables(task: Task) -> tuple[dict, dict, dict]:
    """(variables training started from, variables of the latest checkpoint, that checkpoint's meta).

    The initial state is `Task.fresh_state` with the run's initial weights, so 'at initialisation' is exactly the
    network this run started from.
    """
    fresh = task.fresh_state(run.initial_weights(task))
    checkpoints = task.checkpointer(read_only=True)
    try:
        trained, meta = checkpoints.restore(checkpoints.resolve_step("latest"), fresh)
    finally:
        checkpoints.close()
    return _variables(fresh), _variables(trained), meta


def display_images(images) -> np.ndarray:
    """Normalised images -> uint8 for display (per-image min-max; the figure only needs to be recognisable)."""
    x = np.asarray(images, np.float32)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return ((x - lo) / np.maximum(hi - lo, 1e-6) * 255).astype(np.uint8)
