"""Parameter restoration (arXiv 2509.16596 sec. 5): the selection equals a direct numpy implementation, is global
(not per matrix), skips embeddings / head / norms, and restoring 100% / 0% gives the base / fine-tuned model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core.llm import config as config_lib
from core.llm.model import Llama
from sft_knowledge import restore


def _pair(seed=0, scale_first=1.0):
  """A base and a fine-tuned pure-dict pytree shaped like a 2-layer decoder, with every leaf changed."""
  rng = np.random.default_rng(seed)
  base = {"embed_tokens": {"embedding": rng.normal(size=(16, 4))},
          "norm": {"weight": rng.normal(size=(4,))},
          "lm_head": {"kernel": rng.normal(size=(4, 16))},
          "layers": {i: {"input_layernorm": {"weight": rng.normal(size=(4,))},
                         "self_attn": {"q_proj": {"kernel": rng.normal(size=(4, 4))},
                                       "v_proj": {"kernel": rng.normal(size=(4, 2))}},
                         "mlp": {"down_proj": {"kernel": rng.normal(size=(6, 4))}}} for i in range(2)}}
  base = jax.tree.map(lambda x: np.asarray(x, np.float32), base)
  # relative changes of ~0.1 everywhere (|normal| * 0.1) ...
  tuned = jax.tree.map(lambda x: (x * (1 + rng.normal(size=x.shape) * 0.1)).astype(np.float32), base)
  # ... except one matrix, which changes far more than the rest: a global top-k takes its weights first, a
  # per-matrix top-k would not.
  tuned["layers"][1]["mlp"]["down_proj"]["kernel"] = base["layers"][1]["mlp"]["down_proj"]["kernel"] * (1 + scale_first)
  return base, tuned


def _numpy_reference(base, tuned, fraction, largest, score="relative"):
  """Direct implementation: flatten every layer matrix in path order, stable argsort of the relative change
  (score="relative") or of the absolute change |tuned - base| (score="magnitude")."""
  paths = restore.restorable_paths(tuned)
  get = lambda tree, p: tree[p[0]][p[1]][p[2]][p[3]][p[4]]
  denominator = (lambda p: np.abs(get(base, p)) + 1e-8) if score == "relative" else (lambda p: 1.0)
  scores = np.concatenate([(np.abs(get(tuned, p) - get(base, p)) / denominator(p)).ravel() for p in paths])
  k = int(round(fraction * scores.size))
  order = np.argsort(-scores if largest else scores, kind="stable")[:k]
  flat_mask = np.zeros(scores.size, bool)
  flat_mask[order] = True
  masks, start = {}, 0
  for p in paths:
    shape = get(tuned, p).shape
    masks[p] = flat_mask[start:start + int(np.prod(shape))].reshape(shape)
    start += int(np.prod(shape))
  return masks


def test_restorable_paths_are_layer_matrices_only():
  base, _ = _pair()
  paths = restore.restorable_paths(base)
  assert len(paths) == 6
  assert all(p[0] == "layers" and p[-1] == "kernel" for p in paths)


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("selection", ["top", "bottom", "magnitude"])
def test_selection_equals_numpy(fraction, selection):
  base, tuned = _pair()
  restored, masks = restore.restore(base, tuned, fraction, selection)
  expected = _numpy_reference(base, tuned, fraction, largest=selection != "bottom",
                              score="magnitude" if selection == "magnitude" else "relative")
  for path, mask in masks.items():
    np.testing.assert_array_equal(np.asarray(mask), expected[path], err_msg=str(path))
  total = sum(m.size for m in expected.values())
  assert sum(int(np.sum(m)) for m in masks.values()) == int(round(fraction * total))


def test_top_k_is_global_not_per_matrix():
  base, tuned = _pair(scale_first=50.0)
  _, masks = restore.restore(base, tuned, 0.25, "top")  # k = 24 of 96 weights: exactly that matrix's size
  assert bool(jnp.all(masks[("layers", 1, "mlp", "down_proj", "kernel")]))
  # a per-matrix top 25% would take 4 of every q_proj's 16 weights; the global one takes none
  assert all(int(jnp.sum(m)) == 0 for p, m in masks.items() if p != ("layers", 1, "mlp", "down_proj", "kernel"))


def test_excluded_kinds_stay_fine_tuned_and_selected_weights_return_to_base():
  base, tuned = _pair()
  restored, masks = restore.restore(base, tuned, 0.5, "top")
  for key in ("embed_tokens", "norm", "lm_head"):
    jax.tree.map(np.testing.assert_array_equal, restored[key], tuned[key])
  for i in range(2):
    np.testing.assert_array_equal(restored["layers"][i]["input_layernorm"]["weight"],
                                  tuned["layers"][i]["input_layernorm"]["weight"])
  for path, mask in masks.items():
    r = np.asarray(restored[path[0]][path[1]][path[2]][path[3]][path[4]])
    b, t = base[path[0]][path[1]][path[2]][path[3]][path[4]], tuned[path[0]][path[1]][path[2]][path[3]][path[4]]
    np.testing.assert_array_equal(r, np.where(np.asarray(mask), b, t))  # no rescaling


def test_ties_are_taken_in_flat_order():
  base, tuned = _pair()
  tuned = jax.tree.map(lambda x: x, tuned)
  for i in range(2):  # unchanged matrices: all relative changes tie at 0
    tuned["layers"][i]["self_attn"]["q_proj"]["kernel"] = base["layers"][i]["self_attn"]["q_proj"]["kernel"].copy()
  _, masks = restore.restore(base, tuned, 0.25, "bottom")
  expected = _numpy_reference(base, tuned, 0.25, largest=False)
  for path in masks:
    np.testing.assert_array_equal(np.asarray(masks[path]), expected[path])


@pytest.mark.parametrize("selection", ["random", "magnitude"])
def test_controls_select_exactly_k(selection):
  """Both controls restore exactly k weights; "magnitude" takes the k largest |tuned - base| (a numpy ranking),
  which on this pair is neither the relative-change ("top") selection nor a random one; "random" is reproducible
  from its key, changes with it, and ignores the updates."""
  base, tuned = _pair()
  _, masks = restore.restore(base, tuned, 0.3, selection, rng=jax.random.key(3))
  total = sum(m.size for m in masks.values())
  assert sum(int(jnp.sum(m)) for m in masks.values()) == int(round(0.3 * total))
  flat = lambda ms: np.concatenate([np.asarray(ms[p]).ravel() for p in restore.restorable_paths(base)])
  by_magnitude = flat(_numpy_reference(base, tuned, 0.3, largest=True, score="magnitude"))
  by_relative = flat(_numpy_reference(base, tuned, 0.3, largest=True))
  assert not np.array_equal(by_magnitude, by_relative)  # the pair tells the two rankings apart
  if selection == "magnitude":
    np.testing.assert_array_equal(flat(masks), by_magnitude)
    _, again = restore.restore(base, tuned, 0.3, selection, rng=jax.random.key(4))
    np.testing.assert_array_equal(flat(again), by_magnitude)  # no randomness in it
  else:
    chosen = flat(masks)
    assert not np.array_equal(chosen, by_magnitude) and not np.array_equal(chosen, by_relative)
    np.testing.assert_array_equal(flat(restore.restore(base, tuned, 0.3, selection, rng=jax.random.key(3))[1]),
                                  chosen)
    assert not np.array_equal(flat(restore.restore(base, tuned, 0.3, selection, rng=jax.random.key(4))[1]), chosen)
    # the same key picks the same weights whatever the updates were: the draw ignores them
    _, other_pair = _pair(seed=1)
    np.testing.assert_array_equal(flat(restore.restore(base, other_pair, 0.3, selection, rng=jax.random.key(3))[1]),
                                  chosen)


def test_full_and_zero_restoration_on_a_model():
  """Restoring 100% returns the base model (when SFT changed only layer matrices), 0% the fine-tuned one."""
  model = Llama(config_lib.tiny(), nnx.Rngs(0))
  base = nnx.to_pure_dict(nnx.state(model))
  paths = set(restore.restorable_paths(base))
  from flax import traverse_util
  flat = traverse_util.flatten_dict(base)
  tuned = traverse_util.unflatten_dict({p: (x + 0.01 if p in paths else x) for p, x in flat.items()})
  full, _ = restore.restore(base, tuned, 1.0, "top")
  jax.tree.map(np.testing.assert_array_equal, full, base)
  none, _ = restore.restore(base, tuned, 0.0, "top")
  jax.tree.map(np.testing.assert_array_equal, none, tuned)


def test_dare_keeps_the_expected_update():
  base, tuned = _pair()
  out = restore.dare(base, tuned, 0.5, jax.random.key(0))
  kept = total = 0
  for path in restore.restorable_paths(base):
    get = lambda t: np.asarray(t[path[0]][path[1]][path[2]][path[3]][path[4]])
    b, t, o = get(base), get(tuned), get(out)
    dropped = np.isclose(o, b)
    np.testing.assert_allclose(o[~dropped], (b + 2 * (t - b))[~dropped], rtol=1e-5)
    kept, total = kept + int(np.sum(~dropped)), total + o.size
  assert 0.3 <= kept / total <= 0.7  # about 1 - p of the 96 updates kept (not none, not all)
  np.testing.assert_array_equal(out["lm_head"]["kernel"], tuned["lm_head"]["kernel"])
  with pytest.raises(ValueError, match="drop rate"):
    restore.dare(base, tuned, 1.0, jax.random.key(0))


def test_breakdown_counts():
  base, tuned = _pair(scale_first=50.0)
  _, masks = restore.restore(base, tuned, 0.25, "top")
  where = restore.breakdown(masks)
  assert where["selected"] == sum(where["per_kind"].values()) == sum(where["per_layer"].values())
  assert where["fraction_per_matrix"]["1/down_proj"] == 1.0
