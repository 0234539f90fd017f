"""notebooks/bsd.ipynb runs top to bottom (its code cells executed in order in one namespace; no Jupyter needed)."""

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  monkeypatch.setenv("BSD_NOTEBOOK_WORKDIR", str(tmp_path))
  with open(os.path.join(ROOT, "notebooks", "bsd.ipynb")) as f:
    notebook = json.load(f)
  namespace = {"__name__": "__notebook__"}
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      exec(compile("".join(cell["source"]), "bsd.ipynb", "exec"), namespace)  # noqa: S102
  assert namespace["results"]["bsd"]["test_accuracy"] > 0.9
  assert (tmp_path / "bsd" / "spike_raster.png").exists()
