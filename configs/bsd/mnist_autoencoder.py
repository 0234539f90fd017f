"""Generation: an autoencoder whose decoder is the backward pathway, on MNIST (the real 5000 subset, 4000/1000).

MLP 784-512-256-latent(64), T=8 (the paper's autoencoder setting). Scored with the reconstruction MSE and the
Frechet distance in the feature space of a classifier trained on the same data (bsd/frechet.py), not FID.
"""

from configs.bsd import common


def get_config(variant: str = "full"):
  config = common.base("generate", "mnist", "mlp")
  config.model.hidden = (512, 256)
  config.model.code_dim = 64  # the latent: the forward pathway's top spikes drive the backward pathway
  config.neuron.time_steps = 8
  # The latent spikes change over the T=8 steps, so each step's voltages are aligned.
  config.bsd.reco_time = "per_step"
  config.eval_batch_size = 500
  config.train.num_steps = 3000  # ~96 epochs of 4000 images at batch 128

  def quick(c):
    c.model.hidden = (256,)
    common.quick_schedule(c, 400)
    c.eval.frechet_classifier_steps = 300

  return common.apply_variant(config, variant, quick)
