"""The device mesh: batches split over a 'data' axis, everything else replicated."""
import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def maybe_initialize_distributed():
  """Joins a multi-host job when the environment describes one (coordinator or SLURM/TPU pod)."""
  wants = any(os.environ.get(k) for k in ('JAX_COORDINATOR_ADDRESS', 'NSEGJAX_MULTIHOST'))
  if wants and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def make_mesh(devices=None):
  """A 1-D mesh over `devices` (default: every visible device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  # Auto axes: Linen dropout fails under Explicit ones.
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_sharded(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: dict, mesh) -> dict:
  """This process's numpy batch → global jax arrays split over the 'data' axis."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
