"""Building blocks shared by the encoder-decoder networks: a convolution, the
normalisation choice, conv-norm-ReLU stacks, pooling, the decoder's upsampling step, and padding inputs
to the network's stride.
"""
import functools
from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from segjax import ops

NORMS = ("none", "batch", "group")
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


class Norm(nn.Module):
  """Batch norm (statistics averaged over `axis_name` when given), group norm, or identity."""
  norm: str = "batch"
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    norm = check_norm(self.norm)
    if norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name,
                          dtype=self.dtype, name="bn")(x)
    if norm == "group":
      return nn.GroupNorm(num_groups=group_count(x.shape[-1]), dtype=self.dtype, name="gn")(x)
    return x


class ConvBlock(nn.Module):
  """`len(widths)` times: conv (kernel_size) -> norm -> ReLU. The conv has a bias only without norm
  (a bias before batch/group norm is cancelled by the mean subtraction)."""
  widths: tuple[int, ...]
  kernel_size: int = 3
  norm: str = "batch"
  axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    for i, width in enumerate(self.widths):
      x = Conv(width, self.kernel_size, use_bias=self.norm == "none", dtype=self.dtype,
               name=f"conv{i}")(x)
      x = Norm(self.norm, self.axis_name, self.dtype, name=f"norm{i}")(x, train)
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

@functools.lru_cache(maxsize=None)
def _index_free_methods() -> tuple[str, ...]:
  return tuple(m for m in ops.METHODS if not ops.needs_indices(m))


class UpStep(nn.Module):
  """One decoder upsampling step by `factor` to `features` channels, with the operator named by
  `method` (see `segjax.ops.Upsample`).

  Learned methods (transposed, resize_conv, pixel_shuffle) change the channel count themselves.
  Parameter-free methods (nearest, bilinear, bed_of_nails, max_unpool) keep it, so when `features`
  differs from the input channels a 1x1 convolution (named 'project') maps the channels first, at the
  low resolution where it is cheapest. Everything around the step is the same for every method, so two
  ablation arms differ only in the operator (plus that projection for parameter-free operators).
  """
  method: str
  features: int
  factor: int = 2
  kernel_size: int | None = None
  weight_init: str | None = None
  resize: str = "nearest"
  use_bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x, indices=None, output_size=None):
    if ops.has_params(self.method):
      return ops.Upsample(self.method, self.factor, self.features, self.kernel_size, self.weight_init,
                          self.resize, self.use_bias, self.dtype, name="upsample")(x, indices,
                                                                                   output_size)
    if x.shape[-1] != self.features:
      x = Conv(self.features, 1, use_bias=self.use_bias, dtype=self.dtype, name="project")(x)
    return ops.Upsample(self.method, self.factor, dtype=self.dtype, name="upsample")(
        x, indices, output_size)
