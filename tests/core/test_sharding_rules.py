"""Per-leaf sharding rules of `core.sharding.state_sharding`: first match wins, unmatched leaves keep the FSDP
default, a rule written for a parameter also places the optimizer moments that mirror it, and a rule the mesh
cannot satisfy fails naming the leaf, its shape and the fix.

The rule logic reads only mesh axis names and sizes, so an abstract mesh of 2 x 4 devices is built from the one
real CPU device repeated (never used to place data) and the tests run in-process."""

import re
import warnings

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from core import sharding
from core.train import state as state_lib

EXPERT = r"\['(gate|down)'\]$"


@pytest.fixture(scope="module")
def mesh():
  devices = np.array([jax.devices()[0]] * 8, dtype=object).reshape(2, 4)
  return Mesh(devices, sharding.DATA_AXES)


def specs(tree):
  return jax.tree.map(lambda s: s.spec, tree, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def params():
  return {"moe": {"gate": np.zeros((4, 32, 64), np.float32), "down": np.zeros((4, 64, 32), np.float32),
                  "router": np.zeros((32, 4), np.float32)},
          "embed": np.zeros((64, 32), np.float32)}


def test_no_rules_is_the_fsdp_default(mesh):
  tree = params()
  default = specs(sharding.state_sharding(mesh, tree, fsdp_min_size=1024))
  assert default["moe"]["gate"] == P(None, None, "fsdp")  # the largest divisible dimension: F, not experts
  for empty in (None, ()):
    assert specs(sharding.state_sharding(mesh, tree, fsdp_min_size=1024, rules=empty)) == default


def test_first_match_wins_and_the_rest_keep_the_default(mesh):
  rules = [(EXPERT, P("fsdp")),  # a regex string
           (lambda path, shape: path.endswith("['gate']"), ("data",)),  # never reached for gate: EXPERT is first
           (lambda path, shape: len(shape) == 2 and shape[1] == 4, (None, "fsdp"))]  # a predicate on the shape
  with pytest.warns(UserWarning, match=r"rule #1 .* matched no leaf"):  # shadowed by EXPERT for every leaf it fits
    got = specs(sharding.state_sharding(mesh, params(), fsdp_min_size=1024, rules=rules))
  assert got["moe"]["gate"] == P("fsdp") and got["moe"]["down"] == P("fsdp")
  assert got["moe"]["router"] == P(None, "fsdp")  # 128 elements: below fsdp_min_size, but a rule is explicit
  assert got["embed"] == P("fsdp", None)  # unmatched: the default (2048 elements, largest dim 64)
  # a compiled pattern and a multi-axis dimension work too
  got = specs(sharding.state_sharding(mesh, params(), rules=[(re.compile(r"embed"), (("data", "fsdp"),))]))
  assert got["embed"] == P(("data", "fsdp")) and got["moe"]["gate"] == P()


def test_adam_moments_follow_their_parameter(mesh):
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  p = params()
  state = state_lib.TrainState(step=np.zeros((), np.int32), params=p, opt_state=tx.init(p), model_state={})
  paths = {jax.tree_util.keystr(k): s.spec for k, s in jax.tree_util.tree_leaves_with_path(
      sharding.state_sharding(mesh, state, fsdp_min_size=1 << 30, rules=[(EXPERT, P("fsdp"))]),
      is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))}
  expert = {k: v for k, v in paths.items() if re.search(EXPERT, k)}
  assert len(expert) == 6  # gate and down: the parameter, mu and nu
  assert {k.split("[")[0] for k in expert} == {".params", ".opt_state"}
  assert all(v == P("fsdp") for v in expert.values())
  assert all(v == P() for k, v in paths.items() if k not in expert)  # everything else below fsdp_min_size


@pytest.mark.parametrize("spec, message", [
    (P("expert"), r"\['moe'\]\['gate'\] \(shape \(4, 32, 64\)\).*mesh axis 'expert'.*axes: data, fsdp.*Fix"),
    (P(None, None, None, "fsdp"), r"\['moe'\]\['gate'\] \(shape \(4, 32, 64\)\).*4 dimension entries.*Fix"),
    (P(("fsdp", "data")), r"\['moe'\]\['gate'\] \(shape \(4, 32, 64\)\).*fsdp x data = 8 devices, which does not "
                          r"divide 4\. Fix: use a mesh whose fsdp x data size divides 4"),
    (P("fsdp", "fsdp"), r"uses mesh axis 'fsdp' for two dimensions"),
])
def test_bad_rules_name_the_leaf_and_the_fix(mesh, spec, message):
  with pytest.raises(ValueError, match=message):
    sharding.state_sharding(mesh, params(), rules=[(r"\['gate'\]", spec)])


def test_malformed_rules(mesh):
  with pytest.raises(TypeError, match="expected a pair"):
    sharding.state_sharding(mesh, params(), rules=[r"gate"])
  with pytest.raises(TypeError, match="expected a PartitionSpec"):
    sharding.state_sharding(mesh, params(), rules=[(r"gate", "fsdp")])
  with pytest.raises(TypeError, match="expected a regex string"):
    sharding.state_sharding(mesh, params(), rules=[(3, P("fsdp"))])
  with pytest.raises(ValueError, match=r"P.UNCONSTRAINED .* Fix: None to keep that dimension whole"):
    sharding.state_sharding(mesh, params(), rules=[(r"gate", P(P.UNCONSTRAINED))])


def test_a_large_leaf_the_default_cannot_split_warns(mesh):
  tree = {"odd": np.zeros((33, 35), np.float32), "even": np.zeros((32, 36), np.float32),
          "small": np.zeros((3, 5), np.float32)}
  with pytest.warns(UserWarning, match=r"1 leaf/leaves .* fsdp = 4 \(\['odd'\] \(33, 35\)\)\. Fix"):
    got = specs(sharding.state_sharding(mesh, tree, fsdp_min_size=1024))
  assert got == {"odd": P(), "even": P(None, "fsdp"), "small": P()}  # the largest dimension that divides
  # a rule that keeps the leaf whole says so on purpose: no warning
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    sharding.state_sharding(mesh, tree, fsdp_min_size=1024, rules=[(r"odd", P())])


def test_a_rule_that_matches_no_leaf_warns_with_a_real_path(mesh):
  """NNX state paths end in `.value`, so a `$`-anchored pattern written for plain dicts places nothing."""
  wrapped = jax.tree.map(lambda x: {"value": x}, params())  # stands in for the `.value` suffix of NNX paths
  with pytest.warns(UserWarning, match=r"rule #0 \(.*\) matched no leaf.*leaf paths look like \"\['embed'\]\['value'\]\""):
    got = specs(sharding.state_sharding(mesh, wrapped, fsdp_min_size=1 << 30, rules=[(EXPERT, P("fsdp"))]))
  assert got["moe"]["gate"]["value"] == P()  # fell back to the default
