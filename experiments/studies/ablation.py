"""The upsampling ablation: the U-Net hypotheses H1-H5, their pilot, a GPU version and the 10-minute smoke test.

  python -m experiments.upsampling_ablation --preset=pilot_cpu --out=experiments/runs/pilot_cpu
  python -m experiments.upsampling_ablation --preset=cpu --out=experiments/runs/ablation_cpu \\
      --report-dir=experiments/results/ablation_cpu
  python -m experiments.upsampling_ablation --preset=smoke_cpu --out=/tmp/smoke

Presets:
  pilot_cpu  learning curves of 4 arms (one seed, 3000 steps, validation every 100): where the arms plateau
             decides the step count of 'cpu'.
  cpu        every arm the hypotheses need (10) x 5 paired seeds at the pilot's step count (2000), U-Net width 8 on
             32 px crops of the 64 px embedded dataset, evaluated on whole images; about 1 hour on 2 CPU cores.
  gpu        the same hypotheses at 128 px, width 32, depth 4, 8 seeds (sized for one H200; not measured).
  smoke_cpu  SMOKE TEST: every operator in a U-Net and SegNet's Table 1 decoders, 200 steps, 3 seeds (about
             10 minutes); checks the machinery, answers no question.

The hypotheses are the report's generic part (tests, power, arms): this study adds no section of its own.
"""

from __future__ import annotations

from experiments.definitions import (
    CPU_SEEDS,
    CPU_STEPS,
    CPU_TRAINING,
    GPU_SEEDS,
    GPU_STEPS,
    GPU_TRAINING,
    PILOT_STEPS,
    SEGNET_TABLE1,
    SMOKE,
    SMOKE_SEEDS,
    UPSAMPLE_ARMS,
    Hypothesis,
    Sweep,
    hypothesis_arms,
    operator_arm,
)

UNET_HYPOTHESES = (
    Hypothesis(
        "H1a",
        "Overlap: does the uneven overlap of a stride-2 kernel-3 transposed convolution hurt, against kernel 2 "
        "(no overlap), same (default) initialisation?",
        "unet",
        "transposed_k2_default",
        "transposed_k3_default",
    ),
    Hypothesis(
        "H1b",
        "Overlap: ... against kernel 4 (even overlap)?",
        "unet",
        "transposed_k4_default",
        "transposed_k3_default",
    ),
    Hypothesis(
        "H2a",
        "Initialisation, function class fixed: does ICNR beat the default initialisation of the same pixel shuffle?",
        "unet",
        "pixel_shuffle_icnr",
        "pixel_shuffle_default",
    ),
    Hypothesis(
        "H2b",
        "Initialisation, function class fixed: does a (channel-halving) bilinear initialisation beat the default "
        "one of the same kernel-4 transposed convolution?",
        "unet",
        "transposed_k4_bilinear",
        "transposed_k4_default",
    ),
    Hypothesis(
        "H3",
        "Function class, initialisation fixed (default): does nearest resize-then-convolve beat the kernel-4 "
        "transposed convolution (Odena et al.)?",
        "unet",
        "resize_conv_nearest",
        "transposed_k4_default",
    ),
    Hypothesis(
        "H4",
        "Parameter-free vs learned: with U-Net's skips, is bilinear upsampling (and a 1x1 projection) as good as "
        "the paper's learned 2x2 up-convolution, within the margin?",
        "unet",
        "bilinear",
        "transposed_k2_default",
        claim="equivalent",
    ),
    Hypothesis(
        "H5",
        "Do the skips mask the operator: is the advantage of the learned 2x2 up-convolution over bilinear "
        "upsampling larger without U-Net's skips than with them?",
        "unet",
        "noskip_transposed_k2_default",
        "noskip_bilinear",
        minus=("transposed_k2_default", "bilinear"),
    ),
)


def ablation(name: str, training: dict, steps: int, seeds: int) -> Sweep:
    """Every arm the U-Net hypotheses need, `seeds` paired seeds, `steps` steps."""
    arms = hypothesis_arms(UNET_HYPOTHESES)
    return Sweep(
        name,
        arms,
        tuple(range(seeds)),
        {**training, "num_train_steps": steps, "checkpoint_every_steps": steps},
        f"U-Net upsampling hypotheses H1-H5: {len(arms)} arms x {seeds} paired seeds, {steps} steps.",
        UNET_HYPOTHESES,
        reference="transposed_k2_default",  # U-Net's own decoder
    )


def pilot_cpu() -> Sweep:
    arms = tuple(
        operator_arm("unet", label) for label in ("transposed_k2_default", "transposed_k3_default", "bilinear")
    )
    arms += (operator_arm("unet", "transposed_k2_default", skips=False),)
    return Sweep(
        "pilot_cpu",
        arms,
        (0,),
        {**CPU_TRAINING, "num_train_steps": PILOT_STEPS, "checkpoint_every_steps": PILOT_STEPS},
        f"Pilot learning curves: {len(arms)} arms, one seed, {PILOT_STEPS} steps, validation every 100 steps; "
        "chooses the step count of the 'cpu' preset.",
    )


def smoke_cpu() -> Sweep:
    arms = tuple(operator_arm("unet", label) for label in UPSAMPLE_ARMS)
    arms += tuple(operator_arm("segnet", label) for label in SEGNET_TABLE1)
    return Sweep(
        "smoke_cpu",
        arms,
        tuple(range(SMOKE_SEEDS)),
        SMOKE,
        "SMOKE TEST (200 steps: does not converge, answers no question): every operator in the same U-Net and "
        f"SegNet's Table 1 decoders ({len(arms)} arms x {SMOKE_SEEDS} seeds).",
        smoke_test=True,
    )


PRESETS = {
    "cpu": lambda: ablation("ablation_cpu", CPU_TRAINING, CPU_STEPS, CPU_SEEDS),
    "gpu": lambda: ablation("ablation_gpu", GPU_TRAINING, GPU_STEPS, GPU_SEEDS),
    "pilot_cpu": pilot_cpu,
    "smoke_cpu": smoke_cpu,
}


def sections(results, report_dir) -> list[str]:
    """No sections: the ablation's hypotheses, arms and figures are the report's generic part."""
    return []
