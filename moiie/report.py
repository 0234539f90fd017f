"""The quick reproduction of MoIIE (arXiv 2508.09779: its dense / vanilla MoE / modality MoE / MoIIE comparison)
for the main table: `quick_report(workdir) -> [ClaimRow]`.

It runs `configs/moiie/easyvqa_tiny.py:quick` once as the dense model (stages 0, 1 and 2), then stage 2 of the
four MoE variants (the paper's three, and modality MoE at MoIIE's activated parameters) from the same stage-0/1
model (`reuse_stages_from`): equal steps, same data order, same upcycling source. It writes `moiie_table.md`,
`moiie_results.json` and `router_load.png` (expert load per modality and MoE layer) into the workdir. Scale: a tiny random 4-layer LLM and a 2-layer ViT on easy-VQA, minutes on CPU;
the paper trains 3B-8B LLMs on millions of image-text pairs, so only the ordering of variants is comparable.

    python -m moiie.report --workdir runs/moiie_report
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from core import config as config_lib
from core import report as report_lib
from core.report import ClaimRow
from moiie import plots, training

PAPER = "MoIIE (2508.09779)"
CONFIG = "configs/moiie/easyvqa_tiny.py"
# modality_top2 is not a row of the paper: its modality MoE at MoIIE's activated parameters (see moiie/routing.py).
VARIANTS = ("dense", "vanilla", "modality", "modality_top2", "moiie")
LABELS = {"dense": "dense", "vanilla": "vanilla MoE (1 router, 4 shared, top-2)",
          "modality": "modality MoE (1 vision + 1 text expert)",
          "modality_top2": "modality MoE at MoIIE's activated params (2 vision + 2 text, top-2; not in the paper)",
          "moiie": "MoIIE (1 vision + 2 shared + 1 text, top-2)"}
PAPER_CLAIM = "MoIIE > modality MoE, vanilla MoE and dense by 0.5-1.2 points (average of 13 benchmarks)"


def run_quick(workdir: str, overrides=()) -> dict[str, dict[str, Any]]:
  results: dict[str, dict[str, Any]] = {}
  first = os.path.join(workdir, VARIANTS[0])
  for variant in VARIANTS:
    extra = [] if variant == VARIANTS[0] else [f"reuse_stages_from={first}"]
    config = config_lib.load_config(f"{CONFIG}:quick,{variant}", [*extra, *overrides])
    results[variant] = training.train_and_evaluate(config, os.path.join(workdir, variant))
  return results


def _pct(x: float) -> str:
  return f"{100 * x:.1f}"


def table(results: dict[str, dict[str, Any]]) -> str:
  lines = ["| variant | test exact match % (+- SE by image) | shape % | color % | yes/no % | activated FFN params / token | "
           "LLM params | paper |", "|---|---|---|---|---|---|---|---|"]
  for v, r in results.items():
    t = r["test"]
    paper = {"moiie": "best of the four (+0.5-1.2 avg.)", "modality_top2": "not in the paper"}.get(v, "baseline")
    se = t.get("accuracy_se_by_image", float("nan"))
    lines.append(f"| {LABELS[v]} | {_pct(t['accuracy'])} +- {_pct(se)} | {_pct(t['accuracy_shape'])} | "
                 f"{_pct(t['accuracy_color'])} | {_pct(t['accuracy_yes/no'])} | "
                 f"{r['activated_ffn_params_per_token']:,} | {r['total_llm_params']:,} | {paper} |")
  return "\n".join(lines)


def scale(r: dict[str, Any]) -> str:
  s = r["steps"]
  llm = "tiny random Llama" if r["llm"] == "tiny" else "pretrained LLM"
  return (f"easy-VQA {r['train_questions']} train / {r['test_questions']} test questions; {llm} "
          f"({r['llm_layers']} layers, d={r['llm_hidden']}) + {r['vit_depth']}-layer ViT; steps: stage0 {s['stage0']}, "
          f"stage1 {s['stage1']}, stage2 {s['stage2']} "
          f"at batch {r['batch_size']}; CPU")


def claim_rows(results: dict[str, dict[str, Any]]) -> list[ClaimRow]:
  measured = ", ".join(f"{v} {_pct(r['test']['accuracy'])}%" for v, r in results.items())
  rows = [ClaimRow(PAPER, "VQA accuracy, dense vs vanilla MoE vs modality MoE vs MoIIE (equal steps, upcycled from "
                   "the same model; modality_top2, not in the paper: modality MoE at MoIIE's activated parameters)",
                   PAPER_CLAIM, measured + " (easy-VQA exact match)", scale(results["dense"]))]
  if "moiie" in results and results["moiie"].get("load_vision"):
    r = results["moiie"]
    lv = [max(layer) for layer in r["load_vision"]]
    rows.append(ClaimRow(PAPER, "Router statistics: vision and text tokens use different experts (MoIIE)",
                         "modality-specific and shared experts both used",
                         f"per MoE layer, vision load {[[round(x, 2) for x in l] for l in r['load_vision']]}, text "
                         f"load {[[round(x, 2) for x in l] for l in r['load_text']]} (assignments/token over "
                         f"[vision | shared | shared | text]); max {max(lv):.2f}",
                         "same run; plot router_load.png"))
  return rows


def quick_report(workdir: str) -> list[ClaimRow]:
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  results = run_quick(workdir)
  text = table(results)
  with open(os.path.join(workdir, "moiie_table.md"), "w") as f:
    f.write(text + f"\n\nScale: {scale(results['dense'])}. Paper: {PAPER_CLAIM}.\n")
  with open(os.path.join(workdir, "moiie_results.json"), "w") as f:
    json.dump(results, f, indent=2)
  plots.router_load({v: r for v, r in results.items() if v != "dense"}, os.path.join(workdir, "router_load.png"))
  print(f"\nMoIIE quick runs ({time.perf_counter() - start:.0f} s):")
  print(text)
  return claim_rows(results)


def main(argv=None) -> None:
  report_lib.quick_report_cli(quick_report, "MoIIE quick reproduction table", "runs/moiie_report", argv)


if __name__ == "__main__":
  main()
