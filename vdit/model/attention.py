"""Multi-head attention with QK RMSNorm (per head, or across heads as Wan 2.1), optional RoPE, key padding masks, and a choice of
local kernel (XLA, cuDNN flash attention, TPU splash attention).

`dot_product_attention` is the one place scores are computed on a device's data; sharding over the
mesh (GSPMD, or `context_parallel` when a kernel or a collective algorithm needs shard_map) wraps it.
"""
import functools

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx

from vdit.model import context_parallel as context_parallel_lib
from vdit.model import rope
from vdit.model.layers import Dense, RMSNorm
from vdit.parallel.sharding import constrain

BACKENDS = ("xla", "cudnn", "splash")
QK_NORMS = ("per_head", "across_heads")
_PLATFORM = {"cudnn": "gpu", "splash": "tpu"}  # backends tied to one platform
_SPLASH_BLOCKS = (512, 256, 128)  # splash tiles must be multiples of 128 that divide the sequence
# Pallas kernels do not declare how their outputs vary over mesh axes, so shard_map must not check.
_UNTYPED_BACKENDS = {"splash"}


def backend_error(backend: str, platform: str | None = None) -> str | None:
  """Why attention backend `backend` cannot run on `platform` (default: JAX's), or None if it can."""
  if backend not in BACKENDS:
    return f"model.attention={backend!r} is not a backend; choose one of {BACKENDS}."
  platform = platform or jax.default_backend()
  if backend not in _PLATFORM or _PLATFORM[backend] == platform:
    return None
  usable = ["xla"] + [b for b, p in _PLATFORM.items() if p == platform]
  kernel = {"cudnn": "cuDNN flash attention (NVIDIA GPU)", "splash": "Pallas splash attention (TPU)"}[backend]
  return (f"model.attention={backend!r} is {kernel}, unavailable on platform {platform!r}; "
          f"use {' or '.join(repr(b) for b in usable)} here.")


def xla_attention(q, k, v, key_mask):
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def cudnn_attention(q, k, v, key_mask):
  # cuDNN's fused kernels take only bf16/fp16 inputs: float32 runs in bf16 here (softmax
  # statistics stay float32 inside the kernel) and the result is cast back.
  dtype = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16
  mask = None if key_mask is None else key_mask[:, None, None, :]
  out = jax.nn.dot_product_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask=mask,
                                     implementation="cudnn")
  return out.astype(q.dtype)


def _splash_block(length: int) -> int | None:
  return next((b for b in _SPLASH_BLOCKS if length % b == 0), None)


def splash_attention(q, k, v, key_mask, interpret=False):
  """Splash attention per batch row; the key padding mask becomes segment ids (query rows are
  segment 1, masked keys segment 0), so every row needs one unmasked key (the tokenizer's empty
  caption keeps one). `interpret` runs the kernel in Python (tests off TPU)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # TPU-only kernel: import on use
  (b, n, h, d), m = q.shape, k.shape[1]
  bq, bkv = _splash_block(n), _splash_block(m)
  blocks = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                             block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
  kernel = splash.make_splash_mha(splash.MultiHeadMask([splash.FullMask((n, m))] * h), block_sizes=blocks,
                                  head_shards=1, q_seq_shards=1, interpret=interpret)
  heads_major = lambda x: x.transpose(0, 2, 1, 3)  # splash takes [heads, seq, head_dim]
  q = q * jnp.asarray(d ** -0.5, q.dtype)  # splash does not scale the logits
  if key_mask is None:
    out = jax.vmap(kernel)(heads_major(q), heads_major(k), heads_major(v))
  else:
    segments = splash.SegmentIds(q=jnp.ones((b, n), jnp.int32), kv=key_mask.astype(jnp.int32))
    out = jax.vmap(kernel)(heads_major(q), heads_major(k), heads_major(v), segments)
  return heads_major(out)


@functools.cache
def _log_fallback(backend, shape):
  logging.info("Attention %s -> XLA for shape %s (outside the kernel's supported shapes).", backend, shape)


def dot_product_attention(q, k, v, key_mask=None, backend: str = "xla"):
  """q [B,N,H,D], k/v [B,M,H,D], key_mask bool [B,M] -> [B,N,H,D], on one device's data.

  Softmax statistics are float32 in every backend. Shapes a kernel does not take (cuDNN: head dim
  a multiple of 8 up to 128; splash: sequences in multiples of 128) run on XLA instead, e.g. the
  short text context of cross-attention under splash.
  """
  if backend == "cudnn" and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128:
    return cudnn_attention(q, k, v, key_mask)
  if backend == "splash" and _splash_block(q.shape[1]) and _splash_block(k.shape[1]):
    return splash_attention(q, k, v, key_mask)
  if backend != "xla":
    _log_fallback(backend, (q.shape, k.shape))
  return xla_attention(q, k, v, key_mask)


class Attention(nnx.Module):
  """Self-attention (kv_dim None) or cross-attention to a context of width kv_dim.

  `length_axis` names the token axis for sharding ('length': video tokens, sequence-sharded over
  the mesh's context axis; 'text_length': text, kept whole). Cross-attention keys/values are text
  ('text_length'). `backend` picks the local kernel; `context_parallel` ('none', 'ulysses',
  'ring') the algorithm for self-attention over a sequence-sharded input.
  """

  def __init__(self, dim, num_heads, *, rngs, kv_dim=None, length_axis="length", backend="xla",
               context_parallel="none", qk_norm="per_head", dtype=jnp.float32, param_dtype=jnp.float32):
    if qk_norm not in QK_NORMS:
      raise ValueError(f"Attention qk_norm={qk_norm!r}; choose one of {QK_NORMS}.")
    if dim % num_heads:
      raise ValueError(f"model dim {dim} is not divisible by num_heads {num_heads}.")
    error = backend_error(backend)
    if error:
      raise ValueError(error)
    if context_parallel not in context_parallel_lib.MODES:
      raise ValueError(f"model.context_parallel={context_parallel!r}; choose one of {context_parallel_lib.MODES}.")
    head_dim = dim // num_heads
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    kv_dim = kv_dim or dim
    self.query = Dense(dim, (num_heads, head_dim), in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.key = Dense(kv_dim, (num_heads, head_dim), in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.value = Dense(kv_dim, (num_heads, head_dim), in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.out = Dense((num_heads, head_dim), dim, in_axes=("heads", "kv"), out_axes=("embed",), **kw)
    if qk_norm == "per_head":
      self.norm_q = RMSNorm(head_dim, **kw)
      self.norm_k = RMSNorm(head_dim, **kw)
    else:
      self.norm_q = RMSNorm((num_heads, head_dim), logical_axes=("heads", "kv"), **kw)
      self.norm_k = RMSNorm((num_heads, head_dim), logical_axes=("heads", "kv"), **kw)
    self.length_axis = length_axis
    self.backend = backend
    self.context_parallel = context_parallel

  def __call__(self, x, context=None, key_mask=None, angles=None):
    is_self = context is None
    context = x if is_self else context
    q = self.norm_q(self.query(x))
    k = self.norm_k(self.key(context))
    v = self.value(context)
    if angles is not None:
      q, k = rope.apply(q, angles), rope.apply(k, angles)
    kv_axis = self.length_axis if is_self else "text_length"
    q = constrain(q, ("batch", self.length_axis, "act_heads", None))
    k = constrain(k, ("batch", kv_axis, "act_heads", None))
    v = constrain(v, ("batch", kv_axis, "act_heads", None))
    local = functools.partial(dot_product_attention, backend=self.backend)
    if self.backend == "xla" and self.context_parallel == "none":
      y = local(q, k, v, key_mask)  # GSPMD partitions XLA attention over any layout by itself
    else:
      # Keys/values shard like the queries only in self-attention over the sharded length axis.
      kv_sharded = is_self and self.length_axis == "length"
      y = context_parallel_lib.attention(q, k, v, key_mask, mode=self.context_parallel, local=local,
                                         kv_sharded=kv_sharded, check_vma=self.backend not in _UNTYPED_BACKENDS)
    return self.out(y)

