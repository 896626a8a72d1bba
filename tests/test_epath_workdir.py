"""A workdir on a non-default etils.epath backend: fsspec's in-memory file system under a `memory://` scheme, no
network. Training, a resume and segjax-eval write config.json, metrics.jsonl, TensorBoard events, the lock and the
eval report there, and a missed `os` call would not see them. Orbax cannot write there (tensorstore's drivers are
the local file system and GCS; orbax refuses another scheme), so the checkpoints go to a local folder
(`checkpoint_dir` patched): they are the one part of a workdir this test does not put on the backend."""

import json
import os

import fsspec
import pytest
from etils import epath
from etils.epath import backend, gpath

from segjax import checkpoint as checkpoint_lib
from segjax import evaluate, train
from segjax import run as run_lib
from segjax.files import read_metrics


class _MemoryBackend(backend._FileSystemSpecBackend):
    def fs(self, path):
        return fsspec.filesystem("memory")


_BACKEND = _MemoryBackend()


def _memory_parts(*parts) -> str:
    full = "/".join(os.fspath(p) for p in parts)
    return "/memory/" + full[len("memory://") :] if full.startswith("memory://") else full


@epath.register_path_cls("memory://")
class MemoryPath(gpath.PosixGPath):
    """memory://a/b: fsspec's in-memory file system through epath (parts '/', 'memory', 'a', 'b')."""

    def __init__(self, *parts):  # Python 3.12's pathlib takes the parts here (as etils.epath.gpath does)
        super().__init__(_memory_parts(*parts))

    @property
    def _uri_scheme(self):
        return "memory" if self.parts[:2] == ("/", "memory") else None

    @property
    def _backend(self):
        return _BACKEND


@pytest.fixture
def memory_workdir(tmp_path, monkeypatch):
    workdir = f"memory://bucket/{tmp_path.name}/run"
    local = tmp_path / "checkpoints"
    monkeypatch.setattr(checkpoint_lib, "checkpoint_dir", lambda w: str(local))
    yield workdir
    epath.Path(f"memory://bucket/{tmp_path.name}").rmtree(missing_ok=True)


def test_train_resume_and_evaluate_in_a_memory_workdir(memory_workdir, tiny_config, trained_run):
    reference_dir, config, reference = trained_run
    path = epath.Path(memory_workdir)
    assert not os.path.exists(memory_workdir)  # nothing reaches the local file system under that name
    train.train_and_evaluate(config, memory_workdir, max_steps_this_run=3)  # stops after step 3, as a crash
    assert json.loads((path / "config.json").read_text()) == json.loads(json.dumps(config.to_dict(), default=str))
    assert not (path / run_lib.LOCK_FILE).exists()  # released at the end
    scores = train.train_and_evaluate(config, memory_workdir)  # resumes from step 2
    assert scores["confusion_matrix"].tolist() == reference["confusion_matrix"].tolist()
    records = read_metrics(memory_workdir)
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 3, 4]  # the stopped run logged step 3
    final = [r["loss"] for r in records if r["split"] == "train" and r["step"] == 4]
    assert final == [r["loss"] for r in read_metrics(reference_dir) if r["split"] == "train" and r["step"] == 4]
    assert [p.name for p in (path / "tb").iterdir() if p.name.startswith("events.out.tfevents")]
    report = evaluate.evaluate_checkpoint(memory_workdir, verbose=False)
    assert report["path"] == f"{memory_workdir}/eval/validation-step4.json"
    assert json.loads(epath.Path(report["path"]).read_text())["checkpoint_step"] == 4
    assert (path / "eval" / "validation-step4-confusion.png").exists()


def test_the_lock_of_a_memory_workdir_is_a_file(memory_workdir, tiny_config):
    lock = run_lib.WorkdirLock(memory_workdir)
    epath.Path(memory_workdir).mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        with pytest.raises(run_lib.RunError, match="is in use by another segjax-train"):
            run_lib.WorkdirLock(memory_workdir).acquire()
    finally:
        lock.release()
    assert not (epath.Path(memory_workdir) / run_lib.LOCK_FILE).exists()
    # A file left by a process of this host that has ended is taken over.
    (epath.Path(memory_workdir) / run_lib.LOCK_FILE).write_text(f"PID 999999 on host {os.uname().nodename}\n")
    run_lib.WorkdirLock(memory_workdir).acquire().release()
