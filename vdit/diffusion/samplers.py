"""ODE samplers for rectified flow, integrating dx/dt = v(x, t) from t=1 (noise) to t=0.

Each sampler exposes a jittable single-step update so callers can loop in Python (progress bar,
one compile for all steps); `sample` runs the whole loop.
"""
import jax
import jax.numpy as jnp
import numpy as np

from vdit.diffusion.flow import shift_time

# euler: first order; heun: second order at two model calls per step; dpmpp_2m (DPM-Solver++(2M))
# and unipc (UniPC bh2, order 2 with its corrector): second order or better at one call per step.
SAMPLERS = ("euler", "heun", "dpmpp_2m", "unipc")


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


# diffusers' UniPC starts its flow sigmas at 1 - 1e-6 instead of 1 (lambda = -inf). Taking lambda
# there too keeps unipc on its trajectory from our t=1; the t=1 limit would drop the x0 difference
# in the second step and land ~5e-3 away (equally accurate on the Gaussian test).
_UNIPC_T_MAX = 1.0 - 1e-6


def _unic_weights(h, q):
  """UniC-2 (bh2) weights (rho_prev, rho_new) of the x0 differences q (x0 - x0_prev) and
  (x0_new - x0) for a step h in lambda after one of h / q. They solve [[1, 1], [-1/q, 1]] rho = b,
  the order conditions b_k on phi_k(-h) scaled by B(h) = expm1(-h)."""
  e = jnp.expm1(-h)
  phi = e / -h - 1.0
  b1 = phi / e
  b2 = 2.0 * (phi / -h - 0.5) / e
  rho_prev = q * (b1 - b2) / (1.0 + q)
  return rho_prev, b1 - rho_prev


def unipc_step(velocity_fn, x, t, t_next, carry):
  """UniPC (Zhao et al. 2023; bh2, order 2, data prediction x0 = x - t v), one model call per step.

  Predictor and corrector share DPM-Solver++'s form x' = (t'/s) x_s + (1 - t'/s)(x0_s + d) for a
  step from s to t', with d built from x0 differences in lambda; the predictor UniP-2 is exactly
  DPM-Solver++(2M). The corrector UniC needs x0 at the new point, so it runs at the start of the
  next step: this call's model output at the predicted x redoes the previous update from the
  carried x_s with a higher-order d, and the predictor continues from the corrected point, as in
  diffusers' UniPCMultistepScheduler. After the first step the x passed in only feeds the model;
  the update is elementwise, so frames a caller imposes on x and on the output still hold. The
  first predictor step and the last (to t=0, lower_order_final) are first order, and the last
  output is not corrected.
  """
  x0 = x - t * velocity_fn(x, t)
  lam = _log_snr(jnp.minimum(t, _UNIPC_T_MAX))
  s, started, second = carry["t"], carry["order"] > 0, carry["order"] == 2
  h = lam - carry["lam"]  # the step s -> t just taken; inf before the first
  q = h / carry["h"]  # used only after a second-order step, when both are finite
  rho_prev, rho_new = _unic_weights(h, q)
  d = (jnp.where(second, rho_prev * q, 0.0) * (carry["x0"] - carry["x0_prev"])
       + jnp.where(second, rho_new, 0.5) * (x0 - carry["x0"]))
  x = jnp.where(started, (t / s) * carry["x"] + (1.0 - t / s) * (carry["x0"] + d), x)

  second_next = started & (t_next > 0)
  q_next = (_log_snr(t_next) - lam) / h
  d = jnp.where(second_next, 0.5 * q_next, 0.0) * (x0 - carry["x0"])
  x_next = (t_next / t) * x + (1.0 - t_next / t) * (x0 + d)
  order = jnp.where(second_next, 2, 1).astype(jnp.int32)
  return x_next, {"x": x, "x0": x0, "x0_prev": carry["x0"], "t": t, "lam": lam, "h": h,
                  "order": order}


_STEPS = {"euler": euler_step, "heun": heun_step, "dpmpp_2m": dpmpp_2m_step, "unipc": unipc_step}


def step_fn(name: str):
  if name not in _STEPS:
    raise ValueError(f"Unknown sampler {name!r}; choose one of {SAMPLERS}.")
  return _STEPS[name]


def initial_carry(name: str, x):
  """The solver history before the first step (shaped like x for multistep solvers)."""
  if name == "dpmpp_2m":
    return {"x0": jnp.zeros_like(x), "h": jnp.float32(jnp.inf), "started": jnp.asarray(False)}
  if name == "unipc":
    # The last predictor step: its start x at time t (lambda lam), its order (0: none yet) and step
    # h in lambda, and the x0 predictions at its start and the step before. Separate zero arrays:
    # callers donate the carry, and one buffer cannot be donated twice.
    return {"x": jnp.zeros_like(x), "x0": jnp.zeros_like(x), "x0_prev": jnp.zeros_like(x),
            "t": jnp.float32(1.0), "lam": jnp.float32(-jnp.inf), "h": jnp.float32(jnp.inf),
            "order": jnp.int32(0)}
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
  v_cond, v_uncond = conditional_and_unconditional(model_velocity, x, t, cond, uncond)
  return v_uncond + scale * (v_cond - v_uncond)


def conditional_and_unconditional(model_velocity, x, t, cond, uncond):
  """(v_cond, v_uncond) from one batched call of the network on both contexts."""
  v = model_velocity(jnp.concatenate([x, x]), t, _concat(cond, uncond))
  return tuple(jnp.split(v, 2))


def _concat(a, b):
  return jax.tree.map(lambda u, w: jnp.concatenate([u, w]), a, b)
