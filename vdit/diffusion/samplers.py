"""ODE samplers for rectified flow, integrating dx/dt = v(x, t) from t=1 (noise) to t=0.

Each sampler exposes a jittable single-step update so callers can loop in Python (progress bar,
one compile for all steps); `sample` runs the whole loop.
"""
import jax
import jax.numpy as jnp
import numpy as np

from vdit.diffusion.flow import shift_time

SAMPLERS = ("euler", "heun")


def time_grid(steps: int, shift: float) -> np.ndarray:
  """steps+1 decreasing times from 1 to 0, shifted toward noise."""
  if steps < 1:
    raise ValueError(f"Need at least 1 sampling step, got {steps}.")
  return np.asarray(shift_time(np.linspace(1.0, 0.0, steps + 1), shift), np.float32)


def euler_step(velocity_fn, x, t, t_next):
  return x + (t_next - t) * velocity_fn(x, t)


def heun_step(velocity_fn, x, t, t_next):
  """Heun's second-order step; the final step to t=0 falls back to Euler (v at t=0 is not needed)."""
  dt = t_next - t
  v = velocity_fn(x, t)
  x_euler = x + dt * v
  v_next = velocity_fn(x_euler, t_next)
  x_heun = x + dt * 0.5 * (v + v_next)
  return jnp.where(t_next > 0, x_heun, x_euler)


def step_fn(name: str):
  if name == "euler":
    return euler_step
  if name == "heun":
    return heun_step
  raise ValueError(f"Unknown sampler {name!r}; choose one of {SAMPLERS}.")


def velocity_evaluations(name: str, steps: int) -> int:
  return steps if name == "euler" else 2 * steps


def sample(velocity_fn, noise, *, steps: int, shift: float, sampler: str = "euler"):
  """Integrates from noise at t=1 to t=0; returns the final x."""
  update = step_fn(sampler)
  grid = time_grid(steps, shift)
  x = noise
  for t, t_next in zip(grid[:-1], grid[1:]):
    x = update(velocity_fn, x, jnp.float32(t), jnp.float32(t_next))
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
