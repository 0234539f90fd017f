"""notebooks/agents.ipynb runs top to bottom (its code cells executed in order in one namespace; no Jupyter)."""

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  monkeypatch.setenv("AGENTS_NOTEBOOK_WORKDIR", str(tmp_path))
  with open(os.path.join(ROOT, "notebooks", "agents.ipynb")) as f:
    notebook = json.load(f)
  namespace = {"__name__": "__notebook__"}
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      exec(compile("".join(cell["source"]), "agents.ipynb", "exec"), namespace)  # noqa: S102
  assert namespace["bad"].reward == 0.0 and namespace["bad"].info["invalid"]
  assert namespace["result"].info["success"]
  assert namespace["limits"] == {0: 6, 99: 6, 100: 13, 199: 13, 200: 20, 10_000: 20}
  assert abs(float(namespace["grpo"][0]) - 1.5) < 1e-5 and float(abs(namespace["grpo"][4:]).max()) == 0.0
  success = namespace["success"]
  assert len(success) == 25 and sum(success[-3:]) / 3 > sum(success[:3]) / 3 + 0.3
  assert namespace["last"]["step"] == 25
