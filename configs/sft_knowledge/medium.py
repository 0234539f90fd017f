"""The CPU-scale study reported in sft_knowledge/README.md: the quick slice with 5x the test facts, twice the pool,
all 5 mastery levels, sizes 8 / 24 / 48 (as far as each level's pool allows), restoration of the largest level-0 run
(~13 minutes on 2 shared CPU cores: 762 s on 2026-11-27).

    python -m sft_knowledge.report --config configs/sft_knowledge/medium.py --workdir runs/sftk_medium
"""

from configs.sft_knowledge import quick


def get_config():
  c = quick.get_config()
  c.data.max_per_relation = 60
  c.data.test_per_relation = 10  # 40 in-domain + 40 out-of-domain test facts
  c.grid.levels = (0, 1, 2, 3, 4)
  # Levels 1-4 held 21-27 pool facts each (before the answer-check fix): their n=48 (and L4 n=24) runs are skipped.
  c.grid.sizes = (8, 24, 48)
  c.restore.sizes = (48,)
  return c
