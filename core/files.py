"""Atomic file writes: a reader, or a run resumed after a kill, sees the old file or the new one, never half of one.
Also the repository's root, from which `configs/...` paths and the source fingerprint are resolved.

The markers that decide whether finished work is reused (a report workdir's fingerprint, a training stage's
settings record, a cached value) and the logs a resumed run rewrites all go through here.
"""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same folder and an `os.replace` (atomic on POSIX).
  The data reach the disk before the rename, so after a crash of the machine the file is not the new name over
  empty blocks. One fixed temporary name: a write killed halfway leaves one stale file, which the next write
  replaces (one writer per path: in a multi-host run only process 0 writes the logs)."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_marker(path: str) -> str | None:
  """The stripped text of a one-line marker file, or None when there is none."""
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return f.read().strip()
