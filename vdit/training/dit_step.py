"""One optimisation step of the rectified-flow objective, jitted over the sharded train state."""
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vdit.core import finite as finite_lib
from vdit.diffusion import conditioning as cond_lib
from vdit.diffusion import flow
from vdit.media import pixels
from vdit.model import lora



def make_train_step(graphdef, tx, *, empty_tokens, empty_mask, caption_dropout: float, timestep_sampling: str,
                    logit_mean: float, logit_std: float, shift: float, patch_size, ema_decay: float,
                    conditioning=None, conditioning_max_frames: int = 1, grad_accum_steps: int = 1,
                    skip_nonfinite: bool = False, lora_dropout: float = 0.0):
  """Returns train_step(state, batch, key, frozen=None) -> (state, metrics).

  `frozen`: with LoRA, the base's parameters; state["params"] then holds the adapters alone, the
  only parameters differentiated (with `lora_dropout`, vdit.model.lora.drop_inputs).

  `shift` 0 takes the timestep shift from the batch's token count (per bucket: larger videos
  get more noise), fixed when the step is traced for that shape.

  `conditioning` (strategy probabilities, vdit.diffusion.conditioning) makes some frames of each
  clip clean conditioning frames at t=0; the loss covers only the generated frames.
  `empty_tokens`/`empty_mask` [L] encode the empty caption, substituted with probability
  `caption_dropout` so the same model learns the unconditional velocity for guidance. All
  randomness comes from `key`, drawn for the global batch, so it is independent of sharding.

  `grad_accum_steps` k > 1 splits the batch into k microbatches run one after another (a scan:
  activation memory of one microbatch) and sums their gradients before one update. Randomness is
  still drawn for the whole batch and the loss is normalised over the whole batch, so the update
  equals the k = 1 update up to float summation order. Each device's rows must divide by k.

  metrics["nonfinite"] is 1.0 when the loss, the gradient norm or an updated parameter is not
  finite. `skip_nonfinite` drops the update of a step whose loss or gradient norm is not finite
  (params, EMA and optimizer state stay as they were; the step counter still advances, so data and
  keys move on). That is decided before the optimizer runs, so XLA can fuse each array's choice into
  its update instead of holding the state twice; weights that overflow despite finite gradients
  are only reported (the loop stops before checkpointing them).
  """

  def full_params(params, frozen, lora_key):
    if frozen is None:
      return params
    if lora_dropout:
      params = lora.drop_inputs(params, lora_key, lora_dropout)
    return lora.combine(frozen, params)

  def error_sum(params, frozen, lora_key, x0, tokens, mask, t, noise, frame_mask):
    """Sum of squared velocity errors over the generated frames (the loss before normalising)."""
    model = nnx.merge(graphdef, full_params(params, frozen, lora_key))
    context = model.encode_text(tokens, mask)
    if frame_mask is None:
      x_t, target = flow.noisy_sample(x0, noise, t)
      return jnp.sum(jnp.square(model.velocity(x_t, t, context, mask) - target))
    t = jnp.where(frame_mask, 0.0, t[:, None])  # conditioning frames are already clean
    x_t, target = flow.noisy_sample(x0, noise, t)
    error = jnp.square(model.velocity(x_t, t, context, mask, frame_mask) - target)
    weight = (~frame_mask).astype(jnp.float32)[:, :, None, None, None]
    return jnp.sum(error * weight)

  def loss_and_grads(params, frozen, lora_key, inputs, count):
    """Loss = error sum / count (the count does not depend on params); gradients alike."""
    if grad_accum_steps == 1:
      total, grads = jax.value_and_grad(error_sum)(params, frozen, lora_key, *inputs)
    else:
      # [B, ...] -> [k, B/k, ...] taking rows j, j+k, ...: each device's rows split evenly
      # across microbatches, so the batch sharding carries over without communication.
      def split(a):
        if a is None:
          return None
        a = a.reshape((a.shape[0] // grad_accum_steps, grad_accum_steps) + a.shape[1:])
        return jnp.moveaxis(a, 1, 0)

      def accumulate(carry, micro):
        total, grads = carry
        value, micro_grads = jax.value_and_grad(error_sum)(params, frozen, lora_key, *micro)
        return (total + value, jax.tree.map(jnp.add, grads, micro_grads)), None

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      (total, grads), _ = jax.lax.scan(accumulate, (jnp.float32(0.0), zeros), tuple(split(a) for a in inputs))
    return total / count, jax.tree.map(lambda g, p: (g / count).astype(p.dtype), grads, params)

  def train_step(state, batch, key, frozen=None):
    x0 = pixels.to_model_space(batch["video"])
    b = x0.shape[0]
    drop_key, time_key, noise_key, frame_key = jax.random.split(key, 4)
    lora_key = jax.random.fold_in(key, 4)
    drop = jax.random.bernoulli(drop_key, caption_dropout, (b,))
    # tokens: ids [B, L], or cached text embeddings [B, L, D] for a frozen encoder.
    drop_text = drop.reshape((b,) + (1,) * (batch["tokens"].ndim - 1))
    tokens = jnp.where(drop_text, empty_tokens[None], batch["tokens"])
    mask = jnp.where(drop[:, None], empty_mask[None], batch["text_mask"])
    num_tokens = math.prod(n // p for n, p in zip(x0.shape[1:4], patch_size))
    t = flow.sample_training_times(time_key, b, method=timestep_sampling,
                                   shift=shift if shift > 0 else flow.resolution_shift(num_tokens), logit_mean=logit_mean,
                                   logit_std=logit_std)
    noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
    frame_mask = None
    count = float(math.prod(x0.shape))
    if conditioning is not None:
      frame_mask = cond_lib.sample_masks(frame_key, b, x0.shape[1], conditioning, conditioning_max_frames)
      count = jnp.sum(~frame_mask).astype(jnp.float32) * math.prod(x0.shape[2:])
    loss, grads = loss_and_grads(state["params"], frozen, lora_key, (x0, tokens, mask, t, noise, frame_mask), count)
    return apply_gradients(state, loss, grads, tx, ema_decay=ema_decay, skip_nonfinite=skip_nonfinite)

  return train_step


def apply_gradients(state, loss, grads, tx, *, ema_decay: float, skip_nonfinite: bool):
  """The update every generator step shares: optimizer, EMA, step count, and the non-finite guard
  (see make_train_step). Returns (state, metrics)."""
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state["ema"], params)
  new_state = {"params": params, "ema": ema, "opt_state": opt_state}
  if skip_nonfinite:
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                             {k: state[k] for k in new_state})
  new_state["step"] = state["step"] + 1
  finite &= finite_lib.all_finite(new_state["params"])
  return new_state, {"loss": loss, "grad_norm": grad_norm, "nonfinite": (~finite).astype(jnp.float32)}
