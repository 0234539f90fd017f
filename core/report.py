"""Rows of the main job's table (paper claim vs. measured here) and their Markdown rendering.

Each paper package contributes `<paper>/report.py` with `quick_report(workdir) -> list[ClaimRow]`; the
top-level `reproduce.py` collects them. A row always says at what scale our number was measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
from typing import Callable, Sequence

from core import files

# What a report's numbers depend on: every Python file but the tests', benchmarks' and notebooks'.
# Top-level folders that hold no project source: test and benchmark code, outputs, and build or environment
# folders (a `build/lib` copy or a virtual environment must not change the fingerprint).
_NOT_SOURCE = ("tests", "benchmarks", "notebooks", "runs", "build", "dist", "venv", "env")
_DEPENDENCY_FILES = ("setup.cfg",)  # dependency bounds change what the code runs on
# ... and so do the installed versions within those bounds (numerics move between jax releases).
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "tokenizers")
FINGERPRINT_FILE = "fingerprint.txt"


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
    # A cell holds one line: a failure's multi-line message would otherwise break the table into extra rows.
    lines.append("| " + " | ".join(" ".join(str(c).split("\n")).replace("|", "\\|") for c in cells) + " |")
  return "\n".join(lines)


def to_json(rows: Sequence[ClaimRow]) -> str:
  return json.dumps([dataclasses.asdict(r) for r in rows], indent=2)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """Candidate minus baseline over the same items (tasks, episodes, questions): the mean, its bootstrap interval,
  and how many items got better, worse or stayed equal."""
  mean: float
  low: float
  high: float
  level: float
  better: int
  worse: int
  equal: int

  def __str__(self) -> str:
    return (f"{self.mean:+.2f}, bootstrap {100 * self.level:g}% interval [{self.low:.2f}, {self.high:.2f}]; "
            f"{self.better} better, {self.worse} worse, {self.equal} equal")


def paired_bootstrap(baseline: Sequence[float], candidate: Sequence[float], level: float = 0.95,
                     resamples: int = 10_000, seed: int = 0) -> PairedDifference:
  """The percentile bootstrap of the mean paired difference `candidate - baseline` (items resampled with
  replacement, the pairs kept together): the honest interval for two policies scored on the same tasks."""
  import numpy as np
  a, b = np.asarray(baseline, np.float64), np.asarray(candidate, np.float64)
  if a.shape != b.shape or a.ndim != 1 or not len(a):
    raise ValueError(f"paired_bootstrap needs two equally long, non-empty lists of per-item scores; got shapes "
                     f"{a.shape} and {b.shape}.")
  difference = b - a
  rng = np.random.default_rng(seed)
  means = difference[rng.integers(0, len(difference), (resamples, len(difference)))].mean(axis=1)
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(means, [tail, 100 - tail])
  return PairedDifference(float(difference.mean()), float(low), float(high), level, int((difference > 0).sum()),
                          int((difference < 0).sum()), int((difference == 0).sum()))


def _is_source(folder: str, name: str, root: str) -> bool:
  """A visible .py file, or a dependency file at the root, that is a regular file (an editor's lock file, ".#x.py",
  a dangling link, is no source)."""
  wanted = (name.endswith(".py") and not name.startswith(".")) or (folder == root and name in _DEPENDENCY_FILES)
  return wanted and os.path.isfile(os.path.join(folder, name))


def source_fingerprint(root: str = files.REPO_ROOT) -> str:
  """A hash of every source file (.py, configs included) under `root`, and of setup.cfg, by relative path and
  content, and of the installed versions of the numerical packages (`installed_versions`). Hidden files and
  folders, egg-info and virtual-environment folders (those holding a pyvenv.cfg), and anything but regular files
  are skipped."""
  digest = hashlib.sha256()
  for folder, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".egg-info")
                     and not (folder == root and d in _NOT_SOURCE)
                     and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg")))
    chosen = (f for f in names if _is_source(folder, f, root))
    for name in sorted(chosen):
      path = os.path.join(folder, name)
      digest.update(os.path.relpath(path, root).encode() + b"\0")
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
  digest.update(installed_versions().encode())
  return digest.hexdigest()[:16]


def installed_versions(packages: Sequence[str] = _PACKAGES) -> str:
  """`name==version` of each package the numbers depend on ("absent" when not installed), one per line."""
  lines = []
  for name in packages:
    try:
      lines.append(f"{name}=={importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      lines.append(f"{name} absent")
  return "\n".join(lines)


def _is_run_folder(path: str) -> bool:
  """A folder some training wrote (checkpoints or a metrics log somewhere inside)."""
  return any("checkpoints" in dirs or "metrics.jsonl" in names for _, dirs, names in os.walk(path))


def claim_workdir(workdir: str, fingerprint: str | None = None, derived: Sequence[str] = ()) -> list[str]:
  """Readies `workdir` for runs of `fingerprint` (default: the current source's); returns the paths it removed.

  Training resumes from any checkpoint it finds, so a report rerun after a code change would re-evaluate models
  trained by the old code and print them as new. The workdir therefore records the fingerprint of what made its
  runs: the same fingerprint resumes (a killed report continues), another removes the run folders under `workdir`
  (sub-folders holding checkpoints or metrics; other files are left alone) before anything trains. Any string
  serves (a hash of a run's config, say), so a folder holding one run can be claimed the same way, as long as
  the run trains in a sub-folder of it (`<run>/train/checkpoints`): only sub-folders are looked at. `derived` names
  further files or folders directly under `workdir` that the code made and that hold no checkpoints (caches of
  evaluations, say): they go too, since reusing them would mix old code's numbers into the new runs.
  """
  fingerprint = fingerprint or source_fingerprint()
  os.makedirs(workdir, exist_ok=True)
  marker = os.path.join(workdir, FINGERPRINT_FILE)
  previous = files.read_marker(marker)
  removed = []
  if previous != fingerprint:
    for name in sorted(os.listdir(workdir)):
      path = os.path.join(workdir, name)
      if os.path.islink(path) or not os.path.lexists(path):
        continue
      if os.path.isdir(path) and (name in derived or _is_run_folder(path)):
        shutil.rmtree(path)
        removed.append(path)
      elif name in derived:
        os.remove(path)
        removed.append(path)
    if removed:
      print(f"{workdir}: its runs were made by other code or config ({previous or 'unrecorded'}, now "
            f"{fingerprint}); removed {len(removed)} run folders and cached results to start afresh.")
    files.write_text_atomic(marker, fingerprint + "\n")
  return removed


def quick_report_cli(quick_report: Callable[[str], list[ClaimRow]], description: str, default_workdir: str,
                     argv: Sequence[str] | None = None) -> None:
  """`python -m <paper>.report [--workdir DIR]`: one paper's quick report alone, printed as the main job's table."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--workdir", default=default_workdir)
  args = parser.parse_args(argv)
  claim_workdir(args.workdir)
  rows = quick_report(args.workdir)
  print()
  print(markdown_table(rows))
