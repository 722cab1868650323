"""Trains the toy feature network (`vdit.eval.toy_features`) on a toy dataset; minutes on a CPU.

  python -m vdit.eval.train_toy_features --data=runs/toy_data --out=runs/toy_features.safetensors

Objective: a CLIP-style contrastive loss between video and caption embeddings (clips with the same
caption count as matches), plus linear probes that read colour and shape from every frame
embedding and colour, shape and direction from the video embedding, so both feature spaces
separate what the toy world varies. Prints held-out probe accuracies; writes the weights atomically.
"""
import json
import time

import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from flax import nnx

from vdit.media import pixels
from vdit.toy import spec as toy_spec
from vdit.core import command, weights
from vdit.core.errors import UserError
from vdit.data import dataset_files
from vdit.eval import toy_features
from vdit.text.tokenizer import Tokenizer

_ATTRIBUTES = {"colour": tuple(toy_spec.COLOURS), "shape": toy_spec.SHAPES,
               "direction": tuple(toy_spec.DIRECTIONS)}


class _Probes(nnx.Module):
  """Linear attribute read-outs used only while training."""

  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.frame = nnx.Dict({k: nnx.Linear(dim, len(_ATTRIBUTES[k]), rngs=rngs) for k in ("colour", "shape")})
    self.video = nnx.Dict({k: nnx.Linear(dim, len(v), rngs=rngs) for k, v in _ATTRIBUTES.items()})


def load_training_set(data_dir: str, num_clips: int, num_frames: int, seed: int):
  """Frames [N, T, H, W, 3] (first `num_frames`), caption ids [N] and attribute labels."""
  clips = dataset_files.read_clips(data_dir, limit=num_clips, seed=seed)
  parsed = [toy_spec.parse_caption(c["caption"]) for c in clips]
  if not clips or any(p is None for p in parsed):
    raise UserError(f"{data_dir}: the toy feature network trains on toy-world captions only "
                    "(python -m data_prep.toy_world).")
  short = min(c["frames"].shape[0] for c in clips)
  num_frames = min(num_frames, short)
  videos = np.stack([c["frames"][:num_frames] for c in clips])
  captions = [c["caption"] for c in clips]
  labels = {k: np.array([_ATTRIBUTES[k].index(p[i]) for p in parsed])
            for i, k in enumerate(_ATTRIBUTES)}
  caption_ids = np.unique(captions, return_inverse=True)[1]
  return videos, captions, caption_ids, labels


def _contrastive(video, text, caption_ids, log_temperature):
  """Symmetric InfoNCE where every pair with the same caption is a positive."""
  v = video / jnp.linalg.norm(video, axis=-1, keepdims=True)
  t = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  logits = v @ t.T / jnp.exp(log_temperature)
  same = (caption_ids[:, None] == caption_ids[None, :]).astype(jnp.float32)
  targets = same / same.sum(axis=-1, keepdims=True)
  return 0.5 * (optax.softmax_cross_entropy(logits, targets).mean()
                + optax.softmax_cross_entropy(logits.T, targets).mean())


def train(data_dir: str, out: str, *, steps: int = 600, batch_size: int = 64, num_clips: int = 4096,
          num_frames: int = 8, dim: int = 32, width: int = 32, learning_rate: float = 2e-3, seed: int = 0,
          log=print) -> dict:
  """Trains and writes the weights; returns probe accuracies on clips held out of training."""
  videos, captions, caption_ids, labels = load_training_set(data_dir, num_clips, num_frames, seed)
  num_val = max(len(videos) // 8, 1)
  tokenizer = Tokenizer(16)
  tokens, mask = tokenizer.encode_batch(captions)
  rngs = nnx.Rngs(seed)
  encoder = toy_features.ToyEncoder(vocab_size=tokenizer.vocab_size, dim=dim, width=width, rngs=rngs)
  probes = _Probes(dim, rngs)
  models = nnx.List([encoder, probes])
  optimizer = nnx.Optimizer(models, optax.adamw(learning_rate, weight_decay=1e-4), wrt=nnx.Param)

  def losses(models, batch):
    encoder, probes = models
    x = pixels.to_model_space(jnp.asarray(batch["video"]))
    frames = encoder.frame_embeddings(x)
    video = encoder.video_embedding(frames)
    loss = _contrastive(video, encoder.text_embedding(batch["tokens"], batch["mask"]), batch["caption_ids"],
                        encoder.log_temperature[...])
    accuracy = {}
    for name, probe in probes.video.items():
      logits = probe(video)
      loss += optax.softmax_cross_entropy_with_integer_labels(logits, batch[name]).mean()
      accuracy[f"video_{name}"] = jnp.mean(jnp.argmax(logits, -1) == batch[name])
    for name, probe in probes.frame.items():
      logits = probe(frames)
      label = jnp.broadcast_to(batch[name][:, None], logits.shape[:2])
      loss += optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()
      accuracy[f"frame_{name}"] = jnp.mean(jnp.argmax(logits, -1) == label)
    return loss, accuracy

  @nnx.jit
  def train_step(models, optimizer, batch):
    (loss, _), grads = nnx.value_and_grad(losses, has_aux=True)(models, batch)
    optimizer.update(models, grads)
    return loss

  evaluate = nnx.jit(lambda models, batch: losses(models, batch)[1])

  def batch_of(index):
    return {"video": videos[index], "tokens": tokens[index], "mask": mask[index],
            "caption_ids": caption_ids[index], **{k: v[index] for k, v in labels.items()}}

  rng = np.random.default_rng(seed)
  train_rows = np.arange(num_val, len(videos))
  start = time.time()
  for step in range(1, steps + 1):
    loss = train_step(models, optimizer, batch_of(rng.choice(train_rows, batch_size)))
    if step % 100 == 0 or step == steps:
      log(f"step {step}/{steps}: loss {float(loss):.3f} ({time.time() - start:.0f}s)")
  accuracy = {k: float(v) for k, v in evaluate(models, batch_of(np.arange(num_val))).items()}
  weights.save(out, weights.module_tensors(encoder),
               toy_features.config_metadata(tokenizer.vocab_size, dim, width, tokenizer.max_length))
  return {"held_out_clips": int(num_val), "probe_accuracy": accuracy, "steps": steps,
          "seconds": round(time.time() - start, 1)}


def define_flags():
  command.define_path("data", None, "A toy dataset (python -m data_prep.toy_world).", kind="dir", required=True)
  flags.DEFINE_string("out", None, "Output weights file (.safetensors).", required=True)
  flags.DEFINE_integer("steps", 600, "Training steps (about 80 s on a 2-core CPU).", lower_bound=1)
  flags.DEFINE_integer("batch_size", 64, "Clips per step.", lower_bound=1)
  flags.DEFINE_integer("num_clips", 4096, "Clips read from the dataset (1/8 held out for the report).", lower_bound=2)
  flags.DEFINE_integer("seed", 0, "Seed for clip choice, initialisation and batches.")


def main(f):
  report = train(f.data, f.out, steps=f.steps, batch_size=f.batch_size, num_clips=f.num_clips, seed=f.seed)
  print(json.dumps(report, indent=2))
  print(f"Wrote {f.out}")


if __name__ == "__main__":
  command.run(main, define_flags)
