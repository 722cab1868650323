"""Bucket-aware batching: one bucket per global batch, token-budget batch sizes, image ratio,
deterministic and resumable schedules, process sharding across buckets."""
import collections
import os

import jax
import numpy as np
import pytest

from tests.test_pipeline import make_iterator
from vdit.data import bucket_plan, dataset_files, records
from vdit.data.errors import DataError

# (frames, height, width) -> clips
_BUCKETS = {(4, 8, 8): 24, (2, 8, 16): 12, (1, 8, 8): 20}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A dataset with two video buckets and one image bucket; every clip's first pixel is unique."""
  out = str(tmp_path_factory.mktemp("buckets"))
  buckets, uid = [], 0
  for (t, h, w), count in _BUCKETS.items():
    name = dataset_files.bucket_name(t, h, w)
    clips = []
    for _ in range(count):
      frames = np.zeros((t, h, w, 3), np.uint8)
      frames[:, 0, 0] = [uid % 256, uid // 256, 7]
      clips.append(records.encode_clip(frames, f"clip {uid}", uid=uid))
      uid += 1
    halves = [clips[:count // 2], clips[count // 2:]]
    shards = [f"{name}/part-{i:05d}.array_record" for i in range(2)]
    for shard, part in zip(shards, halves):
      dataset_files.write_shard(os.path.join(out, shard), part)
    buckets.append({"name": name, "num_frames": t, "height": h, "width": w, "num_clips": count,
                    "shards": shards, "clips_per_shard": [len(p) for p in halves]})
  dataset_files.write_json(os.path.join(out, "metadata.json"), {
      "format": "vdit-clips", "version": 2, "num_clips": sum(_BUCKETS.values()),
      "buckets": buckets})
  return out


def _uids(batch):
  return [int(v[0, 0, 0, 0]) + 256 * int(v[0, 0, 0, 1]) for v in batch["video"]]


def _make(data_dir, **kwargs):
  args = dict(num_frames=0, global_batch_size=4)
  args.update(kwargs)
  return make_iterator(data_dir, **args)


def test_plan_sizes_batches_by_token_budget(data_dir):
  buckets = bucket_plan.plan(dataset_files.read_metadata(data_dir)["buckets"], patch_size=(2, 4, 4),
                             global_batch_size=4, tokens_per_batch=64, batch_multiple=2,
                             max_frames=0, image_ratio=0.25)
  by_name = {b.name: b for b in buckets}
  # Tokens per clip: 4x8x8 -> 2*2*2 = 8; 2x8x16 -> 1*2*4 = 8; 1x8x8 -> repeated to 2 frames, 4.
  assert {n: b.batch_size for n, b in by_name.items()} == {"4x8x8": 8, "2x8x16": 8, "1x8x8": 16}
  assert by_name["1x8x8"].frames == 2 and by_name["1x8x8"].is_image
  assert by_name["1x8x8"].weight == pytest.approx(0.25)
  # Videos split the rest by batches per epoch (clips / batch size): 24/8 : 12/8.
  assert by_name["4x8x8"].weight == pytest.approx(0.75 * 3 / 4.5)


def test_every_batch_is_full_and_from_one_bucket(data_dir):
  it = _make(data_dir, image_ratio=0.3)
  counts = collections.Counter()
  for _ in range(60):
    batch = next(it)
    t, h, w = batch["video"].shape[1:4]
    assert batch["video"].shape[0] == 4 and (t, h, w) in _BUCKETS
    uids = _uids(batch)
    first_uid = sum(list(_BUCKETS.values())[:list(_BUCKETS).index((t, h, w))])
    assert all(first_uid <= u < first_uid + _BUCKETS[(t, h, w)] for u in uids)
    counts[(t, h, w)] += 1
  assert set(counts) == set(_BUCKETS)
  assert 0.1 < counts[(1, 8, 8)] / 60 < 0.5  # image_ratio 0.3


def test_image_ratio_zero_leaves_images_out(data_dir):
  it = _make(data_dir, image_ratio=0.0)
  assert all(next(it)["video"].shape[1] > 1 for _ in range(30))


def test_each_bucket_epoch_sees_every_clip_once(data_dir):
  it = _make(data_dir)
  seen = collections.defaultdict(list)
  while len(seen[(4, 8, 8)]) < 24:
    batch = next(it)
    seen[batch["video"].shape[1:4]] += _uids(batch)
  assert sorted(seen[(4, 8, 8)]) == list(range(24))


def test_resume_across_bucket_switches_is_exact(data_dir):
  it = _make(data_dir)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(10)]
  fresh = _make(data_dir)
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_processes_split_every_bucket_batch(data_dir, monkeypatch):
  whole = [_uids(next_batch) for next_batch in
           (lambda it: [next(it) for _ in range(12)])(_make(data_dir))]
  parts = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for index in range(2):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    it = _make(data_dir)
    parts.append([_uids(next(it)) for _ in range(12)])
  assert [a + b for a, b in zip(*parts)] == whole


def test_schedule_counts_match_a_direct_count():
  schedule = bucket_plan.Schedule([0.5, 0.3, 0.2], seed=3)
  seen = collections.Counter()
  for step in range(9000):  # crosses two draw blocks
    bucket, k = schedule.locate(step)
    assert k == seen[bucket]
    seen[bucket] += 1
  assert abs(seen[0] / 9000 - 0.5) < 0.03


def test_buckets_not_divisible_by_the_patch_are_a_clear_error(data_dir):
  with pytest.raises(DataError, match="Bucket 4x8x8 is 8x8, not divisible by the patch 16x16"):
    _make(data_dir, patch_size=(1, 16, 16))


def test_only_images_with_image_ratio_zero_is_a_clear_error(tmp_path):
  meta = [{"name": "1x8x8", "num_frames": 1, "height": 8, "width": 8, "num_clips": 4,
           "shard_paths": ["x"]}]
  with pytest.raises(DataError, match="only images"):
    bucket_plan.plan(meta, patch_size=(1, 1, 1), global_batch_size=2, tokens_per_batch=0,
                     batch_multiple=1, max_frames=0, image_ratio=0.0)
