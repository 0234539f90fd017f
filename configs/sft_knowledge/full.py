"""The paper-like grid on SmolLM2-135M-Instruct: 5 mastery levels x sizes 60..1920 x 3 seeds, every fact of 16
relations, 8 templates per fact for mastery, restoration at the paper's 7 ratios.

    python -m sft_knowledge.report --config configs/sft_knowledge/full.py --workdir runs/sftk_full

Not run. Estimated from the quick and medium runs' rates: about 20 hours on an idle 2-core CPU (mastery ~190k
generations ~7 h, ~21k SFT steps ~9 h, ~90 evaluations ~2 h, ~100 restoration rows ~2.5 h); see
sft_knowledge/README.md ("Not done / limits"). Sizes above a level's pool are skipped and reported.
"""

from configs.sft_knowledge import common


def get_config():
  return common.base()
