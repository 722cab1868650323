"""Model building blocks: patches, rotary embeddings, the DiT forward; scan/remat/dtype variants."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tiny import tiny_config
from vdit.config import config_io, experiment
from vdit.model import factory
from vdit.model import rope
from vdit.model.patchify import grid_shape, patchify, unpatchify


def test_patchify_round_trip_and_token_layout():
  x = jax.random.normal(jax.random.key(0), (2, 4, 8, 12, 3))
  tokens = patchify(x, (2, 4, 4))
  assert tokens.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
  np.testing.assert_array_equal(unpatchify(tokens, (2, 2, 3), (2, 4, 4), 3), x)
  # Token 1 is the patch one step along width: frames 0-1, rows 0-3, columns 4-7.
  np.testing.assert_array_equal(tokens[:, 1].reshape(2, 2, 4, 4, 3), x[:, 0:2, 0:4, 4:8])


def test_patch_size_must_divide_the_video():
  with pytest.raises(ValueError, match="not divisible by the patch size"):
    grid_shape((1, 5, 8, 8, 3), (2, 4, 4))


def test_rope_scores_depend_only_on_relative_position():
  head_dim = 24
  q = jax.random.normal(jax.random.key(1), (1, 1, 1, head_dim))
  k = jax.random.normal(jax.random.key(2), (1, 1, 1, head_dim))
  grid = (5, 6, 7)
  angles = rope.video_angles(grid, head_dim).reshape(grid + (head_dim // 2,))

  def score(p_q, p_k):
    rq = rope.apply(q, angles[p_q].reshape(1, -1))
    rk = rope.apply(k, angles[p_k].reshape(1, -1))
    return float(jnp.sum(rq * rk))

  base = score((1, 2, 3), (0, 0, 1))
  assert score((4, 5, 6), (3, 3, 4)) == pytest.approx(base, abs=1e-4)  # same offset, shifted
  assert score((1, 2, 3), (0, 1, 1)) != pytest.approx(base, abs=1e-3)  # different offset
  # Norms are preserved (a rotation).
  rq = rope.apply(q, angles[(2, 3, 4)].reshape(1, -1))
  assert float(jnp.linalg.norm(rq)) == pytest.approx(float(jnp.linalg.norm(q)), rel=1e-5)


def test_rope_splits_head_dim_like_wan():
  assert rope.axis_split(128) == (44, 42, 42)
  assert sum(rope.axis_split(24)) == 24


@functools.cache
def _config(**overrides):
  """tests/tiny.py frozen as services get it (an Experiment): the abstract model traced from it is
  memoised, so each variant here is traced once."""
  return experiment.freeze(tiny_config(**overrides))


def test_dit_forward_any_frame_count_and_size_and_zero_init_output():
  config = _config()
  graphdef, _ = factory.abstract_model(config)
  params = factory.init_params(config, jax.random.key(0))  # as initialised: zero head and gates
  tokens = jnp.ones((2, 12), jnp.int32)
  mask = jnp.arange(12)[None].repeat(2, 0) < jnp.array([[3], [5]])
  assert nnx.merge(graphdef, params).prediction == "x"

  @jax.jit  # compiled once per video shape
  def forward(params, x, t, tokens, mask):
    model = nnx.merge(graphdef, params)
    context = model.encode_text(tokens, mask)
    return model.dit(x, t, context, mask), model.velocity(x, t, context, mask)

  for shape in [(2, 4, 32, 32, 3), (2, 8, 16, 48, 3), (2, 2, 8, 8, 3)]:
    x, t = jnp.ones(shape), jnp.array([0.3, 0.9])
    out, velocity = forward(params, x, t, tokens, mask)
    assert out.shape == shape
    # adaLN-zero + zero-initialised head: an untrained network outputs exactly zero ...
    assert float(jnp.abs(out).max()) == 0.0
    # ... which x-prediction turns into the velocity (x_t - 0) / t.
    np.testing.assert_allclose(velocity, x / t[:, None, None, None, None], rtol=1e-6)


def test_x_skip_velocity_is_the_preconditioned_estimates():
  """x_skip's closed form against its definition in float64: x_hat = c_skip x_t / (1 - t) + c_out out
  (EDM's c_skip at s = 0.1, c_out = 0.5 sigma / sqrt(sigma^2 + s^2), sigma = t / (1 - t)), v = (x_t - x_hat) / t."""
  rng = np.random.default_rng(0)
  x, out = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  t = np.array([1e-3, 0.05, 0.3, 0.7, 0.999])[:, None]
  sigma, s = t / (1 - t), 0.1
  x_hat = s**2 / (sigma**2 + s**2) * x / (1 - t) + 0.5 * sigma / np.sqrt(sigma**2 + s**2) * out
  expected = (x - x_hat) / t
  got = factory._skip_velocity(jnp.asarray(x, jnp.float32), jnp.asarray(out, jnp.float32), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)  # float32 against float64
  # Near clean data the estimate is the input itself, whatever the network says.
  x_hat_small_t = x[0] - 1e-3 * np.asarray(got[0])
  np.testing.assert_allclose(x_hat_small_t, x[0] / (1 - 1e-3), atol=0.05)


_ENCODER = {"text.depth": 1}  # tests/tiny.py has word embeddings only: here padding passes through attention


def test_text_padding_does_not_change_the_output():
  config = _config(**_ENCODER)
  graphdef, _ = factory.abstract_model(config)
  mask = jnp.arange(12)[None] < 4
  x = jax.random.normal(jax.random.key(4), (1, 4, 32, 32, 3))

  @jax.jit
  def velocity(params, tokens):
    model = nnx.merge(graphdef, params)
    return model.velocity(x, jnp.array([0.5]), model.encode_text(tokens, mask), mask)

  # Random parameters (no zero-initialised head or gate): the output depends on the input.
  a = jnp.array([[5, 6, 7, 1] + [0] * 8])
  b = jnp.array([[5, 6, 7, 1] + [9] * 8])  # different ids under the padding mask
  va, vb = velocity(_host_params(**_ENCODER), a), velocity(_host_params(**_ENCODER), b)
  np.testing.assert_allclose(va, vb, atol=1e-5)
  assert float(jnp.abs(va).max()) > 0


@functools.cache
def _host_params(**overrides):
  """Random parameters of tests/tiny.py's model drawn on the host (no device init to compile): norm
  scales near 1, the rest N(0, 0.2^2), so the zero-initialised head and gates pass gradient
  everywhere. Drawn once; no setting varied here (scan, remat, dtype) changes a parameter."""
  _, abstract = factory.abstract_model(_config(**overrides))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return jnp.asarray(base + 0.2 * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


def _dit_loss(config):
  """params -> (<DiT output, fixed target>, output) on a fixed 2x2x16x16 batch (4 tokens per video)."""
  graphdef, _ = factory.abstract_model(config)
  x = jax.random.normal(jax.random.key(3), (2, 2, 16, 16, 3))
  target = jax.random.normal(jax.random.key(4), x.shape)
  context = jax.random.normal(jax.random.key(5), (2, 12, config.text.dim))
  mask = jnp.arange(12)[None] < jnp.array([[5], [9]])

  def loss(params):
    out = nnx.merge(graphdef, params).dit(x, jnp.array([0.3, 0.8]), context, mask)
    return jnp.mean(out * target), out

  return loss


@functools.cache
def _output_and_grads(**overrides):
  config = _config(**overrides)
  (_, out), grads = jax.jit(jax.value_and_grad(_dit_loss(config), has_aux=True))(_host_params())
  return out, grads


def test_unrolled_blocks_equal_scanned_blocks_on_the_same_parameters():
  scanned, unrolled = _config(), _config(**{"model.scan_layers": False})
  # The same stacked parameter tree, so checkpoints load either way.
  shapes = lambda c: jax.tree.map(lambda x: (x.shape, x.dtype), nnx.to_pure_dict(factory.abstract_model(c)[1]))
  assert shapes(scanned) == shapes(unrolled)
  out, grads = _output_and_grads()
  out_unrolled, grads_unrolled = _output_and_grads(**{"model.scan_layers": False})
  # Tolerance: the same float32 operations in the same order; XLA may fuse them differently.
  np.testing.assert_allclose(out_unrolled, out, rtol=1e-6, atol=1e-6 * float(jnp.abs(out).max()))
  for a, b in zip(jax.tree.leaves(grads_unrolled), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("remat", ["dots_all", "offload_dots", "offload_carry"])
def test_remat_policies_keep_outputs_and_gradients(remat):
  out, grads = _output_and_grads()
  out_remat, grads_remat = _output_and_grads(**{"model.remat": remat})
  # Tolerance: recomputation repeats the same float32 operations; only fusion may differ.
  np.testing.assert_allclose(out_remat, out, rtol=1e-6, atol=1e-6 * float(jnp.abs(out).max()))
  for a, b in zip(jax.tree.leaves(grads_remat), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))


def test_bfloat16_compute_keeps_float32_master_weights():
  config = _config(**{"model.dtype": "bfloat16", "model.param_dtype": "float32"})
  params = _host_params()
  loss = _dit_loss(config)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  # Gradients arrive in the parameters' float32 (traced only: the dtype is decided while tracing).
  grads = jax.eval_shape(jax.grad(lambda p: loss(p)[0]), params)
  assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  out_bf16 = jax.jit(lambda p: loss(p)[1])(params)
  out_fp32, _ = _output_and_grads()
  # Tolerance: bfloat16 keeps 8 mantissa bits (~0.4% per rounding), accumulated over 2 blocks.
  assert out_bf16.dtype == jnp.float32
  assert float(jnp.abs(out_bf16 - out_fp32).max()) <= 0.05 * float(jnp.abs(out_fp32).max())


def test_runtime_settings_keep_the_model_signature():
  runtime = {"model.attention": "cudnn", "model.context_parallel": "ring", "model.scan_layers": False,
             "model.remat": "offload_dots"}
  assert config_io.model_signature(tiny_config(**runtime)) == config_io.model_signature(tiny_config())
