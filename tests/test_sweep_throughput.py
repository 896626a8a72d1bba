"""experiments/benchmarks/sweep_throughput.py: its breakdown of a run's time against a hand-computed one, and one
tiny slice end to end (the machinery only: no time is asserted)."""

import json

import pytest

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


def test_a_tiny_slice_runs_end_to_end(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    tiny = ["data.embedded.num_train=16", "data.embedded.num_validation=6", "data.embedded.num_test=4"]
    tiny += ["data.num_workers=1", "model.base_width=4", "eval_batch_size=4", "batch_size=4"]
    argv = ["--jobs=1", "--steps=2", "--seeds=1", f"--data-dir={data_dir}", f"--keep={out}"]
    assert bench.main(argv + [f"--set={s}" for s in tiny]) == 0
    text = capsys.readouterr().out
    assert "CPU: " in text and "finished runs: 2/2" in text and "runs/hour" in text
    shares = [float(line.split()[-1].rstrip("%")) for line in text.splitlines() if line.startswith("  ")]
    assert len(shares) == len(bench.PHASES) and sum(shares) == pytest.approx(100.0, abs=0.5)
    for run in bench.slice_runs(2, 1, {}):
        analysis = json.loads((run.workdir(out) / sweep_lib.ANALYSIS_FILE).read_text())
        assert all(analysis[key] >= 0 for key in sweep_lib.TIMING_KEYS)
        assert analysis["compile_seconds_train_call"] <= analysis["wall_seconds_train_call"]


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--seeds=4"])
    assert exit_info.value.code == 2 and "--seeds=4" in capsys.readouterr().err
