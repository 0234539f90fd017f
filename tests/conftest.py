"""Test-wide settings: quiet, deterministic, and absl flags parsed (grain's multi-worker loader reads them)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import absl.flags  # noqa: E402

absl.flags.FLAGS.mark_as_parsed()


import json  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
  """Executes `notebooks/<name>.ipynb` top to bottom (its code cells in order, in one namespace; no Jupyter),
  from the repository root, with `$<workdir_env>` pointing at a fresh temporary folder; returns the namespace."""

  def run(name: str, workdir_env: str) -> dict:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(workdir_env, str(tmp_path))
    with open(os.path.join(ROOT, "notebooks", f"{name}.ipynb")) as f:
      notebook = json.load(f)
    namespace = {"__name__": "__notebook__"}
    for cell in notebook["cells"]:
      if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"{name}.ipynb", "exec"), namespace)  # noqa: S102
    return namespace

  return run
