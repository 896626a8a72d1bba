"""Training throughput of segjax's networks on whatever JAX runs on (CPU, one GPU, one TPU host): images/s and
model FLOP utilisation, for the device check (experiments/benchmarks/device_check.sh).

    python -m experiments.benchmarks.throughput --models=unet,segnet --size=256 --batch=32 --peak-tflops=989

Each step is segjax's training step (forward, loss, backward, AdamW update) of the 'paper' preset, wrapped as
training wraps it over every local device ('sharded'); FLOPs per step come from XLA's cost analysis of the compiled
step, so MFU = FLOPs per step x steps per second / (peak FLOP/s of all devices). --peak-tflops is the peak of one
device for the compute dtype (it is not guessed; without it MFU is not printed). Times are the median of --rounds
rounds of --steps steps after compilation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from segjax import cli
from segjax.config import load_config_file
from segjax.task import Task


def measure(name: str, size: int, batch: int, dtype: str, steps: int, rounds: int, data_dir: str | None) -> dict:
    config = load_config_file(f"configs/{name}.py:paper")
    config.data.name = "segjax_shapes/128"
    config.data.data_dir = data_dir
    config.data.crop_size = size
    config.batch_size = config.eval_batch_size = batch
    config.compute_dtype = dtype
    config.loss.class_weighting = "none"  # a throughput test needs no pass over the training split
    task = Task(config)
    task.layout.check_batch_size(batch)
    fn = task.train_step()
    state = task.layout.replicate(task.fresh_state())
    rng = np.random.default_rng(0)
    data = task.layout.shard_batch(
        {
            "image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, task.num_classes, size=(batch, size, size)).astype(np.int32),
        }
    )
    start = time.perf_counter()
    compiled = fn.lower(state, data).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float((cost or {}).get("flops", float("nan")))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = fn(state, data)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / steps)
    step_s = statistics.median(times)
    return {"model": name, "size": size, "batch": batch, "step_s": step_s, "flops": flops, "compile_s": compile_s}


def main(argv=None) -> None:
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="unet,segnet")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="global batch (divisible by the device count)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s of one device")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir for the embedded dataset")
    args = parser.parse_args(argv)
    devices = jax.devices()
    print(f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), {args.dtype}", flush=True)
    print(
        f"{'model':8} {'px':>5} {'batch':>5} {'img/s':>9} {'TFLOP/step':>11} {'TFLOP/s':>9} {'MFU':>6} {'compile s':>9}"
    )
    for name in args.models.split(","):
        r = measure(name, args.size, args.batch, args.dtype, args.steps, args.rounds, args.data_dir)
        achieved = r["flops"] / r["step_s"] / 1e12
        mfu = "-" if args.peak_tflops is None else f"{achieved / (args.peak_tflops * len(devices)):.1%}"
        print(
            f"{name:8} {args.size:>5} {args.batch:>5} {args.batch / r['step_s']:>9.1f} {r['flops'] / 1e12:>11.3f} "
            f"{achieved:>9.2f} {mfu:>6} {r['compile_s']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
