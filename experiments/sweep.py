"""Sweep runner: expand (models x operators x options x seeds) into configs and train each one.

A sweep is plain data (``experiments.definitions``: ``Arm``s, each a config family from ``configs/`` plus
overrides, and seeds), put together by a study's preset (``experiments/studies/``).
``run_sweep`` turns every (arm, seed) into a ``Run`` with its own workdir ``OUT/<model>/<label>/seed<k>`` and
executes it with ``segjax.train.train_and_evaluate`` (or, with ``seeds_per_program`` K > 1, up to K seeds of an arm
at once with ``segjax.multiseed.train_seeds``, each seed's workdir written as its own run would be) followed by the
measurements in ``experiments.analysis`` (parameters, FLOPs, checkerboard scores, sample predictions); the studies'
own measurements follow the whole sweep (``experiments.measure``, run by ``experiments.command``).

Bookkeeping, so a sweep can be stopped and started again at any time:
- ``run.json`` (written before training) records the run's resolved-config hash and the XLA_FLAGS of each
  invocation that trained it;
- ``analysis.json`` then ``DONE`` are written atomically after the final evaluation. A run with ``DONE`` is
  skipped; a run without it is resumed: ``train_and_evaluate`` restores its own latest checkpoint. analysis.json
  also records where the run's time went (`TIMING_KEYS`: the training call and the measurements, and the JAX
  compilation within each).
- Reusing an OUT whose run has a different config is refused (it would mix two experiments in one folder).
- SIGTERM or SIGINT stops a sweep: in process, the training saves a checkpoint and stops (``segjax.train``);
  with --jobs N, the parent sends each of its workers one SIGTERM (each training saves a checkpoint and its worker
  exits), waits for them and raises ``Interrupted``. A worker also stops when its parent dies any other way (Linux:
  ``PR_SET_PDEATHSIG``), so no worker trains on into OUT. A stopped run is partial (no ``DONE``) and resumes. A
  worker that dies in a program (killed for memory, say) fails that program's runs; the others go on.
Runs sharing an OUT are shared between sweeps: a run's workdir depends only on its model, label and seed, so the
paper-reproduction presets reuse the ablation's finished runs instead of training them again.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import signal
import sys
import threading
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
from segjax import cli, multiseed
from segjax.config import load_config_file, set_value
from segjax.files import write_json
from segjax.train import Interrupted, train_and_evaluate

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


# ----------------------------------------------------------------------------------------------------------------
# Where a run's time goes

# analysis.json's timing: wall seconds of the training call (train_and_evaluate: compilation, steps, validations,
# checkpoints) and of the measurements (analyze_fn), and the JAX compilation within each (`compile_seconds`).
TIMING_KEYS = (
    "wall_seconds_train_call",
    "compile_seconds_train_call",
    "wall_seconds_analysis",
    "compile_seconds_analysis",
)
COMPILE_EVENTS = (  # jax._src.dispatch: tracing, lowering, and XLA's compilation (or its persistent cache's read)
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class _CompileClock:
    """Seconds this process has spent compiling JAX functions (COMPILE_EVENTS), from JAX's own monitoring."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **kwargs) -> None:
        if event in COMPILE_EVENTS:
            self.seconds += duration


@functools.cache
def _compile_clock() -> _CompileClock:
    return _CompileClock()


def compile_seconds() -> float:
    """Seconds of JAX compilation in this process since its first call (differences time a phase)."""
    return _compile_clock().seconds


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
    start, compiled = time.time(), compile_seconds()
    (train_fn or train_and_evaluate)(run.config_in(out), str(run.workdir(out)))
    return _finish(run, out, state, time.time() - start, compile_seconds() - compiled, analyze_fn)


def execute_program(
    runs: Sequence[Run],
    out: str | os.PathLike,
    *,
    train_seeds_fn: TrainSeedsFn | None = None,
    analyze_fn: AnalyzeFn | None = None,
) -> list[str]:
    """Train (or resume) the seeds of one arm as one program (`segjax.multiseed.train_seeds`), then measure each
    and mark it done as `execute_run` does; a run already done is left out. Each run's analysis.json records the
    program's training time and compilation divided among its seeds (`TIMING_KEYS`) and `seeds_per_program`."""
    states = {run.name: _begin(run, out) for run in runs}
    todo = [run for run in runs if states[run.name] != "done"]
    if todo:
        start, compiled = time.time(), compile_seconds()
        configs = [run.config_in(out) for run in todo]
        (train_seeds_fn or multiseed.train_seeds)(configs, [str(run.workdir(out)) for run in todo])
        seconds, compiling = (time.time() - start) / len(todo), (compile_seconds() - compiled) / len(todo)
        for run in todo:
            states[run.name] = _finish(
                run, out, states[run.name], seconds, compiling, analyze_fn, {"seeds_per_program": len(todo)}
            )
    return [states[run.name] if states[run.name] != "done" else "skipped" for run in runs]


def _begin(run: Run, out) -> str:
    """run_state of the run, and unless it is done, its workdir with run.json (written before training)."""
    workdir = run.workdir(out)
    state = run_state(workdir, run.config_hash)
    if state == "done":
        return state
    workdir.mkdir(parents=True, exist_ok=True)
    flags = os.environ.get("XLA_FLAGS", "")
    earlier = read_json(workdir / RUN_FILE).get("xla_flags", []) if state == "partial" else []
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
            # XLA_FLAGS (the CPU kernels: segjax.cli) of each invocation that trained it, a resumed run's appended
            "xla_flags": earlier if earlier[-1:] == [flags] else [*earlier, flags],
        },
    )
    (workdir / ERROR_FILE).unlink(missing_ok=True)
    return state


def _finish(
    run: Run, out, state: str, train_seconds: float, train_compile: float, analyze_fn, extra: dict | None = None
) -> str:
    """Measures a trained run and marks it done; 'trained' or 'resumed'."""
    workdir = run.workdir(out)
    analysis = _measure(run, out, analyze_fn)
    analysis.setdefault("wall_seconds_train_call", train_seconds)
    analysis.setdefault("compile_seconds_train_call", train_compile)
    analysis.update(extra or {})
    write_json(workdir / ANALYSIS_FILE, analysis)
    write_json(
        workdir / DONE,
        {"config_hash": run.config_hash, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed": state == "partial"},
    )
    return "resumed" if state == "partial" else "trained"


def _measure(run: Run, out, analyze_fn) -> dict:
    """analyze_fn's measurements of a trained run, with their wall time and compilation (`TIMING_KEYS`)."""
    start, compiled = time.time(), compile_seconds()
    analysis = dict((analyze_fn or analysis_lib.analyze_run)(run.config_in(out), str(run.workdir(out))))
    analysis.setdefault("wall_seconds_analysis", time.time() - start)
    analysis.setdefault("compile_seconds_analysis", compile_seconds() - compiled)
    return analysis


def reanalyze(runs: Sequence[Run], out, *, analyze_fn: AnalyzeFn | None = None, log=print) -> int:
    """Measures the finished runs again (the measurements changed, the training did not): rewrites each run's
    analysis.json, keeping the training's wall time and compilation. Returns the number of runs measured."""
    done = [r for r in runs if (r.workdir(out) / DONE).exists()]
    for i, run in enumerate(done):
        workdir = run.workdir(out)
        previous = read_json(workdir / ANALYSIS_FILE)
        analysis = _measure(run, out, analyze_fn)
        analysis["wall_seconds_train_call"] = previous.get("wall_seconds_train_call")
        analysis["compile_seconds_train_call"] = previous.get("compile_seconds_train_call")
        write_json(workdir / ANALYSIS_FILE, analysis)
        log(f"[sweep] measured again {i + 1}/{len(done)} {run.name}")
    return len(done)


def _execute_guarded(program: Sequence[Run], out, train_fn, train_seeds_fn, analyze_fn) -> list[tuple[str, str]]:
    """Executes one program (one run: `execute_run`; several seeds of an arm: `execute_program`) and records a
    failure in each of its runs' error.txt instead of stopping the whole sweep; [(name, status)]. A signal's stop
    (`Interrupted`) is no failure: it stops the sweep, and the run resumes next time."""
    try:
        if len(program) == 1:
            statuses = [execute_run(program[0], out, train_fn=train_fn, analyze_fn=analyze_fn)]
        else:
            statuses = execute_program(program, out, train_seeds_fn=train_seeds_fn, analyze_fn=analyze_fn)
        return [(run.name, status) for run, status in zip(program, statuses, strict=True)]
    except Interrupted:
        raise
    except Exception:  # noqa: BLE001 - a failed arm must not stop the others; the error is kept and reported
        return _record_failure(program, out, traceback.format_exc())


def _record_failure(program: Sequence[Run], out, text: str) -> list[tuple[str, str]]:
    """Keeps `text` (why the program failed) in each of its runs' error.txt and reports it; [(name, 'failed')]."""
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


# ----------------------------------------------------------------------------------------------------------------
# Workers, and stopping them with the sweep
#
# With --jobs N the programs run in N spawned worker processes that the sweep starts and schedules itself, not in a
# concurrent.futures.ProcessPoolExecutor: when one of an executor's workers exits, its manager thread finds the pool
# broken and sends every other worker SIGTERM (Python 3.12's _ExecutorManagerThread._terminate_broken), which, when
# the sweep has just stopped them, is their second signal, and a second signal aborts the checkpoint that a stopped
# training is saving (segjax.train.StopSignals). Here each worker gets one SIGTERM from its sweep at most; what
# follows it, if the worker has not exited in STOP_GRACE_SECONDS, is SIGKILL.

STOP_GRACE_SECONDS = 30.0  # how long stopped workers get to save and exit before they are killed
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Worker:
    """A spawned worker process (`_worker_main`), the parent's end of its pipe, and the program it is executing
    (None: idle)."""

    def __init__(self, ctx, out: pathlib.Path, functions: tuple):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, str(out), os.getpid(), *functions))
        self.program: Sequence[Run] | None = None
        self.arms: set[str] = set()  # the arms of the programs it was given
        try:
            self.process.start()
        finally:
            child.close()

    def signum(self) -> int:
        """The signal that stopped the (exited) worker, as its exit status or its death says; 0: none."""
        code = self.process.exitcode or 0
        signum = -code if code < 0 else code - 128
        return signum if signum in signal.valid_signals() else 0


class _Workers:
    """Up to `jobs` worker processes, started as programs need them, each executing one program at a time."""

    def __init__(self, jobs: int, out: pathlib.Path, functions: tuple):
        self.jobs, self.out, self.functions = jobs, out, functions
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []

    def execute(self, grouped: Sequence[Sequence[Run]]):
        """Yields (name, status) of each run as its program finishes; a worker that exits during a program records
        the program failed (a new worker takes the rest), unless a signal stopped it (`Interrupted`)."""
        todo = list(grouped)
        while True:
            while todo and (worker := self._idle()) is not None:
                worker.program = self._take(todo, worker)
                worker.arms.add(worker.program[0].arm.key)
                try:
                    worker.conn.send(worker.program)
                except OSError:  # the worker has exited: its sentinel says so below
                    pass
            busy = [w for w in self.workers if w.program is not None]
            if not busy:
                return
            ready = set(multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    yield from self._collect(worker)
            for worker in [w for w in self.workers if w.program is None and w.process.exitcode is not None]:
                self.workers.remove(worker)  # exited while idle: another is started when one is needed

    def _take(self, todo: list[Sequence[Run]], worker: _Worker) -> Sequence[Run]:
        """Takes `worker`'s next program from `todo`: one of an arm it has run already, else one of an arm no other
        worker has run, else the first. Each process compiles its arms' steps and measurements itself (the
        persistent cache spares only XLA's part, not tracing and lowering), so a worker keeps to its arms."""
        others = set().union(*(w.arms for w in self.workers if w is not worker))
        for wanted in (lambda key: key in worker.arms, lambda key: key not in others):
            for i, program in enumerate(todo):
                if wanted(program[0].arm.key):
                    return todo.pop(i)
        return todo.pop(0)

    def _idle(self) -> _Worker | None:
        worker = next((w for w in self.workers if w.program is None and w.process.exitcode is None), None)
        if worker is None and len(self.workers) < self.jobs:
            worker = _Worker(self.ctx, self.out, self.functions)
            self.workers.append(worker)
        return worker

    def _collect(self, worker: _Worker):
        """The statuses `worker` sent back, or, if it exited without them, its program's failure (or stop)."""
        if worker.conn.poll():
            try:
                statuses = worker.conn.recv()
            except (EOFError, OSError):
                statuses = None
            if statuses is not None:
                worker.program = None
                yield from statuses
                return
        worker.process.join()
        self.workers.remove(worker)
        signum = worker.signum()
        if signum in STOP_SIGNALS:
            raise Interrupted(
                signum,
                f"A worker of the sweep was stopped by {signal.Signals(signum).name}, so the sweep stopped its other "
                "workers (a run in training saved a checkpoint); run the same command to resume.",
            )
        how = f"exited with status {worker.process.exitcode} (its error is above, on stderr)"
        if signum == signal.SIGKILL:
            how = "was killed by SIGKILL (out of memory?)"
        elif signum:
            how = f"was killed by signal {signum}"
        program, worker.program = worker.program, None
        yield from _record_failure(
            program,
            self.out,
            f"The sweep's worker process {worker.process.pid} {how} while executing this program; the runs resume "
            "from their latest checkpoints next time.\n",
        )

    def close(self) -> None:
        """Tells the idle workers to exit and waits for them (every program has finished)."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self.workers:
            worker.process.join()
            worker.conn.close()
        self.workers = []

    def stop(self) -> None:
        """SIGTERM, once, to each worker alive (a training saves a checkpoint and exits: `_worker_main`); waits up to
        STOP_GRACE_SECONDS for them to exit, then SIGKILL to any left; returns when no worker is alive."""
        try:
            for worker in self.workers:
                if worker.process.exitcode is None:
                    worker.process.terminate()
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for worker in self.workers:
                worker.process.join(max(0.0, deadline - time.monotonic()))
        finally:
            for worker in self.workers:
                if worker.process.exitcode is None:
                    worker.process.kill()
                worker.process.join()
                worker.conn.close()
            self.workers = []


def _worker_main(conn, out: str, parent: int, train_fn, train_seeds_fn, analyze_fn) -> None:
    """A worker's life: executes each program the parent sends (`_execute_guarded`) and sends back its statuses,
    until it is sent None. A signal's stop ends it with 128 + the signal number (after a training saved: Interrupted;
    elsewhere: `_exit_on_signal`)."""
    status = 0
    try:
        _worker_init(out, parent)
        while (program := conn.recv()) is not None:
            conn.send(_execute_guarded(program, out, train_fn, train_seeds_fn, analyze_fn))
    except Interrupted as e:
        status = e.exit_status
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except EOFError:  # the parent is gone: nothing more to do
        pass
    except BaseException:  # noqa: BLE001 - reported, then the parent records the program failed
        traceback.print_exc()
        status = 1
    signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, signal.SIGHUP))  # exiting now; nothing may unwind it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # not interpreter shutdown, which would wait for threads a library left running


def _worker_init(out: str, parent: int) -> None:
    """A worker in a process group of its own (Ctrl-C at a terminal reaches the parent alone, which stops the
    workers with one SIGTERM each), exiting on SIGTERM or SIGINT outside training, and sent SIGTERM when its parent
    dies."""
    os.setpgrp()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_on_signal)
    signal.signal(signal.SIGHUP, _on_parent_death)
    _die_with_parent(parent)
    configure_jax(out)


def _exit_on_signal(signum, frame):
    """A worker's SIGTERM or SIGINT outside training (which saves a checkpoint first: `segjax.train.StopSignals`):
    unwind, so that `finally` blocks run (an atomic write removes its temporary file), then `_worker_main` exits."""
    raise SystemExit(128 + signum)


_orphaned = False  # a worker's parent died: it has sent itself its one SIGTERM


def _on_parent_death(signum=None, frame=None):
    """SIGHUP, PR_SET_PDEATHSIG's signal, comes again as each thread of the dying parent exits (the kernel hands
    the orphan to the next one): the first becomes one SIGTERM (a training saves, then stops), the others nothing."""
    global _orphaned
    if _orphaned:
        return
    _orphaned = True
    os.kill(os.getpid(), signal.SIGTERM)


def _die_with_parent(parent: int) -> None:
    """SIGTERM to this process when `parent` exits: PR_SET_PDEATHSIG (SIGHUP, `_on_parent_death`) on Linux, a
    thread watching the parent's pid elsewhere. A parent that died before this call has already made the process
    an orphan: SIGTERM at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            _on_parent_death()
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="segjax-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _signals_raise_interrupted():
    """Within the block (in the main thread; elsewhere Python delivers no signals), the first SIGTERM or SIGINT
    raises `Interrupted`; the handlers before the block are back after it, so a second signal acts as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handle(signum, frame):
        restore()
        raise Interrupted(
            signum,
            f"Stopped by {signal.Signals(signum).name}: the sweep's workers stopped (a run in training saved a "
            "checkpoint); run the same command to resume.",
        )

    def restore():
        for s, handler in previous.items():
            signal.signal(s, handler)
        previous.clear()

    previous.update({s: signal.signal(s, handle) for s in STOP_SIGNALS})
    try:
        yield
    finally:
        restore()


def configure_jax(out: str | os.PathLike) -> None:
    """Share XLA compilations between the processes and invocations of a sweep (within one process, equal steps
    are already compiled once: segjax.parallel.DataParallel.wrap). Not with oneDNN convolutions: XLA cannot serialise
    a program with their calls (jaxlib 0.12.0.1: each such cache write fails with std::bad_alloc)."""
    if cli.xla_flag_set(cli.ONEDNN_FLAG):
        return
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
        # closing: an exception here (a signal while logging) stops the workers at once, not when collected
        with contextlib.closing(_execute_all(grouped, out, jobs, train_fn, train_seeds_fn, analyze_fn)) as finished:
            for name, status in finished:
                results[name] = status
                done += 1
                log(f"[sweep] {done}/{len(todo)} {name}: {status} ({time.time() - start:.0f} s elapsed)")
    return results


def _execute_all(grouped: Sequence[Sequence[Run]], out: pathlib.Path, jobs: int, train_fn, train_seeds_fn, analyze_fn):
    """Executes independent programs, in this process (jobs == 1) or in `jobs` spawned processes, yielding (name,
    status) of each run as its program finishes. With workers, SIGTERM or SIGINT (and any exception, or closing the
    generator early) stops them before `Interrupted` (or the exception) goes on: no worker outlives the sweep."""
    if jobs == 1 or len(grouped) <= 1:
        configure_jax(out)
        for program in grouped:
            yield from _execute_guarded(program, out, train_fn, train_seeds_fn, analyze_fn)
        return
    workers = _Workers(jobs, out, (train_fn, train_seeds_fn, analyze_fn))
    with _signals_raise_interrupted():
        try:
            yield from workers.execute(grouped)
        except BaseException:
            workers.stop()
            raise
        workers.close()
