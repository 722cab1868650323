"""A small video/frame/text encoder trained on the toy world, so CPU evals give meaningful numbers.

It plays the roles I3D (video features, FVD), Inception (frame features, FID) and CLIP (text-video
alignment) play for real video: a per-frame conv net gives frame embeddings; the video embedding
reads their mean (what is shown) and least-squares slope over time (how it moves); a bag of word
embeddings encodes the caption. `python -m vdit.eval.train_toy_features` trains it; the weights are
a safetensors file whose metadata records the architecture.
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdit.media import pixels
from vdit.parallel import sharding
from vdit.core import weights

FORMAT = "vdit-toy-features"
INPUT_SIZE = 32  # frames are resized to this square before the conv net


class ToyEncoder(nnx.Module):

  def __init__(self, *, vocab_size: int, dim: int = 32, width: int = 32, rngs: nnx.Rngs):
    conv = lambda cin, cout: nnx.Conv(cin, cout, (3, 3), strides=2, padding="SAME", rngs=rngs)
    self.convs = nnx.List([conv(3, width), conv(width, 2 * width), conv(2 * width, 2 * width)])
    cells = (INPUT_SIZE // 8) ** 2
    self.frame_proj = nnx.Linear(cells * 2 * width, dim, rngs=rngs)
    self.video_mlp = nnx.Sequential(nnx.Linear(2 * dim, 2 * dim, rngs=rngs), nnx.gelu,
                                    nnx.Linear(2 * dim, dim, rngs=rngs))
    self.word_embed = nnx.Embed(vocab_size, dim, rngs=rngs)
    self.text_proj = nnx.Linear(dim, dim, rngs=rngs)
    self.log_temperature = nnx.Param(jnp.log(jnp.float32(0.1)))

  def frame_embeddings(self, video_bthwc):
    """[B, T, H, W, 3] in [-1, 1] -> [B, T, dim]."""
    b, t, h, w, c = video_bthwc.shape
    x = video_bthwc.reshape(b * t, h, w, c)
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
      x = jax.image.resize(x, (b * t, INPUT_SIZE, INPUT_SIZE, c), "bilinear")
    for conv in self.convs:
      x = nnx.gelu(conv(x))
    return self.frame_proj(x.reshape(b, t, -1))

  def video_embedding(self, frames_btd):
    """Mean and per-frame least-squares slope of the frame embeddings -> [B, dim]."""
    t = frames_btd.shape[1]
    centred = np.arange(t, dtype=np.float32) - (t - 1) / 2
    slope = jnp.einsum("t,btd->bd", centred, frames_btd) / max(float(np.sum(centred**2)), 1.0)
    return self.video_mlp(jnp.concatenate([frames_btd.mean(axis=1), slope * t], axis=-1))

  def text_embedding(self, tokens_bl, mask_bl):
    mask = mask_bl.astype(jnp.float32)[..., None]
    pooled = jnp.sum(self.word_embed(tokens_bl) * mask, axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
    return self.text_proj(pooled)


def config_metadata(vocab_size: int, dim: int, width: int, max_length: int) -> dict:
  return {"format": FORMAT, "vocab_size": vocab_size, "dim": dim, "width": width, "max_length": max_length}


def load(path: str) -> tuple[ToyEncoder, dict]:
  """The encoder and its metadata from a weights file; WeightsError when the file is not one."""
  tensors, metadata = weights.load(path)
  if metadata.get("format") != FORMAT:
    raise weights.WeightsError(f"{path}: not a toy feature network (metadata format "
                               f"{metadata.get('format')!r}, expected {FORMAT!r}); train one with "
                               "python -m vdit.eval.train_toy_features.")
  sizes = {k: int(metadata[k]) for k in ("vocab_size", "dim", "width", "max_length")}
  model = ToyEncoder(vocab_size=sizes["vocab_size"], dim=sizes["dim"], width=sizes["width"], rngs=nnx.Rngs(0))
  weights.load_into(model, tensors, path)
  return model, sizes


def _to_model_space(videos_uint8):
  return pixels.to_model_space(jnp.asarray(videos_uint8))


class ToyFeatures:
  """Feature extraction for evals: `video_features`, `frame_features`, `text_features` as float64
  numpy, computed in fixed-size jitted batches sharded over `mesh`'s batch axes when given."""

  name = "toy"

  def __init__(self, path: str, *, mesh=None, batch_size: int = 64):
    from vdit.text.tokenizer import Tokenizer
    self.model, sizes = load(path)
    self.path = path
    self.video_dim = self.frame_dim = sizes["dim"]
    self.tokenizer = Tokenizer(sizes["max_length"])
    self.mesh = mesh
    self.batch_size = batch_size
    graphdef, params = nnx.split(self.model)

    def frames_and_video(params, videos):
      model = nnx.merge(graphdef, params)
      frames = model.frame_embeddings(_to_model_space(videos))
      return frames, model.video_embedding(frames)

    def text(params, tokens, mask):
      return nnx.merge(graphdef, params).text_embedding(tokens, mask)

    self._params = params
    self._frames_and_video = jax.jit(frames_and_video)
    self._text = jax.jit(text)

  def _batched(self, fn, *arrays):
    """Applies fn to fixed-size batches (padded, so one compile) and concatenates the outputs."""
    n = len(arrays[0])
    size = self.batch_size
    if self.mesh is not None:
      multiple = int(np.prod([self.mesh.shape[a] for a in ("data", "fsdp") if a in self.mesh.shape]))
      size = -(-size // multiple) * multiple
    outputs = []
    for start in range(0, n, size):
      chunk = [np.asarray(a[start:start + size]) for a in arrays]
      rows = len(chunk[0])
      chunk = [np.concatenate([c, np.repeat(c[-1:], size - rows, axis=0)]) for c in chunk]
      if self.mesh is not None:
        chunk = [jax.device_put(c, sharding.batch_sharding(self.mesh, c.ndim)) for c in chunk]
      result = fn(self._params, *chunk)
      outputs.append(jax.tree.map(lambda r: sharding.to_host(r).astype(np.float64)[:rows], result))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)

  def frames_and_videos(self, videos_uint8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, T, H, W, 3] -> (frame features [N, T, D], video features [N, D]).

    Features are scaled to norm sqrt(D) (unit mean square per dimension): the embedding's
    direction carries the meaning (the contrastive loss sees only it), and a fixed scale keeps
    FVD/FID and the KID kernel (x.y / D + 1)^3 in a stable range across trainings.
    """
    frames, videos = self._batched(self._frames_and_video, videos_uint8)
    return _normalize(frames) * np.sqrt(frames.shape[-1]), _normalize(videos) * np.sqrt(videos.shape[-1])

  def video_features(self, videos_uint8) -> np.ndarray:
    return self.frames_and_videos(videos_uint8)[1]

  def frame_features(self, videos_uint8) -> np.ndarray:
    """Per-frame features of every frame, [N * T, D]."""
    frames = self.frames_and_videos(videos_uint8)[0]
    return frames.reshape(-1, frames.shape[-1])

  def text_features(self, texts) -> np.ndarray:
    tokens, mask = self.tokenizer.encode_batch(list(texts))
    return self._batched(self._text, tokens, mask)

  def alignment(self, videos_uint8, texts) -> np.ndarray:
    """Cosine similarity of each video with its text, [N] in [-1, 1] (a CLIPScore analogue)."""
    v = _normalize(self.video_features(videos_uint8))
    t = _normalize(self.text_features(texts))
    return np.sum(v * t, axis=-1)


def _normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
