"""Sweep runner: expand (models x operators x options x seeds) into configs and train each one.

A sweep is plain data (``experiments.definitions``: ``Arm``s, each a config family from ``configs/`` plus
overrides, and seeds), put together by a study's preset (``experiments/studies/``).
``run_sweep`` turns every (arm, seed) into a ``Run`` with its own workdir ``OUT/<model>/<label>/seed<k>`` and
executes it with ``segjax.train.train_and_evaluate`` (or, with ``seeds_per_program`` K > 1, up to K seeds of an arm
at once with ``segjax.multiseed.train_seeds``, each seed's workdir written as its own run would be) followed by the
measurements in ``experiments.analysis`` (parameters, FLOPs, checkerboard scores, sample predictions); the studies'
own measurements follow the whole sweep (``experiments.measure``, run by ``experiments.command``).

Bookkeeping, so a sweep can be stopped and started again at any time:
- ``run.json`` (written before training) records the run's resolved-config hash;
- ``analysis.json`` then ``DONE`` are written atomically after the final evaluation. A run with ``DONE`` is
  skipped; a run without it is resumed: ``train_and_evaluate`` restores its own latest checkpoint.
- Reusing an OUT whose run has a different config is refused (it would mix two experiments in one folder).
Runs sharing an OUT are shared between sweeps: a run's workdir depends only on its model, label and seed, so the
paper-reproduction presets reuse the ablation's finished runs instead of training them again.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections

from experiments import analysis as analysis_lib
from experiments import layout
from experiments.definitions import Arm, Sweep
from experiments.layout import ANALYSIS_FILE, DONE, ERROR_FILE, RUN_FILE, read_json
from segjax import multiseed
from segjax.config import load_config_file, set_value
from segjax.files import write_json
from segjax.train import train_and_evaluate

CONFIGS_DIR = layout.REPO_ROOT / "configs"


# ----------------------------------------------------------------------------------------------------------------
# Runs


@dataclasses.dataclass(frozen=True)
class Run:
    """One (arm, seed) of a sweep, with its fully resolved config."""

    arm: Arm
    seed: int
    config: ml_collections.ConfigDict

    @property
    def name(self) -> str:
        return f"{self.arm.model}/{self.arm.label}/seed{self.seed}"

    def workdir(self, out: str | os.PathLike) -> pathlib.Path:
        return layout.run_dir(out, self.arm.model, self.arm.label, self.seed)

    @property
    def source(self) -> str | None:
        """The name of the run this one starts from (`Arm.init_from`), or None."""
        return None if self.arm.init_from is None else f"{self.arm.model}/{self.arm.init_from}/seed{self.seed}"

    def config_in(self, out: str | os.PathLike) -> ml_collections.ConfigDict:
        """The config to train with in OUT: a run that starts from another run gets that run's workdir as
        model.init_from (the hashed config names it relative to OUT, so that a run's hash does not depend on OUT)."""
        if self.source is None:
            return self.config
        return apply_overrides(self.config, {INIT_FROM_KEY: str(pathlib.Path(out) / self.source)})

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


def load_family_config(family: str) -> ml_collections.ConfigDict:
    """The config of a family in configs/: 'unet' -> configs/unet.py get_config(); 'fcn:8s' -> get_config('8s')."""
    name, sep, arg = family.partition(":")
    path = CONFIGS_DIR / f"{name}.py"
    if not path.exists():
        known = sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise ValueError(f"Unknown config family {family!r}: {path} does not exist. Known families: {known}.")
    return load_config_file(f"{path}{sep}{arg}")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Set dotted keys ('model.upsample.method') on a copy of config; unknown keys and wrong types are errors."""
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        set_value(config, key, value)
    return config


def config_hash(config: ml_collections.ConfigDict) -> str:
    """A short stable hash of a resolved config (what the report quotes and the skip check compares)."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


SEED_KEY = "seed"
INIT_FROM_KEY = "model.init_from"


def expand(sweep: Sweep, *, only: Sequence[str] = (), seeds: Sequence[int] | None = None) -> list[Run]:
    """Every (arm, seed) of the sweep with its resolved config: family config <- sweep overrides <- arm overrides
    <- seed. `only` keeps arms whose 'model/label' contains any of the given substrings (possibly none)."""
    runs = []
    cache: dict[str, ml_collections.ConfigDict] = {}
    for arm in sweep.arms:
        if only and not any(s in arm.key for s in only):
            continue
        if arm.config not in cache:
            cache[arm.config] = load_family_config(arm.config)
        base = apply_overrides(cache[arm.config], {**sweep.overrides, **arm.overrides})
        for seed in sweep.seeds if seeds is None else seeds:
            run = Run(arm, int(seed), apply_overrides(base, {SEED_KEY: int(seed)}))
            if run.source is not None:
                run = dataclasses.replace(run, config=apply_overrides(run.config, {INIT_FROM_KEY: run.source}))
            runs.append(run)
    return runs


def stages(runs: Sequence[Run]) -> list[list[Run]]:
    """`runs` in the order they can be trained: runs that start from no other run first, then the runs that start
    from those, and so on (a source that is not among `runs` must be finished already)."""
    names = {r.name: r for r in runs}

    def depth(run: Run) -> int:
        return 0 if run.source not in names else 1 + depth(names[run.source])

    grouped: dict[int, list[Run]] = {}
    for run in runs:
        grouped.setdefault(depth(run), []).append(run)
    return [grouped[k] for k in sorted(grouped)]


def dedupe(runs: Sequence[Run]) -> list[Run]:
    """Runs of several sweeps, each workdir once (sweeps may share arms); a name with two configs is an error."""
    seen: dict[str, Run] = {}
    for run in runs:
        other = seen.setdefault(run.name, run)
        if other.config_hash != run.config_hash:
            raise ValueError(
                f"Two sweeps define {run.name} with different configs ({other.config_hash} vs "
                f"{run.config_hash}); give one of the arms another label."
            )
    return list(seen.values())


# ----------------------------------------------------------------------------------------------------------------
# Executing runs


def run_state(workdir: pathlib.Path, expected_hash: str) -> str:
    """'done' (skip), 'partial' (resume) or 'new'. Refuses a workdir that holds a different config."""
    for marker in (DONE, RUN_FILE):
        path = workdir / marker
        if path.exists():
            found = read_json(path).get("config_hash")
            if found != expected_hash:
                raise ValueError(
                    f"{workdir} holds a run with config hash {found}, but this sweep's run has config {expected_hash}"
                    f" (the sweep definition or a default config changed). Use a new --out, or delete {workdir} "
                    "to train it again."
                )
    if (workdir / DONE).exists():
        return "done"
    if (workdir / RUN_FILE).exists():
        return "partial"
    return "new"


TrainFn = Callable[[ml_collections.ConfigDict, str], Any]
TrainSeedsFn = Callable[[list[ml_collections.ConfigDict], list[str]], Any]
AnalyzeFn = Callable[[ml_collections.ConfigDict, str], dict]


def execute_run(
    run: Run, out: str | os.PathLike, *, train_fn: TrainFn | None = None, analyze_fn: AnalyzeFn | None = None
) -> str:
    """Train (or resume) one run, measure it, mark it done. Returns 'skipped' when it was already done."""
    state = _begin(run, out)
    if state == "done":
        return "skipped"
    start = time.time()
    (train_fn or train_and_evaluate)(run.config_in(out), str(run.workdir(out)))
    return _finish(run, out, state, time.time() - start, analyze_fn)


def execute_program(
    runs: Sequence[Run],
    out: str | os.PathLike,
    *,
    train_seeds_fn: TrainSeedsFn | None = None,
    analyze_fn: AnalyzeFn | None = None,
) -> list[str]:
    """Train (or resume) the seeds of one arm as one program (`segjax.multiseed.train_seeds`), then measure each
    and mark it done as `execute_run` does; a run already done is left out. Each run's analysis.json records the
    program's training time divided among its seeds (`wall_seconds_train_call`) and `seeds_per_program`."""
    states = {run.name: _begin(run, out) for run in runs}
    todo = [run for run in runs if states[run.name] != "done"]
    if todo:
        start = time.time()
        configs = [run.config_in(out) for run in todo]
        (train_seeds_fn or multiseed.train_seeds)(configs, [str(run.workdir(out)) for run in todo])
        seconds = (time.time() - start) / len(todo)
        for run in todo:
            states[run.name] = _finish(
                run, out, states[run.name], seconds, analyze_fn, {"seeds_per_program": len(todo)}
            )
    return [states[run.name] if states[run.name] != "done" else "skipped" for run in runs]


def _begin(run: Run, out) -> str:
    """run_state of the run, and unless it is done, its workdir with run.json (written before training)."""
    workdir = run.workdir(out)
    state = run_state(workdir, run.config_hash)
    if state == "done":
        return state
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(
        workdir / RUN_FILE,
        {
            "config_hash": run.config_hash,
            "name": run.name,
            "model": run.arm.model,
            "label": run.arm.label,
            "seed": run.seed,
            "family": run.arm.config,
            "overrides": dict(run.arm.overrides),
            "tags": dict(run.arm.tags),
            "config": run.config_in(out).to_dict(),
        },
    )
    (workdir / ERROR_FILE).unlink(missing_ok=True)
    return state


def _finish(run: Run, out, state: str, train_seconds: float, analyze_fn, extra: dict | None = None) -> str:
    """Measures a trained run and marks it done; 'trained' or 'resumed'."""
    workdir = run.workdir(out)
    analysis = dict((analyze_fn or analysis_lib.analyze_run)(run.config_in(out), str(workdir)))
    analysis.setdefault("wall_seconds_train_call", train_seconds)
    analysis.update(extra or {})
    write_json(workdir / ANALYSIS_FILE, analysis)
    write_json(
        workdir / DONE,
        {"config_hash": run.config_hash, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed": state == "partial"},
    )
    return "resumed" if state == "partial" else "trained"


def reanalyze(runs: Sequence[Run], out, *, analyze_fn: AnalyzeFn | None = None, log=print) -> int:
    """Measures the finished runs again (the measurements changed, the training did not): rewrites each run's
    analysis.json, keeping the training's wall time. Returns the number of runs measured."""
    done = [r for r in runs if (r.workdir(out) / DONE).exists()]
    for i, run in enumerate(done):
        workdir = run.workdir(out)
        previous = read_json(workdir / ANALYSIS_FILE)
        analysis = dict((analyze_fn or analysis_lib.analyze_run)(run.config_in(out), str(workdir)))
        analysis["wall_seconds_train_call"] = previous.get("wall_seconds_train_call")
        write_json(workdir / ANALYSIS_FILE, analysis)
        log(f"[sweep] measured again {i + 1}/{len(done)} {run.name}")
    return len(done)


def _execute_guarded(program: Sequence[Run], out, train_fn, train_seeds_fn, analyze_fn) -> list[tuple[str, str]]:
    """Executes one program (one run: `execute_run`; several seeds of an arm: `execute_program`) and records a
    failure in each of its runs' error.txt instead of stopping the whole sweep; [(name, status)]."""
    try:
        if len(program) == 1:
            statuses = [execute_run(program[0], out, train_fn=train_fn, analyze_fn=analyze_fn)]
        else:
            statuses = execute_program(program, out, train_seeds_fn=train_seeds_fn, analyze_fn=analyze_fn)
        return [(run.name, status) for run, status in zip(program, statuses, strict=True)]
    except Exception:  # noqa: BLE001 - a failed arm must not stop the others; the error is kept and reported
        text = traceback.format_exc()
        for run in program:
            workdir = run.workdir(out)
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / ERROR_FILE).write_text(text)
        names = ", ".join(run.name for run in program)
        print(f"[sweep] {names} FAILED:\n{text}", file=sys.stderr, flush=True)
        return [(run.name, "failed") for run in program]


def check_seeds_per_program(runs: Sequence[Run], seeds_per_program: int) -> None:
    """ValueError naming the fix unless `runs` can train with --seeds-per-program `seeds_per_program`: a positive
    count, and above 1 no run that starts from another run's weights (`segjax.multiseed.check_seeds`)."""
    if isinstance(seeds_per_program, bool) or not isinstance(seeds_per_program, int) or seeds_per_program < 1:
        raise ValueError(
            f"--seeds-per-program={seeds_per_program!r} must be a positive integer (1: a program per run)."
        )
    staged = sorted({r.arm.key for r in runs if r.source is not None})
    if seeds_per_program > 1 and staged:
        raise ValueError(
            f"--seeds-per-program={seeds_per_program}: the arms {staged} start from other runs' weights "
            "(model.init_from), which a program of several seeds does not do; use --seeds-per-program 1, or leave "
            "those arms out with --only."
        )


def programs(runs: Sequence[Run], out, seeds_per_program: int) -> list[list[Run]]:
    """`runs` (independent of each other) grouped into programs: with seeds_per_program K > 1, up to K seeds of one
    arm that resume from the same step (`multiseed.resume_step`: a fresh start, or the same program's
    checkpoints) train as one program; every other run is a program of its own."""
    if seeds_per_program == 1:
        return [[run] for run in runs]
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.arm.key, multiseed.resume_step(run.workdir(out))), []).append(run)
    return [
        group[i : i + seeds_per_program] for group in groups.values() for i in range(0, len(group), seeds_per_program)
    ]


def _worker_init(out: str):
    configure_jax(out)


def configure_jax(out: str | os.PathLike) -> None:
    """Share XLA compilations between the processes and invocations of a sweep (within one process, equal steps
    are already compiled once: segjax.parallel.DataParallel.wrap)."""
    cache = pathlib.Path(out) / ".jax_cache"
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def run_sweep(
    runs: Sequence[Run],
    out: str | os.PathLike,
    *,
    jobs: int = 1,
    seeds_per_program: int = 1,
    train_fn: TrainFn | None = None,
    train_seeds_fn: TrainSeedsFn | None = None,
    analyze_fn: AnalyzeFn | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Execute runs (skipping done ones, resuming partial ones); jobs > 1 runs that many spawned processes, each
    reusing its process for several programs; seeds_per_program K > 1 trains up to K seeds of an arm as one
    vmapped program (`programs`, `segjax.multiseed`: for accelerators; on CPU it is slower). Returns run name ->
    'skipped'|'trained'|'resumed'|'failed'."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}.")
    check_seeds_per_program(runs, seeds_per_program)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:  # refuse a mismatching OUT before spending any compute
        run_state(run.workdir(out), run.config_hash)
    results: dict[str, str] = {}
    todo = [r for r in runs if not (r.workdir(out) / DONE).exists()]
    for r in runs:
        if r not in todo:
            results[r.name] = "skipped"
    per_program = f", seeds per program={seeds_per_program}" if seeds_per_program > 1 else ""
    log(f"[sweep] {len(runs)} runs: {len(runs) - len(todo)} already done, {len(todo)} to run, jobs={jobs}{per_program}")
    start = time.time()
    done = 0
    for stage in stages(todo):  # a run that starts from another run's checkpoint waits for that run
        grouped = programs(stage, out, seeds_per_program)
        for name, status in _execute_all(grouped, out, jobs, train_fn, train_seeds_fn, analyze_fn):
            results[name] = status
            done += 1
            log(f"[sweep] {done}/{len(todo)} {name}: {status} ({time.time() - start:.0f} s elapsed)")
    return results


def _execute_all(grouped: Sequence[Sequence[Run]], out: pathlib.Path, jobs: int, train_fn, train_seeds_fn, analyze_fn):
    """Executes independent programs, in this process (jobs == 1) or in `jobs` spawned processes, yielding (name,
    status) of each run as its program finishes."""
    if jobs == 1 or len(grouped) <= 1:
        configure_jax(out)
        for program in grouped:
            yield from _execute_guarded(program, out, train_fn, train_seeds_fn, analyze_fn)
        return
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_worker_init, initargs=(str(out),)
    ) as pool:
        futures = [
            pool.submit(_execute_guarded, program, str(out), train_fn, train_seeds_fn, analyze_fn)
            for program in grouped
        ]
        for future in concurrent.futures.as_completed(futures):
            yield from future.result()
