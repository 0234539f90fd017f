"""Figures of the study (arXiv 2509.16596 figs. 1-5 in spirit): mastery distribution, CBQA accuracy against data size
per mastery level, token-level KL per run, accuracy after restoration per selection rule, and where the restored
updates sit (layer x matrix kind). PNG files, matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def mastery_distribution(distribution: Mapping[str, int], path: str) -> str:
  fig, ax = plt.subplots(figsize=(4.5, 3))
  levels = sorted(distribution, key=int)
  ax.bar([int(l) for l in levels], [distribution[l] for l in levels], color="tab:blue")
  ax.set(xlabel="mastery level (0 = never right, 4 = nearly always)", ylabel="pool facts", xticks=range(5))
  return _save(fig, path)


def accuracy_grid(grid: Mapping[tuple[int, int], Mapping[str, float]], base: Mapping[str, float], path: str) -> str:
  """grid[(level, size)] = {"test_id": mean acc, "test_ood": ...}; one line per level against data size."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
  for ax, split, title in zip(axes, ("test_id", "test_ood"), ("in-domain test", "out-of-domain test")):
    for level in sorted({l for l, _ in grid}):
      sizes = sorted(s for l, s in grid if l == level)
      ax.plot(sizes, [100 * grid[(level, s)][split] for s in sizes], "o-", label=f"level {level}")
    ax.axhline(100 * base[split], color="gray", ls="--", label="base model")
    ax.set(xscale="log", xlabel="fine-tuning facts", title=title)
    ax.set_xticks(sorted({s for _, s in grid}), [str(s) for s in sorted({s for _, s in grid})])
    ax.minorticks_off()  # log-scale minor labels ("9x10^0") only clutter a few data sizes
  axes[0].set_ylabel("CBQA accuracy (%)")
  axes[1].legend(fontsize=7)
  return _save(fig, path)


def token_kl(kl: Mapping[str, Mapping[str, float]], path: str) -> str:
  names = sorted(kl)
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names) + 2), 3))
  x = np.arange(len(names))
  ax.bar(x - 0.2, [kl[n]["answer_kl"] for n in names], 0.4, label="answer tokens")
  ax.bar(x + 0.2, [kl[n]["other_kl"] for n in names], 0.4, label="other tokens")
  ax.set_xticks(x, names, rotation=30, fontsize=7)
  ax.set(ylabel="mean KL(ft || base) per token (nats)")
  ax.legend(fontsize=7)
  return _save(fig, path)


def restoration(rows: list[Mapping[str, Any]], tuned: Mapping[str, float], base: Mapping[str, float], title: str,
                path: str) -> str:
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
  for ax, split in zip(axes, ("test_id", "test_ood")):
    for selection in sorted({r["selection"] for r in rows}):
      pts = sorted((r["ratio"], r[f"{split}_accuracy"]) for r in rows if r["selection"] == selection)
      ax.plot([100 * p for p, _ in pts], [100 * a for _, a in pts], "o-", label=selection)
    ax.axhline(100 * tuned[f"{split}_accuracy"], color="k", ls=":", label="fine-tuned")
    ax.axhline(100 * base[f"{split}_accuracy"], color="gray", ls="--", label="base")
    ax.set(xlabel="restored / dropped updates (%)", title=f"{title}: {split}")
  axes[0].set_ylabel("CBQA accuracy (%)")
  axes[1].legend(fontsize=7)
  return _save(fig, path)


def restored_where(fraction_per_matrix: Mapping[str, float], title: str, path: str) -> str:
  layers = sorted({int(k.split("/")[0]) for k in fraction_per_matrix})
  grid = np.array([[fraction_per_matrix.get(f"{l}/{k}", 0.0) for k in KINDS] for l in layers])
  fig, ax = plt.subplots(figsize=(5, max(3, 0.16 * len(layers) + 1)))
  im = ax.imshow(100 * grid, aspect="auto", cmap="viridis")
  ax.set_xticks(range(len(KINDS)), [k[:-5] for k in KINDS])
  ax.set_yticks(range(len(layers)), [str(l) for l in layers], fontsize=6)
  ax.set(xlabel="matrix", ylabel="layer", title=title)
  fig.colorbar(im, ax=ax, label="% of the matrix restored")
  return _save(fig, path)
