"""experiments.report, experiments.results and experiments.tables, and one tiny real sweep end to end.

The tiny sweep (two U-Net arms, two seeds, three steps, a 4-channel network on 32 px crops) goes through the command
line: training, the per-run measurements (experiments.analysis), the studies' measurements (experiments.measure),
the statistics and the report.
"""

import csv
import json
import pathlib

import jax
import numpy as np
import pytest
from scipy.stats import mstats

from experiments import analysis, command, definitions, gates, layout, report, results, stats, tables
from experiments import sweep as sweep_lib
from experiments.measure import deconvnet as deconvnet_measure
from segjax.files import read_metrics, write_json
from segjax.task import Task


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
        _check_analysis(json.loads((run.workdir(out) / sweep_lib.ANALYSIS_FILE).read_text()))
        samples = np.load(run.workdir(out) / "samples.npz")
        assert samples["prediction"].shape == samples["label"].shape == (4, 32, 32)
    declared = json.loads((out / "sweep.json").read_text())
    assert declared[0]["hypotheses"][0]["statement"] == "resize_conv_nearest > transposed_k3_default"
    odena = json.loads(layout.study_file(out, "odena").read_text())  # measured by the runner, read by the section
    assert [k for k, _ in odena["overlap"]] == [2, 3, 4, 5] and len(odena["operators"]["seeds"]) == 3

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
        "Operators alone at initialisation",  # the study's measurements, read from OUT/studies/odena.json
        "Checkerboard during training",  # reproduction sweeps report the trajectory
        "| step 0 | step 1 | step 2 | step 3 |",
    ):
        assert needle in text, needle
    _check_tables(report_dir, runs, out)
    _check_ensemble(runs[0], runs[2], out)

    # A report for experiments/results/ is refused from uncommitted code unless asked for.
    dirty = report.RESULTS_DIR / "test_dirty_check"
    if report.git_revision()[1]:
        with pytest.raises(ValueError, match="uncommitted changes"):
            report.write_report(out, dirty)
    assert not dirty.exists()


def _check_analysis(a):
    assert a["params"] > 0 and a["gflops"] > 0 and a["steps"] == 3
    for stage in ("init", "trained"):
        assert 0 <= a["checkerboard"][stage]["constant"] < 1 and 0 <= a["checkerboard"][stage]["real"] < 1
    split = a["split"]  # boundaries, thin structures and artifacts over the validation split
    assert set(split["boundary_f1"]) == {"0", "1", "2"} and set(split["trimap_miou"]) == {"1", "2", "4", "8"}
    assert split["boundary_f1"]["0"] <= split["boundary_f1"]["1"] <= split["boundary_f1"]["2"] <= 1
    assert all(0 <= v <= 1 for v in split["shift_consistency"].values()) and len(split["shift_consistency"]) == 7
    phase = split["phase_error"]
    assert np.asarray(phase["rates"]).shape == (2, 2)  # depth 1: stride 2
    assert 0 < phase["p_aligned"] <= 1 and (phase["null_95"] is None or phase["null_95"] >= 1)  # None: infinite
    cb = split["checkerboard"]
    assert len(cb["upsamplers"]) == 1 and all(0 <= v <= 1 for v in (*cb["upsamplers"], cb["logits_2"]))
    assert cb["floor_2"] < 0.1
    # depth 1: the encoder's two levels (block2 is the bottom), each level's gradient measured
    assert set(cb["encoder_gradient_magnitude_2"]) == {"encoder/block1", "encoder/block2"}
    assert all(0 <= v <= 1 for v in cb["encoder_gradient_2"].values())
    trajectory = a["checkerboard_trajectory"]  # initialisation and the three kept checkpoints
    assert trajectory["steps"] == [0, 1, 2, 3] and len(trajectory["upsamplers"]) == len(trajectory["logits"]) == 4


def _check_tables(report_dir, runs, out):
    """runs.csv holds what metrics.jsonl says; hypotheses.csv the paired difference; the figures are drawn."""
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


def _check_ensemble(first, second, out):
    """The ensemble of two finished runs scores the average of their softmax probabilities, each member its own."""
    members = {"a": (first.config, first.workdir(out)), "b": (second.config, second.workdir(out))}
    measured = deconvnet_measure.ensemble_measurements(members)
    config = first.config
    info = Task(config).info
    images, labels = map(np.concatenate, zip(*analysis.validation_batches(config, info), strict=True))
    probabilities = []
    for run in (first, second):
        task = Task(run.config, str(run.workdir(out)))
        _, variables, _ = analysis.initial_and_trained_variables(task)
        probabilities.append(np.asarray(jax.nn.softmax(task.model.apply(variables, images, train=False), -1)))
    for name, p in (("a", probabilities[0]), ("b", probabilities[1]), ("ensemble", np.mean(probabilities, 0))):
        predictions, keep = p.argmax(-1), labels != info.ignore_index
        confusion = np.zeros((info.num_classes,) * 2, np.int64)
        np.add.at(confusion, (labels[keep], predictions[keep]), 1)
        union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
        iou = np.diag(confusion)[union > 0] / union[union > 0]
        assert measured[name]["mean_iou"] == pytest.approx(iou.mean(), abs=1e-6), name
        assert measured[name]["pixel_accuracy"] == pytest.approx(np.diag(confusion).sum() / keep.sum(), abs=1e-6)
        assert set(measured[name]["iou"]) == set(info.class_names)
        assert set(measured[name]["boundary_f1"]) == {"0", "1", "2"}


# ----------------------------------------------------------------------------------------------------------------
# Reading and formatting, without runs


def test_endpoints_and_plateau_from_a_constructed_curve():
    records = [{"step": s, "split": "train", "loss": 1.0} for s in (100, 200)]
    records += [
        {"step": s, "split": "validation", "mean_iou": v, "iou/wire": v / 2}
        for s, v in zip(range(100, 800, 100), (0.2, 0.5, 0.7, 0.8, 0.82, 0.84, 0.86), strict=True)
    ]
    records.append({"step": 700, "split": "validation", "mean_iou": 0.90, "iou/wire": None})  # resumed: logged again
    e = results.endpoints(records)
    assert e["curve_steps"] == [100, 200, 300, 400, 500, 600, 700] and e["endpoint_miou"] == 0.90
    assert e["final_miou"] == pytest.approx((0.82 + 0.84 + 0.90) / 3)
    assert e["auc_miou"] == pytest.approx(np.mean([0.2, 0.5, 0.7, 0.8, 0.82, 0.84, 0.90]))
    assert e["final_iou_wire"] == pytest.approx((0.41 + 0.42) / 2)  # a null is skipped, not a zero
    plateau, step = results.plateau_step(e["curve_steps"], e["curve_miou"])
    assert plateau == pytest.approx(np.mean([0.7, 0.8, 0.82, 0.84, 0.90])) and step == 500  # 0.80 < 0.812 - 0.01


def test_equivalence_claims_do_not_break_the_markdown_table():
    assert tables.cell("|bilinear - transposed_k2_default| < 0.01") == "\\|bilinear - transposed_k2_default\\| < 0.01"


# ----------------------------------------------------------------------------------------------------------------
# Training adequacy and collapse, on runs whose training is faked (metrics written by hand)

# Final mIoU per (arm, seed): 'flat' never trains; 'shaky' collapses at seed 3.
FAKE_MIOU = {
    "good": [0.86, 0.87, 0.865, 0.868, 0.871, 0.862],
    "shaky": [0.85, 0.86, 0.855, 0.70, 0.861, 0.852],
    "flat": [0.12, 0.11, 0.13, 0.12, 0.86, 0.12],
}


def _train_from_table(config, workdir):
    label = config.model.upsample.method  # the fake arms carry their label there
    miou = FAKE_MIOU[label][config.seed]
    trained = miou > 0.5
    records = [
        {"step": 1, "split": "train", "loss": 2.0},
        {"step": 4, "split": "train", "loss": 0.3 if trained else 1.9},
    ]
    per_class = {"iou/a": miou, "iou/b": miou if trained else 0.0}
    records += [{"step": s, "split": "validation", "mean_iou": miou, **per_class} for s in (2, 3, 4)]
    (pathlib.Path(workdir) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_an_arm_that_never_trains_is_not_tested_and_collapses_are_reported(tmp_path):
    arms = tuple(definitions.Arm("unet", label, "default", {"model.upsample.method": label}) for label in FAKE_MIOU)
    hypotheses = (
        definitions.Hypothesis("G1", "", "unet", "good", "flat"),
        definitions.Hypothesis("G2", "", "unet", "good", "shaky"),
        definitions.Hypothesis("G3", "", "unet", "good", "flat", also="shaky"),
    )
    sweep = definitions.Sweep(
        "gated", arms, tuple(range(6)), {}, "", hypotheses, gate=gates.Gate(min_miou=0.3), collapse=gates.Collapse()
    )
    runs = sweep_lib.expand(sweep)
    sweep_lib.run_sweep(runs, tmp_path, train_fn=_train_from_table, analyze_fn=lambda c, w: {}, log=lambda s: None)
    write_json(tmp_path / layout.SWEEP_FILE, [sweep.record()])
    loaded = results.Results.load(tmp_path)
    assert loaded.gate_status() == {
        ("unet", "good"): None,
        ("unet", "shaky"): None,
        ("unet", "flat"): "5 of 6 seeds fail the gate: classes, loss, mIoU",
    }
    verdicts = {
        r["hypothesis"]["name"]: r["verdict"].verdict
        for r in results.hypothesis_results(loaded.rows, loaded.hypotheses, loaded.gate_status())
    }
    assert (
        verdicts["G1"]
        == verdicts["G3"]
        == "not tested: flat did not train (5 of 6 seeds fail the gate: classes, loss, mIoU)"
    )
    assert not verdicts["G2"].startswith("not tested")
    text = report.write_report(tmp_path, tmp_path / "report", allow_dirty=True).read_text()
    assert "| shaky | [3] | 1/6 |" in text and "| good | none | 0/6 |" in text
    assert "Fisher-Freeman-Halton exact test" in text
    # G2 without the collapsed seed: the mean of the five other differences.
    d = np.array(FAKE_MIOU["good"]) - np.array(FAKE_MIOU["shaky"])
    assert f"| G2 | {d.mean():+.4f} | {np.delete(d, 3).mean():+.4f} (5) |" in text


def test_a_trimmed_study_tests_and_reports_the_trimmed_mean(tmp_path):
    arms = tuple(
        definitions.Arm("unet", label, "default", {"model.upsample.method": label}) for label in ("good", "shaky")
    )
    hypothesis = definitions.Hypothesis("G2", "", "unet", "good", "shaky")
    sweep = definitions.Sweep("trimmed", arms, tuple(range(6)), {}, "", (hypothesis,), trim=0.2)
    sweep_lib.run_sweep(
        sweep_lib.expand(sweep), tmp_path, train_fn=_train_from_table, analyze_fn=lambda c, w: {}, log=lambda s: None
    )
    write_json(tmp_path / layout.SWEEP_FILE, [sweep.record()])
    text = report.write_report(tmp_path, tmp_path / "report", allow_dirty=True).read_text()
    d = np.array(FAKE_MIOU["good"]) - np.array(FAKE_MIOU["shaky"])
    trimmed = float(mstats.trimmed_mean(d, limits=(0.2, 0.2)))  # one value set aside on each side of 6
    assert "| 20% trimmed mean difference (final mIoU) |" in text
    assert f"| G2 | good > shaky | {trimmed:+.4f} |" in text
    assert stats.TRIMMED_RULE in text
    with open(tmp_path / "report" / "hypotheses.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["trim"]) == 0.2 and float(row["mean_difference"]) == pytest.approx(trimmed)


def _artifact_arm(label, ratios, nulls, cb):
    members = [{"phase_error_ratio": r, "phase_error_null_95": n} for r, n in zip(ratios, nulls, strict=True)]
    return {"label": label, "_members": members, "cb_upsamplers_mean": cb, "cb_logits_mean": cb / 10}


def test_artifact_lines_count_runs_whose_errors_follow_the_grid_against_chance():
    quiet = [
        _artifact_arm("resize", [1.1] * 8, [1.3] * 8, 0.05),
        _artifact_arm("k4", [1.2] * 7 + [1.4], [1.3] * 8, 0.6),
    ]
    (line, _) = tables.artifacts_reach_lines(quiet)
    assert "upsampler outputs 0.050-0.600; logits 0.005-0.060" in line
    assert "in 1 of 16 runs (resize 0/8, k4 1/8), not detectably more often than chance" in line
    assert f"p = {stats.above_chance(1, 16, 0.05):.3g}" in line
    loud = [_artifact_arm("k4", [1.5] * 6 + [1.2] * 2, [1.3] * 8, 0.6)]
    assert "in 6 of 8 runs (k4 6/8), more often than chance" in tables.artifacts_reach_lines(loud)[0]
    assert tables.artifacts_reach_lines([_artifact_arm("old", [1.2], [None], 0.1)]) == []  # measured before the null
