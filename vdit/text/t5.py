"""T5 / umT5 encoder in Flax NNX, numerically matching transformers' T5EncoderModel / UMT5EncoderModel.

Pre-norm blocks: RMS layer norm (T5LayerNorm: no mean, no bias, float32 statistics) -> self-attention
with bucketed relative position bias and *no* 1/sqrt(d) logit scaling (T5 folds it into the init) ->
residual; RMS norm -> feed-forward (gated-GELU for T5 v1.1 / umT5, ReLU for the original T5) ->
residual; a final RMS norm. T5 keeps one bias table in the first layer and shares it with every
layer; umT5 gives every layer its own. Dropout is absent (inference only).

`T5Encoder(tokens [B, L] int32, mask [B, L] bool) -> [B, L, d_model]` fills the `TextEncoder`
interface (`dim` attribute); padded positions of the output are zero. Every parameter carries
logical axes (vdit.parallel.sharding): the vocabulary table ('vocab', 'embed'), projections
('embed', 'heads', 'kv') and ('embed', 'mlp'), so umT5-XXL (5.7B) shards over fsdp x tensor.
Weights from Hugging Face files: `vdit.text.t5_weights`.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.model.layers import Dense, Embed
from vdit.parallel.sharding import constrain
from vdit.core.errors import UserError

MODEL_TYPES = ("t5", "umt5")
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # HF "gelu_new": tanh approximation
    "silu": jax.nn.silu,
}


class T5ConfigError(UserError):
  pass


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The encoder's hyperparameters, named as in Hugging Face's config.json."""
  vocab_size: int
  d_model: int
  d_kv: int
  num_heads: int
  d_ff: int
  num_layers: int
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward_proj: str = "gated-gelu"
  layer_norm_epsilon: float = 1e-6
  model_type: str = "t5"

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise T5ConfigError(f"T5 config {name}={value!r} must be a positive integer.")
    if self.model_type not in MODEL_TYPES:
      raise T5ConfigError(f"T5 config model_type={self.model_type!r} is not one of {MODEL_TYPES}.")
    if self.relative_attention_num_buckets < 4:
      raise T5ConfigError("T5 config relative_attention_num_buckets must be >= 4 (bidirectional buckets "
                          f"are split in halves twice), got {self.relative_attention_num_buckets}.")
    self.activation  # validates feed_forward_proj

  @property
  def gated(self) -> bool:
    return self.feed_forward_proj.split("-")[0] == "gated"

  @property
  def activation(self) -> str:
    """HF's dense_act_fn: the part after 'gated-', with 'gated-gelu' meaning the tanh GELU."""
    parts = self.feed_forward_proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or parts[-1] not in ACTIVATIONS:
      raise T5ConfigError(f"T5 config feed_forward_proj={self.feed_forward_proj!r} is not 'ACT' or "
                          f"'gated-ACT' with ACT in {sorted(ACTIVATIONS)}.")
    return "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]

  @property
  def bias_per_layer(self) -> bool:
    return self.model_type == "umt5"

  @classmethod
  def from_dict(cls, d: dict, source: str = "config") -> "T5Config":
    """From a Hugging Face config.json dict; unknown keys are ignored, missing ones are an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
      raise T5ConfigError(f"{source}: missing T5 config keys {missing}.")
    if d.get("is_decoder"):
      raise T5ConfigError(f"{source}: is_decoder=true; vdit loads T5 encoders only.")
    try:
      return cls(**{n: d[n] for n in fields if n in d})
    except T5ConfigError as e:
      raise T5ConfigError(f"{source}: {e}") from None


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int,
                              max_distance: int) -> np.ndarray:
  """Bidirectional T5 buckets of (key - query) positions, int32 [query_length, key_length].

  Half the buckets per direction; within a direction, distances below num_buckets/4 get their own
  bucket and larger ones share log-spaced buckets up to max_distance. Computed in float32 like
  transformers' `_relative_position_bucket` so boundary cases round the same way.
  """
  relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  num_buckets //= 2
  buckets = (relative > 0).astype(np.int64) * num_buckets
  distance = np.abs(relative)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    log_ratio = (np.log(distance.astype(np.float32) / np.float32(max_exact))
                 / np.float32(math.log(max_distance / max_exact)))
  log_ratio = log_ratio * np.float32(num_buckets - max_exact)
  large = max_exact + np.where(distance < max_exact, 0, log_ratio).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class T5LayerNorm(nnx.Module):
  """y = scale * x / sqrt(mean(x^2) + eps): float32 statistics, no mean subtraction, no bias."""

  def __init__(self, dim, *, eps, dtype=jnp.float32, param_dtype=jnp.float32):
    self.eps = eps
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
    return y.astype(self.dtype) * self.scale[...].astype(self.dtype)


class T5Attention(nnx.Module):
  """Self-attention without logit scaling; `bias` [B or 1, H, L, L] carries position and padding."""

  def __init__(self, cfg: T5Config, *, has_relative_bias, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, use_bias=False)
    heads = (cfg.num_heads, cfg.d_kv)
    self.q = Dense(cfg.d_model, heads, in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.k = Dense(cfg.d_model, heads, in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.v = Dense(cfg.d_model, heads, in_axes=("embed",), out_axes=("heads", "kv"), **kw)
    self.o = Dense(heads, cfg.d_model, in_axes=("heads", "kv"), out_axes=("embed",), **kw)
    self.relative_bias = (nnx.Param(nnx.initializers.normal(1.0)(
        rngs.params(), (cfg.relative_attention_num_buckets, cfg.num_heads), param_dtype),
        logical_axes=(None, "heads")) if has_relative_bias else None)
    self.num_buckets = cfg.relative_attention_num_buckets
    self.max_distance = cfg.relative_attention_max_distance
    self.dtype = dtype

  def position_bias(self, length: int):
    """float32 [1, H, L, L] from this layer's bucket table."""
    buckets = relative_position_buckets(length, length, self.num_buckets, self.max_distance)
    values = jnp.take(self.relative_bias[...].astype(jnp.float32), jnp.asarray(buckets), axis=0)
    return values.transpose(2, 0, 1)[None]

  def __call__(self, x_bld, bias_bhqk):
    act = ("batch", "text_length", "act_heads", "kv")
    q = constrain(self.q(x_bld), act)
    k = constrain(self.k(x_bld), act)
    v = constrain(self.v(x_bld), act)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias_bhqk
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = constrain(jnp.einsum("bhqk,bkhd->bqhd", probs, v), act)
    return self.o(out)


class T5FeedForward(nnx.Module):
  """wo(act(wi_0 x) * wi_1 x) when gated, else wo(act(wi x)); hidden dim along 'mlp'."""

  def __init__(self, cfg: T5Config, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, use_bias=False)
    if cfg.gated:
      self.wi_0 = Dense(cfg.d_model, cfg.d_ff, in_axes=("embed",), out_axes=("mlp",), **kw)
      self.wi_1 = Dense(cfg.d_model, cfg.d_ff, in_axes=("embed",), out_axes=("mlp",), **kw)
    else:
      self.wi = Dense(cfg.d_model, cfg.d_ff, in_axes=("embed",), out_axes=("mlp",), **kw)
    self.wo = Dense(cfg.d_ff, cfg.d_model, in_axes=("mlp",), out_axes=("embed",), **kw)
    self.gated = cfg.gated
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, x):
    h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
    return self.wo(constrain(h, ("batch", "text_length", "act_mlp")))


class T5Block(nnx.Module):

  def __init__(self, cfg: T5Config, *, has_relative_bias, rngs, dtype, param_dtype):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.attn_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, **kw)
    self.attn = T5Attention(cfg, has_relative_bias=has_relative_bias, rngs=rngs, **kw)
    self.ffn_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, **kw)
    self.ffn = T5FeedForward(cfg, rngs=rngs, **kw)

  def __call__(self, x, bias):
    x = x + self.attn(self.attn_norm(x), bias)
    return x + self.ffn(self.ffn_norm(x))


class T5Encoder(nnx.Module):
  """tokens [B, L] int32, mask [B, L] bool -> [B, L, d_model] (zero at padded positions)."""

  def __init__(self, cfg: T5Config, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.config = cfg
    self.dim = cfg.d_model
    self.dtype = dtype
    self.embed = Embed(cfg.vocab_size, cfg.d_model, **kw)
    self.layers = nnx.List([T5Block(cfg, has_relative_bias=cfg.bias_per_layer or i == 0, **kw)
                            for i in range(cfg.num_layers)])
    self.final_norm = T5LayerNorm(cfg.d_model, eps=cfg.layer_norm_epsilon, dtype=dtype,
                                  param_dtype=param_dtype)

  def __call__(self, tokens, mask):
    length = tokens.shape[1]
    # Padded keys get the most negative float32 (transformers adds finfo(dtype).min).
    mask_bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    x = constrain(self.embed(tokens), ("batch", "text_length", "act_embed"))
    position_bias = None
    for layer in self.layers:
      if layer.attn.relative_bias is not None:  # umT5: every layer; T5: the first, then shared
        position_bias = layer.attn.position_bias(length)
      x = constrain(layer(x, position_bias + mask_bias), ("batch", "text_length", "act_embed"))
    return self.final_norm(x) * mask[..., None].astype(self.dtype)
