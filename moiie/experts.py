"""Expert computation of a MoE layer (MoIIE arXiv 2508.09779, sec. 3.2, eq. 6: y = sum_k w_k E_k(x)) in three
execution paths that give the same outputs and gradients (tests/moiie/test_moiie_paths.py):

  * `reference`: every expert on every token, then a masked weighted combine. Exact and simple; costs E FFNs.
  * `sparse`: assignments sorted by expert and run as a grouped matmul, then unsorted (MegaBlocks-style,
    Gale et al. 2022). On TPU the grouped matmul is `jax.lax.ragged_dot`; on CPU and on GPU (jax 0.11.2,
    measured on an H200) ragged_dot falls back to dense work over all experts (cost grows with E), so there it is
    `hybrid` (below) or, on CPU with large groups, `block_grouped_matmul`: each expert's rows
    padded to a multiple of `block_size` and a scan over blocks, each block one [b, K] x [K, N] matmul against its
    expert's weight. Only gathers move rows (the inverse permutation is computed once on int ids), no capacity.
    `hybrid` (GPU; CPU with many experts): each expert's first C_e rows (C_e about the group it should get under uniform
    routing, `MoESpec.expected_rows`) run as one [C_e, D] x [D, F] matmul per expert in a scan over each run of
    experts of equal capacity, the weight gradients as batched contractions; the rows past C_e run through small
    per-expert blocks in a loop over the blocks in use. Exact and dropless: no row is ever dropped, whatever the
    imbalance (the overflow has a static bound, `overflow_bound`).
  * `einsum`: GShard's one-hot dispatch/combine tensors [T, E, C] and a batched [E, C, D] FFN (Lepikhin et al.
    2020, Alg. 2): the classical capacity-based comparison point. Without a capacity limit C = T (exact).

Experts are SwiGLU FFNs stacked on a leading axis: gate/up [E, D, F], down [E, F, D] (upcycled copies of a
Llama MLP).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from moiie.routing import MoESpec, Routing


def _swiglu(g: jax.Array, u: jax.Array) -> jax.Array:
  return jax.nn.silu(g) * u


def reference(x, routing: Routing, gate, up, down) -> jax.Array:
  e = gate.shape[0]
  h = _swiglu(jnp.einsum("td,edf->tef", x, gate), jnp.einsum("td,edf->tef", x, up))
  y = jnp.einsum("tef,efd->ted", h, down)
  combine = jnp.einsum("tk,tke->te", routing.weight, jax.nn.one_hot(routing.expert, e, dtype=x.dtype))
  return jnp.einsum("te,ted->td", combine.astype(x.dtype), y)


def einsum_dispatch(x, routing: Routing, gate, up, down, capacity: int) -> jax.Array:
  e = gate.shape[0]
  keep = (routing.position < capacity) & (routing.weight > 0)  # dropped and padding assignments take no slot
  slot = jax.nn.one_hot(jnp.where(keep, routing.position, capacity), capacity, dtype=x.dtype)  # [T, k, C]
  expert = jax.nn.one_hot(routing.expert, e, dtype=x.dtype)  # [T, k, E]
  dispatch = jnp.einsum("tke,tkc->tec", expert, slot)
  combine = jnp.einsum("tke,tkc,tk->tec", expert, slot, routing.weight.astype(x.dtype))
  xe = jnp.einsum("tec,td->ecd", dispatch, x)
  h = _swiglu(jnp.einsum("ecd,edf->ecf", xe, gate), jnp.einsum("ecd,edf->ecf", xe, up))
  ye = jnp.einsum("ecf,efd->ecd", h, down)
  return jnp.einsum("tec,ecd->td", combine, ye)


# ---- the CPU grouped matmul: row blocks, one expert per block ----

def _bgmm(lhs, rhs, block_expert, used, transpose_rhs: bool):
  """Scan over blocks; blocks at or past `used` (trailing padding of the static bound) are skipped."""
  def body(_, inputs):
    i, x, e = inputs
    def compute(x):
      w = jax.lax.dynamic_index_in_dim(rhs, e, axis=0, keepdims=False)
      if transpose_rhs:  # contract with w's output axis directly: an explicit w.T made XLA:CPU copy it per block
        return jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())))
      return x @ w
    shape = (x.shape[0], rhs.shape[1] if transpose_rhs else rhs.shape[2])
    return None, jax.lax.cond(i < used, compute, lambda x: jnp.zeros(shape, x.dtype), x)
  _, out = jax.lax.scan(body, None, (jnp.arange(lhs.shape[0]), lhs, block_expert))
  return out


@jax.custom_vjp
def block_grouped_matmul(lhs: jax.Array, rhs: jax.Array, block_expert: jax.Array, used: jax.Array) -> jax.Array:
  """out[b] = lhs[b] @ rhs[block_expert[b]] for b < used (0 after) with lhs [nb, bs, K], rhs [E, K, N]."""
  return _bgmm(lhs, rhs, block_expert, used, False)


def _bgmm_fwd(lhs, rhs, block_expert, used):
  return _bgmm(lhs, rhs, block_expert, used, False), (lhs, rhs, block_expert, used)


def _bgmm_bwd(res, g):
  lhs, rhs, block_expert, used = res
  d_lhs = _bgmm(g, rhs, block_expert, used, transpose_rhs=True)

  # d_rhs[e] = sum over e's blocks of lhs_b^T g_b, accumulated in place in a loop-carried buffer; autodiff of the
  # forward scan would instead add a full [E, K, N] zero-padded gradient per block (E times the work).
  def body(acc, inputs):
    i, x, dy, e = inputs
    def add(acc):
      cur = jax.lax.dynamic_index_in_dim(acc, e, axis=0, keepdims=True)
      return jax.lax.dynamic_update_index_in_dim(acc, cur + (x.T @ dy)[None].astype(acc.dtype), e, axis=0)
    return jax.lax.cond(i < used, add, lambda acc: acc, acc), None
  d_rhs, _ = jax.lax.scan(body, jnp.zeros(rhs.shape, jnp.float32),
                          (jnp.arange(lhs.shape[0]), lhs, g, block_expert))
  return d_lhs, d_rhs.astype(rhs.dtype), None, None


block_grouped_matmul.defvjp(_bgmm_fwd, _bgmm_bwd)


# ---- row movement by gathers only: assignment (t, j) sits in slot dest[t, j]; slot s holds assignment
# slot_assign[s] when real[s]. Both directions are gathers, forward and backward (autodiff of a gather would
# scatter-add, which XLA:CPU runs row by row). ----

@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def dispatch_rows(x, slot_assign, real, dest, k: int):
  """xs [R, D]: slot s holds x[slot_assign[s] // k] (0 on padding slots)."""
  return jnp.where(real[:, None], x[slot_assign // k], 0)


def _dispatch_fwd(x, slot_assign, real, dest, k):
  return dispatch_rows(x, slot_assign, real, dest, k), (slot_assign, real, dest)


def _dispatch_bwd(k, res, g):
  slot_assign, real, dest = res
  return jnp.sum(g[dest], axis=1), None, None, None  # dx[t] = sum_j g[dest[t, j]]


dispatch_rows.defvjp(_dispatch_fwd, _dispatch_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def combine_rows(ys, weight, dest, slot_assign, real, k: int):
  """out[t] = sum_j weight[t, j] * ys[dest[t, j]] (the weighted unsort, fused)."""
  return jnp.einsum("tkd,tk->td", ys[dest], weight.astype(ys.dtype))


def _combine_fwd(ys, weight, dest, slot_assign, real, k):
  return combine_rows(ys, weight, dest, slot_assign, real, k), (ys, weight, dest, slot_assign, real)


def _combine_bwd(k, res, g):
  ys, weight, dest, slot_assign, real = res
  t = slot_assign // k
  w_slot = weight.reshape(-1)[slot_assign].astype(g.dtype)
  d_ys = jnp.where(real[:, None], g[t] * w_slot[:, None], 0)
  d_w = jnp.einsum("tkd,td->tk", ys[dest], g).astype(weight.dtype)
  return d_ys, d_w, None, None, None


combine_rows.defvjp(_combine_fwd, _combine_bwd)


def _sort_assignments(routing: Routing, num_experts: int):
  """Sorted order of the T*k assignments by expert, group sizes, and each assignment's rank in the sort."""
  flat = routing.expert.reshape(-1)
  order = jnp.argsort(flat, stable=True)  # sorted position -> assignment
  sizes = jnp.bincount(flat, length=num_experts)
  # inverse permutation on int ids (cheap): assignment -> sorted position; rows only ever move by gathers
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
  return flat, order, sizes, rank


def sparse(x, routing: Routing, gate, up, down, spec: MoESpec) -> jax.Array:
  t, d = x.shape
  e, k = gate.shape[0], routing.expert.shape[1]
  kernel = spec.kernel_for(t * k, jax.default_backend())
  if kernel == "hybrid":
    return hybrid(x, routing, gate, up, down, spec)
  flat, order, sizes, rank = _sort_assignments(routing, e)
  if kernel == "ragged_dot":
    xs = x[order // k]
    h = _swiglu(jax.lax.ragged_dot(xs, gate, sizes), jax.lax.ragged_dot(xs, up, sizes))
    ys = jax.lax.ragged_dot(h, down, sizes)
    return jnp.einsum("tkd,tk->td", ys[rank].reshape(t, k, d), routing.weight.astype(ys.dtype))
  a = t * k
  bs = spec.blocks_for(a)
  num_blocks = -(-(a + e * (bs - 1)) // bs)  # static bound on sum_e ceil(size_e / bs)
  rows = num_blocks * bs
  padded = -(-sizes // bs) * bs
  pad_end = jnp.cumsum(padded)
  pad_start = pad_end - padded
  grp_start = jnp.cumsum(sizes) - sizes
  slot = jnp.arange(rows)
  slot_expert = jnp.minimum(jnp.searchsorted(pad_end, slot, side="right"), e - 1)
  slot_rank = slot - pad_start[slot_expert]
  real = (slot_rank < sizes[slot_expert]) & (slot < pad_end[-1])
  slot_assign = order[jnp.clip(grp_start[slot_expert] + slot_rank, 0, a - 1)]
  dest = (pad_start[flat] + rank - grp_start[flat]).reshape(t, k)  # each assignment's padded slot
  used = pad_end[-1] // bs
  block_expert = slot_expert[::bs].astype(jnp.int32)
  xs = dispatch_rows(x, slot_assign, real, dest, k).reshape(num_blocks, bs, d)
  h = _swiglu(block_grouped_matmul(xs, gate, block_expert, used), block_grouped_matmul(xs, up, block_expert, used))
  ys = block_grouped_matmul(h, down, block_expert, used).reshape(rows, d)
  return combine_rows(ys, routing.weight, dest, slot_assign, real, k)


# ---- the CPU hybrid: every expert's first C_e rows as one [C_e, D] x [D, F] matmul per expert (a scan over each
# run of experts with equal capacity), the rows past C_e through small per-expert blocks; exact and dropless ----

class HybridLayout(NamedTuple):
  """Where each live assignment (nonzero weight) runs. Assignment ids are t * k + j; int arrays only.

  Capacity slots are laid out expert after expert: expert e owns slots [offset_e, offset_e + C_e).
  """

  cap_assign: jax.Array  # [S]: the assignment in each capacity slot, S = sum_e C_e (any id where not cap_real)
  cap_real: jax.Array  # [S] bool
  dest: jax.Array  # [T, k]: capacity slot of each assignment (0 where not in_cap)
  in_cap: jax.Array  # [T, k] bool: the assignment runs in its expert's capacity slots
  ovf_assign: jax.Array  # [nb, bs]: assignments past capacity, in blocks of one expert each
  ovf_real: jax.Array  # [nb, bs] bool
  block_expert: jax.Array  # [nb]
  used: jax.Array  # scalar: blocks in use (the others are the trailing padding of the static bound)


def _capacities(capacity: int | Sequence[int], num_experts: int) -> tuple[int, ...]:
  caps = (int(capacity),) * num_experts if np.ndim(capacity) == 0 else tuple(int(c) for c in capacity)
  if len(caps) != num_experts or min(caps) < 1:
    raise ValueError(f"hybrid capacities {caps}: need one capacity >= 1 per expert ({num_experts} experts).")
  return caps


def capacity_groups(capacities: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
  """Runs of consecutive experts with equal capacity, as (first expert, number of experts, capacity)."""
  groups = []
  for e, c in enumerate(capacities):
    if groups and groups[-1][2] == c:
      groups[-1][1] += 1
    else:
      groups.append([e, 1, c])
  return tuple(tuple(g) for g in groups)


def overflow_bound(num_tokens: int, top_k: int, num_experts: int, capacity: int | Sequence[int], block: int) -> int:
  """Static bound on the overflow rows (each expert's rows past its capacity, padded to a multiple of `block`).

  An expert holds at most T rows (a token picks an expert once) and all experts together T*k. If the experts
  of a set M overflow, their padded overflow is at most min(|M| T, T k) - sum_{e in M} (C_e - block + 1); for
  each size m of M the worst set holds the m smallest capacities (experts with C_e >= T cannot overflow).
  """
  t, k, b = num_tokens, top_k, block
  slack = sorted(c - b + 1 for c in _capacities(capacity, num_experts) if c < t)
  bound = max([min(m * t, t * k) - sum(slack[:m]) for m in range(1, len(slack) + 1)], default=0)
  return max(0, min(bound, t * k + num_experts * (b - 1)))


def hybrid_layout(routing: Routing, num_experts: int, capacity: int | Sequence[int], block: int) -> HybridLayout:
  """`capacity`: one capacity for every expert, or one per expert."""
  t, k = routing.expert.shape
  e, bs, a = num_experts, block, t * k
  caps = _capacities(capacity, e)
  offset = np.concatenate([[0], np.cumsum(caps)[:-1]])
  # static: the expert and rank of every capacity slot
  slot_expert = np.repeat(np.arange(e), caps)
  slot_rank = np.arange(sum(caps)) - offset[slot_expert]
  cap = jnp.asarray(caps)
  # Assignments of weight 0 (padding, capacity drops) take no row: their output is multiplied by 0 and the
  # gradient of a weight that a mask set to 0 does not reach the router, so skipping them is exact.
  live = routing.weight.reshape(-1) > 0
  key = jnp.where(live, routing.expert.reshape(-1), e)
  order = jnp.argsort(key, stable=True)  # sorted position -> assignment; dead assignments last
  sizes = jnp.bincount(key, length=e + 1)[:e]
  start = jnp.cumsum(sizes) - sizes
  pos = jnp.zeros_like(order).at[order].set(jnp.arange(a, dtype=order.dtype))  # assignment -> sorted position
  expert_of = jnp.minimum(key, e - 1)
  rank = pos - start[expert_of]  # rank inside the expert's group
  in_cap = live & (rank < cap[expert_of])
  dest = jnp.where(in_cap, jnp.asarray(offset)[expert_of] + rank, 0)
  cap_real = jnp.asarray(slot_rank) < sizes[slot_expert]
  cap_assign = order[jnp.clip(start[slot_expert] + slot_rank, 0, a - 1)]
  nb = -(-overflow_bound(t, k, e, caps, bs) // bs)
  over = jnp.maximum(sizes - cap, 0)
  padded = -(-over // bs) * bs
  pad_end = jnp.cumsum(padded)
  pad_start = pad_end - padded
  row = jnp.arange(nb * bs)
  row_expert = jnp.minimum(jnp.searchsorted(pad_end, row, side="right"), e - 1)
  row_rank = row - pad_start[row_expert]
  ovf_real = (row_rank < over[row_expert]) & (row < pad_end[-1])
  ovf_assign = order[jnp.clip(start[row_expert] + cap[row_expert] + row_rank, 0, a - 1)]
  return HybridLayout(cap_assign, cap_real, dest.reshape(t, k), in_cap.reshape(t, k),
                      ovf_assign.reshape(nb, bs), ovf_real.reshape(nb, bs),
                      row_expert[::bs].astype(jnp.int32), (pad_end[-1] // bs).astype(jnp.int32))


def _contract_out(a, w):
  """a @ w.T without materialising the transpose (XLA:CPU would copy w)."""
  return jax.lax.dot_general(a, w, (((1,), (1,)), ((), ())))


def _ffn_fwd_rows(x, g, u, dn):
  gp, upre = x @ g, x @ u
  return (jax.nn.silu(gp) * upre) @ dn, gp, upre


def _ffn_bwd_rows(g, u, dn, gp, upre, dy):
  """y = (silu(gp) * upre) dn with gp = x g, upre = x u, for one expert's rows: (dx, d_gp, d_upre)."""
  sig = jax.nn.sigmoid(gp)
  dh = _contract_out(dy, dn)
  d_upre = dh * gp * sig
  d_gp = dh * upre * sig * (1 + gp * (1 - sig))
  return _contract_out(d_gp, g) + _contract_out(d_upre, u), d_gp, d_upre


def _group_rows(flat: jax.Array, groups) -> list[jax.Array]:
  """Splits slot-major rows [S, ...] into one [n_g, C_g, ...] array per capacity group."""
  out, at = [], 0
  for _, n, c in groups:
    out.append(flat[at:at + n * c].reshape(n, c, *flat.shape[1:]))
    at += n * c
  return out


def _join(parts: list[jax.Array]) -> jax.Array:
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def _place(parts: list[jax.Array], groups, shape) -> jax.Array:
  """Per-group weight gradients [n_g, ...] into one [E, ...] array. Updating slices of one buffer lets each
  contraction write into it in place; a concatenate copied them all again (5-7% of the layer at E = 8-16)."""
  if len(parts) == 1:
    return parts[0]
  out = jnp.zeros(shape, parts[0].dtype)
  for (e0, _, _), part in zip(groups, parts):
    out = jax.lax.dynamic_update_slice_in_dim(out, part, e0, axis=0)
  return out


def hybrid_ffn(x, weight, gate, up, down, layout: HybridLayout, k: int,
               capacity: int | Sequence[int]) -> jax.Array:
  """out[t] = sum_j weight[t, j] * FFN_{expert(t, j)}(x[t]) over the live assignments of `layout`, which was built
  with this `capacity` (as `hybrid_layout` takes it: one for every expert, or one per expert)."""
  return _hybrid_ffn(x, weight, gate, up, down, layout, k, _capacities(capacity, gate.shape[0]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _hybrid_ffn(x, weight, gate, up, down, layout: HybridLayout, k: int, capacities: tuple[int, ...]):
  return _hybrid_fwd(x, weight, gate, up, down, layout, k, capacities)[0]


def _hybrid_fwd(x, weight, gate, up, down, layout, k, capacities):
  t, d = x.shape
  groups = capacity_groups(capacities)
  xc = jnp.where(layout.cap_real[:, None], x[layout.cap_assign // k], 0)  # [S, D], one gather
  # Each step reads its expert's weights by index (as scanning over them would); slicing a group's weights
  # first would copy them.
  def body(_, inputs):
    xe, ex = inputs
    return None, _ffn_fwd_rows(xe, gate[ex], up[ex], down[ex])
  yc, gp, upre = [], [], []
  for (e0, n, _), xg in zip(groups, _group_rows(xc, groups)):
    _, (y_g, gp_g, upre_g) = jax.lax.scan(body, None, (xg, e0 + jnp.arange(n)))
    yc.append(y_g.reshape(-1, d))
    gp.append(gp_g)
    upre.append(upre_g)
  yc = _join(yc)
  w_cap = jnp.where(layout.in_cap, weight, 0).astype(x.dtype)
  y = jnp.einsum("tkd,tk->td", yc[layout.dest], w_cap)
  w_flat = weight.reshape(-1)

  def overflow(b, y):  # few blocks: rows gathered and added back by token (a block never repeats a token)
    idx, real, ex = layout.ovf_assign[b], layout.ovf_real[b], layout.block_expert[b]
    tok = idx // k
    yb, _, _ = _ffn_fwd_rows(x[tok], gate[ex], up[ex], down[ex])
    return y.at[tok].add(yb * jnp.where(real, w_flat[idx], 0).astype(y.dtype)[:, None])
  if layout.ovf_assign.shape[0]:
    y = jax.lax.fori_loop(0, layout.used, overflow, y)
  return y, (x, weight, gate, up, down, layout, xc, gp, upre, yc)


def _hybrid_bwd(k, capacities, res, g):
  x, weight, gate, up, down, layout, xc, gp, upre, yc = res
  t, d = x.shape
  groups = capacity_groups(capacities)
  w_flat = weight.reshape(-1)
  w_slot = jnp.where(layout.cap_real, w_flat[layout.cap_assign], 0).astype(g.dtype)
  dyc = g[layout.cap_assign // k] * w_slot[:, None]  # [S, D]; 0 on empty slots
  d_weight = jnp.where(layout.in_cap, jnp.einsum("tkd,td->tk", yc[layout.dest], g), 0)
  # Weight gradients as batched contractions over the capacity rows, each written once straight into its buffer
  # (as stacked scan outputs they took a zero fill per step and, two having one shape, a 128 MB copy at E = 64).
  def body(_, inputs):
    ex, gp_e, upre_e, dy_e = inputs
    return None, _ffn_bwd_rows(gate[ex], up[ex], down[ex], gp_e, upre_e, dy_e)
  dxc, d_gate, d_up, d_down = [], [], [], []
  for (e0, n, _), xg, gp_g, upre_g, dyg in zip(groups, _group_rows(xc, groups), gp, upre,
                                                _group_rows(dyc, groups)):
    _, (dx_g, d_gp, d_upre) = jax.lax.scan(body, None, (e0 + jnp.arange(n), gp_g, upre_g, dyg))
    dxc.append(dx_g.reshape(-1, d))
    d_down.append(jnp.einsum("ecf,ecd->efd", jax.nn.silu(gp_g) * upre_g, dyg))
    d_gate.append(jnp.einsum("ecd,ecf->edf", xg, d_gp))
    d_up.append(jnp.einsum("ecd,ecf->edf", xg, d_upre))
  d_gate, d_up, d_down = (_place(parts, groups, w.shape) for parts, w in ((d_gate, gate), (d_up, up), (d_down, down)))
  dx = jnp.sum(jnp.where(layout.in_cap[..., None], _join(dxc)[layout.dest], 0), axis=1)

  def overflow(b, carry):  # recomputes the few overflow blocks; weight gradients accumulate in place
    dx, dw, dg_, du_, dd_ = carry
    idx, real, ex = layout.ovf_assign[b], layout.ovf_real[b], layout.block_expert[b]
    tok = idx // k
    xb, gb, ub, db = x[tok], gate[ex], up[ex], down[ex]
    yb, gpb, upb = _ffn_fwd_rows(xb, gb, ub, db)
    gt = g[tok]
    dw = dw.at[idx].add(jnp.where(real, jnp.sum(gt * yb, axis=-1), 0).astype(dw.dtype))
    dyb = gt * jnp.where(real, w_flat[idx], 0).astype(g.dtype)[:, None]
    dxb, d_gpb, d_upb = _ffn_bwd_rows(gb, ub, db, gpb, upb, dyb)
    add = lambda acc, v: jax.lax.dynamic_update_index_in_dim(  # noqa: E731
        acc, jax.lax.dynamic_index_in_dim(acc, ex, 0, keepdims=False) + v.astype(acc.dtype), ex, 0)
    return (dx.at[tok].add(dxb), dw, add(dg_, xb.T @ d_gpb), add(du_, xb.T @ d_upb),
            add(dd_, (jax.nn.silu(gpb) * upb).T @ dyb))
  if layout.ovf_assign.shape[0]:
    dx, d_w, d_gate, d_up, d_down = jax.lax.fori_loop(
        0, layout.used, overflow, (dx, d_weight.reshape(-1), d_gate, d_up, d_down))
    d_weight = d_w.reshape(t, k)
  return (dx.astype(x.dtype), d_weight.astype(weight.dtype), d_gate.astype(gate.dtype), d_up.astype(up.dtype),
          d_down.astype(down.dtype), None)


_hybrid_ffn.defvjp(_hybrid_fwd, _hybrid_bwd)


def hybrid(x, routing: Routing, gate, up, down, spec: MoESpec) -> jax.Array:
  t, k, e = x.shape[0], routing.expert.shape[1], gate.shape[0]
  capacities, block = spec.hybrid_sizes(t * k, t)
  layout = hybrid_layout(routing, e, capacities, block)
  return hybrid_ffn(x, routing.weight, gate, up, down, layout, k, capacities)


def run_experts(x, routing: Routing, gate, up, down, spec: MoESpec) -> jax.Array:
  """Dispatches to the configured path; x [T, D] -> [T, D]."""
  if spec.path == "reference":
    return reference(x, routing, gate, up, down)
  if spec.path == "einsum":
    return einsum_dispatch(x, routing, gate, up, down, spec.capacity(x.shape[0]))
  return sparse(x, routing, gate, up, down, spec)
