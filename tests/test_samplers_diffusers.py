"""Our sampler updates against diffusers' schedulers on the same velocity function and time grid
(test-only extra: torch + diffusers; skipped when absent).

Each solver runs over the scheduler's sigmas (t = sigma for flow models), or over our own time grid
where the scheduler is given it, feeding both the same exact Gaussian velocity
(tests/test_samplers_gaussian.py), and every step's output must agree to float32 round-off: rtol
1e-5, atol 1e-5 on values of order 1.
"""
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch", reason="the diffusers comparison needs torch (pip install torch diffusers)")
diffusers = pytest.importorskip("diffusers", reason="the diffusers comparison needs diffusers (pip install diffusers)")

from tests.test_samplers_gaussian import exact_velocity  # noqa: E402
from vdit.diffusion import samplers  # noqa: E402


def _noise(n=64):
  return np.asarray(np.random.default_rng(0).normal(size=(n, 4)), np.float32)


def _compare(scheduler, name, steps=10, grid=None):
  """Steps both solvers side by side; returns diffusers' final sample. Ours takes the times in
  `grid` (the scheduler's timesteps then set by the caller), else the scheduler's `steps` sigmas."""
  if grid is None:
    scheduler.set_timesteps(steps)
  sigmas = scheduler.sigmas.numpy().astype(np.float64)
  grid = sigmas if grid is None else grid
  x_ours = _noise()
  x_theirs = torch.from_numpy(x_ours.copy())
  carry = samplers.initial_carry(name, jnp.asarray(x_ours))
  update = samplers.step_fn(name)
  for i, timestep in enumerate(scheduler.timesteps):
    t, t_next = jnp.float32(grid[i]), jnp.float32(grid[i + 1])
    v = np.array(exact_velocity(jnp.asarray(x_theirs.numpy()), jnp.float32(sigmas[i])))
    x_theirs = scheduler.step(torch.from_numpy(v), timestep, x_theirs).prev_sample
    x_next, carry = update(exact_velocity, jnp.asarray(x_ours), t, t_next, carry)
    x_ours = np.asarray(x_next)
    np.testing.assert_allclose(x_ours, x_theirs.numpy(), rtol=1e-5, atol=1e-5, err_msg=f"step {i}")
  return x_theirs.numpy()


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_matches_flow_match_euler_discrete(shift):
  _compare(diffusers.FlowMatchEulerDiscreteScheduler(shift=shift), "euler")


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpmpp_2m_matches_dpm_solver_multistep(shift):
  scheduler = diffusers.DPMSolverMultistepScheduler(
      use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
      algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero", lower_order_final=True)
  _compare(scheduler, "dpmpp_2m")


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_unipc_matches_unipc_multistep_on_our_time_grid(shift):
  # Given our unshifted linspace, diffusers shifts it as we do; it starts at 1 - 1e-6 where our
  # grid starts at 1, which unipc accounts for (measured max deviation 7e-6).
  steps = 10
  scheduler = diffusers.UniPCMultistepScheduler(
      use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, solver_order=2,
      predict_x0=True, solver_type="bh2", lower_order_final=True, disable_corrector=[])
  scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
  grid = samplers.time_grid(steps, shift)
  np.testing.assert_allclose(scheduler.sigmas.numpy(), grid, atol=2e-6)
  final = _compare(scheduler, "unipc", grid=grid)
  ours = samplers.sample(exact_velocity, jnp.asarray(_noise()), steps=steps, shift=shift,
                         sampler="unipc")
  np.testing.assert_allclose(np.asarray(ours), final, rtol=1e-5, atol=1e-5)
