"""Turn metrics of VehicleWorld (arXiv 2509.06736, Sec. 5.1 "Metrics"), comparing the gold state before/after a
turn with the agent's state before/after it (they differ in later turns when an earlier one went wrong):

* should-change S = properties whose gold value changes in the turn, should-stay U = all others;
* change accuracy = share of S that the agent changed correctly; a numeric property counts as correct when it
  moved in the gold direction (the paper's rule, so "a bit warmer" accepts any warmer value), others must equal
  the gold value; 1 when S is empty;
* F1-positive over S: TP = properties of S the agent changed at all, FP = properties of U it changed,
  precision TP/(TP+FP), recall TP/|S|;
* F1-negative over U: TN = properties of U left unchanged, FN = properties of S left unchanged,
  precision TN/(TN+FN), recall TN/|U|;
* success: every property of S correct and none of U changed;
* tokens: what the turn cost (counted by the caller).
With S empty, precision of an empty prediction is 1 (nothing to get wrong), as in the released evaluator.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
  """An approximate token count (words and punctuation marks): used where no model tokenizer is in play
  (scripted policies); model policies report their tokenizer's counts instead."""
  return len(_TOKEN.findall(text))


def _numeric(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _trend(a: float, b: float) -> int:
  return (b > a) - (b < a)


@dataclasses.dataclass
class TurnMetrics:
  change_accuracy: float
  f1_positive: float
  f1_negative: float
  success: bool
  should_change: int
  correct: int
  true_positive: int
  false_positive: int
  true_negative: int
  false_negative: int
  differences: list[str]

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["differences"] = self.differences[:10]
    return out


def _f1(precision: float, recall: float) -> float:
  return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def turn_metrics(gold_before: Mapping[str, Any], gold_after: Mapping[str, Any], pred_before: Mapping[str, Any],
                 pred_after: Mapping[str, Any]) -> TurnMetrics:
  """Metrics of one turn over flat states (`path -> value`, the same paths in all four)."""
  should = [p for p in gold_before if gold_before[p] != gold_after[p]]
  stay = [p for p in gold_before if gold_before[p] == gold_after[p]]
  tp = fn = correct = 0
  differences = []
  for p in should:
    old, new = pred_before[p], pred_after[p]
    if old == new:
      fn += 1
      differences.append(f"{p}: should change to {gold_after[p]!r} but did not change")
      continue
    tp += 1
    if _numeric(gold_before[p]) and _numeric(old):
      ok = _trend(gold_before[p], gold_after[p]) == _trend(old, new)
    else:
      ok = new == gold_after[p]
    if ok:
      correct += 1
    else:
      differences.append(f"{p}: should be {gold_after[p]!r}, is {new!r}")
  tn = fp = 0
  for p in stay:
    if pred_before[p] == pred_after[p]:
      tn += 1
    else:
      fp += 1
      differences.append(f"{p}: should not change but changed {pred_before[p]!r} -> {pred_after[p]!r}")
  if should:
    accuracy = correct / len(should)
    f1_pos = _f1(tp / (tp + fp) if tp + fp else 0.0, tp / len(should))
  else:
    accuracy = 1.0
    f1_pos = _f1(tp / (tp + fp) if tp + fp else 1.0, 1.0)
  if stay:
    f1_neg = _f1(tn / (tn + fn) if tn + fn else 0.0, tn / len(stay))
  else:
    f1_neg = _f1(tn / (tn + fn) if tn + fn else 1.0, 1.0)
  success = correct == len(should) and fp == 0
  return TurnMetrics(accuracy, f1_pos, f1_neg, success, len(should), correct, tp, fp, tn, fn, differences)


METRIC_KEYS = ("change_accuracy", "f1_positive", "f1_negative", "success")


def mean_metrics(turns: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """Means over turns of the four rates (in %), as the paper reports them."""
  turns = list(turns)
  if not turns:
    return {k: float("nan") for k in METRIC_KEYS}
  return {k: 100.0 * sum(float(t[k]) for t in turns) / len(turns) for k in METRIC_KEYS}
