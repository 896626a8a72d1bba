"""Checking, saving and reloading experiment configs (ml_collections ConfigDicts).

The resolved config of a run (defaults + the family's choices + command-line overrides) is written to
`<workdir>/config.json`; evaluation rebuilds the run from it. Keys are documented in docs/config_reference.md.
"""

from __future__ import annotations

import json
import os
import tempfile

import ml_collections
from ml_collections import config_dict

from segjax.parallel import PARALLELISMS

COMPUTE_DTYPES = ("float32", "bfloat16")
CONFIG_FILE = "config.json"


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the training-loop keys a typo or a wrong value would only break later; ValueError naming the fix."""

    def choice(key, value, valid):
        if value not in valid:
            raise ValueError(f"config.{key}={value!r} is not valid; choose one of: {', '.join(map(str, valid))}.")

    def positive(key, value, allow_none=False):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{key}={value!r} must be a positive integer.")

    choice("parallelism", config.parallelism, PARALLELISMS)
    choice("compute_dtype", config.compute_dtype, COMPUTE_DTYPES)
    positive("num_devices", config.num_devices, allow_none=True)
    for key in (
        "batch_size",
        "eval_batch_size",
        "num_train_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        positive(key, config[key])
    positive("eval.max_batches", config.eval.max_batches, allow_none=True)
    tolerance = config.eval.boundary_tolerance
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0):
        raise ValueError(
            f"config.eval.boundary_tolerance={tolerance!r} must be a non-negative integer (pixels) "
            "or None (SegNet's 0.75% of the image diagonal)."
        )


# Types of keys whose default is None, so `--config.KEY=VALUE` can set them (ml_collections cannot override a
# plain None). Keys not listed here accept any Python literal; their consumers validate the value.
NONE_KEY_TYPES = {
    "num_devices": int,
    "model.base_width": int,
    "model.depth": int,
    "model.dropout": float,
    "model.upsample.method": str,
    "model.upsample.kernel_size": int,
    "model.upsample.init": str,
    "data.data_dir": str,
    "data.train_split": str,
    "data.eval_split": str,
    "data.reduce_zero_label": bool,
    "data.scale_range": tuple,
    "data.embedded.num_train": int,
    "data.embedded.num_validation": int,
    "data.embedded.num_test": int,
}


def make_overridable(config: ml_collections.ConfigDict, prefix: str = "") -> ml_collections.ConfigDict:
    """Turns every None leaf into a typed placeholder (NONE_KEY_TYPES, else any literal), in place; returns it."""
    for key in list(config.keys()):
        path = f"{prefix}{key}"
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            make_overridable(value, path + ".")
        elif value is None and not isinstance(config._fields.get(key), config_dict.FieldReference):
            config[key] = config_dict.placeholder(NONE_KEY_TYPES.get(path, object))
    return config


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def write_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` via a temporary file and a rename, so readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    path = os.path.join(workdir, CONFIG_FILE)
    write_atomic(path, to_json(config) + "\n")
    return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run in `workdir` was started with; FileNotFoundError if there is none."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for the 'config changed on resume' warning)."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff(a, b, name + "."))
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def changes_since_start(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """Keys where `config` differs from the config the run in `workdir` was started with.

    Compared as stored: the JSON round trip turns tuples into lists, which is no change.
    """
    return diff(load_config(workdir).to_dict(), json.loads(to_json(config)))


def load_sibling(config_file: str, name: str = "default"):
    """The module `<name>.py` next to `config_file`: how family configs build on configs/default.py.

    Config files are loaded by path (`--config=configs/unet.py`), not as a package, so `import configs.default`
    would depend on the working directory; this does not.
    """
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"segjax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
