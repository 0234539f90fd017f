"""Where training metrics go: the console, `metrics.jsonl`, and TensorBoard event files in the workdir.

TensorBoard files are written with tensorboardX, which needs no TensorFlow. `metrics.jsonl` holds one JSON
object per line: `{"step": int, "split": "train"|"eval"|..., <name>: float, ...}`. In a multi-host run only
process 0 writes (the metrics are the same global values on every process, and the workdir is shared).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import tqdm

from core import files


def truncate_jsonl(path: str, step: int) -> None:
  """Keeps only the records of a JSON-lines file (each with a "step") at or before `step`, replacing the file
  atomically: what a resumed run does to its logs before writing the steps again. A missing file is left alone."""
  if not os.path.exists(path):
    return
  kept = [line for line, record in _lines(path) if record["step"] <= step]
  files.write_text_atomic(path, "".join(kept))


def _lines(path: str) -> list[tuple[str, dict[str, Any]]]:
  """(line, record) of a JSON-lines log. A run killed while appending leaves its last line cut short: such a line
  is skipped (it was never a complete record), so the resumed run rewrites that step instead of failing to read."""
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        out.append((line if line.endswith("\n") else line + "\n", json.loads(line)))
      except json.JSONDecodeError:
        continue
  return out


class MetricsWriter:

  def __init__(self, workdir: str, *, tensorboard: bool = True, console: bool = True,
               purge_after: int | None = None):
    """`purge_after`: drop the records (JSONL and TensorBoard) of steps after it, which a resumed run rewrites."""
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._console = console
    self._tb = None
    self.enabled = jax.process_index() == 0  # other processes would write every record once more
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if purge_after is not None:
      self.truncate_after(purge_after)
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: it is slow to import
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=None if purge_after is None else purge_after + 1)

  def truncate_after(self, step: int) -> None:
    """Drops records of steps after `step`: a resumed run rewrites them, so none appear twice."""
    if self.enabled:
      truncate_jsonl(self.path, step)

  def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> None:
    if not self.enabled:
      return
    scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(f"{split}/{name}", value, int(step))
      self._tb.flush()
    if self._console:
      text = "  ".join(f"{k}={v:.4g}" for k, v in scalars.items())
      tqdm.tqdm.write(f"[{split}] step {int(step)}  {text}")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
  """Reads `metrics.jsonl` back (for reports, plots and tests)."""
  records = [record for _, record in _lines(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in records if split is None or r["split"] == split]
