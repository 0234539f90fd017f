"""Bidirectional Spike-based Distillation (BSD), arXiv 2509.20284: two spiking pathways taught by layer-local
Relaxed Contrastive losses between their voltages, with BP-SNN, BP-ANN, FA and DFA baselines on the same code.

  neurons.py   LIF over time (lax.scan), surrogate spike gradients (custom_vjp)
  losses.py    ReCo loss, cosine read-out, reconstruction loss
  codes.py     target spike codes, population codes
  networks.py  paired forward/backward pathways (MLP, CNN, RNN), layer-local runs
  methods.py   objectives of BSD and the baselines per task
  datasets.py  task data (images, KJV characters, statsmodels series)
  training.py  train_and_evaluate(config, workdir)
  frechet.py   classifier-feature Frechet distance
  plots.py     reconstructions, spike raster, Hamming similarity
  report.py    quick_report(workdir) for the main table
"""
