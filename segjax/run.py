"""A run in a workdir: its stored config (written when it starts, completed with the defaults of keys added
since, diffed against a new one), the check that keeps a model from changing under its checkpoints, the lock that
keeps one training process per workdir, and the states a command starts from: restored for evaluation, resumed for
training, or fresh (from its initialisers, an encoder weights file, or another run: model.init_from).

  <workdir>/config.json     the resolved config (`save_config`, read back by `stored_config`); written once, when the
                            run starts (no checkpoint yet); a resume never rewrites it, it warns about what differs
  <workdir>/train.lock      held by process 0 of the training run while it runs (`WorkdirLock`); holds its PID and
                            host
  <workdir>/checkpoints/    orbax checkpoints (segjax.checkpoint)
  <workdir>/damaged_checkpoints/  the damaged latest steps a resume fell back from, moved out of the way (kept)

Everything a training command can refuse (workdir, stored config, model changes, checkpoint shapes, weights) is
checked before its first write, so a refused command leaves the workdir byte-identical.

A workdir is a local folder or a URI of any `etils.epath` backend (gs://bucket/run): every read and write of it goes
through `segjax.files` (`as_path`, `write_atomic`), and orbax writes the checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket

import jax
import ml_collections
from jax.experimental import multihost_utils

from segjax import checkpoint as checkpoint_lib
from segjax import config as config_lib
from segjax import steps
from segjax.files import absolute, as_path, is_local, jsonable, write_atomic
from segjax.models import pretrained
from segjax.task import Task

log = logging.getLogger("segjax.run")

CONFIG_FILE = "config.json"
LOCK_FILE = "train.lock"
DAMAGED_DIR = "damaged_checkpoints"


class RunError(ValueError):
    """A workdir, checkpoint or config that does not fit the command: one message, exit status 2, nothing written."""


# --- the stored config ------------------------------------------------------------------------------------------
def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved `config` as <workdir>/config.json (atomically); returns its path."""
    path = os.path.join(workdir, CONFIG_FILE)
    write_atomic(path, _to_json(config) + "\n")
    return path


def stored_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config the run in `workdir` was started with, completed with the defaults of keys added since
    (`config.section_defaults`); RunError if `workdir` is not a segjax-train workdir."""
    workdir = check_workdir(workdir)
    if not as_path(workdir).is_dir():
        raise RunError(f"Workdir {workdir} does not exist; pass the --workdir of a segjax-train run.")
    if not (as_path(workdir) / CONFIG_FILE).exists():
        raise RunError(f"{workdir} has no {CONFIG_FILE}: it is not a segjax-train workdir.")
    return with_defaults(_load(workdir), config_lib.section_defaults())


def check_workdir(workdir: str) -> str:
    """`workdir` as an absolute path or a URI (`segjax.files.absolute`); RunError if it is empty, names something
    that is not a folder, or has a scheme no installed epath backend serves (gs:// needs gcsfs)."""
    if not str(workdir).strip():
        raise RunError("--workdir is empty; pass the folder of the run (e.g. --workdir=runs/unet).")
    try:
        workdir = absolute(workdir)
        path = as_path(workdir)
        is_file = path.exists() and not path.is_dir()
    except (KeyError, NotImplementedError, ImportError) as e:  # make_path's KeyError: a scheme epath does not know
        raise RunError(
            f"Workdir {workdir} cannot be reached ({type(e).__name__}: {e}); use a local folder, or install the "
            "file system of its scheme (gs://: pip install gcsfs)."
        ) from None
    if is_file:
        raise RunError(f"Workdir {workdir} is a file, not a folder; pass another --workdir.")
    return workdir


def with_defaults(config: ml_collections.ConfigDict, sections: dict) -> ml_collections.ConfigDict:
    """`config` with every key it lacks from the section defaults {name: ConfigDict} added (recursively), its own
    values kept: a run's stored config read by a newer segjax."""
    merged = config.to_dict()
    for name, defaults in sections.items():
        merged[name] = _fill(merged.get(name, {}), defaults.to_dict())
    return ml_collections.ConfigDict(merged)


def changes_since_start(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """Keys where `config` differs from the config the run in `workdir` was started with.

    Compared as stored: the JSON round trip turns tuples into lists, which is no change.
    """
    return diff(_load(workdir).to_dict(), json.loads(_to_json(config)))


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every dotted key whose value differs between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff(a, b, name + "."))
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def model_changes(trained: dict, config: ml_collections.ConfigDict) -> list[str]:
    """How `config.model` differs from the model config a checkpoint recorded (`trained`); keys newer than the
    checkpoint are left out (they keep their default)."""
    known = set(config_lib.flat_keys(trained, "model."))
    now = jsonable(config.model.to_dict())
    return [c for c in diff(trained, now, "model.") if c.split(":")[0] in known]


def _to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def _load(workdir: str) -> ml_collections.ConfigDict:
    """The stored config as written; RunError naming the file if it is not a config segjax wrote."""
    path = os.path.join(workdir, CONFIG_FILE)
    try:
        values = json.loads(as_path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(
            f"{path} cannot be read as JSON ({e}); restore the run's config.json (or start a new run)."
        ) from None
    if not isinstance(values, dict) or not isinstance(values.get("model"), dict) or "data" not in values:
        raise RunError(
            f"{path} is not a segjax config (a JSON object with 'model' and 'data' sections); restore the run's "
            "config.json (or start a new run)."
        )
    return ml_collections.ConfigDict(values)


def _fill(values: dict, defaults: dict) -> dict:
    out = dict(values)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(default, dict) and isinstance(out[key], dict):
            out[key] = _fill(out[key], default)
    return out


# --- states -------------------------------------------------------------------------------------------------------
def restore(workdir: str, step="latest", config=None) -> tuple[Task, steps.TrainState, int]:
    """(task, host state, checkpoint step) of a checkpoint of the run in `workdir`, restored read-only (safe while
    training still writes to the workdir).

    config: the run's config (default: its stored config); another one may change how the data is read and
    evaluated, not the model (checked against what the checkpoint recorded: keys and, on restore, shapes).
    Every user error is a RunError naming the fix.
    """
    workdir = check_workdir(workdir)
    stored = stored_config(workdir)  # also checks that workdir is a segjax-train workdir
    config = stored if config is None else config
    if not as_path(checkpoint_lib.checkpoint_dir(workdir)).is_dir():
        raise RunError(f"No checkpoint found in {workdir} (no checkpoints/ folder); train first (segjax-train).")
    task = Task(config, workdir)
    try:
        checkpoints = task.checkpointer(read_only=True)
    except checkpoint_lib.CheckpointError as e:
        raise RunError(str(e)) from None
    try:
        state, resolved, damaged = _restore_intact(checkpoints, step, lambda s: _restore_checked(task, checkpoints, s))
    except checkpoint_lib.CheckpointError as e:
        raise RunError(str(e)) from None
    finally:
        checkpoints.close()
    if damaged:
        log.warning("%s; using step %d, the newest intact checkpoint before it.", _damaged_note(damaged), resolved)
    return task, state, resolved


def _restore_intact(checkpoints: checkpoint_lib.Checkpointer, step, read) -> tuple:
    """(read(s), s, the damaged steps passed over: DamagedCheckpointErrors, newest first) for the checkpoint s of
    `step` ('latest' | 'best' | N), read while a training may still write the workdir: a step that rotation removed
    meanwhile is resolved once more, and with 'latest' a damaged step falls back to the newest intact one before it
    (what evaluation and a training's resume share). RunError when every step is damaged.

    A step that looks damaged while a newer one has been saved since it was listed is resolved once more too: orbax
    deletes a rotated step file by file, so its folder can lack files for a moment before it is gone."""
    retried, damaged = False, []
    while True:
        listed = checkpoints.all_steps()
        if not damaged:
            resolved = checkpoints.resolve_step(step)
        else:
            older = [s for s in listed if s < damaged[-1].step]
            if not older:
                raise RunError(
                    f"No intact checkpoint in {checkpoints.directory}: {_damaged_note(damaged)}; restore the folder "
                    "from a copy, or move it aside to train from the start (segjax-train)."
                )
            resolved = older[-1]
        try:
            return read(resolved), resolved, damaged
        except checkpoint_lib.CheckpointGoneError:
            if retried or step not in ("latest", "best"):
                raise
            retried = True
        except checkpoint_lib.DamagedCheckpointError as e:
            if (
                not retried
                and step in ("latest", "best")
                and max(checkpoints.all_steps(), default=-1) > max(listed, default=-1)
            ):
                retried, damaged = True, []  # a training saved meanwhile: rotation may be removing this step
                continue
            if step != "latest":
                raise
            damaged.append(e)


def _damaged_note(damaged: list) -> str:
    """'The checkpoint of step 4 is damaged (<folder>: <cause>)', or of several steps (the newest one's cause)."""
    if len(damaged) == 1:
        return f"The checkpoint of step {damaged[0].step} is damaged ({damaged[0].cause})"
    listed = ", ".join(str(e.step) for e in damaged)
    return f"The checkpoints of steps {listed} are damaged (step {damaged[0].step}: {damaged[0].cause})"


def _move_aside(workdir: str, damaged: list) -> str:
    """Moves the damaged steps' folders to <workdir>/damaged_checkpoints (kept for inspection; a resumed run saves
    those steps again, which orbax refuses while they exist); returns that folder."""
    target = as_path(workdir) / DAMAGED_DIR
    target.mkdir(parents=True, exist_ok=True)
    for e in damaged:
        name, n = str(e.step), 0
        while (target / name).exists():
            n += 1
            name = f"{e.step}-{n}"
        (as_path(checkpoint_lib.checkpoint_dir(workdir)) / str(e.step)).rename(target / name)
    return str(target)


def _restore_checked(task: Task, checkpoints: checkpoint_lib.Checkpointer, resolved: int) -> steps.TrainState:
    """The state of checkpoint `resolved`, checked against the task's config (classes, model) and for finiteness."""
    config = task.config
    meta = checkpoints.restore_meta(resolved)
    if meta.get("num_classes") != task.num_classes:
        raise RunError(
            f"The checkpoint of step {resolved} was trained with num_classes={meta.get('num_classes')}"
            f" but the config's dataset {config.data.name!r} has {task.num_classes} classes; use "
            "the config the run was trained with (its workdir's config.json)."
        )
    changed = model_changes(meta.get("model") or {}, config)
    if changed:
        raise RunError(
            f"The config changes the model the checkpoint of step {resolved} was trained as ({'; '.join(changed)})"
            ": evaluation cannot change the model; drop those overrides (eval.*, data.* and the like are fine)."
        )
    state, _ = checkpoints.restore(resolved, task.abstract_state())
    _check_finite(state, resolved, checkpoints)
    return state


def start_training(task: Task, *, primary: bool) -> tuple[checkpoint_lib.Checkpointer, steps.TrainState, dict | None]:
    """Opens the run in task.workdir for training: (its checkpointer, the host state to continue from, that state's
    validation scores or None). The state is the latest checkpoint's, or fresh (`initial_weights`) when there is
    none; a damaged latest checkpoint falls back to the newest intact one (`_restore_intact`, as evaluation does),
    and the damaged ones are moved aside once the lock is held. Everything that can be refused is checked first (the
    workdir; on a resume the stored config, the model and the checkpoint; on a start the weights); then process 0
    (`primary`) takes the workdir's lock (`WorkdirLock`, released by `Checkpointer.close`) and, on a start, writes
    config.json. A resume keeps config.json as the run's record and warns about the keys that differ; it refuses a
    change of the model."""
    workdir = check_workdir(task.workdir)
    latest, damaged = None, []
    if as_path(checkpoint_lib.checkpoint_dir(workdir)).is_dir():
        try:
            reader = checkpoint_lib.Checkpointer(workdir, read_only=True)
        except checkpoint_lib.CheckpointError as e:
            raise RunError(str(e)) from None
        try:
            latest = reader.latest_step()
            if latest is not None:
                (state, meta), resumed, damaged = _restore_intact(
                    reader, "latest", lambda s: _resume_state(task, reader, s)
                )
        except checkpoint_lib.CheckpointError as e:
            raise RunError(str(e)) from None
        finally:
            reader.close()
    if latest is None:
        weights = initial_weights(task)
    else:
        changed = changes_since_start(task.config, workdir) if (as_path(workdir) / CONFIG_FILE).exists() else []
        if primary and changed:
            log.warning(
                "The config differs from the one this run was started with; %s keeps the run's record (resume with "
                "the same config to reproduce it):\n  %s",
                os.path.join(workdir, CONFIG_FILE),
                "\n  ".join(changed),
            )
    as_path(workdir).mkdir(parents=True, exist_ok=True)  # the first write
    lock = WorkdirLock(workdir).acquire() if primary else None
    try:
        if latest is None and primary:
            if (as_path(workdir) / CONFIG_FILE).exists():  # started before, but saved no checkpoint
                changed = changes_since_start(task.config, workdir)
                if changed:
                    log.warning(
                        "Restarting a run that saved no checkpoint, with a new config:\n  %s", "\n  ".join(changed)
                    )
            save_config(task.config, workdir)
        checkpoints = task.checkpointer()
        checkpoints.lock = lock
        if latest is not None and checkpoints.latest_step() != latest:  # another run saved while this one waited
            raise RunError(f"{workdir} changed while this run started (a checkpoint was saved); run it again.")
        if damaged:
            if primary:
                log.warning(
                    "%s; resuming from step %d, the newest intact checkpoint before it (the damaged steps are moved "
                    "to %s).",
                    _damaged_note(damaged),
                    resumed,
                    _move_aside(workdir, damaged),
                )
            if jax.process_count() > 1:  # every process lists the steps after process 0 moved them
                multihost_utils.sync_global_devices("segjax: damaged checkpoints moved aside")
            checkpoints.all_steps()  # reloads the list of steps orbax checks a save against
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if latest is None:
        return checkpoints, task.fresh_state(weights), None
    log.info("Resuming from the checkpoint of step %d in %s", resumed, checkpoints.directory)
    return checkpoints, state, meta.get("scores")


def _resume_state(task: Task, reader: checkpoint_lib.Checkpointer, step: int) -> tuple[steps.TrainState, dict]:
    """The state and meta of checkpoint `step` to resume from; RunError if the config changes the model or the
    checkpoint is not finite, CheckpointError if it does not fit or is damaged."""
    meta = reader.restore_meta(step)
    changed = model_changes(meta.get("model") or {}, task.config)
    if changed:
        raise RunError(
            f"The config changes the model of the run in {task.workdir} ({'; '.join(changed)}): a resume cannot "
            "change the model; drop those overrides, or train into a new --workdir (model.init_from starts from "
            "this run's weights)."
        )
    state, meta = reader.restore(step, task.abstract_state())
    _check_finite(state, step, reader)
    return state, meta


def _check_finite(state: steps.TrainState, step: int, checkpoints: checkpoint_lib.Checkpointer) -> None:
    """RunError if a restored checkpoint holds a non-finite value (one written before segjax refused them)."""
    if not checkpoint_lib.all_finite(state):
        raise RunError(
            f"The checkpoint of step {step} in {checkpoints.directory} holds non-finite values "
            f"({', '.join(checkpoint_lib.non_finite_paths(state))}); pick a finite one with --step (steps: "
            f"{checkpoints.all_steps()}), or remove it to resume from an earlier one."
        )


class WorkdirLock:
    """One training process per workdir, held by process 0 for the run's lifetime through <workdir>/train.lock,
    which holds the holder's PID and host so that a refused second run names them. Evaluation and prediction take
    no lock: they read finished checkpoints only.

    On the local file system (NFS included) the lock is an advisory fcntl.flock on that file: the kernel drops it
    when its process dies, so a lock left by a crashed run is taken over (with a log line).

    Elsewhere (an object store: no POSIX locks) the lock is the file's existence: written when taken, removed when
    released. That is weaker, and said so in docs/distributed.md: taking it is not atomic (two runs started within
    moments of each other can both pass; each reads its own line back, which catches most such races), and a
    process killed without its clean exit (SIGKILL, a lost host) leaves the file behind. A left-behind file is taken
    over when it names a process of this host that is no longer running; any other holder is refused with a
    message naming the file to remove once that run is known to have ended."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._file = None
        self._holder = None  # the line this process wrote into a lock file off the local file system

    def acquire(self) -> WorkdirLock:
        """Takes the lock, or RunError naming the holder; the file's content is left as it was when refused."""
        if not is_local(self.path):
            return self._acquire_file()
        f = open(self.path, "a+")  # noqa: SIM115 -- held open for the run's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunError(
                f"The workdir {os.path.dirname(self.path)} is in use by another segjax-train ({holder}); wait for it "
                f"to end, stop it, or train into another --workdir."
            ) from None
        f.seek(0)
        previous = f.read().strip()
        if previous:
            log.warning("Taking over %s: its holder (%s) ended without releasing it.", self.path, previous)
        f.seek(0)
        f.truncate()
        f.write(_holder_line())
        f.flush()
        self._file = f
        return self

    def _acquire_file(self) -> WorkdirLock:
        """The lock of a workdir off the local file system: the lock file's existence (see the class docstring)."""
        path = as_path(self.path)
        previous = path.read_text().strip() if path.exists() else ""
        if previous and not _ended_on_this_host(previous):
            raise RunError(
                f"The workdir {os.path.dirname(self.path)} is in use by another segjax-train ({previous}), or that run "
                f"was killed without releasing it: wait for it to end, or stop it; if it has ended, remove "
                f"{self.path} (a lock off the local file system is a file, which a killed process leaves behind); "
                "or train into another --workdir."
            )
        if previous:
            log.warning("Taking over %s: its holder (%s) ended without releasing it.", self.path, previous)
        line = _holder_line()
        write_atomic(path, line)
        if path.read_text() != line:  # another run wrote it meanwhile
            raise RunError(
                f"The workdir {os.path.dirname(self.path)} was taken by another segjax-train while this one started "
                f"({path.read_text().strip()}); wait for it to end, stop it, or train into another --workdir."
            )
        self._holder = line
        return self

    def release(self) -> None:
        """Empties the file (a clean end) and drops the lock; off the local file system, removes the lock file
        (unless another run has taken it over meanwhile)."""
        if self._holder is not None:
            path, self._holder, line = as_path(self.path), None, self._holder
            if path.exists() and path.read_text() == line:
                path.unlink(missing_ok=True)
            return
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def _holder_line() -> str:
    return f"PID {os.getpid()} on host {socket.gethostname()}\n"


def _ended_on_this_host(holder: str) -> bool:
    """Whether the lock holder `holder` ('PID <n> on host <name>') was a process of this host that has ended."""
    match = re.fullmatch(r"PID (\d+) on host (\S+)", holder)
    if match is None or match.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(match.group(1)), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, run by another user
        pass
    return False


def initial_weights(task: Task) -> pretrained.LoadedWeights | None:
    """What a fresh run starts from besides its initialisers (None: nothing): model.encoder_weights (a file matched
    to the encoder) or model.init_from (the latest checkpoint of another run, matched by name and shape). Raises a
    PretrainedWeightsError (a ValueError) naming what does not fit; logs what was loaded."""
    spec = task.model_spec
    abstract = task.abstract_state()
    variables = {"params": abstract.params, "batch_stats": abstract.batch_stats}
    if spec.encoder_weights is not None:
        weights = pretrained.load_encoder_weights(os.path.expanduser(spec.encoder_weights), task.model, variables)
    elif spec.init_from is not None:
        weights = _weights_of_run(absolute(spec.init_from), variables)
    else:
        return None
    if not checkpoint_lib.all_finite(weights.arrays):
        raise pretrained.PretrainedWeightsError(
            f"{weights.path} holds non-finite values ({', '.join(checkpoint_lib.non_finite_paths(weights.arrays))}); "
            "a run cannot start from them: use another weights file or run."
        )
    log.info("%s", weights.summary())
    return weights


def _weights_of_run(workdir: str, variables: dict) -> pretrained.LoadedWeights:
    """model.init_from: the latest checkpoint of the run in `workdir`, matched to `variables`: the weights that run
    evaluates with (its moving average where it keeps one)."""
    if not as_path(checkpoint_lib.checkpoint_dir(workdir)).is_dir():
        raise pretrained.PretrainedWeightsError(
            f"model.init_from {workdir} has no checkpoints/ folder; point it at a segjax-train workdir that has saved "
            "a checkpoint."
        )
    checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise pretrained.PretrainedWeightsError(f"model.init_from {workdir} has no finished checkpoint yet.")
        source, average = checkpoints.restore_variables(step)
        return pretrained.weights_from_run(workdir, step, source, variables, average=average)
    finally:
        checkpoints.close()
