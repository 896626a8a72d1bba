"""Ablation throughput: finished runs per hour of a fixed slice of the U-Net CPU ablation, and where the time went.

    python -m experiments.benchmarks.sweep_throughput --jobs=1    # as the studies are trained
    python -m experiments.benchmarks.sweep_throughput --jobs=2    # two worker processes
    python -m experiments.benchmarks.sweep_throughput --seeds-per-program=3   # each arm's seeds as one program (GPU)

The slice is the 'cpu' preset's recipe (experiments/studies/ablation.py) on two arms, U-Net's own decoder
(transposed_k2_default, the hypotheses' reference) and the parameter-free one (bilinear), x 3 seeds, trained by
the sweep runner (experiments.sweep, as `python -m experiments.upsampling_ablation` does) into a new temporary OUT,
so nothing is reused but what the sweep itself caches (its persistent compilation cache starts empty).
--seeds-per-program K trains up to K seeds of an arm as one vmapped program (`segjax.multiseed`), as
`--seeds-per-program` of the ablation does: for accelerators, slower on CPU.

The breakdown divides the workers' time (wall seconds x the workers used: jobs, or fewer programs) among:
- compile: JAX compilation (tracing, lowering, XLA or its persistent cache) of the training call and of the
  measurements, as the runner records it in each run's analysis.json (experiments.sweep.TIMING_KEYS);
- train steps: the intervals between metrics.jsonl's train records (steps x batch / images_per_second), less the
  training step's compilation, which falls in the first interval (estimated as that interval's excess over the
  median per-step time of the others);
- validation: the rest of the training call (validations, checkpoints, data set-up);
- measurements: experiments.analysis after training, less its compilation;
- idle: worker time outside any run (process start, imports, the runner's bookkeeping, waiting for a run).
With K > 1, a program's training phases are shared equally among the seeds it trained: the runner records its
training call and compilation divided among them (analysis.json's seeds_per_program), and the program's step
intervals, which every seed's train records carry (images/s of one seed), are divided the same way; the
measurements are each seed's own.
--steps shrinks the runs (validation and logging at most every that many steps, warm-up shorter) for a smoke check.

Each process uses XLA's default threads (every core it may use); there is no threads-per-process option, because on
jax 0.12 XLA_FLAGS' --xla_cpu_multi_thread_eigen=false and intra_op_parallelism_threads=1 still used both cores
(CPU seconds per wall second 1.91), and limiting a process to one core (its CPU affinity) changed the trained
numbers (a run's validation mIoU at step 100 differed), so it could not speed up a study without changing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import statistics
import tempfile
import time

import jax

from experiments import command
from experiments import sweep as sweep_lib
from experiments.benchmarks.arms import cpu_model
from experiments.layout import ANALYSIS_FILE, read_json
from experiments.studies import ablation
from segjax import cli
from segjax.config import literal
from segjax.files import read_metrics

ARMS = ("unet/transposed_k2_default", "unet/bilinear")
SEEDS = (0, 1, 2)
PHASES = ("compile", "train steps", "validation", "measurements", "idle")


def slice_runs(steps: int | None, seeds: int, overrides: dict) -> list[sweep_lib.Run]:
    """The fixed slice: the 'cpu' preset's ARMS x the first `seeds` of SEEDS, `steps` steps (None: the preset's)."""
    sweep = ablation.PRESETS["cpu"]()
    keys = {arm.key for arm in sweep.arms if arm.key in ARMS}
    sweep = command.narrowed(sweep, SEEDS[:seeds], keys)
    budget = dict(sweep.overrides)
    if steps is not None:
        budget.update(num_train_steps=steps, checkpoint_every_steps=steps)
        for key in ("eval_every_steps", "log_every_steps"):
            budget[key] = min(budget[key], steps)
        budget["schedule.warmup_steps"] = min(budget["schedule.warmup_steps"], steps - 1)
    budget.update(overrides)
    return sweep_lib.expand(dataclasses.replace(sweep, overrides=budget))


def run_breakdown(workdir: pathlib.Path, batch_size: int) -> dict[str, float]:
    """Seconds of one finished run in each phase but idle (see the module docstring); a run trained in a program
    of K seeds gets 1/K of the program's training phases, so the seeds of a program add up to its time."""
    analysis = read_json(workdir / ANALYSIS_FILE)
    train_call, train_compile = analysis["wall_seconds_train_call"], analysis["compile_seconds_train_call"]
    measure, measure_compile = analysis["wall_seconds_analysis"], analysis["compile_seconds_analysis"]
    seeds = analysis.get("seeds_per_program", 1)  # train_call and train_compile are already the program's / seeds
    intervals, last = [], 0
    for record in read_metrics(workdir):
        if record.get("split") == "train":
            steps = record["step"] - last
            intervals.append((steps, steps * batch_size / record["images_per_second"] / seeds))
            last = record["step"]
    logged = sum(seconds for _, seconds in intervals)
    if len(intervals) > 1:
        per_step = statistics.median(seconds / steps for steps, seconds in intervals[1:])
        in_steps = intervals[0][1] - intervals[0][0] * per_step
    else:
        in_steps = logged  # one interval: no step time to compare with; all of the call's compilation may be in it
    in_steps = min(max(in_steps, 0.0), train_compile, logged)
    return {
        "compile": train_compile + measure_compile,
        "train steps": logged - in_steps,
        "validation": max(train_call - logged - (train_compile - in_steps), 0.0),
        "measurements": max(measure - measure_compile, 0.0),
    }


def parse_set(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set {text!r}: give KEY=VALUE, e.g. data.embedded.num_validation=8")
    return key, literal(value)


def main(argv=None, *, train_fn=None, analyze_fn=None) -> int:
    """The command line; `train_fn` and `analyze_fn` replace the runner's (`experiments.sweep.run_sweep`)."""
    parser = cli.ArgumentParser(prog="experiments.benchmarks.sweep_throughput", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=1, help="parallel worker processes of the sweep (1: in this process)"
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help=f"the first N of the seeds {SEEDS}")
    parser.add_argument(
        "--seeds-per-program",
        type=int,
        default=1,
        help="train up to K seeds of an arm as one vmapped program (segjax.multiseed), for accelerators",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir of the embedded dataset")
    parser.add_argument("--set", action="append", type=parse_set, default=[], help="KEY=VALUE config override")
    parser.add_argument(
        "--keep", default=None, help="train into this new folder and keep it (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs} must be at least 1")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps={args.steps} must be at least 1 (or left out: the preset's step count)")
    if not 1 <= args.seeds <= len(SEEDS):
        parser.error(f"--seeds={args.seeds} must be between 1 and {len(SEEDS)}")
    if args.keep is not None and pathlib.Path(args.keep).exists():
        parser.error(f"--keep={args.keep} exists; name a new folder (a finished run would be skipped, not timed)")
    overrides = dict(args.set)
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    try:
        runs = slice_runs(args.steps, args.seeds, overrides)
        sweep_lib.check_seeds_per_program(runs, args.seeds_per_program)
    except ValueError as e:
        cli.fail(parser.prog, str(e))

    cli.use_fast_cpu_kernels()  # before the first JAX computation, as the study commands do; workers inherit it
    with tempfile.TemporaryDirectory(prefix="sweep_throughput-") as tmp:
        out = pathlib.Path(args.keep or tmp)
        programs = len(sweep_lib.programs(runs, out, args.seeds_per_program))  # a fresh OUT: every run from step 0
        start = time.time()
        results = sweep_lib.run_sweep(
            runs,
            out,
            jobs=args.jobs,
            seeds_per_program=args.seeds_per_program,
            train_fn=train_fn,
            analyze_fn=analyze_fn,
            log=lambda s: None,
        )
        wall = max(time.time() - start, 1e-9)
        finished = [r for r in runs if results[r.name] == "trained"]
        totals = dict.fromkeys(PHASES, 0.0)
        in_runs = 0.0
        for run in finished:
            for phase, seconds in run_breakdown(run.workdir(out), run.config.batch_size).items():
                totals[phase] += seconds
            analysis = read_json(run.workdir(out) / ANALYSIS_FILE)
            in_runs += analysis["wall_seconds_train_call"] + analysis["wall_seconds_analysis"]
    busy = min(args.jobs, programs)  # the runner starts a worker only for a program (jobs 1 or one program: in process)
    workers = wall * busy
    totals["idle"] = max(workers - in_runs, 0.0)

    steps = runs[0].config.num_train_steps
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    # after the sweep: JAX's backend, created in this process only now with --jobs > 1 (a GPU's memory is the workers')
    print(f"JAX devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(
        f"slice: {', '.join(ARMS)} x seeds {list(SEEDS[: args.seeds])}, {steps} steps; jobs={args.jobs}, "
        f"seeds per program={args.seeds_per_program} ({programs} programs), "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    failed = sorted(name for name, status in results.items() if status != "trained")
    print(f"finished runs: {len(finished)}/{len(runs)} in {wall:.1f} s: {len(finished) / wall * 3600:.1f} runs/hour")
    print(f"worker time ({busy} x {wall:.1f} s = {workers:.1f} s):")
    for phase in PHASES:
        print(f"  {phase:13} {totals[phase]:9.1f} s  {totals[phase] / workers:6.1%}")
    if failed:
        where = f"their error.txt in {args.keep}" if args.keep else "above, on stderr; --keep=DIR keeps error.txt"
        print(f"not finished ({where}): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
