"""Distribution distances between feature sets: Fréchet distance (FVD/FID) and KID.

All arithmetic is float64 NumPy on the host: the sets are small (N x D features) and these numbers
are compared across papers, so they must not depend on the accelerator's matmul precision.
"""
import numpy as np
from vdit.core.errors import UserError


class InsufficientSamplesError(UserError):
  """A feature set is too small for the statistic to mean anything."""


def gaussian_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean [D] and unbiased covariance [D, D] of features [N, D]."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise InsufficientSamplesError(f"need features [N >= 2, D], got shape {x.shape}")
  return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_moments(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

  tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2)) with A = S1^(1/2); A S2 A is symmetric positive
  semi-definite, so its root comes from an eigendecomposition: no complex parts or failed
  convergence as with a general matrix square root of the non-symmetric S1 S2.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  root1 = _psd_sqrt(sigma1)
  middle = root1 @ sigma2 @ root1
  trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets [N1, D], [N2, D]."""
  _check_pair(features1, features2)
  return frechet_distance_from_moments(*gaussian_moments(features1), *gaussian_moments(features2))


def min_samples_for_frechet(dim: int) -> int:
  """Samples a set needs for a full-rank covariance in `dim` dimensions; fewer and the distance
  measures the rank deficiency rather than the distributions."""
  return dim + 1


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, subset_size: int,
                              num_subsets: int, seed: int = 0) -> tuple[float, float]:
  """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3,
  averaged over `num_subsets` random subsets of `subset_size` from each set (drawn from `seed`,
  so the same features always give the same number). Returns (mean, standard deviation).
  """
  _check_pair(features1, features2)
  x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  if subset_size < 2 or subset_size > min(len(x), len(y)):
    raise InsufficientSamplesError(
        f"KID subsets of {subset_size} need at least that many samples in both sets "
        f"(have {len(x)} and {len(y)}), and at least 2")
  rng = np.random.default_rng(seed)
  values = [unbiased_mmd2(x[rng.choice(len(x), subset_size, replace=False)],
                          y[rng.choice(len(y), subset_size, replace=False)])
            for _ in range(num_subsets)]
  return float(np.mean(values)), float(np.std(values))


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 estimate with the cubic polynomial kernel; diagonal terms excluded."""
  dim = x.shape[1]
  kernel = lambda a, b: (a @ b.T / dim + 1.0) ** 3
  m, n = len(x), len(y)
  kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2.0 * kxy.mean())


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _check_pair(a, b):
  a, b = np.asarray(a), np.asarray(b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"feature sets must be [N, D] with the same D, got {a.shape} and {b.shape}")
