"""Test-wide settings: quiet, deterministic, and absl flags parsed (grain's multi-worker loader reads them)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import absl.flags  # noqa: E402

absl.flags.FLAGS.mark_as_parsed()


import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
  """Executes `notebooks/<name>.ipynb` top to bottom (its code cells in order, in one namespace; no Jupyter),
  from the repository root, with `$<workdir_env>` pointing at a fresh temporary folder; returns the namespace."""

  def run(name: str, workdir_env: str) -> dict:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(workdir_env, str(tmp_path))
    with open(os.path.join(ROOT, "notebooks", f"{name}.ipynb")) as f:
      notebook = json.load(f)
    namespace = {"__name__": "__notebook__"}
    for cell in notebook["cells"]:
      if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"{name}.ipynb", "exec"), namespace)  # noqa: S102
    return namespace

  return run


def run_on_fake_devices(devices: int, argv: list[str], timeout: int = 300, pythonpath: tuple[str, ...] = ()) -> dict:
  """Runs `python *argv` from the repository root in a fresh process that sees `devices` CPU devices (the device
  count is fixed when JAX starts, hence the subprocess); returns the JSON object its last stdout line prints."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([ROOT, *pythonpath, os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def run_on_processes(processes: int, argv: list[str], timeout: int = 300) -> list[dict]:
  """Runs `python *argv PROCESSES INDEX PORT` as `processes` JAX processes at once on localhost (a multi-host run in
  miniature: each sees one CPU device; the script calls `jax.distributed.initialize` with the port when there are
  several); returns the JSON object each one's last stdout line prints, in process order."""
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  procs = [subprocess.Popen([sys.executable, *argv, str(processes), str(i), port], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
  results = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      assert p.returncode == 0, stderr[-3000:]
      results.append(json.loads(stdout.strip().splitlines()[-1]))
  finally:
    for p in procs:
      p.kill()
  return results


@pytest.fixture
def on_processes():
  """`on_processes(processes, argv, timeout=300)`: see `run_on_processes`."""
  return run_on_processes


def mark_logged_records(workdir, step: int) -> None:
  """Rewrites `workdir`/metrics.jsonl with `"mark": record's step == step` on every record. A resumed run keeps the
  records up to its checkpoint and a restarted one rewrites them all, so the marks tell a real resume from a silent
  restart at step 0, which a deterministic run's metrics alone would hide."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    records = [json.loads(line) for line in f]
  with open(path, "w") as f:
    f.writelines(json.dumps({**r, "mark": r["step"] == step}) + "\n" for r in records)


@pytest.fixture(scope="session")
def mark_metrics():
  """`mark_metrics(workdir, step)`: see `mark_logged_records`."""
  return mark_logged_records


@pytest.fixture(scope="session")
def fake_devices():
  """`fake_devices(devices, argv, timeout=300, pythonpath=())`: see `run_on_fake_devices`."""
  return run_on_fake_devices


# `make test` installs every optional peer first (torch, transformers, spyx, snnTorch, SmolLM2's weights), so there
# a skipped test means a broken install, not a missing extra: with FAIL_ON_SKIP=1 (the Makefile sets it) the run
# fails and lists what was skipped and why. Direct `pytest` runs keep ordinary skips.
_skipped: list[str] = []


def pytest_runtest_logreport(report):
  if report.skipped:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _skipped.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
  # A module-level skip (`pytest.importorskip` at import time) skips the whole file at collection, which the
  # per-test hook above never sees.
  pytest_runtest_logreport(report)


def pytest_sessionfinish(session, exitstatus):
  if _skipped and os.environ.get("FAIL_ON_SKIP") == "1" and exitstatus == 0:
    session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
  if _skipped and os.environ.get("FAIL_ON_SKIP") == "1":
    terminalreporter.write_line(
        f"FAIL_ON_SKIP=1: {len(_skipped)} test(s) skipped, which `make test` does not allow (it installs every "
        "optional dependency; a skip means that install is broken). Fix the install (`make install-peers`) or run "
        "pytest without FAIL_ON_SKIP:", red=True)
    for line in _skipped:
      terminalreporter.write_line(f"  {line}", red=True)
