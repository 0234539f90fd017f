"""Modality-aware routing of MoIIE (arXiv 2508.09779, sec. 3.2, eqs. 3-6) and its auxiliary losses.

Experts of one MoE layer are laid out as `[vision-intra | inter (shared) | text-intra]`. A token of modality m
is routed by its modality's router (sec. 3.2: one router per modality) over the experts it may reach: its own
intra-modality experts plus the shared inter-modality pool. Unreachable experts get a logit of -1e30, so their
softmax probability is exactly 0 and they can never be chosen. Softmax, top-k, and the k weights renormalised to
sum to 1 (the official code's Mixtral-style gate).

The four baselines of the paper's Table 2 are the same routing with other counts (see `VARIANTS`):
  * vanilla MoE: one router, every expert shared (n_inter = E), top-2, load balance over all tokens;
  * modality MoE: hard split, one vision and one text expert, no shared pool (top-1: the only reachable expert);
  * MoIIE: 1 vision + 2 shared + 1 text expert, top-2 (the paper's figure shows 2 + 2 + 2; counts are config).
Not a row of the paper: `modality_top2`, the modality MoE at MoIIE's activated and total parameters (2 vision +
2 text experts, top-2), since the paper's modality row activates one expert per token where the others activate two.

Auxiliary losses (sec. 3.3): the Mixtral/Switch load-balancing loss N * sum_e f_e P_e, computed separately over
vision tokens and over text tokens (padding excluded), each weighted 0.001; f_e is the fraction of the group's
top-k assignments sent to expert e (sum_e f_e = k), P_e the group's mean router probability, N the number of
experts the group can reach. Under uniform routing its value is k. Optional (off by default, as in the paper):
the router z-loss of ST-MoE (Zoph et al. 2022, eq. 5) and a capacity limit (GShard, Lepikhin et al. 2020) that
drops assignments beyond ceil(capacity_factor * T * k / E) per expert, first choices before second choices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from core import config as config_lib

TEXT, VISION = 0, 1  # modality ids; padding is marked separately by a `valid` mask
NUM_MODALITIES = 2
PATHS = ("reference", "sparse", "einsum")
GROUPED_MATMULS = ("auto", "blocks", "hybrid", "ragged_dot")
BALANCE_SCOPES = ("modality", "all")
_MASKED = -1e30
# Auto choices of the CPU sparse kernels, measured by benchmarks/moiie_layer.py (see moiie/README.md).
HYBRID_MAX_MEAN_ROWS = 1024
HYBRID_CAPACITY_FACTOR = 1.0

# Expert counts and routing rules of the paper's four rows (Table 2); "dense" keeps the dense FFN; "custom" takes
# the counts and rules written in the `moe` section as they are (a named variant overrides them).
VARIANTS = {
    "dense": None,
    "custom": {},
    "vanilla": dict(n_vision_intra=0, n_inter=4, n_text_intra=0, top_k=2, per_modality_routers=False,
                    balance_scope="all"),
    "modality": dict(n_vision_intra=1, n_inter=0, n_text_intra=1, top_k=1, per_modality_routers=True,
                     balance_scope="modality"),
    "moiie": dict(n_vision_intra=1, n_inter=2, n_text_intra=1, top_k=2, per_modality_routers=True,
                  balance_scope="modality"),
    # Not in the paper: the hard modality split at MoIIE's activated (2 experts) and total (4) expert parameters.
    "modality_top2": dict(n_vision_intra=2, n_inter=0, n_text_intra=2, top_k=2, per_modality_routers=True,
                          balance_scope="modality"),
}


def moe_config(**overrides) -> ml_collections.ConfigDict:
  """The `moe` config section; defaults are the official code's MoIIE setting (1 + 2 + 1 experts, top-2)."""
  return config_lib.section("moe", dict(
      variant="moiie",  # dense | vanilla | modality | moiie (these set the counts below) | custom (counts as given)
      n_vision_intra=1, n_inter=2, n_text_intra=1, top_k=2,
      per_modality_routers=True,  # False: one router shared by both modalities (vanilla MoE)
      balance_scope="modality",  # modality: one load-balancing loss per modality; all: one over every token
      aux_loss_weight=0.001,  # per modality group (sec. 3.3)
      router_z_loss=0.0,  # ST-MoE z-loss weight; 0 = off (paper)
      capacity_factor=0.0,  # 0 = no capacity limit, no dropped tokens (paper)
      path="sparse",  # reference (all experts on all tokens) | sparse (sort + grouped matmul) | einsum (GShard)
      # sparse path kernel: auto (hybrid on GPU, ragged_dot on TPU; on CPU blocks or hybrid by mean group size) |
      # blocks | hybrid (per-expert capacity-padded matmuls + exact overflow blocks) | ragged_dot
      grouped_matmul="auto",
      block_size=0,  # rows per block of the CPU grouped matmul (blocks; hybrid's overflow); 0 = auto
      hybrid_capacity_factor=0.0,  # hybrid's rows per expert: factor * its expected group (rows past it overflow)
      # the share of vision tokens the hybrid's per-expert rows are sized for (an intra expert sees one modality,
      # a shared one both); any other split stays exact, its extra rows take the overflow path
      hybrid_vision_fraction=0.5,
      every=2, offset=1,  # MoE on decoder layers i with i % every == offset (every other layer)
      router_init_std=0.02), overrides)


def apply_variant(moe: ml_collections.ConfigDict) -> None:
  """Writes the counts of `moe.variant` into the section (the variant is the one switch users flip)."""
  counts = VARIANTS.get(moe.variant)
  if counts:
    for key, value in counts.items():
      moe[key] = value


@dataclasses.dataclass(frozen=True)
class MoESpec:
  """Static description of one MoIIE layer (hashable: it is a static argument of jitted functions)."""

  n_vision_intra: int = 1
  n_inter: int = 2
  n_text_intra: int = 1
  top_k: int = 2
  per_modality_routers: bool = True
  balance_scope: str = "modality"
  aux_loss_weight: float = 0.001
  router_z_loss: float = 0.0
  capacity_factor: float = 0.0
  path: str = "sparse"
  grouped_matmul: str = "auto"
  block_size: int = 0
  hybrid_capacity_factor: float = 0.0
  hybrid_vision_fraction: float = 0.5

  def __post_init__(self):
    for name in ("n_vision_intra", "n_inter", "n_text_intra"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
        raise ValueError(f"MoESpec.{name} = {getattr(self, name)!r} must be an int >= 0.")
    if self.num_experts < 1:
      raise ValueError("MoESpec has no experts: n_vision_intra + n_inter + n_text_intra = 0. Fix: give at least "
                       "one expert (e.g. n_inter=4 for a vanilla MoE).")
    reach = self.reachable_counts
    if self.top_k < 1:
      raise ValueError(f"MoESpec.top_k = {self.top_k}: every token needs at least one expert. Fix: top_k >= 1.")
    for m, name in ((VISION, "vision"), (TEXT, "text")):
      if self.top_k > reach[m]:
        add = f"add {name}-intra/inter experts"
        fix = f"lower moe.top_k to at most {reach[m]}, or {add}" if reach[m] else add  # top_k cannot go below 1
        raise ValueError(f"top_k = {self.top_k} but a {name} token can reach only {reach[m]} expert(s) "
                         f"({name}-intra + inter). Fix: {fix}.")
    if self.path not in PATHS:
      raise ValueError(f"MoESpec.path = {self.path!r}; valid: {PATHS}.")
    if self.grouped_matmul not in GROUPED_MATMULS:
      raise ValueError(f"MoESpec.grouped_matmul = {self.grouped_matmul!r}; valid: {GROUPED_MATMULS}.")
    if self.balance_scope not in BALANCE_SCOPES:
      raise ValueError(f"MoESpec.balance_scope = {self.balance_scope!r}; valid: {BALANCE_SCOPES}.")
    if self.capacity_factor < 0 or self.block_size < 0 or self.hybrid_capacity_factor < 0:
      raise ValueError("MoESpec.capacity_factor must be >= 0 (0 = no limit), block_size and "
                       "hybrid_capacity_factor >= 0 (0 = auto).")
    if not 0.0 <= self.hybrid_vision_fraction <= 1.0:
      raise ValueError(f"MoESpec.hybrid_vision_fraction = {self.hybrid_vision_fraction} is a share of the tokens; "
                       "it must lie in [0, 1].")

  @property
  def num_experts(self) -> int:
    return self.n_vision_intra + self.n_inter + self.n_text_intra

  @property
  def num_routers(self) -> int:
    return NUM_MODALITIES if self.per_modality_routers else 1

  @property
  def reach(self) -> np.ndarray:
    """bool [2, E]: reach[m, e] = a token of modality m may be routed to expert e."""
    v, i = self.n_vision_intra, self.n_inter
    out = np.zeros((NUM_MODALITIES, self.num_experts), bool)
    out[VISION, : v + i] = True
    out[TEXT, v:] = True
    return out

  @property
  def reachable_counts(self) -> tuple[int, int]:
    r = self.reach.sum(axis=1)
    return int(r[TEXT]), int(r[VISION])

  def blocks_for(self, assignments: int) -> int:
    """Block rows of the CPU grouped matmul. Auto: about half the mean group size, in [16, 128] and a power of 2:
    blocks of 128 rows run near the dense matmul's speed here, while padding each group to a multiple of the block
    wastes ~E * block / 2 rows (at E = 64 and 4096 rows, 128-row blocks would double the work)."""
    if self.block_size:
      return self.block_size
    half_group = max(assignments // (2 * self.num_experts), 1)
    return int(min(128, max(16, 2 ** int(math.floor(math.log2(half_group))))))

  def kernel_for(self, assignments: int, backend: str) -> str:
    """The sparse path's grouped matmul. Auto: on CPU `hybrid` when experts hold few rows on average (at most
    HYBRID_MAX_MEAN_ROWS, where row blocks waste padding or run as many small matmuls) and `blocks` otherwise;
    on GPU `hybrid` (on an H200 with jax 0.11.2, `ragged_dot` cost twice the every-expert reference at every E,
    and `blocks`' loop over row blocks 8-85x the dense FFN; the hybrid beat `ragged_dot` at every E); on TPU
    `ragged_dot` (not measured here). benchmarks/moiie_layer.py; moiie/README.md has the figures."""
    if self.grouped_matmul != "auto":
      return self.grouped_matmul
    if backend == "tpu":
      return "ragged_dot"
    if backend != "cpu":
      return "hybrid"
    return "hybrid" if assignments / self.num_experts <= HYBRID_MAX_MEAN_ROWS else "blocks"

  def expected_rows(self, assignments: int) -> np.ndarray:
    """float [E]: each expert's rows under uniform routing when `hybrid_vision_fraction` of the assignments come
    from vision tokens: a modality's assignments spread evenly over the experts it can reach, so with MoIIE's
    layout a shared expert expects the rows of both modalities and an intra expert those of one."""
    share = np.zeros(NUM_MODALITIES)
    share[VISION], share[TEXT] = self.hybrid_vision_fraction, 1.0 - self.hybrid_vision_fraction
    reach = self.reach.astype(np.float64)
    return assignments * (share[:, None] * reach / reach.sum(axis=1, keepdims=True)).sum(axis=0)

  def hybrid_sizes(self, assignments: int, num_tokens: int) -> tuple[tuple[int, ...], int]:
    """(capacity rows of each expert, overflow block rows) of the hybrid kernel. Auto: each expert's capacity is
    its expected group (`expected_rows`; the mean group when every expert is shared) rounded up to a multiple of
    8, at most T; overflow blocks of mean / 8 rows, a power of 2 in [16, 64] (an overflowing expert holds a few
    standard deviations, ~sqrt(mean), past its capacity)."""
    factor = self.hybrid_capacity_factor or HYBRID_CAPACITY_FACTOR
    # (- 1e-9: the float sum of the modality shares must not push an exact group, e.g. 64.00000001, up a step)
    capacities = tuple(max(1, min(-(-math.ceil(factor * rows - 1e-9) // 8) * 8, num_tokens))
                       for rows in self.expected_rows(assignments))
    mean = assignments / self.num_experts
    block = self.block_size or int(min(64, max(16, 2 ** int(math.floor(math.log2(max(mean / 8, 1)))))))
    return capacities, block

  def capacity(self, num_tokens: int) -> int:
    """Per-expert slots: ceil(cf * T * k / E), or T when there is no limit (a token uses an expert at most once)."""
    if self.capacity_factor <= 0:
      return num_tokens
    return max(1, min(num_tokens, math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)))


def spec_from_config(moe: ml_collections.ConfigDict) -> MoESpec:
  fields = {f.name for f in dataclasses.fields(MoESpec)}
  return MoESpec(**{k: moe[k] for k in fields})


def validate_moe_config(config: ml_collections.ConfigDict, prefix: str = "moe") -> None:
  """Config-time checks (before anything compiles), each naming the key and the fix."""
  variant = config_lib.check_choice(config, f"{prefix}.variant", tuple(VARIANTS))
  if variant == "dense":
    return
  for key in ("n_vision_intra", "n_inter", "n_text_intra"):
    config_lib.check_positive(config, f"{prefix}.{key}", allow_zero=True)
  config_lib.check_positive(config, f"{prefix}.top_k")
  for key in ("aux_loss_weight", "router_z_loss", "capacity_factor", "router_init_std"):
    config_lib.check_positive(config, f"{prefix}.{key}", allow_zero=True)
  config_lib.check_choice(config, f"{prefix}.path", PATHS)
  config_lib.check_choice(config, f"{prefix}.grouped_matmul", GROUPED_MATMULS)
  config_lib.check_choice(config, f"{prefix}.balance_scope", BALANCE_SCOPES)
  config_lib.check_positive(config, f"{prefix}.block_size", allow_zero=True)
  config_lib.check_positive(config, f"{prefix}.hybrid_capacity_factor", allow_zero=True)
  config_lib.check(config, f"{prefix}.hybrid_vision_fraction", lambda f: 0.0 <= f <= 1.0,
                   "must lie in [0, 1] (a share of the tokens)")
  config_lib.check_positive(config, f"{prefix}.every")
  every = config_lib.get_value(config, f"{prefix}.every")
  config_lib.check(config, f"{prefix}.offset", lambda o: 0 <= o < every, f"must lie in [0, every={every})")
  moe = config_lib.get_value(config, prefix)
  owned = VARIANTS[variant] or {}
  if owned:
    # A named variant writes these keys over the section. Values that are the defaults or some named variant's
    # (a config file's `:vanilla` writes vanilla's, and a later --config.moe.variant flips the variant) are its
    # to overwrite; any other value was set by hand and would be dropped without a word.
    current = {key: moe[key] for key in owned}
    known = [{key: moe_config()[key] for key in owned}] + [dict(v) for v in VARIANTS.values() if v]
    if current not in known:
      differing = [key for key, value in owned.items() if moe[key] != value]
      raise config_lib.ConfigError(
          f"config.{prefix} sets {', '.join(f'{key} = {moe[key]!r}' for key in differing)}, but "
          f"config.{prefix}.variant = {variant!r} writes its own "
          f"{', '.join(f'{key} = {owned[key]!r}' for key in differing)}, which would be used. Fix: pass "
          f"--config.{prefix}.variant=custom to train with the {prefix} section as written, or leave those keys "
          "alone.")
  counts = dict(moe)
  counts.update(VARIANTS[variant] or {})
  reach_v = counts["n_vision_intra"] + counts["n_inter"]
  reach_t = counts["n_text_intra"] + counts["n_inter"]
  if counts["top_k"] > min(reach_v, reach_t):
    lower = f"pass --config.{prefix}.top_k=<at most {min(reach_v, reach_t)}> or " if min(reach_v, reach_t) else ""
    raise config_lib.ConfigError(
        f"config.{prefix}.top_k = {counts['top_k']} but vision tokens reach {reach_v} and text tokens {reach_t} "
        f"experts (intra + inter). Fix: {lower}add experts.")


def check_modality_ids(modality: jax.Array) -> None:
  """Modality ids must be TEXT (0) or VISION (1). Concrete arrays are checked here; traced ones at their source."""
  if not jnp.issubdtype(jnp.asarray(modality).dtype, jnp.integer) and jnp.asarray(modality).dtype != bool:
    raise ValueError(f"modality ids must be integers (0 = text, 1 = vision), got dtype {modality.dtype}.")
  if not isinstance(modality, jax.core.Tracer):
    values = np.asarray(modality)
    if values.size and (values.min() < 0 or values.max() >= NUM_MODALITIES):
      raise ValueError(f"modality ids out of range: found {values.min()}..{values.max()}, valid are 0 (text) and "
                       "1 (vision). Fix: build them with moiie.lvlm.modality_ids(image_mask); mark padding with the "
                       "`valid` mask, not a modality id.")


class Routing(NamedTuple):
  expert: jax.Array  # int32 [T, k], chosen experts (best first)
  weight: jax.Array  # f32 [T, k], renormalised gate weights; 0 for assignments dropped by the capacity limit
  position: jax.Array  # int32 [T, k], slot in the expert's queue (slot-major priority); 0 when nothing needs it
  probs: jax.Array  # f32 [T, E], softmax over reachable experts
  logits: jax.Array  # f32 [T, E], masked router logits


def route(x: jax.Array, router: jax.Array, modality: jax.Array, valid: jax.Array, spec: MoESpec) -> Routing:
  """Routes tokens x [T, D] with router kernels [R, D, E] (R = 2 per-modality routers or 1 shared)."""
  chex.assert_rank(x, 2)
  chex.assert_shape(router, (spec.num_routers, x.shape[1], spec.num_experts))
  chex.assert_shape([modality, valid], (x.shape[0],))
  t, e, k = x.shape[0], spec.num_experts, spec.top_k
  xf = x.astype(jnp.float32)
  if spec.num_routers == 1:
    logits = xf @ router[0].astype(jnp.float32)
  else:  # both routers on every token, then pick: R = 2 makes this cheaper than a gather of kernels
    logits = jnp.where((modality == VISION)[:, None], xf @ router[VISION].astype(jnp.float32),
                       xf @ router[TEXT].astype(jnp.float32))
  reach = jnp.asarray(spec.reach)[modality]  # [T, E]
  logits = jnp.where(reach, logits, _MASKED)
  probs = jax.nn.softmax(logits, axis=-1)
  # top-k on the logits, not the probabilities: a reachable expert whose probability underflows to 0 would tie
  # with the unreachable ones there, and top_k breaks ties toward the lowest index (a vision-intra expert for a
  # text token). The softmax of the k best logits is the renormalised top-k of the probabilities.
  top_logits, expert = jax.lax.top_k(logits, k)
  weight = jax.nn.softmax(top_logits, axis=-1)

  # Queue position of each assignment: first choices of all tokens before second choices (GShard's priority);
  # padding takes no slot, so it never pushes a real token over capacity. Only capacity and einsum dispatch need
  # it (a cumsum over [k*T, E]), so the dropless sparse and reference paths skip it.
  if spec.capacity_factor > 0 or spec.path == "einsum":
    onehot = jax.nn.one_hot(expert.T, e, dtype=jnp.int32) * valid.astype(jnp.int32)[None, :, None]  # [k, T, E]
    ahead = jnp.cumsum(onehot.reshape(k * t, e), axis=0).reshape(k, t, e) - onehot
    position = jnp.sum(ahead * jax.nn.one_hot(expert.T, e, dtype=jnp.int32), axis=-1).T  # [T, k]
  else:
    position = jnp.zeros((t, k), jnp.int32)
  if spec.capacity_factor > 0:
    weight = jnp.where(position < spec.capacity(t), weight, 0.0)
  # Padding gets no expert output in any path (einsum dispatch gives it no slot); its hidden state is never read.
  weight = jnp.where(valid[:, None], weight, 0.0)
  return Routing(expert.astype(jnp.int32), weight, position.astype(jnp.int32), probs, logits)


def load_balance(routing: Routing, group: jax.Array, num_reachable: int, top_k: int) -> tuple[jax.Array, jax.Array]:
  """Mixtral/Switch load-balancing loss over the tokens where `group` [T] is True.

  Returns (N * sum_e f_e P_e, f [E]) with f_e = assignments to e / tokens (sum_e f_e = k) and P_e the mean
  probability; 0 for an empty group. Uniform routing gives k.
  """
  g = group.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(g), 1.0)
  e = routing.probs.shape[-1]
  assigned = jnp.sum(jax.nn.one_hot(routing.expert, e, dtype=jnp.float32), axis=1)  # [T, E], before drops
  f = jnp.sum(assigned * g[:, None], axis=0) / count
  p = jnp.sum(routing.probs * g[:, None], axis=0) / count
  del top_k  # f already sums to k; kept in the signature so callers state what they assume
  return num_reachable * jnp.sum(f * p), f


def aux_losses(routing: Routing, modality: jax.Array, valid: jax.Array, spec: MoESpec) -> dict[str, jax.Array]:
  """Weighted auxiliary loss of one layer plus its parts and the per-modality expert load (for plots)."""
  valid = valid.astype(bool)
  reach_t, reach_v = spec.reachable_counts
  vision = valid & (modality == VISION)
  text = valid & (modality == TEXT)
  lb_v, load_v = load_balance(routing, vision, reach_v, spec.top_k)
  lb_t, load_t = load_balance(routing, text, reach_t, spec.top_k)
  if spec.balance_scope == "all":
    balance, _ = load_balance(routing, valid, spec.num_experts, spec.top_k)
  else:
    balance = lb_v + lb_t
  # z-loss over reachable logits only: the -1e30 fill of unreachable ones must not enter logsumexp's square.
  lse = jax.nn.logsumexp(routing.logits, axis=-1)
  z = jnp.sum(jnp.where(valid, lse ** 2, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  total = spec.aux_loss_weight * balance + spec.router_z_loss * z
  return {"aux_loss": total, "balance_vision": lb_v, "balance_text": lb_t, "z_loss": z,
          "load_vision": load_v, "load_text": load_t}
