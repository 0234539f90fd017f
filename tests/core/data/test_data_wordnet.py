"""core.data.wordnet's folder lookup: the user's own folder (with "~"), and a fix that fits where the files were
looked for. The reader itself is checked against known entries in tests/agents and tests/sft_knowledge."""

import os

import pytest

from core.data import errors, wordnet


def test_own_folder_with_home_and_a_fix_for_each_kind_of_missing(tmp_path, monkeypatch):
  own = tmp_path / "wn"
  own.mkdir()
  for kind in ("data", "index"):
    (own / f"{kind}.noun").write_text("")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert wordnet.wordnet_folder("~/wn") == os.path.abspath(own)
  with pytest.raises(errors.DataSourceMissingError, match=r"data.verb is missing. Point wordnet_dir at a folder"):
    wordnet.wordnet_folder("~/wn", pos="v")  # the user's folder: installing the Debian package would not help
  monkeypatch.setattr(wordnet, "DEFAULT_WORDNET_DIR", str(tmp_path / "absent"))
  with pytest.raises(errors.DataSourceMissingError, match="apt-get install -y wordnet-base"):
    wordnet.wordnet_folder()
