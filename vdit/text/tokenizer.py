"""A deterministic word-plus-byte tokenizer shipped with the repo (no downloads).

Ids: 0 = PAD, 1 = EOS, 2..257 = UTF-8 bytes (byte b -> 2 + b), then one id per line of
`vocab.txt`. Text is lowercased and split into words (`[a-z0-9]+`) and single other characters;
a word in the vocabulary gets its own id, anything else falls back to its UTF-8 bytes, so every
prompt in every language tokenizes.

`vocab.txt` is part of the checkpoint contract: a word's id is its line number, so only ever
append new words at the end; reordering or deleting lines silently changes trained models.
"""
from collections.abc import Sequence
import functools
import importlib.resources
import re

import numpy as np
from vdit.core.errors import UserError

_NUM_SPECIAL = 2  # PAD, EOS.
_NUM_BYTES = 256
_WORD_RE = re.compile(r"[a-z0-9]+")
# Words, or any single character that is neither whitespace nor part of a word.
_TOKEN_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class PromptError(UserError):
  """A prompt that cannot be tokenized as asked (e.g. too long)."""


@functools.cache
def _load_vocab() -> dict[str, int]:
  text = importlib.resources.files("vdit.text").joinpath("vocab.txt").read_text("utf-8")
  words = text.split("\n")
  if words and words[-1] == "":
    words.pop()
  vocab = {}
  for line, word in enumerate(words, start=1):
    if not _WORD_RE.fullmatch(word):
      raise ValueError(f"vocab.txt line {line}: {word!r} is not a lowercase [a-z0-9]+ word.")
    if word in vocab:
      raise ValueError(f"vocab.txt line {line}: duplicate word {word!r}; remove the repeat.")
    vocab[word] = _NUM_SPECIAL + _NUM_BYTES + len(vocab)
  return vocab


class Tokenizer:
  """Turns prompts into fixed-length id arrays plus a mask."""

  pad_id = 0
  eos_id = 1

  def __init__(self, max_length: int):
    """Args: max_length: tokens per prompt including EOS; longer prompts are an error or cut."""
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1 (room for EOS), got {max_length}.")
    self.max_length = max_length
    self._vocab = _load_vocab()

  @property
  def vocab_size(self) -> int:
    return self.shipped_vocab_size()

  @staticmethod
  def shipped_vocab_size() -> int:
    """Ids the shipped tokenizer can emit (specials, bytes, words): the trainable encoder's table."""
    return _NUM_SPECIAL + _NUM_BYTES + len(_load_vocab())

  def encode(self, text: str) -> list[int]:
    """Returns the ids of `text` followed by EOS, without padding or truncation."""
    ids = []
    for piece in _TOKEN_RE.findall(text.lower()):
      word_id = self._vocab.get(piece)
      if word_id is not None:
        ids.append(word_id)
      else:
        ids.extend(_NUM_SPECIAL + b for b in piece.encode("utf-8"))
    ids.append(self.eos_id)
    return ids

  def encode_batch(
      self, texts: Sequence[str], truncate: bool = False
  ) -> tuple[np.ndarray, np.ndarray]:
    """Encodes prompts into padded arrays.

    Args:
      texts: the prompts.
      truncate: cut prompts longer than max_length (keeping EOS last) instead of raising.

    Returns:
      ids: int32 [B, max_length], padded with pad_id.
      mask: bool [B, max_length], True on real tokens (including EOS).

    Raises:
      PromptError: a prompt is longer than max_length and truncate is False.
    """
    texts = prompt_list(texts)
    return pad_batch([self.encode(t) for t in texts], texts, self.max_length, self.pad_id, self.eos_id, truncate)


def prompt_list(texts):
  """The prompts of an encode_batch call; a bare string is a mistake (it would encode each char)."""
  if isinstance(texts, str):
    raise TypeError("encode_batch takes a sequence of prompts; wrap a single prompt in a list.")
  return texts


def pad_batch(token_lists, texts, max_length: int, pad_id: int, eos_id: int, truncate: bool):
  """ids int32 [B, max_length] padded with pad_id and mask bool [B, max_length] from per-prompt
  token lists ending in EOS; a list over max_length is cut (EOS kept last) or a PromptError."""
  ids = np.full((len(token_lists), max_length), pad_id, np.int32)
  mask = np.zeros((len(token_lists), max_length), bool)
  for row, (tokens, text) in enumerate(zip(token_lists, texts)):
    if len(tokens) > max_length:
      if not truncate:
        raise PromptError(
            f"Prompt {text[:60]!r} is {len(tokens)} tokens (including EOS) but the limit is "
            f"{max_length}; shorten the prompt or raise config.text.max_length.")
      tokens = tokens[:max_length - 1] + [eos_id]
    ids[row, :len(tokens)] = tokens
    mask[row, :len(tokens)] = True
  return ids, mask
