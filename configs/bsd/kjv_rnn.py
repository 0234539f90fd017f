"""Next-character prediction on the King James Bible with the recurrent spiking pair (63 characters).

Windows of 64 characters; each character is one SNN time step (one-hot input current); the backward pathway is
driven, step by step, by the block code of the next character. The last 10% of the book is the test split.
"""

from configs.bsd import common


def get_config(variant: str = "full"):
  config = common.base("next_char", "kjv", "rnn")
  config.model.hidden = (256,)
  config.model.code_dim = 126  # block codes: 2 neurons per character
  config.model.ann_activation = "tanh"  # the BP-ANN baseline is a plain tanh RNN
  config.model.batch_norm = True  # on the input drive; keeps the hidden layer firing (the paper: BN in the RNN)
  config.sequence.length = 64
  config.sequence.burn_in = 8
  config.sequence.train_fraction = 0.9
  config.test_subset = 2000  # the first 2000 test windows (128k characters)
  config.batch_size = 64
  config.eval_batch_size = 500
  config.train.num_steps = 5000

  def quick(c):
    c.model.hidden = (128,)
    c.test_subset = 200
    common.quick_schedule(c, 300)

  return common.apply_variant(config, variant, quick)
