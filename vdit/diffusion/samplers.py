"""ODE samplers for rectified flow, integrating dx/dt = v(x, t) from t=1 (noise) to t=0.

Each sampler exposes a jittable single-step update so callers can loop in Python (progress bar,
one compile for all steps); `sample` runs the whole loop.
"""
import jax
import jax.numpy as jnp
import numpy as np

from vdit.diffusion.flow import shift_time

SAMPLERS = ("euler", "heun", "dpmpp_2m")


def time_grid(steps: int, shift: float) -> np.ndarray:
  """steps+1 decreasing times from 1 to 0, shifted toward noise."""
  if steps < 1:
    raise ValueError(f"Need at least 1 sampling step, got {steps}.")
  return np.asarray(shift_time(np.linspace(1.0, 0.0, steps + 1), shift), np.float32)


# Every update is `(x_next, carry) = update(velocity_fn, x, t, t_next, carry)`; the carry holds a
# multistep solver's history (empty for one-step solvers) and starts as initial_carry(name, x).


def euler_step(velocity_fn, x, t, t_next, carry):
  return x + (t_next - t) * velocity_fn(x, t), carry


def heun_step(velocity_fn, x, t, t_next, carry):
  """Heun's second-order step; the final step to t=0 falls back to Euler (v at t=0 is not needed)."""
  dt = t_next - t
  v = velocity_fn(x, t)
  x_euler = x + dt * v
  v_next = velocity_fn(x_euler, t_next)
  x_heun = x + dt * 0.5 * (v + v_next)
  return jnp.where(t_next > 0, x_heun, x_euler), carry


def _log_snr(t):
  """lambda = log(alpha / sigma) = log((1 - t) / t): -inf at t=1 (noise), +inf at t=0."""
  return jnp.log1p(-t) - jnp.log(t)


def dpmpp_2m_step(velocity_fn, x, t, t_next, carry):
  """DPM-Solver++(2M) (Lu et al. 2022) for x_t = (1 - t) x0 + t eps, one model call per step.

  With the data prediction x0 = x - t v and h = lambda(t_next) - lambda(t), the first-order update
  x' = (t'/t) x + (1 - t'/t) x0 is exactly Euler; the second-order one replaces x0 with
  (1 + 1/2r) x0 - (1/2r) x0_prev, r = h_prev / h. The first step (from t=1, where h_prev is
  infinite) and the last (to t=0) are first order, as in diffusers' DPMSolverMultistepScheduler.
  """
  x0 = x - t * velocity_fn(x, t)
  h = _log_snr(t_next) - _log_snr(t)
  r = carry["h"] / h
  second_order = carry["started"] & jnp.isfinite(r) & (r > 0) & (t_next > 0)
  coef = jnp.where(second_order, 0.5 / jnp.where(second_order, r, 1.0), 0.0)
  data = (1.0 + coef) * x0 - coef * carry["x0"]
  x_next = (t_next / t) * x + (1.0 - t_next / t) * data
  return x_next, {"x0": x0, "h": h, "started": jnp.asarray(True)}


_STEPS = {"euler": euler_step, "heun": heun_step, "dpmpp_2m": dpmpp_2m_step}


def step_fn(name: str):
  if name not in _STEPS:
    raise ValueError(f"Unknown sampler {name!r}; choose one of {SAMPLERS}.")
  return _STEPS[name]


def initial_carry(name: str, x):
  """The solver history before the first step (shaped like x for multistep solvers)."""
  if name == "dpmpp_2m":
    return {"x0": jnp.zeros_like(x), "h": jnp.float32(jnp.inf), "started": jnp.asarray(False)}
  step_fn(name)
  return {}


def velocity_evaluations(name: str, steps: int) -> int:
  return 2 * steps if name == "heun" else steps


def sample(velocity_fn, noise, *, steps: int, shift: float, sampler: str = "euler"):
  """Integrates from noise at t=1 to t=0; returns the final x."""
  update = step_fn(sampler)
  grid = time_grid(steps, shift)
  x, carry = noise, initial_carry(sampler, noise)
  for t, t_next in zip(grid[:-1], grid[1:]):
    x, carry = update(velocity_fn, x, jnp.float32(t), jnp.float32(t_next), carry)
  return x


def guided_velocity(model_velocity, x, t, cond, uncond, scale: float):
  """Classifier-free guidance v_u + s (v_c - v_u), cond and uncond in one batched call.

  `model_velocity(x, t, context)` takes a batch; cond/uncond are context pytrees with a leading batch
  dim. With uncond None (callers pass None at scale 1) only the conditional half runs.
  """
  if uncond is None:
    return model_velocity(x, t, cond)
  both = _concat(cond, uncond)
  v = model_velocity(jnp.concatenate([x, x]), t, both)
  v_cond, v_uncond = jnp.split(v, 2)
  return v_uncond + scale * (v_cond - v_uncond)


def _concat(a, b):
  return jax.tree.map(lambda u, w: jnp.concatenate([u, w]), a, b)
