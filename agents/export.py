"""Exports the policy of an `agents.train` run as a Hugging Face folder (config.json, model.safetensors,
tokenizer.json) that `core.llm.weights.load_pretrained` reads, so that any `llm.source` can load it: e.g. the "after
RL" policy of arXiv 2508.08791's evaluation (Sec. 4, `python -m agents.toolenv.evaluate`).

    python -m agents.export --config configs/agents/toolenv_grpo.py:cpu_step --workdir RUN
    python -m agents.export --config configs/agents/gridworld_grpo.py:quick --workdir RUN   # any agents.train run

It rebuilds the run's starting policy from the same config (the stage-0 warm start comes from the run's cache
`RUN/warm_start`), restores checkpoint `export.step` (-1 = the latest; 0 = the starting policy, before RL),
folds LoRA adapters into the weights and writes `export.directory` (default `RUN/export`, or `RUN/export_step0`
for step 0). Every `configs/agents/rl_common.py` config carries the `export` section.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from flax import nnx

from agents import train as train_lib
from core import config as config_lib
from core import entrypoint
from core.config import section
from core.llm import lora, weights
from core.train import checkpoint as checkpoint_lib


def export_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Which checkpoint (`step`: -1 latest, 0 the starting policy) and where it goes ("" = RUN/export[_step0])."""
  return section("export", dict(step=-1, directory=""), overrides)


def validate_config(config: ml_collections.ConfigDict) -> None:
  train_lib.validate_config(config)
  if "export" not in config:
    raise config_lib.ConfigError("the config has no `export` section. Fix: add `config.export = export_config()` "
                                 "(agents/export.py) to the training config.")
  config_lib.check(config, "export.step", lambda s: s >= -1, "must be -1 (latest), 0 (before RL) or a step")


def checkpoint_step(config: ml_collections.ConfigDict, workdir: str) -> int:
  """The step `config.export.step` names in `workdir/checkpoints` (0: the starting policy, no checkpoint needed).
  Checked before the learner is built: that rebuild runs the whole warm start when its cache is missing."""
  step = config.export.step
  if step == 0:
    return 0
  directory = os.path.join(workdir, "checkpoints")
  steps = []
  if os.path.isdir(directory):  # never create the folder of a run that does not exist
    checkpointer = checkpoint_lib.Checkpointer(directory, every=1, keep=1)
    steps = sorted(checkpointer.all_steps())
    checkpointer.close()
  if not steps:
    raise config_lib.ConfigError(
        f"{directory} holds no checkpoint, so there is no RL policy to export. Fix: train first (python -m "
        "agents.train with the same --config and --workdir), check --workdir, or pass --config.export.step=0 "
        "(the starting policy).")
  if step != -1 and step not in steps:
    raise config_lib.ConfigError(
        f"config.export.step = {step} is invalid: {directory} holds checkpoints of steps "
        f"{', '.join(map(str, steps))} only. Fix: pass --config.export.step=<one of those>, -1 (the latest, "
        f"{steps[-1]}) or 0 (the starting policy).")
  return steps[-1] if step == -1 else step


def export_policy(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the policy of `workdir` at `config.export.step`; returns the folder."""
  step = checkpoint_step(config, workdir)
  learner, _ = train_lib.build_learner(config, workdir)
  if step != 0:
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), every=1, keep=1)
    tree, _ = checkpointer.restore(step, learner.checkpoint_tree())
    checkpointer.close()
    learner.load_checkpoint_tree(tree)
  model = nnx.merge(learner.graphdef, learner.state.params, learner.state.model_state)
  lora.merge_lora(model)
  directory = config.export.directory or os.path.join(workdir, "export" if config.export.step != 0 else
                                                      "export_step0")
  weights.save_pretrained(model, directory, learner.policy.tokenizer)
  with open(os.path.join(directory, "exported_from.txt"), "w") as f:
    f.write(f"workdir: {os.path.abspath(workdir)}\nstep: {step}\n")
  return directory


def main(config: ml_collections.ConfigDict, workdir: str) -> None:
  print(f"exported to {export_policy(config, workdir)}")


if __name__ == "__main__":
  entrypoint.run(main, validate=validate_config)
