"""The chat models the VehicleWorld and tool-environment evaluations share: the `core.llm` model named by an
evaluation config's `llm` block (`source`, `generation`), and any OpenAI-compatible `/chat/completions` endpoint
named by its `http` block (vLLM, llama.cpp server, a hosted API: for users with real models)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import ml_collections

from core.config import section


class ChatModel:

  def __init__(self, config: ml_collections.ConfigDict):
    from core.llm import generate, weights  # heavy: loads JAX and the weights only when a model policy is used
    self._generate = generate
    self.pretrained = weights.load_pretrained(config.source or None)
    self.gen = generate.GenerationConfig.from_dict(dict(config.generation))
    self._rng = None  # made on the first sampled reply, from the generation seed

  @property
  def tokenizer(self):
    return self.pretrained.tokenizer

  def reply(self, messages: Sequence[Mapping[str, str]]) -> str:
    rng = None
    if self.gen.temperature > 0:
      # A fresh key per reply: `generate` without one draws from the seed's key, the same noise every turn.
      import jax
      if self._rng is None:
        self._rng = jax.random.key(self.gen.seed)
      self._rng, rng = jax.random.split(self._rng)
    return self._generate.chat(self.pretrained, [list(messages)], self.gen, rng=rng)[0]


def http_policy_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `http` block: endpoint URL (`.../v1`), model name, the environment variable holding the API key (never
  the key itself), and the request settings."""
  return section("http", dict(url="", model="", api_key_env="OPENAI_API_KEY", timeout_s=120.0, max_tokens=512,
                              temperature=0.0, retries=3, backoff_s=1.0), overrides)


@dataclasses.dataclass
class EndpointReply:
  text: str
  usage: dict[str, int]  # what the endpoint reported (prompt_tokens, completion_tokens), possibly empty


_RETRY_STATUS = (429, 500, 502, 503, 504)


class ChatEndpoint:
  """An OpenAI-compatible chat endpoint. Transient failures (connection errors, 429 and 5xx) are retried with
  exponential backoff; other HTTP errors and exhausted retries raise RuntimeError naming the URL."""

  def __init__(self, config: ml_collections.ConfigDict):
    import httpx
    if not config.url:
      raise ValueError("http.url is empty. Fix: --config.http.url=http://host:port/v1 (an OpenAI-compatible "
                       "endpoint).")
    headers = {}
    key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
    if key:
      headers["Authorization"] = f"Bearer {key}"
    self.config = config
    self._httpx = httpx
    self._client = httpx.Client(base_url=config.url.rstrip("/"), headers=headers,
                                timeout=httpx.Timeout(config.timeout_s))

  def complete(self, messages: Sequence[Mapping[str, str]]) -> EndpointReply:
    httpx = self._httpx
    body = {"model": self.config.model, "messages": [dict(m) for m in messages],
            "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
    last_error: Exception | None = None
    for attempt in range(self.config.retries + 1):
      try:
        response = self._client.post("/chat/completions", json=body)
        if response.status_code in _RETRY_STATUS:
          raise httpx.HTTPStatusError(f"status {response.status_code}", request=response.request,
                                      response=response)
        response.raise_for_status()
        data = response.json()
        try:
          text = data["choices"][0]["message"].get("content") or ""
          usage = dict(data.get("usage") or {})
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:  # {"choices": []}, null, ...
          raise ValueError(f"the reply is not a chat completion ({type(e).__name__}: {e}): "
                           f"{response.text[:200]}") from e
        return EndpointReply(text, usage)
      except (httpx.HTTPError, ValueError) as e:
        last_error = e
        if isinstance(e, httpx.HTTPStatusError) and e.response.status_code not in _RETRY_STATUS:
          break
        if attempt < self.config.retries:  # no wait after the last attempt: nothing follows it
          time.sleep(self.config.backoff_s * (2 ** attempt))
    raise RuntimeError(f"chat endpoint {self.config.url} failed: {last_error}")

  def close(self) -> None:
    self._client.close()
