"""Badrinarayanan et al. (SegNet): Table 1 as published, and the small SegNet with its upsampling operator swapped.

  segnet_table1_cpu  SegNet's Table 1 as published: SegNet-Basic, FCN-Basic, FCN-Basic-NoAddition, the no-decoder
              bilinear baseline, SegNet-Basic with natural-frequency balancing; hypotheses T1-T4, 5 paired seeds
  segnet_cpu  the small SegNet with its upsampling operator swapped (bilinear, max-unpool, learned deconvolution)

The decoders' inference memory at the paper's width is the study's measurement (experiments.measure.segnet).
"""

from __future__ import annotations

import math

from experiments.definitions import (
    SEGNET_BASIC_SEEDS,
    SEGNET_BASIC_TRAINING,
    SEGNET_TABLE1,
    SMOKE,
    SMOKE_SEEDS,
    Arm,
    Hypothesis,
    Sweep,
    operator_arm,
)
from experiments.gates import Gate
from experiments.tables import open_section, ordering, paired_family, params, pm

NAME = "segnet"
# Arm label -> (configs/segnet_basic.py decoder, overrides); the budget is definitions.SEGNET_BASIC_TRAINING.
SEGNET_BASIC_ARMS = {
    "segnet_basic": ("segnet", {}),
    "fcn_basic": ("fcn", {}),
    "fcn_basic_noaddition": ("fcn_noaddition", {}),
    "bilinear_basic": ("bilinear", {}),
    "segnet_basic_natural": ("segnet", {"loss.class_weighting": "none"}),  # natural-frequency rows of Table 1
}
SEGNET_BASIC_HYPOTHESES = (
    Hypothesis(
        "T1",
        "Badrinarayanan et al.: does a learned decoder (SegNet-Basic, max-unpooling) beat no learned decoder "
        "(Bilinear-Interpolation)?",
        "table1",
        "segnet_basic",
        "bilinear_basic",
    ),
    Hypothesis("T2", "... and does FCN-Basic's learned decoder beat it too?", "table1", "fcn_basic", "bilinear_basic"),
    Hypothesis(
        "T3",
        "Are SegNet-Basic and FCN-Basic as good as each other, within the margin (Table 1: comparable mIoU)?",
        "table1",
        "segnet_basic",
        "fcn_basic",
        claim="equivalent",
    ),
    Hypothesis(
        "T4",
        "Does adding the encoder's feature maps (FCN-Basic) beat decoding the scores alone (FCN-Basic-NoAddition)?",
        "table1",
        "fcn_basic",
        "fcn_basic_noaddition",
    ),
)
TABLE1_NAMES = {
    "segnet_basic": "SegNet-Basic",
    "fcn_basic": "FCN-Basic",
    "fcn_basic_noaddition": "FCN-Basic-NoAddition",
    "bilinear_basic": "Bilinear-Interpolation",
    "segnet_basic_natural": "SegNet-Basic, natural frequency",
}
# Training adequacy, declared AFTER the exploratory runs of segnet_table1_cpu (committed report, issue 22): it labels
# training failures and is not a preregistered rule. A trained network's loss ends at most 2/3 of the mean of its
# first 100 steps (median-frequency balancing keeps the weighted loss high, so the factor is modest), its mIoU ends
# above predicting background everywhere (about 0.13 on the 64 px validation split) by a margin of 0.07, and it
# predicts every class somewhere. Every arm reached 0.21-0.65 mIoU with wire and speck IoU above 0 (runs.csv); the
# issue's doubt about SegNet-Basic is its configuration (16 channels, 32 px crops through four poolings), which no
# gate measures.
GATE = Gate(loss_drop=1.5, min_miou=0.2, classes_predicted=1.0)
WIDTH, PAPER_WIDTH = 16, 64  # SegNet-Basic's channels here ('small' preset) and in the paper (issue 22 asks for 64)
MEMORY_NETWORKS = ("segnet_basic", "fcn_basic", "fcn_basic_noaddition", "bilinear_basic")
CAMVID_SIZE, CAMVID_CLASSES = (360, 480), 11
SEGNET_BILINEAR = "bilinear"
SEGNET_LEARNED = ("max_unpool", "transposed_k4_bilinear")  # SegNet-Basic and FCN-style learned deconvolution

# ----------------------------------------------------------------------------------------------------------------
# Presets


def table1_arms(labels=tuple(SEGNET_BASIC_ARMS)) -> tuple[Arm, ...]:
    """Table 1's networks of `labels` as arms, in SEGNET_BASIC_ARMS' order."""
    return tuple(
        Arm("table1", label, f"segnet_basic:decoder={decoder}", overrides, {"decoder": decoder, **overrides})
        for label, (decoder, overrides) in SEGNET_BASIC_ARMS.items()
        if label in labels
    )


def segnet_table1() -> Sweep:
    arms = table1_arms()
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
        gate=GATE,
    )


def segnet() -> Sweep:
    return Sweep(
        "segnet_cpu",
        tuple(operator_arm("segnet", label) for label in SEGNET_TABLE1),
        tuple(range(SMOKE_SEEDS)),
        SMOKE,
        "SegNet Table 1: bilinear-only vs max-unpool vs learned deconvolution decoders.",
        smoke_test=True,
        gate=GATE,  # 200 steps rarely train an arm: its orderings then read "not tested"
    )


# Issue 22: T3 again with SegNet-Basic and FCN-Basic wider and on whole 64 px images (the paper trained on whole
# CamVid images; 32 px crops leave a 2x2 map after four poolings, 64 px a 4x4 one). Batch 4 keeps the pixels per
# step of SEGNET_BASIC_TRAINING (16 crops of 32 px), so the step's cost grows with the width only. The pilot (seed
# 100, disjoint from the test seeds) checks the gate and times a run; it chose the width and seeds of the test.
WIDE = {"data.crop_size": 64, "batch_size": 4}
T3 = next(h for h in SEGNET_BASIC_HYPOTHESES if h.name == "T3")


def segnet_t3(name: str, width: int, seeds: tuple[int, ...]) -> Sweep:
    return Sweep(
        name,
        table1_arms(T3.arms),
        seeds,
        {**SEGNET_BASIC_TRAINING, **WIDE, "model.base_width": width},
        f"Badrinarayanan et al. Table 1, T3 only: SegNet-Basic vs FCN-Basic at {width} channels on whole 64 px "
        f"images, {len(seeds)} paired seeds, SegNet's recipe.",
        (T3,),
        reference="segnet_basic",
        reproduction=True,
        gate=GATE,
    )


PRESETS = {
    "segnet_table1_cpu": segnet_table1,
    "segnet_cpu": segnet,
    # The pilot: SegNet-Basic 0.45 mIoU in 360 s, FCN-Basic 0.65 in 248 s (2 jobs on 2 cores), both past the gate.
    # Width 64 would cost about 4 times as much, beyond this CPU budget: the test runs at width 32, 3 seeds.
    "segnet_t3_w32_pilot": lambda: segnet_t3("segnet_t3_w32_pilot", 32, (100,)),
    "segnet_t3_w32_cpu": lambda: segnet_t3("segnet_t3_w32_cpu", 32, (0, 1, 2)),
}

# ----------------------------------------------------------------------------------------------------------------
# Sections


def sections(results, report_dir) -> list[str]:
    return [s for s in (table1_section(results), t3_section(results), swapped_operators_section(results)) if s]


def table1_section(results) -> str | None:
    opened = open_section(
        results,
        "table1",
        tuple(SEGNET_BASIC_ARMS),
        required=("segnet_basic", "bilinear_basic"),
        title="Reproduction: Badrinarayanan et al. (SegNet), Table 1: decoders on SegNet-Basic's encoder",
        claim="On CamVid, decoders that learn beat the Bilinear-Interpolation baseline, which has no learned "
        "decoder (mIoU 43.3 vs 47.7 for SegNet-Basic and 47.3 for FCN-Basic), boundary F1 separates them most "
        "(20.8 vs 35.8); SegNet-Basic matches FCN-Basic while keeping only the pooling indices (storage multiplier "
        "1 vs 11), and FCN-Basic needs its added encoder maps (FCN-Basic-NoAddition scores lower). Table 1 also "
        "trains every network with natural-frequency (no) class balancing.",
    )
    if opened is None:
        return None
    lines = opened.lines + [
        "Here: the networks as published (`segjax.models.basic`: 4 levels of one 7x7 convolution with batch norm, no "
        "ReLU in SegNet-Basic's decoder; FCN-Basic decodes class-score maps with 1x1-reduced encoder maps added), "
        "at 16 channels instead of 64, trained by SegNet's recipe (SGD at 0.1 with momentum 0.9, median-frequency "
        "balancing; the rate decays here, where the paper's stays fixed) on the embedded dataset. Not done: the "
        "input's local response normalisation of the released prototxt (inputs are standardised instead), CamVid "
        "itself. "
        "Verdicts on mIoU: hypotheses T1-T4 above; on boundary F1 and on the balancing: below.",
        "",
        "| network | params | G (pixel acc.) | C (class acc.) | mIoU | BF (val) | BF 2 px (split) |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = ("final_pixel_accuracy", "final_class_accuracy", "final_miou", "final_boundary_f1", "bf_2")
    for label, arm in opened.found.items():
        if arm is not None:
            lines.append(f"| {TABLE1_NAMES[label]} | {params(arm)} | " + " | ".join(pm(arm, k) for k in keys) + " |")
    status = results.gate_status()
    lines += ["", *t3_lines(status, WIDTH, SEGNET_BASIC_TRAINING["data.crop_size"])]
    directed = [(h.better, h.worse, "final_boundary_f1") for h in SEGNET_BASIC_HYPOTHESES if h.claim == "greater"]
    lines += ["", "**Boundary F1** (the paper's leading measure), the directed pairs of T1, T2 and T4, Holm over 3:"]
    lines += paired_family(results.arms, "table1", directed, status)
    lines += [
        "",
        "**Median-frequency vs natural-frequency balancing** (SegNet-Basic), Holm over 2: in Table 1 the natural "
        "rows have the higher global accuracy G and the lower class-average accuracy C.",
    ]
    balancing = [
        ("segnet_basic", "segnet_basic_natural", "final_class_accuracy"),
        ("segnet_basic_natural", "segnet_basic", "final_pixel_accuracy"),
    ]
    lines += paired_family(results.arms, "table1", balancing, status)
    lines += memory_table((results.study(NAME) or {}).get("memory"))
    return "\n".join(lines)


def t3_lines(status: dict, width: int, crop: int) -> list[str]:
    """What T3 (SegNet-Basic as good as FCN-Basic) tests at this width and crop size, by the arms' training-adequacy
    gate."""
    failed = next(((a, status[("table1", a)]) for a in T3.arms if status.get(("table1", a))), None)
    asked = (
        f"segnet_t3_w32_cpu tests T3 again at 32 channels on whole 64 px images; the paper's {PAPER_WIDTH} channels "
        "would cost about 4 times as much per run, beyond this CPU budget"
        if width < 32
        else f"The paper's {PAPER_WIDTH} channels would cost about 4 times as much per run, beyond this CPU budget"
    )
    if failed:
        return [
            f"**T3 is not tested**: {TABLE1_NAMES[failed[0]]} did not train at {width} channels by the "
            f"training-adequacy gate ({failed[1]}). {asked}."
        ]
    if ("table1", T3.better) not in status:
        return [f"**T3** compares the networks at {width} channels; no training-adequacy gate was declared."]
    bottleneck = crop // 2**4
    return [
        f"**T3** (SegNet-Basic as good as FCN-Basic): both arms passed the training-adequacy gate, so its verdict "
        f"stands for this configuration only: {width} channels on {crop} px crops, where four poolings leave a "
        f"{bottleneck}x{bottleneck} map under 7x7 kernels, not the paper's {PAPER_WIDTH} channels on 360x480 images "
        f"(a 23x30 map). {asked}."
    ]


def t3_section(results) -> str | None:
    """T3 tested again without the other rows of Table 1 (segnet_t3_w32_cpu)."""
    if results.arm("table1", "bilinear_basic") is not None:
        return None  # the whole Table 1 ran: table1_section has T3
    opened = open_section(
        results,
        "table1",
        T3.arms,
        title="Reproduction: Badrinarayanan et al. (SegNet), Table 1's T3 again: SegNet-Basic vs FCN-Basic",
        claim="SegNet-Basic matches FCN-Basic (CamVid mIoU 47.7 vs 47.3) while keeping only the pooling indices.",
    )
    if opened is None:
        return None
    width, crop = (sweep_override(results, key) for key in ("model.base_width", "data.crop_size"))
    lines = opened.lines + [
        f"Here: the networks of segnet_table1_cpu at {width} channels, trained on whole {crop} px images (batch 4: "
        "the pixels per step of segnet_table1_cpu's 16 crops of 32 px) by the same recipe. Verdict: T3 above.",
        "",
        "| network | params | G (pixel acc.) | C (class acc.) | mIoU | BF (val) |",
        "|---|---|---|---|---|---|",
    ]
    keys = ("final_pixel_accuracy", "final_class_accuracy", "final_miou", "final_boundary_f1")
    for label, arm in opened.found.items():
        if arm is not None:
            lines.append(f"| {TABLE1_NAMES[label]} | {params(arm)} | " + " | ".join(pm(arm, k) for k in keys) + " |")
    return "\n".join([*lines, "", *t3_lines(results.gate_status(), width, crop)])


def sweep_override(results, key: str):
    """`key`'s value in the overrides of the sweep that trained SegNet-Basic."""
    sweep = next(s for s in results.sweeps if any(a["label"] == "segnet_basic" for a in s["arms"]))
    return sweep["overrides"][key]


def memory_table(memory: list[dict] | None) -> list[str]:
    """The decoders' inference memory (experiments.measure.segnet.decoder_memory_rows), if it was measured."""
    if not memory:
        return ["", "**Inference memory**: not measured (`--reanalyze` measures it)."]
    indices = memory[0]["paper"]
    lines = [
        "",
        f"**Inference memory** at the paper's width (64 channels), one {CAMVID_SIZE[0]}x{CAMVID_SIZE[1]} CamVid image, "
        f"{CAMVID_CLASSES} classes: what the decoder keeps from the encoder, counted as the paper does (indices at 2 "
        "bits per channel and window, FCN-Basic's reduced maps in float32) and as segjax holds it (int32 indices, "
        "FCN-Basic's unreduced maps), and the working memory XLA's buffer assignment plans for the whole forward pass "
        "(`memory_analysis().temp_size_in_bytes` on this CPU backend: computed, not timed).",
        "",
        "| network | params | kept for the decoder (paper's count) | multiplier | as held here | XLA working memory |",
        "|---|---|---|---|---|---|",
    ]
    for row in memory:
        multiplier = row["paper"] / indices if indices else math.nan
        lines.append(
            f"| {TABLE1_NAMES[row['model']]} | {row['params']:,} | {row['paper'] / 2**20:.2f} MiB | "
            f"{multiplier:.1f} | {row['as_implemented'] / 2**20:.2f} MiB | {row['temp_mib']:.1f} MiB |"
        )
    return lines


def swapped_operators_section(results) -> str | None:
    opened = open_section(
        results,
        "segnet",
        (SEGNET_BILINEAR, *SEGNET_LEARNED),
        required=(SEGNET_BILINEAR,),
        at_least=2,
        title="SegNet's upsampling operators swapped in the small SegNet (not Table 1 as published)",
        claim="On CamVid, a decoder that only upsamples with fixed bilinear interpolation scores below "
        "decoders that learn: mIoU 43.3 (bilinear) vs 47.7 (SegNet-Basic, max-unpool with indices) and 47.3 "
        "(FCN-Basic, learned deconvolution).",
    )
    if opened is None:
        return None
    bil, *learned = opened.found.values()
    learned = [a for a in learned if a is not None]
    lines = opened.lines + [
        "Here: the same SegNet-style network with its upsampling operator swapped (bilinear; max-unpool with "
        "the encoder's indices; transposed convolution k4 initialised bilinear, i.e. FCN's learned "
        "deconvolution). The decoder's convolutions are kept in every variant, so this isolates the upsampling "
        "operator. Unlike the paper's bilinear baseline (no learned decoder at all), every variant here keeps the "
        "decoder's convolutions, so the three have the same parameter count; Table 1 as published is the preset "
        "segnet_table1_cpu.",
        "",
        "| decoder | val mIoU | val boundary F1 | params |",
        "|---|---|---|---|",
    ]
    for name, a in (("bilinear", bil), *((a["label"], a) for a in learned)):
        lines.append(f"| {name} | {pm(a, 'final_miou')} | {pm(a, 'final_boundary_f1')} | {params(a)} |")
    lines.append("")
    status = results.gate_status()
    lines += [f"- bilinear < {a['label']}: **{ordering(bil, a, status=status)}**" for a in learned]
    return "\n".join(lines)
