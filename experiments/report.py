"""The report of a sweep folder: REPORT.md, runs.csv, arms.csv, hypotheses.csv and figures.

It reads what the runner, the measurements and the cost benchmark left in OUT, nothing else:
- `sweep.json`: the sweeps as declared before anything ran (arms, seeds, budget, hypotheses);
- per finished run: `run.json`, `analysis.json` and the training's `metrics.jsonl` (the validation curve);
- `costs.csv` when `experiments/benchmarks/arms.py` measured the arms' step times side by side.

Endpoints of a run (validation split, whole images): final mIoU = the mean of the last LAST_EVALS validations
(less endpoint noise than the last one alone); learning-curve area = the mean mIoU over every validation; the same
final means for boundary F1 and the IoU of each class (wire and speck are where decoders differ). Hypotheses are
tested on the final mIoU, seed-paired, by the rules of experiments.stats.
"""

from __future__ import annotations

import collections
import csv
import datetime
import json
import math
import os
import pathlib
import platform
import subprocess

import numpy as np
from scipy import stats as sps

from experiments import figures, reproduction_report, stats
from experiments import sweep as sweep_lib
from segjax.files import read_metrics

LAST_EVALS = 3
SWEEP_FILE = "sweep.json"
COSTS_FILE = "costs.csv"
CLASSES_OF_INTEREST = ("wire", "speck")
RESULTS_DIR = sweep_lib.REPO_ROOT / "experiments" / "results"

# Split-level measurements of experiments.analysis (issue 14), when a run has them: column -> (path, label).
SPLIT_METRICS = {
    "bf_0": (("boundary_f1", "0"), "BF 0 px"),
    "bf_1": (("boundary_f1", "1"), "BF 1 px"),
    "bf_2": (("boundary_f1", "2"), "BF 2 px"),
    "trimap_1": (("trimap_miou", "1"), "trimap mIoU 1 px"),
    "trimap_4": (("trimap_miou", "4"), "trimap mIoU 4 px"),
    "phase_error_ratio": (("phase_error", "max_over_min"), "phase error max/min"),
    "shift_consistency": (("shift_consistency",), "shift consistency"),
    "cb_upsamplers": (("checkerboard", "upsamplers"), "CB upsamplers"),
    "cb_logits": (("checkerboard", "logits_2"), "CB logits"),
    "cb_floor": (("checkerboard", "floor_2"), "CB floor"),
    "cb_gradient": (("checkerboard", "input_gradient_2"), "CB input gradient"),
    "cb_encoder_gradient": (("checkerboard", "encoder_gradient_magnitude_2"), "CB encoder gradient magnitude"),
}
# FCN runs: the oracle decoder's mIoU at each stride (experiments.analysis.oracle_miou).
ORACLE_COLUMNS = tuple(f"oracle_{s}" for s in (32, 16, 8))
RUN_COLUMNS = (
    "model",
    "label",
    "seed",
    "config_hash",
    "params",
    "gflops",
    "steps",
    "final_miou",
    "auc_miou",
    "endpoint_miou",
    "final_boundary_f1",
    "final_pixel_accuracy",
    "final_class_accuracy",
    *(f"final_iou_{c}" for c in CLASSES_OF_INTEREST),
    "cb_init_constant",
    "cb_trained_constant",
    *SPLIT_METRICS,
    *ORACLE_COLUMNS,
    "train_seconds",
)
ARM_METRICS = (
    "final_miou",
    "auc_miou",
    "final_boundary_f1",
    "final_pixel_accuracy",
    "final_class_accuracy",
    *(f"final_iou_{c}" for c in CLASSES_OF_INTEREST),
    "cb_init_constant",
    "cb_trained_constant",
    *SPLIT_METRICS,
    *ORACLE_COLUMNS,
)


# ----------------------------------------------------------------------------------------------------------------
# Reading the runs


def endpoints(records: list[dict]) -> dict:
    """The endpoints of one run from its metrics.jsonl records (see the module docstring)."""
    by_step = {r["step"]: r for r in records if r.get("split") != "train" and r.get("mean_iou") is not None}
    evals = [by_step[s] for s in sorted(by_step)]  # a resumed run may log a validation twice: the last counts
    if not evals:
        return {}
    last = evals[-LAST_EVALS:]

    def mean_of(rows, key):
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    out = {
        "final_miou": mean_of(last, "mean_iou"),
        "auc_miou": mean_of(evals, "mean_iou"),
        "endpoint_miou": float(evals[-1]["mean_iou"]),
        "final_boundary_f1": mean_of(last, "boundary_f1"),
        "final_pixel_accuracy": mean_of(last, "pixel_accuracy"),  # SegNet's G
        "final_class_accuracy": mean_of(last, "mean_pixel_accuracy"),  # SegNet's C
        "curve_steps": [r["step"] for r in evals],
        "curve_miou": [float(r["mean_iou"]) for r in evals],
    }
    for name in CLASSES_OF_INTEREST:
        out[f"final_iou_{name}"] = mean_of(last, f"iou/{name}")
    return out


def split_columns(split: dict | None) -> dict:
    """The SPLIT_METRICS columns of a run's split measurements; a list or mapping is averaged (upsamplers,
    shifts)."""
    if not split:
        return {}
    out = {}
    for column, (path, _) in SPLIT_METRICS.items():
        value = split
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            value = float(np.mean(value)) if value else None
        out[column] = value
    return out


def collect(out: pathlib.Path, expected: list[tuple[str, pathlib.Path]]) -> tuple[list[dict], list[str]]:
    """Rows of the finished runs among `expected` [(name, workdir)] and the names of those not finished."""
    rows, missing = [], []
    for name, workdir in expected:
        if not (workdir / sweep_lib.DONE).exists():
            state = "failed" if (workdir / sweep_lib.ERROR_FILE).exists() else "not run / interrupted"
            missing.append(f"{name}: {state}")
            continue
        info = sweep_lib.read_json(workdir / sweep_lib.RUN_FILE)
        analysis = sweep_lib.read_json(workdir / sweep_lib.ANALYSIS_FILE)
        cb = analysis.get("checkerboard", {})
        row = {
            "model": info["model"],
            "label": info["label"],
            "seed": info["seed"],
            "config_hash": info["config_hash"],
            "params": analysis.get("params"),
            "gflops": analysis.get("gflops"),
            "steps": analysis.get("steps"),
            "cb_init_constant": cb.get("init", {}).get("constant"),
            "cb_trained_constant": cb.get("trained", {}).get("constant"),
            "train_seconds": analysis.get("wall_seconds_train_call"),
            **endpoints(read_metrics(workdir)),
            **split_columns(analysis.get("split")),
            **{f"oracle_{s}": v for s, v in analysis.get("oracle_miou", {}).items()},
            "_tags": info.get("tags", {}),
            "_analysis": analysis,
            "_workdir": workdir,
        }
        rows.append(row)
    return rows, missing


def expected_runs(out: pathlib.Path, sweeps: list[dict]) -> list[tuple[str, pathlib.Path]]:
    """(name, workdir) of every (arm, seed) of the declared sweeps, each once, in declaration order."""
    seen = {}
    for s in sweeps:
        for arm in s["arms"]:
            for seed in s["seeds"]:
                name = f"{arm['model']}/{arm['label']}/seed{seed}"
                seen.setdefault(name, out / arm["model"] / arm["label"] / f"seed{seed}")
    return list(seen.items())


def aggregate(rows: list[dict]) -> list[dict]:
    """One dict per (model, label): mean, sample std and 95% t interval over seeds of each metric, the members."""
    groups: dict[tuple, list[dict]] = collections.OrderedDict()
    for row in rows:
        groups.setdefault((row["model"], row["label"]), []).append(row)
    arms = []
    for (model, label), members in groups.items():
        arm = {"model": model, "label": label, "seeds": len(members), "params": members[0]["params"]}
        arm["gflops"] = members[0]["gflops"]
        for key in ARM_METRICS:
            values = [m[key] for m in members if m.get(key) is not None]
            arm[f"{key}_mean"], arm[f"{key}_std"], arm[f"{key}_ci"] = _mean_sd_ci(values)
        arm["_members"] = members
        arms.append(arm)
    return arms


def _mean_sd_ci(values) -> tuple[float, float, tuple[float, float]]:
    values = np.asarray(values, np.float64)
    if not len(values):
        return math.nan, math.nan, (math.nan, math.nan)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, (math.nan, math.nan)
    sd = float(values.std(ddof=1))
    half = float(sps.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values)))
    return mean, sd, (mean - half, mean + half)


def read_costs(out: pathlib.Path) -> dict[tuple[str, str], dict]:
    """(model, label) -> the benchmark's row of costs.csv (step_ms, its ratio to the reference, CPU), if measured."""
    path = out / COSTS_FILE
    if not path.exists():
        return {}
    with open(path) as f:
        return {(r["model"], r["label"]): r for r in csv.DictReader(f)}


# ----------------------------------------------------------------------------------------------------------------
# Hypotheses


def per_seed(rows: list[dict], model: str, label: str, key: str = "final_miou") -> dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r["model"] == model and r["label"] == label and r.get(key) is not None}


def hypothesis_results(rows: list[dict], hypotheses: list[dict]) -> list[dict]:
    """Each hypothesis's seed-paired contrast and verdict; Holm over the hypotheses of the same network."""
    prepared = []
    for h in hypotheses:
        arms = [h["better"], h["worse"], *(h.get("minus") or ())]
        values = [per_seed(rows, h["model"], arm) for arm in arms]
        seeds = sorted(set.intersection(*(set(v) for v in values)))
        if len(seeds) < 2:
            prepared.append((h, None, None, seeds))
            continue
        a = np.array([values[0][s] - (values[2][s] if h.get("minus") else 0.0) for s in seeds])
        b = np.array([values[1][s] - (values[3][s] if h.get("minus") else 0.0) for s in seeds])
        prepared.append((h, a, b, seeds))
    results = []
    for model in dict.fromkeys(h["model"] for h in hypotheses):
        family = [(h, a, b, seeds) for h, a, b, seeds in prepared if h["model"] == model and a is not None]
        verdicts = stats.family_verdicts(
            [(a, b) for _, a, b, _ in family], [h["margin"] for h, *_ in family], [h["claim"] for h, *_ in family]
        )
        for (h, a, b, seeds), v in zip(family, verdicts, strict=True):
            results.append({"hypothesis": h, "verdict": v, "differences": (a - b).tolist(), "seeds": seeds})
    for h, a, _, seeds in prepared:
        if a is None:
            results.append({"hypothesis": h, "verdict": None, "differences": [], "seeds": seeds})
    order = {h["name"]: i for i, h in enumerate(hypotheses)}
    return sorted(results, key=lambda r: order[r["hypothesis"]["name"]])


def omnibus(rows: list[dict], model: str, labels: list[str]) -> dict | None:
    """Seed-blocked ANOVA and Friedman test over the arms of `model`, on the seeds every arm finished."""
    values = [per_seed(rows, model, label) for label in labels]
    seeds = sorted(set.intersection(*(set(v) for v in values))) if values else []
    if len(seeds) < 2 or len(labels) < 2:
        return None
    table = np.array([[v[s] for v in values] for s in seeds])
    friedman = stats.friedman(table) if len(labels) >= 3 else None  # scipy's test needs 3 arms
    return {"anova": stats.blocked_anova(table), "friedman": friedman, "seeds": len(seeds)}


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
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=sweep_lib.REPO_ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "segjax", "configs", "experiments/*.py", "experiments/benchmarks"],
            capture_output=True,
            text=True,
            cwd=sweep_lib.REPO_ROOT,
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
# Writing


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def _pm(arm: dict, key: str, digits=3) -> str:
    mean, sd = arm[f"{key}_mean"], arm[f"{key}_std"]
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def write_csv(path: pathlib.Path, rows: list[dict], columns) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})


def _interval(low, high, digits=3) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def _cell(text: str) -> str:
    """Text for a markdown table cell: its '|' (the absolute value of an equivalence claim) escaped."""
    return text.replace("|", "\\|")


def hypotheses_section(results: list[dict], seeds: int) -> tuple[list[str], list[dict]]:
    """Markdown of the hypothesis tests and the rows of hypotheses.csv."""
    md = [
        "| | claim | difference (final mIoU) | 95% CI (t) | 95% CI (bootstrap) | p | p (Holm) | TOST p (Holm) | "
        "verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    csv_rows = []
    for r in results:
        h, v = r["hypothesis"], r["verdict"]
        if v is None:
            md.append(f"| {h['name']} | {_cell(h['statement'])} | not enough paired seeds | | | | | | |")
            continue
        c = v.contrast
        md.append(
            f"| {h['name']} | {_cell(h['statement'])} | {c.mean:+.4f} | {_interval(c.ci_low, c.ci_high, 4)} | "
            f"{_interval(c.boot_low, c.boot_high, 4)} | {c.p:.3g} | {v.p_holm:.3g} | {v.tost_p_holm:.3g} | "
            f"**{v.verdict}** |"
        )
        csv_rows.append(
            {
                "hypothesis": h["name"],
                "claim": h["statement"],
                "kind": h["claim"],
                "margin": h["margin"],
                "n": c.n,
                "mean_difference": c.mean,
                "sd_difference": c.sd,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "boot_low": c.boot_low,
                "boot_high": c.boot_high,
                "p": c.p,
                "p_holm": v.p_holm,
                "tost_p": v.tost_p,
                "tost_p_holm": v.tost_p_holm,
                "verdict": v.verdict,
            }
        )
    md += [
        "",
        "Test: two-sided paired t-test of the per-seed differences (every arm ran the same seeds, which fix the "
        "data order and the encoder's initialisation), with its t interval and a percentile bootstrap interval "
        "(10,000 resamples); for H5 the per-seed difference is itself a difference of differences (an "
        "interaction). Family: the hypotheses of this network in this preset, Holm-adjusted together; the TOST "
        f"(equivalence within the margin, ±{csv_rows[0]['margin'] if csv_rows else '?'} mIoU) p-values are "
        f"Holm-adjusted over the same family. {seeds} seeds.",
        "",
    ]
    return md, csv_rows


def power_section(results: list[dict]) -> list[str]:
    tested = [r for r in results if r["verdict"] is not None]
    if not tested:
        return []
    m = len(tested)
    n = min(r["verdict"].contrast.n for r in tested)
    sds = np.array([r["verdict"].contrast.sd for r in tested])
    pooled = float(np.sqrt(np.mean(sds**2)))
    md = [
        "## Power: the smallest difference this design could detect",
        "",
        f"Achieved spread of the per-seed differences (SD): median {np.median(sds):.4f}, range "
        f"{sds.min():.4f}-{sds.max():.4f}, pooled {pooled:.4f} (root mean square over the {m} contrasts). With "
        f"n = {n} paired seeds and 80% power, the minimum detectable difference at the pooled SD is "
        f"**{stats.minimum_detectable_difference(pooled, n):.4f} mIoU** for one test at alpha = 0.05 and "
        f"**{stats.minimum_detectable_difference(pooled, n, alpha=stats.ALPHA / m):.4f}** for the first step of "
        f"Holm over the {m} contrasts (alpha / {m}). Per contrast, at its own SD (Holm's first step):",
        "",
        "| | SD of differences | MDE (alpha = 0.05) | MDE (alpha / m) |",
        "|---|---|---|---|",
    ]
    for r in tested:
        c = r["verdict"].contrast
        md.append(
            f"| {r['hypothesis']['name']} | {c.sd:.4f} | {stats.minimum_detectable_difference(c.sd, c.n):.4f} | "
            f"{stats.minimum_detectable_difference(c.sd, c.n, alpha=stats.ALPHA / m):.4f} |"
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
            f"{_interval(c.ci_low, c.ci_high, 4)}, Holm p {r['verdict'].p_holm:.3g}, n = {c.n})"
        )
    others = collections.Counter(r["verdict"].verdict if r["verdict"] else "not tested" for r in results)
    others.pop("held", None)
    if others:
        lines += [">", "> Otherwise: " + ", ".join(f"{k}: {v}" for k, v in sorted(others.items()))]
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


def write_report(
    out: str | os.PathLike, report_dir: str | os.PathLike, *, command: str = "", note: str = "", allow_dirty=False
) -> pathlib.Path:
    """Write REPORT.md, the CSVs and the figures for the sweeps declared in OUT/sweep.json into report_dir."""
    out, report_dir = pathlib.Path(out), pathlib.Path(report_dir)
    revision = check_clean(report_dir, allow_dirty)
    sweeps = json.loads((out / SWEEP_FILE).read_text())
    report_dir.mkdir(parents=True, exist_ok=True)
    rows, missing = collect(out, expected_runs(out, sweeps))
    arms = aggregate(rows)
    costs = read_costs(out)
    write_csv(report_dir / "runs.csv", rows, RUN_COLUMNS)
    arm_columns = ["model", "label", "seeds", "params", "gflops", "step_ms", "step_ratio"]
    arm_columns += [f"{k}_{s}" for k in ARM_METRICS for s in ("mean", "std")]
    for a in arms:
        cost = costs.get((a["model"], a["label"]), {})
        a["step_ms"], a["step_ratio"] = cost.get("step_ms"), cost.get("ratio")
    write_csv(report_dir / "arms.csv", arms, arm_columns)

    smoke = any(s.get("smoke_test") for s in sweeps)
    title = ", ".join(s["name"] for s in sweeps)
    md = [f"# Upsampling ablation report: {title}", ""]
    if smoke:
        md += [
            "> **SMOKE TEST.** These runs stop long before the networks converge; the report checks the machinery "
            "end to end and answers no question about the operators.",
            "",
        ]
    hypotheses = [h for s in sweeps for h in s.get("hypotheses", [])]
    results = hypothesis_results(rows, hypotheses) if hypotheses else []
    if hypotheses:
        md += survivors_box(results)
    total_train = sum(r["train_seconds"] or 0 for r in rows)
    md += [
        "## How this was produced",
        "",
        f"- command: `{command or '(report only)'}`",
        f"- code: git {revision}; machine: {machine_description()}",
        f"- {len(rows)} finished runs; training calls took {total_train / 60:.1f} min in total (compilation "
        "and validations included; measurements and report not)",
        f"- written: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
    ]
    if note:
        md += [note, ""]
    for s in sweeps:
        md += [
            f"**{s['name']}**: {s['description']}",
            "",
            f"Shared overrides: `{json.dumps(s['overrides'], sort_keys=True)}`; seeds {s['seeds']}.",
            "",
        ]
    if missing:
        md += [f"**{len(missing)} runs are not finished and are not in the tables:**", ""]
        md += [f"- {m}" for m in missing] + [""]

    if hypotheses:
        md += ["## Hypotheses (declared in experiments/definitions.py before anything ran)", ""]
        for h in hypotheses:
            md.append(f"- **{h['name']}** ({h['statement']}): {h['question']}")
        md += ["", "### Verdicts", ""]
        section, csv_rows = hypotheses_section(results, len(sweeps[0]["seeds"]))
        md += section
        write_csv(report_dir / "hypotheses.csv", csv_rows, list(csv_rows[0]) if csv_rows else ["hypothesis"])
        md += ["Rules (experiments/stats.py):", "", "```", stats.RULES, "```", ""]
        rows_for_plot = [
            {
                "label": f"{r['hypothesis']['name']}: {r['hypothesis']['statement']}",
                "values": r["differences"],
                "mean": r["verdict"].contrast.mean,
                "ci_low": r["verdict"].contrast.ci_low,
                "ci_high": r["verdict"].contrast.ci_high,
                "margin": r["hypothesis"]["margin"],
            }
            for r in results
            if r["verdict"] is not None
        ]
        if rows_for_plot:
            figures.contrasts(
                rows_for_plot,
                report_dir / "hypotheses.png",
                title="Hypotheses: per-seed differences (dots), mean and 95% t interval; shaded: equivalence margin",
                xlabel="difference in final validation mIoU",
            )
            md += ["![hypotheses](hypotheses.png)", ""]
        md += power_section(results)
        for model in dict.fromkeys(h["model"] for h in hypotheses):
            labels = [a["label"] for a in arms if a["model"] == model]
            test = omnibus(rows, model, labels)
            if test:
                md += omnibus_text(test, model, len(labels))
    md += arms_section(arms, rows, sweeps, costs, report_dir)
    if smoke or any(s.get("reproduction") for s in sweeps):  # the presets of experiments.reproductions
        if figures.phase_maps(arms, report_dir / "checkerboard_phase_maps.png"):
            md += ["![checkerboard phase maps](checkerboard_phase_maps.png)", ""]
        for section in reproduction_report.sections(arms, report_dir):
            md += [section, ""]
    path = report_dir / "REPORT.md"
    path.write_text("\n".join(md))
    return path


PLATEAU_EVALS = 5  # the plateau: the mean of the last 5 validations of the mean curve
PLATEAU_TOLERANCE = 0.01


def plateau_step(steps, curve) -> tuple[float, int]:
    """(plateau, the first step from which the curve stays within PLATEAU_TOLERANCE below the plateau)."""
    curve = np.asarray(curve, np.float64)
    plateau = float(curve[-PLATEAU_EVALS:].mean())
    close = curve >= plateau - PLATEAU_TOLERANCE
    first = len(curve) - 1
    while first > 0 and close[first - 1]:
        first -= 1
    return plateau, int(steps[first])


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
    """Per arm, the split-level measurements (experiments.analysis.split_measurements), if the runs have them."""
    shown = [a for a in arms if not math.isnan(a["bf_0_mean"])]
    if not shown:
        return []
    columns = list(SPLIT_METRICS)
    md = [
        "### Boundaries, thin structures and artifacts (whole validation split, trained networks)",
        "",
        "BF at 0/1/2 px: SegNet's boundary F1 at those tolerances; trimap mIoU: mIoU of the pixels within 1 or 4 px "
        "of a ground-truth edge; phase error max/min: the highest over the lowest error rate among the output "
        "phases (row and column mod the network's stride; 1 = no phase errs more); shift consistency: the share of "
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
        digits = {"phase_error_ratio": 2}
        cells = [_pm(a, c, digits.get(c, 4 if c.startswith("cb_") else 3)) for c in columns]
        md.append(f"| {a['model']}/{a['label']} | " + " | ".join(cells) + " |")
    return md + [""]


def arms_section(arms, rows, sweeps, costs, report_dir: pathlib.Path) -> list[str]:
    """The per-arm table (cost and scores), the differences to the reference arm, and the figures."""
    if not arms:
        return ["No finished runs.", ""]
    md = ["## Arms: cost and scores", ""]
    references = {s.get("reference") or (s["arms"][0]["label"] if s["arms"] else None) for s in sweeps}
    reference = {a["model"]: a for a in arms if a["label"] in references}
    params = [a["params"] for a in arms if a["params"]]
    if params:
        md += [
            f"Capacities differ: parameters range from {min(params):,} to {max(params):,} "
            f"({max(params) / min(params):.2f}x); GFLOPs and the benchmarked step time are in the table. "
            "Parameter-free operators get a 1x1 projection, learned ones their own kernels, so the arms differ in "
            "more than the operator.",
            "",
        ]
    if costs:
        cpu = next(iter(costs.values())).get("cpu", "?")
        md += [
            "Step ms: one training step at the training shape, measured by `python -m experiments.benchmarks.arms` "
            f"with the arms interleaved in one process (not during training), median over rounds, on {cpu}; "
            "ratio = arm / reference arm.",
            "",
        ]
    md += [
        "| model | arm | seeds | params (x ref) | GFLOPs/img | step ms (x ref) | final mIoU | curve area | "
        "boundary F1 | wire IoU | speck IoU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        ref = reference.get(a["model"])
        ratio = f" ({a['params'] / ref['params']:.2f})" if ref and ref["params"] and a["params"] else ""
        step = "-" if a["step_ms"] is None else f"{float(a['step_ms']):.1f} ({float(a['step_ratio']):.2f})"
        md.append(
            f"| {a['model']} | {a['label']} | {a['seeds']} | {_fmt(a['params'])}{ratio} | {_fmt(a['gflops'], 4)} | "
            f"{step} | {_pm(a, 'final_miou')} | {_pm(a, 'auc_miou')} | {_pm(a, 'final_boundary_f1')} | "
            f"{_pm(a, 'final_iou_wire')} | {_pm(a, 'final_iou_speck')} |"
        )
    md += [
        "",
        "Mean ± sample SD over seeds. Final = mean of the last 3 validations; curve area = mean mIoU over every "
        "validation (higher: learned sooner); wire and speck are the thin and the small classes.",
        "",
    ]
    md += boundaries_and_artifacts_table(arms)
    diffs, diff_rows = [], []
    for a in arms:
        ref = reference.get(a["model"])
        if ref is None or ref is a:
            continue
        line = [a["model"], a["label"]]
        for key in ("final_miou", "final_iou_wire", "final_iou_speck"):
            mine, base = per_seed(rows, a["model"], a["label"], key), per_seed(rows, ref["model"], ref["label"], key)
            seeds = sorted(mine.keys() & base.keys())
            if len(seeds) < 2:
                line.append("-")
                continue
            c = stats.paired_contrast([mine[s] for s in seeds], [base[s] for s in seeds])
            line.append(f"{c.mean:+.4f} {_interval(c.ci_low, c.ci_high, 4)}")
            if key == "final_miou":
                diff_rows.append(
                    {
                        "label": f"{a['label']} - {ref['label']}",
                        "values": [mine[s] - base[s] for s in seeds],
                        "mean": c.mean,
                        "ci_low": c.ci_low,
                        "ci_high": c.ci_high,
                    }
                )
        diffs.append("| " + " | ".join(line) + " |")
    if diffs:
        md += [
            f"### Differences to the reference arm ({', '.join(m + '/' + r['label'] for m, r in reference.items())})",
            "",
            "Seed-paired mean difference and 95% t interval, per arm; descriptive (not adjusted for the number of "
            "arms: the hypotheses above are the tests).",
            "",
            "| model | arm | final mIoU | wire IoU | speck IoU |",
            "|---|---|---|---|---|",
            *diffs,
            "",
        ]
    fig_rows = [
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
    if fig_rows:
        figures.dots_with_intervals(
            fig_rows,
            report_dir / "final_miou.png",
            title="Final validation mIoU: seeds (dots), mean and 95% t interval",
            xlabel="final validation mIoU",
        )
        md += ["![final mIoU per arm](final_miou.png)", ""]
    if diff_rows:
        figures.contrasts(
            diff_rows,
            report_dir / "differences_to_reference.png",
            title="Final mIoU minus the reference arm's, per seed (dots), mean and 95% t interval",
            xlabel="difference in final validation mIoU",
        )
        md += ["![differences to the reference](differences_to_reference.png)", ""]
    curves = {}
    for a in arms:
        members = [m for m in a["_members"] if m.get("curve_steps")]
        common = min((len(m["curve_steps"]) for m in members), default=0)
        if common > 1:
            curves[f"{a['model']}/{a['label']}"] = (
                members[0]["curve_steps"][:common],
                np.array([m["curve_miou"][:common] for m in members]),
            )
    if curves:
        figures.learning_curves(curves, report_dir / "learning_curves.png", title="Validation mIoU during training")
        md += ["![learning curves](learning_curves.png)", ""]
        md += convergence_table(curves)
    cost_points = [
        {
            "label": a["label"],
            "gflops": a["gflops"],
            "mean": r["mean"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for a, r in zip([a for a in arms if not math.isnan(a["final_miou_mean"])], fig_rows, strict=True)
        if a["gflops"]
    ]
    if len(cost_points) > 1:
        figures.miou_against_cost(
            cost_points, report_dir / "miou_vs_gflops.png", cost="gflops", xlabel="GFLOPs per image (forward)"
        )
        md += ["![mIoU against GFLOPs](miou_vs_gflops.png)", ""]
    for model in dict.fromkeys(a["model"] for a in arms):
        if figures.sample_predictions(arms, model, report_dir / f"sample_predictions_{model}.png"):
            md += [f"![sample predictions, {model}](sample_predictions_{model}.png)", ""]
    return md
