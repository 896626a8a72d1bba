"""XLA:CPU's convolutions under the kernels segjax's commands choose (`segjax.cli.use_fast_cpu_kernels`, which the
test session calls too), and in a subprocess with the opt-in oneDNN convolutions: output, input gradient and kernel
gradient against a float64 numpy convolution, on odd sizes with strides, dilations, padding, feature groups and the
input dilation of transposed convolutions."""

import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segjax import cli

DN = ("NHWC", "HWIO", "NHWC")
HERE = pathlib.Path(__file__).parent


def _dilate(x, factors):
    """Inserts factor-1 zeros between neighbours along H and W of an NHWC array."""
    n, h, w, c = x.shape
    out = np.zeros((n, (h - 1) * factors[0] + 1, (w - 1) * factors[1] + 1, c), x.dtype)
    out[:, :: factors[0], :: factors[1]] = x
    return out


def _taps(x_shape, k_shape, stride, padding, lhs_dilation, rhs_dilation):
    """(padded input shape, output H and W, [(kh, kw, rows, cols)]): which padded-input rows and columns each kernel
    tap reads for the output grid, all in the dilated and padded input's coordinates."""
    (_, h, w, _), (kh, kw) = x_shape, k_shape[:2]
    h, w = (h - 1) * lhs_dilation[0] + 1, (w - 1) * lhs_dilation[1] + 1
    (pt, pb), (pl, pr) = padding
    hp, wp = h + pt + pb, w + pl + pr
    out_h = (hp - (kh - 1) * rhs_dilation[0] - 1) // stride[0] + 1
    out_w = (wp - (kw - 1) * rhs_dilation[1] - 1) // stride[1] + 1
    taps = []
    for i in range(kh):
        for j in range(kw):
            rows = i * rhs_dilation[0] + stride[0] * np.arange(out_h)
            cols = j * rhs_dilation[1] + stride[1] * np.arange(out_w)
            taps.append((i, j, rows, cols))
    return (hp, wp), (out_h, out_w), taps


def _reference(x, k, cotangent, stride, padding, lhs_dilation, rhs_dilation, groups):
    """Output, d/dx and d/dk of lax.conv_general_dilated (NHWC, HWIO) as float64 sums over the kernel's taps."""
    x, k, cotangent = (np.asarray(a, np.float64) for a in (x, k, cotangent))
    (pt, pb), (pl, pr) = padding
    xd = _dilate(x, lhs_dilation)
    xp = np.pad(xd, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    (hp, wp), (out_h, out_w), taps = _taps(x.shape, k.shape, stride, padding, lhs_dilation, rhs_dilation)
    cin, cout = k.shape[2], k.shape[3] // groups
    y = np.zeros((x.shape[0], out_h, out_w, k.shape[3]))
    dk = np.zeros_like(k)
    dxp = np.zeros_like(xp)
    for i, j, rows, cols in taps:
        for g in range(groups):
            xs = xp[:, rows][:, :, cols][..., g * cin : (g + 1) * cin]  # (N, out_h, out_w, cin)
            kg = k[i, j, :, g * cout : (g + 1) * cout]  # (cin, cout)
            cg = cotangent[..., g * cout : (g + 1) * cout]
            y[..., g * cout : (g + 1) * cout] += xs @ kg
            dk[i, j, :, g * cout : (g + 1) * cout] += np.einsum("nhwc,nhwo->co", xs, cg)
            np.add.at(dxp, (slice(None), rows[:, None], cols[None, :], slice(g * cin, (g + 1) * cin)), cg @ kg.T)
    dx = dxp[:, pt : hp - pb, pl : wp - pr][:, :: lhs_dilation[0], :: lhs_dilation[1]]
    return y, dx, dk


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _xla(x, k, cotangent, stride, padding, lhs_dilation, rhs_dilation, groups):
    def conv(x, k):
        return lax.conv_general_dilated(
            x, k, stride, padding, lhs_dilation, rhs_dilation, DN, feature_group_count=groups, precision="highest"
        )

    y, vjp = jax.vjp(conv, x, k)
    return (y, *vjp(cotangent))


CASES = [  # x shape, kernel shape, stride, padding, input (lhs) dilation, kernel (rhs) dilation, feature groups
    ((3, 7, 5, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),
    ((2, 9, 11, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),
    ((2, 13, 9, 5), (3, 5, 5, 7), (1, 3), ((0, 2), (3, 1)), (1, 1), (1, 1), 1),
    ((2, 11, 13, 3), (3, 3, 3, 4), (1, 1), ((2, 2), (2, 2)), (1, 1), (2, 2), 1),
    ((1, 17, 15, 6), (3, 3, 6, 6), (1, 1), ((3, 3), (5, 5)), (1, 1), (3, 5), 1),
    ((2, 7, 9, 6), (3, 3, 2, 9), (2, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 3),
    ((2, 5, 5, 6), (3, 3, 1, 6), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 6),
    ((2, 5, 7, 4), (2, 2, 4, 3), (1, 1), ((1, 1), (1, 1)), (2, 2), (1, 1), 1),
    ((1, 5, 4, 3), (4, 4, 3, 2), (1, 1), ((2, 2), (2, 2)), (3, 2), (1, 1), 1),
    ((4, 1, 1, 8), (1, 1, 8, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1),
    ((16, 32, 32, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1),  # the ablation preset's shape
]


def check(case):
    """Asserts that XLA's output and gradients of one case equal the float64 reference within float32 rounding."""
    x_shape, k_shape, stride, padding, lhs_dilation, rhs_dilation, groups = case
    rng = np.random.default_rng(sum(x_shape) + sum(k_shape))
    x = rng.normal(size=x_shape).astype(np.float32)
    k = rng.normal(size=k_shape).astype(np.float32)
    y_shape = jax.eval_shape(
        lambda x, k: lax.conv_general_dilated(x, k, stride, padding, lhs_dilation, rhs_dilation, DN, groups), x, k
    ).shape
    cotangent = rng.normal(size=y_shape).astype(np.float32)
    ours = _xla(x, k, cotangent, stride, padding, lhs_dilation, rhs_dilation, groups)
    reference = _reference(x, k, cotangent, stride, padding, lhs_dilation, rhs_dilation, groups)
    for name, a, b in zip(("output", "d/dx", "d/dkernel"), ours, reference, strict=True):
        assert a.shape == b.shape, name
        # float32 rounding of sums of up to a few thousand products of unit normals, scaled by each sum's size
        scale = np.sqrt(np.mean(b**2)) + 1e-12
        np.testing.assert_allclose(np.asarray(a, np.float64) / scale, b / scale, rtol=0, atol=2e-5, err_msg=name)


def onednn_calls() -> int:
    """How many oneDNN convolution calls XLA compiles a 3x3 convolution's output and two gradients into."""
    x, k, cotangent = (np.ones(shape, np.float32) for shape in ((1, 5, 5, 2), (3, 3, 2, 2), (1, 5, 5, 2)))
    compiled = _xla.lower(x, k, cotangent, (1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), 1).compile()
    return compiled.as_text().count("__onednn$convolution")


@pytest.mark.parametrize("case", CASES, ids=[f"x{c[0]}-k{c[1]}-s{c[2]}-ld{c[4]}-rd{c[5]}-g{c[6]}" for c in CASES])
def test_convolution_and_its_gradients_match_a_float64_reference(case):
    check(case)


@pytest.mark.skipif(not cli.jaxlib_knows(cli.ONEDNN_FLAG[2:].split("=")[0]), reason="no oneDNN calls in this jaxlib")
def test_onednn_convolutions_match_the_reference_too():
    """The opt-in kernels (SEGJAX_XLA_CPU_ONEDNN=1), in a process of their own: XLA reads its flags once."""
    code = (
        "from segjax import cli; cli.use_fast_cpu_kernels(); import test_cpu_kernels as t; "
        "assert t.onednn_calls() == 3, t.onednn_calls(); [t.check(case) for case in t.CASES]"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"SEGJAX_XLA_CPU_ONEDNN": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's kernels")
def test_the_session_uses_the_kernels_its_flags_choose():
    """Else the comparisons above would test another convolution than the one segjax runs."""
    assert onednn_calls() == (3 if cli.xla_flag_set(cli.ONEDNN_FLAG) else 0)


def test_the_reference_agrees_with_lax_in_float64():
    """The numpy reference is itself checked against XLA's float64 convolution, on a case with strides and groups."""
    x_shape, k_shape, stride, padding, lhs_dilation, rhs_dilation, groups = CASES[5]
    rng = np.random.default_rng(0)
    x, k = rng.normal(size=x_shape), rng.normal(size=k_shape)
    with jax.enable_x64(True):
        y, vjp = jax.vjp(
            lambda x, k: lax.conv_general_dilated(x, k, stride, padding, lhs_dilation, rhs_dilation, DN, groups),
            jnp.asarray(x),
            jnp.asarray(k),
        )
        cotangent = rng.normal(size=y.shape)
        expected = (y, *vjp(jnp.asarray(cotangent)))
    reference = _reference(x, k, cotangent, stride, padding, lhs_dilation, rhs_dilation, groups)
    for a, b in zip(reference, expected, strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=1e-12)
