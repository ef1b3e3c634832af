"""Orbax checkpoints of (train state, data iterator, run metadata), latest + best kept.

Checkpoints saved right after a validation carry its Dice, so the manager keeps the best of
them besides the latest; `best_step()` finds it. The others (`checkpoint_every_steps`, SIGTERM)
carry -inf: a state nobody validated never stands in for the best one.

A kill at any moment loses no complete checkpoint: Orbax writes a step into
`<step>.orbax-checkpoint-tmp*` and renames it to `<step>` once every item is written, so an
unfinished save is never listed as a step, and the next run (its `owner`) deletes what it left
behind.
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
  """Saves and restores one run's checkpoints under `directory`.

  `owner`: the training run itself, which deletes the unfinished saves a killed run left behind.
  Anyone else (a notebook reloading a live run) would delete a save in progress, so leaves them.
  """

  def __init__(self, directory: str, owner: bool = False):
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(1),
            policies.BestN(get_metric_fn=_val_dice, reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
        ]),
        best_fn=_val_dice,
        best_mode='max',
        cleanup_tmp_directories=owner,
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

  def save(self, step: int, state: Any, data_iterator, meta: dict, val_dice: float | None):
    """Saves synchronously; `val_dice` None (no validation of this state) ranks below all."""
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(meta),
        ),
        # -inf rather than no metrics: the same ranking without Orbax warning at every save.
        metrics={BEST_METRIC: float('-inf') if val_dice is None else float(val_dice)},
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
