"""The full BSD config schema, shared by every experiment file in this folder.

Each experiment file calls `base(...)`, sets what differs, and applies the variant string: comma-separated
tokens among `quick` (the few-second version used by the report) and a method name (`bsd`, `bp_snn`, `bp_ann`,
`fa`, `dfa`), e.g. `--config configs/bsd/fashion_mlp.py:quick,bp_snn`. `--config.method=...` does the same.
"""

from __future__ import annotations

import ml_collections

from core import config as config_lib

from bsd.methods import METHODS, objective_config
from bsd.neurons import neuron_config
from core.sharding import mesh_config
from core.train.loop import train_config
from core.train.optim import optimizer_config


def base(task: str, dataset: str, arch: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = task  # classify | generate | next_char | forecast
  config.method = "bsd"  # bsd | bp_snn | bp_ann | fa | dfa
  config.dataset = dataset
  config.data_dir = ""  # fashion_mnist/mnist: a folder with the user's own files (full MNIST: a TFDS folder)
  config.train_subset = 0  # 0: the whole split; N: N images drawn with a fixed seed, or the first N text windows
  config.test_subset = 0
  # images: N training examples held out (drawn with a fixed seed, before train_subset) and scored as `validation_*`
  # beside the test metrics; settings are chosen on them, never on the test split. 0: none.
  config.validation_size = 0
  config.batch_size = 128  # the paper's batch size
  config.eval_batch_size = 500
  config.model = ml_collections.ConfigDict(dict(
      arch=arch, hidden=(512,), channels=(), kernel_size=3, batch_norm=False,
      # cnn: the backward blocks upsample before their conv ("before") or after it ("after": 4x cheaper convs,
      # blocky targets; 0.9 points lower validation accuracy on the Fashion-MNIST CNN, 0.8 higher on the small
      # MNIST-subset CNN of mnist_cnn.py:quick, which sets it; see bsd/README.md)
      backward_upsample="before",
      code_dim=100,  # top level: class-code length (classification), latent size (generation)
      init_scale=1.0,  # LeCun-normal std multiplier of every weight
      ann_activation="relu",  # the BP-ANN baseline's units
      reconstruct=False))  # classification: also train B_0 to reconstruct the input (BSD only)
  config.neuron = neuron_config()
  config.codes = ml_collections.ConfigDict(dict(
      kind="block", rate=0.5, seed=0,  # class codes (bsd/codes.py)
      low=-3.0, high=3.0, width=0.25))  # forecast: population code of the z-scored target over [low, high]
  config.bsd = objective_config()
  config.sequence = ml_collections.ConfigDict(dict(
      length=64, burn_in=8, train_fraction=0.8, transform="diff"))
  config.eval = ml_collections.ConfigDict(dict(
      plots=True, frechet_classifier_steps=600, frechet_seed=0))
  # AdamW with gradient clipping, as reported by the paper.
  config.optimizer = optimizer_config(name="adamw", learning_rate=3e-3, schedule="warmup_cosine", warmup_steps=100,
                                      weight_decay=1e-4, grad_clip_norm=1.0)
  config.train = train_config(num_steps=4690, log_every=100, eval_every=0, checkpoint_every=1000,
                              keep_checkpoints=2)
  config.mesh = mesh_config()
  return config


def apply_variant(config: ml_collections.ConfigDict, variant: str, quick) -> ml_collections.ConfigDict:
  """Applies `quick,<method>` tokens; `quick(config)` shrinks the experiment to seconds."""
  return config_lib.apply_variant_tokens(config, variant, quick, METHODS,
                                         lambda c, token: setattr(c, "method", token), "a method")


def quick_schedule(config: ml_collections.ConfigDict, steps: int) -> None:
  config.train.num_steps = steps
  config.train.log_every = max(steps // 10, 1)
  config.train.eval_every = 0
  config.train.checkpoint_every = steps
  config.train.progress_bar = False
  config.train.tensorboard = False
  config.optimizer.warmup_steps = max(steps // 20, 1)
