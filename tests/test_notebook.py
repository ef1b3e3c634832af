"""launch/notebooks/tour.ipynb runs headless, top to bottom, on the embedded dataset."""
import os

import nbclient
import nbformat

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'launch',
                        'notebooks', 'tour.ipynb')


def test_tour_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv('NSEGJAX_TOUR_DATA_DIR', str(tmp_path))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  client.execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'restored step 8' in text
  images = [o for o in outputs if o.output_type == 'display_data' and 'image/png' in o.data]
  assert len(images) >= 4  # noise, affinity, transition matrices, predictions
  for name in ('noise.png', 't.png', 'pred.png'):
    assert os.path.getsize(tmp_path / name) > 0
  assert os.path.isfile(tmp_path / 'tour_run' / 'results.json')

