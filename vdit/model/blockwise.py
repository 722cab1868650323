"""Memory-efficient attention in pure JAX: an online softmax over key blocks, queries in blocks.

At most [q_block x kv_block] scores per head exist at a time, forward and backward: each query
block's pass over the keys is rematerialised in the backward pass, so the memory is O(sequence),
not O(sequence^2). No custom VJP: reverse mode (training) and forward mode (`jax.jvp`, which
consistency distillation needs; the fused kernels define only a VJP) both differentiate it.

The running statistics (`init` / `fold` / `finish`) are also what ring attention carries while
key/value blocks travel around the context axis (vdit.model.context_parallel).
"""
import jax
import jax.numpy as jnp

Q_BLOCK = 512
KV_BLOCK = 512


def init(q):
  """Empty statistics for queries q [b, n, h, d]: (acc [b,h,n,d], running max [b,h,n], sum [b,h,n])."""
  # *_like keeps q's device-varying type under shard_map, which a scan carry must have from the start.
  acc = jnp.zeros_like(q, jnp.float32).transpose(0, 2, 1, 3)
  return acc, jnp.full_like(acc[..., 0], -jnp.inf), jnp.zeros_like(acc[..., 0])


def finish(carry, dtype):
  """Statistics -> attention output [b, n, h, d]. A query whose keys were all masked gets zeros."""
  acc, _, total = carry
  out = acc / jnp.where(total == 0, 1.0, total)[..., None]
  return out.transpose(0, 2, 1, 3).astype(dtype)


def _update(q, carry, block):
  """Folds one key/value block (k, v [b,m,h,d], key_mask [b,m]) into the statistics of q."""
  acc, running_max, total = carry
  k, v, key_mask = block
  scores = jnp.einsum("bnhd,bmhd->bhnm", q, k, preferred_element_type=jnp.float32) * (q.shape[-1] ** -0.5)
  scores = jnp.where(key_mask[:, None, None, :], scores, -jnp.inf)
  # The result does not depend on the max (it cancels between numerator and sum), so it carries no
  # derivative. A fully masked block leaves it at -inf; 0 then stands in so exp() sees no inf - inf.
  new_max = jnp.maximum(running_max, jax.lax.stop_gradient(scores.max(-1)))
  shift = jnp.where(jnp.isneginf(new_max), 0.0, new_max)
  probs = jnp.exp(scores - shift[..., None])
  rescale = jnp.exp(running_max - shift)
  total = rescale * total + probs.sum(-1)
  acc = rescale[..., None] * acc + jnp.einsum("bhnm,bmhd->bhnd", probs.astype(v.dtype), v,
                                              preferred_element_type=jnp.float32)
  return acc, new_max, total


def _pad(x, axis: int, size: int, value=0):
  if x.shape[axis] == size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def _blocks(x, axis: int, block: int):
  """Splits `axis` (a multiple of `block`) into blocks, block index first."""
  shape = x.shape[:axis] + (x.shape[axis] // block, block) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _unblocks(x, axis: int):
  x = jnp.moveaxis(x, 0, axis)
  return x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2:])


def fold(q, carry, k, v, key_mask=None, *, q_block: int = Q_BLOCK, kv_block: int = KV_BLOCK):
  """Folds keys/values k, v [b, m, h, d] (key_mask bool [b, m]) into the statistics of q [b, n, h, d].

  Sequences that are not a multiple of a block are padded (padded keys masked, padded queries
  dropped), so any length works."""
  n, m = q.shape[1], k.shape[1]
  q_block, kv_block = min(q_block, n), min(kv_block, m)
  n_padded, m_padded = -(-n // q_block) * q_block, -(-m // kv_block) * kv_block
  if key_mask is None:
    key_mask = jnp.ones_like(k[:, :, 0, 0], bool)
  keys = (_blocks(_pad(k, 1, m_padded), 1, kv_block), _blocks(_pad(v, 1, m_padded), 1, kv_block),
          _blocks(_pad(key_mask, 1, m_padded, False), 1, kv_block))

  def query_block(args):
    q_part, carry_part = args
    step = jax.checkpoint(lambda c, block: (_update(q_part, c, block), None))
    return jax.lax.scan(step, carry_part, keys)[0]

  acc, running_max, total = carry
  parts = (_blocks(_pad(q, 1, n_padded), 1, q_block),
           (_blocks(_pad(acc, 2, n_padded), 2, q_block), _blocks(_pad(running_max, 2, n_padded, -jnp.inf), 2, q_block),
            _blocks(_pad(total, 2, n_padded), 2, q_block)))
  # Rematerialised per query block: the backward pass recomputes one block's pass over the keys.
  acc, running_max, total = jax.lax.map(jax.checkpoint(query_block), parts)
  return _unblocks(acc, 2)[:, :, :n], _unblocks(running_max, 2)[:, :, :n], _unblocks(total, 2)[:, :, :n]


def attention(q, k, v, key_mask=None, *, q_block: int = Q_BLOCK, kv_block: int = KV_BLOCK):
  """q [B,N,H,D], k/v [B,M,H,D], key_mask bool [B,M] -> [B,N,H,D] with O(N + M) memory."""
  carry = fold(q, init(q), k, v, key_mask, q_block=q_block, kv_block=kv_block)
  return finish(carry, q.dtype)
