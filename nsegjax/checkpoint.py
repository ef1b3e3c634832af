"""Orbax checkpoints of (train state, data iterator, run metadata), latest + best kept.

Every checkpoint carries the validation Dice of the last evaluation, so the
manager can keep the best one besides the latest; `best_step()` finds it.
"""
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = 'val_dice'


def _val_dice(metrics) -> float:
  return metrics[BEST_METRIC]


class Checkpointer:
  """Saves and restores one run's checkpoints under `directory`."""

  def __init__(self, directory: str):
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(1),
            policies.BestN(get_metric_fn=_val_dice, reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
        ]),
        best_fn=_val_dice,
        best_mode='max',
        # Synchronous saves: a checkpoint is complete once `save` returns, which the
        # resume-equality guarantee and the SIGTERM handler rely on.
        enable_async_checkpointing=False,
        create=True,
    )
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self):
    return self.manager.latest_step()

  def best_step(self):
    return self.manager.best_step()

  def save(self, step: int, state: Any, data_iterator, meta: dict, val_dice: float):
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(meta),
        ),
        metrics={BEST_METRIC: float(val_dice)},
        force=True,
    )

  def restore(self, step: int, state_template: Any, data_iterator=None):
    """Restores `step` into the shardings and dtypes of the live `state_template`.

    With a data iterator, its position is restored in place too. Returns (state, meta).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    items = dict(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], restored['meta']

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
