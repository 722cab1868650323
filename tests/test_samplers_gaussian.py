"""Samplers on a Gaussian data distribution, where the exact velocity field and the exact ODE
solution are known in closed form.

Data x0 ~ N(mu, diag(s^2)), noise eps ~ N(0, I), x_t = (1 - t) x0 + t eps. Per dimension x_t is
N((1 - t) mu, c_t) with c_t = (1 - t)^2 s^2 + t^2, and the exact velocity is
E[eps - x0 | x_t] = (x - (1 - t) mu) (t - (1 - t) s^2) / c_t - mu. The probability-flow ODE maps
the noise eps to exactly mu + s * eps, so each sampler's error is measured per sample against
that map (no Monte-Carlo noise), and the sample mean and covariance against (mu, s^2).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdit.diffusion import samplers

_MU = jnp.asarray([0.5, -1.0, 2.0, 0.0])
_STD = jnp.asarray([0.3, 1.0, 0.15, 2.0])


@jax.jit  # the samplers call it hundreds of times: one dispatch each, not one per operation
def exact_velocity(x, t):
  c = (1 - t) ** 2 * _STD ** 2 + t ** 2
  return (x - (1 - t) * _MU) * (t - (1 - t) * _STD ** 2) / c - _MU


_N = 20000  # samples: Monte-Carlo errors of the moments below are about s / sqrt(_N)


@functools.cache  # tests share solves (e.g. every sampler at 8, 16 and 32 steps)
def _solve(name, steps):
  noise = jax.random.normal(jax.random.key(0), (_N, 4))
  x = samplers.sample(exact_velocity, noise, steps=steps, shift=1.0, sampler=name)
  return np.asarray(x), np.asarray(_MU + _STD * noise)


def _error(name, steps):
  """Root-mean-square distance of the samples from the exact ODE solution."""
  x, exact = _solve(name, steps)
  return float(np.sqrt(np.mean((x - exact) ** 2)))


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2), ("unipc", 2)])
def test_error_shrinks_at_the_solver_order(name, order):
  errors = [_error(name, steps) for steps in (8, 16, 32)]
  assert errors[0] > errors[1] > errors[2]
  # Halving the step size divides the error by about 2^order (measured: Euler 1.96, Heun 4.1,
  # DPM-Solver++(2M) 3.3 and UniPC 5.6, whose first and last steps are first order).
  assert errors[1] / errors[2] > (1.7 if order == 1 else 2.7), errors


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_sample_mean_and_covariance_converge_to_the_data(name):
  cov_errors = []
  for steps in (8, 32, 128):
    x, exact = _solve(name, steps)
    cov_errors.append(np.abs(np.cov(x.T) - np.cov(exact.T)).max())
  assert cov_errors[0] > cov_errors[1] > cov_errors[2]
  # Against the truth at 128 steps: Monte-Carlo standard errors at _N=20000 are s/141 for the
  # mean and about s/200 for the std; allow 4 of them plus 1% for the solver.
  np.testing.assert_allclose(x.mean(0), _MU, atol=float(4 * _STD.max() / 141))
  np.testing.assert_allclose(x.std(0), _STD, rtol=0.01 + 4 / 200)
  off_diagonal = np.corrcoef(x.T) - np.eye(4)
  assert np.abs(off_diagonal).max() < 4 / np.sqrt(_N)


@pytest.mark.parametrize("name,bound", [("dpmpp_2m", 0.3), ("unipc", 0.15)])
def test_multistep_beats_euler_at_equal_model_calls(name, bound):
  # One velocity evaluation per step, like Euler (measured error ratios at 16 steps: DPM-Solver++
  # 0.19, UniPC 0.072).
  assert samplers.velocity_evaluations(name, 16) == samplers.velocity_evaluations("euler", 16)
  assert _error(name, 16) < bound * _error("euler", 16)


def test_unipc_corrector_improves_on_its_predictor():
  # UniPC's predictor is DPM-Solver++(2M); its corrector, at no extra model call, is what makes it
  # more accurate (measured error ratio 0.38 at 16 steps).
  assert _error("unipc", 16) < 0.6 * _error("dpmpp_2m", 16)


@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_first_multistep_step_equals_euler(name):
  x = jax.random.normal(jax.random.key(1), (8, 4))
  carry = samplers.initial_carry(name, x)
  x_multi, _ = samplers.step_fn(name)(exact_velocity, x, jnp.float32(1.0), jnp.float32(0.7), carry)
  x_euler, _ = samplers.step_fn("euler")(exact_velocity, x, jnp.float32(1.0), jnp.float32(0.7), {})
  np.testing.assert_allclose(x_multi, x_euler, rtol=1e-6, atol=1e-6)
