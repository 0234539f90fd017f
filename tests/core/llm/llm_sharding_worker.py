"""Runs the tiny decoder unsharded and sharded over this process's (8 fake CPU) devices; prints JSON differences.

Run by test_llm_sharding.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8. Parameters
are split FSDP-style (core.sharding.state_sharding over the fsdp axis), batches over both mesh axes.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import sharding
from core.llm import generate as G
from core.llm import scoring
from core.llm.session import GenerationSession
from core.llm.model import forward, positions_from_mask
from llm_fixtures import tiny_model


def main(meshes: list[tuple[int, int]]) -> None:
  graphdef, state = nnx.split(tiny_model(seed=0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 256, (8, 24)).astype(np.int32)
  mask = np.ones((8, 24), bool)
  for i in range(8):
    mask[i, :i] = False  # left padding of every width from 0 to 7
  batch = {"tokens": tokens, "attention_mask": mask, "loss_mask": mask}

  logits_fn = jax.jit(lambda s, t, m: forward(graphdef, s, t, positions_from_mask(m), m)[0])
  grad_fn = jax.jit(jax.value_and_grad(lambda s, b: scoring.masked_nll(graphdef, s, b)))
  ref_logits = logits_fn(state, tokens, mask)
  ref_loss, ref_grads = grad_fn(state, batch)
  gen = G.GenerationConfig(max_new_tokens=12)
  prompts = [list(tokens[i, i:]) for i in range(8)]
  ref_out = G.generate(graphdef, state, tiny_model().config, prompts, gen)
  sampled = G.GenerationConfig(max_new_tokens=12, temperature=1.0)
  ref_sampled = G.generate(graphdef, state, tiny_model().config, prompts, sampled, rng=jax.random.key(3))
  ref_session = session_turns(graphdef, state, prompts, sampled, None)[0]
  results = {}
  for data, fsdp in meshes:
    mesh = sharding.make_mesh(data, fsdp)
    sharded_state = jax.device_put(state, sharding.state_sharding(mesh, state, fsdp_min_size=1024))
    results[f"{data}x{fsdp}"] = compare(graphdef, sharded_state, sharding.shard_batch(batch, mesh), prompts, gen,
                                        logits_fn, grad_fn, ref_logits, ref_loss, ref_grads, ref_out)
    # Data-parallel generation: rows split over the mesh, sampled with the same key.
    out = G.generate(graphdef, sharded_state, tiny_model().config, prompts, sampled, rng=jax.random.key(3), mesh=mesh)
    turns, session = session_turns(graphdef, sharded_state, prompts, sampled, mesh)
    results[f"{data}x{fsdp}"].update(
        rows_sampled_equal=all(np.array_equal(a, b) for a, b in zip(out.tokens, ref_sampled.tokens)),
        rows_logprob_diff=max(float(np.abs(a - b).max()) for a, b in zip(out.logprobs, ref_sampled.logprobs)),
        session_equal=all(np.array_equal(a, b) for a, b in zip(turns, ref_session)),
        session_cache_shards=len({str(s.index) for s in session.cache.k[0].addressable_shards}),
        weights_mesh_found=G.weights_mesh(sharded_state) == mesh and G.weights_mesh(state) is None,
        odd_rows_replicated=G.row_sharding(mesh, 12) is None and G.row_sharding(mesh, 16) is not None)
  print(json.dumps(results))


def session_turns(graphdef, state, prompts, gen, mesh):
  """Two turns of a `GenerationSession` over the 8 prompts (the second extends each row's dialogue)."""
  session = GenerationSession(graphdef, state, tiny_model().config, gen, len(prompts), mesh=mesh)
  first = session.generate(range(len(prompts)), prompts, rng=jax.random.key(4))
  longer = [list(p) + list(t) + [7, 8, 9] for p, t in zip(prompts, first.tokens)]
  second = session.generate(range(len(prompts)), longer, rng=jax.random.key(5))
  return list(first.tokens) + list(second.tokens), session


def compare(graphdef, sharded_state, sharded_batch, prompts, gen, logits_fn, grad_fn, ref_logits, ref_loss,
            ref_grads, ref_out) -> dict:
  logits = logits_fn(sharded_state, sharded_batch["tokens"], sharded_batch["attention_mask"])
  loss, grads = grad_fn(sharded_state, sharded_batch)
  out = G.generate(graphdef, sharded_state, tiny_model().config, prompts, gen)

  leaves = jax.tree.leaves(sharded_state)
  grad_diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))
  return {
      "devices": jax.device_count(),
      "split_params": sum(len({str(s.index) for s in x.addressable_shards}) > 1 for x in leaves),
      "params": len(leaves),
      "logits_sharded": len({str(s.index) for s in logits.addressable_shards}),
      "logit_diff": float(jnp.abs(logits - ref_logits).max()),
      "logit_scale": float(jnp.abs(ref_logits).max()),
      "loss_diff": float(abs(loss - ref_loss)),
      "grad_diff": grad_diff,
      "grad_scale": max(float(jnp.abs(g).max()) for g in jax.tree.leaves(ref_grads)),
      "tokens_equal": all(np.array_equal(a, b) for a, b in zip(out.tokens, ref_out.tokens)),
      "logprob_diff": max(float(np.abs(a - b).max()) for a, b in zip(out.logprobs, ref_out.logprobs)),
  }


if __name__ == "__main__":
  main([tuple(int(n) for n in arg.split("x")) for arg in sys.argv[1:]])
