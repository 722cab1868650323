"""One VAE optimisation step (and the forward passes the trainer evaluates with), over pure-dict state.

state = {"params": {"vae", ["disc"]}, "ema": {"vae"}, "opt_state": {"vae", ["disc"]}, "step": int32}.
Training encodes each whole clip in one causal call (`encode_chunk(video, None)`: the first frame
alone, then temporal_factor frames per latent frame, exactly what chunked `wan_vae.encode`
computes) and decodes a reparameterised posterior sample the same way.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vdit.core import finite as finite_lib
from vdit.media import pixels
from vdit.vae import wan_vae
from vdit.training import vae_losses

EMA_WARMUP = 10.0  # EMA decay is min(ema_decay, (1 + step) / (EMA_WARMUP + step)): useful in short runs


def posterior(vae, x):
  """(mean, logvar) of the whole clip x [B, 1 + tf k, H, W, C], logvar clamped like wan_vae.encode."""
  moments, _ = vae.encode_chunk(x, None)
  mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
  return mean, jnp.clip(logvar, *wan_vae.LOGVAR_RANGE)


def make_train_step(vae_graphdef, tx, weights: vae_losses.LossWeights, *, ema_decay: float,
                    perceptual_graphdef=None, disc_graphdef=None, disc_tx=None,
                    skip_nonfinite: bool = False):
  """Returns step(state, video_uint8, key, perceptual_params) -> (state, metrics).

  `perceptual_graphdef` (with the frozen `perceptual_params` passed each step) adds the perceptual
  term; `disc_graphdef`/`disc_tx` add the hinge GAN: the generator term and the discriminator's
  updates are off (its parameters and optimizer state unchanged) before adversarial_start_step.

  metrics["nonfinite"] is 1.0 when a loss, a gradient norm or an updated parameter (VAE or
  discriminator) is not finite. `skip_nonfinite` drops the whole update of a step whose losses or
  gradient norms are not finite (the step counter still advances), decided before the optimizers
  run, as in vdit.training.dit_step; overflowing weights are only reported.
  """

  def vae_loss(vae_params, disc_params, perceptual_params, x, key, adversarial_on):
    vae = nnx.merge(vae_graphdef, vae_params)
    mean, logvar = posterior(vae, x)
    recon = vae.decode_chunk(wan_vae.sample(mean, logvar, key), None)[0].astype(jnp.float32)
    terms = {"rec_loss": vae_losses.reconstruction_loss(x, recon, l1=weights.l1, l2=weights.l2),
             "kl_loss": vae_losses.kl_loss(mean, logvar)}
    total = terms["rec_loss"] + weights.kl * terms["kl_loss"]
    if perceptual_graphdef is not None:
      encoder = nnx.merge(perceptual_graphdef, jax.lax.stop_gradient(perceptual_params))
      terms["perceptual_loss"] = vae_losses.perceptual_loss(encoder, x, recon)
      total += weights.perceptual * terms["perceptual_loss"]
    if disc_graphdef is not None:
      terms["gen_loss"] = vae_losses.generator_hinge_loss(nnx.merge(disc_graphdef, disc_params)(recon))
      total += jnp.where(adversarial_on, weights.adversarial, 0.0) * terms["gen_loss"]
    return total, (terms, recon)

  def disc_loss(disc_params, x, recon):
    disc = nnx.merge(disc_graphdef, disc_params)
    return vae_losses.discriminator_hinge_loss(disc(x), disc(recon))

  def train_step(state, video_uint8, key, perceptual_params):
    x = pixels.to_model_space(video_uint8)
    params, opt_state, step = state["params"], state["opt_state"], state["step"]
    adversarial_on = step >= weights.adversarial_start_step
    (loss, (terms, recon)), grads = jax.value_and_grad(vae_loss, has_aux=True)(
        params["vae"], params.get("disc"), perceptual_params, x, key, adversarial_on)
    updates, vae_opt = tx.update(grads, opt_state["vae"], params["vae"])
    vae_params = optax.apply_updates(params["vae"], updates)
    decay = jnp.minimum(ema_decay, (1.0 + step) / (EMA_WARMUP + step))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"]["vae"], vae_params)
    new_params, new_opt = {"vae": vae_params}, {"vae": vae_opt}
    metrics = dict(terms, loss=loss, grad_norm=optax.tree.norm(grads),
                   train_psnr=jnp.mean(vae_losses.psnr(x, recon)))
    finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
    if disc_graphdef is not None:
      d_loss, d_grads = jax.value_and_grad(disc_loss)(params["disc"], x, jax.lax.stop_gradient(recon))
      d_updates, d_opt = disc_tx.update(d_grads, opt_state["disc"], params["disc"])
      keep_until_on = lambda new, old: jax.tree.map(lambda n, o: jnp.where(adversarial_on, n, o), new, old)
      new_params["disc"] = keep_until_on(optax.apply_updates(params["disc"], d_updates), params["disc"])
      new_opt["disc"] = keep_until_on(d_opt, opt_state["disc"])
      metrics["disc_loss"] = d_loss
      finite &= jnp.isfinite(d_loss) & jnp.isfinite(optax.tree.norm(d_grads))
    new_state = {"params": new_params, "ema": {"vae": ema}, "opt_state": new_opt}
    if skip_nonfinite:
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                               {k: state[k] for k in new_state})
    new_state["step"] = step + 1
    metrics["nonfinite"] = (~(finite & finite_lib.all_finite(new_state["params"]))).astype(jnp.float32)
    return new_state, metrics

  return train_step


def make_encode_mean(vae_graphdef):
  """(vae_params, video_uint8) -> posterior means [B, t, h, w, z] (for latent statistics)."""
  return lambda params, video: posterior(nnx.merge(vae_graphdef, params), pixels.to_model_space(video))[0]


def make_reconstruct_psnr(vae_graphdef):
  """(vae_params, video_uint8) -> per-clip PSNR [B] of decode(posterior mean), clipped to [-1, 1]."""

  def fn(params, video):
    vae, x = nnx.merge(vae_graphdef, params), pixels.to_model_space(video)
    return vae_losses.psnr(x, vae.decode_chunk(posterior(vae, x)[0], None)[0].astype(jnp.float32))

  return fn
