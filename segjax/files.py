"""Files segjax writes and reads: one atomic writer (readers never see half a file), one JSON converter, and the
run's `metrics.jsonl`."""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` to `path` via a temporary file and a rename, so readers never see half a file (and an
    interrupted write leaves the old file). The file gets the mode open() would give it (0666 less the umask), not
    mkstemp's private 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def jsonable(value):
    """Numbers, arrays and containers as plain JSON types. One rule for every file segjax writes: NaN and
    infinities (a class absent from a split, a metric not defined) become None, JSON's null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, str | bytes):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: str | os.PathLike, payload, *, indent: int = 1) -> None:
    """`payload` through `jsonable`, written atomically."""
    write_atomic(path, json.dumps(jsonable(payload), indent=indent, sort_keys=True) + "\n")


def read_metrics(workdir: str) -> list[dict]:
    """All records of `<workdir>/metrics.jsonl` (for notebooks and tests)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
