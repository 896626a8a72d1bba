"""What the experiments are made of, as plain data: arms, hypotheses, sweeps, the operator table and the budgets.

This module imports nothing from the rest of `experiments/` but the gate rules (`experiments.gates`, plain data as
well); each study (`experiments/studies/`) declares its arms,
hypotheses and presets from these pieces before anything runs. The generic flow is: definitions (this module) and
studies -> runner (`sweep`, `command`) -> measurements (`analysis`, `measure`) -> results (`results`, `stats`) ->
report (`report`, the studies' sections).

The upsampling operators are one table, `UPSAMPLE_ARMS` (label -> `model.upsample` settings), used by the
ablation's arms and by the operator-level study alike.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from experiments.gates import Collapse, Gate

# ----------------------------------------------------------------------------------------------------------------
# Types


@dataclasses.dataclass(frozen=True)
class Arm:
    """One configuration of a sweep, everything except the seed.

    model: report label of the network (e.g. 'unet'); label: the arm's name within that model (e.g.
    'transposed_k3_default'); config: the config family, 'unet' or 'fcn:8s' for ``configs/fcn.py`` with arg
    '8s'; overrides: flattened config overrides ('model.upsample.method': 'transposed'); tags: facts the report
    groups by (method, kernel size, init, ...); init_from: the label of another arm of the same model whose run with
    the same seed this one starts from (`model.init_from`, FCN's staged training), trained first.
    """

    model: str
    label: str
    config: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init_from: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.label}"


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A directed contrast between two arms of one network, declared before anything runs.

    claim 'greater': arm `better` beats arm `worse` on the primary endpoint (final validation mIoU);
    claim 'equivalent': the two differ by less than `margin`. With `minus` = (c, d), the contrast is the
    interaction (better - worse) - (c - d): does the difference between two operators change with the network?
    With `also`, the better side is the mean of `better` and `also` (kernel 3 against the mean of kernels 2 and 4).
    `margin` is the equivalence margin of the TOST (see experiments.stats for the verdict rules).
    """

    name: str
    question: str
    model: str
    better: str
    worse: str
    claim: str = "greater"
    margin: float = 0.01
    minus: tuple[str, str] | None = None
    also: str | None = None

    def __post_init__(self):
        if self.claim not in ("greater", "equivalent"):
            raise ValueError(f"{self.name}: claim must be 'greater' or 'equivalent', got {self.claim!r}")
        if self.also is not None and self.minus is not None:
            raise ValueError(f"{self.name}: a contrast takes `also` (a mean of two arms) or `minus`, not both")

    @property
    def arms(self) -> tuple[str, ...]:
        return (self.better, self.worse, *(self.minus or ()), *((self.also,) if self.also else ()))

    @property
    def statement(self) -> str:
        if self.also:
            better = f"mean({self.better}, {self.also})"
            if self.claim == "greater":
                return f"{better} > {self.worse}"
            return f"|{better} - {self.worse}| < {self.margin}"
        if self.minus:
            return (
                f"({self.better} - {self.worse}) > ({self.minus[0]} - {self.minus[1]})"
                if self.claim == "greater"
                else f"({self.better} - {self.worse}) = ({self.minus[0]} - {self.minus[1]}) within ±{self.margin}"
            )
        if self.claim == "greater":
            return f"{self.better} > {self.worse}"
        return f"|{self.better} - {self.worse}| < {self.margin}"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A named set of arms, the seeds each one is run with, overrides shared by every arm (the budget), and the
    hypotheses its report tests."""

    name: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    hypotheses: tuple[Hypothesis, ...] = ()
    smoke_test: bool = False  # a short run that checks the machinery and answers no question
    reproduction: bool = False  # its report adds the studies' sections (experiments/studies/)
    reference: str | None = None  # the arm others are compared with in the report (None: the first)
    gate: Gate | None = None  # what a trained arm must reach; its verdicts are "not tested" otherwise
    collapse: Collapse | None = None  # when a run counts as collapsed (rates per arm, sensitivity analysis)
    preregistered: str | None = None  # the name of its frozen plan (experiments/preregistered/<name>.json)
    trim: float = 0.0  # > 0: its hypotheses are tested on the trimmed mean of the per-seed differences (stats)

    def __post_init__(self):
        keys = [arm.key for arm in self.arms]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(
                f"Sweep {self.name!r} defines these arms more than once: {dupes}; give each a unique (model, label)."
            )
        if not self.seeds:
            raise ValueError(f"Sweep {self.name!r} has no seeds; give at least one.")
        labels = {(a.model, a.label) for a in self.arms}
        for arm in self.arms:
            if arm.init_from is not None and (arm.model, arm.init_from) not in labels:
                raise ValueError(
                    f"Sweep {self.name!r}: arm {arm.key} starts from {arm.model}/{arm.init_from}, which is not an arm "
                    "of this sweep."
                )
        for h in self.hypotheses:
            missing = [arm for arm in h.arms if (h.model, arm) not in labels]
            if missing:
                raise ValueError(f"Sweep {self.name!r}: hypothesis {h.name} needs arms {missing} of {h.model}.")

    def record(self) -> dict:
        """The sweep as declared, as JSON data: OUT/sweep.json (what the report tests comes from) and the frozen plan
        of a preregistered sweep."""
        record = dataclasses.asdict(self)
        record["hypotheses"] = [dict(dataclasses.asdict(h), statement=h.statement) for h in self.hypotheses]
        if not self.trim:
            del record["trim"]  # the plans frozen before trimming existed declare none
        return json.loads(json.dumps(record, default=list))


# ----------------------------------------------------------------------------------------------------------------
# The operators: one table


UPSAMPLE_ARMS: dict[str, dict] = {
    "nearest": dict(method="nearest"),
    "bilinear": dict(method="bilinear"),
    "bed_of_nails": dict(method="bed_of_nails"),
    "max_unpool": dict(method="max_unpool"),
    **{
        f"transposed_k{k}_{init}": dict(method="transposed", kernel_size=k, init=init)
        for init in ("default", "bilinear")
        for k in (2, 3, 4)
    },
    "resize_conv_nearest": dict(method="resize_conv", resize="nearest"),
    "resize_conv_bilinear": dict(method="resize_conv", resize="bilinear"),
    "resize_conv_nearest_delta": dict(method="resize_conv", resize="nearest", init="delta"),
    "pixel_shuffle_default": dict(method="pixel_shuffle", init="default"),
    "pixel_shuffle_icnr": dict(method="pixel_shuffle", init="icnr"),
}


def upsample_overrides(label: str) -> dict:
    """The `model.upsample` overrides of an operator (all four keys, so each run's config says what it used)."""
    settings = UPSAMPLE_ARMS[label]
    return {
        "model.upsample.method": settings["method"],
        "model.upsample.kernel_size": settings.get("kernel_size"),
        "model.upsample.init": settings.get("init"),
        "model.upsample.resize": settings.get("resize", "nearest"),
    }


def operator_arm(model: str, label: str, *, skips: bool = True, config: str | None = None) -> Arm:
    """The arm of `model` that upsamples with operator `label`; skips=False: U-Net without its skips."""
    overrides = upsample_overrides(label)
    tags = dict(UPSAMPLE_ARMS[label], skips=skips)
    if not skips:
        overrides["model.skips"] = False
    return Arm(model, label if skips else f"noskip_{label}", config or model, overrides, tags)


# ----------------------------------------------------------------------------------------------------------------
# Hypotheses

# Equivalence margin: 0.01 mIoU, the smallest difference we would act on when choosing an operator.
MARGIN = 0.01


def hypothesis_arms(hypotheses) -> tuple[Arm, ...]:
    """The arms the hypotheses need, each once, in order of first mention."""
    labels = list(dict.fromkeys(arm for h in hypotheses for arm in h.arms))
    return tuple(
        operator_arm("unet", label.removeprefix("noskip_"), skips=not label.startswith("noskip_")) for label in labels
    )


# ----------------------------------------------------------------------------------------------------------------
# Budgets

_TINY_NET = {"model.preset": "small", "model.base_width": 8, "model.depth": 3}
_QUIET = {"progress_bar": False, "keep_checkpoints": 1}

# The CPU budget, chosen from the committed pilot learning curve (experiments/results/pilot_cpu; not converged:
# 3000 pilot steps beat 2000 by 0.015-0.03 on every arm with skips, so no plateau criterion holds at 2000): U-Net
# width 8, trained on random 32 px crops of the 64 px scenes (a 3.5x cheaper step than whole images), evaluated
# on the whole 64 px validation images every 100 steps. CE + Dice as in the quickstart.
CPU_TRAINING = {
    **_TINY_NET,
    **_QUIET,
    "data.name": "segjax_shapes/64",
    "data.crop_size": 32,
    "data.eval_size": 64,
    "batch_size": 16,
    "eval_batch_size": 50,
    "optimizer.learning_rate": 5e-3,
    "loss.dice": 1.0,
    "schedule.warmup_steps": 50,
    "eval_every_steps": 100,
    "log_every_steps": 100,
}
# The pilot (3000 steps, cosine over 3000) had every arm with skips within 0.01 mIoU of its plateau from step
# 1900-2000 on; 5 seeds x 10 arms x 2000 steps is what fits in an hour on 2 CPU cores.
CPU_STEPS = 2000
CPU_SEEDS = 5
PILOT_STEPS = 3000

# The same hypotheses at 128 px with a wider, deeper network, sized (not measured: no GPU was lent) for about 10
# minutes on one H200.
GPU_TRAINING = {
    **_QUIET,
    "model.preset": "small",
    "model.base_width": 32,
    "model.depth": 4,
    "data.name": "segjax_shapes/128",
    "batch_size": 16,
    "eval_batch_size": 50,
    "optimizer.learning_rate": 3e-3,
    "loss.dice": 1.0,
    "schedule.warmup_steps": 100,
    "eval_every_steps": 200,
    "log_every_steps": 200,
}
GPU_STEPS = 2000
GPU_SEEDS = 8


# The 10-minute smoke test: every operator in a U-Net and SegNet's Table 1 arms, 200 steps, 3 seeds. It checks
# the machinery end to end; at 200 steps the networks are far from converged and it answers no question.
SMOKE = {
    **_TINY_NET,
    **_QUIET,
    "data.name": "segjax_shapes/64",
    "num_train_steps": 200,
    "batch_size": 8,
    "eval_batch_size": 40,
    "eval_every_steps": 200,
    "checkpoint_every_steps": 200,
    "log_every_steps": 25,
    "schedule.warmup_steps": 20,
}
SMOKE_SEEDS = 3
SMOKE_FCN = {"model.base_width": 8, "model.depth": None}  # FCN is fixed at depth 5

# FCN at 128 px, where stride 32 leaves a 4x4 score map (at 64 px: 2x2): configs/fcn.py's recipe (SGD, momentum 0.9,
# poly decay, batch norm), width 8, whole 128 px images. 1000 steps x 3 seeds is what fits in about 30 minutes on 2
# CPU cores for four arms; not checked for convergence by a pilot (the report's convergence table says how close).
FCN_128_TRAINING = {
    **_QUIET,
    **SMOKE_FCN,
    "data.name": "segjax_shapes/128",
    "data.crop_size": 128,
    "data.eval_size": 128,
    "batch_size": 8,
    "eval_batch_size": 40,
    "num_train_steps": 1000,
    "eval_every_steps": 100,
    "log_every_steps": 100,
    "checkpoint_every_steps": 1000,
    "schedule.warmup_steps": 50,
}
FCN_128_SEEDS = 3
# As the authors released FCN: every deconvolution fixed at its bilinear initialisation (learning rate 0).
FIXED_UPSAMPLING = {"optimizer.frozen": "upscore"}


def fcn_arm(
    stride: str, label: str | None = None, *, model: str = "fcn", fixed: bool = True, overrides=None, **arm
) -> Arm:
    """FCN-`stride` ('32s', '16s', '8s'), its upsampling fixed at bilinear as released unless `fixed` is False;
    labelled 'fcn8s_fixed' / 'fcn8s' unless `label` is given; `arm`: Arm's tags (added to method and skips) and
    init_from."""
    tags = {"method": "transposed", "skips": stride, **arm.pop("tags", {})}
    overrides = {**(FIXED_UPSAMPLING if fixed else {}), **(overrides or {})}
    label = label or f"fcn{stride}" + ("_fixed" if fixed else "")
    return Arm(model, label, f"fcn:{stride}", overrides, tags, **arm)


# Long et al. trained FCN-16s from the finished FCN-32s and FCN-8s from FCN-16s (staged); the journal version (Shelhamer
# et al. 2017) also trained FCN-8s all at once from VGG16 (released as voc-fcn8s-atonce, its pool3 / pool4 scaled by
# 1e-4 / 1e-2) and reports it about as good. Here each stage is one FCN_128_TRAINING run (fixed upsampling) started
# from the previous stage's last checkpoint (model.init_from), against FCN-8s trained at once for all the stages' steps.
FCN_STAGE_STEPS = FCN_128_TRAINING["num_train_steps"]
FCN_STAGED_SEEDS = 5
SEGNET_TABLE1 = ("bilinear", "max_unpool", "transposed_k4_bilinear")  # operators swapped in the small SegNet

# SegNet's Table 1 as published (Badrinarayanan et al. 2017): SegNet-Basic's encoder (preset 'small': 16 channels
# instead of 64) with four decoders, trained by configs/segnet_basic.py's recipe (SegNet's: SGD at 0.1, momentum 0.9,
# cross-entropy with median-frequency balancing) on the ablation's CPU budget: 32 px crops, whole 64 px validation
# images, CPU_STEPS steps. One deviation: the rate decays (poly) instead of staying fixed. A first run at the fixed
# rate still climbed at step 2000 and its validation mIoU swung by 0.1 from one validation to the next (0.19-0.40 over
# the last 1000 steps), too noisy an endpoint; the paper trained to convergence and kept the best checkpoint.
SEGNET_BASIC_TRAINING = {
    **_QUIET,
    "data.name": "segjax_shapes/64",
    "data.crop_size": 32,
    "data.eval_size": 64,
    "batch_size": 16,
    "eval_batch_size": 50,
    "num_train_steps": CPU_STEPS,
    "eval_every_steps": 100,
    "log_every_steps": 100,
    "checkpoint_every_steps": CPU_STEPS,
    "schedule.name": "poly",
}
SEGNET_BASIC_SEEDS = 5


# Noh et al. (DeconvNet) against FCN-8s at 128 px on FCN_128_TRAINING: FCN-8s with fixed upsampling as released, and
# DeconvNet (configs/deconvnet.py, the 'small' preset's fc layers) with FCN's depth 5 and width, so both encoders pool
# to stride 32. Their ensemble (EDeconvNet: the average of the two networks' class probabilities) is measured by the
# runner from the same seed's two runs (experiments.measure.deconvnet).
DECONVNET_SEEDS = 5
