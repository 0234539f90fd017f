"""notebooks/agents.ipynb runs top to bottom (its code cells executed in order in one namespace; no Jupyter)."""


def test_notebook_executes(run_notebook, tmp_path):
  namespace = run_notebook("agents", "AGENTS_NOTEBOOK_WORKDIR")
  assert namespace["bad"].reward == 0.0 and namespace["bad"].info["invalid"]
  assert namespace["result"].info["success"]
  assert namespace["limits"] == {0: 6, 99: 6, 100: 13, 199: 13, 200: 20, 10_000: 20}
  assert abs(float(namespace["grpo"][0]) - 1.5) < 1e-5 and float(abs(namespace["grpo"][4:]).max()) == 0.0
  success = namespace["success"]
  assert len(success) == 25 and sum(success[-3:]) / 3 > sum(success[:3]) / 3 + 0.3
  assert namespace["last"]["step"] == 25
