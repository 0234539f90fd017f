"""core.files: atomic text writes and one-line markers."""

import os

from core import files


def test_write_text_atomic_replaces_whole_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / "marker.txt")
  assert files.read_marker(path) is None
  files.write_text_atomic(path, "abc\n")
  files.write_text_atomic(path, "  second value \n")
  assert files.read_marker(path) == "second value"
  assert sorted(os.listdir(tmp_path)) == ["marker.txt"]


def test_a_stale_temporary_from_a_killed_write_does_not_change_the_marker(tmp_path):
  path = str(tmp_path / "marker.txt")
  files.write_text_atomic(path, "kept\n")
  with open(path + ".tmp", "w") as f:  # what a write killed before its os.replace leaves behind
    f.write("half")
  assert files.read_marker(path) == "kept"
  files.write_text_atomic(path, "new\n")
  assert files.read_marker(path) == "new" and not os.path.exists(path + ".tmp")
