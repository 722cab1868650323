"""Multi-head attention with per-head QK RMSNorm, optional RoPE, and key padding masks."""
import jax
import jax.numpy as jnp
from flax import nnx

from vdit.model import rope
from vdit.model.layers import Dense, RMSNorm
from vdit.sharding import constrain


def dot_product_attention(q, k, v, key_mask=None):
  """q [B,N,H,D], k/v [B,M,H,D], key_mask bool [B,M] -> [B,N,H,D]. Softmax in float32.

  The one place attention is computed, so a fused backend (cuDNN, splash) is a change here only.
  """
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


class Attention(nnx.Module):
  """Self-attention (kv_dim None) or cross-attention to a context of width kv_dim."""

  def __init__(self, dim, num_heads, *, rngs, kv_dim=None, dtype=jnp.float32, param_dtype=jnp.float32):
    if dim % num_heads:
      raise ValueError(f"model dim {dim} is not divisible by num_heads {num_heads}.")
    head_dim = dim // num_heads
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    kv_dim = kv_dim or dim
    self.query = Dense(dim, (num_heads, head_dim), in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.key = Dense(kv_dim, (num_heads, head_dim), in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.value = Dense(kv_dim, (num_heads, head_dim), in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.out = Dense((num_heads, head_dim), dim, in_axes=("heads", "kv"), out_axes=("embed",), **kw)
    self.norm_q = RMSNorm(head_dim, **kw)
    self.norm_k = RMSNorm(head_dim, **kw)

  def __call__(self, x, context=None, key_mask=None, angles=None):
    context = x if context is None else context
    q = self.norm_q(self.query(x))
    k = self.norm_k(self.key(context))
    v = self.value(context)
    if angles is not None:
      q, k = rope.apply(q, angles), rope.apply(k, angles)
    q = constrain(q, ("batch", "length", "act_heads", None))
    k = constrain(k, ("batch", "length", "act_heads", None))
    v = constrain(v, ("batch", "length", "act_heads", None))
    y = dot_product_attention(q, k, v, key_mask)
    return self.out(y)
