"""Which bucket each training step reads, and how many clips of it.

Every global batch comes from one bucket (frames x height x width), so every batch is full and
rectangular. A bucket's batch size keeps about `tokens_per_batch` tokens per step; its share of
steps makes every video clip equally likely to be seen, and 1-frame (image) buckets together
take `image_ratio` of the steps. The bucket of step n is a pure function of (seed, n), so a
resumed or re-sharded run reads exactly the batches it would have.
"""
import dataclasses
import functools
import math
import threading

import numpy as np

from vdit.data.errors import DataError

_BLOCK = 4096  # steps whose buckets are drawn together


@dataclasses.dataclass(frozen=True)
class Bucket:
  name: str
  shard_paths: tuple[str, ...]
  num_clips: int
  stored_frames: int  # frames per stored clip
  frames: int  # frames per training example (a crop, or frames repeated up to the patch)
  height: int
  width: int
  batch_size: int  # global
  weight: float  # share of steps

  @property
  def is_image(self) -> bool:
    return self.stored_frames == 1


def _train_frames(stored: int, max_frames: int, patch_t: int) -> int:
  frames = min(max_frames or stored, stored)
  if frames < patch_t:  # an image (or very short clip) repeats its frames to fill one patch
    return patch_t
  return frames // patch_t * patch_t


def plan(buckets: list[dict], *, patch_size, global_batch_size: int, tokens_per_batch: int,
         batch_multiple: int, max_frames: int, image_ratio: float) -> list[Bucket]:
  """Batch size and step share of every bucket in a dataset's metadata.

  Args:
    buckets: metadata["buckets"] (vdit.data.dataset_files.read_metadata).
    patch_size: the model's (t, h, w) patch; heights and widths must divide by it.
    global_batch_size: used for every bucket when tokens_per_batch is 0.
    tokens_per_batch: target tokens per global batch; 0 disables.
    batch_multiple: every batch size is a multiple of this (devices that split the batch, and
      processes).
    max_frames: longest training clip (random crop); 0 trains on each bucket's full length.
    image_ratio: share of steps from 1-frame buckets; negative: by clip count.

  Raises:
    DataError: a bucket does not fit the patch, or no bucket is left to train on.
  """
  pt, ph, pw = patch_size
  if not tokens_per_batch and (global_batch_size <= 0 or global_batch_size % batch_multiple):
    raise DataError(f"Global batch size {global_batch_size} must be a positive multiple of "
                    f"{batch_multiple} (devices splitting the batch x processes).")
  out = []
  for b in buckets:
    if b["height"] % ph or b["width"] % pw:
      raise DataError(f"Bucket {b['name']} is {b['height']}x{b['width']}, not divisible by the "
                      f"patch {ph}x{pw}; re-ingest with sizes that are multiples of the patch.")
    frames = _train_frames(b["num_frames"], max_frames, pt)
    tokens = frames // pt * (b["height"] // ph) * (b["width"] // pw)
    if tokens_per_batch:
      size = max(batch_multiple, tokens_per_batch // tokens // batch_multiple * batch_multiple)
    else:
      size = global_batch_size
    out.append(dict(name=b["name"], shard_paths=tuple(b["shard_paths"]), num_clips=b["num_clips"],
                    stored_frames=b["num_frames"], frames=frames, height=b["height"],
                    width=b["width"], batch_size=size, weight=b["num_clips"] / size))
  images = [b for b in out if b["stored_frames"] == 1]
  videos = [b for b in out if b["stored_frames"] > 1]
  if image_ratio >= 0 and images:
    groups = ((images, image_ratio), (videos, 1.0 - image_ratio)) if videos else ((images, image_ratio),)
    for group, share in groups:
      total = sum(b["weight"] for b in group)
      for b in group:
        b["weight"] = share * b["weight"] / total
  total = sum(b["weight"] for b in out)
  result = [Bucket(**{**b, "weight": b["weight"] / total}) for b in out if b["weight"] > 0]
  if not result:
    raise DataError("No bucket has a positive share of steps: the data holds only images and "
                    "data.image_ratio is 0; raise it or add videos.")
  return result


class Schedule:
  """Step n -> (bucket index, how many earlier steps read that bucket)."""

  def __init__(self, weights, seed: int):
    self._p = np.asarray(weights, np.float64) / np.sum(weights)
    self._seed = seed
    self._prefix = [np.zeros(len(self._p), np.int64)]  # bucket counts before each block
    self._lock = threading.Lock()

  def __getstate__(self):  # picklable for Grain's worker processes (a lock is not)
    return {"p": self._p, "seed": self._seed}

  def __setstate__(self, state):
    self.__init__(state["p"], state["seed"])

  @functools.lru_cache(maxsize=8)
  def _block(self, j: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([self._seed, j]))
    return rng.choice(len(self._p), size=_BLOCK, p=self._p)

  def locate(self, step: int) -> tuple[int, int]:
    j, r = divmod(step, _BLOCK)
    with self._lock:
      while len(self._prefix) <= j:
        counts = np.bincount(self._block(len(self._prefix) - 1), minlength=len(self._p))
        self._prefix.append(self._prefix[-1] + counts)
      before = self._prefix[j]
    block = self._block(j)
    bucket = int(block[r])
    return bucket, int(before[bucket] + np.count_nonzero(block[:r] == bucket))


def lcm(*values: int) -> int:
  return functools.reduce(math.lcm, values, 1)
