"""The King James Bible loader and the character vocabulary."""

import numpy as np
import pytest

from core import data
from core.data import text


def test_kjv_verses():
  verses = data.load_kjv_verses()
  assert len(verses) == 31_102
  assert verses[0] == ("Ge", 1, 1, "In the beginning God created the heaven and the earth.")
  assert verses[-1] == ("Rev", 22, 21, "The grace of our Lord Jesus Christ be with you all. Amen.")
  assert len(dict.fromkeys(v.book for v in verses)) == 66
  assert max(v.chapter for v in verses if v.book == "Psa") == 150


def test_kjv_text_has_no_references():
  kjv = data.load_kjv_text()
  assert 4_000_000 < len(kjv) < 4_500_000
  assert kjv.startswith("In the beginning God created the heaven and the earth.\nAnd the earth was without form")
  assert kjv.endswith("Amen.\n")
  assert kjv.count("\n") == 31_102
  assert "Ge1:1" not in kjv and "Rev22:" not in kjv
  assert kjv.count("Jesus") > 900


def test_char_vocab_round_trip_and_determinism():
  kjv = data.load_kjv_text()
  vocab = data.char_vocab(kjv)
  assert vocab == data.char_vocab(kjv[::-1])  # ids depend on the character set only
  assert list(vocab.chars) == sorted(set(kjv))
  ids = vocab.encode(kjv)
  assert ids.dtype == np.int32 and ids.shape == (len(kjv),)
  assert ids.min() == 0 and ids.max() == vocab.size - 1
  assert vocab.decode(ids[:200]) == kjv[:200]
  small = data.char_vocab("banana")
  assert small.chars == "abn"
  np.testing.assert_array_equal(small.encode("nab"), [2, 0, 1])
  with pytest.raises(ValueError, match="'x'"):
    small.encode("axe")


def test_missing_bible_names_apt_command(monkeypatch):
  monkeypatch.setattr(text, "BIBLE_COMMAND", "no-such-bible-command")
  with pytest.raises(data.DataSourceMissingError, match="sudo apt-get install -y bible-kjv"):
    data.load_kjv_text()
