"""Basic layers whose parameters carry logical axis names (see `vdit.parallel.sharding`).

Parameters are stored in `param_dtype` and cast to the compute `dtype` at use; normalisation and
softmax statistics stay in float32.
"""
import contextlib
import contextvars

import jax
import jax.numpy as jnp
from flax import nnx

from vdit.parallel.sharding import constrain

# Set while a model is built only for its shapes (vdit.model.factory.abstract_model): tracing each
# weight's initialiser (a truncated normal and a key split per weight) is most of an abstract build.
_SHAPES_ONLY = contextvars.ContextVar("vdit_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only():
  """Inside, layers create zero parameters without drawing from their initialisers: for builds under
  eval_shape, whose values are never computed."""
  token = _SHAPES_ONLY.set(True)
  try:
    yield
  finally:
    _SHAPES_ONLY.reset(token)


def initial_value(initializer, rngs, shape, param_dtype):
  """A new weight drawn from `initializer`, or zeros inside `shapes_only`."""
  return jnp.zeros(shape, param_dtype) if _SHAPES_ONLY.get() else initializer(rngs.params(), shape, param_dtype)


def _init(initializer, rngs, shape, param_dtype, logical_axes):
  return nnx.Param(initial_value(initializer, rngs, shape, param_dtype), logical_axes=tuple(logical_axes))


class Dense(nnx.Module):
  """y = x @ W + b with W of shape in_shape + out_shape, contracted over the trailing `len(in_shape)` dims."""

  def __init__(self, in_shape, out_shape, *, in_axes, out_axes, rngs, use_bias=True, zero_init=False,
               dtype=jnp.float32, param_dtype=jnp.float32):
    in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
    out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
    fan_in = 1
    for d in in_shape:
      fan_in *= d
    initializer = (nnx.initializers.zeros if zero_init else
                   nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                     in_axis=tuple(range(len(in_shape))),
                                                     out_axis=tuple(range(len(in_shape), len(in_shape) + len(out_shape)))))
    self.kernel = _init(initializer, rngs, in_shape + out_shape, param_dtype, tuple(in_axes) + tuple(out_axes))
    self.bias = _init(nnx.initializers.zeros, rngs, out_shape, param_dtype, out_axes) if use_bias else None
    self.num_in = len(in_shape)
    self.dtype = dtype
    # A LoRA adapter (vdit/model/lora.py attaches one): y += lora_scale * (x A) B, A [in..., r], B [r, out...].
    self.lora_a = self.lora_b = None
    self.lora_scale = 0.0

  def __call__(self, x):
    kernel = self.kernel[...].astype(self.dtype)
    x = x.astype(self.dtype)
    contract = tuple(range(x.ndim - self.num_in, x.ndim))
    y = jax.lax.dot_general(x, kernel, ((contract, tuple(range(self.num_in))), ((), ())))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if self.lora_a is not None:  # the low-rank path: never the [in, out] product, so no full-size gradient
      h = jax.lax.dot_general(x, self.lora_a[...].astype(self.dtype), ((contract, tuple(range(self.num_in))), ((), ())))
      y = y + self.lora_scale * jax.lax.dot_general(h, self.lora_b[...].astype(self.dtype),
                                                    (((h.ndim - 1,), (0,)), ((), ())))
    return y


class LayerNorm(nnx.Module):
  """LayerNorm in float32, optionally without affine parameters (adaLN supplies scale and shift)."""

  def __init__(self, dim, *, rngs=None, affine=True, eps=1e-6, dtype=jnp.float32, param_dtype=jnp.float32):
    del rngs  # constant init
    self.eps = eps
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",)) if affine else None
    self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), logical_axes=("norm",)) if affine else None

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    if self.scale is not None:
      y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


class RMSNorm(nnx.Module):
  """RMSNorm over the trailing dims of shape `dim` (an int: the last dim; a tuple such as
  (heads, head_dim): those dims together, as Wan's QK norm across heads), scale of that shape."""

  def __init__(self, dim, *, rngs=None, eps=1e-6, logical_axes=("norm",), dtype=jnp.float32,
               param_dtype=jnp.float32):
    del rngs  # constant init
    shape = (dim,) if isinstance(dim, int) else tuple(dim)
    self.eps = eps
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones(shape, param_dtype), logical_axes=tuple(logical_axes))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    axes = tuple(range(-self.scale[...].ndim, 0))
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(axes, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


ACTIVATIONS = {"gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True), "silu": jax.nn.silu}


class MLP(nnx.Module):
  """Two-layer MLP (GELU, tanh approximation, unless `activation` names another of ACTIVATIONS),
  hidden dim sharded along 'mlp'; `length_axis` names the token axis of [B, L, D] inputs
  ('length': video tokens, 'text_length': text; see vdit.parallel.sharding)."""

  def __init__(self, dim, hidden_dim, *, rngs, out_dim=None, zero_init_out=False, length_axis="length",
               activation="gelu_tanh", dtype=jnp.float32, param_dtype=jnp.float32):
    if activation not in ACTIVATIONS:
      raise ValueError(f"MLP activation {activation!r} is not one of {sorted(ACTIVATIONS)}.")
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.up = Dense(dim, hidden_dim, in_axes=("embed",), out_axes=("mlp",), **kw)
    self.down = Dense(hidden_dim, out_dim or dim, in_axes=("mlp",), out_axes=("embed",), zero_init=zero_init_out, **kw)
    self.length_axis = length_axis
    self.activation = activation

  def __call__(self, x):
    h = ACTIVATIONS[self.activation](self.up(x))
    if h.ndim == 3:  # token activations; the timestep MLP sees [B, D]
      h = constrain(h, ("batch", self.length_axis, "act_mlp"))
    return self.down(h)


class Embed(nnx.Module):
  """Token embedding table [vocab, embed]."""

  def __init__(self, vocab_size, dim, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.table = _init(nnx.initializers.normal(0.02), rngs, (vocab_size, dim), param_dtype, ("vocab", "embed"))
    self.dtype = dtype

  def __call__(self, ids):
    return jnp.take(self.table[...], ids, axis=0).astype(self.dtype)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as in DiT/Wan), float32 [..., dim]."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (t.astype(jnp.float32) * 1000.0)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
