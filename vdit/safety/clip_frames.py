"""The `clip` frame classifier: a CLIP image-text model given by path scores each frame against the
policy's concept prompts ("a gun", "blood").

A frame's score is the largest cosine similarity between its image embedding and a concept's text
embedding, clipped to [0, 1] (a negative cosine is no match). Raw cosines are model-specific and
bunch together (with ViT-B/32 matching pairs commonly score about 0.25-0.35, unrelated ones 0.1-0.2;
not measured in vdit), so the threshold is set per model and concept list on examples, as the
Stable Diffusion safety checker sets its per-concept ones. No softmax against neutral prompts: its
result would hinge on which neutral prompts one picks.

The model folder is what `CLIPModel.save_pretrained` plus the tokenizer's `save_pretrained` write
(e.g. openai/clip-vit-base-patch32 downloaded by the user): config.json, model.safetensors and
tokenizer.json or vocab.json + merges.txt; preprocessor_config.json, if present, gives the
normalisation. Nothing is downloaded. Frames are resized to cover the model's square input and
centre-cropped in one bicubic resample (vdit.media.video_reader), then normalised with CLIP's
mean and std: transformers' CLIPImageProcessor resizes the shortest side first and crops whole
pixels, a sub-pixel difference (measured in tests/test_clip.py).
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.core.errors import UserError
from vdit.media import video_reader
from vdit.safety import clip_tokenizer, clip_weights

# OpenAI's normalisation, transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_FILE = "preprocessor_config.json"
_BATCH = 32  # frames per network call: bounds memory on long videos


def missing_file(directory: str) -> str | None:
  """The first file a CLIP folder lacks (or the folder itself), or None."""
  if not os.path.isdir(directory):
    return directory
  tokenizer = [clip_tokenizer.TOKENIZER_FILE]
  if not os.path.isfile(os.path.join(directory, clip_tokenizer.TOKENIZER_FILE)):
    tokenizer = [clip_tokenizer.VOCAB_FILE, clip_tokenizer.MERGES_FILE]
  for name in (clip_weights.CONFIG_FILE, clip_weights.WEIGHTS_FILE, *tokenizer):
    if not os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


def _normalisation(directory: str) -> tuple[np.ndarray, np.ndarray]:
  path = os.path.join(directory, PREPROCESSOR_FILE)
  if not os.path.isfile(path):
    return np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
  try:
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
    mean, std = np.asarray(d.get("image_mean", MEAN), np.float32), np.asarray(d.get("image_std", STD), np.float32)
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f"CLIP preprocessor config {path!r} is not readable ({e}); fix or remove it.") from None
  if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
    raise UserError(f"CLIP preprocessor config {path!r}: image_mean and image_std must be 3 numbers (std > 0).")
  return mean, std


def preprocess(frames: np.ndarray, size: int, mean=MEAN, std=STD) -> np.ndarray:
  """uint8 [N, H, W, 3] -> a CLIP's normalised float32 input [N, size, size, 3]."""
  resized = np.stack([video_reader.resize_center_crop(f, size, size) for f in frames])
  return (resized.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


class ConceptScorer:
  """One CLIP folder and concept list: the concepts embedded once, frames scored on demand."""

  def __init__(self, directory: str, concepts: tuple[str, ...]):
    self.directory, self.concepts = directory, tuple(concepts)
    model = clip_weights.load(directory)
    self.size = model.config.image_size
    self.mean, self.std = _normalisation(directory)
    tokenizer = clip_tokenizer.ClipTokenizer.from_dir(directory)
    length = model.config.max_positions
    ids = np.full((len(self.concepts), length), tokenizer.end_id, np.int32)  # padded with the end token
    for row, concept in enumerate(self.concepts):
      tokens = tokenizer.encode(concept)
      if len(tokens) > length:
        raise UserError(f"clip concept {concept!r} is {len(tokens)} tokens; the model in {directory} reads at "
                        f"most {length} (start and end included): shorten it.")
      ids[row, :len(tokens)] = tokens
    graphdef, state = nnx.split(model)
    text = jax.jit(lambda s, x: nnx.merge(graphdef, s).text_features(x))(state, jnp.asarray(ids))
    self.text_pd = np.asarray(text / jnp.linalg.norm(text, axis=-1, keepdims=True))
    self._image = jax.jit(lambda s, x: nnx.merge(graphdef, s).image_features(x))
    self._state = state

  def pixels(self, frames: np.ndarray) -> np.ndarray:
    return preprocess(frames, self.size, self.mean, self.std)

  def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
    """Unit image embeddings [N, projection_dim] of preprocessed pixels."""
    out = [np.asarray(self._image(self._state, jnp.asarray(pixels[i:i + _BATCH])))
           for i in range(0, len(pixels), _BATCH)]
    out = np.concatenate(out)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)

  def score(self, frames: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per frame: the best concept's cosine clipped to [0, 1], and that concept."""
    cosines = self.image_embeddings(self.pixels(np.asarray(frames))) @ self.text_pd.T
    best = np.argmax(cosines, axis=1)
    return np.clip(cosines.max(axis=1), 0.0, 1.0).astype(np.float32), [self.concepts[i] for i in best]


@functools.cache
def scorer(directory: str, concepts: tuple[str, ...]) -> ConceptScorer:
  """Loaded once per process: every checker and category with the same folder and concepts shares it."""
  return ConceptScorer(directory, concepts)
