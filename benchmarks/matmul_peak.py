"""This machine's measured dense matmul peak (GFLOP/s), fp32 and bf16: the denominator of model FLOP utilisation.

    python -m benchmarks.matmul_peak            # prints JSON lines

Per size, our fp32 figure next to three peers on n x n matrices of their own, each line its own ratio:
  * numpy's BLAS matmul in this process, with whatever OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE the environment
    pins (a pin to older kernels, e.g. Haswell on an AVX-512 CPU, slows it; the line names the pins);
  * numpy's BLAS matmul in a subprocess without those two pins, so OpenBLAS picks its own kernels (the line names
    the kernels it picked, `peer_blas`), and with OPENBLAS_NUM_THREADS = our thread count;
  * torch.matmul, torch.set_num_threads(our thread count);
and our bf16 figure (fp32 accumulation) next to torch.matmul in bf16 (numpy has no bf16 matmul). Our thread
count is XLA:CPU's intra-op pool as observed (`ours_threads`); a torch line without torch says the peer is
unavailable. `measure_peak(dtype)` is what MFU figures elsewhere divide by.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import emit, time_fn, xla_cpu_threads, xla_default_threads

# The environment's choices of OpenBLAS kernels and cache size; the thread count is not one of them.
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def matmul_gflops(n: int, dtype, iters: int = 10) -> float:
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
  # fp32 accumulation for bf16 inputs: what a bf16 training step does.
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  timing = time_fn(matmul, a, b, iters=iters)
  return 2 * n**3 / timing.median_s / 1e9


def numpy_gflops(n: int, iters: int = 10) -> float:
  """numpy in this process: OpenBLAS as this environment configured it (its pins included)."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  timing = time_fn(np.matmul, a, b, iters=iters, block=lambda x: x)
  return 2 * n**3 / timing.median_s / 1e9


def numpy_blas() -> list[dict]:
  """threadpoolctl's view of the BLAS this process's numpy runs on: kernels (`architecture`), threads, version
  ([] without threadpoolctl)."""
  try:
    import threadpoolctl
  except ImportError:
    return []
  # numpy's own OpenBLAS: torch, if imported, brings BLAS libraries of its own
  return [{k: info.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
          for info in threadpoolctl.threadpool_info()
          if info.get("user_api") == "blas" and "numpy" in info.get("filepath", "")]


def unpinned_env(threads: int | None = None) -> dict[str, str]:
  """This environment without OPENBLAS_PINS (and with OPENBLAS_NUM_THREADS=threads when given)."""
  env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_PINS}
  if threads is not None:
    env["OPENBLAS_NUM_THREADS"] = str(threads)
  return env


def numpy_unpinned(n: int, iters: int = 10, threads: int | None = None) -> dict:
  """numpy fp32 matmul in a subprocess without OPENBLAS_PINS: {"gflops", "blas" (threadpoolctl's view of the
  kernels OpenBLAS picked, None without threadpoolctl), "openblas_env" (the OPENBLAS_* the subprocess saw)}."""
  # A fresh process: OpenBLAS reads its pins once, when it loads, so this process's numpy cannot drop them. It
  # runs this module's own numpy peer (`--numpy-probe`), so both numpy lines are timed and described alike.
  result = subprocess.run([sys.executable, "-m", "benchmarks.matmul_peak", "--numpy-probe", str(n), str(iters)],
                          env=unpinned_env(threads), cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def _torch():
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_gflops(n: int, dtype: str, iters: int = 10, threads: int | None = None) -> float | None:
  """torch.matmul on `threads` threads ("float32" or "bfloat16"); None if torch cannot be imported."""
  torch = _torch()
  if torch is None:
    return None
  before = torch.get_num_threads()
  if threads is not None:
    torch.set_num_threads(threads)
  try:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn((n, n), generator=generator).to(getattr(torch, dtype))
    b = torch.randn((n, n), generator=generator).to(getattr(torch, dtype))
    with torch.no_grad():
      timing = time_fn(torch.matmul, a, b, iters=iters, block=lambda x: x)
  finally:
    torch.set_num_threads(before)  # the process's other torch users keep their setting
  return 2 * n**3 / timing.median_s / 1e9


def _torch_name(dtype: str, threads: int) -> str:
  torch = _torch()
  if torch is None:
    return f"torch.matmul {dtype} (peer unavailable: torch cannot be imported)"
  return f"torch.matmul {dtype} (torch {torch.__version__}, {threads} threads)"


def _pins_text() -> str:
  pins = [f"{k}={os.environ[k]}" for k in OPENBLAS_PINS if k in os.environ]
  return ", ".join(pins) if pins else "no OpenBLAS pins set"


def measure_peak(dtype=jnp.float32, sizes=(1024, 2048)) -> float:
  """The best GFLOP/s over a few square sizes."""
  return max(matmul_gflops(n, dtype) for n in sizes)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
  parser.add_argument("--iters", type=int, default=10)
  parser.add_argument("--numpy-probe", type=int, nargs=2, metavar=("N", "ITERS"),
                      help="internal (numpy_unpinned's subprocess): print this process's numpy peer as JSON")
  args = parser.parse_args(argv)
  if args.numpy_probe:
    n, iters = args.numpy_probe
    print(json.dumps({"gflops": numpy_gflops(n, iters), "blas": numpy_blas() or None,
                      "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}))
    return
  for n in args.sizes:
    ours = matmul_gflops(n, jnp.float32, args.iters)
    # the pool XLA:CPU ran ours on; the peers get as many threads
    threads = xla_cpu_threads() or xla_default_threads()
    common = dict(size=n, ours_threads=threads)
    fp32 = f"fp32 matmul {n}x{n}"
    blas = numpy_blas()
    emit("matmul_peak", fp32, ours, unit="GFLOP/s",
         peer=f"numpy.matmul (BLAS) fp32, in this process, OpenBLAS as this environment pins it ({_pins_text()})",
         peer_value=numpy_gflops(n, args.iters), peer_threads=blas[0]["num_threads"] if blas else None,
         peer_blas=blas or None, **common)
    unpinned = numpy_unpinned(n, args.iters, threads)
    emit("matmul_peak", fp32, ours, unit="GFLOP/s",
         peer=f"numpy.matmul (BLAS) fp32, in a subprocess without {'/'.join(OPENBLAS_PINS)} (OpenBLAS picks its "
              f"own kernels)", peer_value=unpinned["gflops"], peer_threads=threads, peer_blas=unpinned["blas"],
         peer_openblas_env=unpinned["openblas_env"], **common)
    emit("matmul_peak", fp32, ours, unit="GFLOP/s", peer=_torch_name("float32", threads),
         peer_value=torch_gflops(n, "float32", args.iters, threads), peer_threads=threads, **common)
    emit("matmul_peak", f"bf16 matmul {n}x{n} (fp32 accumulate)", matmul_gflops(n, jnp.bfloat16, args.iters),
         unit="GFLOP/s", peer=_torch_name("bfloat16", threads) + ", bf16 output",
         peer_value=torch_gflops(n, "bfloat16", args.iters, threads), peer_threads=threads, **common)


if __name__ == "__main__":
  main()
