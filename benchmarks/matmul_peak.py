"""This machine's measured dense matmul peak (GFLOP/s), fp32 and bf16: the denominator of model FLOP utilisation.

    python -m benchmarks.matmul_peak            # prints JSON lines

For fp32 the peer is numpy's BLAS matmul on the same matrices in the same run; numpy has no bf16 matmul, so
the bf16 line has no peer. `measure_peak(dtype)` is what MFU figures elsewhere divide by.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import emit, time_fn


def matmul_gflops(n: int, dtype, iters: int = 10) -> float:
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
  # fp32 accumulation for bf16 inputs: what a bf16 training step does.
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  timing = time_fn(matmul, a, b, iters=iters)
  return 2 * n**3 / timing.median_s / 1e9


def numpy_gflops(n: int, iters: int = 10) -> float:
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  timing = time_fn(np.matmul, a, b, iters=iters, block=lambda x: x)
  return 2 * n**3 / timing.median_s / 1e9


def measure_peak(dtype=jnp.float32, sizes=(1024, 2048)) -> float:
  """The best GFLOP/s over a few square sizes."""
  return max(matmul_gflops(n, dtype) for n in sizes)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
  parser.add_argument("--iters", type=int, default=10)
  args = parser.parse_args(argv)
  for n in args.sizes:
    ours = matmul_gflops(n, jnp.float32, args.iters)
    peer = numpy_gflops(n, args.iters)
    emit("matmul_peak", f"fp32 matmul {n}x{n}", ours, unit="GFLOP/s", peer="numpy.matmul (BLAS) fp32",
         peer_value=peer, size=n)
    emit("matmul_peak", f"bf16 matmul {n}x{n} (fp32 accumulate)", matmul_gflops(n, jnp.bfloat16, args.iters),
         unit="GFLOP/s", size=n)


if __name__ == "__main__":
  main()
