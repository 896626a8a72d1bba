"""Transposed convolution computed as stride-1 convolutions on the input plus a depth-to-space.

`jax.lax.conv_transpose(x, k, s, padding)` (NHWC/HWIO, transpose_kernel=False) is a stride-1
correlation of the input dilated by s (s-1 zeros between pixels) and padded (lo, hi), with the
unflipped kernel. Most of the dilated input is zeros, and XLA's gradient of that lhs-dilated
convolution is very slow on CPU. Per dimension, output o = s*q + p (phase p) only reads inputs
i = q + d with d = (p + t - lo) / s for the taps t where that division is exact: phase p is a stride-1
convolution of the (padded) input with the kernel taps k[t0::s]. All phases together are one convolution
over the window of offsets [dmin, dmax] with the combined kernel W'[d - dmin, cin, (ph, pw, cout)] =
k[s*d - p + lo] (zero where a phase has no tap at offset d), giving all s*s phases as channels. A
depth-to-space and a crop give the output.

Gradients are those of that stride-1 convolution and of the (linear) kernel combination, so they avoid
XLA's very slow gradient of the lhs-dilated convolution behind `lax.conv_transpose` on CPU.
"""

from collections.abc import Sequence
from typing import NamedTuple

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


class _AxisPlan(NamedTuple):
    """How one spatial axis of a transposed convolution splits into stride phases."""

    out_size: int  # length of the transposed-convolution output
    q: int  # length of each phase's output grid (ceil(out_size / stride))
    dmin: int  # smallest input offset d read by any phase
    dmax: int  # largest input offset
    stride: int
    kernel_size: int
    phases: tuple  # per phase p: (first offset d, first tap t, number of taps); taps t, t+s, ...


def _axis_plan(in_size: int, k: int, s: int, lo: int, hi: int) -> _AxisPlan:
    out_size = (in_size - 1) * s + lo + hi - k + 2
    if out_size < 1:
        raise ValueError(
            f"conv_transpose: input size {in_size}, kernel {k}, stride {s}, padding ({lo}, {hi}) "
            f"gives an empty output ({out_size})."
        )
    phases, offsets = [], []
    for p in range(s):
        taps = [t for t in range(k) if (p + t - lo) % s == 0]
        ds = [(p + t - lo) // s for t in taps]
        phases.append((ds[0], taps[0], len(taps)) if taps else (0, 0, 0))
        offsets += ds
    return _AxisPlan(out_size, -(-out_size // s), min(offsets), max(offsets), s, k, tuple(phases))


def _selection(plan: _AxisPlan) -> np.ndarray:
    """(dmax - dmin + 1, stride, k) 0/1 array: 1 where tap t feeds phase p from input offset d."""
    select = np.zeros((plan.dmax - plan.dmin + 1, plan.stride, plan.kernel_size), np.float32)
    for p, (d0, t0, count) in enumerate(plan.phases):
        for j in range(count):
            select[d0 + j - plan.dmin, p, t0 + j * plan.stride] = 1.0
    return select


def _combined_kernel(kernel, ph: _AxisPlan, pw: _AxisPlan):
    """W'[d_h - dmin_h, d_w - dmin_w, cin, (p_h, p_w, cout)]: every phase's taps in one dense kernel."""
    sel_h, sel_w = _selection(ph), _selection(pw)
    w = jnp.einsum(
        "aph,bqw,hwio->abipqo",
        sel_h.astype(kernel.dtype),
        sel_w.astype(kernel.dtype),
        kernel,
        precision=lax.Precision.HIGHEST,
    )
    return w.reshape(sel_h.shape[0], sel_w.shape[0], kernel.shape[2], -1)


def _phase_outputs(x_pad, kernel, ph: _AxisPlan, pw: _AxisPlan, precision):
    """All phases of the transposed convolution, (N, Qh, sh, Qw, sw, Cout), from the padded input: one
    stride-1 convolution with the combined kernel (XLA's dense convolution beats several small per-phase
    ones even with the zero taps). Its gradients are those of a plain convolution, fast on every backend."""
    n, cout = x_pad.shape[0], kernel.shape[3]
    y = lax.conv_general_dilated(
        x_pad,
        _combined_kernel(kernel, ph, pw),
        (1, 1),
        "VALID",
        dimension_numbers=_DIMENSION_NUMBERS,
        precision=precision,
    )
    return y.reshape(n, ph.q, pw.q, ph.stride, pw.stride, cout).transpose(0, 1, 3, 2, 4, 5)


def _padding_arg(padding):
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"conv_transpose padding must be 'SAME', 'VALID' or ((lo, hi), (lo, hi)), got {padding!r}."
            )
        return [padding.upper()] * 2
    if (
        isinstance(padding, Sequence)
        and len(padding) == 2
        and all(isinstance(p, Sequence) and len(p) == 2 for p in padding)
    ):
        return [tuple(int(v) for v in p) for p in padding]
    raise ValueError(f"conv_transpose padding must be 'SAME', 'VALID' or ((lo, hi), (lo, hi)), got {padding!r}.")


def conv_transpose(x, kernel, stride, padding="SAME", precision=None):
    """Transposed convolution with the numbers (forward and gradients) of
    `jax.lax.conv_transpose(x, kernel, stride, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))`.

    Args:
      x: (N, H, W, Cin).
      kernel: (kh, kw, Cin, Cout) HWIO, not flipped (flax `nn.ConvTranspose` convention).
      stride: int or (sh, sw).
      padding: 'SAME' (output s*H x s*W), 'VALID', or explicit ((lo, hi), (lo, hi)) padding of the
        dilated input as in `lax.conv_transpose`.
      precision: passed to the convolutions.
    Returns:
      (N, Ho, Wo, Cout).
    """
    nhwc(x)
    if kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"conv_transpose: kernel must be HWIO with I = {x.shape[3]} input channels, "
            f"got kernel shape {tuple(kernel.shape)}."
        )
    strides = pair(stride, "stride")
    pads = _padding_arg(padding)
    kh, kw, cin, cout = kernel.shape
    ph, pw = (
        _axis_plan(size, k, s, *transpose_padding(k, s, pad))
        for size, k, s, pad in zip(x.shape[1:3], (kh, kw), strides, pads, strict=True)
    )
    x_pad = lax.pad(
        x,
        jnp.zeros((), x.dtype),
        (
            (0, 0, 0),
            (-ph.dmin, ph.q - 1 + ph.dmax - (x.shape[1] - 1), 0),
            (-pw.dmin, pw.q - 1 + pw.dmax - (x.shape[2] - 1), 0),
            (0, 0, 0),
        ),
    )
    y = _phase_outputs(x_pad, kernel, ph, pw, precision)
    y = y.reshape(x.shape[0], ph.q * ph.stride, pw.q * pw.stride, cout)
    return y[:, : ph.out_size, : pw.out_size, :]
