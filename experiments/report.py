"""The report of a sweep folder: REPORT.md, runs.csv, arms.csv, hypotheses.csv and figures (no JAX).

It reads what the runner, the measurements and the cost benchmark left in OUT (experiments.results: the sweeps as
declared, each finished run's files, the studies' measurements, costs.csv), nothing else, and writes the generic
parts: provenance, the hypotheses' verdicts and power, the arms' costs and scores, the figures. When a sweep is a
smoke test or a paper reproduction, every study of experiments.studies adds its sections (each one only when its
arms finished).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import platform
import subprocess

from experiments import figures, layout, preregistration, stats
from experiments.results import (
    ARM_COLUMNS,
    RUN_COLUMNS,
    Results,
    mean_curves,
    omnibus,
    per_seed,
)
from experiments.studies import STUDIES
from experiments.tables import (
    adequacy_lines,
    boundaries_and_artifacts_table,
    convergence_table,
    fmt,
    hypotheses_table,
    interval,
    omnibus_text,
    pm,
    power_table,
    survivors_box,
    write_csv,
)

SWEEP_FILE = layout.SWEEP_FILE
RESULTS_DIR = layout.REPO_ROOT / "experiments" / "results"

# ----------------------------------------------------------------------------------------------------------------
# Provenance


def machine_description() -> str:
    parts = [platform.platform(), f"{os.cpu_count()} CPUs visible"]
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
        if name:
            parts.insert(1, name)
    except OSError:
        pass
    return ", ".join(parts)


def git_revision() -> tuple[str, bool]:
    """(short revision, whether segjax/, configs/ or experiments/ have uncommitted changes)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=layout.REPO_ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "segjax", "configs", "experiments/*.py", "experiments/benchmarks"],
            capture_output=True,
            text=True,
            cwd=layout.REPO_ROOT,
        ).stdout.strip()
        return rev, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


class UncommittedChanges(ValueError):
    """A report for experiments/results/ asked for from a tree with uncommitted code."""


def check_clean(report_dir: pathlib.Path, allow_dirty: bool) -> str:
    """The revision to stamp; a report under experiments/results/ is refused from a tree with uncommitted code."""
    rev, dirty = git_revision()
    inside = pathlib.Path(report_dir).resolve().is_relative_to(RESULTS_DIR.resolve())
    if dirty and inside and not allow_dirty:
        raise UncommittedChanges(
            f"{report_dir} is under experiments/results/, where committed reports live, but segjax/, configs/ or "
            "experiments/ have uncommitted changes: commit them first (or pass --allow-dirty for a draft)."
        )
    return rev + (" (with uncommitted changes)" if dirty else "")


# ----------------------------------------------------------------------------------------------------------------
# REPORT.md


def write_report(
    out: str | os.PathLike, report_dir: str | os.PathLike, *, command: str = "", note: str = "", allow_dirty=False
) -> pathlib.Path:
    """Write REPORT.md, the CSVs and the figures for the sweeps declared in OUT/sweep.json into report_dir."""
    report_dir = pathlib.Path(report_dir)
    revision = check_clean(report_dir, allow_dirty)
    results = Results.load(out)
    frozen = {s["name"]: preregistration.check_sweep(s) for s in results.sweeps if s.get("preregistered")}
    report_dir.mkdir(parents=True, exist_ok=True)
    write_csv(report_dir / "runs.csv", results.rows, RUN_COLUMNS)
    write_csv(report_dir / "arms.csv", results.arms, ARM_COLUMNS)
    verdicts = results.verdicts()
    md = title_lines(results)
    if results.hypotheses:
        md += survivors_box(verdicts)
    md += provenance_lines(results, command, note, revision)
    md += [
        f"**{name}** is confirmatory: its plan was frozen in experiments/preregistered/"
        f"{preregistration.path_of(s['preregistered']).name} at commit {commit} before it ran, and this report "
        "checked that neither the plan nor the study's declaration changed since.\n"
        for s in results.sweeps
        for name, commit in frozen.items()
        if s["name"] == name
    ]
    if results.hypotheses:
        md += hypotheses_lines(results, verdicts, report_dir)
    if results.declared_gates or results.collapse:
        md += adequacy_lines(results, verdicts)
    md += arms_section(results, report_dir)
    if results.with_studies:
        md += studies_lines(results, report_dir)
    path = report_dir / "REPORT.md"
    path.write_text("\n".join(md))
    return path


def title_lines(results: Results) -> list[str]:
    md = [f"# Upsampling ablation report: {', '.join(s['name'] for s in results.sweeps)}", ""]
    if results.smoke_test:
        md += [
            "> **SMOKE TEST.** These runs stop long before the networks converge; the report checks the machinery "
            "end to end and answers no question about the operators.",
            "",
        ]
    return md


def provenance_lines(results: Results, command: str, note: str, revision: str) -> list[str]:
    """How the report was produced, the sweeps as declared, and the runs that did not finish."""
    total_train = sum(r["train_seconds"] or 0 for r in results.rows)
    md = [
        "## How this was produced",
        "",
        f"- command: `{command or '(report only)'}`",
        f"- code: git {revision}; machine: {machine_description()}",
        f"- {len(results.rows)} finished runs; training calls took {total_train / 60:.1f} min in total (compilation "
        "and validations included; measurements and report not)",
        f"- written: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
    ]
    if note:
        md += [note, ""]
    for s in results.sweeps:
        md += [
            f"**{s['name']}**: {s['description']}",
            "",
            f"Shared overrides: `{json.dumps(s['overrides'], sort_keys=True)}`; seeds {s['seeds']}.",
            "",
        ]
    if results.missing:
        md += [f"**{len(results.missing)} runs are not finished and are not in the tables:**", ""]
        md += [f"- {m}" for m in results.missing] + [""]
    return md


def hypotheses_lines(results: Results, verdicts: list[dict], report_dir: pathlib.Path) -> list[str]:
    """The hypotheses as declared, their verdicts (and hypotheses.csv), the rules, the figure, power, omnibus."""
    md = ["## Hypotheses (declared in experiments/studies/ before anything ran)", ""]
    md += [f"- **{h['name']}** ({h['statement']}): {h['question']}" for h in results.hypotheses]
    md += ["", "### Verdicts", ""]
    table, csv_rows = hypotheses_table(verdicts, len(results.sweeps[0]["seeds"]))
    md += table
    write_csv(report_dir / "hypotheses.csv", csv_rows, list(csv_rows[0]) if csv_rows else ["hypothesis"])
    md += ["Rules (experiments/stats.py):", "", "```", stats.RULES, "```", ""]
    if results.trim:
        md += [f"Estimator declared by this study (trim = {results.trim}):", "", "```", stats.TRIMMED_RULE, "```", ""]
    md += hypotheses_figure(verdicts, report_dir)
    md += power_table(verdicts)
    for model in dict.fromkeys(h["model"] for h in results.hypotheses):
        families: dict[bool, list[str]] = {}  # U-Net with and without its skips are different families
        for a in results.arms:
            if a["model"] == model:
                families.setdefault(a["_members"][0]["_tags"].get("skips", True), []).append(a["label"])
        for skips, labels in families.items():
            test = omnibus(results.rows, model, labels)
            if test:
                md += omnibus_text(test, model if skips else f"{model} without skips", len(labels))
    return md


def hypotheses_figure(verdicts: list[dict], report_dir: pathlib.Path) -> list[str]:
    rows = [
        {
            "label": f"{r['hypothesis']['name']}: {r['hypothesis']['statement']}",
            "values": r["differences"],
            "mean": r["verdict"].contrast.mean,
            "ci_low": r["verdict"].contrast.ci_low,
            "ci_high": r["verdict"].contrast.ci_high,
            "margin": r["hypothesis"]["margin"],
        }
        for r in verdicts
        if r["verdict"] is not None
    ]
    return figure(
        figures.contrasts,
        rows,
        report_dir / "hypotheses.png",
        "hypotheses",
        title="Hypotheses: per-seed differences (dots), mean and 95% t interval; shaded: equivalence margin",
        xlabel="difference in final validation mIoU",
    )


def figure(draw, rows: list[dict], path: pathlib.Path, alt: str, **labels) -> list[str]:
    """Draw `rows` into `path` with a function of experiments.figures and link it; nothing when there are no rows."""
    if not rows:
        return []
    draw(rows, path, **labels)
    return [f"![{alt}]({path.name})", ""]


def studies_lines(results: Results, report_dir: pathlib.Path) -> list[str]:
    """The checkerboard phase maps and every study's sections (experiments.studies)."""
    md = []
    if figures.phase_maps(results.arms, report_dir / "checkerboard_phase_maps.png"):
        md += ["![checkerboard phase maps](checkerboard_phase_maps.png)", ""]
    for study in STUDIES.values():
        for section in study.sections(results, report_dir):
            md += [section, ""]
    return md


# ----------------------------------------------------------------------------------------------------------------
# The arms


def arms_section(results: Results, report_dir: pathlib.Path) -> list[str]:
    """The per-arm table (cost and scores), the differences to the reference arm, and the figures."""
    arms = results.arms
    if not arms:
        return ["No finished runs.", ""]
    reference = reference_arms(results)
    md = ["## Arms: cost and scores", ""] + capacity_lines(results) + arms_table(arms, reference)
    md += boundaries_and_artifacts_table(arms)
    diffs, diff_rows = differences_to_reference(results, reference)
    md += diffs
    fig_rows = final_miou_rows(arms)
    md += figure(
        figures.dots_with_intervals,
        fig_rows,
        report_dir / "final_miou.png",
        "final mIoU per arm",
        title="Final validation mIoU: seeds (dots), mean and 95% t interval",
        xlabel="final validation mIoU",
    )
    md += figure(
        figures.contrasts,
        diff_rows,
        report_dir / "differences_to_reference.png",
        "differences to the reference",
        title="Final mIoU minus the reference arm's, per seed (dots), mean and 95% t interval",
        xlabel="difference in final validation mIoU",
    )
    curves = mean_curves(arms)
    if curves:
        figures.learning_curves(curves, report_dir / "learning_curves.png", title="Validation mIoU during training")
        md += ["![learning curves](learning_curves.png)", ""]
        md += convergence_table(curves)
    md += cost_figure(arms, fig_rows, report_dir)
    for model in dict.fromkeys(a["model"] for a in arms):
        if figures.sample_predictions(arms, model, report_dir / f"sample_predictions_{model}.png"):
            md += [f"![sample predictions, {model}](sample_predictions_{model}.png)", ""]
    return md


def reference_arms(results: Results) -> dict[str, dict]:
    """model -> the arm the others of that model are compared with (a sweep's `reference`, else its first arm)."""
    references = {s.get("reference") or (s["arms"][0]["label"] if s["arms"] else None) for s in results.sweeps}
    return {a["model"]: a for a in results.arms if a["label"] in references}


def capacity_lines(results: Results) -> list[str]:
    md = []
    params = [a["params"] for a in results.arms if a["params"]]
    if params:
        md += [
            f"Capacities differ: parameters range from {min(params):,} to {max(params):,} "
            f"({max(params) / min(params):.2f}x); GFLOPs and the benchmarked step time are in the table. "
            "Parameter-free operators get a 1x1 projection, learned ones their own kernels, so the arms differ in "
            "more than the operator.",
            "",
        ]
    if results.costs:
        cpu = next(iter(results.costs.values())).get("cpu", "?")
        md += [
            "Step ms: one training step at the training shape, measured by `python -m experiments.benchmarks.arms` "
            f"with the arms interleaved in one process (not during training), median over rounds, on {cpu}; "
            "ratio = arm / reference arm.",
            "",
        ]
    return md


def arms_table(arms: list[dict], reference: dict[str, dict]) -> list[str]:
    md = [
        "| model | arm | seeds | params (x ref) | GFLOPs/img | step ms (x ref) | final mIoU | curve area | "
        "boundary F1 | wire IoU | speck IoU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        ref = reference.get(a["model"])
        ratio = f" ({a['params'] / ref['params']:.2f})" if ref and ref["params"] and a["params"] else ""
        step = "-" if a["step_ms"] is None else f"{float(a['step_ms']):.1f} ({float(a['step_ratio']):.2f})"
        scores = [
            pm(a, k) for k in ("final_miou", "auc_miou", "final_boundary_f1", "final_iou_wire", "final_iou_speck")
        ]
        md.append(
            f"| {a['model']} | {a['label']} | {a['seeds']} | {fmt(a['params'])}{ratio} | {fmt(a['gflops'], 4)} | "
            f"{step} | " + " | ".join(scores) + " |"
        )
    return md + [
        "",
        "Mean ± sample SD over seeds. Final = mean of the last 3 validations; curve area = mean mIoU over every "
        "validation (higher: learned sooner); wire and speck are the thin and the small classes.",
        "",
    ]


def differences_to_reference(results: Results, reference: dict[str, dict]) -> tuple[list[str], list[dict]]:
    """The seed-paired differences of every arm to its model's reference arm (markdown), and the final mIoU ones
    for the figure."""
    diffs, diff_rows = [], []
    for a in results.arms:
        ref = reference.get(a["model"])
        if ref is None or ref is a:
            continue
        line = [a["model"], a["label"]]
        for key in ("final_miou", "final_iou_wire", "final_iou_speck"):
            mine = per_seed(results.rows, a["model"], a["label"], key)
            base = per_seed(results.rows, ref["model"], ref["label"], key)
            seeds = sorted(mine.keys() & base.keys())
            if len(seeds) < 2:
                line.append("-")
                continue
            c = stats.paired_contrast([mine[s] for s in seeds], [base[s] for s in seeds])
            line.append(f"{c.mean:+.4f} {interval(c.ci_low, c.ci_high, 4)}")
            if key == "final_miou":
                values = [mine[s] - base[s] for s in seeds]
                label = f"{a['label']} - {ref['label']}"
                diff_rows.append(
                    {"label": label, "values": values, "mean": c.mean, "ci_low": c.ci_low, "ci_high": c.ci_high}
                )
        diffs.append("| " + " | ".join(line) + " |")
    if not diffs:
        return [], diff_rows
    return [
        f"### Differences to the reference arm ({', '.join(m + '/' + r['label'] for m, r in reference.items())})",
        "",
        "Seed-paired mean difference and 95% t interval, per arm; descriptive (not adjusted for the number of "
        "arms: the hypotheses above are the tests).",
        "",
        "| model | arm | final mIoU | wire IoU | speck IoU |",
        "|---|---|---|---|---|",
        *diffs,
        "",
    ], diff_rows


def final_miou_rows(arms: list[dict]) -> list[dict]:
    """Per measured arm: its seeds' final mIoU, the mean and the 95% t interval (the mean alone for one seed)."""
    return [
        {
            "label": f"{a['model']}/{a['label']}",
            "values": [m["final_miou"] for m in a["_members"] if m.get("final_miou") is not None],
            "mean": a["final_miou_mean"],
            "ci_low": a["final_miou_ci"][0] if a["seeds"] > 1 else a["final_miou_mean"],
            "ci_high": a["final_miou_ci"][1] if a["seeds"] > 1 else a["final_miou_mean"],
        }
        for a in arms
        if not math.isnan(a["final_miou_mean"])
    ]


def cost_figure(arms: list[dict], fig_rows: list[dict], report_dir: pathlib.Path) -> list[str]:
    measured = [a for a in arms if not math.isnan(a["final_miou_mean"])]
    points = [
        {"label": a["label"], "gflops": a["gflops"], "mean": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
        for a, r in zip(measured, fig_rows, strict=True)
        if a["gflops"]
    ]
    if len(points) < 2:
        return []
    path = report_dir / "miou_vs_gflops.png"
    return figure(
        figures.miou_against_cost,
        points,
        path,
        "mIoU against GFLOPs",
        cost="gflops",
        xlabel="GFLOPs per image (forward)",
    )
