"""One optimisation step of the rectified-flow objective, jitted over the sharded train state."""
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vdit.diffusion import conditioning as cond_lib
from vdit.diffusion import flow


def video_to_model_space(video_uint8):
  """uint8 [0, 255] -> float32 [-1, 1] (pixel space; a VAE would encode here)."""
  return video_uint8.astype(jnp.float32) / 127.5 - 1.0


def make_train_step(graphdef, tx, *, empty_tokens, empty_mask, caption_dropout: float, timestep_sampling: str,
                    logit_mean: float, logit_std: float, shift: float, patch_size, ema_decay: float,
                    conditioning=None, conditioning_max_frames: int = 1):
  """Returns train_step(state, batch, key) -> (state, metrics).

  `shift` 0 takes the timestep shift from the batch's token count (per bucket: larger videos
  get more noise), fixed when the step is traced for that shape.

  `conditioning` (strategy probabilities, vdit.diffusion.conditioning) makes some frames of each
  clip clean conditioning frames at t=0; the loss covers only the generated frames.
  `empty_tokens`/`empty_mask` [L] encode the empty caption, substituted with probability
  `caption_dropout` so the same model learns the unconditional velocity for guidance. All
  randomness comes from `key`, drawn for the global batch, so it is independent of sharding.
  """

  def loss_fn(params, x0, tokens, mask, t, noise, frame_mask):
    model = nnx.merge(graphdef, params)
    context = model.encode_text(tokens, mask)
    if frame_mask is None:
      x_t, target = flow.noisy_sample(x0, noise, t)
      return jnp.mean(jnp.square(model.velocity(x_t, t, context, mask) - target))
    t = jnp.where(frame_mask, 0.0, t[:, None])  # conditioning frames are already clean
    x_t, target = flow.noisy_sample(x0, noise, t)
    error = jnp.square(model.velocity(x_t, t, context, mask, frame_mask) - target)
    weight = (~frame_mask).astype(jnp.float32)[:, :, None, None, None]
    return jnp.sum(error * weight) / (jnp.sum(weight) * math.prod(x0.shape[2:]))

  def train_step(state, batch, key):
    x0 = video_to_model_space(batch["video"])
    b = x0.shape[0]
    drop_key, time_key, noise_key, frame_key = jax.random.split(key, 4)
    drop = jax.random.bernoulli(drop_key, caption_dropout, (b,))
    tokens = jnp.where(drop[:, None], empty_tokens[None], batch["tokens"])
    mask = jnp.where(drop[:, None], empty_mask[None], batch["text_mask"])
    num_tokens = math.prod(n // p for n, p in zip(x0.shape[1:4], patch_size))
    t = flow.sample_training_times(time_key, b, method=timestep_sampling,
                                   shift=shift if shift > 0 else flow.resolution_shift(num_tokens), logit_mean=logit_mean,
                                   logit_std=logit_std)
    noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
    frame_mask = None
    if conditioning is not None:
      frame_mask = cond_lib.sample_masks(frame_key, b, x0.shape[1], conditioning, conditioning_max_frames)
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], x0, tokens, mask, t, noise, frame_mask)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state["ema"], params)
    new_state = {"params": params, "ema": ema, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  return train_step
