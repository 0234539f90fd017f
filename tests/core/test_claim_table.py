"""The main job's table: rendering and the runner's handling of papers that do not exist yet."""

import json

from core import report


def test_markdown_table_escapes_and_orders_columns():
  rows = [report.ClaimRow("BSD (2509.20284)", "MNIST CNN acc", "99.44", "98.9", "5k subset | 2 epochs")]
  table = report.markdown_table(rows).splitlines()
  assert table[0] == "| paper | claim | paper's number | measured here | scale used |"
  assert table[2] == "| BSD (2509.20284) | MNIST CNN acc | 99.44 | 98.9 | 5k subset \\| 2 epochs |"
  assert json.loads(report.to_json(rows))[0]["measured"] == "98.9"
  failed = report.ClaimRow("BSD", "acc", "99.44", "FAILED: ValueError: bad size\nFix: smaller", "quick")
  assert report.markdown_table([failed]).splitlines()[2] == (
      "| BSD | acc | 99.44 | FAILED: ValueError: bad size Fix: smaller | quick |")  # one row, five cells


def test_runner_lists_unimplemented_papers_and_rejects_unknown_names(tmp_path, capsys, monkeypatch):
  import importlib.util

  import pytest

  import reproduce
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("speech") else
                      real_find_spec(name, *a))
  assert reproduce.main(["--workdir", str(tmp_path), "--papers", "speech", "--skip-foundation-check"]) == 0
  out = capsys.readouterr().out
  assert "Not implemented yet (no rows): speech." in out
  assert (tmp_path / "results.md").read_text().startswith("| paper | claim |")
  with pytest.raises(SystemExit) as exit_info:  # a typo is an error, not "not implemented"
    reproduce.main(["--workdir", str(tmp_path), "--papers", "bds"])
  assert exit_info.value.code == 2 and "invalid choice: 'bds'" in capsys.readouterr().err


def test_runner_reports_a_failing_paper_and_goes_on(tmp_path, capsys, monkeypatch):
  import reproduce
  real_import = reproduce.importlib.import_module

  class Broken:
    @staticmethod
    def quick_report(workdir):
      raise RuntimeError("data missing")

  monkeypatch.setattr(reproduce.importlib, "import_module",
                      lambda name: Broken if name == "guard.report" else real_import(name))
  monkeypatch.setattr(reproduce.importlib.util, "find_spec", lambda name, *a: object())
  assert reproduce.main(["--workdir", str(tmp_path), "--papers", "guard", "--skip-foundation-check"]) == 1
  out = capsys.readouterr().out
  assert "FAILED: RuntimeError: data missing" in out and "FAILED: guard" in out
  assert "FAILED" in (tmp_path / "results.md").read_text()


def test_runner_reports_a_paper_whose_package_fails_to_import(tmp_path, capsys, monkeypatch):
  """Looking up `<paper>.report` imports the package: an ImportError there is that paper's FAILED row, and the
  papers after it still run."""
  import reproduce

  def find_spec(name, *args):
    if name.startswith("guard"):
      raise ImportError("guard/__init__.py: No module named 'missing_dependency'")
    return None  # every other paper: not implemented

  monkeypatch.setattr(reproduce.importlib.util, "find_spec", find_spec)
  assert reproduce.main(["--workdir", str(tmp_path), "--papers", "guard", "speech", "--skip-foundation-check"]) == 1
  out = capsys.readouterr().out
  assert "FAILED: ImportError" in out and "FAILED: guard" in out and "Not implemented yet (no rows): speech." in out

def test_runner_reports_a_failing_foundation_check_and_leaves_no_stale_table(tmp_path, capsys, monkeypatch):
  """A failing foundation check is a FAILED line and exit 1, not a crash before the table; a table an earlier run
  wrote is removed at the start, so a run that dies leaves none that could pass for its own."""
  import reproduce
  (tmp_path / "results.md").write_text("| stale |\n")
  (tmp_path / "results.json").write_text("[]\n")

  def broken(workdir):
    assert not (tmp_path / "results.md").exists() and not (tmp_path / "results.json").exists()
    raise RuntimeError("no Fashion-MNIST")

  monkeypatch.setattr(reproduce, "foundation_check", broken)
  monkeypatch.setattr(reproduce.importlib.util, "find_spec", lambda name, *a: None)  # no paper packages
  assert reproduce.main(["--workdir", str(tmp_path), "--papers", "guard"]) == 1
  out = capsys.readouterr().out
  assert "Foundation check: FAILED" in out and "FAILED: foundation check" in out
  assert "stale" not in (tmp_path / "results.md").read_text()


def test_source_fingerprint_follows_source_files_only(tmp_path):
  (tmp_path / "pkg").mkdir()
  (tmp_path / "pkg" / "model.py").write_text("x = 1\n")
  (tmp_path / "tests").mkdir()
  (tmp_path / "tests" / "test_model.py").write_text("assert True\n")
  first = report.source_fingerprint(str(tmp_path))
  (tmp_path / "tests" / "test_model.py").write_text("assert 1\n")
  (tmp_path / "pkg" / "notes.md").write_text("not source\n")
  for ignored in ("build/lib/pkg", "venv_x/lib"):  # a build copy; a virtual environment (it holds pyvenv.cfg)
    (tmp_path / ignored).mkdir(parents=True)
    (tmp_path / ignored / "model.py").write_text("x = 3\n")
  (tmp_path / "venv_x" / "pyvenv.cfg").write_text("home = /usr/bin\n")
  assert report.source_fingerprint(str(tmp_path)) == first
  (tmp_path / "setup.cfg").write_text("[options]\n")
  assert report.source_fingerprint(str(tmp_path)) != first
  first = report.source_fingerprint(str(tmp_path))
  (tmp_path / "pkg" / "model.py").write_text("x = 2\n")
  assert report.source_fingerprint(str(tmp_path)) != first


def test_source_fingerprint_follows_the_installed_numerical_packages(tmp_path, monkeypatch):
  (tmp_path / "model.py").write_text("x = 1\n")
  first = report.source_fingerprint(str(tmp_path))
  assert "jax==" in report.installed_versions() and "absent" in report.installed_versions(("no-such-pkg",))
  real = report.importlib.metadata.version
  monkeypatch.setattr(report.importlib.metadata, "version",
                      lambda name: "0.0.1" if name == "optax" else real(name))  # another optax release
  assert report.source_fingerprint(str(tmp_path)) != first


def test_claim_workdir_resumes_same_source_and_clears_runs_of_other_source(tmp_path):
  """A report rerun after a code change must not re-evaluate checkpoints the old code trained."""
  run = tmp_path / "bsd" / "fashion_mlp_bsd"
  (run / "checkpoints" / "10").mkdir(parents=True)
  (tmp_path / "notes.txt").write_text("keep\n")
  (tmp_path / "plots").mkdir()  # no checkpoints or metrics inside: not a run folder
  assert report.claim_workdir(str(tmp_path), "aaaa") == [str(tmp_path / "bsd")]  # unrecorded source: cleared
  assert not (tmp_path / "bsd").exists() and (tmp_path / "notes.txt").exists() and (tmp_path / "plots").exists()
  (run / "checkpoints" / "10").mkdir(parents=True)
  assert report.claim_workdir(str(tmp_path), "aaaa") == []  # same source: a killed report resumes
  assert (run / "checkpoints" / "10").exists()
  assert report.claim_workdir(str(tmp_path), "bbbb") == [str(tmp_path / "bsd")]
  assert (tmp_path / report.FINGERPRINT_FILE).read_text().strip() == "bbbb"


def test_claim_workdir_removes_named_caches_only_when_the_source_changes(tmp_path):
  """Caches keyed by config alone (sft_knowledge's evaluations, mastery labels) go with the runs of other code."""
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "base.json").write_text("{}")
  (tmp_path / "mastery.json").write_text("{}")
  (tmp_path / "notes.txt").write_text("keep\n")
  derived = ("eval", "mastery.json", "absent")
  assert report.claim_workdir(str(tmp_path), "aaaa", derived) == [str(tmp_path / "eval"), str(tmp_path / "mastery.json")]
  assert (tmp_path / "notes.txt").exists() and not (tmp_path / "eval").exists()
  (tmp_path / "mastery.json").write_text("{}")
  assert report.claim_workdir(str(tmp_path), "aaaa", derived) == []  # same source: caches are reused
  assert (tmp_path / "mastery.json").exists()


def test_paired_bootstrap_against_the_normal_approximation_and_by_hand():
  import numpy as np
  import pytest

  from core.report import paired_bootstrap
  same = paired_bootstrap([0, 1, 2, 3], [1, 2, 2, 3])  # differences 1, 1, 0, 0
  assert (same.mean, same.better, same.worse, same.equal) == (0.5, 2, 0, 2)
  assert 0.0 <= same.low <= 0.5 <= same.high <= 1.0
  constant = paired_bootstrap([1.0] * 5, [3.0] * 5)
  assert (constant.mean, constant.low, constant.high) == (2.0, 2.0, 2.0)
  # Many items: the percentile interval is close to mean +- 1.96 sd / sqrt(n).
  rng = np.random.default_rng(0)
  a = rng.normal(size=900)
  b = a + rng.normal(0.3, 2.0, size=900)
  got, d = paired_bootstrap(a, b), b - a
  half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
  assert got.mean == pytest.approx(d.mean())
  assert got.low == pytest.approx(d.mean() - half, abs=0.1 * half)
  assert got.high == pytest.approx(d.mean() + half, abs=0.1 * half)
  assert "bootstrap 95% interval" in str(got)
  with pytest.raises(ValueError, match="equally long"):
    paired_bootstrap([1, 2], [1])
