"""benchmarks.harness sizes XLA:CPU's intra-op pool (PJRT_NPROC, before the backend starts) and observes its size."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_xla_pool_is_sized_before_the_backend_starts_and_not_after():
  # a fresh process: this one's backend has long started
  check = ("from benchmarks import harness; n = harness.xla_default_threads() + 1; "
           "before = harness.limit_xla_cpu_threads(n); import jax.numpy as jnp; jnp.ones(2).block_until_ready(); "
           "print(n, before, harness.xla_cpu_threads(), harness.limit_xla_cpu_threads(n + 1))")
  env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
  result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
  assert result.returncode == 0, result.stderr
  n, before, observed, after = result.stdout.split()
  assert before == "True" and observed == n  # the pool has the requested size, as observed
  assert after == "False"  # too late: the backend started
