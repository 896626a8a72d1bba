"""Input pipeline throughput at the quickstart settings, next to the training step that consumes it.

    python experiments/benchmarks/data.py                       # 64 px, batch 16, small U-Net step
    python experiments/benchmarks/data.py --batches 100 --steps 10 --workers 0,1,2 --processes 0,1

Prints batches/s of `segjax.data.make_loader` (training mode: decode, random scale, crop, flip, normalise) for
each reader-thread / worker-process setting, the training step's steps/s (segjax.steps.TrainStep of the
quickstart model: small U-Net, batch norm, AdamW, wrapped as training wraps it, one device), and the ratio
pipeline / step.
The pipeline should be >= 10x faster than the step consumes it. Pipeline and step are timed in alternating
rounds so that load from other processes hits both; medians are reported.
"""

import argparse
import os
import statistics
import tempfile
import time

import jax

from segjax import cli
from segjax import data as data_lib
from segjax.config import load_config_file
from segjax.task import Task

QUICKSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "quickstart.py")


def time_pipeline(config, batch_size, num_batches):
    loader = data_lib.make_loader(
        config, global_batch_size=batch_size, train=True, seed=0, process_index=0, process_count=1
    )
    next(loader)  # start-up (threads, first reads) is not throughput
    start = time.perf_counter()
    for _ in range(num_batches):
        next(loader)
    return num_batches / (time.perf_counter() - start)


def make_step(data_config, batch):
    """The quickstart config's training step on one device, wrapped as training wraps it; (step, state, the
    batch on the device, the config)."""
    config = load_config_file(QUICKSTART)
    config.data = data_config
    config.batch_size, config.num_devices = len(batch["image"]), 1
    task = Task(config)
    state = task.layout.replicate(task.fresh_state())
    device_batch = task.layout.shard_batch({"image": batch["image"], "label": batch["label"]})
    return task.train_step(), state, device_batch, config


def time_step(step, state, batch, num_steps):
    start = time.perf_counter()
    for _ in range(num_steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return state, num_steps / (time.perf_counter() - start)


def main():
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=60, help="batches per pipeline timing")
    parser.add_argument("--steps", type=int, default=5, help="training steps per step timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="0,2", help="reader threads to compare")
    parser.add_argument("--processes", default="0", help="worker processes to compare (grain mp_prefetch)")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir (default: a temporary folder)")
    args = parser.parse_args()

    base = data_lib.default_data_config()
    base.data_dir = args.data_dir or tempfile.mkdtemp(prefix="segjax_bench_tfds_")
    start = time.perf_counter()
    info = data_lib.get_dataset_info(base)  # prepares segjax_shapes/64 if missing
    print(f"dataset {info.name}: {info.num_examples} (ready in {time.perf_counter() - start:.1f} s)")

    settings = []
    for p in [int(x) for x in args.processes.split(",")]:
        for w in [int(x) for x in args.workers.split(",")]:
            c = base.copy_and_resolve_references()
            c.num_workers, c.worker_processes = w, p
            settings.append((f"threads={w} processes={p}", c))

    batch = next(
        data_lib.make_loader(
            base, global_batch_size=args.batch_size, train=True, seed=0, process_index=0, process_count=1
        )
    )
    step, state, device_batch, qs = make_step(base, batch)
    start = time.perf_counter()
    state, _ = time_step(step, state, device_batch, 1)
    print(
        f"training step: {qs.model.name} preset={qs.model.preset} norm={qs.model.norm}, batch "
        f"{args.batch_size}, compile + first step {time.perf_counter() - start:.1f} s"
    )

    pipeline_rates = {name: [] for name, _ in settings}
    step_rates = []
    for _ in range(args.rounds):
        for name, c in settings:
            pipeline_rates[name].append(time_pipeline(c, args.batch_size, args.batches))
        state, rate = time_step(step, state, device_batch, args.steps)
        step_rates.append(rate)

    print(
        f"\nbatch {args.batch_size}, 64 px, {args.rounds} rounds, medians "
        f"(load from other processes applies to all; compare ratios)"
    )
    step_rate = statistics.median(step_rates)
    print(f"  training step                      {step_rate:8.2f} steps/s")
    for name, rates in pipeline_rates.items():
        rate = statistics.median(rates)
        print(f"  pipeline {name:26s} {rate:8.2f} batches/s  {rate / step_rate:6.1f}x the step")
    print(f"  host: {os.cpu_count()} CPU cores, {jax.device_count()} JAX device(s)")


if __name__ == "__main__":
    main()
