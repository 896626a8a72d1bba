"""Checkpointer: retention (last N plus the best by mIoU), step resolution, shape checks, read-only use."""

import os

import numpy as np
import optax
import pytest

from segjax import checkpoint as checkpoint_lib
from segjax.steps import TrainState


def _state(step, width=3, seed=0):
    rng = np.random.default_rng(seed + step)
    params = {
        "conv": {
            "kernel": rng.normal(size=(3, 3, 2, width)).astype(np.float32),
            "bias": rng.normal(size=(width,)).astype(np.float32),
        }
    }
    opt_state = optax.adam(1e-3).init(params)
    return TrainState(
        step=np.int32(step), params=params, batch_stats={}, opt_state=opt_state, rng=np.array([0, step], np.uint32)
    )


@pytest.fixture
def saved(tmp_path):
    """Steps 1..6 saved with keep=2; steps 2 and 4 have validation scores (best: step 2)."""
    checkpoints = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
    scores = {2: 0.7, 4: 0.5}
    for step in range(1, 7):
        miou = scores.get(step)
        checkpoints.save(
            step,
            _state(step),
            {"num_classes": 3},
            None if miou is None else {"mean_iou": miou, "per_class_iou": np.array([miou, np.nan])},
        )
    checkpoints.wait()
    checkpoints.close()
    return str(tmp_path)


def test_keeps_the_last_n_and_the_best(saved):
    reader = checkpoint_lib.Checkpointer(saved, read_only=True)
    assert reader.all_steps() == [2, 5, 6]
    assert reader.latest_step() == 6 and reader.best_step() == 2
    assert reader.resolve_step("latest") == 6 and reader.resolve_step("best") == 2 and reader.resolve_step("5") == 5


def test_restore_round_trips_state_and_meta(saved):
    reader = checkpoint_lib.Checkpointer(saved, read_only=True)
    restored, meta = reader.restore(5, _state(0))
    expected = _state(5)
    assert isinstance(restored, TrainState) and int(restored.step) == 5
    np.testing.assert_array_equal(restored.params["conv"]["kernel"], expected.params["conv"]["kernel"])
    np.testing.assert_array_equal(restored.rng, expected.rng)
    assert type(restored.opt_state) is type(expected.opt_state)
    assert meta["num_classes"] == 3 and meta["step"] == 5 and meta["scores"] is None
    best_meta = reader.restore_meta(2)
    assert best_meta["scores"]["mean_iou"] == 0.7 and best_meta["scores"]["per_class_iou"][1] is None  # NaN: null


def test_errors_name_the_problem(saved, tmp_path):
    reader = checkpoint_lib.Checkpointer(saved, read_only=True)
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"No checkpoint for step 3 .*\[2, 5, 6\]"):
        reader.resolve_step(3)
    with pytest.raises(checkpoint_lib.CheckpointError, match="not 'latest', 'best' or an integer"):
        reader.resolve_step("newest")
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"params/conv/bias: checkpoint \(3,\) vs config \(4,\)"):
        reader.restore(6, _state(0, width=4))
    empty = checkpoint_lib.Checkpointer(str(tmp_path / "empty"), keep=1)
    with pytest.raises(checkpoint_lib.CheckpointError, match="No checkpoint found"):
        empty.resolve_step("latest")


def test_best_without_any_scores_is_an_error(tmp_path):
    checkpoints = checkpoint_lib.Checkpointer(str(tmp_path), keep=3)
    checkpoints.save(1, _state(1), {})
    checkpoints.wait()
    with pytest.raises(checkpoint_lib.CheckpointError, match="no 'best'"):
        checkpoints.resolve_step("best")


def test_read_only_reader_writes_nothing(saved):
    before = sorted(os.listdir(os.path.join(saved, "checkpoints")))
    reader = checkpoint_lib.Checkpointer(saved, read_only=True)
    reader.restore(6, _state(0))
    reader.close()
    assert sorted(os.listdir(os.path.join(saved, "checkpoints"))) == before


def test_listing_tries_again_when_rotation_removes_a_step_meanwhile(saved, monkeypatch):
    reader = checkpoint_lib.Checkpointer(saved, read_only=True)
    reload, failures = reader._manager.reload, [FileNotFoundError("checkpoints/3")] * 2

    def racing_reload():
        if failures:
            raise failures.pop()
        reload()

    monkeypatch.setattr(reader._manager, "reload", racing_reload)
    assert reader.all_steps() == [2, 5, 6] and not failures
    failures.extend([FileNotFoundError("checkpoints/3")] * 5)
    with pytest.raises(checkpoint_lib.CheckpointError, match="changed 5 times while they were listed"):
        reader.latest_step()
    reader.close()
