"""experiments.sweep and experiments.command: expansion, skip, resume, parallel arms, staged runs, the command line.

The runner's bookkeeping is tested with fake train/analyze functions (no compilation). (Resuming from the training's
own checkpoint is segjax.train's behaviour, tested there; the runner's part is to call it again on the same workdir
and to mark a run done only after its analysis, tested here with fakes.)
"""

import dataclasses
import json
import pathlib

import pytest

from experiments import command, definitions
from experiments import sweep as sweep_lib
from experiments import upsampling_ablation as ua

# ----------------------------------------------------------------------------------------------------------------
# Expansion and the command line


def test_only_filter_and_unknown_override_are_reported():
    sweep = ua.PRESETS["smoke_cpu"]()
    runs = sweep_lib.expand(sweep, only=["unet/pixel_shuffle"], seeds=[7])
    assert sorted(r.name for r in runs) == ["unet/pixel_shuffle_default/seed7", "unet/pixel_shuffle_icnr/seed7"]
    with pytest.raises(SystemExit) as exit_info:
        ua_main(["--preset=cpu", "--only=no_such_arm", "--dry-run"])
    assert exit_info.value.code == 2
    bad = definitions.Sweep("bad", (definitions.Arm("unet", "x", "unet", {"model.upsampel.method": "nearest"}),), (0,))
    with pytest.raises(ValueError, match="upsampel"):
        sweep_lib.expand(bad)
    with pytest.raises(ValueError, match="more than once"):
        definitions.Sweep("dup", (definitions.Arm("unet", "x", "unet"), definitions.Arm("unet", "x", "unet")), (0,))
    with pytest.raises(ValueError, match="Unknown config family"):
        sweep_lib.load_family_config("no_such_family")


def test_cli_dry_run_lists_runs(capsys):
    assert ua_main(["--preset=smoke_cpu", "--only=unet/nearest", "--dry-run", "--out=/nonexistent/x"]) == 0
    out = capsys.readouterr().out
    assert "unet/nearest/seed0" in out and "unet/nearest/seed2" in out and "3 runs" in out


def ua_main(argv):
    return command.main(ua.PRESETS, argv, prog="experiments.upsampling_ablation")


# ----------------------------------------------------------------------------------------------------------------
# Skip and resume with fake training (the runner's bookkeeping only)


def _fake_train(config, workdir):
    """Counts its calls; 'trains' by appending the steps it has not done yet (a resumable fake)."""
    workdir = pathlib.Path(workdir)
    log = workdir / "steps.txt"
    done = len(log.read_text().split()) if log.exists() else 0
    with open(log, "a") as f:
        for step in range(done + 1, config.num_train_steps + 1):
            f.write(f"{step}\n")
    with open(workdir / "calls.txt", "a") as f:
        f.write("x")


def _fake_analyze(config, workdir):
    flag = pathlib.Path(workdir).parent.parent.parent / "crash_once"
    if flag.exists():
        flag.unlink()
        raise RuntimeError("simulated crash after training, before the run was marked done")
    return {"params": 1, "val_miou": 0.1 * config.seed}


def _fake_sweep(steps=3):
    arms = (
        definitions.Arm("unet", "a", "default", {"model.upsample.method": "nearest"}),
        definitions.Arm("unet", "b", "default", {"model.upsample.method": "bilinear"}),
    )
    return definitions.Sweep("fake", arms, (0, 1), {"num_train_steps": steps})


def _quiet_sweep(runs, out, **kwargs):
    return sweep_lib.run_sweep(runs, out, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None, **kwargs)


def test_finished_runs_are_skipped_and_crashed_runs_resume(tmp_path):
    runs = sweep_lib.expand(_fake_sweep())
    (tmp_path / "crash_once").touch()
    first = _quiet_sweep(runs[:1], tmp_path)
    workdir = runs[0].workdir(tmp_path)
    assert first == {runs[0].name: "failed"}
    assert not (workdir / sweep_lib.DONE).exists() and "simulated crash" in (workdir / "error.txt").read_text()

    results = _quiet_sweep(runs, tmp_path)
    assert results[runs[0].name] == "resumed"
    assert [results[r.name] for r in runs[1:]] == ["trained"] * 3
    assert (workdir / "steps.txt").read_text().split() == ["1", "2", "3"]  # resumed, nothing trained twice
    assert not (workdir / "error.txt").exists()
    assert json.loads((workdir / sweep_lib.DONE).read_text())["config_hash"] == runs[0].config_hash

    again = _quiet_sweep(runs, tmp_path)
    assert set(again.values()) == {"skipped"}
    assert all((r.workdir(tmp_path) / "calls.txt").read_text() == ("xx" if r is runs[0] else "x") for r in runs)


def test_a_changed_config_is_refused_not_mixed(tmp_path):
    runs = sweep_lib.expand(_fake_sweep(steps=3))
    _quiet_sweep(runs[:1], tmp_path)
    changed = sweep_lib.expand(_fake_sweep(steps=5))
    with pytest.raises(ValueError, match="new --out"):
        _quiet_sweep(changed[:1], tmp_path)


def test_parallel_jobs_run_each_arm_once_in_spawned_processes(tmp_path):
    runs = sweep_lib.expand(_fake_sweep())[:2]
    results = _quiet_sweep(runs, tmp_path, jobs=2)
    assert results == {r.name: "trained" for r in runs}
    for run in runs:
        analysis = json.loads((run.workdir(tmp_path) / sweep_lib.ANALYSIS_FILE).read_text())
        assert analysis["val_miou"] == pytest.approx(0.1 * run.seed)


def test_a_run_that_starts_from_another_runs_after_it(tmp_path):
    arms = (
        definitions.Arm("fcn", "stage2", "default", {"num_train_steps": 2}, init_from="stage1"),
        definitions.Arm("fcn", "stage1", "default", {"num_train_steps": 1}),
    )
    runs = sweep_lib.expand(definitions.Sweep("staged", arms, (0, 1)))
    assert [[r.name for r in stage] for stage in sweep_lib.stages(runs)] == [
        ["fcn/stage1/seed0", "fcn/stage1/seed1"],
        ["fcn/stage2/seed0", "fcn/stage2/seed1"],
    ]
    assert runs[1].config.model.init_from == "fcn/stage1/seed1"  # hashed relative to OUT
    assert runs[1].config_in(tmp_path).model.init_from == str(tmp_path / "fcn/stage1/seed1")
    seen = []

    def train(config, workdir):
        source = config.model.init_from
        seen.append((pathlib.Path(workdir).name, source and (pathlib.Path(source) / sweep_lib.DONE).exists()))
        _fake_train(config, workdir)

    results = sweep_lib.run_sweep(runs, tmp_path, train_fn=train, analyze_fn=_fake_analyze, log=lambda s: None)
    assert set(results.values()) == {"trained"}
    assert seen == [("seed0", None), ("seed1", None), ("seed0", True), ("seed1", True)]
    with pytest.raises(ValueError, match="starts from fcn/stage0, which is not an arm"):
        definitions.Sweep("broken", (dataclasses.replace(arms[0], init_from="stage0"),), (0,))
