"""BSD CNN on MNIST: the real 5000-image subset (4000/1000) by default, full MNIST with a TFDS `data_dir`.

conv3x3(32)-[pool]-conv3x3(64)-[pool]-fc(256)-codes(100), BatchNorm, T=4 (the paper's MNIST CNN: 99.44%).
For full MNIST: `--config.data_dir=~/tensorflow_datasets` (a TFDS-prepared `mnist` in array_record format).
`:quick` is a narrow version (8, 16 channels; fc 64) trained for 150 steps.
"""

from configs.bsd import common


def get_config(variant: str = "full"):
  config = common.base("classify", "mnist", "cnn")
  config.model.channels = (32, 64)
  config.model.hidden = (256,)
  config.model.batch_norm = True
  config.model.code_dim = 100
  config.train.num_steps = 1560  # 50 epochs of the 4000-image subset (3.3 epochs of full MNIST)
  config.eval_batch_size = 500

  def quick(c):
    c.model.channels = (8, 16)
    c.model.hidden = (64,)
    # Chosen on 1,000 held-out training images (seeds 0/1/2, `--config.validation_size=1000`): validation 92.47
    # with the backward blocks upsampling after their conv against 91.67 before it (bsd/README.md); the full-size
    # variant keeps the default ("before", chosen on the Fashion-MNIST CNN).
    c.model.backward_upsample = "after"
    common.quick_schedule(c, 150)

  return common.apply_variant(config, variant, quick)
