"""Measurements of one finished run (what the report tabulates), and the operator-level checkerboard study.

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
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from experiments.definitions import UPSAMPLE_ARMS
from segjax import losses, metrics, ops, run
from segjax.data import make_loader
from segjax.models import create_model
from segjax.models.layers import ConvBlock
from segjax.summary import count_params
from segjax.task import Task

CB_FACTOR = 4
CB_BORDER = 8
NUM_SAMPLES = 4
CONSTANT_INPUT = 1.0
# Compiler options for run-once programs (the initial state): skip XLA's backend optimisation passes.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

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
    probs = _probabilities(apply_fn, variables, images)
    return float(_score(probs, factor, border)), phase_map(np.asarray(probs), factor, border)


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(apply_fn, variables, images):
    return jax.nn.softmax(apply_fn(variables, images), axis=-1)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _score(probs, factor, border):

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
# Reading what training wrote


# ----------------------------------------------------------------------------------------------------------------
# The run


def analyze_run(config, workdir: str) -> dict[str, Any]:
    """Everything the report needs about one finished run; see the module docstring."""

    workdir = pathlib.Path(workdir)
    task = Task(config, str(workdir))
    info = task.info
    # The training's model has batch norm synchronised over the data-parallel axis; the same parameters work
    # without it, outside any wrapped step.
    model = create_model(config.model, info.num_classes, dtype=task.dtype)
    images, labels = fixed_batch(config, info.eval_split, NUM_SAMPLES)
    init_vars, trained_vars, meta = initial_and_trained_variables(task)
    apply_fn = functools.partial(_apply, model)

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

    predictions = np.asarray(_probabilities(apply_fn, trained_vars, images)).argmax(-1)
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
                float(np.mean([_cb(np.concatenate(level), 2) for level in zip(*ups, strict=True)]))
            )
            out["logits"].append(_cb(_class_centred(np.concatenate(logits)), 2))
    finally:
        checkpoints.close()
    return out


@functools.partial(jax.jit, static_argnums=(0,))
def _forward_with_upsamplers(model, variables, images):
    logits, state = model.apply(
        variables, images, train=False, capture_intermediates=_is_upsampler_call, mutable=["intermediates"]
    )
    return logits, _upsampler_outputs(state)


def _upsampler_outputs(state) -> list:
    """The captured outputs of every Upsample call (capture_intermediates=_is_upsampler_call), in call order."""
    return [v[0] for path, v in traverse_util.flatten_dict(state["intermediates"]).items() if path[-1] == "__call__"]


def _cb(y, factor: int) -> float:
    """The detrended checkerboard score of a whole-split array, border = factor."""
    return float(ops.checkerboard_score(jnp.asarray(y, jnp.float32), factor, border=factor))


def _class_centred(logits: np.ndarray) -> np.ndarray:
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
# Boundaries, thin structures and artifacts over the whole validation split (issue 14)

BF_TOLERANCES = (0, 1, 2)
TRIMAP_WIDTHS = (1, 2, 4, 8)
SHIFTS = tuple(range(1, 8))
SHIFT_MARGIN = 8  # crops of H - 8 px compared at offsets (0, 0) and (s, s)


def split_measurements(model, variables, config, info) -> dict:
    """What decoders differ in, measured on the whole validation split with the trained network:

    - boundary F1 (SegNet's BF) at tolerances 0, 1 and 2 px; mIoU in trimap bands of 1-8 px around ground-truth
      edges (segjax.metrics.trimap_confusion);
    - the error rate by output phase (row and column mod the network's stride): its max / min over phases;
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
    phase_errors = np.zeros((stride, stride), np.int64)
    phase_pixels = np.zeros((stride, stride), np.int64)
    agree = np.zeros(len(SHIFTS))
    compared = np.zeros(len(SHIFTS))
    ups_all, logits_all, truth_all, grads_all, encoder_grads = [], [], [], [], {}
    for images, labels in validation_batches(config, info):
        logits, ups, grad, encoder_grad = _forward_and_input_gradient(model, variables, images, labels, ignore)
        for name, g in encoder_grad.items():
            encoder_grads.setdefault(name, []).append(np.asarray(g))
        predictions = np.asarray(jnp.argmax(logits, -1))
        boundary = _add_boundary_statistics(boundary, labels, predictions, num_classes, ignore)
        trimap += np.asarray(metrics.trimap_confusion(labels, predictions, num_classes, TRIMAP_WIDTHS, ignore))
        phases = metrics.phase_error_statistics(labels, predictions, stride, ignore)
        phase_errors += np.asarray(phases["errors"])
        phase_pixels += np.asarray(phases["pixels"])
        for k, s in enumerate(SHIFTS):
            same, total = _shift_agreement(model, variables, images, s)
            agree[k] += float(same)
            compared[k] += float(total)
        ups_all.append([np.asarray(u) for u in ups])
        logits_all.append(np.asarray(logits))
        truth_all.append(labels)
        grads_all.append(np.asarray(grad))
    features = [np.concatenate(level) for level in zip(*ups_all, strict=True)]
    centred = _class_centred(np.concatenate(logits_all))
    truth = np.concatenate(truth_all)
    one_hot = np.where(
        (truth != ignore)[..., None], np.eye(num_classes)[np.where(truth == ignore, 0, truth)], 1 / num_classes
    )
    floor = one_hot - one_hot.mean(-1, keepdims=True)
    grads = np.concatenate(grads_all)
    rates = phase_errors / np.maximum(phase_pixels, 1)

    return {
        "boundary_f1": _boundary_f1(boundary),
        "trimap_miou": {str(w): metrics.compute_scores(trimap[i])["mean_iou"] for i, w in enumerate(TRIMAP_WIDTHS)},
        "phase_error": {
            "stride": stride,
            "rates": rates.tolist(),
            "max_over_min": float(rates.max() / rates.min()) if rates.min() > 0 else None,
        },
        "shift_consistency": {str(s): agree[k] / compared[k] for k, s in enumerate(SHIFTS)},
        "checkerboard": {
            "upsamplers": [_cb(f, 2) for f in features],  # the deepest first, as the decoder applies them
            "logits_2": _cb(centred, 2),
            f"logits_{stride}": _cb(centred, stride),
            "floor_2": _cb(floor, 2),
            f"floor_{stride}": _cb(floor, stride),
            "input_gradient_2": _cb(grads, 2),
            f"input_gradient_{stride}": _cb(grads, stride),
            # d loss / d each encoder level's output (before pooling), signed and in magnitude; the shallowest first
            "encoder_gradient_2": {k: _cb(np.concatenate(v), 2) for k, v in encoder_grads.items()},
            "encoder_gradient_magnitude_2": {k: _cb(np.abs(np.concatenate(v)), 2) for k, v in encoder_grads.items()},
        },
    }


def ensemble_measurements(members: dict[str, tuple]) -> dict[str, dict]:
    """Each member run and their ensemble on the same validation pixels: members maps a name to (config, workdir) of a
    finished run (same dataset); the ensemble averages the members' softmax probabilities (DeconvNet's EDeconvNet
    with FCN-8s). Per name and for 'ensemble': mIoU, pixel and class accuracy, per-class IoU by class name, and
    boundary F1 at BF_TOLERANCES px."""
    networks = {}
    for name, (config, workdir) in members.items():
        task = Task(config, str(workdir))
        model = create_model(config.model, task.num_classes, dtype=task.dtype)
        networks[name] = (functools.partial(_apply, model), initial_and_trained_variables(task)[1])
    info = task.info
    names = [*networks, "ensemble"]
    confusion = {n: np.zeros((info.num_classes,) * 2, np.int64) for n in names}
    boundary = dict.fromkeys(names)
    for images, labels in validation_batches(config, info):
        probabilities = {n: np.asarray(_probabilities(apply, v, images)) for n, (apply, v) in networks.items()}
        probabilities["ensemble"] = np.mean(list(probabilities.values()), axis=0)
        for n, p in probabilities.items():
            predictions = p.argmax(-1)
            confusion[n] += np.asarray(
                metrics.confusion_matrix(labels, predictions, info.num_classes, info.ignore_index)
            )
            boundary[n] = _add_boundary_statistics(
                boundary[n], labels, predictions, info.num_classes, info.ignore_index
            )
    out = {}
    for n in names:
        scores = metrics.compute_scores(confusion[n])
        out[n] = {
            "mean_iou": float(scores["mean_iou"]),
            "pixel_accuracy": float(scores["pixel_accuracy"]),
            "class_accuracy": float(scores["mean_pixel_accuracy"]),
            "iou": {c: float(v) for c, v in zip(info.class_names, np.asarray(scores["per_class_iou"]), strict=True)},
            "boundary_f1": _boundary_f1(boundary[n]),
        }
    return out


def _add_boundary_statistics(total, labels, predictions, num_classes: int, ignore_index: int) -> dict:
    """`total` (tolerance -> boundary statistics, or None) plus this batch's, at every tolerance of BF_TOLERANCES."""
    batch = {
        t: jax.device_get(metrics.boundary_statistics(labels, predictions, num_classes, t, ignore_index))
        for t in BF_TOLERANCES
    }
    return batch if total is None else jax.tree.map(np.add, total, batch)


def _boundary_f1(total) -> dict[str, float]:
    return {str(t): metrics.boundary_scores(total[t])["boundary_f1"] for t in BF_TOLERANCES}


def _is_upsampler_call(module, method_name: str) -> bool:
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
                variables, x, train=False, capture_intermediates=_is_upsampler_call, mutable=["intermediates"]
            )
        ce = losses.cross_entropy_loss(logits, labels, ignore_index=ignore_index)
        return ce, (logits, _upsampler_outputs(state))

    (grad, encoder_grads), (logits, ups) = jax.grad(loss, argnums=(0, 1), has_aux=True)(images, offsets)
    return logits, ups, grad, encoder_grads


@functools.partial(jax.jit, static_argnums=(0, 3))
def _shift_agreement(model, variables, images, shift: int):
    """(pixels predicted alike, pixels compared) for crops at offsets (0, 0) and (shift, shift), realigned."""
    size_h, size_w = images.shape[1] - SHIFT_MARGIN, images.shape[2] - SHIFT_MARGIN
    base = model.apply(variables, images[:, :size_h, :size_w], train=False).argmax(-1)
    moved = model.apply(variables, images[:, shift : shift + size_h, shift : shift + size_w], train=False).argmax(-1)
    same = base[:, shift:, shift:] == moved[:, : size_h - shift, : size_w - shift]
    return same.sum(), same.size


def _apply(model, variables, images):
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

    The initial state is `Task.fresh_state`, so 'at initialisation' is exactly the network this run started from.
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


# ----------------------------------------------------------------------------------------------------------------
# Operator-level study (Odena et al.): one Upsample layer, random init, constant input


def operator_outputs(seed: int, channels: int = 8, size: int = 16) -> dict[str, np.ndarray]:
    """Output of each operator of UPSAMPLE_ARMS (x2, freshly initialised with `seed`) on a constant input."""
    key = jax.random.PRNGKey(seed)
    return {label: np.asarray(fn(key)) for label, fn in _operator_fns(channels, size).items()}


@functools.lru_cache(maxsize=4)
def _operator_fns(channels: int, size: int) -> dict:
    """label -> compiled key -> output of a freshly initialised operator on a constant (1, size, size, channels).

    Compiled without backend optimisation (run-once programs; see FAST_COMPILE)."""

    x = jnp.ones((1, size, size, channels), jnp.float32)
    fns = {}
    for label in UPSAMPLE_ARMS:
        spec = ops.UpsampleSpec(**UPSAMPLE_ARMS[label])
        module = ops.Upsample(spec, factor=2, features=channels if spec.has_params else None)
        if spec.needs_indices:  # unpool the pooled input with its own indices (ties: the first)
            pooled, indices = ops.max_pool_with_indices(x, 2)
            inp, call = pooled, {"indices": indices, "output_size": (size, size)}
        else:
            inp, call = x, {}

        def fn(key, module=module, inp=inp, call=call):
            return module.apply(module.init(key, inp, **call), inp, **call)

        fns[label] = jax.jit(fn).lower(jax.random.PRNGKey(0)).compile(compiler_options=FAST_COMPILE)
    return fns


def operator_checkerboard_at_init(seeds=range(5), border: int = 2) -> dict[str, list[float]]:
    """label -> checkerboard score (factor 2) of each freshly initialised operator on a constant input, per seed."""
    scores: dict[str, list[float]] = {label: [] for label in UPSAMPLE_ARMS}
    for seed in seeds:
        for label, y in operator_outputs(seed).items():
            scores[label].append(float(_score(jnp.asarray(y), 2, border)))
    return scores


# ----------------------------------------------------------------------------------------------------------------
# Odena et al.'s structural probes: uneven overlap, and checkerboards in gradients

PROBE_KERNELS = (2, 3, 4, 5)


def constant_kernel_probe(kernels=PROBE_KERNELS, stride: int = 2, size: int = 24) -> dict[int, dict]:
    """Odena et al.'s overlap argument with nothing learned: a one-channel transposed convolution whose kernel is all
    ones, applied to a constant input. Every output pixel sums the kernel taps that land on it, so the output is the
    overlap count; it is flat exactly when the kernel size is a multiple of the stride. Per kernel size: the overlap
    counts seen, and the checkerboard score at factor `stride` (the original measure and the detrended one), with a
    border of the kernel size excluded."""
    out = {}
    x = jnp.ones((1, size, size, 1), jnp.float32)
    for k in kernels:
        y = ops.conv_transpose(x, jnp.ones((k, k, 1, 1), jnp.float32), stride, "SAME")
        inner = np.asarray(y)[0, k:-k, k:-k, 0]
        out[k] = {
            "overlaps": sorted({int(round(v)) for v in np.unique(inner)}),
            "score": float(ops.checkerboard_score(y, stride, k, detrend=False)),
            "score_detrended": float(ops.checkerboard_score(y, stride, k)),
        }
    return out


def _strided_conv(kernel: int, stride: int):
    def op(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return op, (kernel, kernel)


def _max_pool(x, w):
    return ops.max_pool_with_indices(x, 2)[0]


def _avg_pool(x, w):
    n, h, wd, c = x.shape
    return x.reshape(n, h // 2, 2, wd // 2, 2, c).mean((2, 4))


# label -> (op(x, w), kernel shape or None), the downsampling operators whose input gradients are probed.
GRADIENT_PROBES = {
    "conv k3 stride 2": _strided_conv(3, 2),
    "conv k2 stride 2": _strided_conv(2, 2),
    "conv k4 stride 2": _strided_conv(4, 2),
    "max pool 2x2": (_max_pool, None),
    "average pool 2x2": (_avg_pool, None),
    "conv k3 stride 1 (control)": _strided_conv(3, 1),
}


def gradient_checkerboards(seeds=range(5), size: int = 32, channels: int = 8) -> dict[str, list[float]]:
    """Odena et al.'s gradient claim, per operator and seed: the detrended checkerboard score (factor 2) of the
    magnitude |dL/dx| of the input gradient, for a random input x, random weights (lecun normal) and a random upstream
    gradient dL/dy. A strided convolution's gradient is a transposed convolution of the upstream gradient, so
    uneven overlap (k3 stride 2) gives the input phases different numbers of taps; the stride-1 convolution is the
    control (no phase is special). Border 4 px."""
    scores: dict[str, list[float]] = {label: [] for label in GRADIENT_PROBES}
    for seed in seeds:
        kx, kw, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
        x = jax.random.normal(kx, (4, size, size, channels))
        for label, (op, kernel) in GRADIENT_PROBES.items():
            w = None
            if kernel is not None:
                w = jax.nn.initializers.lecun_normal()(kw, (*kernel, channels, channels))
            y, vjp = jax.vjp(lambda x, w=w, op=op: op(x, w), x)
            (dx,) = vjp(jax.random.normal(kg, y.shape))
            scores[label].append(float(ops.checkerboard_score(jnp.abs(dx), 2, 4)))
    return scores
