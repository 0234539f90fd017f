"""The `core.llm` model named by an evaluation config's `llm` block (`source`, `generation`) answering chat
messages: the model policy the VehicleWorld and tool-environment evaluations share."""

from __future__ import annotations

from typing import Mapping, Sequence

import ml_collections


class ChatModel:

  def __init__(self, config: ml_collections.ConfigDict):
    from core.llm import generate, weights  # heavy: loads JAX and the weights only when a model policy is used
    self._generate = generate
    self.pretrained = weights.load_pretrained(config.source or None)
    self.gen = generate.GenerationConfig.from_dict(dict(config.generation))

  @property
  def tokenizer(self):
    return self.pretrained.tokenizer

  def reply(self, messages: Sequence[Mapping[str, str]]) -> str:
    return self._generate.chat(self.pretrained, [list(messages)], self.gen)[0]
