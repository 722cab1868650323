"""Context-parallel attention (Ulysses, ring) equals unsharded XLA attention, forward and backward.

Tolerance throughout: float32, |error| <= 1e-5 x the reference's largest magnitude (measured errors
are ~1e-7: only the order of float32 sums differs).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tiny import tiny_config
from vdit.config import experiment
from vdit.parallel import sharding
from vdit.model import factory
from vdit.model import context_parallel, rope
from vdit.model.attention import xla_attention

B, N, H, D = 2, 16, 8, 4  # 8 heads: Ulysses splits them over up to 8 context shards


def _qkv(length=N, seed=0, heads=H):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (B, length, heads, D)) for k in keys]


def _key_mask(length):
  # Row 0 masks the tail (a partly masked last block); row 1 keeps only the last 3 keys, so on every
  # context mesh here the first ring blocks are wholly masked (the running max starts at -inf).
  position = jnp.arange(length)[None]
  return jnp.concatenate([position < length - 5, position >= length - 3])


def _forward_and_grads(fn, q, k, v, key_mask, mesh=None):
  """fn's output and the gradients of <output, fixed cotangent> w.r.t. q, k, v, in one program."""
  cotangent = jax.random.normal(jax.random.key(9), q.shape)

  def run(q, k, v):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, key_mask), q, k, v)
    return out, vjp(cotangent)

  if mesh is None:
    return jax.jit(run)(q, k, v)
  with jax.set_mesh(mesh), sharding.activation_rules(sharding.DEFAULT_RULES):
    return jax.jit(run)(q, k, v)


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a), np.asarray(e)
    np.testing.assert_array_less(np.abs(a - e).max(), 1e-5 * np.abs(e).max())


def _with_rope(attend):
  """Self-attention on RoPE'd queries and keys, as the DiT's blocks compute it."""
  angles = rope.sequence_angles(N, D)
  return lambda q, k, v, mask: attend(rope.apply(q, angles), rope.apply(k, angles), v, mask)


@functools.cache
def _unsharded_self_attention():
  return _forward_and_grads(_with_rope(xla_attention), *_qkv(), _key_mask(N))


@pytest.mark.parametrize("mode", ["ring", "ulysses"])
@pytest.mark.parametrize("mesh_shape", [{"data": 2, "context": 4}, {"context": 8},
                                        {"data": 1, "fsdp": 2, "tensor": 2, "context": 2}])
def test_self_attention_equals_unsharded_attention(mesh_shape, mode):
  sharded = lambda q, k, v, m: context_parallel.attention(q, k, v, m, mode=mode, local=xla_attention,
                                                          kv_sharded=True)
  actual = _forward_and_grads(_with_rope(sharded), *_qkv(), _key_mask(N), sharding.make_mesh(mesh_shape))
  _assert_close(actual, _unsharded_self_attention())


@pytest.mark.parametrize("mode", ["ring", "ulysses"])
def test_forward_mode_derivatives_equal_unsharded_attention(mode):
  """jax.jvp (consistency distillation's tangent) through the ring's blockwise folds and Ulysses's
  all-to-alls equals the JVP of unsharded attention."""
  q, k, v = _qkv()
  tangents = tuple(_qkv(seed=5))
  mask = _key_mask(N)
  sharded = lambda q, k, v: context_parallel.attention(q, k, v, mask, mode=mode, local=xla_attention,
                                                       kv_sharded=True)
  expected = jax.jit(lambda: jax.jvp(lambda q, k, v: xla_attention(q, k, v, mask), (q, k, v), tangents))()
  with jax.set_mesh(sharding.make_mesh({"data": 2, "context": 4})), sharding.activation_rules(sharding.DEFAULT_RULES):
    actual = jax.jit(lambda: jax.jvp(sharded, (q, k, v), tangents))()
  _assert_close(actual, expected)


def test_cross_attention_to_padded_text_with_sequence_sharded_queries():
  q, = _qkv()[:1]
  text_k, text_v = _qkv(length=6, seed=1)[1:]
  text_mask = jnp.arange(6)[None] < jnp.array([[4], [1]])
  sharded = lambda q, k, v, m: context_parallel.attention(q, k, v, m, mode="ring", local=xla_attention,
                                                          kv_sharded=False)
  expected = _forward_and_grads(xla_attention, q, text_k, text_v, text_mask)
  actual = _forward_and_grads(sharded, q, text_k, text_v, text_mask, sharding.make_mesh({"data": 2, "context": 4}))
  _assert_close(actual, expected)


def test_ulysses_needs_heads_divisible_by_the_context_axis():
  q, k, v = _qkv(heads=6)
  with jax.set_mesh(sharding.make_mesh({"context": 4, "tensor": 2})):
    with pytest.raises(ValueError, match=r"ulysses .* 3 heads \(num_heads 6 over tensor 2\) .* context axis of "
                       r"size 4.*'ring'"):
      jax.eval_shape(lambda q, k, v: context_parallel.attention(q, k, v, mode="ulysses", local=xla_attention,
                                                                kv_sharded=True), q, k, v)


def test_sequence_must_divide_over_the_context_axis():
  q, k, v = _qkv(length=12)
  with jax.set_mesh(sharding.make_mesh({"context": 8})):
    with pytest.raises(ValueError, match="12 tokens is not divisible by the context axis size 8"):
      jax.eval_shape(lambda q, k, v: context_parallel.attention(q, k, v, mode="ring", local=xla_attention,
                                                                kv_sharded=True), q, k, v)


@functools.cache  # frozen (an Experiment): the abstract model traced from it is memoised
def _dit_config(mode):
  # 4 heads (head dim 8) so Ulysses can split them; toy patches (2, 8, 8) make 8 tokens of a
  # 4x16x16 video. One block: every block attends alike, and each adds compile time (the ring
  # through the scan over two blocks is tests/test_sharding.py's gradient test).
  return experiment.freeze(tiny_config(**{"model.num_heads": 4, "model.context_parallel": mode, "model.depth": 1}))


@functools.cache
def _dit_params():
  """Random parameters drawn on the host (initialising on device costs seconds of compilation):
  norm scales near 1, everything else N(0, 0.2^2), so zero-initialised heads and gates pass
  gradient to every parameter."""
  _, abstract = factory.abstract_model(_dit_config("none"))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return jnp.asarray(base + 0.2 * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


def _dit_output_and_grads(mode, mesh=None):
  """DiT output and parameter gradients of <output, random target> for a fixed batch."""
  graphdef, _ = factory.abstract_model(_dit_config(mode))
  x = jax.random.normal(jax.random.key(3), (2, 4, 16, 16, 3))
  target = jax.random.normal(jax.random.key(4), x.shape)
  t = jnp.array([0.3, 0.8])
  text_mask = jnp.arange(12)[None] < jnp.array([[5], [9]])
  context = jax.random.normal(jax.random.key(5), (2, 12, 32))

  def loss(params):
    out = nnx.merge(graphdef, params).dit(x, t, context, text_mask)
    return jnp.mean(out * target), out

  run = jax.jit(jax.value_and_grad(loss, has_aux=True))
  if mesh is None:
    (_, out), grads = run(_dit_params())
  else:
    with jax.set_mesh(mesh), sharding.activation_rules(sharding.DEFAULT_RULES):
      (_, out), grads = run(_dit_params())
  return out, grads


@functools.cache
def _unsharded_dit_output_and_grads():
  return _dit_output_and_grads("none")  # no mesh: one device's attention


@pytest.mark.parametrize("mode,mesh_shape", [
    ("ring", {"data": 2, "context": 4}),
    ("ulysses", {"data": 1, "fsdp": 2, "tensor": 2, "context": 2}),
])
def test_dit_forward_and_gradients_equal_the_unsharded_model(mode, mesh_shape):
  expected_out, expected_grads = _unsharded_dit_output_and_grads()
  out, grads = _dit_output_and_grads(mode, sharding.make_mesh(mesh_shape))
  _assert_close(out, expected_out)
  for (path, g), e in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(expected_grads)):
    g, e = np.asarray(g), np.asarray(e)
    assert np.abs(g - e).max() <= 1e-5 * np.abs(e).max() + 1e-9, jax.tree_util.keystr(path)


def test_dit_rejects_a_token_count_the_context_axis_does_not_divide():
  graphdef, params = factory.abstract_model(_dit_config("ring"))
  x = jax.ShapeDtypeStruct((2, 2, 16, 24, 3), jnp.float32)  # grid (1, 2, 3): 6 tokens
  context, mask = jnp.zeros((2, 12, 32)), jnp.ones((2, 12), bool)
  with jax.set_mesh(sharding.make_mesh({"data": 2, "context": 4})):
    with pytest.raises(ValueError, match=r"2x16x24 video has 6 tokens .* context axis \(4\)"):
      jax.eval_shape(lambda params, x: nnx.merge(graphdef, params).dit(x, jnp.ones((2,)), context, mask), params, x)
