"""notebooks/bsd.ipynb runs top to bottom (its code cells executed in order in one namespace; no Jupyter needed)."""


def test_notebook_executes(run_notebook, tmp_path):
  namespace = run_notebook("bsd", "BSD_NOTEBOOK_WORKDIR")
  assert namespace["results"]["bsd"]["test_accuracy"] > 0.9
  assert (tmp_path / "bsd" / "spike_raster.png").exists()
