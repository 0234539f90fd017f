"""The main job: the quick reproduction of every paper implemented so far, as one table.

    python -m reproduce --workdir runs/reproduce

It sits above the paper packages: each contributes `<paper>/report.py` with `quick_report(workdir)`, a few
minutes on 2 CPU cores, returning `core.report.ClaimRow`s. Before the papers, a foundation check trains the
reference classifier briefly, so a fresh install is proven end to end (data, jit, checkpoints, metrics).
The table is printed and written to `<workdir>/results.md` and `results.json`. A paper whose quick report raises
gets a FAILED row (its traceback printed), the others still run, and the command exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback

from core import report

PAPERS = ("bsd", "moiie", "sft_knowledge", "agents", "guard", "federated", "eval", "speech")


def foundation_check(workdir: str) -> str:
  from core import config as config_lib
  from core.classifier import training
  config = config_lib.load_config("configs/core/fashion_mlp.py:quick",
                                  ["train.progress_bar=false", "train.tensorboard=false"])
  results = training.train_and_evaluate(config, os.path.join(workdir, "foundation_fashion_mlp"))
  return (f"reference MLP on Fashion-MNIST (full 60k/10k), {results['steps']} steps: test accuracy "
          f"{100 * results['test_accuracy']:.2f}%")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/reproduce")
  parser.add_argument("--papers", nargs="*", default=list(PAPERS), choices=PAPERS, metavar="PAPER",
                      help=f"subset of paper packages to run, of: {', '.join(PAPERS)}")
  parser.add_argument("--skip-foundation-check", action="store_true")
  args = parser.parse_args(argv)
  report.claim_workdir(args.workdir)  # never re-evaluates checkpoints that other code trained
  for name in ("results.md", "results.json"):  # a table left by an earlier run must not pass for this one's
    if os.path.exists(os.path.join(args.workdir, name)):
      os.remove(os.path.join(args.workdir, name))

  lines, failed = [], []
  if not args.skip_foundation_check:
    start = time.perf_counter()
    try:
      lines.append(f"Foundation check: {foundation_check(args.workdir)} ({time.perf_counter() - start:.0f} s)")
    except Exception:  # reported, and the papers' table still follows
      traceback.print_exc()
      failed.append("foundation check")
      lines.append(f"Foundation check: FAILED after {time.perf_counter() - start:.0f} s (traceback above)")

  rows, missing = [], []
  for paper in args.papers:
    start = time.perf_counter()
    try:
      # Inside the try: looking up `<paper>.report` imports the package, and a package that fails to import is a
      # failed paper (a FAILED row), not a crash that loses every other paper's results.
      if importlib.util.find_spec(paper) is None or importlib.util.find_spec(f"{paper}.report") is None:
        missing.append(paper)
        continue
      module = importlib.import_module(f"{paper}.report")
      rows.extend(module.quick_report(os.path.join(args.workdir, paper)))
    except Exception as error:  # one paper's failure must not hide the others' results
      traceback.print_exc()
      failed.append(paper)
      rows.append(report.ClaimRow(paper, "quick report", "", f"FAILED: {type(error).__name__}: {error}"[:200], ""))
      lines.append(f"{paper}: quick report FAILED after {time.perf_counter() - start:.0f} s")
      continue
    lines.append(f"{paper}: quick report in {time.perf_counter() - start:.0f} s")

  table = report.markdown_table(rows)
  with open(os.path.join(args.workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    f.write(report.to_json(rows) + "\n")
  print()
  print("\n".join(lines))
  print()
  print(table)
  if missing:
    print(f"\nNot implemented yet (no rows): {', '.join(missing)}.")
  print(f"\nWritten to {os.path.join(args.workdir, 'results.md')} and results.json.")
  if failed:
    print(f"\nFAILED: {', '.join(failed)} (tracebacks above).")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
