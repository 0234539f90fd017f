"""Timing harness shared by every benchmark.

Timing rules (why each one matters on an asynchronous runtime like JAX):
  * compile time is measured apart, on the first call, so it never pollutes steady-state figures;
  * every timed call ends with `jax.block_until_ready`, otherwise we would time only the dispatch;
  * a few untimed warm-up calls settle caches and thread pools; we report the median of N timed calls,
    which is robust to the occasional scheduler hiccup on a shared 2-core machine;
  * XLA backend compilations during the timed calls are counted (`compiles_during_timing`, from jax.monitoring's
    '/jax/core/compile/backend_compile_duration' events): a figure with a non-zero count timed a compile.

Each result is one JSON line holding the machine, our figure, the peer's figure measured in the same run,
and their ratio, so a line can be read on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock figures of one timed function, in seconds."""

  compile_s: float  # first call: tracing + compilation + one execution
  median_s: float
  min_s: float
  iters: int
  compiles_during_timing: int = 0  # XLA backend compilations during the timed calls (not the first or warm-ups)


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = {"count": 0}
_listener_lock = threading.Lock()
_listener_registered = False


def _on_event_duration(event: str, duration: float, **kwargs: Any) -> None:
  del duration, kwargs
  if event == BACKEND_COMPILE_EVENT:
    _compiles["count"] += 1


def compile_count() -> int:
  """XLA backend compilations in this process since the harness started listening (first call of this)."""
  global _listener_registered
  with _listener_lock:
    if not _listener_registered:
      jax.monitoring.register_event_duration_secs_listener(_on_event_duration)
      _listener_registered = True
  return _compiles["count"]


@dataclasses.dataclass
class CompileCount:
  """Filled in by `count_compiles` when its block ends."""
  count: int = 0


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCount]:
  """`with count_compiles() as c: ...` -> c.count = backend compilations inside the block."""
  out = CompileCount()
  before = compile_count()
  try:
    yield out
  finally:
    out.count = compile_count() - before


def _git_state() -> dict[str, Any]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    if commit.returncode != 0:
      return {"git_commit": None, "git_dirty": None}
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                            capture_output=True, text=True, timeout=10)
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"git_commit": commit.stdout.strip(), "git_dirty": dirty}
  except (OSError, subprocess.SubprocessError):
    return {"git_commit": None, "git_dirty": None}


def _cpuinfo() -> tuple[str | None, set[str]]:
  model, flags = None, set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if model is None and line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
        elif not flags and line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
        if model is not None and flags:
          break
  except OSError:
    pass
  return model, flags


def _mem_total_mb() -> float | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          return round(int(line.split()[1]) / 1024, 1)
  except OSError:
    pass
  return None


def _static_machine_info() -> dict[str, Any]:
  model, flags = _cpuinfo()
  devices = jax.devices()
  return {
      "cpu": model or platform.processor() or platform.machine(),
      "cores": os.cpu_count(),
      "cpu_avx512f": "avx512f" in flags if flags else None,
      "cpu_amx_tile": "amx_tile" in flags if flags else None,
      "mem_total_mb": _mem_total_mb(),
      "backend": jax.default_backend(),
      "devices": f"{len(devices)}x {devices[0].device_kind}",
      "jax": jax.__version__,
      "python": platform.python_version(),
      **_git_state(),
  }


_STATIC: dict[str, Any] = {}


def _thread_counts() -> dict[str, Any]:
  # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE too: some machines pin OpenBLAS to older kernels (e.g. Haswell on an
  # AVX-512 CPU), which slows a numpy peer; a reader of the figure must see that.
  threads: dict[str, Any] = {name: os.environ.get(name) for name in
                             ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                              "OPENBLAS_L2_SIZE", "PJRT_NPROC")}
  threads["xla_cpu_threads"] = xla_cpu_threads()
  threads["python_threads"] = threading.active_count()
  try:
    threads["process_threads"] = len(os.listdir("/proc/self/task"))
  except OSError:
    threads["process_threads"] = None
  torch = sys.modules.get("torch")  # only if a peer already imported it: never import torch for this
  if torch is not None:
    threads["torch_threads"] = torch.get_num_threads()
  return threads


XLA_CPU_POOL_THREAD = "tf_XLAEigen"  # the name XLA:CPU gives its intra-op (Eigen) pool's threads


def xla_default_threads() -> int:
  """The size XLA:CPU gives its intra-op thread pool when its backend starts: PJRT_NPROC (or NPROC) if set, else
  the cores this process may run on (its CPU affinity, which `taskset` narrows)."""
  for name in ("PJRT_NPROC", "NPROC"):
    value = os.environ.get(name, "")
    if value.strip().isdigit():
      return max(1, int(value))
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def _xla_backend_started() -> bool | None:
  try:
    from jax._src import xla_bridge  # private: jax has no public "has a backend started?"
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return None


def limit_xla_cpu_threads(threads: int) -> bool:
  """Sizes XLA:CPU's intra-op pool to `threads`, so that it runs on as many threads as a peer it is compared with.

  XLA reads PJRT_NPROC once, when the CPU backend starts (neither XLA_FLAGS nor jax.config sizes the pool in jax
  0.10; `--xla_cpu_multi_thread_eigen=false` leaves it as it is). Returns whether the pool will have `threads`
  threads: False when the backend already started with another size. Leaves the environment alone when
  `threads` is the default size.
  """
  if threads == xla_default_threads():
    return True
  if _xla_backend_started() is not False:
    return False
  os.environ["PJRT_NPROC"] = str(threads)
  return True


def xla_cpu_threads() -> int | None:
  """XLA:CPU's intra-op pool size as it is: this process's threads named tf_XLAEigen (None before the CPU backend
  started, or without /proc's thread names). Observed rather than assumed, so a recorded figure is the real one."""
  try:
    tasks = os.listdir("/proc/self/task")
  except OSError:
    return None
  count = 0
  for task in tasks:
    try:
      with open(f"/proc/self/task/{task}/comm") as f:
        count += f.read().strip() == XLA_CPU_POOL_THREAD
    except OSError:  # the thread ended meanwhile
      pass
  return count or None


def machine_info() -> dict[str, Any]:
  """The machine a figure was measured on, and its state when the figure was printed.

  Fixed (read once): CPU model, cores, avx512f/amx_tile flags, MemTotal, backend and devices, versions, the
  git commit and whether tracked files differ from it (None without git). Per call: load averages, timestamp,
  XLA_FLAGS and thread counts (XLA:CPU's intra-op pool as observed: `xla_cpu_threads`).
  """
  if not _STATIC:
    _STATIC.update(_static_machine_info())
  try:
    load = [round(v, 2) for v in os.getloadavg()]
  except OSError:
    load = None
  return {
      **_STATIC,
      "loadavg_1_5_15": load,
      "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "xla_flags": os.environ.get("XLA_FLAGS"),
      "threads": _thread_counts(),
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
  with count_compiles() as compiles:
    for _ in range(iters):
      start = time.perf_counter()
      block(fn(*args))
      samples.append(time.perf_counter() - start)
  return Timing(compile_s=compile_s, median_s=statistics.median(samples), min_s=min(samples),
                iters=iters, compiles_during_timing=compiles.count)


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
  clashes = sorted(set(extra) & set(record))
  if clashes:
    raise ValueError(f"emit(): extra fields {clashes} would overwrite the record's own; rename them.")
  record.update(extra)
  print(json.dumps(record), file=file or sys.stdout, flush=True)
  return record
