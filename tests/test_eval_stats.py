"""Fréchet distance and KID against closed forms and direct NumPy/SciPy computations."""
import itertools

import numpy as np
import pytest
import scipy.linalg

from vdit.eval import stats


def _random_covariance(rng, dim):
  a = rng.normal(size=(dim, dim))
  return a @ a.T / dim + 0.1 * np.eye(dim)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
  mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
  var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  # Commuting covariances: tr((S1 S2)^1/2) = sum sqrt(v1 v2).
  expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
  got = stats.frechet_distance_from_moments(mu1, np.diag(var1), mu2, np.diag(var2))
  assert got == pytest.approx(expected, rel=1e-12)
  assert stats.frechet_distance_from_moments(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
  rng = np.random.default_rng(0)
  for dim in (2, 7, 32):
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = _random_covariance(rng, dim), _random_covariance(rng, dim)
    root = scipy.linalg.sqrtm(s1 @ s2)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root))
    assert stats.frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9)


def test_frechet_distance_of_samples_converges_to_the_gaussians():
  rng = np.random.default_rng(1)
  dim, n = 4, 200_000
  mu1, mu2 = np.zeros(dim), np.full(dim, 0.5)
  s1, s2 = _random_covariance(rng, dim), _random_covariance(rng, dim)
  x = rng.multivariate_normal(mu1, s1, size=n)
  y = rng.multivariate_normal(mu2, s2, size=n)
  truth = stats.frechet_distance_from_moments(mu1, s1, mu2, s2)
  # Sampling error of the moments at n = 2e5 is ~1e-2 relative on these scales.
  assert stats.frechet_distance(x, y) == pytest.approx(truth, rel=0.03)


def _direct_mmd2(x, y):
  """The unbiased estimator written out as explicit sums over pairs."""
  d = x.shape[1]
  k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
  xy = sum(k(a, b) for a in x for b in y) / (m * n)
  return xx + yy - 2 * xy


def test_mmd2_matches_the_direct_pairwise_sum():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(9, 5)), rng.normal(0.3, 1.2, size=(7, 5))
  assert stats.unbiased_mmd2(x, y) == pytest.approx(_direct_mmd2(x, y), rel=1e-12)


def _gaussian_mmd2(mu_p, cov_p, mu_q, cov_q):
  """E[MMD^2] for k = (x.y/d + 1)^3 from Gaussian moments: expanding the cube,
  E k(x, y) = E(x.y)^3/d^3 + 3 E(x.y)^2/d^2 + 3 E(x.y)/d + 1 with E(x.y)^k = <M_k(P), M_k(Q)>."""
  d = len(mu_p)

  def moments(mu, cov):
    m2 = cov + np.outer(mu, mu)
    m3 = (np.einsum("i,j,k->ijk", mu, mu, mu) + np.einsum("i,jk->ijk", mu, cov)
          + np.einsum("j,ik->ijk", mu, cov) + np.einsum("k,ij->ijk", mu, cov))
    return mu, m2, m3

  p, q = moments(mu_p, cov_p), moments(mu_q, cov_q)
  return (np.sum((p[2] - q[2]) ** 2) / d**3 + 3 * np.sum((p[1] - q[1]) ** 2) / d**2
          + 3 * np.sum((p[0] - q[0]) ** 2) / d)


def test_kid_converges_to_the_closed_form_for_gaussians():
  rng = np.random.default_rng(3)
  mu_p, mu_q = np.zeros(3), np.array([0.6, -0.3, 0.2])
  cov_p, cov_q = np.eye(3), np.array([[1.5, 0.3, 0.0], [0.3, 0.8, 0.2], [0.0, 0.2, 1.2]])
  truth = _gaussian_mmd2(mu_p, cov_p, mu_q, cov_q)
  x = rng.multivariate_normal(mu_p, cov_p, size=50_000)
  y = rng.multivariate_normal(mu_q, cov_q, size=50_000)
  mean, std = stats.kernel_inception_distance(x, y, subset_size=500, num_subsets=100, seed=0)
  # The mean of 100 subset estimates has a standard error of std / 10 (about 2% here): 4 of them.
  assert mean == pytest.approx(truth, abs=4 * std / 10), (mean, std, truth)
  same, std_same = stats.kernel_inception_distance(x, rng.multivariate_normal(mu_p, cov_p, size=50_000),
                                                   subset_size=500, num_subsets=100)
  assert abs(same) < 4 * std_same / 10


def test_same_features_always_give_the_same_numbers():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(50, 8)), rng.normal(0.5, 1.0, size=(60, 8))
  first = (stats.frechet_distance(x, y), stats.kernel_inception_distance(x, y, subset_size=20, num_subsets=10))
  again = (stats.frechet_distance(x.copy(), y.copy()),
           stats.kernel_inception_distance(x.copy(), y.copy(), subset_size=20, num_subsets=10))
  assert first == again


def test_too_few_samples_are_refused():
  x = np.zeros((5, 3))
  with pytest.raises(stats.InsufficientSamplesError, match="KID subsets of 10"):
    stats.kernel_inception_distance(x, x, subset_size=10, num_subsets=2)
  with pytest.raises(stats.InsufficientSamplesError):
    stats.gaussian_moments(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="same D"):
    stats.frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
  assert stats.min_samples_for_frechet(64) == 65
