"""experiments/quickstart.ipynb runs top to bottom offline (with its parameters shrunk)."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "quickstart.ipynb")


def test_quickstart_notebook_runs(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1
  # The procedural set keeps the test fast (the default, mnist5k, is 5,000 real digits).
  parameters[0].source += (f"\nDATASET = 'procedural'\nNUM_IMAGES = 40\nRESOLUTION = 8\n"
                           f"NUM_SAMPLES = 3\nNUM_STEPS = 2\nDATA_DIR = {str(tmp_path)!r}")
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute(cwd=os.path.join(ROOT, "experiments"))
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == "display_data" and "image/png" in o.data]
  assert len(images) == 3  # training images, every method side by side, concentration
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  for method in ("optimal", "wiener", "pca_locality", "golddiff"):
    assert f"{method:>13}: median step" in text
  assert "median effective support" in text
