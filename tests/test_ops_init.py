"""Bilinear kernel, ICNR and the checkerboard score against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from segjax.ops import (
    bed_of_nails,
    bilinear_kernel,
    bilinear_upsample,
    checkerboard_region,
    checkerboard_score,
    conv_transpose,
    delta_kernel,
    icnr_init,
    local_mean_kernel,
    nearest_upsample,
    pixel_shuffle,
)


@pytest.mark.parametrize("size", [3, 4])
def test_bilinear_kernel_formula(size):
    k = np.asarray(bilinear_kernel(size, 2))
    f = (size + 1) // 2
    centre = f - 1 if size % 2 else f - 0.5
    for i, j in np.ndindex(size, size):
        w = (1 - abs(i - centre) / f) * (1 - abs(j - centre) / f)
        np.testing.assert_allclose(k[i, j], w * np.eye(2), rtol=1e-6)
    if size == 4:
        np.testing.assert_allclose(k[:, 0, 0, 0], [1 / 16, 3 / 16, 3 / 16, 1 / 16])


@pytest.mark.parametrize("factor", [2, 3])
def test_bilinear_kernel_transposed_conv_is_bilinear_upsampling_inside(factor):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 7, 2)), jnp.float32)
    size = 2 * factor - factor % 2
    y = conv_transpose(x, bilinear_kernel(size, 2), factor, "SAME")
    ref = bilinear_upsample(x, factor)
    b = factor  # borders differ: zero padding vs edge clamping
    np.testing.assert_allclose(y[:, b:-b, b:-b], ref[:, b:-b, b:-b], atol=1e-5)


@pytest.mark.parametrize("group,size", [(2, 4), (3, 3)])
def test_channel_reducing_bilinear_kernel_upsamples_group_means(group, size):
    """in = group * out channels: output o is the bilinear upsampling of the mean of inputs group*o .. +group-1."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 7, 5, 2 * group)), jnp.float32)
    factor = 2
    kernel = bilinear_kernel(size, 2 * group, 2)
    assert kernel.shape == (size, size, 2 * group, 2)
    np.testing.assert_allclose(np.asarray(kernel).sum(axis=2), np.asarray(bilinear_kernel(size, 2)).sum(axis=2))
    y = conv_transpose(x, kernel, factor, "SAME")
    means = x.reshape(2, 7, 5, 2, group).mean(-1)
    if size == 2 * factor - factor % 2:
        ref = bilinear_upsample(means, factor)
        np.testing.assert_allclose(y[:, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5)
    # Any size: the same as the diagonal kernel applied to the group means (the convolution is linear).
    np.testing.assert_allclose(y, conv_transpose(means, bilinear_kernel(size, 2), factor, "SAME"), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the output channels"):
        bilinear_kernel(4, 5, 2)


def test_icnr_pixel_shuffle_equals_conv_then_nearest():
    factor, features = 2, 3
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 6, 4)), jnp.float32)
    conv = nn.Conv(
        features * factor**2,
        (3, 3),
        kernel_init=icnr_init(factor=factor),
        bias_init=nn.initializers.normal(1.0),
        use_bias=False,
    )
    params = conv.init(jax.random.key(0), x)
    kernel = params["params"]["kernel"]
    y = pixel_shuffle(conv.apply(params, x), factor)
    sub = kernel[..., :: factor**2]  # the sub-kernel (channel c*r*r of the full kernel is channel c)
    np.testing.assert_array_equal(kernel, jnp.repeat(sub, factor**2, axis=-1))
    ref = nearest_upsample(nn.Conv(features, (3, 3), use_bias=False).apply({"params": {"kernel": sub}}, x), factor)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by factor"):
        icnr_init(factor=2)(jax.random.key(0), (3, 3, 4, 6))


@pytest.mark.parametrize(
    "detrend,regions",
    [
        # the local mean's valid region (factor 2 and 3: 3 taps, 4: 5 taps, 32: 33 taps), the border, whole cells
        (True, [(2, 2), (3, 9), (4, 4), (-64, -64), (0, 2)]),
        (False, [(4, 4), (6, 9), (8, 8), (-32, -32), (2, 4)]),
    ],
)
def test_checkerboard_region_is_what_the_score_measures(detrend, regions):
    # Regions worked out by hand; the score refuses exactly the maps whose region holds no whole cell.
    cases = [(2, 0, 5, 4), (3, 1, 9, 13), (4, 4, 17, 16), (32, 32, 32, 32), (2, 2, 7, 9)]
    for (factor, border, height, width), expected in zip(cases, regions, strict=True):
        region = checkerboard_region(height, width, factor, border, detrend)
        assert region == expected
        y = jnp.asarray(np.random.default_rng(factor).normal(size=(1, height, width, 2)), jnp.float32)
        if min(region) < factor:
            with pytest.raises(ValueError, match="leaves no whole"):
                checkerboard_score(y, factor, border, detrend)
        else:
            assert np.isfinite(float(checkerboard_score(y, factor, border, detrend)))


def test_checkerboard_score_without_detrending_is_the_original_measure():
    ones = jnp.ones((2, 3, 3, 2))
    for f in (2, 3):
        np.testing.assert_allclose(
            checkerboard_score(bed_of_nails(ones, f), f, detrend=False), np.sqrt(1 - 1 / f**2), rtol=1e-6
        )
    smooth = nearest_upsample(jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3))), 2)
    assert float(checkerboard_score(smooth, 2, detrend=False)) < 1e-6  # all phases equal (means of the same values)
    assert float(checkerboard_score(jnp.zeros((1, 4, 4, 1)), 2, detrend=False)) == 0.0
    # Formula on a random map with a border and an odd size left after the crop.
    y = np.random.default_rng(2).uniform(size=(2, 11, 10, 2)).astype(np.float32)
    crop = y[:, 1:9, 1:9]
    m = np.stack([[crop[:, a::2, b::2].mean((0, 1, 2)) for b in range(2)] for a in range(2)])
    ref = np.mean(m.std((0, 1)) / np.sqrt((m**2).mean((0, 1))))
    np.testing.assert_allclose(checkerboard_score(jnp.asarray(y), 2, border=1, detrend=False), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="border"):
        checkerboard_score(jnp.asarray(y), 2, border=5, detrend=False)


def _detrended_score_reference(y, f, border):
    """The detrended score written out in numpy: the local mean by explicit loops, then the phase-mean energy."""
    y = np.asarray(y, np.float64)
    taps = local_mean_kernel(f)
    k, half = len(taps), (len(taps) - 1) // 2
    n, h, w, c = y.shape
    r = np.zeros((n, h - k + 1, w - k + 1, c))
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            window = y[:, i : i + k, j : j + k]
            r[:, i, j] = y[:, i + half, j + half] - np.einsum("nabc,a,b->nc", window, taps, taps)
    hh, ww = (r.shape[1] - 2 * border) // f * f, (r.shape[2] - 2 * border) // f * f
    r = r[:, border : border + hh, border : border + ww]
    phases = np.array([[r[:, a::f, b::f].mean((0, 1, 2)) for b in range(f)] for a in range(f)])
    return np.sqrt((phases**2).sum(-1).mean() / (r**2).sum(-1).mean())


@pytest.mark.parametrize("f,border,shape", [(2, 0, (2, 13, 11, 3)), (3, 1, (1, 17, 19, 2)), (4, 2, (2, 21, 18, 1))])
def test_detrended_checkerboard_score_cases(f, border, shape):
    rng = np.random.default_rng(f)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]]
    ramp = (0.3 * yy - 0.2 * xx + 5.0)[None, :, :, None] * np.ones(shape)
    pattern = np.tile(rng.normal(size=(f, f)), (shape[1] // f + 1, shape[2] // f + 1))[: shape[1], : shape[2]]
    pattern = (pattern - pattern[:f, :f].mean())[None, :, :, None] * np.ones(shape)

    def score(y):
        return float(checkerboard_score(jnp.asarray(y, jnp.float32), f, border))

    assert score(np.full(shape, 3.3)) == 0.0 and score(ramp) == 0.0  # nothing periodic: constants and ramps
    assert score(ramp + 2 * pattern) == pytest.approx(1.0, abs=1e-5)  # a pure period-f pattern on a ramp
    noisy = ramp + pattern + rng.normal(size=shape)  # ties: rounded values
    noisy = np.round(noisy, 1)
    assert score(noisy) == pytest.approx(_detrended_score_reference(noisy, f, border), rel=1e-4)
    assert score(7.0 * noisy - 3.0) == pytest.approx(score(noisy), rel=1e-4)  # unchanged by scale and offset
    assert 0 < score(rng.normal(size=shape)) < 0.5  # noise: only its small phase-mean share


def test_bed_of_nails_at_init_stands_above_the_noise_floor():
    """Upsampled from the same random map: bed of nails puts its values on one phase; nearest and bilinear do not,
    and score at the level of a ground-truth-like floor (random maps upsampled without artifacts)."""
    x = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, size=(2, 16, 16, 4)), jnp.float32)
    floor = max(
        float(checkerboard_score(nearest_upsample(x, 2), 2)), float(checkerboard_score(bilinear_upsample(x, 2), 2))
    )
    assert floor < 0.05 and float(checkerboard_score(bed_of_nails(x, 2), 2)) > 0.9


@pytest.mark.parametrize("k,expected", [(2, 0.0), (3, 0.436), (4, 0.0), (5, 0.275)])
def test_uniform_kernel_probe_of_odena(k, expected):
    """Odena et al.'s structural claim: with equal weights, a stride-2 transposed convolution of kernel 3 or 5
    (uneven overlap) still prints a checkerboard on a constant input; kernels 2 and 4 (even overlap) do not.
    Values of the original (mean-relative) measure; the detrended one calls both 1: a pure pattern."""
    y = conv_transpose(jnp.ones((1, 16, 16, 1)), jnp.ones((k, k, 1, 1)), 2, "SAME")
    assert float(checkerboard_score(y, 2, border=3, detrend=False)) == pytest.approx(expected, abs=5e-4)
    assert float(checkerboard_score(y, 2, border=3)) == pytest.approx(1.0 if expected else 0.0, abs=1e-5)


@pytest.mark.parametrize("size, channels, out", [(3, 6, 3), (4, 5, 5), (1, 4, 1)])
def test_delta_kernel_averages_channel_groups_at_the_offset_zero_tap(size, channels, out):
    """A SAME convolution with delta_kernel equals the mean over each channel group (odd and even sizes)."""
    x = np.random.default_rng(size).normal(size=(2, 7, 9, channels)).astype(np.float32)
    y = lax.conv_general_dilated(
        x, delta_kernel(size, channels, out), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(y, x.reshape(2, 7, 9, out, channels // out).mean(-1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of the output channels"):
        delta_kernel(3, 5, 2)
