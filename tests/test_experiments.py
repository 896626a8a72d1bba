"""The experiment runner (expansion, skip, resume, parallel arms), the report, and the operator-level Odena study.

Runner bookkeeping is tested with fake train/analyze functions (no compilation); one tiny real sweep (two U-Net
arms, two steps, a 4-channel network on 32 px crops) covers the real training, the measurements and the report.
(Resuming from the training's own checkpoint is segjax.train's behaviour, tested there; the runner's part is to
call it again on the same workdir and to mark a run done only after its analysis, tested here with fakes.)
"""

import csv
import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import analysis, command, definitions, report, reproduction_report, reproductions, stats
from experiments import sweep as sweep_lib
from experiments import upsampling_ablation as ua
from segjax import ops
from segjax.files import read_metrics
from segjax.models import ModelSpec, create_model
from segjax.ops import checkerboard_score
from segjax.task import Task

REPO = pathlib.Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------------------------
# Expansion


def test_ablation_presets_expand_into_valid_configs():
    sweep = ua.PRESETS["cpu"]()
    runs = sweep_lib.expand(sweep)
    labels = [a.label for a in sweep.arms]
    assert len(labels) == len(set(labels)) == 10
    assert {arm for h in sweep.hypotheses for arm in h.arms} == set(labels)  # every arm answers a hypothesis
    assert len(runs) == 10 * len(sweep.seeds) and len(sweep.seeds) >= 5
    assert len({r.workdir("OUT") for r in runs}) == len(runs)
    assert len({r.config_hash for r in runs}) == len(runs)  # the seed is part of the config
    for run in runs:
        c = run.config
        settings = definitions.UPSAMPLE_ARMS[run.arm.label.removeprefix("noskip_")]
        assert c.seed == run.seed and c.model.name == "unet"
        assert c.model.skips == (not run.arm.label.startswith("noskip_"))
        assert c.model.upsample.method == settings["method"]
        assert c.model.upsample.kernel_size == settings.get("kernel_size")
        assert c.model.upsample.init == settings.get("init")
        assert c.num_train_steps == definitions.CPU_STEPS and c.data.crop_size == 32 and c.data.eval_size == 64
        spec = ModelSpec.from_config(c.model)  # every arm is a valid model config
        assert spec.upsample == ops.UpsampleSpec(**settings)
    smoke = ua.PRESETS["smoke_cpu"]()
    assert smoke.smoke_test and not smoke.hypotheses
    assert {a.label for a in smoke.arms if a.model == "unet"} == set(definitions.UPSAMPLE_ARMS)
    assert {r.arm.key for r in sweep_lib.expand(ua.PRESETS["gpu"](), seeds=[0])} == {a.key for a in sweep.arms}
    with pytest.raises(ValueError, match="needs arms"):
        definitions.Sweep("bad", sweep.arms[:1], (0,), hypotheses=sweep.hypotheses)


def test_reproduction_presets_expand_into_valid_configs():
    fcn = sweep_lib.expand(reproductions.fcn())
    assert [r.config.model.name for r in fcn if r.seed == 0] == ["fcn32s", "fcn16s", "fcn8s"]
    for run in fcn:
        ModelSpec.from_config(run.config.model)
    assert {r.arm.label for r in sweep_lib.expand(reproductions.segnet())} == set(definitions.SEGNET_TABLE1)
    odena = {r.arm.key for r in sweep_lib.expand(reproductions.odena())}
    assert "unet/transposed_k3_default" in odena and "unet/nearest" not in odena
    # Odena and SegNet share segnet/transposed_k4_bilinear, and the smoke ablation holds them all: run once.
    both = [r for s in [*reproductions.PRESETS["all_cpu"](), ua.PRESETS["smoke_cpu"]()] for r in sweep_lib.expand(s)]
    unique = sweep_lib.dedupe(both)
    assert len(unique) == len({r.name for r in both}) < len(both)


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


def test_fcn_staged_preset_chains_its_stages():
    runs = {r.name: r for r in sweep_lib.expand(reproductions.PRESETS["fcn_staged_128_cpu"]())}
    assert runs["fcn/fcn8s_staged/seed3"].config.model.init_from == "fcn/fcn16s_staged/seed3"
    assert runs["fcn/fcn16s_staged/seed3"].config.model.init_from == "fcn/fcn32s_fixed/seed3"
    assert (
        runs["fcn/fcn8s_at_once/seed3"].config.num_train_steps
        == 3 * runs["fcn/fcn8s_staged/seed3"].config.num_train_steps
    )
    assert all(r.config.optimizer.frozen == "upscore" for r in runs.values())


# ----------------------------------------------------------------------------------------------------------------
# A tiny real sweep: training, measurements, statistics, report


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
        "num_train_steps": 3,
        "log_every_steps": 1,
        "eval_every_steps": 1,
        "checkpoint_every_steps": 3,
        "progress_bar": False,
        "schedule.warmup_steps": 1,
        "model.base_width": 4,
        "model.depth": 1,
    }


@pytest.fixture(scope="module")
def tiny_sweep_out(tmp_path_factory):
    """Two arms, two seeds, three steps, one hypothesis, through the command line to a report."""
    out = tmp_path_factory.mktemp("sweep")
    arms = tuple(definitions.operator_arm("unet", label) for label in ("transposed_k3_default", "resize_conv_nearest"))
    hypothesis = definitions.Hypothesis("H3", "tiny", "unet", "resize_conv_nearest", "transposed_k3_default")
    overrides = {**tiny_overrides(out / "tfds"), "checkpoint_every_steps": 1, "keep_checkpoints": 3}  # a trajectory
    sweep = definitions.Sweep("tiny", arms, (0, 1), overrides, "two arms", (hypothesis,), reproduction=True)
    code = command.main({"tiny": lambda: sweep}, ["--preset=tiny", f"--out={out}", f"--report-dir={out / 'report'}"])
    return out, sweep, code


def test_tiny_sweep_measurements_and_report(tiny_sweep_out):
    # One test, not several sharing a fixture: pytest-xdist would train the fixture once per worker.
    out, sweep, code = tiny_sweep_out
    assert code == 0
    runs = sweep_lib.expand(sweep)
    for run in runs:
        a = json.loads((run.workdir(out) / sweep_lib.ANALYSIS_FILE).read_text())
        assert a["params"] > 0 and a["gflops"] > 0 and a["steps"] == 3
        for stage in ("init", "trained"):
            assert 0 <= a["checkerboard"][stage]["constant"] < 1 and 0 <= a["checkerboard"][stage]["real"] < 1
        samples = np.load(run.workdir(out) / "samples.npz")
        assert samples["prediction"].shape == samples["label"].shape == (4, 32, 32)
        split = a["split"]  # boundaries, thin structures and artifacts over the validation split
        assert set(split["boundary_f1"]) == {"0", "1", "2"} and set(split["trimap_miou"]) == {"1", "2", "4", "8"}
        assert split["boundary_f1"]["0"] <= split["boundary_f1"]["1"] <= split["boundary_f1"]["2"] <= 1
        assert all(0 <= v <= 1 for v in split["shift_consistency"].values()) and len(split["shift_consistency"]) == 7
        assert np.asarray(split["phase_error"]["rates"]).shape == (2, 2)  # depth 1: stride 2
        cb = split["checkerboard"]
        assert len(cb["upsamplers"]) == 1 and all(0 <= v <= 1 for v in (*cb["upsamplers"], cb["logits_2"]))
        assert cb["floor_2"] < 0.1
        # depth 1: the encoder's two levels (block2 is the bottom), each level's gradient measured
        assert set(cb["encoder_gradient_magnitude_2"]) == {"encoder/block1", "encoder/block2"}
        assert all(0 <= v <= 1 for v in cb["encoder_gradient_2"].values())
        trajectory = a["checkerboard_trajectory"]  # initialisation and the three kept checkpoints
        assert trajectory["steps"] == [0, 1, 2, 3] and len(trajectory["upsamplers"]) == len(trajectory["logits"]) == 4
    declared = json.loads((out / "sweep.json").read_text())
    assert declared[0]["hypotheses"][0]["statement"] == "resize_conv_nearest > transposed_k3_default"

    report_dir = out / "report"
    text = (report_dir / "REPORT.md").read_text()
    for needle in (
        "Claims that survive",
        "H3",
        "Verdict rules",
        "Holm",
        "minimum detectable difference",
        "machine:",
        "Boundaries, thin structures and artifacts",
        "Checkerboard during training",  # reproduction sweeps report the trajectory
        "| step 0 | step 1 | step 2 | step 3 |",
    ):
        assert needle in text, needle
    with open(report_dir / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(0 <= float(r["final_miou"]) <= 1 for r in rows)
    # The endpoints are what metrics.jsonl says: the final mIoU is the mean of the last 3 validations.
    records = [r for r in read_metrics(runs[0].workdir(out)) if r["split"] == "validation"]
    assert float(rows[0]["final_miou"]) == pytest.approx(np.mean([r["mean_iou"] for r in records[-3:]]))
    assert float(rows[0]["auc_miou"]) == pytest.approx(np.mean([r["mean_iou"] for r in records]))
    with open(report_dir / "hypotheses.csv") as f:
        (h3,) = list(csv.DictReader(f))
    by_seed = {(r["label"], int(r["seed"])): float(r["final_miou"]) for r in rows}
    differences = [by_seed["resize_conv_nearest", s] - by_seed["transposed_k3_default", s] for s in (0, 1)]
    assert float(h3["mean_difference"]) == pytest.approx(np.mean(differences))
    assert h3["verdict"] in stats.VERDICTS
    for png in ("final_miou.png", "hypotheses.png", "learning_curves.png", "sample_predictions_unet.png"):
        assert (report_dir / png).stat().st_size > 1000, png

    _check_ensemble(runs[0], runs[2], out)
    arms = [
        {
            "model": "edeconvnet",
            "label": label,
            "params": 1,
            "_members": [{"seed": r.seed, "_workdir": r.workdir(out)} for r in pair],
        }
        for label, pair in (("fcn8s_fixed", runs[:2]), ("deconvnet", runs[2:]))
    ]
    section = reproduction_report.deconvnet_section(arms)
    assert "| EDeconvNet | both |" in section and "Holm over 4" in section and "IoU speck" in section
    assert section.count("n = 2)") == 4

    # A report for experiments/results/ is refused from uncommitted code unless asked for.
    results = report.RESULTS_DIR / "test_dirty_check"
    if report.git_revision()[1]:
        with pytest.raises(ValueError, match="uncommitted changes"):
            report.write_report(out, results)
    assert not results.exists()


def _check_ensemble(first, second, out):
    """The ensemble of two finished runs scores the average of their softmax probabilities, each member its own."""
    members = {"a": (first.config, first.workdir(out)), "b": (second.config, second.workdir(out))}
    measured = analysis.ensemble_measurements(members)
    config = first.config
    info = Task(config).info
    images, labels = map(np.concatenate, zip(*analysis.validation_batches(config, info), strict=True))
    probabilities = []
    for run in (first, second):
        task = Task(run.config, str(run.workdir(out)))
        _, variables, _ = analysis.initial_and_trained_variables(task)
        model = create_model(run.config.model, info.num_classes)
        probabilities.append(np.asarray(jax.nn.softmax(model.apply(variables, images), -1)))
    for name, p in (("a", probabilities[0]), ("b", probabilities[1]), ("ensemble", np.mean(probabilities, 0))):
        predictions, keep = p.argmax(-1), labels != info.ignore_index
        confusion = np.zeros((info.num_classes,) * 2, np.int64)
        np.add.at(confusion, (labels[keep], predictions[keep]), 1)
        union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
        iou = np.diag(confusion)[union > 0] / union[union > 0]
        assert measured[name]["mean_iou"] == pytest.approx(iou.mean(), abs=1e-6), name
        assert measured[name]["pixel_accuracy"] == pytest.approx(np.diag(confusion).sum() / keep.sum(), abs=1e-6)
        assert set(measured[name]["iou"]) == set(info.class_names) and set(measured[name]["boundary_f1"]) == {
            "0",
            "1",
            "2",
        }


def test_importing_the_report_imports_no_preset():
    code = (
        "import sys, experiments.report; "
        "print(sorted(m for m in sys.modules if m in ('experiments.upsampling_ablation', "
        "'experiments.reproductions', 'experiments.command')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_cli_dry_run_lists_runs(capsys):
    assert ua_main(["--preset=smoke_cpu", "--only=unet/nearest", "--dry-run", "--out=/nonexistent/x"]) == 0
    out = capsys.readouterr().out
    assert "unet/nearest/seed0" in out and "unet/nearest/seed2" in out and "3 runs" in out


def ua_main(argv):
    return command.main(ua.PRESETS, argv, prog="experiments.upsampling_ablation")


# ----------------------------------------------------------------------------------------------------------------
# Odena et al. at the operator level, and the verdict rule


def test_operator_checkerboard_at_init_matches_odena():
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
    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 1.0, size=(2, 13, 11, 3)).astype(np.float32)
    y[:, ::2, ::2, 1] += 2.0  # channel 1 has a period-2 pattern
    m = analysis.phase_means(y, 2, 2)  # border 2 keeps the pattern on phase (0, 0)
    expected = np.mean(m.std(axis=(0, 1)) / np.sqrt((m**2).mean(axis=(0, 1))))
    assert float(checkerboard_score(y, 2, 2, detrend=False)) == pytest.approx(expected, rel=1e-5)
    pm = analysis.phase_map(y, 2, 2)
    assert pm[0, 0] > 0 and pm[1, 1] < 0 and pm.sum() == pytest.approx(0, abs=1e-9)


def test_ordering_verdicts_are_paired_tests():
    def arm(values):
        return {"_members": [{"seed": s, "final_miou": v} for s, v in enumerate(values)]}

    low = [0.50, 0.55, 0.45, 0.52, 0.48]
    assert reproduction_report.ordering(arm(low), arm([v + 0.1 for v in low])).startswith("held")
    assert reproduction_report.ordering(arm([v + 0.1 for v in low]), arm(low)).startswith("did not hold")
    noisy = [0.5 + d for d in (0.2, -0.2, 0.1, -0.15, 0.05)]
    assert reproduction_report.ordering(arm(low), arm(noisy)).startswith("inconclusive")
    assert reproduction_report.ordering(arm([0.5]), arm([0.6])).startswith("not measured")


def test_endpoints_and_plateau_from_a_constructed_curve():
    records = [{"step": s, "split": "train", "loss": 1.0} for s in (100, 200)]
    records += [
        {"step": s, "split": "validation", "mean_iou": v, "iou/wire": v / 2}
        for s, v in zip(range(100, 800, 100), (0.2, 0.5, 0.7, 0.8, 0.82, 0.84, 0.86), strict=True)
    ]
    records.append({"step": 700, "split": "validation", "mean_iou": 0.90, "iou/wire": None})  # resumed: logged again
    e = report.endpoints(records)
    assert e["curve_steps"] == [100, 200, 300, 400, 500, 600, 700] and e["endpoint_miou"] == 0.90
    assert e["final_miou"] == pytest.approx((0.82 + 0.84 + 0.90) / 3)
    assert e["auc_miou"] == pytest.approx(np.mean([0.2, 0.5, 0.7, 0.8, 0.82, 0.84, 0.90]))
    assert e["final_iou_wire"] == pytest.approx((0.41 + 0.42) / 2)  # a null is skipped, not a zero
    plateau, step = report.plateau_step(e["curve_steps"], e["curve_miou"])
    assert plateau == pytest.approx(np.mean([0.7, 0.8, 0.82, 0.84, 0.90])) and step == 500  # 0.80 < 0.812 - 0.01


def test_odena_probes_and_the_2x2_section():
    """The overlap probe is exact arithmetic; the gradient probe finds the strided convolution's checkerboard against
    the stride-1 control; the 2x2 section tests the checkerboard endpoints with paired verdicts."""
    probe = analysis.constant_kernel_probe()
    assert probe[2]["overlaps"] == [1] and probe[4]["overlaps"] == [4] and probe[3]["overlaps"] == [1, 2, 4]
    assert probe[3]["score"] == pytest.approx(0.436, abs=1e-3) and probe[5]["score"] == pytest.approx(0.275, abs=1e-3)
    assert probe[3]["score_detrended"] == pytest.approx(1.0) and probe[2]["score"] == 0.0
    assert "**Verdict: held**" in reproduction_report.overlap_probe_section()
    text = reproduction_report.gradient_probe_section(seeds=range(3))
    assert "| conv k3 stride 2 |" in text and text.count("| held |") >= 1

    def arm(label, cb):
        members = [{"seed": s, "cb_upsamplers": v, "final_miou": 0.8} for s, v in enumerate(cb)]
        summary = {
            f"{k}_{s}": float("nan")
            for k in ("final_miou", "cb_upsamplers", "cb_logits", "cb_gradient", "cb_floor")
            for s in ("mean", "std")
        }
        return {"model": "unet", "label": label, "_members": members, **summary}

    noise = np.array([0.01, -0.01, 0.02, 0.0, -0.02])
    arms = [
        arm("transposed_k4_default", 0.55 + noise),
        arm("transposed_k4_bilinear", 0.45 + noise[::-1]),
        arm("resize_conv_nearest", 0.05 + noise / 10),
        arm("resize_conv_nearest_delta", 0.05 - noise / 10),
    ]
    section = reproduction_report.odena_2x2_section(arms)
    assert "function class (Odena's claim)" in section and section.count("**held**") >= 2
    assert reproduction_report.odena_2x2_section(arms[:3]) is None


def test_segnet_table1_section_tests_boundary_f1_and_balancing_and_measures_memory():
    keys = ("final_miou", "final_boundary_f1", "final_pixel_accuracy", "final_class_accuracy", "bf_2")
    noise = np.array([0.01, -0.01, 0.02, 0.0, -0.02])

    def arm(label, bf, accuracy):
        members = [
            {"seed": s, "final_boundary_f1": b, "final_pixel_accuracy": g, "final_class_accuracy": c}
            for s, (b, g, c) in enumerate(zip(bf + noise, accuracy[0] + noise / 2, accuracy[1] - noise, strict=True))
        ]
        summary = {f"{k}_{s}": 0.5 for k in keys for s in ("mean", "std")}
        return {"model": "table1", "label": label, "params": 1000, "_members": members, **summary}

    arms = [
        arm("segnet_basic", 0.40, (0.80, 0.70)),
        arm("fcn_basic", 0.38, (0.80, 0.70)),
        arm("fcn_basic_noaddition", 0.20, (0.80, 0.70)),
        arm("bilinear_basic", 0.20, (0.80, 0.70)),
        arm("segnet_basic_natural", 0.40, (0.90, 0.60)),
    ]
    section = reproduction_report.segnet_table1_section(arms)
    assert "| SegNet-Basic, natural frequency | 1,000 |" in section
    assert "segnet_basic > bilinear_basic on final_boundary_f1: **held**" in section
    assert "segnet_basic > segnet_basic_natural on final_class_accuracy: **held**" in section
    assert "segnet_basic_natural > segnet_basic on final_pixel_accuracy: **held**" in section
    memory = {r["model"]: r for r in reproduction_report.decoder_memory_rows()}
    assert memory["fcn_basic"]["paper"] / memory["segnet_basic"]["paper"] == pytest.approx(11, rel=0.01)
    assert memory["bilinear_basic"]["paper"] == 0 and memory["segnet_basic"]["params"] == 1_416_075
    assert all(r["temp_mib"] > 0 for r in memory.values())
    assert reproduction_report.segnet_table1_section(arms[1:]) is None


def test_share_oracle_of_a_stride():
    """Columns of stride cells are recovered exactly (bilinear blending between two cells flips at their edge; where
    four cells meet, two of one class can outweigh the pixel's own, so 2-D layouts are not exact); a 1-px line is
    lost at stride 8 and kept at stride 1; ignored pixels count nowhere; odd sizes are padded with ignore."""
    rng = np.random.default_rng(0)
    cells = np.repeat(rng.integers(0, 3, size=(2, 1, 5)), 3, axis=1)  # constant along rows of cells
    labels = np.kron(cells, np.ones((8, 8), np.int64))  # (2, 24, 40), constant on 8x8 cells
    labels[0, :2, :3] = 255
    confusion = analysis.oracle_confusion(labels, 8, 3, 255)
    assert confusion.sum() == (labels != 255).sum() and confusion.trace() == confusion.sum()
    line = np.zeros((1, 17, 23), np.int64)
    line[0, 9, :] = 1  # thinner than a cell: its share never wins the argmax
    assert analysis.oracle_confusion(line, 8, 2, 255)[1, 1] == 0
    assert np.array_equal(np.diag(analysis.oracle_confusion(line, 1, 2, 255)), [17 * 23 - 23, 23])


def test_fcn_128_preset_fixes_the_upsampling_of_its_main_arms():
    runs = sweep_lib.expand(reproductions.PRESETS["fcn_128_cpu"]())
    for run in runs:
        frozen = run.config.optimizer.frozen
        assert frozen == ("upscore" if run.arm.label.endswith("_fixed") else None)
        assert run.config.data.crop_size == 128 and run.config.model.name == run.arm.label.split("_")[0]
        ModelSpec.from_config(run.config.model)


def test_equivalence_claims_do_not_break_the_markdown_table():
    assert report._cell("|bilinear - transposed_k2_default| < 0.01") == "\\|bilinear - transposed_k2_default\\| < 0.01"
