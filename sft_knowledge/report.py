"""Report of the SFT-and-knowledge study (arXiv 2509.16596): every stage, then tables, plots and the main job's rows.

    python -m sft_knowledge.report --config configs/sft_knowledge/quick.py --workdir runs/sftk_quick

writes `<workdir>/sft_knowledge_results.md` (mastery distribution, results grid level x size with the paper's
headline numbers beside ours, token-level KL, restoration rows), `results.json` and `plots/*.png`.
`quick_report(workdir)` runs the quick config for `python -m reproduce` and returns `core.report.ClaimRow`s.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
import numpy as np

from core import config as config_lib
from core import entrypoint
from core import report as report_lib
from core.report import ClaimRow
from sft_knowledge import pipeline, plots

PAPER = "SFT knowledge (2509.16596)"
QUICK_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "sft_knowledge",
                            "quick.py")


def _grid(results: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
  """(level, size) -> mean/sd over seeds of in- and out-of-domain accuracy, and the run names."""
  cells: dict[tuple[int, int], dict[str, list]] = {}
  for run in results["finetune"]:
    if "skipped" in run:
      continue
    ev = results["evaluate"][run["name"]]
    cell = cells.setdefault((run["level"], run["size"]), {"test_id": [], "test_ood": [], "runs": []})
    cell["test_id"].append(ev["test_id_accuracy"])
    cell["test_ood"].append(ev["test_ood_accuracy"])
    cell["runs"].append(run["name"])
  return {k: {"test_id": float(np.mean(v["test_id"])), "test_ood": float(np.mean(v["test_ood"])),
              "test_id_sd": float(np.std(v["test_id"])), "test_ood_sd": float(np.std(v["test_ood"])),
              "seeds": len(v["runs"]), "runs": v["runs"]} for k, v in sorted(cells.items())}


def _pct(x: float) -> str:
  return f"{100 * x:.1f}%"


def _scale(config: ml_collections.ConfigDict, results: dict[str, Any]) -> str:
  data = results["build_data"]["splits"]
  model = config.model.source or "SmolLM2-135M-Instruct"
  tuning = "full FT" if config.sft.mode == "full" else f"{config.sft.mode} SFT"
  return (f"{model} {tuning} on CPU; {len(data['pool'])} pool facts, {len(data['test_id'])} ID + "
          f"{len(data['test_ood'])} OOD test facts; mastery from {config.data.mastery_templates} templates x "
          f"(greedy + {config.mastery.samples} sampled); sizes {tuple(config.grid.sizes)}, {config.grid.epochs} "
          f"epochs, batch {config.sft.batch_size}, lr {config.optimizer.learning_rate:g}, "
          f"seeds {tuple(config.grid.seeds)}")


def tables(config: ml_collections.ConfigDict, results: dict[str, Any]) -> str:
  base = results["evaluate"]["base"]
  grid = _grid(results)
  lines = [f"Scale: {_scale(config, results)}.", "",
           "### Mastery distribution of the SFT pool (levels 0-4)", "",
           "| level | " + " | ".join(str(l) for l in range(5)) + " |", "|---|" + "---|" * 5,
           "| pool facts | " + " | ".join(str(results["mastery"]["pool_distribution"][str(l)]) for l in range(5))
           + " |",
           "", "Mean mastery per relation: " + ", ".join(
               f"{k} {v:.2f}" for k, v in results["mastery"]["mean_mastery_per_relation"].items()), "",
           "### CBQA accuracy after SFT (mean over seeds, sd = population SD (ddof=0) of ID accuracy; in-domain / "
           "out-of-domain test facts)", "",
           f"Base model (no SFT): ID {_pct(base['test_id_accuracy'])}, OOD {_pct(base['test_ood_accuracy'])}.", ""]
  sizes = sorted({s for _, s in grid})
  lines += ["| level | " + " | ".join(f"n={s}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
  for level in sorted({l for l, _ in grid}):
    cells = []
    for s in sizes:
      c = grid.get((level, s))
      cells.append("skipped (pool too small)" if c is None else
                   f"{_pct(c['test_id'])} / {_pct(c['test_ood'])}" + (f" (sd {100 * c['test_id_sd']:.1f})"
                                                                     if c["seeds"] > 1 else ""))
    lines.append(f"| {level} | " + " | ".join(cells) + " |")
  skipped = [r["name"] + ": " + r["skipped"] for r in results["finetune"] if "skipped" in r]
  if skipped:
    lines += ["", "Skipped runs: " + "; ".join(skipped) + "."]
  lines += ["", "Paper (five LLaMA-2/3 models, EntityQuestions-style CBQA): 1,920 samples up to 14% worse than 240; the mastery "
            "level of the SFT data moves accuracy by over 12%.", "",
            "### Token-level KL(fine-tuned || base), mean per token on the test chats", "",
            "| run | answer tokens | other tokens |", "|---|---|---|"]
  for name, kl in sorted(results["analyse"]["kl"].items()):
    lines.append(f"| {name} | {kl['answer_kl']:.4f} | {kl['other_kl']:.4f} |")
  for name, rows in results["analyse"]["restore"].items():
    tuned = results["evaluate"][name]
    lines += ["", f"### Restoration of {name} (fine-tuned: ID {_pct(tuned['test_id_accuracy'])}, OOD "
              f"{_pct(tuned['test_ood_accuracy'])})", "",
              "| selection | ratio | ID acc | OOD acc | share of each matrix kind's weights restored |",
              "|---|---|---|---|---|"]
    for r in rows:
      where = "(rescaled, not restored)" if r["where"] is None else ", ".join(
          f"{k[:-5]} {100 * v:.1f}%" for k, v in sorted(r["where"]["fraction_per_kind"].items()))
      lines.append(f"| {r['selection']} | {100 * r['ratio']:g}% | {_pct(r['test_id_accuracy'])} | "
                   f"{_pct(r['test_ood_accuracy'])} | {where} |")
  return "\n".join(lines)


def make_plots(results: dict[str, Any], workdir: str) -> list[str]:
  out = [plots.mastery_distribution(results["mastery"]["pool_distribution"],
                                    os.path.join(workdir, "plots", "mastery_distribution.png"))]
  base = results["evaluate"]["base"]
  grid = _grid(results)
  if grid:
    out.append(plots.accuracy_grid(grid, {"test_id": base["test_id_accuracy"], "test_ood": base["test_ood_accuracy"]},
                                   os.path.join(workdir, "plots", "accuracy_grid.png")))
  if results["analyse"]["kl"]:
    out.append(plots.token_kl(results["analyse"]["kl"], os.path.join(workdir, "plots", "token_kl.png")))
  for name, rows in results["analyse"]["restore"].items():
    out.append(plots.restoration(rows, results["evaluate"][name], base, name,
                                 os.path.join(workdir, "plots", f"restoration_{name}.png")))
    top = [r for r in rows if r["selection"] == "top"]
    if top:
      # The largest partial restoration: at ratio 1 every weight is restored, and the map is uniformly 100%.
      partial = [r for r in top if r["ratio"] < 1] or top
      r = max(partial, key=lambda r: r["ratio"])
      out.append(plots.restored_where(r["where"]["fraction_per_matrix"], f"{name}: top {100 * r['ratio']:g}%",
                                      os.path.join(workdir, "plots", f"restored_where_{name}.png")))
  return out


def claim_rows(config: ml_collections.ConfigDict, results: dict[str, Any]) -> list[ClaimRow]:
  grid, base, scale = _grid(results), results["evaluate"]["base"], _scale(config, results)
  # Grid cells the pool could not fill are named in the main table too, not only in the report's own file.
  skipped = [r["name"] for r in results["finetune"] if "skipped" in r]
  skipped_note = f" (skipped, too few pool facts: {', '.join(skipped)})" if skipped else ""
  rows = []
  sizes = sorted({s for _, s in grid})
  size_text = []
  for level in sorted({l for l, _ in grid}):
    have = [s for s in sizes if (level, s) in grid]
    if len(have) > 1:
      size_text.append(f"level {level}: " + ", ".join(f"n={s} {_pct(grid[(level, s)]['test_id'])}" for s in have))
  rows.append(ClaimRow(PAPER, "CBQA accuracy vs SFT data size (in-domain test)",
                       "1,920 samples up to 14% worse than 240",
                       ("; ".join(size_text) or "one size per level only")
                       + f" (base {_pct(base['test_id_accuracy'])})" + skipped_note,
                       scale))
  level_text = []
  for s in sizes:
    have = [l for l in sorted({l for l, _ in grid}) if (l, s) in grid]
    if len(have) > 1:
      level_text.append(f"n={s}: " + ", ".join(f"L{l} {_pct(grid[(l, s)]['test_id'])}" for l in have))
  rows.append(ClaimRow(PAPER, "CBQA accuracy vs mastery level of the SFT data (in-domain test)",
                       "swings by over 12%", ("; ".join(level_text) or "one level per size only") + skipped_note,
                       scale))
  rows.append(ClaimRow(PAPER, "Mastery distribution of the pool (levels 0..4)", "5 levels (2409.15825)",
                       str([results["mastery"]["pool_distribution"][str(l)] for l in range(5)]), scale))
  if results["analyse"]["kl"]:
    rows.append(ClaimRow(PAPER, "Token-level KL(ft || base) per token, answer vs other tokens",
                         "analysed per level and size (figures)",
                         "; ".join(f"{n} {v['answer_kl']:.3f}/{v['other_kl']:.3f}"
                                   for n, v in sorted(results["analyse"]["kl"].items())), scale))
  for name, r_rows in results["analyse"]["restore"].items():
    tuned = results["evaluate"][name]["test_id_accuracy"]
    rows.append(ClaimRow(PAPER, f"CBQA after restoring SFT updates of {name} (ID; fine-tuned {_pct(tuned)})",
                         "restoring up to 90% of updates can improve CBQA",
                         ", ".join(f"{r['selection']} {100 * r['ratio']:g}% {_pct(r['test_id_accuracy'])}"
                                   for r in r_rows), scale))
  return rows


def report(config: ml_collections.ConfigDict, workdir: str) -> list[ClaimRow]:
  """Runs (or reuses) every stage, writes the tables, plots and results.json; returns the claim rows."""
  start = time.perf_counter()
  results = pipeline.run_all(config, workdir)
  text = tables(config, results)
  figures = make_plots(results, workdir)
  with open(os.path.join(workdir, "sft_knowledge_results.md"), "w") as f:
    f.write(text + "\n\nPlots: " + ", ".join(os.path.relpath(p, workdir) for p in figures) + "\n")
  slim = {k: v for k, v in results.items() if k != "build_data"}
  slim["evaluate"] = {n: {k: v for k, v in e.items() if not k.endswith("_correct")}
                      for n, e in results["evaluate"].items()}
  slim["mastery"] = {k: v for k, v in results["mastery"].items() if k != "facts"}
  slim["wall_s"] = time.perf_counter() - start
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(slim, f, indent=1, default=str)
  print(text)
  print(f"\nsft_knowledge report in {slim['wall_s']:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["timings_s"].items()))
  return claim_rows(config, results)


def quick_report(workdir: str) -> list[ClaimRow]:
  """The quick config end to end (a few minutes on 2 CPU cores); the main job's rows."""
  config = config_lib.load_config(QUICK_CONFIG)
  # The main job claims its own workdir, but this sub-folder counts as a run folder there only once a fine-tuning
  # run has written checkpoints; its cached data and mastery labels must go on a code change even before that.
  return _claimed_report(config, workdir)


def _claimed_report(config: ml_collections.ConfigDict, workdir: str) -> list[ClaimRow]:
  """`report` after `core.report.claim_workdir`: runs that other code trained are removed, not re-evaluated, and
  so are the cached data, mastery labels and evaluations that other code computed (their cache keys hold the
  config, not the code)."""
  report_lib.claim_workdir(workdir, derived=pipeline.CACHED_OUTPUTS)
  return report(config, workdir)


if __name__ == "__main__":
  entrypoint.run(_claimed_report, validate=pipeline.validate_config)
