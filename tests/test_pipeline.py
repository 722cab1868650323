"""Tests for the Grain training input pipeline."""
import hashlib
import json
import os

from array_record.python import array_record_module
import jax
import msgpack
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vdit.toy import world as toy_world
from vdit.data import bucket_plan, dataset_files, pipeline
from vdit.data import records
from vdit.data.errors import DataError
from vdit.text.tokenizer import Tokenizer

_NUM_CLIPS = 32
_STORED_FRAMES = 6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("toy")
  toy_world.generate(str(out), num_clips=_NUM_CLIPS, num_frames=_STORED_FRAMES, height=16,
                     width=16, num_shards=2, num_held_out=4, seed=0)
  return str(out)


@pytest.fixture(scope="module")
def stored_clips(data_dir):
  clips = []
  for shard in dataset_files.read_metadata(data_dir)["buckets"][0]["shard_paths"]:
    reader = array_record_module.ArrayRecordReader(shard)
    clips += [records.decode_clip(r) for r in reader.read_all()]
    reader.close()
  return clips


def make_iterator(data_dir, *, global_batch_size=4, num_frames=4, patch_size=(1, 1, 1),
                  tokens_per_batch=0, image_ratio=-1.0, seed=0, **kwargs):
  """What the trainer does: read metadata, plan the buckets, build the iterator."""
  buckets = bucket_plan.plan(
      dataset_files.read_metadata(data_dir)["buckets"], patch_size=patch_size,
      global_batch_size=global_batch_size, tokens_per_batch=tokens_per_batch,
      batch_multiple=jax.process_count(), max_frames=num_frames, image_ratio=image_ratio)
  return pipeline.make_train_iterator(buckets, tokenizer=Tokenizer(8), seed=seed, **kwargs)


_make = make_iterator


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def _digest(video):
  return hashlib.sha1(video.tobytes()).hexdigest()


def test_batch_shapes_and_dtypes(data_dir):
  batch = next(_make(data_dir))
  assert set(batch) == {"video", "tokens", "text_mask"}
  assert batch["video"].shape == (4, 4, 16, 16, 3) and batch["video"].dtype == np.uint8
  assert batch["tokens"].shape == (4, 8) and batch["tokens"].dtype == np.int32
  assert batch["text_mask"].shape == (4, 8) and batch["text_mask"].dtype == np.bool_


def test_examples_are_crops_of_stored_clips_with_their_captions(data_dir, stored_clips):
  tokenizer = Tokenizer(8)
  batch = next(_make(data_dir, num_frames=3))
  for video, tokens, mask in zip(batch["video"], batch["tokens"], batch["text_mask"]):
    matches = [
        c for c in stored_clips
        for s in range(_STORED_FRAMES - 3 + 1) if np.array_equal(c["frames"][s:s + 3], video)]
    assert matches, "batch video is not a window of consecutive stored frames"
    ids, want_mask = tokenizer.encode_batch([matches[0]["caption"]], truncate=True)
    np.testing.assert_array_equal(tokens, ids[0])
    np.testing.assert_array_equal(mask, want_mask[0])


def test_crops_vary_in_start(data_dir, stored_clips):
  firsts = {_digest(c["frames"][0]) for c in stored_clips}
  batches = _take(_make(data_dir, num_frames=2), 8)
  starts_at_zero = [_digest(v[0]) in firsts for b in batches for v in b["video"]]
  assert any(starts_at_zero) and not all(starts_at_zero)


def test_each_epoch_sees_every_clip_once_in_a_new_order(data_dir, stored_clips):
  it = _make(data_dir, num_frames=_STORED_FRAMES)  # No crop: videos identify clips.
  per_epoch = _NUM_CLIPS // 4
  epoch1 = [_digest(v) for b in _take(it, per_epoch) for v in b["video"]]
  epoch2 = [_digest(v) for b in _take(it, per_epoch) for v in b["video"]]
  everything = sorted(_digest(c["frames"]) for c in stored_clips)
  assert sorted(epoch1) == sorted(epoch2) == everything
  assert epoch1 != epoch2


def test_same_seed_same_batches_other_seed_differs(data_dir):
  _assert_same(_take(_make(data_dir), 3), _take(_make(data_dir), 3))
  other = _take(_make(data_dir, seed=1), 3)
  assert not np.array_equal(other[0]["video"], next(_make(data_dir))["video"])


def test_set_state_resumes_exactly(data_dir):
  it = _make(data_dir)
  _take(it, 5)  # Crosses an epoch boundary (8 batches/epoch) below.
  state = it.get_state()
  json.dumps(state)  # Must be JSON for the Orbax handler.
  expected = _take(it, 6)
  fresh = _make(data_dir)
  fresh.set_state(state)
  _assert_same(_take(fresh, 6), expected)


def test_legacy_grain_checkpoint_restores(data_dir, tmp_path):
  """Checkpoints of earlier versions kept the position in Grain's per-process `data` item."""
  it = _make(data_dir)
  _take(it, 3)
  manager = ocp.CheckpointManager(str(tmp_path / "ckpt"))
  manager.save(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  expected = _take(it, 4)  # Advancing after save() must not change what was saved.
  manager.wait_until_finished()
  fresh = _make(data_dir)
  restored = manager.restore(7, args=ocp.args.Composite(data=pipeline.legacy_restore_args(fresh)))
  manager.close()
  assert restored["data"] is fresh
  _assert_same(_take(fresh, 4), expected)


def test_process_batches_concatenate_to_the_single_process_batch(data_dir, monkeypatch):
  """Process p holds rows [p*b, (p+1)*b) of each global batch, as its devices do in the global
  array, so a run gives the same global batches in the same order on any number of hosts."""
  whole = _take(_make(data_dir, global_batch_size=4, num_frames=_STORED_FRAMES), 3)
  parts = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    parts.append(_take(_make(data_dir, global_batch_size=4, num_frames=_STORED_FRAMES), 3))
  for step in range(3):
    assert parts[0][step]["video"].shape[0] == 2
    local = [_digest(v) for p in parts for v in p[step]["video"]]
    assert local == [_digest(v) for v in whole[step]["video"]]


def test_worker_processes_give_the_same_batches_and_portable_state(data_dir):
  it = _make(data_dir, worker_count=2)
  try:
    with_workers = _take(it, 3)
    state = it.get_state()
  finally:
    it.close()
  plain = _make(data_dir)
  _assert_same(with_workers, _take(plain, 3))
  expected = _take(plain, 2)
  resumed = _make(data_dir)  # A worker-count change must not break resumption.
  resumed.set_state(state)
  _assert_same(_take(resumed, 2), expected)


def test_foreign_state_is_a_clear_error(data_dir):
  with pytest.raises(DataError, match="not saved by vdit.data.pipeline"):
    _make(data_dir).set_state({"next_index_in_cycle": 1})


def test_missing_dir_is_a_clear_error(tmp_path):
  with pytest.raises(DataError, match="does not exist.*toy_world"):
    _make(str(tmp_path / "nope"))


def test_missing_metadata_is_a_clear_error(tmp_path):
  with pytest.raises(DataError, match="metadata.json is missing"):
    _make(str(tmp_path))


def test_invalid_metadata_is_a_clear_error(tmp_path):
  (tmp_path / "metadata.json").write_text("{not json")
  with pytest.raises(DataError, match="not valid JSON"):
    _make(str(tmp_path))


def test_empty_dataset_is_a_clear_error(tmp_path):
  meta = {"format": "vdit-clips", "version": 2, "num_clips": 0, "buckets": []}
  (tmp_path / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(DataError, match="no buckets"):
    _make(str(tmp_path))
  meta["buckets"] = [{"name": "4x8x8", "num_frames": 4, "height": 8, "width": 8, "num_clips": 0,
                      "shards": ["a.array_record"]}]
  (tmp_path / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(DataError, match="bucket 4x8x8 is empty"):
    _make(str(tmp_path))


def test_old_metadata_version_is_a_clear_error(tmp_path):
  (tmp_path / "metadata.json").write_text(json.dumps({"format": "vdit-clips", "shards": []}))
  with pytest.raises(DataError, match="metadata version None, this code reads 2"):
    _make(str(tmp_path))


def test_missing_shard_is_a_clear_error(data_dir, tmp_path):
  meta = dataset_files.read_metadata(data_dir)
  shards = meta["buckets"][0]["shards"]
  del meta["buckets"][0]["shard_paths"]
  (tmp_path / "metadata.json").write_text(json.dumps(meta))
  os.symlink(os.path.join(data_dir, shards[0]), tmp_path / shards[0])
  with pytest.raises(DataError, match=f"Shard .*{shards[1]}.* is missing"):
    _make(str(tmp_path))


def test_more_frames_than_stored_trains_on_whole_clips(data_dir):
  assert next(_make(data_dir, num_frames=7))["video"].shape[1] == _STORED_FRAMES


def test_bad_batch_size_is_a_clear_error(data_dir):
  with pytest.raises(DataError, match="batch size 0 must be a positive multiple"):
    _make(data_dir, global_batch_size=0)


def test_corrupt_record_is_a_clear_error():
  with pytest.raises(DataError, match="Corrupt clip record"):
    records.decode_clip(b"\xc1garbage")
  good = msgpack.unpackb(records.encode_clip(np.zeros((2, 4, 4, 3), np.uint8), "x"))
  for change, error in [({"frames": good["frames"][:-1]}, "truncated or corrupt"),
                        ({"codec": "zzz"}, "codec 'zzz' is unknown"),
                        ({"format_version": 99}, "format_version 99 is not supported"),
                        ({"frames_shape": [2, 4, 4]}, "is not \\[T, H, W, 3\\]")]:
    with pytest.raises(DataError, match=error):
      records.decode_clip(msgpack.packb({**good, **change}))
  with pytest.raises(DataError, match="Not a vdit clip record"):
    records.decode_clip(msgpack.packb([1, 2]))


def test_record_round_trip_keeps_meta():
  frames = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
  clip = records.decode_clip(records.encode_clip(frames, "a cat", colour="red", n=np.int64(2)))
  np.testing.assert_array_equal(clip["frames"], frames)
  assert clip["frames"].flags.writeable
  assert (clip["caption"], clip["colour"], clip["n"]) == ("a cat", "red", 2)


def test_unknown_caption_key_is_a_clear_error(data_dir):
  with pytest.raises(DataError, match="no 'long_caption' field"):
    next(_make(data_dir, caption_key="long_caption"))
