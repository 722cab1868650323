"""Attention backends: XLA and blockwise against a float64 reference (outputs, gradients, JVPs);
cuDNN/splash refused off their target platform before any compute; the splash wrapper, padded to
any length, checked in Pallas interpret mode (TPU semantics, run on CPU)."""
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


def test_xla_and_blockwise_match_a_float64_reference():
  q, k, v = _qkv(2, 10, 2, 8, m=6)
  key_mask = jnp.arange(6)[None] < jnp.array([[4], [1]])
  expected = _reference(q, k, v, key_mask)
  # Tolerance: float32 softmax of O(1) logits, ~1e-7 relative.
  for backend in ("xla", "blockwise"):
    attend = jax.jit(functools.partial(attention.dot_product_attention, backend=backend))  # one program, not op by op
    np.testing.assert_allclose(attend(q, k, v, key_mask), expected, atol=1e-5)


def test_no_backend_switches_kernels_silently():
  """A head dim cuDNN cannot take is an error naming the rule and the fix, at construction and at call."""
  with pytest.raises(ValueError, match=r"'cudnn' takes head dims that are multiples of 8 up to 256 .* not 12 .*"
                                       r"'blockwise'"):
    attention.Attention(24, 2, rngs=nnx.Rngs(0), backend="cudnn")
  q, k, v = _qkv(1, 4, 2, 12)
  with pytest.raises(ValueError, match="not 12"):
    attention.dot_product_attention(q, k, v, None, "cudnn")
  with pytest.raises(config_io.ConfigError, match="config.model.attention='cudnn' takes head dims"):
    config_io.validate(tiny_config(**{"model.attention": "cudnn", "model.dim": 48, "model.num_heads": 4}), "gpu")


@pytest.mark.parametrize("backend,needs", [("cudnn", "NVIDIA GPU"), ("splash", "TPU")])
def test_platform_kernels_are_checked_against_the_target_platform(backend, needs):
  """Refused at the config boundary for this CPU host (before any compute); accepted for their own
  platform, and a model for that target builds here (compile_check builds TPU models on CPU)."""
  message = rf"model.attention='{backend}' is .*\({needs}\), unavailable on platform 'cpu'; use 'xla' or 'blockwise' here"
  config = tiny_config(**{"model.attention": backend})
  with pytest.raises(config_io.ConfigError, match="config." + message):
    config_io.validate(config)
  config_io.validate(config, {"cudnn": "gpu", "splash": "tpu"}[backend])
  nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))


def test_backend_errors_name_the_alternatives_of_each_platform():
  assert attention.backend_error("cudnn", "gpu") is None
  assert attention.backend_error("splash", "tpu") is None
  assert attention.backend_error("xla", "cpu") is None
  assert attention.backend_error("blockwise", "cpu") is None
  assert "use 'xla', 'blockwise' or 'splash' here" in attention.backend_error("cudnn", "tpu")
  assert "use 'xla', 'blockwise' or 'cudnn' here" in attention.backend_error("splash", "gpu")
  assert "choose one of ('xla', 'blockwise', 'cudnn', 'splash')" in attention.backend_error("flash", "gpu")


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


@pytest.mark.parametrize("n,m,masked", [(128, 128, True), (200, 77, True), (130, 130, False)])
def test_splash_wrapper_matches_xla_at_any_length_in_interpret_mode(n, m, masked):
  """Layout, logit scale, padding to the 128-token tile and key masks as segment ids of the splash
  wrapper, forward and backward: self-attention lengths that are not tile multiples (130) and
  cross-attention to short padded text (77 keys). (Interpret mode checks the kernel's semantics,
  not its Mosaic lowering: tests/test_compile_check_tpu.py compiles it for a TPU.)"""
  q, k, v = _qkv(1, n, 2, 16, m=m)
  key_mask = jnp.arange(m)[None] < (m * 3) // 4 if masked else None
  splash = functools.partial(attention.splash_attention, interpret=True)
  _assert_close(_forward_and_grads(splash, q, k, v, key_mask),
                _forward_and_grads(attention.xla_attention, q, k, v, key_mask))


def test_splash_blocks_keep_the_kernel_metadata_within_scalar_memory():
  # Wan-1.3B 480p (32,760 tokens) keeps 512-token blocks; Wan-14B 720p (75,600) overflowed the
  # TPU's scalar memory with them (found compiling for v5p) and takes 1,024-token key blocks.
  padded = lambda n: -(-n // 2048) * 2048
  assert attention.splash_blocks(padded(32760), padded(32760)) == (512, 512)
  bq, bkv = attention.splash_blocks(padded(75600), padded(75600))
  assert (bq, bkv) == (512, 1024) and (padded(75600) // bq) * (padded(75600) // bkv) <= 16384
  assert attention.splash_blocks(256, 128) == (256, 128)


def _jvp(fn, q, k, v, key_mask):
  tangents = tuple(jax.random.normal(jax.random.key(i), x.shape) for i, x in enumerate((q, k, v)))
  return jax.jit(lambda: jax.jvp(lambda q, k, v: fn(q, k, v, key_mask), (q, k, v), tangents))()


def _reference_jvp(q, k, v, key_mask):
  """Forward-mode derivative of the float64 reference by central differences (tolerance below)."""
  tangents = tuple(np.asarray(jax.random.normal(jax.random.key(i), x.shape), np.float64) for i, x in enumerate((q, k, v)))
  args = [np.asarray(x, np.float64) for x in (q, k, v)]
  eps = 1e-4
  plus = _reference(*[a + eps * t for a, t in zip(args, tangents)], key_mask)
  minus = _reference(*[a - eps * t for a, t in zip(args, tangents)], key_mask)
  return (plus - minus) / (2 * eps)


def test_blockwise_matches_dense_in_outputs_gradients_and_jvps_across_blocks_and_padding():
  """Sequences that are not block multiples (37 queries in blocks of 8, 29 keys in blocks of 16),
  padded text masks; reverse mode against XLA's dense attention, forward mode against the float64
  reference's central differences. Tolerances: 1e-5 of the largest magnitude (float32, measured
  ~1e-7); JVP 1e-4 (the difference quotient's own error is ~1e-8 at eps 1e-4 in float64)."""
  q, k, v = _qkv(2, 37, 2, 8, m=29)
  key_mask = jnp.arange(29)[None] < jnp.array([[29], [5]])
  blockwise = lambda q, k, v, m: attention.blockwise.attention(q, k, v, m, q_block=8, kv_block=16)
  _assert_close(_forward_and_grads(blockwise, q, k, v, key_mask),
                _forward_and_grads(attention.xla_attention, q, k, v, key_mask))
  out, tangent = _jvp(blockwise, q, k, v, key_mask)
  np.testing.assert_allclose(out, _reference(q, k, v, key_mask), atol=1e-5)
  expected = _reference_jvp(q, k, v, key_mask)
  assert np.abs(np.asarray(tangent) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_blockwise_memory_grows_linearly_with_length():
  """The compiled backward pass of blockwise attention holds no [N, N] scores: its temporaries at
  4x the length grow under 6x (dense attention's, measured 9.6x, over 8x)."""
  def temp_bytes(fn, n):
    q = jax.ShapeDtypeStruct((1, n, 2, 16), jnp.float32)
    loss = lambda q: fn(q, q, q, None).sum()
    return jax.jit(jax.grad(loss)).lower(q).compile().memory_analysis().temp_size_in_bytes

  blockwise = lambda q, k, v, m: attention.blockwise.attention(q, k, v, m, q_block=128, kv_block=128)
  assert temp_bytes(blockwise, 4096) < 6 * temp_bytes(blockwise, 1024)
  assert temp_bytes(attention.xla_attention, 4096) > 8 * temp_bytes(attention.xla_attention, 1024)


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


def test_a_workdir_trained_with_a_fused_kernel_samples_with_blockwise_elsewhere():
  config = tiny_config(**{"model.attention": "splash", "model.context_parallel": "ring"})
  config = config_io.for_inference(config)
  assert (config.model.attention, config.model.context_parallel) == ("blockwise", "none")
  config_io.validate(config)  # runnable on this CPU host
