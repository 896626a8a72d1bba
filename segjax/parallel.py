"""Data parallelism: the layout of states and batches over the devices of every process, and the wrapping of the
per-device steps of `segjax.steps` (collectives over `AXIS`), in one of two ways chosen by `config.parallelism`:

- 'sharded' (the default): `jax.jit` of `jax.shard_map` over a 1-D `Mesh` of all devices of all processes
  (`jax.devices()`). The state is a replicated `NamedSharding`; each process's batch becomes its part of a global
  array split along the batch dimension (`jax.make_array_from_process_local_data`). One process or many alike.
- 'pmap': `jax.pmap` over this process's devices, the state replicated with a leading device axis. One process
  only (pmap is in maintenance mode since JAX 0.8); a multi-process run with it is refused with the fix.

Batch sizes in configs are global: each process feeds `batch_size / process_count` examples, and the global batch
must divide by the total number of devices. Replicated outputs are read from this process's first addressable shard;
per-example outputs are read back as this process's examples (`local_examples`), in its loader's order.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"
PARALLELISMS = ("sharded", "pmap")
_MAX_WRAPPED = 16  # wrapped (compiled) steps a DataParallel keeps for reuse


class DataParallel:
    """Lays out state and batches over the devices and wraps per-device functions ('sharded' or 'pmap')."""

    def __init__(self, parallelism: str = "sharded", num_devices: int | None = None):
        if parallelism not in PARALLELISMS:
            raise ValueError(f"Unknown parallelism {parallelism!r}; valid choices: {', '.join(PARALLELISMS)}.")
        processes = jax.process_count()
        if processes > 1 and parallelism == "pmap":
            raise ValueError(
                f"parallelism='pmap' runs on one process's devices, but this run has {processes} processes; use "
                "parallelism='sharded' (the default), which spans the devices of every process."
            )
        devices = jax.devices()
        if num_devices is not None:
            if processes > 1:
                raise ValueError(
                    f"num_devices={num_devices} chooses devices of one process; a run of {processes} processes uses "
                    "all devices of all of them: set num_devices to None."
                )
            if not 1 <= num_devices <= len(devices):
                raise ValueError(
                    f"num_devices={num_devices} but {len(devices)} devices are available; "
                    f"use a value from 1 to {len(devices)} (or None for all)."
                )
            devices = devices[:num_devices]
        self.parallelism = parallelism
        self.devices = devices
        self.num_devices = len(devices)
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._split = NamedSharding(self.mesh, P(AXIS))
        self._wrapped = collections.OrderedDict()  # (fn, options) -> wrapped fn, the most recently used last

    def check_batch_size(self, batch_size: int, what: str = "batch_size") -> None:
        """A global batch size must divide evenly over the devices of all processes."""
        if batch_size % self.num_devices:
            processes = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
            raise ValueError(
                f"{what}={batch_size} is not divisible by the {self.num_devices} devices in use{processes}; "
                f"use a multiple of {self.num_devices}" + ("" if processes else " or set num_devices") + "."
            )

    # --- layout -------------------------------------------------------------------------------------------------
    def replicate(self, tree):
        """Host pytree (the same on every process) -> the layout the wrapped functions take."""
        if self.parallelism == "pmap":
            n = self.num_devices
            stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), tree)
            return jax.device_put(stacked, self._split)

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self._replicated, lambda index: x[index])

        return jax.tree.map(put, tree)

    def unreplicate(self, tree):
        """Replicated pytree -> one copy on the host (numpy), read from this process's own devices."""

        def get(x):
            data = np.asarray(x.addressable_shards[0].data)
            return data[0] if self.parallelism == "pmap" else data

        return jax.tree.map(get, tree)

    def shard_batch(self, batch: dict):
        """This process's part of a global batch (leading dimension global / process_count) -> a global array
        split over the devices of every process."""
        local = len(next(iter(batch.values())))
        self.check_batch_size(local * jax.process_count())
        if self.parallelism == "pmap":
            n = self.num_devices
            batch = jax.tree.map(lambda x: np.reshape(x, (n, x.shape[0] // n) + x.shape[1:]), batch)
            return jax.device_put(batch, self._split)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._split, np.asarray(x)), batch)

    def local_examples(self, tree):
        """Per-example outputs of a `wrap(..., per_example=True)` function -> this process's examples (numpy), in
        the order of the batch it fed to `shard_batch`."""

        def get(x):
            if self.parallelism == "pmap":
                return np.reshape(jax.device_get(x), (-1,) + x.shape[2:])
            shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
            return np.concatenate([np.asarray(s.data) for s in shards])

        return jax.tree.map(get, tree)

    # --- wrapping -----------------------------------------------------------------------------------------------
    def wrap(
        self, fn: Callable, *, returns_state: bool = False, per_example: bool = False, donate_state: bool = False
    ) -> Callable:
        """Wraps fn(state, batch, axis_name=AXIS) -> outputs for the chosen parallelism.

        Outputs are summed over devices inside fn (replicated), or per example when `per_example` (then only the
        outputs, not a state, are returned). `returns_state`: fn returns (state, outputs); the state stays
        replicated. Wrapping an equal `fn` again (a hashable step such as `segjax.steps.TrainStep`) returns the
        same wrapped function, whose compilation is then reused: this is how runs that differ only in their seed
        share one.
        """
        key = (fn, returns_state, per_example, donate_state)
        if key in self._wrapped:
            self._wrapped.move_to_end(key)
        else:
            self._wrapped[key] = self._wrap(fn, returns_state, per_example, donate_state)
            if len(self._wrapped) > _MAX_WRAPPED:
                self._wrapped.popitem(last=False)
        return self._wrapped[key]

    def _wrap(self, fn: Callable, returns_state: bool, per_example: bool, donate_state: bool) -> Callable:
        fn = functools.partial(fn, axis_name=AXIS)
        donate = (0,) if donate_state else ()
        if self.parallelism == "pmap":
            return jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=donate)
        out = P(AXIS) if per_example else P()
        out_specs = (P(), out) if returns_state else out
        # check_vma=False: with it, JAX would psum the gradients of replicated parameters implicitly (the transpose
        # of its automatic pvary), so the explicit psum in TrainStep would count them num_devices times. Without
        # it shard_map behaves like pmap: every collective is the one written in the per-device function.
        mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=(P(), P(AXIS)), out_specs=out_specs, check_vma=False)
        return jax.jit(mapped, donate_argnums=donate)


@functools.cache
def data_parallel(parallelism: str = "sharded", num_devices: int | None = None) -> DataParallel:
    """The process's one `DataParallel` for these settings: runs with equal settings share its wrapped steps."""
    return DataParallel(parallelism, num_devices)
