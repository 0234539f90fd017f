"""Rows of the main job's table (paper claim vs. measured here) and their Markdown rendering.

Each paper package contributes `<paper>/report.py` with `quick_report(workdir) -> list[ClaimRow]`; the
top-level `reproduce.py` collects them. A row always says at what scale our number was measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class ClaimRow:
  paper: str  # short name and arXiv id, e.g. "BSD (2509.20284)"
  claim: str  # what is compared, e.g. "Fashion-MNIST MLP accuracy, BSD vs BP-SNN"
  paper_value: str  # the paper's number, as printed there
  measured: str  # our number
  scale: str  # data, model size and steps we used, e.g. "full 60k/10k, 2 epochs, CPU"


COLUMNS = ("paper", "claim", "paper's number", "measured here", "scale used")


def markdown_table(rows: Sequence[ClaimRow]) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for row in rows:
    cells = (row.paper, row.claim, row.paper_value, row.measured, row.scale)
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
  return "\n".join(lines)


def to_json(rows: Sequence[ClaimRow]) -> str:
  return json.dumps([dataclasses.asdict(r) for r in rows], indent=2)


def quick_report_cli(quick_report: Callable[[str], list[ClaimRow]], description: str, default_workdir: str,
                     argv: Sequence[str] | None = None) -> None:
  """`python -m <paper>.report [--workdir DIR]`: one paper's quick report alone, printed as the main job's table."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--workdir", default=default_workdir)
  args = parser.parse_args(argv)
  rows = quick_report(args.workdir)
  print()
  print(markdown_table(rows))
