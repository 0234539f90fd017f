"""The chat CLI's library side: config file, multi-turn conversation, interactive loop."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from core.llm import conversation, generate, weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _chat_config(variant):
  spec = importlib.util.spec_from_file_location("chat_config", os.path.join(REPO, "configs/llm/chat.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_chat_config_variants():
  exact, fast = _chat_config("exact"), _chat_config("fast")
  assert exact.model.weight_format == "float" and fast.model.activation_format == "bfloat16"
  generate.GenerationConfig.from_dict(dict(exact.generation))  # every key is a GenerationConfig field
  with pytest.raises(ValueError, match="unknown variant"):
    _chat_config("turbo")
  bad = exact.model.to_dict()
  bad["wieght_format"] = "int8"
  with pytest.raises(weights.WeightsError, match="unknown model config key"):
    weights.load_from_config(bad)


def test_interactive_conversation(smollm, monkeypatch):
  """Each turn resends the whole dialogue: the second turn's prompt is, token for token, the ChatML of the first
  question, the first reply and the second question, in that order (written out here by hand)."""
  prompts = []
  real_generate = generate.generate

  def recording_generate(graphdef, state, config, batch, gen, **kw):
    prompts.extend(list(p) for p in batch)
    return real_generate(graphdef, state, config, batch, gen, **kw)

  monkeypatch.setattr(generate, "generate", recording_generate)
  gen = generate.GenerationConfig(max_new_tokens=24, batch_buckets=(1,), prompt_buckets=(64, 128),
                                  new_token_buckets=(24,))
  chat = conversation.Conversation(smollm, gen)
  inputs = iter(["What is the capital of France?", "", "/exit", "never read"])
  written = []
  turns = conversation.run_interactive(chat, read=lambda prompt: next(inputs), write=written.append)
  assert turns == 1 and "Paris" in written[-1]
  assert [m["role"] for m in chat.messages] == ["user", "assistant"]
  first = written[-1]
  second = chat.reply("And of Italy? Answer with the city name only.")
  assert [m["role"] for m in chat.messages] == ["user", "assistant"] * 2 and second
  assert [m["content"] for m in chat.messages] == ["What is the capital of France?", first,
                                                   "And of Italy? Answer with the city name only.", second]
  tok = smollm.tokenizer
  system = "" if tok.default_system is None else f"<|im_start|>system\n{tok.default_system}<|im_end|>\n"
  turn_one = system + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
  turn_two = (turn_one + f"{first}<|im_end|>\n"
              "<|im_start|>user\nAnd of Italy? Answer with the city name only.<|im_end|>\n<|im_start|>assistant\n")
  assert len(prompts) == 2
  assert tok.decode(prompts[0], skip_special_tokens=False) == turn_one
  assert tok.decode(prompts[1], skip_special_tokens=False) == turn_two
  assert prompts[1] == tok.encode(turn_two)


def test_each_turn_samples_with_a_fresh_key(monkeypatch):
  """With temperature > 0 a conversation must not replay the same sampling noise every turn."""
  keys = []
  monkeypatch.setattr(generate, "chat", lambda pretrained, conversations, gen, rng=None: keys.append(rng) or ["ok"])
  chat = conversation.Conversation(None, generate.GenerationConfig(temperature=1.0, seed=3))
  chat.reply("one")
  chat.reply("two")
  again = conversation.Conversation(None, generate.GenerationConfig(temperature=1.0, seed=3))
  again.reply("one")
  data = [np.asarray(jax.random.key_data(k)) for k in keys]
  assert not np.array_equal(data[0], data[1])  # fresh noise each turn
  np.testing.assert_array_equal(data[0], data[2])  # and reproducible from the seed


@pytest.mark.parametrize("argv,message", [
    (["--config.generation.temperatur=0.5"], "Did you mean 'temperature'"),
    (["--config", "configs/llm/nosuch.py"], "does not exist"),
    (["--config.generation.top_p=2"], r"config.generation: top_p must be in \(0, 1\].*Fix"),
    (["--config.generation.max_new_tokens=0"], "max_new_tokens must be >= 1"),
    (["--config.model.dtype=float8"], r"config.model: LlamaConfig.dtype='float8' is not one of.*Fix"),
    (["--config.model.source=/no/such/model.gguf"], "the path does not exist"),
    (["--prompt"], "--prompt needs a value"),
    (["--config.generation.temperature=nan"], "temperature must be a finite number >= 0"),
    (["--config.model.weight_format=int4", "--config.model.quant_group_size=0"], "quant_group_size"),
    # the bundled model's widths (576, 1536) are known before it loads: 100 packs neither
    (["--config.model.weight_format=int4", "--config.model.quant_group_size=100"],
     r"config.model: int4 storage packs groups of quant_group_size=100 .*Fix: pick a quant_group_size"),
])
def test_chat_cli_bad_input_is_one_line_before_any_weights_load(argv, message, capsys, monkeypatch):
  from core.llm import chat
  monkeypatch.setattr(weights, "load_from_config", lambda *a: pytest.fail("weights loaded before validation"))
  with pytest.raises(SystemExit) as exit_info:
    chat.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("config error:") and len(err.strip().splitlines()) == 1
  assert __import__("re").search(message, err), err


def test_chat_cli_takes_the_prompt_and_defaults_the_config():
  from core.llm import chat
  prompt, args = chat._split_prompt(["--prompt=Hi there", "--config.generation.temperature=0.7"])
  assert prompt == "Hi there" and args == ["--config", chat.DEFAULT_CONFIG, "--config.generation.temperature=0.7"]
  prompt, args = chat._split_prompt(["--config", "configs/llm/chat.py:fast", "--prompt", "Hello"])
  assert prompt == "Hello" and args == ["--config", "configs/llm/chat.py:fast"]


def test_chat_validation_judges_int4_groups_by_the_model_that_will_load():
  # 48 packs SmolLM2-135M's widths (576, 1536: multiples of 96) but not the 64-wide test model's: validation, before
  # any weights load, judges the bundled model by its own widths (and leaves another source's to its loading)
  from core.llm import chat
  from core.llm import config as llm_config
  config = _chat_config("exact")
  config.model.weight_format, config.model.quant_group_size = "int4", 48
  llm_config.smollm2_135m(weight_format="int4", quant_group_size=48)  # valid for the real model
  chat.validate_chat_config(config)
  config.model.source, config.model.quant_group_size = "configs", 100  # any existing path: widths unknown here
  chat.validate_chat_config(config)
  with pytest.raises(ValueError, match="not multiples of 96"):
    llm_config.tiny(weight_format="int4", quant_group_size=48)  # what the old check compared against


def test_a_long_conversation_loses_whole_old_turns_not_its_system_message(smollm, monkeypatch):
  # token-level truncation cut the system message and an old turn mid-way; whole oldest turns go instead
  prompts = []
  real_generate = generate.generate
  monkeypatch.setattr(generate, "generate", lambda g, s, c, batch, gen, **kw: (
      prompts.extend(list(p) for p in batch), real_generate(g, s, c, batch, gen, **kw))[1])
  tok = smollm.tokenizer
  messages = [{"role": "system", "content": "Answer in one word."}]
  for i in range(40):  # far more than the 160-token window below holds
    messages += [{"role": "user", "content": f"Question number {i}: what is {i} plus one?"},
                 {"role": "assistant", "content": f"{i + 1}"}]
  messages.append({"role": "user", "content": "And what is the capital of France?"})
  small = smollm.__class__(config=smollm.config.replace(max_seq_len=160), graphdef=smollm.graphdef,
                           state=smollm.state, tokenizer=tok, source=smollm.source)
  gen = generate.GenerationConfig(max_new_tokens=8, batch_buckets=(1,), prompt_buckets=(160,),
                                  new_token_buckets=(8,), truncate_prompt=True)
  generate.chat(small, [messages], gen)
  text = tok.decode(prompts[0], skip_special_tokens=False)
  assert len(prompts[0]) <= 152
  assert text.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\nQuestion number ")
  assert text.endswith("<|im_start|>user\nAnd what is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
  assert "Question number 39" in text and "Question number 0:" not in text
  assert prompts[0] == tok.encode_chat(messages[:1] + messages[-1 - 2 * text.count("Question number "):])
