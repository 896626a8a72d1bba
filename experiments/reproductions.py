"""Paper-reproduction presets (sweeps): python -m experiments.reproductions --preset=NAME.

  odena_cpu   transposed k2/k3/k4 (default and bilinear init), pixel shuffle and resize-convolution arms
  fcn_128_cpu FCN-32s / 16s / 8s at 128 px with fixed bilinear upsampling (as released) and FCN-8s with it learned,
              hypotheses F1-F3, 3 paired seeds, the share oracle per stride
  fcn_staged_128_cpu  FCN-8s trained in stages 32s -> 16s -> 8s (each from the previous stage's checkpoint) vs at once
              for the same steps, fixed bilinear upsampling, hypothesis S1, 5 paired seeds
  odena_trajectory_cpu  the checkerboard of 3 U-Net arms at every validation (every 100 steps; 2 seeds; descriptive)
  odena_2x2_cpu  Odena's hypotheses O1-O4 (random vs structured init x transposed vs resize-convolution, nearest
              vs bilinear resize-convolution) on the ablation's converged CPU budget: 5 arms x 5 paired seeds
  fcn_cpu     FCN-32s / 16s / 8s
  segnet_table1_cpu  SegNet's Table 1 as published: SegNet-Basic, FCN-Basic, FCN-Basic-NoAddition, the no-decoder
              bilinear baseline, SegNet-Basic with natural-frequency balancing; hypotheses T1-T4, 5 paired seeds
  deconvnet_128_cpu  DeconvNet vs FCN-8s at 128 px and their ensemble (EDeconvNet), hypothesis D1 and the ensemble's
              and boundary / small-object contrasts in its report section, 5 paired seeds
  segnet_cpu  the small SegNet with its upsampling operator swapped (bilinear, max-unpool, learned deconvolution)
  all_cpu     the three

fcn_128_cpu, fcn_staged_128_cpu and deconvnet_128_cpu train on FCN's 128 px budget, segnet_table1_cpu, odena_2x2_cpu
and odena_trajectory_cpu on the ablation's CPU budget (chosen from a U-Net pilot); each report's convergence table says
how close every arm came. The others use the smoke-test budget of experiments.definitions (200 steps, 3 seeds: far
from converged) and reuse the smoke_cpu ablation's finished runs when pointed at the same --out. Their report sections
are in experiments.reproduction_report.
"""

from __future__ import annotations

import sys

from experiments import command
from experiments.definitions import (
    CPU_SEEDS,
    CPU_STEPS,
    CPU_TRAINING,
    DECONVNET_HYPOTHESES,
    DECONVNET_SEEDS,
    FCN_128_SEEDS,
    FCN_128_TRAINING,
    FCN_HYPOTHESES,
    FCN_STAGE_STEPS,
    FCN_STAGED_HYPOTHESES,
    FCN_STAGED_SEEDS,
    ODENA_HYPOTHESES,
    SEGNET_BASIC_ARMS,
    SEGNET_BASIC_HYPOTHESES,
    SEGNET_BASIC_SEEDS,
    SEGNET_BASIC_TRAINING,
    SEGNET_TABLE1,
    SMOKE,
    SMOKE_FCN,
    SMOKE_SEEDS,
    Arm,
    Sweep,
    fcn_arm,
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
    arms = (*(fcn_arm(v) for v in ("32s", "16s", "8s")), fcn_arm("8s", "fcn8s_learned", fixed=False))
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


def fcn_staged() -> Sweep:
    at_once = 3 * FCN_STAGE_STEPS
    arms = (
        fcn_arm("32s", tags={"steps": FCN_STAGE_STEPS}),
        fcn_arm("16s", "fcn16s_staged", tags={"steps": 2 * FCN_STAGE_STEPS}, init_from="fcn32s_fixed"),
        fcn_arm("8s", "fcn8s_staged", tags={"steps": at_once}, init_from="fcn16s_staged"),
        fcn_arm("8s", "fcn8s_at_once", overrides={"num_train_steps": at_once}, tags={"steps": at_once}),
    )
    return Sweep(
        "fcn_staged_128_cpu",
        arms,
        tuple(range(FCN_STAGED_SEEDS)),
        FCN_128_TRAINING,
        f"Long et al. staged (32s -> 16s -> 8s, {FCN_STAGE_STEPS} steps each, each stage from the previous one's last "
        f"checkpoint) vs FCN-8s at once ({at_once} steps), fixed bilinear upsampling, {FCN_STAGED_SEEDS} paired seeds.",
        FCN_STAGED_HYPOTHESES,
        reference="fcn8s_at_once",
        reproduction=True,
    )


def segnet_table1() -> Sweep:
    arms = tuple(
        Arm("table1", label, f"segnet_basic:decoder={decoder}", overrides, {"decoder": decoder, **overrides})
        for label, (decoder, overrides) in SEGNET_BASIC_ARMS.items()
    )
    return Sweep(
        "segnet_table1_cpu",
        arms,
        tuple(range(SEGNET_BASIC_SEEDS)),
        SEGNET_BASIC_TRAINING,
        f"Badrinarayanan et al. Table 1: SegNet-Basic's encoder with {len(arms) - 1} decoders (and SegNet-Basic with "
        f"natural-frequency balancing), {SEGNET_BASIC_SEEDS} paired seeds, SegNet's recipe.",
        SEGNET_BASIC_HYPOTHESES,
        reference="segnet_basic",
        reproduction=True,
    )


def deconvnet_128() -> Sweep:
    arms = (
        fcn_arm("8s", model="edeconvnet"),
        Arm("edeconvnet", "deconvnet", "deconvnet", {"model.depth": 5}, {"method": "max_unpool"}),
    )
    return Sweep(
        "deconvnet_128_cpu",
        arms,
        tuple(range(DECONVNET_SEEDS)),
        FCN_128_TRAINING,
        f"Noh et al.: DeconvNet vs FCN-8s at 128 px and their ensemble, {DECONVNET_SEEDS} paired seeds.",
        DECONVNET_HYPOTHESES,
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
    arms = tuple(fcn_arm(v, fixed=False, overrides=SMOKE_FCN) for v in ("32s", "16s", "8s"))
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
    "fcn_staged_128_cpu": fcn_staged,
    "odena_trajectory_cpu": odena_trajectory,
    "fcn_cpu": fcn,
    "segnet_table1_cpu": segnet_table1,
    "deconvnet_128_cpu": deconvnet_128,
    "segnet_cpu": segnet,
    "all_cpu": lambda: [fcn(), odena(), segnet()],
}

if __name__ == "__main__":
    sys.exit(command.main(PRESETS, prog="experiments.reproductions"))
