"""Builds the generator (text encoder + DiT) from the `model` and `text` config sections.

The only model code that reads a config; everything below takes plain arguments.
"""
import jax.numpy as jnp
from flax import nnx

from vdit.model.dit import DiT
from vdit.model.text_encoder import TextEncoder
from vdit.text.tokenizer import Tokenizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str):
  if name not in DTYPES:
    raise ValueError(f"Unknown dtype {name!r}; choose one of {sorted(DTYPES)}.")
  return DTYPES[name]


class Generator(nnx.Module):
  """Text encoder + video DiT. `encode_text` then `velocity`, as the trainer and samplers use them."""

  def __init__(self, text_encoder, dit):
    self.text_encoder = text_encoder
    self.dit = dit

  def encode_text(self, tokens, mask):
    return self.text_encoder(tokens, mask)

  def velocity(self, x, t, context, context_mask):
    return self.dit(x, t, context, context_mask)


def build_model(config, rngs: nnx.Rngs) -> Generator:
  m, t = config.model, config.text
  dtype, param_dtype = dtype_from_name(m.dtype), dtype_from_name(m.param_dtype)
  vocab_size = t.vocab_size or Tokenizer(t.max_length).vocab_size  # 0: the shipped tokenizer
  text_encoder = TextEncoder(vocab_size=vocab_size, dim=t.dim, depth=t.depth, num_heads=t.num_heads,
                             mlp_ratio=t.mlp_ratio, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
  dit = DiT(in_channels=m.in_channels, patch_size=tuple(m.patch_size), dim=m.dim, depth=m.depth,
            num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, text_dim=t.dim, rope_theta=m.rope_theta,
            remat=m.remat, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
  return Generator(text_encoder, dit)
