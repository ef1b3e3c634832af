"""Run outputs: what a resumed run's TensorBoard file tells TensorBoard to hide."""
import glob
import os
import struct

from tensorboardX.proto import event_pb2

from nsegjax import writers


def read_events(logdir):
  """Every Event of the TFRecord files in logdir (length, crc, payload, crc)."""
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, 'events*'))):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
      pos += 12 + length + 4
  return events


def session_starts(events):
  return [e.step for e in events if e.HasField('session_log')
          and e.session_log.status == event_pb2.SessionLog.START]


def test_a_resumed_writer_purges_the_replayed_steps(tmp_path):
  first = writers.MetricWriter(str(tmp_path))
  for step in (1, 2, 3, 4):
    first.write(step, {'loss': float(step)})
  first.close()
  assert session_starts(read_events(tmp_path / 'tensorboard')) == []
  # Straight away, within the same second: event file names carry the second.

  resumed = writers.MetricWriter(str(tmp_path), resumed_step=2)
  for step in (3, 4):
    resumed.write(step, {'loss': 10.0 * step})
  resumed.close()
  events = read_events(tmp_path / 'tensorboard')
  # TensorBoard drops every earlier event at a step >= a SessionLog.START's step.
  assert session_starts(events) == [3]
  scalars = [(e.step, e.summary.value[0].simple_value) for e in events
             if e.HasField('summary')]
  assert sorted(scalars) == [(1, 1.0), (2, 2.0), (3, 3.0), (3, 30.0), (4, 4.0), (4, 40.0)]
