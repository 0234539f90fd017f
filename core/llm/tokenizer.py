"""Byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2's byte-level variant) and the ChatML chat format.

Built with Hugging Face `tokenizers` either from a `tokenizer.json` or from GGUF metadata
(`tokenizer.ggml.tokens/merges/token_type`): a BPE model, a pre-tokenizer that splits digits one by one and then
applies GPT-2's byte-level regex split, a byte-level decoder, and the tokens of GGUF type 3 (control) registered as
special tokens so that `<|im_start|>` etc. encode to one id and are skipped on decode.

Chat format (ChatML): each message is `<|im_start|>{role}\n{content}<|im_end|>\n`; a generation prompt appends
`<|im_start|>assistant\n`. SmolLM2's GGUF template inserts a default system message when the conversation does
not start with one; `default_system` carries it (read from the GGUF template). Message content is text: only the
template's own `<|im_start|>`/`<|im_end|>` are encoded as special ids (`encode_chat`), so that untrusted content
(an environment's observation, a tool's output) cannot open or close a turn.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

_CONTROL_TOKEN_TYPE = 3  # llama.cpp LLAMA_TOKEN_TYPE_CONTROL
SUPPORTED_GGUF_PRE_TOKENIZERS = ("smollm",)  # llama.cpp's `tokenizer.ggml.pre` names
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# The two ways ChatML templates insert a default system prompt: SmolLM2's `if messages[0]['role'] != 'system'`
# block, and Qwen2.5's `if messages[0]['role'] == 'system' ... else` branch (whose tools branch, first, writes the
# prompt without the ChatML header, so the search runs on to the branch that has it).
# The newline after "system" is a real one in some templates' sources and a jinja escape (backslash, n) in others.
_DEFAULT_SYSTEM_RES = (
    re.compile(r"messages\[0\]\['role'\] != 'system'.*?<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.S),
    re.compile(r"messages\[0\]\['role'\] == 'system'.*?else\s*-?%\}\s*\{\{-?\s*"
               r"'<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.S),
)


class TokenizerError(ValueError):
  """The tokenizer files are missing or malformed, or a chat message is malformed."""
  names_its_fix = True  # an entrypoint prints it as one line (core.entrypoint.run)


def default_system_from_template(template: str | None) -> str | None:
  """The system prompt a ChatML jinja template inserts when none is given (None when it inserts none)."""
  if not template:
    return None
  for pattern in _DEFAULT_SYSTEM_RES:
    match = pattern.search(template)
    if match:
      return match.group(1)
  return None


@dataclasses.dataclass(frozen=True)
class ChatPiece:
  """A piece of ChatML text: one of the template's own tokens (`special`: `<|im_start|>` or `<|im_end|>`, encoded
  as its single id) or the text between them (encoded with special-token strings read as plain characters)."""
  text: str
  special: bool = False
  role: str | None = None  # set on a message's "{role}\n{content}" piece
  content_start: int = 0  # where the content starts in `text`


class Tokenizer:
  """Text <-> token ids, special ids, and the ChatML chat format."""

  def __init__(self, hf_tokenizer, *, eos_token: str | None, bos_token: str | None = None,
               pad_token: str | None = None, chat_template: str | None = None,
               default_system: str | None = None, add_bos: bool = False):
    self.hf = hf_tokenizer
    self._literal_hf = None  # `encode(..., special_tokens=False)`'s copy of `hf`, made on first use
    self.chat_template = chat_template
    self.default_system = default_system
    self.eos_token, self.bos_token, self.pad_token = eos_token, bos_token, pad_token
    self.eos_id = self._id(eos_token)
    self.bos_id = self._id(bos_token)
    # Models trained with a beginning-of-sequence token before every text (Llama, Mistral) need it at the start of
    # each prompt; SmolLM2 and Qwen have none. `encode` never adds it (it also encodes pieces of a sequence).
    self.add_bos = bool(add_bos) and self.bos_id is not None
    self.start_ids = [self.bos_id] if self.add_bos else []
    self.pad_id = self._id(pad_token) if pad_token else self.eos_id
    self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
    # Generation stops at the end-of-turn marker as well as at end-of-text.
    stops = [self.eos_id] + [self.hf.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    self.stop_ids = tuple(sorted({i for i in stops if i is not None}))

  def _id(self, token: str | None) -> int | None:
    if token is None:
      return None
    idx = self.hf.token_to_id(token)
    if idx is None:
      raise TokenizerError(f"special token {token!r} is not in the vocabulary.")
    return idx

  # -- construction ------------------------------------------------------------------------------------------

  @classmethod
  def from_gguf(cls, path: str) -> "Tokenizer":
    from core.llm.weights import open_gguf
    return cls.from_gguf_reader(open_gguf(path))

  @classmethod
  def from_gguf_reader(cls, reader) -> "Tokenizer":
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    from core.llm.weights import gguf_field

    model = gguf_field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
      raise TokenizerError(f"GGUF tokenizer model {model!r} is not supported (only byte-level BPE, 'gpt2').")
    # The pre-tokenizer rebuilt below is SmolLM2's (single digits, then GPT-2's byte-level regex). Other
    # families split text differently (Llama 3 groups up to 3 digits, Qwen2 has its own regex) and would get
    # token ids their model never saw, so they must bring their tokenizer.json.
    pre = gguf_field(reader, "tokenizer.ggml.pre")
    if pre not in SUPPORTED_GGUF_PRE_TOKENIZERS:
      raise TokenizerError(f"GGUF pre-tokenizer {pre!r} is not supported (only {SUPPORTED_GGUF_PRE_TOKENIZERS}). "
                           "Fix: load the model from a Hugging Face folder with its tokenizer.json.")
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    merges = gguf_field(reader, "tokenizer.ggml.merges")
    types = gguf_field(reader, "tokenizer.ggml.token_type")
    if not tokens or merges is None:
      raise TokenizerError("GGUF metadata lacks tokenizer.ggml.tokens/merges: no tokenizer in this file. Fix: "
                           "pass a tokenizer.json.")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    try:
      bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False,
                       byte_fallback=False)
    except Exception as e:
      raise TokenizerError(f"the GGUF tokenizer metadata is inconsistent ({e}). Fix: re-create the GGUF file or "
                           "pass a tokenizer.json.") from e
    hf = HFTokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    hf.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i, t in enumerate(types or []) if t == _CONTROL_TOKEN_TYPE]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    def token_of(key):
      idx = gguf_field(reader, key)
      return tokens[int(idx)] if idx is not None else None

    template = gguf_field(reader, "tokenizer.chat_template")
    return cls(hf, eos_token=token_of("tokenizer.ggml.eos_token_id"),
               bos_token=token_of("tokenizer.ggml.bos_token_id"),
               pad_token=token_of("tokenizer.ggml.padding_token_id"), chat_template=template,
               default_system=default_system_from_template(template),
               add_bos=bool(gguf_field(reader, "tokenizer.ggml.add_bos_token", False)))

  @classmethod
  def word_level(cls, texts: Iterable[str]) -> "Tokenizer":
    """A small ChatML word-level tokenizer over the words and punctuation runs of `texts`.

    For policies trained from scratch on one environment's closed vocabulary (tests, CPU-scale RL): a vocabulary
    of a few hundred words instead of ~50k BPE pieces makes the LM head and the exploration space small. Text
    splits on whitespace and punctuation; unknown words become `[UNK]`; decoding joins words with spaces.
    """
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, models, pre_tokenizers

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({w for text in texts for w, _ in split(text)} | {"system", "user", "assistant"})
    specials = list(CHATML_SPECIAL_TOKENS) + ["<pad>", "[UNK]"]
    vocab = {t: i for i, t in enumerate(specials + [w for w in words if w not in specials])}
    hf = HFTokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return cls(hf, eos_token="<|im_end|>", pad_token="<pad>")

  @classmethod
  def from_directory(cls, directory: str | os.PathLike) -> "Tokenizer":
    """From `tokenizer.json` (+ optional `tokenizer_config.json` for special tokens and the chat template)."""
    directory = Path(directory)
    config_path = directory / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_path.is_file():
      try:
        config = json.loads(config_path.read_text())
      except json.JSONDecodeError as e:
        raise TokenizerError(f"{config_path} is not valid JSON ({e}).") from e
    template_path = directory / "chat_template.jinja"  # where transformers >= 4.50 saves the template
    if not config.get("chat_template") and template_path.is_file():
      config = {**config, "chat_template": template_path.read_text()}
    return cls.from_file(directory / "tokenizer.json", **_special_tokens(config))

  @classmethod
  def from_file(cls, path: str | os.PathLike, *, eos_token: str | None = None, bos_token: str | None = None,
                pad_token: str | None = None, chat_template: str | None = None,
                add_bos: bool | None = None) -> "Tokenizer":
    """`add_bos` None: as the file's post-processor does (a Llama tokenizer.json prepends `<|begin_of_text|>`)."""
    from tokenizers import Tokenizer as HFTokenizer

    if not os.path.isfile(path):
      raise TokenizerError(f"tokenizer file {os.fspath(path)!r} does not exist. Fix: pass a tokenizer.json.")
    try:
      hf = HFTokenizer.from_file(os.fspath(path))
    except Exception as e:
      raise TokenizerError(f"cannot parse {os.fspath(path)!r} as a tokenizers JSON file: {e}") from e
    if eos_token is None:
      eos_token = next((t for t in ("<|im_end|>", "<|endoftext|>", "</s>") if hf.token_to_id(t) is not None), None)
    if add_bos is None:  # what the file's own post-processor does: adds a BOS before the text or not
      bos_id = hf.token_to_id(bos_token) if bos_token else None
      added, plain = (hf.encode("a", add_special_tokens=flag).ids[:1] for flag in (True, False))
      add_bos = bos_id is not None and added == [bos_id] and plain != [bos_id]
    return cls(hf, eos_token=eos_token, bos_token=bos_token, pad_token=pad_token, chat_template=chat_template,
               default_system=default_system_from_template(chat_template), add_bos=add_bos)

  def save(self, directory: str | os.PathLike) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self.hf.save(str(directory / "tokenizer.json"))
    config = {"eos_token": self.eos_token, "bos_token": self.bos_token, "pad_token": self.pad_token,
              "chat_template": self.chat_template, "tokenizer_class": "PreTrainedTokenizerFast",
              "add_bos_token": self.add_bos, "clean_up_tokenization_spaces": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))

  # -- text <-> ids -----------------------------------------------------------------------------------------

  def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
    """Token ids of `text`. With `special_tokens` (the default) special-token strings in it (e.g. `<|im_start|>`)
    map to their single ids; without, they are encoded as the plain characters they are. Untrusted text (an
    environment's observation, a tool's output) enters a ChatML context that way, so that it cannot open or close
    a turn."""
    return self._encoding(text, special_tokens, "encode").ids

  def _encoding(self, text: str, special_tokens: bool, caller: str):
    if not isinstance(text, str):
      raise TypeError(f"{caller} expects a str, got {type(text).__name__}.")
    return (self.hf if special_tokens else self._literal()).encode(text, add_special_tokens=False)

  def _literal(self):
    """A copy of the HF tokenizer that reads special-token strings as plain text (made once, on first use; a
    copy rather than a flag toggled on `self.hf`, which environment threads may be using)."""
    if self._literal_hf is None:
      from tokenizers import Tokenizer as HFTokenizer

      literal = HFTokenizer.from_str(self.hf.to_str())
      literal.encode_special_tokens = True
      self._literal_hf = literal
    return self._literal_hf

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  # -- chat ---------------------------------------------------------------------------------------------------

  def chat_pieces(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, *,
                  continues: bool = False) -> list[ChatPiece]:
    """The ChatML text of `messages` ([{'role': ..., 'content': ...}]) as pieces: the template's own
    `<|im_start|>`/`<|im_end|>` tokens and the text between them. The default system prompt comes first when the
    conversation has no system message and the template defines one. With `continues`, the messages continue a
    dialogue whose last turn ended with `<|im_end|>` (one the model generated): no default system prompt, and the
    newline that follows that `<|im_end|>` comes first."""
    if not messages:
      raise TokenizerError("a chat needs at least one message, e.g. [{'role': 'user', 'content': 'Hi'}].")
    if self.chat_template and "<|im_start|>" not in self.chat_template:
      # Writing ChatML for a model trained on another format would silently prompt it wrongly.
      raise TokenizerError("this tokenizer's chat template is not ChatML (no <|im_start|>), and only ChatML is "
                           "written here. Fix: use a ChatML model (SmolLM2, Qwen2) or format the prompt yourself "
                           "and call encode().")
    for i, m in enumerate(messages):
      if not isinstance(m, dict) or "role" not in m or "content" not in m:
        raise TokenizerError(f"chat message {i} is {m!r}; each message is a dict with 'role' and 'content'.")
      if not isinstance(m["role"], str) or not isinstance(m["content"], str):
        raise TokenizerError(f"chat message {i} has role {type(m['role']).__name__} and content "
                             f"{type(m['content']).__name__}; both must be str.")
    if not continues and messages[0]["role"] != "system" and self.default_system is not None:
      messages = [{"role": "system", "content": self.default_system}, *messages]
    start, end = ChatPiece("<|im_start|>", special=True), ChatPiece("<|im_end|>", special=True)
    pieces = [ChatPiece("\n")] if continues else []
    for m in messages:
      body = ChatPiece(f"{m['role']}\n{m['content']}", role=m["role"], content_start=len(m["role"]) + 1)
      pieces += [start, body, end, ChatPiece("\n")]
    if add_generation_prompt:
      pieces += [start, ChatPiece("assistant\n")]
    return pieces

  def format_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """ChatML text of `messages` (see `chat_pieces`)."""
    return "".join(piece.text for piece in self.chat_pieces(messages, add_generation_prompt))

  def encode_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, *,
                  continues: bool = False) -> list[int]:
    """Token ids of the ChatML `messages` (`chat_pieces`), after the BOS token where the model expects one
    (unless `continues`).

    Only the template's own `<|im_start|>`/`<|im_end|>` become special ids: special-token strings inside a
    role or content are encoded as the characters they are, so that a message (an environment's observation, a
    tool's output, a user's text) cannot open or close a turn. Elsewhere the ids equal those of encoding the
    whole `format_chat` text at once, since the tokenizer splits its input at special tokens anyway. (Hugging
    Face's `apply_chat_template(tokenize=True)` reads special-token strings in content as special tokens; the
    two agree on every content without them.)"""
    ids = [] if continues else list(self.start_ids)
    for piece in self.chat_pieces(messages, add_generation_prompt, continues=continues):
      ids += self.encode(piece.text, special_tokens=piece.special)
    return ids

  def encode_with_offsets(self, text: str, *, special_tokens: bool = True) -> tuple[list[int],
                                                                                    list[tuple[int, int]]]:
    """`encode(text)` and each token's (start, end) character span in `text`."""
    encoding = self._encoding(text, special_tokens, "encode_with_offsets")
    return encoding.ids, [tuple(o) for o in encoding.offsets]

  def encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of whole prompts: `encode_batch`, after the BOS token where the model expects one."""
    return [self.start_ids + ids for ids in self.encode_batch(texts)]


def _special_tokens(config: dict[str, Any]) -> dict[str, Any]:
  def text(value):
    return value.get("content") if isinstance(value, dict) else value

  add_bos = config.get("add_bos_token")
  return {"eos_token": text(config.get("eos_token")), "bos_token": text(config.get("bos_token")),
          "pad_token": text(config.get("pad_token")), "chat_template": config.get("chat_template"),
          "add_bos": None if add_bos is None else bool(add_bos)}
