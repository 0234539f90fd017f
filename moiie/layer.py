"""The MoIIE layer (arXiv 2508.09779, sec. 3.2): modality-aware routers over vision-intra, inter and text-intra
SwiGLU experts, replacing the FFN of every other decoder layer.

`moe_ffn(params, x, modality, valid, spec)` is the pure function (jit it, benchmark it); `MoIIELayer` is the NNX
module that holds the parameters and is swapped into a `core.llm` `Block` by `moiie.upcycle`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from moiie import experts, routing
from moiie.routing import MoESpec


def moe_ffn(params: dict, x: jax.Array, modality: jax.Array, valid: jax.Array, spec: MoESpec
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """x [..., D] with modality/valid [...] -> (y [..., D], aux). params: router [R, D, E], gate/up [E, D, F],
  down [E, F, D].

  Modality ids must be 0 (text) or 1 (vision). Traced ids are not checked here: an out-of-range id would take the
  text router with the vision reach mask and count in neither load-balancing group. `MoIIELayer` checks concrete
  ids; `moiie.lvlm.modality_ids(image_mask)` builds valid ones."""
  lead = x.shape[:-1]
  chex.assert_shape([modality, valid], lead)
  xt = x.reshape(-1, x.shape[-1])
  mod = modality.reshape(-1).astype(jnp.int32)
  val = valid.reshape(-1).astype(bool)
  r = routing.route(xt, params["router"], mod, val, spec)
  y = experts.run_experts(xt, r, params["gate"], params["up"], params["down"], spec)
  return y.reshape(*lead, -1).astype(x.dtype), routing.aux_losses(r, mod, val, spec)


class MoIIELayer(nnx.Module):
  """Routers + stacked experts. Built fresh (random experts) or from a dense MLP by `moiie.upcycle`."""

  def __init__(self, spec: MoESpec, hidden_size: int, intermediate_size: int, *, rngs: nnx.Rngs,
               router_init_std: float = 0.02, expert_init_std: float = 0.02, param_dtype=jnp.float32):
    self.spec = spec
    e = spec.num_experts
    normal = lambda std: nnx.initializers.normal(std)  # noqa: E731
    self.router = nnx.Param(normal(router_init_std)(rngs.params(), (spec.num_routers, hidden_size, e), param_dtype))
    self.gate = nnx.Param(normal(expert_init_std)(rngs.params(), (e, hidden_size, intermediate_size), param_dtype))
    self.up = nnx.Param(normal(expert_init_std)(rngs.params(), (e, hidden_size, intermediate_size), param_dtype))
    self.down = nnx.Param(normal(expert_init_std)(rngs.params(), (e, intermediate_size, hidden_size), param_dtype))

  def params(self) -> dict:
    return {"router": self.router.get_value(), "gate": self.gate.get_value(), "up": self.up.get_value(),
            "down": self.down.get_value()}

  def __call__(self, x, modality, valid):
    routing.check_modality_ids(modality)
    return moe_ffn(self.params(), x, modality, valid, self.spec)
