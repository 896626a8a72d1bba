"""The training step of every arm of an ablation preset, timed side by side in one process: the cost column of
the report, measured outside training.

    python -m experiments.benchmarks.arms --preset=cpu --out=experiments/runs/ablation_cpu
    python -m experiments.benchmarks.arms --preset=cpu --rounds=3 --steps=3   # a quick look, prints only

Each arm's step (forward, loss, backward, optimizer update; one device, the preset's training batch shape) is
compiled first; then every round times `steps` consecutive steps of every arm, the arms in a rotated order so
that a slow spell of a shared machine hits them all. Step ms = the median over rounds; ratio = the median over
rounds of each round's arm / reference-arm time. With --out the table goes to OUT/costs.csv, which the report
reads. The CPU model is printed and written with every row: a ratio from one kind of CPU does not carry to another.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from experiments import upsampling_ablation
from experiments.sweep import expand
from segjax import cli
from segjax.task import Task


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "?")


def compiled_step(config):
    """(wrapped training step, a fresh state, a batch of the training shape) for one run's config, on one device
    and wrapped as training wraps it (config.parallelism), so the timed program is the one the runs trained."""
    config.num_devices = 1
    task = Task(config)
    fn = task.train_step(task.loss_with_class_weights())
    state = task.layout.replicate(task.fresh_state())
    rng = np.random.default_rng(0)
    shape = (config.batch_size, *task.info.crop_size)
    batch = task.layout.shard_batch(
        {
            "image": rng.normal(size=(*shape, 3)).astype(np.float32),
            "label": rng.integers(0, task.num_classes, size=shape).astype(np.int32),
        }
    )
    state, metrics = fn(state, batch)  # compile and run once
    jax.block_until_ready(metrics)
    return fn, state, batch


def main(argv=None) -> None:
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(upsampling_ablation.PRESETS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="consecutive steps timed per arm and round")
    parser.add_argument("--out", default=None, help="the sweep's OUT: write OUT/costs.csv for its report")
    args = parser.parse_args(argv)
    sweep = upsampling_ablation.PRESETS[args.preset]()
    runs = expand(sweep, seeds=[sweep.seeds[0]])
    reference = sweep.reference or runs[0].arm.label
    cpu = cpu_model()
    print(f"{sweep.name}: {len(runs)} arms, {args.rounds} rounds x {args.steps} steps; CPU: {cpu}", flush=True)
    steps = {}
    for run in runs:
        start = time.perf_counter()
        steps[run.arm.key] = list(compiled_step(run.config))
        print(f"  compiled {run.arm.key} in {time.perf_counter() - start:.1f} s", flush=True)
    times = {key: [] for key in steps}
    keys = list(steps)
    for r in range(args.rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for key in order:
            fn, state, batch = steps[key]
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = fn(state, batch)
            jax.block_until_ready(metrics)
            times[key].append((time.perf_counter() - start) / args.steps)
            steps[key][1] = state
    ref_key = f"{runs[0].arm.model}/{reference}"
    rows = []
    print(f"{'arm':40} {'step ms':>8} {'x ref':>6}")
    for run in runs:
        key = run.arm.key
        ratio = statistics.median(t / ref for t, ref in zip(times[key], times[ref_key], strict=True))
        ms = 1000 * statistics.median(times[key])
        rows.append({"model": run.arm.model, "label": run.arm.label, "step_ms": f"{ms:.2f}", "ratio": f"{ratio:.3f}"})
        print(f"{key:40} {ms:8.1f} {ratio:6.2f}")
    if args.out:
        path = f"{args.out}/costs.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["model", "label", "step_ms", "ratio", "reference", "cpu"])
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "reference": reference, "cpu": cpu})
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
