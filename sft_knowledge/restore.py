"""Parameter restoration: reset a chosen fraction of the SFT updates to their pre-trained values (arXiv 2509.16596
sec. 5, "parameter-level analysis").

The authors' rule: score every weight of the transformer-layer matrices by its relative change

    r = |theta_ft - theta_pre| / (|theta_pre| + 1e-8),

rank all of them together (one global ranking across every matrix, not per matrix), take the top k% and set them
back to theta_pre, with no rescaling. Embeddings, the output head and the norm vectors are never touched. "bottom"
(the k% smallest changes) and "random" (k% drawn uniformly) are the controls. Beyond the paper: "magnitude" ranks by
|theta_ft - theta_pre| instead, and DARE (Yu et al. 2024, arXiv 2311.03099, eq. 2) drops each update with
probability p and rescales the kept ones by 1/(1-p).

Everything is a pure function of parameter pytrees (nested dicts from `nnx.State.to_pure_dict()`). The global top-k
is exact and needs no sort of the ~10^8 scores: non-negative float32 scores order like their int32 bit patterns,
so a 32-step bisection over the bit patterns finds the k-th largest score with one counting pass per step; weights
tied with it are taken in global flat order (leaves in `restorable_paths` order, then row-major), which is the
order a stable sort would give.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

SELECTIONS = ("top", "bottom", "random", "magnitude")
_INT_MAX = np.int32(np.iinfo(np.int32).max)


def restorable_paths(params: Mapping[str, Any]) -> list[tuple]:
  """Paths of the transformer-layer matrices (2-D leaves under `layers`), in a fixed order; embeddings, the LM head
  and norm weights are excluded."""
  flat = traverse_util.flatten_dict(dict(params))
  paths = [p for p, leaf in flat.items() if p[0] == "layers" and np.ndim(leaf) == 2]
  return sorted(paths, key=lambda p: tuple((0, x, "") if isinstance(x, int) else (1, 0, str(x)) for x in p))


def _leaves(params: Mapping[str, Any], paths: Sequence[tuple]) -> list[jax.Array]:
  flat = traverse_util.flatten_dict(dict(params))
  return [flat[p] for p in paths]


def relative_change(base: jax.Array, tuned: jax.Array, epsilon: float) -> jax.Array:
  return jnp.abs(tuned - base) / (jnp.abs(base) + epsilon)


def _order_keys(score: jax.Array, largest: bool) -> jax.Array:
  # Non-negative float32 values compare like their bit patterns read as int32; -0.0 is folded to 0 first.
  bits = jax.lax.bitcast_convert_type(jnp.abs(score).astype(jnp.float32), jnp.int32)
  return bits if largest else _INT_MAX - bits


@jax.jit
def _kth_key(keys: jax.Array, k: jax.Array) -> jax.Array:
  """The largest t with #(keys >= t) >= k (keys: one flat array of non-negative int32)."""
  def body(_, bounds):
    lo, hi = bounds
    gap = hi - lo
    mid = lo + gap // 2 + gap % 2  # ceil midpoint without overflowing int32
    ok = jnp.sum(keys >= mid, dtype=jnp.int32) >= k
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

  lo, _ = jax.lax.fori_loop(0, 32, body, (jnp.int32(0), _INT_MAX))
  return lo


@jax.jit
def _flat_mask(keys: jax.Array, k: jax.Array) -> jax.Array:
  threshold = _kth_key(keys, k)
  above = keys > threshold
  need = k - jnp.sum(above, dtype=jnp.int32)
  tie = keys == threshold
  rank = jnp.cumsum(tie, dtype=jnp.int32)  # 1-based rank among ties, in global flat order
  return (above | (tie & (rank <= need))) & (k > 0)


def select_global(scores: Sequence[jax.Array], fraction: float, largest: bool = True) -> list[jax.Array]:
  """Boolean masks selecting exactly round(fraction * N) entries over all `scores` together (N = total size):
  the largest (or smallest) scores, ties in global flat order. Scores must be non-negative."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"restoration fraction {fraction} is outside [0, 1]. Fix: give ratios such as 0.01 ... 0.6.")
  sizes = [int(np.size(s)) for s in scores]
  k = int(round(fraction * sum(sizes)))
  # One flat vector (the leaves in order): the search compiles once, whatever the number of matrices.
  keys = jnp.concatenate([_order_keys(jnp.asarray(s), largest).ravel() for s in scores])
  flat = _flat_mask(keys, jnp.int32(k))
  del keys
  bounds = np.cumsum([0] + sizes)
  return [flat[a:b].reshape(np.shape(s)) for a, b, s in zip(bounds[:-1], bounds[1:], scores)]


def selection_scores(base: Sequence[jax.Array], tuned: Sequence[jax.Array], selection: str, *, epsilon: float,
                     rng: jax.Array) -> tuple[list[jax.Array], bool]:
  """(scores, largest) of a selection rule: "top"/"bottom" relative change, "random" uniform, "magnitude" |delta|."""
  if selection in ("top", "bottom"):
    return [relative_change(b, t, epsilon) for b, t in zip(base, tuned)], selection == "top"
  if selection == "magnitude":
    return [jnp.abs(t - b) for b, t in zip(base, tuned)], True
  if selection == "random":
    return [jax.random.uniform(jax.random.fold_in(rng, i), b.shape) for i, b in enumerate(base)], True
  raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}.")


def restore(base: Mapping[str, Any], tuned: Mapping[str, Any], fraction: float, selection: str = "top", *,
            epsilon: float = 1e-8, rng: jax.Array | None = None) -> tuple[dict, dict[tuple, jax.Array]]:
  """The fine-tuned parameters with `fraction` of the transformer-matrix weights, chosen by `selection`, reset to
  `base`. Returns (restored params as a nested dict, {path: mask} of the restored weights)."""
  paths = restorable_paths(tuned)
  if restorable_paths(base) != paths:
    raise ValueError("base and fine-tuned parameters have different transformer matrices. Fix: restore a model "
                     "fine-tuned from this base (same architecture).")
  b, t = _leaves(base, paths), _leaves(tuned, paths)
  for path, x, y in zip(paths, b, t):
    chex.assert_equal_shape([x, y], custom_message=f"at {'/'.join(map(str, path))}")
  rng = jax.random.key(0) if rng is None else rng
  scores, largest = selection_scores(b, t, selection, epsilon=epsilon, rng=rng)
  masks = select_global(scores, fraction, largest)
  del scores
  flat = dict(traverse_util.flatten_dict(dict(tuned)))
  for path, m, x, y in zip(paths, masks, b, t):
    flat[path] = jnp.where(m, x, y)
  return traverse_util.unflatten_dict(flat), dict(zip(paths, masks))


def dare(base: Mapping[str, Any], tuned: Mapping[str, Any], drop: float, rng: jax.Array) -> dict:
  """DARE on the transformer matrices: each update is dropped (reset to base) with probability `drop`, the kept
  ones are scaled by 1/(1-drop) so the expected update is unchanged."""
  if not 0.0 <= drop < 1.0:
    raise ValueError(f"DARE drop rate {drop} must lie in [0, 1).")
  paths = restorable_paths(tuned)
  flat = dict(traverse_util.flatten_dict(dict(tuned)))
  base_flat = traverse_util.flatten_dict(dict(base))
  for i, path in enumerate(paths):
    b, t = base_flat[path], flat[path]
    keep = jax.random.bernoulli(jax.random.fold_in(rng, i), 1.0 - drop, t.shape)
    flat[path] = jnp.where(keep, b + (t - b) / (1.0 - drop), b)
  return traverse_util.unflatten_dict(flat)


_KIND = re.compile(r"(q|k|v|o|gate|up|down)_proj")


def breakdown(masks: Mapping[tuple, jax.Array]) -> dict[str, Any]:
  """Where the restored weights sit: counts per layer and per matrix kind, and the selected fraction of each
  (layer, kind) matrix."""
  per_layer: dict[int, int] = {}
  per_kind: dict[str, int] = {}
  kind_size: dict[str, int] = {}
  cells: dict[str, float] = {}
  total = 0
  for path, mask in masks.items():
    count = int(jnp.sum(mask))
    layer = next(x for x in path if isinstance(x, int))
    kind = next(k for k in (str(x) for x in path) if _KIND.fullmatch(k))
    per_layer[layer] = per_layer.get(layer, 0) + count
    per_kind[kind] = per_kind.get(kind, 0) + count
    kind_size[kind] = kind_size.get(kind, 0) + int(np.size(mask))
    cells[f"{layer}/{kind}"] = count / int(np.size(mask))
    total += count
  return {"selected": total, "per_layer": {str(k): v for k, v in sorted(per_layer.items())},
          "per_kind": per_kind, "fraction_per_kind": {k: per_kind[k] / kind_size[k] for k in per_kind},
          "fraction_per_matrix": cells}
