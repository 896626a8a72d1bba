"""The report of a sweep folder: results.csv (one row per arm), runs.csv (one row per run), figures and REPORT.md.

Reads what the runner left in each finished run's workdir (run.json, analysis.json, samples.npz) and aggregates
over seeds: mean and sample standard deviation. Paper-reproduction sections are written for every reproduction
whose arms are present (experiments.reproductions), each stating the paper's claim, what was measured here and
whether it held. Runs that are not finished are listed, never silently dropped.
"""

from __future__ import annotations

import collections
import csv
import datetime
import hashlib
import json
import math
import os
import pathlib
import platform
import subprocess
from collections.abc import Sequence

import numpy as np

from experiments import sweep as sweep_lib

RUN_COLUMNS = (
    "model",
    "label",
    "seed",
    "config_hash",
    "params",
    "gflops",
    "train_step_ms",
    "val_miou",
    "val_boundary_f1",
    "val_pixel_accuracy",
    "cb_init_constant",
    "cb_trained_constant",
    "cb_init_real",
    "cb_trained_real",
    "steps",
)
ARM_METRICS = (
    "val_miou",
    "val_boundary_f1",
    "val_pixel_accuracy",
    "cb_init_constant",
    "cb_trained_constant",
    "cb_init_real",
    "cb_trained_real",
)


# ----------------------------------------------------------------------------------------------------------------
# Collecting


def _flatten(run_info: dict, analysis: dict) -> dict:
    cb = analysis.get("checkerboard", {})
    row = {
        "model": run_info["model"],
        "label": run_info["label"],
        "seed": run_info["seed"],
        "config_hash": run_info["config_hash"],
        "params": analysis.get("params"),
        "gflops": analysis.get("gflops"),
        "train_step_ms": _ms(analysis.get("train_step_seconds")),
        "val_miou": analysis.get("val_miou"),
        "val_boundary_f1": analysis.get("val_boundary_f1"),
        "val_pixel_accuracy": analysis.get("val_pixel_accuracy"),
        "cb_init_constant": cb.get("init", {}).get("constant"),
        "cb_trained_constant": cb.get("trained", {}).get("constant"),
        "cb_init_real": cb.get("init", {}).get("real"),
        "cb_trained_real": cb.get("trained", {}).get("real"),
        "steps": analysis.get("steps"),
    }
    return row


def _ms(seconds):
    return None if seconds is None else 1000.0 * float(seconds)


def collect(out: pathlib.Path, runs: Sequence[sweep_lib.Run] | None = None) -> tuple[list[dict], list[str]]:
    """Rows of the finished runs (in sweep order) and the names of the runs that are not finished."""
    out = pathlib.Path(out)
    if runs is None:  # every finished run found under out
        workdirs = sorted(p.parent for p in out.glob(f"*/*/seed*/{sweep_lib.DONE}"))
        expected = [(None, w) for w in workdirs]
    else:
        expected = [(r, r.workdir(out)) for r in runs]
    rows, missing = [], []
    for run, workdir in expected:
        if not (workdir / sweep_lib.DONE).exists():
            state = "failed" if (workdir / sweep_lib.ERROR_FILE).exists() else "not run / interrupted"
            missing.append(f"{run.name if run else workdir}: {state}")
            continue
        info = sweep_lib.read_json(workdir / sweep_lib.RUN_FILE)
        analysis = sweep_lib.read_json(workdir / sweep_lib.ANALYSIS_FILE)
        row = _flatten(info, analysis)
        row["_tags"] = info.get("tags", {})
        row["_analysis"] = analysis
        row["_workdir"] = workdir
        rows.append(row)
    return rows, missing


def _stats(values) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
    return float(np.mean(vals)), std, len(vals)


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (model, label): mean and std over seeds; cost columns (params, GFLOPs) from any seed and the
    median step time."""
    groups: dict[tuple, list[dict]] = collections.OrderedDict()
    for row in rows:
        groups.setdefault((row["model"], row["label"]), []).append(row)
    arms = []
    for (model, label), members in groups.items():
        arm = {"model": model, "label": label, "seeds": len(members), **members[0]["_tags"]}
        arm["params"] = members[0]["params"]
        arm["gflops"] = members[0]["gflops"]
        times = [m["train_step_ms"] for m in members if m["train_step_ms"] is not None]
        arm["train_step_ms"] = float(np.median(times)) if times else None
        for key in ARM_METRICS:
            mean, std, n = _stats(m[key] for m in members)
            arm[f"{key}_mean"], arm[f"{key}_std"] = mean, std
        arm["_members"] = members
        arms.append(arm)
    return arms


# ----------------------------------------------------------------------------------------------------------------
# Provenance


def machine_description() -> str:
    parts = [platform.platform(), f"{os.cpu_count()} CPUs visible"]
    try:
        model_name = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), None
        )
        if model_name:
            parts.insert(1, model_name)
    except OSError:
        pass
    try:
        import jax

        parts.append(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices)")
    except Exception:  # noqa: BLE001 - provenance is best effort; the report must not fail on it
        pass
    return ", ".join(parts)


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=sweep_lib.REPO_ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "segjax", "configs", "experiments"],
            capture_output=True,
            text=True,
            cwd=sweep_lib.REPO_ROOT,
        ).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_summary(rows: list[dict]) -> str:
    loads = [r["_analysis"].get("load_average_1min") for r in rows]
    loads = [x for x in loads if x is not None]
    if not loads:
        return "not recorded"
    return f"median {np.median(loads):.1f}, range {min(loads):.1f}-{max(loads):.1f}"


def sweep_hash(rows: list[dict]) -> str:
    """Hash over the config hashes of all reported runs: equal hashes mean the same experiment."""
    text = "\n".join(sorted(f"{r['model']}/{r['label']}/{r['seed']}:{r['config_hash']}" for r in rows))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def _pm(arm: dict, key: str, digits=3) -> str:
    mean, std = arm[f"{key}_mean"], arm[f"{key}_std"]
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def write_csv(path: pathlib.Path, rows: list[dict], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})


def arm_table(arms: list[dict]) -> str:
    lines = [
        "| model | arm | seeds | params | GFLOPs/img | step ms | val mIoU | val boundary F1 | "
        "checkerboard init | checkerboard trained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        lines.append(
            f"| {a['model']} | {a['label']} | {a['seeds']} | {_fmt(a['params'])} | {_fmt(a['gflops'], 4)} | "
            f"{_fmt(a['train_step_ms'], 1)} | {_pm(a, 'val_miou')} | {_pm(a, 'val_boundary_f1')} | "
            f"{_pm(a, 'cb_init_constant', 4)} | {_pm(a, 'cb_trained_constant', 4)} |"
        )
    return "\n".join(lines)


def write_report(
    out: str | os.PathLike,
    report_dir: str | os.PathLike,
    *,
    runs: Sequence[sweep_lib.Run] | None = None,
    sweeps: Sequence[sweep_lib.Sweep] = (),
    command: str = "",
    figures: bool = True,
    operator_study: bool = True,
    note: str = "",
) -> pathlib.Path:
    """Write results.csv, runs.csv, the figures and REPORT.md for the runs of `out` into report_dir."""
    from experiments import figures as figures_lib
    from experiments import reproductions

    out, report_dir = pathlib.Path(out), pathlib.Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows, missing = collect(out, runs)
    arms = aggregate(rows)
    write_csv(report_dir / "runs.csv", rows, RUN_COLUMNS)
    tag_columns = sorted({k for a in arms for k in a if not k.startswith("_")} - set(_ARM_COLUMNS_FIXED))
    write_csv(report_dir / "results.csv", arms, [*_ARM_COLUMNS_FIXED, *tag_columns])

    any_analysis = rows[0]["_analysis"] if rows else {}
    cb_info = any_analysis.get("checkerboard_settings", {})
    md = [f"# Upsampling ablation report{': ' + ', '.join(s.name for s in sweeps) if sweeps else ''}", ""]
    md += [
        "## How this was produced",
        "",
        f"- command: `{command or '(report only)'}`",
        f"- sweep hash (over the {len(rows)} run config hashes): `{sweep_hash(rows)}`; per-run hashes in runs.csv",
        f"- code: git {git_revision()}",
        f"- machine: {machine_description()}; 1-minute load average when each run finished: "
        f"{_load_summary(rows)} (step times grow once it exceeds the CPU count)",
        f"- written: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
    ]
    if note:
        md += [note, ""]
    for s in sweeps:
        md += [
            f"**{s.name}**: {s.description}",
            "",
            f"Shared overrides: `{json.dumps(dict(s.overrides), sort_keys=True)}`; seeds {list(s.seeds)}.",
            "",
        ]
    if missing:
        md += [f"**{len(missing)} runs are not finished and are not in the tables:**", ""]
        md += [f"- {m}" for m in missing] + [""]
    md += [
        "## Columns",
        "",
        "- params: trainable parameters of the whole network; GFLOPs/img: XLA's cost analysis of one forward "
        "pass on one image at the evaluation size (multiply-adds count as 2 FLOPs).",
        "- step ms: median over seeds of the training step time measured during training (see analysis.py; "
        "it includes the optimizer update, excludes compilation and input loading).",
        "- val mIoU / boundary F1: the final evaluation on the validation split, mean ± sample std over seeds. "
        "Boundary F1 is SegNet's per-image BF score (segjax.metrics.boundary_scores).",
        f"- checkerboard: segjax.ops.checkerboard_score of the softmax probabilities, factor "
        f"{cb_info.get('factor', '?')}, border {cb_info.get('border', '?')} px, on a constant input image "
        f"(every normalised pixel {cb_info.get('constant_input', '?')}) at initialisation and after training. A "
        "constant input has no content, so every difference between output phases is an artifact of the network; 0 = "
        "no checkerboard. Probabilities, not logits: the score divides by the phase-mean magnitude, which is "
        "near zero for logits. The same score on a real validation batch is in results.csv (cb_*_real).",
        "",
    ]
    md += ["## Results per arm", "", arm_table(arms), ""] if arms else ["No finished runs.", ""]

    if figures and arms:
        made = figures_lib.write_figures(arms, report_dir)
        for title, name in made:
            md += [f"### {title}", ""]
            if name == "checkerboard_phase_maps.png":
                md += [
                    "Each map: the mean of every output phase (position modulo the factor) of the most "
                    "checkerboarded class probability on the constant input, as (mean - overall mean) / rms, seed 0, "
                    "each map on its own colour scale (red +, blue -); above it, the run's checkerboard score, which "
                    "says how strong the pattern is.",
                    "",
                ]
            md += [f"![{title}]({name})", ""]
    for section in reproductions.sections(arms, report_dir, operator_study=operator_study, figures=figures):
        md += [section, ""]
    path = report_dir / "REPORT.md"
    path.write_text("\n".join(md))
    return path


_ARM_COLUMNS_FIXED = (
    "model",
    "label",
    "seeds",
    "params",
    "gflops",
    "train_step_ms",
    *(f"{k}_{s}" for k in ARM_METRICS for s in ("mean", "std")),
)
