"""Multi-head attention with QK RMSNorm (per head, or across heads as Wan 2.1), optional RoPE, key padding masks, and a choice of
local kernel: xla (dense, the reference), blockwise (pure-JAX online softmax, O(N) memory, any
platform, forward-mode differentiable), cudnn (NVIDIA flash attention), splash (TPU Pallas).

`dot_product_attention` is the one place scores are computed on a device's data; sharding over the
mesh (GSPMD, or `context_parallel` when a kernel or a collective algorithm needs shard_map) wraps it.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from vdit.model import blockwise
from vdit.model import context_parallel as context_parallel_lib
from vdit.model import rope
from vdit.model.layers import Dense, RMSNorm
from vdit.parallel.sharding import constrain

BACKENDS = ("xla", "blockwise", "cudnn", "splash")
QK_NORMS = ("per_head", "across_heads")
_PLATFORM = {"cudnn": "gpu", "splash": "tpu"}  # backends tied to one platform
_SPLASH_TILE = 128  # splash tiles are multiples of 128: sequences are padded to one
_SPLASH_LONG = (16384, 2048)  # sequences over 16k tokens pad to a multiple of 2048 (< 1.3% more), so
# every key block length below divides them
_SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides the padded sequence
# The kernel keeps ~50 bytes of metadata per (query block, key block) pair in its 1 MiB of scalar
# memory: 512-token blocks overflow it at Wan-14B 720p (75,600 tokens: 148 x 148 pairs). Longer
# key/value blocks keep the pairs within this budget.
_SPLASH_BLOCK_PAIRS = 16384
_SPLASH_KV_BLOCKS = (1024, 2048, 4096)
# Pallas kernels do not declare how their outputs vary over mesh axes, so shard_map must not check.
_UNTYPED_BACKENDS = {"splash"}
ATTENTION_OUTPUT = "attention_output"  # checkpoint name of every attention's output (remat policies)
_CUDNN_HEAD_DIM = 256  # cuDNN flash attention: head dims a multiple of 8 up to this (128 before Hopper)


def backend_error(backend: str, platform: str | None = None) -> str | None:
  """Why attention backend `backend` cannot run on `platform` (the target's; default: JAX's), or None."""
  if backend not in BACKENDS:
    return f"model.attention={backend!r} is not a backend; choose one of {BACKENDS}."
  platform = platform or jax.default_backend()
  if backend not in _PLATFORM or _PLATFORM[backend] == platform:
    return None
  usable = ["xla", "blockwise"] + [b for b, p in _PLATFORM.items() if p == platform]
  kernel = {"cudnn": "cuDNN flash attention (NVIDIA GPU)", "splash": "Pallas splash attention (TPU)"}[backend]
  return (f"model.attention={backend!r} is {kernel}, unavailable on platform {platform!r}; "
          f"use {', '.join(repr(b) for b in usable[:-1])} or {usable[-1]!r} here.")


def shape_error(backend: str, head_dim: int) -> str | None:
  """Why `backend` cannot take heads of `head_dim`, or None. Sequence lengths never are a reason:
  the kernels pad them."""
  if backend == "cudnn" and (head_dim % 8 or head_dim > _CUDNN_HEAD_DIM):
    return (f"model.attention='cudnn' takes head dims that are multiples of 8 up to {_CUDNN_HEAD_DIM} (128 "
            f"before Hopper), not {head_dim} (model.dim / model.num_heads); use model.attention='blockwise' "
            "(memory-efficient, any shape) or 'xla' (dense), or a dim/num_heads that fits.")
  return None


def xla_attention(q, k, v, key_mask):
  """Dense attention: materialises the [N, M] scores of every head (the reference)."""
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def blockwise_attention(q, k, v, key_mask):
  return blockwise.attention(q, k, v, key_mask)


def cudnn_attention(q, k, v, key_mask):
  """cuDNN flash attention. Key masks are prefix masks here (valid tokens first: text padding), so
  they pass as per-row key lengths, which cuDNN applies inside the kernel (a boolean mask would be
  turned into a dense [N, M] bias)."""
  # cuDNN's fused kernels take only bf16/fp16 inputs: float32 runs in bf16 here (softmax
  # statistics stay float32 inside the kernel) and the result is cast back.
  dtype = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16
  lengths = None if key_mask is None else key_mask.sum(-1, dtype=jnp.int32)
  out = jax.nn.dot_product_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), key_value_seq_lengths=lengths,
                                     implementation="cudnn")
  return out.astype(q.dtype)


def _pad_length(x, length: int, value=0):
  widths = [(0, 0)] * x.ndim
  widths[1] = (0, length - x.shape[1])
  return jnp.pad(x, widths, constant_values=value)


def _splash_tile(length: int) -> int:
  return _SPLASH_LONG[1] if length > _SPLASH_LONG[0] else _SPLASH_TILE


def splash_blocks(n_padded: int, m_padded: int) -> tuple[int, int]:
  """(query block, key/value block) for padded lengths: 512 where it divides, longer key blocks
  while the block pairs exceed the kernel's metadata budget."""
  bq, bkv = (next(blk for blk in _SPLASH_BLOCKS if x % blk == 0) for x in (n_padded, m_padded))
  for longer in _SPLASH_KV_BLOCKS:
    if (n_padded // bq) * (m_padded // bkv) <= _SPLASH_BLOCK_PAIRS or m_padded % longer:
      break
    bkv = longer
  return bq, bkv


def splash_attention(q, k, v, key_mask, interpret=False):
  """Splash attention per batch row at any sequence length: queries and keys are padded to a
  multiple of 128 (2048 past 16k tokens) and padded keys masked through segment ids (queries are segment 1, masked or
  padded keys segment 0), so every row needs one unmasked key (the tokenizer's empty caption keeps
  one). Padded queries attend like real ones and are dropped. `interpret` runs the kernel in Python
  (tests off TPU)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # TPU-only kernel: import on use
  (b, n, h, d), m = q.shape, k.shape[1]
  n_padded, m_padded = (-(-x // _splash_tile(x)) * _splash_tile(x) for x in (n, m))
  if key_mask is None and m_padded != m:
    key_mask = jnp.ones((b, m), bool)
  q = _pad_length(q, n_padded)
  k, v = _pad_length(k, m_padded), _pad_length(v, m_padded)
  bq, bkv = splash_blocks(n_padded, m_padded)
  compute = next(blk for blk in _SPLASH_BLOCKS if bkv % blk == 0)
  blocks = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=compute, block_q_dkv=bq, block_kv_dkv=bkv,
                             block_kv_dkv_compute=compute, block_q_dq=bq, block_kv_dq=bkv)
  kernel = splash.make_splash_mha(splash.MultiHeadMask([splash.FullMask((n_padded, m_padded))] * h),
                                  block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)
  heads_major = lambda x: x.transpose(0, 2, 1, 3)  # splash takes [heads, seq, head_dim]
  q = q * jnp.asarray(d ** -0.5, q.dtype)  # splash does not scale the logits
  if key_mask is None:
    out = jax.vmap(kernel)(heads_major(q), heads_major(k), heads_major(v))
  else:
    key_mask = _pad_length(key_mask, m_padded, False)
    segments = splash.SegmentIds(q=jnp.ones((b, n_padded), jnp.int32), kv=key_mask.astype(jnp.int32))
    out = jax.vmap(kernel)(heads_major(q), heads_major(k), heads_major(v), segments)
  return heads_major(out)[:, :n]


_KERNELS = {"xla": xla_attention, "blockwise": blockwise_attention, "cudnn": cudnn_attention,
            "splash": splash_attention}


def dot_product_attention(q, k, v, key_mask=None, backend: str = "xla"):
  """q [B,N,H,D], k/v [B,M,H,D], key_mask bool [B,M] -> [B,N,H,D], on one device's data.

  Softmax statistics are float32 in every backend. Every backend takes every sequence length; a
  head dim the chosen kernel cannot take is an error (never a silent switch to another kernel).
  """
  error = shape_error(backend, q.shape[-1])
  if error:
    raise ValueError(error)
  return _KERNELS[backend](q, k, v, key_mask)


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
    # The platform is checked where the target is known (the config boundary): compile_check
    # builds TPU models on a CPU host.
    error = (f"model.attention={backend!r} is not a backend; choose one of {BACKENDS}." if backend not in BACKENDS
             else shape_error(backend, dim // num_heads))
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
    return self.out(checkpoint_name(y, ATTENTION_OUTPUT))

