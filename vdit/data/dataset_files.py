"""The on-disk layout of a prepared dataset: bucketed ArrayRecord shards + metadata.json.

  DIR/metadata.json   written last; its presence means "complete". Format (version 2):
    {"format": "vdit-clips", "version": 2, "num_clips": N, "fps": F,
     "buckets": [{"name": "TxHxW", "num_frames": T, "height": H, "width": W, "num_clips": n,
                  "shards": [relative paths], "clips_per_shard": [...]}, ...], ...extras}
  DIR/<shards>        ArrayRecord files of vdit.data.records clips; every clip in a bucket's
                      shards is exactly T x H x W.

Writers go through a temporary name and rename, so a crash never leaves a file a reader accepts.
"""
import json
import os
import uuid

import numpy as np

from array_record.python import array_record_module

from vdit.data.errors import DataError

FORMAT = "vdit-clips"
VERSION = 2
_BUCKET_KEYS = ("name", "num_frames", "height", "width", "num_clips", "shards")


def bucket_name(num_frames: int, height: int, width: int) -> str:
  return f"{num_frames}x{height}x{width}"


def _temporary(path: str) -> str:
  return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")


def write_json(path: str, value) -> None:
  """Writes JSON (UTF-8, non-ASCII kept readable) atomically."""
  tmp = _temporary(path)
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(value, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_shard(path: str, records) -> int:
  """Writes an iterable of record bytes as one ArrayRecord file, atomically; returns the count."""
  root, name = os.path.split(os.path.abspath(path))
  with ShardGroup(root) as group:
    group.open(name)  # written even when `records` is empty
    for record in records:
      group.add(name, record)
    return group.commit()[name]


class ShardGroup:
  """Streams records into several ArrayRecord files at once (one per bucket) under temporary
  names; `commit` renames them all into place, `abort` (or an exception in a `with`) deletes them.
  """

  def __init__(self, root: str):
    self._root = root
    self._open = {}  # relative path -> (writer, temporary path, count)

  def open(self, rel_path: str) -> None:
    if rel_path not in self._open:
      path = os.path.join(self._root, rel_path)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = _temporary(path)
      # group_size:1 keeps random access to one record cheap (Grain reads in shuffled order).
      self._open[rel_path] = [array_record_module.ArrayRecordWriter(tmp, "group_size:1"), tmp, 0]

  def add(self, rel_path: str, record: bytes) -> None:
    self.open(rel_path)
    entry = self._open[rel_path]
    entry[0].write(record)
    entry[2] += 1

  def commit(self) -> dict[str, int]:
    """Closes and renames every file; returns {relative path: records}."""
    counts = {}
    for rel_path, (writer, tmp, count) in sorted(self._open.items()):
      writer.close()
      os.replace(tmp, os.path.join(self._root, rel_path))
      counts[rel_path] = count
    self._open = {}
    return counts

  def abort(self) -> None:
    for writer, tmp, _ in self._open.values():
      writer.close()
      if os.path.exists(tmp):
        os.remove(tmp)
    self._open = {}

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      self.abort()


def _fail(path, message):
  raise DataError(f"{path}: {message}; regenerate the dataset (data_prep.ingest or "
                  "data_prep.toy_world).")


def read_metadata(data_dir: str) -> dict:
  """Reads and validates DIR/metadata.json.

  Returns:
    The metadata; every bucket gains "shard_paths" (full paths).

  Raises:
    DataError: the directory, metadata or a shard is missing, malformed, or the dataset is empty.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f"Dataset directory {data_dir!r} does not exist; prepare it first with "
                    f"python -m data_prep.ingest --input=VIDEOS --output={data_dir} (or "
                    f"python -m data_prep.toy_world --output={data_dir}).")
  path = os.path.join(data_dir, "metadata.json")
  if not os.path.exists(path):
    raise DataError(f"{path} is missing: the dataset is incomplete (metadata.json is written "
                    "last); rerun the command that prepared it.")
  try:
    with open(path, encoding="utf-8") as f:
      metadata = json.load(f)
  except (OSError, ValueError) as e:
    _fail(path, f"not valid JSON ({e})")
  if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
    _fail(path, f"not a {FORMAT!r} metadata file")
  if metadata.get("version") != VERSION:
    _fail(path, f"metadata version {metadata.get('version')!r}, this code reads {VERSION}")
  buckets = metadata.get("buckets")
  if not isinstance(buckets, list) or not buckets:
    _fail(path, "no buckets: the dataset is empty")
  total = 0
  for bucket in buckets:
    missing = [k for k in _BUCKET_KEYS if not isinstance(bucket, dict) or k not in bucket]
    if missing:
      _fail(path, f"a bucket lacks {missing}")
    if bucket["num_clips"] <= 0 or not bucket["shards"]:
      _fail(path, f"bucket {bucket['name']} is empty")
    bucket["shard_paths"] = [os.path.join(data_dir, s) for s in bucket["shards"]]
    for shard in bucket["shard_paths"]:
      if not os.path.isfile(shard):
        raise DataError(f"Shard {shard} listed in {path} is missing; re-copy or regenerate the "
                        "dataset.")
    total += bucket["num_clips"]
  if metadata.get("num_clips") != total:
    _fail(path, f"num_clips={metadata.get('num_clips')} but the buckets hold {total}")
  return metadata


def read_clips(data_dir: str, limit: int | None = None, seed: int = 0) -> list[dict]:
  """Decoded clips ({"frames", "caption", **meta}) from a prepared dataset: all of them, or
  `limit` drawn without replacement from every bucket by `seed` (the same ones every time)."""
  from vdit.data import records  # records' codecs import Pillow; layout-only readers skip it
  metadata = read_metadata(data_dir)
  locations = [(shard, i) for bucket in metadata["buckets"]
               for shard, count in zip(bucket["shard_paths"], _clip_counts(bucket)) for i in range(count)]
  if limit is not None and limit < len(locations):
    chosen = np.random.default_rng(seed).choice(len(locations), size=limit, replace=False)
    locations = [locations[i] for i in sorted(chosen)]
  clips, readers = [], {}
  try:
    for shard, index in locations:
      if shard not in readers:
        readers[shard] = array_record_module.ArrayRecordReader(shard)
      clips.append(records.decode_clip(readers[shard].read([index])[0]))
  finally:
    for reader in readers.values():
      reader.close()
  return clips


def _clip_counts(bucket: dict) -> list[int]:
  """Clips per shard: from the metadata, else by opening each shard."""
  if "clips_per_shard" in bucket:
    return list(bucket["clips_per_shard"])
  counts = []
  for shard in bucket["shard_paths"]:
    reader = array_record_module.ArrayRecordReader(shard)
    counts.append(reader.num_records())
    reader.close()
  return counts
