"""Tests for the toy-world clip generator."""
import json
import os
import pathlib
import subprocess
import sys

from array_record.python import array_record_module
import numpy as np
import pytest

from vdit.toy import spec as toy_spec
from vdit.toy import world as toy_world
from vdit.data import records

_SMALL = dict(num_clips=96, num_frames=6, height=16, width=16, num_shards=3, num_held_out=6)


def _read_clips(data_dir):
  meta = json.loads((pathlib.Path(data_dir) / "metadata.json").read_text())
  clips = []
  for shard in meta["buckets"][0]["shards"]:
    reader = array_record_module.ArrayRecordReader(str(pathlib.Path(data_dir) / shard))
    clips += [records.decode_clip(r) for r in reader.read_all()]
    reader.close()
  return meta, clips


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("toy")
  toy_world.generate(str(out), seed=3, **_SMALL)
  return out


def test_writes_shards_metadata_and_held_out(small_dir):
  meta, clips = _read_clips(small_dir)
  assert meta["format"] == "vdit-clips" and meta["captions_kind"] == "toy"
  assert meta["num_clips"] == len(clips) == 96
  assert meta["buckets"][0]["shards"] == [f"train-{i:05d}-of-00003.array_record" for i in range(3)]
  assert sum(meta["buckets"][0]["clips_per_shard"]) == 96
  held = json.loads((small_dir / "held_out.json").read_text())
  assert len(held["combinations"]) == 6
  assert held["captions"] == [toy_spec.caption(*c) for c in held["combinations"]]
  # No temp file survives a completed run.
  assert not [p for p in os.listdir(small_dir) if ".tmp" in p]


def test_same_seed_same_bytes_other_seed_differs(small_dir, tmp_path):
  toy_world.generate(str(tmp_path / "again"), seed=3, **_SMALL)
  toy_world.generate(str(tmp_path / "other"), seed=4, **_SMALL)
  for name in ("train-00000-of-00003.array_record", "held_out.json", "metadata.json"):
    assert (tmp_path / "again" / name).read_bytes() == (small_dir / name).read_bytes()
  assert ((tmp_path / "other" / "train-00000-of-00003.array_record").read_bytes()
          != (small_dir / "train-00000-of-00003.array_record").read_bytes())


def test_held_out_combinations_never_in_shards(small_dir):
  held = {tuple(c) for c in json.loads((small_dir / "held_out.json").read_text())["combinations"]}
  _, clips = _read_clips(small_dir)
  seen = {(c["colour"], c["shape"], c["direction"]) for c in clips}
  assert not held & seen
  assert len(seen) == len(toy_spec.all_combinations()) - len(held)  # All others appear.


def test_held_out_keeps_every_attribute_and_pair_in_training():
  combos = toy_world.choose_held_out(20, np.random.default_rng(0))
  train = set(toy_spec.all_combinations()) - set(combos)
  for c, s, d in combos:
    assert any(t[:2] == (c, s) for t in train)
    assert any((t[0], t[2]) == (c, d) for t in train)
    assert any(t[1:] == (s, d) for t in train)
  assert {t[0] for t in train} == set(toy_spec.COLOURS)
  assert {t[1] for t in train} == set(toy_spec.SHAPES)
  assert {t[2] for t in train} == set(toy_spec.DIRECTIONS)


def test_captions_parse_and_match_meta(small_dir):
  _, clips = _read_clips(small_dir)
  for clip in clips:
    want = (clip["colour"], clip["shape"], clip["direction"])
    assert toy_spec.parse_caption(clip["caption"]) == want


def test_frames_show_the_captioned_colour_moving_the_captioned_way(small_dir):
  _, clips = _read_clips(small_dir)
  for clip in clips:
    frames = clip["frames"]
    assert frames.shape == (6, 16, 16, 3) and frames.dtype == np.uint8
    mask = np.all(frames == toy_spec.COLOURS[clip["colour"]], axis=-1)
    other = ~mask & ~np.all(frames == toy_spec.BACKGROUND, axis=-1)
    assert not other.any()  # Only background and the shape's colour.
    assert mask.reshape(6, -1).sum(1).min() > 0  # Visible in every frame.
    ys, xs = np.nonzero(mask[0])
    y0, x0 = ys.mean(), xs.mean()
    ys, xs = np.nonzero(mask[-1])
    dx, dy = xs.mean() - x0, ys.mean() - y0
    ux, uy = toy_spec.DIRECTIONS[clip["direction"]]
    along, across = (dx * ux, dy) if ux else (dy * uy, dx)
    assert along > 1.5 and abs(across) < 1, clip["caption"]  # >= 2.5 px travel, pixelated.


@pytest.mark.parametrize("height,width,num_frames", [(32, 32, 12), (16, 16, 6), (32, 64, 16)])
def test_shape_stays_inside_frame(height, width, num_frames):
  rng = np.random.default_rng(0)
  for direction, (ux, uy) in toy_spec.DIRECTIONS.items():
    for _ in range(200):
      (x, y), speed, r = toy_world.sample_motion(
          rng, direction, num_frames=num_frames, height=height, width=width)
      t = np.arange(num_frames)
      cx, cy = x + ux * speed * t, y + uy * speed * t
      assert cx.min() - r >= 0 and cx.max() + r <= width
      assert cy.min() - r >= 0 and cy.max() + r <= height
      size = min(height, width)
      assert size / 8 <= r <= size / 6 and speed > 0


def test_rejects_impossible_requests(tmp_path):
  with pytest.raises(ValueError, match="num_held_out"):
    toy_world.generate(str(tmp_path), num_clips=8, num_held_out=96)
  with pytest.raises(ValueError, match="room for visible motion"):
    toy_world.generate(str(tmp_path), num_clips=8, num_frames=64, height=16, width=16)
  assert not (tmp_path / "metadata.json").exists()


def test_rerun_replaces_stale_metadata_last(tmp_path):
  toy_world.generate(str(tmp_path), num_clips=8, num_shards=2, num_frames=4)
  meta = toy_world.generate(str(tmp_path), num_clips=12, num_shards=1, num_frames=4)
  on_disk = json.loads((tmp_path / "metadata.json").read_text())
  assert on_disk == meta and on_disk["num_clips"] == 12


def test_cli_prints_summary(tmp_path):
  root = pathlib.Path(__file__).resolve().parents[1]
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.toy_world", f"--output={tmp_path}", "--num_clips=16",
       "--num_shards=2", "--num_frames=4"],
      cwd=root, capture_output=True, text=True, check=True)
  assert "16 clips" in result.stdout and len(result.stdout.strip().splitlines()) == 1
  assert json.loads((tmp_path / "metadata.json").read_text())["num_clips"] == 16


def test_output_bytes_are_those_trained_models_were_made_of(tmp_path):
  """The one-object world's files, byte for byte, as before the two-object world (or any later
  change) was added: a changed digest silently changes every toy dataset and trained model."""
  import hashlib
  toy_world.generate(str(tmp_path), num_clips=24, num_frames=4, height=16, width=16, num_shards=2,
                     num_held_out=5, seed=7)
  toy_world.generate(str(tmp_path / "eval"), num_clips=12, num_frames=4, height=16, width=16, num_shards=1,
                     seed=7, split="eval")
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(tmp_path)):
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, tmp_path).encode())
      digest.update(open(path, "rb").read())
  assert digest.hexdigest() == "3306d306d83bc6a833a6eeb48491e53df1e8233cb96ba1f383b7e3d508be914b"
