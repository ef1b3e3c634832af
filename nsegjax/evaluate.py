"""Prediction over a split and its metrics: Dice/IoU for validation, + HD95/ASSD for test."""
import jax
import jax.numpy as jnp
import numpy as np

from nsegjax import metrics as seg_metrics
from nsegjax import sharding
from nsegjax.data.pipeline import eval_batches, normalize_images


def make_predict_fn(model, method, mesh):
  """jit: (variables, method_state, uint8 images) → argmax labels, replicated on every host."""

  def predict(variables, method_state, images):
    probs = method.predict(model, variables, method_state, normalize_images(images))
    return jnp.argmax(probs, axis=-1).astype(jnp.int32)

  return jax.jit(predict,
                 in_shardings=(sharding.replicated(mesh), sharding.replicated(mesh),
                               sharding.data_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def predict_split(predict_fn, state, source, noisy_masks, mesh, global_batch: int):
  """dict(image, mask, pred[, noisy_mask]) numpy arrays over the whole split, in order.

  Predictions come back replicated, whole global batches, so every process reads whole batches
  too (each feeding the devices only its slice) and scores the whole split alike.
  """
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  outputs = {'image': [], 'mask': [], 'pred': []}
  if noisy_masks is not None:
    outputs['noisy_mask'] = []
  local = global_batch // jax.process_count()
  first = jax.process_index() * local
  for batch, valid in eval_batches(source, noisy_masks, global_batch):
    images = sharding.shard_batch({'image': batch['image'][first:first + local]}, mesh)['image']
    pred = np.asarray(jax.device_get(predict_fn(variables, state.method_state, images)))
    outputs['pred'].append(pred[:valid])
    for key in outputs.keys() - {'pred'}:
      outputs[key].append(batch[key][:valid])
  return {k: np.concatenate(v) for k, v in outputs.items()}


def score(pred, target, num_classes: int, eval_cfg, surface: bool):
  """Metric summary of predictions against `target` (HD95/ASSD only when `surface`)."""
  return seg_metrics.summarize(pred, target, num_classes, surface=surface, empty=eval_cfg.empty,
                               agg=eval_cfg.agg, include_bg=eval_cfg.include_bg,
                               hd95_mode=eval_cfg.hd95_mode,
                               empty_surface=eval_cfg.empty_surface)
