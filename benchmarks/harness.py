"""Timing harness shared by every benchmark.

Timing rules (why each one matters on an asynchronous runtime like JAX):
  * compile time is measured apart, on the first call, so it never pollutes steady-state figures;
  * every timed call ends with `jax.block_until_ready`, otherwise we would time only the dispatch;
  * a few untimed warm-up calls settle caches and thread pools; we report the median of N timed calls,
    which is robust to the occasional scheduler hiccup on a shared 2-core machine.

Each result is one JSON line holding the machine, our figure, the peer's figure measured in the same run,
and their ratio, so a line can be read on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock figures of one timed function, in seconds."""

  compile_s: float  # first call: tracing + compilation + one execution
  median_s: float
  min_s: float
  iters: int


def machine_info() -> dict[str, Any]:
  """The machine a figure was measured on: CPU model, core count, backend and devices."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  devices = jax.devices()
  return {
      "cpu": cpu,
      "cores": os.cpu_count(),
      "backend": jax.default_backend(),
      "devices": f"{len(devices)}x {devices[0].device_kind}",
      "jax": jax.__version__,
      "python": platform.python_version(),
  }


def time_fn(fn: Callable[..., Any], *args, warmup: int = 2, iters: int = 10,
            block: Callable[[Any], Any] = jax.block_until_ready) -> Timing:
  """Times `fn(*args)`: the first call separately (compile), then the median of `iters` calls.

  `fn` may be a jitted JAX function or any Python callable (a peer written in PyTorch, say); pass
  `block=lambda x: x` when the result is not a JAX value.
  """
  if iters < 1:
    raise ValueError(f"iters must be >= 1, got {iters}")
  start = time.perf_counter()
  block(fn(*args))
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    block(fn(*args))
  samples = []
  for _ in range(iters):
    start = time.perf_counter()
    block(fn(*args))
    samples.append(time.perf_counter() - start)
  return Timing(compile_s=compile_s, median_s=statistics.median(samples), min_s=min(samples),
                iters=iters)


def emit(benchmark: str, metric: str, ours: float, *, unit: str, peer: str | None = None,
         peer_value: float | None = None, higher_is_better: bool = True, file=None,
         **extra: Any) -> dict[str, Any]:
  """Prints (and returns) one JSON line: machine, our figure, the peer's, and ours/peer.

  The ratio is always `ours / peer_value`; `higher_is_better` says how to read it.
  """
  record: dict[str, Any] = {
      "benchmark": benchmark,
      "metric": metric,
      "unit": unit,
      "ours": ours,
      "peer": peer,
      "peer_value": peer_value,
      "ratio": (ours / peer_value) if (peer_value not in (None, 0)) else None,
      "higher_is_better": higher_is_better,
      "machine": machine_info(),
  }
  record.update(extra)
  print(json.dumps(record), file=file or sys.stdout, flush=True)
  return record
