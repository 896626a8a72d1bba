"""Paper-reproduction presets (sweeps): python -m experiments.reproductions --preset=NAME.

  odena_cpu   transposed k2/k3/k4 (default and bilinear init), pixel shuffle and resize-convolution arms
  fcn_128_cpu FCN-32s / 16s / 8s at 128 px with fixed bilinear upsampling (as released) and FCN-8s with it learned,
              hypotheses F1-F3, 3 paired seeds, the share oracle per stride
  odena_trajectory_cpu  the checkerboard of 3 U-Net arms at every validation (every 100 steps; 2 seeds; descriptive)
  odena_2x2_cpu  Odena's hypotheses O1-O4 (random vs structured init x transposed vs resize-convolution, nearest
              vs bilinear resize-convolution) on the ablation's converged CPU budget: 5 arms x 5 paired seeds
  fcn_cpu     FCN-32s / 16s / 8s
  segnet_cpu  SegNet's Table 1 decoders: bilinear, max-unpool with indices, learned deconvolution
  all_cpu     the three

fcn_128_cpu, odena_2x2_cpu and odena_trajectory_cpu train to converged budgets; the others use the smoke-test budget
of experiments.definitions (200 steps, 3 seeds: far from converged) and reuse the smoke_cpu ablation's finished runs
when pointed at the same --out. Their report sections are in experiments.reproduction_report.
"""

from __future__ import annotations

import sys

from experiments import command
from experiments.definitions import (
    CPU_SEEDS,
    CPU_STEPS,
    CPU_TRAINING,
    FCN_128_SEEDS,
    FCN_128_TRAINING,
    FCN_HYPOTHESES,
    FIXED_UPSAMPLING,
    ODENA_HYPOTHESES,
    SEGNET_TABLE1,
    SMOKE,
    SMOKE_FCN,
    SMOKE_SEEDS,
    Arm,
    Sweep,
    hypothesis_arms,
    operator_arm,
)
from experiments.reproduction_report import ODENA_LABELS


def odena() -> Sweep:
    arms = tuple(operator_arm(model, label) for model in ("unet", "segnet") for label in ODENA_LABELS)
    arms = tuple(a for a in arms if a.model == "unet" or a.label == "transposed_k4_bilinear")
    return Sweep(
        "odena_cpu",
        arms,
        tuple(range(SMOKE_SEEDS)),
        SMOKE,
        "Odena et al.: transposed convolution k2/k3/k4 (default and bilinear init), pixel shuffle (default, ICNR) "
        "and resize-convolution, checkerboard at init and after training.",
        smoke_test=True,
    )


def odena_2x2() -> Sweep:
    arms = hypothesis_arms(ODENA_HYPOTHESES)
    return Sweep(
        "odena_2x2_cpu",
        arms,
        tuple(range(CPU_SEEDS)),
        {**CPU_TRAINING, "num_train_steps": CPU_STEPS, "checkpoint_every_steps": CPU_STEPS},
        f"Odena et al. O1-O4: {len(arms)} U-Net arms x {CPU_SEEDS} paired seeds, {CPU_STEPS} steps (the ablation's "
        "CPU budget).",
        ODENA_HYPOTHESES,
        reference="transposed_k4_default",
        reproduction=True,
    )


def odena_trajectory() -> Sweep:
    arms = tuple(
        operator_arm("unet", label)
        for label in ("transposed_k4_default", "transposed_k4_bilinear", "resize_conv_nearest")
    )
    return Sweep(
        "odena_trajectory_cpu",
        arms,
        (0, 1),
        {
            **CPU_TRAINING,
            "num_train_steps": CPU_STEPS,
            "checkpoint_every_steps": CPU_STEPS,
            # training saves a checkpoint at every validation: keep them all, so that each is measured
            "keep_checkpoints": CPU_STEPS // CPU_TRAINING["eval_every_steps"],
        },
        "Odena et al.: the checkerboard at the upsamplers at every validation (every 100 steps), 3 U-Net arms x 2 "
        "seeds on the ablation's CPU budget.",
        reproduction=True,
    )


def fcn_128() -> Sweep:
    arms = tuple(
        Arm("fcn", f"fcn{v}_fixed", f"fcn:{v}", dict(FIXED_UPSAMPLING), {"method": "transposed", "skips": v})
        for v in ("32s", "16s", "8s")
    )
    arms += (Arm("fcn", "fcn8s_learned", "fcn:8s", {}, {"method": "transposed", "skips": "8s"}),)
    return Sweep(
        "fcn_128_cpu",
        arms,
        tuple(range(FCN_128_SEEDS)),
        FCN_128_TRAINING,
        f"Long et al. F1-F3 at 128 px: {len(arms)} arms x {FCN_128_SEEDS} paired seeds, fixed bilinear upsampling as "
        "released, learned as the ablation.",
        FCN_HYPOTHESES,
        reference="fcn8s_fixed",
        reproduction=True,
    )


def segnet() -> Sweep:
    return Sweep(
        "segnet_cpu",
        tuple(operator_arm("segnet", label) for label in SEGNET_TABLE1),
        tuple(range(SMOKE_SEEDS)),
        SMOKE,
        "SegNet Table 1: bilinear-only vs max-unpool vs learned deconvolution decoders.",
        smoke_test=True,
    )


def fcn() -> Sweep:
    arms = tuple(
        Arm("fcn", f"fcn{v}", f"fcn:{v}", dict(SMOKE_FCN), {"method": "transposed", "skips": v})
        for v in ("32s", "16s", "8s")
    )
    return Sweep(
        "fcn_cpu",
        arms,
        tuple(range(SMOKE_SEEDS)),
        SMOKE,
        "Long et al.: FCN-32s / 16s / 8s on the embedded dataset.",
        smoke_test=True,
    )


PRESETS = {
    "odena_cpu": odena,
    "odena_2x2_cpu": odena_2x2,
    "fcn_128_cpu": fcn_128,
    "odena_trajectory_cpu": odena_trajectory,
    "fcn_cpu": fcn,
    "segnet_cpu": segnet,
    "all_cpu": lambda: [fcn(), odena(), segnet()],
}

if __name__ == "__main__":
    sys.exit(command.main(PRESETS, prog="experiments.reproductions"))
