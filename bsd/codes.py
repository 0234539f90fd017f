"""Target spike codes that drive the top of the backward pathway, and decoding by cosine similarity
(BSD, arXiv 2509.20284, Sec. 3.1 "concept encoding"; Sec. 3.3 prediction).

The paper drives the backward network with a spike code of the target and predicts with the forward network
alone, by the cosine similarity between its top-level output and each class's code. The code itself is not
specified; two are offered (`codes.kind`):

  block:  class k fires neurons [k*m, (k+1)*m), m = D // K: orthogonal codes (cosine 0 between classes).
  random: every neuron fires with probability `rate`, fixed by a seed; decoded against 2c - 1 so that two
          unrelated codes have cosine ~0 rather than ~rate.

Regression targets (forecasting) get a population code: D neurons with preferred values spread evenly over
[low, high]; those within `width` of the target fire.
"""

from __future__ import annotations

import numpy as np

CODE_KINDS = ("block", "random")


def class_codes(kind: str, num_classes: int, dim: int, *, rate: float = 0.5, seed: int = 0) -> np.ndarray:
  """Binary codes float32 [K, D], one row per class, all distinct and non-empty."""
  if kind == "block":
    width = dim // num_classes
    if width < 1:
      raise ValueError(f"block codes need code_dim >= number of classes ({dim} < {num_classes}). Fix: raise "
                       f"model.code_dim to at least {num_classes} or use codes.kind=random.")
    codes = np.zeros((num_classes, dim), np.float32)
    for k in range(num_classes):
      codes[k, k * width:(k + 1) * width] = 1.0
    return codes
  if kind == "random":
    rng = np.random.default_rng(seed)
    for _ in range(1000):
      codes = (rng.random((num_classes, dim)) < rate).astype(np.float32)
      if codes.sum(1).min() > 0 and len(np.unique(codes, axis=0)) == num_classes:
        return codes
    raise ValueError(f"could not draw {num_classes} distinct random codes of dimension {dim} at rate {rate}; "
                     "raise model.code_dim (or move codes.rate nearer 0.5).")
  raise ValueError(f"unknown code kind {kind!r}; valid: {CODE_KINDS}")


def decoding_codes(kind: str, codes: np.ndarray) -> np.ndarray:
  """The vectors the forward output is compared with: the codes (block) or their +-1 form (random)."""
  return codes if kind == "block" else 2.0 * codes - 1.0


def check_population_code(dim: int, low: float, high: float, width: float) -> None:
  """Raises ValueError (naming the `codes.*` keys and the fix) unless every value in [low, high] makes at least one
  neuron fire: low < high, and width at least half the preferred values' spacing (high - low) / (D - 1) (with one
  neuron, the whole range). Else some targets would drive the backward pathway with an empty code."""
  if not (np.isfinite(low) and np.isfinite(high) and low < high):
    raise ValueError(f"config.codes.low = {low!r} and config.codes.high = {high!r} give no range for the population "
                     "code: low must be below high (both finite). Fix: e.g. --config.codes.low=-3 "
                     "--config.codes.high=3 (z-units).")
  need = (high - low) if dim <= 1 else (high - low) / (2 * (dim - 1))
  if not (np.isfinite(width) and width >= need * (1 - 1e-9)):
    raise ValueError(f"config.codes.width = {width!r} is invalid: it must be at least half the spacing of the "
                     f"{dim} neurons' preferred values over [{low}, {high}] ({need:.4g}), so that every target makes "
                     f"one fire. Fix: pass --config.codes.width={_round_up(need):.3g} or more.")


def _round_up(x: float) -> float:
  """`x` rounded up to 3 significant digits: a suggested width that passes the check above."""
  scale = 10.0 ** (np.floor(np.log10(x)) - 2)
  return float(np.ceil(x / scale - 1e-9) * scale)


def population_code(values, dim: int, low: float, high: float, width: float):
  """Binary population code [..., D] of scalars: neuron d (preferred value p_d) fires when |value - p_d| <= width.

  Works on numpy and JAX arrays alike. `width` should be at least half the spacing (high - low) / (D - 1), so
  that every value inside [low, high] activates at least one neuron. Values outside [low, high] are clipped to it
  (they take the code of the nearer end): unclipped, a value past an end by more than `width` would get no spike
  at all, an empty target for the backward pathway.
  """
  xp = np if isinstance(values, np.ndarray) else __import__("jax.numpy", fromlist=["numpy"])
  preferred = xp.linspace(low, high, dim)
  values = xp.clip(values, low, high)
  return (xp.abs(values[..., None] - preferred) <= width).astype(xp.float32)
