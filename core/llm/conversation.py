"""A multi-turn ChatML conversation on top of `generate.chat`, and the loop behind the chat CLI.

The history is resent each turn (no cache reuse across turns); with `truncate_prompt` a long conversation keeps
its system message and as many of its latest whole turns as fit the context window (`generate.chat`).
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections

from core.llm import generate, weights

EXIT_WORDS = ("/exit", "/quit")


class Conversation:
  """Holds the messages so far; `reply(text)` adds the user turn and the model's answer."""

  def __init__(self, pretrained: weights.Pretrained, gen: generate.GenerationConfig, system_prompt: str = ""):
    self.pretrained, self.gen = pretrained, gen
    self.messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    self.rng = jax.random.key(gen.seed)  # split every turn: a sampled reply draws fresh noise each turn

  def reply(self, text: str) -> str:
    self.messages.append({"role": "user", "content": text})
    self.rng, turn_rng = jax.random.split(self.rng)
    answer = generate.chat(self.pretrained, [self.messages], self.gen, rng=turn_rng)[0]
    self.messages.append({"role": "assistant", "content": answer})
    return answer


def from_config(config: ml_collections.ConfigDict) -> Conversation:
  """Loads the model of `config.model` and returns an empty conversation with `config.generation` settings."""
  gen = generate.GenerationConfig.from_dict(dict(config.generation))
  return Conversation(weights.load_from_config(config.model), gen, config.system_prompt)


def run_interactive(conversation: Conversation, read: Callable[[str], str] = input,
                    write: Callable[[str], None] = print) -> int:
  """Reads user turns until EOF or /exit and writes each answer; returns the number of turns."""
  write("Chatting with the model; /exit or Ctrl-D to leave.")
  turns = 0
  while True:
    try:
      text = read("> ").strip()
    except EOFError:
      break
    if text in EXIT_WORDS:
      break
    if not text:
      continue
    write(conversation.reply(text))
    turns += 1
  return turns
