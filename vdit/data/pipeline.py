"""The Grain training input pipeline over a prepared, bucketed dataset (vdit.data.dataset_files).

  per bucket: shards -> shuffle (reshuffled every epoch) -> repeat forever -> decode, random
  temporal crop, tokenize -> this process's rows -> batch
  step n -> bucket_plan.Schedule picks the bucket and its k-th batch -> thread (and optionally
  process) prefetch

Every batch is a pure function of (seed, step, process index, process count): crops are seeded
per global element index and batches are formed before any worker split, so the data is the same
with or without prefetch workers and across restarts, and a checkpointed iterator resumes
exactly. Process p of P gets rows [p*b, (p+1)*b) of every global batch (b = local batch), the rows
its devices hold in the global array, so a step's global batch is the same clips in the same order
whatever P is.
"""
import sys
from typing import Any

from absl import flags
import grain
import grain.checkpoint
import jax
import numpy as np

from vdit.data import latent_records, records
from vdit.data.bucket_plan import Bucket, Schedule
from vdit.data.errors import DataError


class _ClipToExample(grain.transforms.RandomMap):
  """Record bytes -> {"video", "tokens", "text_mask"}: a random window of the bucket's training
  length (frames repeated when the bucket is shorter, e.g. an image filling a temporal patch)."""

  def __init__(self, bucket: Bucket, tokenizer, caption_key: str):
    self._bucket = bucket
    self._tokenizer = tokenizer
    self._caption_key = caption_key

  def random_map(self, element: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    clip = records.decode_clip(element)
    frames, b = clip["frames"], self._bucket
    if frames.shape[:3] != (b.stored_frames, b.height, b.width):
      raise DataError(f"A clip in bucket {b.name} is {'x'.join(map(str, frames.shape[:3]))}; the "
                      "dataset is inconsistent, re-ingest it.")
    if self._caption_key not in clip:
      raise DataError(f"A clip has no {self._caption_key!r} field (has {sorted(clip)}); set "
                      "caption_key to one of those.")
    if b.frames <= b.stored_frames:
      start = rng.integers(0, b.stored_frames - b.frames + 1)
      frames = frames[start:start + b.frames]
    else:
      frames = np.concatenate([frames, np.repeat(frames[-1:], b.frames - b.stored_frames, 0)])
    tokens, mask = self._tokenizer.encode_batch([clip[self._caption_key]], truncate=True)
    return {"video": frames, "tokens": tokens[0], "text_mask": mask[0]}


class _LatentToExample(grain.transforms.RandomMap):
  """Cached-latent record bytes -> {"video": normalised latent sample, "tokens", "text_mask"}.

  Each epoch draws a fresh sample from the cached posterior N(mean, std^2) (the VAE's noise acts
  as augmentation, as when encoding in the step). Causal latents must start at a clip's first
  frame, so a temporal crop keeps the first `frames` latent frames. With cached text, "tokens" is
  the caption's embedding [L, D] padded with zeros to the model's text length.
  """

  def __init__(self, bucket: Bucket, tokenizer, caption_key: str, latent_stats: dict, text_length: int):
    self._bucket, self._tokenizer, self._caption_key = bucket, tokenizer, caption_key
    self._mean = np.asarray(latent_stats["latents_mean"], np.float32)
    self._std = np.asarray(latent_stats["latents_std"], np.float32)
    self._text_length = text_length

  def random_map(self, element: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    clip, b = latent_records.decode(element), self._bucket
    mean, std = clip["latent_mean"], clip["latent_std"]
    if mean.shape[:3] != (b.stored_frames, b.height, b.width):
      raise DataError(f"A cached clip in bucket {b.name} is {'x'.join(map(str, mean.shape[:3]))}; the cache is "
                      "inconsistent, re-run data_prep.cache_latents.")
    z = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
    video = ((z - self._mean) / self._std)[:b.frames]
    if video.shape[0] < b.frames:
      video = np.concatenate([video, np.repeat(video[-1:], b.frames - video.shape[0], 0)])
    if not self._text_length:
      tokens, mask = self._tokenizer.encode_batch([clip[self._caption_key]], truncate=True)
      return {"video": video, "tokens": tokens[0], "text_mask": mask[0]}
    if "text_embedding" not in clip:
      raise DataError("A cached clip has no text embedding but config.text.encoder='t5' needs them; cache "
                      "them with data_prep.cache_latents --t5=DIR --tokenizer=FILE.")
    text = clip["text_embedding"][:self._text_length]
    embedding = np.zeros((self._text_length, text.shape[1]), np.float32)
    embedding[:len(text)] = text
    return {"video": video, "tokens": embedding, "text_mask": np.arange(self._text_length) < len(text)}


def _bucket_batches(bucket: Bucket, index: int, *, tokenizer, seed: int, caption_key: str,
                    process_index: int, process_count: int, latent_stats=None,
                    text_length: int = 0) -> grain.MapDataset:
  """This process's batches of one bucket, as an infinite MapDataset."""
  source = grain.sources.ArrayRecordDataSource(list(bucket.shard_paths))
  if len(source) != bucket.num_clips:
    raise DataError(f"Bucket {bucket.name}'s shards hold {len(source)} records but metadata.json "
                    f"says {bucket.num_clips}; the dataset is truncated or mixed, re-prepare it.")
  shuffle_seed, crop_seed = np.random.SeedSequence([seed, index]).generate_state(2)
  local_batch = bucket.batch_size // process_count
  ds = (
      grain.MapDataset.source(source)
      .shuffle(seed=int(shuffle_seed))
      .repeat()  # Forever; reseeds the shuffle each epoch.
      # Before the process slice, so an element's crop depends on its global index only.
      .random_map(_ClipToExample(bucket, tokenizer, caption_key) if latent_stats is None else
                  _LatentToExample(bucket, tokenizer, caption_key, latent_stats, text_length), seed=int(crop_seed))
  )
  return _ProcessRows(ds, local_batch, process_index, process_count).batch(local_batch,
                                                                            drop_remainder=True)


class _ScheduledBatches(grain.MapDataset):
  """Batch n = the k-th batch of the bucket the schedule picks for step n."""

  def __init__(self, per_bucket: list[grain.MapDataset], schedule: Schedule):
    super().__init__(per_bucket)
    self._per_bucket, self._schedule = per_bucket, schedule

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, n):
    if isinstance(n, slice):
      return self.slice(n)
    bucket, k = self._schedule.locate(n)
    return self._per_bucket[bucket][k]

  def __str__(self) -> str:
    return f"ScheduledBatches(buckets={len(self._per_bucket)})"


def make_train_iterator(buckets: list[Bucket], *, tokenizer, seed: int, caption_key: str = "caption",
                        worker_count: int = 0, prefetch_buffer_size: int = 2, latent_stats=None,
                        text_length: int = 0):
  """Builds this process's infinite, checkpointable iterator of training batches.

  Args:
    buckets: vdit.data.bucket_plan.plan(...) for the dataset: shards, batch sizes, step shares.
    tokenizer: a vdit.text.tokenizer.Tokenizer; long captions are truncated.
    seed: seeds the bucket schedule, shuffles and crops.
    caption_key: record field used as the caption.
    worker_count: prefetch processes; 0 reads with threads in this process only.
    prefetch_buffer_size: batches prepared ahead (per worker when worker_count > 0).
    latent_stats: for a latent cache (data_prep.cache_latents): its {"latents_mean", "latents_std"};
      "video" is then a float32 normalised latent sample [b, t, h, w, z].
    text_length: > 0 reads cached text embeddings, padded to this length, as "tokens" [b, L, D].

  Returns:
    A grain DatasetIterator yielding {"video": uint8 [b, T, H, W, 3], "tokens": int32 [b, L],
    "text_mask": bool [b, L]} with b = the bucket's batch size // jax.process_count(). Supports
    get_state() / set_state() (a JSON dict, the same on every process: checkpoints store it once,
    vdit.core.checkpoint) and legacy_restore_args for checkpoints of earlier versions.
  """
  process_index, process_count = jax.process_index(), jax.process_count()
  for bucket in buckets:
    if bucket.batch_size <= 0 or bucket.batch_size % process_count:
      raise DataError(f"Bucket {bucket.name}'s batch size {bucket.batch_size} must be a positive "
                      f"multiple of the process count {process_count}; change the batch size.")
  schedule_seed, bucket_seed = np.random.SeedSequence(seed).generate_state(2)
  per_bucket = [_bucket_batches(b, i, tokenizer=tokenizer, seed=int(bucket_seed),
                                caption_key=caption_key, process_index=process_index,
                                process_count=process_count, latent_stats=latent_stats,
                                text_length=text_length) for i, b in enumerate(buckets)]
  schedule = Schedule([b.weight for b in buckets], int(schedule_seed))
  return _BatchIterator(_ScheduledBatches(per_bucket, schedule), worker_count=worker_count,
                        prefetch_buffer_size=prefetch_buffer_size)


class _ProcessRows(grain.MapDataset):
  """This process's rows of each global batch: local element m is global element
  (m // b) * (b * P) + p * b + m % b, a contiguous block of every global batch."""

  def __init__(self, parent: grain.MapDataset, local_batch: int, index: int, count: int):
    super().__init__(parent)
    self._local_batch, self._index, self._count = local_batch, index, count

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def __getitem__(self, m):
    if isinstance(m, slice):
      return self.slice(m)
    step, row = divmod(m, self._local_batch)
    return self._parent[(step * self._count + self._index) * self._local_batch + row]

  def __str__(self) -> str:
    return f"ProcessRows(process={self._index}/{self._count}, local_batch={self._local_batch})"


class _BatchIterator(grain.DatasetIterator):
  """Iterates a MapDataset of batches; its state is just the next batch number.

  Each batch is a pure function of its number, so {"next_index": n} restores exactly under any
  worker_count (grain's own multi-worker state would pin the worker count) and, for the same
  global batch size, any process count.
  """

  def __init__(self, batches: grain.MapDataset, *, worker_count: int, prefetch_buffer_size: int):
    self._batches = batches
    self._worker_count = worker_count
    self._buffer = prefetch_buffer_size
    self._next_index = 0
    super().__init__(self._build(0))

  def _build(self, start: int) -> grain.DatasetIterator:
    # Whole batches go to threads and workers, so the output never depends on worker_count.
    read_options = grain.ReadOptions(num_threads=self._buffer, prefetch_buffer_size=self._buffer)
    ds = self._batches[start:].to_iter_dataset(read_options)
    if self._worker_count > 0:
      # Grain's worker start-up reads absl flags; outside app.run (tests, notebooks) nobody
      # parsed them, so accept their defaults rather than fail inside a worker thread.
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._worker_count, per_worker_buffer_size=self._buffer))
    return iter(ds)

  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    batch = next(self._parent)
    self._next_index += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"next_index": self._next_index}

  def set_state(self, state: dict[str, Any]) -> None:
    index = state.get("next_index") if isinstance(state, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
      raise DataError(f"Data iterator state {state!r} is not {{'next_index': n >= 0}}; it was "
                      "not saved by vdit.data.pipeline.")
    self._parent.close()
    self._parents = (self._build(index),)
    self._next_index = index


def legacy_restore_args(iterator) -> Any:
  """Orbax args restoring `iterator` from the per-process files Grain's handler wrote in
  checkpoints of earlier vdit versions (the `data` item; the process count must match)."""
  return grain.checkpoint.CheckpointRestore(iterator)
