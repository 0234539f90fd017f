"""Router statistics of MoIIE (arXiv 2508.09779, sec. 4.4 / Fig. 4: expert load per modality): for each MoE
variant and MoE layer, the assignments per vision and per text token that each expert receives on the test set
(a layer's loads sum to top_k)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def router_load(results: dict[str, dict[str, Any]], path: str) -> None:
  """results[variant] holds `load_vision`/`load_text` [L_moe][E] (assignments per routed token, summing to top_k)."""
  variants = [v for v, r in results.items() if r.get("load_vision")]
  if not variants:
    return
  layers = max(len(results[v]["load_vision"]) for v in variants)
  fig, axes = plt.subplots(layers, len(variants), figsize=(3.2 * len(variants), 2.4 * layers), squeeze=False)
  for col, v in enumerate(variants):
    lv, lt = np.asarray(results[v]["load_vision"]), np.asarray(results[v]["load_text"])
    for row in range(layers):
      ax = axes[row, col]
      e = np.arange(lv.shape[1])
      ax.bar(e - 0.2, lv[row], 0.4, label="vision tokens")
      ax.bar(e + 0.2, lt[row], 0.4, label="text tokens")
      ax.set_xticks(e)
      ax.set_title(f"{v}, MoE layer {results[v].get('moe_layers', list(range(layers)))[row]}", fontsize=9)
      ax.set_ylabel("assignments / token")
      if row == layers - 1:
        ax.set_xlabel("expert (vision-intra | inter | text-intra)")
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
