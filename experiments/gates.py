"""Training-adequacy gates and collapse rules: what a study declares, before its runs, that a trained arm must reach
and when a run counts as collapsed. Plain numpy; quoted in every report.

- A run passes its study's `Gate` when its final training loss fell by the declared factor, its validation mIoU
  clears the declared floor (a trivial baseline plus a margin) and it predicts enough of the classes somewhere.
- An arm that fails the gate at a majority of its seeds did not train: a directed verdict about it is
  "not tested: <arm> did not train (<which check>)", never "did not hold" (`gated_verdict`).
- A run is collapsed (`Collapse`) when its final mIoU lies below its arm's median by more than k robust SDs
  (1.4826 x the median absolute deviation, at least `min_drop`) or below a floor. Reports give the collapse rate
  per arm with an exact test between arms (`stats.exact_rate_test`) and the contrasts with and without the
  collapsed seeds, beside a robust estimate (`stats.hodges_lehmann`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

ROBUST_SD = 1.4826  # the MAD of a normal sample times this estimates its SD


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What the gate reads of one finished run."""

    first_loss: float  # the training loss at the first logged step
    final_loss: float  # ... at the last
    final_miou: float  # validation mIoU at the end
    per_class_iou: tuple[float | None, ...]  # None: a class absent from the split and never predicted


@dataclasses.dataclass(frozen=True)
class Gate:
    """What every run of an arm must reach to count as trained (declared before the runs)."""

    loss_drop: float = 2.0  # the final training loss is at most the first / loss_drop
    min_miou: float = 0.0  # the final validation mIoU is above this (a trivial baseline plus a margin)
    classes_predicted: float = 1.0  # share of the classes (present in the split) with IoU > 0, at least

    def __post_init__(self):
        if not self.loss_drop >= 1 or not 0 <= self.classes_predicted <= 1:
            raise ValueError(f"Gate{dataclasses.astuple(self)}: loss_drop >= 1 and 0 <= classes_predicted <= 1")

    def failures(self, run: RunOutcome) -> list[str]:
        """The checks `run` fails, each "<check>: <why>" ([] when it trained)."""
        failed = []
        if not run.final_loss <= run.first_loss / self.loss_drop:
            failed.append(f"loss: {run.first_loss:.3g} -> {run.final_loss:.3g}, not down {self.loss_drop:g}x")
        if not run.final_miou > self.min_miou:
            failed.append(f"mIoU: {run.final_miou:.3f} <= floor {self.min_miou:.3f}")
        present = [v for v in run.per_class_iou if v is not None and math.isfinite(v)]
        share = sum(v > 0 for v in present) / max(len(present), 1)
        if share < self.classes_predicted:
            failed.append(f"classes: {share:.0%} predicted, < {self.classes_predicted:.0%}")
        return failed

    def arm_status(self, runs: Sequence[RunOutcome]) -> str | None:
        """None when the arm trained; else the checks failed by a majority of its runs, in words."""
        failures = [self.failures(run) for run in runs]
        failed = [f for f in failures if f]
        if 2 * len(failed) <= len(runs):
            return None
        kinds = sorted({check.split(":")[0] for f in failed for check in f})
        return f"{len(failed)} of {len(runs)} seeds fail the gate: {', '.join(kinds)}"


def gated_verdict(verdict: str, arms: Sequence[str], status: Mapping[str, str | None]) -> str:
    """`verdict` of a contrast of `arms`, or "not tested: <arm> did not train (<why>)" when one of them failed its
    gate: an untrained arm falsifies nothing."""
    for arm in arms:
        if status.get(arm):
            return f"not tested: {arm} did not train ({status[arm]})"
    return verdict


@dataclasses.dataclass(frozen=True)
class Collapse:
    """When a run counts as collapsed (declared before the runs)."""

    robust_sds: float = 4.0  # below the arm's median by more than this many robust SDs ...
    min_drop: float = 0.03  # ... and by at least this much mIoU
    floor: float | None = None  # or below this mIoU, whatever its arm does

    def mask(self, values) -> np.ndarray:
        """Which of one arm's final mIoU values (one per seed) are collapsed runs."""
        values = np.asarray(values, np.float64)
        median = np.median(values)
        spread = ROBUST_SD * np.median(np.abs(values - median))
        collapsed = values < median - max(self.robust_sds * spread, self.min_drop)
        if self.floor is not None:
            collapsed |= values < self.floor
        return collapsed
