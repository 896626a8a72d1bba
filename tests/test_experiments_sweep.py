"""experiments.sweep and experiments.command: expansion, skip, resume, parallel arms, staged runs, the command line.

The runner's bookkeeping is tested with fake train/analyze functions (no compilation). (Resuming from the training's
own checkpoint is segjax.train's behaviour, tested there; the runner's part is to call it again on the same workdir
and to mark a run done only after its analysis, tested here with fakes.)
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from experiments import command, definitions, reproductions
from experiments import sweep as sweep_lib
from experiments import upsampling_ablation as ua
from segjax import cli
from segjax.files import write_atomic, write_json
from segjax.train import Interrupted, StopSignals

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


def test_only_a_staged_arm_keeps_the_arms_it_starts_from():
    # --only=fcn8s_staged used to stop with a ValueError traceback: its sweep lost the arms its runs start from.
    staged = reproductions.PRESETS["fcn_staged_128_cpu"]()
    part = command.narrowed(staged, (0, 1), {"fcn/fcn8s_staged"})
    assert [a.label for a in part.arms] == ["fcn32s_fixed", "fcn16s_staged", "fcn8s_staged"] and part.seeds == (0, 1)
    assert [a.label for a in command.narrowed(staged, (0,), {"fcn/fcn8s_at_once"}).arms] == ["fcn8s_at_once"]


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


def test_runs_record_their_kernels_and_onednn_sweeps_keep_no_compilation_cache(tmp_path, monkeypatch):
    """XLA cannot store programs with oneDNN calls (segjax.cli.ONEDNN_FLAG), so a sweep with them makes no cache;
    a run resumed under other flags keeps the record of the ones it started with."""
    runs = sweep_lib.expand(_fake_sweep())[:1]
    record = runs[0].workdir(tmp_path) / sweep_lib.RUN_FILE
    started = os.environ.get("XLA_FLAGS", "")
    (tmp_path / "crash_once").touch()
    assert _quiet_sweep(runs, tmp_path) == {runs[0].name: "failed"}
    assert json.loads(record.read_text())["xla_flags"] == [started]
    monkeypatch.setenv("XLA_FLAGS", f"{started} {cli.ONEDNN_FLAG}")
    assert _quiet_sweep(runs, tmp_path) == {runs[0].name: "resumed"}
    assert json.loads(record.read_text())["xla_flags"] == [started, os.environ["XLA_FLAGS"]]
    sweep_lib.configure_jax(tmp_path / "onednn")
    assert not (tmp_path / "onednn" / ".jax_cache").exists()


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


def _train_and_note_the_process(config, workdir):
    """_fake_train, noting its process; a run waits until the other arm's run of its seed has begun too, so that
    both workers are busy at once (a worker that finds no run of its own arm left takes another arm's rather than
    wait, which would make the test depend on timing)."""
    workdir = pathlib.Path(workdir)
    write_atomic(workdir / "trained_by.txt", str(os.getpid()))
    assert _poll(lambda: len(list(workdir.parents[1].glob(f"*/seed{config.seed}/trained_by.txt"))) == 2, 120)
    _fake_train(config, workdir)


def test_each_worker_keeps_to_its_arms(tmp_path):
    """With 2 arms x 2 seeds and 2 workers, each arm's seeds run in one process (which compiles that arm alone):
    each worker begins with an arm of its own and then takes a run of an arm it has run."""
    runs = sweep_lib.expand(_fake_sweep())
    results = sweep_lib.run_sweep(
        runs, tmp_path, jobs=2, train_fn=_train_and_note_the_process, analyze_fn=_fake_analyze, log=lambda s: None
    )
    assert results == {r.name: "trained" for r in runs}
    pids = {r.name: (r.workdir(tmp_path) / "trained_by.txt").read_text() for r in runs}
    assert pids["unet/a/seed0"] == pids["unet/a/seed1"] != pids["unet/b/seed0"] == pids["unet/b/seed1"]


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


# ----------------------------------------------------------------------------------------------------------------
# Stopping a sweep stops its workers


SAVE_SECONDS = 1.0


def _endless_train(config, workdir):
    """Trains until a signal stops it, as segjax.train does: then saves a 'checkpoint' and raises Interrupted. The
    save of seed k takes k x SAVE_SECONDS, so one worker exits while another is still saving (a second signal then
    would abort that save, as it aborts a real one)."""
    workdir = pathlib.Path(workdir)
    with StopSignals() as stops:
        write_atomic(workdir / "pid", str(os.getpid()))  # in training now: a signal is handled as training does
        while not stops.signum:
            time.sleep(0.02)
        time.sleep(config.seed * SAVE_SECONDS)
        write_json(workdir / "checkpoint.json", {"step": 1})
    raise Interrupted(stops.signum, "stopped")


def endless_sweep(out) -> int:
    """The parent process of the test below: two programs, two workers, trained until a signal stops them."""
    runs = sweep_lib.expand(_fake_sweep())[:2]
    try:
        sweep_lib.run_sweep(runs, out, jobs=2, train_fn=_endless_train, analyze_fn=_fake_analyze, log=lambda s: None)
    except Interrupted as e:
        return e.exit_status
    return 0


def _children(pid: int) -> set[int]:
    """The pids of the processes whose parent is `pid`."""
    found = set()
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its new parent may never reap it in a container)


def _poll(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_sweep_leaves_no_worker_and_its_runs_resume(tmp_path, signum):
    """SIGTERM or SIGINT to a --jobs 2 sweep stops its workers (each training saves a checkpoint); SIGKILL leaves
    them orphans, which stop themselves. No worker survives, no run is marked done or failed, and the runs resume."""
    here = pathlib.Path(__file__).resolve().parent
    code = (
        f"import sys; sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]; import test_experiments_sweep as t; "
        f"sys.exit(t.endless_sweep({str(tmp_path)!r}))"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=here.parent)
    runs = sweep_lib.expand(_fake_sweep())[:2]
    pids = [r.workdir(tmp_path) / "pid" for r in runs]
    try:
        assert _poll(lambda: all(p.exists() for p in pids), 180), "the workers did not start training"
        workers = {int(p.read_text()) for p in pids}
        children = _children(parent.pid)
        assert workers <= children
        os.kill(parent.pid, signum)
        status = parent.wait(120)
        assert _poll(lambda: not any(_alive(pid) for pid in children), 120), "a worker survived its sweep"
    finally:
        parent.kill()
        parent.wait()
    assert status == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signum)
    for run in runs:
        workdir = run.workdir(tmp_path)
        assert json.loads((workdir / "checkpoint.json").read_text()) == {"step": 1}  # stopped as training stops
        assert json.loads((workdir / sweep_lib.RUN_FILE).read_text())["config_hash"] == run.config_hash
        leftovers = {sweep_lib.DONE, sweep_lib.ANALYSIS_FILE, sweep_lib.ERROR_FILE}
        assert not leftovers & {p.name for p in workdir.iterdir()}
        assert not list(workdir.glob(".tmp-*"))
    assert _quiet_sweep(runs, tmp_path) == {r.name: "resumed" for r in runs}


def _train_or_be_killed(config, workdir):
    """_fake_train, except that arm b's seed 1 is killed mid-training (SIGKILL, as the out-of-memory killer does)."""
    if config.model.upsample.method == "bilinear" and config.seed == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _fake_train(config, workdir)


def test_a_killed_worker_fails_its_program_and_the_sweep_goes_on(tmp_path):
    runs = sweep_lib.expand(_fake_sweep())
    results = sweep_lib.run_sweep(
        runs, tmp_path, jobs=2, train_fn=_train_or_be_killed, analyze_fn=_fake_analyze, log=lambda s: None
    )
    killed = "unet/b/seed1"
    assert results == {r.name: "failed" if r.name == killed else "trained" for r in runs}
    workdir = runs[-1].workdir(tmp_path)
    assert runs[-1].name == killed and "killed by SIGKILL" in (workdir / sweep_lib.ERROR_FILE).read_text()
    assert not (workdir / sweep_lib.DONE).exists()
    assert _quiet_sweep(runs, tmp_path) == {r.name: "resumed" if r.name == killed else "skipped" for r in runs}


def test_a_worker_stopped_on_its_own_stops_the_sweep(tmp_path):
    """SIGTERM to one worker (not to the sweep): that training saves and its worker exits, and the sweep stops the
    other worker (whose training saves too) and raises Interrupted."""
    runs = sweep_lib.expand(_fake_sweep())[:2]
    pids = [r.workdir(tmp_path) / "pid" for r in runs]

    def stop_one_worker():  # seed 1's, whose save is the slower: the sweep stops seed 0's while it saves
        if _poll(lambda: all(p.exists() for p in pids), 180):
            os.kill(int(pids[1].read_text()), signal.SIGTERM)

    stopper = threading.Thread(target=stop_one_worker)
    stopper.start()
    try:
        with pytest.raises(Interrupted, match="A worker of the sweep was stopped by SIGTERM") as stopped:
            sweep_lib.run_sweep(
                runs, tmp_path, jobs=2, train_fn=_endless_train, analyze_fn=_fake_analyze, log=lambda s: None
            )
    finally:
        stopper.join()
    assert stopped.value.exit_status == 128 + signal.SIGTERM
    for run in runs:
        assert json.loads((run.workdir(tmp_path) / "checkpoint.json").read_text()) == {"step": 1}
        assert not (run.workdir(tmp_path) / sweep_lib.DONE).exists()
