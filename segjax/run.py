"""A run in a workdir: its stored config (written when it starts, completed with the defaults of keys added
since, diffed against a new one), the check that keeps a model from changing under its checkpoints, and the states
a command starts from: restored for evaluation, resumed for training, or fresh (from its initialisers, an
encoder weights file, or another run: model.init_from).

  <workdir>/config.json     the resolved config (`save_config`, read back by `stored_config`)
  <workdir>/checkpoints/    orbax checkpoints (segjax.checkpoint)
"""

from __future__ import annotations

import json
import logging
import os

import ml_collections

from segjax import checkpoint as checkpoint_lib
from segjax import config as config_lib
from segjax import steps
from segjax.files import jsonable, write_atomic
from segjax.models import pretrained
from segjax.task import Task

log = logging.getLogger("segjax.run")

CONFIG_FILE = "config.json"


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
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise RunError(f"Workdir {workdir} does not exist; pass the --workdir of a segjax-train run.")
    if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        raise RunError(f"{workdir} has no {CONFIG_FILE}: it is not a segjax-train workdir.")
    return with_defaults(_load(workdir), config_lib.section_defaults())


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
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
        return ml_collections.ConfigDict(json.load(f))


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
    workdir = os.path.abspath(workdir)
    stored = stored_config(workdir)  # also checks that workdir is a segjax-train workdir
    config = stored if config is None else config
    if not os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
        raise RunError(f"No checkpoint found in {workdir} (no checkpoints/ folder); train first (segjax-train).")
    task = Task(config, workdir)
    checkpoints = task.checkpointer(read_only=True)
    try:
        resolved = checkpoints.resolve_step(step)
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
    except checkpoint_lib.CheckpointError as e:
        raise RunError(str(e)) from None
    finally:
        checkpoints.close()
    return task, state, resolved


def start_training(task: Task, *, primary: bool) -> tuple[checkpoint_lib.Checkpointer, steps.TrainState, dict | None]:
    """Opens the run in task.workdir for training: (its checkpointer, the host state to continue from, that state's
    validation scores or None). The state is the latest checkpoint's, or fresh (`initial_weights`) when there is
    none; weights that do not fit are refused before anything is written. Process 0 (`primary`) writes the config,
    with a warning naming what changed since the run started."""
    workdir = task.workdir
    latest = None
    if os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
        reader = checkpoint_lib.Checkpointer(workdir, read_only=True)
        latest = reader.latest_step()
        reader.close()
    weights = initial_weights(task) if latest is None else None
    os.makedirs(workdir, exist_ok=True)
    if primary and os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        changed = changes_since_start(task.config, workdir)
        if changed:
            log.warning("The config differs from the one this workdir was started with:\n  %s", "\n  ".join(changed))
    if primary:
        save_config(task.config, workdir)
    checkpoints = task.checkpointer()
    if latest is None:
        return checkpoints, task.fresh_state(weights), None
    state, meta = checkpoints.restore(latest, task.abstract_state())
    log.info("Resuming from the checkpoint of step %d in %s", latest, checkpoints.directory)
    return checkpoints, state, meta.get("scores")


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
        weights = _weights_of_run(os.path.abspath(os.path.expanduser(spec.init_from)), variables)
    else:
        return None
    log.info("%s", weights.summary())
    return weights


def _weights_of_run(workdir: str, variables: dict) -> pretrained.LoadedWeights:
    """model.init_from: the latest checkpoint of the run in `workdir`, matched to `variables`."""
    if not os.path.isdir(checkpoint_lib.checkpoint_dir(workdir)):
        raise pretrained.PretrainedWeightsError(
            f"model.init_from {workdir} has no checkpoints/ folder; point it at a segjax-train workdir that has saved "
            "a checkpoint."
        )
    checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise pretrained.PretrainedWeightsError(f"model.init_from {workdir} has no finished checkpoint yet.")
        return pretrained.weights_from_run(workdir, step, checkpoints.restore_variables(step), variables)
    finally:
        checkpoints.close()
