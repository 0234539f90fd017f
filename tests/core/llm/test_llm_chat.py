"""The chat CLI's library side: config file, multi-turn conversation, interactive loop."""

import importlib.util
import os

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


def test_interactive_conversation(smollm):
  gen = generate.GenerationConfig(max_new_tokens=24, batch_buckets=(1,), prompt_buckets=(64, 128),
                                  new_token_buckets=(24,))
  chat = conversation.Conversation(smollm, gen)
  inputs = iter(["What is the capital of France?", "", "/exit", "never read"])
  written = []
  turns = conversation.run_interactive(chat, read=lambda prompt: next(inputs), write=written.append)
  assert turns == 1 and "Paris" in written[-1]
  assert [m["role"] for m in chat.messages] == ["user", "assistant"]
  second = chat.reply("And of Italy? Answer with the city name only.")
  assert len(chat.messages) == 4 and second
