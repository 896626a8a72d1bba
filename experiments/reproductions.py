"""Paper reproductions: the presets (sweeps) and the report section of each.

Each section states the paper's claim, what was measured here, and whether the claim held, decided by a rule
fixed in advance (written in the section) rather than by reading the numbers:
- an ordering "A < B" *held clearly* when the gap of the seed means exceeds two standard errors of the gap,
  *held within the spread* when the means are ordered but the gap is smaller, and *did not hold* otherwise.
- an operator "shows checkerboard artifacts" at initialisation when its score exceeds CB_ARTIFACT (0.05) for
  every seed, and "shows none" when it stays below CB_NONE (1e-3) for every seed.

Presets (python -m experiments.reproductions --preset=NAME): odena_cpu/gpu (transposed k2/k3/k4, pixel
shuffle and resize-convolution arms of the ablation in U-Net and SegNet), fcn_cpu/gpu (FCN-32s/16s/8s), segnet_cpu/
gpu (SegNet decoders: bilinear only, max-unpool with indices, learned deconvolution). The Odena and SegNet presets
are subsets of the ablation's arms with the same budget, so they reuse the ablation's finished runs when pointed at
the same --out.
"""

from __future__ import annotations

import math
import pathlib
import sys

from experiments import sweep as sweep_lib

CB_ARTIFACT = 0.05
CB_NONE = 1e-3

ODENA_LABELS = (
    "transposed_k2_default",
    "transposed_k3_default",
    "transposed_k4_default",
    "transposed_k2_bilinear",
    "transposed_k3_bilinear",
    "transposed_k4_bilinear",
    "pixel_shuffle_default",
    "pixel_shuffle_icnr",
    "resize_conv_nearest",
    "resize_conv_bilinear",
)
SEGNET_BILINEAR = "bilinear"
SEGNET_LEARNED = ("max_unpool", "transposed_k4_bilinear")  # SegNet-Basic and FCN-style learned deconvolution
FCN_LABELS = ("fcn32s", "fcn16s", "fcn8s")


# ----------------------------------------------------------------------------------------------------------------
# Verdicts


def ordering(lo: dict, hi: dict, key: str = "val_miou") -> str:
    """Verdict for the claim lo < hi on the seed means of `key`."""
    m_lo, m_hi = lo[f"{key}_mean"], hi[f"{key}_mean"]
    s_lo, s_hi = lo[f"{key}_std"], hi[f"{key}_std"]
    if math.isnan(m_lo) or math.isnan(m_hi):
        return "not measured"
    se = math.sqrt(
        (0 if math.isnan(s_lo) else s_lo) ** 2 / max(lo["seeds"], 1)
        + (0 if math.isnan(s_hi) else s_hi) ** 2 / max(hi["seeds"], 1)
    )
    gap = m_hi - m_lo
    if gap <= 0:
        return f"did not hold (gap {gap:+.4f})"
    if se > 0 and gap > 2 * se:
        return f"held clearly (gap {gap:+.4f} > 2 s.e. = {2 * se:.4f})"
    if se == 0:
        return f"held (gap {gap:+.4f}; one seed, no spread estimate)"
    return f"held within the seed spread (gap {gap:+.4f} <= 2 s.e. = {2 * se:.4f})"


def _arm(arms, model, label):
    return next((a for a in arms if a["model"] == model and a["label"] == label), None)


def _params(arm) -> str:
    return "-" if arm is None or arm["params"] is None else f"{arm['params']:,}"


def _mean_pm(arm, key):
    if arm is None or math.isnan(arm[f"{key}_mean"]):
        return "-"
    d = 4 if key.startswith("cb_") else 3  # checkerboard scores of whole networks are small
    std = arm[f"{key}_std"]
    return f"{arm[f'{key}_mean']:.{d}f}" + ("" if math.isnan(std) else f" ± {std:.{d}f}")


# ----------------------------------------------------------------------------------------------------------------
# Sections


def odena_operator_section(report_dir: pathlib.Path, figures: bool = True, seeds=range(3)) -> str:
    from experiments import analysis

    scores = analysis.operator_checkerboard_at_init(seeds=seeds)
    expect_artifacts = (
        "transposed_k2_default",
        "transposed_k3_default",
        "transposed_k4_default",
        "pixel_shuffle_default",
    )
    expect_none = (
        "resize_conv_nearest",
        "resize_conv_bilinear",
        "transposed_k3_bilinear",
        "transposed_k4_bilinear",
        "pixel_shuffle_icnr",
    )
    lines = ["| operator (x2, random init) | checkerboard score per seed | verdict |", "|---|---|---|"]
    held = True
    for label, values in scores.items():
        if all(v > CB_ARTIFACT for v in values):
            verdict = "artifacts"
        elif all(v < CB_NONE for v in values):
            verdict = "none"
        else:
            verdict = "mixed"
        if (label in expect_artifacts and verdict != "artifacts") or (label in expect_none and verdict != "none"):
            held = False
        lines.append(f"| {label} | {', '.join(f'{v:.3f}' for v in values)} | {verdict} |")
    text = [
        "### Operators alone at initialisation",
        "",
        "One Upsample layer (x2, 8 channels, 16x16 constant input, border 2 px excluded), freshly initialised "
        f"with seeds {list(seeds)}; score factor 2. Expected artifacts: {', '.join(expect_artifacts)}; expected "
        f"none: {', '.join(expect_none)}.",
        "",
        *lines,
        "",
        f"**Verdict: {'held' if held else 'did not hold'}** at the operator level. (Bed of nails and max-unpool "
        "score sqrt(3)/2 = 0.866 by construction: they put one value in every 2x2 cell.)",
        "",
    ]
    if figures:
        _operator_figure(report_dir / "odena_operators_at_init.png")
        text += ["![operators at init](odena_operators_at_init.png)", ""]
    return "\n".join(text)


def _operator_figure(path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments import analysis

    outs = analysis.operator_outputs(seed=0)
    fig, axes = plt.subplots(1, len(outs), figsize=(1.25 * len(outs), 1.6))
    for ax, (label, y) in zip(axes, outs.items(), strict=True):
        crop = y[0, 2:10, 2:10, 0]
        lo, hi = float(crop.min()), float(crop.max())
        if hi - lo < 1e-6 * max(abs(hi), 1.0):  # constant: draw mid-grey, not an autoscaled black square
            lo, hi = lo - 1.0, hi + 1.0
        ax.imshow(crop, cmap="gray", interpolation="nearest", vmin=lo, vmax=hi)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label.replace("_", "\n", 1), fontsize=6)
    fig.suptitle("channel 0 of each x2 operator on a constant input at initialisation (8x8 crop)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def odena_section(arms, report_dir: pathlib.Path, operator_study: bool = True, figures: bool = True) -> str | None:
    present = [a for a in arms if a["label"] in ODENA_LABELS]
    if not present and not operator_study:
        return None
    text = [
        "## Reproduction: Odena et al. 2016, deconvolution and checkerboard artifacts",
        "",
        "**Claim.** Randomly initialised transposed convolutions and pixel shuffle produce checkerboard "
        "artifacts at initialisation; resize-convolution, bilinear-initialised transposed convolution and "
        "ICNR-initialised pixel shuffle do not. Artifacts persist after training, more so with uneven overlap "
        "(kernel 3, stride 2) than with even overlap (kernel 2 or 4).",
        "",
    ]
    if operator_study:
        text.append(odena_operator_section(report_dir, figures=figures))
    if present:
        text += [
            "### Whole networks: at initialisation and after training",
            "",
            "Checkerboard score of the class probabilities on a constant input (see Columns), mean ± std over seeds.",
            "",
            "| model | arm | at init | trained | trained / init |",
            "|---|---|---|---|---|",
        ]
        for a in present:
            ratio = (
                a["cb_trained_constant_mean"] / a["cb_init_constant_mean"]
                if a["cb_init_constant_mean"]
                else float("nan")
            )
            text.append(
                f"| {a['model']} | {a['label']} | {_mean_pm(a, 'cb_init_constant')} | "
                f"{_mean_pm(a, 'cb_trained_constant')} | {ratio:.2f} |"
            )
        text += [
            "",
            "Uneven vs even overlap after training (rule: 'k3 keeps more' holds when its trained score "
            "exceeds both k2's and k4's; same ordering rule as above):",
            "",
        ]
        for model in dict.fromkeys(a["model"] for a in present):
            k3 = _arm(arms, model, "transposed_k3_default")
            for even in ("transposed_k2_default", "transposed_k4_default"):
                other = _arm(arms, model, even)
                if k3 is None or other is None:
                    continue
                text.append(
                    f"- {model}: {even} {_mean_pm(other, 'cb_trained_constant')} < transposed_k3_default "
                    f"{_mean_pm(k3, 'cb_trained_constant')}: "
                    f"**{ordering(other, k3, 'cb_trained_constant')}**"
                )
            for init_label, trained_label in (
                ("pixel_shuffle_icnr", "pixel_shuffle_default"),
                ("transposed_k4_bilinear", "transposed_k4_default"),
            ):
                lo, hi = _arm(arms, model, init_label), _arm(arms, model, trained_label)
                if lo is not None and hi is not None:
                    text.append(
                        f"- {model}: after training {init_label} {_mean_pm(lo, 'cb_trained_constant')} < "
                        f"{trained_label} {_mean_pm(hi, 'cb_trained_constant')}: "
                        f"**{ordering(lo, hi, 'cb_trained_constant')}**"
                    )
        text.append("")
        text.append(
            "Inside a network the decoder's convolutions after each upsampling and the skip connections "
            "mix phases, so network-level scores are smaller than the operator-level ones above and "
            "depend on everything that follows the operator."
        )
    return "\n".join(text)


def fcn_section(arms) -> str | None:
    found = {label: _arm(arms, "fcn", label) for label in FCN_LABELS}
    if not any(found.values()):
        return None
    lines = [
        "## Reproduction: Long et al. (FCN), skip connections: FCN-32s < FCN-16s < FCN-8s",
        "",
        "**Claim.** Fusing finer encoder stages improves mIoU: 59.4 / 62.4 / 62.7 on VOC2011 val for "
        "FCN-32s / 16s / 8s.",
        "",
        "| variant | val mIoU | val boundary F1 | params |",
        "|---|---|---|---|",
    ]
    for label, arm in found.items():
        lines.append(f"| {label} | {_mean_pm(arm, 'val_miou')} | {_mean_pm(arm, 'val_boundary_f1')} | {_params(arm)} |")
    lines.append("")
    for lo, hi in (("fcn32s", "fcn16s"), ("fcn16s", "fcn8s")):
        if found[lo] and found[hi]:
            lines.append(f"- {lo} < {hi}: **{ordering(found[lo], found[hi])}**")
    lines += [
        "",
        "Boundary F1 is the sharper test of the claim: the skips add fine localisation, which shows at "
        "object boundaries (wires and specks in the embedded dataset) more than in region overlap.",
    ]
    return "\n".join(lines)


def segnet_section(arms) -> str | None:
    bil = _arm(arms, "segnet", SEGNET_BILINEAR)
    learned = [a for a in (_arm(arms, "segnet", label) for label in SEGNET_LEARNED) if a is not None]
    if bil is None or not learned:
        return None
    lines = [
        "## Reproduction: Badrinarayanan et al. (SegNet), Table 1: decoders that learn beat bilinear upsampling",
        "",
        "**Claim.** On CamVid, a decoder that only upsamples with fixed bilinear interpolation scores below "
        "decoders that learn: mIoU 43.3 (bilinear) vs 47.7 (SegNet-Basic, max-unpool with indices) and 47.3 "
        "(FCN-Basic, learned deconvolution).",
        "",
        "Here: the same SegNet-style network with its upsampling operator swapped (bilinear; max-unpool with "
        "the encoder's indices; transposed convolution k4 initialised bilinear, i.e. FCN's learned "
        "deconvolution). The decoder's convolutions are kept in every variant, so this isolates the upsampling "
        "operator; SegNet's bilinear variant also has fewer decoder parameters.",
        "",
        "| decoder | val mIoU | val boundary F1 | params |",
        "|---|---|---|---|",
        f"| bilinear | {_mean_pm(bil, 'val_miou')} | {_mean_pm(bil, 'val_boundary_f1')} | {_params(bil)} |",
    ]
    for a in learned:
        lines.append(f"| {a['label']} | {_mean_pm(a, 'val_miou')} | {_mean_pm(a, 'val_boundary_f1')} | {_params(a)} |")
    lines.append("")
    for a in learned:
        lines.append(f"- bilinear < {a['label']}: **{ordering(bil, a)}**")
    return "\n".join(lines)


def sections(arms, report_dir: pathlib.Path, operator_study: bool = True, figures: bool = True) -> list[str]:
    """The reproduction sections whose runs are present (the operator-level Odena study always, if asked)."""
    out = []
    for section in (odena_section(arms, report_dir, operator_study, figures), fcn_section(arms), segnet_section(arms)):
        if section:
            out.append(section)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Presets


def _subset(sweep: sweep_lib.Sweep, name: str, keep, description: str) -> sweep_lib.Sweep:
    arms = tuple(a for a in sweep.arms if keep(a))
    return sweep_lib.Sweep(name, arms, sweep.seeds, sweep.overrides, description)


def odena(scale: str) -> sweep_lib.Sweep:
    from experiments import upsampling_ablation as ua

    base = ua.ablation(scale)
    return _subset(
        base,
        f"odena_{scale}",
        lambda a: a.label in ODENA_LABELS,
        "Odena et al.: transposed convolution k2/k3/k4 (default and bilinear init), pixel shuffle "
        "(default, ICNR) and resize-convolution, checkerboard at init and after training.",
    )


def segnet(scale: str) -> sweep_lib.Sweep:
    from experiments import upsampling_ablation as ua

    base = ua.ablation(scale)
    return _subset(
        base,
        f"segnet_{scale}",
        lambda a: a.model == "segnet" and a.label in (SEGNET_BILINEAR, *SEGNET_LEARNED),
        "SegNet Table 1: bilinear-only vs max-unpool vs learned deconvolution decoders.",
    )


def fcn(scale: str) -> sweep_lib.Sweep:
    from experiments import upsampling_ablation as ua

    budget = ua.BUDGETS[scale]
    arms = tuple(
        sweep_lib.Arm(
            "fcn", f"fcn{v}", f"fcn:{v}", dict(budget.get("fcn_overrides", {})), {"method": "transposed", "skips": v}
        )
        for v in ("32s", "16s", "8s")
    )
    return sweep_lib.Sweep(
        f"fcn_{scale}",
        arms,
        tuple(range(budget["seeds"])),
        budget["overrides"],
        "Long et al.: FCN-32s / 16s / 8s on the embedded dataset.",
    )


PRESETS = {
    "odena_cpu": lambda: odena("cpu"),
    "odena_gpu": lambda: odena("gpu"),
    "fcn_cpu": lambda: fcn("cpu"),
    "fcn_gpu": lambda: fcn("gpu"),
    "segnet_cpu": lambda: segnet("cpu"),
    "segnet_gpu": lambda: segnet("gpu"),
    "all_cpu": lambda: [fcn("cpu"), odena("cpu"), segnet("cpu")],
    "all_gpu": lambda: [fcn("gpu"), odena("gpu"), segnet("gpu")],
}

if __name__ == "__main__":
    sys.exit(sweep_lib.main(PRESETS, prog="experiments.reproductions"))
