"""A sentencepiece tokenizer from a model file by path (T5 / umT5 `spiece.model`), with the same
`encode_batch` contract as `vdit.text.tokenizer.Tokenizer`: ids followed by EOS, padded with the
model's pad id (0 for T5 and umT5), a mask, and over-long prompts an error or cut.

Ids are what `SentencePieceProcessor.encode` gives plus EOS, as transformers' slow T5Tokenizer
(legacy mode) does; text normalisation beyond sentencepiece's own (e.g. Wan's ftfy clean-up)
is the caller's.
"""
from collections.abc import Sequence
import os

import numpy as np
import sentencepiece

from vdit.text.tokenizer import pad_batch, prompt_list
from vdit.core.errors import UserError


class TokenizerFileError(UserError):
  """A tokenizer file that is missing or is not a sentencepiece model."""


class SentencePieceTokenizer:
  """Turns prompts into fixed-length id arrays plus a mask with a sentencepiece model."""

  def __init__(self, path: str, max_length: int):
    """Args: path: a sentencepiece .model file; max_length: tokens per prompt including EOS."""
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1 (room for EOS), got {max_length}.")
    if not os.path.isfile(path):
      raise TokenizerFileError(f"Tokenizer file {path!r} does not exist; pass a sentencepiece model "
                               "(e.g. spiece.model of a T5/umT5 checkpoint).")
    try:
      self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError, ValueError) as e:
      raise TokenizerFileError(f"Tokenizer file {path!r} is not a sentencepiece model ({e}); pass the "
                               "spiece.model (or tokenizer.model) file, not tokenizer.json.") from None
    if self._sp.eos_id() < 0:
      raise TokenizerFileError(f"Tokenizer file {path!r} defines no EOS piece; T5 encoders need one.")
    self.path = path
    self.max_length = max_length
    self.eos_id = self._sp.eos_id()
    self.pad_id = max(self._sp.pad_id(), 0)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Returns the ids of `text` followed by EOS, without padding or truncation."""
    return list(self._sp.encode(text, out_type=int)) + [self.eos_id]

  def encode_batch(self, texts: Sequence[str], truncate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Encodes prompts into padded arrays.

    Returns:
      ids: int32 [B, max_length], padded with pad_id; mask: bool [B, max_length], True on real
      tokens (including EOS).

    Raises:
      PromptError: a prompt is longer than max_length and truncate is False.
    """
    texts = prompt_list(texts)
    return pad_batch([self.encode(t) for t in texts], texts, self.max_length, self.pad_id, self.eos_id, truncate)
