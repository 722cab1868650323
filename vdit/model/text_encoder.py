"""A small trainable text encoder: token embedding + bidirectional transformer with 1D RoPE.

Anything with `__call__(tokens [B, L] int32, mask [B, L] bool) -> [B, L, dim]` and a `dim` attribute
can replace it (a pretrained T5/umT5 encoder, or cached embeddings).
"""
import jax.numpy as jnp
from flax import nnx

from vdit.model import rope
from vdit.model.attention import Attention
from vdit.model.layers import MLP, Embed, LayerNorm

# Rows of the position table: a fixed size, so text.max_length stays a runtime setting (any length
# up to it loads the same checkpoint).
MAX_POSITIONS = 512


class EncoderLayer(nnx.Module):

  def __init__(self, dim, num_heads, mlp_dim, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm1 = LayerNorm(dim, **kw)
    # Text tokens are short and stay whole (never split over the context axis).
    self.attn = Attention(dim, num_heads, length_axis="text_length", **kw)
    self.norm2 = LayerNorm(dim, **kw)
    self.mlp = MLP(dim, mlp_dim, length_axis="text_length", **kw)

  def __call__(self, x, mask, angles):
    x = x + self.attn(self.norm1(x), key_mask=mask, angles=angles)
    return x + self.mlp(self.norm2(x))


class TextEncoder(nnx.Module):

  def __init__(self, *, vocab_size, dim, depth, num_heads, mlp_ratio, rngs, positions=False, dtype=jnp.float32,
               param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.dim = dim
    self.head_dim = dim // num_heads
    self.embed = Embed(vocab_size, dim, **kw)
    # Absolute positions let the DiT's cross-attention group a clause's words even without layers
    # (RoPE inside the layers only reaches the DiT through what they mix).
    self.positions = Embed(MAX_POSITIONS, dim, **kw) if positions else None
    self.layers = nnx.List([EncoderLayer(dim, num_heads, int(dim * mlp_ratio), **kw) for _ in range(depth)])
    self.norm = LayerNorm(dim, **kw)

  def __call__(self, tokens, mask):
    angles = rope.sequence_angles(tokens.shape[1], self.head_dim)
    x = self.embed(tokens)
    if self.positions is not None:
      x = x + self.positions(jnp.arange(tokens.shape[1]))[None]
    for layer in self.layers:
      x = layer(x, mask, angles)
    # Zero padded positions so they carry nothing even where a consumer ignores the mask.
    return self.norm(x) * mask[..., None].astype(x.dtype)
