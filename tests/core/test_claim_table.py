"""The main job's table: rendering and the runner's handling of papers that do not exist yet."""

import json

from core import report


def test_markdown_table_escapes_and_orders_columns():
  rows = [report.ClaimRow("BSD (2509.20284)", "MNIST CNN acc", "99.44", "98.9", "5k subset | 2 epochs")]
  table = report.markdown_table(rows).splitlines()
  assert table[0] == "| paper | claim | paper's number | measured here | scale used |"
  assert table[2] == "| BSD (2509.20284) | MNIST CNN acc | 99.44 | 98.9 | 5k subset \\| 2 epochs |"
  assert json.loads(report.to_json(rows))[0]["measured"] == "98.9"


def test_runner_lists_unimplemented_papers(tmp_path, capsys):
  import reproduce
  assert reproduce.main(["--workdir", str(tmp_path), "--papers", "no_such_paper",
                         "--skip-foundation-check"]) == 0
  out = capsys.readouterr().out
  assert "Not implemented yet (no rows): no_such_paper." in out
  assert (tmp_path / "results.md").read_text().startswith("| paper | claim |")
