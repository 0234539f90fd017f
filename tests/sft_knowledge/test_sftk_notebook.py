"""notebooks/sft_knowledge.ipynb runs top to bottom (its code cells executed in order in one namespace; no Jupyter
needed) and shows what it claims: the knowledge set and its answer checks, the mastery levels, the restoration rule
on a tiny model and the token-level KL."""


import pytest

def test_notebook_executes(run_notebook, tmp_path):
  namespace = run_notebook("sft_knowledge", "SFTK_NOTEBOOK_WORKDIR")
  checks = namespace["checks"]

  # knowledge set: the quick config's 8 relations x 30 facts, cached in the workdir, disjoint splits
  assert (tmp_path / "data" / "facts.json").exists()
  assert checks["num_facts"] == 240
  assert checks["splits_disjoint"] and checks["ood_never_in_pool"]
  assert checks["templates_per_relation"] == [8] and checks["templates_render_subject"]
  assert checks["normalize"] == ["congo", "san jose"]
  assert {"John Adams", "J Adams"} <= set(checks["successor_aliases"]) and "Adams" not in checks["successor_aliases"]
  assert checks["answer_checks_ok"] and checks["accents_and_articles"]

  # mastery levels: number of edges (0, .25, .5, .75) strictly below the mastery
  assert checks["mastery_examples"] == {0.0: 0, 0.1: 1, 0.25: 1, 0.3: 2, 0.5: 2, 0.6: 3, 0.75: 3, 0.8: 4, 1.0: 4}
  assert checks["quick_levels"] == [0, 1, 2, 3, 4]

  # restoration: 14 layer matrices of the tiny model, exactly k = round(10% of N) weights per rule
  assert checks["num_restorable"] == 14 and checks["restorable_only_layer_matrices"]
  total = checks["total_restorable_weights"]
  assert total == 2 * (3 * 64 * 128 + 2 * 64 * 64 + 2 * 64 * 32)
  selections = checks["selections"]
  for name, s in selections.items():
    assert s["selected"] == round(0.1 * total), name
    assert s["restored_equal_base"] and s["excluded_stay_tuned"], name
  assert selections["top"]["min_selected"] >= selections["top"]["max_kept"]  # one global threshold
  assert selections["bottom"]["max_selected"] <= selections["bottom"]["min_kept"]
  top = selections["top"]["where"]["fraction_per_matrix"]
  big = {"0/v_proj", "0/o_proj"}
  assert all(top[m] > 0.5 for m in big)  # the global top-k goes where the relative changes are largest
  assert all(v < 0.1 for m, v in top.items() if m not in big)
  assert all(0.05 < v < 0.15 for v in selections["random"]["where"]["fraction_per_matrix"].values())
  for key in ("full_restores_layer_matrices", "full_keeps_excluded_tuned", "full_gives_base", "zero_gives_tuned"):
    assert checks[key], key

  # token-level KL: 0 against itself, > 0 against the perturbed model; exact token counts
  kl = namespace["kl_results"]
  assert kl["self_answer_kl"] == pytest.approx(0.0, abs=1e-6) and kl["self_other_kl"] == pytest.approx(0.0, abs=1e-6)
  assert kl["answer_kl_per_token"] > 0 and kl["other_kl_per_token"] > 0
  assert kl["answer_tokens"] == [2, 4, 4] and kl["other_tokens"] == [7, 7, 7]
