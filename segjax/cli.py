"""Command-line plumbing shared by the segjax-* commands and the experiment runners.

A mistake a user can make on a command line (an unknown flag or config key, a value of the wrong type, a missing
or broken config file) prints one line, `prog: error: <what and how to fix it>`, and exits with status 2: no
usage dump, no traceback, nothing written. With `--debug`, which every command accepts, the error is re-raised
instead, with its type and full traceback (for bug reports); a mistake in the command line's syntax stays one line.
`segjax.config.parse_with_config` adds config arguments in ml_collections' convention:

    --config=configs/unet.py[:ARG]  --config.model.depth=3  --config.data.crop_size='(48, 48)'

`use_fast_cpu_kernels()` is the one environment setting segjax makes, called where a process starts (the
commands and the benchmarks), never on import.

This module imports nothing from segjax, so any layer's command line may use it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import mmap
import os
import pathlib
import sys
from typing import NoReturn

CONFIG_HELP = "config file and its argument, e.g. configs/unet.py:small; --config.KEY=VALUE overrides any key"


# Whether the command line last parsed by an ArgumentParser asked for --debug: process-wide, like the XLA flag below,
# because `fail` is called from wherever a command catches an error, with no parser at hand.
_debug = False


def fail(prog: str, message: str) -> NoReturn:
    """Reports a user error in one line on stderr and exits with status 2; with --debug, called where an exception
    is being handled, re-raises that exception (its type and full traceback) instead."""
    handled = sys.exception()
    if _debug and handled is not None:
        raise handled
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`fail`), no abbreviated flags (`--conf` is not `--config`) and `--debug`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", help="on an error, raise it with its full traceback instead of one line"
        )

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, recording --debug for `fail` (off while parsing: a syntax error is told in one line)."""
        global _debug
        _debug = False
        namespace, extras = super().parse_known_args(args, namespace)
        _debug = namespace.debug
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


# XLA:CPU's faster kernels, each behind a flag that XLA reads when JAX creates its CPU backend, and the environment
# variable that turns it on ('1') or off ('0'). GPUs and TPUs ignore both.
# - YNNPACK for matrix products and convolutions, on by default: on the 2-core CPU it made a U-Net or SegNet training
#   step about 3x faster (128 px: 0.35 and 0.29x PyTorch without it, 1.07 and 0.98x with it;
#   `SEGJAX_XLA_CPU_YNN=0 python experiments/benchmarks/train_step.py --sizes 128`).
# - oneDNN for convolutions and their gradients (XLA's `__onednn$convolution` calls), off by default. On the 2-core
#   AMD EPYC the CPU ablation slice finished 1.12x [1.05, 1.18] the runs per hour with it (`SEGJAX_XLA_CPU_ONEDNN=1
#   python -m experiments.benchmarks.sweep_throughput`), but the 256 px steps of `train_step.py` ran 0.78-0.86x as
#   fast (its kernel gradients of large maps are slow), and XLA cannot store programs with these calls in the
#   persistent compilation cache (docs/training.md has the figures).
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
ONEDNN_FLAG = "--xla_cpu_experimental_onednn_custom_call=true"
FAST_CPU_FLAGS = {YNN_FLAG: ("SEGJAX_XLA_CPU_YNN", "1"), ONEDNN_FLAG: ("SEGJAX_XLA_CPU_ONEDNN", "0")}


def xla_flag_set(flag: str) -> bool:
    """Whether XLA_FLAGS holds `flag` exactly, name and value (e.g. ONEDNN_FLAG)."""
    return flag in os.environ.get("XLA_FLAGS", "").split()


def use_fast_cpu_kernels() -> tuple[str, ...]:
    """Adds the FAST_CPU_FLAGS that their environment variables (or defaults) turn on to XLA_FLAGS, which XLA reads
    when JAX creates its CPU backend, so call it before the first JAX computation. Left alone for each flag: a value
    the user set for it in XLA_FLAGS, and a jaxlib that does not know it (XLA aborts on unknown flags). Returns those
    of the flags in effect now."""
    in_effect = []
    for flag, (switch, default) in FAST_CPU_FLAGS.items():
        flags = os.environ.get("XLA_FLAGS", "")
        name = flag[2:].split("=")[0]
        if name in flags:
            if xla_flag_set(flag):
                in_effect.append(flag)
            continue
        if os.environ.get(switch, default) == "0" or not jaxlib_knows(name):
            continue
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
        in_effect.append(flag)
    return tuple(in_effect)


@functools.cache
def jaxlib_knows(flag: str) -> bool:
    """Whether the installed jaxlib's XLA defines `flag` (its name is in one of jaxlib's shared libraries)."""
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    needle = flag.encode()
    for library in pathlib.Path(spec.submodule_search_locations[0]).glob("*.so"):
        if library.stat().st_size < 1 << 20:
            continue
        with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(needle) >= 0:
                return True
    return False
