"""Shared table and formatting helpers of the report and the studies' sections (no JAX): number formats, CSV,
seed-paired verdict lines, and the skeleton every study section starts from (`open_section`).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from experiments import gates, stats
from experiments.definitions import MARGIN
from experiments.results import (
    PLATEAU_EVALS,
    PLATEAU_TOLERANCE,
    SPLIT_METRICS,
    Results,
    arms_gate,
    find_arm,
    gated,
    h_arms,
    paired,
    per_seed,
    plateau_step,
)

# ----------------------------------------------------------------------------------------------------------------
# Numbers


def fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def pm(arm: dict | None, key: str, digits: int | None = None) -> str:
    """'mean ± sd' of an aggregated arm's metric ('-' when not measured); checkerboard scores get 4 digits."""
    if arm is None or math.isnan(arm[f"{key}_mean"]):
        return "-"
    d = digits if digits is not None else (4 if key.startswith("cb_") else 3)
    std = arm[f"{key}_std"]
    return f"{arm[f'{key}_mean']:.{d}f}" + ("" if math.isnan(std) else f" ± {std:.{d}f}")


def seed_spread(values, digits: int = 3) -> str:
    """'mean ± sample SD' of per-seed values (the mean alone for one value)."""
    if len(values) > 1:
        return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"
    return f"{np.mean(values):.{digits}f}"


def params(arm: dict | None) -> str:
    return "-" if arm is None or arm["params"] is None else f"{arm['params']:,}"


def interval(low, high, digits=3) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def cell(text: str) -> str:
    """Text for a markdown table cell: its '|' (the absolute value of an equivalence claim) escaped."""
    return text.replace("|", "\\|")


def write_csv(path: pathlib.Path, rows: list[dict], columns) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})


# ----------------------------------------------------------------------------------------------------------------
# Verdicts


def ordering(lo: dict, hi: dict, key: str = "final_miou", status=None) -> str:
    """Verdict for the claim lo < hi: a paired contrast over the seeds both arms ran (experiments.stats rules,
    equivalence margin 0.01, one test, so no Holm adjustment), with its 95% interval; "not tested" when the arms'
    gate `status` (`Results.gate_status`) says one of them did not train."""
    seeds, (hi_values, lo_values) = paired([hi, lo], key)
    if len(seeds) < 2:
        return "not measured (fewer than 2 paired seeds)"
    result = stats.family_verdicts([(hi_values, lo_values)], [MARGIN], ["greater"])[0]
    verdict, gate = gated_and_gate(result.verdict, lo["model"], (lo["label"], hi["label"]), status)
    c = result.contrast
    ci = interval(c.ci_low, c.ci_high, 4)
    return f"{verdict} (difference {c.mean:+.4f}, 95% CI {ci}, p = {c.p:.3f}, n = {c.n}{gate})"


def paired_family(arms: list[dict], model: str, claims, status=None, parts=None) -> list[str]:
    """Verdicts of 'better > worse on key' for each (better, worse, key) of `claims`, seed-paired, Holm over them.
    With the arms' gate `status` (`Results.gate_status`), a claim about an arm that did not train is "not tested"
    and the others say their arms' gate status; `parts`: label -> the arms it is made of (an ensemble's members)."""
    found, values = [], []
    for better, worse, key in claims:
        a, b = find_arm(arms, model, better), find_arm(arms, model, worse)
        if a is None or b is None:
            continue
        seeds, (x, y) = paired([a, b], key)
        if len(seeds) >= 2:
            found.append((better, worse, key))
            values.append((x, y))
    if not found:
        return []
    results = stats.family_verdicts(values, [MARGIN] * len(found), ["greater"] * len(found))
    lines = []
    for (better, worse, key), r in zip(found, results, strict=True):
        labels = [*(parts or {}).get(better, (better,)), *(parts or {}).get(worse, (worse,))]
        verdict, gate = gated_and_gate(r.verdict, model, labels, status)
        lines.append(
            f"- {better} > {worse} on {key}: **{verdict}** (difference {r.contrast.mean:+.4f}, 95% CI "
            f"{interval(r.contrast.ci_low, r.contrast.ci_high, 4)}, p_Holm = {r.p_holm:.3f}, n = {r.contrast.n}"
            f"{gate})"
        )
    return lines


def verdict_line(text: str, result, digits: int = 4, *, model: str = "", labels=(), status=None) -> str:
    """'- text: difference, 95% CI, Holm p: **verdict**' of one contrast of a family (stats.Verdict) of the arms
    `labels` of `model`: "not tested" when one of them did not train by its gate `status` (`paired_family`)."""
    c = result.contrast
    verdict, gate = gated_and_gate(result.verdict, model, labels, status)
    return (
        f"- {text}: difference {c.mean:+.{digits}f}, 95% CI {interval(c.ci_low, c.ci_high, digits)}, Holm p = "
        f"{result.p_holm:.2g}: **{verdict}**{gate}"
    )


def gated_and_gate(verdict: str, model: str, labels, status) -> tuple[str, str]:
    """(the verdict, "not tested: ..." when an arm did not train; '; arms' gate: passed' when a gate covers the
    arms and they trained, else '')."""
    verdict = gated(verdict, model, labels, status)
    gate = arms_gate(model, labels, status)
    return verdict, (f"; arms' gate: {gate}" if gate == "passed" else "")


# ----------------------------------------------------------------------------------------------------------------
# The skeleton of a study's section


@dataclasses.dataclass
class Section:
    """An opened section: its arms by label (None where no run finished) and its first lines (header, claim)."""

    found: dict[str, dict | None]
    lines: list[str]


def open_section(
    results,
    model: str,
    labels: Sequence[str],
    *,
    title: str,
    claim: str | None = None,
    required: Sequence[str] | None = None,
    at_least: int = 1,
    level: str = "##",
) -> Section | None:
    """The arms `labels` of `model` in `results`, and the header and claim of their section; None (no section) when
    an arm of `required` (default: every label) has no finished run, or fewer than `at_least` arms have one."""
    found = {label: results.arm(model, label) for label in labels}
    needed = labels if required is None else required
    if any(found[label] is None for label in needed) or sum(a is not None for a in found.values()) < at_least:
        return None
    lines = [f"{level} {title}", ""]
    if claim:
        lines += [f"**Claim.** {claim}", ""]
    return Section(found, lines)


# ----------------------------------------------------------------------------------------------------------------
# The report's generic tables: hypotheses, power, arms


def hypotheses_table(results: list[dict], seeds: int) -> tuple[list[str], list[dict]]:
    """Markdown of the hypothesis tests and the rows of hypotheses.csv."""
    trim = next((r["verdict"].contrast.trim for r in results if r["verdict"] is not None), 0.0)
    estimate = f"{trim:.0%} trimmed mean difference" if trim else "difference"
    md = [
        f"| | claim | {estimate} (final mIoU) | 95% CI (t) | 95% CI of the mean (sign-flip / bootstrap) | p | "
        "p (Holm) | TOST p (Holm) | verdict | arms' training-adequacy gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    csv_rows = []
    for r in results:
        h, v, gate = r["hypothesis"], r["verdict"], r.get("gate") or "none declared"
        if v is None:
            md.append(f"| {h['name']} | {cell(h['statement'])} | not enough paired seeds | | | | | | | {gate} |")
            continue
        c = v.contrast
        md.append(
            f"| {h['name']} | {cell(h['statement'])} | {c.mean:+.4f} | {interval(c.ci_low, c.ci_high, 4)} | "
            f"{interval(c.robust_low, c.robust_high, 4)} | {c.p:.3g} | {v.p_holm:.3g} | {v.tost_p_holm:.3g} | "
            f"**{v.verdict}** | {'see verdict' if v.verdict.startswith('not tested') else gate} |"
        )
        csv_rows.append({**hypothesis_row(h, v), "gate": gate})
    test = (
        f"two-sided Tukey-McLaughlin test of the {trim:.0%} trimmed mean of the per-seed differences, declared by "
        "the study (the estimator below)"
        if trim
        else "two-sided paired t-test of the per-seed differences"
    )
    md += [
        "",
        f"Test: {test} (every arm ran the same seeds, which fix the "
        "data order and the encoder's initialisation), with its t interval and a nonparametric one"
        f"{' of the plain mean' if trim else ''}: the exact "
        "sign-flip interval (all 2^n sign patterns, by test inversion) up to 12 seeds, a percentile bootstrap "
        "(10,000 resamples) beyond; for H5 the per-seed difference is itself a difference of differences (an "
        "interaction). Family: the hypotheses of this network in this preset, Holm-adjusted together; the TOST "
        f"(equivalence within the margin, ±{results[0]['hypothesis']['margin'] if results else '-'} mIoU) p-values are "
        f"Holm-adjusted over the same family. {seeds} seeds.",
        "",
    ]
    return md, csv_rows


def hypothesis_row(h: dict, v) -> dict:
    """The hypotheses.csv row of a tested hypothesis (v: its stats.Verdict)."""
    c = v.contrast
    return {
        "hypothesis": h["name"],
        "claim": h["statement"],
        "kind": h["claim"],
        "margin": h["margin"],
        "n": c.n,
        "trim": c.trim,
        "mean_difference": c.mean,
        "sd_difference": c.sd,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "robust_low": c.robust_low,
        "robust_high": c.robust_high,
        "robust_method": c.robust_method,
        "p": c.p,
        "p_holm": v.p_holm,
        "tost_p": v.tost_p,
        "tost_p_holm": v.tost_p_holm,
        "verdict": v.verdict,
    }


def power_table(results: list[dict]) -> list[str]:
    tested = [r for r in results if r["verdict"] is not None]
    if not tested:
        return []
    m = len(tested)
    n = min(r["verdict"].contrast.n for r in tested)
    sds = np.array([r["verdict"].contrast.sd for r in tested])
    pooled = float(np.sqrt(np.mean(sds**2)))
    trim = tested[0]["verdict"].contrast.trim
    mde = functools.partial(stats.minimum_detectable_difference, trim=trim)
    spread = f"winsorized SD, for the {trim:.0%} trimmed mean's test" if trim else "SD"
    md = [
        "## Power: the smallest difference this design could detect",
        "",
        f"Achieved spread of the per-seed differences ({spread}): median {np.median(sds):.4f}, range "
        f"{sds.min():.4f}-{sds.max():.4f}, pooled {pooled:.4f} (root mean square over the {m} contrasts). With "
        f"n = {n} paired seeds and 80% power, the minimum detectable difference at the pooled SD is "
        f"**{mde(pooled, n):.4f} mIoU** for one test at alpha = 0.05 and "
        f"**{mde(pooled, n, alpha=stats.ALPHA / m):.4f}** for the first step of "
        f"Holm over the {m} contrasts (alpha / {m}). Per contrast, at its own SD (Holm's first step):",
        "",
        "| | SD of differences | MDE (alpha = 0.05) | MDE (alpha / m) |",
        "|---|---|---|---|",
    ]
    for r in tested:
        c = r["verdict"].contrast
        md.append(
            f"| {r['hypothesis']['name']} | {c.sd:.4f} | {mde(c.sd, c.n):.4f} | "
            f"{mde(c.sd, c.n, alpha=stats.ALPHA / m):.4f} |"
        )
    return md + [""]


def survivors_box(results: list[dict]) -> list[str]:
    held = [r for r in results if r["verdict"] is not None and r["verdict"].verdict == "held"]
    lines = ["> **Claims that survive** (held by the rules below, Holm-adjusted over the family):", ">"]
    if not held:
        lines.append("> - none")
    for r in held:
        c = r["verdict"].contrast
        h = r["hypothesis"]
        lines.append(
            f"> - **{h['name']}**: {h['statement']} (difference {c.mean:+.4f} mIoU, 95% CI "
            f"{interval(c.ci_low, c.ci_high, 4)}, Holm p {r['verdict'].p_holm:.3g}, n = {c.n})"
        )
    others = collections.defaultdict(list)
    for r in results:
        kind = r["verdict"].verdict.split(":")[0] if r["verdict"] else "not tested"
        gate = f" (arms' gate: {r['gate']})" if r.get("gate") == "passed" and kind == "did not hold" else ""
        others[kind].append(r["hypothesis"]["name"] + gate)
    others.pop("held", None)
    if others:
        lines += [">", "> Otherwise: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(others.items()))]
    return lines + [""]


def omnibus_text(test: dict, model: str, arms: int) -> list[str]:
    anova, friedman = test["anova"], test["friedman"]
    text = (
        f"Seed-blocked two-way ANOVA of the final mIoU: F({anova['df'][0]}, {anova['df'][1]}) = {anova['F']:.2f}, "
        f"p = {anova['p']:.3g}"
    )
    if friedman:
        text += f"; Friedman rank test: chi2({friedman['df']}) = {friedman['chi2']:.2f}, p = {friedman['p']:.3g}"
    text += (
        f". Shares of the variance: arm {anova['share_arm']:.0%}, seed {anova['share_seed']:.0%}, "
        f"residual {anova['share_residual']:.0%}."
    )
    return [f"## Does the arm matter at all? ({model}, {arms} arms, {test['seeds']} seeds)", "", text, ""]


def convergence_table(curves) -> list[str]:
    md = [
        f"Convergence (the mean curve over seeds): plateau = mean of its last {PLATEAU_EVALS} validations; "
        f"'within {PLATEAU_TOLERANCE}' = the first step from which the curve stays no more than "
        f"{PLATEAU_TOLERANCE} below the plateau.",
        "",
        "| arm | plateau mIoU | within 0.01 from step | mIoU at 25% / 50% / 75% of the steps |",
        "|---|---|---|---|",
    ]
    for label, (steps, values) in curves.items():
        mean = values.mean(0)
        plateau, step = plateau_step(steps, mean)
        marks = " / ".join(f"{mean[int(q * (len(mean) - 1))]:.3f}" for q in (0.25, 0.5, 0.75))
        md.append(f"| {label} | {plateau:.3f} | {step} | {marks} |")
    return md + [""]


def boundaries_and_artifacts_table(arms) -> list[str]:
    """Per arm, the split-level measurements (experiments.split.split_measurements), if the runs have them."""
    shown = [a for a in arms if not math.isnan(a["bf_0_mean"])]
    if not shown:
        return []
    columns = list(SPLIT_METRICS)
    md = [
        "### Boundaries, thin structures and artifacts (whole validation split, trained networks)",
        "",
        "BF at 0/1/2 px: SegNet's boundary F1 at those tolerances; trimap mIoU: mIoU of the pixels within 1 or 4 px "
        "of a ground-truth edge; phase error max/min: the highest over the lowest error rate among the output "
        "phases (row and column mod the network's stride; 1 = no phase errs more), and its null reference: the 95th "
        "percentile of that ratio when each image's phase grid is shifted at random (experiments.stats."
        "phase_alignment_test; a ratio below it is no evidence that errors follow the grid; runs measured before it "
        "was added have none); shift consistency: the share of "
        "pixels predicted alike when the input moves by 1-7 px (mean over the shifts); CB: the detrended "
        "checkerboard score at factor 2 (segjax.ops.checkerboard_score) of the upsamplers' outputs (mean over the "
        "decoder's levels), of the class-centred logits, of the gradient of the loss with respect to the input, of "
        "the magnitude of its gradient with respect to each encoder level's output (mean over the levels; runs "
        "measured before it was added have none), and the noise floor (the same measure on the class-centred one-hot "
        "ground truth). Mean ± SD over seeds.",
        "",
        "| arm | " + " | ".join(SPLIT_METRICS[c][1] for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for a in shown:
        cells = [pm(a, c, 2 if c.startswith("phase_error") else None) for c in columns]
        md.append(f"| {a['model']}/{a['label']} | " + " | ".join(cells) + " |")
    return md + ["", *artifacts_reach_lines(shown)]


def artifacts_reach_lines(arms) -> list[str]:
    """Whether the checkerboards measured in features and logits reach the predictions: how many runs' errors follow
    the output grid (phase-error ratio above its null's 95th percentile) against the 5% that chance gives."""
    runs = [
        (a["label"], m["phase_error_ratio"] > m["phase_error_null_95"])
        for a in arms
        for m in a["_members"]
        if m.get("phase_error_ratio") is not None and m.get("phase_error_null_95") is not None
    ]
    if not runs:
        return []
    hits, totals = collections.Counter(lab for lab, hit in runs if hit), collections.Counter(lab for lab, _ in runs)
    above = sum(hits.values())
    p = stats.above_chance(above, len(runs), 0.05)
    per_arm = ", ".join(f"{label} {hits[label]}/{n}" for label, n in totals.items())
    ranges = "; ".join(
        f"{what} {np.nanmin(means):.3f}-{np.nanmax(means):.3f}"
        for key, what in (("cb_upsamplers", "upsampler outputs"), ("cb_logits", "logits"))
        if not np.isnan(means := [a[f"{key}_mean"] for a in arms]).all()
    )
    reach = (
        "more often than chance: in these runs the errors follow the output grid"
        if p < stats.ALPHA
        else "not detectably more often than chance: no evidence that the checkerboard measured in features and "
        "logits reaches where the predictions err"
    )
    return [
        f"Do the artifacts reach the predictions? The arms' mean CB scores span {ranges or 'unmeasured'}. The "
        f"phase-error ratio exceeds its null's 95th percentile in {above} of {len(runs)} runs ({per_arm}), {reach} "
        f"(one-sided exact binomial test against 5%: p = {p:.3g}).",
        "",
    ]


# ----------------------------------------------------------------------------------------------------------------
# Training adequacy and collapse


def adequacy_lines(results: Results, verdicts: list[dict]) -> list[str]:
    """The declared gate and each arm's status, the collapse rate per arm with an exact test between arms, and each
    hypothesis with and without the collapsed seeds beside a robust estimate (experiments.gates)."""
    md = [
        "## Training adequacy and collapse (rules declared with the sweep)",
        "",
        "```",
        gates.__doc__.strip(),
        "```",
        "",
    ]
    status = results.gate_status()
    for sweep, gate in results.declared_gates:
        when = ""
        if sweep.get("reproduction") and not sweep.get("preregistered"):
            when = (
                " Declared after this reproduction's exploratory runs (issue 22), from what its arms reached: it "
                "labels training failures, it is not a preregistered rule."
            )
        md += [f"Gate of {sweep['name']}: `{gate}`.{when}", ""]
    if status:
        md += ["| arm | seeds | trained? |", "|---|---|---|"]
        md += [
            f"| {m}/{lab} | {len(per_seed(results.rows, m, lab))} | {why or 'yes'} |"
            for (m, lab), why in status.items()
        ]
        md += [""]
    if results.collapse:
        md += collapse_lines(results, verdicts)
    return md


def collapse_lines(results: Results, verdicts: list[dict]) -> list[str]:
    """Collapsed runs per arm (Fisher-Freeman-Halton exact test of equal rates) and the sensitivity of each
    hypothesis to them."""
    collapsed: dict[tuple[str, int], bool] = {}
    counts = []
    for arm in results.arms:
        values = per_seed(results.rows, arm["model"], arm["label"])
        mask = results.collapse.mask(list(values.values()))
        collapsed.update({(arm["label"], seed): bool(c) for seed, c in zip(values, mask, strict=True)})
        counts.append((arm["label"], int(mask.sum()), len(values)))
    md = [f"Collapse rule: `{results.collapse}`.", "", "| arm | collapsed seeds | rate |", "|---|---|---|"]
    for label, k, n in counts:
        seeds = [s for (lab, s), c in collapsed.items() if lab == label and c]
        md.append(f"| {label} | {seeds or 'none'} | {k}/{n} |")
    p = stats.exact_rate_test([k for _, k, _ in counts], [n for *_, n in counts])
    md += ["", f"Equal collapse rates across arms (Fisher-Freeman-Halton exact test): p = {p:.3g}.", ""]
    tested = [r for r in verdicts if r["verdict"] is not None]
    if not tested:
        return md
    md += ["| hypothesis | mean, all seeds | mean, without collapsed seeds (n) | Hodges-Lehmann, all seeds |"]
    md += ["|---|---|---|---|"]
    for r in tested:
        h, d = r["hypothesis"], np.asarray(r["differences"])
        keep = [not any(collapsed.get((arm, s)) for arm in h_arms(h)) for s in r["seeds"]]
        kept = d[keep]
        mean_kept = f"{kept.mean():+.4f} ({len(kept)})" if len(kept) else "- (0)"
        md.append(f"| {h['name']} | {d.mean():+.4f} | {mean_kept} | {stats.hodges_lehmann(d, np.zeros_like(d)):+.4f} |")
    return md + [""]
