"""The CPU-scale study reported in sft_knowledge/README.md: the quick slice with 2.5x the test facts, twice the pool,
all 5 mastery levels, sizes 8 / 24 / 48 (as far as each level's pool allows), restoration of the largest level-0 run
(~25 minutes on 2 shared CPU cores: 1492 s in the README's medium study of 2026-11-27).

    python -m sft_knowledge.report --config configs/sft_knowledge/medium.py --workdir runs/sftk_medium
"""

from configs.sft_knowledge import quick


def get_config():
  c = quick.get_config()
  c.data.max_per_relation = 60
  c.data.test_per_relation = 10  # 40 in-domain + 40 out-of-domain test facts
  c.grid.levels = (0, 1, 2, 3, 4)
  # In the README's run levels 1-4 held 25 / 18 / 31 / 12 pool facts: n=48 runs at level 0 only, n=24 at 0, 1, 3.
  c.grid.sizes = (8, 24, 48)
  c.restore.sizes = (48,)
  return c
