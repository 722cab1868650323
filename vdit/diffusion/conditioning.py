"""Which frames of a training clip are given clean (conditioning) and which are generated.

One strategy per example, drawn from configured probabilities, so a single model learns
text-to-video, image-to-video (first), connecting (first + last), extension forward (first k)
and backward (last k), and in-filling (random frames). At least one frame is always generated.
"""
import jax
import jax.numpy as jnp

STRATEGIES = ("none", "first", "first_last", "first_k", "last_k", "random")


def strategy_probabilities(config_probs) -> list[float]:
  """Normalised probabilities in STRATEGIES order from a {name: weight} mapping."""
  unknown = sorted(set(config_probs) - set(STRATEGIES))
  if unknown:
    raise ValueError(f"Unknown conditioning strategies {unknown}; choose from {STRATEGIES}.")
  weights = [float(config_probs.get(name, 0.0)) for name in STRATEGIES]
  if min(weights) < 0 or sum(weights) <= 0:
    raise ValueError(f"Conditioning weights {dict(config_probs)} must be >= 0 with a positive sum.")
  return [w / sum(weights) for w in weights]


def sample_masks(key, batch: int, num_frames: int, probabilities, max_frames: int,
                 random_rate: float = 0.25):
  """bool [batch, num_frames]: True for conditioning frames."""
  if num_frames < 2:  # an image has nothing to condition on
    return jnp.zeros((batch, num_frames), bool)
  strategy_key, count_key, random_key = jax.random.split(key, 3)
  strategy = jax.random.choice(strategy_key, len(STRATEGIES), (batch,), p=jnp.asarray(probabilities))
  k = jax.random.randint(count_key, (batch, 1), 1, max(1, min(max_frames, num_frames - 1)) + 1)
  idx = jnp.arange(num_frames)[None]
  random = jax.random.bernoulli(random_key, random_rate, (batch, num_frames))
  random = random & ~(random.all(axis=1, keepdims=True) & (idx == num_frames - 1))
  candidates = jnp.stack([
      jnp.zeros((batch, num_frames), bool),
      jnp.broadcast_to(idx == 0, (batch, num_frames)),
      jnp.broadcast_to((idx == 0) | (idx == num_frames - 1), (batch, num_frames)),
      idx < k,
      idx >= num_frames - k,
      random,
  ], axis=1)  # [batch, strategies, frames]
  return jnp.take_along_axis(candidates, strategy[:, None, None], axis=1)[:, 0]
