"""The bad-input and fault battery (issue 23): each refusal exits with status 2 (or the signal's status) and loses no
data: inputs, the stored config and a refused run's workdir stay byte-identical."""

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import test_distributed as two_processes
from PIL import Image

from segjax import checkpoint as checkpoint_lib
from segjax import evaluate, predict, summary, train
from segjax import run as run_lib
from segjax.data import folder as folder_lib
from segjax.files import read_metrics, write_atomic
from segjax.models import pretrained
from segjax.task import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(REPO, "configs", "unet.py")


def snapshot(root) -> dict:
    """Every file (bytes) and folder under `root`: what 'byte-identical' compares."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root) + "/"] = None
        for f in files:
            with open(os.path.join(folder, f), "rb") as handle:
                out[os.path.relpath(os.path.join(folder, f), root)] = handle.read()
    return out


def exit_status(main, args, capsys) -> tuple[int, str]:
    """(exit status, stderr) of a command's main(args); 0 when it returns."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def train_args(overrides: dict, workdir, **more) -> list[str]:
    values = {**overrides, **more}
    return [f"--config={UNET}", f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in values.items())]


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the trained tiny run (tests change it)."""
    workdir, config, _ = trained_run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    return copy, config


# --- 1. outputs never replace inputs ------------------------------------------------------------------------------
def test_predict_never_replaces_inputs_nor_its_own_outputs(trained_run, tmp_path, capsys, monkeypatch):
    workdir = trained_run[0]
    images = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for name in ("a/photo.png", "b/photo.png", "c.png", "c.jpg"):
        (images / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)).save(images / name)
    before = snapshot(images)
    base = [f"--workdir={workdir}"]
    for args, message in [
        ([str(images), f"--out={images}"], "is inside the input folder"),
        ([str(images), f"--out={images / 'a' / 'masks'}"], "is inside the input folder"),
        ([str(images / "c.png"), f"--out={images}"], "would replace the input"),
        ([str(images), f"--out={tmp_path / 'o'}", "--max-pixels=100"], "above the limit of 100 (--max-pixels)"),
    ]:
        code, err = exit_status(predict.main, base + args, capsys)
        assert code == 2 and message in err and "Traceback" not in err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's decompression-bomb guard: 32x32 > 2 x 100
    code, err = exit_status(predict.main, base + [str(images / "c.png"), f"--out={tmp_path / 'o'}"], capsys)
    assert code == 2 and "decompression bomb" in err and "Traceback" not in err
    monkeypatch.undo()
    assert snapshot(images) == before and not (tmp_path / "o").exists()

    out = tmp_path / "out"
    assert exit_status(predict.main, base + [str(images), f"--out={out}"], capsys)[0] == 0
    masks = sorted(p for p in snapshot(out) if p.endswith(".png") and not p.endswith("_overlay.png"))
    assert masks == ["a/photo.png", "b/photo.png", "c.jpg.png", "c.png.png"]  # 4 inputs, 4 masks
    written = snapshot(out)
    code, err = exit_status(predict.main, base + [str(images / "a"), str(images / "b"), f"--out={out}"], capsys)
    assert code == 2 and "exist already" in err and "--overwrite" in err and snapshot(out) == written
    assert exit_status(predict.main, base + [str(images), f"--out={out}", "--overwrite"], capsys)[0] == 0
    assert snapshot(images) == before


def test_predict_decodes_every_image_before_writing_any_output(trained_run, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)  # noise: a PNG whose pixel data is most of the file
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)).save(images / name)
    data = (images / "b.png").read_bytes()
    (images / "b.png").write_bytes(data[: len(data) // 2])  # the header intact, the pixels cut short
    before = snapshot(images)
    out = tmp_path / "out"
    code, err = exit_status(predict.main, [f"--workdir={trained_run[0]}", str(images), f"--out={out}"], capsys)
    assert code == 2 and f"{images / 'b.png'}: unreadable image" in err and "Traceback" not in err
    assert not out.exists() and snapshot(images) == before


# --- 2. validate first, write after -------------------------------------------------------------------------------
def test_a_refused_resume_leaves_the_workdir_byte_identical(run_copy, tiny_overrides, capsys, caplog):
    workdir, config = run_copy
    before = snapshot(workdir)
    for more, message in [
        ({"model.base_width": 8}, "a resume cannot change the model"),
        ({"loss.class_weighting": "median"}, "loss.class_weighting='median' is not valid"),
    ]:
        code, err = exit_status(train.main, train_args(tiny_overrides(), workdir, **more), capsys)
        assert code == 2 and message in err and "Traceback" not in err
        assert snapshot(workdir) == before
    # An allowed change warns and keeps the run's record.
    with caplog.at_level(logging.WARNING, logger="segjax.run"):
        assert exit_status(train.main, train_args(tiny_overrides(), workdir, seed=5), capsys)[0] == 0
    assert "seed: 0 -> 5" in caplog.text
    assert snapshot(workdir)["config.json"] == before["config.json"]


# --- 3. one writer per workdir ------------------------------------------------------------------------------------
def test_a_second_training_process_is_refused_and_a_stale_lock_taken_over(run_copy, tiny_overrides, capsys, caplog):
    workdir, _ = run_copy
    holder = run_lib.WorkdirLock(workdir).acquire()
    before = snapshot(workdir)
    try:
        code, err = exit_status(train.main, train_args(tiny_overrides(), workdir), capsys)
        assert snapshot(workdir) == before
    finally:
        holder.release()
    assert code == 2 and f"PID {os.getpid()} on host {socket.gethostname()}" in err
    with open(os.path.join(workdir, run_lib.LOCK_FILE), "w") as f:  # left by a process that died
        f.write("PID 999999 on host gone\n")
    with caplog.at_level(logging.WARNING, logger="segjax.run"):
        run_lib.WorkdirLock(workdir).acquire().release()
    assert "its holder (PID 999999 on host gone) ended without releasing it" in caplog.text


# --- 4. finite or not saved ---------------------------------------------------------------------------------------
def test_a_non_finite_state_is_never_saved_evaluated_or_loaded(tiny_config, tmp_path, monkeypatch):
    real_train_step = Task.train_step

    def poisoned_train_step(self, loss=None):  # infinite batch-norm variances from step 3 on; the loss stays finite
        step_fn = real_train_step(self, loss)

        def run(state, batch):
            state, metrics = step_fn(state, batch)
            if int(np.ravel(jax.device_get(state.step))[0]) >= 3:
                state = state.replace(batch_stats=jax.tree.map(lambda x: x * np.inf, state.batch_stats))
            return state, metrics

        return run

    monkeypatch.setattr(Task, "train_step", poisoned_train_step)
    workdir = str(tmp_path / "run")
    with pytest.raises(train.NonFiniteLossError, match=r"step 4 holds non-finite values .*last finite checkpoint is"):
        train.train_and_evaluate(tiny_config(), workdir)
    assert checkpoint_lib.Checkpointer(workdir, read_only=True).all_steps() == [2]
    monkeypatch.undo()

    # A non-finite checkpoint written by an older segjax: refused by evaluation and as another run's weights.
    task = Task(tiny_config(), workdir)
    state, _ = run_lib.restore(workdir)[1:]
    bad = state.replace(step=5, params=jax.tree.map(lambda x: x * np.nan, state.params))
    checkpoints = task.checkpointer()
    monkeypatch.setattr(checkpoint_lib, "all_finite", lambda tree: True)
    checkpoints.save(5, bad, task.checkpoint_meta())
    checkpoints.wait()
    checkpoints.close()
    monkeypatch.undo()
    with pytest.raises(run_lib.RunError, match=r"step 5 .* holds non-finite values .*--step \(steps: \[2, 5\]\)"):
        run_lib.restore(workdir)
    config = tiny_config(model__init_from=workdir)
    with pytest.raises(ValueError, match="holds non-finite values"):
        train.train_and_evaluate(config, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


# --- 5. preemption ------------------------------------------------------------------------------------------------
def test_sigterm_saves_and_the_resumed_run_equals_an_uninterrupted_one(tiny_config, tiny_overrides, tmp_path):
    more = {"num_train_steps": 60, "log_every_steps": 1, "eval_every_steps": 60, "checkpoint_every_steps": 60}
    workdir = tmp_path / "preempted"
    env = dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest")
    process = subprocess.Popen(
        [sys.executable, "-m", "segjax.train", *train_args(tiny_overrides(), workdir, **more)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not read_metrics(str(workdir)) and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143 and "Stopped by SIGTERM after step" in err and "Traceback" not in err
    (stopped,) = checkpoint_lib.Checkpointer(str(workdir), read_only=True).all_steps()
    assert 0 < stopped < 60
    assert max(r["step"] for r in read_metrics(str(workdir))) == stopped  # the metrics were flushed

    config = tiny_config(**{k.replace(".", "__"): v for k, v in more.items()})
    resumed = train.train_and_evaluate(config, str(workdir))
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "uninterrupted"))
    assert resumed["mean_iou"] == pytest.approx(uninterrupted["mean_iou"], abs=1e-6)
    np.testing.assert_allclose(resumed["confusion_matrix"], uninterrupted["confusion_matrix"])


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_resumes(trained_run, tiny_overrides, tmp_path):
    """Process 1 alone gets SIGTERM: the processes agree at the next log step, save that step together and both exit
    with 143; the two-process resume ends at the numbers of an uninterrupted two-process run, steps neither lost
    nor repeated. (`trained_run` prepared the dataset, which both processes read.)"""
    more = {"num_train_steps": 20, "log_every_steps": 1, "eval_every_steps": 20, "checkpoint_every_steps": 20}
    uninterrupted = str(tmp_path / "uninterrupted")
    two_processes.launch(["segjax.train", *train_args(tiny_overrides(), uninterrupted, **more)])
    workdir = str(tmp_path / "preempted")
    command = ["segjax.train", *train_args(tiny_overrides(), workdir, **more)]
    running = two_processes.start(command)
    try:
        while not read_metrics(workdir) and all(p.poll() is None for p in running):
            time.sleep(0.02)
        running[1].send_signal(signal.SIGTERM)  # not process 0, which writes the metrics
    finally:
        stopped = two_processes.finish(running, expect=143)
    steps = {int(s) for r in stopped for s in re.findall(r"Stopped by SIGTERM after step (\d+), saved", r.stderr)}
    assert all("Traceback" not in r.stderr for r in stopped) and len(steps) == 1, [r.stderr[-2000:] for r in stopped]
    (step,) = steps  # both processes said so (each prints its own line)
    assert 0 < step < 20 and checkpoint_lib.Checkpointer(workdir, read_only=True).all_steps() == [step]
    assert max(r["step"] for r in read_metrics(workdir)) == step  # process 0 flushed the metrics

    two_processes.launch(command)
    resumed, reference = read_metrics(workdir), read_metrics(uninterrupted)
    assert [r["step"] for r in resumed if r["split"] == "train"] == list(range(1, 21))
    for a, b in zip(resumed, reference, strict=True):
        assert a["step"] == b["step"] and a["split"] == b["split"]
        assert a["loss" if a["split"] == "train" else "mean_iou"] == pytest.approx(
            b["loss" if b["split"] == "train" else "mean_iou"], rel=1e-6, abs=1e-7
        )


# --- 9/10. one clear line instead of a traceback ------------------------------------------------------------------
def test_broken_workdirs_and_arguments_give_one_line(run_copy, tiny_overrides, tmp_path, capsys, monkeypatch):
    workdir, _ = run_copy
    monkeypatch.chdir(tmp_path)  # where an empty --workdir would train
    config_path = os.path.join(workdir, run_lib.CONFIG_FILE)
    for content, message in [("[1, 2]", "is not a segjax config"), ("{}", "is not a segjax config"), ("{", "JSON")]:
        with open(config_path, "w") as f:
            f.write(content)
        before = snapshot(workdir)
        code, err = exit_status(evaluate.main, [f"--workdir={workdir}"], capsys)
        assert code == 2 and config_path in err and message in err and "Traceback" not in err
        assert snapshot(workdir) == before
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for main, args, message in [
        (evaluate.main, [f"--workdir={a_file}"], "is a file, not a folder"),
        (train.main, train_args(tiny_overrides(), a_file), "is a file, not a folder"),
        (train.main, train_args(tiny_overrides(), ""), "--workdir is empty"),
        (summary.main, ["--size", "0"], "--size must be positive"),
    ]:
        code, err = exit_status(main, args, capsys)
        assert code == 2 and message in err and "Traceback" not in err
    assert a_file.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["a_file", "run"]


def test_pth_weights_a_wrapped_state_dict_loads_and_an_empty_file_gives_one_line(tiny_overrides, tmp_path, capsys):
    torch = pytest.importorskip("torch")  # optional (the 'bench' extra); .pth files need it
    tensors = pretrained.read_safetensors(
        os.path.join(REPO, "tests", "fixtures", "pretrained", "vgg16_tiny.safetensors")
    )
    torch.save({"model": {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, "epoch": 3}, tmp_path / "m.pth")
    loaded = pretrained.read_state_dict(str(tmp_path / "m.pth"))  # a training checkpoint's form: its state dict
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)

    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({}, tmp_path / "empty_dict.pth")
    for name, message in [("empty.pth", "torch.load could not read"), ("empty_dict.pth", "holds an empty dict")]:
        workdir = tmp_path / f"{name}.run"
        args = train_args(tiny_overrides(), workdir, **{"model.encoder_weights": tmp_path / name})
        code, err = exit_status(train.main, args, capsys)
        line = err.strip().splitlines()[-1]  # (the lines before: a first preparation of the dataset)
        assert code == 2 and line.startswith("segjax-train: error:") and "Traceback" not in err, err
        assert f"{tmp_path / name}" in line and message in line and not workdir.exists()


def test_eval_of_the_test_split_and_the_mode_of_written_files(trained_run, tmp_path):
    report = evaluate.evaluate_checkpoint(trained_run[0], split="test", write=False, verbose=False)
    assert report["split"] == "test" and report["scores"]["confusion_matrix"]
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.json").st_mode & 0o777 == 0o644


# --- 6. readers that never race writers ---------------------------------------------------------------------------
def test_a_step_removed_while_it_is_read_is_resolved_once_more(run_copy, monkeypatch):
    workdir, _ = run_copy
    real_resolve = checkpoint_lib.Checkpointer.resolve_step
    calls = []

    def resolve_a_removed_step_first(self, step):  # as if rotation removed step 3 between listing and reading
        calls.append(step)
        return 3 if len(calls) == 1 else real_resolve(self, step)

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "resolve_step", resolve_a_removed_step_first)
    assert run_lib.restore(workdir)[2] == 4 and calls == ["latest", "latest"]


def test_a_step_that_rotation_is_deleting_is_resolved_once_more(run_copy, monkeypatch, caplog):
    workdir, _ = run_copy
    real_all_steps, real_restore_meta = checkpoint_lib.Checkpointer.all_steps, checkpoint_lib.Checkpointer.restore_meta
    published = []

    def all_steps(self):  # step 4 is saved while step 2 is read
        return [s for s in real_all_steps(self) if s != 4 or published]

    def restore_meta(self, step):  # orbax deletes a rotated step file by file: for a moment it looks damaged
        if step == 2 and not published:
            published.append(4)
            raise self._damaged(2, "meta", "metadata missing")
        return real_restore_meta(self, step)

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "all_steps", all_steps)
    monkeypatch.setattr(checkpoint_lib.Checkpointer, "restore_meta", restore_meta)
    with caplog.at_level(logging.WARNING, logger="segjax.run"):
        assert run_lib.restore(workdir)[2] == 4
    assert published and "damaged" not in caplog.text


def test_evaluations_while_a_run_checkpoints_every_step_exit_0_or_give_one_line(tiny_overrides, tmp_path, capsys):
    more = {"num_train_steps": 30, "log_every_steps": 1, "eval_every_steps": 30, "checkpoint_every_steps": 1}
    workdir = tmp_path / "live"
    process = subprocess.Popen(
        [sys.executable, "-m", "segjax.train", *train_args(tiny_overrides(), workdir, **more)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = workdir / "checkpoints"
    while process.poll() is None and not (checkpoints.is_dir() and any(p.isdigit() for p in os.listdir(checkpoints))):
        time.sleep(0.02)  # until the first checkpoint is published (orbax renames its folder to the step when done)
    args = [f"--workdir={workdir}", "--config.eval.num_images_to_plot=0"]
    results = []
    while process.poll() is None and len(results) < 5:  # as many as fit into the run, however fast it is
        results.append(exit_status(evaluate.main, args, capsys))
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    results.append(exit_status(evaluate.main, args, capsys))  # against the final checkpoint: always there
    for code, err in results:
        assert "Traceback" not in err and code in (0, 2), err[-3000:]
        if code == 2:  # a documented refusal (e.g. a step removed twice while it was read): one line
            assert err.strip().splitlines()[-1].startswith("segjax-eval: error:"), err[-3000:]
    assert results[-1][0] == 0


# --- 7. damaged checkpoints ---------------------------------------------------------------------------------------
def _largest_file(folder) -> str:
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["cut_data_file", "no_meta_metadata", "no_state_metadata"])
def test_a_damaged_checkpoint_gives_one_line_and_latest_falls_back(run_copy, damage, capsys, caplog):
    workdir, _ = run_copy
    step_dir = os.path.join(workdir, "checkpoints", "4")
    if damage == "cut_data_file":
        path = _largest_file(os.path.join(step_dir, "state"))
        os.truncate(path, os.path.getsize(path) // 2)
    elif damage == "no_meta_metadata":
        os.remove(os.path.join(step_dir, "meta", "metadata"))
    else:
        os.remove(os.path.join(step_dir, "state", "_METADATA"))
    before = snapshot(workdir)
    code, err = exit_status(evaluate.main, [f"--workdir={workdir}", "--step=4"], capsys)
    assert code == 2 and "The checkpoint of step 4 is damaged" in err and "Traceback" not in err
    assert "does not match" not in err and snapshot(workdir) == before
    with caplog.at_level(logging.WARNING, logger="segjax.run"):
        assert run_lib.restore(workdir)[2] == 2
    assert "step 4 is damaged" in caplog.text and "newest intact checkpoint before it" in caplog.text


def _cut_data_file(step_dir) -> None:
    path = _largest_file(os.path.join(step_dir, "state"))
    os.truncate(path, os.path.getsize(path) // 2)


def test_a_resume_falls_back_from_a_damaged_latest_checkpoint(run_copy, trained_run, caplog):
    workdir, config = run_copy
    _cut_data_file(os.path.join(workdir, "checkpoints", "4"))
    with caplog.at_level(logging.WARNING, logger="segjax.run"):
        scores = train.train_and_evaluate(config, workdir)
    (line,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert "The checkpoint of step 4 is damaged" in line and "resuming from step 2" in line
    assert checkpoint_lib.Checkpointer(workdir, read_only=True).all_steps() == [2, 4]  # step 4 saved again
    assert os.listdir(os.path.join(workdir, run_lib.DAMAGED_DIR)) == ["4"]  # the damaged one kept aside
    assert scores["mean_iou"] == pytest.approx(trained_run[2]["mean_iou"], abs=1e-6)  # as if never damaged


def test_a_resume_with_every_checkpoint_damaged_gives_one_line(run_copy, tiny_overrides, capsys):
    workdir, _ = run_copy
    for step in (2, 4):
        _cut_data_file(os.path.join(workdir, "checkpoints", str(step)))
    before = snapshot(workdir)
    code, err = exit_status(train.main, train_args(tiny_overrides(), workdir), capsys)
    assert code == 2 and "No intact checkpoint in" in err and "steps 4, 2 are damaged" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(workdir) == before


# --- 8. truncated images ------------------------------------------------------------------------------------------
def test_a_folder_dataset_reports_truncated_images_and_masks_by_name(folder_dataset, tmp_path):
    dataset = folder_dataset(tmp_path)
    dataset.write_random("train", [(64, 64)] * 3)
    train_dir = tmp_path / "data" / "train"
    rng = np.random.default_rng(1)  # noise: a PNG whose pixel data is most of the file
    Image.fromarray(rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)).save(train_dir / "images" / "x0.png")
    dataset.write_pair("train", "x1", rng.integers(0, 3, size=(64, 64)).astype(np.uint8))
    for path in (train_dir / "images" / "x0.png", train_dir / "masks" / "x1.png"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the header intact, the pixels cut short
    before = snapshot(train_dir)
    pairs, problems = folder_lib.check_split(str(tmp_path / "data"), "train", 3, 255)
    assert [name for name, _, _ in pairs] == ["x2"]
    assert len(problems) == 2
    assert "x0.png: unreadable image" in problems[0] and "x1.png: unreadable mask" in problems[1]
    assert snapshot(train_dir) == before
