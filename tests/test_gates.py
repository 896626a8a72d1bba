"""experiments.gates: the training-adequacy gate and the collapse rule on constructed runs."""

import numpy as np
import pytest

from experiments import gates

TRAINED = gates.RunOutcome(first_loss=2.0, final_loss=0.3, final_miou=0.8, per_class_iou=(0.9, 0.7, None, 0.5))
FLAT = gates.RunOutcome(first_loss=2.0, final_loss=1.5, final_miou=0.12, per_class_iou=(0.75, 0.0, None, 0.0))


def test_the_gate_names_each_failed_check():
    gate = gates.Gate(loss_drop=2.0, min_miou=0.2, classes_predicted=1.0)
    assert gate.failures(TRAINED) == []
    assert gate.failures(FLAT) == [
        "loss: 2 -> 1.5, not down 2x",
        "mIoU: 0.120 <= floor 0.200",
        "classes: 33% predicted, < 100%",
    ]
    with pytest.raises(ValueError, match="loss_drop >= 1"):
        gates.Gate(loss_drop=0.5)


def test_an_arm_that_never_trains_is_not_tested():
    gate = gates.Gate(min_miou=0.2)
    status = {"trained": gate.arm_status([TRAINED] * 5), "flat": gate.arm_status([FLAT, FLAT, FLAT, TRAINED, TRAINED])}
    assert status["trained"] is None
    assert status["flat"] == "3 of 5 seeds fail the gate: classes, loss, mIoU"
    assert gates.gated_verdict("did not hold", ("trained", "flat"), status) == (
        "not tested: flat did not train (3 of 5 seeds fail the gate: classes, loss, mIoU)"
    )
    assert gates.gated_verdict("held", ("trained", "trained"), status) == "held"
    assert gate.arm_status([FLAT, FLAT, TRAINED, TRAINED]) is None  # half is no majority


def test_collapse_flags_the_outlying_seed_only():
    rule = gates.Collapse(robust_sds=4.0, min_drop=0.03)
    values = np.array([0.866, 0.862, 0.721, 0.869, 0.864, 0.860, 0.871, 0.858])
    np.testing.assert_array_equal(rule.mask(values), [False, False, True, False, False, False, False, False])
    assert not rule.mask([0.80, 0.81, 0.79, 0.795]).any()  # ordinary spread is no collapse
    assert gates.Collapse(floor=0.85).mask([0.84, 0.9, 0.91]).tolist() == [True, False, False]
