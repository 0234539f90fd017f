"""A Frechet distance between image sets in the feature space of a classifier trained on the same data.

The paper scores generation with FID (Inception-v3 features, Sec. 4.3). No Inception weights ship offline, so we
compute the same statistic, ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}), on the penultimate ReLU
features of the foundation's reference MLP (`core.classifier.models.MLP`) trained on the training split. We call
it "classifier-feature Frechet distance" (CFD), never FID: its scale is not comparable to the paper's numbers,
only the ordering of methods measured with the same classifier is.
"""

from __future__ import annotations

import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
from flax import nnx

from core.classifier import models


def _to_float(images) -> jax.Array:
  return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


def train_feature_classifier(images: np.ndarray, labels: np.ndarray, *, hidden=(256, 128), steps: int = 500,
                             batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0
                             ) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
  """Trains the reference MLP with Adam; returns (features(images) -> [N, hidden[-1]], predict -> labels)."""
  key = _cache_key(images, labels, tuple(hidden), steps, batch_size, learning_rate, seed)
  return _trained(key, images, labels)


def _cache_key(images, labels, *settings):
  # The same data and settings give the same classifier: train it once per process.
  return (images.shape, str(images.dtype), float(np.asarray(images, np.float64).sum()), int(labels.sum()), settings)


_CACHE: dict = {}


def _trained(key, images, labels):
  if key in _CACHE:
    return _CACHE[key]
  _, _, _, _, (hidden, steps, batch_size, learning_rate, seed) = key
  model = models.MLP(int(np.prod(images.shape[1:])), hidden, int(labels.max()) + 1, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model)
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits = nnx.merge(graphdef, p)(_to_float(x))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(labels), batch_size)
    params, opt_state = step(params, opt_state, images[idx], labels[idx])

  @jax.jit
  def features(params, x):
    m = nnx.merge(graphdef, params)
    h = _to_float(x).reshape(x.shape[0], -1)
    for layer in m.hidden:
      h = jax.nn.relu(layer(h))
    return h, m.head(h).argmax(-1)

  def feature_fn(x):
    return np.concatenate([np.asarray(features(params, x[i:i + 1000])[0]) for i in range(0, len(x), 1000)])

  def predict_fn(x):
    return np.concatenate([np.asarray(features(params, x[i:i + 1000])[1]) for i in range(0, len(x), 1000)])

  _CACHE[key] = (feature_fn, predict_fn)
  return _CACHE[key]


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Frechet distance between Gaussians fitted to two feature sets [N, F] (float64, scipy's sqrtm)."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():
    # A set of poor reconstructions can leave some features constant (singular covariance); sqrtm still
    # returns the right square root then, with a warning we do not want in every run's log.
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
  if not np.all(np.isfinite(covmean)):
    offset = 1e-6 * np.eye(len(cov_a))  # the usual FID fallback: regularise and retry
    covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
  if np.iscomplexobj(covmean):
    # Numerical error leaves tiny imaginary parts; a large one means the covariances are too poorly estimated
    # (too few samples for the feature width) for the distance to mean much.
    if np.abs(covmean.imag).max() > 1e-3 * max(abs(np.trace(covmean.real)), 1e-12):
      warnings.warn(f"Frechet distance: sqrtm has imaginary parts up to {np.abs(covmean.imag).max():.3g}; "
                    f"{len(a)} and {len(b)} samples for {a.shape[1]} features: use more samples.", RuntimeWarning)
    covmean = covmean.real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean))
