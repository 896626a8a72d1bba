"""Long et al. (FCN): skip connections, FCN at 128 px with its upsampling fixed as released, and staged training.

  fcn_128_cpu FCN-32s / 16s / 8s at 128 px with fixed bilinear upsampling (as released) and FCN-8s with it learned,
              hypotheses F1-F3, 3 paired seeds, the share oracle per stride
  fcn_staged_128_cpu  FCN-8s trained in stages 32s -> 16s -> 8s (each from the previous stage's checkpoint) vs at once
              for the same steps, fixed bilinear upsampling, hypothesis S1, 5 paired seeds
  fcn_cpu     FCN-32s / 16s / 8s on the smoke budget

The share oracle of each stride is a per-run measurement (experiments.analysis.oracle_miou, in analysis.json).
"""

from __future__ import annotations

import math

from experiments.definitions import (
    FCN_128_SEEDS,
    FCN_128_TRAINING,
    FCN_STAGE_STEPS,
    FCN_STAGED_SEEDS,
    SMOKE,
    SMOKE_FCN,
    SMOKE_SEEDS,
    Hypothesis,
    Sweep,
    fcn_arm,
)
from experiments.gates import Gate
from experiments.tables import interval, open_section, ordering, params, pm

FCN_HYPOTHESES = (
    Hypothesis(
        "F1",
        "Long et al.: does fusing pool4 (FCN-16s) beat FCN-32s, both with fixed bilinear upsampling as released?",
        "fcn",
        "fcn16s_fixed",
        "fcn32s_fixed",
    ),
    Hypothesis("F2", "... and does fusing pool3 too (FCN-8s) beat FCN-16s?", "fcn", "fcn8s_fixed", "fcn16s_fixed"),
    Hypothesis(
        "F3",
        "Is learning FCN-8s's upsampling (bilinear-initialised) as good as keeping it fixed, within the margin (the "
        "paper saw little gain from learning it)?",
        "fcn",
        "fcn8s_learned",
        "fcn8s_fixed",
        claim="equivalent",
    ),
)
FCN_STAGED_HYPOTHESES = (
    Hypothesis(
        "S1",
        "Shelhamer et al.: is FCN-8s trained at once as good as trained in stages 32s -> 16s -> 8s, for the same "
        "number of steps in all, within the margin?",
        "fcn",
        "fcn8s_at_once",
        "fcn8s_staged",
        claim="equivalent",
    ),
)
FCN_LABELS = ("fcn32s", "fcn16s", "fcn8s")
FCN_128 = ("fcn32s_fixed", "fcn16s_fixed", "fcn8s_fixed", "fcn8s_learned")
FCN_STAGED = ("fcn32s_fixed", "fcn16s_staged", "fcn8s_staged", "fcn8s_at_once")
CLAIM = "Fusing finer encoder stages improves mIoU: 59.4 / 62.4 / 62.7 on VOC2011 val for FCN-32s / 16s / 8s."

# Training adequacy, declared AFTER the exploratory runs of fcn_128_cpu and fcn_staged_128_cpu (committed reports,
# issue 22): it labels training failures and is not a preregistered rule. A trained FCN ends with its loss at most 2/3
# of the mean of its first 100 steps, an mIoU above predicting background everywhere (about 0.13) by 0.07, and at
# least 4 of the 6 classes predicted: at 128 px FCN-32s's 4x4 score map cannot hold 1-3 px wires or 3-7 px specks
# (its share oracle is 0.28), so asking for every class would gate the architecture F1 tests, not its training. Every
# arm reached 0.28-0.66 mIoU (runs.csv). Staged arms start from the previous stage's trained network, so their first
# logged loss is low already: there the loss only has to end no higher than it started.
GATE = Gate(loss_drop=1.5, min_miou=0.2, classes_predicted=0.6)
STAGED_GATE = Gate(loss_drop=1.0, min_miou=0.2, classes_predicted=0.6)

# ----------------------------------------------------------------------------------------------------------------
# Presets


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
        gate=GATE,
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
        gate=STAGED_GATE,
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
        gate=GATE,  # 200 steps rarely train an arm: its orderings then read "not tested"
    )


PRESETS = {"fcn_128_cpu": fcn_128, "fcn_staged_128_cpu": fcn_staged, "fcn_cpu": fcn}

# ----------------------------------------------------------------------------------------------------------------
# Sections


def sections(results, report_dir) -> list[str]:
    return [s for s in (skips_section(results), fcn_128_section(results), staged_section(results)) if s]


def skips_section(results) -> str | None:
    opened = open_section(
        results,
        "fcn",
        FCN_LABELS,
        required=(),
        title="Reproduction: Long et al. (FCN), skip connections: FCN-32s < FCN-16s < FCN-8s",
        claim=CLAIM,
    )
    if opened is None:
        return None
    found = opened.found
    lines = opened.lines + ["| variant | val mIoU | val boundary F1 | params |", "|---|---|---|---|"]
    for label, arm in found.items():
        lines.append(f"| {label} | {pm(arm, 'final_miou')} | {pm(arm, 'final_boundary_f1')} | {params(arm)} |")
    lines.append("")
    for lo, hi in (("fcn32s", "fcn16s"), ("fcn16s", "fcn8s")):
        if found[lo] and found[hi]:
            lines.append(f"- {lo} < {hi}: **{ordering(found[lo], found[hi], status=results.gate_status())}**")
    lines += [
        "",
        "Boundary F1 is the sharper test of the claim: the skips add fine localisation, which shows at "
        "object boundaries (wires and specks in the embedded dataset) more than in region overlap.",
    ]
    return "\n".join(lines)


def oracle_rows(found: dict) -> list[tuple[str, dict, int, float]]:
    """(label, arm, FCN's output stride from the label ('fcn16s_staged' -> 16), the arm's share oracle at that
    stride) of each finished arm."""
    rows = []
    for label, arm in found.items():
        if arm is not None:
            stride = int(label[3:].split("s_")[0])
            rows.append((label, arm, stride, arm.get(f"oracle_{stride}_mean", math.nan)))
    return rows


def fcn_128_section(results) -> str | None:
    opened = open_section(
        results,
        "fcn",
        FCN_128,
        required=(),
        at_least=2,  # the staged sweep shares fcn32s_fixed only
        title="Reproduction: Long et al. (FCN) at 128 px, upsampling fixed as released",
        claim=CLAIM[:-1] + ". The released networks keep every deconvolution fixed at bilinear interpolation "
        "(learning rate 0); here that is the main arm (`optimizer.frozen='upscore'`), and FCN-8s with its upsampling "
        "learned (bilinear-initialised) the ablation. At 128 px stride 32 leaves a 4x4 score map. Verdicts are the "
        "hypotheses F1-F3 above.",
    )
    if opened is None:
        return None
    lines = opened.lines + [
        "The share oracle: the true labels as class shares per cell of the stride, upsampled bilinearly, argmax "
        "(experiments.analysis.oracle_confusion): what a score map holding the true class shares reaches through "
        "the bilinear decoder. It is a reference, not an upper bound: a network's scores are not shares, and scores "
        "pushed beyond the shares can move a boundary inside a cell, so a trained network can exceed it. Trained "
        "from scratch on the embedded dataset, not from VGG16 on VOC; staged training (32s -> 16s -> 8s) is the "
        "preset fcn_staged_128_cpu.",
        "",
        "| variant | stride | val mIoU | share oracle | mIoU / oracle | val boundary F1 | params |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, arm, stride, oracle in oracle_rows(opened.found):
        ratio = arm["final_miou_mean"] / oracle if oracle and not math.isnan(oracle) else math.nan
        lines.append(
            f"| {label} | {stride} | {pm(arm, 'final_miou')} | {oracle:.3f} | {ratio:.2f} | "
            f"{pm(arm, 'final_boundary_f1')} | {params(arm)} |"
        )
    lines += [
        "",
        "A finer stride raises the oracle itself: part of any 32s < 16s < 8s ordering is the information a coarser "
        "score map cannot hold, whatever the network.",
    ]
    return "\n".join(lines)


def staged_section(results) -> str | None:
    opened = open_section(
        results,
        "fcn",
        FCN_STAGED,
        required=("fcn8s_staged", "fcn8s_at_once"),
        title="Reproduction: Long et al. (FCN), staged vs at-once training",
        claim="Long et al. trained FCN-16s from the finished FCN-32s and FCN-8s from FCN-16s, each stage a new "
        "solver run; the journal version (Shelhamer et al. 2017) trained FCN-8s all at once from VGG16 (released as "
        "voc-fcn8s-atonce) and reports it about as good as the staged network. Here each stage is one run of the "
        "128-px budget with fixed bilinear upsampling, started from the previous stage's last checkpoint "
        "(`model.init_from`: every parameter with the same name and shape copied; pool4's and pool3's scores "
        "zero-initialised and the new upsamplers bilinear, as in the paper), against FCN-8s trained at once for "
        "the stages' steps in all. Deviations: from scratch, not from VGG16; the at-once network's skips are not "
        "scaled (the released one multiplies pool3 / pool4 by 1e-4 / 1e-2); the staged arms' schedule (below, with "
        "the verdict).",
    )
    if opened is None:
        return None
    lines = opened.lines + [
        "| variant | steps (in all) | val mIoU | share oracle | val boundary F1 | params |",
        "|---|---|---|---|---|---|",
    ]
    for label, arm, _, oracle in oracle_rows(opened.found):
        steps = arm["_members"][0]["_tags"].get("steps", "-")
        cells = [str(steps), pm(arm, "final_miou"), f"{oracle:.3f}", pm(arm, "final_boundary_f1"), params(arm)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *staged_verdict(results)])


def staged_verdict(results) -> list[str]:
    """S1's verdict (as in the hypotheses table) with the staged arms' schedule handicap beside it."""
    tested = results.verdicts()
    s1 = next((r for r in tested if r["hypothesis"]["name"] == "S1" and r["verdict"]), None)
    handicap = (
        f"Handicap of the staged arms, unlike the paper: each stage here is one {FCN_STAGE_STEPS}-step run of the "
        f"128 px budget with its own warm-up ({FCN_128_TRAINING['schedule.warmup_steps']} steps) and a poly decay to "
        f"zero, so the staged FCN-8s restarts its learning rate from zero twice and each stage gets a third of the "
        f"at-once network's {3 * FCN_STAGE_STEPS} steps, where Long et al. ran every stage as a full solver run of its "
        "own. A staged network that ends lower here may be paying for that schedule, not for staging."
    )
    if s1 is None:
        return [f"**S1** (at once as good as staged): not tested here. {handicap}"]
    v, gate = s1["verdict"], s1.get("gate")
    c = v.contrast
    gate_text = f"; arms' gate: {gate}" if gate and not v.verdict.startswith("not tested") else ""
    return [
        f"**S1** ({s1['hypothesis']['statement']}): **{v.verdict}** (difference {c.mean:+.4f}, 95% CI "
        f"{interval(c.ci_low, c.ci_high, 4)}, Holm p = {v.p_holm:.3g}, n = {c.n}{gate_text}). {handicap}"
    ]
