"""The reference, sparse (block grouped matmul and ragged_dot) and einsum-dispatch paths agree: outputs, aux
losses, and gradients with respect to inputs, experts and routers (moiie/experts.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moiie import experts, layer
from moiie.routing import MoESpec

T, D, F = 45, 16, 24


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
CASES = [(MoESpec(n_vision_intra=2, n_inter=3, n_text_intra=3, top_k=2, block_size=8),
          [("sparse", "blocks"), ("sparse", "ragged_dot"), ("einsum", "auto")]),
         (MoESpec(n_vision_intra=0, n_inter=4, n_text_intra=0, top_k=2, per_modality_routers=False,
                  balance_scope="all", block_size=4), [("sparse", "blocks")]),
         (MoESpec(n_vision_intra=1, n_inter=2, n_text_intra=1, top_k=2, capacity_factor=0.8, router_z_loss=1e-3,
                  block_size=8), [("sparse", "blocks"), ("einsum", "auto")])]


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
