"""Memory and time of JCAS's affinity step, naive (B×N×N) vs blocked (row blocks + remat).

    python -m launch.bench_jcas_affinity [--grids=32,64,128] [--batch=4] [--dim=256]
        [--classes=4] [--block=256] [--reps=3] [--variants=naive,blocked]

The step is jit(value_and_grad) w.r.t. embeddings f [B, N, D] and logits Q [B, N, C] of
sum(DAR(f, Q)·G) + BCE(A, Ỹ′), i.e. what one JCAS branch adds to a training step on an
h×w token grid (N = h·w).

Every (grid, variant) runs in a fresh subprocess so that its peak RSS is its own. Prints one
JSON line per case with:
- step_s_median: median wall time of the step over `reps` runs (after one warm-up);
- xla_temp_mb / xla_peak_mb: XLA's compiled memory analysis (temporaries; temporaries +
  arguments + outputs);
- rss_peak_mb − rss_baseline_mb = rss_delta_mb: ru_maxrss after the runs minus ru_maxrss
  once JAX is up and the inputs exist (includes compiler memory when that is the larger);
- status: ok | skipped (XLA predicts more than --max_run_gb: not run, to spare a shared
  machine) | failed (exception, killed, or over --case_timeout_s).
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list('grids', ['32', '64', '128'], 'Square token grid sides.')
flags.DEFINE_list('variants', ['naive', 'blocked'], 'naive and/or blocked.')
flags.DEFINE_integer('batch', 4, 'Batch size B.')
flags.DEFINE_integer('dim', 256, 'Embedding dimension D.')
flags.DEFINE_integer('classes', 4, 'Number of classes C.')
flags.DEFINE_integer('block', 256, 'Row-block size of the blocked variant.')
flags.DEFINE_integer('reps', 3, 'Timed repetitions; the median is reported.')
flags.DEFINE_float('max_run_gb', 8.0,
                   'Do not execute a case whose XLA peak estimate exceeds this (GiB).')
flags.DEFINE_integer('case_timeout_s', 1200, 'Wall-clock limit of one case.')
flags.DEFINE_string('case', None, 'Internal: run one case "grid,variant" and print JSON.')

MIB = 2.0**20


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _step_fn(variant: str, block: int):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from nsegjax import jcas  # pylint: disable=g-import-not-at-top

  def loss(f, q, classes, g):
    xhat = jcas.normalize_embeddings(f)
    if variant == 'naive':
      a = jcas.affinity_matrix(xhat)
      p, l_aff = jcas.dar_from_affinity(a, q), jcas.affinity_bce(a, classes)
    else:
      p, l_aff = jcas.dar_and_affinity_bce_blocked(xhat, q, classes, None, block)
    return jnp.sum(p * g) + l_aff

  return jax.jit(jax.value_and_grad(loss, (0, 1)))


def run_case(grid: int, variant: str) -> dict:
  """One (grid, variant) in this process; returns the JSON record."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  b, d, c, n = FLAGS.batch, FLAGS.dim, FLAGS.classes, grid * grid
  record = {'grid': f'{grid}x{grid}', 'n': n, 'batch': b, 'dim': d, 'classes': c,
            'variant': variant, 'block': FLAGS.block if variant == 'blocked' else None,
            'device': str(jax.devices()[0].device_kind), 'cpu_count': os.cpu_count()}
  rng = np.random.default_rng(0)
  f = jax.device_put(rng.normal(size=(b, n, d)).astype(np.float32))
  q = jax.device_put(rng.normal(size=(b, n, c)).astype(np.float32))
  classes = jax.device_put(rng.integers(0, c + 1, size=(b, n)).astype(np.int32))
  g = jax.device_put(rng.normal(size=(b, n, c)).astype(np.float32))
  jax.block_until_ready((f, q, classes, g))
  record['rss_baseline_mb'] = round(_maxrss_mb(), 1)

  step = _step_fn(variant, FLAGS.block)
  start = time.perf_counter()
  compiled = step.lower(f, q, classes, g).compile()
  record['compile_s'] = round(time.perf_counter() - start, 2)
  mem = compiled.memory_analysis()
  if mem is not None:
    record['xla_temp_mb'] = round(mem.temp_size_in_bytes / MIB, 1)
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - mem.alias_size_in_bytes)
    record['xla_peak_mb'] = round(peak / MIB, 1)
    if peak > FLAGS.max_run_gb * 2**30:
      record['status'] = 'skipped'
      record['note'] = f'XLA peak estimate above --max_run_gb={FLAGS.max_run_gb}; not run'
      return record
  # XLA's cost analysis counts a scan body once, so count the N×N×D matmuls by hand:
  # A = x̂x̂ᵀ forward, two in the backward, and the blocked variant recomputes A.
  passes = 3 if variant == 'naive' else 4
  record['matmul_gflop'] = round(passes * 2 * b * n * n * d / 1e9, 1)

  jax.block_until_ready(compiled(f, q, classes, g))   # warm-up
  times = []
  for _ in range(FLAGS.reps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(f, q, classes, g))
    times.append(time.perf_counter() - start)
  record['step_s_median'] = round(statistics.median(times), 3)
  record['step_s_all'] = [round(t, 3) for t in times]
  record['rss_peak_mb'] = round(_maxrss_mb(), 1)
  record['rss_delta_mb'] = round(record['rss_peak_mb'] - record['rss_baseline_mb'], 1)
  record['status'] = 'ok'
  return record


def spawn_case(grid: int, variant: str) -> dict:
  """Runs one case in a fresh interpreter; failures become a 'failed' record."""
  argv = [sys.executable, '-m', 'launch.bench_jcas_affinity', f'--case={grid},{variant}',
          f'--batch={FLAGS.batch}', f'--dim={FLAGS.dim}', f'--classes={FLAGS.classes}',
          f'--block={FLAGS.block}', f'--reps={FLAGS.reps}', f'--max_run_gb={FLAGS.max_run_gb}']
  base = {'grid': f'{grid}x{grid}', 'n': grid * grid, 'batch': FLAGS.batch,
          'dim': FLAGS.dim, 'classes': FLAGS.classes, 'variant': variant,
          'block': FLAGS.block if variant == 'blocked' else None, 'status': 'failed'}
  try:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=FLAGS.case_timeout_s,
                          check=False)
  except subprocess.TimeoutExpired:
    return {**base, 'error': f'over --case_timeout_s={FLAGS.case_timeout_s}'}
  for line in reversed(proc.stdout.strip().splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  why = 'killed (likely out of memory)' if proc.returncode in (-9, 137) else 'exception'
  return {**base, 'error': f'{why}, rc={proc.returncode}: ' + ' | '.join(tail)}


def main(argv):
  del argv
  if FLAGS.case:
    grid, variant = FLAGS.case.split(',')
    try:
      record = run_case(int(grid), variant)
    except Exception as e:  # pylint: disable=broad-except
      record = {'grid': f'{grid}x{grid}', 'variant': variant, 'status': 'failed',
                'error': f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'}
    print(json.dumps(record), flush=True)
    return
  for grid in FLAGS.grids:
    for variant in FLAGS.variants:
      print(json.dumps(spawn_case(int(grid), variant)), flush=True)


if __name__ == '__main__':
  app.run(main)
