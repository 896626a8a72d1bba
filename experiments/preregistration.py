"""A confirmatory study's frozen plan: its sweep (arms, seeds, budget, description), hypotheses (contrasts, claims,
margins), gate and collapse rules, and the analysis (the verdict rules of experiments.stats, its trimmed-estimator
rule where the sweep declares one, and the gate and collapse rules of experiments.gates, quoted), written as JSON
under experiments/preregistered/ and committed before the confirmatory runs start. A sweep names its plan
(`Sweep.preregistered`).

`plan(sweep)` is the plan the code declares today; `write` records it (refusing to replace a committed
plan); `check` is what the runner and the report call: it returns the commit that added the plan and refuses
(PreregistrationChanged) when the file has uncommitted changes or changed after that commit, or when the code now
declares another plan.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

from experiments import gates, layout, stats
from experiments.definitions import Sweep

DIR = layout.REPO_ROOT / "experiments" / "preregistered"


class PreregistrationChanged(ValueError):
    """The frozen plan and the study no longer agree: the confirmatory results would not be the planned ones."""


def plan(sweep: Sweep | dict) -> dict:
    """The plan of a confirmatory sweep (declared, or as recorded in OUT/sweep.json) as JSON data."""
    record = sweep if isinstance(sweep, dict) else sweep.record()
    declared = {"sweep": record, "verdict_rules": stats.RULES, "gate_and_collapse_rules": gates.__doc__.strip()}
    if record.get("trim"):
        declared["trimmed_estimator_rule"] = stats.TRIMMED_RULE
    return declared


def check_sweep(sweep: Sweep | dict) -> str | None:
    """`check` of a sweep's own plan: the commit that froze it, or None when the sweep names none."""
    name = sweep.get("preregistered") if isinstance(sweep, dict) else sweep.preregistered
    return check(name, plan(sweep)) if name else None


def path_of(name: str, directory: pathlib.Path = DIR) -> pathlib.Path:
    return directory / f"{name}.json"


def write(name: str, declared: dict, directory: pathlib.Path = DIR) -> pathlib.Path:
    """Records the plan; refuses when a plan of that name is committed already (a frozen plan is never rewritten:
    a new plan gets a new name)."""
    path = path_of(name, directory)
    if path.exists() and _commit_of(path):
        raise PreregistrationChanged(f"{path} is committed already; a changed plan is a new study with a new name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(declared, indent=1, sort_keys=True) + "\n")
    return path


def check(name: str, declared: dict, directory: pathlib.Path = DIR) -> str:
    """The commit that added the plan `name`; PreregistrationChanged unless the committed file is unchanged since
    and equals `declared` (the plan the code declares now)."""
    path = path_of(name, directory)
    if not path.exists():
        raise PreregistrationChanged(f"{path} does not exist: write and commit the plan before the confirmatory runs.")
    first = _commit_of(path)
    if not first:
        raise PreregistrationChanged(f"{path} is not committed: commit the plan before the confirmatory runs.")
    changed = _git(path.parent, "log", "--format=%h", f"{first}..HEAD", "--", path.name)
    dirty = _git(path.parent, "status", "--porcelain", "--", path.name)
    if changed or dirty:
        raise PreregistrationChanged(
            f"{path} changed after the commit that froze it ({first}): restore it (git checkout {first} -- {path})."
        )
    if json.loads(path.read_text()) != json.loads(json.dumps(declared, sort_keys=True)):
        raise PreregistrationChanged(
            f"the study's code no longer declares the plan frozen in {path} at {first}; restore the declaration."
        )
    return first


def _commit_of(path: pathlib.Path) -> str:
    """The commit that added `path` ('' when it is not committed)."""
    return _git(path.parent, "log", "--diff-filter=A", "--format=%h", "--", path.name).split("\n")[-1]


def _git(cwd: pathlib.Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return result.stdout.strip()
