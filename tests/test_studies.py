"""experiments.studies: the registry, every study's presets (config hashes pinned), and the sections, which only read
(synthetic results here; the tiny end-to-end sweep is in test_experiments_report.py)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import definitions, gates, layout, measure, reproductions, studies, tables
from experiments import sweep as sweep_lib
from experiments import upsampling_ablation as ua
from experiments.results import Results, aggregate, hypothesis_results
from experiments.studies import confirmatory, deconvnet, fcn, odena, segnet
from experiments.tables import open_section, ordering
from segjax import ops
from segjax.models import ModelSpec

REPO = pathlib.Path(__file__).resolve().parent.parent

# Preset -> (first run, its config hash, last run, its config hash), computed with the code before the studies were
# split into modules: finished runs are recognised by these hashes, so a change here orphans them.
PINNED = {
    "cpu": ("unet/transposed_k2_default/seed0", "c81700b0b009", "unet/noskip_bilinear/seed4", "993ef9bb6d0c"),
    "gpu": ("unet/transposed_k2_default/seed0", "b16ee7a8f61e", "unet/noskip_bilinear/seed7", "bcdf2ca6d29b"),
    "pilot_cpu": (
        "unet/transposed_k2_default/seed0",
        "e971c45badf3",
        "unet/noskip_transposed_k2_default/seed0",
        "5a0c0859ac4e",
    ),
    "smoke_cpu": ("unet/nearest/seed0", "a9f49a3234cc", "segnet/transposed_k4_bilinear/seed2", "6b7e936ff048"),
    "odena_cpu": (
        "unet/transposed_k2_default/seed0",
        "e42afa10da71",
        "segnet/transposed_k4_bilinear/seed2",
        "6b7e936ff048",
    ),
    "odena_2x2_cpu": (
        "unet/resize_conv_nearest/seed0",
        "f6875f52b78e",
        "unet/resize_conv_nearest_delta/seed4",
        "cf8a53fa0a2d",
    ),
    "fcn_128_cpu": ("fcn/fcn32s_fixed/seed0", "7fb3ee8d2570", "fcn/fcn8s_learned/seed2", "6aa8c686b14e"),
    "fcn_staged_128_cpu": ("fcn/fcn32s_fixed/seed0", "7fb3ee8d2570", "fcn/fcn8s_at_once/seed4", "bf02f3a991a0"),
    "odena_trajectory_cpu": (
        "unet/transposed_k4_default/seed0",
        "6e4b8c068ee1",
        "unet/resize_conv_nearest/seed1",
        "6caa8958da3c",
    ),
    "fcn_cpu": ("fcn/fcn32s/seed0", "0f72f1d50163", "fcn/fcn8s/seed2", "5669fdb2877e"),
    "segnet_table1_cpu": (
        "table1/segnet_basic/seed0",
        "5b27146f2d65",
        "table1/segnet_basic_natural/seed4",
        "92d02972734d",
    ),
    "deconvnet_128_cpu": ("edeconvnet/fcn8s_fixed/seed0", "e07b265f95e0", "edeconvnet/deconvnet/seed4", "f4b62a61987c"),
    # D1 and T3 again (issue 22 item 5): pilots on seed 100, then the tests.
    "deconvnet_128_w16_pilot": (
        "edeconvnet/fcn8s_fixed/seed100",
        "a86bc34ad352",
        "edeconvnet/deconvnet/seed100",
        "756423242a96",
    ),
    "deconvnet_128_w16_cpu": (
        "edeconvnet/fcn8s_fixed/seed0",
        "1394998e082e",
        "edeconvnet/deconvnet/seed2",
        "32e0aab7456e",
    ),
    "segnet_t3_w32_pilot": ("table1/segnet_basic/seed100", "4d2fc501740a", "table1/fcn_basic/seed100", "9513c5a395ea"),
    "segnet_t3_w32_cpu": ("table1/segnet_basic/seed0", "e74de17524a6", "table1/fcn_basic/seed2", "00a02a15c0aa"),
    "segnet_cpu": ("segnet/bilinear/seed0", "2547d2c530cb", "segnet/transposed_k4_bilinear/seed2", "6b7e936ff048"),
    "all_cpu": ("fcn/fcn32s/seed0", "0f72f1d50163", "segnet/transposed_k4_bilinear/seed2", "6b7e936ff048"),
    # The confirmatory study's pilot runs (issue 22) were trained with these.
    "pilot_before": (
        "unet/transposed_k2_default/seed2",
        "3ef6c2974186",
        "unet/transposed_k4_bilinear/seed103",
        "e4b3744a18c6",
    ),
    "pilot_after": (
        "unet/transposed_k2_default/seed2",
        "4492e49010c2",
        "unet/transposed_k4_bilinear/seed103",
        "50bf60070623",
    ),
    "pilot_lr1e2": (
        "unet/transposed_k4_default/seed2",
        "bc38f5874bb1",
        "unet/resize_conv_nearest/seed100",
        "f7d5ecad0a8c",
    ),
    "pilot_lr1e2_clip": (
        "unet/transposed_k4_default/seed2",
        "e21f1341f9df",
        "unet/resize_conv_nearest/seed100",
        "4dd8eecd5bd9",
    ),
    "pilot_whole": (
        "unet/transposed_k4_default/seed2",
        "074c14992c5a",
        "unet/resize_conv_nearest/seed100",
        "ec5d2e627ffc",
    ),
    "confirmatory_whole_cpu": (
        "unet/transposed_k2_default/seed2000",
        "7c7bd9d551ae",
        "unet/bilinear_matched/seed2007",
        "9d80e61d0ff9",
    ),
    "confirmatory_trimmed_cpu": (
        "unet/transposed_k2_default/seed3000",
        "e2f3b384b93e",
        "unet/bilinear/seed3011",
        "1251d6d16294",
    ),
    "confirmatory_cpu": (
        "unet/transposed_k2_default/seed1000",
        "fe5b98e4906f",
        "unet/bilinear_matched/seed1007",
        "b7df4c36a09f",
    ),
}


def expand_preset(make) -> list:
    made = make()
    return [r for s in (made if isinstance(made, list) else [made]) for r in sweep_lib.expand(s)]


# ----------------------------------------------------------------------------------------------------------------
# The registry and the presets


def test_registry_finds_every_preset_and_pins_its_config_hashes():
    every = studies.presets()
    assert {**ua.PRESETS, **reproductions.PRESETS}.keys() == every.keys() == PINNED.keys()
    assert set(ua.PRESETS) == {
        "cpu",
        "gpu",
        "pilot_cpu",
        "smoke_cpu",
        "pilot_before",
        "pilot_after",
        "pilot_lr1e2",
        "pilot_lr1e2_clip",
        "pilot_whole",
        "confirmatory_cpu",
        "confirmatory_whole_cpu",
        "confirmatory_trimmed_cpu",
    }
    for name, pinned in PINNED.items():
        runs = expand_preset(every[name])
        assert (runs[0].name, runs[0].config_hash, runs[-1].name, runs[-1].config_hash) == pinned, name
    assert set(odena.PRESETS) <= set(reproductions.PRESETS) and "all_cpu" in reproductions.PRESETS
    for name, module in studies.STUDIES.items():
        assert callable(module.sections) and module.PRESETS, name
    assert set(measure.MEASURES) <= set(studies.STUDIES)


def test_importing_the_section_side_imports_neither_jax_nor_the_models():
    modules = ["experiments.report", "experiments.results", "experiments.tables", "experiments.studies"]
    modules += [f"experiments.studies.{name}" for name in studies.STUDIES]
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
        "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'segjax.models', 'flax')) "
        "or m in ('experiments.upsampling_ablation', 'experiments.reproductions', 'experiments.command')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


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
    fcn_runs = sweep_lib.expand(fcn.fcn())
    assert [r.config.model.name for r in fcn_runs if r.seed == 0] == ["fcn32s", "fcn16s", "fcn8s"]
    for run in fcn_runs:
        ModelSpec.from_config(run.config.model)
    assert {r.arm.label for r in sweep_lib.expand(segnet.segnet())} == set(definitions.SEGNET_TABLE1)
    odena_keys = {r.arm.key for r in sweep_lib.expand(odena.odena())}
    assert "unet/transposed_k3_default" in odena_keys and "unet/nearest" not in odena_keys
    # Odena and SegNet share segnet/transposed_k4_bilinear, and the smoke ablation holds them all: run once.
    both = [r for s in [*reproductions.PRESETS["all_cpu"](), ua.PRESETS["smoke_cpu"]()] for r in sweep_lib.expand(s)]
    unique = sweep_lib.dedupe(both)
    assert len(unique) == len({r.name for r in both}) < len(both)


def test_fcn_presets_fix_the_upsampling_and_chain_the_stages():
    for run in sweep_lib.expand(reproductions.PRESETS["fcn_128_cpu"]()):
        frozen = run.config.optimizer.frozen
        assert frozen == ("upscore" if run.arm.label.endswith("_fixed") else None)
        assert run.config.data.crop_size == 128 and run.config.model.name == run.arm.label.split("_")[0]
        ModelSpec.from_config(run.config.model)
    runs = {r.name: r for r in sweep_lib.expand(reproductions.PRESETS["fcn_staged_128_cpu"]())}
    assert runs["fcn/fcn8s_staged/seed3"].config.model.init_from == "fcn/fcn16s_staged/seed3"
    assert runs["fcn/fcn16s_staged/seed3"].config.model.init_from == "fcn/fcn32s_fixed/seed3"
    assert (
        runs["fcn/fcn8s_at_once/seed3"].config.num_train_steps
        == 3 * runs["fcn/fcn8s_staged/seed3"].config.num_train_steps
    )
    assert all(r.config.optimizer.frozen == "upscore" for r in runs.values())


# ----------------------------------------------------------------------------------------------------------------
# Sections, from synthetic results


def synthetic_results(arms, out=pathlib.Path("/nonexistent"), sweeps=()) -> Results:
    return Results(out=out, sweeps=[s.record() for s in sweeps], rows=[], missing=[], arms=arms, costs={})


def synthetic_arm(model, label, members, keys=(), value=float("nan"), params=1000):
    summary = {f"{k}_{s}": value for k in keys for s in ("mean", "std")}
    return {"model": model, "label": label, "params": params, "_members": members, **summary}


def test_the_section_skeleton_gives_no_section_when_an_arm_is_missing():
    results = synthetic_results([synthetic_arm("m", "a", []), synthetic_arm("m", "b", [])])
    opened = open_section(results, "m", ("a", "b"), title="T", claim="C.")
    assert opened.lines == ["## T", "", "**Claim.** C.", ""] and set(opened.found) == {"a", "b"}
    assert open_section(results, "m", ("a", "c"), title="T") is None  # every label required by default
    assert open_section(results, "m", ("a", "c"), title="T", required=("a",)).found["c"] is None
    assert open_section(results, "m", ("a", "c"), title="T", required=(), at_least=2) is None
    assert open_section(results, "other", ("a",), title="T", required=()) is None  # at least one arm
    # Every study writes no section from results without its arms or measurements.
    for name, module in studies.STUDIES.items():
        if name != "odena":  # Odena's operator-level section needs no arms
            assert module.sections(synthetic_results([]), None) == [], name


def test_ordering_verdicts_are_paired_tests():
    def arm(values):
        return {
            "model": "unet",
            "label": str(values),
            "_members": [{"seed": s, "final_miou": v} for s, v in enumerate(values)],
        }

    low = [0.50, 0.55, 0.45, 0.52, 0.48]
    assert ordering(arm(low), arm([v + 0.1 for v in low])).startswith("held")
    assert ordering(arm([v + 0.1 for v in low]), arm(low)).startswith("did not hold")
    noisy = [0.5 + d for d in (0.2, -0.2, 0.1, -0.15, 0.05)]
    assert ordering(arm(low), arm(noisy)).startswith("inconclusive")
    assert ordering(arm([0.5]), arm([0.6])).startswith("not measured")


def test_odena_2x2_section_tests_the_checkerboard_endpoints():
    keys = (
        "final_miou",
        "cb_upsamplers",
        "cb_logits",
        "cb_gradient",
        "cb_floor",
        "cb_init_constant",
        "cb_trained_constant",
    )

    def arm(label, cb):
        members = [{"seed": s, "cb_upsamplers": v, "final_miou": 0.8} for s, v in enumerate(cb)]
        return synthetic_arm("unet", label, members, keys)

    noise = np.array([0.01, -0.01, 0.02, 0.0, -0.02])
    arms = [
        arm("transposed_k4_default", 0.55 + noise),
        arm("transposed_k4_bilinear", 0.45 + noise[::-1]),
        arm("resize_conv_nearest", 0.05 + noise / 10),
        arm("resize_conv_nearest_delta", 0.05 - noise / 10),
    ]
    section = odena.odena_2x2_section(synthetic_results(arms))
    assert "function class (Odena's claim)" in section and section.count("**held**") >= 2
    assert odena.odena_2x2_section(synthetic_results(arms[:3])) is None
    (whole,) = odena.sections(synthetic_results(arms), None)  # no probes measured: said, not computed
    assert "not measured" in whole and "Initialisation x function class" in whole


def test_segnet_table1_section_tests_boundary_f1_and_balancing_and_reads_the_memory(tmp_path):
    keys = ("final_miou", "final_boundary_f1", "final_pixel_accuracy", "final_class_accuracy", "bf_2")
    noise = np.array([0.01, -0.01, 0.02, 0.0, -0.02])

    def arm(label, bf, accuracy):
        members = [
            {"seed": s, "final_boundary_f1": b, "final_pixel_accuracy": g, "final_class_accuracy": c}
            for s, (b, g, c) in enumerate(zip(bf + noise, accuracy[0] + noise / 2, accuracy[1] - noise, strict=True))
        ]
        return synthetic_arm("table1", label, members, keys, 0.5)

    arms = [
        arm("segnet_basic", 0.40, (0.80, 0.70)),
        arm("fcn_basic", 0.38, (0.80, 0.70)),
        arm("fcn_basic_noaddition", 0.20, (0.80, 0.70)),
        arm("bilinear_basic", 0.20, (0.80, 0.70)),
        arm("segnet_basic_natural", 0.40, (0.90, 0.60)),
    ]
    section = segnet.table1_section(synthetic_results(arms, tmp_path))
    assert "| SegNet-Basic, natural frequency | 1,000 |" in section
    assert "segnet_basic > bilinear_basic on final_boundary_f1: **held**" in section
    assert "segnet_basic > segnet_basic_natural on final_class_accuracy: **held**" in section
    assert "segnet_basic_natural > segnet_basic on final_pixel_accuracy: **held**" in section
    assert "**Inference memory**: not measured" in section
    row = {"params": 10, "paper": 2**20, "as_implemented": 2**21, "temp_mib": 3.0}
    memory = [{"model": "segnet_basic", **row}, {"model": "fcn_basic", **row, "paper": 11 * 2**20}]
    write_study(tmp_path, segnet.NAME, {"memory": memory})
    section = segnet.table1_section(synthetic_results(arms, tmp_path))
    assert "| FCN-Basic | 10 | 11.00 MiB | 11.0 | 2.00 MiB | 3.0 MiB |" in section
    assert segnet.table1_section(synthetic_results(arms[1:], tmp_path)) is None


def test_deconvnet_section_reads_the_measured_ensemble(tmp_path):
    seeds = (0, 1, 2)
    arms = [
        synthetic_arm("edeconvnet", label, [{"seed": s, "_workdir": "w"} for s in seeds])
        for label in ("fcn8s_fixed", "deconvnet")
    ]
    sweeps = (deconvnet.deconvnet_128(),)
    assert "was not measured" in deconvnet.deconvnet_section(synthetic_results(arms, tmp_path, sweeps))

    def network(miou, speck):
        return {"mean_iou": miou, "boundary_f1": {"0": miou / 2, "2": miou}, "iou": {"speck": speck, "wire": 0.1}}

    measured = {
        str(s): {
            "measured": {
                "fcn8s_fixed": network(0.5 + d, 0.1),
                "deconvnet": network(0.6 + d, 0.3 + d),
                "ensemble": network(0.7 + d, 0.2),
            }
        }
        for s, d in zip(seeds, (0.0, 0.01, -0.01), strict=True)
    }
    write_study(tmp_path, deconvnet.NAME, {"seeds": measured})
    section = deconvnet.deconvnet_section(synthetic_results(arms, tmp_path, sweeps))
    assert "| EDeconvNet | both | 0.700 ± 0.010 |" in section and "Holm over 4" in section
    assert "ensemble > deconvnet on mIoU: **held**" in section and section.count("n = 3)") == 4
    assert "EDeconvNet beats both networks (an intersection-union test: both contrasts must hold): **held**" in section


def write_study(out: pathlib.Path, name: str, measured: dict) -> None:
    path = layout.study_file(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measured))


def test_the_confirmatory_study_tests_fresh_seeds_with_compute_matched_arms():
    pilot, sweep = confirmatory.pilot("p", {}), confirmatory.confirmatory()
    used = set(pilot.seeds) | set(range(5))  # the pilot's and every earlier study's seeds
    assert not used & set(sweep.seeds) and len(sweep.seeds) >= 8
    assert {h.name for h in sweep.hypotheses} == {"C1", "C2", "C3", "C4", "C5"} and sweep.preregistered
    matched = {a.label: a for a in sweep.arms}["bilinear_matched"]
    assert (
        matched.overrides["model.upsample.kernel_size"] == 2
        and matched.overrides["model.upsample.method"] == "bilinear"
    )
    assert sweep.gate == confirmatory.GATE and sweep.collapse == confirmatory.COLLAPSE


def test_c3_c5_are_tested_again_on_seeds_no_earlier_run_used_with_the_piloted_recipe():
    again, first = confirmatory.confirmatory_whole(), confirmatory.confirmatory()
    used = set(confirmatory.PILOT_SEEDS) | set(first.seeds) | set(range(5))
    assert not used & set(again.seeds) and len(again.seeds) >= 8 and again.preregistered != first.preregistered
    assert [h.name for h in again.hypotheses] == ["C3", "C4", "C5"]
    assert {a.label for a in again.arms} == {arm for h in again.hypotheses for arm in h.arms}
    pilot = confirmatory.PRESETS["pilot_whole"]()
    assert pilot.overrides == again.overrides and not set(pilot.seeds) & set(again.seeds)
    assert again.overrides["data.crop_size"] == again.overrides["data.eval_size"] == 64
    assert again.overrides["batch_size"] * 64**2 == first.overrides["batch_size"] * 32**2  # pixels per step


# ----------------------------------------------------------------------------------------------------------------
# Training adequacy in the sections: constructed runs, the reproductions' declared gates

NOISE = np.array([0.01, -0.01, 0.02, 0.0, -0.02])


def gated_rows(model: str, arms: dict, seeds=range(5)) -> list[dict]:
    """Runs of `arms` (label -> (final mIoU, trained?)): a run that trains halves its loss and predicts every class;
    one that does not keeps its loss and never predicts two of the classes. Other endpoints follow the mIoU."""
    rows = []
    for k, (label, (miou, trained)) in enumerate(arms.items()):
        for seed in seeds:
            value = miou + NOISE[seed] * (1 + k / 2)
            rows.append(
                {
                    "model": model,
                    "label": label,
                    "seed": seed,
                    "params": 1000,
                    "gflops": None,
                    "first_loss": 2.0,
                    "final_loss": 0.5 if trained else 1.9,
                    "final_miou": value,
                    "final_per_class_iou": [0.9, 0.6, 0.5, 0.4] + ([0.3, 0.2] if trained else [0.0, 0.0]),
                    **{k: value for k in ("final_boundary_f1", "final_pixel_accuracy", "final_class_accuracy")},
                    "_tags": {"steps": 1000},
                    "_workdir": "w",
                }
            )
    return rows


def gated_results(sweep, rows, out) -> Results:
    return Results(out=out, sweeps=[sweep.record()], rows=rows, missing=[], arms=aggregate(rows), costs={})


def test_the_reproductions_declare_training_adequacy_gates():
    assert deconvnet.deconvnet_128().gate == deconvnet.GATE and segnet.segnet_table1().gate == segnet.GATE
    assert fcn.fcn_128().gate == fcn.GATE and fcn.fcn_staged().gate == fcn.STAGED_GATE
    assert odena.odena_2x2().gate == odena.GATE and odena.odena_trajectory().gate == odena.GATE
    # The committed runs' endpoints (runs.csv): DeconvNet at width 8 fails by its mIoU and its classes at every seed.
    flat = [gates.RunOutcome(2.0, 0.5, miou, (0.9, 0.6, 0.5, 0.4, 0.0, 0.0)) for miou in (0.23, 0.204, 0.228, 0.206)]
    assert deconvnet.GATE.arm_status(flat) == "4 of 4 seeds fail the gate: classes, mIoU"
    # FCN-32s cannot hold wires and specks at stride 32: its four other classes pass its study's gate.
    assert fcn.GATE.failures(gates.RunOutcome(2.0, 0.5, 0.28, (0.9, 0.2, 0.1, 0.1, 0.0, 0.0))) == []


def test_a_smoke_test_orders_only_arms_that_trained(tmp_path):
    # reproductions_cpu's FCN-32s ended at 0.126 mIoU in 200 steps (background everywhere) and its ordering "held".
    assert fcn.fcn().gate == fcn.GATE and odena.odena().gate == odena.GATE and segnet.segnet().gate == segnet.GATE
    rows = gated_rows("fcn", {"fcn32s": (0.126, False), "fcn16s": (0.30, True), "fcn8s": (0.40, True)})
    section = fcn.skips_section(gated_results(fcn.fcn(), rows, tmp_path))
    why = "5 of 5 seeds fail the gate: loss, mIoU"
    assert f"- fcn32s < fcn16s: **not tested: fcn32s did not train ({why}) (difference +0.1" in section
    assert "- fcn16s < fcn8s: **held (difference +0.1" in section
    assert section.count("arms' gate: passed)**") == 1


def test_a_deconvnet_that_never_trains_is_not_tested_in_its_section(tmp_path):
    seeds = (0, 1, 2)
    measured = {
        str(s): {
            "measured": {
                name: {"mean_iou": m + d, "boundary_f1": {"0": m / 2, "2": m + d}, "iou": {"speck": m, "wire": m}}
                for name, m in (("fcn8s_fixed", 0.5), ("deconvnet", 0.2), ("ensemble", 0.6))
            }
        }
        for s, d in zip(seeds, (0.0, 0.01, -0.01), strict=True)
    }
    write_study(tmp_path, deconvnet.NAME, {"seeds": measured})
    sweep = deconvnet.deconvnet_128()
    rows = gated_rows(deconvnet.MODEL, {"fcn8s_fixed": (0.59, True), "deconvnet": (0.22, False)}, seeds)
    loaded = gated_results(sweep, rows, tmp_path)
    why = "3 of 3 seeds fail the gate: classes, loss, mIoU"
    assert loaded.gate_status() == {(deconvnet.MODEL, "fcn8s_fixed"): None, (deconvnet.MODEL, "deconvnet"): why}
    section = deconvnet.deconvnet_section(loaded)
    assert f"- deconvnet > fcn8s_fixed on BF 2 px: **not tested: deconvnet did not train ({why})**" in section
    assert f"- ensemble > fcn8s_fixed on mIoU: **not tested: deconvnet did not train ({why})**" in section
    assert "both contrasts must hold): **not tested**" in section and "**did not hold" not in section
    assert (
        "**DeconvNet did not train at width 8**" in section and "deconvnet_128_w16_cpu trains it at width 16" in section
    )
    wider = gated_results(deconvnet.PRESETS["deconvnet_128_w16_cpu"](), rows, tmp_path)
    section = deconvnet.deconvnet_section(wider)
    assert "**DeconvNet did not train at width 16**" in section and "width 32 costs about 4 times" in section
    (d1,) = hypothesis_results(loaded.rows, loaded.hypotheses, loaded.gate_status())
    assert d1["verdict"].verdict == f"not tested: deconvnet did not train ({why})"
    # Trained, the same contrasts keep their verdicts and say that their arms passed.
    rows = gated_rows(deconvnet.MODEL, {"fcn8s_fixed": (0.59, True), "deconvnet": (0.45, True)}, seeds)
    section = deconvnet.deconvnet_section(gated_results(sweep, rows, tmp_path))
    assert "not tested" not in section and "did not train" not in section
    assert "- ensemble > deconvnet on mIoU: **held**" in section and section.count("arms' gate: passed)") == 4


# SegNet's Table 1 arms: (final mIoU, trained?), one of them untrained.
TABLE1_ARMS = {
    "segnet_basic": (0.40, True),
    "fcn_basic": (0.60, True),
    "fcn_basic_noaddition": (0.15, False),
    "bilinear_basic": (0.25, True),
    "segnet_basic_natural": (0.45, True),
}


def test_segnet_table1_section_labels_untrained_arms_and_keeps_the_trained_ones_verdicts(tmp_path):
    sweep = segnet.segnet_table1()
    arms = dict(TABLE1_ARMS)
    section = segnet.table1_section(gated_results(sweep, gated_rows("table1", arms), tmp_path))
    assert "- segnet_basic > bilinear_basic on final_boundary_f1: **held** (" in section
    assert "arms' gate: passed)" in section
    assert "- fcn_basic > fcn_basic_noaddition on final_boundary_f1: **not tested: fcn_basic_noaddition did not " in (
        section
    )
    assert "**T3** (SegNet-Basic as good as FCN-Basic): both arms passed the training-adequacy gate" in section
    arms["segnet_basic"] = (0.15, False)
    section = segnet.table1_section(gated_results(sweep, gated_rows("table1", arms), tmp_path))
    assert "**T3 is not tested**: SegNet-Basic did not train at 16 channels" in section and "64 channels" in section
    assert "- segnet_basic > bilinear_basic on final_boundary_f1: **not tested: segnet_basic did not train" in section


def test_t3_tested_again_has_its_own_section_with_its_width_and_crops(tmp_path):
    sweep = segnet.PRESETS["segnet_t3_w32_cpu"]()
    assert {a.label for a in sweep.arms} == set(segnet.T3.arms) and [h.name for h in sweep.hypotheses] == ["T3"]
    arms = {label: TABLE1_ARMS[label] for label in segnet.T3.arms}
    loaded = gated_results(sweep, gated_rows("table1", arms), tmp_path)
    assert segnet.table1_section(loaded) is None
    section = segnet.t3_section(loaded)
    assert "at 32 channels, trained on whole 64 px images" in section
    assert "both arms passed the training-adequacy gate" in section and "leave a 4x4 map" in section
    assert "The paper's 64 channels would cost about 4 times as much per run" in section
    arms["fcn_basic"] = (0.15, False)
    section = segnet.t3_section(gated_results(sweep, gated_rows("table1", arms), tmp_path))
    assert "**T3 is not tested**: FCN-Basic did not train at 32 channels" in section
    whole = gated_results(segnet.segnet_table1(), gated_rows("table1", dict(TABLE1_ARMS)), tmp_path)
    assert segnet.t3_section(whole) is None and "segnet_t3_w32_cpu tests T3 again" in segnet.table1_section(whole)


def test_odena_2x2_checkerboard_verdicts_follow_the_arms_gate(tmp_path):
    arms = {label: (0.8, label != "transposed_k4_bilinear") for label in odena.ODENA_2X2}
    rows = gated_rows("unet", arms)
    scores = (0.55 + NOISE, 0.45 + NOISE[::-1], 0.05 + NOISE / 10, 0.05 - NOISE / 10)
    cb = dict(zip(odena.ODENA_2X2, scores, strict=True))
    for r in rows:
        r["cb_upsamplers"] = cb[r["label"]][r["seed"]]
    section = odena.odena_2x2_section(gated_results(odena.odena_2x2(), rows, tmp_path))
    assert "- transposed k4: random init leaves more checkerboard than bilinear init: difference" in section
    assert "**not tested: transposed_k4_bilinear did not train (5 of 5 seeds fail the gate: classes, loss)**" in section
    resize = next(line for line in section.splitlines() if line.startswith("- resize-convolution"))
    assert resize.endswith("**held**; arms' gate: passed")


def test_the_staged_fcn_verdict_states_the_schedule_handicap_beside_it(tmp_path):
    arms = {label: (0.6 if "8s" in label else 0.4, True) for label in fcn.FCN_STAGED}
    section = fcn.staged_section(gated_results(fcn.fcn_staged(), gated_rows("fcn", arms), tmp_path))
    (verdict,) = [line for line in section.splitlines() if line.startswith("**S1**")]
    assert verdict.startswith("**S1** (|fcn8s_at_once - fcn8s_staged| < 0.01): **held** (difference +0.0000, 95% CI")
    assert "arms' gate: passed). Handicap of the staged arms, unlike the paper: each stage here is one 1000-step" in (
        verdict
    )
    assert "restarts its learning rate from zero twice" in verdict


def test_the_report_tables_put_each_verdict_next_to_its_arms_gate(tmp_path):
    loaded = gated_results(segnet.segnet_table1(), gated_rows("table1", TABLE1_ARMS), tmp_path)
    verdicts = hypothesis_results(loaded.rows, loaded.hypotheses, loaded.gate_status())
    md, csv_rows = tables.hypotheses_table(verdicts, 5)
    why = "5 of 5 seeds fail the gate: classes, loss, mIoU"
    (t3,) = [line for line in md if line.startswith("| T3 |")]
    assert t3.endswith("| **did not hold** | passed |")
    (t4,) = [line for line in md if line.startswith("| T4 |")]
    assert t4.endswith(f"| **not tested: fcn_basic_noaddition did not train ({why})** | see verdict |")
    assert [r["gate"] for r in csv_rows] == [
        "passed",
        "passed",
        "passed",
        f"fcn_basic_noaddition did not train ({why})",
    ]
    assert "> Otherwise: did not hold: T3 (arms' gate: passed); not tested: T4" in tables.survivors_box(verdicts)
    adequacy = "\n".join(tables.adequacy_lines(loaded, verdicts))
    assert (
        f"Gate of segnet_table1_cpu: `{segnet.GATE}`. Declared after this reproduction's exploratory runs" in adequacy
    )
    assert f"| table1/fcn_basic_noaddition | 5 | {why} |" in adequacy and "| table1/fcn_basic | 5 | yes |" in adequacy
