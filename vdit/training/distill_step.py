"""One optimisation step of few-step distillation: a mean-flow student learns its teacher's guided flow.

The student u(z, t, h) is the average velocity over the step from t to r = t - h (h = 0: the
instantaneous velocity), so one network pass moves x_t to x_r = x_t - h u (MeanFlow, Geng et al.
2025). Along the teacher's trajectory dz/dt = v (the teacher's classifier-free-guided velocity at
the distillation scale, so the student needs one pass per step and no guidance), the mean-flow
identity gives the target

    u(z_t, t, h) = v - h * d/dt u(z_t, t, h),   d/dt u = (du/dz) v + du/dt + du/dh

with the total derivative computed by one forward-mode product, `jax.jvp`, through the student
(tangents v, 1, 1), and the target held fixed (stop_gradient). Attention must be forward-mode
differentiable: model.attention = xla or blockwise.

With `dmd_weight` > 0 the student also gets a distribution-matching gradient (DMD, Yin et al.
2024): its one-step samples x0 = z - u(z, 1, 1) are noised to a random time, the teacher's guided
prediction of the clean video and a fake-score network's prediction are compared there, and x0 is
pushed along (fake - real), normalised per sample; the fake-score network (the student's shape,
starting as the student) learns the flow of the student's own samples at the same time, one
update each per step (DMD2 takes several fake updates per student update; one keeps the loop's
single step).
"""
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vdit.diffusion import conditioning as cond_lib
from vdit.diffusion import flow
from vdit.media import pixels
from vdit.training.dit_step import apply_gradients


def make_distill_step(student_def, teacher_def, tx, *, guidance: float, empty_tokens, empty_mask,
                      timestep_sampling: str, logit_mean: float, logit_std: float, shift: float, patch_size,
                      ema_decay: float, mean_fraction: float, conditioning=None, conditioning_max_frames: int = 1,
                      skip_nonfinite: bool = False, dmd_weight: float = 0.0):
  """Returns step(state, teacher_params, batch, key) -> (state, metrics).

  Times t are drawn as the teacher trained; with probability `mean_fraction` a clip's interval h is
  uniform in (0, t) (a step to an earlier time), otherwise 0 (the student matches the guided
  velocity itself). `conditioning`: as the teacher's trainer, conditioning frames are clean
  (t = 0, no tangent) and left out of the loss, so the student keeps every sampling mode.
  """

  def guided_velocity(teacher_params, x_t, t, tokens, mask, frame_mask):
    teacher = nnx.merge(teacher_def, teacher_params)
    b = x_t.shape[0]
    both = lambda a, c: jnp.concatenate([a, c])
    text_mask = both(mask, jnp.broadcast_to(empty_mask[None], mask.shape))
    context = teacher.encode_text(both(tokens, jnp.broadcast_to(empty_tokens[None], (b,) + empty_tokens.shape)),
                                  text_mask)
    frames = None if frame_mask is None else both(frame_mask, frame_mask)
    v = teacher.velocity(both(x_t, x_t), both(t, t), context, text_mask, frames)
    v_cond, v_uncond = jnp.split(v, 2)
    return jax.lax.stop_gradient(v_uncond + guidance * (v_cond - v_uncond))

  def loss_fn(params, v, x_t, t, h, tokens, mask, frame_mask, weight, count):
    student = nnx.merge(student_def, params)
    context = student.encode_text(tokens, mask)
    average_velocity = lambda z, t, h: student.velocity(z, t, context, mask, frame_mask, interval=h)
    # Conditioning frames stay clean: no motion and no time tangent for them.
    frame_tangent = 1.0 if frame_mask is None else (~frame_mask).astype(jnp.float32)
    z_tangent = v if frame_mask is None else v * frame_tangent[:, :, None, None, None]
    u, du_dt = jax.jvp(average_velocity, (x_t, t, h), (z_tangent, frame_tangent * jnp.ones_like(t), jnp.ones_like(h)))
    target = jax.lax.stop_gradient(v - h.reshape((-1,) + (1,) * (v.ndim - 1)) * du_dt)
    return jnp.sum(jnp.square(u - target) * weight) / count

  def velocity(params, x, t, tokens, mask, interval):
    model = nnx.merge(student_def, params)
    return model.velocity(x, t, model.encode_text(tokens, mask), mask, interval=interval)

  def dmd_term(params, fake_params, teacher_params, tokens, mask, key, shape):
    """(the DMD loss, whose gradient in x0 is the normalised fake - real difference; x0 held fixed)."""
    noise_key, time_key, renoise_key = jax.random.split(key, 3)
    b, ones = shape[0], jnp.ones((shape[0],))
    z = jax.random.normal(noise_key, shape, jnp.float32)
    x0 = z - velocity(params, z, ones, tokens, mask, ones)  # one mean-flow step from noise to t = 0
    held = jax.lax.stop_gradient(x0)
    t = jax.random.uniform(time_key, (b,), minval=0.02, maxval=0.98)
    x_t, _ = flow.noisy_sample(held, jax.random.normal(renoise_key, shape, jnp.float32), t)
    tt = t.reshape((-1,) + (1,) * (len(shape) - 1))
    real = x_t - tt * guided_velocity(teacher_params, x_t, t, tokens, mask, None)
    fake = x_t - tt * jax.lax.stop_gradient(velocity(fake_params, x_t, t, tokens, mask, jnp.zeros((b,))))
    scale = jnp.mean(jnp.abs(held - real), axis=tuple(range(1, len(shape))), keepdims=True) + 1e-6
    target = jax.lax.stop_gradient(x0 - (fake - real) / scale)
    return 0.5 * jnp.mean(jnp.square(x0 - target)), held

  def fake_loss(fake_params, x0, tokens, mask, key):
    """The fake-score network's flow loss on the student's samples (what it learns to model)."""
    time_key, noise_key = jax.random.split(key)
    t = jax.random.uniform(time_key, (x0.shape[0],))
    x_t, target = flow.noisy_sample(x0, jax.random.normal(noise_key, x0.shape, jnp.float32), t)
    return jnp.mean(jnp.square(velocity(fake_params, x_t, t, tokens, mask, jnp.zeros_like(t)) - target))

  def step(state, teacher_params, batch, key):
    x0 = pixels.to_model_space(batch["video"])
    b = x0.shape[0]
    time_key, interval_key, pick_key, noise_key, frame_key = jax.random.split(key, 5)
    num_tokens = math.prod(n // p for n, p in zip(x0.shape[1:4], patch_size))
    t = flow.sample_training_times(time_key, b, method=timestep_sampling,
                                   shift=shift if shift > 0 else flow.resolution_shift(num_tokens),
                                   logit_mean=logit_mean, logit_std=logit_std)
    h = jnp.where(jax.random.bernoulli(pick_key, mean_fraction, (b,)),
                  t * jax.random.uniform(interval_key, (b,)), 0.0)
    noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
    frame_mask, weight, count = None, 1.0, float(math.prod(x0.shape))
    times = t
    if conditioning is not None:
      frame_mask = cond_lib.sample_masks(frame_key, b, x0.shape[1], conditioning, conditioning_max_frames)
      times = jnp.where(frame_mask, 0.0, t[:, None])
      weight = (~frame_mask).astype(jnp.float32)[:, :, None, None, None]
      count = jnp.sum(~frame_mask).astype(jnp.float32) * math.prod(x0.shape[2:])
    x_t, _ = flow.noisy_sample(x0, noise, times)
    v = guided_velocity(teacher_params, x_t, times, batch["tokens"], batch["text_mask"], frame_mask)
    mean_flow = lambda params: loss_fn(params, v, x_t, times, h, batch["tokens"], batch["text_mask"], frame_mask,
                                       weight, count)
    if not dmd_weight:
      loss, grads = jax.value_and_grad(mean_flow)(state["params"])
      return apply_gradients(state, loss, grads, tx, ema_decay=ema_decay, skip_nonfinite=skip_nonfinite)
    dmd_key, fake_key = jax.random.split(jax.random.fold_in(key, 5))
    aux = state["aux"]

    def total(params):
      matching, samples = dmd_term(params, aux["fake"], teacher_params, batch["tokens"], batch["text_mask"],
                                   dmd_key, x0.shape)
      return mean_flow(params) + dmd_weight * matching, (matching, samples)

    (loss, (matching, samples)), grads = jax.value_and_grad(total, has_aux=True)(state["params"])
    fake_value, fake_grads = jax.value_and_grad(fake_loss)(aux["fake"], samples, batch["tokens"], batch["text_mask"],
                                                           fake_key)
    updates, fake_opt = tx.update(fake_grads, aux["fake_opt"], aux["fake"])
    new_aux = {"fake": optax.apply_updates(aux["fake"], updates), "fake_opt": fake_opt}
    if skip_nonfinite:  # as apply_gradients: a non-finite fake update is dropped
      new_aux = jax.tree.map(lambda new, old: jnp.where(jnp.isfinite(fake_value), new, old), new_aux, aux)
    new_state, metrics = apply_gradients(state, loss, grads, tx, ema_decay=ema_decay, skip_nonfinite=skip_nonfinite)
    return {**new_state, "aux": new_aux}, {**metrics, "dmd_loss": matching, "fake_loss": fake_value}

  return step
