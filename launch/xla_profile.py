"""Where a compiled step's time goes on the host: one JAX profiler trace, its XLA thunks
grouped by what they compute. Used by `python -m launch.bench --profile`.

Each thunk (an XLA kernel: a fusion, a YNNPACK/XNNPACK library call, a copy) is named after an
instruction of the compiled HLO; that instruction's `op_name` metadata says which JAX operation
it came from and whether it runs in the forward pass (`jvp(...)`) or the backward pass
(`transpose(jvp(...))`). Categories, first match wins:
- conv fwd / conv grad-input / conv grad-weight: a convolution; the weight gradient is the one
  whose window is the activation map, not the kernel;
- matmul: a dot (the U-Net's up-convolutions are matmuls);
- pool fwd / pool bwd: max-pool's reduce-window and its gradient (select-and-scatter, which
  XLA:CPU expands into an arg-max reduce-window over iotas and a scatter);
- finite check: `train.nonfinite`'s is-finite reductions over loss, gradients and weights;
- layout copies: transposes XLA inserts between kernels;
- batchnorm: fusions from BatchNorm's statistics and normalisation;
- optimizer: everything else outside the loss's jvp/transpose (Adam, gradient norm, schedule);
- loss / other: the rest.
XLA:CPU traces its own kernels and library (YNNPACK) calls but not Eigen's convolutions, which
nsegjax uses (see nsegjax/__init__.py): their time is in `untraced_ms`, the wall time per step
minus the traced kernels (kernels that ran concurrently make that an underestimate).
"""
import collections
import glob
import gzip
import json
import re
import tempfile
import time

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*$')
_CALLS = re.compile(r'calls=%([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) .*\{\s*$')


def _parse_hlo(text: str):
  """{instruction: line} and {computation: [lines]} of a compiled module's text."""
  instructions, computations, current = {}, collections.defaultdict(list), None
  for line in text.split('\n'):
    m = _COMPUTATION.match(line)
    if m:
      current = m.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if m:
      instructions[m.group(1)] = line
      computations[current].append(line)
  return instructions, computations


def _body(line: str, computations) -> list[str]:
  """The instruction and, for a fusion or call, the instructions it calls (recursively)."""
  lines, todo, seen = [line], _CALLS.findall(line), set()
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    for inner in computations.get(name, ()):
      lines.append(inner)
      todo += _CALLS.findall(inner)
  return lines


def categorize(line: str, computations) -> str:
  body = _body(line, computations)
  text = '\n'.join(body)
  names = ' '.join(_OP_NAME.findall(text))
  backward = 'transpose(' in names
  if ' convolution(' in text:
    if not backward:
      return 'conv fwd'
    window = re.search(r'window=\{size=([\dx]+)', text)
    kernel_sized = window is not None and all(int(s) <= 7 for s in window.group(1).split('x'))
    return 'conv grad-input' if kernel_sized else 'conv grad-weight'
  if ' dot(' in text:
    return 'matmul'
  if 'reduce_window_max' in names or 'select_and_scatter' in names:
    return 'pool bwd' if backward else 'pool fwd'
  # select-and-scatter's arg-max reduce-window over iotas carries no op_name
  if not names and re.search(r'reduce-window\(|iota\(', text) and 'pred[' not in text:
    return 'pool bwd'
  if 'is_finite' in names or 'reduce_and' in names or (not names and 'pred[' in text):
    return 'finite check'
  if not names and re.search(r'transpose\(|copy\(', text):
    return 'layout copies'
  if 'BatchNorm' in names:
    return 'batchnorm'
  if 'jvp(' not in names:
    return 'optimizer'
  return 'loss / other'


def profile(step, args, hlo_text: str, steps: int, top: int = 10) -> dict:
  """Runs `step(*args)` `steps` times under the profiler; milliseconds per step by category
  (and the `top` most expensive thunks). `step` returns its new first argument and metrics."""
  import jax  # pylint: disable=g-import-not-at-top

  instructions, computations = _parse_hlo(hlo_text)
  with tempfile.TemporaryDirectory() as trace_dir:
    state, rest = args[0], args[1:]
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = step(state, *rest)
      jax.block_until_ready(metrics)
      wall_ms = (time.perf_counter() - start) * 1e3 / steps
    path = glob.glob(f'{trace_dir}/**/perfetto_trace.json.gz', recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  per_thunk = collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and event.get('name') in instructions:
      per_thunk[event['name']] += event.get('dur', 0) / 1e3 / steps  # µs → ms per step
  kind = {name: categorize(instructions[name], computations) for name in per_thunk}
  per_category = collections.Counter()
  for name, ms in per_thunk.items():
    per_category[kind[name]] += ms
  total = sum(per_category.values())
  return {
      'wall_ms_per_step': round(wall_ms, 1),
      'kernel_ms_per_step': round(total, 1),
      'untraced_ms': round(max(wall_ms - total, 0.0), 1),
      'by_category_ms': {k: round(v, 1) for k, v in per_category.most_common()},
      'by_category_pct': {k: round(100 * v / total, 1) for k, v in per_category.most_common()},
      'top_kernels': [
          {'name': name, 'ms': round(ms, 1),
           'category': kind[name],
           'op': (_OP_NAME.findall(instructions[name]) or [''])[0]}
          for name, ms in per_thunk.most_common(top)],
  }
