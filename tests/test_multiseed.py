"""segjax.multiseed: K seeds trained as one vmapped program equal K sequential `train_and_evaluate` runs (each seed
its own initialisation, data order, records and checkpoints); what it refuses; the sweep runner's
--seeds-per-program grouping (with a fake trainer: no compilation).

Tolerances: the vmapped program runs the same float32 arithmetic in another order (XLA:CPU lowers the vmapped
convolutions to grouped ones and sums their products differently), so losses and gradient norms agree to
rtol 1e-5 and parameters, optimizer moments and batch statistics after 4 AdamW steps to rtol 1e-4 / atol 1e-6
(float32 rounding of ~1e-7 grown by four steps); integers (steps, RNG keys) and the batches are equal exactly.
"""

import json
import pathlib

import jax
import numpy as np
import pytest

from experiments import command, definitions
from experiments import sweep as sweep_lib
from experiments import upsampling_ablation as ua
from segjax import multiseed, parallel, train
from segjax import run as run_lib
from segjax.files import read_metrics
from segjax.task import Task

SEEDS = (0, 1, 2)
LOSS_RTOL = 1e-5
STATE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


def _recorded(config, run):
    """(what run() returns, the training batches the data-parallel layout was handed, in order)."""
    layout = parallel.data_parallel(config.parallelism, config.num_devices)
    shard_batch, seen = layout.shard_batch, []

    def record(batch):
        if "valid" not in batch:  # evaluation batches carry 'valid'; training batches do not
            seen.append({k: np.array(v) for k, v in batch.items()})
        return shard_batch(batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layout, "shard_batch", record)
        return run(), seen


@pytest.fixture(scope="module")
def config_of(tiny_config):
    """seed -> the tiny U-Net config (with dropout: the per-step keys matter) logging every step's loss."""

    def make(seed):
        return tiny_config(log_every_steps=1, seed=seed)

    return make


@pytest.fixture(scope="module")
def sequential(config_of, tmp_path_factory):
    """seed -> (workdir, final scores, training batches) of `train_and_evaluate`, one seed after another."""
    out = {}
    for seed in SEEDS:
        workdir = str(tmp_path_factory.mktemp("sequential") / f"seed{seed}")
        config = config_of(seed)
        scores, batches = _recorded(config, lambda: train.train_and_evaluate(config, workdir))  # noqa: B023
        out[seed] = (workdir, scores, batches)
    return out


@pytest.fixture(scope="module")
def programs(config_of, tmp_path_factory):
    """K -> (seeds, workdirs, final scores, stacked training batches) of seeds SEEDS[:K] as one program."""
    out = {}
    for k in (2, 3):
        seeds = SEEDS[:k]
        root = tmp_path_factory.mktemp(f"program{k}")
        workdirs = [str(root / f"seed{s}") for s in seeds]
        configs = [config_of(s) for s in seeds]
        scores, batches = _recorded(configs[0], lambda: multiseed.train_seeds(configs, workdirs))  # noqa: B023
        out[k] = (seeds, workdirs, scores, batches)
    return out


def _final_state(workdir):
    task = Task(run_lib.stored_config(workdir), workdir)
    checkpoints = task.checkpointer(read_only=True)
    try:
        state, meta = checkpoints.restore(checkpoints.latest_step(), task.abstract_state())
    finally:
        checkpoints.close()
    return state, meta


def _train_records(workdir, key):
    return [r[key] for r in read_metrics(workdir) if r["split"] == "train"]


@pytest.mark.parametrize("k", [2, 3])
def test_each_seed_of_a_program_sees_its_own_sequential_batches(k, programs, sequential):
    seeds, _, _, stacked = programs[k]
    assert len(stacked) == 4 and all(b["image"].shape[:2] == (4, k) for b in stacked)  # (B, K, H, W, 3)
    for index, seed in enumerate(seeds):
        own = sequential[seed][2]
        assert len(own) == 4
        for step, (program_batch, sequential_batch) in enumerate(zip(stacked, own, strict=True)):
            for key in ("image", "label"):
                np.testing.assert_array_equal(program_batch[key][:, index], sequential_batch[key], f"step {step + 1}")
    # The seeds' data orders differ, so the comparison above can tell them apart.
    assert not np.array_equal(sequential[0][2][0]["image"], sequential[1][2][0]["image"])


@pytest.mark.parametrize("k", [2, 3])
def test_a_program_of_k_seeds_equals_k_sequential_runs(k, programs, sequential):
    seeds, workdirs, scores, _ = programs[k]
    assert len(scores) == k
    for seed, workdir, program_scores in zip(seeds, workdirs, scores, strict=True):
        reference_dir, reference_scores, _ = sequential[seed]
        # Per-step losses (log_every_steps=1), gradient norms and learning rates, as metrics.jsonl records them.
        assert [r["step"] for r in read_metrics(workdir)] == [r["step"] for r in read_metrics(reference_dir)]
        for key in ("loss", "grad_norm", "learning_rate"):
            np.testing.assert_allclose(
                _train_records(workdir, key), _train_records(reference_dir, key), rtol=LOSS_RTOL, err_msg=key
            )
        # Final validation: the same predictions, pixel for pixel.
        np.testing.assert_array_equal(program_scores["confusion_matrix"], reference_scores["confusion_matrix"])
        assert program_scores["mean_iou"] == pytest.approx(reference_scores["mean_iou"])
        assert program_scores["boundary_f1"] == pytest.approx(reference_scores["boundary_f1"])
        # The checkpoints: same steps, same state, the same scores recorded with them.
        state, meta = _final_state(workdir)
        reference, reference_meta = _final_state(reference_dir)
        assert int(state.step) == int(reference.step) == 4
        np.testing.assert_array_equal(state.rng, reference.rng)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, **STATE_TOLERANCE),
            (state.params, state.batch_stats, state.opt_state),
            (reference.params, reference.batch_stats, reference.opt_state),
        )
        assert meta["scores"]["mean_iou"] == pytest.approx(reference_meta["scores"]["mean_iou"])
        with open(pathlib.Path(workdir) / "config.json") as f, open(pathlib.Path(reference_dir) / "config.json") as g:
            assert json.load(f) == json.load(g)
    # Different seeds trained differently: the comparison above can fail.
    assert _train_records(workdirs[0], "loss") != pytest.approx(_train_records(workdirs[1], "loss"), rel=1e-3)


def test_a_finished_program_trains_nothing_again_and_mixed_steps_are_refused(programs, config_of, tmp_path):
    seeds, workdirs, scores, _ = programs[2]
    again = multiseed.train_seeds([config_of(s) for s in seeds], workdirs)
    assert [s["mean_iou"] for s in again] == pytest.approx([s["mean_iou"] for s in scores])
    fresh = str(tmp_path / "fresh")
    with pytest.raises(ValueError, match=r"same step; their checkpoints are at steps \[4, 0\]"):
        multiseed.train_seeds([config_of(0), config_of(5)], [workdirs[0], fresh])
    assert not (tmp_path / "fresh").exists()


def test_what_one_program_cannot_train_is_refused_before_anything_is_written(config_of, tmp_path):
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    other = config_of(1)
    other.optimizer.learning_rate = 0.5
    for configs, workdirs, message in [
        ([config_of(0), other], dirs, r"differ only in their seed; seed 1 also changes optimizer.learning_rate"),
        ([config_of(0), config_of(0)], dirs, r"seeds of one program must differ, got \[0, 0\]"),
        ([config_of(0), config_of(1)], [dirs[0], dirs[0]], "one workdir each"),
        ([config_of(0)], dirs, "1 configs for 2 workdirs"),
    ]:
        with pytest.raises(ValueError, match=message):
            multiseed.train_seeds(configs, workdirs)
    started = [config_of(s) for s in (0, 1)]
    for c in started:
        c.model.init_from = str(tmp_path / "source")
    with pytest.raises(ValueError, match="model.init_from=.*one seed at a time"):
        multiseed.train_seeds(started, dirs)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------------------
# The sweep runner's --seeds-per-program (fake trainers: the runner's grouping and bookkeeping only)


def _fake_sweep(seeds=(0, 1, 2)):
    arms = (
        definitions.Arm("unet", "a", "default", {"model.upsample.method": "nearest"}),
        definitions.Arm("unet", "b", "default", {"model.upsample.method": "bilinear"}),
    )
    return definitions.Sweep("fake", arms, seeds, {"num_train_steps": 3})


def _fake_analyze(config, workdir):
    return {"val_miou": 0.1 * config.seed}


def test_the_sweep_trains_up_to_k_seeds_of_one_arm_per_program(tmp_path):
    runs = sweep_lib.expand(_fake_sweep())
    programs, singles = [], []

    def train_seeds(configs, workdirs):
        programs.append(
            [(c.model.upsample.method, c.seed, pathlib.Path(w).name) for c, w in zip(configs, workdirs, strict=True)]
        )

    def train_one(config, workdir):
        singles.append((config.model.upsample.method, config.seed))

    results = sweep_lib.run_sweep(
        runs,
        tmp_path,
        seeds_per_program=2,
        train_fn=train_one,
        train_seeds_fn=train_seeds,
        analyze_fn=_fake_analyze,
        log=lambda s: None,
    )
    assert results == {r.name: "trained" for r in runs}
    assert programs == [
        [("nearest", 0, "seed0"), ("nearest", 1, "seed1")],
        [("bilinear", 0, "seed0"), ("bilinear", 1, "seed1")],
    ]
    assert singles == [("nearest", 2), ("bilinear", 2)]  # the odd seed left over trains as a run of its own
    for run in runs:
        workdir = run.workdir(tmp_path)
        analysis = json.loads((workdir / sweep_lib.ANALYSIS_FILE).read_text())
        assert analysis.get("seeds_per_program") == (None if run.seed == 2 else 2)
        assert json.loads((workdir / sweep_lib.RUN_FILE).read_text())["seed"] == run.seed
        assert (workdir / sweep_lib.DONE).exists()
    again = sweep_lib.run_sweep(runs, tmp_path, seeds_per_program=2, train_seeds_fn=train_seeds, log=lambda s: None)
    assert set(again.values()) == {"skipped"} and len(programs) == 2


def test_a_failed_program_marks_each_of_its_runs_failed(tmp_path):
    runs = sweep_lib.expand(_fake_sweep(seeds=(0, 1)))[:2]

    def diverges(configs, workdirs):
        raise FloatingPointError("simulated divergence of one seed")

    results = sweep_lib.run_sweep(
        runs, tmp_path, seeds_per_program=2, train_seeds_fn=diverges, analyze_fn=_fake_analyze, log=lambda s: None
    )
    assert results == {r.name: "failed" for r in runs}
    for run in runs:
        assert "simulated divergence" in (run.workdir(tmp_path) / sweep_lib.ERROR_FILE).read_text()
        assert not (run.workdir(tmp_path) / sweep_lib.DONE).exists()


def test_seeds_per_program_refuses_a_bad_count_and_staged_arms(tmp_path, capsys):
    arms = (
        definitions.Arm("fcn", "stage2", "default", {"num_train_steps": 2}, init_from="stage1"),
        definitions.Arm("fcn", "stage1", "default", {"num_train_steps": 1}),
    )
    staged = sweep_lib.expand(definitions.Sweep("staged", arms, (0, 1)))
    with pytest.raises(ValueError, match=r"arms \['fcn/stage2'\] start from other runs' weights"):
        sweep_lib.run_sweep(staged, tmp_path / "staged", seeds_per_program=2, log=lambda s: None)
    with pytest.raises(ValueError, match="must be a positive integer"):
        sweep_lib.run_sweep(staged, tmp_path / "staged", seeds_per_program=0, log=lambda s: None)
    assert not (tmp_path / "staged").exists()
    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as exit_info:
        command.main(ua.PRESETS, ["--preset=smoke_cpu", f"--out={out}", "--seeds-per-program=0"], prog="ablation")
    assert exit_info.value.code == 2
    assert "--seeds-per-program=0 must be a positive integer" in capsys.readouterr().err
    assert not out.exists()
