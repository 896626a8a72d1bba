"""Where training and evaluation numbers go: a tqdm progress bar, TensorBoard event files and `metrics.jsonl`
(read back by `segjax.files.read_metrics`).

TensorBoard files are written by tensorboardX (no TensorFlow needed): `tensorboard --logdir <workdir>/tb`.
`metrics.jsonl` has one JSON object per line: {"step": N, "split": "train"|"<eval split>", "<name>": value, ...},
scalars only: a validation's per-class IoU appears as 'iou/<class name>' (NaN, a class absent from the split and
never predicted, as null); the other per-class lists go to the evaluation reports.

A workdir off the local file system (gs://...) gets the same files through `segjax.files`: metrics.jsonl written
again whole at each record (object stores cannot append), and TensorBoard's events written by tensorboardX into a
local temporary folder (it writes local files; gs:// only with google-cloud-storage, s3:// only with boto3, no other
scheme) and copied into `<workdir>/tb` at every flush and at close.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tqdm
from absl import logging as absl_logging

from segjax.files import append_text, as_path, is_local, jsonable, write_atomic


def scalars(scores: dict) -> dict:
    """The scalar entries of a score dict as Python floats (per-class arrays dropped)."""
    out = {}
    for key, value in scores.items():
        if np.ndim(value) == 0 and isinstance(value, (int, float, np.number, np.ndarray)):
            out[key] = float(value)
    return out


def per_class_scalars(scores: dict, class_names) -> dict:
    """The per-class IoU of a score dict as scalars named 'iou/<class name>' (metrics.jsonl and TensorBoard)."""
    return {f"iou/{name}": float(v) for name, v in zip(class_names, scores.get("per_class_iou", []), strict=False)}


class MetricWriter:
    """Appends scalars to `<workdir>/metrics.jsonl` and to TensorBoard under `<workdir>/tb`; writes nothing when
    not `enabled` (the processes other than 0 of a multi-process run). Off the local file system, TensorBoard's
    events are staged in a local folder and copied to `<workdir>/tb` by `flush` and `close` (module docstring)."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        self._tb_dir = os.path.join(workdir, "tb")
        self._staging = None  # the local folder of the events of a workdir off the local file system
        if tensorboard and enabled:
            from tensorboardX import SummaryWriter  # imported lazily: it is slow to import

            if not is_local(workdir):
                self._staging = tempfile.mkdtemp(prefix="segjax-tb-")
                logging.getLogger("segjax.logging_utils").info(
                    "TensorBoard events go to %s and are copied to %s at every flush.", self._staging, self._tb_dir
                )
            self._tb = SummaryWriter(self._staging or self._tb_dir)

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        values = scalars(values)
        record = {"step": int(step), "split": split, **values}
        append_text(self.path, json.dumps(jsonable(record)) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if math.isfinite(value):
                    self._tb.add_scalar(f"{split}/{key}", value, int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._copy_events()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._copy_events()
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
            self._tb = None

    def _copy_events(self) -> None:
        """The staged event files, whole, into `<workdir>/tb` (a workdir off the local file system)."""
        if self._staging is None:
            return
        for name in sorted(os.listdir(self._staging)):
            with open(os.path.join(self._staging, name), "rb") as f:
                write_atomic(as_path(self._tb_dir) / name, f.read())


class Progress:
    """Progress bar over training steps showing loss and images/s; tqdm's own ETA; silent when disabled."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int, *, enabled: bool = True):
        self.batch_size = batch_size
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not enabled,
            file=sys.stderr,
            desc="train",
        )
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def update(self, step: int, **postfix) -> float:
        """Moves the bar to `step`; returns images/s since the previous update."""
        now = time.perf_counter()
        steps = step - self._last_step
        rate = steps * self.batch_size / max(now - self._last_time, 1e-9)
        self._bar.update(steps)
        self._bar.set_postfix({**{k: f"{v:.4g}" for k, v in postfix.items()}, "img/s": f"{rate:.1f}"}, refresh=False)
        self._last_step, self._last_time = step, now
        return rate

    def reset_clock(self) -> None:
        """Excludes time spent outside training steps (evaluation, checkpoints) from the next images/s."""
        self._last_time = time.perf_counter()

    def write(self, message: str) -> None:
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()


@contextlib.contextmanager
def without_log_messages(*prefixes: str, logger: str = "absl"):
    """Drops the records of `logger` whose message starts with one of `prefixes`: library notices that tell a
    segjax user nothing (orbax announcing a read-only directory segjax opened read-only on purpose, TFDS announcing
    segjax's own builder configs). Other messages pass."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefixes)

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


def quiet_libraries() -> None:
    """For the command lines: segjax's INFO messages, only warnings from orbax, TFDS, grain and JAX."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("segjax").setLevel(logging.INFO)
