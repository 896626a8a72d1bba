"""Joining a multi-process run: one process per host, JAX's multi-controller runtime (`jax.distributed`).

`initialize()` runs at the start of `segjax-train` and `segjax-eval`, before any computation. It joins a run when
JAX's standard variables are set, all three of them:

    JAX_COORDINATOR_ADDRESS=host:port   JAX_NUM_PROCESSES=N   JAX_PROCESS_ID=i (0 .. N-1)

or when `jax.distributed.initialize()` can find the run by itself (a SLURM job with several tasks, a multi-host
Cloud TPU slice). Without them a process runs alone, as before. A partial or inconsistent setting is an error that
names the variable; a coordinator that the other processes cannot reach within SEGJAX_DISTRIBUTED_TIMEOUT seconds
(default 300) is an error that says so (process 0 itself waits as long for the others, then JAX's runtime stops it
with its own message). On CPU the processes exchange collectives through gloo.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
TIMEOUT_VARIABLE = "SEGJAX_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 300


class DistributedError(ValueError):
    """A multi-process setting a user can fix (a missing or bad variable, an unreachable coordinator)."""


def settings_from_environment(env=None) -> dict | None:
    """jax.distributed.initialize's arguments from JAX's variables; None when none is set."""
    env = os.environ if env is None else env
    given = {name: env[name] for name in VARIABLES if env.get(name)}
    if not given:
        return None
    missing = [name for name in VARIABLES if name not in given]
    if missing:
        raise DistributedError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set but {', '.join(missing)} not: a "
            "multi-process run needs all three of JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
            "(or none of them, for one process)."
        )
    address = given["JAX_COORDINATOR_ADDRESS"]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"JAX_COORDINATOR_ADDRESS={address!r} must be host:port, e.g. 10.0.0.1:1234.")
    numbers = {}
    for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        try:
            numbers[name] = int(given[name])
        except ValueError:
            raise DistributedError(f"{name}={given[name]!r} must be an integer.") from None
    count, index = numbers["JAX_NUM_PROCESSES"], numbers["JAX_PROCESS_ID"]
    if count < 1:
        raise DistributedError(f"JAX_NUM_PROCESSES={count} must be at least 1.")
    if not 0 <= index < count:
        raise DistributedError(f"JAX_PROCESS_ID={index} must lie in 0 .. JAX_NUM_PROCESSES - 1 = {count - 1}.")
    return {"coordinator_address": address, "num_processes": count, "process_id": index}


def cluster_detected(env=None) -> bool:
    """A SLURM job with several tasks or a multi-host TPU slice: jax.distributed finds the run by itself."""
    env = os.environ if env is None else env
    slurm_tasks = env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS")
    if env.get("SLURM_JOB_ID") and slurm_tasks and slurm_tasks.isdigit() and int(slurm_tasks) > 1:
        return True
    return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize(env=None) -> bool:
    """Joins the multi-process run the environment describes, if any; returns whether this is one."""
    env = os.environ if env is None else env
    settings = settings_from_environment(env)
    if settings is None and not cluster_detected(env):
        return False
    if jax.distributed.is_initialized():
        return True
    text = env.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_SECONDS))
    if not text.isdigit() or int(text) < 1:
        raise DistributedError(f"{TIMEOUT_VARIABLE}={text!r} must be a whole number of seconds >= 1.")
    timeout = int(text)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes; GPUs and TPUs ignore it
    if settings and settings["process_id"] != 0:
        # JAX's runtime aborts the process (no Python exception) when it cannot reach the coordinator, so the
        # other processes first wait for process 0's port themselves and fail with a message that says why.
        _wait_for(settings["coordinator_address"], timeout)
    jax.distributed.initialize(**(settings or {}), initialization_timeout=timeout)
    return True


def _wait_for(address: str, timeout: int) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"could not reach the coordinator of the multi-process run at JAX_COORDINATOR_ADDRESS={address} "
                    f"within {timeout} s ({e}). Start process 0 there first, or fix the address; "
                    f"{TIMEOUT_VARIABLE} sets the wait."
                ) from None
            time.sleep(0.5)


def is_primary() -> bool:
    """Process 0: the one that writes logs, metrics, configs and reports."""
    return jax.process_index() == 0


def sum_over_processes(x: np.ndarray) -> np.ndarray:
    """The sum of a host array over every process (the array itself in a one-process run)."""
    if jax.process_count() == 1:
        return x
    return np.asarray(multihost_utils.process_allgather(np.asarray(x))).sum(axis=0)
