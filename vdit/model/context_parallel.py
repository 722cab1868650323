"""Context (sequence) parallel attention over the mesh's `context` axis, with `jax.shard_map`.

Video token sequences are sharded over `context`; attention needs every key for every query, so:
  * "ulysses" (DeepSpeed-Ulysses): all-to-all from sequence-sharded/all-heads to
    full-sequence/head-sharded, local attention with the configured kernel, all-to-all back. Two
    all-to-alls of q/k/v/out per layer; each device's heads must split over the context axis.
  * "ring" (Ring Attention): queries stay; key/value blocks (with their padding masks) travel around
    the context ring with `ppermute`, combined by an online softmax (running max and sum in float32)
    with the blockwise kernel (vdit.model.blockwise) whatever `model.attention` is: the fused kernels
    return no differentiable softmax statistics to combine blocks with. Any head count;
    communication overlaps the blockwise compute.
  * "none": no collective algorithm; keys/values are gathered whole before local attention.
Cross-attention to text uses the "none" layout whatever the mode: its keys/values are replicated
over the context axis, so attention of each query shard to all of them is exact as it stands.

Everything here is differentiable: shard_map, all_to_all and ppermute have transposes, and the
ring's block update is rematerialised in the backward pass so its scores are never stored; forward-mode
differentiation (jax.jvp) works through the ring and Ulysses with the xla and blockwise kernels.
"""
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vdit.model import blockwise
from vdit.parallel import sharding

MODES = ("none", "ulysses", "ring")
AXIS = "context"


def _axes(entry) -> tuple:
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _specs(q, algorithm: bool):
  """PartitionSpecs (q, kv, key mask): batch and heads as `constrain` lays them out; the length
  axis of queries over `context` (of keys/values too when a collective algorithm runs)."""
  batch, _, heads, _ = sharding.activation_spec(("batch", None, "act_heads", None), q.shape)
  if AXIS in _axes(batch) + _axes(heads):
    raise ValueError(f"The sharding rules map batch or heads to the {AXIS!r} mesh axis (batch {batch}, heads "
                     f"{heads}); context parallelism needs that axis for the token length alone.")
  q_length = AXIS if q.shape[1] % sharding.axis_size(AXIS) == 0 else None
  kv_length = AXIS if algorithm else None
  return P(batch, q_length, heads, None), P(batch, kv_length, heads, None), P(batch, kv_length)


def _ulysses(q, k, v, key_mask, local):
  """Per device: q [b, n/C, h, d] -> [b, n, h/C, d] (all-to-all), attend, and back."""
  to_heads = lambda x: jax.lax.all_to_all(x, AXIS, split_axis=2, concat_axis=1, tiled=True)
  if key_mask is not None:
    key_mask = jax.lax.all_gather(key_mask, AXIS, axis=1, tiled=True)
  out = local(to_heads(q), to_heads(k), to_heads(v), key_mask)
  return jax.lax.all_to_all(out, AXIS, split_axis=1, concat_axis=2, tiled=True)


def _ring(q, k, v, key_mask, size: int):
  """Per device: q [b, n, h, d] attends to all C key/value blocks as they pass around the ring; each
  block is folded into the online-softmax statistics by the blockwise kernel (O(n) memory)."""
  if key_mask is None:
    key_mask = jnp.ones_like(k[:, :, 0, 0], bool)
  # Rematerialised: the backward pass recomputes one ring step at a time from the carries.
  update = jax.checkpoint(lambda carry, block: blockwise.fold(q, carry, *block))
  ring = [(i, (i + 1) % size) for i in range(size)]

  def step(state, _):
    carry, block = state
    # Send this block on while computing with it; XLA overlaps the transfer with the math.
    incoming = jax.lax.ppermute(block, AXIS, ring)
    return (update(carry, block), incoming), None

  (carry, block), _ = jax.lax.scan(step, (blockwise.init(q), (k, v, key_mask)), length=size - 1)
  return blockwise.finish(update(carry, block), q.dtype)


def attention(q, k, v, key_mask=None, *, mode: str, local, kv_sharded: bool, check_vma: bool = True):
  """Attention of q [B,N,H,D] to k/v [B,M,H,D] (key_mask bool [B,M]) inside the current mesh.

  `local(q, k, v, key_mask)` computes attention on one device's data (the configured kernel).
  `kv_sharded`: keys/values are the queries' own sequence (self-attention over video tokens), so
  `mode` ("ulysses" or "ring") may shard them over `context`; otherwise they are replicated there.
  Without a mesh this is `local` itself; with a context axis of 1, `local` under shard_map.
  `check_vma` False lets `local` be a kernel whose outputs do not declare how they vary over mesh
  axes (Pallas calls, e.g. splash), which shard_map's type check would otherwise refuse.
  """
  if mode not in MODES:
    raise ValueError(f"model.context_parallel={mode!r}; choose one of {MODES}.")
  mesh = sharding.current_mesh()
  if mesh is None:
    return local(q, k, v, key_mask)
  size = sharding.axis_size(AXIS)
  algorithm = mode if kv_sharded and size > 1 and mode != "none" else None
  if algorithm:
    for name, length in (("query", q.shape[1]), ("key", k.shape[1])):
      if length % size:
        raise ValueError(f"{mode} context parallelism: the {name} sequence of {length} tokens is not divisible "
                         f"by the context axis size {size}; use a video size whose token count is a multiple "
                         f"of {size}, or a smaller mesh.context.")
  q_spec, kv_spec, mask_spec = _specs(q, bool(algorithm))
  if algorithm == "ulysses":
    tensor = math.prod(sharding.axis_size(a) for a in _axes(q_spec[2]))
    heads = q.shape[2] // tensor
    if heads % size:
      raise ValueError(f"ulysses context parallelism splits each device's {heads} heads (num_heads {q.shape[2]} "
                       f"over tensor {tensor}) across the context axis of size {size}, which does not divide "
                       f"them; use model.context_parallel='ring', or a num_heads / mesh.tensor / mesh.context "
                       f"that divide.")

  def body(q, k, v, key_mask):
    if algorithm == "ring":
      return _ring(q, k, v, key_mask, size)
    if algorithm == "ulysses":
      return _ulysses(q, k, v, key_mask, local)
    return local(q, k, v, key_mask)

  in_specs = (q_spec, kv_spec, kv_spec, None if key_mask is None else mask_spec)
  return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=q_spec, check_vma=check_vma)(q, k, v, key_mask)
