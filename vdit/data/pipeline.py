"""The Grain training input pipeline over a directory of clip ArrayRecord shards.

  shards -> shuffle (reshuffled every epoch) -> repeat forever -> decode, random temporal crop,
  tokenize -> this process's slice -> batch -> thread (and optionally process) prefetch

Every batch is a pure function of (seed, step, process index, process count): crops are seeded
per global element index and batches are formed before any worker split, so the data is the same
with or without prefetch workers and across restarts, and a checkpointed iterator resumes
exactly. Process p of P gets rows [p*b, (p+1)*b) of every global batch (b = local batch), the rows
its devices hold in the global array, so a step's global batch is the same clips in the same order
whatever P is.
"""
import json
import os
from typing import Any

from absl import flags
import grain
import grain.checkpoint
import jax
import numpy as np

from vdit.data import records
from vdit.data.errors import DataError

_REQUIRED_KEYS = ("format", "num_clips", "num_frames", "height", "width", "shards")


def read_metadata(data_dir: str) -> dict:
  """Reads and validates DIR/metadata.json.

  Returns:
    The metadata dict plus "shard_paths": the shards' full paths.

  Raises:
    DataError: the directory, metadata or a shard is missing, or the dataset is empty.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f"Dataset directory {data_dir!r} does not exist; generate it first, e.g. "
                    f"python -m data_prep.toy_world --output={data_dir}")
  path = os.path.join(data_dir, "metadata.json")
  if not os.path.exists(path):
    raise DataError(f"{path} is missing: the dataset is incomplete (metadata.json is written "
                    "last); regenerate it.")
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{path} is not valid JSON ({e}); regenerate the dataset.") from e
  if not isinstance(metadata, dict):
    raise DataError(f"{path} must hold a JSON object, got {type(metadata).__name__}.")
  missing = [k for k in _REQUIRED_KEYS if k not in metadata]
  if missing:
    raise DataError(f"{path} lacks required keys {missing}; regenerate the dataset.")
  if metadata["format"] != "vdit-clips":
    raise DataError(f"{path} has format {metadata['format']!r}; expected 'vdit-clips'.")
  if not metadata["shards"]:
    raise DataError(f"{path} lists no shards; the dataset is empty.")
  if metadata["num_clips"] <= 0:
    raise DataError(f"{path} says num_clips={metadata['num_clips']}; the dataset is empty.")
  shard_paths = [os.path.join(data_dir, s) for s in metadata["shards"]]
  for shard in shard_paths:
    if not os.path.isfile(shard):
      raise DataError(f"Shard {shard} listed in {path} is missing; regenerate or re-copy the "
                      "dataset.")
  return {**metadata, "shard_paths": shard_paths}


class _ClipToExample(grain.transforms.RandomMap):
  """Record bytes -> {"video", "tokens", "text_mask"} with a random crop of num_frames."""

  def __init__(self, *, num_frames, height, width, tokenizer, caption_key):
    self._num_frames = num_frames
    self._height = height
    self._width = width
    self._tokenizer = tokenizer
    self._caption_key = caption_key

  def random_map(self, element: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    clip = records.decode_clip(element)
    frames = clip["frames"]
    stored, height, width, _ = frames.shape
    if stored < self._num_frames:
      raise DataError(f"A clip has {stored} frames but num_frames={self._num_frames}; lower "
                      "num_frames or use a dataset with longer clips.")
    if (height, width) != (self._height, self._width):
      raise DataError(f"A clip is {height}x{width} but metadata.json says "
                      f"{self._height}x{self._width}; the dataset is inconsistent.")
    if self._caption_key not in clip:
      raise DataError(f"A clip has no {self._caption_key!r} field (has {sorted(clip)}); set "
                      "caption_key to one of those.")
    start = rng.integers(0, stored - self._num_frames + 1)
    tokens, mask = self._tokenizer.encode_batch([clip[self._caption_key]], truncate=True)
    return {
        "video": frames[start:start + self._num_frames],
        "tokens": tokens[0],
        "text_mask": mask[0],
    }


def make_train_iterator(data_dir: str, *, global_batch_size: int, num_frames: int, tokenizer,
                        seed: int, caption_key: str = "caption", worker_count: int = 0,
                        prefetch_buffer_size: int = 2):
  """Builds this process's infinite, checkpointable iterator of training batches.

  Args:
    data_dir: directory written by a data_prep generator (metadata.json + shards).
    global_batch_size: clips per step over all processes.
    num_frames: frames per clip; a random window of consecutive stored frames.
    tokenizer: a vdit.text.tokenizer.Tokenizer; long captions are truncated.
    seed: seeds the shuffle and crops.
    caption_key: record field used as the caption.
    worker_count: prefetch processes; 0 reads with threads in this process only.
    prefetch_buffer_size: batches prepared ahead (per worker when worker_count > 0).

  Returns:
    A grain DatasetIterator yielding {"video": uint8 [b, T, H, W, 3], "tokens": int32 [b, L],
    "text_mask": bool [b, L]} with b = global_batch_size // jax.process_count(). Supports
    get_state() / set_state() and checkpoint_save_args / checkpoint_restore_args.
  """
  metadata = read_metadata(data_dir)
  process_index, process_count = jax.process_index(), jax.process_count()
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise DataError(f"global_batch_size={global_batch_size} must be a positive multiple of the "
                    f"process count {process_count}; change the batch size.")
  local_batch_size = global_batch_size // process_count
  if num_frames > metadata["num_frames"]:
    raise DataError(f"num_frames={num_frames} exceeds the {metadata['num_frames']} frames stored "
                    f"per clip in {data_dir}; lower num_frames or regenerate the data.")
  source = grain.sources.ArrayRecordDataSource(metadata["shard_paths"])
  if len(source) != metadata["num_clips"]:
    raise DataError(f"{data_dir} shards hold {len(source)} records but metadata.json says "
                    f"{metadata['num_clips']}; the dataset is truncated or mixed, regenerate it.")
  shuffle_seed, crop_seed = np.random.SeedSequence(seed).generate_state(2)
  to_example = _ClipToExample(num_frames=num_frames, height=metadata["height"],
                              width=metadata["width"], tokenizer=tokenizer,
                              caption_key=caption_key)
  ds = (
      grain.MapDataset.source(source)
      .shuffle(seed=int(shuffle_seed))
      .repeat()  # Forever; reseeds the shuffle each epoch.
      # Before the process slice, so an element's crop depends on its global index only.
      .random_map(to_example, seed=int(crop_seed))
  )
  ds = _ProcessRows(ds, local_batch_size, process_index, process_count).batch(local_batch_size,
                                                                              drop_remainder=True)
  return _BatchIterator(ds, worker_count=worker_count, prefetch_buffer_size=prefetch_buffer_size)


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


def checkpoint_save_args(iterator) -> Any:
  """Orbax args saving the iterator's position: put them in an ocp.args.Composite.

  Every process must save (each writes its own process_{i}-of-{n}.json).
  """
  return grain.checkpoint.CheckpointSave(iterator)


def checkpoint_restore_args(iterator) -> Any:
  """Orbax args restoring a saved position into `iterator`.

  Build `iterator` with the same data, seed and global batch size as the saved one;
  worker_count may differ. Grain's handler reads process_{i}-of-{n}.json, so the process count
  must match the save.
  """
  return grain.checkpoint.CheckpointRestore(iterator)
