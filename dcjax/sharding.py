"""The seed axis over devices and processes: where a run's arrays live.

One device: every function here is a no-op wrapper. Several devices, or
several processes under `jax.distributed` (`dcjax.main --distributed`): the
seed axis is sharded over as many devices as divide the seeds, and the data
set is replicated.
"""
import jax
import numpy as np


def seed_sharding(n_seeds: int):
    """Shard the seed axis over as many devices as divide the seeds.

    With one device this is a no-op. Under `jax.distributed` (`dcjax.main
    --distributed`) `jax.devices()` are every process's devices, so the mesh
    is global; it must then reach every process."""
    devices = jax.devices()
    usable = max(g for g in range(1, len(devices) + 1) if n_seeds % g == 0)
    processes = {d.process_index for d in devices[:usable]}
    if len(processes) < jax.process_count():
        raise ValueError(f"{n_seeds} seeds cannot be spread over the {len(devices)} devices of "
                         f"{jax.process_count()} processes; use a multiple of {len(devices)} seeds")
    mesh = jax.sharding.Mesh(np.asarray(devices[:usable]), ("seeds",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def place(tree, sharding):
    """Host arrays (numpy) onto a sharding, which may span several processes:
    each process gives the slices of its own devices (the same host data everywhere)."""
    def one(value):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jax.tree.map(one, tree)


def to_host(tree):
    """Device arrays as numpy, also where they are spread over several processes."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def start_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None):
    """`jax.distributed.initialize`. What is not given JAX reads from the
    cluster (SLURM, Open MPI, Kubernetes, Cloud TPU) or, for the address,
    JAX_COORDINATOR_ADDRESS. CPU processes exchange arrays through gloo;
    accelerators use their own collectives, untouched by this."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
