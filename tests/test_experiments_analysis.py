"""experiments.analysis and experiments.split: the measurements of one run (their definitions; the tiny sweep of
test_experiments_report.py runs them on trained networks)."""

import jax
import numpy as np
import pytest

from experiments import analysis, results, split
from segjax import models
from segjax.ops import checkerboard_score


def test_phase_map_matches_checkerboard_score_definition():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 1.0, size=(2, 13, 11, 3)).astype(np.float32)
    y[:, ::2, ::2, 1] += 2.0  # channel 1 has a period-2 pattern
    m = analysis.phase_means(y, 2, 2)  # border 2 keeps the pattern on phase (0, 0)
    expected = np.mean(m.std(axis=(0, 1)) / np.sqrt((m**2).mean(axis=(0, 1))))
    assert float(checkerboard_score(y, 2, 2, detrend=False)) == pytest.approx(expected, rel=1e-5)
    pm = analysis.phase_map(y, 2, 2)
    assert pm[0, 0] > 0 and pm[1, 1] < 0 and pm.sum() == pytest.approx(0, abs=1e-9)


def test_share_oracle_of_a_stride():
    """Columns of stride cells are recovered exactly (bilinear blending between two cells flips at their edge; where
    four cells meet, two of one class can outweigh the pixel's own, so 2-D layouts are not exact); a 1-px line is
    lost at stride 8 and kept at stride 1; ignored pixels count nowhere; odd sizes are padded with ignore."""
    rng = np.random.default_rng(0)
    cells = np.repeat(rng.integers(0, 3, size=(2, 1, 5)), 3, axis=1)  # constant along rows of cells
    labels = np.kron(cells, np.ones((8, 8), np.int64))  # (2, 24, 40), constant on 8x8 cells
    labels[0, :2, :3] = 255
    confusion = analysis.oracle_confusion(labels, 8, 3, 255)
    assert confusion.sum() == (labels != 255).sum() and confusion.trace() == confusion.sum()
    line = np.zeros((1, 17, 23), np.int64)
    line[0, 9, :] = 1  # thinner than a cell: its share never wins the argmax
    assert analysis.oracle_confusion(line, 8, 2, 255)[1, 1] == 0
    assert np.array_equal(np.diag(analysis.oracle_confusion(line, 1, 2, 255)), [17 * 23 - 23, 23])


def test_a_map_too_small_for_its_stride_is_not_measured():
    # FCN-32s's logits on the smoke test's 32 px images: the analysis stopped with a ValueError (reproductions_cpu).
    y = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    assert np.isnan(split.detrended_score(y, 32))
    assert split.detrended_score(y, 2) == float(checkerboard_score(y, 2, border=2))


def test_split_columns_average_the_measured_values_only():
    # The deepest encoder level of a 32 px smoke image is too small to measure at factor 2: null in analysis.json.
    checkerboard = {"encoder_gradient_magnitude_2": {"a": 0.2, "b": 0.4, "c": None}, "upsamplers": [None, None]}
    columns = results.split_columns({"checkerboard": checkerboard})
    assert columns["cb_encoder_gradient"] == pytest.approx(0.3) and columns["cb_upsamplers"] is None


def test_shift_agreements_count_each_shift_as_two_plain_predictions_do():
    # One program predicts the unshifted crop once for every shift; counted here crop by crop, in numpy.
    model = models.create_model(dict(name="unet", preset="small", base_width=4, depth=2), 3)
    images = np.random.default_rng(0).normal(size=(2, 21, 19, 3)).astype(np.float32)
    variables = model.init(jax.random.key(0), images[:1], train=False)
    same, compared = split._shift_agreements(model, variables, images)
    h, w = 21 - split.SHIFT_MARGIN, 19 - split.SHIFT_MARGIN

    def predict(crop):
        return np.asarray(model.apply(variables, crop, train=False)).argmax(-1)

    base = predict(images[:, :h, :w])
    for k, s in enumerate(split.SHIFTS):
        alike = base[:, s:, s:] == predict(images[:, s : s + h, s : s + w])[:, : h - s, : w - s]
        assert (int(same[k]), int(compared[k])) == (alike.sum(), alike.size)
    assert 0 < int(same.sum()) < int(compared.sum())  # neither all alike nor none: the counts are not trivial
