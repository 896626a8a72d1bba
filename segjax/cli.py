"""Command-line plumbing shared by segjax-train, segjax-eval, segjax-models and the experiment runners.

A mistake a user can make on a command line (an unknown flag or config key, a value of the wrong type, a missing
or broken config file) prints one line, `prog: error: <what and how to fix it>`, and exits with status 2: no
usage dump, no traceback, nothing written. `segjax.config_utils.parse_with_config` adds config arguments in
ml_collections' convention:

    --config=configs/unet.py[:ARG]  --config.model.depth=3  --config.data.crop_size='(48, 48)'

This module imports nothing from segjax, so any layer's command line may use it.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

CONFIG_HELP = "config file and its argument, e.g. configs/unet.py:small; --config.KEY=VALUE overrides any key"


def fail(prog: str, message: str) -> NoReturn:
    """Reports a user error in one line on stderr and exits with status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`fail`) and no abbreviated flags (`--conf` is not `--config`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")
