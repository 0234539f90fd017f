"""Figures of a BSD run, written as PNG into the workdir (arXiv 2509.20284, Sec. 4 figures):

  reconstructions.png  originals above the backward pathway's reconstructions (generation);
  spike_raster.png     spikes of one hidden level over time, forward and backward pathways side by side;
  hamming.png          Hamming similarity of the two pathways' spikes per hidden level over training (the paper
                       reports it rising above 0.9).
"""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.train.metrics import read_metrics  # noqa: E402


def reconstructions(path: str, originals: np.ndarray, recons: np.ndarray, n: int = 16) -> str:
  """Two rows of n images: originals [N, H, W, 1] and reconstructions, both in [0, 1] (or uint8)."""
  n = min(n, len(originals))
  fig, axes = plt.subplots(2, n, figsize=(n * 0.8, 1.8))
  axes = np.asarray(axes).reshape(2, n)
  for i in range(n):
    for row, images in enumerate((originals, recons)):
      img = np.asarray(images[i], np.float32)
      img = img / 255.0 if img.max() > 1.5 else img
      axes[row, i].imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
      axes[row, i].axis("off")
  axes[0, 0].set_title("input", fontsize=7, loc="left")
  axes[1, 0].set_title("backward pathway", fontsize=7, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def spike_raster(path: str, forward: np.ndarray, backward: np.ndarray | None, level: int,
                 max_neurons: int = 64) -> str:
  """Rasters of spikes [T, B, ...] of one level: time runs along x, sample after sample; y is the neuron."""

  def layout(spikes):
    t, b = spikes.shape[:2]
    flat = np.asarray(spikes).reshape(t, b, -1)[:, :, :max_neurons]
    return flat.transpose(2, 1, 0).reshape(flat.shape[2], b * t), t, b

  panels = [("forward W", forward)] + ([("backward Theta", backward)] if backward is not None else [])
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False)
  for ax, (name, spikes) in zip(axes[0], panels):
    grid, t, b = layout(spikes)
    ys, xs = np.nonzero(grid)
    ax.scatter(xs, ys, s=3, marker="|", color="k")
    for k in range(1, b):
      ax.axvline(k * t - 0.5, color="0.8", lw=0.5)
    ax.set_xlim(-0.5, b * t - 0.5)
    ax.set_ylim(-0.5, grid.shape[0] - 0.5)
    ax.set_xlabel(f"time step ({b} sample{'s' if b > 1 else ''} x T={t})")
    ax.set_ylabel("neuron")
    ax.set_title(f"level {level}, {name}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def hamming_over_training(path: str, workdir: str) -> str | None:
  """Per-level Hamming similarity from the run's train metrics; None when the run logged none (baselines)."""
  records = read_metrics(workdir, "train")
  keys = sorted({k for r in records for k in r if k.startswith("hamming_l")}, key=lambda k: int(k[9:]))
  if not keys:
    return None
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  for key in keys:
    steps = [r["step"] for r in records if key in r]
    ax.plot(steps, [r[key] for r in records if key in r], marker=".", label=f"level {key[9:]}")
  ax.set_xlabel("training step")
  ax.set_ylabel("Hamming similarity")
  ax.set_title("forward vs backward spikes", fontsize=9)
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def save_all(workdir: str, *, originals=None, recons=None, forward_spikes=None, backward_spikes=None,
             level: int = 1) -> Sequence[str]:
  written = []
  if originals is not None and recons is not None:
    written.append(reconstructions(os.path.join(workdir, "reconstructions.png"), originals, recons))
  if forward_spikes is not None:
    written.append(spike_raster(os.path.join(workdir, "spike_raster.png"), forward_spikes, backward_spikes, level))
  hamming = hamming_over_training(os.path.join(workdir, "hamming.png"), workdir)
  if hamming:
    written.append(hamming)
  return written
