"""Long-context RoPE scaling (linear and Llama-3.1 'llama3'): divisors by hand and against transformers, logits of
a scaled tiny model against transformers' LlamaForCausalLM, and the GGUF / config.json / export paths."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from core.llm import config as config_lib
from core.llm import weights
from llm_fixtures import jit_forward, random_tensors, write_tiny_gguf

LLAMA3 = dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
              rope_original_max_seq_len=8192)


def test_llama3_divisors_by_hand():
  config = config_lib.llama31_8b()
  divisors = np.asarray(config.rope_frequency_divisors())
  assert divisors.shape == (64,)
  freq = 500000.0 ** (-np.arange(0, 128, 2) / 128)
  wavelength = 2 * math.pi / freq
  high = wavelength < 8192 / 4  # short wavelengths: kept
  low = wavelength > 8192 / 1  # long wavelengths: divided by the factor
  np.testing.assert_allclose(divisors[high], 1.0)
  np.testing.assert_allclose(divisors[low], 8.0)
  middle = np.flatnonzero(~high & ~low)
  assert middle.size > 0
  i = middle[0]
  s = (8192 / wavelength[i] - 1.0) / (4.0 - 1.0)
  np.testing.assert_allclose(1.0 / divisors[i], (1 - s) / 8.0 + s, rtol=1e-12)
  assert np.all(np.diff(divisors) >= 0)  # longer wavelength, larger stretch


def test_linear_scaling_divides_every_frequency():
  config = config_lib.tiny(rope_scaling="linear", rope_scaling_factor=4.0)
  assert config.rope_frequency_divisors() == (4.0,) * (config.head_size // 2)
  assert config_lib.tiny().rope_frequency_divisors() is None


@pytest.mark.parametrize("changes,match", [
    (dict(rope_scaling="yarn"), "not one of"),
    (dict(rope_scaling="linear", rope_scaling_factor=0.5), ">= 1"),
    (dict(rope_scaling="llama3", rope_low_freq_factor=4.0, rope_high_freq_factor=1.0), "low_freq_factor"),
    (dict(rope_scaling="factors", rope_freq_factors=(1.0, 2.0)), "head_dim/2"),
    (dict(rope_freq_factors=(1.0,) * 8), "rope_scaling='factors'"),
])
def test_bad_rope_scaling_configs(changes, match):
  with pytest.raises(ValueError, match=match):
    config_lib.tiny(**changes)


def test_llama3_divisors_match_transformers():
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  from transformers.modeling_rope_utils import _compute_llama3_parameters
  hf_config = transformers.LlamaConfig(
      hidden_size=4096, num_attention_heads=32, head_dim=128, max_position_embeddings=131072, rope_theta=500000.0,
      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192})
  inv_freq, attention_factor = _compute_llama3_parameters(hf_config, "cpu")
  assert attention_factor == 1.0
  ours = 500000.0 ** (-np.arange(0, 128, 2) / 128) / np.asarray(config_lib.llama31_8b().rope_frequency_divisors())
  np.testing.assert_allclose(ours, inv_freq.numpy(), rtol=1e-5)


def _logits(model, tokens):
  mask = jnp.ones(tokens.shape, bool)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(jit_forward(*__import__("flax").nnx.split(model), tokens, positions, mask)[0])


@pytest.mark.parametrize("scaling", [dict(rope_scaling="linear", rope_scaling_factor=4.0),
                                     dict(LLAMA3, rope_original_max_seq_len=16, rope_scaling_factor=4.0)])
def test_scaled_tiny_model_matches_transformers(tmp_path, scaling):
  """Export a scaled tiny model, load it with transformers, compare logits past the original context."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = config_lib.tiny(rope_theta=500.0, **scaling)  # small base: the middle band exists at head_dim 16
  model = weights.from_tensors(config, random_tensors(config).items(), source="random")
  weights.save_pretrained(model, tmp_path)
  back = weights.load_model(tmp_path)[0]
  assert back.config.rope_frequency_divisors() == config.rope_frequency_divisors()
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (1, 48)).astype(np.int32)
  ours = _logits(model, jnp.asarray(tokens))
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens.astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=2e-4 * np.abs(theirs).max())
  unscaled = weights.from_tensors(config_lib.tiny(rope_theta=500.0), random_tensors(config).items(), source="r")
  assert np.abs(_logits(unscaled, jnp.asarray(tokens)) - ours).max() > 1e-2  # the scaling changes the model


def test_gguf_rope_freqs_become_llama3_or_factors(tmp_path):
  base = config_lib.tiny(rope_theta=500000.0, hidden_size=512)  # head_dim 128, as Llama-3
  llama3 = base.replace(**LLAMA3)
  tensors = random_tensors(base)
  path = write_tiny_gguf(tmp_path / "llama3.gguf", base, tensors, rope_freqs=llama3.rope_frequency_divisors())
  model, _ = weights.load_model(path)
  assert model.config.rope_scaling == "llama3" and model.config.rope_scaling_factor == 8.0
  odd = np.linspace(1.0, 3.0, base.head_size // 2)
  path = write_tiny_gguf(tmp_path / "odd.gguf", base, tensors, rope_freqs=odd)
  model, _ = weights.load_model(path)
  assert model.config.rope_scaling == "factors"
  np.testing.assert_allclose(model.config.rope_frequency_divisors(), odd, rtol=1e-6)
  with pytest.raises(weights.WeightsError, match="no Hugging Face"):
    weights.save_pretrained(model, tmp_path / "export")
  assert not list((tmp_path / "export").glob("*"))  # the config is checked before any tensor is written
  path = write_tiny_gguf(tmp_path / "linear.gguf", base, tensors, linear_rope_factor=2.0)
  assert weights.load_model(path)[0].config.rope_scaling_factor == 2.0


def test_sliding_window_attention_is_refused_not_ignored():
  """Attention here is full-context: a Mistral-7B-v0.1-style window would give other logits past it."""
  hf = weights.config_to_hf(config_lib.tiny())
  for window_keys in ({"model_type": "mistral", "sliding_window": 4},
                      {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 4}):
    with pytest.raises(weights.WeightsError, match=r"sliding-window attention \(window 4 < 128"):
      weights.config_from_hf({**hf, **window_keys})
  weights.config_from_hf({**hf, "model_type": "mistral", "sliding_window": None})
  weights.config_from_hf({**hf, "model_type": "qwen2", "use_sliding_window": False, "sliding_window": 4})


def test_biases_the_decoder_has_no_place_for_are_refused():
  hf = weights.config_to_hf(config_lib.tiny())
  for keys, named in (({"attention_bias": True}, "attention_bias = true .*q/k/v/o_proj"),
                      ({"mlp_bias": True}, r"mlp_bias = true \(llama: biases on the MLP\)")):
    with pytest.raises(weights.WeightsError, match=named):
      weights.config_from_hf({**hf, **keys})
  assert not weights.config_from_hf(hf).qkv_bias
  qwen = weights.config_to_hf(config_lib.tiny().replace(qkv_bias=True))
  assert qwen["model_type"] == "qwen2" and weights.config_from_hf(qwen).qkv_bias


def test_config_json_rope_scaling(tmp_path):
  hf = weights.config_to_hf(config_lib.llama31_8b())
  assert hf["rope_scaling"]["rope_type"] == "llama3"
  assert weights.config_from_hf(json.loads(json.dumps(hf))) == config_lib.llama31_8b()
  hf["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
  with pytest.raises(weights.WeightsError, match="'yarn'"):
    weights.config_from_hf(hf)
  hf["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}
  with pytest.raises(weights.WeightsError, match="low_freq_factor"):
    weights.config_from_hf(hf)
