"""experiments/benchmarks/sweep_throughput.py: its breakdown of a run's time (and of a seed's in a program of
several) against hand-computed ones and against a tiny real training, the compilation clock, the command on fake
runs and on tiny real programs of 2 seeds, and its refusals (the machinery only: no time is asserted)."""

import json
import pathlib

import jax
import numpy as np
import pytest

from experiments import definitions
from experiments import sweep as sweep_lib
from experiments.benchmarks import sweep_throughput as bench
from segjax.files import write_json


def test_breakdown_of_a_run(tmp_path):
    write_json(
        tmp_path / "analysis.json",
        {
            "wall_seconds_train_call": 30.0,
            "compile_seconds_train_call": 8.0,
            "wall_seconds_analysis": 5.0,
            "compile_seconds_analysis": 2.0,
        },
    )
    records = [  # batch 4: 10 steps in 16 s (1 s per step after 6 s of the train step's compilation), then 2 x 10 s
        {"step": 10, "split": "train", "images_per_second": 40 / 16},
        {"step": 10, "split": "validation", "mean_iou": 0.5},
        {"step": 20, "split": "train", "images_per_second": 4.0},
        {"step": 30, "split": "train", "images_per_second": 4.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    got = bench.run_breakdown(tmp_path, batch_size=4)
    # steps: 36 s logged less 6 s compiling; validation: the call's rest less its other 2 s of compiling (here none)
    assert got == pytest.approx({"compile": 10.0, "train steps": 30.0, "validation": 0.0, "measurements": 3.0})
    write_json(
        tmp_path / "analysis.json",
        {**json.loads((tmp_path / "analysis.json").read_text()), "wall_seconds_train_call": 50.0},
    )
    assert bench.run_breakdown(tmp_path, batch_size=4)["validation"] == pytest.approx(50.0 - 36.0 - 2.0)


def test_breakdown_of_a_seed_of_a_program(tmp_path):
    """A seed of a 2-seed program: its analysis.json holds half the program's training call and compilation, its
    train records the program's intervals (images/s of one seed); it gets half of each phase of the program."""
    write_json(
        tmp_path / "analysis.json",
        {
            "wall_seconds_train_call": 25.0,  # the program's 50 s and 8 s, each halved by the runner
            "compile_seconds_train_call": 4.0,
            "wall_seconds_analysis": 5.0,  # the seed's own measurements
            "compile_seconds_analysis": 2.0,
            "seeds_per_program": 2,
        },
    )
    records = [  # the program: 10 steps of batch 4 per seed in 16 s (6 s of its 8 s compiling), then 2 x 10 s
        {"step": 10, "split": "train", "images_per_second": 40 / 16},
        {"step": 20, "split": "train", "images_per_second": 4.0},
        {"step": 30, "split": "train", "images_per_second": 4.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    got = bench.run_breakdown(tmp_path, batch_size=4)
    # the program: 30 s of steps, 50 - 36 - 2 = 12 s of validation; half of each, and the seed's own 3 s measuring
    assert got == pytest.approx({"compile": 4.0 + 2.0, "train steps": 15.0, "validation": 6.0, "measurements": 3.0})
    assert sum(got.values()) == pytest.approx(25.0 + 5.0)


def test_the_compile_clock_counts_compilation_only():
    fn = jax.jit(lambda x: x * 3.0 + 1.0)
    before = sweep_lib.compile_seconds()
    fn(np.ones(7, np.float32)).block_until_ready()
    compiled = sweep_lib.compile_seconds()
    assert compiled > before
    fn(np.ones(7, np.float32)).block_until_ready()  # compiled already: no more
    assert sweep_lib.compile_seconds() == compiled


def test_a_tiny_real_run_is_broken_down_whole(tmp_path, tiny_config):
    """A real (tiny) training's analysis.json and metrics.jsonl: the phases add up to the run's recorded time."""
    config = tiny_config()
    run = sweep_lib.Run(definitions.Arm("unet", "tiny", "unet"), 0, config)
    assert sweep_lib.execute_run(run, tmp_path, analyze_fn=lambda config, workdir: {"params": 1}) == "trained"
    analysis = json.loads((run.workdir(tmp_path) / sweep_lib.ANALYSIS_FILE).read_text())
    assert all(analysis[key] >= 0 for key in sweep_lib.TIMING_KEYS)
    assert analysis["compile_seconds_train_call"] <= analysis["wall_seconds_train_call"]
    got = bench.run_breakdown(run.workdir(tmp_path), config.batch_size)
    assert got["train steps"] > 0 and all(seconds >= 0 for seconds in got.values())
    whole = analysis["wall_seconds_train_call"] + analysis["wall_seconds_analysis"]
    assert sum(got.values()) == pytest.approx(whole)


def _fake_train(config, workdir):
    """A 'training' that logs its train records as segjax.train does, at so many images per second that the steps
    take no time: the call's time is then all 'validation' (the rest of the call)."""
    records = [{"step": s, "split": "train", "images_per_second": 1e12} for s in range(1, config.num_train_steps + 1)]
    (pathlib.Path(workdir) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_command_reports_runs_per_hour_and_the_breakdown(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--jobs=1", "--steps=3", f"--keep={out}"]
    assert bench.main(argv, train_fn=_fake_train, analyze_fn=lambda config, workdir: {"params": 1}) == 0
    text = capsys.readouterr().out
    assert "CPU: " in text and "finished runs: 6/6" in text and "runs/hour" in text and "3 steps" in text
    shares = [float(line.split()[-1].rstrip("%")) for line in text.splitlines() if line.startswith("  ")]
    assert len(shares) == len(bench.PHASES) and sum(shares) == pytest.approx(100.0, abs=0.5)
    assert sorted(p.parent.name + "/" + p.name for p in out.glob("unet/*/seed*")) == sorted(
        f"{arm.split('/')[1]}/seed{seed}" for arm in bench.ARMS for seed in bench.SEEDS
    )


def test_failed_runs_are_named_with_where_their_errors_are(tmp_path, capsys):
    def fail_seed_1(config, workdir):
        if config.seed == 1:
            raise RuntimeError("seed 1 fails")
        _fake_train(config, workdir)

    analyze = lambda config, workdir: {"params": 1}  # noqa: E731
    assert bench.main(["--steps=3", "--seeds=2"], train_fn=fail_seed_1, analyze_fn=analyze) == 1
    captured = capsys.readouterr()
    assert "finished runs: 2/4" in captured.out and "seed 1 fails" in captured.err
    assert "not finished (above, on stderr; --keep=DIR keeps error.txt)" in captured.out  # the temporary OUT is gone
    out = tmp_path / "out"
    assert bench.main(["--steps=3", "--seeds=2", f"--keep={out}"], train_fn=fail_seed_1, analyze_fn=analyze) == 1
    assert f"not finished (their error.txt in {out})" in capsys.readouterr().out
    assert "seed 1 fails" in (out / "unet/bilinear/seed1/error.txt").read_text()


def _printed(text: str) -> tuple[float, dict[str, float]]:
    """The worker seconds and the seconds of each phase that the command printed."""
    workers = float(next(line for line in text.splitlines() if line.startswith("worker time")).split()[-2])
    phases = {line[2:15].strip(): float(line[15:].split()[0]) for line in text.splitlines() if line.startswith("  ")}
    return workers, phases


def test_programs_of_two_seeds_are_trained_and_broken_down_whole(tmp_path, capsys, tiny_overrides):
    """The slice (2 arms x 2 seeds) trained for real, tiny, as 2 programs of 2 seeds: every run finishes, each is
    recorded as a seed of a 2-seed program, and the printed phases add up to the worker time."""
    out = tmp_path / "out"
    tiny = [f"--set={key}={value!r}" for key, value in tiny_overrides("unet").items()]
    argv = ["--seeds=2", "--seeds-per-program=2", f"--keep={out}", *tiny]
    assert bench.main(argv, analyze_fn=lambda config, workdir: {"params": 1}) == 0
    text = capsys.readouterr().out
    assert "finished runs: 4/4" in text and "seeds per program=2 (2 programs)" in text
    runs = sorted(out.glob("unet/*/seed*"))
    assert len(runs) == 4
    assert all(json.loads((run / "analysis.json").read_text())["seeds_per_program"] == 2 for run in runs)
    workers, phases = _printed(text)
    assert list(phases) == list(bench.PHASES) and phases["train steps"] > 0
    assert sum(phases.values()) == pytest.approx(workers, abs=0.31)  # 6 numbers, each printed to 0.1 s


def test_bad_options_are_refused(capsys, tmp_path):
    for argv, named in (
        (["--seeds=4"], "--seeds=4"),
        ([f"--keep={tmp_path}"], "exists"),
        (["--jobs=0"], "--jobs=0"),
        (["--seeds-per-program=0"], "--seeds-per-program=0"),
        (["--seeds-per-program=two"], "--seeds-per-program"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and named in err and len(err.strip().splitlines()) == 1, err
