"""Odena et al.'s study measurements, with nothing trained: each upsampling operator alone at initialisation, the
overlap of a transposed convolution with equal weights, and checkerboards in the input gradients of downsampling
operators."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.analysis import original_score
from experiments.definitions import UPSAMPLE_ARMS
from segjax import ops

# Compiler options for run-once programs: skip XLA's backend optimisation passes.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
OPERATOR_SEEDS = range(3)
GRADIENT_SEEDS = range(5)
CROP = (slice(2, 10), slice(2, 10))  # the 8x8 crop of an operator's output the section draws


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
            scores[label].append(float(original_score(jnp.asarray(y), 2, border)))
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


def measure(out, runs, previous: dict | None) -> dict | None:
    """The probes, once (they depend on no run). Mappings are stored as [key, value] pairs, in their order (the
    JSON's objects have sorted keys)."""
    if previous:
        return None
    outputs = operator_outputs(seed=0)
    return {
        "operators": {
            "seeds": list(OPERATOR_SEEDS),
            "scores": list(operator_checkerboard_at_init(seeds=OPERATOR_SEEDS).items()),
            "outputs": [(label, y[(0, *CROP, 0)].tolist()) for label, y in outputs.items()],
        },
        "overlap": list(constant_kernel_probe().items()),
        "gradients": {
            "seeds": list(GRADIENT_SEEDS),
            "scores": list(gradient_checkerboards(seeds=GRADIENT_SEEDS).items()),
        },
    }
