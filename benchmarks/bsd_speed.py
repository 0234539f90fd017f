"""Training speed of BSD and BP-SNN (bsd/), against the same BP-SNN in spyx (JAX) and snnTorch (PyTorch).

    python -m benchmarks.bsd_speed [--batch 128] [--time-steps 4] [--hidden 512 512] [--iters 20] [--rounds 5]
                                   [--peers spyx snntorch] [--torch-device cuda]

On a GPU, ours and spyx run on JAX's default device; `--torch-device cuda` puts snnTorch there too (eager
PyTorch, one thread; every step ends in `loss.item()`, as every step of ours and spyx's is blocked on).

The networks: MLP 784-H1-H2 with LIF hidden layers (beta 0.5, threshold 0.6, an arctan surrogate: ours and
snnTorch's (alpha/2) / (1 + (pi alpha x / 2)^2) with alpha 2; spyx's `axn.arctan` has a scale of its own,
1 / (pi (1 + (k pi x)^2)) with k 2, so its gradients are 1/pi of ours at x = 0 and narrower, at the same
elementwise cost), a 100-unit top read out by cosine similarity to block class codes, cross-entropy, AdamW; T
steps, one batch. They differ in
the neuron's reset, each the library's own: ours resets hard to 0 in the step it spikes, with the gradient flowing
through the reset (bsd/neurons.py, `detach_reset=False`); spyx's `LIF` spikes from the previous step's potential
and subtracts the threshold, and trains beta (an `nnx.Param`); snnTorch's `Leaky(reset_mechanism="zero")` resets
to 0 one step late (`reset_delay`) with the reset detached from the graph. Same matmuls, same shapes, so the same
work per step; the spike trains differ.

Two forms of each peer:
  * idiomatic: what a user of the library writes: the static image copied over T steps and every layer,
    fc1 and the head included, run at every step (T x (784 H1 + H1 H2 + H2 100) multiply-adds per sample);
  * same rewrite: the rewrite ours does, in the peer's own API: fc1 applied once to the static image outside
    the time loop, the head applied once to the time-averaged spikes (784 H1 + T H1 H2 + H2 100).
At 784-512-512-100, T=4 that is ~2.86M vs ~1.50M forward multiply-adds per sample (`forward_madds_per_sample`):
the idiomatic ratio includes the half of the matmul work ours skips; the same-rewrite ratio is the
implementation's own speed. Both are printed, each with its ratio (`peer_form`). Ours additionally runs layer 2
for all T steps as one matmul (time folded into the batch); the same FLOPs.

Printed (one JSON line each, `benchmarks.harness.emit`): training samples/s of our BP-SNN vs each form of spyx and
of snnTorch, of BSD vs our BP-SNN and vs spyx; the compiled step's memory of BSD vs BP-SNN: argument bytes
(parameters + AdamW state + batch) as a total, and XLA temporaries as bytes per sample (the slope between two
batch sizes, `--batch` and twice it) plus the intercept (bytes that do not grow with the batch). Peers that are
not installed are reported as skipped, with the install command.

The contestants are timed in interleaved rounds (each round: a few warm-up steps, then `--iters` timed steps of
every contestant in turn), so that all of them see the same load on a shared machine; each figure is the
contestant's best round (the median step of its least-disturbed round), and the median over rounds is printed
beside it. XLA compilations during the timed steps are counted (`compiles_during_timing`, ours and peer).
Peers: `pip install --no-deps spyx==1.0.0 jax-tqdm nir h5py` (spyx's declared dependencies would re-resolve
jax/flax) and `pip install snntorch==1.0.0 torch==2.13.0` (torch 2.13.0 is the CPU build).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import harness
from bsd import codes as codes_lib
from bsd import losses, methods, networks, neurons
from core.train.state import create_train_state, make_train_step

NAME = "bsd_speed"
TAU, THRESHOLD, ALPHA = 2.0, 0.6, 2.0
CODE_DIM = 100
PEER_FORMS = ("idiomatic", "same rewrite")
SPYX_INSTALL = "pip install --no-deps spyx==1.0.0 jax-tqdm nir h5py"
SNNTORCH_INSTALL = "pip install snntorch==1.0.0 torch==2.13.0"


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def forward_madds_per_sample(hidden, time_steps: int, rewrite: bool) -> int:
  """Forward multiply-adds per sample: fc1 and the head once (rewrite) or at every step (idiomatic)."""
  sizes = [784, *hidden]
  inner = sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
  first, top = sizes[0] * sizes[1], sizes[-1] * CODE_DIM
  if rewrite:
    return first + time_steps * inner + top
  return time_steps * (first + inner + top)


def _batch(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, (batch,), dtype=np.int32)}


def _objective(method: str, time_steps: int) -> methods.Objective:
  spec = networks.RunSpec(lif=neurons.LIFParams(tau=TAU, threshold=THRESHOLD, surrogate="atan", alpha=ALPHA),
                          time_steps=time_steps, cut=method == "bsd")
  return methods.Objective(method=method, task="classify", spec=spec, reco_lambda=0.6, reco_reduction="mean",
                           reco_time="mean", voltage="drive", mask_identical_targets=True, top_weight=1.0,
                           reco_weight=1.0, recon_weight=1.0, logit_scale=10.0, top_loop=True, fft_weight=0.0,
                           fft_high_boost=0.0)


def ours_step(method: str, hidden, time_steps: int):
  """Our jitted, donating training step (the one `run_training` uses) and its initial state."""
  layout = networks.make_layout("mlp", (28, 28, 1), hidden=hidden, top_dim=CODE_DIM, backward_top_dim=CODE_DIM)
  model = networks.BSDNet(layout, rngs=nnx.Rngs(0), with_backward=method == "bsd", reconstruct=False,
                          codes=codes_lib.class_codes("block", 10, CODE_DIM))
  obj = _objective(method, time_steps)
  tx = optax.adamw(1e-3)
  graphdef, state = create_train_state(model, tx)
  step = make_train_step(graphdef, lambda m, b, r: methods.classify_loss(obj, m, b, r), tx)
  return jax.jit(step, donate_argnums=(0,)), state


def compiled_memory(method: str, hidden, time_steps: int, batch: int) -> dict[str, int]:
  """{"temp", "arguments"}: bytes of our step compiled (never run) at `batch`."""
  step, state = ours_step(method, hidden, time_steps)
  memory = step.lower(state, jax.device_put(_batch(batch)), jax.random.key(0)).compile().memory_analysis()
  return {"temp": memory.temp_size_in_bytes, "arguments": memory.argument_size_in_bytes}


def memory_fit(b1: int, at_b1: dict[str, int], b2: int, at_b2: dict[str, int]) -> dict[str, float]:
  """The step's memory from two batch sizes b1 < b2: {"arguments": argument bytes at b1 (parameters + AdamW state
  + batch: mostly fixed, so a total, not per sample), "temp_per_sample": (temp(b2) - temp(b1)) / (b2 - b1),
  "temp_intercept": temp(b1) - b1 * slope, "temp_b1", "temp_b2"}."""
  t1, t2 = at_b1["temp"], at_b2["temp"]
  slope = (t2 - t1) / (b2 - b1)
  return {"arguments": float(at_b1["arguments"]), "temp_per_sample": slope, "temp_intercept": t1 - b1 * slope,
          "temp_b1": float(t1), "temp_b2": float(t2)}


def ours_runner(method: str, hidden, time_steps: int, batch: int):
  """(one training step of ours, compile s, {"temp", "arguments"}: bytes of the compiled step at `batch`)."""
  step, state = ours_step(method, hidden, time_steps)
  data = jax.device_put(_batch(batch))
  key = jax.random.key(0)
  start = time.perf_counter()
  compiled = step.lower(state, data, key).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], data, key)
    return metrics["loss"]

  return run, compile_s, {"temp": memory.temp_size_in_bytes, "arguments": memory.argument_size_in_bytes}


def spyx_model(hidden, seed: int = 0):
  """The BP-SNN as a `spyx.nn.Sequential` [fc1, LIF, fc2, LIF, ..., head], or None if spyx is not installed."""
  try:
    import spyx.axn
    import spyx.nn as snn
  except ImportError:
    return None
  rngs = nnx.Rngs(seed)
  sizes = [784, *hidden]
  layers = []
  for a, b in zip(sizes[:-1], sizes[1:]):
    layers += [nnx.Linear(a, b, rngs=rngs), snn.LIF((b,), beta=1.0 - 1.0 / TAU, threshold=THRESHOLD,
                                                    activation=spyx.axn.arctan(), rngs=rngs)]
  layers.append(nnx.Linear(sizes[-1], CODE_DIM, rngs=rngs))
  return snn.Sequential(*layers)


def spyx_outputs(model, images: jax.Array, time_steps: int, rewrite: bool) -> jax.Array:
  """[B, CODE_DIM]: the time-averaged read-out of the spyx model, in either form (see the module docstring)."""
  import spyx.nn as snn
  x = images.astype(jnp.float32).reshape(images.shape[0], -1) / 255.0
  if not rewrite:  # idiomatic: the image copied over T steps, every layer at every step
    out, _ = snn.run(model, jnp.broadcast_to(x[None], (time_steps, *x.shape)))
    return out.mean(0)
  layers = list(model.layers)
  drive = layers[0](x)  # fc1 once: the image is static
  spikes, _ = snn.run(snn.Sequential(*layers[1:-1]), jnp.broadcast_to(drive[None], (time_steps, *drive.shape)))
  return layers[-1](spikes.mean(0))  # the head is affine: head(mean_t s) = mean_t head(s)


def spyx_runner(hidden, time_steps: int, batch: int, rewrite: bool = False) -> Callable | None:
  """One training step of the BP-SNN in spyx (jitted, donating params and optimizer state), or None."""
  model = spyx_model(hidden)
  if model is None:
    return None
  table = jnp.asarray(codes_lib.class_codes("block", 10, CODE_DIM))
  graphdef, params = nnx.split(model)
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)

  def step(params, opt_state, images, labels):
    def loss(p):
      out = spyx_outputs(nnx.merge(graphdef, p), images, time_steps, rewrite)
      return losses.cosine_cross_entropy(out, table, labels, 10.0)[0]
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  step = jax.jit(step, donate_argnums=(0, 1))
  data = jax.device_put(_batch(batch))
  holder = {"params": params, "opt": opt_state}

  def run():
    holder["params"], holder["opt"], value = step(holder["params"], holder["opt"], data["image"], data["label"])
    return value

  return run


def snntorch_runners(hidden, time_steps: int, batch: int, rewrite: bool = False, device: str = "cpu"
                     ) -> dict[int, Callable] | None:
  """{torch threads: one training step} for 1 and all-core threads (the peer's figure is the better one).

  On a loaded 2-core machine PyTorch's OpenMP pool with 2 threads can run 20x slower than with 1 (its
  workers spin-wait for a core), so the peer gets its best setting. On a GPU (`device="cuda"`) the host threads
  only launch kernels: one runner, 1 thread. None if snnTorch is not installed.
  """
  runners = {}
  for threads in sorted({1, os.cpu_count() or 1}) if device == "cpu" else [1]:
    run = _snntorch_runner(hidden, time_steps, batch, threads, rewrite, device)
    if run is None:
      return None
    runners[threads] = run
  return runners


def snntorch_net(hidden, seed: int = 0):
  """(linears, head, lifs) of the BP-SNN in snnTorch, or None if snnTorch is not installed."""
  try:
    import snntorch
    import torch
    from snntorch import surrogate
  except ImportError:
    return None
  torch.manual_seed(seed)
  sizes = [784, *hidden]
  linears = torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
  head = torch.nn.Linear(sizes[-1], CODE_DIM)
  lifs = [snntorch.Leaky(beta=1.0 - 1.0 / TAU, threshold=THRESHOLD, spike_grad=surrogate.atan(alpha=ALPHA),
                         reset_mechanism="zero") for _ in hidden]
  return linears, head, lifs


def snntorch_outputs(net, images, time_steps: int, rewrite: bool):
  """[B, CODE_DIM] torch tensor: the time-averaged read-out, in either form (see the module docstring)."""
  linears, head, lifs = net
  mems = [lif.init_leaky() for lif in lifs]
  if not rewrite:  # idiomatic: every layer, fc1 and the head included, at every step
    outs = 0.0
    for _ in range(time_steps):
      x = images
      for k, (linear, lif) in enumerate(zip(linears, lifs)):
        x, mems[k] = lif(linear(x), mems[k])
      outs = outs + head(x)
    return outs / time_steps
  drive = linears[0](images)  # fc1 once: the image is static
  total = 0.0
  for _ in range(time_steps):
    x, mems[0] = lifs[0](drive, mems[0])
    for k in range(1, len(lifs)):
      x, mems[k] = lifs[k](linears[k](x), mems[k])
    total = total + x
  return head(total / time_steps)  # the head is affine: head(mean_t s) = mean_t head(s)


def _snntorch_runner(hidden, time_steps: int, batch: int, threads: int, rewrite: bool, device: str = "cpu"
                     ) -> Callable | None:
  net = snntorch_net(hidden)
  if net is None:
    return None
  import torch
  linears, head, lifs = net
  for module in (linears, head, *lifs):  # a Leaky's membrane, beta and threshold are buffers: they move too
    module.to(device)
  params = list(linears.parameters()) + list(head.parameters())
  opt = torch.optim.AdamW(params, lr=1e-3)
  table = torch.tensor(codes_lib.class_codes("block", 10, CODE_DIM), device=device)
  table = table / table.norm(dim=1, keepdim=True)
  data = _batch(batch)
  images = torch.tensor(data["image"], dtype=torch.float32, device=device).reshape(batch, -1) / 255.0
  labels = torch.tensor(data["label"], dtype=torch.long, device=device)

  def run():
    if torch.get_num_threads() != threads:
      torch.set_num_threads(threads)
    out = snntorch_outputs(net, images, time_steps, rewrite)
    logits = 10.0 * (out / (out.norm(dim=1, keepdim=True) + 1e-8)) @ table.T
    loss = torch.nn.functional.cross_entropy(logits, labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()

  return run


def _block(x):
  # any result: a dict or tuple of arrays must be waited for too, or its timing would be dispatch only
  return jax.block_until_ready(x)


def time_interleaved(runners: dict[str, Callable], batch: int, iters: int, rounds: int, warmup: int = 3
                     ) -> dict[str, dict[str, float]]:
  """{name: {"best", "median", "compiles"}}: samples/s per round (each runner's median step), best and median
  over rounds, and the XLA compilations during its timed steps (all rounds)."""
  per_round: dict[str, list[float]] = {name: [] for name in runners}
  compiles = {name: 0 for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      for _ in range(warmup):
        _block(run())
      times = []
      with harness.count_compiles() as counted:
        for _ in range(iters):
          start = time.perf_counter()
          _block(run())
          times.append(time.perf_counter() - start)
      compiles[name] += counted.count
      per_round[name].append(batch / float(np.median(times)))
  return {name: {"best": max(rates), "median": float(np.median(rates)), "compiles": compiles[name]}
          for name, rates in per_round.items()}


def _runner_name(library: str, form: str, threads: int | None = None) -> str:
  return f"{library}_{form.replace(' ', '_')}" + (f"_{threads}" if threads is not None else "")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--time-steps", type=int, default=4)
  parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--peers", nargs="*", choices=("spyx", "snntorch"), default=["spyx", "snntorch"],
                      help="peers to time (a peer left out is reported as skipped)")
  parser.add_argument("--torch-device", default="cpu",
                      help="where snnTorch runs: cpu, or cuda when ours runs on a GPU (ours and spyx use JAX's "
                      "default device)")
  args = parser.parse_args(argv)
  hidden, t, b, n = tuple(args.hidden), args.time_steps, args.batch, args.iters
  setting = {"net": f"MLP 784-{'-'.join(map(str, hidden))}-{CODE_DIM}", "time_steps": t, "batch": b,
             "rounds": args.rounds, "iters_per_round": n, "torch_device": args.torch_device}
  start = time.perf_counter()
  bp_run, bp_compile, bp_at_b = ours_runner("bp_snn", hidden, t, b)
  bsd_run, bsd_compile, bsd_at_b = ours_runner("bsd", hidden, t, b)
  runners = {"bp_snn": bp_run, "bsd": bsd_run}
  for form in PEER_FORMS:
    rewrite = form == "same rewrite"
    spyx_run = spyx_runner(hidden, t, b, rewrite) if "spyx" in args.peers else None
    if spyx_run is not None:
      runners[_runner_name("spyx", form)] = spyx_run
    torch_runs = snntorch_runners(hidden, t, b, rewrite, args.torch_device) if "snntorch" in args.peers else None
    for threads, run in (torch_runs or {}).items():
      runners[_runner_name("snntorch", form, threads)] = run
  skipped = {peer: "not requested (--peers)" if peer not in args.peers else install
             for peer, install in (("spyx", SPYX_INSTALL), ("snntorch", SNNTORCH_INSTALL))}
  rates = time_interleaved(runners, b, n, args.rounds)
  bp_rate, bsd_rate = rates["bp_snn"]["best"], rates["bsd"]["best"]
  setting["median_over_rounds"] = {name: round(r["median"], 1) for name, r in rates.items()}
  ours_madds = forward_madds_per_sample(hidden, t, rewrite=True)
  spyx_label = f"spyx {_version('spyx')} (JAX {jax.__version__}, BPTT)"
  torch_label = f"snnTorch {_version('snntorch')} (PyTorch {_version('torch')}, BPTT)"
  for form in PEER_FORMS:
    rewrite = form == "same rewrite"
    peer_form = {"peer_form": form, "forward_madds_per_sample": ours_madds,
                 "peer_forward_madds_per_sample": forward_madds_per_sample(hidden, t, rewrite)}
    spyx = rates.get(_runner_name("spyx", form))
    harness.emit(NAME, "train_samples_per_s", bp_rate, unit="samples/s", peer=f"{spyx_label}, {form}",
                 peer_value=spyx["best"] if spyx else None, ours_name="bsd BP-SNN", **peer_form, **setting,
                 compiles_during_timing=rates["bp_snn"]["compiles"],
                 peer_compiles_during_timing=spyx["compiles"] if spyx else None,
                 **({} if spyx else {"skipped": skipped["spyx"]}))
    torch_rates = {k: r for k, r in rates.items() if k.startswith(_runner_name("snntorch", form) + "_")}
    best = max(torch_rates, key=lambda k: torch_rates[k]["best"]) if torch_rates else None
    harness.emit(NAME, "train_samples_per_s", bp_rate, unit="samples/s", peer=f"{torch_label}, {form}",
                 peer_value=torch_rates[best]["best"] if best else None, ours_name="bsd BP-SNN", **peer_form,
                 **setting, compiles_during_timing=rates["bp_snn"]["compiles"],
                 **({"peer_torch_threads": int(best.rsplit("_", 1)[1])} if best else {"skipped": skipped["snntorch"]}))
  harness.emit(NAME, "train_samples_per_s", bsd_rate, unit="samples/s", peer="bsd BP-SNN (same code)",
               peer_value=bp_rate, ours_name="bsd BSD (both pathways)", **setting,
               compiles_during_timing=rates["bsd"]["compiles"],
               peer_compiles_during_timing=rates["bp_snn"]["compiles"])
  spyx = rates.get(_runner_name("spyx", "idiomatic"))
  if spyx:
    harness.emit(NAME, "train_samples_per_s", bsd_rate, unit="samples/s", peer=f"{spyx_label}, idiomatic",
                 peer_value=spyx["best"], ours_name="bsd BSD (both pathways)", peer_form="idiomatic",
                 peer_forward_madds_per_sample=forward_madds_per_sample(hidden, t, rewrite=False),
                 note="BSD runs two pathways with the rewrite; the idiomatic peer does about 1.9x the forward work "
                      "of one rewritten pathway", **setting,
                 compiles_during_timing=rates["bsd"]["compiles"], peer_compiles_during_timing=spyx["compiles"])
  batches = (b, 2 * b)
  bsd_mem = memory_fit(b, bsd_at_b, 2 * b, compiled_memory("bsd", hidden, t, 2 * b))
  bp_mem = memory_fit(b, bp_at_b, 2 * b, compiled_memory("bp_snn", hidden, t, 2 * b))
  memory_setting = {**setting, "memory_batches": list(batches)}
  harness.emit(NAME, "step_temp_bytes_per_sample", bsd_mem["temp_per_sample"], unit="bytes/sample",
               peer="bsd BP-SNN (same code)", peer_value=bp_mem["temp_per_sample"], higher_is_better=False,
               ours_name="bsd BSD", **memory_setting, ours_temp_bytes=[bsd_mem["temp_b1"], bsd_mem["temp_b2"]],
               peer_temp_bytes=[bp_mem["temp_b1"], bp_mem["temp_b2"]],
               note="slope of the compiled step's XLA temporaries between the two memory_batches")
  harness.emit(NAME, "step_temp_bytes_intercept", bsd_mem["temp_intercept"], unit="bytes",
               peer="bsd BP-SNN (same code)", peer_value=bp_mem["temp_intercept"], higher_is_better=False,
               ours_name="bsd BSD", **memory_setting,
               note="XLA temporaries that do not grow with the batch (temp at the first batch - batch * slope)")
  harness.emit(NAME, "step_argument_bytes", bsd_mem["arguments"], unit="bytes",
               peer="bsd BP-SNN (same code)", peer_value=bp_mem["arguments"], higher_is_better=False,
               ours_name="bsd BSD", **memory_setting,
               note="parameters + AdamW state + batch at --batch, a total (BSD has two pathways)")
  harness.emit(NAME, "compile_s", bsd_compile, unit="s", peer="bsd BP-SNN", peer_value=bp_compile,
               higher_is_better=False, ours_name="bsd BSD", **setting,
               total_benchmark_s=round(time.perf_counter() - start, 1))


if __name__ == "__main__":
  main()
