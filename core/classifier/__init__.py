"""A reference image classifier on the shared training core.

It exercises every part of the foundation end to end (config, data, sharding, loop, checkpoints) and serves
papers that need a plain supervised model: the BP-ANN baseline, the feature network of a Frechet distance,
a vision encoder's pre-training.
"""
