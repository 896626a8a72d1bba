"""Where a sweep keeps its files: the run folders, their markers and the study measurements (no JAX).

    OUT/sweep.json                      the sweeps as declared (experiments.command writes it, the report reads it)
    OUT/<model>/<label>/seed<k>/        a run: run.json, the training's files, analysis.json, DONE (or error.txt)
    OUT/studies/<study>.json            a study's measurements that are not one run's (experiments.measure)
    OUT/costs.csv                       the arms' step times (experiments/benchmarks/arms.py), if measured

The runner (experiments.sweep) writes these files and the results layer (experiments.results) reads them; both take
the names from here.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DONE = "DONE"
RUN_FILE = "run.json"
ANALYSIS_FILE = "analysis.json"
ERROR_FILE = "error.txt"
SWEEP_FILE = "sweep.json"
COSTS_FILE = "costs.csv"
STUDIES_DIR = "studies"


def run_dir(out: str | os.PathLike, model: str, label: str, seed: int) -> pathlib.Path:
    """The workdir of one (arm, seed): it depends only on the model, label and seed, so sweeps share runs."""
    return pathlib.Path(out) / model / label / f"seed{seed}"


def study_file(out: str | os.PathLike, study: str) -> pathlib.Path:
    """The JSON file of a study's measurements in OUT."""
    return pathlib.Path(out) / STUDIES_DIR / f"{study}.json"


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(pathlib.Path(path).read_text())
