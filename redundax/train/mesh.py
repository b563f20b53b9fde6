"""Data-parallel mesh: one `"data"` axis over every device, sharded batches, replicated state.

API:

- `make_data_mesh(devices=None) -> Mesh`: a 1-D mesh with axis `DATA_AXIS = "data"` (Auto axis
  type) over all devices of all processes (or the given ones).
- `batch_sharding(mesh)`, `replicated_sharding(mesh)`: `NamedSharding`s splitting the leading
  axis over `"data"`, and replicating.
- `shard_batch(batch, mesh) -> pytree of jax.Array`: this process's batch (leading axis
  `global_batch / process_count`) -> global arrays sharded over `"data"`
  (`jax.make_array_from_process_local_data`). Stacked in process order the local batches form
  the global batch.
- `replicate(tree, mesh) -> pytree of jax.Array`: the same value on every device; every
  process must pass the same values (they are, when created from the same seed).
- `to_host(tree) -> pytree of np.ndarray`: fully replicated arrays -> NumPy on every process.

Under `jax.jit` with a sharded batch and replicated state, a batch statistic written as plain
`jnp` code (a mean, BatchNorm's batch mean and variance, a covariance) is the *global*-batch
value: XLA inserts the cross-device reductions. The axis type is Auto, not the Explicit default
of `jax.make_mesh`, so contractions over the sharded axis need no annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `"data"` over `devices` (default: `jax.devices()`, all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_data_mesh needs at least one device; `devices` is empty.")
    return jax.make_mesh(
        (len(devices),),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over `"data"`, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The whole array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def _check_local_batch(batch: Any, mesh: Mesh) -> None:
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("shard_batch got an empty batch (no arrays).")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every array of the batch needs the same leading (batch) axis; got sizes {sizes}."
        )
    local = sizes.pop()
    local_devices = len(mesh.local_devices)
    if local % local_devices:
        raise ValueError(
            f"the process-local batch of {local} examples does not split over this process's "
            f"{local_devices} devices; make the global batch size a multiple of "
            f"{mesh.size} (the number of devices)."
        )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Process-local batch -> global arrays sharded over the `"data"` axis.

    Every process passes its own part (as yielded by `redundax.data.make_iterator` with
    `shard_by_process=True`); the global array's leading axis is the concatenation of the
    parts in process order.
    """
    _check_local_batch(batch, mesh)
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies of `tree` on every device of `mesh` (global, fully replicated arrays).

    Works with several processes: each process supplies the value for its own devices, so all
    processes must hold the same values.
    """
    sharding = replicated_sharding(mesh)

    def put(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        if isinstance(x, jax.Array) and x.is_fully_addressable and x.sharding == sharding:
            return x
        host = np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Fully replicated (or fully addressable) arrays -> NumPy, on every process."""

    def get(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError(
                    "to_host needs replicated arrays in a multi-process run; got one sharded "
                    f"as {x.sharding}. Use jax.experimental.multihost_utils.process_allgather."
                )
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)
