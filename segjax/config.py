"""Experiment configs (ml_collections ConfigDicts): config files and overrides, the defaults of every section,
checks, and saving and reloading a run's resolved config.

The resolved config of a run (defaults + the family's choices + command-line overrides) is written to
`<workdir>/config.json`; evaluation rebuilds the run from it. Keys are documented in docs/config_reference.md.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from segjax import cli, optim
from segjax import data as data_lib
from segjax import losses as losses_lib
from segjax import models as models_lib
from segjax.parallel import PARALLELISMS

COMPUTE_DTYPES = ("float32", "bfloat16")
# Optional keys, {dotted key: type}: left out of the defaults so that the configs of earlier runs, and their hashes
# (experiments.sweep.config_hash), stay as they were; absent means off. `set_value` and the command line
# (--config.optimizer.ema_decay=0.999) add one to its section.
OPTIONAL_KEYS = {"optimizer.ema_decay": float, "optimizer.lr_multipliers": tuple}


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the top-level keys a typo or a wrong value would only break later; ValueError naming the fix. The
    sections are checked where they are read, once: `segjax.task.Task` makes their specs (`ModelSpec`, `DataSpec`,
    `steps.EvalSpec`, the optimizer, schedule and loss specs)."""

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


def default_eval_config() -> ml_collections.ConfigDict:
    """The `eval` config section with its defaults (documented in docs/config_reference.md)."""
    return ml_collections.ConfigDict(
        {
            "boundary_tolerance": config_dict.placeholder(int),  # pixels; None: SegNet's 0.75% of the diagonal
            "max_batches": config_dict.placeholder(int),  # None: the whole split
            "num_images_to_plot": 8,  # segjax-eval's image / ground truth / prediction grid
            # Every labelled pixel at the mask's own resolution ('whole', 'slide'); 'resize' fits images into
            # data.eval_size first (quick looks, not comparable with papers). Read into segjax.steps.EvalSpec.
            "mode": "whole",
            "window": config_dict.placeholder(object),  # 'slide': int or (h, w); None: the training crop
            "stride": config_dict.placeholder(object),  # 'slide': int or (h, w); None: 2/3 of the window
            "scales": (1.0,),  # test-time multi-scale factors (probabilities averaged)
            "flip": False,  # test-time horizontal flip (probabilities averaged)
            # 'whole' / 'slide': images are padded to their own size rounded up to the stride, grouped by that size;
            # at most this many groups (one compilation each), coarser padding beyond it (segjax.data.size_buckets)
            "max_buckets": 8,
        }
    )


def section_defaults() -> dict:
    """The config sections whose defaults segjax defines, by name: a stored config from an older segjax gets the
    keys added since with these values."""
    return {
        "data": data_lib.default_data_config(),
        "model": models_lib.default_model_config(),
        "loss": losses_lib.default_loss_config(),
        "optimizer": optim.default_optimizer_config(),
        "schedule": optim.default_schedule_config(),
        "eval": default_eval_config(),
    }


def load_sibling(config_file: str, name: str = "default"):
    """The module `<name>.py` next to `config_file`: how family configs build on configs/default.py.

    Config files are loaded by path (`--config=configs/unet.py`), not as a package, so `import configs.default`
    would depend on the working directory; this does not.
    """
    return _load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py"))


def _load_module(path: str):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"segjax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------------------
# Config files, their arguments and command-line overrides


class ConfigError(ValueError):
    """A config file, argument or override a user got wrong; the message names it and the fix."""


def parse_arg(config_file: str, arg: str | None, **options) -> ml_collections.ConfigDict:
    """The options of a config file's argument, `configs/unet.py:ARG`, with their defaults (big_vision's form).

    ARG is `key=value` pairs separated by commas (`preset=small,depth=3`); a bare value sets the first option
    (`small`). Values are Python literals where they parse as one ('3', 'True'), else text. An option whose
    default is a tuple of strings takes one of them, the first being its default. An unknown option, a value of
    another type than its default, or a value outside its choices is a ConfigError naming the valid ones.
    """
    where = os.path.basename(config_file)
    choices = {k: v for k, v in options.items() if isinstance(v, tuple)}
    values = {k: (v[0] if k in choices else v) for k, v in options.items()}
    for i, part in enumerate(p.strip() for p in (arg or "").split(",") if p.strip()):
        name, sep, text = (s.strip() for s in part.partition("="))
        if not sep:
            if i or not options:
                raise ConfigError(
                    f"{where}: argument {part!r} needs a name, e.g. {next(iter(options), 'key')}={part}; "
                    f"options: {_describe(options) or 'none'}."
                )
            name, text = next(iter(options)), part
        if name not in options:
            raise ConfigError(f"{where}: unknown option {name!r}; options: {_describe(options) or 'none'}.")
        value = literal(text)
        default = values[name]
        if name in choices:
            if value not in choices[name]:
                raise ConfigError(f"{where}: {name}={value!r} is not one of {', '.join(choices[name])}.")
        elif default is not None and not _fits(value, type(default)):
            raise ConfigError(
                f"{where}: {name}={text!r} must be {type(default).__name__} like its default {default!r}."
            )
        values[name] = value
    return ml_collections.ConfigDict(values)


def _describe(options: dict) -> str:
    return ", ".join(
        f"{k} ({'|'.join(v)})" if isinstance(v, tuple) else f"{k} (default {v!r})" for k, v in options.items()
    )


def literal(text: str):
    """`text` as a Python literal (1e-3, (32, 32), None), else the text itself (a plain string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _fits(value, wanted: type) -> bool:
    if wanted is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, wanted)


def load_config_file(argument: str) -> ml_collections.ConfigDict:
    """`path/to/config.py[:ARG]` -> that file's `get_config(ARG)` (`get_config()` without ARG).

    A missing file, one that fails to import, or a get_config that raises is a ConfigError naming the file and
    the cause (one line, no traceback).
    """
    path, _, arg = argument.partition(":")
    if not os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        known = sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
        raise ConfigError(
            f"config file {path!r} does not exist" + (f"; files there: {', '.join(known)}" if known else "")
        )
    try:
        module = _load_module(path)
    except Exception as e:  # noqa: BLE001 - any error inside the user's file is reported, not raised
        raise ConfigError(f"config file {path!r} could not be loaded: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config(arg) function.")
    try:
        return module.get_config(arg) if arg else module.get_config()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{path}:{arg}: get_config failed: {type(e).__name__}: {e}") from None


def flat_keys(config, prefix: str = "") -> list[str]:
    """Every leaf key of a config, dotted ('model.upsample.method')."""
    keys = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict | dict):
            keys += flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _leaf(config, key: str):
    """(section holding `key`, its last part); ConfigError with the closest valid keys if it does not exist (an
    absent OPTIONAL_KEYS key exists wherever its section does)."""
    node, parts = config, key.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict | dict) else None
        if not isinstance(node, ml_collections.ConfigDict | dict):
            break
    else:
        if parts[-1] in node and not isinstance(node[parts[-1]], ml_collections.ConfigDict | dict):
            return node, parts[-1]
        if parts[-1] not in node and key in OPTIONAL_KEYS:
            return node, parts[-1]
    keys = flat_keys(config)
    inside = [k for k in keys if k.startswith(key + ".")]
    if inside:
        raise ConfigError(f"config.{key} is a section, not a key; set one of: {', '.join(inside)}.")
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if close:
        raise ConfigError(f"config has no key {key!r}; did you mean {', '.join(close)}?")
    section = node if isinstance(node, ml_collections.ConfigDict | dict) else config
    here = [f"{k}.*" if isinstance(section[k], ml_collections.ConfigDict | dict) else k for k in section.keys()]
    raise ConfigError(f"config has no key {key!r}; keys there: {', '.join(sorted(here))}.")


def set_value(config, key: str, value) -> None:
    """Sets the dotted `key` of `config` (which must exist) to `value`; ConfigError for an unknown key or a type
    the key does not take."""
    node, leaf = _leaf(config, key)
    try:
        with node.unlocked() if isinstance(node, ml_collections.ConfigDict) else contextlib.nullcontext():
            node[leaf] = value
    except TypeError as e:
        raise ConfigError(f"config.{key}={value!r} has the wrong type: {e}") from None


def override(config, key: str, text: str) -> None:
    """Sets the dotted `key` from command-line text, read as the key's type (str keys take the text as it is)."""
    node, leaf = _leaf(config, key)
    if leaf not in node:  # an optional key the config does not have yet
        wanted = OPTIONAL_KEYS[key]
    elif isinstance(node, ml_collections.ConfigDict):
        wanted = node.get_type(leaf)
    else:
        wanted = type(node[leaf])
    placeholder = isinstance(node, ml_collections.ConfigDict) and isinstance(
        node._fields.get(leaf), config_dict.FieldReference
    )
    if placeholder and text.strip() == "None":  # a typed placeholder may go back to None, its default
        set_value(config, key, None)
        return
    if wanted is str:
        value = text
    elif wanted is bool:
        value = {"true": True, "false": False}.get(text.strip().lower(), text)
        if not isinstance(value, bool):
            raise ConfigError(f"config.{key}={text!r}: {key} takes True or False.")
    else:
        value = literal(text)
        if wanted is tuple and isinstance(value, list):
            value = tuple(value)
    if wanted not in (type(None), object) and not _fits(value, wanted):
        raise ConfigError(f"config.{key}={text!r}: {key} takes a value of type {wanted.__name__}.")
    set_value(config, key, value)


def parse_with_config(parser: cli.ArgumentParser, argv=None, *, base_config=None):
    """Parses argv with `parser` (which defines --config) plus `--config.KEY=VALUE` overrides.

    Returns (args, config): the config of --config with the overrides applied in order, or `base_config()` with
    them when --config is not given (None when neither is there). Every error goes through `cli.fail`.
    """
    args, extra = parser.parse_known_args(argv)
    overrides, unknown = [], []
    extra = list(extra)
    while extra:
        item = extra.pop(0)
        if not item.startswith("--config."):
            unknown.append(item)
            continue
        key, sep, text = item[len("--config.") :].partition("=")
        if not sep:
            if not extra or extra[0].startswith("--"):
                parser.error(f"{item} needs a value: {item}=VALUE")
            text = extra.pop(0)
        overrides.append((key, text))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.config:
            config = load_config_file(args.config)
        elif base_config is not None:
            config = base_config(args)
        else:
            config = None
        if overrides and config is None:
            parser.error("--config.KEY=VALUE overrides need --config=FILE")
        for key, text in overrides:
            override(config, key, text)
    except ValueError as e:
        cli.fail(parser.prog, str(e))
    return args, config
