"""What turns prompts into the DiT's text input, per config.text.encoder.

Every conditioner has `encode_batch(prompts, truncate=False) -> (x, mask)` like the tokenizers:
  trainable: the shipped tokenizer's ids [N, L]; the Generator's own encoder embeds them.
  t5: a frozen T5/umT5 encoder's embeddings [N, L, D] (float32, zero past each prompt's tokens,
      as Wan feeds its DiT); the Generator passes them through. Loaded from paths, never fetched.
Training with t5 reads embeddings from the latent cache instead; its `CachedEmptyCaption` gives
the empty caption's embedding (for caption dropout) without loading the encoder.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.core import weights
from vdit.text.tokenizer import Tokenizer

ENCODERS = ("trainable", "t5")
EMPTY_CAPTION_FILE = "empty_caption.safetensors"  # in a latent cache with text embeddings


class T5Text:
  """Prompts -> frozen T5/umT5 embeddings, sharded over `mesh` when given."""

  def __init__(self, t5_path: str, tokenizer_path: str, max_length: int, *, mesh=None, param_dtype=jnp.float32):
    from vdit.text import t5_weights
    from vdit.text.sentencepiece_tokenizer import SentencePieceTokenizer
    if not t5_path or not tokenizer_path:
      raise weights.WeightsError("config.text.encoder='t5' needs config.text.t5_path (the encoder's HF safetensors "
                                 "folder) and config.text.tokenizer_path (its sentencepiece spiece.model).")
    self.tokenizer = SentencePieceTokenizer(tokenizer_path, max_length)
    self.encoder = t5_weights.load_encoder(t5_path, param_dtype=param_dtype, mesh=mesh)
    self.dim = self.encoder.dim
    graphdef, state = nnx.split(self.encoder)
    self._state = state
    self._run = jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask))

  def encode_batch(self, prompts, truncate: bool = False):
    ids, mask = self.tokenizer.encode_batch(list(prompts), truncate=truncate)
    emb = self._run(self._state, jnp.asarray(ids), jnp.asarray(mask))
    emb = np.asarray(jax.device_get(emb), np.float32) * mask[..., None]
    return emb, mask


class CachedEmptyCaption:
  """The empty caption's embedding [n, D] (caption dropout during training), padded to max_length."""

  def __init__(self, embedding, max_length: int):
    self._embedding = np.asarray(embedding, np.float32)[:max_length]
    self._max_length = max_length

  @classmethod
  def from_cache(cls, data_dir: str, max_length: int) -> "CachedEmptyCaption":
    path = os.path.join(data_dir, EMPTY_CAPTION_FILE)
    tensors, _ = weights.load(path)
    if "embedding" not in tensors:
      raise weights.WeightsError(f"{path} has no 'embedding' tensor; re-run data_prep.cache_latents --t5=...")
    return cls(tensors["embedding"], max_length)

  def encode_batch(self, prompts, truncate: bool = False):
    del truncate
    if any(prompts):
      raise ValueError("Training with cached text embeddings only encodes the empty caption.")
    emb = np.zeros((len(prompts), self._max_length, self._embedding.shape[1]), np.float32)
    emb[:, :len(self._embedding)] = self._embedding
    mask = np.broadcast_to(np.arange(self._max_length) < len(self._embedding), (len(prompts), self._max_length))
    return emb, mask.copy()


def for_sampling(config, mesh=None):
  """The conditioner `vdit.sample` and evals use for a workdir's config."""
  if config.text.encoder == "t5":
    # The encoder's weights in the DiT's compute dtype: umT5-XXL is ~11 GB in bfloat16, 22 in float32.
    from vdit.model.factory import dtype_from_name
    return T5Text(config.text.t5_path, config.text.tokenizer_path, config.text.max_length, mesh=mesh,
                  param_dtype=dtype_from_name(config.model.dtype))
  return Tokenizer(config.text.max_length)


def for_training(config, data_dir: str):
  """The trainer's conditioner: the tokenizer, or the cache's empty caption for a frozen encoder."""
  if config.text.encoder == "t5":
    return CachedEmptyCaption.from_cache(data_dir, config.text.max_length)
  return Tokenizer(config.text.max_length)
