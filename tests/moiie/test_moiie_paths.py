"""The reference, sparse (block grouped matmul, hybrid capacity + overflow, ragged_dot) and einsum-dispatch paths
agree: outputs, aux losses, and gradients with respect to inputs, experts and routers (moiie/experts.py)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moiie import experts, layer, routing
from moiie.routing import MoESpec

T, D, F = 45, 16, 24


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
  """Parity of the paths is a statement about their arithmetic, so it is checked at full float32. On GPUs JAX's
  default float32 matmul rounds its inputs to TF32 (10-bit mantissa), and the paths round at different places (the
  einsum path's one-hot combine matmul rounds the expert outputs): on an H200 its outputs differed from the
  reference by up to 2e-3 at default precision. On CPU this changes nothing."""
  with jax.default_matmul_precision("highest"):
    yield


def _problem(spec, seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  e = spec.num_experts
  params = {"router": jax.random.normal(ks[0], (spec.num_routers, D, e)),
            "gate": jax.random.normal(ks[1], (e, D, F)) * 0.3, "up": jax.random.normal(ks[2], (e, D, F)) * 0.3,
            "down": jax.random.normal(ks[3], (e, F, D)) * 0.3}
  x = jax.random.normal(ks[4], (T, D))
  modality = (jax.random.uniform(ks[5], (T,)) < 0.4).astype(jnp.int32)
  valid = jnp.arange(T) < T - 5
  return params, x, modality, valid


def _run(spec, params, x, modality, valid):
  def loss(params, x):
    y, aux = layer.moe_ffn(params, x, modality, valid, spec)
    return jnp.sum(jnp.sin(y) * valid[:, None]) + 100.0 * aux["aux_loss"], (y, aux)
  (value, (y, aux)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  return y, aux, grads


# (spec, other paths): 2+3+3 experts without capacity against every path; the vanilla (shared router, one
# load-balance group) and a capacity-limited MoIIE with z-loss against the CPU sparse path and einsum dispatch.
# The hybrid runs with the auto capacity (overflow where a group passes the mean) in every case.
CASES = [(MoESpec(n_vision_intra=2, n_inter=3, n_text_intra=3, top_k=2, block_size=8),
          [("sparse", "blocks"), ("sparse", "hybrid"), ("sparse", "ragged_dot"), ("einsum", "auto")]),
         (MoESpec(n_vision_intra=0, n_inter=4, n_text_intra=0, top_k=2, per_modality_routers=False,
                  balance_scope="all", block_size=4), [("sparse", "blocks"), ("sparse", "hybrid")]),
         (MoESpec(n_vision_intra=1, n_inter=2, n_text_intra=1, top_k=2, capacity_factor=0.8, router_z_loss=1e-3,
                  block_size=8), [("sparse", "blocks"), ("sparse", "hybrid"), ("einsum", "auto")])]


@pytest.mark.parametrize("spec,others", CASES, ids=["2+3+3", "vanilla", "capacity"])
def test_paths_agree(spec, others):
  problem = _problem(spec)
  y0, aux0, g0 = _run(dataclasses.replace(spec, path="reference"), *problem)
  for path, kernel in others:
    y, aux, g = _run(dataclasses.replace(spec, path=path, grouped_matmul=kernel), *problem)
    valid = np.asarray(problem[3])
    np.testing.assert_allclose(np.asarray(y)[valid], np.asarray(y0)[valid], rtol=1e-5, atol=1e-5,
                               err_msg=f"{path}/{kernel}")
    np.testing.assert_allclose(aux["aux_loss"], aux0["aux_loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g0)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"gradient, {path}/{kernel}")
  if min(spec.reachable_counts) > 1:  # a hard split (one reachable expert) has nothing to route
    assert float(jnp.abs(g0[0]["router"]).sum()) > 0  # routers learn through the weights and the aux loss


def test_block_grouped_matmul_and_its_vjp():
  nb, bs, k, n, e = 5, 4, 6, 3, 3
  lhs = jax.random.normal(jax.random.key(0), (nb, bs, k))
  rhs = jax.random.normal(jax.random.key(1), (e, k, n))
  block_expert = jnp.array([0, 0, 2, 2, 1])
  used = 4  # the last block is trailing padding: skipped, zeros out, no gradient
  out = experts.block_grouped_matmul(lhs, rhs, block_expert, used)
  want = jnp.einsum("bsk,bkn->bsn", lhs, rhs[block_expert]).at[used:].set(0)
  np.testing.assert_allclose(out, want, rtol=1e-5)
  f = lambda l, r: jnp.sum(jnp.cos(experts.block_grouped_matmul(l, r, block_expert, used)))  # noqa: E731
  g = lambda l, r: jnp.sum(jnp.cos(jnp.einsum("bsk,bkn->bsn", l, r[block_expert]).at[used:].set(0)))  # noqa: E731
  for a, b in zip(jax.grad(f, (0, 1))(lhs, rhs), jax.grad(g, (0, 1))(lhs, rhs)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unbalanced_routing_needs_no_capacity():
  # every token picks the same two experts: the sparse path handles any imbalance exactly (no dropped tokens)
  spec = MoESpec(n_vision_intra=0, n_inter=8, n_text_intra=0, top_k=2, per_modality_routers=False, block_size=8)
  params, x, modality, valid = _problem(spec)
  params["router"] = jnp.zeros_like(params["router"]).at[0, :, :2].set(0.0).at[0, :, 2:].set(-50.0)
  x = jnp.abs(x)
  y0, _, _ = _run(dataclasses.replace(spec, path="reference"), params, x, modality, valid)
  y1, _, _ = _run(spec, params, x, modality, valid)
  np.testing.assert_allclose(y1[:T - 5], y0[:T - 5], rtol=1e-5, atol=1e-5)


def _hybrid_direct(spec, capacity, block, router_scale=1.0, skew=False):
  """The hybrid kernel at a forced capacity/block against the reference: outputs and gradients."""
  params, x, modality, valid = _problem(spec, seed=1)
  params["router"] = params["router"] * router_scale
  if skew:  # every token prefers the same experts: the worst case of the overflow bound (m = k experts full)
    params["router"] = params["router"].at[..., :2].add(5.0)
    x = jnp.abs(x)

  def loss(path, params, x):
    r = routing.route(x, params["router"], modality, valid, spec)
    if path == "reference":
      y = experts.reference(x, r, params["gate"], params["up"], params["down"])
    else:
      layout = experts.hybrid_layout(r, spec.num_experts, capacity, block)
      y = experts.hybrid_ffn(x, r.weight, params["gate"], params["up"], params["down"], layout, spec.top_k,
                             capacity)
    return jnp.sum(jnp.sin(y) * valid[:, None]), y

  out = {p: jax.jit(jax.value_and_grad(lambda pa, xx, p=p: loss(p, pa, xx), argnums=(0, 1), has_aux=True))(
      params, x) for p in ("reference", "hybrid")}
  (_, y0), g0 = out["reference"]
  (_, y1), g1 = out["hybrid"]
  np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  r = routing.route(x, params["router"], modality, valid, spec)
  layout = experts.hybrid_layout(r, spec.num_experts, capacity, block)
  live = int(jnp.sum(r.weight > 0))
  assert int(layout.cap_real.sum()) + int(layout.ovf_real.sum()) == live  # every live assignment has one row
  assert 0 < int(layout.used) <= layout.ovf_assign.shape[0]
  # each capacity slot holds an assignment of the slot's own expert, in order of rank
  slot_expert = np.repeat(np.arange(spec.num_experts), np.broadcast_to(capacity, (spec.num_experts,)))
  real = np.asarray(layout.cap_real)
  np.testing.assert_array_equal(np.asarray(r.expert).reshape(-1)[np.asarray(layout.cap_assign)[real]],
                                slot_expert[real])
  return layout


@pytest.mark.parametrize("capacity,block", [(1, 1), (3, 4), (2, 16)])
def test_hybrid_overflow_is_exact(capacity, block):
  # capacities far below the mean group (~11 rows): most rows take the overflow path, in blocks of any size
  spec = MoESpec(n_vision_intra=2, n_inter=3, n_text_intra=3, top_k=2)
  _hybrid_direct(spec, capacity, block)


def test_hybrid_per_expert_capacities_are_exact():
  # MoIIE's layout with unequal capacities (three runs of equal capacity, one of them a single expert) and
  # some far below their group: capacity rows and overflow blocks together stay exact
  spec = MoESpec(n_vision_intra=2, n_inter=3, n_text_intra=3, top_k=2)
  assert experts.capacity_groups((2, 2, 9, 9, 9, 1, 4, 4)) == ((0, 2, 2), (2, 3, 9), (5, 1, 1), (6, 2, 4))
  layout = _hybrid_direct(spec, (2, 2, 9, 9, 9, 1, 4, 4), block=4)
  assert layout.cap_assign.shape == (2 + 2 + 27 + 1 + 8,)


def test_hybrid_worst_case_imbalance_fits_the_static_bound():
  spec = MoESpec(n_vision_intra=0, n_inter=8, n_text_intra=0, top_k=2, per_modality_routers=False)
  layout = _hybrid_direct(spec, capacity=3, block=4, skew=True)
  assert int(layout.used) * 4 > 0.8 * 2 * (T - 5)  # nearly every live row overflowed, and all were computed
  # the static bound against brute force: every group-size vector (each <= T, live rows <= T*k) of small layers
  for t, k, e in [(6, 2, 4), (5, 1, 3), (4, 3, 5)]:
    vectors = [v for v in itertools.product(range(t + 1), repeat=e) if sum(v) <= t * k]
    for c in range(1, t + 1):
      for b in (1, 2, 3, 4, 8):
        worst = max(sum(-(-max(s - c, 0) // b) * b for s in v) for v in vectors)
        assert worst <= experts.overflow_bound(t, k, e, c, b), (t, k, e, c, b)
    # per-expert capacities: every capacity vector of the small layers against every group-size vector at once
    sizes, all_caps = np.array(vectors), np.array(list(itertools.product(range(1, t + 1), repeat=e)))
    for b in (1, 3, 8):
      worst = (-(-np.maximum(sizes[None] - all_caps[:, None], 0) // b) * b).sum(-1).max(-1)
      bounds = np.array([experts.overflow_bound(t, k, e, tuple(caps), b) for caps in all_caps])
      assert np.all(worst <= bounds), (t, k, b)
      assert np.any(worst == bounds)  # and tight for some capacity vector


def test_auto_kernel_and_hybrid_sizes():
  many = MoESpec(n_vision_intra=0, n_inter=64, n_text_intra=0)
  few = MoESpec(n_vision_intra=0, n_inter=4, n_text_intra=0)
  assert many.kernel_for(4096, "cpu") == "hybrid" and few.kernel_for(4096, "cpu") == "hybrid"  # 1024 rows each
  assert few.kernel_for(8192, "cpu") == "blocks"  # 2048 rows per expert: past HYBRID_MAX_MEAN_ROWS
  assert many.kernel_for(4096, "gpu") == "hybrid" and few.kernel_for(8192, "gpu") == "hybrid"  # measured on an H200
  assert many.kernel_for(4096, "tpu") == "ragged_dot"
  assert MoESpec(grouped_matmul="blocks").kernel_for(4096, "cpu") == "blocks"
  assert many.hybrid_sizes(4096, 2048) == ((64,) * 64, 16)  # capacity = mean group (64 rows), 16-row blocks
  assert MoESpec(n_vision_intra=0, n_inter=8, n_text_intra=0).hybrid_sizes(4096, 2048) == ((512,) * 8, 64)
  assert dataclasses.replace(many, hybrid_capacity_factor=1.25, block_size=8).hybrid_sizes(4096, 2048) == (
      (80,) * 64, 8)
  assert few.hybrid_sizes(40, 12) == ((12,) * 4, 16)  # capacity: a multiple of 8, at most T (an expert's most rows)
  # MoIIE's layout: half the 4096 assignments from each modality, each spread over the 6 experts it reaches, so
  # an intra expert expects 2048 / 6 = 341.3 rows and a shared one twice that (both rounded up to a multiple of 8)
  moiie = MoESpec(n_vision_intra=2, n_inter=4, n_text_intra=2)
  np.testing.assert_allclose(moiie.expected_rows(4096), [2048 / 6] * 2 + [4096 / 6] * 4 + [2048 / 6] * 2)
  assert moiie.hybrid_sizes(4096, 2048) == ((344,) * 2 + (688,) * 4 + (344,) * 2, 64)
  skewed = dataclasses.replace(moiie, hybrid_vision_fraction=0.75)  # vision-intra 3072/6, text-intra 1024/6 rows
  assert skewed.hybrid_sizes(4096, 2048)[0] == (512,) * 2 + (688,) * 4 + (176,) * 2
  with pytest.raises(ValueError, match="hybrid_vision_fraction"):
    MoESpec(hybrid_vision_fraction=1.5)
