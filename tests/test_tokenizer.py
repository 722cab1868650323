"""Tests for the shipped word-plus-byte tokenizer."""
import importlib.resources
import re

import numpy as np
import pytest

from vdit.toy import spec as toy_spec
from vdit.text.tokenizer import PromptError, Tokenizer


def _vocab_words():
  path = importlib.resources.files("vdit.text").joinpath("vocab.txt")
  return path.read_text("utf-8").split()


def test_vocab_covers_toy_world_and_is_well_formed():
  words = _vocab_words()
  assert len(words) == len(set(words))
  assert all(re.fullmatch(r"[a-z0-9]+", w) for w in words)
  toy_words = {"a", "an", "moving", *toy_spec.COLOURS, *toy_spec.SHAPES, *toy_spec.DIRECTIONS}
  assert toy_words <= set(words)
  assert Tokenizer(8).vocab_size == 2 + 256 + len(words)


def test_ids_are_pinned():
  # Changing these ids breaks every trained checkpoint: vocab.txt is append-only.
  assert Tokenizer(8).encode("a red circle moving left") == [258, 619, 350, 557, 522, 1]


def test_toy_caption_is_one_token_per_word_plus_eos():
  tok = Tokenizer(8)
  for combo in toy_spec.all_combinations():
    ids = tok.encode(toy_spec.caption(*combo))
    assert len(ids) == 6 and ids[-1] == tok.eos_id
    assert all(258 <= i < tok.vocab_size for i in ids[:-1])


def test_lowercases_and_ignores_whitespace():
  tok = Tokenizer(8)
  assert tok.encode("  A RED\tCircle ") == tok.encode("a red circle")


def test_unknown_words_and_punctuation_fall_back_to_bytes():
  tok = Tokenizer(32)
  assert tok.encode("zqx") == [2 + ord("z"), 2 + ord("q"), 2 + ord("x"), 1]
  assert tok.encode("red!") == [tok.encode("red")[0], 2 + ord("!"), 1]
  japanese = "猫"
  assert tok.encode(japanese) == [2 + b for b in japanese.encode("utf-8")] + [1]


def test_empty_prompt_is_just_eos():
  assert Tokenizer(4).encode("") == [Tokenizer.eos_id]


def test_encode_batch_pads_and_masks():
  tok = Tokenizer(6)
  ids, mask = tok.encode_batch(["a red circle", ""])
  assert ids.dtype == np.int32 and ids.shape == (2, 6)
  assert mask.dtype == np.bool_ and mask.shape == (2, 6)
  np.testing.assert_array_equal(ids[0, :4], tok.encode("a red circle"))
  np.testing.assert_array_equal(ids[0, 4:], [0, 0])
  np.testing.assert_array_equal(mask[0], [True] * 4 + [False] * 2)
  np.testing.assert_array_equal(ids[1], [1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(mask[1], [True] + [False] * 5)


def test_too_long_prompt_raises_clear_error():
  prompt = "a red circle moving left " + "x" * 100
  with pytest.raises(PromptError) as info:
    Tokenizer(8).encode_batch([prompt])
  message = str(info.value)
  assert prompt[:60] in message
  assert str(len(Tokenizer(8).encode(prompt))) in message
  assert "8" in message and "config.text.max_length" in message


def test_truncate_keeps_eos_last():
  tok = Tokenizer(4)
  ids, mask = tok.encode_batch(["a red circle moving left"], truncate=True)
  np.testing.assert_array_equal(ids[0], tok.encode("a red circle")[:3] + [1])
  assert mask.all()
