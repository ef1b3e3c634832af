"""Results table and plots of a sweep: python -m launch.report --sweep=DIR [--out=DIR]

Writes report.md and report.csv (per dataset × noise × method: mean ± std over seeds of test
Dice, IoU, HD95 and ASSD, at the last step and at the best-by-validation step; noise
identification scores where a method logs them; the fraction of the noisy→clean gap
recovered, (method − ce_noisy)/(clean − ce_noisy) on mean Dice), bars_<dataset>_<noise>.png
and curves_<dataset>_<noise>.png (validation Dice over steps, mean over seeds). Missing cells
are listed, not guessed. std is the sample standard deviation (ddof 1; 0 with one seed).
"""
import collections
import csv
import json
import os
import sys

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('sweep', None, 'Sweep directory written by launch.sweep.')
flags.DEFINE_string('out', '', 'Report directory (default: the sweep directory).')
flags.mark_flag_as_required('sweep')

METRICS = ('dice', 'iou', 'hd95', 'assd')


def _read_json(path):
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _last_jsonl(path):
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    lines = [line for line in f if line.strip()]
  return json.loads(lines[-1]) if lines else None


def identification_scores(workdir: str) -> dict:
  """Noise-identification figures a method leaves in its workdir (gt_correct's last round,
  HQPM's pseudo masks)."""
  scores = {}
  rounds = _last_jsonl(os.path.join(workdir, 'gt_rounds.jsonl'))
  if rounds:
    scores.update({f'id_{k}': rounds.get(k) for k in ('accuracy', 'precision', 'recall')})
  revision = _read_json(os.path.join(workdir, 'hqpm_revision.json'))
  if revision and revision.get('imperfect_set'):
    scores.update(pseudo_dice_before=revision['imperfect_set']['dice_before'],
                  pseudo_dice_after=revision['imperfect_set']['dice_after'])
  return scores


def collect(sweep: str) -> tuple[dict, list, list]:
  """(grid, rows: one per finished cell, missing cell ids)."""
  grid = _read_json(os.path.join(sweep, 'grid.json'))
  if grid is None:
    raise FileNotFoundError(f'{sweep}: no grid.json (not a launch.sweep directory)')
  rows, missing = [], []
  for dataset in grid['datasets']:
    for noise in grid['noises']:
      for method in grid['methods']:
        for seed in grid['seeds']:
          cell_id = f'{dataset}__{noise}__{method}__s{seed}'
          workdir = os.path.join(sweep, 'runs', cell_id)
          results = _read_json(os.path.join(workdir, 'results.json'))
          if results is None:
            missing.append(cell_id)
            continue
          row = {'dataset': dataset, 'noise': noise, 'method': method, 'seed': seed,
                 'history': results.get('validation_history', []),
                 'code': code_label(results.get('code'))}
          for m in METRICS:
            row[m] = results['test'].get(m)
            row[f'{m}_best_val'] = results['test_best_val'].get(m)
          row.update(identification_scores(workdir))
          rows.append(row)
  return grid, rows, missing


def code_label(code) -> str:
  """A run's recorded commit, '+dirty' when tracked files had changes; 'unknown' before runs
  recorded it (or outside a git checkout)."""
  if not code:
    return 'unknown'
  return code['commit'][:12] + ('+dirty' if code['dirty'] else '')


def mean_std(values):
  values = np.asarray([v for v in values if v is not None], np.float64)
  values = values[np.isfinite(values)]
  if not values.size:
    return None, None, 0
  # One value has no spread: std None, not a measured 0.
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else None, values.size


def summarize(grid: dict, rows: list) -> list[dict]:
  """One summary per dataset × noise × method, with the gap recovered where both bounds ran."""
  keys = list(METRICS) + [f'{m}_best_val' for m in METRICS] + [
      'id_accuracy', 'id_precision', 'id_recall', 'pseudo_dice_before', 'pseudo_dice_after']
  out = []
  for dataset in grid['datasets']:
    for noise in grid['noises']:
      group = [r for r in rows if r['dataset'] == dataset and r['noise'] == noise]
      means = {}
      for method in grid['methods']:
        cells = [r for r in group if r['method'] == method]
        if not cells:
          continue
        s = {'dataset': dataset, 'noise': noise, 'method': method, 'seeds': len(cells)}
        for key in keys:
          s[f'{key}_mean'], s[f'{key}_std'], _ = mean_std([r.get(key) for r in cells])
        means[method] = s
        out.append(s)
      low, high = means.get('ce_noisy'), means.get('clean')
      for s in means.values():
        for suffix in ('', '_best_val'):
          gap = None
          if low and high and s[f'dice{suffix}_mean'] is not None:
            width = high[f'dice{suffix}_mean'] - low[f'dice{suffix}_mean']
            if width > 0:  # else clean did not beat ce_noisy: no gap to recover
              gap = (s[f'dice{suffix}_mean'] - low[f'dice{suffix}_mean']) / width
          s[f'gap_recovered{suffix}'] = gap
  return out


def _fmt(mean, std, digits=4):
  if mean is None:
    return '—'
  return f'{mean:.{digits}f}' if std is None else f'{mean:.{digits}f} ± {std:.{digits}f}'


def markdown(grid: dict, summaries: list, missing: list, rows: list) -> str:
  val = 'the clean labels (granted by the grid)' if grid.get('val_labels') == 'clean' else \
      'the noisy labels (no clean validation set is granted)'
  lines = [f'# Sweep `{grid["name"]}`', '',
           f'Test metrics, mean ± std over seeds (the mean alone for one seed). "best val" is '
           f'the state with the best validation Dice, where validation uses {val}. Gap = '
           f'(method − ce_noisy) / (clean − ce_noisy) on mean Dice, "—" where clean did not beat '
           f'ce_noisy.', '']
  codes = collections.Counter(r['code'] for r in rows)
  if codes:
    lines += ['Code: ' + ', '.join(f'commit {c} ({n} cell{"s" * (n != 1)})'
                                   for c, n in sorted(codes.items())), '']
  for dataset in grid['datasets']:
    for noise in grid['noises']:
      group = [s for s in summaries if s['dataset'] == dataset and s['noise'] == noise]
      if not group:
        continue
      lines += [f'## {dataset} · {noise} `{json.dumps(grid["noises"][noise])}`', '',
                '| method | seeds | Dice | Dice (best val) | IoU | HD95 | ASSD | gap | gap (best val) '
                '| noise identification |', '|' + '---|' * 10]
      for s in group:
        ident = []
        if s['id_accuracy_mean'] is not None:
          ident.append(f'acc {s["id_accuracy_mean"]:.3f} P {s["id_precision_mean"]:.3f} '
                       f'R {s["id_recall_mean"]:.3f}')
        if s['pseudo_dice_after_mean'] is not None:
          ident.append(f'pseudo-mask Dice {s["pseudo_dice_before_mean"]:.4f} → '
                       f'{s["pseudo_dice_after_mean"]:.4f}')
        gap = lambda g: '—' if g is None else f'{g:+.2f}'  # noqa: E731
        lines.append(
            f'| {s["method"]} | {s["seeds"]} | {_fmt(s["dice_mean"], s["dice_std"])} | '
            f'{_fmt(s["dice_best_val_mean"], s["dice_best_val_std"])} | '
            f'{_fmt(s["iou_mean"], s["iou_std"])} | {_fmt(s["hd95_mean"], s["hd95_std"], 2)} | '
            f'{_fmt(s["assd_mean"], s["assd_std"], 2)} | {gap(s["gap_recovered"])} | '
            f'{gap(s["gap_recovered_best_val"])} | {"; ".join(ident) or "—"} |')
      lines.append('')
  if missing:
    lines += [f'Missing cells ({len(missing)}):', ''] + missing_by_setting(missing) + ['']
  return '\n'.join(lines)


def missing_by_setting(missing: list) -> list[str]:
  """'- dataset · noise: method (s0, s1), ...' lines, one per dataset × noise, in cell order."""
  grouped = collections.defaultdict(lambda: collections.defaultdict(list))
  for cell_id in missing:
    dataset, noise, method, seed = cell_id.split('__')
    grouped[(dataset, noise)][method].append(seed)
  return [f'- {dataset} · {noise}: ' + ', '.join(f'{m} ({", ".join(seeds)})'
                                                 for m, seeds in methods.items())
          for (dataset, noise), methods in grouped.items()]


def write_csv(path: str, summaries: list) -> None:
  fields = sorted({k for s in summaries for k in s}, key=lambda k: (k not in (
      'dataset', 'noise', 'method', 'seeds'), k))
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(summaries)


def plot(grid: dict, summaries: list, rows: list, out: str) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  written = []
  for dataset in grid['datasets']:
    for noise in grid['noises']:
      group = [s for s in summaries if s['dataset'] == dataset and s['noise'] == noise]
      if not group:
        continue
      fig = Figure(figsize=(max(4, 0.7 * len(group) + 2), 3.2))
      ax = fig.subplots()
      x = np.arange(len(group))
      for offset, suffix, label in ((-0.2, '', 'last'), (0.2, '_best_val', 'best val')):
        ax.bar(x + offset, [s[f'dice{suffix}_mean'] or 0 for s in group], 0.4,
               yerr=[s[f'dice{suffix}_std'] or 0 for s in group], label=label, capsize=2)
      ax.set_xticks(x, [s['method'] for s in group], rotation=45, ha='right')
      ax.set_ylabel('test Dice')
      ax.set_title(f'{dataset} · {noise}')
      ax.legend(fontsize=7)
      fig.tight_layout()
      path = os.path.join(out, f'bars_{dataset}_{noise}.png')
      fig.savefig(path, dpi=110)
      written.append(path)

      fig = Figure(figsize=(5, 3.2))
      ax = fig.subplots()
      for method in grid['methods']:
        histories = [r['history'] for r in rows if (r['dataset'], r['noise'], r['method']) ==
                     (dataset, noise, method) and r['history']]
        if not histories:
          continue
        length = min(len(h) for h in histories)
        steps = [point[0] for point in histories[0][:length]]
        dice = np.mean([[h[i][1] for i in range(length)] for h in histories], axis=0)
        ax.plot(steps, dice, marker='.', label=method)
      ax.set_xlabel('step')
      ax.set_ylabel('validation Dice')
      ax.set_title(f'{dataset} · {noise}')
      ax.legend(fontsize=6, ncol=2)
      fig.tight_layout()
      path = os.path.join(out, f'curves_{dataset}_{noise}.png')
      fig.savefig(path, dpi=110)
      written.append(path)
  return written


def report(sweep: str, out: str = '') -> dict:
  out = out or sweep
  os.makedirs(out, exist_ok=True)
  grid, rows, missing = collect(sweep)
  summaries = summarize(grid, rows)
  with open(os.path.join(out, 'report.md'), 'w', encoding='utf-8') as f:
    f.write(markdown(grid, summaries, missing, rows))
  write_csv(os.path.join(out, 'report.csv'), summaries)
  figures = plot(grid, summaries, rows, out)
  return {'summaries': summaries, 'missing': missing, 'figures': figures}


def main(argv):
  del argv
  try:
    result = report(FLAGS.sweep, FLAGS.out)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  out = FLAGS.out or FLAGS.sweep
  print(f'{len(result["summaries"])} rows, {len(result["missing"])} missing cells → '
        f'{out}/report.md, report.csv, {len(result["figures"])} figures')


if __name__ == '__main__':
  app.run(main)
