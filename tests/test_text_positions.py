"""text.positions: word order reaches the DiT without encoder layers, checkpoints keep loading at
any max_length, and a config that cannot use it is refused in one line."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import toy_two
from vdit.config import config_io
from vdit.core.errors import ConfigError
from vdit.model.text_encoder import TextEncoder


def _encode(positions, tokens):
  encoder = TextEncoder(vocab_size=10, dim=16, depth=0, num_heads=4, mlp_ratio=2.0, positions=positions,
                        rngs=nnx.Rngs(0))
  return np.asarray(encoder(jnp.asarray(tokens), jnp.ones(np.shape(tokens), bool)))


def test_without_positions_swapping_two_words_only_swaps_their_embeddings():
  out = _encode(False, [[3, 5, 7]])
  swapped = _encode(False, [[7, 5, 3]])
  np.testing.assert_allclose(out[0, ::-1], swapped[0], atol=1e-6)  # a bag of words


def test_with_positions_the_same_word_reads_differently_in_another_place():
  out = _encode(True, [[3, 5, 7]])
  swapped = _encode(True, [[7, 5, 3]])
  assert np.abs(out[0, 0] - swapped[0, 2]).max() > 1e-2  # word 3 first vs last


def test_the_position_table_does_not_depend_on_max_length():
  from vdit.model import factory
  shapes = []
  for length in (16, 24):
    config = toy_two.get_config("steps=10")
    with config.unlocked():
      config.text.positions = True
      config.text.max_length = length
    params = nnx.state(factory.abstract_model(config)[0], nnx.Param)
    shapes.append(jax.tree.map(lambda x: x.shape, params))
  assert shapes[0] == shapes[1]


def test_positions_with_a_frozen_encoder_are_refused_with_the_fix():
  config = toy_two.get_config("steps=10")
  with config.unlocked():
    config.text.positions = True
    config.text.encoder = "t5"
  with pytest.raises(ConfigError, match="text.positions=False"):
    config_io.validate(config)
