"""The results of a sweep folder, read back: each finished run's endpoints and measurements, the arms aggregated
over seeds, the hypotheses tested. Plain files, numpy and scipy: no JAX (the measurements were taken by the runner).

Endpoints of a run (validation split, whole images): final mIoU = the mean of the last LAST_EVALS validations
(less endpoint noise than the last one alone); learning-curve area = the mean mIoU over every validation; the same
final means for boundary F1 and the IoU of each class (wire and speck are where decoders differ). Hypotheses are
tested on the final mIoU, seed-paired, by the rules of experiments.stats.

`Results.load(out)` is what the report and every study's `section` receive.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from experiments import gates, layout, stats
from segjax.files import read_metrics

LAST_EVALS = 3
CLASSES_OF_INTEREST = ("wire", "speck")

# Split-level measurements of experiments.analysis (issue 14), when a run has them: column -> (path, label).
SPLIT_METRICS = {
    "bf_0": (("boundary_f1", "0"), "BF 0 px"),
    "bf_1": (("boundary_f1", "1"), "BF 1 px"),
    "bf_2": (("boundary_f1", "2"), "BF 2 px"),
    "trimap_1": (("trimap_miou", "1"), "trimap mIoU 1 px"),
    "trimap_4": (("trimap_miou", "4"), "trimap mIoU 4 px"),
    "phase_error_ratio": (("phase_error", "max_over_min"), "phase error max/min"),
    "phase_error_null_95": (("phase_error", "null_95"), "its null 95%"),
    "shift_consistency": (("shift_consistency",), "shift consistency"),
    "cb_upsamplers": (("checkerboard", "upsamplers"), "CB upsamplers"),
    "cb_logits": (("checkerboard", "logits_2"), "CB logits"),
    "cb_floor": (("checkerboard", "floor_2"), "CB floor"),
    "cb_gradient": (("checkerboard", "input_gradient_2"), "CB input gradient"),
    "cb_encoder_gradient": (("checkerboard", "encoder_gradient_magnitude_2"), "CB encoder gradient magnitude"),
}
# FCN runs: the oracle decoder's mIoU at each stride (experiments.analysis.oracle_miou).
ORACLE_COLUMNS = tuple(f"oracle_{s}" for s in (32, 16, 8))
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
RUN_COLUMNS = (
    "model",
    "label",
    "seed",
    "config_hash",
    "params",
    "gflops",
    "steps",
    *ARM_METRICS[:2],
    "endpoint_miou",
    *ARM_METRICS[2:],
    "train_seconds",
)
ARM_COLUMNS = (
    "model",
    "label",
    "seeds",
    "params",
    "gflops",
    "step_ms",
    "step_ratio",
    *(f"{k}_{s}" for k in ARM_METRICS for s in ("mean", "std")),
)


# ----------------------------------------------------------------------------------------------------------------
# One run


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
    train = [r for r in records if r.get("split") == "train" and r.get("loss") is not None]
    if train:  # what the training-adequacy gate reads
        out["first_loss"], out["final_loss"] = float(train[0]["loss"]), float(train[-1]["loss"])
    out["final_per_class_iou"] = [v for k, v in sorted(evals[-1].items()) if k.startswith("iou/")]
    return out


def split_columns(split: dict | None) -> dict:
    """The SPLIT_METRICS columns of a run's split measurements; a list or mapping is averaged over its measured
    values (upsamplers, shifts)."""
    if not split:
        return {}
    out = {}
    for column, (path, _) in SPLIT_METRICS.items():
        value = split
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):  # over the values measured (null: a map too small for its stride)
            value = [v for v in value if v is not None]
            value = float(np.mean(value)) if value else None
        out[column] = value
    return out


def run_row(workdir: pathlib.Path) -> dict:
    """The row of one finished run: run.json, analysis.json and the endpoints of metrics.jsonl."""
    info = layout.read_json(workdir / layout.RUN_FILE)
    analysis = layout.read_json(workdir / layout.ANALYSIS_FILE)
    cb = analysis.get("checkerboard", {})
    return {
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


def collect(expected: list[tuple[str, pathlib.Path]]) -> tuple[list[dict], list[str]]:
    """Rows of the finished runs among `expected` [(name, workdir)] and the names of those not finished."""
    rows, missing = [], []
    for name, workdir in expected:
        if (workdir / layout.DONE).exists():
            rows.append(run_row(workdir))
        else:
            state = "failed" if (workdir / layout.ERROR_FILE).exists() else "not run / interrupted"
            missing.append(f"{name}: {state}")
    return rows, missing


def expected_runs(out: pathlib.Path, sweeps: list[dict]) -> list[tuple[str, pathlib.Path]]:
    """(name, workdir) of every (arm, seed) of the declared sweeps, each once, in declaration order."""
    seen = {}
    for s in sweeps:
        for arm in s["arms"]:
            for seed in s["seeds"]:
                name = f"{arm['model']}/{arm['label']}/seed{seed}"
                seen.setdefault(name, layout.run_dir(out, arm["model"], arm["label"], seed))
    return list(seen.items())


# ----------------------------------------------------------------------------------------------------------------
# Arms


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
    path = out / layout.COSTS_FILE
    if not path.exists():
        return {}
    with open(path) as f:
        return {(r["model"], r["label"]): r for r in csv.DictReader(f)}


def find_arm(arms: list[dict], model: str, label: str) -> dict | None:
    return next((a for a in arms if a["model"] == model and a["label"] == label), None)


def per_seed(rows: list[dict], model: str, label: str, key: str = "final_miou") -> dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r["model"] == model and r["label"] == label and r.get(key) is not None}


def paired(arms: list[dict], key: str) -> tuple[list[int], list[list]]:
    """The seeds every arm has `key` for, and each arm's values on them in that order (seed-paired contrasts)."""
    values = [{m["seed"]: m[key] for m in arm["_members"] if m.get(key) is not None} for arm in arms]
    seeds = sorted(set.intersection(*(set(v) for v in values)))
    return seeds, [[v[s] for s in seeds] for v in values]


# ----------------------------------------------------------------------------------------------------------------
# Hypotheses


def _paired_values(rows: list[dict], h: dict):
    """(a, b, seeds) of a hypothesis: better (averaged with `also`, or minus minus[0]) and worse (minus minus[1]) on
    the shared seeds; a and b are None with fewer than 2 seeds."""
    values = {arm: per_seed(rows, h["model"], arm) for arm in h_arms(h)}
    seeds = sorted(set.intersection(*(set(v) for v in values.values())))
    if len(seeds) < 2:
        return None, None, seeds
    better, worse = (np.array([values[arm][s] for s in seeds]) for arm in (h["better"], h["worse"]))
    if h.get("also"):
        better = (better + np.array([values[h["also"]][s] for s in seeds])) / 2
    if h.get("minus"):
        better = better - np.array([values[h["minus"][0]][s] for s in seeds])
        worse = worse - np.array([values[h["minus"][1]][s] for s in seeds])
    return better, worse, seeds


def h_arms(h: dict) -> list[str]:
    """Every arm a hypothesis (as recorded in sweep.json) reads."""
    return [h["better"], h["worse"], *(h.get("minus") or ()), *([h["also"]] if h.get("also") else [])]


def gate_status(rows: list[dict], gate: gates.Gate) -> dict[tuple[str, str], str | None]:
    """(model, label) -> None when the arm trained by `gate`, else the checks a majority of its seeds failed."""
    groups: dict[tuple[str, str], list[gates.RunOutcome]] = collections.defaultdict(list)
    for r in rows:
        outcome = gates.RunOutcome(
            r.get("first_loss", math.nan),
            r.get("final_loss", math.nan),
            r.get("final_miou") or math.nan,
            tuple(r.get("final_per_class_iou") or ()),
        )
        groups[(r["model"], r["label"])].append(outcome)
    return {key: gate.arm_status(runs) for key, runs in groups.items()}


def gated(verdict: str, model: str, labels: Sequence[str], status: Mapping | None) -> str:
    """`verdict` of a contrast of the arms `labels` of `model`, or "not tested: <arm> did not train (<why>)" when
    the arms' gate `status` (`gate_status`) says one of them did not train (the rule: gates.gated_verdict)."""
    return gates.gated_verdict(verdict, labels, {label: (status or {}).get((model, label)) for label in labels})


def arms_gate(model: str, labels: Sequence[str], status: Mapping | None) -> str | None:
    """The gate status of the arms `labels` of `model` in words: None when no gate covers them, 'passed' when each
    passed, else '<arm> did not train (<why>)' for the first that failed."""
    covered = [label for label in labels if (model, label) in (status or {})]
    if not covered:
        return None
    failed = next((label for label in covered if status[(model, label)]), None)
    return "passed" if failed is None else f"{failed} did not train ({status[(model, failed)]})"


def hypothesis_results(
    rows: list[dict], hypotheses: list[dict], status: dict | None = None, *, trim: float = 0.0
) -> list[dict]:
    """Each hypothesis's seed-paired contrast and verdict; Holm over the hypotheses of the same network; on the
    trimmed mean of the differences with `trim` > 0 (stats.TRIMMED_RULE). With the arms' gate `status`
    (`gate_status`), a verdict about an arm that did not train is "not tested: ..."; "gate" is the arms' gate status
    in words (`arms_gate`)."""
    prepared = [(h, *_paired_values(rows, h)) for h in hypotheses]
    results = []
    for model in dict.fromkeys(h["model"] for h in hypotheses):
        family = [(h, a, b, seeds) for h, a, b, seeds in prepared if h["model"] == model and a is not None]
        verdicts = stats.family_verdicts(
            [(a, b) for _, a, b, _ in family],
            [h["margin"] for h, *_ in family],
            [h["claim"] for h, *_ in family],
            trim=trim,
        )
        for (h, a, b, seeds), v in zip(family, verdicts, strict=True):
            v = dataclasses.replace(v, verdict=gated(v.verdict, model, h_arms(h), status))
            gate = arms_gate(model, h_arms(h), status)
            results.append(
                {"hypothesis": h, "verdict": v, "differences": (a - b).tolist(), "seeds": seeds, "gate": gate}
            )
    for h, a, _, seeds in prepared:
        if a is None:
            gate = arms_gate(h["model"], h_arms(h), status)
            results.append({"hypothesis": h, "verdict": None, "differences": [], "seeds": seeds, "gate": gate})
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


def mean_curves(arms: list[dict]) -> dict[str, tuple[list[int], np.ndarray]]:
    """'model/label' -> (steps, seeds x validations mIoU) over the validations every seed of the arm has."""
    curves = {}
    for a in arms:
        members = [m for m in a["_members"] if m.get("curve_steps")]
        common = min((len(m["curve_steps"]) for m in members), default=0)
        if common > 1:
            curves[f"{a['model']}/{a['label']}"] = (
                members[0]["curve_steps"][:common],
                np.array([m["curve_miou"][:common] for m in members]),
            )
    return curves


# ----------------------------------------------------------------------------------------------------------------
# A sweep folder


@dataclasses.dataclass
class Results:
    """What a sweep folder holds: the sweeps as declared, the finished runs (rows), the arms aggregated over seeds,
    the unfinished runs, the benchmarked costs, and the studies' measurements (OUT/studies/<study>.json).

    Every study's `sections` receives this object and reads arms (`arm`), runs and measurements (`study`) through
    it; what else a section will quote about an arm (e.g. whether it trained adequately) belongs here too."""

    out: pathlib.Path
    sweeps: list[dict]
    rows: list[dict]
    missing: list[str]
    arms: list[dict]
    costs: dict[tuple[str, str], dict]

    @classmethod
    def load(cls, out: str | pathlib.Path) -> Results:
        out = pathlib.Path(out)
        sweeps = layout.read_json(out / layout.SWEEP_FILE)
        rows, missing = collect(expected_runs(out, sweeps))
        arms = aggregate(rows)
        costs = read_costs(out)
        for a in arms:
            cost = costs.get((a["model"], a["label"]), {})
            a["step_ms"], a["step_ratio"] = cost.get("step_ms"), cost.get("ratio")
        return cls(out, sweeps, rows, missing, arms, costs)

    def arm(self, model: str, label: str) -> dict | None:
        """The aggregated arm (model, label), or None when no run of it finished."""
        return find_arm(self.arms, model, label)

    def study(self, name: str) -> Any:
        """A study's measurements (experiments.measure wrote them), or None when they were not measured."""
        path = layout.study_file(self.out, name)
        return layout.read_json(path) if path.exists() else None

    @property
    def hypotheses(self) -> list[dict]:
        return [h for s in self.sweeps for h in s.get("hypotheses", [])]

    def verdicts(self) -> list[dict]:
        """Each declared hypothesis's contrast and verdict (`hypothesis_results`), with the arms' gates and the
        sweep's estimator."""
        if not self.hypotheses:
            return []
        return hypothesis_results(self.rows, self.hypotheses, self.gate_status(), trim=self.trim)

    @property
    def trim(self) -> float:
        """The trimmed share its hypotheses are tested with (0: the plain mean)."""
        return next((s["trim"] for s in self.sweeps if s.get("trim")), 0.0)

    @property
    def declared_gates(self) -> list[tuple[dict, gates.Gate]]:
        """(sweep, its gate) of every sweep that declares one."""
        return [(s, gates.Gate(**s["gate"])) for s in self.sweeps if s.get("gate")]

    @property
    def collapse(self) -> gates.Collapse | None:
        declared = next((s["collapse"] for s in self.sweeps if s.get("collapse")), None)
        return gates.Collapse(**declared) if declared else None

    def gate_status(self) -> dict[tuple[str, str], str | None]:
        """(model, label) -> None when the arm passed its sweep's gate, else why not; arms of sweeps that declare no
        gate are absent."""
        status = {}
        for sweep, gate in self.declared_gates:
            arms = {(a["model"], a["label"]) for a in sweep["arms"]}
            status.update(gate_status([r for r in self.rows if (r["model"], r["label"]) in arms], gate))
        return status

    @property
    def smoke_test(self) -> bool:
        return any(s.get("smoke_test") for s in self.sweeps)

    @property
    def with_studies(self) -> bool:
        """Whether the report adds the studies' sections: smoke tests and paper reproductions."""
        return self.smoke_test or any(s.get("reproduction") for s in self.sweeps)
