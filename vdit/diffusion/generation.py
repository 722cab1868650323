"""Text-to-video generation from a parameter tree: noise per seed, guided ODE solve, uint8 frames.

Shared by `vdit.sample` (the CLI) and the trainer's periodic samples. The initial noise for each
video is drawn from its own seed for the global shape and then sharded, so results do not depend on
the batch composition or on how many devices the batch is spread over.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.parallel import sharding
from vdit.diffusion import caching, flow, samplers


def initial_noise(seeds, shape, mesh=None):
  """Noise [len(seeds), *shape] with row i drawn from seed i alone; sharded over the batch axes."""
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
  if mesh is None:
    return _noise_fn(tuple(shape), None)(keys)
  with jax.set_mesh(mesh):
    return _noise_fn(tuple(shape), sharding.batch_sharding(mesh, 1 + len(shape)))(keys)


@functools.lru_cache(maxsize=None)
def _noise_fn(shape, out_sharding):
  """One jitted draw per shape and sharding (a new function per call would compile every call)."""
  draw = lambda keys: jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)
  return jax.jit(draw) if out_sharding is None else jax.jit(draw, out_shardings=out_sharding)


def sampling_shift(config_shift: float, video_shape, patch_size) -> float:
  """A fixed shift if configured (> 0), else the resolution-aware one from the token count."""
  if config_shift > 0:
    return float(config_shift)
  t, h, w = video_shape[:3]
  return flow.resolution_shift((t // patch_size[0]) * (h // patch_size[1]) * (w // patch_size[2]))




class VideoSampler:
  """Compiles the guided update once per (batch, shape, sampler) and loops over steps in Python."""

  def __init__(self, graphdef, params, tokenizer, *, mesh=None, rules=sharding.DEFAULT_RULES, space=None):
    """tokenizer: any text conditioner (vdit.text.conditioner); space: vdit.vae.latents.VAESpace for a
    latent model (sizes, frames and outputs stay in pixels; the VAE encodes and decodes), None for pixels."""
    self.space = space
    self.graphdef = graphdef
    self.params = params
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.rules = rules
    self._steps = {}
    self.network_passes = 0  # summed over the videos of every generate call (callers reset it)

  def _update_fn(self, sampler: str, cfg: float, frame_cfg=None, variant: str = "plain"):
    """The jitted step `(params, x, carry, t, t_next, cond, uncond, frames, frame_mask, noise, aux) ->
    (x, carry, aux)`. `variant` (vdit/diffusion/caching.py): "plain" (no aux), "computed" (aux out:
    the velocity at the input x, for block caching), "cfg_full" (aux out: the guidance difference v(text) - v(negative)), "cfg_cached" (aux in: that
    difference; only the conditional pass runs), "reuse" (aux in: a velocity; no network)."""
    key = (sampler, float(cfg), frame_cfg, variant)
    if key not in self._steps:
      def step(params, x, carry, t, t_next, cond, uncond, frames, frame_mask, noise, aux):
        model = nnx.merge(self.graphdef, params)
        # A few-step student (model.interval_conditioning) takes mean-flow steps: its output is the
        # average velocity over [t_next, t], so x_next = x + (t_next - t) u is Euler's form, exact.
        student = model.dit.interval_embed is not None
        update = samplers.euler_step if student else samplers.step_fn(sampler)
        with sharding.activation_rules(self.rules):
          def model_velocity(x, t, context):
            tokens, mask = context
            emb = model.encode_text(tokens, mask)
            interval = jnp.full((x.shape[0],), t - t_next) if student else None
            if frame_mask is None:
              return model.velocity(x, jnp.full((x.shape[0],), t), emb, mask, interval=interval)
            # Conditioning frames (cond and uncond halves alike) are clean, at t=0.
            fmask = jnp.tile(frame_mask, (x.shape[0] // frame_mask.shape[0], 1))
            t_frames = jnp.where(fmask, 0.0, t)
            return model.velocity(x, t_frames, emb, mask, fmask, interval=interval)
          if student and (cfg != 1.0 or frame_cfg is not None or variant.startswith("cfg")):
            raise ValueError("A few-step student has its teacher's guidance distilled in: sample it with cfg=1, "
                             "no frame_cfg and no cfg cache.")
          last = {}
          if variant == "reuse":
            velocity_fn = lambda x, t: aux
          elif variant == "cfg_cached":
            velocity_fn = lambda x, t: model_velocity(x, t, cond) + (cfg - 1.0) * aux
          elif variant == "cfg_full":
            def velocity_fn(x, t):
              v_cond, v_uncond = samplers.conditional_and_unconditional(model_velocity, x, t, cond, uncond)
              last["aux"] = v_cond - v_uncond
              return v_uncond + cfg * (v_cond - v_uncond)
          elif frame_cfg is None:
            # At scale 1 guidance is the conditional velocity: skip the unconditional half.
            velocity_fn = lambda x, t: samplers.guided_velocity(model_velocity, x, t, cond,
                                                                None if cfg == 1.0 else uncond, cfg)
          else:
            velocity_fn = lambda x, t: _frame_and_text_guidance(
                model, x, t, cond, uncond, frames, frame_mask, noise, cfg, frame_cfg)

          def recorded(x, t):
            v = velocity_fn(x, t)
            last.setdefault("velocity", v)  # the step's first velocity: the one at its input x
            return v
          x, carry = update(recorded, _impose(x, frames, frame_mask), t, t_next, carry)
          aux = {"plain": None, "computed": last["velocity"], "cfg_full": last.get("aux")}.get(variant, aux)
          return _impose(x, frames, frame_mask), carry, aux

      self._steps[key] = jax.jit(step, donate_argnums=(1, 2))
    return self._steps[key]

  def generate(self, prompts, seeds, *, num_frames, height, width, channels, patch_size, steps, cfg,
               sampler="euler", shift=0.0, negative_prompt="", guidance_interval=(0.0, 1.0),
               frames=None, frame_mask=None, frame_cfg=None, init_video=None, strength=1.0,
               cache="none", progress=None):
    """Returns float videos [N, T, H, W, C] in [-1, 1] (pixels) for prompts and seeds.

    Sizes, `frames` and `init_video` are pixels in [-1, 1]; with a latent `space` they are encoded
    (frame masks mapped to latent frames) and the result decoded. `channels` is the pixel model's.
    Frame conditioning: `frames` [N, T, H, W, C] and `frame_mask` bool [N, T] give
    clean frames that every step keeps (image-to-video, extension, connecting, looping).
    `frame_cfg` (with frames; ignored without) guides frames and text separately:
    v = v(-, -) + frame_cfg (v(frames, -) - v(-, -)) + cfg (v(frames, text) - v(frames, -)), where
    "-" drops the negative/empty caption or the frames (seen as noisy at t, like the rest).
    Editing (SDEdit): `init_video` [N, T, H, W, C] is noised to time `strength` in (0, 1] and
    denoised from there under the prompts; strength 1 ignores it.

    Guidance applies at steps whose time t lies in `guidance_interval` (t=1 is noise); the other
    steps run the conditional model alone (Kynkaanniemi et al. 2024: guidance helps most in the
    middle of the trajectory and costs diversity at high noise).

    `cache` ("none", "cfg", "block": vdit/diffusion/caching.py) trades exactness for fewer network
    passes; `self.network_passes` adds the passes this call ran, summed over its videos.
    """
    error = caching.mode_error(cache, frame_cfg=frame_cfg if frame_mask is not None else None)
    if error:
      raise ValueError(error)
    low, high = guidance_interval
    if not 0.0 <= low <= high <= 1.0:
      raise ValueError(f"guidance_interval {tuple(guidance_interval)} must satisfy 0 <= low <= "
                       "high <= 1 (times, 1 = noise).")
    latent = self.space is not None and self.space.is_latent
    shape = self.space.model_shape(num_frames, height, width) if latent else (num_frames, height, width, channels)
    count = len(prompts)
    prompts, seeds = _pad_to_multiple(list(prompts), list(seeds), self._batch_multiple())
    tokens, mask = self.tokenizer.encode_batch(list(prompts))
    neg_tokens, neg_mask = self.tokenizer.encode_batch([negative_prompt] * len(prompts))
    batch = lambda a: self._put(jnp.asarray(a))
    cond = (batch(tokens), batch(mask))
    uncond = (batch(neg_tokens), batch(neg_mask))
    x = initial_noise(seeds, shape, self.mesh)
    grid = samplers.time_grid(steps, sampling_shift(shift, shape, patch_size))
    if not 0.0 < strength <= 1.0:
      raise ValueError(f"strength={strength} must be in (0, 1]: the noise level editing starts from.")
    if latent and init_video is not None and strength < 1.0:
      init_video = self.space.encode(init_video)
    if latent and frame_mask is not None:
      frames, frame_mask = self.space.encode(frames), self.space.frame_mask(frame_mask)
    if init_video is not None and strength < 1.0:
      init = batch(_pad_rows(jnp.asarray(init_video, jnp.float32), len(prompts)))
      x = (1.0 - strength) * init + strength * x
      grid = np.concatenate([[strength], grid[grid < strength]]).astype(np.float32)
    if frame_mask is not None:
      frames = batch(_pad_rows(jnp.asarray(frames, jnp.float32), len(prompts)))
      frame_mask = batch(_pad_rows(jnp.asarray(frame_mask, bool), len(prompts)))
    if frame_mask is None:
      frame_cfg = None  # nothing to guide apart from the text (a config's frame_cfg, text-to-video)
    noise = jnp.copy(x) if frame_cfg is not None else None  # frames-dropped branch: noised with it
    carry = samplers.initial_carry(sampler, x)
    pairs = list(zip(grid[:-1], grid[1:]))
    state = caching.Cache(cache, len(pairs))
    evaluations = samplers.velocity_evaluations(sampler, 1)
    for index, (t, t_next) in enumerate(progress(pairs) if progress else pairs):
      guided = low <= t <= high
      branches = (3 if frame_cfg is not None else 1 if cfg == 1.0 else 2) if guided else 1
      variant, aux = ("computed" if cache == "block" else "plain"), None
      if state.reuse(index, x):
        variant, aux, branches = "reuse", state.velocity, 0
      elif cache == "cfg" and guided and cfg != 1.0:
        variant = "cfg_full" if state.cfg_full_step_due() else "cfg_cached"
        aux = state.delta if variant == "cfg_cached" else None
        branches = 2 if variant == "cfg_full" else 1
      step = self._update_fn(sampler, cfg if guided else 1.0,
                             float(frame_cfg) if guided and frame_cfg is not None else None, variant)
      x_in = jnp.copy(x) if cache == "block" and variant != "reuse" else None  # x is donated to the step
      args = (self.params, x, carry, jnp.float32(t), jnp.float32(t_next), cond, uncond,
              frames if frame_mask is not None else None, frame_mask, noise, aux)
      if self.mesh is None:
        x, carry, aux = step(*args)
      else:
        with jax.set_mesh(self.mesh):
          x, carry, aux = step(*args)
      if variant == "cfg_full":
        state.delta = aux
      elif variant == "computed":
        state.computed(x_in, aux)
      state.passes += branches * evaluations
    self.network_passes += state.passes * count
    return self.space.decode(x[:count]) if latent else x[:count]

  def _batch_multiple(self) -> int:
    if self.mesh is None:
      return 1
    spec = sharding.batch_sharding(self.mesh, 1, self.rules).spec[0] or ()
    axes = (spec,) if isinstance(spec, str) else spec
    return int(np.prod([self.mesh.shape[a] for a in axes]))

  def _put(self, a):
    if self.mesh is None:
      return a
    return jax.device_put(a, sharding.batch_sharding(self.mesh, a.ndim, self.rules))


def _frame_and_text_guidance(model, x, t, cond, uncond, frames, frame_mask, noise, cfg, frame_cfg):
  """Three batched branches: (frames, text), (frames, no text), (no frames, no text)."""
  n = x.shape[0]
  dropped = jnp.where(frame_mask[:, :, None, None, None], (1.0 - t) * frames + t * noise, x)
  xs = jnp.concatenate([x, x, dropped])
  masks = jnp.concatenate([frame_mask, frame_mask, jnp.zeros_like(frame_mask)])
  tokens = jnp.concatenate([cond[0], uncond[0], uncond[0]])
  text_mask = jnp.concatenate([cond[1], uncond[1], uncond[1]])
  emb = model.encode_text(tokens, text_mask)
  times = jnp.where(masks, 0.0, t)
  v = model.velocity(xs, times, emb, text_mask, masks)
  v_full, v_frames, v_none = v[:n], v[n:2 * n], v[2 * n:]
  return v_none + frame_cfg * (v_frames - v_none) + cfg * (v_full - v_frames)


def _impose(x, frames, frame_mask):
  """x with its conditioning frames replaced by the given clean ones."""
  if frame_mask is None:
    return x
  return jnp.where(frame_mask[:, :, None, None, None], frames, x)


def _pad_rows(a, rows: int):
  """Repeats the last row so per-video inputs match the padded batch."""
  return jnp.concatenate([a, jnp.repeat(a[-1:], rows - a.shape[0], axis=0)]) if rows > a.shape[0] else a


def _pad_to_multiple(prompts, seeds, multiple):
  """Pads with copies of the last prompt (fresh seeds) so the batch divides over the devices."""
  extra = -len(prompts) % multiple
  return prompts + prompts[-1:] * extra, seeds + [seeds[-1] + 1 + i for i in range(extra)]
