"""Validation flow-matching loss at fixed timesteps on held-out clips.

The training loss mixes timesteps drawn at random; at a fixed t with fixed noise the loss is a
deterministic curve per checkpoint, comparable across steps: low t shows detail, high t layout.
Noise for clip i is drawn from seed + i for its own shape, so the numbers do not depend on the
batch size or the device count.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.parallel import sharding
from vdit.diffusion import flow
from vdit.diffusion.generation import initial_noise
from vdit.media import pixels


def make_loss_fn(graphdef, rules=sharding.DEFAULT_RULES):
  """jit(params, video_uint8 [B, ...], tokens, mask, t, noise) -> per-clip MSE [B] (no dropout,
  no conditioning frames)."""

  def per_clip_loss(params, video, tokens, mask, t, noise):
    model = nnx.merge(graphdef, params)
    with sharding.activation_rules(rules):
      x0 = pixels.to_model_space(video)
      times = jnp.full((x0.shape[0],), t, jnp.float32)
      x_t, target = flow.noisy_sample(x0, noise, times)
      velocity = model.velocity(x_t, times, model.encode_text(tokens, mask), mask)
    return jnp.mean(jnp.square(velocity - target), axis=tuple(range(1, x0.ndim)))

  return jax.jit(per_clip_loss)


def validation_loss(loss_fn, params, videos: list, tokens, mask, *, timesteps, seed: int, mesh,
                    batch_size: int) -> list[float]:
  """Mean loss over `videos` (uint8 [T, H, W, C] each, any mix of shapes) at each timestep."""
  multiple = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
  batch_size = -(-batch_size // multiple) * multiple
  by_shape = {}
  for i, video in enumerate(videos):
    by_shape.setdefault(video.shape, []).append(i)
  totals = np.zeros(len(timesteps))
  for shape, rows in by_shape.items():
    for start in range(0, len(rows), batch_size):
      chunk = rows[start:start + batch_size]
      padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
      put = lambda a: jax.device_put(np.asarray(a), sharding.batch_sharding(mesh, np.ndim(a)))
      video = put(np.stack([videos[i] for i in padded]))
      noise = initial_noise([seed + i for i in padded], shape, mesh)
      for k, t in enumerate(timesteps):
        with jax.set_mesh(mesh):
          losses = loss_fn(params, video, put(tokens[padded]), put(mask[padded]), jnp.float32(t), noise)
        totals[k] += float(np.sum(sharding.to_host(losses)[:len(chunk)]))
  return (totals / len(videos)).tolist()
