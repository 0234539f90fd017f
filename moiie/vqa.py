"""easy-VQA as LVLM sequences (the instruction format of MoIIE's stage-2 data, arXiv 2508.09779 sec. 4.1, on the
offline easy-VQA set): one ChatML user turn holding the image tokens and the question, then the answer.

    <|im_start|>user\\n [image x N] question <|im_end|>\\n<|im_start|>assistant\\n answer <|im_end|>

The loss is on the answer tokens and the closing <|im_end|>. Exact-match accuracy = every one of those tokens is
the greedy (argmax) prediction under teacher forcing, which is the same event as greedy decoding reproducing the
answer and stopping: greedy decoding can only go wrong at the first mismatch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.data import images as image_data
from core.llm.tokenizer import Tokenizer

QUESTION_TYPES = image_data.EASY_VQA_QUESTION_TYPES
SHAPES = ("circle", "rectangle", "triangle")


def word_tokenizer() -> Tokenizer:
  """The tiny LLM's closed vocabulary: every word of easy-VQA's questions and answers (train and test)."""
  train, test = image_data.load_easy_vqa("train"), image_data.load_easy_vqa("test")
  texts = [*train.questions["question"].tolist(), *test.questions["question"].tolist(), *train.answers]
  return Tokenizer.word_level(texts)


@dataclasses.dataclass(frozen=True)
class Sequences:
  """Fixed-length [Q, S] arrays, one row per question, plus the split's images."""
  tokens: np.ndarray  # int32, image slots hold the pad id
  image_mask: np.ndarray  # bool, True at the N image-token slots
  attention_mask: np.ndarray  # bool, real tokens (image slots included)
  targets: np.ndarray  # int32, tokens shifted left by one (the next token at each position)
  loss_mask: np.ndarray  # bool, positions whose next token is an answer token or the closing <|im_end|>
  question_type: np.ndarray  # int32 [Q]
  image_index: np.ndarray  # int32 [Q] row into `images`
  images: np.ndarray  # uint8 [I, 64, 64, 3]

  def arrays(self) -> dict[str, np.ndarray]:
    return {k: getattr(self, k) for k in ("tokens", "image_mask", "attention_mask", "targets", "loss_mask",
                                          "question_type", "image_index")}


def build_sequences(split: str, tokenizer: Tokenizer, num_image_tokens: int, seq_len: int,
                    subset: int = 0) -> Sequences:
  """Encodes split questions; `subset` > 0 keeps the first N questions. Raises if `seq_len` is too short."""
  data = image_data.load_easy_vqa(split)
  q = data.questions
  n = len(q["question"]) if subset <= 0 else min(subset, len(q["question"]))
  head = tokenizer.encode("<|im_start|>user\n")
  tail = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")
  end = tokenizer.encode("<|im_end|>")
  pad = tokenizer.pad_id
  questions = tokenizer.encode_batch([str(s) for s in q["question"][:n]])
  answers = {a: tokenizer.encode(a) for a in data.answers}
  out = {k: np.zeros((n, seq_len), dt) for k, dt in (("tokens", np.int32), ("image_mask", bool),
                                                      ("attention_mask", bool), ("loss_mask", bool))}
  out["tokens"][:] = pad
  for i in range(n):
    prompt = head + [pad] * num_image_tokens + questions[i] + tail
    answer = answers[str(q["answer"][i])] + end
    row = prompt + answer
    if len(row) > seq_len:
      raise ValueError(f"question {i} of easy-VQA {split} needs {len(row)} tokens ({num_image_tokens} image "
                       f"tokens) but data.seq_len = {seq_len}. Fix: pass --config.data.seq_len={len(row) + 4} or "
                       "pool the image more (vision.image_pool).")
    out["tokens"][i, : len(row)] = row
    out["attention_mask"][i, : len(row)] = True
    out["image_mask"][i, len(head): len(head) + num_image_tokens] = True
    out["loss_mask"][i, len(prompt) - 1: len(row) - 1] = True  # position t predicts token t + 1
  targets = np.concatenate([out["tokens"][:, 1:], np.full((n, 1), pad, np.int32)], axis=1)
  return Sequences(tokens=out["tokens"], image_mask=out["image_mask"], attention_mask=out["attention_mask"],
                   targets=targets, loss_mask=out["loss_mask"],
                   question_type=np.asarray(q["question_type"][:n], np.int32),
                   image_index=np.asarray(q["image_index"][:n], np.int32), images=np.asarray(data.images))


def image_labels(split: str) -> dict[str, np.ndarray]:
  """Per-image shape and color labels read off the split's questions (-1 where no question reveals them).

  They supervise stage 0 (vision-encoder pretraining); "what shape/color is ..." questions name the answer.
  """
  data = image_data.load_easy_vqa(split)
  q = data.questions
  colors = tuple(a for a in data.answers if a not in SHAPES and a not in ("yes", "no"))
  shape = np.full(len(data.images), -1, np.int32)
  color = np.full(len(data.images), -1, np.int32)
  for row, answer, qtype in zip(q["image_index"], q["answer"], q["question_type"]):
    if qtype == 0:
      shape[row] = SHAPES.index(str(answer))
    elif qtype == 1:
      color[row] = colors.index(str(answer))
  return {"image": np.asarray(data.images), "shape": shape, "color": color, "num_colors": len(colors)}
