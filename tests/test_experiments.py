"""The experiment runner (expansion, skip, resume, parallel arms), the report, and the operator-level Odena study.

Runner bookkeeping is tested with fake train/analyze functions (no compilation); one tiny real sweep (two U-Net
arms, two steps, a 4-channel network on 32 px crops) covers the real training, the measurements and the report.
(Resuming from the training's own checkpoint is segjax.train's behaviour, tested there; the runner's part is to
call it again on the same workdir and to mark a run done only after its analysis, tested here with fakes.)
"""

import csv
import json
import pathlib

import numpy as np
import pytest

from experiments import sweep as sweep_lib
from experiments import upsampling_ablation as ua

# ----------------------------------------------------------------------------------------------------------------
# Expansion


def test_ablation_presets_expand_into_valid_configs():
    sweep = ua.ablation("cpu")
    runs = sweep_lib.expand(sweep)
    labels = {m: {r.arm.label for r in runs if r.arm.model == m} for m in ("unet", "segnet")}
    assert labels["segnet"] == {"bilinear", "max_unpool", "transposed_k4_bilinear"}  # SegNet Table 1 arms
    assert labels["unet"] == {
        label for label in ua.METHOD_ARMS if not (label.startswith("transposed") and label.endswith("bilinear"))
    }
    gpu_labels = {r.arm.key for r in sweep_lib.expand(ua.ablation("gpu"), seeds=[0])}
    assert gpu_labels == {
        f"{m}/{label}" for m in ("unet", "segnet") for label in ua.METHOD_ARMS if (m, label) not in ua.EXCLUDED
    }
    assert len(runs) == (len(labels["unet"]) + len(labels["segnet"])) * 3
    assert len({r.workdir("OUT") for r in runs}) == len(runs)
    assert len({r.config_hash for r in runs}) == len(runs)  # the seed is part of the config
    from segjax.models.config import resolve

    for run in runs:
        c = run.config
        assert c.seed == run.seed and c.model.name == run.arm.model
        settings = ua.METHOD_ARMS[run.arm.label]
        assert c.model.upsample.method == settings["method"]
        assert c.model.upsample.kernel_size == settings.get("kernel_size")
        assert c.model.upsample.init == settings.get("init")
        assert c.num_train_steps == ua.BUDGETS["cpu"]["overrides"]["num_train_steps"]
        kwargs = resolve(c.model).kwargs  # every arm is a valid model config
        assert kwargs["upsample_method"] == settings["method"]


def test_reproduction_presets_expand_into_valid_configs():
    from experiments import reproductions
    from segjax.models.config import resolve

    fcn = sweep_lib.expand(reproductions.fcn("cpu"))
    assert [r.config.model.name for r in fcn if r.seed == 0] == ["fcn32s", "fcn16s", "fcn8s"]
    for run in fcn:
        resolve(run.config.model)
    segnet = {r.arm.label for r in sweep_lib.expand(reproductions.segnet("gpu"))}
    assert segnet == {"bilinear", "max_unpool", "transposed_k4_bilinear"}
    odena = {r.arm.key for r in sweep_lib.expand(reproductions.odena("cpu"))}
    assert "unet/transposed_k3_default" in odena and "unet/nearest" not in odena
    assert set(reproductions.PRESETS) >= {"odena_cpu", "fcn_cpu", "segnet_cpu", "odena_gpu", "fcn_gpu", "segnet_gpu"}
    # Odena and SegNet share segnet/transposed_k4_bilinear: run (and reported) once.
    both = [r for s in reproductions.PRESETS["all_cpu"]() for r in sweep_lib.expand(s)]
    unique = sweep_lib.dedupe(both)
    assert len(unique) == len({r.name for r in both}) < len(both)


def test_only_filter_and_unknown_override_are_reported():
    sweep = ua.ablation("cpu")
    runs = sweep_lib.expand(sweep, only=["unet/pixel_shuffle"], seeds=[7])
    assert sorted(r.name for r in runs) == ["unet/pixel_shuffle_default/seed7", "unet/pixel_shuffle_icnr/seed7"]
    with pytest.raises(SystemExit) as exit_info:
        ua_main(["--preset=cpu", "--only=no_such_arm", "--dry-run"])
    assert exit_info.value.code == 2
    bad = sweep_lib.Sweep("bad", (sweep_lib.Arm("unet", "x", "unet", {"model.upsampel.method": "nearest"}),), (0,))
    with pytest.raises(ValueError, match="upsampel"):
        sweep_lib.expand(bad)
    with pytest.raises(ValueError, match="more than once"):
        sweep_lib.Sweep("dup", (sweep_lib.Arm("unet", "x", "unet"), sweep_lib.Arm("unet", "x", "unet")), (0,))
    with pytest.raises(ValueError, match="Unknown config family"):
        sweep_lib.load_family_config("no_such_family")


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
        sweep_lib.Arm("unet", "a", "default", {"model.upsample.method": "nearest"}),
        sweep_lib.Arm("unet", "b", "default", {"model.upsample.method": "bilinear"}),
    )
    return sweep_lib.Sweep("fake", arms, (0, 1), {"num_train_steps": steps})


def test_finished_runs_are_skipped_and_crashed_runs_resume(tmp_path):
    runs = sweep_lib.expand(_fake_sweep())
    (tmp_path / "crash_once").touch()
    first = sweep_lib.run_sweep(runs[:1], tmp_path, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None)
    workdir = runs[0].workdir(tmp_path)
    assert first == {runs[0].name: "failed"}
    assert not (workdir / sweep_lib.DONE).exists() and "simulated crash" in (workdir / "error.txt").read_text()

    results = sweep_lib.run_sweep(runs, tmp_path, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None)
    assert results[runs[0].name] == "resumed"
    assert [results[r.name] for r in runs[1:]] == ["trained"] * 3
    assert (workdir / "steps.txt").read_text().split() == ["1", "2", "3"]  # resumed, nothing trained twice
    assert not (workdir / "error.txt").exists()
    assert json.loads((workdir / sweep_lib.DONE).read_text())["config_hash"] == runs[0].config_hash

    again = sweep_lib.run_sweep(runs, tmp_path, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None)
    assert set(again.values()) == {"skipped"}
    assert all((r.workdir(tmp_path) / "calls.txt").read_text() == ("xx" if r is runs[0] else "x") for r in runs)


def test_a_changed_config_is_refused_not_mixed(tmp_path):
    runs = sweep_lib.expand(_fake_sweep(steps=3))
    sweep_lib.run_sweep(runs[:1], tmp_path, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None)
    changed = sweep_lib.expand(_fake_sweep(steps=5))
    with pytest.raises(ValueError, match="new --out"):
        sweep_lib.run_sweep(changed[:1], tmp_path, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None)


def test_parallel_jobs_run_each_arm_once_in_spawned_processes(tmp_path):
    runs = sweep_lib.expand(_fake_sweep())[:2]
    results = sweep_lib.run_sweep(
        runs, tmp_path, jobs=2, train_fn=_fake_train, analyze_fn=_fake_analyze, log=lambda s: None
    )
    assert results == {r.name: "trained" for r in runs}
    for run in runs:
        analysis = json.loads((run.workdir(tmp_path) / sweep_lib.ANALYSIS_FILE).read_text())
        assert analysis["val_miou"] == pytest.approx(0.1 * run.seed)


# ----------------------------------------------------------------------------------------------------------------
# A tiny real sweep: training, measurements, report


def tiny_overrides(data_dir):
    return {
        "data.name": "embedded",
        "data.data_dir": str(data_dir),
        "data.embedded.num_train": 16,
        "data.embedded.num_validation": 8,
        "data.embedded.num_test": 4,
        "data.crop_size": 32,
        "num_devices": 1,
        "batch_size": 4,
        "eval_batch_size": 4,
        "num_train_steps": 2,
        "log_every_steps": 1,
        "eval_every_steps": 2,
        "checkpoint_every_steps": 1,
        "progress_bar": False,
        "schedule.warmup_steps": 1,
        "model.base_width": 4,
        "model.depth": 1,
    }


@pytest.fixture(scope="module")
def tiny_sweep_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    arms = tuple(
        sweep_lib.Arm("unet", label, "unet", ua.upsample_overrides(ua.METHOD_ARMS[label]), dict(ua.METHOD_ARMS[label]))
        for label in ("transposed_k3_default", "resize_conv_nearest")
    )
    sweep = sweep_lib.Sweep("tiny", arms, (0,), tiny_overrides(out / "tfds"), "two arms, two steps")
    runs = sweep_lib.expand(sweep)
    results = sweep_lib.run_sweep(runs, out, log=lambda s: None)
    return out, sweep, runs, results


def test_tiny_sweep_measurements_and_report(tiny_sweep_out, tmp_path):
    # One test, not several sharing a fixture: pytest-xdist would train the fixture once per worker.
    from experiments import report

    out, sweep, runs, results = tiny_sweep_out
    assert results == {r.name: "trained" for r in runs}
    for run in runs:
        a = json.loads((run.workdir(out) / sweep_lib.ANALYSIS_FILE).read_text())
        assert a["params"] > 0 and a["gflops"] > 0 and a["steps"] == 2
        assert 0 <= a["val_miou"] <= 1 and 0 <= a["val_boundary_f1"] <= 1
        assert a["train_step_seconds"] > 0
        for stage in ("init", "trained"):
            assert 0 <= a["checkerboard"][stage]["constant"] < 1 and 0 <= a["checkerboard"][stage]["real"] < 1
        maps = np.asarray(a["phase_maps"]["init"])
        assert maps.shape == (4, 4) and np.isfinite(maps).all()
        samples = np.load(run.workdir(out) / "samples.npz")
        assert samples["prediction"].shape == samples["label"].shape == (4, 32, 32)
        assert samples["image"].dtype == np.uint8
        # Two steps of training changed the network, so the two measurements are of different networks.
        assert a["checkerboard"]["init"]["real"] != a["checkerboard"]["trained"]["real"]

    path = report.write_report(
        out,
        tmp_path,
        runs=[*runs, *sweep_lib.expand(sweep, seeds=[5])],
        sweeps=[sweep],
        command="pytest",
        operator_study=False,
    )
    text = path.read_text()
    for needle in (
        "transposed_k3_default",
        "resize_conv_nearest",
        "pytest",
        "sweep hash",
        "machine:",
        "not finished",
        "unet/resize_conv_nearest/seed5",
        "Whole networks",
    ):
        assert needle in text, needle
    with open(tmp_path / "results.csv") as f:
        arms = list(csv.DictReader(f))
    assert [a["label"] for a in arms] == ["transposed_k3_default", "resize_conv_nearest"]
    assert all(a["seeds"] == "1" and float(a["params"]) > 0 and 0 <= float(a["val_miou_mean"]) <= 1 for a in arms)
    for png in ("miou_per_arm.png", "checkerboard_phase_maps.png", "sample_predictions_unet.png"):
        assert (tmp_path / png).stat().st_size > 1000, png


def test_cli_dry_run_lists_runs(capsys):
    assert ua_main(["--preset=cpu", "--only=unet/nearest", "--dry-run", "--out=/nonexistent/x"]) == 0
    out = capsys.readouterr().out
    assert "unet/nearest/seed0" in out and "unet/nearest/seed2" in out and "3 runs" in out


def ua_main(argv):
    return sweep_lib.main(ua.PRESETS, argv, prog="experiments.upsampling_ablation")


# ----------------------------------------------------------------------------------------------------------------
# Odena et al. at the operator level, and the verdict rule


def test_operator_checkerboard_at_init_matches_odena():
    from experiments import analysis

    scores = analysis.operator_checkerboard_at_init(seeds=[0])
    for label in ("transposed_k2_default", "transposed_k3_default", "transposed_k4_default", "pixel_shuffle_default"):
        assert scores[label][0] > 0.05, label
    for label in (
        "nearest",
        "bilinear",
        "resize_conv_nearest",
        "resize_conv_bilinear",
        "transposed_k3_bilinear",
        "transposed_k4_bilinear",
        "pixel_shuffle_icnr",
    ):
        assert scores[label][0] < 1e-5, label
    assert scores["bed_of_nails"][0] == pytest.approx(np.sqrt(3) / 2, abs=1e-5)


def test_phase_map_matches_checkerboard_score_definition():
    from experiments import analysis
    from segjax.ops import checkerboard_score

    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 1.0, size=(2, 13, 11, 3)).astype(np.float32)
    y[:, ::2, ::2, 1] += 2.0  # channel 1 has a period-2 pattern
    m = analysis.phase_means(y, 2, 2)  # border 2 keeps the pattern on phase (0, 0)
    expected = np.mean(m.std(axis=(0, 1)) / np.sqrt((m**2).mean(axis=(0, 1))))
    assert float(checkerboard_score(y, 2, 2)) == pytest.approx(expected, rel=1e-5)
    pm = analysis.phase_map(y, 2, 2)
    assert pm[0, 0] > 0 and pm[1, 1] < 0 and pm.sum() == pytest.approx(0, abs=1e-9)


def test_ordering_verdicts():
    from experiments.reproductions import ordering

    def arm(mean, std, n=3):
        return {"val_miou_mean": mean, "val_miou_std": std, "seeds": n}

    assert ordering(arm(0.5, 0.01), arm(0.6, 0.01)).startswith("held clearly")
    assert ordering(arm(0.5, 0.1), arm(0.52, 0.1)).startswith("held within the seed spread")
    assert ordering(arm(0.6, 0.01), arm(0.5, 0.01)).startswith("did not hold")
    assert ordering(arm(float("nan"), 0.0), arm(0.5, 0.01)) == "not measured"
