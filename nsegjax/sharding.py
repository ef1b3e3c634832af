"""The device mesh: batches split over a 'data' axis, everything else replicated."""
import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from nsegjax.errors import ConfigError

DATA_AXIS = 'data'


# JAX reads the coordinator's address from the environment but, outside a cluster it detects
# (SLURM, Cloud TPU, Open MPI, Kubernetes), not the process count or id: these two carry them.
NUM_PROCESSES_ENV = 'JAX_NUM_PROCESSES'
PROCESS_ID_ENV = 'JAX_PROCESS_ID'


def maybe_initialize_distributed() -> bool:
  """Joins a multi-host job when the environment describes one; True when in one.

  `NSEGJAX_MULTIHOST=1` leaves every parameter to JAX's cluster detection (SLURM, TPU pods);
  `JAX_COORDINATOR_ADDRESS=host:port` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` describes a
  job anywhere, e.g. processes started by hand. Must run before anything starts a JAX backend.

  Raises:
    ConfigError: a malformed variable, or a job JAX cannot complete from the environment.
  """
  wants = (os.environ.get('JAX_COORDINATOR_ADDRESS') or
           os.environ.get('NSEGJAX_MULTIHOST', '') not in ('', '0'))
  if not wants or jax.distributed.is_initialized():
    return jax.distributed.is_initialized()
  kwargs = {}
  for arg, env in (('num_processes', NUM_PROCESSES_ENV), ('process_id', PROCESS_ID_ENV)):
    if os.environ.get(env):
      try:
        kwargs[arg] = int(os.environ[env])
      except ValueError:
        raise ConfigError(f'${env} must be an integer, got {os.environ[env]!r}') from None
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'cannot join the multi-host job: {e} (outside SLURM and TPU pods, set '
                      f'$JAX_COORDINATOR_ADDRESS, ${NUM_PROCESSES_ENV} and ${PROCESS_ID_ENV})'
                      ) from None
  return True


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
