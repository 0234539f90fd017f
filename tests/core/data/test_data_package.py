"""`core.data` exports its loaders lazily: every exported name resolves, and a light user (the search
environment's server, which reads WordNet through `core.data.wordnet`) does not import jax or grain."""

import subprocess
import sys

import pytest

import core.data


def test_every_exported_name_resolves_to_its_submodule():
  assert len(core.data.__all__) == 28
  for name in core.data.__all__:
    value = getattr(core.data, name)
    assert getattr(value, "__module__", None) in (None, "builtins") or value.__module__.startswith("core.data."), name
  from core.data import DataSourceMissingError, errors, load_fashion_mnist, make_batches
  from core.data.images import load_fashion_mnist as defined
  assert DataSourceMissingError is errors.DataSourceMissingError and load_fashion_mnist is defined
  assert make_batches.__module__ == "core.data.pipeline"
  with pytest.raises(AttributeError, match="has no attribute 'load_nothing'"):
    core.data.load_nothing  # noqa: B018


def test_wordnet_users_stay_free_of_jax():
  code = ("import sys, core.data.wordnet, agents.envs.wordnet, agents.envs.search; "
          "print(sorted(m for m in ('jax', 'grain', 'flax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out
