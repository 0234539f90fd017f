"""MoE layer forward+backward speed of MoIIE's execution paths against a dense FFN of the same activated FLOPs.

For E in {4, 8, 16, 64} experts, top-2, T tokens of width D, SwiGLU experts of width F: the reference path
(every expert on every token), the sparse path (on CPU: sort + block grouped matmul, and the hybrid of
capacity-padded per-expert matmuls + overflow blocks; `ragged_dot` too, optionally), and GShard einsum dispatch
(capacity factor 1.25), each timed as value_and_grad of a scalar of the output with respect to the input, the
experts and the router. The peer is a dense SwiGLU FFN of width k*F on the same T tokens (the same matmul FLOPs as
k active experts), timed right after each path. One JSON line per (E, path): ours = tokens/s, peer_value = the
dense FFN's tokens/s, ratio = ours / dense (1/ratio = time vs dense). `grad_buffers` times no MoE at all: only
writing three fresh arrays of the expert-gradient shapes ([E, D, F] x 2, [E, F, D]), a floor for every path that
returns expert gradients (on a machine where fresh memory costs page faults, it grows with E).
`balanced_floor` times the hybrid kernel alone on a hand-made, perfectly balanced assignment (token t's j-th row
goes to expert (t k + j) mod E, weights 1/k; every capacity exactly T k / E rows, so no overflow and no padding),
its layout built once outside the timed function: no router, no top-k, no sort. What it costs over the dense FFN
is the per-expert loop itself (and the kernel's gathers and combine); the routed paths' cost over it is routing,
sorting, unequal groups and overflow. Vanilla layout only; where T k is not a multiple of E it is skipped with a
note on stderr, and the other paths still run.

    python -m benchmarks.moiie_layer                       # T=2048, D=512, F=1024 (4096 routed rows)
    python -m benchmarks.moiie_layer --experts 8,16,64 --paths sparse,grad_buffers --hybrid-factors 0,1.25
    python -m benchmarks.moiie_layer --experts 8 --paths sparse --block-sizes 64,128,256
    python -m benchmarks.moiie_layer --experts 8,16,64 --paths sparse,balanced_floor --block-sizes ""
    python -m benchmarks.moiie_layer --layout moiie --experts 4,8 --paths sparse --block-sizes 0 --hybrid-factors 0

`--layout vanilla` (default) is one router over E shared experts, every token of one modality: the groups differ
only by the router's noise. `--layout moiie` is MoIIE's layout (E/4 vision-intra, E/2 inter, E/4 text-intra
experts, a router per modality, `--vision-fraction` of the tokens vision): an intra expert sees one modality and an
inter one both, so with a random router the inter experts' groups are twice the intra ones' (4/3 of the mean
group against 2/3 at a vision fraction of 0.5). The hybrid kernel sizes each expert's capacity for that
(`moe.hybrid_vision_fraction`, set here to `--vision-fraction`); with one capacity for all, the inter experts'
extra rows went through its overflow path.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import jax
import jax.numpy as jnp

from benchmarks import harness
from moiie import experts, layer, routing
from moiie.routing import MoESpec


def dense_ffn(params, x):
  return (jax.nn.silu(x @ params["gate"]) * (x @ params["up"])) @ params["down"]


def _grad_fn(f):
  def loss(params, x):
    y = f(params, x)
    return jnp.sum(y * y) * 1e-3
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def balanced_floor_unavailable(num_tokens: int, top_k: int, num_experts: int, layout: str) -> str:
  """Why the balanced floor cannot be timed at these sizes ('' when it can)."""
  rows = num_tokens * top_k
  if layout != "vanilla":
    return "it has no modalities or expert groups (time it with --layout vanilla)"
  if rows % num_experts:
    return (f"T x k = {rows} rows do not split evenly over E = {num_experts} experts (--tokens a multiple of "
            f"{num_experts // math.gcd(num_experts, top_k)} would)")
  if num_experts < top_k:
    return f"each token goes to {top_k} distinct experts, more than E = {num_experts}"
  return ""


def balanced_floor_fn(num_tokens: int, top_k: int, num_experts: int):
  """value_and_grad of the hybrid kernel on a perfectly balanced assignment (see the module docstring)."""
  rows = num_tokens * top_k
  why = balanced_floor_unavailable(num_tokens, top_k, num_experts, "vanilla")
  if why:
    raise ValueError(f"balanced_floor: {why}.")
  expert = (jnp.arange(rows, dtype=jnp.int32) % num_experts).reshape(num_tokens, top_k)
  weight = jnp.full((num_tokens, top_k), 1.0 / top_k, jnp.float32)
  fake = routing.Routing(expert, weight, jnp.zeros_like(expert), jnp.zeros((num_tokens, num_experts)),
                         jnp.zeros((num_tokens, num_experts)))
  capacity = rows // num_experts
  layout = experts.hybrid_layout(fake, num_experts, capacity, block=16)  # computed once, outside the timed step
  assert int(layout.used) == 0 and bool(layout.cap_real.all())  # every row in capacity, no overflow block

  def loss(params, x):
    y = experts.hybrid_ffn(x, weight, params["gate"], params["up"], params["down"], layout, top_k, capacity)
    return jnp.sum(y * y) * 1e-3
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, default=2048)
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--ffn", type=int, default=1024)
  parser.add_argument("--top-k", type=int, default=2)
  parser.add_argument("--experts", default="4,8,16,64")
  parser.add_argument("--paths", default="reference,sparse,einsum,grad_buffers,balanced_floor")
  parser.add_argument("--block-sizes", default="0", help="0 = auto (MoESpec.blocks_for); empty: no blocks-only variant")
  parser.add_argument("--hybrid-factors", default="0",
                      help="capacity factors of the hybrid kernel (rows per expert / its expected group); 0 = auto; "
                      "empty: none")
  parser.add_argument("--ragged-dot-max-experts", type=int, default=8,
                      help="also time sparse/ragged_dot up to this E (a dense fallback on CPU; 0 = never)")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--layout", choices=("vanilla", "moiie"), default="vanilla")
  parser.add_argument("--vision-fraction", type=float, default=0.5, help="with --layout moiie")
  args = parser.parse_args(argv)
  t, d, f, k = args.tokens, args.dim, args.ffn, args.top_k
  key = jax.random.key(0)
  ks = jax.random.split(key, 8)
  x = jax.random.normal(ks[0], (t, d), jnp.float32)
  scale = d ** -0.5
  dense_params = {"gate": jax.random.normal(ks[1], (d, k * f)) * scale,
                  "up": jax.random.normal(ks[2], (d, k * f)) * scale,
                  "down": jax.random.normal(ks[3], (k * f, d)) * (k * f) ** -0.5}
  dense_fn = _grad_fn(dense_ffn)
  # moiie: the first vision_fraction of the tokens are vision tokens; vanilla: all text (one kind, as before)
  num_vision = round(t * args.vision_fraction) if args.layout == "moiie" else 0
  modality = jnp.where(jnp.arange(t) < num_vision, routing.VISION, routing.TEXT).astype(jnp.int32)
  valid = jnp.ones((t,), bool)
  # the routing rules of the paper's row (routing.VARIANTS); the expert counts scaled to E
  rules = {key: value for key, value in routing.VARIANTS[args.layout].items()
           if key in ("per_modality_routers", "balance_scope")}
  layout_tag = "" if args.layout == "vanilla" else f", {args.layout} layout"
  for e in (int(v) for v in args.experts.split(",")):
    if args.layout == "moiie":
      if e % 4:
        raise SystemExit(f"--layout moiie splits E into E/4 vision-intra, E/2 inter, E/4 text-intra experts; "
                         f"E = {e} is not a multiple of 4. Fix: --experts 4,8,16,64.")
      counts = dict(n_vision_intra=e // 4, n_inter=e // 2, n_text_intra=e // 4)
    else:
      counts = dict(n_vision_intra=0, n_inter=e, n_text_intra=0)
    # the hybrid's per-expert capacities are sized for the benchmark's own share of vision tokens
    base = MoESpec(**counts, top_k=k, **rules,
                   hybrid_vision_fraction=args.vision_fraction if args.layout == "moiie" else 0.5)
    params = {"router": jax.random.normal(ks[4], (base.num_routers, d, e)) * scale,
              "gate": jax.random.normal(ks[5], (e, d, f)) * scale, "up": jax.random.normal(ks[6], (e, d, f)) * scale,
              "down": jax.random.normal(ks[7], (e, f, d)) * f ** -0.5}
    variants = []
    for path in args.paths.split(","):
      if path == "sparse":
        variants.append((f"sparse_auto_{base.kernel_for(t * k, jax.default_backend())}",
                         dataclasses.replace(base, path="sparse")))
        for b in (int(v) for v in args.block_sizes.split(",") if v):
          variants.append((f"sparse_blocks{b or 'auto'}",
                           dataclasses.replace(base, path="sparse", grouped_matmul="blocks", block_size=b)))
        for cf in (float(v) for v in args.hybrid_factors.split(",") if v):
          variants.append((f"sparse_hybrid_cf{cf or 'auto'}", dataclasses.replace(
              base, path="sparse", grouped_matmul="hybrid", hybrid_capacity_factor=cf)))
        if e <= args.ragged_dot_max_experts:
          variants.append(("sparse_ragged_dot", dataclasses.replace(base, path="sparse", grouped_matmul="ragged_dot")))
      elif path == "einsum":
        variants.append(("einsum_cf1.25", dataclasses.replace(base, path="einsum", capacity_factor=1.25)))
      elif path == "balanced_floor":
        why = balanced_floor_unavailable(t, k, e, args.layout)
        if why:  # the other paths still run: a default run must not stop half-way over one optional line
          print(f"balanced_floor skipped at E = {e}: {why}.", file=sys.stderr)
        else:
          variants.append((path, None))
      elif path == "grad_buffers":
        variants.append((path, None))
      else:
        variants.append((path, dataclasses.replace(base, path=path)))
    for name, spec in variants:
      if name == "balanced_floor":
        fn = balanced_floor_fn(t, k, e)
      elif spec is None:  # distinct fill values: XLA would share one buffer of zeros between equal shapes
        shapes = [params[n].shape for n in ("gate", "up", "down")]
        fn = jax.jit(lambda p, xx, shapes=shapes: [jnp.full(s, i, xx.dtype) for i, s in enumerate(shapes)])
      else:
        fn = _grad_fn(lambda p, xx, spec=spec: layer.moe_ffn(p, xx, modality, valid, spec)[0])
      iters = 2 if name == "reference" and e >= 32 else args.iters  # the all-experts path is slow at many experts
      timing = harness.time_fn(fn, params, x, iters=iters, warmup=1)
      # the peer again right after: the figure pair (and its ratio) comes from one short window of a shared machine
      dense_t = harness.time_fn(dense_fn, dense_params, x, iters=args.iters, warmup=1)
      dense_tps = t / dense_t.median_s
      harness.emit("moiie_layer", f"fwd+bwd tokens/s, E={e}, top-{k}, {name}{layout_tag}", t / timing.median_s,
                   unit="tokens/s", peer=f"dense SwiGLU FFN {d}->{k * f}->{d} (same activated FLOPs)",
                   peer_value=dense_tps, experts=e, path=name, layout=args.layout, tokens=t, dim=d, ffn=f,
                   median_ms=timing.median_s * 1e3, dense_ms=dense_t.median_s * 1e3,
                   time_vs_dense=timing.median_s / dense_t.median_s, compile_s=timing.compile_s,
                   compiles_during_timing=timing.compiles_during_timing,
                   peer_compiles_during_timing=dense_t.compiles_during_timing, iters=timing.iters,
                   peer_iters=dense_t.iters)


if __name__ == "__main__":
  main()
