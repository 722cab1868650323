"""Attention backends: XLA against a float64 reference; cuDNN/splash refused off their platform before
any compute; the splash wrapper checked in Pallas interpret mode (TPU semantics, run on CPU)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tiny import tiny_config
from vdit.config import config_io
from vdit.parallel import sharding
from vdit.model import attention, context_parallel
from vdit.model.factory import build_model


def _qkv(b, n, h, d, m=None, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  m = m or n
  return (jax.random.normal(keys[0], (b, n, h, d)), jax.random.normal(keys[1], (b, m, h, d)),
          jax.random.normal(keys[2], (b, m, h, d)))


def _reference(q, k, v, key_mask):
  """Masked softmax attention in float64 NumPy."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  scores = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(q.shape[-1])
  scores = np.where(np.asarray(key_mask)[:, None, None, :], scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum("bhnm,bmhd->bnhd", weights, v)


def test_xla_backend_matches_a_float64_reference_and_kernel_shapes_fall_back_to_it():
  q, k, v = _qkv(2, 10, 2, 8, m=6)
  key_mask = jnp.arange(6)[None] < jnp.array([[4], [1]])
  expected = _reference(q, k, v, key_mask)
  # Tolerance: float32 softmax of O(1) logits, ~1e-7 relative.
  np.testing.assert_allclose(attention.dot_product_attention(q, k, v, key_mask, "xla"), expected, atol=1e-5)
  # 10 queries: no splash tile fits, so "splash" runs XLA (no TPU needed for this shape).
  np.testing.assert_allclose(attention.dot_product_attention(q, k, v, key_mask, "splash"), expected, atol=1e-5)


@pytest.mark.parametrize("backend,needs", [("cudnn", "NVIDIA GPU"), ("splash", "TPU")])
def test_platform_kernels_are_refused_on_cpu_before_any_compute(backend, needs):
  message = rf"model.attention='{backend}' is .*\({needs}\), unavailable on platform 'cpu'; use 'xla' here"
  with pytest.raises(ValueError, match=message):
    attention.Attention(8, 2, rngs=nnx.Rngs(0), backend=backend)
  config = tiny_config(**{"model.attention": backend})
  with pytest.raises(ValueError, match=message):
    nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
  with pytest.raises(config_io.ConfigError, match="config." + message):
    config_io.validate(config)


def test_backend_errors_name_the_alternatives_of_each_platform():
  assert attention.backend_error("cudnn", "gpu") is None
  assert attention.backend_error("splash", "tpu") is None
  assert attention.backend_error("xla", "cpu") is None
  assert "use 'xla' or 'splash' here" in attention.backend_error("cudnn", "tpu")
  assert "use 'xla' or 'cudnn' here" in attention.backend_error("splash", "gpu")
  assert "choose one of ('xla', 'cudnn', 'splash')" in attention.backend_error("flash", "gpu")


def _forward_and_grads(fn, q, k, v, key_mask):
  cotangent = jax.random.normal(jax.random.key(9), q.shape)

  def run(q, k, v):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, key_mask), q, k, v)
    return out, vjp(cotangent)

  return jax.jit(run)(q, k, v)


def _assert_close(actual, expected):
  # Tolerance: 1e-5 of the largest reference magnitude (float32; measured ~1e-7).
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a), np.asarray(e)
    assert np.abs(a - e).max() <= 1e-5 * np.abs(e).max()


def test_splash_wrapper_matches_xla_in_interpret_mode():
  """Layout, logit scale and padding-as-segment-ids of the splash wrapper, forward and backward.
  (Interpret mode checks the kernel's semantics, not its Mosaic lowering, which needs a TPU.)"""
  q, k, v = _qkv(1, 128, 2, 16)
  key_mask = jnp.arange(128)[None] < 100
  splash = functools.partial(attention.splash_attention, interpret=True)
  _assert_close(_forward_and_grads(splash, q, k, v, key_mask),
                _forward_and_grads(attention.xla_attention, q, k, v, key_mask))


def test_ulysses_runs_the_configured_kernel_on_each_device():
  """Ulysses hands each device whole sequences, so the local kernel (splash here, interpreted)
  sees the full 256 keys of its heads."""
  q, k, v = _qkv(1, 256, 2, 16)
  key_mask = jnp.arange(256)[None] < 200
  splash = functools.partial(attention.splash_attention, interpret=True)
  ulysses = lambda q, k, v, m: context_parallel.attention(q, k, v, m, mode="ulysses", local=splash,
                                                          kv_sharded=True, check_vma=False)
  expected = _forward_and_grads(attention.xla_attention, q, k, v, key_mask)
  with jax.set_mesh(sharding.make_mesh({"context": 2}, devices=jax.devices()[:2])):
    _assert_close(_forward_and_grads(ulysses, q, k, v, key_mask), expected)
