"""Upsampling ablation: every decoder operator inside the same U-Net and the same SegNet-style decoder.

  python -m experiments.upsampling_ablation --preset=cpu --out=experiments/runs/ablation_cpu
  python -m experiments.upsampling_ablation --preset=gpu --out=runs/ablation_gpu --jobs=1

Arms (label: model.upsample settings):
  nearest, bilinear, bed_of_nails            parameter-free (U-Net adds a 1x1 conv to halve the channels)
  max_unpool                                 the encoder's max-pooling indices (SegNet)
  transposed_k{2,3,4}_{default,bilinear}     transposed convolution, stride 2; lecun-normal or bilinear init
  resize_conv_{nearest,bilinear}             resize then 3x3 convolution (Odena et al.)
  pixel_shuffle_{default,icnr}               3x3 conv to 4x channels then pixel shuffle; ICNR init or not
U-Net has no bilinear-initialised transposed arms: its up-convolutions halve the channels, and a bilinear kernel
upsamples each channel on its own (segjax.models.unet refuses the combination).

Presets:
  cpu  8-channel networks (depth 3) on the 64 px embedded dataset, 200 steps of batch 8, 3 seeds: every U-Net
       arm and SegNet's Table 1 arms (42 runs); 10 minutes on 2 idle CPU cores (measured; --only and --seeds
       cut it further). Short training: it ranks operators early in training, it does not converge.
  gpu  32-channel networks (depth 4) at 128 px, 4000 steps, 5 seeds, every arm of both models (125 runs).
"""

from __future__ import annotations

import sys

from experiments import sweep as sweep_lib

# label -> model.upsample overrides (all four keys set, so every run's config says exactly what it used)
METHOD_ARMS = {
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
    "pixel_shuffle_default": dict(method="pixel_shuffle", init="default"),
    "pixel_shuffle_icnr": dict(method="pixel_shuffle", init="icnr"),
}
# Arms a model cannot build, with the reason (the report lists them).
EXCLUDED = {
    ("unet", label): "U-Net's up-convolutions halve the channels; a bilinear kernel keeps them"
    for label in METHOD_ARMS
    if label.startswith("transposed") and label.endswith("bilinear")
}

# Per preset: seeds, overrides shared by every arm, per-model overrides, and overrides of the FCN reproduction.
BUDGETS = {
    "cpu": dict(
        seeds=3,
        overrides={
            "data.name": "segjax_shapes/64",
            "num_train_steps": 200,
            "batch_size": 8,
            "eval_batch_size": 40,
            "eval_every_steps": 200,
            "checkpoint_every_steps": 200,
            "log_every_steps": 25,
            "progress_bar": False,
            "keep_checkpoints": 1,
            "schedule.warmup_steps": 20,
            "model.preset": "small",
            "model.base_width": 8,
            "model.depth": 3,
        },
        # U-Net: every arm; SegNet: the arms of the SegNet Table 1 reproduction (the rest only in 'gpu').
        models={"unet": None, "segnet": ("bilinear", "max_unpool", "transposed_k4_bilinear")},
        fcn_overrides={"model.base_width": 8, "model.depth": None},  # FCN is fixed at depth 5
    ),
    "gpu": dict(
        seeds=5,
        overrides={
            "data.name": "segjax_shapes/128",
            "num_train_steps": 4000,
            "batch_size": 16,
            "eval_batch_size": 50,
            "eval_every_steps": 1000,
            "checkpoint_every_steps": 1000,
            "log_every_steps": 100,
            "progress_bar": False,
            "model.preset": "small",
            "model.base_width": 32,
            "model.depth": 4,
        },
        models={"unet": None, "segnet": None},
        fcn_overrides={"model.base_width": 32, "model.depth": None},
    ),
}
"""Each family keeps its own recipe from configs/ (U-Net: AdamW 3e-3; SegNet: SGD 0.1 with median-frequency class
weights; FCN: SGD 0.05, poly): arms are compared within a model, never across models."""


def upsample_overrides(settings: dict) -> dict:
    return {
        "model.upsample.method": settings["method"],
        "model.upsample.kernel_size": settings.get("kernel_size"),
        "model.upsample.init": settings.get("init"),
        "model.upsample.resize": settings.get("resize", "nearest"),
    }


def arms(model: str, labels=None) -> tuple[sweep_lib.Arm, ...]:
    """The ablation arms of one model: all it can build, or only `labels`."""
    chosen = []
    for label, settings in METHOD_ARMS.items():
        if (labels is not None and label not in labels) or (model, label) in EXCLUDED:
            continue
        chosen.append(sweep_lib.Arm(model, label, model, upsample_overrides(settings), dict(settings)))
    return tuple(chosen)


def ablation(scale: str) -> sweep_lib.Sweep:
    if scale not in BUDGETS:
        raise ValueError(f"Unknown scale {scale!r}; valid: {sorted(BUDGETS)}.")
    budget = BUDGETS[scale]
    all_arms = tuple(arm for model, labels in budget["models"].items() for arm in arms(model, labels))
    excluded = ", ".join(f"{m}/{label}" for (m, label) in EXCLUDED)
    subsets = "; ".join(
        f"{m}: {'all buildable arms' if labels is None else ', '.join(labels)}"
        for m, labels in budget["models"].items()
    )
    return sweep_lib.Sweep(
        f"ablation_{scale}",
        all_arms,
        tuple(range(budget["seeds"])),
        budget["overrides"],
        f"upsampling operators inside the same U-Net and the same SegNet decoder ({subsets}; {len(all_arms)} arms x "
        f"{budget['seeds']} seeds). Not buildable, so never run: {excluded} (U-Net's up-convolutions halve the "
        "channels; a bilinear kernel keeps them).",
    )


PRESETS = {"cpu": lambda: ablation("cpu"), "gpu": lambda: ablation("gpu")}

if __name__ == "__main__":
    sys.exit(sweep_lib.main(PRESETS, prog="experiments.upsampling_ablation"))
