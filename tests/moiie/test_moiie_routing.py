"""Routing rules, auxiliary losses and bad input of the MoIIE layer (moiie/routing.py)."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import config as config_lib
from moiie import layer, routing
from moiie.routing import TEXT, VISION, MoESpec


def _tokens(t=64, d=16, seed=0, vision_fraction=0.5):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(k1, (t, d))
  modality = (jax.random.uniform(k2, (t,)) < vision_fraction).astype(jnp.int32)
  return x, modality


@pytest.mark.parametrize("counts", [(1, 2, 1, 2), (2, 2, 2, 2), (2, 0, 3, 1), (0, 4, 0, 2), (3, 1, 2, 3)])
def test_vision_never_reaches_text_intra_and_weights_sum_to_one(counts):
  nv, ni, nt, k = counts
  spec = MoESpec(n_vision_intra=nv, n_inter=ni, n_text_intra=nt, top_k=k)
  x, modality = _tokens(t=256)
  router = jax.random.normal(jax.random.key(1), (2, 16, spec.num_experts)) * 3
  r = jax.jit(routing.route, static_argnums=4)(x, router, modality, jnp.ones(256, bool), spec)
  expert = np.asarray(r.expert)
  vis = np.asarray(modality) == VISION
  text_intra = expert >= nv + ni
  vision_intra = expert < nv
  assert not text_intra[vis].any(), "a vision token reached a text-intra expert"
  assert not vision_intra[~vis].any(), "a text token reached a vision-intra expert"
  np.testing.assert_allclose(np.asarray(r.weight).sum(-1), 1.0, rtol=1e-6)
  # no expert is chosen twice by one token, and unreachable experts have probability exactly 0
  assert all(len(set(row)) == k for row in expert)
  probs = np.asarray(r.probs)
  assert (probs[vis][:, nv + ni:] == 0).all() and (probs[~vis][:, :nv] == 0).all()


def test_a_far_ahead_expert_leaves_the_second_choice_reachable():
  """A text token whose best expert is 150 logits ahead: the runner-up's probability underflows to 0 and ties with
  the unreachable vision-intra expert's, but the second choice is still a text-reachable expert, at weight ~0."""
  spec = MoESpec(n_vision_intra=1, n_inter=2, n_text_intra=1, top_k=2)
  x = jnp.ones((2, 1))
  router = jnp.zeros((2, 1, 4)).at[TEXT, 0, 1].set(150.0).at[VISION, 0, 1].set(150.0)
  r = routing.route(x, router, jnp.array([TEXT, VISION]), jnp.ones(2, bool), spec)
  assert float(r.probs[0, 2]) == 0.0  # the underflow that made the tie
  assert int(r.expert[0, 0]) == 1 and int(r.expert[0, 1]) in (2, 3), r.expert
  assert int(r.expert[1, 0]) == 1 and int(r.expert[1, 1]) in (0, 2), r.expert
  np.testing.assert_allclose(np.asarray(r.weight), [[1.0, 0.0], [1.0, 0.0]], atol=1e-30)


def test_shared_router_uses_one_kernel():
  spec = MoESpec(n_vision_intra=0, n_inter=4, n_text_intra=0, per_modality_routers=False)
  x, modality = _tokens()
  router = jax.random.normal(jax.random.key(1), (1, 16, 4))
  r = routing.route(x, router, modality, jnp.ones(64, bool), spec)
  np.testing.assert_allclose(r.logits, x @ router[0], rtol=1e-5, atol=1e-5)


def test_load_balance_matches_hand_computation():
  # 3 text tokens over experts {inter 0, inter 1, text 2} (+ a vision-only expert that they cannot reach), top-1
  spec = MoESpec(n_vision_intra=1, n_inter=2, n_text_intra=1, top_k=1)
  probs = np.array([[0.0, 0.7, 0.2, 0.1], [0.0, 0.1, 0.6, 0.3], [0.0, 0.5, 0.1, 0.4]], np.float32)
  r = routing.Routing(expert=jnp.array([[1], [2], [1]]), weight=jnp.ones((3, 1)), position=jnp.zeros((3, 1), int),
                      probs=jnp.asarray(probs), logits=jnp.log(jnp.asarray(probs) + 1e-30))
  loss, f = routing.load_balance(r, jnp.ones(3, bool), num_reachable=3, top_k=1)
  f_hand = np.array([0, 2 / 3, 1 / 3, 0])
  p_hand = probs.mean(0)
  np.testing.assert_allclose(f, f_hand, rtol=1e-6)
  np.testing.assert_allclose(loss, 3 * np.sum(f_hand * p_hand), rtol=1e-6)
  # full aux: only text tokens here, so the vision term is 0 and the total is 0.001 * the text term
  aux = routing.aux_losses(r, jnp.full(3, TEXT), jnp.ones(3, bool), spec)
  np.testing.assert_allclose(aux["balance_vision"], 0.0)
  np.testing.assert_allclose(aux["aux_loss"], 0.001 * 3 * np.sum(f_hand * p_hand), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_load_balance_uniform_routing_equals_top_k(k):
  # N tokens, N reachable experts, uniform probabilities; each expert gets exactly k of the N*k assignments.
  n = 6
  expert = np.stack([(np.arange(n) + j) % n for j in range(k)], axis=1)
  r = routing.Routing(expert=jnp.asarray(expert), weight=jnp.full((n, k), 1 / k), position=jnp.zeros((n, k), int),
                      probs=jnp.full((n, n), 1 / n), logits=jnp.zeros((n, n)))
  loss, _ = routing.load_balance(r, jnp.ones(n, bool), num_reachable=n, top_k=k)
  np.testing.assert_allclose(loss, k, rtol=1e-6)


def test_padding_is_excluded_from_aux_losses():
  spec = MoESpec(router_z_loss=0.01)
  x, modality = _tokens(t=40)
  router = jax.random.normal(jax.random.key(2), (2, 16, 4))
  valid = jnp.arange(40) < 30

  @jax.jit
  def run(x, modality, valid):
    r = routing.route(x, router, modality, valid, spec)
    return r, routing.aux_losses(r, modality, valid, spec)
  r, aux = run(x, modality, valid)
  # the same tokens without the padding rows give the same losses, whatever the padding holds
  _, aux2 = run(x[:30], modality[:30], jnp.ones(30, bool))
  for key in ("aux_loss", "balance_vision", "balance_text", "z_loss"):
    np.testing.assert_allclose(aux[key], aux2[key], rtol=1e-6, err_msg=key)
  x_garbage = x.at[30:].set(1e3)
  _, aux3 = run(x_garbage, modality, valid)
  np.testing.assert_allclose(aux3["aux_loss"], aux["aux_loss"], rtol=1e-6)
  assert float(jnp.abs(r.weight[30:]).sum()) == 0.0  # padding gets no expert output either


def test_z_loss_hand_computation():
  spec = MoESpec(router_z_loss=0.5, aux_loss_weight=0.0)
  x, modality = _tokens(t=8)
  router = jax.random.normal(jax.random.key(3), (2, 16, 4))
  r = jax.jit(routing.route, static_argnums=4)(x, router, modality, jnp.ones(8, bool), spec)
  logits = np.where(np.asarray(modality)[:, None] == VISION, np.asarray(x @ router[VISION]),
                    np.asarray(x @ router[TEXT]))
  reach = spec.reach[np.asarray(modality)]
  lse = np.log(np.sum(np.where(reach, np.exp(logits), 0.0), axis=1))
  aux = jax.jit(routing.aux_losses, static_argnums=3)(r, modality, jnp.ones(8, bool), spec)
  np.testing.assert_allclose(aux["aux_loss"], 0.5 * np.mean(lse ** 2), rtol=1e-5)


def test_capacity_keeps_the_first_tokens_in_queue_order():
  spec = MoESpec(n_vision_intra=0, n_inter=2, n_text_intra=0, top_k=1, capacity_factor=1.0,
                 per_modality_routers=False)
  x = jnp.ones((4, 2))
  router = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])  # every token prefers expert 0
  r = routing.route(x, router, jnp.zeros(4, jnp.int32), jnp.ones(4, bool), spec)
  assert spec.capacity(4) == 2
  np.testing.assert_array_equal(np.asarray(r.weight[:, 0]), [1, 1, 0, 0])  # the first two tokens fit
  np.testing.assert_array_equal(np.asarray(r.position[:, 0]), [0, 1, 2, 3])


def test_top_k_larger_than_reachable_is_a_build_error():
  with pytest.raises(ValueError, match="top_k = 2 but a vision token can reach only 1"):
    MoESpec(n_vision_intra=1, n_inter=0, n_text_intra=1, top_k=2)
  config = config_lib.load_config("configs/moiie/easyvqa_tiny.py", ["moe.variant=modality"])
  routing.validate_moe_config(config)  # the variant sets top_k=1: valid
  bad = config_lib.load_config("configs/moiie/easyvqa_tiny.py", ["moe.variant=custom", "moe.n_inter=0", "moe.top_k=2"])
  with pytest.raises(config_lib.ConfigError, match="top_k"):
    routing.validate_moe_config(bad)
  # each fix is one that can work: no "lower top_k" where nothing is reachable, no "lower" for top_k = 0
  with pytest.raises(ValueError, match="top_k = 0: every token needs at least one expert"):
    MoESpec(top_k=0)
  with pytest.raises(ValueError, match=r"reach only 0 expert\(s\) \(vision-intra \+ inter\). Fix: add vision"):
    MoESpec(n_vision_intra=0, n_inter=0, n_text_intra=2, top_k=1)
  none = config_lib.load_config("configs/moiie/easyvqa_tiny.py", ["moe.variant=custom", "moe.n_inter=0",
                                                                    "moe.n_vision_intra=0", "moe.top_k=1"])
  with pytest.raises(config_lib.ConfigError, match=r"vision tokens reach 0 .* Fix: add experts"):
    routing.validate_moe_config(none)


def test_modality_ids_out_of_range_are_rejected():
  spec = MoESpec()
  moe = layer.MoIIELayer(spec, 16, 32, rngs=__import__("flax").nnx.Rngs(0))
  x = jnp.zeros((2, 5, 16))
  with pytest.raises(ValueError, match="modality ids out of range"):
    moe(x, jnp.full((2, 5), 2), jnp.ones((2, 5), bool))
  with pytest.raises(ValueError, match="out of range"):
    moe(x, jnp.full((2, 5), -1), jnp.ones((2, 5), bool))
  y, aux = jax.jit(layer.moe_ffn, static_argnums=4)(moe.params(), x, jnp.ones((2, 5), jnp.int32),
                                                     jnp.ones((2, 5), bool), spec)
  chex.assert_shape(y, (2, 5, 16))
  chex.assert_tree_all_finite(aux)


def test_variants_build_from_config():
  specs = {}
  for variant in ("vanilla", "modality", "modality_top2", "moiie"):
    config = config_lib.load_config(f"configs/moiie/easyvqa_tiny.py:{variant}")
    moe = config.moe.copy_and_resolve_references()
    routing.apply_variant(moe)
    specs[variant] = routing.spec_from_config(moe)
  assert {v: (s.num_experts, s.top_k) for v, s in specs.items()} == {
      "vanilla": (4, 2), "modality": (2, 1), "modality_top2": (4, 2), "moiie": (4, 2)}
  # the equal-compute control keeps the hard split: no shared expert, a router per modality
  assert (specs["modality_top2"].n_inter, specs["modality_top2"].per_modality_routers) == (0, True)
  with pytest.raises(config_lib.ConfigError, match="variant"):
    routing.validate_moe_config(config_lib.load_config("configs/moiie/easyvqa_tiny.py", ["moe.variant=mixtral"]))
  # a count set beside a named variant would be overwritten by it: an error naming both values and the fix
  for overrides, message in [(["moe.top_k=1"], r"sets top_k = 1, but config.moe.variant = 'moiie' writes its own "
                                               r"top_k = 2.*--config.moe.variant=custom"),
                             (["moe.n_inter=6"], r"n_inter = 6.*n_inter = 2"),
                             ([":vanilla", "moe.balance_scope=modality"], r"balance_scope = 'modality'")]:
    spec = "configs/moiie/easyvqa_tiny.py" + (overrides.pop(0) if overrides[0].startswith(":") else "")
    with pytest.raises(config_lib.ConfigError, match=message):
      routing.validate_moe_config(config_lib.load_config(spec, overrides))
  # ... but another variant's counts (a `:vanilla` config whose variant is flipped) and custom counts are fine
  routing.validate_moe_config(config_lib.load_config("configs/moiie/easyvqa_tiny.py:vanilla", ["moe.variant=moiie"]))
  routing.validate_moe_config(config_lib.load_config("configs/moiie/easyvqa_tiny.py",
                                                     ["moe.variant=custom", "moe.n_inter=6", "moe.top_k=3"]))
  with pytest.raises(config_lib.ConfigError, match=r"moe.hybrid_vision_fraction = 1.5 .*\[0, 1\]"):
    routing.validate_moe_config(config_lib.load_config("configs/moiie/easyvqa_tiny.py",
                                                       ["moe.hybrid_vision_fraction=1.5"]))


def test_auto_block_size_follows_the_mean_group_size():
  assert MoESpec(n_vision_intra=0, n_inter=8, n_text_intra=0).blocks_for(4096) == 128
  assert MoESpec(n_vision_intra=0, n_inter=64, n_text_intra=0).blocks_for(4096) == 32
  assert MoESpec(n_vision_intra=0, n_inter=64, n_text_intra=0).blocks_for(10) == 16
  assert MoESpec(block_size=48).blocks_for(4096) == 48


def test_capacity_queues_every_first_choice_before_any_second_choice():
  """Top-2 with room for 2 tokens per expert: tokens 0-1 prefer e0 then e1, tokens 2-3 e1 then e0. Queuing by
  choice rank keeps all four first choices and drops every second choice; queuing by token order would keep both
  choices of tokens 0-1 and drop tokens 2-3 entirely."""
  spec = MoESpec(n_vision_intra=0, n_inter=3, n_text_intra=0, top_k=2, capacity_factor=0.75,
                 per_modality_routers=False)
  router = jnp.array([[[3.0, 2.0, 0.0], [3.0, 2.0, 0.0], [2.0, 3.0, 0.0], [2.0, 3.0, 0.0]]])
  r = routing.route(jnp.eye(4), router, jnp.zeros(4, jnp.int32), jnp.ones(4, bool), spec)
  assert spec.capacity(4) == 2
  np.testing.assert_array_equal(np.asarray(r.expert), [[0, 1], [0, 1], [1, 0], [1, 0]])
  np.testing.assert_array_equal(np.asarray(r.position), [[0, 2], [1, 3], [0, 2], [1, 3]])
  np.testing.assert_array_equal(np.asarray(r.weight) > 0, [[True, False]] * 4)
