"""Cost of the evaluation modes on one validation split, side by side, as ratios to 'whole'.

    python experiments/benchmarks/eval_modes.py                 # 128 px embedded split, quickstart model
    python experiments/benchmarks/eval_modes.py --rounds 5 --resolution 64

Times `segjax.evaluate.evaluate_split` (the code validation and segjax-eval run) of the quickstart U-Net, freshly
initialised, on the embedded dataset's validation split at `--resolution`, for eval.mode 'whole', 'slide' (windows
of half the image every two thirds of that), 'whole' with flip test-time augmentation, and 'resize' (images fitted
into half their size: fewer pixels, not comparable with papers). The first call (the split's size pass and
compilation) is printed apart; then the modes are timed in alternating rounds, so that load from other processes
hits all of them, and medians are reported with each mode's ratio to 'whole'.
"""

import argparse
import os
import statistics
import tempfile
import time

from segjax import cli
from segjax.config import load_config_file
from segjax.evaluate import evaluate_split
from segjax.task import Task

QUICKSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "quickstart.py")


def modes(resolution: int) -> dict[str, dict]:
    window = resolution // 2
    return {
        "whole": {"mode": "whole"},
        "slide": {"mode": "slide", "window": window, "stride": max(1, 2 * window // 3)},
        "whole+flip": {"mode": "whole", "flip": True},
        "resize": {"mode": "resize"},
    }


def main(argv=None):
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=128, choices=(64, 128))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "segjax_bench_tfds"))
    args = parser.parse_args(argv)
    runs = {}
    for name, settings in modes(args.resolution).items():
        config = load_config_file(QUICKSTART)
        config.data.name = f"segjax_shapes/{args.resolution}"
        config.data.data_dir = args.data_dir
        config.data.crop_size = config.data.eval_size = args.resolution // 2
        config.eval.update(settings)
        task = Task(config)
        state = task.layout.replicate(task.fresh_state())
        start = time.perf_counter()
        scores = evaluate_split(task, state, "validation")
        first = time.perf_counter() - start
        runs[name] = (task, state)
        print(f"{name:11s} first call {first:5.2f} s; labelled pixels scored {int(scores['confusion_matrix'].sum())}")
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (task, state) in runs.items():
            start = time.perf_counter()
            evaluate_split(task, state, "validation")
            times[name].append(time.perf_counter() - start)
    whole = statistics.median(times["whole"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:11s} median {median:6.3f} s over {args.rounds} rounds, {median / whole:5.2f}x whole")


if __name__ == "__main__":
    main()
