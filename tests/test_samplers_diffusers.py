"""Our sampler updates against diffusers' schedulers on the same velocity function and time grid
(test-only extra: torch + diffusers; skipped when absent).

Each solver runs over the scheduler's own sigmas (t = sigma for flow models), feeding both the
same exact Gaussian velocity (tests/test_samplers_gaussian.py), and every step's output must agree
to float32 round-off: rtol 1e-5, atol 1e-5 on values of order 1.
"""
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the diffusers comparison needs torch (pip install torch diffusers)")
diffusers = pytest.importorskip("diffusers", reason="the diffusers comparison needs diffusers (pip install diffusers)")

from tests.test_samplers_gaussian import exact_velocity  # noqa: E402
from vdit.diffusion import samplers  # noqa: E402


def _compare(scheduler, name, steps=10, n=64):
  scheduler.set_timesteps(steps)
  sigmas = scheduler.sigmas.numpy().astype(np.float64)
  x_ours = np.asarray(np.random.default_rng(0).normal(size=(n, 4)), np.float32)
  x_theirs = torch.from_numpy(x_ours.copy())
  carry = samplers.initial_carry(name, jnp.asarray(x_ours))
  update = samplers.step_fn(name)
  for i, timestep in enumerate(scheduler.timesteps):
    t, t_next = jnp.float32(sigmas[i]), jnp.float32(sigmas[i + 1])
    v = np.array(exact_velocity(jnp.asarray(x_theirs.numpy()), t))
    x_theirs = scheduler.step(torch.from_numpy(v), timestep, x_theirs).prev_sample
    x_next, carry = update(exact_velocity, jnp.asarray(x_ours), t, t_next, carry)
    x_ours = np.asarray(x_next)
    np.testing.assert_allclose(x_ours, x_theirs.numpy(), rtol=1e-5, atol=1e-5, err_msg=f"step {i}")


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_matches_flow_match_euler_discrete(shift):
  _compare(diffusers.FlowMatchEulerDiscreteScheduler(shift=shift), "euler")


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpmpp_2m_matches_dpm_solver_multistep(shift):
  scheduler = diffusers.DPMSolverMultistepScheduler(
      use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
      algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero", lower_order_final=True)
  _compare(scheduler, "dpmpp_2m")
