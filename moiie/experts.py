"""Expert computation of a MoE layer (MoIIE arXiv 2508.09779, sec. 3.2, eq. 6: y = sum_k w_k E_k(x)) in three
execution paths that give the same outputs and gradients (tests/moiie/test_moiie_paths.py):

  * `reference`: every expert on every token, then a masked weighted combine. Exact and simple; costs E FFNs.
  * `sparse`: assignments sorted by expert and run as a grouped matmul, then unsorted (MegaBlocks-style,
    Gale et al. 2022). On GPU/TPU the grouped matmul is `jax.lax.ragged_dot`; on CPU ragged_dot falls back to
    a dense loop over all experts (cost grows with E), so there it is `block_grouped_matmul`: each expert's rows
    padded to a multiple of `block_size` and a scan over blocks, each block one [b, K] x [K, N] matmul against its
    expert's weight. Only gathers move rows (the inverse permutation is computed once on int ids), no capacity.
  * `einsum`: GShard's one-hot dispatch/combine tensors [T, E, C] and a batched [E, C, D] FFN (Lepikhin et al.
    2020, Alg. 2): the classical capacity-based comparison point. Without a capacity limit C = T (exact).

Experts are SwiGLU FFNs stacked on a leading axis: gate/up [E, D, F], down [E, F, D] (upcycled copies of a
Llama MLP).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

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
  kernel = spec.grouped_matmul
  if kernel == "auto":
    kernel = "blocks" if jax.default_backend() == "cpu" else "ragged_dot"
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


def run_experts(x, routing: Routing, gate, up, down, spec: MoESpec) -> jax.Array:
  """Dispatches to the configured path; x [T, D] -> [T, D]."""
  if spec.path == "reference":
    return reference(x, routing, gate, up, down)
  if spec.path == "einsum":
    return einsum_dispatch(x, routing, gate, up, down, spec.capacity(x.shape[0]))
  return sparse(x, routing, gate, up, down, spec)
