"""Turn metrics of VehicleWorld (arXiv 2509.06736, Sec. 5.1 "Metrics"), comparing the gold state before/after a
turn with the agent's state before/after it (they differ in later turns when an earlier one went wrong):

* should-change S = properties whose gold value changes in the turn, should-stay U = all others;
* each property of S has a target from the agent's own start: the value the turn's gold calls give when run from
  there (`tasks.targets_from`), so a request keeps its kind: the gold value for one that sets it ("set the
  volume to 50", "turn the AC on"), start + move, clamped to the property's bounds, for one that changes it by an
  amount ("turn the volume up by 10"), the song after the agent's for "next song", the other light state for a
  toggle. Where the car refuses a gold call from that start, the targets fall back to start + move for "by an
  amount" requests (`Turn.relative`) and the gold value for the rest. From the gold start every target is the
  gold value;
* change accuracy = share of S that the agent got right: reached the target, or, for a numeric property, moved
  towards it (the paper's extra rule, so "a bit warmer" accepts any warmer value; from the gold start "towards the
  target" is the gold direction); 1 when S is empty;
* F1-positive over S: TP = properties of S the agent changed at all, FP = properties of U it changed,
  precision TP/(TP+FP), recall TP/|S|;
* F1-negative over U: TN = properties of U left unchanged, FN = properties of S left unchanged,
  precision TN/(TN+FN), recall TN/|U|;
* success (this codebase's turn success; the paper reports the three rates above): every property of S at its
  exact target and none of U changed (a property an earlier mistake already left at its target may stay; it still
  counts in FN, since F1 is about changes);
* an unreached turn (the episode's step budget ran out or the environment failed before the turn began) is
  scored as a turn in which nothing changed and never succeeds (`unreached_turn`);
* tokens: what the turn cost (counted by the caller).
With S empty, precision of an empty prediction is 1 (nothing to get wrong), as in the released evaluator.
"""

from __future__ import annotations

import dataclasses
import math
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


def _same(a: Any, b: Any) -> bool:
  if _numeric(a) and _numeric(b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
  return a == b


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
                 pred_after: Mapping[str, Any],
                 relative: Mapping[str, tuple[float, float, float]] | None = None,
                 targets: Mapping[str, Any] | None = None) -> TurnMetrics:
  """Metrics of one turn over flat states (`path -> value`, the same paths in all four). `targets`: {path:
  value} of what the turn's requests give from the agent's start (`tasks.targets_from`: the gold calls run
  there), which decides every property it names. Otherwise `relative`: {path: (move, low, high)} of the
  properties requested to change by an amount (`Turn.relative`); the rest are set to their gold values."""
  relative, targets = relative or {}, targets or {}
  should = [p for p in gold_before if gold_before[p] != gold_after[p]]
  stay = [p for p in gold_before if gold_before[p] == gold_after[p]]
  tp = fn = correct = exact = 0
  differences = []
  for p in should:
    old, new = pred_before[p], pred_after[p]
    numeric = _numeric(old) and _numeric(new) and _numeric(gold_after[p])
    target = gold_after[p]
    if p in targets:  # the requests replayed from the agent's own start
      target = targets[p]
      numeric = numeric and _numeric(target)
    elif p in relative and numeric:  # "by an amount": from the agent's own start
      move, low, high = relative[p]
      target = min(max(old + move, low), high)
    hit = _same(new, target) if numeric else new == target
    moved = numeric and new != old and _trend(old, new) == _trend(old, target)
    if old == new:
      fn += 1
    else:
      tp += 1
    correct += hit or moved
    exact += hit
    if not hit:
      differences.append(f"{p}: should change to {target!r} but did not change" if old == new else
                         f"{p}: should be {target!r}, is {new!r}" + (" (moved the right way)" if moved else ""))
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
  success = exact == len(should) and fp == 0
  return TurnMetrics(accuracy, f1_pos, f1_neg, success, len(should), correct, tp, fp, tn, fn, differences)


def unreached_turn(gold_before: Mapping[str, Any], gold_after: Mapping[str, Any]) -> TurnMetrics:
  """The record of a turn the agent never got to act in (the episode ended first): nothing changed, no success."""
  m = turn_metrics(gold_before, gold_after, gold_before, gold_before)
  m.success = False
  return m


METRIC_KEYS = ("change_accuracy", "f1_positive", "f1_negative", "success")


def mean_metrics(turns: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """Means over turns of the four rates (in %), as the paper reports them."""
  turns = list(turns)
  if not turns:
    return {k: float("nan") for k in METRIC_KEYS}
  return {k: 100.0 * sum(float(t[k]) for t in turns) / len(turns) for k in METRIC_KEYS}
