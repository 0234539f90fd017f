"""ReCo against a direct numpy computation (diagonal and relaxed terms), codes, and the Frechet distance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bsd import codes, frechet, losses


def reco_numpy(a, b, lam, negatives=None, reduction="sum"):
  a = a.reshape(len(a), -1).astype(np.float64)
  b = b.reshape(len(b), -1).astype(np.float64)
  n = len(a)
  total = 0.0
  for k in range(n):
    for j in range(n):
      c = a[k] @ b[j] / (np.linalg.norm(a[k]) * np.linalg.norm(b[j]))
      if k == j:
        total += (1.0 - c) ** 2
      elif negatives is None or negatives[k, j]:
        total += lam * max(0.0, c) ** 2
  return total / n if reduction == "mean" else total


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("lam", [0.0, 0.6, 2.0])
def test_reco_matches_numpy(lam, reduction):
  rng = np.random.default_rng(0)
  # A shared component makes many off-diagonal cosines positive, so the relaxed term is exercised, while
  # others stay negative and must cost nothing.
  a = rng.normal(size=(9, 3, 5)) + 0.3
  b = rng.normal(size=(9, 3, 5)) + 0.3
  cos = losses.cosine_matrix(jnp.asarray(a), jnp.asarray(b))
  off = np.asarray(cos)[~np.eye(9, dtype=bool)]
  assert (off > 0).any() and (off < 0).any()
  got = losses.reco_loss(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), lam, reduction=reduction)
  np.testing.assert_allclose(float(got), reco_numpy(a, b, lam, reduction=reduction), rtol=1e-5)


def test_reco_with_negatives_mask_matches_numpy():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(7, 6)) + 0.5, rng.normal(size=(7, 6)) + 0.5
  negatives = rng.random((7, 7)) < 0.5
  got = losses.reco_loss(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 0.6,
                         negatives=jnp.asarray(negatives))
  np.testing.assert_allclose(float(got), reco_numpy(a, b, 0.6, negatives), rtol=1e-5)
  assert abs(float(got) - reco_numpy(a, b, 0.6)) > 1e-3  # the mask mattered


def test_reco_minimum_and_relaxation():
  # Identical, mutually orthogonal pairs: zero loss. Anti-correlated off-diagonal pairs: still zero (relaxed).
  eye = jnp.eye(4)
  assert float(losses.reco_loss(eye, eye, 0.6)) == pytest.approx(0.0, abs=1e-6)
  a = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
  assert float(losses.reco_loss(a, a, 0.6)) == pytest.approx(0.0, abs=1e-6)
  # Gradients exist for both pathways.
  ga, gb = jax.grad(lambda x, y: losses.reco_loss(x, y, 0.6), argnums=(0, 1))(
      jax.random.normal(jax.random.key(0), (5, 4)), jax.random.normal(jax.random.key(1), (5, 4)))
  assert float(jnp.abs(ga).sum()) > 0 and float(jnp.abs(gb).sum()) > 0


def test_a_silent_row_adds_nothing_and_takes_a_bounded_gradient():
  """An all-zero voltage row (a sample whose layer is silent): its cosines are 0, the other rows' loss terms are as
  without it, and its gradient is that of the unnormalised row (toward aligning it), not 1/sqrt(eps) times the
  others' (and not zero, which would leave a layer silent for every sample silent for good)."""
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
  b[0] = 0.0
  cos = np.asarray(losses.cosine_matrix(jnp.asarray(a), jnp.asarray(b)))
  assert np.all(cos[:, 0] == 0.0)
  reference = (1.0 + sum((1 - cos[k, k]) ** 2 + 0.6 * sum(max(0.0, cos[k, j]) ** 2 for j in range(5) if j != k)
                         for k in range(1, 5)) + 0.6 * sum(max(0.0, cos[0, j]) ** 2 for j in range(1, 5)))
  ga, gb = jax.grad(lambda x, y: losses.reco_loss(x, y, 0.6), argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
  assert float(losses.reco_loss(jnp.asarray(a), jnp.asarray(b), 0.6)) == pytest.approx(reference, rel=1e-5)
  # d loss / d b_0 through the identity: the diagonal term (1 - a_0/|a_0| . b_0)^2 gives -2 a_0/|a_0| at b_0 = 0;
  # the relaxed terms max(0, C_k0)^2 have zero gradient there (C_k0 = 0)
  np.testing.assert_allclose(np.asarray(gb[0]), -2.0 * a[0] / np.linalg.norm(a[0]), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(np.asarray(ga)))
  assert 0 < float(jnp.abs(gb[1:]).max()) < 10 and float(jnp.abs(ga).max()) < 10


def test_cosine_cross_entropy_decodes_codes():
  table = jnp.asarray(codes.class_codes("block", 4, 12))
  ce, logits = losses.cosine_cross_entropy(table * 3.0, table, jnp.arange(4), scale=10.0)
  np.testing.assert_array_equal(np.asarray(logits.argmax(-1)), np.arange(4))
  assert float(ce) < 0.01


def test_codes():
  block = codes.class_codes("block", 10, 100)
  assert block.shape == (10, 100) and set(np.unique(block)) == {0.0, 1.0}
  np.testing.assert_array_equal(block @ block.T, 10 * np.eye(10))
  random = codes.class_codes("random", 10, 64, seed=3)
  assert len(np.unique(random, axis=0)) == 10
  np.testing.assert_array_equal(codes.decoding_codes("random", random), 2 * random - 1)
  pop = codes.population_code(np.array([-3.0, 0.0, 3.0]), 13, -3.0, 3.0, 0.25)
  np.testing.assert_array_equal(pop.argmax(-1), [0, 6, 12])
  assert pop.sum(-1).min() >= 1
  # a value past an end takes that end's code instead of an empty (all-silent) target; numpy and JAX agree
  outside = np.array([-4.2, 3.9])
  np.testing.assert_array_equal(codes.population_code(outside, 13, -3.0, 3.0, 0.25), pop[[0, 2]])
  np.testing.assert_array_equal(np.asarray(codes.population_code(jnp.asarray(outside), 13, -3.0, 3.0, 0.25)),
                                pop[[0, 2]])
  with pytest.raises(ValueError, match="code_dim"):
    codes.class_codes("block", 10, 5)


def test_frechet_distance():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(4000, 3))
  assert frechet.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  # Two Gaussians with identity covariance and means 0 and m: the distance is |m|^2 (+ sampling noise).
  b = rng.normal(size=(4000, 3)) + np.array([2.0, 0.0, 0.0])
  assert frechet.frechet_distance(a, b) == pytest.approx(4.0, abs=0.15)


def test_frechet_distance_covariance_term():
  """Samples with exactly zero mean and sample covariances diag(1, 4, 9) and diag(9, 4, 1): the distance is
  Tr(S1 + S2 - 2 (S1 S2)^(1/2)) = (1 + 9 - 6) + (4 + 4 - 8) + (9 + 1 - 6) = 8."""
  rng = np.random.default_rng(1)

  def with_covariance(stds):
    z = rng.normal(size=(500, 3))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance exactly I
    return z * np.asarray(stds)

  a, b = with_covariance([1.0, 2.0, 3.0]), with_covariance([3.0, 2.0, 1.0])
  assert frechet.frechet_distance(a, b) == pytest.approx(8.0, abs=1e-8)
  assert frechet.frechet_distance(a + np.array([0.0, 1.0, 2.0]), b) == pytest.approx(8.0 + 5.0, abs=1e-8)


def test_frequency_weighted_reconstruction():
  """An error of constant 0.5 lives in the DC bin (weight 1 whatever the boost); a 0.5 checkerboard lives in the
  highest radial frequency (weight 1 + boost). With the orthonormal FFT (Parseval) each spectral term is then
  weight * 0.25."""
  x = jnp.zeros((2, 8, 8, 1))
  flat = jnp.ones((2, 8, 8, 1)) * 0.5
  checker = 0.5 * (-1.0) ** (jnp.arange(8)[:, None] + jnp.arange(8)[None, :])[None, :, :, None] * jnp.ones((2, 1, 1, 1))
  assert float(losses.reconstruction_loss(x, flat)) == pytest.approx(0.25)
  for boost in (0.0, 2.0):
    assert float(losses.reconstruction_loss(x, flat, fft_weight=1.0, high_boost=boost)) == pytest.approx(0.5)
    assert float(losses.reconstruction_loss(x, checker, fft_weight=1.0, high_boost=boost)) == pytest.approx(
        0.25 + 0.25 * (1.0 + boost), rel=1e-5)
