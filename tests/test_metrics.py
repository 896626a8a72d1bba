"""segjax.metrics against hand-computed values and plain numpy / scipy references."""

import numpy as np
import pytest
import scipy.ndimage

from segjax import metrics

IGNORE = 255

# --------------------------------------------------------------------------------------------------------------
# A fake model with fixed logits: every number below is computed by hand.
# --------------------------------------------------------------------------------------------------------------
FAKE_LABELS = np.array([[[0, 0, 1, 1], [0, 2, 1, IGNORE], [2, 2, 2, IGNORE]]], np.int32)
FAKE_PREDICTIONS = np.array([[[0, 1, 1, 1], [0, 2, 2, 0], [2, 2, 3, 1]]], np.int32)
FAKE_NUM_CLASSES = 5  # class 3 is only predicted, class 4 appears nowhere


def fake_model_logits():
    """Fixed logits whose argmax is FAKE_PREDICTIONS (with a near-tie, so argmax must pick the larger)."""
    logits = np.full(FAKE_PREDICTIONS.shape + (FAKE_NUM_CLASSES,), -1.0, np.float32)
    np.put_along_axis(logits, FAKE_PREDICTIONS[..., None], 2.0, axis=-1)
    logits[0, 0, 0, 4] = 1.999  # near-tie with the winning class 0
    return logits


def test_fake_model_exact_scores():
    predictions = fake_model_logits().argmax(-1)
    confusion = np.asarray(metrics.confusion_matrix(FAKE_LABELS, predictions, FAKE_NUM_CLASSES))
    np.testing.assert_array_equal(
        confusion, [[2, 1, 0, 0, 0], [0, 2, 1, 0, 0], [0, 0, 3, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    )
    assert confusion.dtype == np.int32
    scores = metrics.compute_scores(confusion)
    # t = [3, 3, 4, 0, 0], predicted = [2, 3, 4, 1, 0], 10 valid pixels, 7 correct.
    assert scores["pixel_accuracy"] == pytest.approx(7 / 10)
    np.testing.assert_allclose(scores["per_class_accuracy"], [2 / 3, 2 / 3, 3 / 4, np.nan, np.nan])
    assert scores["mean_pixel_accuracy"] == pytest.approx(25 / 36)  # mean over the classes in the ground truth
    np.testing.assert_allclose(scores["per_class_iou"], [2 / 3, 1 / 2, 3 / 5, 0.0, np.nan])
    assert scores["mean_iou"] == pytest.approx(53 / 120)  # class 3 (predicted only) counts, class 4 does not
    assert scores["frequency_weighted_iou"] == pytest.approx((3 * 2 / 3 + 3 * 1 / 2 + 4 * 3 / 5) / 10)
    np.testing.assert_allclose(scores["per_class_dice"], [4 / 5, 2 / 3, 3 / 4, 0.0, np.nan])
    assert scores["mean_dice"] == pytest.approx(133 / 240)


def test_fake_model_boundary_f1_by_hand():
    # A vertical edge predicted one column too far right; a column of ignore pixels on the right.
    labels = np.array([[[0, 0, 1, 1, IGNORE]] * 4], np.int32)
    predictions = np.array([[[0, 0, 0, 1, 1]] * 4], np.int32)
    exact = metrics.boundary_statistics(labels, predictions, 2, tolerance=0)
    np.testing.assert_array_equal(exact["gt_total"], [4, 4])  # columns 1 and 2
    np.testing.assert_array_equal(exact["pred_total"], [4, 4])  # columns 2 and 3 (not 4: its neighbour is ignored)
    np.testing.assert_array_equal(exact["pred_matched"], [0, 0])
    scores = metrics.boundary_scores(exact)
    assert scores["boundary_f1"] == 0.0
    np.testing.assert_array_equal(scores["per_class_aggregate_boundary_f1"], [0.0, 0.0])
    tolerant = metrics.boundary_scores(metrics.boundary_statistics(labels, predictions, 2, tolerance=1))
    assert tolerant["boundary_f1"] == pytest.approx(1.0)
    assert tolerant["aggregate_boundary_f1"] == pytest.approx(1.0)


def test_perfect_prediction_has_boundary_f1_one_despite_ignore_padding():
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(0, 4, (2, 4, 5)), np.ones((1, 3, 3), np.int64)).astype(np.int32)
    labels[:, -3:, :] = IGNORE  # eval padding
    labels[1] = IGNORE  # a whole padded image: not counted
    predictions = np.where(labels == IGNORE, rng.integers(0, 4, labels.shape), labels)
    stats = metrics.boundary_statistics(labels, predictions, 4, tolerance=0)
    assert int(stats["image_count"]) == 1
    scores = metrics.boundary_scores(stats)
    assert scores["boundary_f1"] == pytest.approx(1.0)
    assert scores["aggregate_boundary_f1"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------------------
# Random labels against plain references.
# --------------------------------------------------------------------------------------------------------------
NUM_CLASSES = 6  # class 4: predicted but never in the ground truth; class 5: nowhere


def random_batch(seed, shape=(3, 13, 11)):
    """Blobby labels with ignore pixels, and predictions that mostly agree, to exercise real boundaries."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    coarse = rng.integers(0, 4, (n, (h + 2) // 3, (w + 2) // 3))
    labels = np.kron(coarse, np.ones((1, 3, 3), np.int64))[:, :h, :w]
    noise = rng.random(shape)
    labels = np.where(noise < 0.08, rng.integers(0, 4, shape), labels)
    labels = np.where(noise > 0.9, IGNORE, labels).astype(np.int32)
    predictions = np.where(
        rng.random(shape) < 0.75, np.where(labels == IGNORE, 0, labels), rng.integers(0, 5, shape)
    ).astype(np.int32)
    predictions = np.roll(predictions, 1, axis=2)  # boundaries slightly off
    return labels, predictions


def reference_confusion(labels, predictions, num_classes):
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for label, prediction in zip(labels.ravel(), predictions.ravel(), strict=True):
        if label != IGNORE:
            confusion[label, prediction] += 1
    return confusion


def reference_scores(confusion):
    c = confusion.astype(np.float64)
    k = c.shape[0]
    t = c.sum(1)
    p = c.sum(0)
    iou = [c[i, i] / (t[i] + p[i] - c[i, i]) if t[i] + p[i] > 0 else np.nan for i in range(k)]
    acc = [c[i, i] / t[i] if t[i] > 0 else np.nan for i in range(k)]
    dice = [2 * c[i, i] / (t[i] + p[i]) if t[i] + p[i] > 0 else np.nan for i in range(k)]
    present = [i for i in range(k) if t[i] + p[i] > 0]
    in_gt = [i for i in range(k) if t[i] > 0]
    return {
        "pixel_accuracy": np.trace(c) / c.sum(),
        "mean_pixel_accuracy": np.mean([acc[i] for i in in_gt]),
        "mean_iou": np.mean([iou[i] for i in present]),
        "frequency_weighted_iou": sum(t[i] * iou[i] for i in present) / t.sum(),
        "mean_dice": np.mean([dice[i] for i in present]),
        "per_class_iou": iou,
        "per_class_accuracy": acc,
        "per_class_dice": dice,
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_and_scores_match_numpy_reference(seed):
    labels, predictions = random_batch(seed)
    confusion = np.asarray(metrics.confusion_matrix(labels, predictions, NUM_CLASSES))
    expected = reference_confusion(labels, predictions, NUM_CLASSES)
    np.testing.assert_array_equal(confusion, expected)
    assert expected[4].sum() == 0 and expected[:, 4].sum() > 0 and expected[5].sum() + expected[:, 5].sum() == 0
    scores = metrics.compute_scores(confusion)
    for key, value in reference_scores(expected).items():
        np.testing.assert_allclose(scores[key], value, rtol=1e-12, err_msg=key)


def test_confusion_matrices_sum_over_batches():
    labels, predictions = random_batch(2, shape=(4, 13, 11))
    whole = metrics.confusion_matrix(labels, predictions, NUM_CLASSES)
    parts = sum(
        np.asarray(metrics.confusion_matrix(labels[i : i + 2], predictions[i : i + 2], NUM_CLASSES)) for i in (0, 2)
    )
    np.testing.assert_array_equal(whole, parts)


def test_out_of_range_labels_are_counted_apart_and_reported():
    labels = np.array([[0, 1, 7, IGNORE, -1, 2]], np.int32)
    predictions = np.array([[0, 1, 1, 1, 0, 9]], np.int32)  # prediction 9 is out of range too
    confusion, invalid = metrics.confusion_matrix(labels, predictions, 3, return_invalid_count=True)
    assert int(invalid) == 3
    assert int(np.asarray(confusion).sum()) == 2
    with pytest.raises(ValueError, match=r"\[-1, 7\]"):
        metrics.check_labels(labels, 3)
    metrics.check_labels(np.array([0, 2, IGNORE]), 3)  # valid labels pass


def test_scores_of_empty_matrix_are_nan_and_bad_input_raises():
    scores = metrics.compute_scores(np.zeros((3, 3), np.int32))
    assert all(np.isnan(scores[key]) for key in ("pixel_accuracy", "mean_iou", "mean_pixel_accuracy"))
    with pytest.raises(ValueError, match="square"):
        metrics.compute_scores(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.boundary_statistics(np.zeros((1, 2, 2), np.int32), np.zeros((1, 2, 2), np.int32), 2, tolerance=-1)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.confusion_matrix(np.zeros(3, np.int32), np.zeros(3, np.int32), 0)


# --------------------------------------------------------------------------------------------------------------
# Boundary F1 against a plain numpy / scipy reference (distance transforms, not max pooling).
# --------------------------------------------------------------------------------------------------------------
def reference_boundary(classes, valid):
    """Valid pixels with a valid 4-neighbour of another class, by explicit loops."""
    h, w = classes.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a, b = i + di, j + dj
                if 0 <= a < h and 0 <= b < w and valid[i, j] and valid[a, b] and classes[a, b] != classes[i, j]:
                    out[i, j] = True
    return out


def reference_matched(source, target, tolerance):
    """Pixels of `source` within chessboard distance `tolerance` of a pixel of `target`."""
    if not target.any():
        return 0
    distance = scipy.ndimage.distance_transform_cdt(~target, metric="chessboard")
    return int((source & (distance <= tolerance)).sum())


def reference_boundary_statistics(labels, predictions, num_classes, tolerance):
    keys = ("pred_matched", "pred_total", "gt_matched", "gt_total", "class_f1_sum", "class_image_count")
    out = {key: np.zeros(num_classes) for key in keys}
    out["image_f1_sum"], out["image_count"] = 0.0, 0
    for gt_image, pred_image in zip(labels, predictions, strict=True):
        valid = gt_image != IGNORE
        gt_b, pred_b = reference_boundary(gt_image, valid), reference_boundary(pred_image, valid)
        image_f1s = []
        for c in range(num_classes):
            gt_c, pred_c = gt_b & (gt_image == c), pred_b & (pred_image == c)
            pm, pt = reference_matched(pred_c, gt_c, tolerance), pred_c.sum()
            gm, gt = reference_matched(gt_c, pred_c, tolerance), gt_c.sum()
            for key, value in zip(keys[:4], (pm, pt, gm, gt), strict=True):
                out[key][c] += value
            if pt == 0 and gt == 0:
                f1 = 1.0
            elif pt == 0 or gt == 0 or pm + gm == 0:
                f1 = 0.0
            else:
                precision, recall = pm / pt, gm / gt
                f1 = 2 * precision * recall / (precision + recall)
            if ((gt_image == c) & valid).any():
                out["class_f1_sum"][c] += f1
                out["class_image_count"][c] += 1
                image_f1s.append(f1)
        if image_f1s:
            out["image_f1_sum"] += np.mean(image_f1s)
            out["image_count"] += 1
    return out


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_boundary_statistics_match_scipy_reference(tolerance):
    labels, predictions = random_batch(3)
    labels[0, :, -2:] = IGNORE  # padding on the right of one image
    labels[2] = IGNORE  # an image of padding only
    stats = metrics.boundary_statistics(labels, predictions, NUM_CLASSES, tolerance=tolerance)
    expected = reference_boundary_statistics(labels, predictions, NUM_CLASSES, tolerance)
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(stats[key]), value, rtol=1e-6, atol=1e-6, err_msg=key)
    assert expected["gt_total"].sum() > 0 and 0 < expected["pred_matched"].sum() < expected["pred_total"].sum()

    scores = metrics.boundary_scores(stats)
    assert scores["boundary_f1"] == pytest.approx(expected["image_f1_sum"] / expected["image_count"], rel=1e-6)
    per_class = [
        expected["class_f1_sum"][c] / expected["class_image_count"][c] if expected["class_image_count"][c] else np.nan
        for c in range(NUM_CLASSES)
    ]
    np.testing.assert_allclose(scores["per_class_boundary_f1"], per_class, rtol=1e-6)
    aggregate = []
    for c in range(NUM_CLASSES):
        pm, pt, gm, gt = (expected[key][c] for key in ("pred_matched", "pred_total", "gt_matched", "gt_total"))
        if pt == 0 and gt == 0:
            aggregate.append(np.nan)
        elif pm == 0 or gm == 0:
            aggregate.append(0.0)
        else:
            aggregate.append(2 * (pm / pt) * (gm / gt) / (pm / pt + gm / gt))
    np.testing.assert_allclose(scores["per_class_aggregate_boundary_f1"], aggregate, rtol=1e-12)
    assert scores["aggregate_boundary_f1"] == pytest.approx(np.nanmean(aggregate), rel=1e-12)


def test_boundary_statistics_sum_over_batches():
    labels, predictions = random_batch(3)
    whole = metrics.boundary_statistics(labels, predictions, NUM_CLASSES, tolerance=1)
    first = metrics.boundary_statistics(labels[:1], predictions[:1], NUM_CLASSES, tolerance=1)
    rest = metrics.boundary_statistics(labels[1:], predictions[1:], NUM_CLASSES, tolerance=1)
    for key in whole:
        np.testing.assert_allclose(whole[key], np.asarray(first[key]) + np.asarray(rest[key]), rtol=1e-6)


def test_segnet_tolerance():
    assert metrics.segnet_boundary_tolerance(360, 480) == 5  # CamVid: 0.75% of a 600-pixel diagonal = 4.5
    assert metrics.segnet_boundary_tolerance(8, 8) == 1


def _boundary_reference(labels, ignore):
    """A pixel is on the boundary when a valid 4-neighbour has another class (both valid), written out."""
    n, h, w = labels.shape
    out = np.zeros(labels.shape, bool)
    for b, i, j in np.ndindex(n, h, w):
        if labels[b, i, j] == ignore:
            continue
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            y, x = i + di, j + dj
            if 0 <= y < h and 0 <= x < w and labels[b, y, x] != ignore and labels[b, y, x] != labels[b, i, j]:
                out[b, i, j] = True
    return out


@pytest.mark.parametrize("widths", [(0, 1, 2), (1, 3, 8)])
def test_trimap_confusion_matches_a_written_out_band(widths):
    rng = np.random.default_rng(11)
    labels = np.kron(rng.integers(0, 3, size=(2, 4, 5)), np.ones((1, 3, 3), int))[:, :11, :13]  # odd size, blocks
    labels[0, :2, :3] = 255
    predictions = np.where(rng.uniform(size=labels.shape) < 0.2, rng.integers(0, 3, size=labels.shape), labels)
    got = np.asarray(metrics.trimap_confusion(labels, predictions, 3, widths))
    edges = _boundary_reference(labels, 255)
    for k, w in enumerate(widths):
        band = np.zeros_like(edges)
        for b, i, j in zip(*np.nonzero(edges), strict=True):
            band[b, max(i - w, 0) : i + w + 1, max(j - w, 0) : j + w + 1] = True
        keep = band & (labels != 255)
        expected = np.zeros((3, 3), int)
        np.add.at(expected, (labels[keep], predictions[keep]), 1)
        np.testing.assert_array_equal(got[k], expected, err_msg=f"width {w}")
    # Wide enough, the band is every labelled pixel: the whole-image confusion matrix.
    whole = np.asarray(metrics.trimap_confusion(labels, predictions, 3, (20,)))[0]
    np.testing.assert_array_equal(whole, np.asarray(metrics.confusion_matrix(labels, predictions, 3)))


def test_phase_error_statistics_on_a_constructed_prediction():
    labels = np.zeros((2, 9, 10), np.int32)
    labels[:, 0, 0] = 255  # one ignored pixel on phase (0, 0) of each image
    predictions = labels.copy()
    predictions[:, 1::4, 2::4] = 1  # wrong exactly on phase (1, 2) of stride 4
    stats = metrics.phase_error_statistics(labels, predictions, 4)
    errors, pixels = np.asarray(stats["errors"]), np.asarray(stats["pixels"])
    expected_errors = np.zeros((4, 4), int)
    expected_errors[1, 2] = 2 * len(range(1, 9, 4)) * len(range(2, 10, 4))
    np.testing.assert_array_equal(errors, expected_errors)
    expected_pixels = np.array([[2 * len(range(a, 9, 4)) * len(range(b, 10, 4)) for b in range(4)] for a in range(4)])
    expected_pixels[0, 0] -= 2
    np.testing.assert_array_equal(pixels, expected_pixels)
    assert pixels.sum() == (labels != 255).sum()
