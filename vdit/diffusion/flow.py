"""Rectified flow: x_t = (1 - t) x_0 + t eps, the model predicts the velocity eps - x_0; t=1 is noise.

Timestep shift t' = s t / (1 + (s - 1) t) moves training and sampling toward noisier times for
larger token counts (SD3/Flux style), with s interpolated in log space between two token counts.
"""
import math

import jax

TIMESTEP_SAMPLERS = ("logit_normal", "uniform")


def resolution_shift(num_tokens: int, base_shift: float = 0.5, max_shift: float = 1.15,
                     base_tokens: int = 256, max_tokens: int = 4096) -> float:
  """Shift s = exp(mu), mu linear in the token count between (base_tokens, base_shift) and
  (max_tokens, max_shift)."""
  slope = (max_shift - base_shift) / (max_tokens - base_tokens)
  mu = base_shift + slope * (num_tokens - base_tokens)
  return math.exp(mu)


def shift_time(t, shift: float):
  return shift * t / (1.0 + (shift - 1.0) * t)


def sample_training_times(key, batch: int, *, method: str, shift: float, logit_mean: float = 0.0,
                          logit_std: float = 1.0):
  """Training times t [batch] in (0, 1)."""
  if method == "logit_normal":
    t = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(key, (batch,)))
  elif method == "uniform":
    t = jax.random.uniform(key, (batch,), minval=1e-5, maxval=1.0 - 1e-5)
  else:
    raise ValueError(f"Unknown timestep sampling {method!r}; choose one of {TIMESTEP_SAMPLERS}.")
  return shift_time(t, shift)


def noisy_sample(x0, noise, t):
  """(x_t, target velocity) for clean x0, noise and times t [B] (or per frame [B, T])."""
  tb = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim))
  return (1.0 - tb) * x0 + tb * noise, noise - x0
