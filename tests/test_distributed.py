"""A multi-process run on localhost: two processes with 2 simulated CPU devices each against one process with 4.

The two processes train a tiny config in one shared workdir, are stopped after 3 of 4 steps (as a preemption
would) and resumed; losses, final parameters and validation scores must match an uninterrupted run of this test
process (4 devices), process 0 alone writes metrics.jsonl, and the checkpoints restore in one process. Then
segjax-eval runs over the two processes and must give the scores one process gets. Plus the settings' errors.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from segjax import config as config_lib
from segjax import distributed, evaluate, train
from segjax.files import read_metrics
from segjax.task import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds for a launch of both processes (about 15 s on 2 idle cores)


def overrides(tiny_overrides) -> list[str]:
    """The tiny config, logging every step, as command-line overrides."""
    values = {**tiny_overrides(), "log_every_steps": 1}
    return [f"--config.{key}={value}" for key, value in values.items()]


def config_of(args: list[str]):
    config = config_lib.load_config_file(os.path.join(REPO, "configs", "unet.py"))
    for arg in args:
        key, _, text = arg[len("--config.") :].partition("=")
        config_lib.override(config, key, text)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], processes: int = 2, devices_per_process: int = 2) -> list[subprocess.Popen]:
    """Starts `command` (a segjax module and its arguments) in `processes` processes joined on localhost."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        no_proxy="127.0.0.1,localhost",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(processes),
        SEGJAX_DISTRIBUTED_TIMEOUT="60",
    )
    return [
        subprocess.Popen(
            [sys.executable, "-m", *command],
            env=dict(env, JAX_PROCESS_ID=str(i)),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]


def finish(running: list[subprocess.Popen], expect: int = 0) -> list[subprocess.CompletedProcess]:
    """Waits for the processes of `start`; each must exit with status `expect`. Returns their CompletedProcess."""
    results = []
    try:
        for p in running:
            out, err = p.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in running:
            p.kill()
    for i, r in enumerate(results):
        assert r.returncode == expect, f"process {i}:\n{r.stderr[-3000:]}"
    return results


def launch(command: list[str], processes: int = 2, devices_per_process: int = 2, expect: int = 0):
    """Runs `command` in `processes` processes joined on localhost (`start`, `finish`)."""
    return finish(start(command, processes, devices_per_process), expect)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("distributed")
    args = overrides(tiny_overrides)
    config = config_of(args)
    single = str(root / "single")
    scores = train.train_and_evaluate(config, single)  # this process: 4 devices; also prepares the dataset
    multi = str(root / "multi")
    command = ["segjax.train", f"--config={REPO}/configs/unet.py", f"--workdir={multi}", *args]
    stopped = launch([*command, "--stop-after-steps=3"])  # checkpoint at step 2, stopped after 3
    resumed = launch(command)
    return config, single, multi, scores, stopped, resumed


def test_two_processes_match_one_process_across_a_restart(runs):
    config, single, multi, scores, stopped, resumed = runs
    assert "process 1 of 2 joined" in stopped[1].stderr and "final validation mIoU" in resumed[0].stdout
    assert "final validation mIoU" not in resumed[1].stdout  # process 0 reports
    one, two = read_metrics(single), read_metrics(multi)
    losses = {r["step"]: r["loss"] for r in one if r["split"] == "train"}
    # Process 0 alone wrote metrics.jsonl: one line per logged step, plus the steps the resumed run logged again
    # (step 3 ran before the stop, after the step-2 checkpoint, and once more after the restart).
    assert [r["step"] for r in two if r["split"] == "train"] == [1, 2, 3, 3, 4]
    for r in two:
        if r["split"] == "train":
            assert r["loss"] == pytest.approx(losses[r["step"]], rel=1e-4), r["step"]
    (val_one,) = [r for r in one if r["split"] == "validation"]
    (val_two,) = [r for r in two if r["split"] == "validation"]
    assert val_two["mean_iou"] == pytest.approx(val_one["mean_iou"], abs=1e-6)
    assert os.listdir(os.path.join(multi, "checkpoints")) and json.load(open(os.path.join(multi, "config.json")))

    # The checkpoints of the two-process run restore in one process, and hold the parameters of the single run.
    task = Task(config, multi)
    states = []
    for workdir in (single, multi):
        checkpoints = Task(config, workdir).checkpointer(read_only=True)
        state, meta = checkpoints.restore(checkpoints.latest_step(), task.abstract_state())
        checkpoints.close()
        states.append(state)
        assert meta["step"] == 4
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), states[0].params, states[1].params
    )


def test_eval_over_two_processes_gives_the_scores_of_one(runs):
    config, single, multi, scores, _, _ = runs
    report = evaluate.evaluate_checkpoint(multi, write=False, verbose=False)
    results = launch(["segjax.evaluate", f"--workdir={multi}", "--config.eval.num_images_to_plot=2"])
    assert "mean_iou" in results[0].stdout and "mean_iou" not in results[1].stdout  # process 0 prints
    with open(os.path.join(multi, "eval", "validation-step4.json")) as f:
        written = json.load(f)
    assert written["scores"]["confusion_matrix"] == report["scores"]["confusion_matrix"]
    assert written["scores"]["mean_iou"] == pytest.approx(report["scores"]["mean_iou"])
    assert sum(map(sum, written["scores"]["confusion_matrix"])) == 6 * 64 * 64  # every pixel once, at 64 px
    assert os.path.exists(os.path.join(multi, "eval", "validation-step4-examples.png"))


def test_pmap_is_refused_in_a_multi_process_run(runs):
    _, _, multi, _, _, _ = runs
    results = launch(["segjax.evaluate", f"--workdir={multi}", "--config.parallelism=pmap"], expect=2)
    for r in results:
        assert "parallelism='pmap' runs on one process's devices" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "env,message",
    [
        ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID not"),
        (
            {"JAX_COORDINATOR_ADDRESS": "localhost", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
            "must be host:port",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "JAX_NUM_PROCESSES='two' must be an integer",
        ),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "0 .. JAX_NUM"),
    ],
)
def test_partial_or_inconsistent_settings_name_the_variable(env, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.settings_from_environment(env)


def test_no_variables_means_one_process():
    assert distributed.settings_from_environment({}) is None and not distributed.initialize({})
    assert distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"})
    assert not distributed.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})


def test_an_unreachable_coordinator_is_a_clear_error_after_the_timeout(tmp_path):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",  # nobody listens there
        JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID="1",
        SEGJAX_DISTRIBUTED_TIMEOUT="3",
    )
    result = subprocess.run(
        [sys.executable, "-m", "segjax.train", f"--config={REPO}/configs/quickstart.py", f"--workdir={tmp_path / 'w'}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "could not reach the coordinator of the multi-process run at JAX_COORDINATOR_ADDRESS=127.0.0.1:" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()
