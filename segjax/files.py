"""Files segjax writes and reads: where they live (`as_path`: a local path or any `etils.epath` backend, such as
`gs://bucket/run`), one atomic writer (readers never see half a file), one appender, one JSON converter, and the
run's `metrics.jsonl`.

Every read and write of a workdir goes through these helpers or `as_path`, so that a workdir can live on an object
store. On the local file system they use `os` as before (atomic rename, file modes, in-place appends); elsewhere
the backend's own operations: a temporary sibling renamed into place, and an append that writes the whole file
again (object stores cannot append).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid

import numpy as np
from etils import epath


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is on the local file system (not a URI such as gs://bucket/run)."""
    return "://" not in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """`path` as the string segjax records and names in messages: a local path absolute with `~` expanded, a URI
    as it is (without a trailing slash)."""
    if is_local(path):
        return os.path.abspath(os.path.expanduser(os.fspath(path)))
    return os.fspath(epath.Path(os.fspath(path)))


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` (`absolute`) as an etils.epath.Path, whose operations reach the backend of its scheme."""
    return epath.Path(absolute(path))


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` to `path` via a temporary file and a rename, so readers never see half a file (and an
    interrupted write leaves the old file). A local file gets the mode open() would give it (0666 less the umask),
    not mkstemp's private 0600; on another backend the temporary sibling is renamed with the backend's `replace`
    (on an object store, where every object appears whole anyway, a copy and a delete)."""
    if not is_local(path):
        _write_atomic_remote(as_path(path), data)
        return
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


def _write_atomic_remote(path: epath.Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}{path.name}"
    try:
        with tmp.open("wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def append_text(path: str | os.PathLike, text: str) -> None:
    """Appends `text` to the file `path` (created if missing): in place on the local file system; on another
    backend (object stores cannot append) by writing the old content plus `text` again with `write_atomic`, which
    costs the file's size per call: fine for the records segjax appends (a few lines per log step)."""
    if is_local(path):
        with open(path, "a") as f:
            f.write(text)
        return
    path = as_path(path)
    old = path.read_text() if path.exists() else ""
    write_atomic(path, old + text)


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


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """All records of `<workdir>/metrics.jsonl` (for notebooks and tests)."""
    path = as_path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
