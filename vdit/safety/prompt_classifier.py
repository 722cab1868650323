"""A small offline prompt classifier vdit trains and ships: logistic regression over hashed
character n-grams and words of the normalised prompt (vdit.safety.text_match: case, accents,
look-alikes, leetspeak and letter-spacing undone first). It scores P(violating) in [0, 1]; a policy
uses it as a check `{"type": "classifier", "weights": PATH, "threshold": 0.5}`.

Trained by `python -m vdit.safety.train_prompt_classifier`; weights are a safetensors file
(vdit.core.weights) holding `w` [BUCKETS] and `b` [], with metadata naming the format and features.
"""
import functools
import zlib

import numpy as np

from vdit.safety.text_match import words

FORMAT = "vdit-prompt-classifier"
BUCKETS = 1 << 14  # 64 KB of float32 weights; collisions cost little at a few thousand n-grams
NGRAMS = (3, 4, 5)


def _hash(feature: str) -> int:
  return zlib.crc32(feature.encode("utf-8")) % BUCKETS  # stable across processes, unlike hash()


def features(texts) -> np.ndarray:
  """float32 [N, BUCKETS]: counts of hashed word and character n-grams, each row L2-normalised."""
  out = np.zeros((len(texts), BUCKETS), np.float32)
  for row, text in enumerate(texts):
    tokens = words(text)
    padded = " " + " ".join(tokens) + " "
    grams = ["w:" + t for t in tokens] + [padded[i:i + n] for n in NGRAMS for i in range(len(padded) - n + 1)]
    np.add.at(out[row], [_hash(g) for g in grams], 1.0)
  norms = np.linalg.norm(out, axis=1, keepdims=True)
  return out / np.maximum(norms, 1e-6)


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


class PromptClassifier:

  def __init__(self, w: np.ndarray, b: float):
    self.w, self.b = np.asarray(w, np.float32), float(b)

  def scores(self, texts) -> np.ndarray:
    return sigmoid(features(texts) @ self.w + self.b)

  def save(self, path: str, metadata: dict) -> None:
    from vdit.core import weights
    weights.save(path, {"w": self.w, "b": np.float32(self.b)},
                 {"format": FORMAT, "buckets": BUCKETS, "ngrams": ",".join(map(str, NGRAMS)), **metadata})


@functools.cache
def load(path: str) -> PromptClassifier:
  """The classifier in a weights file; WeightsError (one line) when it is not one of ours."""
  from vdit.core import weights
  tensors, metadata = weights.load(path)
  if metadata.get("format") != FORMAT or metadata.get("buckets") != str(BUCKETS) or \
      metadata.get("ngrams") != ",".join(map(str, NGRAMS)) or tensors.get("w", np.zeros(0)).shape != (BUCKETS,):
    raise weights.WeightsError(f"{path} is not a prompt classifier of this vdit (format {metadata.get('format')!r}, "
                               f"buckets {metadata.get('buckets')!r}); train one with "
                               "python -m vdit.safety.train_prompt_classifier.")
  return PromptClassifier(tensors["w"], float(tensors["b"]))
