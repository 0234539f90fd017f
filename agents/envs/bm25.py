"""Okapi BM25 ranking over an in-memory corpus (Robertson & Zaragoza 2009, "The Probabilistic Relevance
Framework: BM25 and Beyond"), with Lucene's non-negative idf:

  score(D, Q) = sum_{q in Q} idf(q) * f(q, D) (k1 + 1) / (f(q, D) + k1 (1 - b + b |D| / avgdl)),
  idf(q) = ln(1 + (N - n(q) + 0.5) / (n(q) + 0.5)),

f(q, D) the count of term q in D, |D| the length of D in terms, n(q) the number of documents holding q. Each
distinct query term counts once. The index is a compressed sparse layout (postings sorted by term) with each
posting's term-frequency factor precomputed, so a query costs one gather-and-add per query term: ~1 ms on the
82k WordNet noun glosses.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
  """Lower-cased runs of letters and digits: "Canis familiaris (dog)" -> ["canis", "familiaris", "dog"]."""
  return _TOKEN.findall(text.lower())


class BM25Index:
  """BM25 over `documents`; `search(query, k)` returns the k best (document index, score), best first, with ties
  broken by the lower index so results never depend on hash order."""

  def __init__(self, documents: Sequence[str], k1: float, b: float):
    if k1 < 0 or not 0 <= b <= 1:
      raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1; got k1={k1}, b={b}.")
    self.k1, self.b = k1, b
    self.num_docs = len(documents)
    vocabulary: dict[str, int] = {}
    term_ids, doc_ids = [], []
    lengths = np.zeros(self.num_docs, np.float64)
    for d, text in enumerate(documents):
      tokens = tokenize(text)
      lengths[d] = len(tokens)
      term_ids.extend(vocabulary.setdefault(t, len(vocabulary)) for t in tokens)
      doc_ids.extend([d] * len(tokens))
    self.vocabulary = vocabulary
    # One posting per (term, document): its count is the term frequency. Keys sort by term, then document.
    keys, tf = np.unique(np.asarray(term_ids, np.int64) * self.num_docs + np.asarray(doc_ids, np.int64),
                         return_counts=True)
    post_terms, self.post_docs = keys // self.num_docs, (keys % self.num_docs).astype(np.int32)
    self.indptr = np.searchsorted(post_terms, np.arange(len(vocabulary) + 1))
    doc_freq = np.diff(self.indptr)
    self.idf = np.log1p((self.num_docs - doc_freq + 0.5) / (doc_freq + 0.5))
    avgdl = lengths.mean() if self.num_docs else 1.0
    norm = k1 * (1.0 - b + b * lengths[self.post_docs] / avgdl)
    self.post_weights = tf * (k1 + 1.0) / (tf + norm)
    self.lengths = lengths

  def scores(self, query: str) -> np.ndarray:
    """BM25 score of every document for `query`, [num_docs]."""
    scores = np.zeros(self.num_docs, np.float64)
    for term in set(tokenize(query)):
      t = self.vocabulary.get(term)
      if t is None:
        continue
      start, end = self.indptr[t], self.indptr[t + 1]
      scores[self.post_docs[start:end]] += self.idf[t] * self.post_weights[start:end]  # documents are unique
    return scores

  def search(self, query: str, k: int) -> list[tuple[int, float]]:
    scores = self.scores(query)
    k = min(k, self.num_docs)
    if k <= 0:
      return []
    candidates = np.argpartition(-scores, k - 1)[:k] if k < self.num_docs else np.arange(self.num_docs)
    # argpartition may cut inside a run of equal scores: widen to every document tied with the k-th.
    kth = np.sort(scores[candidates])[0]
    candidates = np.flatnonzero((scores >= kth) & (scores > 0))  # a document sharing no term is no result
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    return [(int(candidates[i]), float(scores[candidates[i]])) for i in order]
