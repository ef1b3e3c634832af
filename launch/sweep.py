"""Run a grid of methods × datasets × noise settings × seeds, one `nsegjax.main` run per cell.

  python -m launch.sweep --grid=launch/grids/cpu_kvasir.py [--sweep_dir=DIR] [--parallel=N]
                         [--dry-run] [--emit=commands|slurm]

Cells whose workdir holds results.json are skipped, so re-running finishes a sweep; a cell
killed half-way resumes from its last checkpoint. `--emit=commands` prints one shell command
per unfinished cell (for any scheduler); `--emit=slurm` writes <sweep>/sweep.slurm, a SLURM
array job over those commands. `--dry-run` lists what would run. Reports: `launch.report`.
Local cells share a JAX compilation cache in <sweep>/xla_cache ($JAX_COMPILATION_CACHE_DIR
overrides it).
"""
import os
import subprocess
import sys
import time

from absl import app, flags

from launch import grid as grids
from nsegjax.errors import NsegError

FLAGS = flags.FLAGS
flags.DEFINE_string('grid', None, 'Grid file (.py with get_grid(), or .yaml).')
flags.DEFINE_string('sweep_dir', '', 'Sweep directory (default: sweeps/<grid name>).')
flags.DEFINE_integer('parallel', 1, 'Cells run at once on this machine.')
flags.DEFINE_bool('dry-run', False, 'Print the cells that would run and stop.')
flags.DEFINE_enum('emit', '', ['', 'commands', 'slurm'], 'Write commands instead of running.')
flags.DEFINE_string('python', sys.executable, 'Interpreter of the emitted / run commands.')
flags.DEFINE_string('slurm_options', '--cpus-per-task=2 --time=01:00:00',
                    'Extra #SBATCH options of the emitted array job.')
flags.mark_flag_as_required('grid')


def slurm_script(sweep: grids.SweepDir, todo, python: str, options: str) -> str:
  """An array job whose task i runs line i of <sweep>/commands.txt."""
  lines = [grids.shell_line(sweep.command(c, python)) for c in todo]
  commands = os.path.join(sweep.root, 'commands.txt')
  with open(commands, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  sbatch = '\n'.join(f'#SBATCH {opt}' for opt in options.split())
  return (f'#!/bin/bash\n#SBATCH --job-name=nsegjax-sweep\n#SBATCH --array=1-{len(lines)}\n'
          f'#SBATCH --output={sweep.root}/logs/slurm-%A_%a.log\n{sbatch}\n'
          f'cd {grids.REPO_ROOT}\n'
          f'eval "$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {commands})"\n')


def run_cells(sweep: grids.SweepDir, todo, parallel: int, python: str) -> list:
  """Runs the cells, `parallel` at a time; the failed cells' ids."""
  pending, running, failed = list(todo), {}, []
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [grids.REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
  # Cells of one method share their programs: compile each once per sweep, not once per cell.
  env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(sweep.root, 'xla_cache'))
  while pending or running:
    while pending and len(running) < parallel:
      cell = pending.pop(0)
      log = open(sweep.log_file(cell), 'a', encoding='utf-8')  # pylint: disable=consider-using-with
      print(f'start {cell.id}', flush=True)
      running[cell] = (subprocess.Popen(sweep.command(cell, python), stdout=log,
                                        stderr=subprocess.STDOUT, cwd=grids.REPO_ROOT, env=env),
                       log, time.time())
    time.sleep(1)
    for cell, (proc, log, start) in list(running.items()):
      if proc.poll() is None:
        continue
      log.close()
      del running[cell]
      status = 'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode}; see ' \
                                                   f'{sweep.log_file(cell)})'
      if proc.returncode:
        failed.append(cell.id)
      print(f'{status} {cell.id} in {time.time() - start:.0f}s', flush=True)
  return failed


def main(argv):
  del argv
  try:
    grid = grids.load_grid(FLAGS.grid)
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  sweep = grids.SweepDir(FLAGS.sweep_dir or os.path.join('sweeps', grid['name']))
  every = sweep.write(grid)
  todo = [c for c in every if not sweep.is_done(c)]
  print(f'{sweep.root}: {len(every)} cells, {len(every) - len(todo)} finished, '
        f'{len(todo)} to run', file=sys.stderr, flush=True)
  if FLAGS.emit == 'commands':
    for cell in todo:
      print(grids.shell_line(sweep.command(cell, FLAGS.python)))
    return
  if FLAGS.emit == 'slurm':
    path = os.path.join(sweep.root, 'sweep.slurm')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(slurm_script(sweep, todo, FLAGS.python, FLAGS.slurm_options))
    print(f'wrote {path}: sbatch {path}')
    return
  if FLAGS['dry-run'].value:
    for cell in todo:
      print(grids.shell_line(sweep.command(cell, FLAGS.python)))
    return
  failed = run_cells(sweep, todo, max(FLAGS.parallel, 1), FLAGS.python)
  if failed:
    print(f'{len(failed)} cells failed: {", ".join(failed)}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
