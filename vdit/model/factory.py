"""Builds the generator (text encoder + DiT) from the `model` and `text` config sections, abstractly
(shapes and shardings, for restoring) or initialised.

The only model code that reads a config; everything below takes plain arguments.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from vdit.core.memo import per_frozen_config
from vdit.parallel import sharding
from vdit.model import layers
from vdit.model.dit import VARIANTS, DiT
from vdit.model.lora import LoRASpec
from vdit.model.text_encoder import TextEncoder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str):
  if name not in DTYPES:
    raise ValueError(f"Unknown dtype {name!r}; choose one of {sorted(DTYPES)}.")
  return DTYPES[name]


PREDICTIONS = ("velocity", "x", "x_skip")
# x_skip: the noise level (sigma = t / (1 - t)) below which x_hat is mostly x_t itself, and the
# scale of the network's part away from it.
_SKIP_SIGMA = 0.1
_OUT_SCALE = 0.5


class Generator(nnx.Module):
  """Text encoder + video DiT. `encode_text` then `velocity`, as the trainer and samplers use them.

  prediction="velocity": the DiT output is the flow velocity (Wan, SD3). prediction="x": the DiT
  outputs the clean video and the velocity is (x_t - x_hat) / t (JiT, "Back to Basics", 2025):
  clean data lies near a low-dimensional manifold, which a small network reaches much faster than
  high-dimensional noise, the case for large pixel patches. Both train on the velocity loss.
  """

  def __init__(self, text_encoder, dit, prediction: str = "velocity", min_time: float = 0.05):
    if prediction not in PREDICTIONS:
      raise ValueError(f"Unknown prediction {prediction!r}; choose one of {PREDICTIONS}.")
    self.text_encoder = text_encoder
    self.dit = dit
    self.prediction = prediction
    self.min_time = min_time

  def encode_text(self, tokens, mask):
    """Token ids [B, L] through the trainable encoder; with a frozen external encoder (text_encoder
    None) `tokens` already holds its embeddings [B, L, D]."""
    if self.text_encoder is None:
      return tokens.astype(jnp.float32) * mask[..., None].astype(jnp.float32)
    return self.text_encoder(tokens, mask)

  def velocity(self, x, t, context, context_mask, frame_mask=None, interval=None):
    """t: [B], or per frame [B, T] (conditioning frames at 0, marked in frame_mask [B, T]); interval
    [B]: a student's step length (its average velocity over [t - interval, t]; see DiT)."""
    out = self.dit(x, t, context, context_mask, frame_mask, interval)
    if self.prediction == "velocity":
      return out
    if self.prediction == "x_skip":
      return _skip_velocity(x.astype(jnp.float32), out, t.reshape(t.shape + (1,) * (x.ndim - t.ndim)))
    # Clipping t bounds the 1/t gain near clean data, where the velocity matters least.
    t = jnp.maximum(t, self.min_time).reshape(t.shape + (1,) * (x.ndim - t.ndim))
    return (x.astype(jnp.float32) - out) / t


def _skip_velocity(x, out, t):
  """The velocity of x_hat = c_skip x_t / (1 - t) + c_out out at sigma = t / (1 - t), with EDM's
  c_skip = s^2 / (sigma^2 + s^2) (Karras et al. 2022) and c_out = 0.5 sigma / sqrt(sigma^2 + s^2).
  Below sigma ~ s, x_hat is mostly x_t, so detail a patch token is too narrow to carry passes
  straight through instead of being redrawn; above it, the network's. A small s keeps the noise
  passed through at most s/2 at any t (EDM's s = 0.5 passed too much for a narrow token to cancel).
  Written without 1/t: with D = t^2 + s^2 (1 - t)^2, v = (x_t - x_hat) / t
  = x_t (t - s^2 (1 - t)) / D - 0.5 out / sqrt(D)."""
  s2 = _SKIP_SIGMA ** 2
  d = t * t + s2 * (1.0 - t) ** 2
  return x * (t - s2 * (1.0 - t)) / d - _OUT_SCALE * out / jnp.sqrt(d)


def build_model(config, rngs: nnx.Rngs) -> Generator:
  m, t = config.model, config.text
  dtype, param_dtype = dtype_from_name(m.dtype), dtype_from_name(m.param_dtype)
  text_encoder = None  # text.encoder="t5": frozen, outside the model (vdit/text/conditioner.py)
  if t.encoder == "trainable":
    if not t.vocab_size:
      raise ValueError("config.text.vocab_size is 0: the config boundary sets it to the tokenizer's size "
                       "(vdit.text.tokenizer) before a model is built.")
    text_encoder = TextEncoder(vocab_size=t.vocab_size, dim=t.dim, depth=t.depth, num_heads=t.num_heads,
                               mlp_ratio=t.mlp_ratio, positions=t.positions, rngs=rngs, dtype=dtype,
                               param_dtype=param_dtype)
  dit = DiT(in_channels=m.in_channels, patch_size=tuple(m.patch_size), dim=m.dim, depth=m.depth,
            num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, text_dim=t.dim, rope_theta=m.rope_theta,
            remat=m.remat, frame_conditioning=m.frame_conditioning,
            attention=m.attention, context_parallel=m.context_parallel,
            scan_layers=m.scan_layers, interval_conditioning=m.interval_conditioning, lora=lora_spec(config),
            **VARIANTS[m.variant],
            rngs=rngs, dtype=dtype,
            param_dtype=param_dtype)
  return Generator(text_encoder, dit, prediction=m.prediction)

def lora_spec(config) -> LoRASpec | None:
  """The adapters a LoRA fine-tuning config puts on the DiT (None: lora.rank 0, no adapters)."""
  lora = config.lora
  return LoRASpec(lora.rank, lora.alpha or float(lora.rank), tuple(lora.targets)) if lora.rank else None


@per_frozen_config
def abstract_model(config):
  """(graphdef, abstract param State with logical-axis metadata), without allocating anything."""
  with layers.shapes_only():
    model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("The model has non-parameter state; the train state only carries nnx.Param.")
  return graphdef, params

def param_shardings(config, mesh, rules=sharding.DEFAULT_RULES):
  _, params = abstract_model(config)
  return sharding.state_shardings(params, mesh, rules)

def param_shapes(config) -> dict:
  """ShapeDtypeStructs of `init_params`'s pure dict, read off the (memoised) abstract model:
  building the model again, even abstractly, costs a trace of every layer's initialiser."""
  _, params = abstract_model(config)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(params))

def abstract_params(config, mesh, rules=sharding.DEFAULT_RULES) -> dict:
  """ShapeDtypeStructs with shardings for the parameters alone (restore targets for sampling)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), param_shapes(config),
                      param_shardings(config, mesh, rules))

def init_params(config, key) -> dict:
  model = build_model(config, nnx.Rngs(key))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))
