"""Run outputs: metrics.jsonl, TensorBoard events (tensorboardX, no TensorFlow), progress lines."""
import json
import os
import sys
import time

import numpy as np


def to_python(value):
  """numpy / jax scalars → JSON-safe Python numbers (NaN and inf → None)."""
  value = np.asarray(value).item() if np.ndim(value) == 0 else value
  if isinstance(value, float) and not np.isfinite(value):
    return None
  return value


class MetricWriter:
  """Appends one JSON line per logged step and mirrors scalars to TensorBoard.

  Only process 0 writes; the others get a writer that does nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True, resumed_step: int = 0):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    # A resumed run replays the steps after its checkpoint: TensorBoard hides their first take.
    # Event files are named by the second: the nanoseconds keep a resume started within the same
    # second from truncating the first run's file, and keep the files' name order the run order.
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                             purge_step=resumed_step + 1 if resumed_step else None,
                             filename_suffix=f'.{time.time_ns()}')

  def write(self, step: int, scalars: dict, prefix: str = 'train'):
    if not self.enabled:
      return
    record = {'step': int(step), 'split': prefix}
    record.update({k: to_python(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for key, value in record.items():
      if key not in ('step', 'split') and isinstance(value, (int, float)):
        self._tb.add_scalar(f'{prefix}/{key}', value, step)

  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


class Progress:
  """One line per call: step, loss, images/s and ETA, measured between calls."""

  def __init__(self, total_steps: int, start_step: int, global_batch: int, enabled: bool = True):
    self.total = total_steps
    self.batch = global_batch
    self.enabled = enabled
    self._last_step, self._last_time = start_step, time.perf_counter()

  def images_per_sec(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._last_step) * self.batch / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return rate

  def line(self, step: int, loss: float, rate: float):
    if not self.enabled:
      return
    eta = (self.total - step) * self.batch / max(rate, 1e-9)
    print(f'step {step}/{self.total} ({100 * step / self.total:.0f}%)  loss {loss:.4f}  '
          f'{rate:.1f} img/s  ETA {int(eta) // 60}m{int(eta) % 60:02d}s', file=sys.stderr, flush=True)


def write_epoch_record(path: str, record: dict) -> None:
  """Appends an epoch-hook record (with 'epoch') to a JSONL log, dropping any record of that
  epoch or later first: a resumed run redoes the hook of the epoch it resumed at, so it
  replaces rather than repeats it. Rewritten atomically."""
  kept = []
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      kept = [line for line in f if json.loads(line)['epoch'] < record['epoch']]
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(kept + [json.dumps(record) + '\n'])
  os.replace(path + '.tmp', path)
