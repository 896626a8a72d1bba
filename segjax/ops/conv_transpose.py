"""Transposed convolution computed as one stride-1 convolution plus a depth-to-space.

`jax.lax.conv_transpose(x, k, s, padding)` (NHWC/HWIO, transpose_kernel=False) is a stride-1
correlation of the input dilated by s (s-1 zeros between pixels) and padded (lo, hi), with the
unflipped kernel. Most of the dilated input is zeros, and XLA's gradient of that lhs-dilated
convolution is very slow on CPU. Per dimension, output o = s*q + p (phase p) only reads inputs
i = q + d with d = (p + t - lo) / s for the taps t where that division is exact. Collecting, for every
phase, those taps at offsets d in [dmin, dmax] gives one dense kernel
W'[d - dmin, cin, (ph, pw, cout)] = k[s*d - p + lo] (0 where no tap lands), so one stride-1 VALID
convolution of the suitably padded input gives all s*s phases as channels; a depth-to-space and a crop
give the transposed convolution. Its gradients are ordinary stride-1 convolutions.
"""
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from segjax.ops._checks import nhwc, pair

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def transpose_padding(kernel_size: int, stride: int, padding) -> tuple[int, int]:
  """(lo, hi) padding of the dilated input, exactly as `jax.lax.conv_transpose` derives it."""
  k, s = kernel_size, stride
  if padding == "SAME":
    total = k + s - 2
    lo = k - 1 if s > k - 1 else int(np.ceil(total / 2))
  elif padding == "VALID":
    total = k + s - 2 + max(k - s, 0)
    lo = k - 1
  else:
    lo, total = padding[0], padding[0] + padding[1]
  return lo, total - lo


def _phase_plan(in_size: int, k: int, s: int, lo: int, hi: int):
  """Per dimension: output length, phase-grid length Q, dmin, and the 0/1 tap selection
  S[d - dmin, p, t] = 1 where tap t feeds phase p from input offset d."""
  out_size = (in_size - 1) * s + lo + hi - k + 2
  if out_size < 1:
    raise ValueError(
        f"conv_transpose: input size {in_size}, kernel {k}, stride {s}, padding ({lo}, {hi}) "
        f"gives an empty output ({out_size}).")
  offsets = {}
  for p in range(s):
    for t in range(k):
      if (p + t - lo) % s == 0:
        offsets[(p, t)] = (p + t - lo) // s
  dmin, dmax = min(offsets.values()), max(offsets.values())
  select = np.zeros((dmax - dmin + 1, s, k), np.float32)
  for (p, t), d in offsets.items():
    select[d - dmin, p, t] = 1.0
  q = -(-out_size // s)
  return out_size, q, dmin, dmax, select


def _padding_arg(padding):
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"conv_transpose padding must be 'SAME', 'VALID' or ((lo, hi), (lo, hi)), "
                       f"got {padding!r}.")
    return [padding.upper()] * 2
  if (isinstance(padding, Sequence) and len(padding) == 2
      and all(isinstance(p, Sequence) and len(p) == 2 for p in padding)):
    return [tuple(int(v) for v in p) for p in padding]
  raise ValueError(
      f"conv_transpose padding must be 'SAME', 'VALID' or ((lo, hi), (lo, hi)), got {padding!r}.")


def conv_transpose(x, kernel, stride, padding="SAME", precision=None):
  """Transposed convolution with the numbers (forward and gradients) of
  `jax.lax.conv_transpose(x, kernel, stride, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))`.

  Args:
    x: (N, H, W, Cin).
    kernel: (kh, kw, Cin, Cout) HWIO, not flipped (flax `nn.ConvTranspose` convention).
    stride: int or (sh, sw).
    padding: 'SAME' (output s*H x s*W), 'VALID', or explicit ((lo, hi), (lo, hi)) padding of the
      dilated input as in `lax.conv_transpose`.
    precision: passed to the convolution.
  Returns:
    (N, Ho, Wo, Cout).
  """
  nhwc(x)
  if kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
    raise ValueError(f"conv_transpose: kernel must be HWIO with I = {x.shape[3]} input channels, "
                     f"got kernel shape {tuple(kernel.shape)}.")
  strides = pair(stride, "stride")
  pads = _padding_arg(padding)
  kh, kw, cin, cout = kernel.shape
  plans = []
  for size, k, s, pad in zip(x.shape[1:3], (kh, kw), strides, pads):
    lo, hi = transpose_padding(k, s, pad)
    plans.append(_phase_plan(size, k, s, lo, hi))
  (out_h, qh, dmin_h, dmax_h, sel_h), (out_w, qw, dmin_w, dmax_w, sel_w) = plans
  sh, sw = strides
  # Combined phase kernel (Dh, Dw, Cin, sh*sw*Cout), channel order (ph, pw, cout).
  phase_kernel = jnp.einsum("aph,bqw,hwio->abipqo", sel_h.astype(kernel.dtype),
                            sel_w.astype(kernel.dtype), kernel, precision=lax.Precision.HIGHEST)
  phase_kernel = phase_kernel.reshape(sel_h.shape[0], sel_w.shape[0], cin, sh * sw * cout)
  zero = jnp.zeros((), x.dtype)
  x_pad = lax.pad(x, zero, ((0, 0, 0),
                            (-dmin_h, qh - 1 + dmax_h - (x.shape[1] - 1), 0),
                            (-dmin_w, qw - 1 + dmax_w - (x.shape[2] - 1), 0),
                            (0, 0, 0)))
  y = lax.conv_general_dilated(x_pad, phase_kernel, (1, 1), "VALID",
                               dimension_numbers=_DIMENSION_NUMBERS, precision=precision)
  n = x.shape[0]
  y = y.reshape(n, qh, qw, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(n, qh * sh, qw * sw, cout)
  return y[:, :out_h, :out_w, :]
