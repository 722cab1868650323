"""Model building blocks: patches, rotary embeddings, the DiT forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tiny import tiny_config
from vdit.model import rope
from vdit.model.factory import build_model
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


def test_dit_forward_any_frame_count_and_size_and_zero_init_output():
  config = tiny_config()
  model = build_model(config, nnx.Rngs(0))
  tokens = jnp.ones((2, 12), jnp.int32)
  mask = jnp.arange(12)[None].repeat(2, 0) < jnp.array([[3], [5]])
  context = model.encode_text(tokens, mask)
  for shape in [(2, 4, 32, 32, 3), (2, 8, 16, 48, 3), (2, 2, 8, 8, 3)]:
    x, t = jnp.ones(shape), jnp.array([0.3, 0.9])
    out = model.dit(x, t, context, mask)
    assert out.shape == shape
    # adaLN-zero + zero-initialised head: an untrained network outputs exactly zero ...
    assert float(jnp.abs(out).max()) == 0.0
    # ... which x-prediction turns into the velocity (x_t - 0) / t.
    assert model.prediction == "x"
    np.testing.assert_allclose(model.velocity(x, t, context, mask), x / t[:, None, None, None, None], rtol=1e-6)


def test_text_padding_does_not_change_the_output():
  config = tiny_config()
  model = build_model(config, nnx.Rngs(0))
  # Perturb the zero-initialised head so the output depends on the input.
  model.dit.head.kernel[...] = jax.random.normal(jax.random.key(3), model.dit.head.kernel[...].shape)
  model.dit.blocks.modulation[...] = jnp.ones_like(model.dit.blocks.modulation[...])
  mask = jnp.arange(12)[None] < 4
  a = jnp.array([[5, 6, 7, 1] + [0] * 8])
  b = jnp.array([[5, 6, 7, 1] + [9] * 8])  # different ids under the padding mask
  x = jax.random.normal(jax.random.key(4), (1, 4, 32, 32, 3))
  va = model.velocity(x, jnp.array([0.5]), model.encode_text(a, mask), mask)
  vb = model.velocity(x, jnp.array([0.5]), model.encode_text(b, mask), mask)
  np.testing.assert_allclose(va, vb, atol=1e-5)
  assert float(jnp.abs(va).max()) > 0
