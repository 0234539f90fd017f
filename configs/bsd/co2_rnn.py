"""Forecasting with the recurrent spiking pair: weekly Mauna Loa CO2 (statsmodels), in place of METR-LA.

The week-to-week change, z-scored by the training part (first 80%, 1958-1993), is predicted one step ahead at
every position of 64-week windows; the test MSE scores the last step of each test window (each test week once).
The backward pathway is driven by a population code of the target. `--config.dataset=sunspots` with
`--config.sequence.transform=none` forecasts yearly sunspot numbers.
"""

from configs.bsd import common


def get_config(variant: str = "full"):
  config = common.base("forecast", "co2", "rnn")
  config.model.hidden = (128,)
  config.model.code_dim = 32  # population code of the target over [-3, 3] z-units
  config.model.ann_activation = "tanh"
  config.model.batch_norm = True  # on the input drive (the paper uses BN in the RNN)
  config.codes.low, config.codes.high, config.codes.width = -3.0, 3.0, 0.2
  config.sequence.length = 64
  config.sequence.burn_in = 8
  config.sequence.train_fraction = 0.8
  config.sequence.transform = "diff"
  config.batch_size = 64
  config.eval_batch_size = 500
  config.train.num_steps = 2000

  def quick(c):
    common.quick_schedule(c, 300)

  return common.apply_variant(config, variant, quick)
