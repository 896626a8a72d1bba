"""Building blocks shared by the encoder-decoder networks: a convolution, the
normalisation choice, conv-norm-ReLU stacks, pooling, the decoder's upsampling step, and padding inputs
to the network's stride.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from segjax import ops

NORMS = ("none", "batch", "group")
BN_EPSILON = 1e-5  # nn.BatchNorm's default
_DN = ("NHWC", "HWIO", "NHWC")


# --------------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------------


def conv2d(x, kernel):
    """Stride-1 'SAME' convolution, NHWC x HWIO (even kernels pad more at the end, as lax does)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


class Conv(nn.Module):
    """Stride-1 'SAME' 2-D convolution with the parameters of `nn.Conv` ('kernel' HWIO, 'bias')."""

    features: int
    kernel_size: int = 3
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        y = conv2d(x, kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + jnp.asarray(bias, y.dtype)
        return y


# --------------------------------------------------------------------------------------------------
# Normalisation and conv stacks
# --------------------------------------------------------------------------------------------------


def group_count(channels: int, target: int = 32, min_group_size: int = 4) -> int:
    """Number of groups for group norm: at most `target` (Wu & He's default 32), at least
    `min_group_size` channels per group where the width allows, and a divisor of `channels`."""
    groups = max(1, min(target, channels // min_group_size))
    while channels % groups:
        groups -= 1
    return groups


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; valid: {', '.join(NORMS)}.")
    return norm


def _channel_rows(x, width: int = 512):
    """x (..., C) as a 2-D view (R / k, k * C), k * C about `width` (a bitcast of the row-major array), and k.

    Per-channel sums over this view (`_channel_sum`) run several times faster on XLA:CPU than x.sum((0, 1, 2))
    or ones @ the narrow (R, C) view, on the large few-channel maps of a network's first levels."""
    c = x.shape[-1]
    rows = x.size // c
    k = max(1, width // c)
    while rows % k:
        k -= 1
    return x.reshape(rows // k, k * c), k


def _channel_sum(rows, k: int):
    """Per-channel float32 sum of a `_channel_rows` view: ones @ rows, a library call where XLA:CPU would
    emit three kernels for a sum (a tree of reduce-windows); as fast, and batch norm compiles faster."""
    ones = jnp.ones((rows.shape[0],), rows.dtype)
    column_sums = lax.dot_general(ones, rows, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return column_sums.reshape(k, -1).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, axis_name=None):
    """Training-mode batch norm over all axes but the last: (y, mean, biased var), statistics in float32
    and averaged over `axis_name` (a pmap / shard_map axis) when given. Gradients flow through y only
    (the returned statistics are for running averages, as if under stop_gradient).

    Hand-written gradient (the textbook formula: two per-channel sums, then one elementwise pass), sums on
    `_channel_rows` views. On CPU it is faster than nn.BatchNorm forward and backward, and faster than
    PyTorch forward; forward+backward it trails PyTorch's fused kernels on the largest maps (more passes
    over memory): `python experiments/benchmarks/ops.py --only batch_norm`."""
    return _batch_norm_fwd(x, scale, bias, axis_name)[0]


def _pmean(x, axis_name):
    return x if axis_name is None else lax.pmean(x, axis_name)


def _batch_norm_fwd(x, scale, bias, axis_name):
    rows, k = _channel_rows(x)
    n = x.size // x.shape[-1]
    r32 = rows.astype(jnp.float32)
    mean, mean_sq = _pmean((_channel_sum(r32, k) / n, _channel_sum(r32 * r32, k) / n), axis_name)
    var = jnp.maximum(0.0, mean_sq - mean**2)
    inv = lax.rsqrt(var + BN_EPSILON)
    y = (x.astype(jnp.float32) - mean) * (inv * scale) + bias
    return (y.astype(x.dtype), mean, var), (x, mean, inv, scale)


def _batch_norm_bwd(axis_name, residuals, cotangents):
    x, mean, inv, scale = residuals
    g = cotangents[0].astype(jnp.float32)  # (mean, var) are not differentiated (see batch_norm_train)
    xhat = (x.astype(jnp.float32) - mean) * inv
    g_rows, k = _channel_rows(g)
    d_bias, d_scale = _channel_sum(g_rows, k), _channel_sum(_channel_rows(g * xhat)[0], k)
    n = x.size // x.shape[-1]
    mean_g, mean_gx = _pmean((d_bias / n, d_scale / n), axis_name)
    dx = (g - mean_g - xhat * mean_gx) * (scale * inv)
    return dx.astype(x.dtype), d_scale, d_bias


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
    """Batch norm with `nn.BatchNorm`'s parameters ('scale', 'bias'), statistics ('mean', 'var': biased
    variance E[x^2] - E[x]^2 in float32, averaged over `axis_name` when given) and momentum update; the
    computation is `batch_norm_train` (faster on CPU)."""

    momentum: float = 0.9
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        x = jnp.asarray(x, self.dtype or jnp.result_type(x, jnp.float32))
        if train:
            axis_name = None if self.is_initializing() else self.axis_name
            y, mean, var = batch_norm_train(x, scale, bias, axis_name)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
            return y
        y = (x - ra_mean.value) * (lax.rsqrt(ra_var.value + BN_EPSILON) * scale) + bias
        return y.astype(x.dtype)


class GroupNorm(nn.Module):
    """`nn.GroupNorm` with `group_count(channels)` groups, called like `BatchNorm` (`train` is ignored)."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.GroupNorm(num_groups=group_count(x.shape[-1]), dtype=self.dtype, name="gn")(x)


@dataclasses.dataclass(frozen=True)
class NormFactory:
    """Makes the normalisation module of a layer: `factory(name=...)` is a `BatchNorm` (statistics averaged over
    `axis_name` when given), a `GroupNorm`, or None for `kind='none'`. Validated once; frozen and hashable, so
    modules holding one compare equal when their norms do."""

    kind: str = "batch"
    axis_name: str | None = None
    dtype: Any = None

    def __post_init__(self):
        check_norm(self.kind)

    @property
    def normalises(self) -> bool:
        """Whether a norm follows the convolution (then the convolution needs no bias)."""
        return self.kind != "none"

    def __call__(self, *, name: str) -> nn.Module | None:
        if self.kind == "batch":
            return BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name=name)
        if self.kind == "group":
            return GroupNorm(dtype=self.dtype, name=name)
        return None


class ConvBlock(nn.Module):
    """`len(widths)` times: conv (kernel_size) -> norm -> ReLU, the layers named conv{i} and norm{i}. The conv has
    a bias only without norm (a bias before batch/group norm is cancelled by the mean subtraction)."""

    widths: tuple[int, ...]
    norm: NormFactory
    kernel_size: int = 3
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        for i, width in enumerate(self.widths):
            x = Conv(width, self.kernel_size, use_bias=not self.norm.normalises, dtype=self.dtype, name=f"conv{i}")(x)
            norm = self.norm(name=f"norm{i}")
            if norm is not None:
                x = norm(x, train)
            x = nn.relu(x)
        return x


# --------------------------------------------------------------------------------------------------
# Pooling, padding
# --------------------------------------------------------------------------------------------------


def max_pool(x, with_indices: bool = False):
    """2x2 stride-2 max pooling (H, W even). Returns (values, indices or None).

    Without indices it is a reshape and a max, whose gradient is elementwise; `nn.max_pool`'s gradient
    (select-and-scatter) is slow on CPU. With indices it is `segjax.ops.max_pool_with_indices`."""
    if with_indices:
        return ops.max_pool_with_indices(x, 2)
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4)), None


def pad_to_multiple(x, multiple: int):
    """Zero-pads H and W at the bottom/right up to multiples of `multiple`; returns (padded, (H, W))."""
    h, w = x.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    return x, (h, w)


# --------------------------------------------------------------------------------------------------
# The decoder's upsampling step
# --------------------------------------------------------------------------------------------------


class UpStep(nn.Module):
    """One decoder upsampling step by `factor` to `features` channels with the operator `spec` describes (see
    `segjax.ops.Upsample`).

    Learned methods (transposed, resize_conv, pixel_shuffle) change the channel count themselves. Parameter-free methods
    (nearest, bilinear, bed_of_nails, max_unpool) keep it, so when `features` differs from the input channels a
    convolution (named 'project'; 1x1 unless spec.kernel_size says otherwise) maps the channels first, at the low
    resolution where it is cheapest. Everything around the step is the same for every method, so two ablation arms
    differ only in the operator (plus that projection for parameter-free operators). max_unpool's `indices` must come
    from `max_pool` of a map of size `output_size` (not checked).
    """

    spec: ops.UpsampleSpec
    features: int
    factor: int = 2
    use_bias: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x, indices=None, output_size=None):
        if self.spec.has_params:
            upsample = ops.Upsample(self.spec, self.factor, self.features, self.use_bias, self.dtype, name="upsample")
            return upsample(x, indices, output_size)
        if x.shape[-1] != self.features:
            kernel = self.spec.kernel_size or 1
            x = Conv(self.features, kernel, use_bias=self.use_bias, dtype=self.dtype, name="project")(x)
        # The networks' indices come from 2x2 max_pool (non-overlapping cells) of a map of output_size.
        upsample = ops.Upsample(self.spec, self.factor, dtype=self.dtype, assume_in_cell=True, name="upsample")
        return upsample(x, indices, output_size)
